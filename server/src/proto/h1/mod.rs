//! One client connection as an explicit state machine, owned by its event
//! loop for its whole life. A request's life reads top to bottom in
//! [`Conn::drive`] and the functions it calls:
//!
//! ```text
//!            +-----------------------------------------------+
//!            v                                               |
//!   Head: read + parse a head (pipelined heads in the buffer first)
//!     | inline handler, body in memory        | pool handler, or Defer
//!     v                                       v
//!   answer now: the response is queued    Pool: the handler runs on the pool;
//!   (writer.rs), next head at once          the loop feeds its body pipe and
//!     |                                     gets the answer back (on_handled)
//!     +-------------------+-------------------+
//!                         v
//!   the writer sends the queue as the socket allows; each response's log
//!   phase runs when its last byte is out; keep-alive -> Head again,
//!   else Linger (read and drop what the client still sends) -> closed
//! ```
//!
//! Readiness is edge-triggered (mio): `readable`/`writable` remember an
//! edge until a call would block (or a read comes back short, which
//! drains the socket for this edge). The socket sits behind
//! [`Transport`], so the whole machine is tested with scripted I/O.

mod answer;
pub mod body;
#[cfg(test)]
mod tests;
mod tunnel;
pub mod writer;

pub use crate::exchange::{Handled, drop_handled};
use answer::log_mark;

use crate::exchange::body::BodyPipe;
use crate::http::Limits;
use crate::http::request::parse;
use crate::net::cx::Cx;
use crate::proto::h1::writer::{Out, Progress};
use crate::transport::{Io, Transport};
use body::BodyState;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The read buffer: unparsed bytes from the client.
#[derive(Default)]
pub struct Buf {
    data: Vec<u8>,
    start: usize,
}

/// How much one read asks for.
pub const READ_CHUNK: usize = 16 * 1024;

impl Buf {
    pub fn data(&self) -> &[u8] {
        &self.data[self.start..]
    }
    pub fn is_empty(&self) -> bool {
        self.start == self.data.len()
    }
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.data.len() {
            self.data.clear();
            self.start = 0;
        }
    }
    /// Frees the memory of an empty buffer (idle connections cost little).
    pub fn shrink(&mut self) {
        if self.is_empty() {
            self.data = Vec::new();
            self.start = 0;
        }
    }
    /// One read from `io`. `Ready(0)` is the end of the stream.
    ///
    /// PERF: the read goes into a scratch buffer of the thread, and only
    /// the bytes that came are copied into the connection's own buffer:
    /// no 16 KiB zeroed per read, and an idle connection's buffer is
    /// freed without making the next read pay for a new one.
    pub fn fill(&mut self, io: &mut impl Transport) -> std::io::Result<Io> {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; READ_CHUNK]);
        }
        if self.start > 0 {
            self.data.drain(..self.start);
            self.start = 0;
        }
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let r = io.read(&mut s[..]);
            if let Ok(Io::Ready(n)) = &r {
                self.data.extend_from_slice(&s[..*n]);
            }
            r
        })
    }
}

/// Requests one turn may answer on a connection before the loop serves
/// the others (a client that pipelines without end waits its turn).
pub const TURN: u32 = 32;
/// How long and how much a lingering close reads before closing.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 4 << 20;

enum Phase {
    /// Reading and answering request heads.
    Head,
    /// A handler runs on the pool for the request at the front.
    Pool(Box<Waiting>),
    /// The last response is out and our side is shut down: the client's
    /// unread input is read and dropped until it closes or the time is
    /// up, so that closing with unread data does not reset the connection
    /// before the client has read the response (an early 413, say).
    /// (Boxed: idle connections keep the enum small.)
    Linger(Box<(Instant, u64)>),
    /// After a 101: bytes relayed both ways (`tunnel.rs`).
    Tunnel(Box<tunnel::Tunnel>),
    /// An inline handler waits for a descriptor (SDK 1.1 `Wait`); the
    /// loop calls it again when it is ready or the wait's time is up.
    Parked(Box<Parked>),
    /// A request body still arriving is collected whole before the
    /// request runs (`request_buffering`): in memory up to `COLLECT_MAX`,
    /// then spooled to a file (`body.rs`), so a slow upload costs a
    /// connection, never a pool thread (as nginx buffers bodies).
    Collect(Box<Collect>),
}

