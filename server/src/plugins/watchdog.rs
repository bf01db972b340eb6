//! A watchdog for event loops held by one plugin call: an inline handler
//! that blocks stalls every connection of its loop, so it must not go
//! unnoticed. Each loop counts its plugin calls in an atomic (odd while
//! one runs: two relaxed increments per call, no clock read); a thread
//! looks at the counts every 50 ms, and a call it finds running for
//! [`STALL`] or longer is flagged. When the flagged call returns, the loop
//! itself logs the plugin, the route and about how long it held the loop,
//! at most once per plugin every [`QUIET`].

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

/// A call holding its loop this long is reported.
pub const STALL: Duration = Duration::from_millis(100);
/// At most one report per plugin in this time.
const QUIET: Duration = Duration::from_secs(10);
/// How often the watchdog looks.
const TICK: Duration = Duration::from_millis(50);

/// One loop's calls, as the watchdog sees them.
#[derive(Default)]
struct Busy {
    /// Odd while a plugin call runs.
    seq: AtomicU64,
    /// Set by the watchdog: the running call has held the loop for
    /// [`STALL`] or more.
    stalled: AtomicBool,
    /// When the watchdog first saw the running call (ms since `EPOCH`).
    since_ms: AtomicU64,
}

static LOOPS: Mutex<Vec<&'static Busy>> = Mutex::new(Vec::new());
static START: Once = Once::new();
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

thread_local! {
    static BUSY: Cell<Option<&'static Busy>> = const { Cell::new(None) };
    /// The route whose handler is being called (set around the call).
    static ROUTE: Cell<Option<*const str>> = const { Cell::new(None) };
}

fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Watches the calling thread (an event loop) from now on.
pub fn watch_this_loop() {
    let b: &'static Busy = Box::leak(Box::default());
    LOOPS.lock().unwrap_or_else(|e| e.into_inner()).push(b);
    BUSY.with(|c| c.set(Some(b)));
    START.call_once(|| {
        let _ = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(run);
    });
}

fn run() {
    // Per loop: the running call's count when first seen.
    let mut seen: Vec<u64> = Vec::new();
    loop {
        std::thread::sleep(TICK);
        let loops: Vec<&'static Busy> = LOOPS.lock().unwrap_or_else(|e| e.into_inner()).clone();
        seen.resize(loops.len(), 0);
        let now = epoch().elapsed().as_millis() as u64;
        for (b, last) in loops.iter().zip(seen.iter_mut()) {
            let s = b.seq.load(Ordering::Acquire);
            if s % 2 == 0 {
                continue;
            }
            if s != *last {
                *last = s;
                b.since_ms.store(now, Ordering::Relaxed);
            } else if now.saturating_sub(b.since_ms.load(Ordering::Relaxed))
                >= STALL.as_millis() as u64
            {
                b.stalled.store(true, Ordering::Release);
            }
        }
    }
}

/// Around a plugin call on this thread: `f`'s result, and how long it
/// held the loop when the watchdog flagged it.
pub fn around<R>(f: impl FnOnce() -> R) -> (R, Option<Duration>) {
    let Some(b) = BUSY.with(|c| c.get()) else {
        return (f(), None);
    };
    struct Done(&'static Busy);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.seq.fetch_add(1, Ordering::Release);
        }
    }
    b.seq.fetch_add(1, Ordering::Release);
    let r = {
        let _done = Done(b);
        f()
    };
    if !b.stalled.swap(false, Ordering::AcqRel) {
        return (r, None);
    }
    let since = b.since_ms.load(Ordering::Relaxed);
    // The watchdog sees a call up to one tick after it began.
    let held = epoch().elapsed().as_millis() as u64 - since + TICK.as_millis() as u64;
    (r, Some(Duration::from_millis(held)))
}

/// Runs `f` (a handler's call) with `route` named for a stall report.
pub fn in_route<R>(route: &str, f: impl FnOnce() -> R) -> R {
    struct Reset(Option<*const str>);
    impl Drop for Reset {
        fn drop(&mut self) {
            ROUTE.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(ROUTE.with(|c| c.replace(Some(route as *const str))));
    f()
}

/// The route of the handler being called on this thread, if any.
pub fn route() -> Option<String> {
    let p = ROUTE.with(|c| c.get())?;
    // SAFETY: set by `in_route` from a `&str` that outlives the call it
    // wraps, on this thread, and reset (by its guard) before that borrow
    // ends; read here only during that call.
    Some(unsafe { &*p }.to_owned())
}

/// Whether a stall of `plugin` may be reported now (once per [`QUIET`]).
pub fn may_report(plugin: &'static str) -> bool {
    static LAST: Mutex<Option<HashMap<&'static str, Instant>>> = Mutex::new(None);
    let mut m = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let m = m.get_or_insert_with(HashMap::new);
    let now = Instant::now();
    match m.get(plugin) {
        Some(t) if now.duration_since(*t) < QUIET => false,
        _ => {
            m.insert(plugin, now);
            true
        }
    }
}
