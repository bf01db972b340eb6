//! The proxy on the event loop (SDK 1.1 [`Request::wait`]): the exchange
//! of the blocking path in `lib.rs` as a state machine over a
//! non-blocking socket. Each call goes as far as the socket allows, then
//! answers "wait for this socket" with the [`Call`] as its state; the
//! core calls `handle` again when the socket is ready or the phase's
//! timeout has passed. No thread waits for an upstream.
//!
//! Taken here: requests whose body is in memory (the core runs an inline
//! handler only then) and that ask for no upgrade. The response head is
//! read here; a body up to [`SMALL_BODY`](crate::SMALL_BODY) is read here
//! too and answered from memory; a longer one becomes a stream that the
//! core pulls on its pool, as on the blocking path.

use crate::response::{self, Finish, Framing, HeadError, UpstreamBody};
use crate::upstream::Conn;
use crate::upstream::Upstreams;
use crate::{Proxy, SMALL_BODY, note};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tamada_gateway::conn::{connect_result, connect_start, idempotent};
use tamada_sdk::prelude::*;
use tamada_sdk::{Interest, Woke};

/// Where an exchange with the upstream is.
enum Stage {
    /// A non-blocking connect is under way.
    Connecting(Conn),
    /// Writing the request (`out[sent..]` is left).
    Sending(Conn),
    /// Waiting for the response head.
    Head(Conn),
    /// Reading a body to answer from memory.
    Body(Box<UpstreamBody>, response::Head),
    /// Between attempts.
    None,
}

/// A request's state between calls.
pub struct Call {
    ups: Arc<Upstreams>,
    stage: Stage,
    /// The upstream of the attempt.
    i: usize,
    /// Counted in the upstream's `active` (least_conn) and not yet
    /// handed to a body that will uncount it.
    counted: bool,
    /// The request as it goes upstream, head and body.
    out: Vec<u8>,
    sent: usize,
    /// The upstream answered before the request was all sent.
    early: bool,
    /// When the current wait ends.
    until: Instant,
    /// The response head's deadline and interim count.
    head: response::HeadRead,
    /// What the response body gave so far.
    acc: Vec<u8>,
    tried: Vec<usize>,
    labels: Vec<String>,
    fresh_for: Option<usize>,
    last: (u16, String),
    t0: Instant,
    /// The body to send, for a new attempt's request bytes.
    body: Vec<u8>,
    framing: crate::head::BodyFraming,
}

impl Drop for Call {
    fn drop(&mut self) {
        // A request that ends while a connection is out (the client left,
        // the server stopped): the connection closes with it.
        self.uncount();
    }
}

