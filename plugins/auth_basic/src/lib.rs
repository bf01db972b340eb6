//! `auth_basic`: an access rule (SDK 1.2) that asks for a user name and
//! password (HTTP Basic, RFC 7617) checked against an htpasswd file, as
//! nginx's `auth_basic` and `auth_basic_user_file`.
//!
//! ```yaml
//! access:
//!   - path: /admin/
//!     handler: auth_basic
//!     options: { file: admin.htpasswd, realm: "Admin area" }
//! ```
//!
//! Options:
//! - `file` (required): the htpasswd file, relative to the vhost file's
//!   folder; bcrypt (`htpasswd -B`), SHA-256/512-crypt (`-2`, `-5`),
//!   apr1 (`-m`) and `{SHA}` (`-s`) hashes;
//! - `realm`: shown by browsers (default `Restricted`);
//! - `cache`: how long a verified user name and password are remembered
//!   (default `5m`; `0` verifies every request, as nginx does).
//!
//! After 3 failures from one address, each attempt from it first waits
//! 100 ms, doubling with every further failure up to 5 s (on a timer of
//! the event loop: no thread is held); a success or 5 minutes without a
//! failure forget them.
//!
//! A request without valid credentials gets 401 with
//! `WWW-Authenticate: Basic realm="...", charset="UTF-8"`; a valid one
//! passes with its user, which the access log, CGI's `REMOTE_USER` and
//! `AUTH_TYPE`, and handlers see. The file is re-read when it changes
//! (checked at most once a second). If it goes missing or turns bad,
//! every request gets 500 and the error log says why: never a pass.
//!
//! Verifying a bcrypt hash costs milliseconds (tens at cost 10), so a
//! credential not yet verified goes to the blocking pool; once verified,
//! it is remembered (a SHA-256 of the user, the password and the file's
//! version: never the password) for `cache`, and later requests pass on
//! the event loop.

mod htpasswd;

use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};
use tamada_sdk::Woke;
use tamada_sdk::access::{Access, Verdict};
use tamada_sdk::prelude::*;
use tamada_sdk::units::Secs;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The htpasswd file (relative: to the vhost file's folder).
    file: PathBuf,
    /// The realm browsers show (default `Restricted`).
    realm: Option<String>,
    /// How long a verified credential is remembered (default 5m; 0:
    /// verify every request).
    cache: Option<Secs>,
}

/// Remembered credentials at most (then the expired ones go, or all).
const CACHE_MAX: usize = 10_000;

/// How often the file's metadata is looked at.
const RECHECK: Duration = Duration::from_secs(1);

/// A hash to verify against for unknown users, so that they cost what a
/// known user's wrong password costs (bcrypt of "x", cost 5).
const DUMMY: &str = "$2y$05$nC6nErr9XZJuMJ57WyCob.EuZEjylDt2KaHfbfOtyb.EgL1I2jCVa";

/// What was read from the file.
struct Loaded {
    users: Arc<htpasswd::Users>,
    /// Bumped by every read that changed something: cached credentials
    /// of an older version are not trusted.
    version: u64,
    /// (inode, size, mtime ns) of what was read.
    id: Option<(u64, u64, i128)>,
    checked: Instant,
    /// Why the file cannot be used now.
    error: Option<String>,
}

/// One rule.
pub struct AuthBasic {
    file: PathBuf,
    challenge: String,
    ttl: Duration,
    state: RwLock<Loaded>,
    /// Read on every request by every loop, written once per
    /// verification: a reader-writer lock.
    cache: RwLock<HashMap<[u8; 32], Instant>>,
    /// Recent failures per client address: (count, last).
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// Verifications running now, by credential.
    flights: Mutex<HashMap<[u8; 32], Arc<Flight>>>,
    /// Verifications run (tests).
    #[cfg(test)]
    verifications: AtomicU64,
    /// This rule among all of the process (part of the cache keys).
    id: u64,
    /// The loaded file's version and whether it is unusable, readable
    /// without the lock on the hot path.
    version: AtomicU64,
    broken: AtomicBool,
    /// When the file is next looked at (ms since `epoch`).
    next_check: AtomicU64,
    epoch: Instant,
}

