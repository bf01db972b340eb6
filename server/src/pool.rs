//! The blocking pool: `workers` threads that run what may block. A job is
//! a request's work, never a connection: a pool handler's call (with the
//! body channel its loop feeds), a pull of a response stream into its
//! bounded buffer, a 1.0 logger's log phase, a stream's `close`. Results
//! go back to the connection's own loop through its inbox (`evloop.rs`).
//!
//! A FIFO under one mutex: only pool-placed work touches it, never the
//! inline path.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

pub type Job = Box<dyn FnOnce() + Send>;

static POOL: std::sync::OnceLock<Arc<Pool>> = std::sync::OnceLock::new();

/// Starts the process's pool with `workers` threads (once, at start-up).
pub fn start_global(workers: usize) {
    let _ = POOL.set(Pool::start(workers));
}

/// The process's pool (started before anything can use it).
pub fn global() -> &'static Arc<Pool> {
    POOL.get_or_init(|| Pool::start(1))
}

#[derive(Default)]
pub struct Pool {
    queue: Mutex<VecDeque<Job>>,
    ready: Condvar,
    /// Jobs queued or running.
    active: AtomicUsize,
    /// Request handler calls queued and not started yet (`pool_queue`).
    waiting: AtomicUsize,
    /// Stopped: the threads leave once the queue is empty.
    stopped: std::sync::atomic::AtomicBool,
}

/// A route's own pool (`pool: N`): its threads end, after the jobs
/// already queued, when no configuration has the route any more (and its
/// last request is done).
pub struct Owned(pub Arc<Pool>);

/// The live route pools by (vhost, route prefix, threads): a reload that
/// keeps a route keeps its pool (a configuration still held by a
/// long-lived relay must not make N more threads at every SIGHUP), and
/// shutdown waits for each.
type RouteKey = (String, String, usize);
static ROUTE_POOLS: std::sync::Mutex<Vec<(RouteKey, std::sync::Weak<Owned>)>> =
    std::sync::Mutex::new(Vec::new());

/// The pool of `threads` threads for route `prefix` of `vhost`: the one
/// a running configuration already has for it, else a new one.
pub fn route_pool(vhost: &str, prefix: &str, threads: usize) -> Arc<Owned> {
    let key = (vhost.to_owned(), prefix.to_owned(), threads);
    let mut all = ROUTE_POOLS.lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|(_, w)| w.strong_count() > 0);
    if let Some(p) = all
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, w)| w.upgrade())
    {
        return p;
    }
    let p = Arc::new(Owned(Pool::start_named(threads, "route-pool")));
    all.push((key, Arc::downgrade(&p)));
    p
}

/// At shutdown: [`Pool::quiesce`] for every live route pool too.
pub fn quiesce_routes(deadline: std::time::Instant) -> bool {
    let pools: Vec<Arc<Owned>> = ROUTE_POOLS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(|(_, w)| w.upgrade())
        .collect();
    pools.iter().all(|p| p.0.quiesce(deadline))
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.0
            .stopped
            .store(true, std::sync::atomic::Ordering::Release);
        let _q = self.0.lock();
        self.0.ready.notify_all();
    }
}

impl Pool {
    /// Starts `n` threads named `pool-N`.
    pub fn start(n: usize) -> Arc<Pool> {
        Self::start_named(n, "pool")
    }

    /// Starts `n` threads named `{name}-N`.
    pub fn start_named(n: usize, name: &str) -> Arc<Pool> {
        let pool = Arc::new(Pool::default());
        for i in 0..n.max(1) {
            let p = pool.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || p.work());
            if let Err(e) = spawned {
                log::error!("cannot start pool thread {i}: {e}");
            }
        }
        pool
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        // A poisoned lock only means a panic while holding it; the queue
        // is still consistent (push and pop are single operations).
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn submit(&self, job: Job) {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.lock().push_back(job);
        self.ready.notify_one();
    }

    /// Submits a request's handler call, counted among those waiting for
    /// a thread until the job calls [`Pool::request_started`].
    pub fn submit_request(&self, job: Job) {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.submit(job);
    }

    /// Request handler calls waiting for a thread now.
    pub fn requests_waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// A request's handler call starts on a pool thread.
    pub fn request_started(&self) {
        self.waiting.fetch_sub(1, Ordering::Relaxed);
    }

    /// At shutdown: waits (until `deadline`) for the queued and running
    /// jobs (the last log phases, streams being closed) before the
    /// plugins are flushed and shut down. False if time ran out.
    pub fn quiesce(&self, deadline: std::time::Instant) -> bool {
        while self.active.load(Ordering::Acquire) > 0 {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        true
    }

    fn work(&self) {
        loop {
            let job = {
                let mut q = self.lock();
                loop {
                    if let Some(j) = q.pop_front() {
                        break j;
                    }
                    if self.stopped.load(Ordering::Acquire) {
                        return;
                    }
                    q = self.ready.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            };
            // Plugin code is called through the SDK's shims, which catch
            // its panics; this guard keeps the thread for a panic of our own.
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)) {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                log::error!("a pool job panicked: {msg}");
            }
            self.active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owned_pool_runs_what_was_queued_then_its_threads_end() {
        let pool = Pool::start_named(2, "t-owned");
        let owner = Owned(pool.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..100u32 {
            let tx = tx.clone();
            pool.submit(Box::new(move || tx.send(i).unwrap()));
        }
        drop(owner);
        let mut got: Vec<u32> = (0..100).map(|_| rx.recv().unwrap()).collect();
        got.sort();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        // Only the test's own reference is left once both threads ended.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while Arc::strong_count(&pool) > 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the threads did not end"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn every_job_runs_once() {
        let pool = Pool::start(4);
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..10_000u32 {
            let tx = tx.clone();
            pool.submit(Box::new(move || tx.send(i).unwrap()));
        }
        let mut got: Vec<u32> = (0..10_000).map(|_| rx.recv().unwrap()).collect();
        got.sort();
        assert_eq!(got, (0..10_000).collect::<Vec<_>>());
    }
}
