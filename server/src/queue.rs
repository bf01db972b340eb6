//! The hand-off from the reactor to the workers: a FIFO of connections
//! ready to be served, and a stack of idle workers.
//!
//! An idle worker sleeps in the kernel (`park`) instead of spinning (a
//! spinning channel cost 14% of the CPU in `sched_yield` on the 1 KiB
//! benchmark). The most recently idle worker is woken first (LIFO).
//!
//! PERF: waking a sleeping thread per request is a context switch per
//! request. So only about four workers per CPU are kept running (measured
//! on the 1 KiB benchmark with 2 CPUs, requests/s by workers running:
//! 2 -> 45k, 4 -> 54k, 8 -> 56k, 16 -> 48k, 64 -> 43k); a job queued while
//! they are all busy waits for the next one to finish, which takes it
//! without sleeping. Handlers may block (a CGI child, a slow upload), so
//! the reactor calls `nudge` on every loop: when jobs have waited 1 ms with
//! no worker taking one, one more worker is woken. The pool (`workers`)
//! bounds the total.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::thread::Thread;
use std::time::{Duration, Instant};

struct Inner<T> {
    queue: VecDeque<T>,
    idle: Vec<Thread>,
    /// Workers awake (serving, or about to look at the queue).
    running: usize,
    /// Jobs taken so far (progress, for `nudge`).
    taken: u64,
    /// `taken` at the last nudge.
    seen: u64,
    /// Since when jobs have waited with no progress.
    stalled_since: Option<Instant>,
}

/// How long waiting jobs may see no progress before another worker is woken.
const STALL: Duration = Duration::from_millis(1);

/// A multi-consumer FIFO with blocking `pop`.
pub struct Jobs<T> {
    inner: Mutex<Inner<T>>,
    /// Workers kept running when they keep up (about the CPU count).
    target: usize,
}

impl<T> Default for Jobs<T> {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::new(cpus * 4)
    }
}

impl<T> Jobs<T> {
    pub fn new(target: usize) -> Self {
        Jobs {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                idle: Vec::new(),
                // Every worker starts awake and parks on its first pop.
                running: usize::MAX / 2,
                taken: 0,
                seen: 0,
                stalled_since: None,
            }),
            target: target.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        // A poisoned lock only means a panic while holding it; the queue
        // is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, t: T) {
        let waiter = {
            let mut g = self.lock();
            g.queue.push_back(t);
            if g.running < self.target {
                Self::wake_one(&mut g)
            } else {
                None
            }
        };
        if let Some(w) = waiter {
            w.unpark();
        }
    }

    fn wake_one(g: &mut Inner<T>) -> Option<Thread> {
        let w = g.idle.pop()?;
        g.running += 1;
        Some(w)
    }

    /// Called by the reactor on every loop: wakes one more worker when
    /// jobs wait and none was taken since the last call (the running
    /// workers are blocked in handlers).
    pub fn nudge(&self) {
        let waiter = {
            let mut g = self.lock();
            let waiting = !g.queue.is_empty() && g.taken == g.seen;
            g.seen = g.taken;
            if !waiting {
                g.stalled_since = None;
                None
            } else {
                let now = Instant::now();
                match g.stalled_since {
                    None => {
                        g.stalled_since = Some(now);
                        None
                    }
                    Some(t) if now.duration_since(t) >= STALL => {
                        g.stalled_since = Some(now);
                        Self::wake_one(&mut g)
                    }
                    Some(_) => None,
                }
            }
        };
        if let Some(w) = waiter {
            w.unpark();
        }
    }

    /// Whether jobs are waiting (the reactor then polls with a short timeout).
    pub fn waiting(&self) -> bool {
        !self.lock().queue.is_empty()
    }

    pub fn pop(&self) -> T {
        let me = std::thread::current();
        let mut g = self.lock();
        if g.running > usize::MAX / 4 {
            // First call of this worker: it was counted in the initial
            // "everyone awake" value; settle the count.
            g.running = 0;
        }
        loop {
            if let Some(t) = g.queue.pop_front() {
                g.taken += 1;
                return t;
            }
            g.running = g.running.saturating_sub(1);
            g.idle.push(me.clone());
            loop {
                drop(g);
                std::thread::park();
                g = self.lock();
                // Woken for real only when a waker took us off the list.
                if !g.idle.iter().any(|w| w.id() == me.id()) {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn every_job_is_taken_once() {
        let q: Arc<Jobs<u32>> = Arc::new(Jobs::default());
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let q = q.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                loop {
                    let v = q.pop();
                    if v == u32::MAX {
                        return;
                    }
                    tx.send(v).unwrap();
                }
            });
        }
        for i in 0..10_000 {
            q.push(i);
        }
        let mut got: Vec<u32> = (0..10_000).map(|_| rx.recv().unwrap()).collect();
        got.sort();
        assert_eq!(got, (0..10_000).collect::<Vec<_>>());
        for _ in 0..4 {
            q.push(u32::MAX);
        }
    }
}
