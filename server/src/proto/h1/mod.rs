//! HTTP/1.1 on one connection, as an explicit state machine owned by its
//! event loop for its whole life. A request's life reads top to bottom in
//! [`Conn::drive`] and the functions it calls:
//!
//! ```text
//!   Proxy: a PROXY protocol header first (a balancer's listener)
//!     |
//!     v        +---------------------------------------------------+
//!   Head: read + parse a head (pipelined heads in the buffer first)   |
//!     | body whole in the buffer     | body on its way     | streamed |
//!     v                              v                     v         |
//!   the exchange runs (exchange/run.rs):  Collect: the body,   Pool     |
//!   inline answer | Wait -> Parked        whole first          (pipe)   |
//!                 | pool  -> Pool                                       |
//!     +-------------------+-------------------+                         |
//!                         v                                             |
//!   the writer sends the queue as the socket allows; each response's log|
//!   phase runs when its last byte is out; keep-alive -> Head again -----+
//!   else Linger (read and drop what the client still sends) -> closed
//!   a 101 -> Tunnel (bytes relayed both ways)
//! ```
//!
//! The state's data lives in the state; what the connection needs in
//! every state is the client's socket ([`Sock`]: transport and readiness),
//! the read buffer, the writer's queue, and how it ends ([`Closing`]).
//! The socket sits behind [`Transport`], so the whole machine is tested
//! with scripted I/O (`tests.rs`).

mod answer;
pub mod body;
pub mod buf;
mod collect;
pub mod head;
mod output;
pub mod sock;
#[cfg(test)]
mod tests;
mod timers;
mod tunnel;
pub mod writer;

pub use buf::Buf;

use crate::exchange::Exchange;
use crate::exchange::body::BodyPipe;
use crate::exchange::run::Parked;
use crate::http::Limits;
use crate::http::request::parse;
use crate::net::cx::Cx;
use crate::transport::Transport;
use body::BodyState;
use sock::{Read, Sock};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use writer::{Mark, Out};

/// Requests one turn may answer on a connection before the loop serves
/// the others (a client that pipelines without end waits its turn).
pub const TURN: u32 = 32;
/// How long and how much a lingering close reads before closing.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 4 << 20;

/// How to answer the request in flight.
#[derive(Clone, Copy)]
pub struct Reply {
    /// The request's HTTP minor version (1.0 or 1.1).
    pub minor: u8,
    /// A HEAD request: no body goes out.
    pub head_only: bool,
    /// The connection may stay open after the answer.
    pub keep: bool,
}

enum State {
    /// A PROXY protocol header is expected before the first request
    /// (`exchange/realip.rs`): it sets `peer` to the client's address.
    Proxy,
    /// Reading and answering request heads.
    Head,
    /// A request body still arriving is collected whole before the
    /// request runs (`request_buffering`): in memory up to `COLLECT_MAX`,
    /// then spooled to a file (`exchange/body.rs`), so a slow upload costs
    /// a connection, never a pool thread (as nginx buffers bodies).
    Collect(Box<collect::Collect>),
    /// An inline handler waits for a descriptor (SDK 1.1 `Wait`); the
    /// loop calls it again when it is ready or the wait's time is up.
    Parked(Box<Waiting>),
    /// A handler runs on the pool for the request at the front.
    Pool(Box<Pooled>),
    /// After a 101: bytes relayed both ways (`tunnel.rs`).
    Tunnel(Box<tunnel::Tunnel>),
    /// The last response is out and our side is shut down: the client's
    /// unread input is read and dropped until it closes or the time is
    /// up, so that closing with unread data does not reset the connection
    /// before the client has read the response (an early 413, say).
    Linger(Box<(Instant, u64)>),
}

/// A parked request and how to answer it.
struct Waiting {
    parked: Parked,
    reply: Reply,
    /// The descriptor became ready.
    ready: bool,
}

/// A request on the pool and how to answer it.
struct Pooled {
    reply: Reply,
    /// The body the loop feeds, when it streams (`request_buffering:
    /// false`).
    feed: Option<(BodyState, Arc<BodyPipe>)>,
}

/// How the connection ends.
#[derive(Default)]
struct Closing {
    /// The last queued response closes the connection.
    after: bool,
    /// Close with a lingering read (unread input may be on its way).
    linger: bool,
}

/// The answer of [`Conn::drive`].
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Wait for readiness or a message.
    Wait,
    /// Had its turn with work left: drive it again after the others.
    Again,
    Close,
    /// The client speaks HTTP/2 (ALPN `h2`, or the h2c preface on a
    /// socket that allows it): the loop makes it an HTTP/2 connection
    /// ([`Conn::into_h2`]).
    Http2,
}

