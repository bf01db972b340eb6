//! The streams of an HTTP/2 connection: each is one request exchange,
//! from its head to its log line. Its body is collected from DATA frames
//! (spooled past a size, as HTTP/1.1 collects one); the exchange runs
//! inline, parked on a descriptor or on the pool; its answer goes out as
//! HEADERS and as many DATA frames as the client's windows allow.

use super::head::{self, Malformed, Src};
use super::{H2Conn, limits, pool_cap};
use crate::exchange::body::{BodyPipe, MemBody, Spool, SpoolError};
use crate::exchange::response::{Owned, OwnedBody, Shape};
use crate::exchange::run::{self, Answer, Link, Need, Parked, PoolBody};
use crate::exchange::stream::Piece as PipePiece;
use crate::exchange::{Exchange, filter, logphase};
use crate::http::request::{Framing, RequestHead};
use crate::net::cx::Cx;
use crate::plugins::host;
use crate::transport::Transport;
use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// File bytes read per DATA piece (h2 frames them by the peer's
/// `SETTINGS_MAX_FRAME_SIZE`).
const FILE_PIECE: u64 = 64 * 1024;

pub(super) struct St {
    /// Tells this stream from a later one in its slot.
    pub sid: u64,
    pub respond: SendResponse<Bytes>,
    pub recv: Option<RecvStream>,
    pub head_only: bool,
    pub phase: Phase,
    /// RFC 9218 urgency (0 most urgent, 7 least; 3 by default): streams
    /// are stepped, and so given the connection's window, in this order.
    pub urgency: u8,
}

impl St {
    /// Whether its response body is being sent.
    pub fn sending(&self) -> bool {
        matches!(self.phase, Phase::Send(_))
    }
}

pub(super) enum Phase {
    /// The request body arrives.
    Collect(Box<Collecting>),
    /// Ready to run, waiting for one of the connection's pool slots.
    Ready(Box<Exchange>, MemBody),
    /// An inline handler waits for a descriptor (`true`: it is ready).
    Parked(Box<Parked>, bool),
    /// A handler runs on the pool (reading the body as it comes, when
    /// its route streams it: `request_buffering: false`).
    Pool(Option<Box<Feeding>>),
    /// The response is going out.
    Send(Box<Sending>),
    /// Nothing left (a transient state).
    Done,
}

pub(super) struct Collecting {
    pub x: Box<Exchange>,
    pub body: Spool,
    pub got: u64,
    pub limit: u64,
    /// When body bytes last came (`body_timeout` counts from here).
    pub last: Instant,
    /// When the stream began (`body_min_rate` counts from here).
    pub started: Instant,
}

impl Collecting {
    /// When the collection is up: a stall of `body_timeout`, or (past the
    /// first `body_timeout`) an average below `body_min_rate`, as
    /// HTTP/1.1 collects a body (`proto/h1/collect.rs`).
    pub fn deadline(&self, s: &crate::config::Settings) -> Instant {
        let stall = self.last + s.body_timeout.0;
        match s.body_min_rate.0 {
            0 => stall,
            rate => {
                let extra = std::time::Duration::from_secs_f64(self.got as f64 / rate as f64);
                stall.min(self.started + s.body_timeout.0 + extra)
            }
        }
    }
}

/// A body fed to a pool handler as its DATA frames come.
pub(super) struct Feeding {
    pub pipe: Arc<BodyPipe>,
    pub got: u64,
    /// More came than the route's `max_body` (the answer is a 413).
    pub exceeded: bool,
}

pub(super) struct Sending {
    x: Box<Exchange>,
    send: SendStream<Bytes>,
    src: Src,
    /// Read from the source, not yet sent.
    chunk: Bytes,
    status: u16,
    sent: u64,
}

/// What a body source gives next.
enum Piece {
    Data(Bytes),
    Pending,
    End,
    Failed(String),
}

