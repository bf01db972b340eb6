//! `fastcgi`: runs scripts on a FastCGI server (php-fpm) over TCP or a
//! unix socket, like nginx's `fastcgi_pass`.
//!
//! The life of a request, in [`FastCgi::handle`], on the pool: map the
//! path to a script ([`map`]: a script file, a folder's index, or the
//! front controller), build the CGI meta-variables (the same code as the
//! `cgi` plugin: [`tamada_gateway::cgi_env`]), take an idle connection
//! (with `keepalive`: `FCGI_KEEP_CONN`) or connect, send BEGIN_REQUEST and PARAMS, stream
//! the body as STDIN (a chunked one is spooled first: CONTENT_LENGTH must
//! be known), read STDOUT up to the end of the CGI header block
//! ([`tamada_gateway::cgi_headers`]), and hand the rest to the core as a
//! stream that puts the connection back once END_REQUEST came. STDERR
//! goes to the vhost's error log.

pub mod config;
mod inline;
pub mod map;
pub mod record;

use config::{Config, Settings};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tamada_gateway::cgi_env;
use tamada_gateway::cgi_headers::{self, MAX_HEAD, Reply, Scan};
use tamada_gateway::conn::idempotent;
use tamada_gateway::conn::{self, Conn, IdlePool, Sent};
use tamada_gateway::spool::Spool;
use tamada_gateway::upload::Upload;
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

/// Why one attempt failed.
enum Fail {
    /// A pooled connection the server had closed: nothing reached it.
    Stale,
    Timeout(String),
    /// Refused, cut, or not FastCGI.
    Bad(String),
    /// The server is overloaded (END_REQUEST says so): 503.
    Busy(String),
    /// The client's body failed.
    Client(String),
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

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A response head read from STDOUT.
struct Head {
    headers: cgi_headers::Headers,
    /// STDOUT bytes past the header block.
    rest: Vec<u8>,
    /// The request body was not all sent: the connection is not reused.
    reusable: bool,
}

impl FastCgi {
    fn attempt(
        &self,
        c: &mut Conn,
        pre: &[u8],
        input: &mut Upload,
        log: &LogCtx,
        req_method: &str,
    ) -> Result<Head, Fail> {
        // Blocking, with the timeouts (a connection last used inline is
        // non-blocking).
        if let Err(e) = c.set_mode(false, self.s.read_timeout, self.s.send_timeout) {
            return Err(Fail::Bad(format!("setting up the connection: {e}")));
        }
        let stale_or = |c: &Conn, e: io::Error, what: &str| {
            if timed_out(&e) {
                Fail::Timeout(format!("timed out {what}"))
            } else if c.reused {
                Fail::Stale
            } else {
                Fail::Bad(format!("{what}: {e}"))
            }
        };
        if let Err(e) = c.sock.write_all(pre) {
            return Err(stale_or(c, e, "sending the parameters"));
        }
        let early = match self.send_stdin(c, input) {
            Ok(answered) => answered,
            Err(Fail::Bad(why)) => {
                if !c.readable() {
                    return Err(if c.reused && !input.started {
                        Fail::Stale
                    } else {
                        Fail::Bad(why)
                    });
                }
                true
            }
            Err(f) => return Err(f),
        };
        let mut out = Vec::new();
        let mut any = false;
        loop {
            let rec = match read_record(c) {
                Ok(r) => r,
                Err(e) if timed_out(&e) => {
                    return Err(Fail::Timeout(format!(
                        "no response head within {:?} (read_timeout)",
                        self.s.read_timeout
                    )));
                }
                Err(e) if !any && idempotent(req_method) => {
                    return Err(stale_or(c, e, "reading the response"));
                }
                Err(e) => return Err(Fail::Bad(format!("reading the response: {e}"))),
            };
            let Some((ty, content)) = rec else {
                // Nothing came back: a request that may run twice goes
                // again on a fresh connection (RFC 9110 9.2.2).
                if !any && c.reused && idempotent(req_method) {
                    return Err(Fail::Stale);
                }
                return Err(Fail::Bad(
                    "the server closed the connection before a response head".into(),
                ));
            };
            any = true;
            match ty {
                record::STDOUT => {
                    out.extend_from_slice(&content);
                    match cgi_headers::scan(&out) {
                        Scan::Done(headers, n) => {
                            return Ok(Head {
                                headers,
                                rest: out.split_off(n),
                                reusable: !early && input.ended,
                            });
                        }
                        Scan::Bad(why) => {
                            return Err(Fail::Bad(format!("a bad header block: {why}")));
                        }
                        Scan::Incomplete if out.len() > MAX_HEAD => {
                            return Err(Fail::Bad(format!("a header block over {MAX_HEAD} bytes")));
                        }
                        Scan::Incomplete => {}
                    }
                }
                record::STDERR => log.stderr(&content),
                record::END_REQUEST => {
                    let status = content.get(4).copied().unwrap_or(0);
                    let why = format!(
                        "the request ended ({}) {}",
                        record::protocol_status(status),
                        if out.is_empty() {
                            "with no output"
                        } else {
                            "inside the header block"
                        }
                    );
                    return Err(if status == 2 {
                        Fail::Busy(why)
                    } else {
                        Fail::Bad(why)
                    });
                }
                _ => {}
            }
        }
    }