/// A request whose body is being collected.
pub(crate) struct Collect {
    x: Box<crate::exchange::Exchange>,
    state: BodyState,
    minor: u8,
    head_only: bool,
    keep: bool,
    /// The body so far.
    body: crate::exchange::body::Spool,
    /// When the body started (`body_min_rate` counts from here).
    started: Instant,
    /// When body bytes last came (`body_timeout` counts from here).
    last: Instant,
}

/// A request whose inline handler waits.
struct Parked {
    /// First: its state is freed before the exchange (whose vhost keeps
    /// the plugin loaded) when the connection goes while it waits.
    wait: crate::plugins::Wait,
    x: Box<crate::exchange::Exchange>,
    mem: crate::exchange::body::MemBody,
    minor: u8,
    head_only: bool,
    keep: bool,
    until: Instant,
    /// The descriptor became ready.
    ready: bool,
}

/// A request whose handler runs on the pool.
struct Waiting {
    minor: u8,
    head_only: bool,
    keep: bool,
    /// The body the loop feeds, if it was not in memory.
    feed: Option<(BodyState, Arc<BodyPipe>)>,
}

/// How far collecting a body got.
enum Collected {
    /// It is all here.
    Whole,
    /// More is to come.
    Waiting,
    /// The client closed first.
    Gone,
    /// It cannot be taken: the status to answer (400 bad chunking, 413
    /// over the limit, 503 `max_spool` reached, 500 the spool failed),
    /// and why.
    Failed(u16, String),
}

/// The answer of [`Conn::drive`].
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Wait for readiness or a message.
    Wait,
    /// Had its turn with work left: drive it again after the others.
    Again,
    Close,
}

pub struct Conn<T> {
    pub io: T,
    /// Tells this connection apart from a later one in the same slot.
    pub id: u64,
    /// The listening socket it came from (selects the site).
    pub bind: SocketAddr,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    buf: Buf,
    out: Out,
    phase: Phase,
    pub readable: bool,
    pub writable: bool,
    /// The peer has closed its side (reads go on to the end of stream).
    pub peer_closed: bool,
    /// A PROXY protocol header is expected before the first request
    /// (`realip.rs`): it sets `peer` to the client's address.
    pub proxy: bool,
    /// The client ended its side.
    read_eof: bool,
    /// The last queued response closes the connection.
    close_after: bool,
    /// Close with a lingering read (unread input may be on its way).
    linger: bool,
    served: u64,
    /// When the head being read started (header timeout), and when the
    /// connection last became idle (idle timeout).
    head_started: Option<Instant>,
    idle_since: Instant,
    /// When the writer last moved bytes (send timeout).
    last_write: Instant,
    pub deadline: Option<Instant>,
}

impl<T: Transport> Conn<T> {
    pub fn new(io: T, id: u64, bind: SocketAddr, local: SocketAddr, peer: SocketAddr) -> Self {
        let now = crate::clock::now();
        Conn {
            io,
            id,
            bind,
            local,
            peer,
            buf: Buf::default(),
            out: Out::default(),
            phase: Phase::Head,
            readable: true,
            writable: true,
            peer_closed: false,
            proxy: false,
            read_eof: false,
            close_after: false,
            linger: false,
            served: 0,
            head_started: None,
            idle_since: now,
            last_write: now,
            deadline: None,
        }
    }