impl<T: Transport> H2Conn<T> {
    /// A new stream: its head checked, its exchange started.
    pub(super) fn open_stream(
        &mut self,
        req: http_crate::Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
        cx: &mut Cx<'_>,
    ) {
        let end = req.body().is_end_stream();
        let head = match head::request(&req, end, &limits(cx)) {
            Ok(h) => h,
            Err(Err(Malformed(why))) => {
                log::debug!("{}: malformed HTTP/2 request: {why}", self.peer);
                respond.send_reset(Reason::PROTOCOL_ERROR);
                return;
            }
            Err(Ok(e)) => {
                log::debug!("{}: {} {}", self.peer, e.status, e.reason);
                let head_only = req.method() == http_crate::Method::HEAD;
                let (_, recv) = req.into_parts();
                let key = self.insert(respond, recv, head_only);
                let vhost = cx.rt.vhost_for(self.bind, self.local, "").cloned();
                match vhost {
                    Some(v) => {
                        host::record(
                            &v,
                            Some(self.peer),
                            log::Level::Info,
                            "tamada",
                            &format!(
                                "{} {}: {}",
                                e.status,
                                crate::http::reason(e.status),
                                e.reason
                            ),
                        );
                        let bad = RequestHead {
                            method: "-".into(),
                            target: String::new(),
                            version_minor: 1,
                            http2: true,
                            headers: Vec::new(),
                            path: "/".into(),
                            query: None,
                            host: String::new(),
                            framing: Framing::None,
                            keep_alive: true,
                            expect_continue: false,
                            head_len: 0,
                        };
                        let mut x = Box::new(Exchange::new(
                            bad,
                            v,
                            self.local,
                            self.peer,
                            crate::clock::now(),
                        ));
                        x.error = Some(e.reason);
                        self.answer(key, x, Answer::Status(e.status), cx);
                    }
                    None => self.bare(key, crate::exchange::filter::core_page(e.status, &[])),
                }
                return;
            }
        };
        let urgency = req
            .headers()
            .get("priority")
            .map_or(DEFAULT_URGENCY, |v| urgency(v.as_bytes()));
        let (_, recv) = req.into_parts();
        let key = self.insert(respond, recv, head.is_head());
        if let Some(st) = self.streams.get_mut(key) {
            st.urgency = urgency;
        }
        self.start(key, head, cx);
    }

    fn insert(&mut self, respond: SendResponse<Bytes>, recv: RecvStream, head_only: bool) -> usize {
        self.next_sid += 1;
        self.streams.insert(St {
            sid: self.next_sid,
            respond,
            recv: Some(recv),
            head_only,
            phase: Phase::Done,
            urgency: DEFAULT_URGENCY,
        })
    }

    /// The exchange of a checked head (as HTTP/1.1's `start`).
    fn start(&mut self, key: usize, head: RequestHead, cx: &mut Cx<'_>) {
        let started = crate::clock::now();
        if let Some(h) = &cx.settings().health
            && head.path == *h
        {
            let a = crate::exchange::health::answer(&head, true, cx.draining);
            let mut o = crate::exchange::filter::core_page(a.status, a.extra);
            o.headers
                .retain(|h| !h.name.as_str().eq_ignore_ascii_case("content-type"));
            o.headers.push(tamada_sdk::abi::OwnedHeaderV1 {
                name: "Content-Type".into(),
                value: b"text/plain".to_vec().into(),
            });
            o.body = OwnedBody::Bytes(a.body.to_vec().into());
            return self.bare(key, o);
        }
        // ACME's HTTP-01 challenges (as on HTTP/1.1).
        if let Some(ka) = crate::acme::store::http01(&head.method, &head.path, &head.host) {
            let mut o = crate::exchange::filter::core_page(200, &[]);
            o.headers
                .retain(|h| !h.name.as_str().eq_ignore_ascii_case("content-type"));
            o.headers.push(tamada_sdk::abi::OwnedHeaderV1 {
                name: "Content-Type".into(),
                value: b"text/plain".to_vec().into(),
            });
            o.body = OwnedBody::Bytes(ka.as_bytes().to_vec().into());
            return self.bare(key, o);
        }
        let Some(vhost) = cx.rt.vhost_for(self.bind, self.local, &head.host).cloned() else {
            return self.bare(key, crate::exchange::filter::core_page(404, &[]));
        };
        if head.path == "*" {
            return self.bare(key, head::options_star());
        }
        let framing = head.framing;
        let carrier = crate::exchange::Carrier {
            local: self.local,
            peer: self.peer,
            tls: self.wire.lock().sock.io.tls().cloned(),
            proxy_ssl: self.proxy_ssl,
            trusted: &cx.settings().trusted_proxies,
        };
        let mut x = Exchange::arriving(head, vhost, carrier, started);
        if let Some(o) = crate::exchange::https::gate(&x) {
            return self.answer(key, x, Answer::Plugin(o), cx);
        }
        if let Some(a) = run::access_before_body(&mut x) {
            return self.answer(key, x, a, cx);
        }
        let limit = x.vhost.max_body_for(x.path());
        match framing {
            Framing::Length(n) if n > limit => {
                run::too_large(&mut x, n, limit);
                self.answer(key, x, Answer::Status(413), cx);
            }
            Framing::None => self.run_ready(key, x, MemBody::new(Vec::new(), 0), cx),
            // The route streams its body (`request_buffering: false`) and
            // the connection has room on the pool: the handler reads the
            // DATA frames as they come.
            _ if !x.vhost.buffering_for(x.path()) && self.on_pool < pool_cap(cx) => {
                self.run_streaming(key, x, framing, limit, cx)
            }
            _ => {
                if let Some(st) = self.streams.get_mut(key) {
                    st.phase = Phase::Collect(Box::new(Collecting {
                        x,
                        body: Spool::default(),
                        got: 0,
                        limit,
                        last: crate::clock::now(),
                        started: crate::clock::now(),
                    }));
                }
            }
        }
    }

