//! FastCGI on the event loop (SDK 1.1 [`Request::wait`]): the exchange of
//! the blocking path in `lib.rs` as a state machine over a non-blocking
//! socket. Each call goes as far as the socket allows, then answers "wait
//! for this socket" with the [`Call`] as its state. Taken here: requests
//! whose body is in memory (the core runs an inline handler only then).
//! STDOUT up to the end of the header block is read here, and the whole
//! response when it is at most [`SMALL_BODY`](crate::SMALL_BODY); a
//! longer one becomes a stream the core pulls on its pool.

use crate::{FastCgi, FcgiBody, LogCtx, SMALL_BODY, gateway_page, note, page, read_record, record};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use tamada_gateway::cgi_headers::{self, MAX_HEAD, Reply, Scan};
use tamada_gateway::conn::{Conn, connect_result, connect_start, idempotent};
use tamada_sdk::prelude::*;
use tamada_sdk::{Interest, Woke};

enum Stage {
    Connecting,
    Sending,
    /// Reading STDOUT up to the end of the header block.
    Head,
    /// Reading the rest of a response to answer from memory.
    Body(cgi_headers::Headers),
}

/// A request's state between calls.
pub struct Call {
    conn: Option<Conn>,
    stage: Stage,
    /// BEGIN_REQUEST, PARAMS and STDIN, as they go.
    out: Vec<u8>,
    sent: usize,
    /// STDOUT so far.
    stdout: Vec<u8>,
    /// Where the header block ended in `stdout`.
    body_at: usize,
    /// A record came (a failure is then not a closed pooled connection).
    any: bool,
    /// The next connection is a new one (a pooled one was found closed).
    fresh: bool,
    until: Instant,
    log: LogCtx,
    t0: Instant,
}

enum Step {
    Wait(Interest),
    Done(Outcome),
    /// A pooled connection the server had closed: again on a new one.
    Stale,
}

