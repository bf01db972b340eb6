//! `proxy`: a reverse proxy to HTTP/1.1 upstreams (`host:port` or
//! `unix:/path`), like nginx's `proxy_pass` with `keepalive`.
//!
//! The life of a request, in [`Proxy::handle`], on the pool: pick an
//! upstream ([`upstream`]: round robin or least connections, skipping one
//! the passive health check took out), take an idle connection that is
//! still open or connect, send the head ([`head`]) and stream the body
//! while watching for an early answer, read the response head
//! ([`response`]) and hand its body to the core as a stream that puts the
//! connection back in the pool once the body ended cleanly. What may be
//! retried is retried on the next upstream; everything else is a 502 (504
//! for a timeout) with one line in the error log.

pub mod config;
pub mod head;
mod inline;
pub mod response;
pub mod upstream;

use config::{Config, Settings};
use head::BodyFraming;
use response::{Finish, HeadError, UpstreamBody};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tamada_gateway::conn::idempotent;
use tamada_gateway::upload::Upload;
use tamada_sdk::prelude::*;
use upstream::{Conn, Sent, Upstreams};

/// A route's proxy.
pub struct Proxy {
    s: Settings,
    ups: Arc<Upstreams>,
}

/// Builds the handler from its options.
pub fn new(options: &Options) -> Result<Proxy, String> {
    let c: Config = options.parse()?;
    let s = Settings::from_config(c)?;
    let ups = Arc::new(Upstreams::new(&s));
    Ok(Proxy { s, ups })
}

/// Why one attempt failed.
enum Fail {
    /// The upstream had closed a pooled connection before reading the
    /// request: nothing reached it, the request may go again.
    Stale,
    /// Sending or reading failed before any response byte.
    Io(String),
    /// `read_timeout` (or `send_timeout`) passed.
    Timeout(String),
    /// The upstream sent something that is not a response.
    Bad(String),
    /// The client's body failed (too large, too slow, gone).
    Client(String),
}

impl Proxy {
    /// One attempt on one connection.
    fn attempt(
        &self,
        c: &mut Conn,
        req: &Request,
        up: &mut Upload,
        framing: BodyFraming,
    ) -> Result<response::Head, Fail> {
        let io_fail = |c: &Conn, e: io::Error, what: &str| {
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                Fail::Timeout(format!("timed out {what}"))
            } else if c.reused {
                Fail::Stale
            } else {
                Fail::Io(format!("{what}: {e}"))
            }
        };
        // Blocking, with the timeouts (a connection last used inline is
        // non-blocking).
        if let Err(e) = c.set_mode(false, self.s.read_timeout, self.s.send_timeout) {
            return Err(Fail::Io(format!("setting up the connection: {e}")));
        }
        let head = head::build(req, &self.s, &self.s.upstreams[c.up], framing);
        let mut early = false;
        if let Err(e) = c.sock.write_all(&head) {
            return Err(io_fail(c, e, "sending the request head"));
        }
        let head_request = req.method() == "HEAD";
        let upgrade = framing == BodyFraming::None && head::upgrade_asked(req).is_some();
        let mut resume = false;
        let mut at = response::HeadRead::new(self.s.read_timeout);
        loop {
            if framing != BodyFraming::None && (!resume || !up.ended || !up.unsent.is_empty()) {
                match self.send_body(c, up, framing, resume) {
                    Ok(answered) => early = answered,
                    Err(Fail::Io(why)) => {
                        // The upstream may have answered and closed (a 413
                        // before the whole body): read what it said.
                        if !c.readable() {
                            return Err(if c.reused && !up.ended {
                                Fail::Stale
                            } else {
                                Fail::Io(why)
                            });
                        }
                        early = true;
                    }
                    Err(f) => return Err(f),
                }
            }
            // An interim response (103) while the body is still going: back
            // to sending it, the final answer comes after.
            let interim_returns = early && !up.ended;
            if up.ended && !early {
                // All sent: the head is due within read_timeout from now.
                at.deadline = Instant::now() + self.s.read_timeout;
            }
            match response::read_head(
                c,
                self.s.max_response_head,
                head_request,
                upgrade,
                interim_returns,
                &mut at,
            ) {
                Err(HeadError::Interim) => {
                    resume = true;
                    early = false;
                    continue;
                }
                r => {
                    break r.map(|mut h| {
                        if early || !up.ended {
                            // It answered before the whole body: the rest will
                            // not follow on this connection.
                            h.reusable = false;
                        }
                        h
                    });
                }
            }
        }
        .map_err(|e| match e {
            // A pooled connection that ends with no answer after the
            // whole request went may have processed it: only a request
            // that may run twice goes again (RFC 9110 9.2.2, as nginx).
            HeadError::Nothing(e) if !idempotent(req.method()) => {
                Fail::Io(format!("the connection ended with no response head: {e}"))
            }
            HeadError::Nothing(e) => io_fail(c, e, "reading the response head"),
            HeadError::Timeout | HeadError::Again => Fail::Timeout(format!(
                "no response head within {:?} (read_timeout)",
                self.s.read_timeout
            )),
            HeadError::Bad(why) => Fail::Bad(why),
            HeadError::Interim => Fail::Bad("an interim response out of place".into()),
        })
    }

    /// Streams the body (a replayed copy first); `Ok(true)` when the
    /// upstream answered before it ended.
    fn send_body(
        &self,
        c: &mut Conn,
        up: &mut Upload,
        framing: BodyFraming,
        resume: bool,
    ) -> Result<bool, Fail> {
        let chunked = framing == BodyFraming::Chunked;
        if resume {
            let rest = std::mem::take(&mut up.unsent);
            if !rest.is_empty() && self.send_watching(c, up, &rest)? {
                return Ok(true);
            }
            if up.ended {
                return Ok(false);
            }
        } else if up.started {
            let Some(copy) = up.replay().map(<[u8]>::to_vec) else {
                return Err(Fail::Io("the request body cannot be sent again".into()));
            };
            if !copy.is_empty() && self.send_watching(c, up, &framed(&copy, chunked))? {
                return Ok(true);
            }
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = if up.ended {
                0
            } else {
                up.read(&mut buf).map_err(|e| Fail::Client(e.to_string()))?
            };
            if n == 0 {
                return if chunked {
                    self.send_watching(c, up, b"0\r\n\r\n")
                } else {
                    Ok(false)
                };
            }
            if self.send_watching(c, up, &framed(&buf[..n], chunked))? {
                return Ok(true);
            }
        }
    }

    /// Writes `data`, or stops when the upstream has something to say;
    /// `Ok(true)` then, with what was not sent kept in `up.unsent`.
    fn send_watching(&self, c: &mut Conn, up: &mut Upload, data: &[u8]) -> Result<bool, Fail> {
        let mut left = data;
        match c.send_watching(&mut left, self.s.send_timeout) {
            Ok(Sent::Answered) => {
                up.unsent = left.to_vec();
                Ok(true)
            }
            Ok(Sent::All) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(Fail::Timeout(format!(
                "the upstream took no body for {:?} (send_timeout)",
                self.s.send_timeout
            ))),
            Err(e) => Err(Fail::Io(format!("sending the request body: {e}"))),
        }
    }

    fn error(&self, res: &mut ResponseBuilder, status: u16, why: &str) -> Outcome {
        res.status(status)
            .header("content-type", "text/plain; charset=utf-8")
            .header("cache-control", "no-store")
            .body(match status {
                504 => "504 Gateway Timeout: the upstream did not answer in time\n",
                503 => "503 Service Unavailable\n",
                400 => "400 Bad Request: the request body could not be read\n",
                _ => "502 Bad Gateway: the upstream did not answer properly\n",
            });
        let _ = why;
        Outcome::Done
    }
}