    /// Idle between requests: nothing buffered, queued or running.
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Head) && self.buf.is_empty() && self.out.is_idle()
    }

    /// Whether a handler runs on the pool for this connection.
    #[cfg(test)]
    pub fn waits_for_pool(&self) -> bool {
        matches!(self.phase, Phase::Pool(_))
    }

    /// Whether a request's body is being collected on the loop.
    #[cfg(test)]
    pub fn collects_body(&self) -> bool {
        matches!(self.phase, Phase::Collect(_))
    }

    /// Whether a response is still being written or a handler runs.
    pub fn is_busy(&self) -> bool {
        !self.out.is_idle()
            || matches!(
                self.phase,
                Phase::Pool(_) | Phase::Tunnel(_) | Phase::Parked(_) | Phase::Collect(_)
            )
    }

    /// The descriptor a waiting handler watches (the loop stops watching
    /// it when the connection goes).
    pub fn parked_fd(&self) -> Option<std::os::fd::RawFd> {
        match &self.phase {
            Phase::Parked(p) => Some(p.wait.fd),
            _ => None,
        }
    }

    /// The descriptor a waiting handler watches is ready.
    pub fn wait_ready(&mut self) {
        if let Phase::Parked(p) = &mut self.phase {
            p.ready = true;
        }
    }

    /// Whether this connection is a relay (closed when a drain's grace
    /// ends: a WebSocket has no natural end to wait for).
    pub fn is_relay(&self) -> bool {
        matches!(self.phase, Phase::Tunnel(_))
    }

    /// Readiness of a relay's other socket.
    pub fn relay_ready(&mut self, readable: bool, writable: bool) {
        if let Phase::Tunnel(t) = &mut self.phase {
            t.up_readable |= readable;
            t.up_writable |= writable;
        }
    }

    /// A turn of the relay, once the 101 is out.
    fn tunnel_step(&mut self, cx: &mut Cx<'_>) -> Next {
        if !self.out.is_idle() {
            if let Some(n) = self.flush(cx) {
                return n;
            }
            if !self.out.is_idle() {
                return Next::Wait;
            }
        }
        let Phase::Tunnel(t) = &mut self.phase else {
            return Next::Close;
        };
        if let Some(fd) = t.take_unregistered()
            && let Err(e) = cx.register_relay(fd)
        {
            t.fail(&format!("cannot watch the relay's socket: {e}"));
            return Next::Close;
        }
        match t.turn(&mut self.io, &mut self.readable, &mut self.writable) {
            tunnel::Turn::Wait => Next::Wait,
            tunnel::Turn::Again => Next::Again,
            tunnel::Turn::Done => Next::Close,
            tunnel::Turn::Failed(e) => {
                log::debug!("relay for {}: {e}", self.peer);
                t.fail(&e);
                Next::Close
            }
        }
    }

    /// Runs the connection until it must wait.
    pub fn drive(&mut self, cx: &mut Cx<'_>) -> Next {
        let next = self.step(cx);
        self.deadline = self.compute_deadline(cx);
        next
    }

    fn step(&mut self, cx: &mut Cx<'_>) -> Next {
        if let Phase::Linger(_) = self.phase {
            return self.linger_read();
        }
        if let Phase::Tunnel(_) = self.phase {
            return self.tunnel_step(cx);
        }
        let mut answered = 0u32;
        loop {
            // 0. A waiting handler whose descriptor is ready (or whose time
            // is up) runs again. A client that ends its side meanwhile has
            // left (as nginx takes it): the handler's state is dropped,
            // which frees its upstream connection.
            if let Phase::Parked(_) = &self.phase
                && self.peer_closed
                && !self.read_eof
            {
                loop {
                    match self.buf.fill(&mut self.io) {
                        Ok(Io::Ready(0)) | Err(_) => {
                            self.read_eof = true;
                            return self.close(cx, "the client left while the handler waited");
                        }
                        // Pipelined requests: kept for later.
                        Ok(Io::Ready(_)) => continue,
                        Ok(Io::Blocked) => break,
                    }
                }
            }
            // A body being collected: when it is whole, the request runs.
            if let Phase::Collect(_) = &self.phase {
                match self.collect(cx) {
                    Collected::Whole => {
                        self.run_collected(cx);
                        if let Phase::Tunnel(_) = self.phase {
                            return self.tunnel_step(cx);
                        }
                        continue;
                    }
                    Collected::Gone => {
                        // What was answered before still goes out, then
                        // the connection closes.
                        self.drop_collect("the client closed the connection before the body ended");
                        self.close_after = true;
                        continue;
                    }
                    Collected::Failed(status, why) => {
                        self.collect_failed(status, &why);
                        continue;
                    }
                    // On to writing what is queued, then wait.
                    Collected::Waiting => {}
                }
            }
            if let Phase::Parked(p) = &self.phase
                && (p.ready || crate::clock::now() >= p.until)
            {
                self.resume(cx);
                if let Phase::Tunnel(_) = self.phase {
                    return self.tunnel_step(cx);
                }
                continue;
            }
            // Heads wait in the buffer because the queue was full: once the
            // flush below has made room, they are answered in this turn (no
            // readiness edge would come back for them).
            let held_back = matches!(self.phase, Phase::Head)
                && !self.close_after
                && !self.out.can_gather()
                && !self.buf.is_empty();
            // 0. A PROXY protocol header comes before anything else.
            if self.proxy && !self.close_after {
                match crate::exchange::realip::parse_proxy(self.buf.data()) {
                    crate::exchange::realip::Proxy::Partial => {}
                    crate::exchange::realip::Proxy::Header(n, client) => {
                        self.buf.consume(n);
                        self.proxy = false;
                        if let Some(c) = client {
                            log::trace!("PROXY protocol: {} is {c}", self.peer);
                            self.peer = c;
                        }
                        continue;
                    }
                    crate::exchange::realip::Proxy::Bad(why) => {
                        crate::ratelog::proxy_refused(|| {
                            format!(
                                "{} expects the PROXY protocol: closing the connection from {}: {why}",
                                self.bind, self.peer
                            )
                        });
                        return self.close(cx, "no PROXY protocol header");
                    }
                }
            }
            // 1. Answer the heads already buffered (pipelining).
            if matches!(self.phase, Phase::Head)
                && !self.proxy
                && !self.close_after
                && self.out.can_gather()
            {
                if answered >= TURN {
                    return self.flush(cx).unwrap_or(Next::Again);
                }
                match parse(self.buf.data(), &limits(cx)) {
                    Ok(Some(head)) => {
                        answered += 1;
                        self.start(head, cx);
                        if let Phase::Tunnel(_) = self.phase {
                            // An inline handler answered with a relay.
                            return self.tunnel_step(cx);
                        }
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.bad_head(e, cx);
                        continue;
                    }
                }
            }
            // 2. Feed the body of a request on the pool.
            if let Err(()) = self.feed(cx) {
                return self.close(cx, "client gone while sending the body");
            }
            // 3. Write what is queued.
            if let Some(n) = self.flush(cx) {
                return n;
            }
            if self.out.is_idle() && self.close_after && matches!(self.phase, Phase::Head) {
                return self.end(cx);
            }
            if held_back && self.out.can_gather() {
                continue;
            }
            // 4. Read more heads.
            if matches!(self.phase, Phase::Head)
                && !self.close_after
                && self.out.can_gather()
                && self.readable
                && !self.read_eof
            {
                match self.buf.fill(&mut self.io) {
                    Ok(Io::Ready(0)) => {
                        self.read_eof = true;
                        self.readable = false;
                        if self.buf.is_empty() && self.out.is_idle() {
                            return Next::Close;
                        }
                        // Answer what was sent, then close.
                        self.close_after = true;
                        continue;
                    }
                    Ok(Io::Ready(n)) => {
                        // A short read drained the socket for this edge,
                        // unless the peer has closed: then the end of the
                        // stream is still to be read, and no edge follows.
                        if n < READ_CHUNK && !self.peer_closed {
                            self.readable = false;
                        }
                        let now = crate::clock::now();
                        match self.head_started {
                            None => self.head_started = Some(now),
                            // A head that keeps trickling in is still bound
                            // by the header timeout.
                            Some(t) if now.duration_since(t) > cx.settings().header_timeout.0 => {
                                return self.close(cx, "header timeout");
                            }
                            Some(_) => {}
                        }
                        continue;
                    }
                    Ok(Io::Blocked) => self.readable = false,
                    Err(_) => return self.close(cx, "read failed"),
                }
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

    /// Gives up a request whose body was being collected: logged 400 (as
    /// nginx logs a client that left mid-body).
    fn drop_collect(&mut self, why: &str) {
        if let Phase::Collect(_) = &self.phase
            && let Phase::Collect(c) = std::mem::replace(&mut self.phase, Phase::Head)
        {
            let mut x = c.x;
            x.bytes_received += c.state.wire_bytes + self.buf.data().len() as u64;
            self.buf.consume(self.buf.data().len());
            log_given_up(x, 400, why);
        }
    }

    /// Reads a body being collected as far as the socket allows.
    fn collect(&mut self, cx: &Cx<'_>) -> Collected {
        let s = cx.settings();
        let dir = s.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
        let max_spool = s.max_spool.0;
        let mut scratch = [0u8; 16 * 1024];
        loop {
            let Phase::Collect(c) = &mut self.phase else {
                return Collected::Waiting;
            };
            while !c.state.done && !self.buf.is_empty() {
                match c.state.take(self.buf.data(), &mut scratch) {
                    Ok((0, 0)) => break,
                    Ok((used, made)) => {
                        self.buf.consume(used);
                        match c.body.push(&scratch[..made], &dir, max_spool) {
                            Ok(()) => {}
                            Err(crate::exchange::body::SpoolError::Full(max)) => {
                                return Collected::Failed(
                                    503,
                                    format!(
                                        "request bodies spooled to disk reached max_spool ({max} bytes)"
                                    ),
                                );
                            }
                            Err(crate::exchange::body::SpoolError::Io(e)) => {
                                return Collected::Failed(
                                    500,
                                    format!(
                                        "cannot spool the request body in {}: {e}",
                                        dir.display()
                                    ),
                                );
                            }
                        }
                    }
                    Err(why) => {
                        let status = if c.state.exceeded { 413 } else { 400 };
                        return Collected::Failed(status, why);
                    }
                }
            }
            if c.state.done {
                return Collected::Whole;
            }
            if self.read_eof {
                return Collected::Gone;
            }
            if !self.readable {
                return Collected::Waiting;
            }
            match self.buf.fill(&mut self.io) {
                Ok(Io::Ready(0)) | Err(_) => {
                    self.read_eof = true;
                    self.readable = false;
                    return Collected::Gone;
                }
                Ok(Io::Ready(n)) => {
                    if n < READ_CHUNK && !self.peer_closed {
                        self.readable = false;
                    }
                    c.last = crate::clock::now();
                }
                Ok(Io::Blocked) => {
                    self.readable = false;
                    return Collected::Waiting;
                }
            }
        }
    }

    /// Writes the queue; `Some` when the connection must close.
    fn flush(&mut self, cx: &mut Cx<'_>) -> Option<Next> {
        if self.out.is_idle() || !self.writable {
            return None;
        }
        let before = self.out.sent;
        let p = self.out.write(&mut self.io);
        if self.out.sent > before {
            self.last_write = crate::clock::now();
        }
        match p {
            Progress::Done => {}
            // Waiting for a plugin's stream is not the client's fault: the
            // send timeout counts from when there is something to send.
            Progress::Starved => self.last_write = crate::clock::now(),
            Progress::Yield => {
                self.finish_logs();
                return Some(Next::Again);
            }
            Progress::Blocked => self.writable = false,
            Progress::Failed(e) => {
                // Responses wholly sent before the failure are complete.
                self.finish_logs();
                return Some(self.close(cx, &e));
            }
        }
        self.finish_logs();
        None
    }

    /// Runs the log phase of the responses whose last byte is out.
    fn finish_logs(&mut self) {
        while let Some(m) = self.out.finished() {
            self.served += 1;
            log_mark(m, self.out.sent, true, None);
        }
        if self.out.is_idle() {
            self.idle_since = crate::clock::now();
        }
    }

    /// The last response is out: close, lingering if input may follow.
    fn end(&mut self, cx: &mut Cx<'_>) -> Next {
        if !self.linger || self.read_eof {
            return Next::Close;
        }
        self.io.shutdown_write();
        self.buf = Buf::default();
        self.phase = Phase::Linger(Box::new((Instant::now() + LINGER_TIME, 0)));
        let _ = cx;
        self.linger_read()
    }

    fn linger_read(&mut self) -> Next {
        let Phase::Linger(l) = &mut self.phase else {
            return Next::Close;
        };
        let (until, dropped) = &mut **l;
        let mut scratch = [0u8; 16 * 1024];
        loop {
            if Instant::now() >= *until || *dropped > LINGER_BYTES {
                return Next::Close;
            }
            match self.io.read(&mut scratch) {
                Ok(Io::Ready(0)) | Err(_) => return Next::Close,
                Ok(Io::Ready(n)) => *dropped += n as u64,
                Ok(Io::Blocked) => {
                    self.readable = false;
                    return Next::Wait;
                }
            }
        }
    }

    /// Closes: responses not fully sent are logged as incomplete, a
    /// stream being sent and a body being fed are given up.
    pub fn close(&mut self, cx: &mut Cx<'_>, why: &str) -> Next {
        log::debug!("closing connection from {}: {why}", self.peer);
        for m in self.out.abandon() {
            log_mark(m, self.out.sent, false, Some(why.to_owned()));
        }
        if let Phase::Pool(w) = &self.phase
            && let Some((_, pipe)) = &w.feed
        {
            pipe.fail(format!("the connection was closed: {why}"));
        }
        if let Phase::Tunnel(t) = &mut self.phase {
            t.fail(why);
        }
        self.drop_collect(why);
        if let Phase::Parked(_) = &self.phase
            && let Phase::Parked(p) = std::mem::replace(&mut self.phase, Phase::Head)
        {
            let Parked { wait, x, .. } = *p;
            // Unwatched before the state (which may close it) goes.
            cx.forget_wait(wait.fd);
            drop(wait);
            // nginx's "client closed request".
            log_given_up(x, 499, why);
        }
        Next::Close
    }

    fn compute_deadline(&self, cx: &Cx<'_>) -> Option<Instant> {
        let s = cx.settings();
        if let Phase::Linger(l) = &self.phase {
            return Some(l.0);
        }
        if let Phase::Tunnel(t) = &self.phase
            && self.out.is_idle()
        {
            return Some(t.last + t.idle);
        }
        // A waiting handler's or a collected body's own deadline.
        let request = self.request_deadline(cx);
        if !self.out.is_idle() && !self.writable {
            let send = self.last_write + s.send_timeout.0;
            return Some(request.map_or(send, |r| r.min(send)));
        }
        if request.is_some() {
            return request;
        }
        match self.phase {
            Phase::Pool(_) => None,
            _ if !self.out.is_idle() => None,
            _ => Some(match self.head_started {
                Some(t) if !self.buf.is_empty() => t + s.header_timeout.0,
                _ if self.served == 0 => self.idle_since + s.header_timeout.0,
                _ => self.idle_since + s.idle_timeout.0,
            }),
        }
    }

    /// When a waiting handler's wait, or the collection of a body, is up.
    fn request_deadline(&self, cx: &Cx<'_>) -> Option<Instant> {
        match &self.phase {
            Phase::Parked(p) => Some(p.until),
            Phase::Collect(c) => {
                let s = cx.settings();
                let stall = c.last + s.body_timeout.0;
                Some(match s.body_min_rate.0 {
                    0 => stall,
                    // SECURITY: a byte now and then keeps the stall timer
                    // from firing; the average rate after the first
                    // `body_timeout` must be `body_min_rate` (Apache's
                    // `MinRate`): each byte buys 1/rate seconds more.
                    rate => {
                        let got = c.state.wire_bytes + self.buf.data().len() as u64;
                        let extra = Duration::from_secs_f64(got as f64 / rate as f64);
                        stall.min(c.started + s.body_timeout.0 + extra)
                    }
                })
            }
            _ => None,
        }
    }

    /// The deadline passed.
    pub fn timed_out(&mut self, cx: &mut Cx<'_>) -> Next {
        let send_timed_out = !self.out.is_idle()
            && !self.writable
            && crate::clock::now() >= self.last_write + cx.settings().send_timeout.0;
        if !send_timed_out && let Some(due) = self.request_deadline(cx) {
            if crate::clock::now() < due {
                // Nothing is due yet: the next sweep looks again.
                return Next::Wait;
            }
            if let Phase::Collect(_) = self.phase {
                self.collect_timed_out(cx);
            }
            // A waiting handler hears of it (a 504, say); a collected
            // body's 408 goes out.
            return self.drive(cx);
        }
        let why = match self.phase {
            Phase::Linger(_) => return Next::Close,
            Phase::Tunnel(_) if self.out.is_idle() => "relay idle",
            _ if !self.out.is_idle() => "send timeout",
            _ if !self.buf.is_empty() => "header timeout",
            _ => "idle",
        };
        self.close(cx, why)
    }

    /// Feeds the pipe of a body the pool reads; `Err` when the client
    /// went away.
    fn feed(&mut self, cx: &mut Cx<'_>) -> Result<(), ()> {
        let Phase::Pool(w) = &mut self.phase else {
            return Ok(());
        };
        let Some((state, pipe)) = &mut w.feed else {
            return Ok(());
        };
        let _ = cx;
        loop {
            if state.done || state.broken {
                return Ok(());
            }
            let f = pipe.feed();
            if f.send_continue {
                state.continue_pending = false;
                self.out.push_raw(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            if f.room == 0 {
                return Ok(());
            }
            if !self.buf.is_empty() {
                state.limit = pipe.limit();
                let before = self.buf.data().len();
                let mut chunk = vec![0u8; f.room.min(64 * 1024)];
                let mut made = 0;
                while made < chunk.len() && !state.done {
                    match state.take(self.buf.data(), &mut chunk[made..]) {
                        Ok((0, 0)) => break,
                        Ok((c, n)) => {
                            self.buf.consume(c);
                            made += n;
                        }
                        Err(e) => {
                            pipe.fail(e);
                            return Ok(());
                        }
                    }
                }
                chunk.truncate(made);
                pipe.push(chunk, state.done);
                if state.done || self.buf.is_empty() {
                    continue;
                }
                // More than one push's worth was buffered: push on while the
                // pipe has room. (Waiting for the socket here stalled the
                // body: the client may have sent it all already, and no
                // readiness edge would come for bytes already read.)
                if self.buf.data().len() < before {
                    continue;
                }
                // The buffer holds a partial chunk line: read more.
            }
            if !self.readable {
                return Ok(());
            }
            match self.buf.fill(&mut self.io) {
                Ok(Io::Ready(0)) | Err(_) => {
                    state.broken = true;
                    self.read_eof = true;
                    pipe.fail("the client closed the connection before the body ended".into());
                    return Ok(());
                }
                Ok(Io::Ready(n)) => {
                    if n < READ_CHUNK && !self.peer_closed {
                        self.readable = false;
                    }
                }
                Ok(Io::Blocked) => {
                    self.readable = false;
                    return Ok(());
                }
            }
        }
    }
}

/// Logs a request given up before any response (a client that left).
fn log_given_up(x: Box<crate::exchange::Exchange>, status: u16, why: &str) {
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

fn limits(cx: &Cx<'_>) -> Limits {
    let s = cx.settings();
    Limits {
        max_request_line: s.max_request_line.0 as usize,
        max_header_size: s.max_header_size.0 as usize,
        max_headers: s.max_headers,
    }
}
