//! What a connection sees of its event loop while it is driven (`Cx`),
//! and the messages that reach a loop from other threads (`LoopHandle`,
//! `Notify`): pool results and wake-ups for one connection, reloads and
//! drains for the whole loop. The loop itself is `evloop.rs`.

use crate::config::Settings;
use crate::config::runtime::Runtime;
use crate::exchange::{Handled, Wake};
use crate::net::watch::{WatchSlot, Watched, oneshot_ctl};
use crate::pool::Pool;
use mio::net::TcpListener;
use mio::{Interest, Token, Waker};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::time::Instant;

pub(crate) const WAKER: Token = Token(0);
pub(crate) const LISTENER_BASE: usize = 1;
pub(crate) const MAX_LISTENERS: usize = 4096;
pub(crate) const CONN_BASE: usize = LISTENER_BASE + MAX_LISTENERS;
/// Set in the token of a relay's other socket (the connection's key
/// below it).
pub(crate) const RELAY_BIT: usize = 1 << (usize::BITS - 2);
/// Set in the token of a descriptor a waiting handler watches (SDK 1.1
/// `Wait`; the connection's key below it).
pub(crate) const WAIT_BIT: usize = 1 << (usize::BITS - 3);
/// Connections open in all loops (for `max_connections`).
pub static OPEN: AtomicUsize = AtomicUsize::new(0);
/// Connections the open-files limit allows (set at start-up).
pub static CONNECTION_CAP: AtomicUsize = AtomicUsize::new(usize::MAX);

/// A message to a loop.
pub enum Msg {
    Conn {
        key: usize,
        id: u64,
        ev: ConnMsg,
    },
    /// SIGHUP: a new configuration, listeners to add and to drop.
    Reload(Box<Reload>),
    /// SIGTERM: stop accepting, finish what runs, stop by this time.
    Drain(Instant),
}

pub enum ConnMsg {
    /// A pool handler answered.
    Handled(Box<Handled>),
    /// A pool handler answered for stream `stream` (its slot in the
    /// connection, and the number telling it from a later stream there)
    /// of an HTTP/2 connection.
    StreamHandled(usize, u64, Box<Handled>),
    /// Something it waits for is ready: a body pipe has room or its
    /// reader wants `100 Continue`, a stream pipe has bytes (or ended).
    Wake,
}

pub struct Reload {
    pub runtime: Arc<Runtime>,
    pub add: Vec<(SocketAddr, TcpListener)>,
    pub remove: Vec<SocketAddr>,
}

/// Sends to a loop and wakes it, once per batch of messages.
#[derive(Clone)]
pub struct LoopHandle {
    pub(crate) tx: Sender<Msg>,
    pub(crate) waker: Arc<Waker>,
    /// A wake-up is on its way: later senders need not wake again.
    pub(crate) woken: Arc<AtomicBool>,
}

impl LoopHandle {
    /// A handle whose messages a test reads from the receiver.
    #[cfg(test)]
    pub fn for_test() -> (LoopHandle, std::sync::mpsc::Receiver<Msg>, mio::Poll) {
        let poll = mio::Poll::new().expect("poll");
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).expect("waker"));
        let (tx, rx) = std::sync::mpsc::channel();
        let h = LoopHandle {
            tx,
            waker,
            woken: Arc::new(AtomicBool::new(false)),
        };
        (h, rx, poll)
    }
    pub fn send(&self, m: Msg) {
        if self.tx.send(m).is_err() {
            return; // the loop has stopped
        }
        if !self.woken.swap(true, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
    }
}

/// Wakes one connection of one loop.
#[derive(Clone)]
pub struct Notify {
    handle: LoopHandle,
    key: usize,
    id: u64,
}