impl FastCgi {
    /// `handle` for an inline call that may wait.
    pub(crate) fn handle_inline(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
        let mut call = match req.resume::<Call>() {
            Some(c) => c,
            None => match self.new_call(req, res) {
                Ok(c) => c,
                Err(o) => return o,
            },
        };
        let mut timed_out = req.woke() == Woke::TimedOut;
        loop {
            if call.conn.is_none()
                && let Err(o) = self.connect(&mut call, req, res)
            {
                return o;
            }
            match self.advance(&mut call, req, res, timed_out) {
                Step::Wait(interest) => {
                    let fd = call.conn.as_ref().map_or(-1, |c| c.sock.as_raw_fd());
                    let left = call
                        .until
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1));
                    return req.wait(fd, interest, left, call);
                }
                Step::Done(o) => return o,
                Step::Stale => {
                    call.conn = None;
                    call.fresh = true;
                    call.sent = 0;
                    call.stdout.clear();
                    call.any = false;
                    timed_out = false;
                }
            }
        }
    }

    fn new_call(&self, req: &Request, res: &mut ResponseBuilder) -> Result<Call, Outcome> {
        use std::io::Read;
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
        // In memory (an inline call has it whole).
        let mut body = Vec::new();
        let content_length = match req.content_length() {
            Some(0) => None,
            _ => {
                if let Err(e) = req.body().read_to_end(&mut body) {
                    log.record(
                        log::Level::Warn,
                        &format!("request body could not be read: {e}"),
                    );
                    return Err(page(res, 400, "the request body could not be read"));
                }
                Some(body.len() as u64)
            }
        };
        let mut out = self.request_head(req, &script, &root, content_length);
        for piece in body.chunks(32 * 1024) {
            record::push_stream(&mut out, record::STDIN, piece);
        }
        record::push_stream(&mut out, record::STDIN, &[]);
        Ok(Call {
            conn: None,
            stage: Stage::Connecting,
            out,
            sent: 0,
            stdout: Vec::new(),
            body_at: 0,
            any: false,
            fresh: false,
            until: Instant::now(),
            log,
            t0: Instant::now(),
        })
    }

    /// A pooled connection, or a connect started.
    fn connect(
        &self,
        call: &mut Call,
        req: &Request,
        res: &mut ResponseBuilder,
    ) -> Result<(), Outcome> {
        if !call.fresh
            && let Some(mut c) = self.pool.take()
            && c.set_mode(true, self.s.read_timeout, self.s.send_timeout)
                .is_ok()
        {
            call.conn = Some(c);
            call.stage = Stage::Sending;
            call.until = Instant::now() + self.s.send_timeout;
            return Ok(());
        }
        match connect_start(&self.s.address) {
            Ok((sock, done)) => {
                let mut c = Conn::new(sock, 0);
                c.nonblocking = true;
                call.conn = Some(c);
                if done {
                    call.stage = Stage::Sending;
                    call.until = Instant::now() + self.s.send_timeout;
                } else {
                    call.stage = Stage::Connecting;
                    call.until = Instant::now() + self.s.connect_timeout;
                }
                Ok(())
            }
            // A unix listener with a full backlog: the pool's path waits a
            // little for room.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(req.defer()),
            Err(e) => {
                call.log.record(
                    log::Level::Error,
                    &format!("connecting to {}: {e}", self.label),
                );
                note(req, &self.label, 502, call.t0.elapsed());
                Err(gateway_page(res, 502))
            }
        }
    }

    /// Gives up: the error log says `why` (after the server's address),
    /// the client gets `code`.
    fn fail(
        &self,
        call: &Call,
        req: &Request,
        res: &mut ResponseBuilder,
        code: u16,
        why: &str,
    ) -> Step {
        self.fail_logged(call, req, res, code, &format!("{}: {why}", self.label))
    }

    /// [`fail`](Self::fail) with the whole error log line given.
    fn fail_logged(
        &self,
        call: &Call,
        req: &Request,
        res: &mut ResponseBuilder,
        code: u16,
        line: &str,
    ) -> Step {
        call.log.record(log::Level::Error, line);
        note(req, &self.label, code, call.t0.elapsed());
        Step::Done(gateway_page(res, code))
    }

    fn advance(
        &self,
        call: &mut Call,
        req: &Request,
        res: &mut ResponseBuilder,
        timed_out: bool,
    ) -> Step {
        loop {
            let Some(c) = call.conn.as_mut() else {
                return self.fail(call, req, res, 502, "no connection");
            };
            match call.stage {
                Stage::Connecting => {
                    if timed_out {
                        let why = format!(
                            "connecting to {}: timed out after {:?} (connect_timeout)",
                            self.label, self.s.connect_timeout
                        );
                        return self.fail_logged(call, req, res, 504, &why);
                    }
                    match connect_result(&c.sock) {
                        Ok(()) => {
                            call.stage = Stage::Sending;
                            call.until = Instant::now() + self.s.send_timeout;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            return Step::Wait(Interest::Write);
                        }
                        Err(e) => {
                            let why = format!("connecting to {}: {e}", self.label);
                            return self.fail_logged(call, req, res, 502, &why);
                        }
                    }
                }
                Stage::Sending => {
                    if timed_out {
                        let why = format!(
                            "the server took no request for {:?} (send_timeout)",
                            self.s.send_timeout
                        );
                        return self.fail(call, req, res, 504, &why);
                    }
                    if call.sent > 0 {
                        // Woken while sending: an application may answer
                        // before it has read all its input; what it says
                        // is kept.
                        match c.fill() {
                            Ok(0) => {
                                if c.reused && !call.any {
                                    return Step::Stale;
                                }
                                return self.fail(
                                    call,
                                    req,
                                    res,
                                    502,
                                    "the server closed the connection while the request was sent",
                                );
                            }
                            Ok(_) => {
                                if c.buffered().len() > 1 << 20 {
                                    call.stage = Stage::Head;
                                    continue;
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) => {
                                if c.reused && !call.any {
                                    return Step::Stale;
                                }
                                let why = format!("sending the request: {e}");
                                return self.fail(call, req, res, 502, &why);
                            }
                        }
                    }
                    while call.sent < call.out.len() {
                        match c.sock.write(&call.out[call.sent..]) {
                            Ok(n) => call.sent += n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                call.until = Instant::now() + self.s.send_timeout;
                                return Step::Wait(Interest::Both);
                            }
                            Err(e) => {
                                if c.reused {
                                    return Step::Stale;
                                }
                                let why = format!("sending the request: {e}");
                                return self.fail(call, req, res, 502, &why);
                            }
                        }
                    }
                    call.stage = Stage::Head;
                    call.until = Instant::now() + self.s.read_timeout;
                    if c.buffered().is_empty() {
                        // The answer cannot be here yet.
                        return Step::Wait(Interest::Read);
                    }
                }
                Stage::Head | Stage::Body(_) => {
                    if timed_out {
                        let why = format!(
                            "no response within {:?} (read_timeout)",
                            self.s.read_timeout
                        );
                        return self.fail(call, req, res, 504, &why);
                    }
                    let rec = match read_record(c) {
                        Ok(r) => r,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            call.until = Instant::now() + self.s.read_timeout;
                            return Step::Wait(Interest::Read);
                        }
                        Err(_) if !call.any && c.reused && idempotent(req.method()) => {
                            return Step::Stale;
                        }
                        Err(e) => {
                            let why = format!("reading the response: {e}");
                            return self.fail(call, req, res, 502, &why);
                        }
                    };
                    let Some((ty, content)) = rec else {
                        if !call.any && c.reused && idempotent(req.method()) {
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
                    match ty {
                        record::STDOUT => {
                            call.stdout.extend_from_slice(&content);
                            if matches!(call.stage, Stage::Head) {
                                match cgi_headers::scan(&call.stdout) {
                                    Scan::Done(headers, n) => {
                                        call.body_at = n;
                                        call.stage = Stage::Body(headers);
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
                            if let Stage::Body(_) = call.stage
                                && call.stdout.len() - call.body_at > SMALL_BODY
                            {
                                return self.answer(call, req, res, false);
                            }
                        }
                        record::STDERR => call.log.stderr(&content),
                        record::END_REQUEST => {
                            if let Stage::Body(_) = call.stage {
                                return self.answer(call, req, res, true);
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
                }
            }
        }
    }

    /// The answer once the header block is in: from memory when the
    /// response `ended`, else the rest streams (pulled on the pool).
    fn answer(
        &self,
        call: &mut Call,
        req: &Request,
        res: &mut ResponseBuilder,
        ended: bool,
    ) -> Step {
        let Stage::Body(headers) = std::mem::replace(&mut call.stage, Stage::Head) else {
            return self.fail(call, req, res, 502, "no header block");
        };
        let rest = call.stdout.split_off(call.body_at);
        // A request not all sent (the server answered first) leaves the
        // connection in no state to serve another.
        let reusable = call.sent == call.out.len();
        let mut conn = call.conn.take().filter(|_| reusable || !ended);
        match cgi_headers::interpret(headers) {
            Reply::Bad(why) => {
                let why = format!("bad response: {why}");
                self.fail(call, req, res, 502, &why)
            }
            Reply::Local(location) => {
                note(req, &self.label, 200, call.t0.elapsed());
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