    /// Hands an exchange to the pool with a pipe its body is fed into.
    fn run_streaming(
        &mut self,
        key: usize,
        x: Box<Exchange>,
        framing: Framing,
        limit: u64,
        cx: &mut Cx<'_>,
    ) {
        let Some(st) = self.streams.get(key) else {
            return log_given_up(x, 499, "the stream was reset");
        };
        let (sid, head_only) = (st.sid, st.head_only);
        let content_length = match framing {
            Framing::Length(n) => n as i64,
            _ => -1,
        };
        let pipe = Arc::new(BodyPipe::new(
            cx.waker(self.id),
            cx.settings().body_timeout.0,
            false,
            content_length,
        ));
        pipe.set_limit(limit);
        let need = {
            let owner = cx.stream_owner(self.id, key, sid);
            run::to_pool(
                x,
                PoolBody::Pipe(pipe.clone()),
                &link(cx, &owner, head_only),
            )
        };
        match need {
            Need::Pool => {
                self.on_pool += 1;
                if let Some(st) = self.streams.get_mut(key) {
                    st.phase = Phase::Pool(Some(Box::new(Feeding {
                        pipe,
                        got: 0,
                        exceeded: false,
                    })));
                }
            }
            // Not taken (the pool's queue is full): a 503; the body is
            // left unread (the stream is reset after the answer).
            need => self.apply(key, need, cx),
        }
    }

    /// Feeds a pool handler's pipe from the stream's DATA frames, as far
    /// as the pipe has room; the window is given back as it takes them,
    /// so a handler that reads slowly slows the client down.
    fn feed(&mut self, key: usize, tcx: &mut Context<'_>) -> bool {
        let mut moved = false;
        loop {
            let Some(st) = self.streams.get_mut(key) else {
                return moved;
            };
            let (Phase::Pool(Some(f)), Some(recv)) = (&mut st.phase, st.recv.as_mut()) else {
                return moved;
            };
            if f.exceeded || f.pipe.feed().room == 0 {
                // The pipe wakes the connection when the reader made room.
                return moved;
            }
            match recv.poll_data(tcx) {
                Poll::Ready(Some(Ok(data))) => {
                    moved = true;
                    let n = data.len();
                    f.got += n as u64;
                    if f.got > f.pipe.limit() {
                        f.exceeded = true;
                        // The handler's read fails; its answer becomes a
                        // 413 (`on_stream_handled`); nothing more is read.
                        f.pipe.fail(format!(
                            "the request body is over the limit of {} bytes",
                            f.pipe.limit()
                        ));
                        return true;
                    }
                    f.pipe.push(data.to_vec(), false);
                    let _ = recv.flow_control().release_capacity(n);
                }
                Poll::Ready(None) => {
                    f.pipe.push(Vec::new(), true);
                    if let Phase::Pool(feed) = &mut st.phase {
                        *feed = None;
                    }
                    return true;
                }
                Poll::Ready(Some(Err(e))) => {
                    f.pipe.fail(format!("the request body failed: {e}"));
                    if let Phase::Pool(feed) = &mut st.phase {
                        *feed = None;
                    }
                    if e.is_reset() {
                        self.early_reset();
                    }
                    return true;
                }
                Poll::Pending => return moved,
            }
        }
    }

    /// Runs an exchange whose body is whole, unless the connection has
    /// its share of the pool already (it then waits its turn).
    fn run_ready(&mut self, key: usize, x: Box<Exchange>, mem: MemBody, cx: &mut Cx<'_>) {
        let Some(st) = self.streams.get_mut(key) else {
            return log_given_up(x, 499, "the stream was reset");
        };
        if self.on_pool >= pool_cap(cx) {
            st.phase = Phase::Ready(x, mem);
            return;
        }
        let (sid, head_only) = (st.sid, st.head_only);
        let need = {
            let owner = cx.stream_owner(self.id, key, sid);
            let link = link(cx, &owner, head_only);
            if mem.file.is_some() {
                run::to_pool(x, PoolBody::Mem(mem), &link)
            } else {
                run::run(x, mem, &link)
            }
        };
        self.apply(key, need, cx);
    }

