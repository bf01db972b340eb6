//! Response streams (`BodyV1::Stream`): a plugin's `read` may block, so it
//! is only ever called on the pool. A pull job reads the stream into a
//! bounded buffer (framed: chunked, or counted against a declared
//! Content-Length); the loop writes from that buffer. When the buffer is
//! full the pull parks the stream in the buffer and its pool thread goes
//! back to the pool; when the loop has drained it to half, it starts a new
//! pull. So a slow client holds memory (at most [`HIGH`] bytes), never a
//! pool thread.
//!
//! The stream's `close` is called exactly once, on the pool: by the pull
//! that reaches its end (`client_gone` false) or fails, or, when the loop
//! gives up on the exchange (client gone, send timeout), by the pull that
//! finds it abandoned or by a close job (`client_gone` true).

use crate::config::runtime::Vhost;
use crate::exchange::Wake;
use crate::plugins::call;
use crate::pool::Pool;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tamada_sdk::abi::StreamV1;

/// The buffer stops being filled at this size.
pub const HIGH: usize = 256 * 1024;
/// A new pull starts when the loop has drained the buffer below this.
const LOW: usize = HIGH / 2;
/// One `read` asks for at most this much.
const CHUNK: usize = 32 * 1024;

/// The plugin's stream and its framing state, owned by whoever pulls.
pub struct Puller {
    stream: StreamV1,
    /// Bytes still expected when the handler declared a Content-Length.
    remaining: Option<u64>,
    chunked: bool,
}

impl Puller {
    pub fn new(stream: StreamV1, remaining: Option<u64>, chunked: bool) -> Self {
        Puller {
            stream,
            remaining,
            chunked,
        }
    }

    fn close(self, client_gone: bool) {
        call::stream_close(self.stream, client_gone);
    }

    /// Reads and frames one piece; `Ok((bytes, eof))`.
    fn pull(&mut self) -> Result<(Vec<u8>, bool), String> {
        let want = match self.remaining {
            Some(0) => 0,
            Some(r) => r.min(CHUNK as u64) as usize,
            None => CHUNK,
        };
        if want == 0 {
            return Ok((Vec::new(), true));
        }
        // Room for the chunk-size line in front.
        const PRE: usize = 10;
        let mut buf = vec![0u8; PRE + want];
        let n = match call::stream_read(&self.stream, &mut buf[PRE..]) {
            Ok(n) => n.min(want),
            Err(e) => return Err(format!("body stream failed: {e}")),
        };
        if n == 0 {
            if let Some(r) = self.remaining
                && r > 0
            {
                return Err(format!(
                    "body stream ended {r} bytes short of its Content-Length"
                ));
            }
            return Ok((
                if self.chunked {
                    b"0\r\n\r\n".to_vec()
                } else {
                    Vec::new()
                },
                true,
            ));
        }
        if let Some(r) = self.remaining.as_mut() {
            *r -= n as u64;
        }
        if self.chunked {
            let size = format!("{n:x}\r\n");
            let start = PRE - size.len();
            buf[start..PRE].copy_from_slice(size.as_bytes());
            buf.truncate(PRE + n);
            buf.extend_from_slice(b"\r\n");
            buf.drain(..start);
        } else {
            buf.truncate(PRE + n);
            buf.drain(..PRE);
        }
        let eof = self.remaining == Some(0) && !self.chunked;
        Ok((buf, eof))
    }
}

/// The buffer between the pull jobs and the loop.
pub struct StreamPipe {
    inner: Mutex<Inner>,
    wake: Wake,
    pool: Arc<Pool>,
    /// For the records a stream logs while it is read.
    vhost: Arc<Vhost>,
    peer: SocketAddr,
}

struct Inner {
    chunks: VecDeque<Vec<u8>>,
    bytes: usize,
    /// The stream, while no pull holds it.
    parked: Option<Puller>,
    pulling: bool,
    eof: bool,
    error: Option<String>,
    /// The loop found the buffer empty: tell it when there is more.
    loop_waiting: bool,
    /// The loop gave up on the exchange.
    gone: bool,
}

