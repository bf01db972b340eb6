//! Request bodies on an HTTP/1.1 connection: collected whole by the loop
//! before the request runs (`Collect`, `request_buffering`), or fed as
//! they come to a pool handler's pipe (`feed`, a streaming route).

use super::body::BodyState;
use super::sock::Read;
use super::{Conn, Flow, Reply, State, head, log_given_up};
use crate::config::Settings;
use crate::exchange::Exchange;
use crate::exchange::body::{Spool, SpoolError};
use crate::net::cx::Cx;
use crate::plugins::host;
use crate::transport::Transport;
use std::time::{Duration, Instant};

/// A request whose body is being collected.
pub(super) struct Collect {
    pub x: Box<Exchange>,
    pub state: BodyState,
    pub reply: Reply,
    /// The body so far.
    pub body: Spool,
    /// When the body started (`body_min_rate` counts from here).
    pub started: Instant,
    /// When body bytes last came (`body_timeout` counts from here).
    pub last: Instant,
}

impl Collect {
    /// When the collection is up: a stall of `body_timeout`, or (past the
    /// first `body_timeout`) an average below `body_min_rate`.
    pub fn deadline(&self, s: &Settings, buffered: usize) -> Instant {
        let stall = self.last + s.body_timeout.0;
        match s.body_min_rate.0 {
            0 => stall,
            // SECURITY: a byte now and then keeps the stall timer from
            // firing; the average rate after the first `body_timeout` must
            // be `body_min_rate` (Apache's `MinRate`): each byte buys
            // 1/rate seconds more.
            rate => {
                let got = self.state.wire_bytes + buffered as u64;
                let extra = Duration::from_secs_f64(got as f64 / rate as f64);
                stall.min(self.started + s.body_timeout.0 + extra)
            }
        }
    }
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

impl<T: Transport> Conn<T> {
    /// The collect state's turn: read what the socket has; a whole body
    /// runs its request.
    pub(super) fn collect_step(&mut self, cx: &mut Cx<'_>) -> Flow {
        match self.collect(cx) {
            Collected::Whole => {
                self.run_collected(cx);
                Flow::Again
            }
            Collected::Gone => {
                // What was answered before still goes out, then the
                // connection closes.
                if let State::Collect(c) = std::mem::replace(&mut self.state, State::Head) {
                    self.give_up_collect(
                        *c,
                        "the client closed the connection before the body ended",
                    );
                }
                self.closing.after = true;
                Flow::Again
            }
            Collected::Failed(status, why) => {
                self.collect_failed(status, &why);
                Flow::Again
            }
            // On to writing what is queued, then wait.
            Collected::Waiting => Flow::Idle,
        }
    }

    /// Reads a body being collected as far as the socket allows.
    fn collect(&mut self, cx: &Cx<'_>) -> Collected {
        let s = cx.settings();
        let dir = s.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
        let max_spool = s.max_spool.0;
        let mut scratch = [0u8; 16 * 1024];
        loop {
            let State::Collect(c) = &mut self.state else {
                return Collected::Waiting;
            };
            while !c.state.done && !self.buf.is_empty() {
                match c.state.take(self.buf.data(), &mut scratch) {
                    Ok((0, 0)) => break,
                    Ok((used, made)) => {
                        self.buf.consume(used);
                        match c.body.push(&scratch[..made], &dir, max_spool) {
                            Ok(()) => {}
                            Err(SpoolError::Full(max)) => {
                                return Collected::Failed(
                                    503,
                                    format!(
                                        "request bodies spooled to disk reached max_spool ({max} bytes)"
                                    ),
                                );
                            }
                            Err(SpoolError::Io(e)) => {
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
            if self.sock.read_eof {
                return Collected::Gone;
            }
            if !self.sock.readable {
                return Collected::Waiting;
            }
            match self.sock.read(&mut self.buf) {
                Read::Eof => return Collected::Gone,
                Read::Data => c.last = crate::clock::now(),
                Read::Blocked => return Collected::Waiting,
            }
        }
    }

    /// Gives up a request whose body was being collected: logged 400 (as
    /// nginx logs a client that left mid-body).
    pub(super) fn give_up_collect(&mut self, c: Collect, why: &str) {
        let mut x = c.x;
        x.bytes_received += c.state.wire_bytes + self.buf.data().len() as u64;
        self.buf.consume(self.buf.data().len());
        log_given_up(x, 400, why);
    }

    /// A body being collected stalled for `body_timeout`, or came slower
    /// than `body_min_rate`: 408, and the connection closes (RFC 9110
    /// 15.5.9).
    pub(super) fn collect_timed_out(&mut self, cx: &Cx<'_>) {
        let State::Collect(c) = &self.state else {
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
    fn collect_failed(&mut self, status: u16, why: &str) {
        let State::Collect(c) = std::mem::replace(&mut self.state, State::Head) else {
            return;
        };
        let Collect {
            mut x,
            reply,
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
        self.closing.linger = true;
        let resp = if status == 503 {
            head::simple_with(
                503,
                reply.minor,
                reply.head_only,
                true,
                &[("Retry-After", b"5")],
            )
        } else {
            head::simple(status, reply.minor, reply.head_only, true)
        };
        self.queue(resp, Some(x));
    }

    /// Feeds the pipe of a body the pool reads (a client gone fails the
    /// pipe: the handler's read says so).
    pub(super) fn feed(&mut self) {
        let State::Pool(w) = &mut self.state else {
            return;
        };
        let Some((state, pipe)) = &mut w.feed else {
            return;
        };
        loop {
            if state.done || state.broken {
                return;
            }
            let f = pipe.feed();
            if f.send_continue {
                state.continue_pending = false;
                self.out.push_raw(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            if f.room == 0 {
                return;
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
                            return;
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
            if !self.sock.readable {
                return;
            }
            match self.sock.read(&mut self.buf) {
                Read::Eof => {
                    state.broken = true;
                    pipe.fail("the client closed the connection before the body ended".into());
                    return;
                }
                Read::Data => {}
                Read::Blocked => return,
            }
        }
    }
}
