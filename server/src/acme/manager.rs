//! The ACME thread: obtains and renews the certificates of vhosts with
//! `tls: { acme: true }`, alone or as one server of a fleet sharing
//! `state_dir`.
//!
//! It runs as the serving user, never on an event loop, and wakes once a
//! second ([`TICK`]) to:
//! 1. read the challenges other servers of a fleet published in
//!    `state_dir/<ca>/challenges/` into the loops' in-memory store (a CA
//!    may validate against any server behind the balancer);
//! 2. load a `current.pem` that changed on disk (a certificate another
//!    server obtained, or this one's);
//! 3. order what is due: a vhost without a certificate (or whose
//!    certificate lacks one of its names), or past its renewal time.
//!
//! An order takes the vhost's lock in `state_dir` first (a file made
//! with `O_EXCL`, refreshed at each step, taken over once older than
//! `fleet::LEASE` from a server that crashed). A server that finds the lock
//! held orders nothing and picks up the result from the file.
//!
//! Renewal: inside the window the CA's renewal information suggests
//! (RFC 9773), at a random time in it; otherwise at two thirds of the
//! lifetime. Failures wait from [`BACKOFF_MIN`], doubling up to
//! `retry_max`, with jitter, or as long as the CA's `Retry-After` asks
//! (up to `retry_max`).

use super::client::{LastAnswer, Ureq, Watched, block_on, last, poll_wait};
use super::fleet::{Lock, Syncer, TICK, identity};
use super::store::{self, CertInfo, Pending, Slot};
use crate::config::acme::{AcmeConf, ChallengeKind, KeyType};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType,
    ExternalAccountKey, Identifier, NewAccount, NewOrder, OrderStatus,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// The first wait after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_secs(5);
/// Problems (RFC 8555 section 6.7) that only a change of the
/// configuration, the DNS or the CA's account mends: the next try waits
/// `retry_max` (as Apache's mod_md goes to daily retries), not seconds.
const LASTING: [&str; 7] = [
    "rejectedIdentifier",
    "unsupportedIdentifier",
    "caa",
    "invalidContact",
    "unsupportedContact",
    "externalAccountRequired",
    "userActionRequired",
];
/// How long a challenge is published before the CA is told to validate
/// it, so that every server of a fleet has read it ([`TICK`] and a half).
const PUBLISH_WAIT: Duration = Duration::from_millis(1500);
/// The longest an order may take to be validated, and then to be
/// issued.
const ORDER_TIMEOUT: Duration = Duration::from_secs(180);
/// An order being finalized with a key of tamada's, in the vhost's
/// folder until its certificate is stored ([`Finalizing`]).
const FINALIZING: &str = "finalizing.json";

/// An order finalized (or about to be) with this key whose certificate
/// is not stored yet: the next attempt downloads that certificate instead
/// of ordering another (a CA counts each certificate it issues against
/// its limits: at Let's Encrypt, 5 a week for the same names).
#[derive(serde::Serialize, serde::Deserialize)]
struct Finalizing {
    order: String,
    names: Vec<String>,
    /// The certificate's private key, PEM.
    key: String,
}

/// A vhost whose certificates come from the CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub vhost: String,
    /// Its name and aliases.
    pub names: Vec<String>,
    /// It has a plain port (HTTP-01 can be answered).
    pub http01: bool,
    /// It has an HTTPS port (TLS-ALPN-01 can be answered).
    pub tls_alpn: bool,
    /// Its plain port is 80 / its HTTPS port is 443, where public CAs
    /// validate: that challenge is tried first.
    pub on_80: bool,
    pub on_443: bool,
}

impl Want {
    /// The wanted certificates of a configuration.
    /// The files of one vhost name on several addresses make one want
    /// (one certificate slot): their names and ports together.
    pub fn all(vhosts: &[crate::config::VhostConf]) -> Vec<Want> {
        let mut out: Vec<Want> = Vec::new();
        for v in vhosts.iter().filter(|v| v.acme()) {
            let w = Want {
                vhost: v.name.clone(),
                names: v.names(),
                http01: v.listens.iter().any(|l| !l.tls),
                tls_alpn: v.listens.iter().any(|l| l.tls),
                on_80: v.listens.iter().any(|l| !l.tls && l.addr.port() == 80),
                on_443: v.listens.iter().any(|l| l.tls && l.addr.port() == 443),
            };
            match out.iter_mut().find(|o| o.vhost == w.vhost) {
                Some(o) => {
                    for n in w.names {
                        if !o.names.contains(&n) {
                            o.names.push(n);
                        }
                    }
                    o.http01 |= w.http01;
                    o.tls_alpn |= w.tls_alpn;
                    o.on_80 |= w.on_80;
                    o.on_443 |= w.on_443;
                }
                None => out.push(w),
            }
        }
        out
    }
}

enum Msg {
    Update(AcmeConf, Vec<Want>),
}

fn sender() -> &'static Mutex<Option<Sender<Msg>>> {
    static TX: OnceLock<Mutex<Option<Sender<Msg>>>> = OnceLock::new();
    TX.get_or_init(Default::default)
}

/// Tells the ACME thread what is wanted now (at start, and after each
/// reload), starting it the first time something is.
pub fn update(conf: &AcmeConf, wants: Vec<Want>) {
    let mut g = sender().lock().unwrap_or_else(|p| p.into_inner());
    if g.is_none() {
        if wants.is_empty() {
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let m = Manager::new(conf.clone());
        if let Err(e) = std::thread::Builder::new()
            .name("acme".into())
            .spawn(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.run(rx)));
                if let Err(p) = r {
                    let why = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    log::error!(
                        "ACME: the certificate thread stopped ({why}): no certificate will be \
                     obtained or renewed until the server restarts"
                    );
                }
            })
        {
            log::error!("ACME: cannot start its thread: {e}");
            return;
        }
        *g = Some(tx);
    }
    if let Some(tx) = g.as_ref() {
        let _ = tx.send(Msg::Update(conf.clone(), wants));
    }
}

/// One managed vhost.
struct Managed {
    want: Want,
    slot: Arc<Slot>,
    /// Its folder: `current.pem`, `meta.json`.
    dir: PathBuf,
    /// `current.pem` as last loaded (modified time, length, inode).
    seen: Option<(SystemTime, u64, u64)>,
    info: Option<CertInfo>,
    renew_at: Option<SystemTime>,
    /// The CA's suggested window (RFC 9773), when it gave one.
    window: Option<(SystemTime, SystemTime)>,
    /// When to ask for renewal information again.
    ari_next: SystemTime,
    /// No attempt before this (back-off after failures).
    next_try: SystemTime,
    failures: u32,
    last_error: Option<String>,
    last_ok: Option<SystemTime>,
    last_attempt: Option<SystemTime>,
    /// A challenge type whose validation failed last: the next order
    /// tries another one first.
    avoid: Option<ChallengeKind>,
    /// The CA refused `replaces` (it says the certificate was already
    /// replaced, by an order whose result was lost): order without it.
    no_replaces: bool,
    /// Names the CA refused or could not validate, left out of the
    /// certificate until then (the others are served meanwhile).
    without: Option<(Vec<String>, SystemTime)>,
}

impl Managed {
    /// The names left out of its certificate at `now` (none once their
    /// time is up).
    fn left_out(&self, now: SystemTime) -> &[String] {
        match &self.without {
            Some((names, until)) if *until > now => names,
            _ => &[],
        }
    }

    /// Its names in `out`, and the others, in the vhost's order.
    fn split(&self, out: &[String]) -> (Vec<String>, Vec<String>) {
        self.want
            .names
            .iter()
            .cloned()
            .partition(|n| out.contains(n))
    }

    /// Takes from `meta.json` the names another server of the fleet (or
    /// an earlier run) left out, while their time is not up.
    fn adopt_without(&mut self, meta: &Meta) {
        if self.without.is_some() || meta.without.is_empty() {
            return;
        }
        if let Some(until) = meta.without_until.map(from_unix)
            && until > SystemTime::now()
        {
            self.without = Some((meta.without.clone(), until));
            if self.last_error.is_none() {
                self.last_error = meta.last_error.clone();
            }
        }
    }
}

/// Lifts the fleet's back-off and left-out names in `meta.json` (a
/// reload: the admin may have fixed what failed), keeping the rest.
fn lift_meta(dir: &Path) {
    if let Ok(mut meta) = read_meta(dir) {
        meta.next_try = None;
        meta.without.clear();
        meta.without_until = None;
        if let Err(e) = store_meta(dir, &meta) {
            log::warn!("ACME: {}: {e}", dir.join("meta.json").display());
        }
    }
}

/// Whether the request whose error is `e` was refused for good (a 4xx
/// other than 429, and not a `badNonce` instant-acme retried in vain),
/// not for a passing trouble of the CA's or the network's.
fn refused_for_good(last_answer: &LastAnswer, e: &str) -> bool {
    last(last_answer).is_some_and(|a| a.is_final_refusal()) && !e.contains("badNonce")
}

/// How the error of a reduced order names the names it was for.
const PARTIAL: &str = " (ordered for ";
/// How a certificate of the CA's that does not parse or match its key
/// begins (ordered again, it would be the same: waits `retry_max`).
const BAD_CERTIFICATE: &str = "the CA's certificate: ";

/// What made an order fail, for the next one.
#[derive(Default)]
struct Refused {
    /// The challenge type whose validation failed.
    kind: Option<ChallengeKind>,
    /// The names the CA refused or could not validate.
    names: Vec<String>,
}

/// Makes the HTTP client of the CA's requests (a scripted one in tests).
type HttpFactory = fn(&AcmeConf) -> Result<Box<dyn instant_acme::HttpClient>, Fail>;

fn ureq_client(conf: &AcmeConf) -> Result<Box<dyn instant_acme::HttpClient>, Fail> {
    Ok(Box::new(Ureq::new(conf.ca_root.as_deref())?))
}

