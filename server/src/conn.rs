//! One client connection and its state machine, run by a worker:
//!
//! ```text
//! READ_HEAD --complete--> HANDLE (exchange.rs) --> WRITE (output.rs) --> back to READ_HEAD
//!     |                                               |
//!     +--would block: park in reactor for READABLE     +--would block: park for WRITABLE
//! ```
//!
//! `serve` runs until the socket would block (the connection then goes back
//! to the reactor with a deadline) or the connection is done. Pipelined
//! requests already in the buffer are answered in order before reading more.

use crate::Shared;
use crate::exchange;
use crate::host;
use crate::http::Limits;
use crate::http::request::parse;
use crate::output::{Drive, Output};
use mio::net::TcpStream;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::Instant;

/// The read buffer: unparsed bytes from the client.
#[derive(Default)]
pub struct Buf {
    data: Vec<u8>,
    start: usize,
}

/// How much one read asks for.
const READ_CHUNK: usize = 16 * 1024;

impl Buf {
    pub fn data(&self) -> &[u8] {
        &self.data[self.start..]
    }
    pub fn is_empty(&self) -> bool {
        self.start == self.data.len()
    }
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.data.len() {
            self.data.clear();
            self.start = 0;
        }
    }
    /// Frees the memory of an empty buffer (idle connections cost little).
    pub fn shrink(&mut self) {
        if self.is_empty() {
            self.data = Vec::new();
            self.start = 0;
        }
    }
    /// One read from `sock` (non-blocking). `Ok(0)` is end of stream.
    pub fn fill(&mut self, mut sock: &TcpStream) -> io::Result<usize> {
        if self.start > 0 {
            self.data.drain(..self.start);
            self.start = 0;
        }
        let old = self.data.len();
        self.data.resize(old + READ_CHUNK, 0);
        let r = loop {
            match sock.read(&mut self.data[old..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        self.data.truncate(old + *r.as_ref().unwrap_or(&0));
        r
    }
}

/// A connection, owned by exactly one thread at a time.
pub struct Conn {
    pub sock: TcpStream,
    /// The listening socket it came from (selects the site).
    pub bind: SocketAddr,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub buf: Buf,
    /// A response being written.
    pub out: Option<Box<Output>>,
    /// Requests answered on this connection.
    pub served: u64,
    /// When the first byte of the head being read arrived.
    pub head_started: Option<Instant>,
    /// Lingering close: the response is out and our side is shut down;
    /// the client's unread input is read and dropped until it closes or
    /// this deadline passes, so that closing with unread data does not
    /// reset the connection before the client has read the response (an
    /// early 413, say).
    pub linger: Option<Instant>,
    lingered: u64,
}

/// How long and how much a lingering close reads before closing.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_BYTES: u64 = 4 << 20;

impl Conn {
    /// Reads and drops input; the verdict is Close when done.
    fn linger(&mut self) -> Verdict {
        let Some(deadline) = self.linger else {
            return Verdict::Close;
        };
        let mut scratch = [0u8; 16 * 1024];
        loop {
            if Instant::now() >= deadline || self.lingered > LINGER_BYTES {
                return Verdict::Close;
            }
            match (&self.sock).read(&mut scratch) {
                Ok(0) => return Verdict::Close,
                Ok(n) => self.lingered += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Verdict::Read(deadline),
                Err(_) => return Verdict::Close,
            }
        }
    }

    /// Starts a lingering close after the last response.
    fn start_linger(&mut self) -> Verdict {
        let _ = self.sock.shutdown(std::net::Shutdown::Write);
        self.buf = Buf::default();
        self.linger = Some(Instant::now() + LINGER_TIME);
        self.linger()
    }
}

/// What the connection waits for next.
pub enum Verdict {
    /// Park until readable or the deadline.
    Read(Instant),
    /// Park until writable or the deadline.
    Write(Instant),
    /// Still has work (pipelined requests in its buffer) but had its
    /// turn: queue it again behind the other connections.
    Again,
    /// Done: close it.
    Close,
}

/// Requests one worker turn may answer on a connection before it goes to
/// the back of the queue, so a client that pipelines without end cannot
/// keep a worker to itself.
const TURN: u32 = 32;

impl Conn {
    pub fn new(sock: TcpStream, bind: SocketAddr, peer: SocketAddr) -> Conn {
        let local = sock.local_addr().unwrap_or(bind);
        Conn {
            sock,
            bind,
            local,
            peer,
            buf: Buf::default(),
            out: None,
            served: 0,
            head_started: None,
            linger: None,
            lingered: 0,
        }
    }
}

/// Runs the connection until it would block or is done.
pub fn serve(conn: &mut Conn, shared: &Shared) -> Verdict {
    let rt = shared.runtime.load();
    let s = &rt.settings;
    let limits = Limits {
        max_request_line: s.max_request_line.0 as usize,
        max_header_size: s.max_header_size.0 as usize,
        max_headers: s.max_headers,
    };
    if conn.linger.is_some() {
        return conn.linger();
    }
    let mut answered: u32 = 0;
    loop {
        if answered >= TURN && conn.out.is_none() {
            return Verdict::Again;
        }
        if let Some(out) = conn.out.as_mut() {
            // A stream body is pulled from plugin code: give its log
            // records the request's vhost and client.
            let stream_ctx = if out.has_stream() {
                out.info.as_ref().map(|i| (i.vhost.clone(), i.peer))
            } else {
                None
            };
            let drive = match stream_ctx {
                Some((vhost, peer)) => host::with_context(
                    host::Context {
                        vhost: &vhost,
                        peer,
                    },
                    || out.drive(&conn.sock),
                ),
                None => out.drive(&conn.sock),
            };
            match drive {
                Drive::Blocked => return Verdict::Write(Instant::now() + s.send_timeout.0),
                Drive::Done => {
                    let out = conn.out.take();
                    let close = out.as_ref().is_some_and(|o| o.close);
                    if let Some(o) = out {
                        o.finish(None);
                    }
                    conn.served += 1;
                    if close {
                        return conn.start_linger();
                    }
                }
                Drive::Failed(e) => {
                    if let Some(o) = conn.out.take() {
                        o.finish(Some(e));
                    }
                    return Verdict::Close;
                }
            }
        }
        match parse(conn.buf.data(), &limits) {
            Ok(Some(head)) => {
                let started = conn.head_started.take().unwrap_or_else(Instant::now);
                conn.buf.consume(head.head_len);
                let out = exchange::run(conn, head, started, shared);
                conn.out = Some(out);
                answered += 1;
            }
            Ok(None) => match conn.buf.fill(&conn.sock) {
                Ok(0) => return Verdict::Close,
                Ok(_) => {
                    match conn.head_started {
                        None => conn.head_started = Some(Instant::now()),
                        // A head that keeps trickling in is still bound by
                        // the header timeout.
                        Some(t) if t.elapsed() > s.header_timeout.0 => return Verdict::Close,
                        Some(_) => {}
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let deadline = match conn.head_started {
                        Some(t) if !conn.buf.is_empty() => t + s.header_timeout.0,
                        _ if conn.served == 0 => Instant::now() + s.header_timeout.0,
                        _ => Instant::now() + s.idle_timeout.0,
                    };
                    if conn.buf.is_empty() {
                        conn.head_started = None;
                    }
                    conn.buf.shrink();
                    return Verdict::Read(deadline);
                }
                Err(_) => return Verdict::Close,
            },
            Err(e) => {
                // Framing is unknown past a bad head: answer and close.
                let data = conn.buf.data();
                let received = data.len() as u64;
                let line_end = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
                let line = String::from_utf8_lossy(&data[..line_end.min(4096)])
                    .trim_end_matches('\r')
                    .to_owned();
                conn.buf.consume(conn.buf.data().len());
                let started = conn.head_started.take().unwrap_or_else(Instant::now);
                conn.out = Some(exchange::early_error(
                    conn, e, &line, received, started, shared,
                ));
            }
        }
    }
}