impl Notify {
    fn send(&self, ev: ConnMsg) {
        self.handle.send(Msg::Conn {
            key: self.key,
            id: self.id,
            ev,
        });
    }
    pub fn send_handled(&self, h: Handled) {
        self.send(ConnMsg::Handled(Box::new(h)));
    }
    /// The wake-up of a [`Wake`] made from it.
    pub fn wake(&self) -> Wake {
        let n = self.clone();
        Arc::new(move || n.send(ConnMsg::Wake))
    }
}

/// What a connection sees of its loop while it is driven.
pub struct Cx<'a> {
    pub rt: &'a Runtime,
    pub pool: &'a Arc<Pool>,
    handle: &'a LoopHandle,
    key: usize,
    pub draining: bool,
    /// When the drain started (valid while `draining`).
    pub drain_started: Instant,
    pub(crate) registry: Option<&'a mio::Registry>,
    pub(crate) watched: Option<&'a std::cell::RefCell<Watched>>,
}

impl<'a> Cx<'a> {
    pub(crate) fn new(
        rt: &'a Runtime,
        pool: &'a Arc<Pool>,
        handle: &'a LoopHandle,
        key: usize,
        drain: Option<Instant>,
    ) -> Self {
        Cx {
            rt,
            pool,
            handle,
            key,
            draining: drain.is_some(),
            drain_started: drain.unwrap_or_else(Instant::now),
            registry: None,
            watched: None,
        }
    }
    /// Watches a relay's other socket for this connection (edge-triggered,
    /// both ways); closing the socket takes it out again.
    pub fn register_relay(&self, fd: std::os::fd::RawFd) -> io::Result<()> {
        let Some(r) = self.registry else {
            return Err(io::Error::other("no event loop"));
        };
        // A socket a handler waited on is still registered (disarmed): it
        // becomes the relay's.
        if let Some(w) = self.watched {
            w.borrow_mut().forget(fd);
        }
        let mut src = mio::unix::SourceFd(&fd);
        let token = Token(RELAY_BIT | (CONN_BASE + self.key));
        let interest = Interest::READABLE | Interest::WRITABLE;
        match r.register(&mut src, token, interest) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let _ = r.deregister(&mut src);
                r.register(&mut src, token, interest)
            }
            d => d,
        }
    }
    /// Watches a waiting handler's descriptor for this connection (until
    /// [`Cx::unwatch`]): re-armed when it is watched already.
    pub fn register_wait(&self, fd: std::os::fd::RawFd, read: bool, write: bool) -> io::Result<()> {
        let (Some(r), Some(w)) = (self.registry, self.watched) else {
            return Err(io::Error::other("no event loop"));
        };
        let mut w = w.borrow_mut();
        let known = w.by_fd.get(&fd).copied();
        let slot = match known {
            Some(slot) => slot,
            None => {
                let slot = w.slots.insert(WatchSlot {
                    fd,
                    owner: None,
                    add_first: false,
                });
                w.by_fd.insert(fd, slot);
                slot
            }
        };
        let token = WAIT_BIT | slot;
        let epfd = std::os::fd::AsRawFd::as_raw_fd(r);
        let ctl = |op| oneshot_ctl(epfd, op, fd, token, read, write);
        // One epoll_ctl in the common cases: a socket waited on again is
        // re-armed, and where sockets are new each time (the last re-arm
        // found none) they are added.
        let done = match known {
            Some(_) if w.slots[slot].add_first => match ctl(libc::EPOLL_CTL_ADD) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    w.slots[slot].add_first = false;
                    ctl(libc::EPOLL_CTL_MOD)
                }
                d => d,
            },
            Some(_) => match ctl(libc::EPOLL_CTL_MOD) {
                // Closed since (and maybe the number reused): added anew.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    w.slots[slot].add_first = true;
                    ctl(libc::EPOLL_CTL_ADD)
                }
                d => d,
            },
            None => ctl(libc::EPOLL_CTL_ADD),
        };
        match done {
            Ok(()) => {
                w.slots[slot].owner = Some(self.key);
                Ok(())
            }
            Err(e) => {
                w.forget(fd);
                Err(e)
            }
        }
    }
    /// Stops watching `fd` altogether (its waiting request is given up).
    pub fn forget_wait(&self, fd: std::os::fd::RawFd) {
        if let Some(r) = self.registry {
            let _ = r.deregister(&mut mio::unix::SourceFd(&fd));
        }
        if let Some(w) = self.watched {
            w.borrow_mut().forget(fd);
        }
    }
    /// The connection no longer waits on `fd` (it stays registered).
    pub fn unwatch(&self, fd: std::os::fd::RawFd) {
        if let Some(w) = self.watched {
            let mut w = w.borrow_mut();
            if let Some(&slot) = w.by_fd.get(&fd) {
                w.slots[slot].owner = None;
            }
        }
    }
    /// A context outside any loop, for the connection's unit tests.
    #[cfg(test)]
    pub fn for_test(rt: &'a Runtime, pool: &'a Arc<Pool>, handle: &'a LoopHandle) -> Self {
        Cx::new(rt, pool, handle, 0, None)
    }
    /// The same, with an epoll set of its own and a registry of waited
    /// descriptors, so waits and relays register as on a loop.
    #[cfg(test)]
    pub fn with_registry(
        mut self,
        registry: &'a mio::Registry,
        watched: &'a std::cell::RefCell<Watched>,
    ) -> Self {
        self.registry = Some(registry);
        self.watched = Some(watched);
        self
    }
    pub fn settings(&self) -> &Settings {
        &self.rt.settings
    }
    pub fn notify(&self, id: u64) -> Notify {
        Notify {
            handle: self.handle.clone(),
            key: self.key,
            id,
        }
    }
    /// Connection `id` of this loop, for its exchanges (`exchange/run.rs`).
    pub fn owner(&self, id: u64) -> ConnOwner<'_> {
        ConnOwner {
            handle: self.handle,
            key: self.key,
            id,
        }
    }
    /// Stream `stream` (numbered `sid`) of connection `id` of this loop,
    /// for an HTTP/2 exchange.
    pub fn stream_owner(&self, id: u64, stream: usize, sid: u64) -> StreamOwner<'_> {
        StreamOwner {
            conn: self.owner(id),
            stream,
            sid,
        }
    }
    /// A [`Wake`] for connection `id` of this loop (a pipe's).
    pub fn waker(&self, id: u64) -> Wake {
        let n = self.notify(id);
        Arc::new(move || n.send(ConnMsg::Wake))
    }
}