impl Call {
    fn uncount(&mut self) {
        if self.counted {
            self.counted = false;
            self.ups.list[self.i].active.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn fd(&self) -> i32 {
        match &self.stage {
            Stage::Connecting(c) | Stage::Sending(c) | Stage::Head(c) => c.sock.as_raw_fd(),
            Stage::Body(b, _) => b.fd().unwrap_or(-1),
            Stage::None => -1,
        }
    }
}

/// Why one attempt failed.
enum Fail {
    /// A pooled connection the upstream had closed: a new one.
    Stale,
    /// The connect failed.
    Connect(String),
    /// `connect_timeout` passed.
    ConnectTimeout,
    /// Sending or reading failed before any response byte.
    Io(String),
    /// `read_timeout` or `send_timeout` passed.
    Timeout(String),
    /// The upstream sent something that is not a response.
    Bad(String),
    /// The body failed after the head.
    Body(String),
}

/// Why no attempt could start.
enum NoAttempt {
    /// Every upstream was tried or is out.
    Exhausted,
    /// A unix listener's backlog is full: the pool's path retries.
    Busy,
}
use NoAttempt::{Busy, Exhausted};

/// What one step of the machine came to.
enum Step {
    /// Wait for the socket.
    Wait(Interest),
    /// The answer is ready in the response builder.
    Answered,
    /// This attempt failed.
    Failed(Fail),
}

impl Proxy {
    /// `handle` for an inline call that may wait.
    pub(crate) fn handle_inline(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
        let mut call = match req.resume::<Call>() {
            Some(c) => c,
            None => {
                if crate::head::upgrade_asked(req).is_some() {
                    // A relay is set up on the pool's path.
                    return req.defer();
                }
                match self.new_call(req) {
                    Ok(c) => c,
                    Err(o) => return o,
                }
            }
        };
        let mut timed_out = req.woke() == Woke::TimedOut;
        loop {
            if matches!(call.stage, Stage::None) {
                match self.next_attempt(&mut call, req) {
                    Ok(()) => {}
                    Err(Busy) => return req.defer(),
                    Err(Exhausted) => {
                        note(req, &call.labels, call.last.0, call.t0.elapsed());
                        return self.error(res, call.last.0, &call.last.1);
                    }
                }
            }
            let step = self.advance(&mut call, req, res, timed_out);
            timed_out = false;
            match step {
                Step::Wait(interest) => {
                    let fd = call.fd();
                    let left = call
                        .until
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1));
                    return req.wait(fd, interest, left, call);
                }
                Step::Answered => return Outcome::Done,
                Step::Failed(f) => {
                    if let Some(o) = self.failed(&mut call, req, res, f) {
                        return o;
                    }
                }
            }
        }
    }

    /// The request bytes and bookkeeping, before the first attempt.
    fn new_call(&self, req: &Request) -> Result<Call, Outcome> {
        use std::io::Read;
        let mut body = Vec::new();
        let framing = match req.content_length() {
            Some(0) => crate::head::BodyFraming::None,
            _ => {
                // In memory (an inline call has it whole): sent with its
                // length, as nginx sends a buffered body.
                if let Err(e) = req.body().read_to_end(&mut body) {
                    log::info!("{} {}: the request body: {e}", req.method(), req.path());
                    return Err(Outcome::Error(format!("reading the request body: {e}")));
                }
                crate::head::BodyFraming::Length(body.len() as u64)
            }
        };
        Ok(Call {
            ups: self.ups.clone(),
            stage: Stage::None,
            i: 0,
            counted: false,
            out: Vec::new(),
            sent: 0,
            early: false,
            until: Instant::now(),
            head: response::HeadRead::new(self.s.read_timeout),
            acc: Vec::new(),
            tried: Vec::new(),
            labels: Vec::new(),
            fresh_for: None,
            last: (502, "every upstream is out (passive health check)".into()),
            t0: Instant::now(),
            body,
            framing,
        })
    }