/// What one step of the state's own work came to.
enum Flow {
    /// Something changed: go round again.
    Again,
    /// Nothing more to do in this state now: write, then read.
    Idle,
    /// The turn ends here.
    Done(Next),
}

pub struct Conn<T> {
    pub sock: Sock<T>,
    /// Tells this connection apart from a later one in the same slot.
    pub id: u64,
    /// The listening socket it came from (selects the site).
    pub bind: SocketAddr,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// A PROXY protocol v2 header said the client came over TLS.
    proxy_ssl: bool,
    buf: Buf,
    out: Out,
    state: State,
    closing: Closing,
    served: u64,
    /// When the head being read started (header timeout), and when the
    /// connection last became idle (idle timeout).
    head_started: Option<Instant>,
    idle_since: Instant,
    /// When the writer last moved bytes (send timeout).
    last_write: Instant,
    pub deadline: Option<Instant>,
    /// The h2c preface switches to HTTP/2 here (`h2c: true`).
    pub h2c: bool,
}

/// What [`Conn::into_h2`] hands over.
pub struct H2Parts<T> {
    pub sock: Sock<T>,
    /// Bytes read and not parsed (the preface, maybe frames).
    pub read: Vec<u8>,
    pub id: u64,
    pub bind: SocketAddr,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub proxy_ssl: bool,
}

impl<T: Transport> Conn<T> {
    /// The connection's socket and what it read, for HTTP/2.
    pub fn into_h2(self) -> H2Parts<T> {
        H2Parts {
            read: self.buf.data().to_vec(),
            sock: self.sock,
            id: self.id,
            bind: self.bind,
            local: self.local,
            peer: self.peer,
            proxy_ssl: self.proxy_ssl,
        }
    }

    /// Whether the client speaks HTTP/2 before its first request: `None`
    /// while too little of the preface is here to tell.
    fn speaks_h2(&self) -> Option<bool> {
        if self.served > 0 || !self.out.is_idle() {
            return Some(false);
        }
        if let Some(t) = self.sock.io.tls() {
            return Some(t.alpn.as_deref() == Some("h2"));
        }
        if !self.h2c {
            return Some(false);
        }
        let d = self.buf.data();
        let preface = crate::http::H2_PREFACE;
        if d.len() >= preface.len() {
            Some(d.starts_with(preface))
        } else if preface.starts_with(d) {
            None
        } else {
            Some(false)
        }
    }

    /// A connection; `proxy` when a PROXY protocol header comes first.
    pub fn new(
        io: T,
        id: u64,
        bind: SocketAddr,
        local: SocketAddr,
        peer: SocketAddr,
        proxy: bool,
    ) -> Self {
        let now = crate::clock::now();
        Conn {
            sock: Sock::new(io),
            id,
            bind,
            local,
            peer,
            proxy_ssl: false,
            buf: Buf::default(),
            out: Out::default(),
            state: if proxy { State::Proxy } else { State::Head },
            closing: Closing::default(),
            served: 0,
            head_started: None,
            idle_since: now,
            last_write: now,
            deadline: None,
            h2c: false,
        }
    }

