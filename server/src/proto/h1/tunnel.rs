//! A relay after `101 Switching Protocols` (SDK 1.1 `HandleExtV1::Relay`):
//! the connection's loop moves bytes both ways between the client and the
//! socket the plugin handed over, with no thread per tunnel. Each side's
//! end of stream is passed on as a half-close (`shutdown(SHUT_WR)`) to the
//! other; the tunnel ends when both sides have ended and everything is
//! delivered, on an error, or after `idle` with no byte either way. The
//! access log records it when it closes: bytes both ways, and the duration
//! from the request to the close.

use crate::exchange::Exchange;
use crate::exchange::logphase;
use crate::transport::{Io, Transport};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// The plugin's side.
pub enum Up {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Up {
    /// The plugin's socket, non-blocking; an error when it is none.
    pub fn new(fd: OwnedFd) -> io::Result<Up> {
        let unix = socket2::SockRef::from(&fd).domain()? == socket2::Domain::UNIX;
        let up = if unix {
            Up::Unix(std::os::unix::net::UnixStream::from(fd))
        } else {
            Up::Tcp(std::net::TcpStream::from(fd))
        };
        match &up {
            Up::Tcp(s) => s.set_nonblocking(true)?,
            Up::Unix(s) => s.set_nonblocking(true)?,
        }
        Ok(up)
    }
    fn fd(&self) -> RawFd {
        match self {
            Up::Tcp(s) => s.as_raw_fd(),
            Up::Unix(s) => s.as_raw_fd(),
        }
    }
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Up::Tcp(s) => s.read(b),
            Up::Unix(s) => s.read(b),
        }
    }
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Up::Tcp(s) => s.write(b),
            Up::Unix(s) => s.write(b),
        }
    }
    fn shutdown_write(&self) {
        let _ = match self {
            Up::Tcp(s) => s.shutdown(Shutdown::Write),
            Up::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }
}

/// Bytes on their way to one side.
#[derive(Default)]
struct Pending {
    data: Vec<u8>,
    pos: usize,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.pos == self.data.len()
    }
    fn left(&self) -> &[u8] {
        &self.data[self.pos..]
    }
    fn sent(&mut self, n: usize) {
        self.pos += n;
        if self.is_empty() {
            self.data.clear();
            self.pos = 0;
        }
    }
}

const CHUNK: usize = 16 * 1024;
/// Rounds of reads and writes per turn before the loop serves others.
const TURN: usize = 64;

pub struct Tunnel {
    up: Up,
    registered: bool,
    pub up_readable: bool,
    pub up_writable: bool,
    to_up: Pending,
    to_client: Pending,
    client_eof: bool,
    up_eof: bool,
    /// Client -> plugin's socket, plugin's socket -> client.
    bytes_up: u64,
    bytes_down: u64,
    head_len: u64,
    pub last: Instant,
    pub idle: Duration,
    x: Option<Box<Exchange>>,
    clean: bool,
    error: Option<String>,
    /// One read buffer for both directions.
    scratch: Vec<u8>,
}

/// What a turn ended with.
pub enum Turn {
    Wait,
    Again,
    /// Both sides ended and everything was delivered.
    Done,
    Failed(String),
}

impl Tunnel {
    pub fn new(up: Up, pre: Vec<u8>, idle: Duration, x: Box<Exchange>, head_len: usize) -> Tunnel {
        Tunnel {
            up,
            registered: false,
            up_readable: true,
            up_writable: true,
            to_up: Pending::default(),
            to_client: Pending { data: pre, pos: 0 },
            client_eof: false,
            up_eof: false,
            bytes_up: 0,
            bytes_down: 0,
            head_len: head_len as u64,
            last: crate::clock::now(),
            idle,
            x: Some(x),
            clean: false,
            error: None,
            scratch: vec![0u8; CHUNK],
        }
    }

    /// The plugin's socket, for the loop's poll (once).
    pub fn take_unregistered(&mut self) -> Option<RawFd> {
        (!self.registered).then(|| {
            self.registered = true;
            // The relay's socket counts against `max_connections` (and the
            // descriptor cap) like a connection of its own.
            crate::net::cx::OPEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.up.fd()
        })
    }