/// A verification in progress, which other threads may wait for.
#[derive(Default)]
struct Flight {
    done: Mutex<Option<bool>>,
    ready: Condvar,
}

/// Rules made so far (each takes the next number as its id).
static RULES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Each thread's copy of verified credentials (key -> until): the hot
    /// path takes no lock shared with other threads.
    static LOCAL: RefCell<HashMap<[u8; 32], Instant>> = RefCell::new(HashMap::new());
}

/// Failures from one address before its attempts are slowed down.
const FREE_FAILURES: u32 = 3;
/// Failures are forgotten after this long without one.
const FAILURE_MEMORY: Duration = Duration::from_secs(300);
/// Addresses with failures remembered at most.
const FAILURES_MAX: usize = 10_000;

fn file_id(p: &Path) -> std::io::Result<(u64, u64, i128)> {
    let m = std::fs::metadata(p)?;
    Ok((
        m.ino(),
        m.len(),
        m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
    ))
}

fn read(p: &Path) -> Result<htpasswd::Users, String> {
    let text =
        std::fs::read_to_string(p).map_err(|e| format!("{}: cannot be read: {e}", p.display()))?;
    htpasswd::parse(&text).map_err(|e| format!("{}: {e}", p.display()))
}

impl AuthBasic {
    /// The users, re-read when the file changed (looked at once a second).
    fn users(&self) -> Result<(Arc<htpasswd::Users>, u64), String> {
        {
            let s = self.state.read().unwrap_or_else(|e| e.into_inner());
            if s.checked.elapsed() < RECHECK {
                return match &s.error {
                    Some(e) => Err(e.clone()),
                    None => Ok((s.users.clone(), s.version)),
                };
            }
        }
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        if s.checked.elapsed() >= RECHECK {
            s.checked = Instant::now();
            let id = file_id(&self.file).ok();
            if id != s.id || id.is_none() {
                let was = s.error.clone();
                match (id, read(&self.file)) {
                    (Some(_), Ok(users)) => {
                        s.users = Arc::new(users);
                        s.error = None;
                        if was.is_some() {
                            log::warn!("{}: readable again", self.file.display());
                        }
                    }
                    (_, Err(e)) => {
                        if was.as_deref() != Some(e.as_str()) {
                            log::error!("{e}: every request it protects gets 500");
                        }
                        s.users = Arc::new(HashMap::new());
                        s.error = Some(e);
                    }
                    (None, Ok(_)) => {}
                }
                s.id = id;
                s.version += 1;
            }
            self.version.store(s.version, Ordering::Release);
            self.broken.store(s.error.is_some(), Ordering::Release);
            let next = self.epoch.elapsed() + RECHECK;
            self.next_check
                .store(next.as_millis() as u64, Ordering::Release);
        }
        match &s.error {
            Some(e) => Err(e.clone()),
            None => Ok((s.users.clone(), s.version)),
        }
    }

