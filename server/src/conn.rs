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

use crate::body::{BodyPipe, BodyState, MemBody};
use crate::evloop::Cx;
use crate::framing::{self, Owned, OwnedBody};
use crate::host;
use crate::http::request::{Framing, RequestHead, parse};
use crate::http::{self, HttpError, Limits};
use crate::io::{Io, Transport};
use crate::logphase;
use crate::route::{self, BodyIn, Exchange, Place, Step};
use crate::writer::{Mark, Out, Progress};
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
    Linger { until: Instant, dropped: u64 },
}

/// A request whose handler runs on the pool.
struct Waiting {
    minor: u8,
    head_only: bool,
    keep: bool,
    /// The body the loop feeds, if it was not in memory.
    feed: Option<(BodyState, Arc<BodyPipe>)>,
}

/// What the pool sends back.
pub struct Handled {
    pub exchange: Box<Exchange>,
    pub step: Done,
}

pub enum Done {
    Respond(Owned),
    Unanswered,
    TooLarge,
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
        let now = Instant::now();
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

    /// Whether a response is still being written or a handler runs.
    pub fn is_busy(&self) -> bool {
        !self.out.is_idle() || matches!(self.phase, Phase::Pool(_))
    }

    /// Runs the connection until it must wait.
    pub fn drive(&mut self, cx: &mut Cx<'_>) -> Next {
        let next = self.step(cx);
        self.deadline = self.compute_deadline(cx);
        next
    }

