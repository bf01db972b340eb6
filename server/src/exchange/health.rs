//! The health route (`health:` in server.yaml), answered by the core on
//! every vhost before routing, for a load balancer's checks:
//!
//! - `200 ok` while the server serves;
//! - `503` from SIGTERM on: first for the lame-duck delay (`lame_duck:`),
//!   while every other request is still served, so that the balancer's
//!   checks take this instance out of rotation before it stops accepting;
//!   then through the drain. A process that has handed its sockets to a
//!   new binary (SIGUSR2) answers 503 too, on the keep-alive connections
//!   it still finishes: new connections reach the new process, whose
//!   route answers 200.
//!
//! GET and HEAD only (others: 405). Health checks are not access-logged.

use crate::http::request::{Framing, RequestHead};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the control thread when the lame-duck delay starts.
static LAME_DUCK: AtomicBool = AtomicBool::new(false);

pub fn enter_lame_duck() {
    LAME_DUCK.store(true, Ordering::Relaxed);
}

pub fn lame_duck() -> bool {
    LAME_DUCK.load(Ordering::Relaxed)
}

/// The health route's answer, for the protocol to frame (`text/plain`,
/// never cached).
pub struct Health {
    pub status: u16,
    pub extra: &'static [(&'static str, &'static [u8])],
    pub body: &'static [u8],
    /// The connection closes after it.
    pub close: bool,
}

/// The answer to a request for the health route.
pub fn answer(head: &RequestHead, keep: bool, draining: bool) -> Health {
    // A body would have to be read past: close instead.
    let close = !keep || head.framing != Framing::None;
    type Fields = &'static [(&'static str, &'static [u8])];
    let (status, extra, body, close): (u16, Fields, &'static [u8], bool) =
        match head.method.as_str() {
            "GET" | "HEAD" if draining || lame_duck() => {
                (503, &[("Retry-After", b"5")], b"stopping\n", true)
            }
            "GET" | "HEAD" => (200, &[], b"ok\n", close),
            _ => (
                405,
                &[("Allow", b"GET, HEAD")],
                b"the health route answers GET and HEAD\n",
                close,
            ),
        };
    Health {
        status,
        extra,
        body,
        close,
    }
}
