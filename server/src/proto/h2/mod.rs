//! HTTP/2 on one connection (RFC 9113): hyperium's `h2` crate, driven
//! from the event loop over in-memory I/O (`wire.rs`), with each stream
//! running the same request exchange HTTP/1.1 runs (`exchange/run.rs`).
//!
//! ```text
//!   socket --read--> Wire.inb --h2--> streams (accept) --+
//!                                                        | per stream:
//!   Collect (DATA frames, spooled) -> run (loop) | Parked | Pool (capped)
//!                                                        v
//!   Send: h2 SendStream, DATA as the windows allow, from bytes, a file
//!   (pread), segments or a pool-pulled stream; log phase at the end
//!   socket <--write-- Wire.out <--h2 frames--------------+
//! ```
//!
//! `drive` repeats read, poll the connection (new streams), step every
//! stream, poll again (frames encoded), write, until nothing moves. `h2`
//! never spawns and needs no timer; every timeout is the connection's own
//! (`timed_out`). Design notes: `docs/design/http2.md`.

pub mod head;
mod meter;
mod stream;
pub mod wire;

use crate::net::cx::Cx;
use crate::proto::h1::H2Parts;
use crate::proto::h1::Next;
use crate::transport::{Io, Transport};
use bytes::Bytes;
use h2::Reason;
use h2::server::{Connection, Handshake};
use slab::Slab;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use stream::{Phase, St};
use wire::{Flag, Wire};

/// Streams one connection may have open (`SETTINGS_MAX_CONCURRENT_STREAMS`).
pub const MAX_STREAMS: u32 = 128;
/// Passes of `drive` before the loop serves the others.
const PASSES: u32 = 16;
/// Client bytes buffered for `h2` before reading waits.
const IN_MAX: usize = 64 * 1024;
/// Streams a client may reset before their response is complete, less
/// one per completed response, before the connection is closed with
/// `ENHANCE_YOUR_CALM` (rapid reset, CVE-2023-44487).
const RESET_BUDGET: u32 = 200;
/// How long the lingering close after the last frame reads and drops.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
/// A draining connection counts as idle (and gets its GOAWAY) once no
/// stream has been open for this long: between two requests of a busy
/// client there is often a moment with none.
const DRAIN_QUIET: std::time::Duration = std::time::Duration::from_millis(250);

enum ConnState<T> {
    Handshake(Pin<Box<Handshake<Wire<T>, Bytes>>>),
    Open(Box<Connection<Wire<T>, Bytes>>),
    /// The connection is over (GOAWAY sent or received, or an error).
    Gone,
}

pub struct H2Conn<T> {
    pub id: u64,
    pub bind: SocketAddr,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    proxy_ssl: bool,
    /// The client's socket and the bytes to and from `h2`.
    wire: Wire<T>,
    flag: Arc<Flag>,
    conn: ConnState<T>,
    streams: Slab<St>,
    /// The keys of `streams`, gathered per step (kept: no allocation).
    keys: Vec<usize>,
    /// What a read of the socket goes through (kept: not zeroed per read).
    scratch: Vec<u8>,
    /// Numbers the streams (tells a stream from a later one in its slot).
    next_sid: u64,
    /// Pool jobs of this connection not answered yet.
    on_pool: usize,
    /// Early client resets, less completed responses.
    resets: u32,
    /// A graceful shutdown (GOAWAY) was started.
    shutting: bool,
    /// The lingering close's end, once the connection is over.
    linger_until: Option<Instant>,
    /// The frame headers of the client's bytes, checked before `h2`.
    meter: meter::Meter,
    /// A connection error the meter found: sent as GOAWAY by `h2` once
    /// the bytes before it are taken; nothing more is read.
    refusal: Option<Reason>,
    /// `h2` was told to send it.
    refused: bool,
    /// The loop drains (seen on the last drive).
    draining: bool,
    started: Instant,
    idle_since: Instant,
    last_write: Instant,
    pub deadline: Option<Instant>,
}

/// `h2`'s settings: tamada's limits.
fn builder(cx: &Cx<'_>) -> h2::server::Builder {
    let s = cx.settings();
    let mut b = h2::server::Builder::new();
    b.max_concurrent_streams(MAX_STREAMS)
        // Uploads: a window large enough for fast links (the body is
        // spooled as it comes, so the window is not what bounds memory).
        .initial_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .max_header_list_size(s.max_header_size.0.min(u32::MAX as u64) as u32)
        .max_send_buffer_size(256 * 1024)
        .max_local_error_reset_streams(Some(256))
        .max_pending_accept_reset_streams(50);
    b
}