    /// STDIN: the body (a replayed copy first) and the stream's end;
    /// `Ok(true)` when the server answered before it ended.
    fn send_stdin(&self, c: &mut Conn, input: &mut Upload) -> Result<bool, Fail> {
        let send = |c: &mut Conn, data: &[u8]| -> Result<bool, Fail> {
            match c.send_reading(data, self.s.send_timeout) {
                Ok(s) => Ok(s == Sent::Answered),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(Fail::Timeout(format!(
                    "the server took no body for {:?} (send_timeout)",
                    self.s.send_timeout
                ))),
                Err(e) => Err(Fail::Bad(format!("sending the body: {e}"))),
            }
        };
        let stdin = |data: &[u8]| {
            let mut v = Vec::with_capacity(data.len() + 16);
            record::push_stream(&mut v, record::STDIN, data);
            v
        };
        if input.started {
            let Some(copy) = input.replay().map(<[u8]>::to_vec) else {
                return Err(Fail::Bad("the request body cannot be sent again".into()));
            };
            if !copy.is_empty() && send(c, &stdin(&copy))? {
                return Ok(true);
            }
        }
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = input
                .read(&mut buf)
                .map_err(|e| Fail::Client(e.to_string()))?;
            if n == 0 {
                break;
            }
            if send(c, &stdin(&buf[..n]))? {
                return Ok(true);
            }
        }
        send(c, &stdin(&[]))
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
            // A server that cannot wait: the blocking path, on the pool.
            return req.defer();
        }
        let t0 = Instant::now();
        let (root, mapped) = self.locate(req.path());
        let script = match mapped {
            map::Mapped::Run(s) => s,
            map::Mapped::Decline => return Outcome::Decline,
            map::Mapped::NotFound => return page(res, 404, "Not Found"),
        };
        let log = LogCtx {
            vhost: req.vhost().name().to_owned(),
            peer: req.peer_addr(),
            source: format!("fastcgi:{}", self.label),
        };
        let (reader, content_length): (Option<Box<dyn Read>>, Option<u64>) =
            match req.content_length() {
                Some(0) => (None, None),
                Some(n) => (Some(Box::new(req.body())), Some(n)),
                None => {
                    // CONTENT_LENGTH must be known (PHP parses forms by it).
                    let mut spool = Spool::new(self.s.spool_threshold);
                    if let Err(e) = spool.fill_from(&mut req.body()) {
                        log.record(
                            log::Level::Warn,
                            &format!("request body could not be read: {e}"),
                        );
                        return page(res, 400, "the request body could not be read");
                    }
                    let n = spool.len();
                    match spool.into_reader() {
                        Ok(r) if n > 0 => (Some(Box::new(r)), Some(n)),
                        Ok(_) => (None, Some(0)),
                        Err(e) => return Outcome::Error(format!("spooling the request body: {e}")),
                    }
                }
            };
        let pre = self.request_head(req, &script, &root, content_length);
        let mut input = Upload::new(reader);
        let mut fresh = false;
        loop {
            let pooled = if fresh { None } else { self.pool.take() };
            let mut c = match pooled {
                Some(c) => c,
                None => match conn::connect(&self.s.address, self.s.connect_timeout) {
                    Ok(sock) => Conn::new(sock, 0),
                    Err(e) => {
                        let timeout = timed_out(&e);
                        log.record(
                            log::Level::Error,
                            &format!("connecting to {}: {e}", self.label),
                        );
                        let code = if timeout { 504 } else { 502 };
                        note(req, &self.label, code, t0.elapsed());
                        return gateway_page(res, code);
                    }
                },
            };
            let fail = match self.attempt(&mut c, &pre, &mut input, &log, req.method()) {
                Ok(head) => return self.respond(req, res, c, head, log, t0),
                Err(f) => f,
            };
            drop(c);
            let (code, why) = match fail {
                Fail::Stale if !fresh => {
                    fresh = true;
                    continue;
                }
                Fail::Stale => (502, "the server closed the connection".to_owned()),
                Fail::Client(why) => {
                    log.record(
                        log::Level::Warn,
                        &format!("request body could not be read: {why}"),
                    );
                    return page(res, 400, "the request body could not be read");
                }
                Fail::Timeout(why) => (504, why),
                Fail::Busy(why) => (503, why),
                Fail::Bad(why) => (502, why),
            };
            log.record(log::Level::Error, &format!("{}: {why}", self.label));
            note(req, &self.label, code, t0.elapsed());
            return gateway_page(res, code);
        }
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