    fn key(&self, version: u64, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.id.to_le_bytes());
        h.update(version.to_le_bytes());
        h.update(user.as_bytes());
        h.update([0u8]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Whether `key` was verified and is still remembered: this thread's
    /// copy first, then the shared one (copied here when found).
    fn remembered(&self, key: &[u8; 32]) -> bool {
        let now = Instant::now();
        if LOCAL.with(|l| l.borrow().get(key).is_some_and(|until| now < *until)) {
            return true;
        }
        let until = {
            let c = self.cache.read().unwrap_or_else(|e| e.into_inner());
            match c.get(key) {
                Some(u) if now < *u => *u,
                _ => return false,
            }
        };
        LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            if l.len() >= CACHE_MAX {
                l.retain(|_, u| now < *u);
                if l.len() >= CACHE_MAX {
                    l.clear();
                }
            }
            l.insert(*key, until);
        });
        true
    }

    fn remember(&self, key: [u8; 32]) {
        if self.ttl.is_zero() {
            return;
        }
        let mut c = self.cache.write().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if c.len() >= CACHE_MAX {
            c.retain(|_, until| now < *until);
            if c.len() >= CACHE_MAX {
                c.clear();
            }
        }
        c.insert(key, now + self.ttl);
    }

    /// Runs `verify` for `key` unless another thread is running it now;
    /// then waits for that one's answer.
    fn verify_once(&self, key: [u8; 32], verify: impl FnOnce() -> bool) -> bool {
        let (flight, leader) = {
            let mut f = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            match f.get(&key) {
                Some(fl) => (fl.clone(), false),
                None => {
                    let fl = Arc::new(Flight::default());
                    f.insert(key, fl.clone());
                    (fl, true)
                }
            }
        };
        if leader {
            #[cfg(test)]
            self.verifications.fetch_add(1, Ordering::Relaxed);
            let ok = verify();
            // Remembered before the flight ends: a request coming between
            // the two would verify again.
            if ok {
                self.remember(key);
            }
            *flight.done.lock().unwrap_or_else(|e| e.into_inner()) = Some(ok);
            flight.ready.notify_all();
            self.flights
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            return ok;
        }
        let mut done = flight.done.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = Instant::now() + Duration::from_secs(30);
        while done.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            done = flight
                .ready
                .wait_timeout(done, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        done.unwrap_or(false)
    }

    /// How long an attempt from `ip` waits first: nothing for its first
    /// failures, then 100 ms doubling per failure, at most 5 s.
    fn penalty(&self, ip: IpAddr) -> Option<Duration> {
        let f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (n, at) = *f.get(&ip)?;
        if n < FREE_FAILURES || at.elapsed() > FAILURE_MEMORY {
            return None;
        }
        let steps = (n - FREE_FAILURES).min(6);
        Some((Duration::from_millis(100) * (1 << steps)).min(Duration::from_secs(5)))
    }

    fn failed(&self, ip: IpAddr) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if f.len() >= FAILURES_MAX && !f.contains_key(&ip) {
            f.retain(|_, (_, at)| at.elapsed() < FAILURE_MEMORY);
            if f.len() >= FAILURES_MAX {
                f.clear();
            }
        }
        let e = f.entry(ip).or_insert((0, Instant::now()));
        if e.1.elapsed() > FAILURE_MEMORY {
            e.0 = 0;
        }
        e.0 += 1;
        e.1 = Instant::now();
    }

    fn succeeded(&self, ip: IpAddr) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        f.remove(&ip);
    }

    fn challenge(&self, res: &mut ResponseBuilder) -> Verdict {
        res.status(401)
            .header("www-authenticate", &self.challenge)
            .header("content-type", "text/plain; charset=utf-8")
            .body("401: a user name and password are required\n");
        Verdict::Answer
    }
}

/// The user and password of an `Authorization: Basic` header.
fn credentials(req: &Request) -> Option<(String, String)> {
    let mut buf = [0u8; 512];
    let (u, p) = credentials_in(req, &mut buf)?;
    Some((u.to_owned(), p.to_owned()))
}

/// The user and password of an `Authorization: Basic` header, decoded
/// into `buf` (PERF: no allocation on the hot path; `None` past 512
/// bytes of credentials, or for anything not Basic).
fn credentials_in<'b>(req: &Request, buf: &'b mut [u8; 512]) -> Option<(&'b str, &'b str)> {
    let v = req.header("authorization")?.trim();
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let n = base64::engine::general_purpose::STANDARD
        .decode_slice(b64.trim(), buf)
        .ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    text.split_once(':')
}

