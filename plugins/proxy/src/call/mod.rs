//! One proxied request as a machine over the gateway's [`Upstream`]
//! (`plugins/gateway/src/exchange.rs`): pick an upstream, take an idle
//! connection or connect, send the request, read the response head, then
//! the body (answered from memory when small, else a stream the core
//! pulls). The same machine runs on both paths:
//!
//! - on the event loop (SDK 1.1 [`Request::wait`]) for a request whose
//!   body is in memory: each wait is answered "call me again when this
//!   socket is ready", with the [`Call`] as the state, and no thread waits
//!   for an upstream;
//! - on the pool for the rest (a body read from the client as it goes,
//!   a WebSocket upgrade, a server that cannot wait): each wait blocks the
//!   pool thread in `poll` until the socket is ready or the time is up.

use crate::body::{Finish, UpstreamBody};
use crate::head::{self, BodyFraming};
use crate::response::{self, Framing, HeadError, HeadRead};
use crate::source::{MemBody, ReadBody, ReqBody, ReqSource};
use crate::upstream::Upstreams;
use crate::{Proxy, note};
use fail::Fail;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
mod fail;

use tamada_gateway::SMALL_BODY;
use tamada_gateway::conn::idempotent;
use tamada_gateway::exchange::{self as ex, Early, Interest, Source, Timeouts, Upstream};
use tamada_gateway::upload::Upload;
use tamada_sdk::Woke;
use tamada_sdk::prelude::*;

/// Where an attempt is.
pub(crate) enum Stage {
    /// Between attempts.
    None,
    /// Connecting and sending the request.
    Sending(Upstream),
    /// Reading the response head.
    Head(Upstream),
    /// Reading a body to answer from memory.
    Body(Box<UpstreamBody>, response::Head),
}

/// A request's state, between calls on the loop or through waits on the
/// pool.
pub struct Call<B: ReqBody> {
    pub(crate) ups: Arc<Upstreams>,
    pub(crate) stage: Stage,
    /// The upstream of the attempt.
    pub(crate) i: usize,
    /// Counted in the upstream's `active` (least_conn) and not yet handed
    /// to a body that will uncount it.
    pub(crate) counted: bool,
    /// The request as it goes upstream.
    pub(crate) source: ReqSource<B>,
    pub(crate) framing: BodyFraming,
    /// The response head's deadline and interim count.
    pub(crate) head: HeadRead,
    /// The upstream answered before the request was all sent.
    pub(crate) early: bool,
    /// A WebSocket upgrade (the pool's path only).
    pub(crate) upgrade: bool,
    /// What the response body gave so far.
    pub(crate) acc: Vec<u8>,
    pub(crate) tried: Vec<usize>,
    pub(crate) labels: Vec<String>,
    pub(crate) fresh_for: Option<usize>,
    pub(crate) last: (u16, String),
    pub(crate) t0: Instant,
}

impl<B: ReqBody> Drop for Call<B> {
    fn drop(&mut self) {
        // A request that ends while a connection is out (the client left,
        // the server stopped): the connection closes with it.
        self.uncount();
    }
}

impl<B: ReqBody> Call<B> {
    pub(crate) fn uncount(&mut self) {
        if self.counted {
            self.counted = false;
            self.ups.list[self.i].active.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn fd(&self) -> i32 {
        match &self.stage {
            Stage::Sending(u) | Stage::Head(u) => u.fd(),
            Stage::Body(b, _) => b.fd().unwrap_or(-1),
            Stage::None => -1,
        }
    }

    /// When the current wait ends.
    fn until(&self) -> Instant {
        match &self.stage {
            Stage::Sending(u) | Stage::Head(u) => u.until,
            _ => self.head.deadline,
        }
    }

    /// On the pool: waits for the socket; false when the time ran out.
    fn block(&self, i: Interest) -> bool {
        match &self.stage {
            Stage::Sending(u) | Stage::Head(u) => u.block(i),
            Stage::Body(b, _) => b.block(i, self.head.deadline),
            Stage::None => true,
        }
    }
}

/// Why no attempt could start.
enum NoAttempt {
    /// Every upstream was tried or is out.
    Exhausted,
    /// A unix listener's backlog is full: the pool's path retries.
    Busy,
}

/// What one step of the machine came to.
enum Step {
    Wait(Interest),
    /// The answer is ready in the response builder.
    Answered,
    Failed(Fail),
}

/// What driving the machine came to.
pub enum Drive {
    Wait(Interest),
    Done(Outcome),
    /// Run it on the pool (an upgrade, a full unix backlog).
    Defer,
}

impl Proxy {
    fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: self.s.connect_timeout,
            send: self.s.send_timeout,
            read: self.s.read_timeout,
        }
    }

