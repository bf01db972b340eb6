//! Starting and answering a request on a connection: the part of the
//! state machine (`conn/mod.rs`) that sees requests rather than bytes.
//! A parsed head picks its vhost; a body already in memory lets the
//! request run inline (`route::dispatch` on the loop); otherwise, or when
//! a handler must run on the pool, the exchange is handed to the pool
//! with the body pipe this loop feeds, and its answer comes back in
//! `on_handled`. Either way `answer` frames the response and queues it on
//! the writer, whose marks run the log phase.

use super::body::BodyState;
use super::{Conn, Next, Parked, Phase, Waiting};
use crate::exchange::Exchange;
use crate::exchange::body::{BodyPipe, MemBody};
use crate::exchange::logphase;
use crate::exchange::response::{self as framing, OwnedBody};
use crate::exchange::route::{self, BodyIn, Place, Step};
use crate::exchange::{Done, Handled};
use crate::http::request::{Framing, RequestHead};
use crate::http::{self, HttpError};
use crate::net::cx::Cx;
use crate::plugins::host;
use crate::proto::h1::writer::Mark;
use crate::transport::{Io, Transport};
use std::sync::Arc;

impl<T: Transport> Conn<T> {
    /// A head that could not be parsed or was refused: answered, and the
    /// connection closed (framing is unknown past it). The request line
    /// as far as it could be read goes to the access log of the address's
    /// default vhost (as nginx logs its 400s), the reason to its error log.
    pub(super) fn bad_head(&mut self, e: HttpError, cx: &mut Cx<'_>) {
        log::debug!("{}: {} {}", self.peer, e.status, e.reason);
        let data = self.buf.data();
        let received = data.len() as u64;
        let line_end = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
        let line = String::from_utf8_lossy(&data[..line_end.min(4096)])
            .trim_end_matches('\r')
            .to_owned();
        self.buf.consume(self.buf.data().len());
        let started = self.head_started.take().unwrap_or_else(crate::clock::now);
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
    pub(super) fn start(&mut self, head: RequestHead, cx: &mut Cx<'_>) {
        let started = self.head_started.take().unwrap_or_else(crate::clock::now);
        self.buf.consume(head.head_len);
        let minor = head.version_minor;
        let head_only = head.is_head();
        if let Some(h) = &cx.settings().health
            && head.path == *h
        {
            let r = crate::exchange::health::answer(
                &head,
                head.keep_alive && !cx.draining,
                cx.draining,
            );
            self.linger |= r.close;
            self.queue(r, None);
            return;
        }
        let Some(vhost) = cx.rt.vhost_for(self.bind, self.local, &head.host).cloned() else {
            self.linger = true;
            self.queue(framing::simple(404, minor, head_only, true), None);
            return;
        };
        let keep = head.keep_alive && !cx.draining;
        // A keep-alive client told to go may already be sending more.
        self.linger |= head.keep_alive && !keep;
        if head.path == "*" {
            let close = !keep || head.framing != Framing::None;
            self.linger |= close;
            self.queue(framing::options_star(minor, close), None);
            return;
        }
        let limit = vhost.max_body_for(&head.path);
        let expect = head.expect_continue;
        let framing_ = head.framing;
        let peer =
            crate::exchange::realip::client(&cx.settings().trusted_proxies, self.peer, &head);
        let mut x = Box::new(Exchange::new(head, vhost, self.local, peer, started));
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
            let content_length = match framing_ {
                Framing::Chunked => len as i64,
                _ => content_length,
            };
            let mut mem = MemBody::new(data, content_length);
            let step = route::dispatch(&mut x, &mut BodyIn::Mem(&mut mem), Place::Loop, None);
            self.after_inline(x, mem, step, minor, head_only, keep, cx);
            return;
        }
        // A body still on its way is collected here on the loop (as nginx
        // buffers a request body), unless the route streams it
        // (`request_buffering: false`): the request then runs as if the
        // body had come with the head, and a slow client holds no pool
        // thread. `100 Continue` goes out at once (the length was checked
        // above; nginx sends it when it starts reading the body).
        if x.vhost.buffering_for(x.path()) {
            if state.continue_pending {
                state.continue_pending = false;
                self.out.push_raw(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            let now = crate::clock::now();
            self.phase = Phase::Collect(Box::new(super::Collect {
                x,
                state,
                minor,
                head_only,
                keep,
                body: crate::exchange::body::Spool::default(),
                started: now,
                last: now,
            }));
            return;
        }
        // The body is streamed: the handler reads it on the pool through a
        // pipe this loop feeds.
        let pipe = Arc::new(BodyPipe::new(
            cx.waker(self.id),
            cx.settings().body_timeout.0,
            state.continue_pending,
            content_length,
        ));
        pipe.set_limit(limit);
        self.hand_to_pool(x, None, Some((state, pipe)), minor, head_only, keep, cx);
    }

    /// What an inline dispatch (a first call or one after a wait) led to:
    /// an answer, the pool, or a wait on this loop.
    #[allow(clippy::too_many_arguments)]
    fn after_inline(
        &mut self,
        mut x: Box<Exchange>,
        mut mem: MemBody,
        step: Step,
        minor: u8,
        head_only: bool,
        keep: bool,
        cx: &mut Cx<'_>,
    ) {
        let done = match step {
            Step::ToPool => {
                // A deferring handler may have read some: the pool's call
                // reads the whole body again.
                mem.pos = 0;
                return self.hand_to_pool(x, Some(mem), None, minor, head_only, keep, cx);
            }
            Step::Wait(w) => {
                let until = crate::clock::now() + w.timeout;
                match cx.register_wait(w.fd, w.read, w.write) {
                    Ok(()) => {
                        self.phase = Phase::Parked(Box::new(Parked {
                            wait: w,
                            x,
                            mem,
                            minor,
                            head_only,
                            keep,
                            until,
                            ready: false,
                        }));
                        return;
                    }
                    Err(e) => {
                        drop(w);
                        let msg = format!("cannot wait for the handler's descriptor: {e}");
                        host::record(&x.vhost, Some(x.peer), log::Level::Error, "tamada", &msg);
                        x.error = Some(msg);
                        Done::Unanswered
                    }
                }
            }
            Step::Respond(r) => Done::Respond(framing::own(r)),
            Step::Relay(r, relay) => Done::Relay(framing::own(r), relay),
            Step::TooLarge => Done::TooLarge,
            Step::Unanswered => Done::Unanswered,
        };
        drop(mem);
        self.answer(x, done, minor, head_only, keep, cx);
    }

    /// A collected body is whole: the request runs as one whose body came
    /// with the head (inline when it stayed in memory; a spooled one goes
    /// to the pool, where reading a large file blocks no loop).
    pub(super) fn run_collected(&mut self, cx: &mut Cx<'_>) {
        let Phase::Collect(c) = std::mem::replace(&mut self.phase, Phase::Head) else {
            return;
        };
        let super::Collect {
            mut x,
            state,
            minor,
            head_only,
            keep,
            body,
            ..
        } = *c;
        x.bytes_received += state.wire_bytes;
        // A chunked body collected whole has a length now: the handler
        // sees it (CGI's CONTENT_LENGTH, the proxy's Content-Length).
        let mut mem = body.into_body(0);
        mem.content_length = mem.len() as i64;
        // Told to go by a drain that began meanwhile: more may be on its way.
        let still = keep && !cx.draining;
        self.linger |= keep && !still;
        if mem.file.is_some() {
            return self.hand_to_pool(x, Some(mem), None, minor, head_only, still, cx);
        }
        let step = route::dispatch(&mut x, &mut BodyIn::Mem(&mut mem), Place::Loop, None);
        self.after_inline(x, mem, step, minor, head_only, still, cx);
    }

    /// A body being collected stalled for `body_timeout`, or came slower
    /// than `body_min_rate`: 408, and the connection closes (RFC 9110
    /// 15.5.9).
    pub(super) fn collect_timed_out(&mut self, cx: &Cx<'_>) {
        let Phase::Collect(c) = &self.phase else {
            return;
        };
        let why = if crate::clock::now() < c.last + cx.settings().body_timeout.0 {
            "the request body came slower than body_min_rate"
        } else {
            "the request body stalled (body_timeout)"
        };
        self.collect_failed(408, why);
    }

    /// A body that cannot be collected: answered with `status`, and the
    /// connection closes (the rest of the body is not read).
    pub(super) fn collect_failed(&mut self, status: u16, why: &str) {
        let Phase::Collect(c) = std::mem::replace(&mut self.phase, Phase::Head) else {
            return;
        };
        let super::Collect {
            mut x,
            minor,
            head_only,
            state,
            ..
        } = *c;
        // The client's doing: info; ours (a full spool, a disk error): error.
        let level = match status {
            400 | 408 => log::Level::Info,
            _ => log::Level::Error,
        };
        host::record(&x.vhost, Some(x.peer), level, "tamada", why);
        x.error = Some(why.to_owned());
        x.bytes_received += state.wire_bytes + self.buf.data().len() as u64;
        self.linger = true;
        let resp = if status == 503 {
            framing::simple_with(503, minor, head_only, true, &[("Retry-After", b"5")])
        } else {
            framing::simple(status, minor, head_only, true)
        };
        self.queue(resp, Some(x));
    }

    /// Calls a waiting handler again: its descriptor is ready, or its
    /// time ran out.
    pub(super) fn resume(&mut self, cx: &mut Cx<'_>) {
        let Phase::Parked(p) = std::mem::replace(&mut self.phase, Phase::Head) else {
            return;
        };
        let Parked {
            wait,
            mut x,
            mut mem,
            minor,
            head_only,
            keep,
            ready,
            ..
        } = *p;
        cx.unwatch(wait.fd);
        let resume = crate::plugins::Resume {
            state: wait.state,
            timed_out: !ready,
        };
        let step = route::dispatch(
            &mut x,
            &mut BodyIn::Mem(&mut mem),
            Place::Loop,
            Some(resume),
        );
        let still = keep && !cx.draining;
        self.linger |= keep && !still;
        self.after_inline(x, mem, step, minor, head_only, still, cx);
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
        let queue = cx.settings().pool_queue;
        if cx.pool.requests_waiting() >= queue {
            // Overloaded: a quick 503 beats a wait without bound.
            return self.pool_full(x, feed.is_some(), minor, head_only, queue);
        }
        let pipe = feed.as_ref().map(|(_, p)| p.clone());
        self.phase = Phase::Pool(Box::new(Waiting {
            minor,
            head_only,
            keep,
            feed,
        }));
        let notify = cx.notify(self.id);
        let pool = cx.pool.clone();
        cx.pool.submit_request(Box::new(move || {
            pool.request_started();
            let mut x = x;
            let mut mem = mem;
            let step = match (&mut mem, &pipe) {
                (Some(m), _) => route::dispatch(&mut x, &mut BodyIn::Mem(m), Place::Pool, None),
                (None, Some(p)) => route::dispatch(&mut x, &mut BodyIn::Pipe(p), Place::Pool, None),
                (None, None) => {
                    let mut m = MemBody::empty();
                    route::dispatch(&mut x, &mut BodyIn::Mem(&mut m), Place::Pool, None)
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
                            let s = crate::exchange::stream::StreamPipe::new(
                                notify.wake(),
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
                            framing::close_stream(s)
                        },
                    );
                    Done::Respond(o)
                }
                Step::Relay(r, relay) => Done::Relay(framing::own(r), relay),
                Step::TooLarge => Done::TooLarge,
                Step::Unanswered | Step::ToPool | Step::Wait(_) => Done::Unanswered,
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
            crate::exchange::drop_handled(h);
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
                    framing::drop_owned(o);
                }
                if state.exceeded {
                    host::record(
                        &x.vhost,
                        Some(x.peer),
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
                if let OwnedBody::Raw(_) = &o.body {
                    // PERF: only a stream needs these; the pool's count is
                    // shared by every loop, so it is not bumped per request.
                    let (wake, pool) = (cx.waker(self.id), cx.pool.clone());
                    let vhost = x.vhost.clone();
                    let peer = x.peer;
                    framing::start_stream(
                        &mut o,
                        minor,
                        head_only,
                        |p| {
                            let s = crate::exchange::stream::StreamPipe::new(
                                wake,
                                pool.clone(),
                                vhost,
                                peer,
                            );
                            s.start(p);
                            s
                        },
                        |s| framing::close_on_pool(s, &pool, &x.vhost, x.peer),
                    );
                }
                let _ctx = host::enter(&x.vhost, x.peer);
                match framing::respond(o, minor, head_only, keep) {
                    Ok(r) => r,
                    Err(framing::Refused { status, why }) => {
                        host::record_here(log::Level::Error, "tamada", &why);
                        x.error = Some(why);
                        framing::simple(status, minor, head_only, !keep)
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
            Done::Relay(o, relay) => {
                let resp = framing::switching(&o);
                framing::drop_owned(o);
                if cx.draining {
                    // No new tunnel while stopping: it would only be cut.
                    drop(relay);
                    x.error = Some("the server is stopping: no new relay".into());
                    self.linger = true;
                    self.queue(framing::simple(503, minor, head_only, true), Some(x));
                    return;
                }
                let head_len = resp.head_len;
                let idle = relay.idle_or();
                let up = match super::tunnel::Up::new(relay.fd) {
                    Ok(up) => up,
                    Err(e) => {
                        let msg = format!("cannot relay: {e}");
                        host::record(&x.vhost, Some(x.peer), log::Level::Error, "tamada", &msg);
                        x.error = Some(msg);
                        self.queue(framing::simple(502, minor, head_only, true), Some(x));
                        return;
                    }
                };
                let mut t = super::tunnel::Tunnel::new(up, relay.pre, idle, x, head_len);
                t.early_client_bytes(self.buf.data());
                self.buf.consume(self.buf.data().len());
                self.queue(resp, None);
                self.phase = Phase::Tunnel(Box::new(t));
                return;
            }
        };
        self.queue(resp, Some(x));
    }

    /// The pool's queue is full (`pool_queue`): 503 with `Retry-After`,
    /// and a body still being streamed closes the connection after it.
    fn pool_full(
        &mut self,
        mut x: Box<Exchange>,
        streaming: bool,
        minor: u8,
        head_only: bool,
        queue: usize,
    ) {
        let msg = format!("{queue} requests already wait for a pool thread (pool_queue): 503");
        host::record(&x.vhost, Some(x.peer), log::Level::Error, "tamada", &msg);
        x.error = Some(msg);
        self.linger |= streaming;
        let resp = framing::simple_with(
            503,
            minor,
            head_only,
            streaming || self.close_after,
            &[("Retry-After", b"1")],
        );
        self.queue(resp, Some(x));
    }

    fn too_large(&mut self, x: Box<Exchange>, minor: u8, head_only: bool, n: u64, limit: u64) {
        host::record(
            &x.vhost,
            Some(x.peer),
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
        if self.out.is_idle() {
            // The send timeout counts from now, not from the last write.
            self.last_write = crate::clock::now();
        }
        self.out.push(r, x);
    }
}

/// Runs the log phase of a response in the queue.
pub(super) fn log_mark(m: Mark, sent: u64, completed: bool, error: Option<String>) {
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
