//! `fastcgi`: runs scripts on a FastCGI server (php-fpm) over TCP or a
//! unix socket, like nginx's `fastcgi_pass`.
//!
//! The life of a request: map the path to a script ([`map`]: a script
//! file, a folder's index, or the front controller), build the CGI
//! meta-variables (the same code as the `cgi` plugin:
//! [`tamada_gateway::cgi_env`]), then one machine (`call.rs`) over the
//! gateway's upstream exchange: take an idle connection (with
//! `keepalive`: `FCGI_KEEP_CONN`) or connect, send BEGIN_REQUEST, PARAMS
//! and the body as STDIN, read STDOUT up to the end of the CGI header
//! block ([`tamada_gateway::cgi_headers`]), and answer from memory or hand
//! the rest to the core as a stream that puts the connection back once
//! END_REQUEST came. STDERR goes to the vhost's error log. It runs on the
//! event loop for a body in memory, on the pool otherwise.

mod call;
pub mod config;
pub mod map;
pub mod record;
mod source;

use config::{Config, Settings};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tamada_gateway::cgi_env;
use tamada_gateway::conn::{Conn, IdlePool};
use tamada_sdk::prelude::*;

/// A route's FastCGI handler.
pub struct FastCgi {
    s: Settings,
    /// Parameters that are the same for every request (unique names).
    base_env: Vec<(String, Vec<u8>)>,
    /// One of them has a name a request sets too (then each request's
    /// list is made unique).
    base_clash: bool,
    pool: Arc<IdlePool>,
    label: String,
    /// When the root was last resolved, to what, and the scripts mapped
    /// since.
    root_now: std::sync::Mutex<Located>,
}

/// The resolved root and a short-lived cache of what paths map to.
struct Located {
    at: Instant,
    root: PathBuf,
    /// Path -> what it mapped to, valid for [`MAP_VALID`] (a deploy is
    /// seen within it, as a swapped root symlink is).
    scripts: std::collections::HashMap<String, (Instant, map::Mapped)>,
}

/// How long a path's mapping (the script's checks on disk: a `stat` and
/// a `readlink` per folder) is reused.
const MAP_VALID: Duration = Duration::from_secs(1);
/// At most this many mappings are kept (the cache starts over when full).
const MAP_ENTRIES: usize = 4096;

/// Builds the handler from its options.
pub fn new(options: &Options) -> Result<FastCgi, String> {
    let c: Config = options.parse()?;
    let vhost = options.vhost();
    let base = vhost.config_file().parent().unwrap_or(Path::new("."));
    let s = Settings::from_config(c, base, vhost.document_root())?;
    let mut base_env = cgi_env::base("", &s.root, &s.params);
    // A FastCGI server has its own environment (nginx sends no PATH).
    base_env.retain(|(k, _)| k != "PATH");
    // Unique names once (later entries win), and whether one of them is a
    // name a request sets too.
    let mut seen = std::collections::HashSet::new();
    base_env.reverse();
    base_env.retain(|(k, _)| seen.insert(k.clone()));
    base_env.reverse();
    let base_clash = base_env.iter().any(|(k, _)| {
        k.starts_with("HTTP_") || cgi_env::PER_REQUEST.contains(&k.as_str()) || k == "DOCUMENT_URI"
    });
    Ok(FastCgi {
        root_now: std::sync::Mutex::new(Located {
            at: Instant::now(),
            root: s.root.clone(),
            scripts: Default::default(),
        }),
        pool: Arc::new(IdlePool::new(s.keepalive, s.keepalive_timeout)),
        label: s.address.label(),
        base_env,
        base_clash,
        s,
    })
}

/// Where the error log lines of a request go (also from its stream).
#[derive(Clone)]
struct LogCtx {
    vhost: String,
    peer: SocketAddr,
    source: String,
}

impl LogCtx {
    fn record(&self, level: log::Level, msg: &str) {
        tamada_sdk::record_for(&self.vhost, Some(self.peer), level, &self.source, msg);
    }
    /// STDERR content, a line per record line (as nginx's "FastCGI sent
    /// in stderr").
    fn stderr(&self, data: &[u8]) {
        for line in String::from_utf8_lossy(data).lines() {
            let line = line.trim_end();
            if !line.is_empty() {
                self.record(log::Level::Warn, &format!("FastCGI sent in stderr: {line}"));
            }
        }
    }
}

/// One record read: its type and content.
fn read_record(c: &mut Conn) -> io::Result<Option<(u8, Vec<u8>)>> {
    loop {
        if let Some((h, whole)) = record::split(c.buffered()).map_err(io::Error::other)? {
            let content = c.buffered()[8..8 + h.len].to_vec();
            c.consume(whole);
            if h.id != record::ID {
                // Not ours (a management record): skipped.
                return Ok(Some((0, Vec::new())));
            }
            return Ok(Some((h.ty, content)));
        }
        if c.fill()? == 0 {
            return if c.buffered().is_empty() {
                Ok(None)
            } else {
                Err(io::Error::other("the connection closed inside a record"))
            };
        }
    }
}

/// The page of a gateway failure: 502, 503 or 504.
fn gateway_page(res: &mut ResponseBuilder, code: u16) -> Outcome {
    let text = match code {
        504 => "Gateway Timeout",
        503 => "Service Unavailable",
        _ => "Bad Gateway",
    };
    page(res, code, text)
}

fn page(res: &mut ResponseBuilder, code: u16, text: &str) -> Outcome {
    res.status(code)
        .header("content-type", "text/plain; charset=utf-8")
        .header("cache-control", "no-store")
        .body(format!("{code} {text}\n"));
    Outcome::Done
}