impl Access for AuthBasic {
    fn check(&self, req: &Request, res: &mut ResponseBuilder) -> Verdict {
        // The hot path: a remembered credential takes no shared lock
        // (atomics for the file's state, this thread's copy of the cache).
        if self.epoch.elapsed().as_millis() as u64 >= self.next_check.load(Ordering::Acquire) {
            let _ = self.users();
        }
        if self.broken.load(Ordering::Acquire) {
            res.status(500)
                .header("content-type", "text/plain; charset=utf-8")
                .body("500: authentication is not available\n");
            return Verdict::Answer;
        }
        {
            let mut buf = [0u8; 512];
            let Some((user, password)) = credentials_in(req, &mut buf) else {
                // (a header too long for the buffer is checked below)
                if credentials(req).is_none() {
                    return self.challenge(res);
                }
                return self.check_slow(req, res);
            };
            let key = self.key(self.version.load(Ordering::Acquire), user, password);
            if self.remembered(&key) {
                return Verdict::User {
                    name: user.to_owned(),
                    auth_type: "Basic".into(),
                };
            }
        }
        self.check_slow(req, res)
    }
}

impl AuthBasic {
    /// A credential not remembered: the file, the slow-down, the hash.
    fn check_slow(&self, req: &Request, res: &mut ResponseBuilder) -> Verdict {
        let Some((user, password)) = credentials(req) else {
            return self.challenge(res);
        };
        let (users, version) = match self.users() {
            Ok(u) => u,
            Err(_) => {
                res.status(500)
                    .header("content-type", "text/plain; charset=utf-8")
                    .body("500: authentication is not available\n");
                return Verdict::Answer;
            }
        };
        let key = self.key(version, &user, &password);
        let ip = req.peer_addr().ip();
        // Guessing is slowed down: after a few failures from an address,
        // each of its attempts first waits (a timer on the loop: no
        // thread is held), longer with every failure.
        if req.is_inline()
            && req.woke() != Woke::TimedOut
            && let Some(d) = self.penalty(ip)
        {
            return Verdict::Delay(d);
        }
        let found = users.get(&user);
        if req.is_inline() && found.is_none_or(|h| h.is_slow()) {
            // bcrypt and its kind cost milliseconds: on the pool.
            req.defer();
            return Verdict::Pass;
        }
        // Single flight: concurrent first requests with the same
        // credential (a page's 50 assets) wait for one verification
        // instead of each running bcrypt.
        let ok = self.verify_once(key, || match found {
            Some(h) => h.verify(&password),
            None => {
                // As long as a wrong password of a known user.
                let _ = bcrypt::verify(&password, DUMMY);
                false
            }
        });
        if !ok {
            self.failed(ip);
            log::warn!(
                "auth_basic: {} for user \"{}\" on {}",
                if found.is_some() {
                    "wrong password"
                } else {
                    "no such user"
                },
                user.escape_debug(),
                req.path()
            );
            return self.challenge(res);
        }
        self.remember(key);
        self.succeeded(ip);
        Verdict::User {
            name: user,
            auth_type: "Basic".into(),
        }
    }
}

/// Builds a rule from its options (reads the file: a missing or bad one
/// is an error at `tamada -t`).
pub fn new(options: &Options) -> Result<AuthBasic, String> {
    let c: Config = options.parse()?;
    let file = if c.file.is_relative() {
        options
            .vhost()
            .config_file()
            .parent()
            .unwrap_or(Path::new("."))
            .join(&c.file)
    } else {
        c.file.clone()
    };
    let users = read(&file).map_err(|e| format!("file: {e}"))?;
    let realm = c.realm.unwrap_or_else(|| "Restricted".into());
    if realm
        .chars()
        .any(|ch| ch.is_control() || ch == '"' || ch == '\\')
    {
        return Err("realm: no quotes, backslashes or control characters".into());
    }
    Ok(AuthBasic {
        challenge: format!("Basic realm=\"{realm}\", charset=\"UTF-8\""),
        ttl: c.cache.map_or(Duration::from_secs(300), |s| s.0),
        state: RwLock::new(Loaded {
            users: Arc::new(users),
            version: 0,
            id: file_id(&file).ok(),
            checked: Instant::now(),
            error: None,
        }),
        file,
        cache: RwLock::new(HashMap::new()),
        failures: Mutex::new(HashMap::new()),
        flights: Mutex::new(HashMap::new()),
        #[cfg(test)]
        verifications: AtomicU64::new(0),
        id: RULES.fetch_add(1, Ordering::Relaxed),
        version: AtomicU64::new(0),
        broken: AtomicBool::new(false),
        next_check: AtomicU64::new(RECHECK.as_millis() as u64),
        epoch: Instant::now(),
    })
}

