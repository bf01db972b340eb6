//! Connections to an upstream (TCP or unix): a non-blocking connect, a
//! read buffer, a liveness check for idle ones, and a bounded pool of idle
//! connections. The exchange on a connection is `exchange.rs`.

use crate::addr::Addr;
use crate::tls::TlsSock;
use rustix::event::{PollFd, PollFlags};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How much one read asks for.
const READ: usize = 16 * 1024;

/// A connected socket.
pub enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// An HTTPS upstream (`tls.rs`).
    Tls(Box<TlsSock>),
}

impl Sock {
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Sock::Tcp(s) => Some(s),
            Sock::Tls(t) => Some(&t.tcp),
            Sock::Unix(_) => None,
        }
    }
    pub fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        match (self, self.tcp()) {
            (Sock::Unix(s), _) => s.set_read_timeout(Some(t)),
            (_, Some(s)) => s.set_read_timeout(Some(t)),
            _ => Ok(()),
        }
    }
    pub fn set_write_timeout(&self, t: Duration) -> io::Result<()> {
        match (self, self.tcp()) {
            (Sock::Unix(s), _) => s.set_write_timeout(Some(t)),
            (_, Some(s)) => s.set_write_timeout(Some(t)),
            _ => Ok(()),
        }
    }
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match (self, self.tcp()) {
            (Sock::Unix(s), _) => s.set_nonblocking(on),
            (_, Some(s)) => s.set_nonblocking(on),
            _ => Ok(()),
        }
    }
    /// Sends what the transport holds back (TLS records); `WouldBlock`
    /// while the socket is full.
    pub fn flush_pending(&mut self) -> io::Result<()> {
        match self {
            Sock::Tls(t) => t.flush(),
            _ => Ok(()),
        }
    }
    pub fn is_tls(&self) -> bool {
        matches!(self, Sock::Tls(_))
    }
}

impl std::os::fd::AsRawFd for Sock {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl From<Sock> for std::os::fd::OwnedFd {
    fn from(s: Sock) -> Self {
        match s {
            Sock::Tcp(s) => s.into(),
            Sock::Unix(s) => s.into(),
            Sock::Tls(t) => t.tcp.into(),
        }
    }
}

impl AsFd for Sock {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Sock::Tcp(s) => s.as_fd(),
            Sock::Unix(s) => s.as_fd(),
            Sock::Tls(t) => t.tcp.as_fd(),
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
            Sock::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Sock::Tls(t) = self {
            return t.write(buf);
        }
        // MSG_NOSIGNAL: an upstream that closed gives EPIPE, not SIGPIPE.
        rustix::net::send(self.as_fd(), buf, rustix::net::SendFlags::NOSIGNAL)
            .map_err(io::Error::from)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.flush_pending()
    }
}

/// Starts a non-blocking connect (inline use): the socket, and whether it
/// is connected already. When not, it is once writable, and
/// [`connect_result`] says how it went. A unix socket whose listener's
/// backlog is full is an error of kind `WouldBlock`.
pub fn connect_start(addr: &Addr) -> io::Result<(Sock, bool)> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let (domain, sa) = match addr {
        Addr::Tcp { addr, .. } => (Domain::for_address(*addr), SockAddr::from(*addr)),
        Addr::Unix(p) => (Domain::UNIX, SockAddr::unix(p)?),
    };
    // Non-blocking from the start (no fcntl calls).
    let s = Socket::new(domain, Type::STREAM.nonblocking(), None)?;
    if matches!(addr, Addr::Tcp { .. }) {
        s.set_tcp_nodelay(true)?;
    }
    let done = match s.connect(&sa) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error()) => false,
        Err(e) => return Err(e),
    };
    let fd = std::os::fd::OwnedFd::from(s);
    let sock = match addr {
        Addr::Tcp { .. } => Sock::Tcp(TcpStream::from(fd)),
        Addr::Unix(_) => Sock::Unix(UnixStream::from(fd)),
    };
    Ok((sock, done))
}