impl<T: Transport> H2Conn<T> {
    /// Readiness of the client's socket.
    pub fn event(&mut self, readable: bool, writable: bool, closed: bool) {
        self.wire.lock().sock.event(readable, writable, closed);
    }

    /// An HTTP/2 connection taking over an HTTP/1.1 one that found the
    /// client speaks HTTP/2 (its socket and the bytes it read: the
    /// preface, maybe more).
    pub fn new(parts: H2Parts<T>, cx: &Cx<'_>) -> Self {
        let H2Parts {
            sock,
            read,
            id,
            bind,
            local,
            peer,
            proxy_ssl,
        } = parts;
        let read = &read[..];
        let wire = Wire::new(sock);
        let mut meter = meter::Meter::default();
        let refusal = match meter.scan(read) {
            Ok(()) => {
                wire.lock().push_in(read);
                None
            }
            Err((code, before)) => {
                wire.lock().push_in(&read[..before]);
                Some(Reason::from(code))
            }
        };
        let hs = builder(cx).handshake::<Wire<T>, Bytes>(wire.clone());
        let now = crate::clock::now();
        H2Conn {
            id,
            bind,
            local,
            peer,
            proxy_ssl,
            wire,
            flag: Arc::new(Flag::default()),
            conn: ConnState::Handshake(Box::pin(hs)),
            streams: Slab::new(),
            keys: Vec::new(),
            scratch: Vec::new(),
            next_sid: 0,
            on_pool: 0,
            resets: 0,
            shutting: false,
            linger_until: None,
            meter,
            refusal,
            refused: false,
            draining: false,
            started: now,
            idle_since: now,
            last_write: now,
            deadline: None,
        }
    }

    /// No stream is open, nothing waits to be sent, and, once a drain has
    /// begun, the GOAWAY has gone out (a busy client between two requests
    /// is not cut off).
    pub fn is_idle(&self) -> bool {
        self.streams.is_empty() && self.sent_all() && (self.shutting || !self.draining)
    }

    /// Streams are being answered, or bytes wait to be sent.
    pub fn is_busy(&self) -> bool {
        !self.is_idle()
    }

    fn sent_all(&self) -> bool {
        let w = self.wire.lock();
        w.unsent().is_empty() && !w.sock.io.pending()
    }

