//! `limit`: an access rule (SDK 1.2) that bounds each client's request
//! rate (nginx's `limit_req`, a leaky bucket) and its requests in flight
//! (nginx's `limit_conn`, counted per request: a plugin sees no
//! connections), answering 429 with `Retry-After` past them.
//!
//! ```yaml
//! access:
//!   - path: /api/
//!     handler: limit
//!     options: { rate: 10/s, burst: 20, nodelay: true, in_flight: 4 }
//!   - path: /login
//!     handler: limit
//!     options: { rate: 5/m, key: header, header: X-Api-Key }
//! ```
//!
//! Options:
//! - `rate`: requests per second or minute (`10/s`, `300/m`, or a number
//!   per second); a client's requests drain a bucket at this rate;
//! - `burst` (default 0): how many requests above the rate a bucket
//!   holds; they wait (on a timer of their event loop, no thread held)
//!   until the rate lets them through, as nginx's `limit_req`;
//! - `nodelay`: serve a burst at once instead (nginx's `nodelay`);
//! - `in_flight`: requests of one key being served at once (released when
//!   the exchange ends, however it ends);
//! - `key`: `addr` (default: the client's address, the real one behind
//!   `trusted_proxies`) or `header` (the value of `header`; requests
//!   without it fall back to the address);
//! - `status` (default 429), `max_keys` (default 100,000: the keys kept;
//!   past it the least recently seen half goes).
//!
//! Keys live in 64 shards, each behind its own lock, shared by every
//! event loop; memory is bounded by `max_keys` under a flood of distinct
//! addresses.

use serde::Deserialize;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tamada_sdk::Woke;
use tamada_sdk::access::{Access, Verdict};
use tamada_sdk::prelude::*;

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Requests per second (`10/s`, a number) or minute (`300/m`).
    rate: Option<serde_yaml_rate::Rate>,
    /// Requests above the rate a client may send at once.
    burst: Option<u32>,
    /// Serve a burst at once instead of spacing it to the rate.
    #[serde(default)]
    nodelay: bool,
    /// Requests of one key being served at once.
    in_flight: Option<u32>,
    /// `addr` (default) or `header`.
    key: Option<String>,
    /// The header whose value is the key (with `key: header`).
    header: Option<String>,
    /// The refusal's status (default 429).
    status: Option<u16>,
    /// Keys kept at most (default 100,000).
    max_keys: Option<usize>,
}

/// `10/s`, `300/m` or a number (per second), read from YAML.
mod serde_yaml_rate {
    use serde::{Deserialize, Deserializer};

    /// Requests per second.
    #[derive(Debug, Clone, Copy, schemars::JsonSchema)]
    #[schemars(with = "String")]
    pub struct Rate(pub f64);

    impl<'de> Deserialize<'de> for Rate {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
            #[derive(Deserialize)]
            #[serde(untagged)]
            enum Raw {
                N(f64),
                S(String),
            }
            let per_sec = match Raw::deserialize(d)? {
                Raw::N(n) => n,
                Raw::S(s) => {
                    let t = s.trim();
                    let (n, per) = match t.split_once('/') {
                        Some((n, u)) => (n.trim(), u.trim()),
                        None => (t, "s"),
                    };
                    let n: f64 = n.parse().map_err(|_| {
                        serde::de::Error::custom(format!("`{s}` is not a rate (10/s, 300/m)"))
                    })?;
                    match per {
                        "s" => n,
                        "m" => n / 60.0,
                        _ => {
                            return Err(serde::de::Error::custom(format!(
                                "`{s}`: the unit is /s or /m"
                            )));
                        }
                    }
                }
            };
            if !(per_sec.is_finite() && per_sec > 0.0) {
                return Err(serde::de::Error::custom("a rate is above 0"));
            }
            Ok(Rate(per_sec))
        }
    }
}

const SHARDS: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Requests above the rate, as nginx's `excess` (drains at `rate`).
    excess: f64,
    last: Instant,
    in_flight: u32,
}

/// One rule.
pub struct Limit {
    rate: Option<f64>,
    burst: f64,
    nodelay: bool,
    in_flight: Option<u32>,
    header: Option<String>,
    status: u16,
    shard_max: usize,
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<String, Entry>>>,
}

impl Limit {
    fn key(&self, req: &Request) -> String {
        if let Some(h) = &self.header
            && let Some(v) = req.header(h)
        {
            return format!("h:{v}");
        }
        req.peer_addr().ip().to_string()
    }

