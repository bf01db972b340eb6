//! The route's `options:`: parsed once with serde (addresses and CIDRs are
//! checked while parsing, so an error names its option path and the host
//! points at the conf.d line), then turned into the constants every
//! request uses.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use tamada_gateway::addr::{Addr, Cidr};
use tamada_gateway::tls::{TlsClient, TlsOptions};
use tamada_sdk::units::{Secs, Size};

/// The options as written in YAML.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where requests go: `host:port`, `https://host[:port]` or
    /// `unix:/path`, one or more.
    #[schemars(with = "Vec<String>")]
    pub upstreams: Vec<Addr>,
    /// How `https://` upstreams are checked (default: their certificate
    /// against the system's roots, for their host name).
    pub tls: Option<TlsConfig>,
    /// Sends the client's certificate (mutual TLS) to the upstream in this
    /// header, URL-encoded PEM (nginx's `$ssl_client_escaped_cert`); a
    /// client's own header of that name is always removed.
    pub client_cert_header: Option<String>,
    /// `round_robin` (default) or `least_conn`.
    #[serde(default)]
    pub balance: Balance,
    /// The `Host` sent upstream: `pass` (default: the client's), `upstream`
    /// (the upstream's address, as nginx's `$proxy_host`) or a literal.
    pub host: Option<String>,
    /// Replaces the route's prefix in the path sent upstream (nginx's
    /// `proxy_pass http://up/new/`): `/` strips it.
    pub replace_prefix: Option<String>,
    /// Send X-Forwarded-For, -Proto and -Host (default true).
    pub x_forwarded: Option<bool>,
    /// Send `Forwarded` (RFC 7239; default false).
    #[serde(default)]
    pub forwarded: bool,
    /// Peers whose X-Forwarded-* and Forwarded are appended to; from
    /// anyone else they are replaced. CIDRs or addresses.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub trusted: Vec<Cidr>,
    /// Longest wait for a TCP connect (default 60s).
    pub connect_timeout: Option<Secs>,
    /// Longest stall while sending the request (default 60s).
    pub send_timeout: Option<Secs>,
    /// Longest wait for the response head, and longest stall of its body
    /// (default 60s): 504.
    pub read_timeout: Option<Secs>,
    /// Idle connections kept open per upstream and per CPU, as nginx's
    /// `keepalive` is per worker (default 32; 0: none).
    pub keepalive: Option<usize>,
    /// How long an idle connection is kept (default 60s). Keep it below
    /// the upstream's own keep-alive timeout.
    pub keepalive_timeout: Option<Secs>,
    /// Failures within `fail_timeout` that take an upstream out (default 1;
    /// 0: never).
    pub max_fails: Option<u32>,
    /// How long an upstream stays out, and the window failures count in
    /// (default 10s).
    pub fail_timeout: Option<Secs>,
    /// Largest upstream response head (default 64KiB): over it, 502.
    pub max_response_head: Option<Size>,
    /// Forward request header names with an underscore (default false:
    /// dropped, as nginx's `underscores_in_headers off`, since
    /// `X_Forwarded_For` and `X-Forwarded-For` are one variable to a CGI
    /// or WSGI application).
    #[serde(default)]
    pub underscores_in_headers: bool,
    /// Forward `TRACE` requests (default false: 405, as nginx answers; a
    /// TRACE echoes the client's cookies and credentials back).
    #[serde(default)]
    pub allow_trace: bool,
}

/// `tls:` of the proxy's options.
#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificates (PEM) that upstream certificates must chain to,
    /// instead of the system's roots (relative: to the vhost file's
    /// folder).
    pub ca: Option<PathBuf>,
    /// The name sent as SNI and verified, instead of each upstream's host.
    pub server_name: Option<String>,
    /// A client certificate chain (PEM) for upstreams that ask for one.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
    /// Accept any certificate (testing only; `tamada -t` warns).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// How an upstream is picked.
#[derive(Deserialize, schemars::JsonSchema, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastConn,
}

/// Which `Host` goes upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostMode {
    Pass,
    Upstream,
    Fixed(String),
}