/// How a connect that [`connect_start`] left going ended: `WouldBlock`
/// while it is still under way (the socket is not writable yet).
pub fn connect_result(s: &Sock) -> io::Result<()> {
    let mut fds = [PollFd::new(s, PollFlags::OUT)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    if !matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0) {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    let e = match s {
        Sock::Tcp(t) => t.take_error()?,
        Sock::Unix(u) => u.take_error()?,
        Sock::Tls(t) => t.tcp.take_error()?,
    };
    match e {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Methods that may run twice with the same effect (RFC 9110 9.2.2):
/// only these are sent again after a failure that may have reached the
/// upstream.
pub fn idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// Timeout options that must not be 0 (`connect_timeout: 0` would fail
/// at once, `read_timeout: 0` would wait forever): the first such name.
pub fn zero_timeout(timeouts: &[(&str, Option<tamada_sdk::units::Secs>)]) -> Result<(), String> {
    match timeouts
        .iter()
        .find(|(_, t)| t.is_some_and(|t| t.0.is_zero()))
    {
        Some((name, _)) => Err(format!(
            "{name}: 0 would wait forever or fail at once; give a duration (60s)"
        )),
        None => Ok(()),
    }
}

/// A connection to one upstream, with what was read and not used yet.
pub struct Conn {
    pub sock: Sock,
    /// The upstream's index in the plugin's list.
    pub up: usize,
    /// Taken from a pool (it served a request before).
    pub reused: bool,
    /// The socket is in non-blocking mode (an inline handler's, SDK 1.1
    /// `wait`): a read or write that would block says `WouldBlock`.
    pub nonblocking: bool,
    /// The read and send timeouts are set on the socket (blocking use).
    pub timeouts_set: bool,
    /// Storage (zeroed once, when it grows): the bytes read and not used
    /// yet are `buf[pos..end]`.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
}

impl Conn {
    pub fn new(sock: Sock, up: usize) -> Conn {
        Conn {
            sock,
            up,
            reused: false,
            nonblocking: false,
            timeouts_set: false,
            buf: Vec::new(),
            pos: 0,
            end: 0,
        }
    }
    /// Puts the socket in non-blocking mode (inline use) or back in
    /// blocking mode with its timeouts (the pool's); a call that changes
    /// nothing costs nothing.
    pub fn set_mode(
        &mut self,
        nonblocking: bool,
        read: Duration,
        send: Duration,
    ) -> io::Result<()> {
        if !nonblocking && !self.timeouts_set {
            self.sock.set_read_timeout(read)?;
            self.sock.set_write_timeout(send)?;
            self.timeouts_set = true;
        }
        if self.nonblocking != nonblocking {
            self.sock.set_nonblocking(nonblocking)?;
            self.nonblocking = nonblocking;
        }
        Ok(())
    }
    /// The socket and the bytes read past what was used (a relay's).
    pub fn into_parts(self) -> (Sock, Vec<u8>) {
        let rest = self.buf[self.pos..self.end].to_vec();
        (self.sock, rest)
    }
    /// Bytes read and not used yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }
    pub fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.end);
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
        }
    }
    /// Reads more into the buffer; `Ok(0)` is the upstream's end.
    pub fn fill(&mut self) -> io::Result<usize> {
        // What was used goes: the buffer holds at most what is still
        // unread plus one read (a long stream never grows it).
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        // PERF: the storage is zeroed when it grows only, not per read.
        if self.buf.len() - self.end < READ {
            self.buf.resize(self.end + READ, 0);
        }
        let end = self.end;
        let r = loop {
            match self.sock.read(&mut self.buf[end..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        self.end += *r.as_ref().unwrap_or(&0);
        r
    }
    /// Until `buffered()` holds `n` bytes; false at the upstream's end.
    pub fn fill_to(&mut self, n: usize) -> io::Result<bool> {
        while self.buffered().len() < n {
            if self.fill()? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }
    /// Whether an idle connection is still open: nothing to read yet (a
    /// FIN or unasked-for bytes mean it must not be used).
    pub fn still_open(&mut self) -> bool {
        if let Sock::Tls(t) = &mut self.sock {
            return t.still_open();
        }
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

/// Idle connections to one upstream: newest first, bounded, each kept
/// at most `timeout` and checked before it is handed out. A sharded pool
/// has as many lists as CPUs (as many as the server has event loops by
/// default), each bounded by `max`; a thread always uses the same one
/// (as nginx's `keepalive` is per worker), so the event loops rarely
/// share a lock. Every list is pruned now and then, whoever uses it.
pub struct IdlePool {
    shards: Vec<Mutex<Vec<(Conn, Instant)>>>,
    max: usize,
    timeout: Duration,
    puts: std::sync::atomic::AtomicUsize,
}

static NEXT_SHARD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

thread_local! {
    /// This thread's list: threads are spread over the lists in the order
    /// they first use a pool.
    static SHARD: usize = NEXT_SHARD.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Every this many gives, all lists are pruned (a list no thread uses
/// any more must not keep connections past their time).
const PRUNE_ALL: usize = 256;

impl IdlePool {
    /// One list for all threads: at most `max` idle connections in all.
    pub fn new(max: usize, timeout: Duration) -> IdlePool {
        IdlePool::with_shards(max, timeout, 1)
    }
    /// One list per CPU, each of at most `max`.
    pub fn per_cpu(max: usize, timeout: Duration) -> IdlePool {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        IdlePool::with_shards(max, timeout, n)
    }
    fn with_shards(max: usize, timeout: Duration, n: usize) -> IdlePool {
        IdlePool {
            shards: (0..n.max(1)).map(|_| Mutex::new(Vec::new())).collect(),
            max,
            timeout,
            puts: std::sync::atomic::AtomicUsize::new(0),
        }
    }
    fn shard(&self) -> std::sync::MutexGuard<'_, Vec<(Conn, Instant)>> {
        let i = if self.shards.len() == 1 {
            0
        } else {
            // A thread keeps its list (an event loop's connections stay
            // its own; a CPU may move it, so not `sched_getcpu`).
            SHARD.with(|s| *s) % self.shards.len()
        };
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }
    /// An idle connection not past its time that the upstream has not
    /// closed and has written nothing on since its last answer (one
    /// `recv` with MSG_PEEK each). SECURITY: never handed out unchecked:
    /// bytes on an idle connection (a late or unasked-for response, a
    /// 408 before a close) would be read as the next request's answer and
    /// reach another client.
    pub fn take(&self) -> Option<Conn> {
        if self.max == 0 {
            return None;
        }
        let mut idle = self.shard();
        let now = Instant::now();
        while let Some((mut c, since)) = idle.pop() {
            if now.duration_since(since) < self.timeout && c.still_open() {
                return Some(c);
            }
            // Expired, closed by the upstream or with bytes waiting:
            // dropped (closed) here.
        }
        None
    }
    /// Gives back a connection whose last exchange ended cleanly.
    pub fn put(&self, mut c: Conn) {
        if self.max == 0 || !c.buffered().is_empty() {
            return;
        }
        c.pos = 0;
        c.end = 0;
        c.reused = true;
        if self.shards.len() > 1
            && self
                .puts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .is_multiple_of(PRUNE_ALL)
        {
            let now = Instant::now();
            for s in &self.shards {
                let mut idle = s.lock().unwrap_or_else(|p| p.into_inner());
                idle.retain(|(_, since)| now.duration_since(*since) < self.timeout);
            }
        }
        let mut idle = self.shard();
        // PERF: one clock read, not one per idle connection.
        let now = Instant::now();
        idle.retain(|(_, since)| now.duration_since(*since) < self.timeout);
        if idle.len() >= self.max {
            idle.remove(0);
        }
        idle.push((c, now));
    }
}
