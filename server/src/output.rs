//! Writing a response without blocking: the head, then the body in its
//! form (bytes, a file by `sendfile`, segments, or a pulled stream framed
//! as chunked or by length). `drive` writes until the socket would block
//! and remembers where it stopped, so a slow client costs no thread; a
//! file body resumes its sendfile from the offset reached.
//!
//! When the response is complete (or has failed), `finish` runs the log
//! phase.

use crate::exchange::LogInfo;
use abi_stable::std_types::RVec;
use mio::net::TcpStream;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use tamada_sdk::abi::{SegmentV1, StreamV1};

/// The body still to send.
pub enum OutBody {
    None,
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
        /// Progress inside the front segment.
        pos: u64,
    },
    Stream(Box<StreamOut>),
}

/// A stream being relayed.
pub struct StreamOut {
    pub stream: Option<StreamV1>,
    /// Bytes still expected when the handler declared a Content-Length.
    pub remaining: Option<u64>,
    pub chunked: bool,
    pending: Vec<u8>,
    ppos: usize,
    eof: bool,
}

impl StreamOut {
    pub fn new(stream: StreamV1, remaining: Option<u64>, chunked: bool) -> Self {
        StreamOut {
            stream: Some(stream),
            remaining,
            chunked,
            pending: Vec::new(),
            ppos: 0,
            eof: false,
        }
    }
    fn close(&mut self, client_gone: bool) {
        if let Some(s) = self.stream.take() {
            (s.close)(s.ctx, client_gone);
        }
    }
}

impl Drop for StreamOut {
    fn drop(&mut self) {
        self.close(true);
    }
}

/// Progress of `drive`.
pub enum Drive {
    Done,
    Blocked,
    Failed(String),
}

/// A response on its way out.
pub struct Output {
    pub head: Vec<u8>,
    pos: usize,
    /// Bytes of `head` that are the status line and headers (the rest is body).
    head_len: usize,
    pub body: OutBody,
    /// Close the connection after this response.
    pub close: bool,
    pub status: u16,
    pub total_sent: u64,
    /// The socket's send buffer was grown for a large body.
    big_buffer: bool,
    /// What the log phase needs; None for responses no vhost sees.
    pub info: Option<LogInfo>,
}

const STREAM_CHUNK: usize = 32 * 1024;

/// Bodies larger than this get a larger socket send buffer.
const BIG_BODY: u64 = 1 << 20;

/// PERF: every time the send buffer fills, the connection goes back to the
/// reactor and later to a worker again; a 10 MiB file took dozens of such
/// round trips with the default buffer.
fn grow_send_buffer(sock: &TcpStream) {
    let size: libc::c_int = 4 << 20;
    // SAFETY: setsockopt on an open socket with a pointer to a c_int that
    // lives for the call and its correct length.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// One non-blocking write; `Ok(None)` means it would block.
fn write_some(mut sock: &TcpStream, data: &[u8]) -> io::Result<Option<usize>> {
    loop {
        match sock.write(data) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "connection closed",
                ));
            }
            Ok(n) => return Ok(Some(n)),
            Err(e) if would_block(&e) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Like `write_some`, with MSG_MORE when more data follows at once.
fn send_some(sock: &TcpStream, data: &[u8], more: bool) -> io::Result<Option<usize>> {
    if !more {
        return write_some(sock, data);
    }
    loop {
        // SAFETY: `data` is a valid slice for the call and the socket is
        // open (owned by `sock`).
        let r = unsafe {
            libc::send(
                sock.as_raw_fd(),
                data.as_ptr() as *const libc::c_void,
                data.len(),
                libc::MSG_MORE | libc::MSG_NOSIGNAL,
            )
        };
        if r >= 0 {
            if r == 0 && !data.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "connection closed",
                ));
            }
            return Ok(Some(r as usize));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => return Ok(None),
            io::ErrorKind::Interrupted => continue,
            _ => return Err(e),
        }
    }
}

