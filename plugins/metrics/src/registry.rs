//! The counters: process-wide registries that loggers count into and the
//! endpoint reads.
//!
//! ```text
//! REGISTRIES (static)  "default" -> Registry
//!   Registry           vhost name -> VhostSeries
//!     VhostSeries      requests{method,code}, bytes in/out, incomplete,
//!                      and a duration Histogram
//! ```
//!
//! Why a `static`: the server builds one plugin instance per route and per
//! logger, and builds them all anew on every reload (SIGHUP). Counters that
//! lived in an instance would restart at zero on each reload and could not
//! be shared between vhosts. A static lives as long as the library, and
//! the server never unloads a plugin library, so the counters stay
//! monotonic for the life of the process, which is what Prometheus
//! expects of a counter. (Each `cdylib` has its own copy of every static:
//! this registry belongs to the `metrics` plugin alone.)
//!
//! PERF: counting is the hot path (once per finished exchange, on every
//! worker thread); reading is rare (one scrape every few seconds). So a
//! logger holds `Arc`s to its vhost's series and counts with relaxed
//! atomic adds; the only lock on the hot path is the read side of the
//! `requests` map, and its write side is taken only the first time a
//! (method, code) pair is seen.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

/// Every registry of the process, by the `registry` option's name.
///
/// Locked only while an instance is built (start-up, reload): never on the
/// request path.
static REGISTRIES: Mutex<BTreeMap<String, Arc<Registry>>> = Mutex::new(BTreeMap::new());

/// The registry of that name, created on first use. A route may be built
/// before the loggers that feed it (vhost files are read in any order), so
/// either side may be first.
pub fn registry(name: &str) -> Arc<Registry> {
    // Poisoning: the critical sections in this module only insert into
    // maps and cannot leave one half-changed, so a panic elsewhere while a
    // lock was held leaves valid data behind. Recover instead of
    // spreading the panic to every later request.
    let mut all = REGISTRIES.lock().unwrap_or_else(PoisonError::into_inner);
    all.entry(name.to_owned()).or_default().clone()
}

/// The request methods that get a label value of their own: RFC 9110's
/// and PATCH. Everything else counts as `other`, so that a client sending
/// made-up methods cannot create new time series (cardinality is what
/// makes a Prometheus server fall over).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
    Other,
}

impl Method {
    /// Method tokens are case-sensitive (RFC 9110 section 9.1): `get` is
    /// not `GET`, so it is `other`.
    pub fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "CONNECT" => Method::Connect,
            "OPTIONS" => Method::Options,
            "TRACE" => Method::Trace,
            "PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
            Method::Other => "other",
        }
    }
}

/// One registry: the series of every vhost that feeds it.
#[derive(Default)]
pub struct Registry {
    /// A `BTreeMap` so that the output is sorted by vhost, which makes it
    /// stable from one scrape to the next (easier to read and to diff).
    vhosts: RwLock<BTreeMap<String, Arc<VhostSeries>>>,
}

impl Registry {
    /// The series of `vhost`, created on first use, with a duration
    /// histogram of these bucket bounds. Returns the histogram too, so
    /// the logger can keep it and observe without a lock.
    ///
    /// Several loggers may feed one vhost's series (a vhost name repeated
    /// on two ports; the old and the new instance during a reload). They
    /// share the histogram when their bounds agree; otherwise the last one
    /// built replaces it, so a reload that changes `buckets` restarts that
    /// histogram, which Prometheus reads as a counter reset.
    pub fn vhost(&self, vhost: &str, bounds: &[f64]) -> (Arc<VhostSeries>, Arc<Histogram>) {
        let series = {
            let mut all = self.vhosts.write().unwrap_or_else(PoisonError::into_inner);
            all.entry(vhost.to_owned())
                .or_insert_with(|| Arc::new(VhostSeries::new(bounds)))
                .clone()
        };
        let mut duration = series
            .duration
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *duration.bounds != *bounds {
            log::info!(
                "vhost `{vhost}`: duration buckets changed, its histogram starts again from zero"
            );
            *duration = Arc::new(Histogram::new(bounds));
        }
        let histogram = duration.clone();
        drop(duration);
        (series, histogram)
    }

