//! One exchange with an upstream as a non-blocking machine, shared by the
//! proxy and FastCGI and by both paths of each: on the event loop each
//! wait becomes a `Request::wait` (SDK 1.1); on the pool,
//! [`Upstream::block`] polls for it. The machine connects (an idle pooled
//! connection, checked by the pool, or a new one), sends the request the
//! protocol frames ([`Source`]) while it watches what the upstream says,
//! and then leaves the reading to the protocol, which parses
//! `conn.buffered()` and calls [`Upstream::fill`] for more.

use crate::addr::Addr;
use crate::conn::{Conn, Sock, connect_result, connect_start};
use crate::tls::TlsClient;
use rustix::event::{PollFd, PollFlags};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
pub use tamada_sdk::Interest;

/// The three timeouts of an exchange.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    pub send: Duration,
    pub read: Duration,
}

/// The request's bytes as they go, framed by the protocol.
pub trait Source {
    /// Appends the next framed piece to `out`; `Ok(false)` when all of it
    /// was given. On the pool, a body read from the client may block.
    fn next(&mut self, out: &mut Vec<u8>) -> io::Result<bool>;
    /// Starts over from the first byte, for a new connection; false when
    /// what was taken cannot be given again (a body past its replay copy).
    fn rewind(&mut self) -> bool;
}

/// What bytes from the upstream mean before the request is all sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Early {
    /// An answer (HTTP: a 413, a 401, an interim 100 or 103): stop sending
    /// and read it ([`Step::Answered`]).
    Stop,
    /// Output to keep (FastCGI: an application may write before it has
    /// read all of its input): read into the buffer while sending; past
    /// 1 MiB, stop as with `Stop`.
    Keep,
}

/// Buffered early output past which sending stops (`Early::Keep`).
const KEEP_MAX: usize = 1 << 20;

/// How far [`Upstream::send`] got.
#[derive(Debug)]
pub enum Step {
    /// Wait for the socket (until [`Upstream::until`]).
    Wait(Interest),
    /// The request is all sent: read the answer (within `read` from now).
    Sent,
    /// The upstream answered before the request was all sent.
    Answered,
    Failed(Fail),
}

/// Why an exchange failed before the protocol read anything.
#[derive(Debug)]
pub enum Fail {
    /// A pooled connection the upstream had closed, before any byte of
    /// an answer: the request may go again on a new connection.
    Stale,
    Connect(io::Error),
    ConnectTimeout,
    SendTimeout,
    /// Sending failed.
    Io(io::Error),
    /// The request's source failed (the client's body).
    Source(io::Error),
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Connecting,
    Sending,
    Done,
}

/// One exchange's connection and the request going out on it.
pub struct Upstream {
    pub conn: Conn,
    phase: Phase,
    /// Framed bytes taken from the source; `out[sent..]` is still to go.
    out: Vec<u8>,
    sent: usize,
    /// The source gave everything.
    drained: bool,
    /// A wait while sending ended: the upstream may have spoken.
    woken: bool,
    early: Early,
    /// When the current wait ends.
    pub until: Instant,
    pub timeouts: Timeouts,
}

impl Upstream {
    /// Starts an exchange on `pooled`, or on a new connection to `addr`
    /// (`up`: the upstream's index). An error of kind `WouldBlock` is a
    /// unix listener whose backlog is full.
    pub fn start(
        addr: &Addr,
        pooled: Option<Conn>,
        up: usize,
        early: Early,
        timeouts: Timeouts,
        tls: Option<&TlsClient>,
    ) -> io::Result<Upstream> {
        let now = Instant::now();
        let (conn, phase, until) = match pooled {
            Some(mut c) => {
                // Non-blocking whichever path used it last; the pool's
                // path waits by polling.
                c.set_mode(true, timeouts.read, timeouts.send)?;
                (c, Phase::Sending, now + timeouts.send)
            }
            None => {
                let (sock, done) = connect_start(addr)?;
                // An HTTPS upstream: the handshake goes with the request.
                let sock = match (tls.filter(|_| addr.is_tls()), sock) {
                    (Some(t), Sock::Tcp(tcp)) => {
                        Sock::Tls(Box::new(t.connect(tcp, addr.host().unwrap_or(""))?))
                    }
                    (_, s) => s,
                };
                let mut c = Conn::new(sock, up);
                c.nonblocking = true;
                if done {
                    (c, Phase::Sending, now + timeouts.send)
                } else {
                    (c, Phase::Connecting, now + timeouts.connect)
                }
            }
        };
        Ok(Upstream {
            conn,
            phase,
            out: Vec::new(),
            sent: 0,
            drained: false,
            woken: false,
            early,
            until,
            timeouts,
        })
    }

    pub fn fd(&self) -> std::os::fd::RawFd {
        self.conn.sock.as_raw_fd()
    }