    /// `handle` on the event loop: as far as the sockets allow, then a
    /// wait with the call as its state.
    pub(crate) fn handle_inline(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
        let mut call = match req.resume::<Call<MemBody>>() {
            Some(c) => c,
            None => {
                if head::upgrade_asked(req).is_some() {
                    // A relay is set up on the pool's path.
                    return req.defer();
                }
                use std::io::Read;
                let mut body = Vec::new();
                if req.content_length() != Some(0)
                    && let Err(e) = req.body().read_to_end(&mut body)
                {
                    log::info!("{} {}: the request body: {e}", req.method(), req.path());
                    return Outcome::Error(format!("reading the request body: {e}"));
                }
                // In memory (an inline call has it whole): sent with its
                // length, as nginx sends a buffered body.
                let framing = if body.is_empty() {
                    BodyFraming::None
                } else {
                    BodyFraming::Length(body.len() as u64)
                };
                let b = MemBody((!body.is_empty()).then_some(body), false);
                self.new_call(framing, b, false)
            }
        };
        let timed_out = req.woke() == Woke::TimedOut;
        match self.drive(&mut call, req, res, timed_out, false) {
            Drive::Wait(interest) => {
                let fd = call.fd();
                let left = call
                    .until()
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                req.wait(fd, interest, left, call)
            }
            Drive::Done(o) => o,
            Drive::Defer => req.defer(),
        }
    }

    /// `handle` on the pool: the same machine, each wait a `poll`.
    pub(crate) fn handle_blocking(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
        let framing = match req.content_length() {
            Some(0) => BodyFraming::None,
            Some(n) => BodyFraming::Length(n),
            None => BodyFraming::Chunked,
        };
        let body = ReadBody(
            (framing != BodyFraming::None).then(|| Upload::new(Some(Box::new(req.body())))),
        );
        let upgrade = framing == BodyFraming::None && head::upgrade_asked(req).is_some();
        let mut call = self.new_call(framing, body, upgrade);
        let mut timed_out = false;
        loop {
            match self.drive(&mut call, req, res, timed_out, true) {
                Drive::Wait(i) => timed_out = !call.block(i),
                Drive::Done(o) => return o,
                // Not on the pool (a full backlog is waited for there).
                Drive::Defer => return self.error(res, 502, "the upstream's backlog is full"),
            }
        }
    }

    fn new_call<B: ReqBody>(&self, framing: BodyFraming, body: B, upgrade: bool) -> Call<B> {
        Call {
            ups: self.ups.clone(),
            stage: Stage::None,
            i: 0,
            counted: false,
            source: ReqSource {
                head: Vec::new(),
                head_given: false,
                body,
                chunked: framing == BodyFraming::Chunked,
                ended: false,
            },
            framing,
            head: HeadRead::new(self.s.read_timeout),
            early: false,
            upgrade,
            acc: Vec::new(),
            tried: Vec::new(),
            labels: Vec::new(),
            fresh_for: None,
            last: (502, "every upstream is out (passive health check)".into()),
            t0: Instant::now(),
        }
    }

    /// Runs the machine until it must wait or has an answer.
    fn drive<B: ReqBody>(
        &self,
        call: &mut Call<B>,
        req: &Request,
        res: &mut ResponseBuilder,
        mut timed_out: bool,
        blocking: bool,
    ) -> Drive {
        loop {
            if matches!(call.stage, Stage::None) {
                match self.next_attempt(call, req, blocking) {
                    Ok(()) => {}
                    Err(NoAttempt::Busy) => return Drive::Defer,
                    Err(NoAttempt::Exhausted) => {
                        if call.tried.is_empty() {
                            log::error!("{} {}: {}", req.method(), req.path(), call.last.1);
                        }
                        note(req, &call.labels, call.last.0, call.t0.elapsed());
                        return Drive::Done(self.error(res, call.last.0, &call.last.1));
                    }
                }
            }
            let step = self.advance(call, req, res, timed_out);
            timed_out = false;
            match step {
                Step::Wait(i) => return Drive::Wait(i),
                Step::Answered => return Drive::Done(Outcome::Done),
                Step::Failed(f) => {
                    if let Some(o) = self.failed(call, req, res, f) {
                        return Drive::Done(o);
                    }
                }
            }
        }
    }