/// Bodies up to this size, with a Content-Length, are read before the
/// handler returns and answered from memory.
const SMALL_BODY: u64 = 64 * 1024;

/// The whole body of a small response.
fn read_small(body: &mut UpstreamBody, n: usize) -> io::Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let k = tamada_sdk::BodyStream::read(body, &mut v[got..])?;
        if k == 0 {
            break;
        }
        got += k;
    }
    v.truncate(got);
    Ok(v)
}

fn framed(data: &[u8], chunked: bool) -> Vec<u8> {
    if !chunked {
        return data.to_vec();
    }
    let mut v = Vec::with_capacity(data.len() + 16);
    v.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    v.extend_from_slice(data);
    v.extend_from_slice(b"\r\n");
    v
}

impl Handler for Proxy {
    fn placement(&self) -> Placement {
        Placement::Inline
    }

    fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
        if req.method() == "TRACE" && !self.s.allow_trace {
            // As nginx: never forwarded (it would echo the client's
            // cookies and credentials back to a script that asks).
            res.status(405)
                .header("allow", "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH")
                .header("content-type", "text/plain; charset=utf-8")
                .body("405 Method Not Allowed: TRACE is not forwarded\n");
            return Outcome::Done;
        }
        if req.can_wait() {
            return self.handle_inline(req, res);
        }
        if req.is_inline() {
            // A server that cannot wait: the blocking path, on the pool.
            return req.defer();
        }
        let t0 = Instant::now();
        let framing = match req.content_length() {
            Some(0) => BodyFraming::None,
            Some(n) => BodyFraming::Length(n),
            None => BodyFraming::Chunked,
        };
        let mut up = Upload::new(
            (framing != BodyFraming::None).then(|| Box::new(req.body()) as Box<dyn Read>),
        );
        let mut tried: Vec<usize> = Vec::new();
        let mut labels: Vec<String> = Vec::new();
        let mut fresh_for: Option<usize> = None;
        let mut last: (u16, String) = (502, "every upstream is out (passive health check)".into());
        loop {
            let i = match fresh_for.take() {
                Some(i) => i,
                None => match self.ups.pick(&tried) {
                    Some(i) => i,
                    None => break,
                },
            };
            let label = self.ups.list[i].label.clone();
            let pooled = if tried.contains(&i) {
                None
            } else {
                self.ups.take_idle(i)
            };
            let mut conn = match pooled {
                Some(c) => c,
                None => match upstream::connect(&self.ups.list[i].addr, self.s.connect_timeout) {
                    Ok(sock) => Conn::new(sock, i),
                    Err(e) => {
                        // Nothing was sent: any request may go to the next.
                        let timeout = matches!(
                            e.kind(),
                            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                        );
                        let why = format!("connecting to {label}: {e}");
                        log::error!("{why}");
                        self.ups.failed(i, &why);
                        labels.push(label);
                        tried.push(i);
                        last = (if timeout { 504 } else { 502 }, why);
                        continue;
                    }
                },
            };
            let active = &self.ups.list[i].active;
            active.fetch_add(1, Ordering::Relaxed);
            match self.attempt(&mut conn, req, &mut up, framing) {
                Ok(h) => {
                    self.ups.ok(i);
                    labels.push(label);
                    note(req, &labels, h.status, t0.elapsed());
                    res.status(h.status);
                    for (n, v) in &h.headers {
                        res.header(n, v);
                    }
                    if h.status == 101 {
                        // WebSocket (or another upgrade): the core relays
                        // both ways from here, idle at most read_timeout.
                        active.fetch_sub(1, Ordering::Relaxed);
                        let (sock, rest) = conn.into_parts();
                        res.relay(sock, rest, self.s.read_timeout);
                        return Outcome::Done;
                    }
                    let finish = Finish {
                        ups: self.ups.clone(),
                        reusable: h.reusable,
                    };
                    let mut body = UpstreamBody::new(conn, h.framing, finish);
                    match h.framing {
                        response::Framing::Length(n)
                            if n <= SMALL_BODY && !body.is_done() && req.method() != "HEAD" =>
                        {
                            // Small: read now, on this pool thread, and
                            // answer from memory (no stream to pull later).
                            match read_small(&mut body, n as usize) {
                                Ok(v) => res.body(v),
                                Err(e) => {
                                    let why =
                                        format!("{}: reading the body: {e}", labels.join(", "));
                                    log::error!("{why}");
                                    return self.error(res, 502, &why);
                                }
                            };
                        }
                        _ => {
                            res.body(Body::Stream(Box::new(body)));
                        }
                    }
                    return Outcome::Done;
                }
                Err(f) => {
                    active.fetch_sub(1, Ordering::Relaxed);
                    drop(conn);
                    match f {
                        Fail::Stale if up.started && up.replay().is_none() => {
                            let why = format!(
                                "{label}: a pooled connection closed under a request whose body (over 64 KiB) cannot be sent again"
                            );
                            log::error!("{why}");
                            labels.push(label);
                            note(req, &labels, 502, t0.elapsed());
                            return self.error(res, 502, &why);
                        }
                        Fail::Stale => {
                            // Not the upstream's fault: a fresh connection
                            // to the same one, the body replayed.
                            log::debug!("{label}: a pooled connection was closed; a new one");
                            fresh_for = Some(i);
                            if !tried.contains(&i) {
                                tried.push(i);
                            }
                            continue;
                        }
                        Fail::Client(why) => {
                            log::info!("{} {}: the request body: {why}", req.method(), req.path());
                            return self.error(res, 400, &why);
                        }
                        Fail::Timeout(why) => {
                            let why = format!("{label}: {why}");
                            log::error!("{why}");
                            self.ups.failed(i, &why);
                            labels.push(label);
                            note(req, &labels, 504, t0.elapsed());
                            return self.error(res, 504, &why);
                        }
                        Fail::Bad(why) => {
                            let why = format!("{label}: {why}");
                            log::error!("{why}");
                            self.ups.failed(i, &why);
                            labels.push(label);
                            note(req, &labels, 502, t0.elapsed());
                            return self.error(res, 502, &why);
                        }
                        Fail::Io(why) => {
                            let why = format!("{label}: {why}");
                            log::error!("{why}");
                            self.ups.failed(i, &why);
                            labels.push(label);
                            tried.push(i);
                            last = (502, why);
                            if !idempotent(req.method()) || up.started {
                                break;
                            }
                        }
                    }
                }
            }
        }
        if tried.is_empty() {
            log::error!("{} {}: {}", req.method(), req.path(), last.1);
        }
        note(req, &labels, last.0, t0.elapsed());
        self.error(res, last.0, &last.1)
    }
}

/// The exchange's notes, as nginx's `$upstream_addr`, `$upstream_status`
/// and `$upstream_response_time` (seconds to the response head).
fn note(req: &Request, labels: &[String], status: u16, took: Duration) {
    match labels {
        [] => {}
        [one] => {
            req.note("upstream_addr", one);
        }
        _ => {
            req.note("upstream_addr", &labels.join(", "));
        }
    }
    req.note("upstream_status", &status.to_string());
    req.note(
        "upstream_response_time",
        &format!("{:.3}", took.as_secs_f64()),
    );
}

tamada_sdk::export_plugin!(
    name: "proxy",
    new: new,
    roles: [Handler],
    schema: |_| tamada_sdk::schema::of::<config::Config>(),
);
