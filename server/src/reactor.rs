//! The reactor: one thread with a mio `Poll` over every listening socket,
//! every parked connection, the workers' return channel (a `Waker`) and the
//! signals.
//!
//! # How a connection's ownership moves (the oneshot rule)
//! A connection belongs to exactly one thread at a time:
//! - **Parked** in the connection table (`Slot::Parked`) with an interest
//!   (readable or writable) and a deadline. Idle keep-alive connections
//!   live here and cost no thread.
//! - On a readiness event the reactor moves the `Conn` out of the table
//!   (`Slot::Busy` stays behind) and queues it for the worker pool. mio is
//!   edge-triggered and has no oneshot flag: events that arrive for a Busy
//!   slot are ignored, which is safe because of the next step.
//! - The worker serves it until the socket would block, then parks it
//!   itself: under the table's lock it puts the `Conn` back and
//!   *re-registers* the socket with its new interest (`EPOLL_CTL_MOD`),
//!   which reports readiness that is already there, so bytes that arrived
//!   while the worker held the socket are never lost. Or it frees the slot
//!   and closes the connection. Parking without a round trip through the
//!   reactor saves two thread switches per keep-alive request.
//!
//! Deadlines (header, idle, send timeouts) are swept twice a second.

use crate::Shared;
use crate::conn::{Conn, Verdict};
use crate::queue::Jobs;
use crate::runtime::Runtime;
use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SIGNALS: Token = Token(1);
const LISTENER_BASE: usize = 2;
const MAX_LISTENERS: usize = 4096;
const CONN_BASE: usize = LISTENER_BASE + MAX_LISTENERS;

/// Connections the open-files limit allows (set at start-up).
pub static CONNECTION_CAP: AtomicUsize = AtomicUsize::new(usize::MAX);

/// A connection handed to a worker.
pub struct Job {
    pub token: usize,
    pub conn: Box<Conn>,
}

/// The connection table, shared by the reactor and the workers.
pub struct Table {
    slots: Mutex<Slab<Slot>>,
    registry: Registry,
    shared: Arc<Shared>,
    /// Where a connection that had its turn is queued again.
    jobs: Arc<Jobs<Job>>,
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slab<Slot>> {
        // A poisoned lock means a panic while holding it; the slab is
        // still consistent (every update is a single assignment).
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A worker hands the connection back (or closes it).
    fn give_back(&self, key: usize, conn: Box<Conn>, verdict: Verdict) {
        let draining = self.shared.draining.load(Ordering::Relaxed);
        let (interest, deadline, writing) = match verdict {
            Verdict::Close => {
                self.lock().try_remove(key);
                drop(conn);
                return;
            }
            Verdict::Read(_) if draining => {
                self.lock().try_remove(key);
                drop(conn);
                return;
            }
            Verdict::Again => {
                // Still Busy in the table: it goes straight back in line.
                self.jobs.push(Job { token: key, conn });
                return;
            }
            Verdict::Read(d) => (Interest::READABLE, d, false),
            Verdict::Write(d) => (Interest::WRITABLE, d, true),
        };
        let fd = conn.sock.as_raw_fd();
        let mut slots = self.lock();
        let token = Token(CONN_BASE + key);
        // Under the lock: nobody can close the fd meanwhile, and the event
        // this may report at once finds the connection parked.
        if let Some(slot) = slots.get_mut(key) {
            *slot = Slot::Parked {
                conn,
                deadline,
                writing,
            };
            if self
                .registry
                .reregister(&mut SourceFd(&fd), token, interest)
                .is_err()
            {
                slots.try_remove(key);
            }
        }
    }
}

enum Slot {
    Parked {
        conn: Box<Conn>,
        deadline: Instant,
        writing: bool,
    },
    Busy,
}

/// Builds a new runtime on SIGHUP (conf.d re-read and checked).
pub type Reloader = Box<dyn FnMut() -> Result<Runtime, String> + Send>;

pub struct Reactor {
    poll: Poll,
    listeners: Slab<(SocketAddr, TcpListener)>,
    pub table: Arc<Table>,
    signals: Signals,
    jobs: Arc<Jobs<Job>>,
    shared: Arc<Shared>,
    reload: Reloader,
    /// Listeners whose accept failed (out of descriptors): retried.
    accept_retry: Vec<usize>,
}

/// Binds every address; errors name the address.
pub fn bind_all(addrs: &[SocketAddr]) -> Result<Vec<(SocketAddr, TcpListener)>, String> {
    addrs
        .iter()
        .map(|a| {
            bind(*a)
                .map(|l| (*a, l))
                .map_err(|e| format!("cannot listen on {a}: {e}"))
        })
        .collect()
}

/// A non-blocking, close-on-exec (socket2 default) listener with
/// SO_REUSEADDR; an IPv6 one is IPv6-only
/// (as nginx's `ipv6only=on`), so `[::]:P` and `0.0.0.0:P` can both be
/// configured.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    Ok(TcpListener::from_std(sock.into()))
}

