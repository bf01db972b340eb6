//! Binary upgrade with no refused connection (SIGUSR2, as nginx does).
//!
//! The running process starts a new one from the binary's path recorded
//! at start-up (after a package upgrade `/proc/self/exe` names a deleted
//! file), handing it one descriptor of each listening socket (only those
//! lose close-on-exec) and the write end of a pipe. The new process
//! loads its configuration and plugins, accepts on the inherited sockets
//! (with as many loops as its own `loops` says: the others are `dup`s),
//! then writes `READY` to the pipe and tells systemd its `MAINPID`. Only
//! then does the old one stop accepting and drain: connections still in
//! the kernel's queue are the new process's, since both hold the same
//! sockets, so none is refused. A new process that fails to start, or is
//! not ready in time, is stopped, and the old one goes on serving.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

/// `addr=fd,addr=fd`: the sockets a new process inherits.
const LISTEN_ENV: &str = "TAMADA_LISTEN_FDS";
/// The pipe on which a new process says it is ready.
const READY_ENV: &str = "TAMADA_UPGRADE_FD";
/// How long a new process may take to be ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether this process was started by a binary upgrade.
pub fn is_upgrade() -> bool {
    std::env::var_os(READY_ENV).is_some()
}

/// The listening sockets inherited from the process that started this
/// one, by the address they are bound to (every socket of its
/// `SO_REUSEPORT` group: one left behind would keep a share of the new
/// connections, and reset them when the old process closes it).
pub fn inherited() -> BTreeMap<SocketAddr, Vec<OwnedFd>> {
    let mut out: BTreeMap<SocketAddr, Vec<OwnedFd>> = BTreeMap::new();
    let Ok(list) = std::env::var(LISTEN_ENV) else {
        return out;
    };
    for item in list.split(',').filter(|s| !s.is_empty()) {
        let Some((addr, fd)) = item.rsplit_once('=') else {
            continue;
        };
        let (Ok(addr), Ok(fd)) = (addr.parse::<SocketAddr>(), fd.parse::<RawFd>()) else {
            continue;
        };
        if fd < 3 {
            continue;
        }
        // SAFETY: the parent passed this descriptor open for this process,
        // once; nothing else in this process owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // It must be the socket it says it is (a stale variable, a
        // recycled number): else it is closed and the address bound anew.
        let sock = socket2::SockRef::from(&owned);
        let bound = sock.local_addr().ok().and_then(|a| a.as_socket());
        if bound == Some(addr) {
            // Close-on-exec again: a CGI child must not hold it.
            let _ = sock.set_cloexec(true);
            out.entry(addr).or_default().push(owned);
        } else {
            log::warn!("inherited descriptor {fd} is not a socket bound to {addr}: ignored");
        }
    }
    out
}

/// In a new process, once it serves: tells the old one.
pub fn signal_ready() {
    let Some(fd) = std::env::var(READY_ENV)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
    else {
        return;
    };
    // SAFETY: the parent passed the pipe's write end open for this
    // process, once; it is closed when the File drops.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    if let Err(e) = f.write_all(b"READY\n") {
        log::warn!("cannot tell the old process that this one is ready: {e}");
    }
}

/// Starts the new process with `listeners` (one descriptor per address)
/// and waits until it is ready; on failure it is stopped and reaped.
pub fn start(
    exe: &Path,
    args: &[std::ffi::OsString],
    listeners: &BTreeMap<SocketAddr, Vec<OwnedFd>>,
) -> Result<Child, String> {
    let (mut reader, writer) = io::pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;
    let fds: Vec<RawFd> = listeners
        .values()
        .flatten()
        .map(|fd| fd.as_raw_fd())
        .collect();
    let list: Vec<String> = listeners
        .iter()
        .flat_map(|(a, fds)| fds.iter().map(move |fd| format!("{a}={}", fd.as_raw_fd())))
        .collect();
    let wfd = writer.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env(LISTEN_ENV, list.join(","))
        .env(READY_ENV, wfd.to_string());
    let keep: Vec<RawFd> = fds.iter().copied().chain([wfd]).collect();
    // SAFETY: runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: fcntl is one. It clears
    // close-on-exec on exactly the descriptors handed over.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &keep {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    // The child has its copy; ours must close for EOF to mean "gone".
    drop(writer);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = reader.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    let failed = |child: &mut Child, why: String| {
        // SAFETY: kill with a pid we spawned and have not reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = child.wait();
        Err(why)
    };
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(s) if s.starts_with("READY") => Ok(child),
        Ok(_) => {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            Err(format!(
                "the new process ended before it was ready ({status})"
            ))
        }
        Err(_) => failed(
            &mut child,
            format!(
                "the new process was not ready within {} s",
                READY_TIMEOUT.as_secs()
            ),
        ),
    }
}