struct Manager {
    http: HttpFactory,
    conf: AcmeConf,
    ca_dir: PathBuf,
    account: Option<Account>,
    /// Whether the CA offers renewal information (unknown until asked).
    ari: Option<bool>,
    vhosts: BTreeMap<String, Managed>,
    /// The challenges answered (this server's and the fleet's), kept in
    /// step with `state_dir` by a thread of its own.
    sync: Arc<Syncer>,
    /// Who this server is, in lock files.
    me: String,
    /// The CA's last answer (its status and `Retry-After`).
    last: LastAnswer,
}

/// Why an attempt failed, for the log and `tamada --certs`.
pub type Fail = String;

impl Manager {
    fn new(conf: AcmeConf) -> Manager {
        let conf_challenges = conf.ca_dir().join("challenges");
        Manager {
            ca_dir: conf.ca_dir(),
            conf,
            account: None,
            ari: None,
            vhosts: BTreeMap::new(),
            sync: Syncer::start(conf_challenges),
            me: identity(),
            http: ureq_client,
            last: LastAnswer::default(),
        }
    }

    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            match rx.recv_timeout(TICK) {
                Ok(Msg::Update(conf, wants)) => self.update(conf, wants),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            // Every message waiting is applied before any work.
            while let Ok(Msg::Update(conf, wants)) = rx.try_recv() {
                self.update(conf, wants);
            }
            let names: Vec<String> = self.vhosts.keys().cloned().collect();
            for v in &names {
                self.pickup(v);
            }
            for v in &names {
                self.check_ari(v);
                if self.due(v) {
                    self.attempt(v);
                }
            }
        }
    }

    fn update(&mut self, conf: AcmeConf, wants: Vec<Want>) {
        let changed = conf != self.conf;
        if changed {
            log::info!("ACME: the acme: block changed: CA {}", conf.directory);
            self.ca_dir = conf.ca_dir();
            self.sync.set_dir(self.ca_dir.join("challenges"));
            self.conf = conf;
            self.account = None;
            self.ari = None;
            // Another CA: its own certificates (ordered anew unless its
            // folder has one); the old one is served meanwhile.
            for m in self.vhosts.values_mut() {
                m.seen = None;
                m.info = None;
                m.renew_at = None;
                m.window = None;
                m.failures = 0;
                m.avoid = None;
                m.no_replaces = false;
                m.next_try = SystemTime::now();
            }
        }
        let now = SystemTime::now();
        let mut next = BTreeMap::new();
        for w in wants {
            let dir = store::cert_dir(&self.ca_dir, &w.vhost);
            let m = match self.vhosts.remove(&w.vhost) {
                Some(mut m) => {
                    m.want = w;
                    m.dir = dir;
                    // A reload retries at once what failed (the admin
                    // may just have opened the firewall): meta.json too,
                    // where the fleet's back-off is kept.
                    if changed || m.failures > 0 || m.without.is_some() {
                        m.next_try = now;
                        m.without = None;
                        lift_meta(&m.dir);
                    }
                    m
                }
                None => Managed {
                    slot: store::slot(&w.vhost),
                    want: w,
                    dir,
                    seen: None,
                    info: None,
                    renew_at: None,
                    window: None,
                    ari_next: now,
                    next_try: now,
                    failures: 0,
                    last_error: None,
                    last_ok: None,
                    last_attempt: None,
                    avoid: None,
                    no_replaces: false,
                    without: None,
                },
            };
            next.insert(m.want.vhost.clone(), m);
        }
        self.vhosts = next;
    }

    /// Loads a `current.pem` that changed since it was last read.
    fn pickup(&mut self, vhost: &str) {
        use std::os::unix::fs::MetadataExt;
        let Some(m) = self.vhosts.get_mut(vhost) else {
            return;
        };
        let f = m.dir.join(store::CURRENT);
        let Ok(meta) = std::fs::metadata(&f) else {
            return;
        };
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
            meta.ino(),
        );
        if m.seen == Some(stamp) {
            return;
        }
        m.seen = Some(stamp);
        match store::read_pem(&f) {
            Ok((key, info)) => {
                let old = m.info.as_ref().map(|i| i.serial.clone());
                if old.as_deref() == Some(info.serial.as_str()) {
                    return;
                }
                if info.not_after.is_some_and(|t| t <= SystemTime::now()) {
                    log::warn!("ACME: {}: the stored certificate has expired", f.display());
                    return;
                }
                log::info!(
                    "ACME: vhost {} serves certificate {} for {} from {}, valid until {}",
                    vhost,
                    info.serial,
                    info.names.join(", "),
                    info.issuer,
                    fmt_time(info.not_after),
                );
                m.slot.store(Arc::new(key), info.clone());
                m.renew_at = Some(default_renewal(&info));
                m.window = None;
                m.ari_next = SystemTime::now();
                m.info = Some(info);
                m.failures = 0;
                m.no_replaces = false;
                m.next_try = SystemTime::now();
                m.slot.set_error(None);
                if let Ok(meta) = read_meta(&m.dir) {
                    m.last_ok = meta.last_ok.map(from_unix);
                    m.adopt_without(&meta);
                }
            }
            Err(e) => log::warn!("ACME: vhost {vhost}: {e}"),
        }
    }

    /// Whether the vhost needs an order now.
    fn due(&self, vhost: &str) -> bool {
        let Some(m) = self.vhosts.get(vhost) else {
            return false;
        };
        let now = SystemTime::now();
        if now < m.next_try {
            return false;
        }
        let out = m.left_out(now);
        match &m.info {
            None => true,
            Some(i) => {
                m.want
                    .names
                    .iter()
                    .any(|n| !i.names.contains(n) && !out.contains(n))
                    || m.renew_at.is_some_and(|t| t <= now)
            }
        }
    }

    /// Asks the CA for renewal information when it is time to.
    fn check_ari(&mut self, vhost: &str) {
        if self.ari == Some(false) {
            return;
        }
        let now = SystemTime::now();
        let Some(m) = self.vhosts.get(vhost) else {
            return;
        };
        let Some((aki, serial)) = m.info.as_ref().and_then(|i| i.ari_id.clone()) else {
            return;
        };
        if m.ari_next > now {
            return;
        }
        let account = match self.account() {
            Ok(a) => a,
            Err(e) => {
                log::debug!("ACME: renewal information for {vhost}: {e}");
                if let Some(m) = self.vhosts.get_mut(vhost) {
                    m.ari_next = now + Duration::from_secs(3600);
                }
                return;
            }
        };
        let id = CertificateIdentifier::new(aki.as_slice().into(), serial.as_slice().into());
        let r = block_on(account.renewal_info(&id));
        let Some(m) = self.vhosts.get_mut(vhost) else {
            return;
        };
        match r {
            Ok((info, retry)) => {
                self.ari = Some(true);
                let w = &info.suggested_window;
                let window = (to_system(w.start), to_system(w.end));
                if m.window != Some(window) {
                    m.window = Some(window);
                    m.renew_at = Some(pick_in_window(window, now));
                    log::info!(
                        "ACME: vhost {vhost}: the CA suggests renewing between {} and {}: at {}",
                        fmt_time(Some(window.0)),
                        fmt_time(Some(window.1)),
                        fmt_time(m.renew_at),
                    );
                }
                m.ari_next =
                    now + retry.clamp(Duration::from_secs(60), Duration::from_secs(86_400));
            }
            Err(instant_acme::Error::Unsupported(_)) => {
                self.ari = Some(false);
            }
            Err(e) => {
                log::warn!(
                    "ACME: vhost {vhost}: renewal information from {}: {}",
                    self.conf.directory,
                    describe(&e)
                );
                m.ari_next = now + Duration::from_secs(3600);
            }
        }
        if let Some(m) = self.vhosts.get_mut(vhost) {
            // Another server's back-off and left-out names stay (they
            // are the fleet's).
            if let Ok(meta) = read_meta(&m.dir) {
                m.adopt_without(&meta);
                if meta.failures > m.failures {
                    m.failures = meta.failures;
                    m.last_error = meta.last_error;
                    if let Some(t) = meta.next_try {
                        m.next_try = m.next_try.max(from_unix(t));
                    }
                }
            }
            let _ = write_meta(m);
        }
    }

    /// Orders a certificate for the vhost, under its lock.
    fn attempt(&mut self, vhost: &str) {
        if let Ok(mut a) = self.last.lock() {
            *a = None;
        }
        // A fleet shares its back-off: another server's failure counts
        // (each failed validation counts against the CA's limits).
        let cap = SystemTime::now() + self.conf.retry_max.0;
        if let Some(m) = self.vhosts.get_mut(vhost)
            && let Ok(meta) = read_meta(&m.dir)
            && let Some(t) = meta.next_try.map(from_unix).map(|t| t.min(cap))
            && t > SystemTime::now()
            && meta.failures > 0
        {
            m.next_try = t;
            m.failures = m.failures.max(meta.failures);
            m.last_error = meta.last_error;
            return;
        }
        // Names another server of the fleet left out.
        if let Some(m) = self.vhosts.get_mut(vhost)
            && m.without.is_none()
            && let Ok(meta) = read_meta(&m.dir)
        {
            m.adopt_without(&meta);
            if m.without.is_some() && !self.due(vhost) {
                return;
            }
        }
        let lock = match Lock::take(&self.ca_dir.join("locks"), vhost, &self.me) {
            Ok(Some(l)) => l,
            Ok(None) => {
                // Another server orders it: its result is picked up.
                if let Some(m) = self.vhosts.get_mut(vhost) {
                    m.next_try = SystemTime::now() + TICK * 2;
                }
                log::debug!("ACME: vhost {vhost}: another server holds the lock");
                return;
            }
            Err(e) => {
                self.failed(vhost, format!("state_dir: {e}"), None);
                return;
            }
        };
        // Another server may have just finished.
        self.pickup(vhost);
        if !self.due(vhost) {
            lock.release();
            return;
        }
        let started = SystemTime::now();
        if let Some(m) = self.vhosts.get_mut(vhost) {
            m.last_attempt = Some(started);
            log::info!(
                "ACME: ordering a certificate for {} (vhost {vhost}) from {}",
                m.want.names.join(", "),
                self.conf.directory
            );
        }
        let mut refused = Refused::default();
        // Names left out (by this server or another of the fleet) stay
        // out until their time is up.
        let only = self.vhosts.get(vhost).and_then(|m| {
            let out = m.left_out(SystemTime::now());
            (!out.is_empty()).then(|| m.split(out).1)
        });
        let result = self.order_with_retries(vhost, &lock, only.as_deref(), &mut refused);
        let result = match result {
            Err(e) => match self
                .without_refused(vhost, &refused.names)
                .filter(|rest| Some(rest) != only.as_ref())
            {
                // Some names failed: the others at once, in a certificate
                // of their own, served meanwhile.
                Some(rest) => {
                    self.failed(vhost, e.clone(), refused.kind);
                    let out = self.vhosts.get(vhost).and_then(|m| m.without.clone());
                    log::warn!(
                        "ACME: vhost {vhost}: ordering a certificate for {} only, until {} \
                         is fixed",
                        rest.join(", "),
                        out.map(|o| o.0.join(", ")).unwrap_or_default()
                    );
                    let mut again = Refused::default();
                    match self.order_with_retries(vhost, &lock, Some(&rest), &mut again) {
                        Ok(pem) => Ok((pem, Some(e))),
                        Err(e2) => {
                            // One failed attempt, not two.
                            if let Some(m) = self.vhosts.get_mut(vhost) {
                                m.failures = m.failures.saturating_sub(1);
                            }
                            Err((
                                format!("{e2}{PARTIAL}{}; with every name: {e})", rest.join(", ")),
                                again.kind,
                            ))
                        }
                    }
                }
                None => Err((e, refused.kind)),
            },
            Ok(pem) => Ok((pem, None)),
        };
        match result {
            Ok((pem, partial)) => {
                let Some(m) = self.vhosts.get_mut(vhost) else {
                    lock.release();
                    return;
                };
                match store::write_atomic(&m.dir.join(store::CURRENT), pem.as_bytes()) {
                    Ok(()) => {
                        let _ = std::fs::remove_file(m.dir.join(FINALIZING));
                        m.last_ok = Some(SystemTime::now());
                        m.last_error = None;
                        m.failures = 0;
                        m.avoid = None;
                        m.seen = None;
                        let took = started.elapsed().unwrap_or_default();
                        log::info!(
                            "ACME: vhost {vhost}: certificate obtained in {:.1}s",
                            took.as_secs_f64()
                        );
                        self.pickup(vhost);
                        if let Some(m) = self.vhosts.get_mut(vhost) {
                            if partial.is_none() && only.is_none() {
                                m.without = None;
                            }
                            // Said until the left-out names are back.
                            if let (Some(e), Some((names, until))) = (partial, &m.without) {
                                m.last_error = Some(format!(
                                    "{} left out of the certificate until {}: {e}",
                                    names.join(", "),
                                    fmt_time(Some(*until))
                                ));
                            }
                            if let Err(e) = write_meta(m) {
                                log::warn!("ACME: vhost {vhost}: meta.json: {e}");
                            }
                        }
                    }
                    Err(e) => {
                        let f = m.dir.join(store::CURRENT);
                        self.failed(
                            vhost,
                            format!("{}: cannot write the new certificate: {e}", f.display()),
                            None,
                        );
                    }
                }
            }
            Err((e, kind)) => self.failed(vhost, e, kind),
        }
        lock.release();
    }

    /// An order (of `only`, or every name of the vhost), retried at once
    /// where RFC 8555 and the CA's answer say it may succeed.
    fn order_with_retries(
        &mut self,
        vhost: &str,
        lock: &Lock,
        only: Option<&[String]>,
        refused: &mut Refused,
    ) -> Result<String, Fail> {
        let mut result = Err(String::new());
        // badNonce is retried at once (RFC 8555 section 6.5): instant-acme
        // retries a request three times; a whole attempt three more.
        let mut new_account = false;
        for _ in 0..3 {
            // A retry's order may carry new authorizations.
            self.withdraw();
            result = self.order(vhost, lock, only, refused);
            match &result {
                Err(e) if e.contains("badNonce") => continue,
                // The CA no longer knows the account (a staging reset, an
                // account removed at the CA): a new one, once.
                Err(e) if e.contains("accountDoesNotExist") && !new_account => {
                    new_account = true;
                    log::warn!("ACME: vhost {vhost}: {e}: creating a new account");
                    self.forget_account();
                }
                // The certificate named in `replaces` was replaced
                // already (a result this server lost): at once without.
                Err(e)
                    if e.contains("alreadyReplaced")
                        || (e.contains("replaces") && e.starts_with("new order")) =>
                {
                    match self.vhosts.get_mut(vhost) {
                        Some(m) if !m.no_replaces => m.no_replaces = true,
                        _ => break,
                    }
                    log::warn!("ACME: vhost {vhost}: ordering again without `replaces`: {e}");
                }
                _ => break,
            }
        }
        self.withdraw();
        result
    }

    /// After an order failed because of `refused`, some but not all of
    /// the vhost's names: leaves them out until `retry_max` from now (or
    /// a reload), and gives the names to order without them, unless the
    /// certificate served already covers those and is not due.
    fn without_refused(&mut self, vhost: &str, refused: &[String]) -> Option<Vec<String>> {
        let retry_max = self.conf.retry_max.0;
        let m = self.vhosts.get_mut(vhost)?;
        let now = SystemTime::now();
        let mut out = m.left_out(now).to_vec();
        out.extend_from_slice(refused);
        let (refused, rest) = m.split(&out);
        if refused.is_empty() || rest.is_empty() {
            return None;
        }
        let until = now + jitter(retry_max);
        // The certificate served is kept while it outlasts the wait with
        // as much again to spare, if it covers every other name or still
        // covers a refused one (a passing failure must not cost a name
        // that is served).
        let keep = m.info.as_ref().is_some_and(|i| {
            let spare = until + until.duration_since(now).unwrap_or_default();
            i.not_after.is_some_and(|t| t > spare)
                && (rest.iter().all(|n| i.names.contains(n))
                    || refused.iter().any(|n| i.names.contains(n)))
        });
        m.without = Some((refused, until));
        (!keep).then_some(rest)
    }

    /// Records a failure: the log line, the back-off, `meta.json`.
    fn failed(&mut self, vhost: &str, e: Fail, kind: Option<ChallengeKind>) {
        let retry_max = self.conf.retry_max.0;
        let directory = self.conf.directory.clone();
        let Some(m) = self.vhosts.get_mut(vhost) else {
            return;
        };
        m.failures += 1;
        m.avoid = kind.or(m.avoid);
        let now = SystemTime::now();
        // (After a reduced order failed too, its own error decides.)
        let primary = e.split(PARTIAL).next().unwrap_or(&e);
        let lasting = LASTING
            .iter()
            .any(|t| primary.contains(&format!("urn:ietf:params:acme:error:{t}]")))
            || primary.starts_with(BAD_CERTIFICATE);
        let mut wait = if lasting {
            retry_max
        } else {
            BACKOFF_MIN
                .saturating_mul(1u32 << m.failures.saturating_sub(1).min(20))
                .min(retry_max)
        };
        // A certificate about to expire is retried more often.
        if let Some(left) = m
            .info
            .as_ref()
            .and_then(|i| i.not_after)
            .and_then(|t| t.duration_since(now).ok())
        {
            wait = wait.min((left / 4).max(BACKOFF_MIN));
        }
        let mut wait = jitter(wait);
        // The CA's Retry-After (a rate limit, maintenance) is obeyed, up
        // to retry_max: an earlier attempt would only be refused again.
        let asked = self.last.lock().ok().and_then(|mut r| r.take());
        let asked = asked
            .filter(|a| matches!(a.status, 429 | 503))
            .and_then(|a| a.retry_after?.duration_since(now).ok());
        if let Some(a) = asked {
            wait = wait.max(a).min(retry_max);
        }
        m.next_try = now + wait;
        m.last_attempt = Some(now);
        m.last_error = Some(e.clone());
        m.slot.set_error(Some(e.clone()));
        // meta.json first: `tamada --certs` says what the log line says.
        if let Err(e) = write_meta(m) {
            log::warn!("ACME: vhost {vhost}: meta.json: {e}");
        }
        log::error!(
            "ACME: vhost {vhost} ({}): no certificate from {directory}: {e}; attempt {} failed, next in {}s{}",
            m.want.names.join(", "),
            m.failures,
            wait.as_secs(),
            if asked.is_some() {
                " (the CA's Retry-After)"
            } else if lasting {
                " (the CA will answer the same until the configuration or the DNS changes: \
                 fix it and reload to retry at once)"
            } else {
                ""
            }
        );
    }

    /// The account, loaded from `account.json` or created (once, under
    /// the account lock).
    fn account(&mut self) -> Result<Account, Fail> {
        if let Some(a) = &self.account {
            return Ok(a.clone());
        }
        let file = self.ca_dir.join("account.json");
        let http = || {
            (self.http)(&self.conf).map(|c| {
                Box::new(Watched::new(c, self.last.clone())) as Box<dyn instant_acme::HttpClient>
            })
        };
        let deadline = SystemTime::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read(&file) {
                let creds: AccountCredentials = serde_json::from_slice(&text)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                let a = block_on(Account::builder_with_http(http()?).from_credentials(creds))
                    .map_err(|e| {
                        format!("the directory {}: {}", self.conf.directory, describe(&e))
                    })?;
                self.sync_contact(&a);
                self.account = Some(a.clone());
                return Ok(a);
            }
            match Lock::take(&self.ca_dir.join("locks"), "account", &self.me) {
                Ok(Some(lock)) => {
                    let r = self.create_account(http()?, &file);
                    lock.release();
                    return r;
                }
                Ok(None) if SystemTime::now() < deadline => std::thread::sleep(TICK),
                Ok(None) => return Err("another server is creating the account".into()),
                Err(e) => return Err(format!("state_dir: {e}")),
            }
        }
    }

    /// Sets aside `account.json` when it still holds the account the CA
    /// no longer knows (another server of a fleet may have replaced it
    /// already: then it is only read again).
    fn forget_account(&mut self) {
        let Some(a) = self.account.take() else {
            return;
        };
        let file = self.ca_dir.join("account.json");
        let stored = std::fs::read(&file)
            .ok()
            .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok());
        if stored.is_some_and(|v| v["id"] == a.id()) {
            let aside = self
                .ca_dir
                .join(format!("account.json.gone-{}", unix(SystemTime::now())));
            if let Err(e) = std::fs::rename(&file, &aside) {
                log::warn!("ACME: {}: {e}", file.display());
            }
        }
    }

    /// The account's contact follows `email` (RFC 8555 section 7.3.2):
    /// `account-contact.txt` says what the CA was last told.
    fn sync_contact(&self, a: &Account) {
        let file = self.ca_dir.join("account-contact.txt");
        let want = self.conf.email.clone().unwrap_or_default();
        let told = std::fs::read_to_string(&file).unwrap_or_default();
        if told.trim() == want {
            return;
        }
        let mail = format!("mailto:{want}");
        let contact: Vec<&str> = if want.is_empty() { vec![] } else { vec![&mail] };
        match block_on(a.update_contacts(&contact)) {
            Ok(()) => {
                log::info!(
                    "ACME: the account's contact at {} is now {}",
                    self.conf.directory,
                    if want.is_empty() { "none" } else { &want }
                );
                let _ = store::write_atomic(&file, want.as_bytes());
            }
            Err(e) => log::warn!(
                "ACME: updating the account's contact at {}: {}",
                self.conf.directory,
                describe(&e)
            ),
        }
    }

    fn create_account(
        &mut self,
        http: Box<dyn instant_acme::HttpClient>,
        file: &Path,
    ) -> Result<Account, Fail> {
        if file.exists() {
            // Made by another server while this one waited.
            return self.account();
        }
        let mail = self.conf.email.as_ref().map(|e| format!("mailto:{e}"));
        let contact: Vec<&str> = mail.iter().map(String::as_str).collect();
        let eab = self.conf.eab.as_ref().map(|e| {
            let key = crate::config::acme::eab_key(&e.hmac).unwrap_or_default();
            ExternalAccountKey::new(e.kid.clone(), &key)
        });
        let (a, creds) = block_on(Account::builder_with_http(http).create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            self.conf.directory.clone(),
            eab.as_ref(),
        ))
        .map_err(|e| {
            format!(
                "creating the account at {}: {}",
                self.conf.directory,
                describe(&e)
            )
        })?;
        let text = serde_json::to_vec_pretty(&creds).map_err(|e| e.to_string())?;
        store::write_atomic(file, &text).map_err(|e| format!("{}: {e}", file.display()))?;
        let told = self.conf.email.clone().unwrap_or_default();
        let _ = store::write_atomic(&self.ca_dir.join("account-contact.txt"), told.as_bytes());
        log::info!(
            "ACME: account {} created at {}",
            a.id(),
            self.conf.directory
        );
        self.account = Some(a.clone());
        Ok(a)
    }

    /// One order, from new-order to the chain. `Ok` is `current.pem`:
    /// the new key, then the chain.
    fn order(
        &mut self,
        vhost: &str,
        lock: &Lock,
        only: Option<&[String]>,
        refused: &mut Refused,
    ) -> Result<String, Fail> {
        let account = self.account()?;
        if let Some(pem) = self.resume(vhost, &account, lock)? {
            return Ok(pem);
        }
        let m = self.vhosts.get(vhost).ok_or("the vhost is gone")?;
        let names = only.map_or_else(|| m.want.names.clone(), <[String]>::to_vec);
        let ids: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let mut new = NewOrder::new(&ids);
        let replaced = m
            .info
            .as_ref()
            .filter(|i| i.not_after.is_some_and(|t| t > SystemTime::now()))
            .and_then(|i| i.ari_id.clone());
        if self.ari == Some(true)
            && !m.no_replaces
            && let Some((aki, serial)) = &replaced
        {
            new = new.replaces(CertificateIdentifier::new(
                aki.as_slice().into(),
                serial.as_slice().into(),
            ));
        }
        if let Some(p) = &self.conf.profile {
            if !account.profiles().any(|x| x.name == p) {
                let mut offered: Vec<String> =
                    account.profiles().map(|x| x.name.to_owned()).collect();
                offered.sort();
                return Err(format!(
                    "acme.profile: the CA offers no profile `{p}` (it offers: {})",
                    if offered.is_empty() {
                        "none".to_owned()
                    } else {
                        offered.join(", ")
                    }
                ));
            }
            new = new.profile(p);
        }
        let kinds = self.kinds(m);
        if kinds.is_empty() {
            return Err(
                "no challenge type is possible: the vhost has no plain port for http-01 and no \
                 HTTPS port for tls-alpn-01 (see acme.challenges)"
                    .into(),
            );
        }
        let mut order = block_on(account.new_order(&new)).map_err(|e| {
            // The names the CA refuses (rejectedIdentifier, caa): named
            // by subproblems, or else quoted in the detail (as pebble
            // and Let's Encrypt do for one name).
            if let instant_acme::Error::Api(p) = &e {
                refused.names.extend(p.subproblems.iter().filter_map(|sp| {
                    match sp.identifier.as_ref()? {
                        Identifier::Dns(d) => Some(d.to_ascii_lowercase()),
                        _ => None,
                    }
                }));
                let about_names = ["rejectedIdentifier", "unsupportedIdentifier", "caa"]
                    .iter()
                    .any(|t| {
                        p.r#type.as_deref() == Some(&format!("urn:ietf:params:acme:error:{t}"))
                    });
                if refused.names.is_empty()
                    && about_names
                    && let Some(detail) = &p.detail
                {
                    let detail = detail.to_ascii_lowercase();
                    refused.names.extend(
                        names
                            .iter()
                            .filter(|n| detail.contains(&format!("\"{n}\"")))
                            .cloned(),
                    );
                }
            }
            format!("new order: {}", describe(&e))
        })?;
        lock.refresh()?;
        // Publish every challenge first, then tell the CA.
        let mut chosen: Vec<(String, ChallengeType)> = Vec::new();
        {
            let mut authzs = order.authorizations();
            while let Some(a) = block_on(authzs.next()) {
                lock.refresh()?;
                let mut a = a.map_err(|e| format!("authorization: {}", describe(&e)))?;
                let name = a.identifier().to_string();
                match a.status {
                    AuthorizationStatus::Valid => continue,
                    AuthorizationStatus::Pending => {}
                    s => {
                        refused.names.push(name.clone());
                        return Err(format!("the authorization for {name} is {s:?}"));
                    }
                }
                let offered: Vec<ChallengeType> =
                    a.challenges.iter().map(|c| c.r#type.clone()).collect();
                let Some(kind) = kinds
                    .iter()
                    .copied()
                    .find(|k| offered.contains(&challenge_type(*k)))
                else {
                    return Err(format!(
                        "the CA offers {name} only {offered:?}, none of which tamada can answer here"
                    ));
                };
                let ty = challenge_type(kind);
                let ch = a.challenge(ty.clone()).ok_or("challenge vanished")?;
                let p = Pending {
                    kind: kind_name(kind).into(),
                    name: name.clone(),
                    token: ch.token.clone(),
                    key_authorization: ch.key_authorization().as_str().to_owned(),
                };
                self.publish(vhost, p)?;
                chosen.push((name, ty));
            }
        }
        if !chosen.is_empty() {
            std::thread::sleep(PUBLISH_WAIT);
            let mut authzs = order.authorizations();
            while let Some(a) = block_on(authzs.next()) {
                lock.refresh()?;
                let mut a = a.map_err(|e| format!("authorization: {}", describe(&e)))?;
                let name = a.identifier().to_string();
                let Some((_, ty)) = chosen.iter().find(|(n, _)| *n == name) else {
                    continue;
                };
                let mut ch = a.challenge(ty.clone()).ok_or("challenge vanished")?;
                block_on(ch.set_ready())
                    .map_err(|e| format!("{name}: starting the challenge: {}", describe(&e)))?;
            }
        }
        // Wait for validation.
        let deadline = SystemTime::now() + ORDER_TIMEOUT;
        let mut delay = Duration::from_millis(500);
        let mut first = true;
        let url = order.url().to_owned();
        loop {
            lock.refresh()?;
            let st = block_on(order.refresh()).map_err(|e| format!("order: {}", describe(&e)))?;
            match st.status {
                OrderStatus::Ready => break,
                // Finalized by someone else with a key this server does
                // not have: a new order next time.
                OrderStatus::Valid | OrderStatus::Processing if first && chosen.is_empty() => {
                    return Err(format!(
                        "the CA answered with an order already finalized ({:?}): {}",
                        st.status, url
                    ));
                }
                OrderStatus::Valid | OrderStatus::Processing => {
                    return Err(format!(
                        "the order went {:?} before tamada finalized it: {}",
                        st.status, url
                    ));
                }
                OrderStatus::Invalid => {
                    let mut why = Vec::new();
                    if let Some(e) = &st.error {
                        why.push(problem(e));
                    }
                    let mut authzs = order.authorizations();
                    while let Some(Ok(mut a)) = block_on(authzs.next()) {
                        let name = a.identifier().to_string();
                        if let Ok(s) = block_on(a.refresh()) {
                            for c in &s.challenges {
                                if let Some(e) = &c.error {
                                    why.push(format!("{name}: {:?}: {}", c.r#type, problem(e)));
                                    refused.kind = kind_of(&c.r#type);
                                    refused.names.push(name.clone());
                                }
                            }
                        }
                    }
                    return Err(format!("the CA refused the order: {}", why.join("; ")));
                }
                OrderStatus::Pending => {}
            }
            first = false;
            if SystemTime::now() > deadline {
                return Err("the CA did not validate the challenges in 3 minutes".into());
            }
            std::thread::sleep(poll_wait(&self.last, delay));
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        // Finalize with a fresh key, kept with the order's URL first: a
        // certificate issued but lost on the way (a network error, a full
        // disk, the time limit) is downloaded by the next attempt, not
        // ordered again.
        let key = new_key(self.conf.key_type)?;
        let dir = self
            .vhosts
            .get(vhost)
            .ok_or("the vhost is gone")?
            .dir
            .clone();
        let f = Finalizing {
            order: url,
            names,
            key: key.serialize_pem(),
        };
        let text = serde_json::to_vec_pretty(&f).map_err(|e| e.to_string())?;
        let file = dir.join(FINALIZING);
        store::write_atomic(&file, &text).map_err(|e| format!("{}: {e}", file.display()))?;
        issue(&mut order, &key, &f.names, lock, &dir, &self.last)
    }

    /// The certificate of an order an earlier attempt finalized (or was
    /// about to) and did not store, if there is one for the vhost's
    /// names. `Ok(None)`: nothing to resume; a new order is made.
    fn resume(&self, vhost: &str, account: &Account, lock: &Lock) -> Result<Option<String>, Fail> {
        let m = self.vhosts.get(vhost).ok_or("the vhost is gone")?;
        let file = m.dir.join(FINALIZING);
        let Ok(text) = std::fs::read(&file) else {
            return Ok(None);
        };
        let drop_it = |why: String| {
            log::warn!(
                "ACME: vhost {vhost}: not resuming the order in {}: {why}",
                file.display()
            );
            let _ = std::fs::remove_file(&file);
            Ok(None)
        };
        let f: Finalizing = match serde_json::from_slice(&text) {
            Ok(f) => f,
            Err(e) => return drop_it(e.to_string()),
        };
        if !f.names.iter().all(|n| m.want.names.contains(n)) {
            return drop_it(format!("it is for {}", f.names.join(", ")));
        }
        let key = match rcgen::KeyPair::from_pem(&f.key) {
            Ok(k) => k,
            Err(e) => return drop_it(format!("its key: {e}")),
        };
        let mut order = match block_on(account.order(f.order.clone())) {
            Ok(o) => o,
            Err(e) => {
                let e = describe(&e);
                // The CA no longer knows it (expired, another account's):
                // a 4xx. A 5xx, a 429 or the network: later.
                if refused_for_good(&self.last, &e) {
                    return drop_it(format!("{}: {e}", f.order));
                }
                return Err(format!("order {}: {e}", f.order));
            }
        };
        match order.state().status {
            OrderStatus::Ready | OrderStatus::Processing | OrderStatus::Valid => {}
            s => return drop_it(format!("{}: the order is {s:?}", f.order)),
        }
        log::info!("ACME: vhost {vhost}: resuming order {}", f.order);
        issue(&mut order, &key, &f.names, lock, &m.dir, &self.last).map(Some)
    }

    /// The challenge types to try for a vhost, in order.
    fn kinds(&self, m: &Managed) -> Vec<ChallengeKind> {
        let mut v: Vec<ChallengeKind> = self
            .conf
            .challenges
            .iter()
            .copied()
            .filter(|k| match k {
                ChallengeKind::Http01 => m.want.http01,
                ChallengeKind::TlsAlpn01 => m.want.tls_alpn,
            })
            .collect();
        // A public CA validates on 80 and 443 only: a challenge on
        // another port would be a failed validation.
        let standard = |k: &ChallengeKind| match k {
            ChallengeKind::Http01 => m.want.on_80,
            ChallengeKind::TlsAlpn01 => m.want.on_443,
        };
        v.sort_by_key(|k| !standard(k));
        if let Some(a) = m.avoid
            && v.len() > 1
            && let Some(i) = v.iter().position(|k| *k == a)
        {
            let k = v.remove(i);
            v.push(k);
        }
        v
    }

    /// Answers a challenge from now on, here and (through `state_dir`)
    /// on every server of a fleet.
    fn publish(&mut self, vhost: &str, p: Pending) -> Result<(), Fail> {
        let f = self.ca_dir.join("challenges").join(format!(
            "{}-{}.json",
            safe_token(vhost),
            safe_token(&p.token)
        ));
        let text = serde_json::to_vec(&p).map_err(|e| e.to_string())?;
        store::write_atomic(&f, &text).map_err(|e| format!("{}: {e}", f.display()))?;
        let (kind, name, token) = (p.kind.clone(), p.name.to_ascii_lowercase(), p.token.clone());
        self.sync.lock().own.push((f.display().to_string(), p));
        let r = self.sync.sync();
        // Answered now? (A bad file of another server does not matter.)
        let answered = match kind.as_str() {
            "http-01" => {
                let path = format!("{}{token}", store::ACME_CHALLENGE);
                store::http01("GET", &path, &name).is_some()
            }
            _ => store::tls_alpn(&name).is_some(),
        };
        match r {
            Err(e) if !answered => Err(format!("the challenge certificate: {e}")),
            _ => Ok(()),
        }
    }

    /// Stops answering this server's challenges (and removes their
    /// files, only theirs).
    fn withdraw(&mut self) {
        let own = std::mem::take(&mut self.sync.lock().own);
        for (f, _) in own {
            let _ = std::fs::remove_file(f);
        }
        let _ = self.sync.sync();
    }
}

/// What `meta.json` keeps of a vhost (for `tamada --certs` and a
/// restart).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    pub names: Vec<String>,
    pub serial: Option<String>,
    pub not_after: Option<u64>,
    pub renew_at: Option<u64>,
    pub ari_window: Option<(u64, u64)>,
    pub last_ok: Option<u64>,
    pub last_attempt: Option<u64>,
    pub failures: u32,
    pub last_error: Option<String>,
    /// No attempt before this, by any server of a fleet (back-off).
    #[serde(default)]
    pub next_try: Option<u64>,
    /// Names left out of the certificate (the CA refused them) until
    /// `without_until`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub without: Vec<String>,
    #[serde(default)]
    pub without_until: Option<u64>,
}

/// Finalizes a ready order with `key` and downloads its certificate:
/// `current.pem`'s text, the key then the chain. Polls no faster than
/// the CA's `Retry-After` (`hint`). A certificate that does
/// not parse or match the key is refused, and its order forgotten.
fn issue(
    order: &mut instant_acme::Order,
    key: &rcgen::KeyPair,
    names: &[String],
    lock: &Lock,
    dir: &Path,
    hint: &LastAnswer,
) -> Result<String, Fail> {
    if order.state().status == OrderStatus::Ready {
        let mut params =
            rcgen::CertificateParams::new(names.to_vec()).map_err(|e| e.to_string())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(key)
            .map_err(|e| format!("CSR: {e}"))?;
        block_on(order.finalize_csr(csr.der())).map_err(|e| {
            let e = describe(&e);
            // Refused (badCSR, orderNotReady): nothing was issued, and
            // the same request would be refused again.
            if refused_for_good(hint, &e) {
                let _ = std::fs::remove_file(dir.join(FINALIZING));
            }
            format!("finalize: {e}")
        })?;
    }
    // Issuing has a time limit of its own (some CAs take minutes).
    let deadline = SystemTime::now() + ORDER_TIMEOUT;
    let mut delay = Duration::from_millis(500);
    let chain = loop {
        lock.refresh()?;
        match block_on(order.certificate()) {
            Ok(Some(c)) => break c,
            Ok(None) => {}
            Err(e) => return Err(format!("certificate: {}", describe(&e))),
        }
        if SystemTime::now() > deadline {
            return Err(format!(
                "the CA did not issue the certificate in 3 minutes (order {}; the next attempt \
                 downloads it)",
                order.url()
            ));
        }
        std::thread::sleep(poll_wait(hint, delay));
        delay = (delay * 2).min(Duration::from_secs(5));
    };
    let mut pem = key.serialize_pem();
    pem.push_str(&chain);
    // Check it (it parses, the key matches) before it replaces anything.
    if let Err(e) = store::parse_pem(pem.as_bytes()) {
        let _ = std::fs::remove_file(dir.join(FINALIZING));
        return Err(format!("{BAD_CERTIFICATE}{e}"));
    }
    Ok(pem)
}

fn write_meta(m: &Managed) -> std::io::Result<()> {
    let meta = Meta {
        names: m.want.names.clone(),
        serial: m.info.as_ref().map(|i| i.serial.clone()),
        not_after: m.info.as_ref().and_then(|i| i.not_after).map(unix),
        renew_at: m.renew_at.map(unix),
        ari_window: m.window.map(|(a, b)| (unix(a), unix(b))),
        last_ok: m.last_ok.map(unix),
        last_attempt: m.last_attempt.map(unix),
        failures: m.failures,
        last_error: m.last_error.clone(),
        next_try: (m.failures > 0).then(|| unix(m.next_try)),
        without: m.without.as_ref().map(|w| w.0.clone()).unwrap_or_default(),
        without_until: m.without.as_ref().map(|w| unix(w.1)),
    };
    store_meta(&m.dir, &meta)
}

fn store_meta(dir: &Path, meta: &Meta) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(meta).map_err(std::io::Error::other)?;
    store::write_atomic(&dir.join("meta.json"), &text)
}

/// Reads a vhost's `meta.json`.
pub fn read_meta(dir: &Path) -> Result<Meta, String> {
    let f = dir.join("meta.json");
    let text = std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", f.display()))
}

/// Two thirds of the way from notBefore to notAfter.
pub fn default_renewal(i: &CertInfo) -> SystemTime {
    match (i.not_before, i.not_after) {
        (Some(a), Some(b)) if b > a => a + b.duration_since(a).unwrap_or_default() * 2 / 3,
        (_, Some(b)) => b,
        _ => SystemTime::now(),
    }
}

/// A uniformly random time in the CA's window; now if it has passed
/// (RFC 9773 section 4.2).
pub fn pick_in_window((start, end): (SystemTime, SystemTime), now: SystemTime) -> SystemTime {
    if end <= now {
        return now;
    }
    let start = start.max(now);
    let span = end.duration_since(start).unwrap_or_default();
    start + span.mul_f64(random_unit())
}

/// `d` less up to a half, at random.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + 0.5 * random_unit())
}

fn random_unit() -> f64 {
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

fn new_key(t: KeyType) -> Result<rcgen::KeyPair, Fail> {
    use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256};
    match t {
        KeyType::EcdsaP256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
        KeyType::EcdsaP384 => KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384),
        KeyType::Rsa2048 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048),
        KeyType::Rsa4096 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096),
    }
    .map_err(|e| format!("a new key: {e}"))
}

