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
use crate::plugins::filter::Transform;
use crate::pool::Pool;
use abi_stable::std_types::RVec;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use tamada_sdk::abi::{SegmentV1, StreamV1};

/// The buffer stops being filled at this size.
pub const HIGH: usize = 256 * 1024;
/// A new pull starts when the loop has drained the buffer below this.
const LOW: usize = HIGH / 2;
/// One `read` asks for at most this much.
const CHUNK: usize = 32 * 1024;

/// Where a pull reads a body from: a plugin's stream, or (for a body a
/// filter transforms) the handler's bytes, file range or segments.
pub enum Source {
    Plugin(StreamV1),
    Shared {
        body: crate::plugins::shared::SharedBody,
        pos: usize,
    },
    Bytes {
        data: RVec<u8>,
        pos: usize,
    },
    File {
        fd: OwnedFd,
        off: u64,
        end: u64,
    },
    Segments {
        files: Vec<OwnedFd>,
        segs: VecDeque<SegmentV1>,
        /// Bytes of the front segment already read.
        pos: u64,
    },
}

impl Source {
    /// Reads the next bytes into `buf`; 0 at the end. Blocks for a
    /// plugin's stream or a file (the pool).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, String> {
        match self {
            Source::Plugin(s) => {
                call::stream_read(s, buf).map_err(|e| format!("body stream failed: {e}"))
            }
            Source::Bytes { data, pos } => {
                let n = (data.len() - *pos).min(buf.len());
                buf[..n].copy_from_slice(&data[*pos..*pos + n]);
                *pos += n;
                Ok(n)
            }
            Source::Shared { body, pos } => {
                let data = body.as_slice();
                let n = (data.len() - *pos).min(buf.len());
                buf[..n].copy_from_slice(&data[*pos..*pos + n]);
                *pos += n;
                Ok(n)
            }
            Source::File { fd, off, end } => {
                let want = ((*end - *off) as usize).min(buf.len());
                let n = pread_full(fd, &mut buf[..want], *off)?;
                *off += n as u64;
                Ok(n)
            }
            Source::Segments { files, segs, pos } => loop {
                let Some(seg) = segs.front() else {
                    return Ok(0);
                };
                let len = if seg.file < 0 {
                    seg.bytes.len() as u64
                } else {
                    seg.len
                };
                if *pos >= len {
                    segs.pop_front();
                    *pos = 0;
                    continue;
                }
                let want = ((len - *pos) as usize).min(buf.len());
                let n = if seg.file < 0 {
                    let from = *pos as usize;
                    buf[..want].copy_from_slice(&seg.bytes[from..from + want]);
                    want
                } else {
                    let fd = files
                        .get(seg.file as usize)
                        .ok_or("a segment names a file the response does not have")?;
                    pread_full(fd, &mut buf[..want], seg.offset + *pos)?
                };
                *pos += n as u64;
                return Ok(n);
            },
        }
    }

    /// Ends the source: a plugin's stream is closed (`client_gone`: not
    /// read to its end), descriptors are closed.
    pub fn close(self, client_gone: bool) {
        if let Source::Plugin(s) = self {
            call::stream_close(s, client_gone);
        }
    }

    /// Whether a short read means the handler flushed (a live stream).
    fn live(&self) -> bool {
        matches!(self, Source::Plugin(_))
    }
}

/// Reads up to `buf.len()` bytes at `off`; an error when the file ends
/// first (it shrank after the handler measured it).
fn pread_full(fd: &OwnedFd, buf: &mut [u8], off: u64) -> Result<usize, String> {
    use std::os::unix::fs::FileExt;
    let f = std::mem::ManuallyDrop::new(
        // SAFETY: a second owner of the same descriptor for the read only;
        // ManuallyDrop keeps it from closing what `fd` still owns.
        unsafe { std::fs::File::from_raw_fd(fd.as_raw_fd()) },
    );
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => return Err("the response's file is shorter than its length".into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read the response's file: {e}")),
        }
    }
    Ok(done)
}

/// The response filters' transforms a body goes through, in order.
#[derive(Default)]
pub struct Chain(pub Vec<Transform>);