    fn shard(&self, key: &str) -> &Mutex<HashMap<String, Entry>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// Counts a request of `key`: `Ok(None)` to pass now, `Ok(Some(d))`
    /// to pass after `d` (a burst spaced to the rate), `Err(seconds)` when
    /// it is over a limit (the `Retry-After`).
    fn admit(&self, key: &str, now: Instant) -> Result<Option<Duration>, u64> {
        let mut map = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.shard_max && !map.contains_key(key) {
            evict(&mut map, self.shard_max / 2);
        }
        let e = map.entry(key.to_owned()).or_insert(Entry {
            excess: 0.0,
            last: now,
            in_flight: 0,
        });
        if let Some(max) = self.in_flight
            && e.in_flight >= max
        {
            e.last = now;
            return Err(1);
        }
        let mut wait = None;
        if let Some(rate) = self.rate {
            let elapsed = now.saturating_duration_since(e.last).as_secs_f64();
            let excess = (e.excess - elapsed * rate).max(0.0) + 1.0;
            e.last = now;
            // The first request of a bucket is free: `excess` counts the
            // ones above the rate.
            if excess - 1.0 > self.burst {
                let after = ((excess - 1.0 - self.burst) / rate).ceil().max(1.0);
                e.excess = (excess - 1.0).max(0.0);
                return Err(after as u64);
            }
            e.excess = excess;
            // Whole milliseconds, as nginx: less than one is no wait.
            let ms = ((excess - 1.0) / rate * 1000.0) as u64;
            if !self.nodelay && ms > 0 {
                wait = Some(Duration::from_millis(ms));
            }
        } else {
            e.last = now;
        }
        // A delayed request counts in flight when it passes (after its
        // wait), so a client gone meanwhile leaves nothing counted.
        if wait.is_none() && self.in_flight.is_some() {
            e.in_flight += 1;
        }
        Ok(wait)
    }

    /// A delayed request passes: counted in flight if there is room.
    fn enter(&self, key: &str) -> bool {
        let Some(max) = self.in_flight else {
            return true;
        };
        let mut map = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        let e = map.entry(key.to_owned()).or_insert(Entry {
            excess: 0.0,
            last: Instant::now(),
            in_flight: 0,
        });
        if e.in_flight >= max {
            return false;
        }
        e.in_flight += 1;
        true
    }

    fn release(&self, key: &str) {
        if self.in_flight.is_none() {
            return;
        }
        let mut map = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get_mut(key) {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
    }
}

/// Drops the least recently seen entries down to `keep` (those with
/// requests in flight stay: their release must find them).
fn evict(map: &mut HashMap<String, Entry>, keep: usize) {
    let mut ages: Vec<Instant> = map
        .values()
        .filter(|e| e.in_flight == 0)
        .map(|e| e.last)
        .collect();
    if ages.len() <= keep {
        return;
    }
    let drop_n = map.len().saturating_sub(keep).min(ages.len());
    let (_, cut, _) = ages.select_nth_unstable(drop_n.saturating_sub(1));
    let cut = *cut;
    map.retain(|_, e| e.in_flight > 0 || e.last > cut);
}

impl Access for Limit {
    fn check(&self, req: &Request, res: &mut ResponseBuilder) -> Verdict {
        let key = self.key(req);
        let admitted = if req.woke() == Woke::TimedOut {
            // After the delay this rule asked for: the rate was counted.
            if self.enter(&key) { Ok(None) } else { Err(1) }
        } else {
            self.admit(&key, Instant::now())
        };
        match admitted {
            Ok(None) => Verdict::Pass,
            Ok(Some(d)) => Verdict::Delay(d),
            Err(after) => {
                res.status(self.status)
                    .header("retry-after", after.to_string())
                    .header("content-type", "text/plain; charset=utf-8")
                    .body(format!(
                        "{}: too many requests, try again later\n",
                        self.status
                    ));
                Verdict::Answer
            }
        }
    }

    fn finish(&self, req: &Request) {
        self.release(&self.key(req));
    }

