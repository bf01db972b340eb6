//! `conf.d/`: one YAML file per virtual host plus `server.yaml`.
//!
//! This module only reads and checks files; `runtime.rs` turns the result
//! into routes with plugin instances. Every error names the file, and the
//! line and column where it can be found.

pub mod runtime;
pub mod schema;
mod settings;
pub mod tickets;
pub mod tls;
pub mod yamlpos;

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// A configuration error, printed as `file:line:column: message`.
#[derive(Debug)]
pub struct ConfError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        } else {
            write!(f, "{}: {}", self.file.display(), self.message)
        }
    }
}

impl std::error::Error for ConfError {}

pub use tamada_sdk::units::{Secs, Size};

pub use settings::Settings;

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
    /// Connections to this address start with a PROXY protocol (v1 or v2)
    /// header from a trusted proxy (every vhost on the socket must agree).
    #[serde(default)]
    proxy_protocol: bool,
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
    pub proxy_protocol: bool,
}

impl VhostConf {
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

/// Everything in conf.d.
#[derive(Debug, Clone)]
pub struct Config {
    pub dir: PathBuf,
    pub settings: Settings,
    pub vhosts: Vec<VhostConf>,
}

/// 1 GiB, the default request body limit: Apache's `LimitRequestBody`
/// default (since 2.4.54). nginx ships 1 MiB, which refuses ordinary
/// uploads and git pushes until every admin raises it.
pub const DEFAULT_MAX_BODY: u64 = 1 << 30;

/// 1 GiB, the default `max_spool`: one body of the default `max_body` on
/// disk at a time, or many smaller ones, so a flood of parallel uploads
/// cannot fill the disk (nginx and Apache have no such cap: nginx spools
/// every buffered body without a total, Apache streams them).
pub const DEFAULT_MAX_SPOOL: u64 = 1 << 30;

/// Finds the line and column of the `nth` occurrence of `key:` as a
/// mapping key in block-style YAML.
pub fn locate_key(text: &str, key: &str, nth: usize) -> Option<(usize, usize)> {
    let mut seen = 0;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let (t, extra) = match trimmed.strip_prefix("- ") {
            Some(t) => {
                let t2 = t.trim_start();
                (t2, 2 + t.len() - t2.len())
            }
            None => (trimmed, 0),
        };
        if let Some(after) = t.strip_prefix(key)
            && after.trim_start().starts_with(':')
        {
            if seen == nth {
                return Some((i + 1, indent + extra + 1));
            }
            seen += 1;
        }
    }
    None
}

fn yaml_error(file: &Path, e: serde_yaml::Error) -> ConfError {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    // serde_yaml_ng appends " at line L column C" to some messages: the
    // location is already in front, so drop it.
    let mut message = e.to_string();
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    ConfError {
        file: file.to_owned(),
        line,
        column,
        message,
    }
}

fn plain(file: &Path, message: impl Into<String>) -> ConfError {
    ConfError {
        file: file.to_owned(),
        line: 0,
        column: 0,
        message: message.into(),
    }
}

/// Parses the text of `server.yaml` (fuzzed: `fuzz/fuzz_targets/conf.rs`).
pub fn parse_settings(file: &Path, text: &str) -> Result<Settings, ConfError> {
    serde_yaml::from_str::<Settings>(text).map_err(|e| yaml_error(file, e))
}

/// Parses and checks the text of a vhost file named `file` (fuzzed:
/// `fuzz/fuzz_targets/conf.rs`).
pub fn parse_vhost(file: &Path, text: String) -> Result<VhostConf, ConfError> {
    match serde_yaml::from_str::<VhostRaw>(&text) {
        Ok(raw) => check_vhost(file, text, raw),
        Err(e) => Err(yaml_error(file, e)),
    }
}

/// Reads `server.yaml` (if present) and every other `*.yaml` in `dir`.
pub fn load(dir: &Path) -> Result<Config, Vec<ConfError>> {
    let mut errors = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return Err(vec![plain(dir, format!("cannot read conf.d folder: {e}"))]),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "yaml" || x == "yml")
                && !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    files.sort();

    let mut settings = Settings::default();
    let mut vhosts = Vec::new();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                errors.push(plain(&file, format!("cannot read: {e}")));
                continue;
            }
        };
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if stem == "server" {
            if text.trim().is_empty() {
                continue;
            }
            match parse_settings(&file, &text) {
                Ok(s) => settings = s,
                Err(e) => errors.push(e),
            }
            continue;
        }
        match parse_vhost(&file, text) {
            Ok(v) => vhosts.push(v),
            Err(e) => errors.push(e),
        }
    }
    if let Some(p) = &settings.plugin_dir
        && p.is_relative()
    {
        settings.plugin_dir = Some(dir.join(p));
    }
    if let Some(p) = &settings.log_file
        && p.is_relative()
    {
        settings.log_file = Some(dir.join(p));
    }
    if let Some(p) = &settings.pid_file
        && p.is_relative()
    {
        settings.pid_file = Some(dir.join(p));
    }
    if let Some(p) = &settings.ticket_key_file
        && p.is_relative()
    {
        settings.ticket_key_file = Some(dir.join(p));
    }
    if let Some(p) = &settings.spool_dir
        && p.is_relative()
    {
        settings.spool_dir = Some(dir.join(p));
    }
    if let Some(p) = &settings.spool_dir
        && !p.is_dir()
    {
        errors.push(at_key(
            &dir.join("server.yaml"),
            "spool_dir",
            format!("spool_dir: {} is not a folder", p.display()),
        ));
    }
    if settings.pool_queue == 0 {
        errors.push(at_key(
            &dir.join("server.yaml"),
            "pool_queue",
            "pool_queue: must be at least 1".into(),
        ));
    }
    if settings.workers == 0 {
        errors.push(plain(
            &dir.join("server.yaml"),
            "workers: must be at least 1",
        ));
    }
    let server_yaml = dir.join("server.yaml");
    if let Some(h) = &settings.health
        && (!h.starts_with('/') || h.contains(['?', '#', ' ']))
    {
        errors.push(at_key(
            &server_yaml,
            "health",
            format!("health: `{h}` must be a path starting with / (no query)"),
        ));
    }
    if vhosts.is_empty() && errors.is_empty() {
        errors.push(plain(dir, "no virtual host files (*.yaml) in conf.d"));
    }
    check_duplicates(&vhosts, &mut errors);
    check_proxy_protocol(&vhosts, &settings, &server_yaml, &mut errors);
    if errors.is_empty() {
        Ok(Config {
            dir: dir.to_owned(),
            settings,
            vhosts,
        })
    } else {
        Err(errors)
    }
}