/// A connection of a loop, as its exchanges see it: cheap to make (a
/// borrow); a pool hand-off or a stream makes its own handle from it.
pub struct ConnOwner<'a> {
    handle: &'a LoopHandle,
    key: usize,
    id: u64,
}

impl ConnOwner<'_> {
    fn notify(&self) -> Notify {
        Notify {
            handle: self.handle.clone(),
            key: self.key,
            id: self.id,
        }
    }
}

impl crate::exchange::run::Owner for ConnOwner<'_> {
    fn back(&self) -> crate::exchange::run::Back {
        let n = self.notify();
        Box::new(move |h| n.send_handled(h))
    }
    fn wake(&self) -> Wake {
        self.notify().wake()
    }
}

/// One stream of an HTTP/2 connection, as its exchange sees it: a pool
/// answer names the stream; a wake-up drives the whole connection.
pub struct StreamOwner<'a> {
    conn: ConnOwner<'a>,
    stream: usize,
    sid: u64,
}

impl crate::exchange::run::Owner for StreamOwner<'_> {
    fn back(&self) -> crate::exchange::run::Back {
        let n = self.conn.notify();
        let (stream, sid) = (self.stream, self.sid);
        Box::new(move |h| n.send(ConnMsg::StreamHandled(stream, sid, Box::new(h))))
    }
    fn wake(&self) -> Wake {
        self.conn.notify().wake()
    }
}
