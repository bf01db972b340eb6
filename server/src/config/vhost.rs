//! One vhost file: the keys it may hold (`VhostRaw`, as written, with the
//! JSON Schema derived from it) and what it becomes once checked on its
//! own (`VhostConf`: paths made absolute, listening sockets, TLS built).
//! Checks across files (duplicate names, `proxy_protocol` agreement) are
//! in `config/mod.rs`.

use super::{ConfError, DEFAULT_MAX_BODY, Secs, Size, locate_key, tls};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// One route of a vhost.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConf {
    /// The path prefix (on a segment boundary; longest first).
    pub path: String,
    /// The plugin that answers it (its declared name).
    pub handler: String,
    /// The request body limit for this route.
    pub max_body: Option<Size>,
    /// Collect the request body whole before the handler runs (default:
    /// the vhost's, which defaults to true), so a slow upload holds no
    /// pool thread; false streams it to the handler as it comes.
    pub request_buffering: Option<bool>,
    /// Requests this route's handler may serve at once; past it, 503 with
    /// `Retry-After: 1` (one slow backend cannot take every pool thread).
    pub max_in_flight: Option<usize>,
    /// Threads of this route's own (1 to 1024): its handler calls, when
    /// they run off the event loop, and its response streams run there,
    /// not on the shared pool (`workers`), so a slow backend cannot take
    /// the threads other routes need.
    pub pool: Option<usize>,
    /// Response filters for this route's answers, in order; they replace
    /// the vhost's `filters:` (an empty list: none).
    pub filters: Option<Vec<FilterConf>>,
    /// Handed to the plugin as they are (see each plugin's options).
    #[serde(default)]
    #[schemars(with = "serde_json::Value")]
    pub options: serde_yaml::Value,
}

/// One access rule of a vhost: runs before routing for every request
/// whose path starts with `path`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessConf {
    /// The path prefix (on a segment boundary), as routes'.
    pub path: String,
    /// The access plugin (`redirect`, `access`, `auth_basic`, ...).
    pub handler: String,
    /// `any`: this rule and the next ones of the same `path` that also
    /// say `any` form a group that lets a request through when any one of
    /// them does (nginx's `satisfy any`: an allowed address or a valid
    /// password). `all` (the default): every rule must.
    #[serde(default)]
    pub satisfy: Satisfy,
    /// Handed to the plugin as they are (see each plugin's options).
    #[serde(default)]
    #[schemars(with = "serde_json::Value")]
    pub options: serde_yaml::Value,
}

/// How the rules of a group combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Satisfy {
    #[default]
    All,
    Any,
}

/// One response filter (`compress`, `headers`, ...).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterConf {
    /// The filter plugin (its declared name).
    pub handler: String,
    /// Handed to the plugin as they are (see each plugin's options).
    #[serde(default)]
    #[schemars(with = "serde_json::Value")]
    pub options: serde_yaml::Value,
}

/// One logger of a vhost.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoggerConf {
    /// The plugin that logs (its declared name).
    pub handler: String,
    /// Handed to the plugin as they are.
    #[serde(default)]
    #[schemars(with = "serde_json::Value")]
    pub options: serde_yaml::Value,
}