    /// The descriptors waiting handlers of this connection watch.
    pub fn parked_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.streams
            .iter()
            .filter_map(|(_, s)| match &s.phase {
                Phase::Parked(p, _) => Some(p.wait.fd),
                _ => None,
            })
            .collect()
    }

    /// A waiting handler's descriptor is ready.
    pub fn wait_ready(&mut self, fd: std::os::fd::RawFd) -> bool {
        let mut found = false;
        for (_, s) in self.streams.iter_mut() {
            if let Phase::Parked(p, ready) = &mut s.phase
                && p.wait.fd == fd
            {
                *ready = true;
                found = true;
            }
        }
        found
    }

    /// Runs the connection until it must wait.
    pub fn drive(&mut self, cx: &mut Cx<'_>) -> Next {
        let next = self.step(cx);
        self.deadline = self.compute_deadline(cx);
        next
    }

    fn step(&mut self, cx: &mut Cx<'_>) -> Next {
        let waker = wire::waker(&self.flag);
        let mut tcx = Context::from_waker(&waker);
        self.draining = cx.draining;
        if cx.draining && !self.shutting && self.goaway_due(cx) {
            self.shutting = true;
            if let ConnState::Open(c) = &mut self.conn {
                // GOAWAY: streams in flight finish, new ones go elsewhere.
                c.graceful_shutdown();
            }
        }
        // PERF: `h2` is polled when something can have changed for it:
        // input, a wake, room made in the wire, or (after the streams'
        // step) frames they queued.
        let mut poll = true;
        for _ in 0..PASSES {
            let mut moved = match self.read_in() {
                Ok(m) => m,
                Err(why) => return self.close(cx, why),
            };
            let refusing = self.refusal.is_some() && !self.refused;
            if poll || moved || refusing || self.flag.take() {
                moved |= self.poll_conn(cx, &mut tcx);
            }
            if refusing && self.refused {
                // The GOAWAY is queued: it goes out this pass.
                moved = true;
            }
            if self.step_streams(cx, &mut tcx) || self.flag.take() {
                moved = true;
                self.poll_conn(cx, &mut tcx);
            }
            let wrote = match self.write_out() {
                Ok(m) => m,
                Err(why) => return self.close(cx, &why),
            };
            let woke = self.flag.take();
            moved |= wrote || woke;
            poll = wrote || woke;
            if matches!(self.conn, ConnState::Gone) && self.sent_all() {
                return self.linger(cx);
            }
            if self.wire.lock().sock.read_eof && self.streams.is_empty() && self.sent_all() {
                return self.close(cx, "the client closed the connection");
            }
            if !moved {
                if self.streams.is_empty() {
                    self.shrink();
                }
                return Next::Wait;
            }
        }
        Next::Again
    }

    /// The connection is over and its last frames (a GOAWAY) are out: our
    /// side is shut, and what the client still sends is read and dropped
    /// for a while, so that closing with unread input does not reset the
    /// connection before the client has read the GOAWAY.
    fn linger(&mut self, cx: &mut Cx<'_>) -> Next {
        let now = crate::clock::now();
        let until = *self.linger_until.get_or_insert_with(|| {
            self.wire.lock().sock.io.shutdown_write();
            now + LINGER
        });
        let mut w = self.wire.lock();
        let mut scratch = [0u8; 4096];
        loop {
            if now >= until || w.sock.read_eof {
                drop(w);
                return self.close(cx, "the HTTP/2 connection ended");
            }
            if !w.sock.readable {
                return Next::Wait;
            }
            match w.sock.io.read(&mut scratch) {
                Ok(Io::Ready(0)) | Err(_) => w.sock.read_eof = true,
                Ok(Io::Ready(_)) => {}
                Ok(Io::Blocked) => w.sock.readable = false,
            }
        }
    }

    /// An idle connection keeps no buffer it grew while busy (a download
    /// leaves `out` at up to 256 KiB; browsers keep connections open).
    fn shrink(&mut self) {
        let mut w = self.wire.lock();
        if w.unsent().is_empty() && w.out.capacity() > 64 * 1024 {
            w.out = Vec::new();
            w.out_pos = 0;
        }
        if w.unread() == 0 && w.inb.capacity() > 64 * 1024 {
            w.inb = Vec::new();
            w.in_pos = 0;
        }
    }

    /// When a drain (SIGTERM, a binary upgrade) sends GOAWAY: at once to
    /// a connection with no stream open; one busy with streams is served
    /// on for up to half of `shutdown_timeout`, as an HTTP/1.1 request in
    /// flight is answered, since a client need not reconnect after a
    /// GOAWAY (h2load does not) and its next requests would fail. New
    /// connections go to the new process meanwhile.
    fn goaway_due(&self, cx: &Cx<'_>) -> bool {
        let now = crate::clock::now();
        (self.streams.is_empty() && now >= self.idle_since + DRAIN_QUIET)
            || now >= cx.drain_started + cx.settings().shutdown_timeout.0 / 2
    }

    /// Reads what the client sent into the wire (bounded per pass).
    fn read_in(&mut self) -> Result<bool, &'static str> {
        let mut moved = false;
        if self.refusal.is_some() {
            // A connection error is on its way: nothing more is taken.
            return Ok(false);
        }
        let mut w = self.wire.lock();
        // PERF: a scratch buffer kept by the connection (zeroing 16 KiB on
        // the stack per drive showed in the profile).
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize(16 * 1024, 0);
        let r = Self::read_into(&mut w, &mut scratch, &mut moved, &mut self.meter);
        self.scratch = scratch;
        match r {
            Ok(Some(code)) => {
                self.refusal = Some(Reason::from(code));
                Ok(true)
            }
            Ok(None) => Ok(moved),
            Err(why) => Err(why),
        }
    }

    /// Reads into the wire what the meter passes; `Some(code)`: a
    /// connection error of that code (the bytes before it were taken).
    fn read_into(
        w: &mut wire::Bufs<T>,
        scratch: &mut [u8],
        moved: &mut bool,
        meter: &mut meter::Meter,
    ) -> Result<Option<u32>, &'static str> {
        while w.sock.readable && !w.sock.read_eof {
            if w.unread() >= IN_MAX {
                // `h2` takes it first (it stops taking while its answers
                // cannot be written: the client is then not read either).
                return Ok(None);
            }
            match w.sock.io.read(scratch) {
                Ok(Io::Ready(0)) | Err(_) => {
                    w.sock.read_eof = true;
                    w.sock.readable = false;
                    w.eof = true;
                    *moved = true;
                    return Ok(None);
                }
                Ok(Io::Ready(n)) => {
                    *moved = true;
                    if let Err((code, before)) = meter.scan(&scratch[..n]) {
                        w.push_in(&scratch[..before]);
                        return Ok(Some(code));
                    }
                    w.push_in(&scratch[..n]);
                    if n < scratch.len() && !w.sock.peer_closed {
                        w.sock.readable = false;
                    }
                }
                Ok(Io::Blocked) => w.sock.readable = false,
            }
        }
        Ok(None)
    }

    /// Writes the frames `h2` queued.
    fn write_out(&mut self) -> Result<bool, String> {
        let mut moved = false;
        let mut w = self.wire.lock();
        let w = &mut *w;
        // Records already sealed into the transport go first.
        if w.sock.writable && w.sock.io.pending() {
            match w.sock.io.flush() {
                Ok(done) => {
                    moved = true;
                    self.last_write = crate::clock::now();
                    if !done {
                        w.sock.writable = false;
                    }
                }
                Err(e) => return Err(format!("write failed: {e}")),
            }
        }
        loop {
            if !w.sock.writable {
                break;
            }
            let unsent = &w.out[w.out_pos..];
            if unsent.is_empty() {
                break;
            }
            match w.sock.io.write(unsent, false) {
                Ok(Io::Ready(n)) => {
                    w.sent(n);
                    moved = true;
                    self.last_write = crate::clock::now();
                }
                Ok(Io::Blocked) => {
                    w.sock.writable = false;
                    break;
                }
                Err(e) => return Err(format!("write failed: {e}")),
            }
        }
        if w.sock.writable && w.sock.io.pending() {
            let done = w
                .sock
                .io
                .flush()
                .map_err(|e| format!("write failed: {e}"))?;
            if !done {
                w.sock.writable = false;
            }
        }
        Ok(moved)
    }

    /// Polls the connection: the handshake, new streams, frames to encode.
    fn poll_conn(&mut self, cx: &mut Cx<'_>, tcx: &mut Context<'_>) -> bool {
        let mut moved = false;
        if let ConnState::Handshake(hs) = &mut self.conn {
            match hs.as_mut().poll(tcx) {
                Poll::Ready(Ok(c)) => {
                    self.conn = ConnState::Open(Box::new(c));
                    if cx.draining {
                        self.shutting = false;
                    }
                    moved = true;
                }
                Poll::Ready(Err(e)) => {
                    log::debug!("HTTP/2 handshake with {} failed: {e}", self.peer);
                    self.conn = ConnState::Gone;
                    return true;
                }
                Poll::Pending => return false,
            }
        }
        let mut new = Vec::new();
        if let ConnState::Open(c) = &mut self.conn {
            if let Some(reason) = self.refusal
                && !self.refused
                && self.wire.lock().unread() == 0
            {
                // `h2` has taken the bytes before the bad frame.
                log::debug!("HTTP/2 connection from {}: {reason}", self.peer);
                c.abrupt_shutdown(reason);
                self.refused = true;
            }
            loop {
                match c.poll_accept(tcx) {
                    Poll::Ready(Some(Ok((req, respond)))) => new.push((req, respond)),
                    Poll::Ready(Some(Err(e))) => {
                        if e.is_go_away() || e.is_io() {
                            log::debug!("HTTP/2 connection from {}: {e}", self.peer);
                        } else {
                            log::info!("HTTP/2 connection from {}: {e}", self.peer);
                        }
                        self.conn = ConnState::Gone;
                        moved = true;
                        break;
                    }
                    Poll::Ready(None) => {
                        self.conn = ConnState::Gone;
                        moved = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        for (req, respond) in new {
            moved = true;
            self.open_stream(req, respond, cx);
        }
        if matches!(self.conn, ConnState::Gone) && !self.streams.is_empty() {
            self.abandon_all(cx, "the HTTP/2 connection ended");
        }
        moved
    }

    /// Ends the connection at once with `reason` (GOAWAY).
    fn calm_down(&mut self, reason: Reason, why: &str) {
        log::warn!("closing the HTTP/2 connection from {}: {why}", self.peer);
        if let ConnState::Open(c) = &mut self.conn {
            c.abrupt_shutdown(reason);
        }
    }

    /// A client reset a stream before its response ended.
    fn early_reset(&mut self) {
        self.resets += 1;
        if self.resets > RESET_BUDGET {
            self.calm_down(
                Reason::ENHANCE_YOUR_CALM,
                "too many streams reset before their response (rapid reset)",
            );
        }
    }

    /// The pool's answer for a stream.
    pub fn on_stream_handled(
        &mut self,
        key: usize,
        sid: u64,
        h: crate::exchange::Handled,
        cx: &mut Cx<'_>,
    ) -> Next {
        self.on_pool = self.on_pool.saturating_sub(1);
        match self.streams.get_mut(key) {
            Some(s) if s.sid == sid && matches!(s.phase, Phase::Pool(_)) => {
                let exceeded = matches!(&s.phase, Phase::Pool(Some(f)) if f.exceeded);
                let limit = match &s.phase {
                    Phase::Pool(Some(f)) => f.pipe.limit(),
                    _ => 0,
                };
                let need = if exceeded {
                    // A body past `max_body` (of unannounced length):
                    // 413 whatever the handler made of its failed read.
                    let crate::exchange::Handled { mut exchange, step } = h;
                    if let crate::exchange::Done::Respond(o) = step {
                        crate::exchange::response::drop_owned(o);
                    }
                    crate::exchange::run::too_large(&mut exchange, limit + 1, limit);
                    exchange.error = Some("request body over the limit".into());
                    crate::exchange::run::Need::Respond(
                        exchange,
                        crate::exchange::run::Answer::Status(413),
                    )
                } else {
                    crate::exchange::run::handled(h)
                };
                self.apply(key, need, cx);
            }
            _ => crate::exchange::drop_handled(h),
        }
        self.drive(cx)
    }

    /// Closes: every stream is given up and logged.
    pub fn close(&mut self, cx: &mut Cx<'_>, why: &str) -> Next {
        log::debug!("closing HTTP/2 connection from {}: {why}", self.peer);
        self.abandon_all(cx, why);
        Next::Close
    }

    fn abandon_all(&mut self, cx: &mut Cx<'_>, why: &str) {
        let keys: Vec<usize> = self.streams.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.give_up(k, cx, why);
        }
    }

    /// The sweep's look at the connection's timers.
    pub fn timed_out(&mut self, cx: &mut Cx<'_>) -> Next {
        let now = crate::clock::now();
        let s = cx.settings().clone();
        if matches!(self.conn, ConnState::Handshake(_)) && now >= self.started + s.header_timeout.0
        {
            return self.close(cx, "no HTTP/2 preface in time");
        }
        let sending = self.streams.iter().any(|(_, s)| s.sending()) || !self.sent_all();
        if sending && now >= self.last_write + s.send_timeout.0 {
            return self.close(cx, "send timeout");
        }
        let mut expired = Vec::new();
        for (k, st) in self.streams.iter_mut() {
            match &mut st.phase {
                Phase::Parked(p, ready) if now >= p.until => *ready = true,
                Phase::Collect(c) if now >= c.deadline(&s) => expired.push(k),
                _ => {}
            }
        }
        for k in expired {
            self.collect_timed_out(k, cx);
        }
        if self.streams.is_empty()
            && self.sent_all()
            && now >= self.idle_since + s.idle_timeout.0
            && let ConnState::Open(c) = &mut self.conn
        {
            // GOAWAY(NO_ERROR): nothing is in flight.
            c.abrupt_shutdown(Reason::NO_ERROR);
        }
        self.drive(cx)
    }

    fn compute_deadline(&self, cx: &Cx<'_>) -> Option<Instant> {
        let s = cx.settings();
        let mut d: Option<Instant> = None;
        let mut at = |t: Instant| d = Some(d.map_or(t, |d| d.min(t)));
        if let Some(t) = self.linger_until {
            at(t);
        }
        if matches!(self.conn, ConnState::Handshake(_)) {
            at(self.started + s.header_timeout.0);
        }
        if self.streams.is_empty() {
            if self.sent_all() {
                at(self.idle_since + s.idle_timeout.0);
            }
        } else {
            for (_, st) in self.streams.iter() {
                match &st.phase {
                    Phase::Parked(p, _) => at(p.until),
                    Phase::Collect(c) => at(c.deadline(s)),
                    _ => {}
                }
            }
        }
        if !self.sent_all() || self.streams.iter().any(|(_, s)| s.sending()) {
            at(self.last_write + s.send_timeout.0);
        }
        if cx.draining && !self.shutting {
            at(cx.drain_started + s.shutdown_timeout.0 / 2);
            if self.streams.is_empty() {
                at(self.idle_since + DRAIN_QUIET);
            }
        }
        d
    }
}

pub(crate) use crate::proto::h1::limits;

/// The pool jobs one connection may have at once: its streams beyond that
/// wait, so one client's 128 streams cannot hold every pool thread.
fn pool_cap(cx: &Cx<'_>) -> usize {
    (cx.settings().workers / 4).max(2)
}