    /// Does what the exchange needs.
    pub(super) fn apply(&mut self, key: usize, need: Need, cx: &mut Cx<'_>) {
        match need {
            Need::Respond(x, a) => self.answer(key, x, a, cx),
            Need::Relay(mut x, o, relay) => {
                drop(relay);
                crate::exchange::response::drop_owned(o);
                let why = "a handler answered 101 (a relay), which HTTP/2 does not carry";
                host::record(&x.vhost, Some(x.peer), log::Level::Error, "tamada", why);
                x.error = Some(why.into());
                self.answer(key, x, Answer::Status(501), cx);
            }
            Need::Pool => {
                self.on_pool += 1;
                if let Some(st) = self.streams.get_mut(key) {
                    st.phase = Phase::Pool(None);
                }
            }
            Need::Wait(p) => {
                let w = &p.wait;
                match cx.register_wait(w.fd, w.read, w.write) {
                    Ok(()) => match self.streams.get_mut(key) {
                        Some(st) => st.phase = Phase::Parked(p, false),
                        None => {
                            cx.forget_wait(p.wait.fd);
                            let Parked { wait, x, .. } = *p;
                            drop(wait);
                            log_given_up(x, 499, "the stream was reset");
                        }
                    },
                    Err(e) => {
                        let Parked { wait, mut x, .. } = *p;
                        drop(wait);
                        let msg = format!("cannot wait for the handler's descriptor: {e}");
                        host::record(&x.vhost, Some(x.peer), log::Level::Error, "tamada", &msg);
                        x.error = Some(msg);
                        self.answer(key, x, Answer::Status(500), cx);
                    }
                }
            }
        }
    }

