//! The requests of an HTTP/1.1 connection: a parsed head becomes an
//! [`Exchange`] (its vhost, its body whole or streamed), the exchange runs
//! (`exchange/run.rs`), and what it needs is done here: an answer framed
//! for HTTP/1.1 and queued on the writer, a wait registered with the
//! loop, a pool hand-off, a relay.

use super::body::BodyState;
use super::collect::Collect;
use super::{Conn, Next, Pooled, Reply, State, Waiting, head, tunnel};
use crate::exchange::body::{BodyPipe, MemBody, Spool};
use crate::exchange::response::{Owned, OwnedBody, Shape};
use crate::exchange::run::{self, Answer, Link, Need, PoolBody};
use crate::exchange::{Exchange, Handled};
use crate::http::request::{Framing, RequestHead};
use crate::http::{self, HttpError};
use crate::net::cx::{ConnOwner, Cx};
use crate::plugins::Relay;
use crate::plugins::host;
use crate::transport::Transport;
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
        self.closing.after = true;
        self.closing.linger = true;
        let resp = head::simple(e.status, 1, false, true);
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
            http2: false,
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

    /// Starts answering a parsed head.
    pub(super) fn start(&mut self, head: RequestHead, cx: &mut Cx<'_>) {
        let started = self.head_started.take().unwrap_or_else(crate::clock::now);
        self.buf.consume(head.head_len);
        let reply = Reply {
            minor: head.version_minor,
            head_only: head.is_head(),
            keep: head.keep_alive && !cx.draining,
        };
        if let Some(h) = &cx.settings().health
            && head.path == *h
        {
            let a = crate::exchange::health::answer(&head, reply.keep, cx.draining);
            self.closing.linger |= a.close;
            let r = head::plain_text(
                a.status,
                reply.minor,
                reply.head_only && a.status != 405,
                a.close,
                a.extra,
                a.body,
            );
            self.queue(r, None);
            return;
        }
        // ACME's HTTP-01 challenges, ahead of every route, redirect and
        // access rule (answered from memory).
        if let Some(ka) = crate::acme::store::http01(&head.method, &head.path, &head.host) {
            let close = !reply.keep || head.framing != Framing::None;
            self.closing.linger |= close;
            let r = head::plain_text(200, reply.minor, reply.head_only, close, &[], ka.as_bytes());
            self.queue(r, None);
            return;
        }
        let Some(vhost) = cx.rt.vhost_for(self.bind, self.local, &head.host).cloned() else {
            self.closing.linger = true;
            self.queue(head::simple(404, reply.minor, reply.head_only, true), None);
            return;
        };
        // A keep-alive client told to go may already be sending more.
        self.closing.linger |= head.keep_alive && !reply.keep;
        if head.path == "*" {
            let close = !reply.keep || head.framing != Framing::None;
            self.closing.linger |= close;
            self.queue(head::options_star(reply.minor, close), None);
            return;
        }
        let (expect, framing) = (head.expect_continue, head.framing);
        let carrier = crate::exchange::Carrier {
            local: self.local,
            peer: self.peer,
            tls: self.sock.io.tls().cloned(),
            proxy_ssl: self.proxy_ssl,
            trusted: &cx.settings().trusted_proxies,
        };
        let mut x = Exchange::arriving(head, vhost, carrier, started);
        if let Some(o) = crate::exchange::https::gate(&x) {
            // A body is not read: the connection closes after the answer.
            let unread = !matches!(framing, Framing::None | Framing::Length(0));
            self.closing.linger |= unread;
            let keep = reply.keep && !unread;
            return self.answer(x, Answer::Plugin(o), Reply { keep, ..reply }, cx);
        }
        // Access rules run now, before any of the body is read.
        if let Some(a) = run::access_before_body(&mut x) {
            let unread = !matches!(framing, Framing::None | Framing::Length(0));
            self.closing.linger |= unread;
            let keep = reply.keep && !unread;
            return self.answer(x, a, Reply { keep, ..reply }, cx);
        }
        // (a rewrite may have moved the request to another route)
        let limit = x.vhost.max_body_for(x.path());
        if let Framing::Length(n) = framing
            && n > limit
        {
            run::too_large(&mut x, n, limit);
            return self.answer(x, Answer::Status(413), reply, cx);
        }
        let mut state = BodyState::new(framing, limit, expect);
        // A body already wholly in the buffer is read from memory: the
        // request may then run inline.
        if let Some((data, wire)) = state.whole_in(self.buf.data()) {
            self.buf.consume(wire);
            let len = data.len();
            state.consumed_whole(wire, len);
            x.bytes_received += wire as u64;
            let content_length = match framing {
                Framing::Length(n) => n as i64,
                _ => len as i64,
            };
            let owner = cx.owner(self.id);
            let need = run::run(
                x,
                MemBody::new(data, content_length),
                &link(cx, &owner, reply),
            );
            return self.apply(need, reply, cx);
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
            self.state = State::Collect(Box::new(Collect {
                x,
                state,
                reply,
                body: Spool::default(),
                started: now,
                last: now,
            }));
            return;
        }
        // The body is streamed: the handler reads it on the pool through a
        // pipe this loop feeds.
        let content_length = match framing {
            Framing::Length(n) => n as i64,
            Framing::Chunked => -1,
            Framing::None => 0,
        };
        let pipe = Arc::new(BodyPipe::new(
            cx.waker(self.id),
            cx.settings().body_timeout.0,
            state.continue_pending,
            content_length,
        ));
        pipe.set_limit(limit);
        let owner = cx.owner(self.id);
        let need = run::to_pool(x, PoolBody::Pipe(pipe.clone()), &link(cx, &owner, reply));
        if let Need::Pool = need {
            self.state = State::Pool(Box::new(Pooled {
                reply,
                feed: Some((state, pipe)),
            }));
            return;
        }
        // Not taken (the pool's queue is full): the body stays unread.
        self.closing.linger = true;
        self.apply(
            need,
            Reply {
                keep: false,
                ..reply
            },
            cx,
        );
    }

    /// A collected body is whole: the request runs as one whose body came
    /// with the head (inline when it stayed in memory; a spooled one goes
    /// to the pool, where reading a large file blocks no loop).
    pub(super) fn run_collected(&mut self, cx: &mut Cx<'_>) {
        let State::Collect(c) = std::mem::replace(&mut self.state, State::Head) else {
            return;
        };
        let Collect {
            mut x,
            state,
            reply,
            body,
            ..
        } = *c;
        x.bytes_received += state.wire_bytes;
        // A chunked body collected whole has a length now: the handler
        // sees it (CGI's CONTENT_LENGTH, the proxy's Content-Length).
        let mut mem = body.into_body(0);
        mem.content_length = mem.len() as i64;
        let reply = self.still(reply, cx);
        let owner = cx.owner(self.id);
        let link = link(cx, &owner, reply);
        let need = if mem.file.is_some() {
            run::to_pool(x, PoolBody::Mem(mem), &link)
        } else {
            run::run(x, mem, &link)
        };
        self.apply(need, reply, cx);
    }

    /// Calls a waiting handler again: its descriptor is ready, or its
    /// time ran out.
    pub(super) fn resume(&mut self, cx: &mut Cx<'_>) {
        let State::Parked(p) = std::mem::replace(&mut self.state, State::Head) else {
            return;
        };
        let Waiting {
            parked,
            reply,
            ready,
        } = *p;
        cx.unwatch(parked.wait.fd);
        let reply = self.still(reply, cx);
        let owner = cx.owner(self.id);
        let need = run::resume(parked, ready, &link(cx, &owner, reply));
        self.apply(need, reply, cx);
    }

    /// A keep-alive request told to go by a drain that began meanwhile
    /// (more may be on its way: the close lingers).
    fn still(&mut self, reply: Reply, cx: &Cx<'_>) -> Reply {
        let keep = reply.keep && !cx.draining;
        self.closing.linger |= reply.keep && !keep;
        Reply { keep, ..reply }
    }

    /// Does what the exchange needs.
    fn apply(&mut self, need: Need, reply: Reply, cx: &mut Cx<'_>) {
        match need {
            Need::Respond(x, a) => self.answer(x, a, reply, cx),
            Need::Relay(x, o, relay) => self.relay(x, o, relay, reply, cx),
            Need::Pool => self.state = State::Pool(Box::new(Pooled { reply, feed: None })),
            Need::Wait(p) => {
                let w = &p.wait;
                match cx.register_wait(w.fd, w.read, w.write) {
                    Ok(()) => {
                        self.state = State::Parked(Box::new(Waiting {
                            parked: *p,
                            reply,
                            ready: false,
                        }));
                    }
                    Err(e) => {
                        let run::Parked { wait, mut x, .. } = *p;
                        drop(wait);
                        let msg = format!("cannot wait for the handler's descriptor: {e}");
                        host::record(&x.vhost, Some(x.peer), log::Level::Error, "tamada", &msg);
                        x.error = Some(msg);
                        self.answer(x, Answer::Status(500), reply, cx);
                    }
                }
            }
        }
    }

    /// The pool's answer for the request at the front.
    pub fn on_handled(&mut self, h: Handled, cx: &mut Cx<'_>) -> Next {
        let State::Pool(w) = std::mem::replace(&mut self.state, State::Head) else {
            crate::exchange::drop_handled(h);
            return Next::Wait;
        };
        let Pooled { mut reply, feed } = *w;
        reply.keep &= !cx.draining;
        let Handled {
            exchange: mut x,
            step,
        } = h;
        if let Some((mut state, pipe)) = feed {
            if state.bad_framing || state.exceeded {
                // RFC 9112 section 7.1: malformed chunked framing is the
                // client's fault, and the rest of the connection cannot
                // be trusted; an oversized body ends it too.
                if let crate::exchange::Done::Respond(o) = step {
                    crate::exchange::response::drop_owned(o);
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
                self.closing.linger = true;
                let resp = head::simple(status, reply.minor, reply.head_only, true);
                self.queue(resp, Some(x));
                return self.drive(cx);
            }
            if !state.done {
                // Unread body: take what is already here without waiting;
                // if the rest is still on its way, close after answering
                // (RFC 9112 section 9.6).
                let waiting_continue = state.continue_pending && !pipe.started();
                let sock = &mut self.sock;
                if waiting_continue
                    || !state.drain_available(&mut self.buf, |b| {
                        matches!(sock.read(b), super::sock::Read::Data)
                    })
                {
                    reply.keep = false;
                    self.closing.linger = true;
                }
            }
            x.bytes_received += state.wire_bytes;
        }
        let need = run::handled(Handled { exchange: x, step });
        self.apply(need, reply, cx);
        self.drive(cx)
    }

    /// Frames an answer for HTTP/1.1 and queues it (after the response
    /// filters, `exchange/filter.rs`).
    fn answer(&mut self, mut x: Box<Exchange>, a: Answer, reply: Reply, cx: &mut Cx<'_>) {
        let Reply {
            minor,
            head_only,
            mut keep,
        } = reply;
        match &a {
            // The body is not read: the connection closes after it.
            Answer::Status(413) => {
                self.closing.linger = true;
                keep = false;
            }
            Answer::Busy => keep &= !self.closing.after,
            _ => {}
        }
        let a = if crate::exchange::filter::any(&x) {
            let o = match a {
                Answer::Plugin(o) => o,
                Answer::Status(s) => crate::exchange::filter::core_page(s, &[]),
                Answer::Busy => crate::exchange::filter::core_page(503, &[("Retry-After", b"1")]),
            };
            let _scope = crate::plugins::call::scope(&x.vhost, x.peer);
            match crate::exchange::filter::response_side(&mut x, o, head_only) {
                Ok(o) => Answer::Plugin(o),
                Err(why) => {
                    host::record_here(log::Level::Error, "tamada", &why);
                    x.error = Some(why);
                    Answer::Status(500)
                }
            }
        } else {
            a
        };
        let hsts = crate::exchange::https::hsts(&x).map(str::to_owned);
        let hsts = hsts.filter(|_| match &a {
            // A handler's own field stands.
            Answer::Plugin(o) => !o
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case("strict-transport-security")),
            _ => true,
        });
        let mut resp = match a {
            Answer::Plugin(mut o) => {
                if let OwnedBody::Raw(_) | OwnedBody::Filtered(_) = &o.body {
                    // PERF: only a stream needs a wake-up and the pool.
                    let owner = cx.owner(self.id);
                    run::start_stream(&mut o, &x, &link(cx, &owner, reply));
                }
                let _scope = crate::plugins::call::scope(&x.vhost, x.peer);
                match head::respond(o, minor, head_only, keep) {
                    Ok(r) => r,
                    Err(head::Refused { status, why }) => {
                        host::record_here(log::Level::Error, "tamada", &why);
                        x.error = Some(why);
                        head::simple(status, minor, head_only, !keep)
                    }
                }
            }
            Answer::Status(status) => head::simple(status, minor, head_only, !keep),
            Answer::Busy => {
                head::simple_with(503, minor, head_only, !keep, &[("Retry-After", b"1")])
            }
        };
        if let Some(v) = hsts {
            resp.add_header("Strict-Transport-Security", v.as_bytes());
        }
        self.queue(resp, Some(x));
    }

    /// A 101, then the connection relays bytes to the plugin's socket.
    fn relay(
        &mut self,
        mut x: Box<Exchange>,
        o: Owned,
        relay: Relay,
        reply: Reply,
        cx: &mut Cx<'_>,
    ) {
        let resp = head::switching(&o);
        crate::exchange::response::drop_owned(o);
        if cx.draining {
            // No new tunnel while stopping: it would only be cut.
            drop(relay);
            x.error = Some("the server is stopping: no new relay".into());
            self.closing.linger = true;
            let r = head::simple(503, reply.minor, reply.head_only, true);
            return self.queue(r, Some(x));
        }
        let head_len = resp.head_len;
        let idle = relay.idle_or();
        let up = match tunnel::Up::new(relay.fd) {
            Ok(up) => up,
            Err(e) => {
                let msg = format!("cannot relay: {e}");
                host::record(&x.vhost, Some(x.peer), log::Level::Error, "tamada", &msg);
                x.error = Some(msg);
                let r = head::simple(502, reply.minor, reply.head_only, true);
                return self.queue(r, Some(x));
            }
        };
        let mut t = tunnel::Tunnel::new(up, relay.pre, idle, x, head_len);
        t.early_client_bytes(self.buf.data());
        self.buf.consume(self.buf.data().len());
        self.queue(resp, None);
        self.state = State::Tunnel(Box::new(t));
    }

    pub(super) fn queue(&mut self, r: head::Response, x: Option<Box<Exchange>>) {
        if r.close {
            self.closing.after = true;
        }
        if self.out.is_idle() {
            // The send timeout counts from now, not from the last write.
            self.last_write = crate::clock::now();
        }
        self.out.push(r, x);
    }
}

/// What the exchange may use of this connection and its loop.
fn link<'a>(cx: &'a Cx<'_>, owner: &'a ConnOwner<'_>, reply: Reply) -> Link<'a> {
    Link {
        pool: cx.pool,
        settings: cx.settings(),
        shape: Shape {
            head_only: reply.head_only,
            chunked: reply.minor >= 1,
        },
        owner,
    }
}