/// The exchange's notes (the same keys as the proxy's, as nginx's
/// `$upstream_addr`, `$upstream_status`, `$upstream_response_time`).
fn note(req: &Request, addr: &str, status: u16, took: Duration) {
    req.note("upstream_addr", addr);
    req.note("upstream_status", &status.to_string());
    req.note(
        "upstream_response_time",
        &format!("{:.3}", took.as_secs_f64()),
    );
}

impl Handler for FastCgi {
    fn placement(&self) -> Placement {
        Placement::Inline
    }

    fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
        if req.can_wait() {
            return self.handle_inline(req, res);
        }
        if req.is_inline() {
            // A server that cannot wait: the pool's path.
            return req.defer();
        }
        self.handle_blocking(req, res)
    }
}

impl FastCgi {
    /// BEGIN_REQUEST and the PARAMS stream of a request.
    fn request_head(
        &self,
        req: &Request,
        script: &map::Script,
        root: &Path,
        content_length: Option<u64>,
    ) -> Vec<u8> {
        let mut env = cgi_env::build(
            &self.base_env,
            req,
            &cgi_env::PerRequest {
                script: cgi_env::Script {
                    name: &script.name,
                    filename: &script.filename,
                    path_info: &script.path_info,
                },
                path_root: Some(root),
                content_length,
                pass_authorization: self.s.pass_authorization,
                basic_remote_user: false,
            },
        );
        if root != self.s.root {
            env.push((
                "DOCUMENT_ROOT".into(),
                root.as_os_str().as_encoded_bytes().to_vec(),
            ));
        }
        env.push((
            "DOCUMENT_URI".into(),
            format!("{}{}", script.name, script.path_info).into_bytes(),
        ));
        // Later entries win (as for the cgi plugin's environment). PERF:
        // only when a name can be there twice: the parameters that are the
        // same for every request were made unique once, and none of them
        // is one the request sets (the usual case) unless the root moved.
        let mut pairs: Vec<(&str, &[u8])> = Vec::with_capacity(env.len());
        if self.base_clash || root != self.s.root {
            let mut seen = std::collections::HashSet::new();
            for (k, v) in env.iter().rev() {
                if seen.insert(k.as_str()) {
                    pairs.push((k.as_str(), v.as_slice()));
                }
            }
        } else {
            pairs.extend(env.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
        }
        let mut pre = Vec::with_capacity(2048);
        record::begin(&mut pre, self.s.keepalive > 0);
        record::push_stream(&mut pre, record::PARAMS, &record::params(pairs));
        record::push(&mut pre, record::PARAMS, &[]);
        pre
    }

    /// The root as it is now, and what `path` maps to under it. The root
    /// is resolved again at most once a second (a deploy that swaps a
    /// symlink is seen within that; nginx's `$realpath_root` resolves on
    /// every request), and a path's mapping is reused for as long.
    fn locate(&self, path: &str) -> (PathBuf, map::Mapped) {
        let now = Instant::now();
        let mut g = self.root_now.lock().unwrap_or_else(|p| p.into_inner());
        if now.duration_since(g.at) >= Duration::from_secs(1) {
            let root = self
                .s
                .root_link
                .canonicalize()
                .unwrap_or_else(|_| self.s.root.clone());
            if root != g.root {
                g.scripts.clear();
            }
            g.at = now;
            g.root = root;
        }
        if let Some((at, m)) = g.scripts.get(path)
            && now.duration_since(*at) < MAP_VALID
        {
            return (g.root.clone(), m.clone());
        }
        let root = g.root.clone();
        // The checks on disk run without the lock.
        drop(g);
        let front = self.s.front_controller.as_deref();
        let m = map::map(&root, path, &self.s.index, &self.s.extension, front);
        let mut g = self.root_now.lock().unwrap_or_else(|p| p.into_inner());
        if g.root == root {
            if g.scripts.len() >= MAP_ENTRIES {
                g.scripts.clear();
            }
            g.scripts.insert(path.to_owned(), (now, m.clone()));
        }
        (root, m)
    }
}

/// The rest of STDOUT, pulled by the core.
struct FcgiBody {
    conn: Option<Conn>,
    pending: Vec<u8>,
    pos: usize,
    reusable: bool,
    pool: Arc<IdlePool>,
    log: LogCtx,
}

impl BodyStream for FcgiBody {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.pending.len() {
                let n = out.len().min(self.pending.len() - self.pos);
                out[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            let Some(c) = self.conn.as_mut() else {
                return Ok(0);
            };
            let rec = match read_record(c) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    self.conn = None;
                    return Err(io::Error::other(
                        "the FastCGI server closed before END_REQUEST",
                    ));
                }
                Err(e) => {
                    self.conn = None;
                    return Err(e);
                }
            };
            match rec {
                (record::STDOUT, data) => {
                    self.pending = data;
                    self.pos = 0;
                }
                (record::STDERR, data) => self.log.stderr(&data),
                (record::END_REQUEST, _) => {
                    if let Some(c) = self.conn.take()
                        && self.reusable
                    {
                        self.pool.put(c);
                    }
                    return Ok(0);
                }
                _ => {}
            }
        }
    }

    fn close(&mut self, _client_gone: bool) {
        // Not at END_REQUEST: the connection is dropped (closed), never
        // reused with a response half read.
        self.conn = None;
    }
}

tamada_sdk::export_plugin!(
    name: "fastcgi",
    new: new,
    roles: [Handler],
    schema: |_| tamada_sdk::schema::of::<config::Config>(),
);
