//! The bytes between the `h2` crate and the socket: an in-memory
//! `AsyncRead + AsyncWrite` that the connection fills from its transport
//! and drains into it, and the waker `h2` is polled with.
//!
//! `h2` is poll-based and never spawns: every call that could make
//! progress is made by the connection's own `drive` on its loop, which
//! polls everything again after each read and each write. So a `Pending`
//! from here needs no waker registration: the next drive retries.

use crate::proto::h1::sock::Sock;
use crate::transport::Transport;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes `h2` may queue for the socket before its writes wait: a cap that
/// keeps memory flat under SETTINGS and PING floods (`h2` stops reading
/// frames while it cannot write), and large enough for a fast download.
pub const OUT_CAP: usize = 256 * 1024;
/// Writes of `h2` at least this large (a DATA frame and its header) go
/// into the transport's own buffer (TLS records) when it has one, instead
/// of being copied into `out` first.
const PASS_MIN: usize = 8 * 1024;

pub struct Bufs<T> {
    /// The client's socket.
    pub sock: Sock<T>,
    /// Read from the socket; `h2` has taken it up to `in_pos`.
    pub inb: Vec<u8>,
    pub in_pos: usize,
    /// The client has closed its side.
    pub eof: bool,
    /// Frames `h2` wrote, not yet sent.
    pub out: Vec<u8>,
    /// Where the unsent part of `out` starts.
    pub out_pos: usize,
    /// `h2` shut its side down.
    pub shut: bool,
}

impl<T: Transport> Bufs<T> {
    pub fn new(sock: Sock<T>) -> Self {
        Bufs {
            sock,
            inb: Vec::new(),
            in_pos: 0,
            eof: false,
            out: Vec::new(),
            out_pos: 0,
            shut: false,
        }
    }
    /// Client bytes not yet taken by `h2`.
    pub fn unread(&self) -> usize {
        self.inb.len() - self.in_pos
    }
    /// Appends client bytes.
    pub fn push_in(&mut self, data: &[u8]) {
        if self.in_pos == self.inb.len() {
            self.inb.clear();
            self.in_pos = 0;
        }
        self.inb.extend_from_slice(data);
    }
    pub fn unsent(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }
    pub fn sent(&mut self, n: usize) {
        self.out_pos += n;
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
    }
}

/// The in-memory I/O `h2` owns; the connection shares it (and its socket).
pub struct Wire<T>(pub Arc<Mutex<Bufs<T>>>);

impl<T> Clone for Wire<T> {
    fn clone(&self) -> Self {
        Wire(self.0.clone())
    }
}

impl<T: Transport> Wire<T> {
    pub fn new(sock: Sock<T>) -> Self {
        Wire(Arc::new(Mutex::new(Bufs::new(sock))))
    }
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Bufs<T>> {
        // Poisoning means a panic while holding it; the buffers stay
        // consistent (plain byte vectors).
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T: Transport> Bufs<T> {
    /// PERF: a large write goes into the transport's buffer (TLS: sealed
    /// into records at once) rather than being copied into `out` and
    /// then into the records: one copy of every body byte fewer. What
    /// `out` holds goes first, to keep the order. `None`: copy it.
    fn pass(&mut self, bufs: &[io::IoSlice<'_>]) -> Option<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total < PASS_MIN {
            return None;
        }
        if self.out_pos < self.out.len() {
            let unsent = &self.out[self.out_pos..];
            match self.sock.io.buffer(unsent) {
                Ok(Some(n)) => {
                    self.sent(n);
                    if self.out_pos < self.out.len() {
                        return None;
                    }
                }
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
        let mut n = 0;
        for b in bufs {
            match self.sock.io.buffer(b) {
                Ok(Some(k)) => {
                    n += k;
                    if k < b.len() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => return Some(Err(e)),
            }
        }
        // The transport's buffer is full: copied into `out` meanwhile.
        (n > 0).then_some(Ok(n))
    }
}

impl<T: Transport> AsyncRead for Wire<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut b = self.lock();
        if b.unread() == 0 {
            return if b.eof {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            };
        }
        let n = b.unread().min(buf.remaining());
        let at = b.in_pos;
        buf.put_slice(&b.inb[at..at + n]);
        b.in_pos += n;
        if b.in_pos == b.inb.len() {
            b.inb.clear();
            b.in_pos = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: Transport> AsyncWrite for Wire<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut b = self.lock();
        if b.shut {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if let Some(r) = b.pass(&[io::IoSlice::new(data)]) {
            return Poll::Ready(r);
        }
        let room = OUT_CAP.saturating_sub(b.out.len() - b.out_pos);
        if room == 0 {
            return Poll::Pending;
        }
        let n = room.min(data.len());
        b.out.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut b = self.lock();
        if b.shut {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if let Some(r) = b.pass(bufs) {
            return Poll::Ready(r);
        }
        let mut room = OUT_CAP.saturating_sub(b.out.len() - b.out_pos);
        if room == 0 {
            return Poll::Pending;
        }
        let mut n = 0;
        for s in bufs {
            let k = room.min(s.len());
            b.out.extend_from_slice(&s[..k]);
            n += k;
            room -= k;
            if room == 0 {
                break;
            }
        }
        Poll::Ready(Ok(n))
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.lock().shut = true;
        Poll::Ready(Ok(()))
    }
}

/// The waker `h2` is polled with: it only notes that something asked to
/// be polled again (every wake happens on the loop, inside a call the
/// connection made, so the connection looks at the flag before it waits).
#[derive(Default)]
pub struct Flag(AtomicBool);

impl Flag {
    /// Whether a wake came since the last call, clearing it.
    pub fn take(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

/// A waker for `flag`.
pub fn waker(flag: &Arc<Flag>) -> Waker {
    Waker::from(flag.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWrite;

    /// A transport that takes nothing (no buffer of its own).
    struct Null;
    impl Transport for Null {
        fn read(&mut self, _: &mut [u8]) -> io::Result<crate::transport::Io> {
            Ok(crate::transport::Io::Blocked)
        }
        fn write(&mut self, _: &[u8], _: bool) -> io::Result<crate::transport::Io> {
            Ok(crate::transport::Io::Blocked)
        }
        fn sendfile(
            &mut self,
            _: std::os::fd::BorrowedFd<'_>,
            _: &mut u64,
            _: u64,
        ) -> io::Result<crate::transport::Io> {
            Ok(crate::transport::Io::Blocked)
        }
        fn shutdown_write(&mut self) {}
    }

    #[test]
    fn writes_wait_when_the_queue_is_full_and_resume_when_sent() {
        let w = Wire::new(Sock::new(Null));
        let flag = Arc::new(Flag::default());
        let wk = waker(&flag);
        let mut cx = Context::from_waker(&wk);
        let mut p = w.clone();
        let big = vec![7u8; OUT_CAP + 10];
        match Pin::new(&mut p).poll_write(&mut cx, &big) {
            Poll::Ready(Ok(n)) => assert_eq!(n, OUT_CAP),
            _ => panic!("first write"),
        }
        assert!(Pin::new(&mut p).poll_write(&mut cx, b"x").is_pending());
        w.lock().sent(OUT_CAP);
        assert!(matches!(
            Pin::new(&mut p).poll_write(&mut cx, b"x"),
            Poll::Ready(Ok(1))
        ));
    }
}
