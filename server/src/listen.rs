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