/// What the loop gets from [`StreamPipe::take`].
pub enum Piece {
    Data(Vec<u8>),
    /// Nothing yet; the loop is told when there is.
    Pending,
    End,
    Failed(String),
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    // Poisoning means a panic while holding it; the fields stay consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl StreamPipe {
    /// A pipe whose stream is held by the caller, who pulls it next
    /// ([`StreamPipe::pull`] on the pool).
    pub fn new(wake: Wake, pool: Arc<Pool>, vhost: Arc<Vhost>, peer: SocketAddr) -> Arc<Self> {
        Arc::new(StreamPipe {
            inner: Mutex::new(Inner {
                chunks: VecDeque::new(),
                bytes: 0,
                parked: None,
                pulling: true,
                eof: false,
                error: None,
                loop_waiting: false,
                gone: false,
            }),
            wake,
            pool,
            vhost,
            peer,
        })
    }

    /// Starts pulling `p` on the pool (for a stream the loop holds).
    pub fn start(self: &Arc<Self>, p: Puller) {
        let me = self.clone();
        self.pool.submit(Box::new(move || me.pull(p)));
    }

    /// A pull job: reads until the buffer is full, the stream ends or
    /// fails, or the loop has given up.
    pub fn pull(self: Arc<Self>, mut p: Puller) {
        loop {
            {
                let mut g = lock(&self.inner);
                if g.gone {
                    g.pulling = false;
                    drop(g);
                    self.in_context(|| p.close(true));
                    return;
                }
                if g.bytes >= HIGH {
                    g.parked = Some(p);
                    g.pulling = false;
                    return;
                }
            }
            let r = self.in_context(|| p.pull());
            let mut g = lock(&self.inner);
            let wake = std::mem::take(&mut g.loop_waiting);
            match r {
                Ok((data, eof)) => {
                    if !data.is_empty() {
                        g.bytes += data.len();
                        g.chunks.push_back(data);
                    }
                    if eof {
                        g.eof = true;
                        g.pulling = false;
                    }
                    drop(g);
                    if wake {
                        (self.wake)();
                    }
                    if eof {
                        self.in_context(|| p.close(false));
                        return;
                    }
                }
                Err(e) => {
                    g.error = Some(e);
                    g.pulling = false;
                    drop(g);
                    if wake {
                        (self.wake)();
                    }
                    self.in_context(|| p.close(true));
                    return;
                }
            }
        }
    }

    fn in_context<R>(&self, f: impl FnOnce() -> R) -> R {
        let _scope = call::scope(&self.vhost, self.peer);
        f()
    }

    /// The loop: the next piece to write.
    pub fn take(self: &Arc<Self>) -> Piece {
        let mut g = lock(&self.inner);
        if let Some(c) = g.chunks.pop_front() {
            g.bytes -= c.len();
            if g.bytes < LOW
                && !g.pulling
                && !g.eof
                && let Some(p) = g.parked.take()
            {
                g.pulling = true;
                drop(g);
                self.start(p);
            }
            return Piece::Data(c);
        }
        if let Some(e) = &g.error {
            return Piece::Failed(e.clone());
        }
        if g.eof {
            return Piece::End;
        }
        g.loop_waiting = true;
        Piece::Pending
    }

    /// The loop gives up (client gone, timeout): the stream is closed
    /// with `client_gone`, on the pool.
    pub fn abandon(&self) {
        let mut g = lock(&self.inner);
        g.gone = true;
        g.chunks.clear();
        g.bytes = 0;
        if let Some(p) = g.parked.take() {
            drop(g);
            let vhost = self.vhost.clone();
            let peer = self.peer;
            self.pool.submit(Box::new(move || {
                let _scope = call::scope(&vhost, peer);
                p.close(true)
            }));
        }
    }
}