tamada_sdk::export_plugin!(
    name: "auth_basic",
    access: new,
    schema: || tamada_sdk::schema::of::<Config>(),
);

#[cfg(test)]
mod tests {
    use super::*;
    use tamada_sdk::testing::TestRequest;

    fn basic(u: &str, p: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    }

    #[test]
    fn challenge_defer_verify_and_remember() {
        let dir = std::env::temp_dir().join(format!("tamada-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("users");
        std::fs::write(
            &f,
            "alice:$2y$05$nC6nErr9XZJuMJ57WyCob.EuZEjylDt2KaHfbfOtyb.EgL1I2jCVa\n",
        )
        .unwrap();
        let yaml = format!("{{ file: {}, realm: Test }}", f.display());
        let a = new(&TestRequest::get("/").options(&yaml)).unwrap();
        let v = TestRequest::get("/").check(&a);
        assert_eq!(v.response.get_status(), 401);
        assert_eq!(
            v.response.get_header("www-authenticate"),
            Some(&b"Basic realm=\"Test\", charset=\"UTF-8\""[..])
        );
        let ok = TestRequest::get("/").header("authorization", basic("alice", "password"));
        let v = ok.check(&a);
        assert!(v.deferred, "bcrypt goes to the pool");
        assert_eq!(
            v.verdict,
            Verdict::User {
                name: "alice".into(),
                auth_type: "Basic".into()
            }
        );
        // Remembered: inline now.
        assert!(!ok.check(&a).deferred);
        let bad = TestRequest::get("/").header("authorization", basic("alice", "nope"));
        assert_eq!(bad.check(&a).response.get_status(), 401);
        let who = TestRequest::get("/").header("authorization", basic("mallory", "password"));
        assert_eq!(who.check(&a).response.get_status(), 401);
        // The file goes: 500, never a pass (even for a remembered user).
        std::fs::remove_file(&f).unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        assert_eq!(ok.check(&a).response.get_status(), 500);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_first_requests_share_one_verification() {
        let dir = std::env::temp_dir().join(format!("tamada-auth-sf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("users");
        let hash = bcrypt::hash("pw", 10).unwrap();
        std::fs::write(&f, format!("ann:{hash}\n")).unwrap();
        let a = Arc::new(
            new(&TestRequest::get("/").options(&format!("{{ file: {} }}", f.display()))).unwrap(),
        );
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (a, b) = (a.clone(), barrier.clone());
                std::thread::spawn(move || {
                    b.wait();
                    TestRequest::get("/")
                        .header("authorization", basic("ann", "pw"))
                        .check(&*a)
                        .verdict
                })
            })
            .collect();
        for t in threads {
            assert!(matches!(t.join().unwrap(), Verdict::User { .. }));
        }
        let ran = a.verifications.load(Ordering::Relaxed);
        assert_eq!(ran, 1, "bcrypt ran {ran} times for one credential");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_or_bad_file_is_an_options_error() {
        let e = new(&TestRequest::get("/").options("{ file: /nonexistent/users }"))
            .err()
            .unwrap();
        assert!(
            e.contains("/nonexistent/users") && e.contains("cannot be read"),
            "{e}"
        );
    }
}
