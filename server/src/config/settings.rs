//! `server.yaml`: the server-wide settings and their defaults.

use super::{DEFAULT_MAX_SPOOL, Secs, Size};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `server.yaml`: server-wide settings. Command-line flags override them.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Event-loop threads (0: one per CPU available).
    pub loops: usize,
    /// Threads of the blocking pool (handlers that may block).
    pub workers: usize,
    /// How long an idle keep-alive connection is kept.
    pub idle_timeout: Secs,
    /// How long a client may take to send a request head.
    pub header_timeout: Secs,
    /// How long a request body may stall between reads.
    pub body_timeout: Secs,
    /// How long a response may stall on a slow client.
    pub send_timeout: Secs,
    /// How long SIGTERM waits for requests in flight.
    pub shutdown_timeout: Secs,
    /// Longest request line (414 past it).
    pub max_request_line: Size,
    /// Largest request head (431 past it).
    pub max_header_size: Size,
    /// Most header fields in a request (431 past it).
    pub max_headers: usize,
    /// Most connections open at once; past it new ones are closed at once.
    pub max_connections: usize,
    /// Where plugins are loaded from (default: the binary's folder).
    pub plugin_dir: Option<PathBuf>,
    /// The server's own log level: error, warn, info, debug, trace.
    pub log_level: String,
    /// The server's own log file (default: stderr).
    pub log_file: Option<PathBuf>,
    /// Started as root, serve as this user (after binding and opening logs).
    pub user: Option<String>,
    /// ...and this group (default: the user's own).
    pub group: Option<String>,
    /// A file that holds the pid of the process that serves (it follows a
    /// binary upgrade to the new process).
    pub pid_file: Option<PathBuf>,
    /// A path the core answers itself on every vhost, for a load
    /// balancer's health checks: `200 ok` while serving, `503` from a
    /// SIGTERM on (GET and HEAD; not in access logs).
    pub health: Option<String>,
    /// After SIGTERM, how long the health route answers 503 while
    /// everything else is still served, before the listeners close (the
    /// balancer's checks move traffic away first). Default 5s with
    /// `health`, else none.
    pub lame_duck: Option<Secs>,
    /// Load balancers whose `X-Forwarded-For` and PROXY protocol headers
    /// give the client's address: addresses or networks (`10.0.0.0/8`).
    #[schemars(with = "Vec<String>")]
    pub trusted_proxies: Vec<crate::exchange::realip::Cidr>,
    /// Where request bodies over 64 KiB wait, in unlinked temporary
    /// files, until they are whole (default: `$TMPDIR`, else `/tmp`).
    pub spool_dir: Option<PathBuf>,
    /// The most bytes of request bodies spooled to disk at once, the whole
    /// server together; past it a request gets 503 with `Retry-After`.
    pub max_spool: Size,
    /// The slowest average upload accepted after the first
    /// `body_timeout`, in bytes per second (as Apache's
    /// `RequestReadTimeout body=..,MinRate=500`); 0: no minimum.
    pub body_min_rate: Size,
    /// Requests waiting for a pool thread at most; past it a request that
    /// needs one gets 503 with `Retry-After` at once.
    pub pool_queue: usize,
    /// A file of at least 32 random bytes (`openssl rand 80 > FILE`) from
    /// which TLS session ticket keys are derived, so that several
    /// instances behind one load balancer resume each other's sessions
    /// (nginx's `ssl_session_ticket_key`). Without it each process makes
    /// its own random keys. Keys rotate every 12 hours either way.
    pub ticket_key_file: Option<PathBuf>,
    /// Automatic HTTPS: the ACME CA and the folder its certificates are
    /// kept in, for vhosts with `tls: { acme: true }`.
    pub acme: super::acme::AcmeConf,
}

impl Settings {
    /// The lame-duck delay SIGTERM waits before draining.
    pub fn lame_duck(&self) -> Duration {
        match (&self.lame_duck, &self.health) {
            (Some(d), _) => d.0,
            (None, Some(_)) => Duration::from_secs(5),
            (None, None) => Duration::ZERO,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            loops: 0,
            workers: 64,
            idle_timeout: Secs(Duration::from_secs(5)),
            header_timeout: Secs(Duration::from_secs(10)),
            body_timeout: Secs(Duration::from_secs(30)),
            send_timeout: Secs(Duration::from_secs(60)),
            shutdown_timeout: Secs(Duration::from_secs(10)),
            max_request_line: Size(8 << 10),
            max_header_size: Size(32 << 10),
            max_headers: 100,
            max_connections: 16384,
            plugin_dir: None,
            log_level: "info".into(),
            log_file: None,
            user: None,
            group: None,
            pid_file: None,
            health: None,
            lame_duck: None,
            trusted_proxies: Vec::new(),
            spool_dir: None,
            max_spool: Size(DEFAULT_MAX_SPOOL),
            body_min_rate: Size(500),
            pool_queue: 1024,
            ticket_key_file: None,
            acme: super::acme::AcmeConf::default(),
        }
    }
}