    /// Sends an answer (after the response filters): HEADERS, then the
    /// body as the windows allow.
    fn answer(&mut self, key: usize, mut x: Box<Exchange>, a: Answer, cx: &mut Cx<'_>) {
        let Some(st) = self.streams.get(key) else {
            if let Answer::Plugin(o) = a {
                crate::exchange::response::drop_owned(o);
            }
            return log_given_up(x, 499, "the stream was reset");
        };
        let (sid, head_only) = (st.sid, st.head_only);
        let mut o = match a {
            Answer::Plugin(o) => o,
            Answer::Status(s) => filter::core_page(s, &[]),
            Answer::Busy => filter::core_page(503, &[("Retry-After", b"1")]),
        };
        if filter::any(&x) {
            let _scope = crate::plugins::call::scope(&x.vhost, x.peer);
            o = match filter::response_side(&mut x, o, head_only) {
                Ok(o) => o,
                Err(why) => {
                    host::record_here(log::Level::Error, "tamada", &why);
                    x.error = Some(why);
                    filter::core_page(500, &[])
                }
            };
        }
        if let Some(v) = crate::exchange::https::hsts(&x)
            && !o
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case("strict-transport-security"))
        {
            o.headers.push(tamada_sdk::abi::OwnedHeaderV1 {
                name: "Strict-Transport-Security".into(),
                value: v.as_bytes().to_vec().into(),
            });
        }
        if let OwnedBody::Raw(_) | OwnedBody::Filtered(_) = &o.body {
            let owner = cx.stream_owner(self.id, key, sid);
            run::start_stream(&mut o, &x, &link(cx, &owner, head_only));
        }
        let framed = {
            let _scope = crate::plugins::call::scope(&x.vhost, x.peer);
            match head::respond(o, head_only) {
                Ok(r) => Some(r),
                Err(head::Refused { status, why }) => {
                    host::record_here(log::Level::Error, "tamada", &why);
                    x.error = Some(why);
                    head::respond(filter::core_page(status, &[]), head_only).ok()
                }
            }
        };
        let Some((resp, src, _)) = framed else {
            self.reset(key, Reason::INTERNAL_ERROR);
            return log_given_up(x, 500, "no response could be framed");
        };
        self.send_head(key, x, resp, src);
    }

    /// A response without an exchange (no vhost, the health route).
    fn bare(&mut self, key: usize, o: Owned) {
        let head_only = self.streams.get(key).is_some_and(|s| s.head_only);
        match head::respond(o, head_only) {
            Ok((resp, src, _)) => {
                let eos = matches!(src, Src::None);
                if let Some(mut st) = self.streams.try_remove(key)
                    && let Ok(mut send) = st.respond.send_response(resp, eos)
                    && let Src::Bytes(b) = src
                {
                    // Small pages: within any initial window.
                    let _ = send.send_data(b, true);
                }
            }
            Err(_) => self.reset(key, Reason::INTERNAL_ERROR),
        }
    }

    fn send_head(
        &mut self,
        key: usize,
        x: Box<Exchange>,
        resp: http_crate::Response<()>,
        src: Src,
    ) {
        let status = resp.status().as_u16();
        let eos = matches!(src, Src::None);
        let Some(st) = self.streams.get_mut(key) else {
            drop_src(src);
            return log_given_up(x, 499, "the stream was reset");
        };
        match st.respond.send_response(resp, eos) {
            Ok(send) => {
                if eos {
                    return self.finish(key, x, status, 0, None);
                }
                if !self.streams.iter().any(|(_, s)| s.sending()) {
                    // The send timeout counts from now.
                    self.last_write = crate::clock::now();
                }
                if let Some(st) = self.streams.get_mut(key) {
                    st.phase = Phase::Send(Box::new(Sending {
                        x,
                        send,
                        src,
                        chunk: Bytes::new(),
                        status,
                        sent: 0,
                    }));
                }
            }
            Err(e) => {
                drop_src(src);
                self.finish(key, x, status, 0, Some(format!("the stream is gone: {e}")));
            }
        }
    }

    /// The response ended (`error`: cut short): the log phase runs and
    /// the stream is forgotten.
    fn finish(
        &mut self,
        key: usize,
        x: Box<Exchange>,
        status: u16,
        sent: u64,
        error: Option<String>,
    ) {
        let completed = error.is_none();
        if completed {
            self.resets = self.resets.saturating_sub(1);
        }
        self.streams.try_remove(key);
        if self.streams.is_empty() {
            self.idle_since = crate::clock::now();
        }
        logphase::run(
            x,
            logphase::Outcome {
                status,
                body_sent: sent,
                total_sent: sent,
                completed,
                error,
            },
        );
    }

    fn reset(&mut self, key: usize, reason: Reason) {
        if let Some(mut st) = self.streams.try_remove(key) {
            st.respond.send_reset(reason);
        }
    }

    /// Gives a stream up (the client reset it, the connection ends): what
    /// it holds is freed and its exchange logged as incomplete.
    pub(super) fn give_up(&mut self, key: usize, cx: &mut Cx<'_>, why: &str) {
        let Some(mut st) = self.streams.try_remove(key) else {
            return;
        };
        st.respond.send_reset(Reason::CANCEL);
        match std::mem::replace(&mut st.phase, Phase::Done) {
            Phase::Collect(c) => log_given_up(c.x, 499, why),
            Phase::Ready(x, _) => log_given_up(x, 499, why),
            Phase::Parked(p, _) => {
                let Parked { wait, x, .. } = *p;
                cx.forget_wait(wait.fd);
                drop(wait);
                log_given_up(x, 499, why);
            }
            Phase::Send(s) => self.end_send(key, *s, Some(why.to_owned())),
            // The pool's late answer is dropped when it comes.
            Phase::Pool(feed) => {
                if let Some(f) = feed {
                    f.pipe.fail(format!("the request body failed: {why}"));
                }
            }
            Phase::Done => {}
        }
        if self.streams.is_empty() {
            self.idle_since = crate::clock::now();
        }
    }

    /// A body that stopped coming for `body_timeout`: 408.
    pub(super) fn collect_timed_out(&mut self, key: usize, cx: &mut Cx<'_>) {
        let Some(st) = self.streams.get_mut(key) else {
            return;
        };
        let Phase::Collect(c) = std::mem::replace(&mut st.phase, Phase::Done) else {
            return;
        };
        let mut x = c.x;
        let why = "request body timeout";
        host::record(&x.vhost, Some(x.peer), log::Level::Info, "tamada", why);
        x.error = Some(why.into());
        self.answer(key, x, Answer::Status(408), cx);
    }

    /// Steps every stream; true when one moved.
    pub(super) fn step_streams(&mut self, cx: &mut Cx<'_>, tcx: &mut Context<'_>) -> bool {
        let mut keys = std::mem::take(&mut self.keys);
        keys.clear();
        keys.extend(self.streams.iter().map(|(k, _)| k));
        // The most urgent first; the same urgency in order of arrival.
        if self
            .streams
            .iter()
            .any(|(_, s)| s.urgency != DEFAULT_URGENCY)
        {
            let streams = &self.streams;
            keys.sort_by_key(|&k| (streams[k].urgency, streams[k].sid));
        }
        let mut moved = false;
        for &k in &keys {
            moved |= self.step_stream(k, cx, tcx);
        }
        self.keys = keys;
        moved
    }

    fn step_stream(&mut self, key: usize, cx: &mut Cx<'_>, tcx: &mut Context<'_>) -> bool {
        let cap = pool_cap(cx);
        let Some(st) = self.streams.get_mut(key) else {
            return false;
        };
        match &mut st.phase {
            Phase::Collect(_) => self.collect(key, cx, tcx),
            Phase::Ready(..) if self.on_pool < cap => {
                let Phase::Ready(x, mem) = std::mem::replace(&mut st.phase, Phase::Done) else {
                    return false;
                };
                self.run_ready(key, x, mem, cx);
                true
            }
            Phase::Parked(p, ready) => {
                let ready = *ready;
                if !ready && crate::clock::now() < p.until {
                    return self.check_reset(key, cx, tcx);
                }
                let Phase::Parked(p, _) = std::mem::replace(&mut st.phase, Phase::Done) else {
                    return false;
                };
                cx.unwatch(p.wait.fd);
                let (sid, head_only) = (st.sid, st.head_only);
                let need = {
                    let owner = cx.stream_owner(self.id, key, sid);
                    run::resume(*p, ready, &link(cx, &owner, head_only))
                };
                self.apply(key, need, cx);
                true
            }
            Phase::Send(_) => self.send_more(key, cx, tcx),
            Phase::Pool(Some(_)) => self.feed(key, tcx),
            Phase::Ready(..) | Phase::Pool(None) | Phase::Done => self.check_reset(key, cx, tcx),
        }
    }

    /// A stream the client reset while it waited.
    fn check_reset(&mut self, key: usize, cx: &mut Cx<'_>, tcx: &mut Context<'_>) -> bool {
        let Some(st) = self.streams.get_mut(key) else {
            return false;
        };
        if let Poll::Ready(r) = st.respond.poll_reset(tcx) {
            let why = match r {
                Ok(reason) => format!("the client reset the stream ({reason})"),
                Err(e) => format!("the stream failed: {e}"),
            };
            self.early_reset();
            self.give_up(key, cx, &why);
            return true;
        }
        false
    }

    /// Takes the DATA frames that came.
    fn collect(&mut self, key: usize, cx: &mut Cx<'_>, tcx: &mut Context<'_>) -> bool {
        let mut moved = false;
        let s = cx.settings();
        let dir = s.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
        let max_spool = s.max_spool.0;
        loop {
            let Some(st) = self.streams.get_mut(key) else {
                return moved;
            };
            let (Phase::Collect(c), Some(recv)) = (&mut st.phase, st.recv.as_mut()) else {
                return moved;
            };
            match recv.poll_data(tcx) {
                Poll::Ready(Some(Ok(data))) => {
                    moved = true;
                    let n = data.len();
                    let _ = recv.flow_control().release_capacity(n);
                    c.got += n as u64;
                    c.last = crate::clock::now();
                    c.x.bytes_received += n as u64;
                    if c.got > c.limit {
                        let Phase::Collect(c) = std::mem::replace(&mut st.phase, Phase::Done)
                        else {
                            return true;
                        };
                        let (mut x, got, limit) = (c.x, c.got, c.limit);
                        run::too_large(&mut x, got, limit);
                        self.answer(key, x, Answer::Status(413), cx);
                        return true;
                    }
                    let failed = match c.body.push(&data, &dir, max_spool) {
                        Ok(()) => None,
                        Err(SpoolError::Full(max)) => Some((
                            503,
                            format!(
                                "request bodies spooled to disk reached max_spool ({max} bytes)"
                            ),
                        )),
                        Err(SpoolError::Io(e)) => Some((
                            500,
                            format!("cannot spool the request body in {}: {e}", dir.display()),
                        )),
                    };
                    if let Some((status, why)) = failed {
                        let Phase::Collect(c) = std::mem::replace(&mut st.phase, Phase::Done)
                        else {
                            return true;
                        };
                        let mut x = c.x;
                        host::record(&x.vhost, Some(x.peer), log::Level::Error, "tamada", &why);
                        x.error = Some(why);
                        self.answer(key, x, Answer::Status(status), cx);
                        return true;
                    }
                }
                Poll::Ready(None) => {
                    let Phase::Collect(c) = std::mem::replace(&mut st.phase, Phase::Done) else {
                        return true;
                    };
                    let Collecting { mut x, body, .. } = *c;
                    let mut mem = body.into_body(0);
                    mem.content_length = mem.len() as i64;
                    // The length is known now: handlers see it (CGI's
                    // CONTENT_LENGTH, the proxy's Content-Length).
                    x.head.framing = Framing::Length(mem.len());
                    self.run_ready(key, x, mem, cx);
                    return true;
                }
                Poll::Ready(Some(Err(e))) => {
                    if e.reason() == Some(Reason::CANCEL) || e.is_reset() {
                        self.early_reset();
                    }
                    self.give_up(key, cx, &format!("the request body failed: {e}"));
                    return true;
                }
                Poll::Pending => return moved,
            }
        }
    }

    /// Sends what the windows allow of a response body.
    fn send_more(&mut self, key: usize, cx: &mut Cx<'_>, tcx: &mut Context<'_>) -> bool {
        let mut moved = false;
        loop {
            let Some(st) = self.streams.get_mut(key) else {
                return moved;
            };
            let Phase::Send(s) = &mut st.phase else {
                return moved;
            };
            if s.chunk.is_empty() {
                match next_piece(&mut s.src) {
                    Piece::Data(b) => {
                        s.chunk = b;
                        if s.chunk.is_empty() {
                            continue;
                        }
                    }
                    Piece::Pending => {
                        if let Poll::Ready(r) = s.send.poll_reset(tcx) {
                            let why = format!("the client reset the stream ({r:?})");
                            self.early_reset();
                            self.give_up(key, cx, &why);
                            return true;
                        }
                        return moved;
                    }
                    Piece::End => {
                        let r = s.send.send_data(Bytes::new(), true);
                        return self.sent_last(key, r.err().map(|e| e.to_string()));
                    }
                    Piece::Failed(e) => {
                        s.send.send_reset(Reason::INTERNAL_ERROR);
                        return self.sent_last(key, Some(e));
                    }
                }
            }
            let want = s.chunk.len();
            s.send.reserve_capacity(want);
            if s.send.capacity() == 0 {
                match s.send.poll_capacity(tcx) {
                    Poll::Ready(Some(Ok(_))) => {}
                    Poll::Ready(Some(Err(e))) => {
                        let why = format!("the client reset the stream: {e}");
                        self.early_reset();
                        self.give_up(key, cx, &why);
                        return true;
                    }
                    Poll::Ready(None) => {
                        self.early_reset();
                        self.give_up(key, cx, "the client reset the stream");
                        return true;
                    }
                    Poll::Pending => return moved,
                }
            }
            let n = s.send.capacity().min(want);
            if n == 0 {
                return moved;
            }
            let piece = s.chunk.split_to(n);
            let last = s.chunk.is_empty() && src_done(&s.src);
            s.sent += n as u64;
            moved = true;
            if let Err(e) = s.send.send_data(piece, last) {
                return self.sent_last(key, Some(format!("the stream is gone: {e}")));
            }
            if last {
                return self.sent_last(key, None);
            }
        }
    }

    /// The body's last frame is queued (or the stream failed).
    fn sent_last(&mut self, key: usize, error: Option<String>) -> bool {
        let Some(st) = self.streams.get_mut(key) else {
            return true;
        };
        let Phase::Send(s) = std::mem::replace(&mut st.phase, Phase::Done) else {
            return true;
        };
        self.end_send(key, *s, error);
        true
    }

    /// A response that is over, sent whole or not (`error`).
    fn end_send(&mut self, key: usize, s: Sending, error: Option<String>) {
        let Sending {
            x,
            src,
            status,
            sent,
            ..
        } = s;
        drop_src(src);
        self.finish(key, x, status, sent, error);
    }
}