    fn respond(
        &self,
        req: &Request,
        res: &mut ResponseBuilder,
        c: Conn,
        head: Head,
        log: LogCtx,
        t0: Instant,
    ) -> Outcome {
        match cgi_headers::interpret(head.headers) {
            Reply::Bad(why) => {
                log.record(log::Level::Error, &format!("bad response: {why}"));
                note(req, &self.label, 502, t0.elapsed());
                page(res, 502, "Bad Gateway")
            }
            Reply::Local(location) => {
                note(req, &self.label, 200, t0.elapsed());
                // The rest of this response is not wanted: the connection
                // is closed rather than drained.
                drop(c);
                Outcome::Redirect(location)
            }
            Reply::Respond(status, hs) => {
                note(req, &self.label, status, t0.elapsed());
                res.status(status);
                for (n, v) in &hs {
                    res.header(n, v);
                }
                let mut body = FcgiBody {
                    conn: Some(c),
                    pending: head.rest,
                    pos: 0,
                    reusable: head.reusable,
                    pool: self.pool.clone(),
                    log,
                };
                match body.take_ready() {
                    Ok(Some(all)) => res.body(all),
                    Ok(None) => res.body(Body::Stream(Box::new(body))),
                    Err(e) => {
                        body.log.record(
                            log::Level::Error,
                            &format!("{}: reading the response: {e}", self.label),
                        );
                        return page(res, 502, "Bad Gateway");
                    }
                };
                Outcome::Done
            }
        }
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

/// Responses whose end is already here up to this size are answered
/// from memory (no stream for the core to pull).
const SMALL_BODY: usize = 64 * 1024;

impl FcgiBody {
    /// The whole body, when END_REQUEST is among the bytes that have
    /// already arrived (no waiting: a script that streams keeps
    /// streaming).
    fn take_ready(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            let Some(c) = self.conn.as_mut() else {
                return Ok(None);
            };
            if self.pending.len() - self.pos > SMALL_BODY || !c.readable() {
                return Ok(None);
            }
            match read_record(c)? {
                None => {
                    return Err(io::Error::other(
                        "the FastCGI server closed before END_REQUEST",
                    ));
                }
                Some((record::STDOUT, data)) => self.pending.extend_from_slice(&data),
                Some((record::STDERR, data)) => self.log.stderr(&data),
                Some((record::END_REQUEST, _)) => {
                    if let Some(c) = self.conn.take()
                        && self.reusable
                    {
                        self.pool.put(c);
                    }
                    return Ok(Some(self.pending.split_off(self.pos)));
                }
                Some(_) => {}
            }
        }
    }
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