    /// Picks the upstream and starts an exchange on an idle connection to
    /// it or a new one; `Err` when none is left.
    fn next_attempt<B: ReqBody>(
        &self,
        call: &mut Call<B>,
        req: &Request,
        blocking: bool,
    ) -> Result<(), NoAttempt> {
        loop {
            let i = match call.fresh_for.take() {
                Some(i) => i,
                None => self.ups.pick(&call.tried).ok_or(NoAttempt::Exhausted)?,
            };
            let label = &self.ups.list[i].label;
            // SECURITY: every reuse checks the idle connection first (one
            // `recv` with MSG_PEEK): an upstream that wrote an unasked-for
            // answer on it (a late second response, a 408 before closing)
            // would otherwise have that answer read as this request's, and
            // one client's response would go to another. A connection
            // with bytes waiting, or closed, is dropped (as nginx closes a
            // cached upstream connection that becomes readable).
            let mut pooled = if call.tried.contains(&i) {
                None
            } else {
                self.ups.take_idle(i)
            };
            call.i = i;
            call.early = false;
            call.acc.clear();
            call.head = HeadRead::new(self.s.read_timeout);
            call.source.head = head::build(req, &self.s, &self.s.upstreams[i], call.framing);
            // Checked before the attempt was given up (`failed`).
            call.source.rewind();
            let deadline = Instant::now() + self.s.connect_timeout.min(Duration::from_secs(2));
            let started = loop {
                match Upstream::start(
                    &self.ups.list[i].addr,
                    pooled.take(),
                    i,
                    Early::Stop,
                    self.timeouts(),
                    self.s.tls.as_ref(),
                ) {
                    // A unix listener with a full backlog: the loop's path
                    // goes to the pool, which tries again every 10 ms for
                    // a while (nginx gives up at once).
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if !blocking {
                            return Err(NoAttempt::Busy);
                        }
                        if Instant::now() >= deadline {
                            break Err(io::Error::other("the listener's backlog is full"));
                        }
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    r => break r,
                }
            };
            match started {
                Ok(up) => {
                    self.ups.list[i].active.fetch_add(1, Ordering::Relaxed);
                    call.counted = true;
                    call.stage = Stage::Sending(up);
                    return Ok(());
                }
                Err(e) => {
                    let why = format!("connecting to {label}: {e}");
                    log::error!("{why}");
                    self.ups.failed(i, &why);
                    call.labels.push(label.clone());
                    call.tried.push(i);
                    call.last = (502, why);
                }
            }
        }
    }