    /// Client bytes that came after the request head.
    pub fn early_client_bytes(&mut self, data: &[u8]) {
        self.to_up.data.extend_from_slice(data);
        self.bytes_up += data.len() as u64;
    }

    /// Moves what can be moved; `client_readable`/`client_writable` are
    /// the connection's readiness flags (cleared on would-block).
    pub fn turn(
        &mut self,
        io: &mut impl Transport,
        client_readable: &mut bool,
        client_writable: &mut bool,
    ) -> Turn {
        for _ in 0..TURN {
            let mut moved = false;
            // Records the transport held back (TLS) go first.
            if *client_writable && io.pending() {
                match io.flush() {
                    Ok(true) => {}
                    Ok(false) => *client_writable = false,
                    Err(e) => return Turn::Failed(format!("writing to the client: {e}")),
                }
            }
            // Client -> plugin's socket.
            if !self.to_up.is_empty() {
                if self.up_writable {
                    match self.up.write(self.to_up.left()) {
                        Ok(n) => {
                            self.to_up.sent(n);
                            moved = true;
                            if self.to_up.is_empty() && self.client_eof {
                                self.up.shutdown_write();
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.up_writable = false,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => moved = true,
                        Err(e) => {
                            // This direction is over (the other side went
                            // away); what goes the other way still goes.
                            self.fail(&format!("writing to the relay's socket: {e}"));
                            self.to_up = Pending::default();
                            self.client_eof = true;
                            moved = true;
                        }
                    }
                }
            } else if !self.client_eof && *client_readable {
                match io.read(&mut self.scratch) {
                    Ok(Io::Ready(0)) => {
                        self.client_eof = true;
                        self.up.shutdown_write();
                        moved = true;
                    }
                    Ok(Io::Ready(n)) => {
                        self.bytes_up += n as u64;
                        self.to_up.data.extend_from_slice(&self.scratch[..n]);
                        moved = true;
                    }
                    Ok(Io::Blocked) => *client_readable = false,
                    Err(e) => return Turn::Failed(format!("reading from the client: {e}")),
                }
            }
            // Plugin's socket -> client.
            if !self.to_client.is_empty() {
                if *client_writable {
                    match io.write(self.to_client.left(), false) {
                        Ok(Io::Ready(n)) => {
                            self.bytes_down += n as u64;
                            self.to_client.sent(n);
                            moved = true;
                            if self.to_client.is_empty() && self.up_eof {
                                io.shutdown_write();
                            }
                        }
                        Ok(Io::Blocked) => *client_writable = false,
                        Err(e) => {
                            self.fail(&format!("writing to the client: {e}"));
                            self.to_client = Pending::default();
                            self.up_eof = true;
                            moved = true;
                        }
                    }
                }
            } else if !self.up_eof && self.up_readable {
                match self.up.read(&mut self.scratch) {
                    Ok(0) => {
                        self.up_eof = true;
                        io.shutdown_write();
                        moved = true;
                    }
                    Ok(n) => {
                        self.to_client.data.extend_from_slice(&self.scratch[..n]);
                        moved = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.up_readable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => moved = true,
                    Err(e) => return Turn::Failed(format!("reading from the relay's socket: {e}")),
                }
            }
            if moved {
                self.last = crate::clock::now();
            }
            if self.client_eof
                && self.up_eof
                && self.to_up.is_empty()
                && self.to_client.is_empty()
                && !io.pending()
            {
                self.clean = self.error.is_none();
                return Turn::Done;
            }
            if !moved {
                return Turn::Wait;
            }
        }
        Turn::Again
    }

    /// Why it ends, for the access log (when not cleanly).
    pub fn fail(&mut self, why: &str) {
        self.error.get_or_insert_with(|| why.to_owned());
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        if self.registered {
            crate::net::cx::OPEN.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(mut x) = self.x.take() {
            x.bytes_received += self.bytes_up;
            logphase::run(
                x,
                logphase::Outcome {
                    status: 101,
                    body_sent: self.bytes_down,
                    total_sent: self.head_len + self.bytes_down,
                    completed: self.clean,
                    error: self.error.take(),
                },
            );
        }
    }
}
