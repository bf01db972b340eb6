//! The upstreams of a route: the keep-alive pool of each, the passive
//! health check and the choice of the next one.

use crate::config::{Addr, Balance, Settings};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
pub use tamada_gateway::conn::{Conn, IdlePool};

/// One upstream's shared state.
pub struct Upstream {
    pub addr: Addr,
    pub label: String,
    /// Requests in flight (least_conn).
    pub active: AtomicUsize,
    idle: IdlePool,
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
                    idle: IdlePool::per_cpu(s.keepalive, s.keepalive_timeout),
                    health: Mutex::new(Health::default()),
                })
                .collect(),
            next: AtomicUsize::new(0),
            balance: s.balance,
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

    /// An idle connection to upstream `i` that is still open and has no
    /// bytes waiting (checked before every reuse).
    pub fn take_idle(&self, i: usize) -> Option<Conn> {
        self.list[i].idle.take()
    }

    /// Gives back a connection whose last response ended cleanly.
    pub fn put_idle(&self, c: Conn) {
        self.list[c.up].idle.put(c);
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
        // As nginx: the only upstream of a route is never taken out (there
        // is nothing to send its requests to instead).
        if self.max_fails == 0 || self.list.len() == 1 {
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