/// RFC 9218's default urgency.
const DEFAULT_URGENCY: u8 = 3;

/// The urgency of a `priority` field (RFC 9218 section 4: a dictionary
/// whose `u` is 0 to 7); anything else is the default.
fn urgency(v: &[u8]) -> u8 {
    let Ok(v) = std::str::from_utf8(v) else {
        return DEFAULT_URGENCY;
    };
    v.split(',')
        .filter_map(|m| m.trim().strip_prefix("u="))
        .filter_map(|n| n.parse::<u8>().ok())
        .find(|&n| n <= 7)
        .unwrap_or(DEFAULT_URGENCY)
}

/// What an exchange may use of its stream and loop.
fn link<'a>(
    cx: &'a Cx<'_>,
    owner: &'a crate::net::cx::StreamOwner<'_>,
    head_only: bool,
) -> Link<'a> {
    Link {
        pool: cx.pool,
        settings: cx.settings(),
        shape: Shape {
            head_only,
            // DATA frames delimit the body.
            chunked: false,
        },
        owner,
    }
}

/// Logs a request given up before any response.
fn log_given_up(x: Box<Exchange>, status: u16, why: &str) {
    logphase::run(
        x,
        logphase::Outcome {
            status,
            completed: false,
            error: Some(why.to_owned()),
            ..Default::default()
        },
    );
}