    /// Picks the upstream and starts a connection to it (or takes an idle
    /// one); `Err` when none is left.
    fn next_attempt(&self, call: &mut Call, req: &Request) -> Result<(), NoAttempt> {
        loop {
            let i = match call.fresh_for.take() {
                Some(i) => i,
                None => self.ups.pick(&call.tried).ok_or(Exhausted)?,
            };
            let label = &self.ups.list[i].label;
            // SECURITY: every reuse checks the idle connection first (one
            // `recv` with MSG_PEEK): an upstream that wrote an unasked-for
            // answer on it (a late second response, a 408 before closing)
            // would otherwise have that answer read as this request's, and
            // one client's response would go to another. A connection
            // with bytes waiting, or closed, is dropped (as nginx closes a
            // cached upstream connection that becomes readable).
            let pooled = if call.tried.contains(&i) {
                None
            } else {
                self.ups.take_idle(i)
            };
            call.i = i;
            call.sent = 0;
            call.early = false;
            call.head = response::HeadRead::new(self.s.read_timeout);
            call.acc.clear();
            call.out = crate::head::build(req, &self.s, &self.s.upstreams[i], call.framing);
            call.out.extend_from_slice(&call.body);
            let conn = match pooled {
                Some(mut c) => {
                    if let Err(e) = c.set_mode(true, self.s.read_timeout, self.s.send_timeout) {
                        log::error!("{label}: {e}");
                        continue;
                    }
                    call.until = Instant::now() + self.s.send_timeout;
                    Stage::Sending(c)
                }
                None => match connect_start(&self.ups.list[i].addr) {
                    Ok((sock, done)) => {
                        let mut c = Conn::new(sock, i);
                        c.nonblocking = true;
                        if done {
                            call.until = Instant::now() + self.s.send_timeout;
                            Stage::Sending(c)
                        } else {
                            call.until = Instant::now() + self.s.connect_timeout;
                            Stage::Connecting(c)
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // A unix listener with a full backlog: the pool's
                        // path waits a little for room.
                        return Err(Busy);
                    }
                    Err(e) => {
                        let why = format!("connecting to {label}: {e}");
                        log::error!("{why}");
                        self.ups.failed(i, &why);
                        call.labels.push(label.clone());
                        call.tried.push(i);
                        call.last = (502, why);
                        continue;
                    }
                },
            };
            self.ups.list[i].active.fetch_add(1, Ordering::Relaxed);
            call.counted = true;
            call.stage = conn;
            return Ok(());
        }
    }

    /// Runs the attempt as far as the socket allows.
    fn advance(
        &self,
        call: &mut Call,
        req: &Request,
        res: &mut ResponseBuilder,
        timed_out: bool,
    ) -> Step {
        loop {
            match std::mem::replace(&mut call.stage, Stage::None) {
                Stage::None => return Step::Failed(Fail::Io("no connection".into())),
                Stage::Connecting(c) => {
                    if timed_out {
                        return Step::Failed(Fail::ConnectTimeout);
                    }
                    match connect_result(&c.sock) {
                        Ok(()) => {
                            call.until = Instant::now() + self.s.send_timeout;
                            call.stage = Stage::Sending(c);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            call.stage = Stage::Connecting(c);
                            return Step::Wait(Interest::Write);
                        }
                        Err(e) => return Step::Failed(Fail::Connect(e.to_string())),
                    }
                }
                Stage::Sending(mut c) => {
                    if timed_out {
                        return Step::Failed(Fail::Timeout(format!(
                            "the upstream took no request for {:?} (send_timeout)",
                            self.s.send_timeout
                        )));
                    }
                    if call.sent > 0 && !call.out[call.sent..].is_empty() {
                        // Woken while sending: an early answer comes first.
                        match c.fill() {
                            Ok(0) => {
                                return Step::Failed(if c.reused {
                                    Fail::Stale
                                } else {
                                    Fail::Io(
                                        "the upstream closed while the request was sent".into(),
                                    )
                                });
                            }
                            Ok(_) => {
                                call.early = true;
                                call.head.deadline = Instant::now() + self.s.read_timeout;
                                call.until = call.head.deadline;
                                call.stage = Stage::Head(c);
                                continue;
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) => return Step::Failed(stale_or(&c, e, "sending the request")),
                        }
                    }
                    while call.sent < call.out.len() {
                        match c.sock.write(&call.out[call.sent..]) {
                            Ok(n) => call.sent += n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                call.until = Instant::now() + self.s.send_timeout;
                                call.stage = Stage::Sending(c);
                                return Step::Wait(Interest::Both);
                            }
                            Err(e) => return Step::Failed(stale_or(&c, e, "sending the request")),
                        }
                    }
                    // All sent. Unless an answer was read meanwhile (after
                    // an interim one), it cannot be here yet: no read is
                    // tried before the wait. The whole head is due
                    // within read_timeout from now.
                    call.head.deadline = Instant::now() + self.s.read_timeout;
                    call.until = call.head.deadline;
                    let buffered = !c.buffered().is_empty();
                    call.stage = Stage::Head(c);
                    if buffered {
                        continue;
                    }
                    return Step::Wait(Interest::Read);
                }
                Stage::Head(mut c) => {
                    if timed_out {
                        return Step::Failed(Fail::Timeout(format!(
                            "no response head within {:?} (read_timeout)",
                            self.s.read_timeout
                        )));
                    }
                    let head_request = req.method() == "HEAD";
                    // An interim answer (100, 103) before the whole request
                    // went: back to sending it.
                    let unsent = call.sent < call.out.len();
                    match response::read_head(
                        &mut c,
                        self.s.max_response_head,
                        head_request,
                        false,
                        unsent,
                        &mut call.head,
                    ) {
                        Err(HeadError::Interim) => {
                            call.early = false;
                            call.until = Instant::now() + self.s.send_timeout;
                            call.stage = Stage::Sending(c);
                        }
                        Err(HeadError::Again) => {
                            // Not renewed by what came: the head's deadline.
                            call.until = call.head.deadline;
                            call.stage = Stage::Head(c);
                            return Step::Wait(Interest::Read);
                        }
                        Err(HeadError::Nothing(e)) if !idempotent(req.method()) => {
                            return Step::Failed(Fail::Io(format!(
                                "the connection ended with no response head: {e}"
                            )));
                        }
                        Err(HeadError::Nothing(e)) => {
                            return Step::Failed(stale_or(&c, e, "reading the response head"));
                        }
                        Err(HeadError::Bad(why)) => return Step::Failed(Fail::Bad(why)),
                        Err(HeadError::Timeout) => {
                            return Step::Failed(Fail::Bad("a bad response head".into()));
                        }
                        Ok(mut h) => {
                            if call.early || unsent {
                                // The rest will not follow on it.
                                h.reusable = false;
                            }
                            self.ups.ok(call.i);
                            call.labels.push(self.ups.list[call.i].label.clone());
                            note(req, &call.labels, h.status, call.t0.elapsed());
                            let finish = Finish {
                                ups: self.ups.clone(),
                                reusable: h.reusable,
                            };
                            let framing = h.framing;
                            // The body uncounts the connection when it ends.
                            call.counted = false;
                            let body = Box::new(UpstreamBody::new(c, framing, finish));
                            if let Framing::Length(n) = framing
                                && n > SMALL_BODY
                            {
                                return self.stream(call, res, body, h);
                            }
                            if head_request {
                                // The length passes on: only a stream
                                // keeps the upstream's.
                                return self.stream(call, res, body, h);
                            }
                            call.stage = Stage::Body(body, h);
                        }
                    }
                }
                Stage::Body(mut body, mut h) => {
                    if timed_out {
                        return Step::Failed(Fail::Timeout(format!(
                            "the response body stalled for {:?} (read_timeout)",
                            self.s.read_timeout
                        )));
                    }
                    loop {
                        if body.is_done() {
                            respond(res, &mut h);
                            res.body(std::mem::take(&mut call.acc));
                            return Step::Answered;
                        }
                        if call.acc.len() > SMALL_BODY as usize {
                            return self.stream(call, res, body, h);
                        }
                        // PERF: straight into `acc`, zeroed once to the
                        // length when there is one (not through a scratch
                        // buffer zeroed per read).
                        let at = call.acc.len();
                        let room = match h.framing {
                            Framing::Length(n) => (n as usize).saturating_sub(at).max(1),
                            _ => 16 * 1024,
                        };
                        call.acc.resize(at + room, 0);
                        let r = tamada_sdk::BodyStream::read(&mut *body, &mut call.acc[at..]);
                        call.acc.truncate(at + *r.as_ref().unwrap_or(&0));
                        match r {
                            Ok(_) => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                call.until = Instant::now() + self.s.read_timeout;
                                call.stage = Stage::Body(body, h);
                                return Step::Wait(Interest::Read);
                            }
                            Err(e) => {
                                return Step::Failed(Fail::Body(format!("reading the body: {e}")));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Answers with the rest of the body as a stream the core pulls on
    /// its pool (blocking reads with the timeouts), after what was read.
    fn stream(
        &self,
        call: &mut Call,
        res: &mut ResponseBuilder,
        mut body: Box<UpstreamBody>,
        mut h: response::Head,
    ) -> Step {
        if let Some(c) = body.conn_mut()
            && let Err(e) = c.set_mode(false, self.s.read_timeout, self.s.send_timeout)
        {
            return Step::Failed(Fail::Body(format!("setting up the connection: {e}")));
        }
        respond(res, &mut h);
        res.body(Body::Stream(Box::new(Prefixed {
            pre: std::mem::take(&mut call.acc),
            pos: 0,
            body,
        })));
        Step::Answered
    }

    /// An attempt failed: `None` to try again (the stage is then `None`),
    /// else the answer.
    fn failed(
        &self,
        call: &mut Call,
        req: &Request,
        res: &mut ResponseBuilder,
        f: Fail,
    ) -> Option<Outcome> {
        let i = call.i;
        let label = self.ups.list[i].label.clone();
        let is_connect = matches!(f, Fail::Connect(_));
        call.stage = Stage::None;
        call.uncount();
        let give_up = |call: &mut Call, res: &mut ResponseBuilder, status: u16, why: String| {
            log::error!("{why}");
            call.labels.push(label.clone());
            note(req, &call.labels, status, call.t0.elapsed());
            Some(self.error(res, status, &why))
        };
        match f {
            Fail::Stale => {
                log::debug!("{label}: a pooled connection was closed; a new one");
                call.fresh_for = Some(i);
                if !call.tried.contains(&i) {
                    call.tried.push(i);
                }
                None
            }
            Fail::Connect(e) | Fail::Io(e) => {
                let why = if is_connect {
                    format!("connecting to {label}: {e}")
                } else {
                    format!("{label}: {e}")
                };
                log::error!("{why}");
                self.ups.failed(i, &why);
                call.labels.push(label);
                call.tried.push(i);
                call.last = (502, why);
                if !idempotent(req.method()) && call.sent > 0 {
                    note(req, &call.labels, 502, call.t0.elapsed());
                    return Some(self.error(res, 502, &call.last.1));
                }
                None
            }
            Fail::ConnectTimeout => {
                let why = format!(
                    "connecting to {label}: timed out after {:?} (connect_timeout)",
                    self.s.connect_timeout
                );
                log::error!("{why}");
                self.ups.failed(i, &why);
                call.labels.push(label);
                call.tried.push(i);
                call.last = (504, why);
                None
            }
            Fail::Timeout(why) => {
                let why = format!("{label}: {why}");
                self.ups.failed(i, &why);
                give_up(call, res, 504, why)
            }
            Fail::Bad(why) => {
                let why = format!("{label}: {why}");
                self.ups.failed(i, &why);
                give_up(call, res, 502, why)
            }
            Fail::Body(why) => give_up(call, res, 502, format!("{label}: {why}")),
        }
    }
}

/// The status and headers of the upstream's answer.
fn respond(res: &mut ResponseBuilder, h: &mut response::Head) {
    res.status(h.status);
    for (n, v) in std::mem::take(&mut h.headers) {
        res.header_owned(n, v);
    }
}

/// A failure on a pooled connection before any answer is its having
/// been closed by the upstream (the request goes again on a new one).
fn stale_or(c: &Conn, e: io::Error, what: &str) -> Fail {
    if c.reused {
        Fail::Stale
    } else {
        Fail::Io(format!("{what}: {e}"))
    }
}

/// What was read inline, then the rest of the body.
struct Prefixed {
    pre: Vec<u8>,
    pos: usize,
    body: Box<UpstreamBody>,
}

impl BodyStream for Prefixed {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.pre.len() {
            let n = (self.pre.len() - self.pos).min(out.len());
            out[..n].copy_from_slice(&self.pre[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        self.body.read(out)
    }
    fn close(&mut self, client_gone: bool) {
        self.body.close(client_gone);
    }
}