    /// Whether the whole request went out (else the connection cannot
    /// serve another request).
    pub fn all_sent(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Whether the connect is still under way.
    pub fn connecting(&self) -> bool {
        self.phase == Phase::Connecting
    }

    /// Goes back to sending the rest (after an interim answer).
    pub fn resume(&mut self) {
        if self.phase == Phase::Done && (!self.drained || self.sent < self.out.len()) {
            self.phase = Phase::Sending;
        }
        self.until = Instant::now() + self.timeouts.send;
    }

    /// Connects, then sends what `src` gives, as far as the socket allows.
    pub fn send(&mut self, src: &mut dyn Source, timed_out: bool) -> Step {
        if self.phase == Phase::Connecting {
            if timed_out {
                return Step::Failed(Fail::ConnectTimeout);
            }
            match connect_result(&self.conn.sock) {
                Ok(()) => {
                    self.phase = Phase::Sending;
                    self.until = Instant::now() + self.timeouts.send;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Step::Wait(Interest::Write);
                }
                Err(e) => return Step::Failed(Fail::Connect(e)),
            }
        } else if timed_out && self.phase == Phase::Sending {
            return Step::Failed(Fail::SendTimeout);
        }
        if std::mem::take(&mut self.woken) {
            // Woken while sending: what did the upstream say?
            match self.conn.fill() {
                Ok(0) => {
                    return Step::Failed(if self.conn.reused {
                        Fail::Stale
                    } else {
                        Fail::Io(io::Error::other(
                            "the upstream closed the connection while the request was sent",
                        ))
                    });
                }
                Ok(_) if self.early == Early::Stop || self.conn.buffered().len() > KEEP_MAX => {
                    return Step::Answered;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Step::Failed(self.stale_or(e)),
            }
        }
        loop {
            if self.sent == self.out.len() {
                if self.drained {
                    // Records a full socket held back (TLS) go first.
                    match self.conn.sock.flush_pending() {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            self.until = Instant::now() + self.timeouts.send;
                            self.woken = true;
                            return Step::Wait(Interest::Both);
                        }
                        Err(e) => return Step::Failed(self.stale_or(e)),
                    }
                    self.phase = Phase::Done;
                    self.until = Instant::now() + self.timeouts.read;
                    return Step::Sent;
                }
                self.out.clear();
                self.sent = 0;
                match src.next(&mut self.out) {
                    Ok(more) => self.drained = !more,
                    Err(e) => return Step::Failed(Fail::Source(e)),
                }
                continue;
            }
            match self.conn.sock.write(&self.out[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.until = Instant::now() + self.timeouts.send;
                    self.woken = true;
                    // Readable too: an early answer wakes it.
                    return Step::Wait(Interest::Both);
                }
                Err(e) => return Step::Failed(self.stale_or(e)),
            }
        }
    }

    /// A failure on a pooled connection before any answer is its having
    /// been closed by the upstream.
    fn stale_or(&self, e: io::Error) -> Fail {
        if self.conn.reused && self.conn.buffered().is_empty() {
            Fail::Stale
        } else {
            Fail::Io(e)
        }
    }

    /// Reads more of the answer into the buffer: the bytes read (0: the
    /// upstream's end), or `WouldBlock` (wait for `Interest::Read`).
    pub fn fill(&mut self) -> io::Result<usize> {
        self.conn.fill()
    }

    /// On the pool: waits for the socket to be ready for `i`, at most
    /// until [`until`](Self::until); false when the time ran out.
    pub fn block(&self, i: Interest) -> bool {
        ready_by(&self.conn.sock, i, self.until)
    }
}

/// On the pool: waits for `fd` to be ready for `i`, at most until
/// `until`; false when the time ran out.
pub fn ready_by(fd: impl std::os::fd::AsFd, i: Interest, until: Instant) -> bool {
    let flags = match i {
        Interest::Read => PollFlags::IN,
        Interest::Write => PollFlags::OUT,
        Interest::Both => PollFlags::IN | PollFlags::OUT,
    };
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let Ok(ts) = rustix::event::Timespec::try_from(left) else {
            return true;
        };
        let mut fds = [PollFd::new(&fd, flags)];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            // Ready, or an error the next call reports.
            _ => return true,
        }
    }
}

/// A request held in memory: for the event loop, and for a replay.
pub struct Bytes {
    data: Vec<u8>,
    given: bool,
}

impl Bytes {
    pub fn new(data: Vec<u8>) -> Bytes {
        Bytes { data, given: false }
    }
}

impl Source for Bytes {
    fn next(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        if self.given {
            return Ok(false);
        }
        self.given = true;
        out.extend_from_slice(&self.data);
        Ok(true)
    }
    fn rewind(&mut self) -> bool {
        self.given = false;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn sends_in_pieces_and_stops_at_an_early_answer() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = Addr::Tcp {
            addr: l.local_addr().unwrap(),
            name: "t".into(),
            tls: false,
        };
        let t = Timeouts {
            connect: Duration::from_secs(2),
            send: Duration::from_secs(2),
            read: Duration::from_secs(2),
        };
        // Far more than the socket buffers: the machine must wait, and the
        // upstream answers before reading it all.
        let big = vec![b'x'; 8 << 20];
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut b = [0u8; 1000];
            s.read_exact(&mut b).unwrap();
            s.write_all(b"HTTP/1.1 413 Too Large\r\n\r\n").unwrap();
            std::thread::sleep(Duration::from_millis(300));
        });
        let mut up = Upstream::start(&addr, None, 0, Early::Stop, t, None).unwrap();
        let mut src = Bytes::new(big);
        let mut timed_out = false;
        let step = loop {
            match up.send(&mut src, timed_out) {
                Step::Wait(i) => timed_out = !up.block(i),
                s => break s,
            }
        };
        assert!(matches!(step, Step::Answered), "{step:?}");
        assert!(!up.all_sent());
        assert!(up.conn.buffered().starts_with(b"HTTP/1.1 413"));
        server.join().unwrap();
    }
}