/// Frees a body not sent (a stream being pulled is abandoned).
fn drop_src(src: Src) {
    if let Src::Stream(p) = &src {
        p.abandon();
    }
}

/// Whether the source has nothing after what it gave.
fn src_done(src: &Src) -> bool {
    match src {
        Src::None => true,
        Src::Segments { segs, .. } => segs.is_empty(),
        _ => false,
    }
}

/// Reads up to `len` bytes of `fd` at `off`.
fn pread(fd: RawFd, off: u64, len: u64) -> Result<Bytes, String> {
    // PERF: not zeroed first (the kernel fills it; zeroing 64 KiB per
    // piece was 3% of a 100 KiB download's CPU).
    let want = len.min(FILE_PIECE) as usize;
    let mut buf: Vec<u8> = Vec::with_capacity(want);
    loop {
        // SAFETY: the pointer is valid for writes of `want` bytes (the
        // vector's capacity) for the call, and `fd` is open (owned by the
        // body being sent).
        let r = unsafe {
            libc::pread(
                fd,
                buf.as_mut_ptr() as *mut libc::c_void,
                want,
                off as libc::off_t,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("reading the file: {e}"));
        }
        if r == 0 {
            return Err("file ended before its announced length (truncated while sent?)".into());
        }
        // SAFETY: the kernel wrote `r` (<= capacity) bytes.
        unsafe { buf.set_len(r as usize) };
        return Ok(Bytes::from(buf));
    }
}

