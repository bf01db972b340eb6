//! One FastCGI request as a machine over the gateway's [`Upstream`]
//! (`plugins/gateway/src/exchange.rs`): take an idle connection (with
//! `keepalive`) or connect, send BEGIN_REQUEST, PARAMS and STDIN while
//! keeping what the application writes meanwhile, read STDOUT up to the
//! end of the CGI header block, then the body: answered from memory when
//! it ends within [`SMALL_BODY`], else a stream the core pulls. The same
//! machine runs on the event loop (each wait a [`Request::wait`], SDK 1.1)
//! for a body in memory, and on the pool for the rest (each wait a
//! `poll`).

use crate::source::{FcgiSource, MemBody, ReadBody, StdinBody};
use crate::{FastCgi, FcgiBody, LogCtx, gateway_page, note, page, read_record, record};
use std::io;
use std::time::{Duration, Instant};
use tamada_gateway::SMALL_BODY;
use tamada_gateway::cgi_headers::{self, MAX_HEAD, Reply, Scan};
use tamada_gateway::conn::idempotent;
use tamada_gateway::exchange::{self as ex, Early, Interest, Source, Timeouts, Upstream};
use tamada_gateway::upload::Upload;
use tamada_sdk::Woke;
use tamada_sdk::prelude::*;

enum Stage {
    /// Connecting and sending.
    Sending(Upstream),
    /// Reading STDOUT up to the end of the header block.
    Head(Upstream),
    /// Reading the rest of a response to answer from memory.
    Body(Upstream, cgi_headers::Headers),
    /// Between attempts.
    None,
}

/// A request's state, between calls on the loop or through waits on the
/// pool.
pub struct Call<B: StdinBody> {
    stage: Stage,
    /// BEGIN_REQUEST, PARAMS, then STDIN.
    source: FcgiSource<B>,
    /// STDOUT so far.
    stdout: Vec<u8>,
    /// Where the header block ended in `stdout`.
    body_at: usize,
    /// A record came (a failure is then not a closed pooled connection).
    any: bool,
    /// The next connection is a new one (a pooled one was found closed).
    fresh: bool,
    /// When a read must have brought something.
    until: Instant,
    log: LogCtx,
    t0: Instant,
}

impl<B: StdinBody> Call<B> {
    fn up(&self) -> Option<&Upstream> {
        match &self.stage {
            Stage::Sending(u) | Stage::Head(u) | Stage::Body(u, _) => Some(u),
            Stage::None => None,
        }
    }
    fn fd(&self) -> i32 {
        self.up().map_or(-1, Upstream::fd)
    }
    fn until(&self) -> Instant {
        match &self.stage {
            Stage::Sending(u) => u.until,
            _ => self.until,
        }
    }
    /// On the pool: waits for the socket; false when the time ran out.
    fn block(&self, i: Interest) -> bool {
        match self.up() {
            Some(u) => ex::ready_by(&u.conn.sock, i, self.until()),
            None => true,
        }
    }
}

enum Step {
    Wait(Interest),
    Done(Outcome),
    /// A pooled connection the server had closed: again on a new one.
    Stale,
}