/// Checked options with their defaults.
pub struct Settings {
    pub upstreams: Vec<Addr>,
    pub balance: Balance,
    pub host: HostMode,
    pub replace_prefix: Option<String>,
    pub x_forwarded: bool,
    pub forwarded: bool,
    pub trusted: Vec<Cidr>,
    pub connect_timeout: Duration,
    pub send_timeout: Duration,
    pub read_timeout: Duration,
    pub keepalive: usize,
    pub keepalive_timeout: Duration,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub max_response_head: usize,
    pub underscores_in_headers: bool,
    pub allow_trace: bool,
    /// For `https://` upstreams.
    pub tls: Option<TlsClient>,
    /// As written (compared without case).
    pub client_cert_header: Option<String>,
}

/// nginx's default for its three proxy timeouts.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

impl Settings {
    /// `base`: the vhost file's folder (relative TLS paths are below it).
    pub fn from_config(c: Config, base: &Path) -> Result<Settings, String> {
        if c.upstreams.is_empty() {
            return Err("upstreams: at least one address is needed".into());
        }
        let https = c.upstreams.iter().any(Addr::is_tls);
        let tls = match (&c.tls, https) {
            (Some(_), false) => {
                return Err("tls: no upstream is https:// (write https://host:port)".into());
            }
            (_, false) => None,
            (t, true) => {
                let d = TlsConfig::default();
                let t = t.as_ref().unwrap_or(&d);
                let abs = |p: &PathBuf| {
                    if p.is_relative() {
                        base.join(p)
                    } else {
                        p.clone()
                    }
                };
                let (ca, cert, key) = (
                    t.ca.as_ref().map(abs),
                    t.cert.as_ref().map(abs),
                    t.key.as_ref().map(abs),
                );
                let client = match (&cert, &key) {
                    (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                    (None, None) => None,
                    _ => return Err("tls: `cert` and `key` go together".into()),
                };
                if t.insecure_skip_verify {
                    log::warn!(
                        "tls.insecure_skip_verify: the certificates of https:// upstreams are \
                         not checked: anyone on the path to them can read and change the traffic"
                    );
                }
                Some(TlsClient::new(&TlsOptions {
                    ca: ca.as_deref(),
                    client,
                    server_name: t.server_name.clone(),
                    insecure_skip_verify: t.insecure_skip_verify,
                })?)
            }
        };
        let client_cert_header = match c.client_cert_header.as_deref() {
            None => None,
            Some(h)
                if h.is_empty()
                    || !h
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                return Err(format!("client_cert_header: `{h}` is not a header name"));
            }
            Some(h) => Some(h.to_owned()),
        };
        let host = match c.host.as_deref() {
            None | Some("pass") => HostMode::Pass,
            Some("upstream") => HostMode::Upstream,
            Some(h)
                if h.is_empty()
                    || h.bytes()
                        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) =>
            {
                return Err(format!("host: `{h}` is not a host name"));
            }
            Some(h) => HostMode::Fixed(h.to_owned()),
        };
        if let Some(p) = &c.replace_prefix
            && !p.starts_with('/')
        {
            return Err(format!("replace_prefix: `{p}` must start with `/`"));
        }
        tamada_gateway::conn::zero_timeout(&[
            ("connect_timeout", c.connect_timeout),
            ("send_timeout", c.send_timeout),
            ("read_timeout", c.read_timeout),
        ])?;
        let secs = |s: Option<Secs>, d: Duration| s.map_or(d, |s| s.0);
        let head = c.max_response_head.map_or(64 * 1024, |s| s.0 as usize);
        if head < 1024 {
            return Err("max_response_head: at least 1KiB".into());
        }
        Ok(Settings {
            upstreams: c.upstreams,
            balance: c.balance,
            host,
            replace_prefix: c.replace_prefix,
            x_forwarded: c.x_forwarded.unwrap_or(true),
            forwarded: c.forwarded,
            trusted: c.trusted,
            connect_timeout: secs(c.connect_timeout, DEFAULT_TIMEOUT),
            send_timeout: secs(c.send_timeout, DEFAULT_TIMEOUT),
            read_timeout: secs(c.read_timeout, DEFAULT_TIMEOUT),
            keepalive: c.keepalive.unwrap_or(32),
            keepalive_timeout: secs(c.keepalive_timeout, DEFAULT_TIMEOUT),
            max_fails: c.max_fails.unwrap_or(1),
            fail_timeout: secs(c.fail_timeout, Duration::from_secs(10)),
            max_response_head: head,
            underscores_in_headers: c.underscores_in_headers,
            allow_trace: c.allow_trace,
            tls,
            client_cert_header,
        })
    }
}