/// A vhost file as written.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VhostRaw {
    vhost: String,
    #[serde(default)]
    aliases: Vec<String>,
    ip: IpAddr,
    /// Plain HTTP; optional once `tls` is set (an HTTPS-only vhost).
    port: Option<u16>,
    /// HTTPS for this vhost (default 443 when `tls` is set).
    tls_port: Option<u16>,
    /// Certificates and TLS settings: HTTPS on `tls_port`.
    tls: Option<tls::TlsRaw>,
    /// Plain-HTTP requests get 308 to `https://host[:tls_port]/path?query`.
    #[serde(default)]
    https_redirect: bool,
    /// `Strict-Transport-Security` on HTTPS answers: `true` for a year,
    /// or `{ max_age: 365d, include_subdomains: false, preload: false }`.
    hsts: Option<HstsRaw>,
    document_root: PathBuf,
    cgi_bin: Option<PathBuf>,
    log: Option<PathBuf>,
    #[serde(default)]
    default: bool,
    max_body: Option<Size>,
    /// Collect request bodies whole before the handler runs (default
    /// true); a route may say otherwise.
    request_buffering: Option<bool>,
    routes: Option<Vec<RouteConf>>,
    loggers: Option<Vec<LoggerConf>>,
    /// Rules every request whose path they match passes before routing
    /// (redirects, rewrites, passwords, addresses, limits).
    #[serde(default)]
    access: Vec<AccessConf>,
    /// Response filters applied, in order, to every answer of this vhost
    /// (a route's own `filters:` replaces this list).
    #[serde(default)]
    filters: Vec<FilterConf>,
    /// Connections to this address start with a PROXY protocol (v1 or v2)
    /// header from a trusted proxy (every vhost on the socket must agree).
    #[serde(default)]
    proxy_protocol: bool,
    /// Offer HTTP/2 (ALPN `h2`) on the vhost's TLS port (default true;
    /// every vhost on the socket must agree).
    #[serde(default = "yes")]
    http2: bool,
    /// Take HTTP/2 with prior knowledge (h2c) on the plain port, for a
    /// balancer in front (default false; every vhost on the socket must
    /// agree).
    #[serde(default)]
    h2c: bool,
}

fn yes() -> bool {
    true
}

/// `hsts:` as written.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum HstsRaw {
    On(bool),
    Detail {
        /// How long browsers remember to use HTTPS only (default 365d).
        max_age: Option<Secs>,
        #[serde(default)]
        include_subdomains: bool,
        #[serde(default)]
        preload: bool,
    },
}

impl HstsRaw {
    /// The header's value, or `None` when off.
    fn value(&self) -> Option<String> {
        let year = std::time::Duration::from_secs(365 * 86_400);
        let (age, sub, preload) = match self {
            HstsRaw::On(false) => return None,
            HstsRaw::On(true) => (year, false, false),
            HstsRaw::Detail {
                max_age,
                include_subdomains,
                preload,
            } => (max_age.map_or(year, |m| m.0), *include_subdomains, *preload),
        };
        let mut v = format!("max-age={}", age.as_secs());
        if sub {
            v.push_str("; includeSubDomains");
        }
        if preload {
            v.push_str("; preload");
        }
        Some(v)
    }
}

/// One listening address of a vhost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub addr: SocketAddr,
    /// HTTPS (the vhost's `tls_port`).
    pub tls: bool,
}

/// A vhost, checked, with absolute paths and its defaults filled in.
#[derive(Debug, Clone)]
pub struct VhostConf {
    pub file: PathBuf,
    /// The file's text, kept to point at lines in later errors.
    pub text: String,
    pub name: String,
    pub aliases: Vec<String>,
    /// Its listening addresses: plain (`port`) and HTTPS (`tls_port`).
    pub listens: Vec<Listen>,
    /// The HTTPS port, when it has one.
    pub tls_port: Option<u16>,
    pub tls: Option<tls::TlsConf>,
    pub https_redirect: bool,
    /// The `Strict-Transport-Security` value, when set.
    pub hsts: Option<String>,
    pub document_root: PathBuf,
    pub cgi_bin: Option<PathBuf>,
    pub log: Option<PathBuf>,
    pub default: bool,
    pub max_body: u64,
    pub request_buffering: bool,
    pub routes: Vec<RouteConf>,
    pub loggers: Vec<LoggerConf>,
    pub access: Vec<AccessConf>,
    pub filters: Vec<FilterConf>,
    pub proxy_protocol: bool,
    pub http2: bool,
    pub h2c: bool,
}