/// One non-blocking sendfile; `Ok(None)` means it would block.
fn sendfile_some(
    sock: &TcpStream,
    fd: &OwnedFd,
    off: &mut u64,
    len: u64,
) -> io::Result<Option<usize>> {
    let count = len.min(1 << 30) as usize;
    loop {
        let mut o = *off as libc::off_t;
        // SAFETY: both descriptors are open for the duration of the call
        // (owned by `sock` and `fd`); `o` is a valid off_t the kernel updates.
        let r = unsafe { libc::sendfile(sock.as_raw_fd(), fd.as_raw_fd(), &mut o, count) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if would_block(&e) {
                return Ok(None);
            }
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        *off = o as u64;
        if r == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file ended before its announced length (truncated while sent?)",
            ));
        }
        return Ok(Some(r as usize));
    }
}

impl Output {
    pub fn new(
        head: Vec<u8>,
        body: OutBody,
        close: bool,
        status: u16,
        info: Option<LogInfo>,
    ) -> Box<Output> {
        let head_len = head.len();
        Box::new(Output {
            head,
            pos: 0,
            head_len,
            body,
            close,
            status,
            total_sent: 0,
            big_buffer: false,
            info,
        })
    }

    /// Appends body bytes to the head buffer (one write for small responses).
    pub fn inline_body(&mut self, bytes: &[u8]) {
        self.head.extend_from_slice(bytes);
    }

    /// Whether the body is pulled from a plugin's stream.
    pub fn has_stream(&self) -> bool {
        matches!(self.body, OutBody::Stream(_))
    }

    /// Body bytes sent so far.
    pub fn body_sent(&self) -> u64 {
        self.total_sent.saturating_sub(self.head_len as u64)
    }

    /// Writes until done or the socket would block.
    pub fn drive(&mut self, sock: &TcpStream) -> Drive {
        match self.drive_inner(sock) {
            Ok(true) => Drive::Done,
            Ok(false) => Drive::Blocked,
            Err(e) => Drive::Failed(e.to_string()),
        }
    }

    fn drive_inner(&mut self, sock: &TcpStream) -> io::Result<bool> {
        loop {
            if self.pos < self.head.len() {
                // PERF: with a file body next, MSG_MORE lets the kernel put
                // the head and the first file bytes in one segment (the
                // socket has TCP_NODELAY; a lone head cost a packet and a
                // client wake-up of its own).
                // Only when bytes do follow: a held-back head with nothing
                // after it would wait for the kernel's cork timer.
                let more = match &self.body {
                    OutBody::File { off, end, .. } => end > off,
                    OutBody::Segments { segs, .. } => segs.back().is_some_and(|last| {
                        if last.file < 0 {
                            !last.bytes.is_empty()
                        } else {
                            last.len > 0
                        }
                    }),
                    _ => false,
                };
                match send_some(sock, &self.head[self.pos..], more)? {
                    Some(n) => {
                        self.pos += n;
                        self.total_sent += n as u64;
                        continue;
                    }
                    None => return Ok(false),
                }
            }
            match &mut self.body {
                OutBody::None => return Ok(true),
                OutBody::Bytes { data, pos } => {
                    if *pos >= data.len() {
                        self.body = OutBody::None;
                        continue;
                    }
                    match write_some(sock, &data[*pos..])? {
                        Some(n) => {
                            *pos += n;
                            self.total_sent += n as u64;
                        }
                        None => return Ok(false),
                    }
                }
                OutBody::File { fd, off, end } => {
                    if *off >= *end {
                        self.body = OutBody::None;
                        continue;
                    }
                    if !self.big_buffer && *end - *off > BIG_BODY {
                        self.big_buffer = true;
                        grow_send_buffer(sock);
                    }
                    match sendfile_some(sock, fd, off, *end - *off)? {
                        Some(n) => self.total_sent += n as u64,
                        None => return Ok(false),
                    }
                }
                OutBody::Segments { files, segs, pos } => {
                    let Some(front) = segs.front() else {
                        self.body = OutBody::None;
                        continue;
                    };
                    if front.file < 0 {
                        let data = &front.bytes[*pos as usize..];
                        if data.is_empty() {
                            segs.pop_front();
                            *pos = 0;
                            continue;
                        }
                        match write_some(sock, data)? {
                            Some(n) => {
                                *pos += n as u64;
                                self.total_sent += n as u64;
                            }
                            None => return Ok(false),
                        }
                    } else {
                        if *pos >= front.len {
                            segs.pop_front();
                            *pos = 0;
                            continue;
                        }
                        let fd = files.get(front.file as usize).ok_or_else(|| {
                            io::Error::other("segment names a file the body does not hold")
                        })?;
                        let mut off = front.offset + *pos;
                        match sendfile_some(sock, fd, &mut off, front.len - *pos)? {
                            Some(n) => {
                                *pos += n as u64;
                                self.total_sent += n as u64;
                            }
                            None => return Ok(false),
                        }
                    }
                }
                OutBody::Stream(st) => {
                    if st.ppos < st.pending.len() {
                        match write_some(sock, &st.pending[st.ppos..])? {
                            Some(n) => {
                                st.ppos += n;
                                self.total_sent += n as u64;
                                continue;
                            }
                            None => return Ok(false),
                        }
                    }
                    if st.eof {
                        st.close(false);
                        self.body = OutBody::None;
                        continue;
                    }
                    refill(st)?;
                }
            }
        }
    }