impl FastCgi {
    fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: self.s.connect_timeout,
            send: self.s.send_timeout,
            read: self.s.read_timeout,
        }
    }

    /// `handle` on the event loop: as far as the socket allows, then a
    /// wait with the call as its state.
    pub(crate) fn handle_inline(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
        let mut call = match req.resume::<Call<MemBody>>() {
            Some(c) => c,
            None => {
                use std::io::Read;
                // In memory (an inline call has it whole).
                let mut body = Vec::new();
                if req.content_length() != Some(0)
                    && let Err(e) = req.body().read_to_end(&mut body)
                {
                    return self.unreadable(req, res, &e.to_string());
                }
                let len = (!body.is_empty()).then_some(body.len() as u64);
                match self.new_call(req, res, MemBody(body, false), len) {
                    Ok(c) => c,
                    Err(o) => return o,
                }
            }
        };
        let timed_out = req.woke() == Woke::TimedOut;
        match self.drive(&mut call, req, res, timed_out, false) {
            Err(i) => {
                let fd = call.fd();
                let left = call
                    .until()
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                req.wait(fd, i, left, call)
            }
            Ok(o) => o,
        }
    }

    /// `handle` on the pool: the same machine, each wait a `poll`.
    pub(crate) fn handle_blocking(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
        use std::io::Read;
        let (reader, len): (Option<Box<dyn Read>>, Option<u64>) = match req.content_length() {
            Some(0) => (None, None),
            Some(n) => (Some(Box::new(req.body())), Some(n)),
            None => {
                // A body streamed to this route (`request_buffering:
                // false`) and chunked: CONTENT_LENGTH must be known (PHP
                // parses forms by it), so it is spooled first.
                let mut spool = tamada_gateway::spool::Spool::new(self.s.spool_threshold);
                if let Err(e) = spool.fill_from(&mut req.body()) {
                    return self.unreadable(req, res, &e.to_string());
                }
                let n = spool.len();
                match spool.into_reader() {
                    Ok(r) if n > 0 => (Some(Box::new(r)), Some(n)),
                    Ok(_) => (None, Some(0)),
                    Err(e) => return Outcome::Error(format!("spooling the request body: {e}")),
                }
            }
        };
        let body = ReadBody(Upload::new(reader));
        let mut call = match self.new_call(req, res, body, len) {
            Ok(c) => c,
            Err(o) => return o,
        };
        let mut timed_out = false;
        loop {
            match self.drive(&mut call, req, res, timed_out, true) {
                Err(i) => timed_out = !call.block(i),
                Ok(o) => return o,
            }
        }
    }

    fn unreadable(&self, req: &Request, res: &mut ResponseBuilder, why: &str) -> Outcome {
        tamada_sdk::record_for(
            req.vhost().name(),
            Some(req.peer_addr()),
            log::Level::Warn,
            &format!("fastcgi:{}", self.label),
            &format!("request body could not be read: {why}"),
        );
        page(res, 400, "the request body could not be read")
    }

    fn new_call<B: StdinBody>(
        &self,
        req: &Request,
        res: &mut ResponseBuilder,
        body: B,
        content_length: Option<u64>,
    ) -> Result<Call<B>, Outcome> {
        let (root, mapped) = self.locate(req.path());
        let script = match mapped {
            crate::map::Mapped::Run(s) => s,
            crate::map::Mapped::Decline => return Err(Outcome::Decline),
            crate::map::Mapped::NotFound => return Err(page(res, 404, "Not Found")),
        };
        let log = LogCtx {
            vhost: req.vhost().name().to_owned(),
            peer: req.peer_addr(),
            source: format!("fastcgi:{}", self.label),
        };
        Ok(Call {
            stage: Stage::None,
            source: FcgiSource {
                pre: self.request_head(req, &script, &root, content_length),
                pre_given: false,
                body,
                ended: false,
            },
            stdout: Vec::new(),
            body_at: 0,
            any: false,
            fresh: false,
            until: Instant::now(),
            log,
            t0: Instant::now(),
        })
    }

    /// Runs the machine: `Err` to wait for the socket, `Ok` the answer.
    fn drive<B: StdinBody>(
        &self,
        call: &mut Call<B>,
        req: &Request,
        res: &mut ResponseBuilder,
        mut timed_out: bool,
        blocking: bool,
    ) -> Result<Outcome, Interest> {
        loop {
            if matches!(call.stage, Stage::None)
                && let Err(o) = self.connect(call, req, res, blocking)
            {
                return Ok(o);
            }
            match self.advance(call, req, res, timed_out) {
                Step::Wait(i) => return Err(i),
                Step::Done(o) => return Ok(o),
                Step::Stale => {
                    call.stage = Stage::None;
                    call.fresh = true;
                    call.stdout.clear();
                    call.any = false;
                    timed_out = false;
                    if !call.source.rewind() {
                        let why = format!(
                            "{}: a pooled connection closed under a request whose body (over 64 KiB) cannot be sent again",
                            self.label
                        );
                        call.log.record(log::Level::Error, &why);
                        note(req, &self.label, 502, call.t0.elapsed());
                        return Ok(gateway_page(res, 502));
                    }
                }
            }
        }
    }

    /// An exchange on a pooled connection, or on a new one.
    fn connect<B: StdinBody>(
        &self,
        call: &mut Call<B>,
        req: &Request,
        res: &mut ResponseBuilder,
        blocking: bool,
    ) -> Result<(), Outcome> {
        let mut pooled = if call.fresh { None } else { self.pool.take() };
        let deadline = Instant::now() + self.s.connect_timeout.min(Duration::from_secs(2));
        loop {
            match Upstream::start(
                &self.s.address,
                pooled.take(),
                0,
                Early::Keep,
                self.timeouts(),
                None,
            ) {
                Ok(up) => {
                    call.stage = Stage::Sending(up);
                    return Ok(());
                }
                // A unix listener with a full backlog: the loop's path goes
                // to the pool, which tries again every 10 ms for a while.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !blocking => {
                    return Err(req.defer());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    call.log.record(
                        log::Level::Error,
                        &format!("connecting to {}: {e}", self.label),
                    );
                    note(req, &self.label, 502, call.t0.elapsed());
                    return Err(gateway_page(res, 502));
                }
            }
        }
    }

    /// Gives up: the error log says `why` (after the server's address),
    /// the client gets `code`.
    fn fail<B: StdinBody>(
        &self,
        call: &Call<B>,
        req: &Request,
        res: &mut ResponseBuilder,
        code: u16,
        why: &str,
    ) -> Step {
        self.fail_logged(call, req, res, code, &format!("{}: {why}", self.label))
    }

    /// [`fail`](Self::fail) with the whole error log line given.
    fn fail_logged<B: StdinBody>(
        &self,
        call: &Call<B>,
        req: &Request,
        res: &mut ResponseBuilder,
        code: u16,
        line: &str,
    ) -> Step {
        call.log.record(log::Level::Error, line);
        note(req, &self.label, code, call.t0.elapsed());
        Step::Done(gateway_page(res, code))
    }

    fn advance<B: StdinBody>(
        &self,
        call: &mut Call<B>,
        req: &Request,
        res: &mut ResponseBuilder,
        timed_out: bool,
    ) -> Step {
        loop {
            match std::mem::replace(&mut call.stage, Stage::None) {
                Stage::None => return self.fail(call, req, res, 502, "no connection"),
                Stage::Sending(mut up) => match up.send(&mut call.source, timed_out) {
                    ex::Step::Wait(i) => {
                        call.stage = Stage::Sending(up);
                        return Step::Wait(i);
                    }
                    s @ (ex::Step::Sent | ex::Step::Answered) => {
                        call.until = Instant::now() + self.s.read_timeout;
                        let wait = matches!(s, ex::Step::Sent) && up.conn.buffered().is_empty();
                        call.stage = Stage::Head(up);
                        if wait {
                            // PERF: the answer cannot be here yet: no read
                            // is tried before the wait (one recv saved).
                            return Step::Wait(Interest::Read);
                        }
                    }
                    ex::Step::Failed(f) => {
                        call.stage = Stage::None;
                        return match f {
                            ex::Fail::Stale => Step::Stale,
                            ex::Fail::ConnectTimeout => {
                                let why = format!(
                                    "connecting to {}: timed out after {:?} (connect_timeout)",
                                    self.label, self.s.connect_timeout
                                );
                                self.fail_logged(call, req, res, 504, &why)
                            }
                            ex::Fail::Connect(e) => {
                                let why = format!("connecting to {}: {e}", self.label);
                                self.fail_logged(call, req, res, 502, &why)
                            }
                            ex::Fail::SendTimeout => {
                                let why = format!(
                                    "the server took no request for {:?} (send_timeout)",
                                    self.s.send_timeout
                                );
                                self.fail(call, req, res, 504, &why)
                            }
                            ex::Fail::Io(e) => {
                                let why = format!("sending the request: {e}");
                                self.fail(call, req, res, 502, &why)
                            }
                            ex::Fail::Source(e) => {
                                Step::Done(self.unreadable(req, res, &e.to_string()))
                            }
                        };
                    }
                },
                stage => {
                    let (mut up, headers) = match stage {
                        Stage::Head(u) => (u, None),
                        Stage::Body(u, h) => (u, Some(h)),
                        // Matched above.
                        Stage::None | Stage::Sending(_) => return Step::Wait(Interest::Read),
                    };
                    if timed_out {
                        let why = format!(
                            "no response within {:?} (read_timeout)",
                            self.s.read_timeout
                        );
                        return self.fail(call, req, res, 504, &why);
                    }
                    let rec = match read_record(&mut up.conn) {
                        Ok(r) => r,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            call.until = Instant::now() + self.s.read_timeout;
                            call.stage = match headers {
                                None => Stage::Head(up),
                                Some(h) => Stage::Body(up, h),
                            };
                            return Step::Wait(Interest::Read);
                        }
                        Err(_) if !call.any && up.conn.reused && idempotent(req.method()) => {
                            return Step::Stale;
                        }
                        Err(e) => {
                            let why = format!("reading the response: {e}");
                            return self.fail(call, req, res, 502, &why);
                        }
                    };
                    let Some((ty, content)) = rec else {
                        if !call.any && up.conn.reused && idempotent(req.method()) {
                            return Step::Stale;
                        }
                        return self.fail(
                            call,
                            req,
                            res,
                            502,
                            "the server closed the connection before the response ended",
                        );
                    };
                    call.any = true;
                    let mut headers = headers;
                    match ty {
                        record::STDOUT => {
                            call.stdout.extend_from_slice(&content);
                            if headers.is_none() {
                                match cgi_headers::scan(&call.stdout) {
                                    Scan::Done(h, n) => {
                                        call.body_at = n;
                                        headers = Some(h);
                                    }
                                    Scan::Bad(why) => {
                                        let why = format!("a bad header block: {why}");
                                        return self.fail(call, req, res, 502, &why);
                                    }
                                    Scan::Incomplete if call.stdout.len() > MAX_HEAD => {
                                        let why = format!("a header block over {MAX_HEAD} bytes");
                                        return self.fail(call, req, res, 502, &why);
                                    }
                                    Scan::Incomplete => {}
                                }
                            }
                            if let Some(h) = headers.take() {
                                if call.stdout.len() - call.body_at > SMALL_BODY {
                                    return self.answer(call, req, res, up, h, false);
                                }
                                headers = Some(h);
                            }
                        }
                        record::STDERR => call.log.stderr(&content),
                        record::END_REQUEST => {
                            if let Some(h) = headers {
                                return self.answer(call, req, res, up, h, true);
                            }
                            let status = content.get(4).copied().unwrap_or(0);
                            let why = format!(
                                "the request ended ({}) {}",
                                record::protocol_status(status),
                                if call.stdout.is_empty() {
                                    "with no output"
                                } else {
                                    "inside the header block"
                                }
                            );
                            let code = if status == 2 { 503 } else { 502 };
                            return self.fail(call, req, res, code, &why);
                        }
                        _ => {}
                    }
                    call.stage = match headers {
                        None => Stage::Head(up),
                        Some(h) => Stage::Body(up, h),
                    };
                }
            }
        }
    }

    /// The answer once the header block is in: from memory when the
    /// response `ended`, else the rest streams (pulled on the pool).
    fn answer<B: StdinBody>(
        &self,
        call: &mut Call<B>,
        req: &Request,
        res: &mut ResponseBuilder,
        up: Upstream,
        headers: cgi_headers::Headers,
        ended: bool,
    ) -> Step {
        let rest = call.stdout.split_off(call.body_at);
        // A request not all sent (the server answered first) leaves the
        // connection in no state to serve another.
        let reusable = up.all_sent();
        let mut conn = Some(up.conn).filter(|_| reusable || !ended);
        match cgi_headers::interpret(headers) {
            Reply::Bad(why) => {
                let why = format!("bad response: {why}");
                self.fail(call, req, res, 502, &why)
            }
            Reply::Local(location) => {
                note(req, &self.label, 200, call.t0.elapsed());
                // The rest of a response not ended is not wanted: the
                // connection is closed rather than drained.
                if ended && let Some(c) = conn {
                    self.pool.put(c);
                }
                Step::Done(Outcome::Redirect(location))
            }
            Reply::Respond(status, hs) => {
                note(req, &self.label, status, call.t0.elapsed());
                res.status(status);
                for (n, v) in &hs {
                    res.header(n, v);
                }
                if ended {
                    if let Some(c) = conn {
                        self.pool.put(c);
                    }
                    res.body(rest);
                    return Step::Done(Outcome::Done);
                }
                if let Some(c) = conn.as_mut()
                    && let Err(e) = c.set_mode(false, self.s.read_timeout, self.s.send_timeout)
                {
                    let why = format!("setting up the connection: {e}");
                    return self.fail(call, req, res, 502, &why);
                }
                res.body(Body::Stream(Box::new(FcgiBody {
                    conn,
                    pending: rest,
                    pos: 0,
                    reusable,
                    pool: self.pool.clone(),
                    log: call.log.clone(),
                })));
                Step::Done(Outcome::Done)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::record;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use tamada_sdk::testing::TestRequest;

    /// A FastCGI server that reads a request's records up to the end of
    /// STDIN, then writes STDOUT (with the STDIN it got after `{stdin}`),
    /// a line of STDERR and END_REQUEST.
    fn server(stdout: &'static str) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let mut got = Vec::new();
                let mut stdin = Vec::new();
                let mut b = [0u8; 4096];
                'read: loop {
                    while let Ok(Some((h, whole))) = record::split(&got) {
                        if h.ty == record::STDIN {
                            if h.len == 0 {
                                got.drain(..whole);
                                break 'read;
                            }
                            stdin.extend_from_slice(&got[8..8 + h.len]);
                        }
                        got.drain(..whole);
                    }
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&b[..n]),
                    }
                }
                let text = stdout.replace("{stdin}", &String::from_utf8_lossy(&stdin));
                let mut out = Vec::new();
                record::push_stream(&mut out, record::STDOUT, text.as_bytes());
                record::push(&mut out, record::STDERR, b"a notice\n");
                record::push(&mut out, record::END_REQUEST, &[0; 8]);
                let _ = s.write_all(&out);
            }
        });
        port
    }

    #[test]
    fn a_script_answers_on_the_loop_and_on_the_pool() {
        let port = server("Status: 201 Created\r\nContent-Type: text/plain\r\n\r\ngot {stdin}");
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("a.php"), "<?php").unwrap();
        let req = TestRequest::new("POST", "/a.php")
            .body("form=1")
            .document_root(root.path().to_str().unwrap());
        let h = crate::new(&req.options(&format!("{{ address: \"127.0.0.1:{port}\" }}"))).unwrap();
        for mut out in [req.run_waiting(&h), req.run(&h)] {
            assert_eq!(out.response.get_status(), 201);
            assert_eq!(out.read_body(), b"got form=1");
        }
    }

    #[test]
    fn a_server_that_is_not_there_is_a_502() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("a.php"), "<?php").unwrap();
        let req = TestRequest::get("/a.php").document_root(root.path().to_str().unwrap());
        let h = crate::new(&req.options(&format!("{{ address: \"127.0.0.1:{port}\" }}"))).unwrap();
        assert_eq!(req.run_waiting(&h).response.get_status(), 502);
        assert_eq!(req.run(&h).response.get_status(), 502);
    }
}