impl Chain {
    /// Passes `input` through every transform (`flush`: the handler
    /// flushed here).
    pub fn push(&mut self, input: &[u8], flush: bool) -> Result<RVec<u8>, String> {
        // PERF: the first transform reads the input where it is; only
        // outputs are buffers of their own.
        let mut cur: Option<RVec<u8>> = None;
        for t in &mut self.0 {
            let from: &[u8] = cur.as_deref().unwrap_or(input);
            let mut out = RVec::with_capacity(from.len() + 64);
            t.data(from, flush, &mut out)?;
            cur = Some(out);
        }
        Ok(cur.unwrap_or_else(|| RVec::from(input)))
    }

    /// The body ended: what each transform still holds, through those
    /// after it.
    pub fn finish(&mut self) -> Result<RVec<u8>, String> {
        let mut cur = RVec::new();
        for t in &mut self.0 {
            let mut out = RVec::with_capacity(cur.len() + 64);
            if !cur.is_empty() {
                t.data(&cur, false, &mut out)?;
            }
            t.finish(&mut out)?;
            cur = out;
        }
        Ok(cur)
    }
}

/// The body and its framing state, owned by whoever pulls.
pub struct Puller {
    source: Source,
    /// Bytes still expected when the handler declared a Content-Length.
    remaining: Option<u64>,
    chunked: bool,
    /// Response filters' transforms (the length is then unknown).
    chain: Option<Chain>,
}

impl Puller {
    pub fn new(stream: StreamV1, remaining: Option<u64>, chunked: bool) -> Self {
        Puller {
            source: Source::Plugin(stream),
            remaining,
            chunked,
            chain: None,
        }
    }

    /// A body that goes through filters' transforms.
    pub fn filtered(source: Source, chain: Chain, chunked: bool) -> Self {
        Puller {
            source,
            remaining: None,
            chunked,
            chain: Some(chain),
        }
    }

    fn close(self, client_gone: bool) {
        self.source.close(client_gone);
    }

    /// Reads and frames one piece; `Ok((bytes, eof))`.
    fn pull(&mut self) -> Result<(Vec<u8>, bool), String> {
        let want = match self.remaining {
            Some(0) => 0,
            Some(r) => r.min(CHUNK as u64) as usize,
            None => CHUNK,
        };
        if want == 0 {
            return self.end();
        }
        // Room for the chunk-size line in front.
        const PRE: usize = 10;
        let mut buf = vec![0u8; PRE + want];
        let n = self.source.read(&mut buf[PRE..])?.min(want);
        if n == 0 {
            if let Some(r) = self.remaining
                && r > 0
            {
                return Err(format!(
                    "body stream ended {r} bytes short of its Content-Length"
                ));
            }
            return self.end();
        }
        if let Some(r) = self.remaining.as_mut() {
            *r -= n as u64;
        }
        if let Some(chain) = &mut self.chain {
            let flush = self.source.live() && n < want;
            let out = chain.push(&buf[PRE..PRE + n], flush)?;
            return Ok((self.frame(&out, false), false));
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

    /// The body's end: what the transforms still hold, and the last
    /// chunk.
    fn end(&mut self) -> Result<(Vec<u8>, bool), String> {
        let tail = match &mut self.chain {
            Some(c) => c.finish()?,
            None => RVec::new(),
        };
        Ok((self.frame(&tail, true), true))
    }

    /// Frames transformed bytes (`last`: the body ends after them).
    fn frame(&self, data: &[u8], last: bool) -> Vec<u8> {
        if !self.chunked {
            return data.to_vec();
        }
        let mut v = Vec::with_capacity(data.len() + 16);
        if !data.is_empty() {
            v.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            v.extend_from_slice(data);
            v.extend_from_slice(b"\r\n");
        }
        if last {
            v.extend_from_slice(b"0\r\n\r\n");
        }
        v
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
                    g.error = Some(e.clone());
                    g.pulling = false;
                    drop(g);
                    if wake {
                        (self.wake)();
                    }
                    // The head has left: the connection is cut short; the
                    // reason goes to the vhost's error log (no lock held:
                    // a logger may block).
                    self.in_context(|| {
                        crate::plugins::host::record_here(
                            log::Level::Error,
                            "tamada",
                            &format!("response cut short: {e}"),
                        )
                    });
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
