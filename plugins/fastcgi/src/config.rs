//! The route's `options:`: parsed once with serde (the address is checked
//! while parsing, so an error names its option path and conf.d line), then
//! turned into the constants every request uses.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tamada_gateway::addr::Addr;
use tamada_sdk::units::{Secs, Size};

/// The options as written in YAML.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The FastCGI server: `127.0.0.1:9000` or `unix:/run/php/php-fpm.sock`.
    #[schemars(with = "String")]
    pub address: Addr,
    /// Where scripts are looked up (default: the vhost's document_root).
    pub root: Option<PathBuf>,
    /// The script for a folder (default `index.php`).
    pub index: Option<String>,
    /// What ends a script's name in a path (default `.php`): the rest is
    /// PATH_INFO (`/app.php/users` runs app.php).
    pub extension: Option<String>,
    /// The script for paths that name no file (`/index.php`, like
    /// nginx's `try_files $uri $uri/ /index.php?$query_string`). Without
    /// it such paths are declined (404, or the next route).
    pub front_controller: Option<String>,
    /// Extra parameters sent with every request (`APP_ENV: prod`).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Pass `Authorization` on as HTTP_AUTHORIZATION.
    #[serde(default)]
    pub pass_authorization: bool,
    /// Longest wait for a TCP connect (default 60s).
    pub connect_timeout: Option<Secs>,
    /// Longest stall while sending the request (default 60s).
    pub send_timeout: Option<Secs>,
    /// Longest wait for the response head, and longest stall of its body
    /// (default 60s): 504.
    pub read_timeout: Option<Secs>,
    /// Idle connections kept open with FCGI_KEEP_CONN (default 0: a
    /// connection per request, as nginx). A php-fpm child stays bound to
    /// a kept connection, so keep this (summed over every route and
    /// server using the pool) below the pool's `pm.max_children`.
    pub keepalive: Option<usize>,
    /// How long an idle connection is kept (default 60s).
    pub keepalive_timeout: Option<Secs>,
    /// A chunked request body is collected (CONTENT_LENGTH must be known)
    /// in memory up to this size, then in a temporary file (default 1MiB).
    pub spool_threshold: Option<Size>,
}

/// Checked options with their defaults.
pub struct Settings {
    pub address: Addr,
    /// The root as resolved at start-up.
    pub root: PathBuf,
    /// The root as configured (resolved again per request: a symlink
    /// swapped by a deploy is followed, as nginx's `$realpath_root`).
    pub root_link: PathBuf,
    pub index: String,
    pub extension: String,
    pub front_controller: Option<String>,
    pub params: Vec<(String, String)>,
    pub pass_authorization: bool,
    pub connect_timeout: Duration,
    pub send_timeout: Duration,
    pub read_timeout: Duration,
    pub keepalive: usize,
    pub keepalive_timeout: Duration,
    pub spool_threshold: usize,
}

const MINUTE: Duration = Duration::from_secs(60);

impl Settings {
    /// `base`: the conf.d folder (relative `root` is below it);
    /// `document_root`: the default root.
    pub fn from_config(c: Config, base: &Path, document_root: &Path) -> Result<Settings, String> {
        if c.address.is_tls() {
            return Err(
                "address: FastCGI has no TLS: write host:port or unix:/path (without https://)"
                    .into(),
            );
        }
        let root = match c.root {
            Some(r) if r.is_absolute() => r,
            Some(r) => base.join(r),
            None => document_root.to_path_buf(),
        };
        let root_link = root.clone();
        let root = root
            .canonicalize()
            .map_err(|e| format!("root `{}`: {e}", root.display()))?;
        let index = c.index.unwrap_or_else(|| "index.php".into());
        if index.is_empty() || index.contains('/') {
            return Err(format!("index: `{index}` must be a file name"));
        }
        let extension = c.extension.unwrap_or_else(|| ".php".into());
        if !extension.starts_with('.') || extension.len() < 2 || extension.contains('/') {
            return Err(format!("extension: `{extension}` must look like `.php`"));
        }
        if let Some(f) = &c.front_controller
            && !f.starts_with('/')
        {
            return Err(format!(
                "front_controller: `{f}` must be a path from the root (`/index.php`)"
            ));
        }
        for k in c.params.keys() {
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("params: `{k}` is not a variable name"));
            }
        }
        tamada_gateway::conn::zero_timeout(&[
            ("connect_timeout", c.connect_timeout),
            ("send_timeout", c.send_timeout),
            ("read_timeout", c.read_timeout),
        ])?;
        let secs = |s: Option<Secs>| s.map_or(MINUTE, |s| s.0);
        Ok(Settings {
            address: c.address,
            root,
            root_link,
            index,
            extension,
            front_controller: c.front_controller,
            params: c.params.into_iter().collect(),
            pass_authorization: c.pass_authorization,
            connect_timeout: secs(c.connect_timeout),
            send_timeout: secs(c.send_timeout),
            read_timeout: secs(c.read_timeout),
            keepalive: c.keepalive.unwrap_or(0),
            keepalive_timeout: secs(c.keepalive_timeout),
            spool_threshold: c.spool_threshold.map_or(1 << 20, |s| s.0 as usize),
        })
    }
}
