//! Request bodies. The loop always owns the socket, so a body reaches a
//! handler in one of two ways:
//!
//! - **In memory** (an inline handler): the whole body came with the head
//!   and is read from the loop's buffer (`MemBody`).
//! - **Through a [`BodyPipe`]** (a pool handler): the protocol reads the
//!   socket, takes the body out of its framing and pushes the bytes into a
//!   bounded pipe; the handler's reads pull from it on the pool thread,
//!   waiting at most `body_timeout`. The first read of a body with
//!   `Expect: 100-continue` asks the loop to send `100 Continue`. When the
//!   pipe is full the loop stops reading the socket until the reader
//!   makes room (back-pressure to the client).

use crate::exchange::Wake;
use abi_stable::std_types::{RResult, RSliceMut, RString};
use std::collections::VecDeque;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};
use tamada_sdk::abi::BodyReaderV1;

/// Bytes a [`BodyPipe`] holds before the loop stops reading the socket.
pub const PIPE_CAPACITY: usize = 256 * 1024;

/// The body channel between a connection's loop and the pool thread
/// running its handler.
pub struct BodyPipe {
    inner: Mutex<PipeInner>,
    ready: Condvar,
    /// Wakes the connection (room made, or `100 Continue` wanted).
    wake: Wake,
    timeout: Duration,
    pub content_length: i64,
    /// The `max_body` of the route reading it (set by `route::dispatch`).
    limit: AtomicU64,
}

#[derive(Default)]
struct PipeInner {
    chunks: VecDeque<Vec<u8>>,
    /// Read position in the front chunk.
    front: usize,
    bytes: usize,
    /// The loop delivered the end of the body.
    done: bool,
    /// Why the body cannot be read (set by either side).
    error: Option<String>,
    /// `100 Continue` is owed; the first read asks for it.
    continue_pending: bool,
    /// The loop waits for the reader (for room or for the first read).
    loop_waiting: bool,
    /// The reader asked for the body (the loop may read the socket).
    started: bool,
}

/// What the loop learns when it feeds the pipe.
pub struct Feed {
    /// Room for this many bytes now (0: full, or the reader has not asked
    /// for a body that needs `100 Continue`).
    pub room: usize,
    /// `100 Continue` must be sent now.
    pub send_continue: bool,
}