fn challenge_type(k: ChallengeKind) -> ChallengeType {
    match k {
        ChallengeKind::Http01 => ChallengeType::Http01,
        ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
    }
}

fn kind_of(t: &ChallengeType) -> Option<ChallengeKind> {
    match t {
        ChallengeType::Http01 => Some(ChallengeKind::Http01),
        ChallengeType::TlsAlpn01 => Some(ChallengeKind::TlsAlpn01),
        _ => None,
    }
}

fn kind_name(k: ChallengeKind) -> &'static str {
    match k {
        ChallengeKind::Http01 => "http-01",
        ChallengeKind::TlsAlpn01 => "tls-alpn-01",
    }
}

/// A token as a file name (RFC 8555 tokens are base64url already).
fn safe_token(t: &str) -> String {
    t.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A problem document: type, detail, subproblems.
fn problem(p: &instant_acme::Problem) -> String {
    let mut s = p.detail.clone().unwrap_or_else(|| "(no detail)".into());
    if let Some(t) = &p.r#type {
        s.push_str(&format!(" [{t}]"));
    }
    for sp in &p.subproblems {
        let who = sp
            .identifier
            .as_ref()
            .map(|i| match i {
                Identifier::Dns(d) => d.clone(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        s.push_str(&format!(
            "; {who}: {} [{}]",
            sp.detail.as_deref().unwrap_or(""),
            sp.r#type.as_deref().unwrap_or("")
        ));
    }
    s
}

/// An instant-acme error as a log line: the CA's problem document, or
/// the transport's error with its causes.
pub fn describe(e: &instant_acme::Error) -> String {
    match e {
        instant_acme::Error::Api(p) => problem(p),
        other => {
            let mut s = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(c) = src {
                s.push_str(&format!(": {c}"));
                src = c.source();
            }
            s
        }
    }
}

/// Seconds since the Unix epoch (0 before it).
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn from_unix(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(s)
}

fn to_system(t: time::OffsetDateTime) -> SystemTime {
    let s = t.unix_timestamp();
    if s <= 0 {
        SystemTime::UNIX_EPOCH
    } else {
        from_unix(s as u64)
    }
}

/// A time as an HTTP date, or `-`.
pub fn fmt_time(t: Option<SystemTime>) -> String {
    t.map(httpdate::fmt_http_date).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_at_two_thirds_and_in_the_window() {
        let a = from_unix(1_000_000);
        let i = CertInfo {
            not_before: Some(a),
            not_after: Some(a + Duration::from_secs(90)),
            ..CertInfo::default()
        };
        assert_eq!(default_renewal(&i), a + Duration::from_secs(60));
        let now = from_unix(2_000_000);
        for _ in 0..100 {
            let w = (now + Duration::from_secs(10), now + Duration::from_secs(20));
            let t = pick_in_window(w, now);
            assert!(t >= w.0 && t <= w.1);
        }
        // A window in the past: now.
        let w = (from_unix(10), from_unix(20));
        assert_eq!(pick_in_window(w, now), now);
    }

    #[test]
    fn back_off_jitter_stays_in_bounds() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(100));
            assert!(j >= Duration::from_secs(50) && j <= Duration::from_secs(100));
        }
    }

    /// A scripted CA with renewal information (pebble 2.4 has none): the
    /// directory, nonces, `renewalInfo/<id>` with a window set by the
    /// test, and a new-order endpoint that refuses (after recording what
    /// it was sent).
    mod scripted {
        use super::super::super::client::block_on;
        use bytes::Bytes;
        use instant_acme::{BodyWrapper, BytesResponse, Error, HttpClient};
        use std::future::Future;
        use std::pin::Pin;
        use std::sync::Mutex;

        pub static SEEN: Mutex<Vec<(String, String, Vec<u8>)>> = Mutex::new(Vec::new());
        pub static WINDOW: Mutex<(String, String)> = Mutex::new((String::new(), String::new()));
        /// The chain of `https://ca.test/resume/order/1`.
        pub static CHAIN: Mutex<String> = Mutex::new(String::new());
        /// Its download fails once first (a lost answer).
        pub static CHAIN_FAILED: std::sync::atomic::AtomicBool =
            std::sync::atomic::AtomicBool::new(false);

        /// A part of a JWS request body (`protected`, `payload`), decoded.
        pub fn jws_part(body: &[u8], part: &str) -> serde_json::Value {
            use base64::Engine;
            use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
            let jws: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            let bytes = B64
                .decode(jws[part].as_str().unwrap_or_default())
                .unwrap_or_default();
            serde_json::from_slice(&bytes).unwrap_or_default()
        }

        /// The `kid` of a JWS request body (the account's URL).
        fn kid(body: &[u8]) -> String {
            jws_part(body, "protected")["kid"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }

        pub struct Script;

        fn reply(status: u16, headers: &[(&str, &str)], body: String) -> BytesResponse {
            let mut b = http_crate::Response::builder().status(status);
            for (n, v) in headers {
                b = b.header(*n, *v);
            }
            let (parts, ()) = b.body(()).expect("response").into_parts();
            BytesResponse {
                parts,
                body: Box::new(Bytes::from(body)),
            }
        }

        impl HttpClient for Script {
            fn request(
                &self,
                req: http_crate::Request<BodyWrapper<Bytes>>,
            ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, Error>> + Send>> {
                let (parts, body) = req.into_parts();
                let body = block_on(super::super::super::client::collect(body));
                let uri = parts.uri.to_string();
                SEEN.lock().expect("lock").push((
                    parts.method.to_string(),
                    uri.clone(),
                    body.to_vec(),
                ));
                let nonce = [("Replay-Nonce", "n0nce")];
                let r = match (parts.method.as_str(), uri.as_str()) {
                    ("GET", "https://ca.test/dir") => reply(
                        200,
                        &[],
                        r#"{"newNonce":"https://ca.test/nonce","newAccount":"https://ca.test/acct",
                           "newOrder":"https://ca.test/order","renewalInfo":"https://ca.test/ari",
                           "meta":{"profiles":{"classic":"90 days","shortlived":"6 days"}}}"#
                            .into(),
                    ),
                    ("HEAD", "https://ca.test/nonce") => reply(200, &nonce, String::new()),
                    // The other scripted CAs: https://ca.test/NAME/dir.
                    ("GET", u) if u.ends_with("/dir") => {
                        let base = u.trim_end_matches("/dir");
                        reply(
                            200,
                            &[],
                            format!(
                                r#"{{"newNonce":"https://ca.test/nonce","newAccount":"{base}/acct",
                                    "newOrder":"{base}/order"}}"#
                            ),
                        )
                    }
                    // A CA with an order finalized by an earlier attempt.
                    ("POST", "https://ca.test/resume/order/1") => reply(
                        200,
                        &nonce,
                        r#"{"status":"valid","authorizations":[],"finalize":"https://ca.test/resume/fin",
                           "certificate":"https://ca.test/resume/cert/1"}"#
                            .into(),
                    ),
                    ("POST", "https://ca.test/resume/cert/1")
                        if !CHAIN_FAILED.swap(true, std::sync::atomic::Ordering::SeqCst) =>
                    {
                        reply(
                            500,
                            &nonce,
                            r#"{"type":"urn:ietf:params:acme:error:serverInternal","detail":"lost"}"#
                                .into(),
                        )
                    }
                    ("POST", "https://ca.test/resume/cert/1") => {
                        reply(200, &nonce, CHAIN.lock().expect("lock").clone())
                    }
                    // The CA in trouble: the order later.
                    ("POST", "https://ca.test/resume/order/2") => reply(
                        503,
                        &nonce,
                        r#"{"type":"urn:ietf:params:acme:error:serverInternal","detail":"down for maintenance"}"#
                            .into(),
                    ),
                    // An order the CA no longer knows.
                    ("POST", "https://ca.test/resume/order/3") => reply(
                        404,
                        &nonce,
                        r#"{"type":"urn:ietf:params:acme:error:malformed","detail":"No order for ID 3"}"#
                            .into(),
                    ),
                    // A CA that forgot account 1.
                    ("POST", "https://ca.test/gone/acct") => reply(
                        201,
                        &[("Replay-Nonce", "n0nce"), ("Location", "https://ca.test/acct/2")],
                        r#"{"status":"valid"}"#.into(),
                    ),
                    ("POST", "https://ca.test/gone/order") if kid(&body) == "https://ca.test/acct/1" => {
                        reply(
                            400,
                            &nonce,
                            r#"{"type":"urn:ietf:params:acme:error:accountDoesNotExist","detail":"no such account"}"#
                                .into(),
                        )
                    }
                    // A CA that refuses one name of an order.
                    ("POST", "https://ca.test/partial/order")
                        if jws_part(&body, "payload")["identifiers"]
                            .to_string()
                            .contains("bad.example.com") =>
                    {
                        reply(
                            400,
                            &nonce,
                            r#"{"type":"urn:ietf:params:acme:error:rejectedIdentifier","detail":"Error creating new order :: Cannot issue for \"bad.example.com\": forbidden by policy","subproblems":[{"type":"urn:ietf:params:acme:error:rejectedIdentifier","detail":"forbidden by policy","identifier":{"type":"dns","value":"bad.example.com"}}]}"#
                                .into(),
                        )
                    }
                    // A CA that will never issue for the name.
                    ("POST", "https://ca.test/rejected/order") => reply(
                        400,
                        &nonce,
                        r#"{"type":"urn:ietf:params:acme:error:rejectedIdentifier","detail":"Cannot issue for \"x.example.com\": The ACME server refuses to issue a certificate for this domain name, because it is forbidden by policy"}"#
                            .into(),
                    ),
                    // A CA whose orders are refused by a rate limit.
                    ("POST", "https://ca.test/limited/order") => reply(
                        429,
                        &[("Replay-Nonce", "n0nce"), ("Retry-After", "7200")],
                        r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s"}"#
                            .into(),
                    ),
                    ("GET", u) if u.starts_with("https://ca.test/ari/") => {
                        let w = WINDOW.lock().expect("lock").clone();
                        reply(
                            200,
                            &[("Retry-After", "21600")],
                            format!(r#"{{"suggestedWindow":{{"start":"{}","end":"{}"}}}}"#, w.0, w.1),
                        )
                    }
                    _ => reply(
                        403,
                        &nonce,
                        r#"{"type":"urn:ietf:params:acme:error:unauthorized","detail":"scripted refusal"}"#
                            .into(),
                    ),
                };
                Box::pin(std::future::ready(Ok(r)))
            }
        }
    }

    fn script(_: &AcmeConf) -> Result<Box<dyn instant_acme::HttpClient>, Fail> {
        Ok(Box::new(scripted::Script))
    }

    /// A manager on the scripted CA at `directory`, with its account
    /// stored in `state`.
    fn scripted_manager(directory: &str, state: &Path) -> (AcmeConf, Manager) {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        let conf = AcmeConf {
            directory: directory.into(),
            state_dir: state.to_owned(),
            ..AcmeConf::default()
        };
        let mut m = Manager::new(conf.clone());
        m.http = script;
        let key = rcgen::KeyPair::generate().unwrap();
        let creds = format!(
            r#"{{"id":"https://ca.test/acct/1","key_pkcs8":"{}","directory":"{directory}"}}"#,
            B64.encode(key.serialize_der())
        );
        store::write_atomic(&m.ca_dir.join("account.json"), creds.as_bytes()).unwrap();
        (conf, m)
    }

    /// A vhost of one name on port 80.
    fn http01_want(name: &str) -> Want {
        Want {
            vhost: name.into(),
            names: vec![name.into()],
            http01: true,
            tls_alpn: false,
            on_80: true,
            on_443: false,
        }
    }

    fn rfc3339(t: SystemTime) -> String {
        time::OffsetDateTime::from_unix_timestamp(unix(t) as i64)
            .expect("time")
            .format(&time::format_description::well_known::Rfc3339)
            .expect("format")
    }

    #[test]
    fn renewal_follows_the_window_of_the_renewal_information_and_the_order_replaces() {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        let state = tempfile::tempdir().unwrap();
        let (conf, mut m) = scripted_manager("https://ca.test/dir", state.path());
        // A certificate from a CA with a known key identifier and serial.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut cap = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        cap.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        cap.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![0xc0, 0x93, 0xfe, 0xee]);
        let ca = cap.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut lp = rcgen::CertificateParams::new(vec!["ari.example.com".to_owned()]).unwrap();
        lp.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x03, 0x2a, 0xfe]));
        lp.use_authority_key_identifier_extension = true;
        let leaf = lp.signed_by(&leaf_key, &ca, &ca_key).unwrap();
        let info = store::describe(leaf.der()).unwrap();
        let (aki, serial) = info.ari_id.clone().expect("an ARI identifier");
        assert_eq!(aki, vec![0xc0, 0x93, 0xfe, 0xee]);
        m.update(conf, vec![http01_want("ari.example.com")]);
        let v = m.vhosts.get_mut("ari.example.com").unwrap();
        v.renew_at = Some(default_renewal(&info));
        v.info = Some(info);
        // A window in 10 to 20 days.
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let (ws, we) = (now + day * 10, now + day * 20);
        *scripted::WINDOW.lock().unwrap() = (rfc3339(ws), rfc3339(we));
        m.check_ari("ari.example.com");
        assert_eq!(m.ari, Some(true));
        let v = &m.vhosts["ari.example.com"];
        let at = v.renew_at.unwrap();
        assert!(at >= ws - Duration::from_secs(1) && at <= we, "{at:?}");
        // Asked again after the CA's Retry-After (6 hours).
        let next = v.ari_next.duration_since(now).unwrap();
        assert!(
            next > Duration::from_secs(21_000) && next <= Duration::from_secs(21_601),
            "{next:?}"
        );
        // The identifier is base64url(AKI).base64url(serial) (RFC 9773 4.1).
        let want = format!(
            "https://ca.test/ari/{}.{}",
            B64.encode(&aki),
            B64.encode(&serial)
        );
        assert!(
            scripted::SEEN
                .lock()
                .unwrap()
                .iter()
                .any(|(meth, u, _)| meth == "GET" && *u == want),
            "{want}"
        );
        // meta.json keeps the window.
        let meta = read_meta(&m.vhosts["ari.example.com"].dir).unwrap();
        assert_eq!(meta.ari_window, Some((unix(ws), unix(we))));
        assert!(!m.due("ari.example.com"));
        // The CA moves the window into the past: renew now, and the new
        // order names the certificate it replaces.
        *scripted::WINDOW.lock().unwrap() = (rfc3339(now - day * 2), rfc3339(now - day));
        m.vhosts.get_mut("ari.example.com").unwrap().ari_next = now;
        m.check_ari("ari.example.com");
        assert!(m.due("ari.example.com"));
        let lock = Lock::take(&m.ca_dir.join("locks"), "ari.example.com", "test")
            .unwrap()
            .unwrap();
        let mut refused = Refused::default();
        // A profile the CA does not offer: refused before any order.
        m.conf.profile = Some("nope".into());
        let err = m
            .order("ari.example.com", &lock, None, &mut refused)
            .unwrap_err();
        assert!(
            err.contains("offers no profile `nope` (it offers: classic, shortlived)"),
            "{err}"
        );
        m.conf.profile = Some("shortlived".into());
        let err = m
            .order("ari.example.com", &lock, None, &mut refused)
            .unwrap_err();
        assert!(err.contains("scripted refusal"), "{err}");
        assert!(
            err.contains("urn:ietf:params:acme:error:unauthorized"),
            "{err}"
        );
        let seen = scripted::SEEN.lock().unwrap();
        let (_, _, body) = seen
            .iter()
            .find(|(meth, u, _)| meth == "POST" && u == "https://ca.test/order")
            .expect("a new order");
        let jws: serde_json::Value = serde_json::from_slice(body).unwrap();
        let payload = B64.decode(jws["payload"].as_str().unwrap()).unwrap();
        let payload: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            payload["replaces"].as_str().unwrap(),
            format!("{}.{}", B64.encode(&aki), B64.encode(&serial))
        );
        assert_eq!(payload["identifiers"][0]["value"], "ari.example.com");
        assert_eq!(payload["profile"], "shortlived");
    }

    #[test]
    fn a_rate_limit_is_waited_out_as_the_ca_asks_up_to_retry_max() {
        let state = tempfile::tempdir().unwrap();
        let (mut conf, mut m) = scripted_manager("https://ca.test/limited/dir", state.path());
        let want = http01_want("rl.example.com");
        m.update(conf.clone(), vec![want.clone()]);
        assert!(m.due("rl.example.com"));
        let now = SystemTime::now();
        m.attempt("rl.example.com");
        let v = &m.vhosts["rl.example.com"];
        assert_eq!(v.failures, 1);
        let err = v.last_error.clone().unwrap();
        assert!(
            err.contains("urn:ietf:params:acme:error:rateLimited"),
            "{err}"
        );
        assert!(err.contains("too many certificates"), "{err}");
        // Two hours, as the CA said, not the first back-off's 5 s; the
        // fleet reads the same wait from meta.json.
        let wait = v.next_try.duration_since(now).unwrap();
        assert!(
            wait >= Duration::from_secs(7_190) && wait <= Duration::from_secs(7_201),
            "{wait:?}"
        );
        let meta = read_meta(&v.dir).unwrap();
        assert_eq!(meta.next_try, Some(unix(v.next_try)));
        assert!(!m.due("rl.example.com"));
        // retry_max is the longest wait even so.
        conf.retry_max = crate::config::Secs(Duration::from_secs(3_600));
        m.update(conf, vec![want]);
        assert!(m.due("rl.example.com"));
        let now = SystemTime::now();
        m.attempt("rl.example.com");
        let wait = m.vhosts["rl.example.com"]
            .next_try
            .duration_since(now)
            .unwrap();
        assert!(
            wait >= Duration::from_secs(3_590) && wait <= Duration::from_secs(3_601),
            "{wait:?}"
        );
    }

    /// The POST requests the scripted CA saw to `url`.
    fn posts_to(url: &str) -> usize {
        scripted::SEEN
            .lock()
            .unwrap()
            .iter()
            .filter(|(meth, u, _)| meth == "POST" && u == url)
            .count()
    }

    #[test]
    fn a_certificate_issued_but_not_stored_is_downloaded_not_ordered_again() {
        let state = tempfile::tempdir().unwrap();
        let (conf, mut m) = scripted_manager("https://ca.test/resume/dir", state.path());
        let want = http01_want("resume.example.com");
        m.update(conf.clone(), vec![want.clone()]);
        // An earlier attempt finalized order 1 with this key, then lost
        // the answer.
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["resume.example.com".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        *scripted::CHAIN.lock().unwrap() = cert.pem();
        let dir = m.vhosts["resume.example.com"].dir.clone();
        let f = Finalizing {
            order: "https://ca.test/resume/order/1".into(),
            names: want.names.clone(),
            key: key.serialize_pem(),
        };
        store::write_atomic(&dir.join(FINALIZING), &serde_json::to_vec(&f).unwrap()).unwrap();
        // The download fails: kept for the next attempt, nothing ordered.
        m.attempt("resume.example.com");
        let err = m.vhosts["resume.example.com"].last_error.clone().unwrap();
        assert!(err.contains("serverInternal"), "{err}");
        assert!(dir.join(FINALIZING).exists());
        assert!(!dir.join(store::CURRENT).exists());
        // Next attempt (a reload lifts the back-off): the same certificate.
        m.update(conf, vec![want]);
        m.attempt("resume.example.com");
        let v = &m.vhosts["resume.example.com"];
        assert_eq!(v.failures, 0, "{:?}", v.last_error);
        let pem = std::fs::read_to_string(dir.join(store::CURRENT)).unwrap();
        assert!(pem.starts_with(&key.serialize_pem()), "{pem}");
        assert!(pem.contains(&cert.pem()));
        assert!(
            v.info
                .as_ref()
                .unwrap()
                .names
                .contains(&"resume.example.com".to_owned())
        );
        assert!(!dir.join(FINALIZING).exists());
        assert_eq!(posts_to("https://ca.test/resume/order"), 0);
        assert_eq!(posts_to("https://ca.test/resume/cert/1"), 2);
    }

    #[test]
    fn an_order_being_finalized_is_forgotten_only_when_the_ca_says_it_is_gone() {
        let state = tempfile::tempdir().unwrap();
        let (conf, mut m) = scripted_manager("https://ca.test/resume/dir", state.path());
        let want = http01_want("gone.resume.example.com");
        m.update(conf.clone(), vec![want.clone()]);
        let dir = m.vhosts["gone.resume.example.com"].dir.clone();
        let key = rcgen::KeyPair::generate().unwrap();
        let finalizing = |order: &str| {
            let f = Finalizing {
                order: order.into(),
                names: want.names.clone(),
                key: key.serialize_pem(),
            };
            store::write_atomic(&dir.join(FINALIZING), &serde_json::to_vec(&f).unwrap()).unwrap();
        };
        // A 503: kept for later, no new order.
        finalizing("https://ca.test/resume/order/2");
        let orders = posts_to("https://ca.test/resume/order");
        m.attempt("gone.resume.example.com");
        let err = m.vhosts["gone.resume.example.com"]
            .last_error
            .clone()
            .unwrap();
        assert!(err.contains("down for maintenance"), "{err}");
        assert!(dir.join(FINALIZING).exists());
        assert_eq!(posts_to("https://ca.test/resume/order"), orders);
        // A 404: forgotten, and a new order made.
        finalizing("https://ca.test/resume/order/3");
        m.update(conf, vec![want.clone()]);
        m.attempt("gone.resume.example.com");
        assert!(!dir.join(FINALIZING).exists());
        assert_eq!(posts_to("https://ca.test/resume/order"), orders + 1);
    }

    #[test]
    fn names_left_out_by_another_server_stay_out() {
        let state = tempfile::tempdir().unwrap();
        let (conf, mut m) = scripted_manager("https://ca.test/dir", state.path());
        let mut want = http01_want("fleet.example.com");
        want.names.push("alias.fleet.example.com".into());
        m.update(conf, vec![want]);
        // Another server stored a certificate for the first name and left
        // the alias out for an hour.
        let dir = m.vhosts["fleet.example.com"].dir.clone();
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["fleet.example.com".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let pem = key.serialize_pem() + &cert.pem();
        store::write_atomic(&dir.join(store::CURRENT), pem.as_bytes()).unwrap();
        let until = unix(SystemTime::now() + Duration::from_secs(3600));
        let meta = Meta {
            without: vec!["alias.fleet.example.com".into()],
            without_until: Some(until),
            last_error: Some("alias.fleet.example.com left out".into()),
            ..Meta::default()
        };
        store_meta(&dir, &meta).unwrap();
        m.pickup("fleet.example.com");
        let v = &m.vhosts["fleet.example.com"];
        assert!(v.info.is_some());
        assert_eq!(
            v.without.as_ref().map(|w| w.0.clone()),
            Some(vec!["alias.fleet.example.com".to_owned()])
        );
        assert!(!m.due("fleet.example.com"));
        // What this server writes keeps them.
        write_meta(&m.vhosts["fleet.example.com"]).unwrap();
        let meta = read_meta(&dir).unwrap();
        assert_eq!(meta.without, vec!["alias.fleet.example.com".to_owned()]);
        assert_eq!(meta.without_until, Some(until));
        assert_eq!(
            meta.last_error.as_deref(),
            Some("alias.fleet.example.com left out")
        );
    }

    #[test]
    fn an_account_the_ca_forgot_is_made_again() {
        let state = tempfile::tempdir().unwrap();
        let (conf, mut m) = scripted_manager("https://ca.test/gone/dir", state.path());
        m.update(conf, vec![http01_want("gone.example.com")]);
        m.attempt("gone.example.com");
        // Account 2 ordered (and was refused by the script's default).
        let err = m.vhosts["gone.example.com"].last_error.clone().unwrap();
        assert!(err.contains("scripted refusal"), "{err}");
        let text = std::fs::read_to_string(m.ca_dir.join("account.json")).unwrap();
        assert!(text.contains("https://ca.test/acct/2"), "{text}");
        let aside = std::fs::read_dir(&m.ca_dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("account.json.gone-")
            })
            .count();
        assert_eq!(aside, 1);
        assert_eq!(posts_to("https://ca.test/gone/acct"), 1);
    }

    #[test]
    fn a_refusal_that_will_not_change_waits_retry_max() {
        let state = tempfile::tempdir().unwrap();
        let (conf, mut m) = scripted_manager("https://ca.test/rejected/dir", state.path());
        m.update(conf, vec![http01_want("x.example.com")]);
        let now = SystemTime::now();
        m.attempt("x.example.com");
        let v = &m.vhosts["x.example.com"];
        assert_eq!(v.failures, 1);
        assert!(
            v.last_error
                .as_ref()
                .unwrap()
                .contains("forbidden by policy")
        );
        // A day, less up to half at random: not the 5 s of a first failure.
        let wait = v.next_try.duration_since(now).unwrap();
        assert!(
            wait >= Duration::from_secs(43_199) && wait <= Duration::from_secs(86_401),
            "{wait:?}"
        );
    }

    #[test]
    fn a_name_the_ca_refuses_is_left_out_and_the_others_ordered_at_once() {
        let state = tempfile::tempdir().unwrap();
        let (conf, mut m) = scripted_manager("https://ca.test/partial/dir", state.path());
        let mut want = http01_want("good.example.com");
        want.names.push("bad.example.com".into());
        m.update(conf.clone(), vec![want.clone()]);
        let now = SystemTime::now();
        m.attempt("good.example.com");
        // Two orders: both names, then the one the CA did not refuse.
        let orders: Vec<serde_json::Value> = scripted::SEEN
            .lock()
            .unwrap()
            .iter()
            .filter(|(meth, u, _)| meth == "POST" && u == "https://ca.test/partial/order")
            .map(|(_, _, body)| scripted::jws_part(body, "payload")["identifiers"].clone())
            .collect();
        assert_eq!(orders.len(), 2, "{orders:?}");
        assert_eq!(orders[0].as_array().unwrap().len(), 2);
        assert_eq!(
            orders[1],
            serde_json::json!([{"type": "dns", "value": "good.example.com"}])
        );
        // Left out for retry_max (less up to half at random), in meta.json
        // for the fleet.
        let v = &m.vhosts["good.example.com"];
        let (names, until) = v.without.clone().unwrap();
        assert_eq!(names, vec!["bad.example.com".to_owned()]);
        assert!(until >= now + Duration::from_secs(43_199), "{until:?}");
        let meta = read_meta(&v.dir).unwrap();
        assert_eq!(meta.without, names);
        assert_eq!(meta.without_until, Some(unix(until)));
        // A certificate for the good name only is not due while the other
        // is left out; it is once that time is past.
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["good.example.com".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let info = store::describe(cert.der()).unwrap();
        let v = m.vhosts.get_mut("good.example.com").unwrap();
        v.renew_at = Some(default_renewal(&info));
        v.info = Some(info);
        // (As after that certificate was stored: no back-off.)
        v.next_try = SystemTime::now();
        v.failures = 0;
        write_meta(v).unwrap();
        assert!(!m.due("good.example.com"));
        m.vhosts.get_mut("good.example.com").unwrap().without =
            Some((names.clone(), SystemTime::now() - Duration::from_secs(1)));
        assert!(m.due("good.example.com"));
        // Then: the full order fails again, and the certificate served
        // covers the rest: nothing more is ordered.
        m.attempt("good.example.com");
        let orders = posts_to("https://ca.test/partial/order");
        assert_eq!(orders, 3);
        assert!(!m.due("good.example.com"));
        // A reload tries every name at once.
        m.update(conf, vec![want]);
        assert!(m.vhosts["good.example.com"].without.is_none());
        assert!(m.due("good.example.com"));
    }

    #[test]
    fn a_reload_lifts_the_back_off_of_the_whole_fleet() {
        let state = tempfile::tempdir().unwrap();
        let (conf, mut m) = scripted_manager("https://ca.test/dir", state.path());
        let want = http01_want("b.example.com");
        m.update(conf.clone(), vec![want.clone()]);
        m.failed("b.example.com", "refused".into(), None);
        m.failed("b.example.com", "refused".into(), None);
        let dir = m.vhosts["b.example.com"].dir.clone();
        let meta = read_meta(&dir).unwrap();
        assert_eq!(meta.failures, 2);
        assert!(from_unix(meta.next_try.unwrap()) > SystemTime::now());
        assert!(!m.due("b.example.com"));
        // SIGHUP: at once, here and in the file every server reads.
        m.update(conf, vec![want]);
        assert!(m.due("b.example.com"));
        let meta = read_meta(&dir).unwrap();
        assert_eq!(meta.next_try, None);
    }
}
