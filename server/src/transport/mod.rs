//! The socket seam and the one place where `WouldBlock` and `Interrupted`
//! are handled.
//!
//! A connection talks to its peer only through [`Transport`]: the event
//! loop gives it a [`Stream`]: a mio `TcpStream`, or TLS over one
//! ([`tls::TlsStream`]); unit tests give it scripted I/O that splits reads
//! and stalls writes (`proto/h1/tests.rs`). Routing and plugins never know
//! which. Every call is non-blocking and
//! answers with [`Io`]: `Ready(n)`, `Blocked` (try again after the next
//! readiness event) or an error. `Interrupted` is retried inside.

pub mod tls;
mod tlsinfo;

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};

/// The outcome of one non-blocking call.
#[derive(Debug, PartialEq, Eq)]
pub enum Io {
    /// That many bytes moved (0 from a read is the end of the stream).
    Ready(usize),
    /// The socket would block.
    Blocked,
}

/// Runs `f` until it is not interrupted; maps `WouldBlock` to `Blocked`.
pub fn retry(mut f: impl FnMut() -> io::Result<usize>) -> io::Result<Io> {
    loop {
        match f() {
            Ok(n) => return Ok(Io::Ready(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Io::Blocked),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// What a connection needs from its socket.
pub trait Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<Io>;
    /// Writes `data`; `more` says that more bytes follow at once
    /// (`MSG_MORE`: the kernel may hold a small head back for the body).
    fn write(&mut self, data: &[u8], more: bool) -> io::Result<Io>;
    /// Sends `len` bytes of `file` from `*off` (advanced by what was sent).
    fn sendfile(&mut self, file: BorrowedFd<'_>, off: &mut u64, len: u64) -> io::Result<Io>;
    /// Stops sending (the lingering close).
    fn shutdown_write(&mut self);
    /// Prepares the socket for a large body.
    fn large_body(&mut self) {}
    /// Bytes the transport itself still has to send (TLS records).
    fn pending(&self) -> bool {
        false
    }
    /// Sends what [`pending`](Self::pending) has; false while the socket
    /// is full.
    fn flush(&mut self) -> io::Result<bool> {
        Ok(true)
    }
    /// What TLS negotiated, on a TLS connection.
    fn tls(&self) -> Option<&std::sync::Arc<tls::TlsInfo>> {
        None
    }
    /// Takes `data` into the transport's own send buffer, without a
    /// syscall (TLS: sealed into records, sent by [`flush`](Self::flush)):
    /// how much it took (0 when full), or `None` when it has no buffer.
    fn buffer(&mut self, _data: &[u8]) -> io::Result<Option<usize>> {
        Ok(None)
    }
}

/// A client connection's transport: plain TCP, or TLS over it.
pub enum Stream {
    Plain(mio::net::TcpStream),
    Tls(Box<tls::TlsStream>),
}

impl Stream {
    /// The socket (for the loop's poll).
    pub fn socket(&mut self) -> &mut mio::net::TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => t.socket_mut(),
        }
    }
}

impl Transport for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<Io> {
        match self {
            Stream::Plain(s) => Transport::read(s, buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
    fn write(&mut self, data: &[u8], more: bool) -> io::Result<Io> {
        match self {
            Stream::Plain(s) => Transport::write(s, data, more),
            Stream::Tls(t) => t.write(data, more),
        }
    }
    fn sendfile(&mut self, file: BorrowedFd<'_>, off: &mut u64, len: u64) -> io::Result<Io> {
        match self {
            Stream::Plain(s) => s.sendfile(file, off, len),
            Stream::Tls(t) => t.sendfile(file, off, len),
        }
    }
    fn shutdown_write(&mut self) {
        match self {
            Stream::Plain(s) => Transport::shutdown_write(s),
            Stream::Tls(t) => t.shutdown_write(),
        }
    }
    fn large_body(&mut self) {
        match self {
            Stream::Plain(s) => s.large_body(),
            Stream::Tls(t) => t.large_body(),
        }
    }
    fn pending(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t.pending(),
        }
    }
    fn flush(&mut self) -> io::Result<bool> {
        match self {
            Stream::Plain(_) => Ok(true),
            Stream::Tls(t) => t.flush(),
        }
    }
    fn tls(&self) -> Option<&std::sync::Arc<tls::TlsInfo>> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(t) => t.tls(),
        }
    }
    fn buffer(&mut self, data: &[u8]) -> io::Result<Option<usize>> {
        match self {
            Stream::Plain(_) => Ok(None),
            Stream::Tls(t) => t.buffer(data),
        }
    }
}

impl Transport for mio::net::TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<Io> {
        retry(|| Read::read(self, buf))
    }

    fn write(&mut self, data: &[u8], more: bool) -> io::Result<Io> {
        let r = if more {
            let fd = self.as_raw_fd();
            retry(|| {
                // SAFETY: `data` is a valid slice for the call and the
                // socket is open (owned by `self`).
                let r = unsafe {
                    libc::send(
                        fd,
                        data.as_ptr() as *const libc::c_void,
                        data.len(),
                        libc::MSG_MORE | libc::MSG_NOSIGNAL,
                    )
                };
                if r < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(r as usize)
                }
            })
        } else {
            retry(|| Write::write(self, data))
        };
        match r {
            Ok(Io::Ready(0)) if !data.is_empty() => Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "connection closed",
            )),
            r => r,
        }
    }

    fn sendfile(&mut self, file: BorrowedFd<'_>, off: &mut u64, len: u64) -> io::Result<Io> {
        let count = len.min(1 << 30) as usize;
        let (sock, fd) = (self.as_raw_fd(), file.as_raw_fd());
        let r = retry(|| {
            let mut o = *off as libc::off_t;
            // SAFETY: both descriptors are open for the call (owned by
            // `self` and borrowed from the body); `o` is a valid off_t
            // the kernel updates.
            let r = unsafe { libc::sendfile(sock, fd, &mut o, count) };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                *off = o as u64;
                Ok(r as usize)
            }
        })?;
        if r == Io::Ready(0) && len > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file ended before its announced length (truncated while sent?)",
            ));
        }
        Ok(r)
    }

    fn shutdown_write(&mut self) {
        let _ = mio::net::TcpStream::shutdown(self, std::net::Shutdown::Write);
    }

    /// PERF: TCP_NOTSENT_LOWAT keeps at most 128 KiB queued unsent, so the
    /// socket is writable again only when that little is left. Without it
    /// sendfile queues megabytes at once, and the receiver's ACKs then
    /// transmit them from the receiver's own context (on loopback, the
    /// client pays for our sending): 10 MiB files went 180/s -> 280/s
    /// against wrk on one machine, on a par with lighttpd. (A 4 MiB send
    /// buffer, tried first, changed nothing.)
    fn large_body(&mut self) {
        let lowat: libc::c_int = 128 << 10;
        // SAFETY: setsockopt on an open socket with a pointer to a c_int
        // that lives for the call, and its correct length.
        unsafe {
            libc::setsockopt(
                self.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                &lowat as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}