    /// The log phase: runs the vhost's loggers for this exchange.
    pub fn finish(mut self: Box<Self>, error: Option<String>) {
        let completed = error.is_none();
        // Release fds and streams before logging (a client that left has
        // its resources freed at once).
        self.body = OutBody::None;
        if let Some(info) = self.info.take() {
            info.log(
                self.status,
                self.body_sent(),
                self.total_sent,
                completed,
                error,
            );
        }
    }
}

/// Pulls the next piece of a stream into `pending`, framed.
fn refill(st: &mut StreamOut) -> io::Result<()> {
    let Some(s) = st.stream.as_ref() else {
        st.eof = true;
        return Ok(());
    };
    let want = match st.remaining {
        Some(0) => 0,
        Some(r) => r.min(STREAM_CHUNK as u64) as usize,
        None => STREAM_CHUNK,
    };
    st.pending.clear();
    st.ppos = 0;
    if want == 0 {
        st.eof = true;
        return Ok(());
    }
    // Room for the chunk-size line in front.
    const PRE: usize = 10;
    st.pending.resize(PRE + want, 0);
    let r = (s.read)(
        s.ctx,
        abi_stable::std_types::RSliceMut::from_mut_slice(&mut st.pending[PRE..]),
    )
    .into_result();
    let n = match r {
        Ok(n) => n.min(want),
        Err(e) => {
            st.pending.clear();
            return Err(io::Error::other(format!("body stream failed: {e}")));
        }
    };
    if n == 0 {
        if let Some(r) = st.remaining
            && r > 0
        {
            st.pending.clear();
            return Err(io::Error::other(format!(
                "body stream ended {r} bytes short of its Content-Length"
            )));
        }
        st.eof = true;
        st.pending.clear();
        if st.chunked {
            st.pending.extend_from_slice(b"0\r\n\r\n");
        }
        return Ok(());
    }
    if let Some(r) = st.remaining.as_mut() {
        *r -= n as u64;
    }
    if st.chunked {
        let size = format!("{n:x}\r\n");
        let start = PRE - size.len();
        st.pending[start..PRE].copy_from_slice(size.as_bytes());
        st.pending.truncate(PRE + n);
        st.pending.extend_from_slice(b"\r\n");
        st.ppos = start;
    } else {
        st.pending.truncate(PRE + n);
        st.ppos = PRE;
    }
    Ok(())
}