    fn finishes(&self) -> bool {
        self.in_flight.is_some()
    }
}

/// Builds a rule from its options.
pub fn new(options: &Options) -> Result<Limit, String> {
    let c: Config = options.parse()?;
    if c.rate.is_none() && c.in_flight.is_none() {
        return Err("give `rate` (requests per second or minute) and/or `in_flight`".into());
    }
    if (c.burst.is_some() || c.nodelay) && c.rate.is_none() {
        return Err("burst and nodelay go with `rate`".into());
    }
    if c.in_flight == Some(0) {
        return Err("in_flight: 0 would refuse everything".into());
    }
    let header = match (c.key.as_deref(), c.header) {
        (None | Some("addr"), None) => None,
        (Some("header"), Some(h)) if !h.is_empty() => Some(h.to_ascii_lowercase()),
        (Some("header"), _) => return Err("key: header needs `header: Name`".into()),
        (None | Some("addr"), Some(_)) => {
            return Err("header: goes with `key: header`".into());
        }
        (Some(k), _) => return Err(format!("key: `{k}` is neither addr nor header")),
    };
    let status = c.status.unwrap_or(429);
    if !(400..=599).contains(&status) {
        return Err(format!("status: {status} is not an error status (400-599)"));
    }
    let max_keys = c.max_keys.unwrap_or(100_000).max(SHARDS);
    Ok(Limit {
        rate: c.rate.map(|r| r.0),
        burst: c.burst.unwrap_or(0) as f64,
        nodelay: c.nodelay,
        in_flight: c.in_flight,
        header,
        status,
        shard_max: max_keys / SHARDS,
        hasher: RandomState::new(),
        shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
    })
}

tamada_sdk::export_plugin!(
    name: "limit",
    access: new,
    schema: || tamada_sdk::schema::of::<Config>(),
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tamada_sdk::testing::TestRequest;

    fn limit(yaml: &str) -> Result<Limit, String> {
        new(&TestRequest::get("/").options(yaml))
    }

    #[test]
    fn a_bucket_drains_at_the_rate_and_holds_the_burst() {
        let l = limit("{ rate: 10/s, burst: 2, nodelay: true }").unwrap();
        let t0 = Instant::now();
        // 1 at the rate + 2 of burst, then refused.
        for _ in 0..3 {
            assert!(l.admit("a", t0).is_ok());
        }
        assert!(l.admit("a", t0).is_err());
        // Another key is not affected.
        assert!(l.admit("b", t0).is_ok());
        // 100 ms later one more fits.
        let t1 = t0 + Duration::from_millis(100);
        assert!(l.admit("a", t1).is_ok());
        assert!(l.admit("a", t1).is_err());
        let l = limit("{ rate: 60/m }").unwrap();
        assert_eq!(l.admit("a", t0), Ok(None));
        assert_eq!(l.admit("a", t0), Err(1));
        assert!(l.admit("a", t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn without_nodelay_a_burst_is_spaced_to_the_rate() {
        let l = limit("{ rate: 10/s, burst: 3 }").unwrap();
        let t0 = Instant::now();
        assert_eq!(l.admit("a", t0), Ok(None));
        assert_eq!(l.admit("a", t0), Ok(Some(Duration::from_millis(100))));
        assert_eq!(l.admit("a", t0), Ok(Some(Duration::from_millis(200))));
        assert_eq!(l.admit("a", t0), Ok(Some(Duration::from_millis(300))));
        assert!(l.admit("a", t0).is_err());
        // As the server does: the delay, then the call again.
        let v = TestRequest::get("/").check(&l);
        assert!(v.delays >= 1 || v.verdict == Verdict::Pass);
    }

    #[test]
    fn in_flight_is_released_by_finish() {
        let l = limit("{ in_flight: 2 }").unwrap();
        let req = TestRequest::get("/");
        assert_eq!(req.check(&l).verdict, Verdict::Pass);
        assert_eq!(req.check(&l).verdict, Verdict::Pass);
        let v = req.check(&l);
        assert_eq!(v.response.get_status(), 429);
        assert_eq!(v.response.get_header("retry-after"), Some(&b"1"[..]));
        req.with(|r| l.finish(r));
        assert_eq!(req.check(&l).verdict, Verdict::Pass);
    }

    #[test]
    fn memory_is_bounded_under_many_keys() {
        let l = limit("{ rate: 1/s, max_keys: 6400 }").unwrap();
        let t = Instant::now();
        for i in 0..200_000u32 {
            let _ = l.admit(&format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255), t);
        }
        let total: usize = l.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(total <= 6400, "{total}");
    }

    #[test]
    fn bad_options() {
        assert!(limit("{}").is_err());
        assert!(limit("{ rate: 10/h }").is_err());
        assert!(limit("{ rate: 0 }").is_err());
        assert!(limit("{ rate: 1, key: header }").is_err());
        assert!(limit("{ in_flight: 1, burst: 3 }").is_err());
        assert!(limit("{ rate: 5, key: header, header: X-Key }").is_ok());
    }
}
