//! The event loops: one thread per core (`loops`), each with its own mio
//! `Poll`, its own listening socket per address (`SO_REUSEPORT`: the
//! kernel spreads new connections over the loops), its own connections
//! and timers, and its own copy of the running configuration.
//!
//! # How work and ownership move (the oneshot rule)
//! A connection has exactly one owner for its whole life: the loop that
//! accepted it. Only that thread ever reads, writes, re-arms or closes
//! its socket, so nothing about a connection is locked, and there is no
//! table shared between threads.
//!
//! - **Inline work** (a handler that declared it never blocks, with the
//!   body in memory; the log phase of inline loggers) runs on the loop,
//!   between two reads of the socket.
//! - **Pool work** leaves the loop as a job (`pool.rs`) that holds a
//!   request's work, never the socket: the handler call, the pipe its
//!   body comes through (the loop reads the socket and feeds it), the
//!   stream its response is pulled from (the pool fills a bounded buffer
//!   that the loop writes from). The job's results and wake-ups come
//!   back to this loop only, as messages in its inbox, with a mio `Waker`
//!   (an eventfd) to end its `poll`. A message names the connection by
//!   slot and id, so one for a connection that has meanwhile closed (and
//!   whose slot was reused) is recognised and its resources freed.
//! - **Idle keep-alive connections** are entries in the loop's slab with
//!   a deadline: memory, no thread.
//!
//! Sockets are registered once, readable and writable, edge-triggered;
//! `Conn` remembers each edge until a call would block, so there are no
//! re-registrations. Deadlines are swept four times a second.

use crate::config::runtime::Runtime;
use crate::exchange::Handled;
use crate::net::cx::{
    CONN_BASE, CONNECTION_CAP, ConnMsg, Cx, LISTENER_BASE, LoopHandle, MAX_LISTENERS, Msg, OPEN,
    RELAY_BIT, Reload, WAIT_BIT, WAKER,
};
use crate::net::watch::Watched;
use crate::pool::Pool;
use crate::proto::AnyConn;
use crate::proto::h1::{Conn, Next};
use crate::transport::Stream;
use crate::transport::tls::{Prefix, TlsStream};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// An HTTP/2 stream of a connection: its slot, and its number there.
type StreamKey = (usize, u64);

const SWEEP: Duration = Duration::from_millis(250);
/// When a drain starts (SIGTERM, or a binary upgrade handing over), idle
/// keep-alive connections stay open this long: a request already on its
/// way is answered (with `Connection: close`) instead of meeting a closed
/// socket. Then they are closed.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

pub struct EventLoop {
    poll: Poll,
    listeners: Slab<(SocketAddr, TcpListener)>,
    conns: Slab<Box<AnyConn>>,
    rt: Arc<Runtime>,
    rx: Receiver<Msg>,
    handle: LoopHandle,
    pool: Arc<Pool>,
    next_id: u64,
    /// Connections that had their turn with work left.
    again: VecDeque<(usize, u64)>,
    /// Listeners whose accept failed for want of descriptors: retried.
    accept_retry: Vec<usize>,
    drain: Option<Instant>,
    /// The end of a drain's grace for idle connections.
    grace_end: Option<Instant>,
    drain_started: Option<Instant>,
    /// Descriptors of waiting handlers (SDK 1.1 `Wait`).
    watched: std::cell::RefCell<Watched>,
}

