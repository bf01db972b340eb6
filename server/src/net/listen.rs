//! Listening sockets: one per address per event loop, bound with
//! `SO_REUSEPORT` so that the kernel spreads new connections over the
//! loops (by a hash of the connection's addresses), with no lock and no
//! thundering herd.
//!
//! `SO_REUSEPORT` would also let a second process of the same user bind
//! the same port and silently take half of the connections; so the
//! address is first probed with a plain socket, and one that something
//! already listens on is refused as `Address in use`, as without it.

use mio::net::TcpListener;
use socket2::{Domain, Socket, Type};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;

fn socket(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        // As nginx's `ipv6only=on`: `[::]:P` and `0.0.0.0:P` can both be
        // configured.
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock)
}

/// `n` non-blocking, close-on-exec listeners on `addr`, one per loop.
pub fn bind(addr: SocketAddr, n: usize) -> io::Result<Vec<TcpListener>> {
    // The probe: fails if anything listens there already.
    drop(socket(addr, false)?);
    (0..n.max(1))
        .map(|_| {
            let s = socket(addr, true)?;
            s.listen(4096)?;
            Ok(TcpListener::from_std(s.into()))
        })
        .collect()
}

/// Listeners on the inherited sockets of one address (a binary
/// upgrade): every socket, and `dup`s of them (which share their queue)
/// until there is one for each of the `n` loops.
fn adopt(fds: Vec<std::os::fd::OwnedFd>, n: usize) -> io::Result<Vec<TcpListener>> {
    let socks: Vec<std::net::TcpListener> = fds.into_iter().map(Into::into).collect();
    let mut out = Vec::with_capacity(n.max(socks.len()));
    for s in &socks {
        s.set_nonblocking(true)?;
    }
    for i in socks.len()..n.max(socks.len()) {
        out.push(TcpListener::from_std(socks[i % socks.len()].try_clone()?));
    }
    let mut all: Vec<TcpListener> = socks.into_iter().map(TcpListener::from_std).collect();
    all.append(&mut out);
    Ok(all)
}

/// Deals every address's listeners out to `n` loops in turn (a loop may
/// get several of one address when it inherited more than it has loops).
pub fn deal(
    listeners: BTreeMap<SocketAddr, Vec<TcpListener>>,
    n: usize,
) -> Vec<Vec<(SocketAddr, TcpListener)>> {
    let mut out: Vec<Vec<(SocketAddr, TcpListener)>> = (0..n.max(1)).map(|_| Vec::new()).collect();
    for (a, socks) in listeners {
        for (j, s) in socks.into_iter().enumerate() {
            out[j % n.max(1)].push((a, s));
        }
    }
    out
}

/// Binds every address for `n` loops, adopting the sockets in `inherited`
/// (a binary upgrade) instead of binding them anew; errors name the
/// address. Inherited sockets no address wants are closed.
pub fn bind_all_inheriting(
    addrs: &[SocketAddr],
    n: usize,
    mut inherited: BTreeMap<SocketAddr, Vec<std::os::fd::OwnedFd>>,
) -> Result<BTreeMap<SocketAddr, Vec<TcpListener>>, String> {
    let mut out = BTreeMap::new();
    for a in addrs {
        let socks = match inherited.remove(a) {
            Some(fd) => adopt(fd, n).map_err(|e| format!("cannot use the inherited {a}: {e}"))?,
            None => bind_all(std::slice::from_ref(a), n)?
                .remove(a)
                .unwrap_or_default(),
        };
        out.insert(*a, socks);
    }
    Ok(out)
}

/// A `dup` of every socket, by address, for a binary upgrade to hand
/// over (sockets that are `dup`s of one another are handed over once).
pub fn handover(
    listeners: &BTreeMap<SocketAddr, Vec<TcpListener>>,
) -> BTreeMap<SocketAddr, Vec<std::os::fd::OwnedFd>> {
    use std::os::fd::AsFd;
    listeners
        .iter()
        .map(|(a, socks)| {
            let mut seen = Vec::new();
            let fds = socks
                .iter()
                .filter(|l| {
                    // A dup shares the socket's inode; hand each socket once.
                    let id = socket_id(l);
                    let fresh = !seen.contains(&id);
                    seen.push(id);
                    fresh
                })
                .filter_map(|l| l.as_fd().try_clone_to_owned().ok())
                .collect();
            (*a, fds)
        })
        .collect()
}

/// The socket's inode (dups share it).
fn socket_id(l: &TcpListener) -> u64 {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/fd/{}", l.as_raw_fd()))
        .map(|m| m.ino())
        .unwrap_or(0)
}

/// Binds every address for `n` loops; errors name the address.
pub fn bind_all(
    addrs: &[SocketAddr],
    n: usize,
) -> Result<BTreeMap<SocketAddr, Vec<TcpListener>>, String> {
    addrs
        .iter()
        .map(|a| {
            bind(*a, n).map(|l| (*a, l)).map_err(|e| {
                let hint = if e.kind() == io::ErrorKind::PermissionDenied && a.port() < 1024 {
                    " (ports below 1024 need root, or CAP_NET_BIND_SERVICE for a server that dropped its privileges)"
                } else {
                    ""
                };
                format!("cannot listen on {a}: {e}{hint}")
            })
        })
        .collect()
}