impl Reactor {
    pub fn new(
        listeners: Vec<(SocketAddr, TcpListener)>,
        jobs: Arc<Jobs<Job>>,
        shared: Arc<Shared>,
        reload: Reloader,
    ) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let table = Arc::new(Table {
            slots: Mutex::new(Slab::new()),
            registry: poll.registry().try_clone()?,
            shared: shared.clone(),
            jobs: jobs.clone(),
        });
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let mut r = Reactor {
            poll,
            listeners: Slab::new(),
            table,
            signals,
            jobs,
            accept_retry: Vec::new(),
            shared,
            reload,
        };
        for (a, l) in listeners {
            r.add_listener(a, l)?;
        }
        Ok(r)
    }

    fn add_listener(&mut self, addr: SocketAddr, mut l: TcpListener) -> io::Result<()> {
        let e = self.listeners.vacant_entry();
        if e.key() >= MAX_LISTENERS {
            return Err(io::Error::other("too many listening sockets"));
        }
        self.poll.registry().register(
            &mut l,
            Token(LISTENER_BASE + e.key()),
            Interest::READABLE,
        )?;
        e.insert((addr, l));
        Ok(())
    }

    /// Runs until SIGTERM/SIGINT and the drain that follows.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = Instant::now();
        let mut drain_deadline: Option<Instant> = None;
        loop {
            // Jobs waiting for a worker: come back soon to nudge the pool.
            let timeout = if self.jobs.waiting() {
                Duration::from_millis(1)
            } else if !self.accept_retry.is_empty() {
                Duration::from_millis(50)
            } else {
                Duration::from_millis(250)
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                match ev.token() {
                    SIGNALS => {
                        if self.on_signals() && drain_deadline.is_none() {
                            let t = self.shared.runtime.load().settings.shutdown_timeout.0;
                            drain_deadline = Some(Instant::now() + t);
                            self.start_drain();
                        }
                    }
                    Token(t) if (LISTENER_BASE..CONN_BASE).contains(&t) => {
                        self.accept(t - LISTENER_BASE)
                    }
                    Token(t) => self.dispatch(t - CONN_BASE),
                }
            }
            self.jobs.nudge();
            for idx in std::mem::take(&mut self.accept_retry) {
                self.accept(idx);
            }
            let now = Instant::now();
            if now.duration_since(last_sweep) >= Duration::from_millis(500) {
                last_sweep = now;
                self.sweep(now);
            }
            if let Some(d) = drain_deadline {
                let busy = self
                    .table
                    .lock()
                    .iter()
                    .filter(|(_, s)| matches!(s, Slot::Busy | Slot::Parked { writing: true, .. }))
                    .count();
                if busy == 0 {
                    log::info!("all requests finished; stopping");
                    return Ok(());
                }
                if now >= d {
                    log::warn!("shutdown timeout: stopping with {busy} responses unfinished");
                    return Ok(());
                }
            }
        }
    }

    /// Handles pending signals; true when the server should stop.
    fn on_signals(&mut self) -> bool {
        let mut stop = false;
        let pending: Vec<i32> = self.signals.pending().collect();
        for sig in pending {
            match sig {
                SIGTERM | SIGINT => {
                    log::info!(
                        "got {}: finishing requests in flight, then stopping",
                        if sig == SIGTERM { "SIGTERM" } else { "SIGINT" }
                    );
                    stop = true;
                }
                SIGHUP => self.reload(),
                SIGUSR1 => {
                    log::info!("got SIGUSR1: reopening log files");
                    let rt = self.shared.runtime.load_full();
                    std::thread::spawn(move || {
                        for i in rt.instances() {
                            i.reopen();
                        }
                    });
                }
                _ => {}
            }
        }
        stop
    }

    fn reload(&mut self) {
        log::info!("got SIGHUP: reloading configuration");
        let rt = match (self.reload)() {
            Ok(rt) => rt,
            Err(e) => {
                log::error!("reload failed; keeping the running configuration:\n{e}");
                return;
            }
        };
        let wanted: Vec<SocketAddr> = rt.sites.keys().copied().collect();
        let have: BTreeMap<SocketAddr, usize> =
            self.listeners.iter().map(|(k, (a, _))| (*a, k)).collect();
        let new: Vec<SocketAddr> = wanted
            .iter()
            .filter(|a| !have.contains_key(a))
            .copied()
            .collect();
        let bound = match bind_all(&new) {
            Ok(b) => b,
            Err(e) => {
                log::error!("reload failed; keeping the running configuration: {e}");
                return;
            }
        };
        for (a, l) in bound {
            if let Err(e) = self.add_listener(a, l) {
                log::error!("cannot watch {a}: {e}");
            }
            log::info!("listening on {a}");
        }
        for (a, k) in have {
            if !wanted.contains(&a) {
                let (_, mut l) = self.listeners.remove(k);
                let _ = self.poll.registry().deregister(&mut l);
                log::info!("stopped listening on {a}");
            }
        }
        let n: usize = rt
            .sites
            .values()
            .flat_map(|s| s.groups.values())
            .map(|g| g.vhosts.len())
            .sum();
        self.shared.runtime.store(Arc::new(rt));
        log::info!("reloaded configuration: {n} vhosts");
    }

    fn start_drain(&mut self) {
        self.shared.draining.store(true, Ordering::Relaxed);
        for (_, mut l) in self.listeners.drain() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        // Idle connections go now; responses being written finish.
        let mut slots = self.table.lock();
        let idle: Vec<usize> = slots
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Parked { writing: false, .. }))
            .map(|(k, _)| k)
            .collect();
        for k in idle {
            slots.remove(k);
        }
    }

    fn accept(&mut self, idx: usize) {
        let max = self
            .shared
            .runtime
            .load()
            .settings
            .max_connections
            .min(CONNECTION_CAP.load(Ordering::Relaxed));
        loop {
            let Some((bind, l)) = self.listeners.get(idx) else {
                return;
            };
            let bind = *bind;
            match l.accept() {
                Ok((sock, peer)) => {
                    if self.table.lock().len() >= max {
                        log::warn!("{max} connections open (max_connections): refusing {peer}");
                        continue;
                    }
                    let _ = sock.set_nodelay(true);
                    self.park_new(sock, bind, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: the pending connections stay in
                    // the backlog, and the edge-triggered listener will not
                    // report them again: retry on the next loop turns.
                    if !self.accept_retry.contains(&idx) {
                        log::error!("accept on {bind}: {e}");
                        self.accept_retry.push(idx);
                    }
                    return;
                }
            }
        }
    }

    fn park_new(&mut self, sock: TcpStream, bind: SocketAddr, peer: SocketAddr) {
        let timeout = self.shared.runtime.load().settings.header_timeout.0;
        let mut slots = self.table.lock();
        let e = slots.vacant_entry();
        let token = Token(CONN_BASE + e.key());
        let mut conn = Box::new(Conn::new(sock, bind, peer));
        if let Err(err) = self
            .poll
            .registry()
            .register(&mut conn.sock, token, Interest::READABLE)
        {
            log::error!("cannot register connection from {peer}: {err}");
            return;
        }
        e.insert(Slot::Parked {
            conn,
            deadline: Instant::now() + timeout,
            writing: false,
        });
    }

    fn dispatch(&mut self, key: usize) {
        let conn = {
            let mut slots = self.table.lock();
            let Some(slot) = slots.get_mut(key) else {
                return;
            };
            if matches!(slot, Slot::Busy) {
                return;
            }
            match std::mem::replace(slot, Slot::Busy) {
                Slot::Parked { conn, .. } => conn,
                Slot::Busy => return,
            }
        };
        self.jobs.push(Job { token: key, conn });
    }

    fn sweep(&mut self, now: Instant) {
        let mut slots = self.table.lock();
        let expired: Vec<usize> = slots
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Parked { deadline, .. } if *deadline <= now))
            .map(|(k, _)| k)
            .collect();
        let mut timed_out = Vec::new();
        for k in expired {
            if let Slot::Parked { conn, writing, .. } = slots.remove(k)
                && writing
            {
                timed_out.push(conn);
            }
        }
        drop(slots);
        // The log phase (and closing a stream: a CGI child is killed and
        // reaped) runs plugin code: not on the reactor thread.
        if !timed_out.is_empty() {
            std::thread::spawn(move || {
                for conn in timed_out {
                    log::debug!("send timeout: closing connection from {}", conn.peer);
                    if let Some(out) = conn.out {
                        out.finish(Some("send timeout".into()));
                    }
                }
            });
        }
    }
}

/// Starts `n` worker threads serving jobs from `jobs`.
pub fn start_workers(n: usize, jobs: Arc<Jobs<Job>>, table: Arc<Table>, shared: Arc<Shared>) {
    for i in 0..n {
        let jobs = jobs.clone();
        let table = table.clone();
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || {
                loop {
                    let Job { token, mut conn } = jobs.pop();
                    let verdict = crate::conn::serve(&mut conn, &shared);
                    table.give_back(token, conn, verdict);
                }
            });
        if let Err(e) = spawned {
            log::error!("cannot start worker {i}: {e}");
        }
    }
}