impl EventLoop {
    pub fn new(rt: Arc<Runtime>, pool: Arc<Pool>) -> io::Result<EventLoop> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = channel();
        Ok(EventLoop {
            poll,
            listeners: Slab::new(),
            conns: Slab::new(),
            rt,
            rx,
            handle: LoopHandle {
                tx,
                waker,
                woken: Arc::new(AtomicBool::new(false)),
            },
            pool,
            next_id: 0,
            again: VecDeque::new(),
            accept_retry: Vec::new(),
            drain: None,
            grace_end: None,
            drain_started: None,
            watched: Default::default(),
        })
    }

    pub fn handle(&self) -> LoopHandle {
        self.handle.clone()
    }

    pub fn add_listener(&mut self, addr: SocketAddr, mut l: TcpListener) -> io::Result<()> {
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

    /// Runs until a drain has finished; false when its time ran out.
    pub fn run(mut self) -> bool {
        crate::plugins::call::set_on_loop();
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = Instant::now();
        loop {
            let timeout = if !self.again.is_empty() {
                Duration::ZERO
            } else if !self.accept_retry.is_empty() {
                Duration::from_millis(50)
            } else {
                SWEEP
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                log::error!("poll failed: {e}");
                return false;
            }
            crate::clock::tick();
            // Messages first: a reload is in place before the requests
            // that come after it.
            self.messages();
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    Token(t) if (LISTENER_BASE..CONN_BASE).contains(&t) => {
                        self.accept(t - LISTENER_BASE)
                    }
                    Token(t) if t & WAIT_BIT != 0 => {
                        let owner = {
                            let w = self.watched.borrow();
                            w.slots
                                .get(t & !WAIT_BIT)
                                .and_then(|s| s.owner.zip(Some(s.fd)))
                        };
                        if let Some((key, fd)) = owner
                            && let Some(c) = self.conns.get_mut(key)
                            && c.wait_ready(fd)
                        {
                            self.drive(key, None);
                        }
                    }
                    Token(t) if t & RELAY_BIT != 0 => {
                        let key = (t & !RELAY_BIT) - CONN_BASE;
                        if let Some(c) = self.conns.get_mut(key) {
                            let closed = ev.is_read_closed() || ev.is_error();
                            c.relay_ready(
                                ev.is_readable() || closed,
                                ev.is_writable() || ev.is_write_closed() || ev.is_error(),
                            );
                            self.drive(key, None);
                        }
                    }
                    Token(t) => {
                        let key = t - CONN_BASE;
                        if let Some(c) = self.conns.get_mut(key) {
                            c.event(
                                ev.is_readable(),
                                ev.is_writable() || ev.is_write_closed() || ev.is_error(),
                                ev.is_read_closed() || ev.is_error(),
                            );
                            self.drive(key, None);
                        }
                    }
                }
            }
            for (key, id) in std::mem::take(&mut self.again) {
                if self.conns.get(key).is_some_and(|c| c.id() == id) {
                    self.drive(key, None);
                }
            }
            for idx in std::mem::take(&mut self.accept_retry) {
                self.accept(idx);
            }
            let now = Instant::now();
            if now.duration_since(last_sweep) >= SWEEP {
                last_sweep = now;
                self.sweep(now);
            }
            if let Some(d) = self.drain {
                let graced = self.grace_end.is_none_or(|g| now >= g);
                if graced {
                    self.close_idle();
                }
                let busy = self.conns.iter().filter(|(_, c)| c.is_busy()).count();
                if busy == 0 && (graced || self.conns.is_empty()) {
                    return true;
                }
                if now >= d {
                    log::warn!("shutdown timeout: stopping with {busy} responses unfinished");
                    return false;
                }
            }
        }
    }

    /// Drives one connection, with a message for it if any.
    fn drive(&mut self, key: usize, handled: Option<(Box<Handled>, Option<StreamKey>)>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut cx = Cx::new(&self.rt, &self.pool, &self.handle, key, self.drain_started);
        cx.registry = Some(self.poll.registry());
        cx.watched = Some(&self.watched);
        let next = match handled {
            Some((h, stream)) => conn.on_handled(*h, stream, &mut cx),
            None => conn.drive(&mut cx),
        };
        match next {
            Next::Wait => {}
            Next::Again => self.again.push_back((key, conn.id())),
            Next::Close | Next::Http2 => self.remove(key),
        }
    }

    fn remove(&mut self, key: usize) {
        if let Some(c) = self.conns.try_remove(key) {
            for fd in c.parked_fds() {
                // Before the handler's state (which may close it or pool
                // it) goes: no event may come for it here any more.
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut mio::unix::SourceFd(&fd));
                self.watched.borrow_mut().forget(fd);
            }
            // Closing the socket takes it out of the epoll set.
            drop(c);
            OPEN.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn messages(&mut self) {
        self.handle.woken.store(false, Ordering::Release);
        while let Ok(m) = self.rx.try_recv() {
            match m {
                Msg::Conn { key, id, ev } => {
                    let live = self.conns.get(key).is_some_and(|c| c.id() == id);
                    match ev {
                        ConnMsg::Handled(h) if live => self.drive(key, Some((h, None))),
                        ConnMsg::StreamHandled(k, sid, h) if live => {
                            self.drive(key, Some((h, Some((k, sid)))))
                        }
                        ConnMsg::Handled(h) | ConnMsg::StreamHandled(_, _, h) => {
                            crate::exchange::drop_handled(*h)
                        }
                        _ if live => self.drive(key, None),
                        _ => {}
                    }
                }
                Msg::Reload(r) => self.reload(*r),
                Msg::Drain(deadline) => self.start_drain(deadline),
            }
        }
    }

    fn reload(&mut self, r: Reload) {
        for (a, l) in r.add {
            if let Err(e) = self.add_listener(a, l) {
                log::error!("cannot watch {a}: {e}");
            }
        }
        let gone: Vec<usize> = self
            .listeners
            .iter()
            .filter(|(_, (a, _))| r.remove.contains(a))
            .map(|(k, _)| k)
            .collect();
        for k in gone {
            let (_, mut l) = self.listeners.remove(k);
            let _ = self.poll.registry().deregister(&mut l);
        }
        // Requests in flight keep the old vhosts they hold.
        self.rt = r.runtime;
    }

    fn start_drain(&mut self, deadline: Instant) {
        self.drain = Some(deadline);
        self.drain_started = Some(Instant::now());
        self.grace_end = Some(Instant::now() + DRAIN_GRACE);
        // Stop accepting: the connections still queued are another
        // process's after a binary upgrade (it holds the same sockets).
        for (_, mut l) in self.listeners.drain() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        // HTTP/2 connections with no stream open hear of it now (GOAWAY).
        let h2: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.is_h2())
            .map(|(k, _)| k)
            .collect();
        for k in h2 {
            self.drive(k, None);
        }
    }

    /// After the drain's grace, idle connections are closed.
    fn close_idle(&mut self) {
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.is_idle() || c.is_relay())
            .map(|(k, _)| k)
            .collect();
        for k in idle {
            if let Some(c) = self.conns.get_mut(k)
                && c.is_relay()
            {
                let mut cx = Cx::new(&self.rt, &self.pool, &self.handle, k, self.drain_started);
                c.close(&mut cx, "the server is stopping");
            }
            self.remove(k);
        }
    }

    fn accept(&mut self, idx: usize) {
        let max = self
            .rt
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
                    if OPEN.load(Ordering::Relaxed) >= max {
                        log::warn!("{max} connections open (max_connections): refusing {peer}");
                        continue;
                    }
                    OPEN.fetch_add(1, Ordering::Relaxed);
                    self.add_conn(sock, bind, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: the pending connections stay in
                    // the backlog, and the edge-triggered listener will not
                    // report them again: retry on the next turns.
                    if !self.accept_retry.contains(&idx) {
                        log::error!("accept on {bind}: {e}");
                        self.accept_retry.push(idx);
                    }
                    return;
                }
            }
        }
    }

    fn add_conn(&mut self, mut sock: TcpStream, bind: SocketAddr, peer: SocketAddr) {
        let _ = sock.set_nodelay(true);
        // PERF: a listener bound to one address already names it.
        let local = if bind.ip().is_unspecified() {
            sock.local_addr().unwrap_or(bind)
        } else {
            bind
        };
        let site = self.rt.sites.get(&bind);
        let proxy = site.is_some_and(|s| s.proxy_protocol);
        let tls = site.and_then(|s| s.tls.clone());
        if proxy && !crate::exchange::realip::trusted(&self.rt.settings.trusted_proxies, peer.ip())
        {
            // SECURITY: an attacker's connect flood writes one line a
            // second, with a count (`ratelog.rs`).
            crate::ratelog::proxy_refused(|| {
                format!(
                    "{bind} expects the PROXY protocol: closing the connection from {peer}, \
                     which is not in trusted_proxies"
                )
            });
            OPEN.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let e = self.conns.vacant_entry();
        let key = e.key();
        if let Err(err) = self.poll.registry().register(
            &mut sock,
            Token(CONN_BASE + key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::error!("cannot register connection from {peer}: {err}");
            OPEN.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        self.next_id += 1;
        let io = match tls {
            // A PROXY protocol header comes before the handshake: the TLS
            // layer hands it to the connection as it is.
            Some(t) => Stream::Tls(Box::new(TlsStream::new(
                sock,
                t,
                proxy.then_some(proxy_prefix as fn(&[u8]) -> Prefix),
            ))),
            None => Stream::Plain(sock),
        };
        let mut conn = Conn::new(io, self.next_id, bind, local, peer, proxy);
        conn.h2c = site.is_some_and(|s| s.h2c);
        e.insert(Box::new(AnyConn::H1(conn)));
        // The request often came with the connection: read it now.
        self.drive(key, None);
    }

    fn sweep(&mut self, now: Instant) {
        // The cached clock is the one deadlines are compared with: fresh,
        // or a wait that expires during this turn's events is found
        // expired here and not there (and its request closed as idle).
        crate::clock::tick();
        crate::ratelog::flush();
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline().is_some_and(|d| d <= now))
            .map(|(k, _)| k)
            .collect();
        for key in expired {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let mut cx = Cx::new(&self.rt, &self.pool, &self.handle, key, self.drain_started);
            cx.registry = Some(self.poll.registry());
            cx.watched = Some(&self.watched);
            match conn.timed_out(&mut cx) {
                Next::Close | Next::Http2 => self.remove(key),
                Next::Again => self.again.push_back((key, conn.id())),
                Next::Wait => {}
            }
        }
    }
}

/// The length of a PROXY protocol header before a TLS handshake.
fn proxy_prefix(data: &[u8]) -> Prefix {
    match crate::exchange::realip::parse_proxy(data) {
        crate::exchange::realip::Proxy::Partial => Prefix::Partial,
        crate::exchange::realip::Proxy::Header(n, _) => Prefix::Len(n),
        crate::exchange::realip::Proxy::Bad(_) => Prefix::Bad,
    }
}
