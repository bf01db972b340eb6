//! A request body on the HTTP/1.1 wire: `Content-Length` or chunked
//! framing (RFC 9112 section 6), taken from the connection's buffer.

use crate::http::chunked::Decoder;
use crate::http::request::Framing;
use crate::proto::h1::Buf;

/// Where a request body stands on the wire (the loop's side).
pub struct BodyState {
    framing: Framing,
    /// Content-Length bytes still unread.
    remaining: u64,
    decoder: Decoder,
    /// The current route's `max_body`.
    pub limit: u64,
    /// Body bytes taken (de-chunked).
    pub received: u64,
    /// Bytes taken off the wire (with chunk framing).
    pub wire_bytes: u64,
    /// A chunked body went over the limit.
    pub exceeded: bool,
    /// `100 Continue` is owed before the first read.
    pub continue_pending: bool,
    pub done: bool,
    /// The body failed (client gone, bad chunking, over the limit):
    /// framing is lost.
    pub broken: bool,
    /// The chunked framing itself was malformed (the client's fault: 400).
    pub bad_framing: bool,
}

impl BodyState {
    pub fn new(framing: Framing, limit: u64, expect_continue: bool) -> Self {
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

    /// Decodes from the front of `data` into `out`: (wire bytes used, body
    /// bytes made). `(0, 0)` with `!done` means more bytes are needed.
    pub fn take(&mut self, data: &[u8], out: &mut [u8]) -> Result<(usize, usize), String> {
        match self.framing {
            Framing::None => {
                self.done = true;
                Ok((0, 0))
            }
            Framing::Length(_) => {
                let n = (self.remaining.min(data.len() as u64) as usize).min(out.len());
                out[..n].copy_from_slice(&data[..n]);
                self.remaining -= n as u64;
                self.received += n as u64;
                self.wire_bytes += n as u64;
                if self.remaining == 0 {
                    self.done = true;
                }
                Ok((n, n))
            }
            Framing::Chunked => {
                let (c, n) = self.decoder.decode(data, out).map_err(|e| {
                    self.broken = true;
                    self.bad_framing = true;
                    format!("bad chunked request body: {}", e.0)
                })?;
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
                Ok((c, n))
            }
        }
    }

    /// The whole body when it is already in `data` (for an inline
    /// handler): the decoded bytes and the wire bytes they took. `None`
    /// when more is still to come (nothing is consumed then).
    pub fn whole_in(&self, data: &[u8]) -> Option<(Vec<u8>, usize)> {
        match self.framing {
            Framing::None => Some((Vec::new(), 0)),
            Framing::Length(n) => {
                let n = usize::try_from(n).ok()?;
                (data.len() >= n).then(|| (data[..n].to_vec(), n))
            }
            Framing::Chunked => {
                // A dry run on a copy of the decoder: the real state moves
                // only when the body is used.
                let mut probe = BodyState {
                    decoder: self.decoder.clone(),
                    ..BodyState::new(Framing::Chunked, self.limit, false)
                };
                let mut out = vec![0u8; data.len()];
                let mut used = 0;
                let mut made = 0;
                while !probe.done {
                    match probe.take(&data[used..], &mut out[made..]) {
                        Ok((0, 0)) => return None,
                        Ok((c, n)) => {
                            used += c;
                            made += n;
                        }
                        // Bad framing or over the limit: let the pool
                        // path report it as it reads.
                        Err(_) => return None,
                    }
                }
                out.truncate(made);
                Some((out, used))
            }
        }
    }

    /// Marks an in-memory body as used.
    pub fn consumed_whole(&mut self, wire: usize, body: usize) {
        self.wire_bytes += wire as u64;
        self.received += body as u64;
        self.remaining = 0;
        self.done = true;
        self.continue_pending = false;
    }

    /// Consumes (and drops) the rest of the body if it is already here,
    /// reading the socket without waiting, at most 1 MiB. Returns whether
    /// the body is complete (the connection can then be kept).
    pub fn drain_available(
        &mut self,
        buf: &mut Buf,
        mut read: impl FnMut(&mut Buf) -> bool,
    ) -> bool {
        let mut scratch = [0u8; 8192];
        let mut budget: u64 = 1 << 20;
        while !self.done && !self.broken {
            match self.take(buf.data(), &mut scratch) {
                Ok((0, 0)) => {
                    if !read(buf) {
                        return false;
                    }
                }
                Ok((c, _)) => {
                    buf.consume(c);
                    budget = budget.saturating_sub(c as u64);
                    if budget == 0 {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        self.done && !self.broken
    }
}
