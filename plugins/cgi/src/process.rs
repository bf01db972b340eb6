//! The child process: spawned in a process group of its own, its stderr
//! logged line by line by a thread, and always reaped: [`Proc`] kills the
//! group and waits on every path that does not end normally (its `Drop`
//! included). Its pipes are driven by [`crate::pipes`].

use crate::map::Target;
use rustix::process::{Pid, Signal, kill_process_group};
use std::ffi::OsStr;
use std::io::{self, ErrorKind, Read};
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Where a script's records go: its vhost's error log, as `cgi:<name>`.
pub struct LogCtx {
    pub vhost: String,
    pub peer: SocketAddr,
    pub source: String,
}

impl LogCtx {
    pub fn record(&self, level: log::Level, msg: &str) {
        tamada_sdk::record_for(&self.vhost, Some(self.peer), level, &self.source, msg);
    }
}

/// One of the route's `max_processes`; given back when the child is reaped.
pub struct Slot(Arc<AtomicUsize>);

impl Slot {
    pub fn take(running: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        let prev = running.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(running.clone());
        (prev < max).then_some(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A running child, leader of its own process group. Dropping it kills the
/// group and reaps the child.
pub struct Proc {
    child: Child,
    pgid: Pid,
    reaped: bool,
    log: Arc<LogCtx>,
    _slot: Slot,
}

impl Proc {
    /// The process group (the child's pid).
    pub fn pgid(&self) -> Pid {
        self.pgid
    }

    /// Kills the whole group (the script and whatever it started) and
    /// reaps the child. A child that had already exited is reported.
    pub fn kill_and_reap(&mut self) {
        if self.reaped {
            return;
        }
        if let Ok(Some(st)) = self.child.try_wait() {
            self.reaped = true;
            self.report(st);
        }
        // The group is killed even when its leader is gone (stragglers);
        // before the leader is reaped its pid cannot be reused, so the
        // group id is still ours. After, ESRCH or a reused id is possible
        // in theory only, since `reaped` was set in the same instant.
        if !self.reaped {
            let _ = kill_process_group(self.pgid, Signal::KILL);
            let _ = self.child.wait();
            self.reaped = true;
        }
    }

    /// The normal end (stdout closed): reaps the child when it has exited;
    /// else a reaper thread waits up to `grace` for it, then kills the group.
    pub fn finish(mut self, grace: Duration) {
        if let Ok(Some(st)) = self.child.try_wait() {
            self.reaped = true;
            self.report(st);
            return;
        }
        // PERF: the worker does not wait for the exit (a script usually
        // exits microseconds after closing its output, but sleeping here
        // delayed the connection's next request): a thread reaps it.
        let spawned = std::thread::Builder::new()
            .name("cgi-reaper".into())
            .spawn(move || {
                let deadline = Instant::now() + grace;
                let mut pause = Duration::from_micros(200);
                while Instant::now() < deadline {
                    if let Ok(Some(st)) = self.child.try_wait() {
                        self.reaped = true;
                        self.report(st);
                        return;
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                self.log.record(
                    log::Level::Warn,
                    &format!("still running {grace:?} after closing its output: killed"),
                );
                self.kill_and_reap();
            });
        // No thread: `Drop` of the moved-back closure kills and reaps.
        drop(spawned);
    }

    fn report(&self, st: ExitStatus) {
        if let Some(sig) = st.signal() {
            self.log
                .record(log::Level::Warn, &format!("killed by signal {sig}"));
        } else if let Some(code) = st.code().filter(|&c| c != 0) {
            self.log
                .record(log::Level::Warn, &format!("exited with status {code}"));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// A spawned script with its pipes.
pub struct Spawned {
    pub proc: Proc,
    pub stdin: Option<ChildStdin>,
    pub stdout: ChildStdout,
}

/// Starts the script and the thread that logs its stderr.
pub fn spawn(
    t: &Target,
    env: &[(String, Vec<u8>)],
    with_stdin: bool,
    log: Arc<LogCtx>,
    slot: Slot,
) -> io::Result<Spawned> {
    let mut cmd = Command::new(&t.program);
    if let Some(a) = &t.arg {
        cmd.arg(a);
    }
    // PERF: no pre_exec closure, an absolute program path and
    // `process_group` keep std on its posix_spawn path (vfork-like).
    cmd.env_clear()
        .envs(env.iter().map(|(k, v)| (k, OsStr::from_bytes(v))))
        .current_dir(&t.cwd)
        .stdin(if with_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn()?;
    let pgid = Pid::from_child(&child);
    let stdin = child.stdin.take();
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(io::Error::other("child pipes missing"));
    };
    let proc = Proc {
        child,
        pgid,
        reaped: false,
        log: log.clone(),
        _slot: slot,
    };
    stderr_readers::read(stderr, log)?;
    Ok(Spawned {
        proc,
        stdin,
        stdout,
    })
}

/// Threads that log scripts' stderr, reused from one script to the next.
///
/// PERF: starting a thread per script cost a clone, a stack mapping and
/// its unmapping per request. A reader blocks on one pipe at a time (so
/// scripts never wait on each other's stderr); idle readers wait for the
/// next pipe, and a new one starts only when none is idle.
mod stderr_readers {
    use super::{LogCtx, log_stderr};
    use std::io;
    use std::process::ChildStderr;
    use std::sync::{Arc, Condvar, Mutex};

    type Work = (ChildStderr, Arc<LogCtx>);

    #[derive(Default)]
    struct Pool {
        queue: Mutex<(Vec<Work>, usize)>,
        ready: Condvar,
    }

    fn pool() -> &'static Pool {
        static POOL: std::sync::OnceLock<Pool> = std::sync::OnceLock::new();
        POOL.get_or_init(Pool::default)
    }

    /// Hands `pipe` to an idle reader, or to a new one.
    pub fn read(pipe: ChildStderr, log: Arc<LogCtx>) -> io::Result<()> {
        let p = pool();
        let mut q = p.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.1 > q.0.len() {
            // An idle reader will take it.
            q.0.push((pipe, log));
            drop(q);
            p.ready.notify_one();
            return Ok(());
        }
        drop(q);
        std::thread::Builder::new()
            .name("cgi-stderr".into())
            .spawn(move || {
                log_stderr(pipe, &log);
                drop(log);
                loop {
                    let mut q = p.queue.lock().unwrap_or_else(|e| e.into_inner());
                    q.1 += 1;
                    while q.0.is_empty() {
                        q = p.ready.wait(q).unwrap_or_else(|e| e.into_inner());
                    }
                    q.1 -= 1;
                    let Some((pipe, log)) = q.0.pop() else {
                        continue;
                    };
                    drop(q);
                    log_stderr(pipe, &log);
                }
            })?;
        Ok(())
    }
}

/// One record per stderr line (long lines are cut into 4 KiB records).
fn log_stderr(mut err: ChildStderr, log: &LogCtx) {
    const MAX_LINE: usize = 4096;
    let mut line: Vec<u8> = Vec::new();
    let mut tmp = [0u8; 4096];
    let emit = |l: &[u8]| {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        if !l.is_empty() {
            log.record(log::Level::Warn, &String::from_utf8_lossy(l));
        }
    };
    loop {
        let n = match err.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        line.extend_from_slice(&tmp[..n]);
        while let Some(i) = line.iter().position(|&b| b == b'\n') {
            emit(&line[..i]);
            line.drain(..=i);
        }
        if line.len() >= MAX_LINE {
            emit(&line);
            line.clear();
        }
    }
    emit(&line);
}