fn lock(m: &Mutex<PipeInner>) -> std::sync::MutexGuard<'_, PipeInner> {
    // Poisoning means a panic while holding it; the fields stay consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl BodyPipe {
    pub fn new(wake: Wake, timeout: Duration, continue_pending: bool, content_length: i64) -> Self {
        BodyPipe {
            inner: Mutex::new(PipeInner {
                continue_pending,
                ..PipeInner::default()
            }),
            ready: Condvar::new(),
            wake,
            timeout,
            content_length,
            limit: AtomicU64::new(u64::MAX),
        }
    }

    /// The route now offered the body has this `max_body`.
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// The loop: how much it may push now. Marks the loop as waiting when
    /// it may not.
    pub fn feed(&self) -> Feed {
        let mut g = lock(&self.inner);
        if g.continue_pending && !g.started {
            g.loop_waiting = true;
            return Feed {
                room: 0,
                send_continue: false,
            };
        }
        let send_continue = std::mem::take(&mut g.continue_pending);
        let room = PIPE_CAPACITY.saturating_sub(g.bytes);
        if room == 0 {
            g.loop_waiting = true;
        }
        Feed {
            room,
            send_continue,
        }
    }

    /// The loop: body bytes; `done` at the end of the body.
    pub fn push(&self, data: Vec<u8>, done: bool) {
        let mut g = lock(&self.inner);
        if !data.is_empty() {
            g.bytes += data.len();
            g.chunks.push_back(data);
        }
        g.done |= done;
        drop(g);
        self.ready.notify_one();
    }

    /// The loop: the body failed (client gone, bad chunking, over the limit).
    pub fn fail(&self, why: String) {
        let mut g = lock(&self.inner);
        if g.error.is_none() {
            g.error = Some(why);
        }
        drop(g);
        self.ready.notify_one();
    }

    /// The pool: one read for the handler.
    fn read(&self, out: &mut [u8]) -> Result<usize, String> {
        let mut g = lock(&self.inner);
        if !g.started {
            g.started = true;
            if g.continue_pending {
                g.loop_waiting = false;
                drop(g);
                (self.wake)();
                g = lock(&self.inner);
            }
        }
        if out.is_empty() {
            return Ok(0);
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            if g.bytes > 0 {
                let mut n = 0;
                while n < out.len() {
                    let front = g.front;
                    let Some(c) = g.chunks.front() else { break };
                    let k = (c.len() - front).min(out.len() - n);
                    out[n..n + k].copy_from_slice(&c[front..front + k]);
                    n += k;
                    if front + k == c.len() {
                        g.chunks.pop_front();
                        g.front = 0;
                    } else {
                        g.front += k;
                    }
                }
                g.bytes -= n;
                let wake = g.loop_waiting && g.bytes < PIPE_CAPACITY / 2;
                if wake {
                    g.loop_waiting = false;
                }
                drop(g);
                if wake {
                    (self.wake)();
                }
                return Ok(n);
            }
            if let Some(e) = &g.error {
                return Err(e.clone());
            }
            if g.done {
                return Ok(0);
            }
            if g.loop_waiting {
                // The loop is waiting for room it now has.
                g.loop_waiting = false;
                drop(g);
                (self.wake)();
                g = lock(&self.inner);
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                let msg = format!("request body stalled for {} s", self.timeout.as_secs());
                g.error = Some(msg.clone());
                return Err(msg);
            }
            g = self
                .ready
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Whether the reader asked for the body.
    pub fn started(&self) -> bool {
        lock(&self.inner).started
    }
}

/// `BodyReaderV1` for a pool handler: `ctx` is a `&BodyPipe`.
pub fn pipe_reader(pipe: &BodyPipe) -> BodyReaderV1 {
    BodyReaderV1 {
        ctx: pipe as *const BodyPipe as *mut c_void,
        read: pipe_read,
        content_length: pipe.content_length,
    }
}

extern "C" fn pipe_read(ctx: *mut c_void, mut buf: RSliceMut<'_, u8>) -> RResult<usize, RString> {
    // SAFETY: ctx is the `&BodyPipe` given to `pipe_reader`, which the pool
    // job keeps alive (in an Arc) for the whole handler call.
    let p = unsafe { &*(ctx as *const BodyPipe) };
    match p.read(buf.as_mut_slice()) {
        Ok(n) => RResult::ROk(n),
        Err(e) => RResult::RErr(RString::from(e)),
    }
}

/// A whole request body: in memory, or (past [`COLLECT_MAX`]) in an
/// unlinked temporary file the loop spooled it to. An inline handler only
/// ever gets one in memory.
pub struct MemBody {
    pub data: Vec<u8>,
    /// The body when it was spooled (`data` is then empty).
    pub file: Option<SpoolFile>,
    pub pos: u64,
    /// What the handler reads as the length: the Content-Length, or for a
    /// chunked body collected whole, its decoded length (as nginx sends a
    /// buffered chunked body on with a length); -1 when unknown.
    pub content_length: i64,
}

impl MemBody {
    pub fn new(data: Vec<u8>, content_length: i64) -> MemBody {
        MemBody {
            data,
            file: None,
            pos: 0,
            content_length,
        }
    }

    /// An empty body.
    pub fn empty() -> MemBody {
        MemBody::new(Vec::new(), 0)
    }

    /// The body's length in bytes.
    pub fn len(&self) -> u64 {
        match &self.file {
            Some(f) => f.len,
            None => self.data.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn reader(&mut self) -> BodyReaderV1 {
        BodyReaderV1 {
            ctx: self as *mut MemBody as *mut c_void,
            read: mem_read,
            content_length: self.content_length,
        }
    }

    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = match &self.file {
            Some(f) => {
                let want = (f.len.saturating_sub(self.pos)).min(out.len() as u64) as usize;
                if want == 0 {
                    return Ok(0);
                }
                std::os::unix::fs::FileExt::read_at(&f.file, &mut out[..want], self.pos)?
            }
            None => {
                let at = self.pos as usize;
                let n = (self.data.len() - at).min(out.len());
                out[..n].copy_from_slice(&self.data[at..at + n]);
                n
            }
        };
        self.pos += n as u64;
        Ok(n)
    }
}

extern "C" fn mem_read(ctx: *mut c_void, mut buf: RSliceMut<'_, u8>) -> RResult<usize, RString> {
    // SAFETY: ctx is the `&mut MemBody` given to `MemBody::reader`, alive
    // and used by this one thread for the whole handler call.
    let m = unsafe { &mut *(ctx as *mut MemBody) };
    match m.read(buf.as_mut_slice()) {
        Ok(n) => RResult::ROk(n),
        Err(e) => RResult::RErr(RString::from(format!("reading the spooled body: {e}"))),
    }
}

/// Bodies collected on the loop stay in memory up to this; past it they
/// are spooled to a temporary file.
pub const COLLECT_MAX: u64 = 64 * 1024;

/// Bytes of request bodies in spool files now, server-wide (`max_spool`).
static SPOOLED: AtomicU64 = AtomicU64::new(0);

/// An unlinked temporary file holding a request body, counted in
/// `SPOOLED` until it is dropped.
pub struct SpoolFile {
    file: std::fs::File,
    len: u64,
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        SPOOLED.fetch_sub(self.len, Ordering::Relaxed);
    }
}

/// Why a body could not be spooled.
pub enum SpoolError {
    /// `max_spool` would be passed: 503, try later.
    Full(u64),
    /// The file could not be made or written: 500.
    Io(std::io::Error),
}

/// A request body being collected on the loop (`request_buffering`).
#[derive(Default)]
pub struct Spool {
    mem: Vec<u8>,
    file: Option<SpoolFile>,
}

impl Spool {
    /// Appends body bytes: in memory up to [`COLLECT_MAX`], then in a file
    /// under `dir`, as long as every spooled body together stays within
    /// `max_spool`.
    pub fn push(
        &mut self,
        data: &[u8],
        dir: &std::path::Path,
        max_spool: u64,
    ) -> Result<(), SpoolError> {
        use std::io::Write;
        if self.file.is_none() && (self.mem.len() + data.len()) as u64 <= COLLECT_MAX {
            self.mem.extend_from_slice(data);
            return Ok(());
        }
        let add = if self.file.is_none() {
            (self.mem.len() + data.len()) as u64
        } else {
            data.len() as u64
        };
        if SPOOLED.fetch_add(add, Ordering::Relaxed) + add > max_spool {
            SPOOLED.fetch_sub(add, Ordering::Relaxed);
            return Err(SpoolError::Full(max_spool));
        }
        // From here `add` is counted, and each file's `len` is what it
        // counts (released when it drops), written or not.
        match &mut self.file {
            Some(f) => {
                f.len += add;
                f.file.write_all(data).map_err(SpoolError::Io)
            }
            None => {
                // PERF: O_TMPFILE, unlinked from the start: nothing is left
                // behind whatever happens, and a few syscalls on the loop.
                let file = tempfile::tempfile_in(dir).map_err(|e| {
                    SPOOLED.fetch_sub(add, Ordering::Relaxed);
                    SpoolError::Io(e)
                })?;
                let mut f = SpoolFile { file, len: add };
                let mem = std::mem::take(&mut self.mem);
                let r = f.file.write_all(&mem).and_then(|_| f.file.write_all(data));
                self.file = Some(f);
                r.map_err(SpoolError::Io)
            }
        }
    }

    /// The whole body, for the handler.
    pub fn into_body(self, content_length: i64) -> MemBody {
        MemBody {
            data: self.mem,
            file: self.file,
            pos: 0,
            content_length,
        }
    }
}

/// `BodyReaderV1::read` when there is no body (log phase, redirects).
pub extern "C" fn no_body_read(_: *mut c_void, _: RSliceMut<'_, u8>) -> RResult<usize, RString> {
    RResult::ROk(0)
}

/// A reader with no body.
pub fn empty_reader() -> BodyReaderV1 {
    BodyReaderV1 {
        ctx: std::ptr::null_mut(),
        read: no_body_read,
        content_length: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(mut b: MemBody) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 7000];
        loop {
            let n = b.read(&mut buf).expect("read");
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn a_spool_stays_in_memory_then_moves_to_a_file_counted_until_dropped() {
        // SPOOLED is server-wide and other tests spool at the same time:
        // what is counted is read off each file's own `len` (its share),
        // and the cap is tested with max_spool 0.
        let dir = std::env::temp_dir();
        let mut s = Spool::default();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        s.push(&data[..60_000], &dir, u64::MAX).ok().expect("push");
        assert!(s.file.is_none());
        s.push(&data[60_000..], &dir, u64::MAX).ok().expect("push");
        assert!(s.mem.is_empty());
        assert_eq!(s.file.as_ref().map(|f| f.len), Some(200_000));
        assert!(SPOOLED.load(Ordering::Relaxed) >= 200_000);
        let body = s.into_body(200_000);
        assert_eq!(body.len(), 200_000);
        assert_eq!(read_all(body), data);
        // Past max_spool: refused, and no file.
        let mut s = Spool::default();
        assert!(matches!(s.push(&data, &dir, 0), Err(SpoolError::Full(0))));
        assert!(s.file.is_none());
        // A small one stays in memory whatever the cap, and reads back.
        let mut s = Spool::default();
        s.push(b"hello", &dir, 0).ok().expect("push");
        assert_eq!(read_all(s.into_body(5)), b"hello");
    }
}