fn check_vhost(file: &Path, text: String, raw: VhostRaw) -> Result<VhostConf, ConfError> {
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
        proxy_protocol: raw.proxy_protocol,
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
            v.tls = Some(t.check(base).map_err(|(key, m)| v.error_at(key, 0, m))?);
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
                    options: serde_yaml::Value::Null,
                });
            }
            r.push(RouteConf {
                path: "/".into(),
                handler: "static".into(),
                max_body: None,
                request_buffering: None,
                options: serde_yaml::Value::Null,
            });
            r
        }
    };
    for (i, r) in v.routes.iter().enumerate() {
        if !r.path.starts_with('/') {
            return Err(v.error_at(
                "path",
                i,
                format!("routes[{i}].path: `{}` must start with /", r.path),
            ));
        }
    }
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
fn at_key(file: &Path, key: &str, message: String) -> ConfError {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let (line, column) = locate_key(&text, key, 0).unwrap_or((0, 0));
    ConfError {
        file: file.to_owned(),
        line,
        column,
        message,
    }
}

/// Every vhost on one listening socket agrees on `proxy_protocol`, and a
/// socket that expects it has someone to trust.
fn check_proxy_protocol(
    vhosts: &[VhostConf],
    settings: &Settings,
    server_yaml: &Path,
    errors: &mut Vec<ConfError>,
) {
    let binds = bind_addresses(vhosts);
    let mut first: BTreeMap<SocketAddr, &VhostConf> = BTreeMap::new();
    for (v, l) in vhosts
        .iter()
        .flat_map(|v| v.listens.iter().map(move |l| (v, l)))
    {
        let bind = binds[&l.addr];
        match first.get(&bind) {
            None => {
                first.insert(bind, v);
            }
            Some(f) if f.proxy_protocol != v.proxy_protocol => {
                let (with, without) = if v.proxy_protocol { (v, *f) } else { (*f, v) };
                errors.push(with.error_at(
                    "proxy_protocol",
                    0,
                    format!(
                        "proxy_protocol: {} is one listening socket ({bind}) with {}, which \
                         does not set proxy_protocol: every vhost on it must agree",
                        l.addr,
                        without.file.display()
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    if settings.trusted_proxies.is_empty()
        && let Some(v) = vhosts.iter().find(|v| v.proxy_protocol)
    {
        errors.push(v.error_at(
            "proxy_protocol",
            0,
            format!(
                "proxy_protocol: needs trusted_proxies in {} (the balancers that may send \
                 the header)",
                server_yaml.display()
            ),
        ));
    }
}

fn check_duplicates(vhosts: &[VhostConf], errors: &mut Vec<ConfError>) {
    let mut names: BTreeMap<(SocketAddr, String), &Path> = BTreeMap::new();
    let mut defaults: BTreeMap<SocketAddr, &Path> = BTreeMap::new();
    for (v, l) in vhosts
        .iter()
        .flat_map(|v| v.listens.iter().map(move |l| (v, l)))
    {
        for (i, n) in std::iter::once(&v.name).chain(&v.aliases).enumerate() {
            if let Some(prev) = names.insert((l.addr, n.clone()), &v.file) {
                let key = if i == 0 { "vhost" } else { "aliases" };
                errors.push(v.error_at(
                    key,
                    0,
                    format!(
                        "{key}: `{n}` on {} is already served by {}",
                        l.addr,
                        prev.display()
                    ),
                ));
            }
        }
        if v.default
            && let Some(prev) = defaults.insert(l.addr, &v.file)
        {
            errors.push(v.error_at(
                "default",
                0,
                format!(
                    "default: {} already has a default vhost in {}",
                    l.addr,
                    prev.display()
                ),
            ));
        }
    }
}

/// Which socket serves each configured address: a wildcard on a port
/// takes every address of that port and family (Linux refuses to bind
/// 127.0.0.1:P beside 0.0.0.0:P).
pub fn bind_addresses(vhosts: &[VhostConf]) -> std::collections::BTreeMap<SocketAddr, SocketAddr> {
    let all: Vec<SocketAddr> = vhosts
        .iter()
        .flat_map(|v| v.listens.iter().map(|l| l.addr))
        .collect();
    let mut out = std::collections::BTreeMap::new();
    for a in &all {
        let wildcard = all.iter().find(|w| {
            w.port() == a.port() && w.ip().is_unspecified() && w.is_ipv4() == a.is_ipv4()
        });
        out.insert(*a, *wildcard.unwrap_or(a));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_nth_key() {
        let t = "vhost: a\nroutes:\n  - path: /x/\n    handler: h\n  - path: /\n";
        assert_eq!(locate_key(t, "path", 1), Some((5, 5)));
        assert_eq!(locate_key(t, "vhost", 0), Some((1, 1)));
        assert_eq!(locate_key(t, "handler", 0), Some((4, 5)));
    }
}