    /// Idle between requests: nothing buffered, queued or running.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Head | State::Proxy) && self.buf.is_empty() && self.sent_all()
    }

    /// Nothing is left to send: the queue is empty and the transport
    /// holds no records back (TLS).
    fn sent_all(&self) -> bool {
        self.out.is_idle() && !self.sock.io.pending()
    }

    /// Whether a handler runs on the pool for this connection.
    #[cfg(test)]
    pub fn waits_for_pool(&self) -> bool {
        matches!(self.state, State::Pool(_))
    }

    /// Whether a request's body is being collected on the loop.
    #[cfg(test)]
    pub fn collects_body(&self) -> bool {
        matches!(self.state, State::Collect(_))
    }

    /// Whether a response is still being written or a handler runs.
    pub fn is_busy(&self) -> bool {
        !self.sent_all()
            || matches!(
                self.state,
                State::Pool(_) | State::Tunnel(_) | State::Parked(_) | State::Collect(_)
            )
    }

    /// The descriptor a waiting handler watches (the loop stops watching
    /// it when the connection goes).
    pub fn parked_fd(&self) -> Option<std::os::fd::RawFd> {
        match &self.state {
            State::Parked(p) => Some(p.parked.wait.fd),
            _ => None,
        }
    }

    /// The descriptor a waiting handler watches is ready.
    pub fn wait_ready(&mut self) {
        if let State::Parked(p) = &mut self.state {
            p.ready = true;
        }
    }

    /// Whether this connection is a relay (closed when a drain's grace
    /// ends: a WebSocket has no natural end to wait for).
    pub fn is_relay(&self) -> bool {
        matches!(self.state, State::Tunnel(_))
    }

    /// Readiness of a relay's other socket.
    pub fn relay_ready(&mut self, readable: bool, writable: bool) {
        if let State::Tunnel(t) = &mut self.state {
            t.up_readable |= readable;
            t.up_writable |= writable;
        }
    }

    /// Runs the connection until it must wait.
    pub fn drive(&mut self, cx: &mut Cx<'_>) -> Next {
        let next = self.step(cx);
        self.deadline = self.compute_deadline(cx);
        next
    }

    fn step(&mut self, cx: &mut Cx<'_>) -> Next {
        let mut answered = 0u32;
        loop {
            // Heads wait in the buffer because the queue was full: once the
            // flush below has made room, they are answered in this turn (no
            // readiness edge would come back for them).
            let held_back = matches!(self.state, State::Head)
                && !self.closing.after
                && !self.out.can_gather()
                && !self.buf.is_empty();
            // 1. The state's own work.
            match self.advance(cx, &mut answered) {
                Flow::Again => continue,
                Flow::Done(next) => return next,
                Flow::Idle => {}
            }
            // 2. Write what is queued.
            if let Some(n) = self.flush(cx) {
                return n;
            }
            if self.sent_all() && self.closing.after && matches!(self.state, State::Head) {
                return self.end();
            }
            if held_back && self.out.can_gather() {
                continue;
            }
            // 3. Read more heads.
            match self.read_heads(cx) {
                Flow::Again => continue,
                Flow::Done(next) => return next,
                Flow::Idle => {}
            }
            if self.is_idle() {
                self.buf.shrink();
                self.head_started = None;
                // Draining: a connection that has been answered goes; one
                // idle since before the drain waits out its grace (a
                // request may be on its way), then the loop closes it.
                if cx.draining && self.served > 0 && self.idle_since >= cx.drain_started {
                    return Next::Close;
                }
            }
            return Next::Wait;
        }
    }

    /// What the current state does with what it has.
    fn advance(&mut self, cx: &mut Cx<'_>, answered: &mut u32) -> Flow {
        match &mut self.state {
            State::Linger(_) => Flow::Done(self.linger_read()),
            State::Tunnel(_) => Flow::Done(self.tunnel_step(cx)),
            State::Proxy => self.proxy_header(cx),
            State::Head => self.answer_heads(cx, answered),
            State::Collect(_) => self.collect_step(cx),
            State::Parked(_) => self.parked_step(cx),
            State::Pool(_) => {
                self.feed();
                Flow::Idle
            }
        }
    }

    /// A waiting handler whose descriptor is ready (or whose time is up)
    /// runs again. A client that ends its side meanwhile has left (as
    /// nginx takes it): the handler's state is dropped, which frees its
    /// upstream connection.
    fn parked_step(&mut self, cx: &mut Cx<'_>) -> Flow {
        if self.sock.peer_closed && !self.sock.read_eof {
            loop {
                match self.sock.read(&mut self.buf) {
                    Read::Eof => {
                        return Flow::Done(
                            self.close(cx, "the client left while the handler waited"),
                        );
                    }
                    // Pipelined requests: kept for later.
                    Read::Data => continue,
                    Read::Blocked => break,
                }
            }
        }
        let State::Parked(p) = &self.state else {
            return Flow::Idle;
        };
        if p.ready || crate::clock::now() >= p.parked.until {
            self.resume(cx);
            return Flow::Again;
        }
        Flow::Idle
    }

    /// A PROXY protocol header comes before anything else.
    fn proxy_header(&mut self, cx: &mut Cx<'_>) -> Flow {
        if self.closing.after {
            return Flow::Idle;
        }
        match crate::exchange::realip::parse_proxy(self.buf.data()) {
            crate::exchange::realip::Proxy::Partial => Flow::Idle,
            crate::exchange::realip::Proxy::Header(n, client) => {
                self.proxy_ssl = crate::exchange::realip::proxy_ssl(&self.buf.data()[..n]);
                self.buf.consume(n);
                self.state = State::Head;
                if let Some(c) = client {
                    log::trace!("PROXY protocol: {} is {c}", self.peer);
                    self.peer = c;
                }
                Flow::Again
            }
            crate::exchange::realip::Proxy::Bad(why) => {
                crate::ratelog::proxy_refused(|| {
                    format!(
                        "{} expects the PROXY protocol: closing the connection from {}: {why}",
                        self.bind, self.peer
                    )
                });
                Flow::Done(self.close(cx, "no PROXY protocol header"))
            }
        }
    }

    /// Answers the heads already buffered (pipelining), one per call.
    fn answer_heads(&mut self, cx: &mut Cx<'_>, answered: &mut u32) -> Flow {
        if self.closing.after || !self.out.can_gather() {
            return Flow::Idle;
        }
        if *answered >= TURN {
            return Flow::Done(self.flush(cx).unwrap_or(Next::Again));
        }
        if !self.buf.is_empty() && matches!(self.state, State::Head) {
            match self.speaks_h2() {
                Some(true) => return Flow::Done(Next::Http2),
                None => return Flow::Idle,
                Some(false) => {}
            }
        }
        match parse(self.buf.data(), &limits(cx)) {
            Ok(Some(head)) => {
                *answered += 1;
                self.start(head, cx);
                Flow::Again
            }
            Ok(None) => Flow::Idle,
            Err(e) => {
                self.bad_head(e, cx);
                Flow::Again
            }
        }
    }

    /// Reads more of the client's heads, when there is room for answers.
    fn read_heads(&mut self, cx: &mut Cx<'_>) -> Flow {
        if !matches!(self.state, State::Head | State::Proxy)
            || self.closing.after
            || !self.out.can_gather()
            || !self.sock.readable
            || self.sock.read_eof
        {
            return Flow::Idle;
        }
        match self.sock.read(&mut self.buf) {
            Read::Eof => {
                if self.buf.is_empty() && self.sent_all() {
                    return Flow::Done(Next::Close);
                }
                // Answer what was sent, then close.
                self.closing.after = true;
                Flow::Again
            }
            Read::Data => {
                let now = crate::clock::now();
                match self.head_started {
                    None => self.head_started = Some(now),
                    // A head that keeps trickling in is still bound by the
                    // header timeout.
                    Some(t) if now.duration_since(t) > cx.settings().header_timeout.0 => {
                        return Flow::Done(self.close(cx, "header timeout"));
                    }
                    Some(_) => {}
                }
                Flow::Again
            }
            Read::Blocked => Flow::Idle,
        }
    }

    /// Closes: responses not fully sent are logged as incomplete, a
    /// stream being sent and a body being fed are given up.
    pub fn close(&mut self, cx: &mut Cx<'_>, why: &str) -> Next {
        log::debug!("closing connection from {}: {why}", self.peer);
        for m in self.out.abandon() {
            log_mark(m, self.out.sent, false, Some(why.to_owned()));
        }
        match std::mem::replace(&mut self.state, State::Head) {
            State::Pool(w) => {
                if let Some((_, pipe)) = &w.feed {
                    pipe.fail(format!("the connection was closed: {why}"));
                }
                self.state = State::Pool(w);
            }
            State::Tunnel(mut t) => {
                t.fail(why);
                self.state = State::Tunnel(t);
            }
            State::Collect(c) => self.give_up_collect(*c, why),
            State::Parked(p) => {
                let Parked { wait, x, .. } = p.parked;
                // Unwatched before the state (which may close it) goes.
                cx.forget_wait(wait.fd);
                drop(wait);
                // nginx's "client closed request".
                log_given_up(x, 499, why);
            }
            s => self.state = s,
        }
        Next::Close
    }
}

/// Runs the log phase of a response in the queue.
fn log_mark(m: Mark, sent: u64, completed: bool, error: Option<String>) {
    let (body_sent, total_sent) = m.sent(sent);
    if let Some(x) = m.exchange {
        crate::exchange::logphase::run(
            x,
            crate::exchange::logphase::Outcome {
                status: m.status,
                body_sent,
                total_sent,
                completed,
                error,
            },
        );
    }
}

/// Logs a request given up before any response (a client that left).
fn log_given_up(x: Box<Exchange>, status: u16, why: &str) {
    crate::exchange::logphase::run(
        x,
        crate::exchange::logphase::Outcome {
            status,
            completed: false,
            error: Some(why.to_owned()),
            ..Default::default()
        },
    );
}

/// The limits of a request head (HTTP/2 uses them too).
pub(crate) fn limits(cx: &Cx<'_>) -> Limits {
    let s = cx.settings();
    Limits {
        max_request_line: s.max_request_line.0 as usize,
        max_header_size: s.max_header_size.0 as usize,
        max_headers: s.max_headers,
    }
}