    /// Runs the attempt as far as the socket allows.
    fn advance<B: ReqBody>(
        &self,
        call: &mut Call<B>,
        req: &Request,
        res: &mut ResponseBuilder,
        timed_out: bool,
    ) -> Step {
        loop {
            match std::mem::replace(&mut call.stage, Stage::None) {
                Stage::None => return Step::Failed(Fail::Io("no connection".into())),
                Stage::Sending(mut up) => match up.send(&mut call.source, timed_out) {
                    ex::Step::Wait(i) => {
                        call.stage = Stage::Sending(up);
                        return Step::Wait(i);
                    }
                    s @ (ex::Step::Sent | ex::Step::Answered) => {
                        call.early = matches!(s, ex::Step::Answered);
                        // The whole head is due within read_timeout from now.
                        call.head.deadline = Instant::now() + self.s.read_timeout;
                        up.until = call.head.deadline;
                        let wait = !call.early && up.conn.buffered().is_empty();
                        call.stage = Stage::Head(up);
                        if wait {
                            // PERF: the answer cannot be here yet: no read
                            // is tried before the wait (one recv saved).
                            return Step::Wait(Interest::Read);
                        }
                    }
                    ex::Step::Failed(f) => return Step::Failed(self.send_failed(f)),
                },
                Stage::Head(mut up) => {
                    if timed_out {
                        return Step::Failed(Fail::Timeout(format!(
                            "no response head within {:?} (read_timeout)",
                            self.s.read_timeout
                        )));
                    }
                    // An interim answer (100, 103) before the whole request
                    // went: back to sending it.
                    let unsent = !up.all_sent();
                    let head_request = req.method() == "HEAD";
                    match response::read_head(
                        &mut up.conn,
                        self.s.max_response_head,
                        head_request,
                        call.upgrade,
                        unsent,
                        &mut call.head,
                    ) {
                        Err(HeadError::Interim) => {
                            call.early = false;
                            up.resume();
                            call.stage = Stage::Sending(up);
                        }
                        Err(HeadError::Again) => {
                            // Not renewed by what came: the head's deadline.
                            up.until = call.head.deadline;
                            call.stage = Stage::Head(up);
                            return Step::Wait(Interest::Read);
                        }
                        Err(HeadError::Nothing(e)) if !idempotent(req.method()) => {
                            return Step::Failed(Fail::Io(format!(
                                "the connection ended with no response head: {e}"
                            )));
                        }
                        Err(HeadError::Nothing(e)) => {
                            return Step::Failed(if up.conn.reused {
                                Fail::Stale
                            } else {
                                Fail::Io(format!("reading the response head: {e}"))
                            });
                        }
                        Err(HeadError::Bad(why)) => return Step::Failed(Fail::Bad(why)),
                        Err(HeadError::Timeout) => {
                            return Step::Failed(Fail::Timeout(format!(
                                "no response head within {:?} (read_timeout)",
                                self.s.read_timeout
                            )));
                        }
                        Ok(h) => {
                            if let Some(s) = self.head_done(call, req, res, up, h) {
                                return s;
                            }
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
                        if call.acc.len() > SMALL_BODY {
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
                                call.head.deadline = Instant::now() + self.s.read_timeout;
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

    /// The response head is in: a relay after a 101, the body read here
    /// when small, or a stream. `None`: go on (the body stage).
    fn head_done<B: ReqBody>(
        &self,
        call: &mut Call<B>,
        req: &Request,
        res: &mut ResponseBuilder,
        up: Upstream,
        mut h: response::Head,
    ) -> Option<Step> {
        if call.early || !up.all_sent() {
            // It answered before the whole request: the rest will not
            // follow on this connection.
            h.reusable = false;
        }
        self.ups.ok(call.i);
        call.labels.push(self.ups.list[call.i].label.clone());
        note(req, &call.labels, h.status, call.t0.elapsed());
        if h.status == 101 && up.conn.sock.is_tls() {
            // The core relays plain sockets only.
            call.uncount();
            log::error!(
                "{}: a 101 (WebSocket) from an https:// upstream cannot be relayed: answered 502",
                self.ups.list[call.i].label
            );
            self.error(res, 502, "relay over TLS");
            return Some(Step::Answered);
        }
        if h.status == 101 {
            // WebSocket (or another upgrade): the core relays both ways
            // from here, idle at most read_timeout.
            call.uncount();
            respond(res, &mut h);
            let (sock, rest) = up.conn.into_parts();
            res.relay(sock, rest, self.s.read_timeout);
            return Some(Step::Answered);
        }
        let finish = Finish {
            ups: self.ups.clone(),
            reusable: h.reusable,
        };
        // The body uncounts the connection when it ends.
        call.counted = false;
        let body = Box::new(UpstreamBody::new(up.conn, h.framing, finish));
        if let Framing::Length(n) = h.framing
            && n > SMALL_BODY as u64
        {
            return Some(self.stream(call, res, body, h));
        }
        if req.method() == "HEAD" {
            // The length passes on: only a stream keeps the upstream's.
            return Some(self.stream(call, res, body, h));
        }
        call.head.deadline = Instant::now() + self.s.read_timeout;
        call.stage = Stage::Body(body, h);
        None
    }

    /// Answers with the rest of the body as a stream the core pulls on
    /// its pool (blocking reads with the timeouts), after what was read.
    fn stream<B: ReqBody>(
        &self,
        call: &mut Call<B>,
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
}

/// The status and headers of the upstream's answer.
fn respond(res: &mut ResponseBuilder, h: &mut response::Head) {
    res.status(h.status);
    for (n, v) in std::mem::take(&mut h.headers) {
        res.header_owned(n, v);
    }
}

/// What was read before, then the rest of the body.
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

#[cfg(test)]
mod tests;