    /// The vhosts and their series, sorted by name: a consistent list to
    /// render from, taken without holding the lock while rendering.
    pub fn vhosts(&self) -> Vec<(String, Arc<VhostSeries>)> {
        self.vhosts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// The counters of one vhost.
///
/// Memory ordering: the logger counts an exchange into `requests` last,
/// with `Release`, and a scrape reads `requests` first (its family is
/// rendered first), with `Acquire`. So a scrape that shows an exchange in
/// `tamada_requests_total` shows its bytes, its duration and whether it
/// was incomplete too. The other counters need nothing more than
/// `Relaxed`: they are only ever added to. A scrape can still show the
/// bytes of an exchange it does not count yet, never the reverse.
pub struct VhostSeries {
    /// Finished exchanges by (method, status code).
    requests: RwLock<BTreeMap<(Method, u16), AtomicU64>>,
    /// Response body bytes that went out (what nginx calls
    /// `$body_bytes_sent`: 0 for HEAD and 304).
    pub response_bytes: AtomicU64,
    /// Request bytes received, head and body.
    pub request_bytes: AtomicU64,
    /// Exchanges whose response did not go out whole (the client left, a
    /// write failed): a rising rate here means clients give up.
    pub incomplete: AtomicU64,
    /// Plugin calls that held an event loop past the server's watchdog
    /// threshold (100 ms), from the server's `loop stall: ` records.
    pub loop_stalls: AtomicU64,
    /// The current histogram; see [`Registry::vhost`] for why it can be
    /// replaced. Loggers hold their own `Arc` to it, so the lock is taken
    /// only when an instance is built and when a scrape reads it.
    duration: Mutex<Arc<Histogram>>,
}

impl VhostSeries {
    fn new(bounds: &[f64]) -> Self {
        VhostSeries {
            requests: RwLock::default(),
            response_bytes: AtomicU64::new(0),
            request_bytes: AtomicU64::new(0),
            incomplete: AtomicU64::new(0),
            loop_stalls: AtomicU64::new(0),
            duration: Mutex::new(Arc::new(Histogram::new(bounds))),
        }
    }

    /// Counts one exchange. Call it after the exchange's other counters
    /// (see the ordering note on [`VhostSeries`]).
    pub fn count_request(&self, method: Method, code: u16) {
        let key = (method, code);
        {
            // The common case: the pair has been seen before. A shared
            // read lock lets every worker count at once.
            let map = self.requests.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(c) = map.get(&key) {
                c.fetch_add(1, Ordering::Release);
                return;
            }
        }
        // First time for this pair: insert under the write lock.
        // `or_insert_with` copes with another thread having inserted it
        // between our two locks.
        let mut map = self
            .requests
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(key)
            .or_insert_with(|| AtomicU64::new(0))
            .fetch_add(1, Ordering::Release);
    }

    /// `(method, code, count)` for every pair seen, sorted.
    pub fn requests(&self) -> Vec<(Method, u16, u64)> {
        self.requests
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(&(m, c), n)| (m, c, n.load(Ordering::Acquire)))
            .collect()
    }

    /// The current duration histogram.
    pub fn duration(&self) -> Arc<Histogram> {
        self.duration
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A histogram of durations with fixed bucket bounds (seconds).
pub struct Histogram {
    /// Upper bounds, finite and strictly increasing (checked when the
    /// options are read); the `+Inf` bucket is implicit.
    bounds: Box<[f64]>,
    /// Observations per bucket, *not* cumulative: `counts[i]` counts
    /// values in `(bounds[i-1], bounds[i]]`, the last one those above
    /// every bound. One atomic add per observation instead of one per
    /// bucket; the cumulative `le` counts are summed up at scrape time.
    counts: Box<[AtomicU64]>,
    /// The sum in whole microseconds: the server measures durations in
    /// microseconds, so an integer sum is exact and needs one atomic add,
    /// where an `f64` sum would need a compare-and-swap loop.
    sum_us: AtomicU64,
}

/// A histogram read at one moment, in the exposition's terms.
#[derive(Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// `(le, cumulative count)` for every finite bound.
    pub buckets: Vec<(f64, u64)>,
    /// Every observation: the `+Inf` bucket and `_count`.
    pub count: u64,
    /// `_sum`, in seconds.
    pub sum_seconds: f64,
}

impl Histogram {
    /// A histogram with these bounds (already validated).
    pub fn new(bounds: &[f64]) -> Self {
        Histogram {
            bounds: bounds.into(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        // Compare in seconds as f64: `us / 1e6` is correctly rounded, so a
        // duration of exactly 5 ms equals the bound an admin wrote as
        // `0.005` and falls in that bucket (`le` means "less or equal").
        let seconds = us as f64 / 1e6;
        let i = self.bounds.partition_point(|&b| b < seconds);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Reads the histogram. `count` is summed from the buckets themselves,
    /// so the `+Inf` bucket always equals `_count` even while requests are
    /// being observed.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (bound, c) in self.bounds.iter().zip(self.counts.iter()) {
            running += c.load(Ordering::Relaxed);
            buckets.push((*bound, running));
        }
        let inf = self.counts.last().map_or(0, |c| c.load(Ordering::Relaxed));
        HistogramSnapshot {
            buckets,
            count: running + inf,
            sum_seconds: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_count_less_or_equal_and_cumulate() {
        let h = Histogram::new(&[0.005, 0.01, 1.0]);
        for us in [
            0, 4_999, 5_000, 5_001, 10_000, 999_999, 1_000_000, 1_000_001, 7_000_000,
        ] {
            h.observe(Duration::from_micros(us));
        }
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![(0.005, 3), (0.01, 5), (1.0, 7)]);
        assert_eq!(s.count, 9);
        let sum_us: u64 =
            4_999 + 5_000 + 5_001 + 10_000 + 999_999 + 1_000_000 + 1_000_001 + 7_000_000;
        assert_eq!(s.sum_seconds, sum_us as f64 / 1e6);
    }

    #[test]
    fn a_histogram_without_bounds_has_only_inf() {
        let h = Histogram::new(&[]);
        h.observe(Duration::from_millis(3));
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![]);
        assert_eq!((s.count, s.sum_seconds), (1, 0.003));
    }

    #[test]
    fn methods_outside_the_list_are_other() {
        assert_eq!(Method::from_token("GET").as_str(), "GET");
        assert_eq!(Method::from_token("PATCH").as_str(), "PATCH");
        for t in ["get", "PROPFIND", "BREW", ""] {
            assert_eq!(Method::from_token(t), Method::Other, "{t}");
        }
    }

    #[test]
    fn counting_from_many_threads_loses_nothing() {
        let reg = registry("test-threads");
        let (series, hist) = reg.vhost("a", &[0.1]);
        std::thread::scope(|s| {
            for t in 0..8u16 {
                let (series, hist) = (&series, &hist);
                s.spawn(move || {
                    for i in 0..1000u16 {
                        // New pairs appear while others are counted.
                        series.count_request(Method::Get, 200 + (i + t) % 5);
                        hist.observe(Duration::from_millis(u64::from(i % 200)));
                    }
                });
            }
        });
        let total: u64 = series.requests().iter().map(|r| r.2).sum();
        assert_eq!(total, 8000);
        assert_eq!(series.requests().len(), 5);
        assert_eq!(hist.snapshot().count, 8000);
    }

    #[test]
    fn vhosts_share_a_registry_and_changed_buckets_restart_the_histogram() {
        let reg = registry("test-share");
        assert!(Arc::ptr_eq(&reg, &registry("test-share")));
        let (a1, h1) = reg.vhost("a", &[0.1]);
        let (a2, h2) = reg.vhost("a", &[0.1]);
        assert!(Arc::ptr_eq(&a1, &a2) && Arc::ptr_eq(&h1, &h2));
        h1.observe(Duration::from_millis(1));
        let (_, h3) = reg.vhost("a", &[0.2]);
        assert!(!Arc::ptr_eq(&h1, &h3));
        assert_eq!(a1.duration().snapshot().count, 0);
        reg.vhost("b", &[0.1]);
        let names: Vec<String> = reg.vhosts().into_iter().map(|v| v.0).collect();
        assert_eq!(names, ["a", "b"]);
    }
}
