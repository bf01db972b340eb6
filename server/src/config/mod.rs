//! `conf.d/`: one YAML file per virtual host plus `server.yaml`.
//!
//! This module only reads and checks files; `runtime.rs` turns the result
//! into routes with plugin instances. Every error names the file, and the
//! line and column where it can be found.

pub mod acme;
pub mod runtime;
pub mod schema;
mod settings;
pub mod tickets;
pub mod tls;
mod vhost;
pub mod yamlpos;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
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
pub use vhost::{
    AccessConf, FilterConf, HstsRaw, Listen, LoggerConf, RouteConf, Satisfy, VhostConf, VhostRaw,
};
use vhost::{at_key, check_vhost};

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
    if let Some(p) = &settings.acme.ca_root
        && p.is_relative()
    {
        settings.acme.ca_root = Some(dir.join(p));
    }
    if vhosts.iter().any(|v: &VhostConf| v.acme())
        && let Err((key, m)) = settings.acme.check()
    {
        errors.push(at_key(&dir.join("server.yaml"), key, m));
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
    check_protocols(&vhosts, &mut errors);
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

/// The vhosts of one listening socket agree on its protocols: ALPN is
/// chosen (`http2`) and the h2c preface is taken (`h2c`) before the Host
/// is known.
fn check_protocols(vhosts: &[VhostConf], errors: &mut Vec<ConfError>) {
    let binds = bind_addresses(vhosts);
    let mut first: BTreeMap<(SocketAddr, bool), &VhostConf> = BTreeMap::new();
    for (v, l) in vhosts
        .iter()
        .flat_map(|v| v.listens.iter().map(move |l| (v, l)))
    {
        let bind = binds[&l.addr];
        let Some(f) = first.get(&(bind, l.tls)) else {
            first.insert((bind, l.tls), v);
            continue;
        };
        let (key, a, b) = if l.tls {
            ("http2", f.http2, v.http2)
        } else {
            ("h2c", f.h2c, v.h2c)
        };
        if a != b {
            errors.push(v.error_at(
                key,
                0,
                format!(
                    "{key}: {b} here, but {} says {a} for the same listening socket ({bind}): \
                     every vhost on it must agree",
                    f.file.display()
                ),
            ));
        }
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
