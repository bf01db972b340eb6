//! The upstream's response body, read as the core pulls it: by its
//! length, chunked (the gateway's decoder), or until the upstream closes;
//! the connection goes back to the idle pool when the body ended cleanly.

use crate::response::Framing;
use crate::upstream::{Conn, Upstreams};
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tamada_sdk::BodyStream;

/// What goes back to the pool when the body ends.
pub struct Finish {
    pub ups: Arc<Upstreams>,
    pub reusable: bool,
}

/// The response body, pulled by the core on the pool.
pub struct UpstreamBody {
    conn: Option<Conn>,
    framing: Framing,
    left: u64,
    chunk: tamada_gateway::chunked::Chunked,
    done: bool,
    finish: Finish,
}

impl UpstreamBody {
    pub fn new(conn: Conn, framing: Framing, finish: Finish) -> UpstreamBody {
        let left = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        let mut b = UpstreamBody {
            conn: Some(conn),
            framing,
            left,
            chunk: Default::default(),
            done: false,
            finish,
        };
        if framing == Framing::Length(0) {
            b.end();
        }
        b
    }

    /// Whether the whole body was read.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The socket's descriptor, while the body is being read.
    pub fn fd(&self) -> Option<i32> {
        use std::os::fd::AsRawFd;
        self.conn.as_ref().map(|c| c.sock.as_raw_fd())
    }

    /// The connection, while the body is being read.
    pub fn conn_mut(&mut self) -> Option<&mut Conn> {
        self.conn.as_mut()
    }

    fn end(&mut self) {
        self.done = true;
        if let Some(c) = self.conn.take() {
            let ups = self.finish.ups.clone();
            ups.list[c.up].active.fetch_sub(1, Ordering::Relaxed);
            if self.finish.reusable && c.buffered().is_empty() {
                ups.put_idle(c);
            }
        }
    }

    fn conn(&mut self) -> io::Result<&mut Conn> {
        self.conn
            .as_mut()
            .ok_or_else(|| io::Error::other("the upstream connection is gone"))
    }

    /// Copies up to `max` buffered or fresh bytes into `out`.
    fn raw(&mut self, out: &mut [u8], max: u64) -> io::Result<usize> {
        let c = self.conn()?;
        if c.buffered().is_empty() {
            let n = c.fill()?;
            if n == 0 {
                return Ok(0);
            }
        }
        let b = c.buffered();
        let n = b
            .len()
            .min(out.len())
            .min(usize::try_from(max).unwrap_or(usize::MAX));
        out[..n].copy_from_slice(&b[..n]);
        c.consume(n);
        Ok(n)
    }

    fn chunked(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(c) = self.conn.as_mut() else {
                return Err(io::Error::other("the upstream connection is gone"));
            };
            let (used, n) = self
                .chunk
                .decode(c.buffered(), out)
                .map_err(|e| io::Error::other(format!("the upstream's chunked body: {e}")))?;
            c.consume(used);
            if self.chunk.is_done() {
                // Trailer fields are not passed on (the core sends none).
                self.end();
                return Ok(n);
            }
            if n > 0 {
                return Ok(n);
            }
            let Some(c) = self.conn.as_mut() else {
                return Err(io::Error::other("the upstream connection is gone"));
            };
            if used == 0 && c.fill()? == 0 {
                return Err(io::Error::other(
                    "the upstream closed inside the chunked body",
                ));
            }
        }
    }

    /// On the pool: waits for the socket to be ready for `i`, at most
    /// until `until`; false when the time ran out.
    pub fn block(&self, i: tamada_gateway::exchange::Interest, until: std::time::Instant) -> bool {
        match &self.conn {
            Some(c) => tamada_gateway::exchange::ready_by(&c.sock, i, until),
            None => true,
        }
    }
}

impl BodyStream for UpstreamBody {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.done || out.is_empty() {
            return Ok(0);
        }
        let r = self.read_framed(out);
        if let Err(e) = &r
            && e.kind() == io::ErrorKind::WouldBlock
            && self.conn.as_ref().is_some_and(|c| c.nonblocking)
        {
            // Inline: nothing yet, the decoder goes on from here later.
            return r;
        }
        if r.is_err() {
            // A cut or broken body: the connection is not reused.
            self.finish.reusable = false;
            self.end();
        }
        r
    }

    fn close(&mut self, _client_gone: bool) {
        if !self.done {
            // The client left (or the core stopped early): the rest of the
            // body will never be read, so the connection is closed.
            self.finish.reusable = false;
            self.end();
        }
    }
}

impl UpstreamBody {
    fn read_framed(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self.framing {
            Framing::Length(_) => {
                let n = self.raw(out, self.left)?;
                if n == 0 {
                    // Short of its length: an error, so the core cuts the
                    // client's connection instead of a silent truncation.
                    return Err(io::Error::other(format!(
                        "the upstream closed {} bytes short of its Content-Length",
                        self.left
                    )));
                }
                self.left -= n as u64;
                if self.left == 0 {
                    self.end();
                }
                Ok(n)
            }
            Framing::Chunked => self.chunked(out),
            Framing::Close => {
                let n = self.raw(out, u64::MAX)?;
                if n == 0 {
                    self.end();
                }
                Ok(n)
            }
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if !self.done {
            self.finish.reusable = false;
            self.end();
        }
    }
}
