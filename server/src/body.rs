//! The request body reader handed to plugins (`BodyReaderV1`): it streams
//! from the connection's buffer and socket, de-chunks, enforces `max_body`,
//! sends `100 Continue` on the first read, and waits for a slow client at
//! most `body_timeout` between reads (the worker may block here: the
//! handler asked for the body).

use crate::conn::Buf;
use crate::http::chunked::Decoder;
use crate::http::request::Framing;
use abi_stable::std_types::{RResult, RSliceMut, RString};
use mio::net::TcpStream;
use std::ffi::c_void;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Where a request body stands.
pub struct BodyState {
    framing: Framing,
    /// Content-Length bytes still unread.
    remaining: u64,
    decoder: Decoder,
    /// The current route's `max_body`.
    pub limit: u64,
    /// Body bytes delivered (de-chunked).
    pub received: u64,
    /// Bytes taken off the wire (with chunk framing).
    pub wire_bytes: u64,
    /// A chunked body went over the limit.
    pub exceeded: bool,
    /// `100 Continue` is owed before the first read.
    pub continue_pending: bool,
    pub done: bool,
    /// The body failed (timeout, client gone, bad chunking): framing is lost.
    pub broken: bool,
    /// The chunked framing itself was malformed (the client's fault: 400).
    pub bad_framing: bool,
}

impl BodyState {
    pub fn new(framing: Framing, limit: u64, expect_continue: bool, _minor: u8) -> Self {
        let (remaining, done) = match framing {
            Framing::None => (0, true),
            Framing::Length(n) => (n, n == 0),
            Framing::Chunked => (0, false),
        };
        BodyState {
            framing,
            remaining,
            decoder: Decoder::default(),
            limit,
            received: 0,
            wire_bytes: 0,
            exceeded: false,
            continue_pending: expect_continue && !done,
            done,
            broken: false,
            bad_framing: false,
        }
    }

    /// Decodes from what is buffered. `Ok(0)` with `!done` means more
    /// bytes are needed.
    fn take(&mut self, buf: &mut Buf, out: &mut [u8]) -> Result<usize, String> {
        match self.framing {
            Framing::None => {
                self.done = true;
                Ok(0)
            }
            Framing::Length(_) => {
                let data = buf.data();
                let n = (self.remaining.min(data.len() as u64) as usize).min(out.len());
                out[..n].copy_from_slice(&data[..n]);
                buf.consume(n);
                self.remaining -= n as u64;
                self.received += n as u64;
                self.wire_bytes += n as u64;
                if self.remaining == 0 {
                    self.done = true;
                }
                Ok(n)
            }
            Framing::Chunked => {
                let (c, n) = self.decoder.decode(buf.data(), out).map_err(|e| {
                    self.broken = true;
                    self.bad_framing = true;
                    format!("bad chunked request body: {}", e.0)
                })?;
                buf.consume(c);
                self.wire_bytes += c as u64;
                self.received += n as u64;
                // The framing counts too (tiny chunks with long extensions).
                let wire_limit = self
                    .limit
                    .saturating_add(self.limit / 2)
                    .saturating_add(1 << 20);
                if self.received > self.limit || self.wire_bytes > wire_limit {
                    self.exceeded = true;
                    self.broken = true;
                    return Err(format!(
                        "request body is over the limit of {} bytes",
                        self.limit
                    ));
                }
                if self.decoder.is_done() {
                    self.done = true;
                }
                Ok(n)
            }
        }
    }

    /// Consumes the rest of the body if it is already here, without
    /// waiting. Returns whether the body is complete.
    pub fn drain_available(&mut self, sock: &TcpStream, buf: &mut Buf) -> bool {
        let mut scratch = [0u8; 8192];
        let mut budget: u64 = 1 << 20;
        while !self.done && !self.broken {
            let before = self.wire_bytes;
            match self.take(buf, &mut scratch) {
                Ok(n) if n > 0 || self.wire_bytes > before => {
                    // The budget counts bytes off the wire, framing included.
                    budget = budget.saturating_sub(self.wire_bytes - before);
                    if budget == 0 {
                        return false;
                    }
                    continue;
                }
                Ok(_) if self.done => break,
                Ok(_) => {}
                Err(_) => return false,
            }
            match buf.fill(sock) {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
        self.done && !self.broken
    }
}

/// What the body reader's `ctx` points at during `handle`.
pub struct BodyCtx<'a> {
    pub sock: &'a TcpStream,
    pub buf: &'a mut Buf,
    pub state: &'a mut BodyState,
    pub timeout: Duration,
}

/// Waits until `fd` is ready for `events` or the timeout passes.
fn wait_fd(fd: i32, events: i16, timeout: Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: `p` is one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(r > 0);
    }
}

impl BodyCtx<'_> {
    fn read(&mut self, out: &mut [u8]) -> Result<usize, String> {
        if self.state.broken {
            return Err("the request body is no longer readable".into());
        }
        if self.state.continue_pending {
            self.state.continue_pending = false;
            let mut msg: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
            let mut s = self.sock;
            while !msg.is_empty() {
                match s.write(msg) {
                    Ok(n) => msg = &msg[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if !wait_fd(self.sock.as_raw_fd(), libc::POLLOUT, self.timeout)
                            .unwrap_or(false)
                        {
                            self.state.broken = true;
                            return Err("timed out sending 100 Continue".into());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.state.broken = true;
                        return Err(format!("client gone: {e}"));
                    }
                }
            }
        }
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.state.done {
                return Ok(0);
            }
            if !self.buf.is_empty() {
                let n = self.state.take(self.buf, out)?;
                if n > 0 || self.state.done {
                    return Ok(n);
                }
            }
            match self.buf.fill(self.sock) {
                Ok(0) => {
                    self.state.broken = true;
                    return Err("the client closed the connection before the body ended".into());
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match wait_fd(self.sock.as_raw_fd(), libc::POLLIN, self.timeout) {
                        Ok(true) => {}
                        Ok(false) => {
                            self.state.broken = true;
                            return Err(format!(
                                "request body stalled for {} s",
                                self.timeout.as_secs()
                            ));
                        }
                        Err(e) => {
                            self.state.broken = true;
                            return Err(e.to_string());
                        }
                    }
                }
                Err(e) => {
                    self.state.broken = true;
                    return Err(e.to_string());
                }
            }
        }
    }
}

/// `BodyReaderV1::read` for a live body.
pub extern "C" fn body_read(
    ctx: *mut c_void,
    mut buf: RSliceMut<'_, u8>,
) -> RResult<usize, RString> {
    // SAFETY: ctx points at the `BodyCtx` on `exchange::dispatch`'s stack,
    // alive for the whole `handle` call; the reader is used by the one
    // thread running that call.
    let b = unsafe { &mut *(ctx as *mut BodyCtx) };
    match b.read(buf.as_mut_slice()) {
        Ok(n) => RResult::ROk(n),
        Err(e) => RResult::RErr(RString::from(e)),
    }
}

/// `BodyReaderV1::read` when there is no body (log phase, redirects).
pub extern "C" fn no_body_read(_: *mut c_void, _: RSliceMut<'_, u8>) -> RResult<usize, RString> {
    RResult::ROk(0)
}