impl VhostConf {
    /// Its certificates come from the ACME CA.
    pub fn acme(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.acme)
    }

    /// Its name and aliases.
    pub fn names(&self) -> Vec<String> {
        std::iter::once(&self.name)
            .chain(&self.aliases)
            .cloned()
            .collect()
    }

    /// An error at `key:` of the `i`-th route: keys of the same name in
    /// `access:` or `loggers:` above `routes:` are skipped.
    pub fn route_error(&self, key: &str, i: usize, message: String) -> ConfError {
        let routes_line = locate_key(&self.text, "routes", 0).map_or(0, |(l, _)| l);
        let before = (0..)
            .map_while(|n| locate_key(&self.text, key, n))
            .take_while(|(l, _)| *l < routes_line)
            .count();
        self.error_at(key, before + i, message)
    }

    /// An error about this file, at the line of the `nth` (0-based)
    /// occurrence of `key:` (or line 0 when it cannot be found).
    pub fn error_at(&self, key: &str, nth: usize, message: String) -> ConfError {
        let (line, column) = locate_key(&self.text, key, nth).unwrap_or((0, 0));
        ConfError {
            file: self.file.clone(),
            line,
            column,
            message,
        }
    }
}

pub(super) fn check_vhost(
    file: &Path,
    text: String,
    raw: VhostRaw,
) -> Result<VhostConf, ConfError> {
    let base = file.parent().unwrap_or(Path::new("."));
    let abs = |p: &Path| -> PathBuf {
        let j = if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        };
        std::path::absolute(&j).unwrap_or(j)
    };
    let mut v = VhostConf {
        file: file.to_owned(),
        text,
        name: raw.vhost.to_ascii_lowercase(),
        aliases: raw.aliases.iter().map(|a| a.to_ascii_lowercase()).collect(),
        listens: Vec::new(),
        tls_port: None,
        tls: None,
        https_redirect: raw.https_redirect,
        hsts: raw.hsts.as_ref().and_then(HstsRaw::value),
        document_root: abs(&raw.document_root),
        cgi_bin: raw.cgi_bin.as_deref().map(abs),
        log: raw.log.as_deref().map(abs),
        default: raw.default,
        max_body: raw.max_body.map(|s| s.0).unwrap_or(DEFAULT_MAX_BODY),
        request_buffering: raw.request_buffering.unwrap_or(true),
        routes: Vec::new(),
        loggers: Vec::new(),
        access: Vec::new(),
        filters: raw.filters.clone(),
        proxy_protocol: raw.proxy_protocol,
        http2: raw.http2,
        h2c: raw.h2c,
    };
    if v.name.is_empty() {
        return Err(v.error_at("vhost", 0, "vhost: must not be empty".into()));
    }
    if let Some(p) = raw.port {
        v.listens.push(Listen {
            addr: SocketAddr::new(raw.ip, p),
            tls: false,
        });
    }
    match raw.tls {
        Some(t) => {
            let port = raw.tls_port.unwrap_or(443);
            if raw.port == Some(port) {
                return Err(v.error_at(
                    "tls_port",
                    0,
                    format!("tls_port: {port} is the plain `port` too"),
                ));
            }
            v.tls = Some(t.check(base).map_err(|(key, m)| {
                // A key inside a flow mapping (`tls: { .. }`): the line
                // of `tls:`.
                let key = if locate_key(&v.text, key, 0).is_some() {
                    key
                } else {
                    "tls"
                };
                v.error_at(key, 0, m)
            })?);
            if v.acme() {
                if let Err(m) = super::acme::check_name(&v.name) {
                    return Err(v.error_at("vhost", 0, format!("vhost: {m} (tls.acme)")));
                }
                // Let's Encrypt's limit of names per certificate.
                if v.aliases.len() >= 100 {
                    return Err(v.error_at(
                        "aliases",
                        0,
                        format!(
                            "aliases: {} names with the vhost's; a certificate from a CA holds 100 at most (tls.acme)",
                            v.aliases.len() + 1
                        ),
                    ));
                }
                for a in &v.aliases {
                    if let Err(m) = super::acme::check_name(a) {
                        return Err(v.error_at("aliases", 0, format!("aliases: {m} (tls.acme)")));
                    }
                }
            }
            v.tls_port = Some(port);
            v.listens.push(Listen {
                addr: SocketAddr::new(raw.ip, port),
                tls: true,
            });
        }
        None if raw.tls_port.is_some() => {
            return Err(v.error_at(
                "tls_port",
                0,
                "tls_port: needs `tls` (the certificate and its key)".into(),
            ));
        }
        None => {}
    }
    if v.listens.is_empty() {
        return Err(v.error_at(
            "ip",
            0,
            "port: missing (a plain HTTP port, or `tls` for HTTPS)".into(),
        ));
    }
    if v.https_redirect && v.tls.is_none() {
        return Err(v.error_at(
            "https_redirect",
            0,
            "https_redirect: needs `tls` (the HTTPS port to send clients to)".into(),
        ));
    }
    let dirs = [
        ("document_root", Some(&v.document_root)),
        ("cgi_bin", v.cgi_bin.as_ref()),
        ("log", v.log.as_ref()),
    ];
    for (key, dir) in dirs {
        if let Some(d) = dir
            && !d.is_dir()
        {
            return Err(v.error_at(key, 0, format!("{key}: {} is not a folder", d.display())));
        }
    }
    v.routes = match raw.routes {
        Some(r) => r,
        None => {
            let mut r = Vec::new();
            if v.cgi_bin.is_some() {
                r.push(RouteConf {
                    path: "/cgi-bin/".into(),
                    handler: "cgi".into(),
                    max_body: None,
                    request_buffering: None,
                    max_in_flight: None,
                    pool: None,
                    filters: None,
                    options: serde_yaml::Value::Null,
                });
            }
            r.push(RouteConf {
                path: "/".into(),
                handler: "static".into(),
                max_body: None,
                request_buffering: None,
                max_in_flight: None,
                pool: None,
                filters: None,
                options: serde_yaml::Value::Null,
            });
            r
        }
    };
    for (i, r) in v.routes.iter().enumerate() {
        if r.max_in_flight == Some(0) {
            // (the n-th `max_in_flight:` key under routes)
            let nth = v.routes[..i]
                .iter()
                .filter(|r| r.max_in_flight.is_some())
                .count();
            return Err(v.route_error(
                "max_in_flight",
                nth,
                format!("routes[{i}].max_in_flight: 0 would refuse every request"),
            ));
        }
        if let Some(n) = r.pool
            && !(1..=1024).contains(&n)
        {
            let (line, column) = super::yamlpos::locate(
                &v.text,
                &super::yamlpos::parse_path(&format!("routes[{i}].pool")),
            )
            .unwrap_or((0, 0));
            return Err(ConfError {
                file: v.file.clone(),
                line,
                column,
                message: format!("routes[{i}].pool: {n} threads: give 1 to 1024"),
            });
        }
        if !r.path.starts_with('/') {
            return Err(v.route_error(
                "path",
                i,
                format!("routes[{i}].path: `{}` must start with /", r.path),
            ));
        }
    }
    for (i, a) in raw.access.iter().enumerate() {
        if !a.path.starts_with('/') {
            return Err(v.error_at(
                "access",
                0,
                format!("access[{i}].path: `{}` must start with /", a.path),
            ));
        }
    }
    v.access = raw.access;
    v.loggers = match raw.loggers {
        Some(l) => l,
        None if v.log.is_some() => vec![LoggerConf {
            handler: "logging".into(),
            options: serde_yaml::Value::Null,
        }],
        None => Vec::new(),
    };
    Ok(v)
}

/// An error at the line of `key:` in `file` (or without a line).
pub(super) fn at_key(file: &Path, key: &str, message: String) -> ConfError {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let (line, column) = locate_key(&text, key, 0).unwrap_or((0, 0));
    ConfError {
        file: file.to_owned(),
        line,
        column,
        message,
    }
}
