//! The upstreams of a route: connections (TCP or unix), the keep-alive
//! pool of each, the passive health check and the choice of the next one.

use crate::config::{Addr, Balance, Settings};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A connected socket.
pub enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    pub fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_read_timeout(Some(t)),
            Sock::Unix(s) => s.set_read_timeout(Some(t)),
        }
    }
    pub fn set_write_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_write_timeout(Some(t)),
            Sock::Unix(s) => s.set_write_timeout(Some(t)),
        }
    }
}

impl AsFd for Sock {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Sock::Tcp(s) => s.as_fd(),
            Sock::Unix(s) => s.as_fd(),
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // MSG_NOSIGNAL: an upstream that closed gives EPIPE, not SIGPIPE.
        rustix::net::send(self.as_fd(), buf, rustix::net::SendFlags::NOSIGNAL)
            .map_err(io::Error::from)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A connection to one upstream, with what was read past the last
/// response.
pub struct Conn {
    pub sock: Sock,
    /// The upstream's index in the route's list.
    pub up: usize,
    /// Taken from the pool (it served a request before).
    pub reused: bool,
    pub buf: Vec<u8>,
    pub pos: usize,
}

impl Conn {
    /// Bytes read and not used yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }
    pub fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }
    /// Reads more into the buffer; `Ok(0)` is the upstream's end.
    pub fn fill(&mut self) -> io::Result<usize> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + 16 * 1024, 0);
        let r = loop {
            match self.sock.read(&mut self.buf[old..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        self.buf.truncate(old + *r.as_ref().unwrap_or(&0));
        r
    }
    /// Whether an idle connection is still open: nothing to read yet (a
    /// FIN or unasked-for bytes mean it must not be used).
    fn still_open(&self) -> bool {
        let mut b = [0u8; 1];
        matches!(
            rustix::net::recv(
                self.sock.as_fd(),
                &mut b,
                rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT
            ),
            Err(rustix::io::Errno::AGAIN)
        )
    }
}

/// Connects to `addr` within `timeout`.
pub fn connect(addr: &Addr, timeout: Duration) -> io::Result<Sock> {
    match addr {
        Addr::Tcp { addr, .. } => {
            let s = TcpStream::connect_timeout(addr, timeout)?;
            s.set_nodelay(true)?;
            Ok(Sock::Tcp(s))
        }
        Addr::Unix(p) => UnixStream::connect(p).map(Sock::Unix),
    }
}

/// One upstream's shared state.
pub struct Upstream {
    pub addr: Addr,
    pub label: String,
    /// Requests in flight (least_conn).
    pub active: AtomicUsize,
    idle: Mutex<Vec<(Conn, Instant)>>,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    fails: u32,
    window: Option<Instant>,
    down_until: Option<Instant>,
}

/// The route's upstreams.
pub struct Upstreams {
    pub list: Vec<Upstream>,
    next: AtomicUsize,
    balance: Balance,
    keepalive: usize,
    keepalive_timeout: Duration,
    max_fails: u32,
    fail_timeout: Duration,
}

impl Upstreams {
    pub fn new(s: &Settings) -> Upstreams {
        Upstreams {
            list: s
                .upstreams
                .iter()
                .map(|a| Upstream {
                    label: a.label(),
                    addr: a.clone(),
                    active: AtomicUsize::new(0),
                    idle: Mutex::new(Vec::new()),
                    health: Mutex::new(Health::default()),
                })
                .collect(),
            next: AtomicUsize::new(0),
            balance: s.balance,
            keepalive: s.keepalive,
            keepalive_timeout: s.keepalive_timeout,
            max_fails: s.max_fails,
            fail_timeout: s.fail_timeout,
        }
    }

    fn is_down(&self, i: usize, now: Instant) -> bool {
        let h = self.list[i]
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        h.down_until.is_some_and(|t| now < t)
    }

    /// The next upstream to try, not in `tried` and not taken out by the
    /// health check; `None` when there is none left.
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let n = self.list.len();
        let now = Instant::now();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let candidates = (0..n)
            .map(|k| (start + k) % n)
            .filter(|i| !tried.contains(i) && !self.is_down(*i, now));
        match self.balance {
            Balance::RoundRobin => candidates.into_iter().next(),
            Balance::LeastConn => {
                candidates.min_by_key(|&i| self.list[i].active.load(Ordering::Relaxed))
            }
        }
    }

    /// An idle connection to upstream `i` that is still open.
    pub fn take_idle(&self, i: usize) -> Option<Conn> {
        let mut idle = self.list[i].idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((c, since)) = idle.pop() {
            if since.elapsed() < self.keepalive_timeout && c.still_open() {
                return Some(c);
            }
            // Expired or closed by the upstream: dropped (closed) here.
        }
        None
    }

    /// Gives back a connection whose last response ended cleanly.
    pub fn put_idle(&self, mut c: Conn) {
        if self.keepalive == 0 || !c.buffered().is_empty() {
            return;
        }
        c.buf = Vec::new();
        c.pos = 0;
        c.reused = true;
        let mut idle = self.list[c.up]
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        idle.retain(|(_, since)| since.elapsed() < self.keepalive_timeout);
        if idle.len() >= self.keepalive {
            idle.remove(0);
        }
        idle.push((c, Instant::now()));
    }

    /// Upstream `i` answered.
    pub fn ok(&self, i: usize) {
        let mut h = self.list[i]
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if h.down_until.take().is_some() {
            log::info!("upstream {} answers again", self.list[i].label);
        }
        h.fails = 0;
        h.window = None;
    }

    /// Upstream `i` failed (`why`); after `max_fails` within
    /// `fail_timeout` it is taken out for `fail_timeout`, said once.
    pub fn failed(&self, i: usize, why: &str) {
        if self.max_fails == 0 {
            return;
        }
        let now = Instant::now();
        let mut h = self.list[i]
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if h.down_until.is_some_and(|t| now < t) {
            return;
        }
        if h.window
            .is_none_or(|w| now.duration_since(w) > self.fail_timeout)
        {
            h.window = Some(now);
            h.fails = 0;
        }
        h.fails += 1;
        if h.fails >= self.max_fails {
            h.down_until = Some(now + self.fail_timeout);
            h.fails = 0;
            h.window = None;
            log::error!(
                "upstream {} is out for {:?} after {} failure(s): {why}",
                self.list[i].label,
                self.fail_timeout,
                self.max_fails
            );
        }
    }
}