fn next_piece(src: &mut Src) -> Piece {
    match src {
        Src::None => Piece::End,
        Src::Bytes(_) => {
            let Src::Bytes(b) = std::mem::replace(src, Src::None) else {
                return Piece::End;
            };
            Piece::Data(b)
        }
        Src::File { fd, off, end } => {
            if *off >= *end {
                *src = Src::None;
                return Piece::End;
            }
            match pread(fd.as_raw_fd(), *off, *end - *off) {
                Ok(b) => {
                    *off += b.len() as u64;
                    if *off >= *end {
                        *src = Src::None;
                    }
                    Piece::Data(b)
                }
                Err(e) => Piece::Failed(e),
            }
        }
        Src::Segments { files, segs } => {
            let Some(seg) = segs.front_mut() else {
                return Piece::End;
            };
            if seg.file < 0 {
                let b = std::mem::take(&mut seg.bytes).into_vec();
                segs.pop_front();
                return Piece::Data(Bytes::from(b));
            }
            let Some(f) = files.get(seg.file as usize) else {
                return Piece::Failed("a segment names no file".into());
            };
            if seg.len == 0 {
                segs.pop_front();
                return Piece::Data(Bytes::new());
            }
            match pread(f.as_raw_fd(), seg.offset, seg.len) {
                Ok(b) => {
                    seg.offset += b.len() as u64;
                    seg.len -= b.len() as u64;
                    if seg.len == 0 {
                        segs.pop_front();
                    }
                    Piece::Data(b)
                }
                Err(e) => Piece::Failed(e),
            }
        }
        Src::Stream(p) => match p.take() {
            PipePiece::Data(v) => Piece::Data(Bytes::from(v)),
            PipePiece::Pending => Piece::Pending,
            PipePiece::End => {
                *src = Src::None;
                Piece::End
            }
            PipePiece::Failed(e) => Piece::Failed(e),
        },
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urgency_is_read_from_the_priority_field() {
        assert_eq!(super::urgency(b"u=0"), 0);
        assert_eq!(super::urgency(b"i, u=5"), 5);
        assert_eq!(super::urgency(b"u=9"), 3);
        assert_eq!(super::urgency(b"i"), 3);
        assert_eq!(super::urgency(b"u=x"), 3);
    }
}