    fn step(&mut self, cx: &mut Cx<'_>) -> Next {
        if let Phase::Linger { .. } = self.phase {
            return self.linger_read();
        }
        let mut answered = 0u32;
        loop {
            // 1. Answer the heads already buffered (pipelining).
            if matches!(self.phase, Phase::Head) && !self.close_after && self.out.can_gather() {
                if answered >= TURN {
                    return self.flush(cx).unwrap_or(Next::Again);
                }
                match parse(self.buf.data(), &limits(cx)) {
                    Ok(Some(head)) => {
                        answered += 1;
                        self.start(head, cx);
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
                        if n < READ_CHUNK {
                            self.readable = false;
                        }
                        let now = Instant::now();
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
                if cx.draining {
                    return Next::Close;
                }
            }
            return Next::Wait;
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
            self.last_write = Instant::now();
        }
        match p {
            Progress::Done | Progress::Starved => {}
            Progress::Yield => {
                self.finish_logs();
                return Some(Next::Again);
            }
            Progress::Blocked => self.writable = false,
            Progress::Failed(e) => return Some(self.close(cx, &e)),
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
            self.idle_since = Instant::now();
        }
    }

    /// The last response is out: close, lingering if input may follow.
    fn end(&mut self, cx: &mut Cx<'_>) -> Next {
        if !self.linger || self.read_eof {
            return Next::Close;
        }
        self.io.shutdown_write();
        self.buf = Buf::default();
        self.phase = Phase::Linger {
            until: Instant::now() + LINGER_TIME,
            dropped: 0,
        };
        let _ = cx;
        self.linger_read()
    }

    fn linger_read(&mut self) -> Next {
        let Phase::Linger { until, dropped } = &mut self.phase else {
            return Next::Close;
        };
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
        let _ = cx;
        log::debug!("closing connection from {}: {why}", self.peer);
        for m in self.out.abandon() {
            log_mark(m, self.out.sent, false, Some(why.to_owned()));
        }
        if let Phase::Pool(w) = &self.phase
            && let Some((_, pipe)) = &w.feed
        {
            pipe.fail(format!("the connection was closed: {why}"));
        }
        Next::Close
    }

    fn compute_deadline(&self, cx: &Cx<'_>) -> Option<Instant> {
        let s = cx.settings();
        if let Phase::Linger { until, .. } = self.phase {
            return Some(until);
        }
        if !self.out.is_idle() && !self.writable {
            return Some(self.last_write + s.send_timeout.0);
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

    /// The deadline passed.
    pub fn timed_out(&mut self, cx: &mut Cx<'_>) -> Next {
        let why = match self.phase {
            Phase::Linger { .. } => return Next::Close,
            _ if !self.out.is_idle() => "send timeout",
            _ if !self.buf.is_empty() => "header timeout",
            _ => "idle",
        };
        self.close(cx, why)
    }

    /// A head that could not be parsed or was refused: answered, and the
    /// connection closed (framing is unknown past it). The request line
    /// as far as it could be read goes to the access log of the address's
    /// default vhost (as nginx logs its 400s), the reason to its error log.
    fn bad_head(&mut self, e: HttpError, cx: &mut Cx<'_>) {
        log::debug!("{}: {} {}", self.peer, e.status, e.reason);
        let data = self.buf.data();
        let received = data.len() as u64;
        let line_end = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
        let line = String::from_utf8_lossy(&data[..line_end.min(4096)])
            .trim_end_matches('\r')
            .to_owned();
        self.buf.consume(self.buf.data().len());
        let started = self.head_started.take().unwrap_or_else(Instant::now);
        self.close_after = true;
        self.linger = true;
        let resp = framing::simple(e.status, 1, false, true);
        let Some(vhost) = cx.rt.vhost_for(self.bind, self.local, "").cloned() else {
            self.out.push(resp, None);
            return;
        };
        host::record(
            &vhost,
            Some(self.peer),
            log::Level::Info,
            "tamada",
            &format!("{} {}: {}", e.status, http::reason(e.status), e.reason),
        );
        // Split what was read like a request line; garbage stays whole.
        let mut parts = line.splitn(3, ' ');
        let (method, target, version) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let head = RequestHead {
            method: method.to_owned(),
            target: target.chars().take(2048).collect(),
            version_minor: if version == "HTTP/1.0" { 0 } else { 1 },
            headers: Vec::new(),
            path: "/".to_owned(),
            query: None,
            host: String::new(),
            framing: Framing::None,
            keep_alive: false,
            expect_continue: false,
            head_len: received as usize,
        };
        let mut x = Exchange::new(head, vhost, self.local, self.peer, started);
        x.error = Some(e.reason);
        self.out.push(resp, Some(Box::new(x)));
    }

    /// Starts answering a parsed head: inline when its handlers allow,
    /// else on the pool.
    fn start(&mut self, head: RequestHead, cx: &mut Cx<'_>) {
        let started = self.head_started.take().unwrap_or_else(Instant::now);
        self.buf.consume(head.head_len);
        let minor = head.version_minor;
        let head_only = head.is_head();
        let Some(vhost) = cx.rt.vhost_for(self.bind, self.local, &head.host).cloned() else {
            self.queue(framing::simple(404, minor, head_only, true), None);
            return;
        };
        let keep = head.keep_alive && !cx.draining;
        if head.path == "*" {
            let close = !keep || head.framing != Framing::None;
            self.linger |= close;
            self.queue(framing::options_star(minor, close), None);
            return;
        }
        let limit = vhost.max_body_for(&head.path);
        let expect = head.expect_continue;
        let framing_ = head.framing;
        let mut x = Box::new(Exchange::new(head, vhost, self.local, self.peer, started));
        if let Framing::Length(n) = framing_
            && n > limit
        {
            self.too_large(x, minor, head_only, n, limit);
            return;
        }
        let mut state = BodyState::new(framing_, limit, expect);
        let content_length = match framing_ {
            Framing::Length(n) => n as i64,
            Framing::Chunked => -1,
            Framing::None => 0,
        };
        // A body already wholly in the buffer is read from memory: the
        // request may then run inline.
        if let Some((data, wire)) = state.whole_in(self.buf.data()) {
            self.buf.consume(wire);
            let len = data.len();
            state.consumed_whole(wire, len);
            x.bytes_received += wire as u64;
            let mut mem = MemBody {
                data,
                pos: 0,
                content_length,
            };
            match route::dispatch(&mut x, &mut BodyIn::Mem(&mut mem), Place::Loop) {
                Step::ToPool => self.hand_to_pool(x, Some(mem), None, minor, head_only, keep, cx),
                step => {
                    let done = match step {
                        Step::Respond(r) => Done::Respond(framing::own(r)),
                        Step::TooLarge => Done::TooLarge,
                        _ => Done::Unanswered,
                    };
                    self.answer(x, done, minor, head_only, keep, cx);
                }
            }
            return;
        }
        // The body is still on its way: the handler reads it on the pool
        // through a pipe this loop feeds.
        let pipe = Arc::new(BodyPipe::new(
            cx.notify(self.id),
            cx.settings().body_timeout.0,
            state.continue_pending,
            content_length,
        ));
        pipe.set_limit(limit);
        self.hand_to_pool(x, None, Some((state, pipe)), minor, head_only, keep, cx);
    }

    #[allow(clippy::too_many_arguments)]
    fn hand_to_pool(
        &mut self,
        x: Box<Exchange>,
        mem: Option<MemBody>,
        feed: Option<(BodyState, Arc<BodyPipe>)>,
        minor: u8,
        head_only: bool,
        keep: bool,
        cx: &mut Cx<'_>,
    ) {
        let pipe = feed.as_ref().map(|(_, p)| p.clone());
        self.phase = Phase::Pool(Box::new(Waiting {
            minor,
            head_only,
            keep,
            feed,
        }));
        let notify = cx.notify(self.id);
        let pool = cx.pool.clone();
        cx.pool.submit(Box::new(move || {
            let mut x = x;
            let mut mem = mem;
            let step = match (&mut mem, &pipe) {
                (Some(m), _) => route::dispatch(&mut x, &mut BodyIn::Mem(m), Place::Pool),
                (None, Some(p)) => route::dispatch(&mut x, &mut BodyIn::Pipe(p), Place::Pool),
                (None, None) => {
                    let mut m = MemBody {
                        data: Vec::new(),
                        pos: 0,
                        content_length: 0,
                    };
                    route::dispatch(&mut x, &mut BodyIn::Mem(&mut m), Place::Pool)
                }
            };
            drop(mem);
            let mut puller = None;
            let mut stream = None;
            let step = match step {
                Step::Respond(r) => {
                    let mut o = framing::own(r);
                    framing::start_stream(
                        &mut o,
                        minor,
                        head_only,
                        |p| {
                            let s = crate::stream::StreamPipe::new(
                                notify.clone(),
                                pool.clone(),
                                x.vhost.clone(),
                                x.peer,
                            );
                            puller = Some(p);
                            stream = Some(s.clone());
                            s
                        },
                        |s| {
                            let _ctx = host::enter(&x.vhost, x.peer);
                            close_stream(s)
                        },
                    );
                    Done::Respond(o)
                }
                Step::TooLarge => Done::TooLarge,
                Step::Unanswered | Step::ToPool => Done::Unanswered,
            };
            notify.send_handled(Handled { exchange: x, step });
            // Pull the stream on this thread at once: no second hand-off.
            if let (Some(p), Some(s)) = (puller, stream) {
                s.pull(p);
            }
        }));
    }

    /// The pool's answer for the request at the front.
    pub fn on_handled(&mut self, h: Handled, cx: &mut Cx<'_>) -> Next {
        let Phase::Pool(w) = std::mem::replace(&mut self.phase, Phase::Head) else {
            drop_handled(h);
            return Next::Wait;
        };
        let Waiting {
            minor,
            head_only,
            mut keep,
            feed,
        } = *w;
        let mut x = h.exchange;
        let step = h.step;
        keep &= !cx.draining;
        if let Some((mut state, pipe)) = feed {
            if state.bad_framing || state.exceeded {
                // RFC 9112 section 7.1: malformed chunked framing is the
                // client's fault, and the rest of the connection cannot
                // be trusted; an oversized body ends it too.
                if let Done::Respond(o) = step {
                    drop_owned(o);
                }
                if state.exceeded {
                    host::record(
                        &x.vhost,
                        Some(self.peer),
                        log::Level::Error,
                        "tamada",
                        &format!(
                            "chunked request body is over the limit of {} bytes",
                            state.limit
                        ),
                    );
                }
                x.bytes_received += state.wire_bytes;
                x.error
                    .get_or_insert_with(|| "bad chunked request body".into());
                let status = if state.exceeded { 413 } else { 400 };
                self.linger = true;
                let resp = framing::simple(status, minor, head_only, true);
                self.queue(resp, Some(x));
                return self.drive(cx);
            }
            if !state.done {
                // Unread body: take what is already here without waiting;
                // if the rest is still on its way, close after answering
                // (RFC 9112 section 9.6).
                let waiting_continue = state.continue_pending && !pipe.started();
                let io = &mut self.io;
                let readable = &mut self.readable;
                if waiting_continue
                    || !state.drain_available(&mut self.buf, |b| match b.fill(io) {
                        Ok(Io::Ready(n)) if n > 0 => true,
                        _ => {
                            *readable = false;
                            false
                        }
                    })
                {
                    keep = false;
                    self.linger = true;
                }
            }
            x.bytes_received += state.wire_bytes;
        }
        self.answer(x, step, minor, head_only, keep, cx);
        self.drive(cx)
    }

    /// Queues the answer to a request.
    fn answer(
        &mut self,
        mut x: Box<Exchange>,
        done: Done,
        minor: u8,
        head_only: bool,
        keep: bool,
        cx: &mut Cx<'_>,
    ) {
        let resp = match done {
            Done::Respond(mut o) => {
                let (notify, pool) = (cx.notify(self.id), cx.pool.clone());
                let vhost = x.vhost.clone();
                let peer = x.peer;
                framing::start_stream(
                    &mut o,
                    minor,
                    head_only,
                    |p| {
                        let s = crate::stream::StreamPipe::new(notify, pool.clone(), vhost, peer);
                        s.start(p);
                        s
                    },
                    |s| close_on_pool(s, &pool, &x),
                );
                let _ctx = host::enter(&x.vhost, x.peer);
                match framing::respond(o, minor, head_only, keep) {
                    Ok(r) => r,
                    Err(msg) => {
                        host::record_here(log::Level::Error, "tamada", &msg);
                        x.error = Some(msg);
                        framing::simple(500, minor, head_only, !keep)
                    }
                }
            }
            Done::TooLarge => {
                let limit = x.vhost.max_body_for(x.path());
                let n = match x.head.framing {
                    Framing::Length(n) => n,
                    _ => 0,
                };
                return self.too_large(x, minor, head_only, n, limit);
            }
            Done::Unanswered => {
                let status = if x.error.is_some() { 500 } else { 404 };
                framing::simple(status, minor, head_only, !keep)
            }
        };
        self.queue(resp, Some(x));
    }

    fn too_large(&mut self, x: Box<Exchange>, minor: u8, head_only: bool, n: u64, limit: u64) {
        host::record(
            &x.vhost,
            Some(self.peer),
            log::Level::Error,
            "tamada",
            &format!("request body of {n} bytes is over the limit of {limit} bytes"),
        );
        self.linger = true;
        self.queue(framing::simple(413, minor, head_only, true), Some(x));
    }

    fn queue(&mut self, r: framing::Response, x: Option<Box<Exchange>>) {
        if r.close {
            self.close_after = true;
        }
        self.out.push(r, x);
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
                    if n < READ_CHUNK {
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

fn limits(cx: &Cx<'_>) -> Limits {
    let s = cx.settings();
    Limits {
        max_request_line: s.max_request_line.0 as usize,
        max_header_size: s.max_header_size.0 as usize,
        max_headers: s.max_headers,
    }
}

/// Runs the log phase of a response in the queue.
fn log_mark(m: Mark, sent: u64, completed: bool, error: Option<String>) {
    let (body_sent, total_sent) = m.sent(sent);
    if let Some(x) = m.exchange {
        logphase::run(
            x,
            logphase::Outcome {
                status: m.status,
                body_sent,
                total_sent,
                completed,
                error,
            },
        );
    }
}

/// A stream that will not be sent is closed on the pool (closing may
/// block: a CGI child is killed and reaped).
fn close_on_pool(s: tamada_sdk::abi::StreamV1, pool: &crate::pool::Pool, x: &Exchange) {
    let vhost = x.vhost.clone();
    let peer = x.peer;
    pool.submit(Box::new(move || {
        let _ctx = host::enter(&vhost, peer);
        close_stream(s)
    }));
}

/// Closes a stream that was never sent.
fn close_stream(s: tamada_sdk::abi::StreamV1) {
    (s.close)(s.ctx, true)
}

fn drop_owned(o: Owned) {
    if let OwnedBody::Stream(Some(p)) = &o.body {
        p.abandon();
    }
    if let OwnedBody::Raw(s) = o.body {
        let pool = crate::pool();
        pool.submit(Box::new(move || close_stream(s)));
    }
}

/// The answer for a connection that is gone: its resources are freed and
/// the exchange logged as incomplete.
pub fn drop_handled(h: Handled) {
    let status = match &h.step {
        Done::Respond(o) => o.status,
        Done::TooLarge => 413,
        Done::Unanswered => 404,
    };
    if let Done::Respond(o) = h.step {
        drop_owned(o);
    }
    logphase::run(
        h.exchange,
        logphase::Outcome {
            status,
            completed: false,
            error: Some("the client left before the response".into()),
            ..Default::default()
        },
    );
}
