//! The protocols a connection speaks, one connection state machine each:
//! HTTP/1.1 (`h1`), and HTTP/2 (`h2`), which a connection becomes when
//! TLS chose `h2` by ALPN or the client sent the h2c preface. The loop
//! holds either as an [`AnyConn`].

pub mod h1;
pub mod h2;

use crate::exchange::Handled;
use crate::net::cx::Cx;
use crate::transport::Stream;
use h1::{Conn, Next};
use h2::H2Conn;
use std::os::fd::RawFd;
use std::time::Instant;

/// A connection of a loop, whatever protocol it speaks.
pub enum AnyConn {
    H1(Conn<Stream>),
    H2(H2Conn<Stream>),
    /// Only while an HTTP/1.1 connection becomes an HTTP/2 one.
    Switching,
}

impl AnyConn {
    pub fn id(&self) -> u64 {
        match self {
            AnyConn::H1(c) => c.id,
            AnyConn::H2(c) => c.id,
            AnyConn::Switching => 0,
        }
    }
    pub fn deadline(&self) -> Option<Instant> {
        match self {
            AnyConn::H1(c) => c.deadline,
            AnyConn::H2(c) => c.deadline,
            AnyConn::Switching => None,
        }
    }
    /// Readiness of the client's socket.
    pub fn event(&mut self, readable: bool, writable: bool, closed: bool) {
        match self {
            AnyConn::H1(c) => c.sock.event(readable, writable, closed),
            AnyConn::H2(c) => c.event(readable, writable, closed),
            AnyConn::Switching => {}
        }
    }
    pub fn drive(&mut self, cx: &mut Cx<'_>) -> Next {
        let next = match self {
            AnyConn::H1(c) => c.drive(cx),
            AnyConn::H2(c) => return c.drive(cx),
            AnyConn::Switching => return Next::Close,
        };
        if next != Next::Http2 {
            return next;
        }
        let AnyConn::H1(c) = std::mem::replace(self, AnyConn::Switching) else {
            return Next::Close;
        };
        let p = c.into_h2();
        log::trace!("{}: HTTP/2", p.peer);
        let mut h2 = H2Conn::new(p, cx);
        let next = h2.drive(cx);
        *self = AnyConn::H2(h2);
        next
    }
    /// A pool answer for the connection (or one of its streams).
    pub fn on_handled(
        &mut self,
        h: Handled,
        stream: Option<(usize, u64)>,
        cx: &mut Cx<'_>,
    ) -> Next {
        match (self, stream) {
            (AnyConn::H1(c), None) => c.on_handled(h, cx),
            (AnyConn::H2(c), Some((k, sid))) => c.on_stream_handled(k, sid, h, cx),
            _ => {
                crate::exchange::drop_handled(h);
                Next::Wait
            }
        }
    }
    pub fn timed_out(&mut self, cx: &mut Cx<'_>) -> Next {
        match self {
            AnyConn::H1(c) => c.timed_out(cx),
            AnyConn::H2(c) => c.timed_out(cx),
            AnyConn::Switching => Next::Close,
        }
    }
    pub fn is_idle(&self) -> bool {
        match self {
            AnyConn::H1(c) => c.is_idle(),
            AnyConn::H2(c) => c.is_idle(),
            AnyConn::Switching => true,
        }
    }
    pub fn is_busy(&self) -> bool {
        match self {
            AnyConn::H1(c) => c.is_busy(),
            AnyConn::H2(c) => c.is_busy(),
            AnyConn::Switching => false,
        }
    }
    pub fn is_h2(&self) -> bool {
        matches!(self, AnyConn::H2(_))
    }
    pub fn is_relay(&self) -> bool {
        matches!(self, AnyConn::H1(c) if c.is_relay())
    }
    pub fn relay_ready(&mut self, readable: bool, writable: bool) {
        if let AnyConn::H1(c) = self {
            c.relay_ready(readable, writable);
        }
    }
    /// The descriptors its waiting handlers watch.
    pub fn parked_fds(&self) -> Vec<RawFd> {
        match self {
            AnyConn::H1(c) => c.parked_fd().into_iter().collect(),
            AnyConn::H2(c) => c.parked_fds(),
            AnyConn::Switching => Vec::new(),
        }
    }
    /// `fd`, which a waiting handler of this connection watches, is ready:
    /// false when none does.
    pub fn wait_ready(&mut self, fd: RawFd) -> bool {
        match self {
            AnyConn::H1(c) if c.parked_fd() == Some(fd) => {
                c.wait_ready();
                true
            }
            AnyConn::H2(c) => c.wait_ready(fd),
            _ => false,
        }
    }
    pub fn close(&mut self, cx: &mut Cx<'_>, why: &str) -> Next {
        match self {
            AnyConn::H1(c) => c.close(cx, why),
            AnyConn::H2(c) => c.close(cx, why),
            AnyConn::Switching => Next::Close,
        }
    }
}
