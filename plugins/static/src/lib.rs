//! `static`: serves files from the vhost's `document_root` (or the route's
//! `root`), zero-copy: every body is an open file (or file ranges) that the
//! core sends with `sendfile`.
//!
//! A request goes: method check -> path components (dotfiles) -> open
//! beneath the root (`resolve.rs`) -> directory handling (slash redirect,
//! index files, autoindex) -> precompressed sibling -> validators and
//! preconditions (`cond.rs`) -> ranges (`range.rs`) -> body.

mod cache;
pub mod cond;
mod listing;
pub mod range;
pub mod resolve;

use cache::{Meta, Prepared, Src};
use cond::{Conditions, Precondition};
use range::Ranges;
use resolve::Miss;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Duration;
use tamada_sdk::prelude::*;
use tamada_sdk::units::{Secs, Size};

/// How ETags are made.
#[derive(Deserialize, schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum EtagMode {
    /// From size, modification time (with nanoseconds) and inode.
    #[default]
    Metadata,
    /// From a hash of the content, computed once per file identity.
    Content,
    /// No ETag.
    Off,
}

/// Where symlinks may lead.
#[derive(Deserialize, schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Symlinks {
    /// Only to files inside the root.
    #[default]
    Inside,
    /// Anywhere (as nginx's `disable_symlinks off`).
    Follow,
}

/// The route's `options:`.
#[derive(Deserialize, schemars::JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Serve this folder for the route (the rest of the path after the
    /// route prefix maps into it), instead of the vhost's document_root.
    pub root: Option<PathBuf>,
    /// Index files tried for a directory, in order.
    pub index: Vec<String>,
    /// List directories without an index file.
    pub autoindex: bool,
    /// Serve dotfiles and dot-directories (`.well-known/` always is).
    pub dotfiles: bool,
    pub symlinks: Symlinks,
    /// Served (200) for a missing path whose last segment has no extension.
    pub fallback: Option<String>,
    /// Pages served with their original status, e.g. `404: /404.html`.
    pub error_pages: BTreeMap<u16, String>,
    /// Extension (with or without dot) -> Content-Type, over the table.
    pub mime_types: BTreeMap<String, String>,
    pub etag: EtagMode,
    /// Serve `x.br` / `x.gz` beside `x` to clients that accept them.
    pub precompressed: bool,
    /// A Cache-Control value for every file.
    pub cache_control: Option<String>,
    /// Most ranges in one request (after coalescing); more -> 200.
    pub max_ranges: usize,
    /// The open-file cache.
    pub cache: CacheConfig,
}

/// The `cache:` option: the open-file cache of each event loop.
#[derive(Deserialize, schemars::JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// How long what a path resolved to is trusted before it is looked
    /// at again (a file replaced on disk is served within this time).
    pub valid: Secs,
    /// Most paths remembered per event loop; 0 turns the cache off.
    pub entries: usize,
    /// Files up to this size are kept in memory.
    pub max_file_size: Size,
    /// Memory for file contents per event loop.
    pub memory: Size,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            valid: Secs(Duration::from_secs(1)),
            entries: 10_000,
            max_file_size: Size(64 << 10),
            memory: Size(64 << 20),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: None,
            index: vec!["index.html".into()],
            autoindex: false,
            dotfiles: false,
            symlinks: Symlinks::Inside,
            fallback: None,
            error_pages: BTreeMap::new(),
            mime_types: BTreeMap::new(),
            etag: EtagMode::Metadata,
            precompressed: false,
            cache_control: None,
            max_ranges: 32,
            cache: CacheConfig::default(),
        }
    }
}

/// The handler of one route.
pub struct Static {
    cfg: Config,
    /// Absolute root when `root` is set (alias semantics).
    root: Option<PathBuf>,
    mime: HashMap<String, String>,
    /// Content hashes by file identity (dev, inode, size, mtime ns).
    hashes: Mutex<HashMap<(u64, u64, u64, i128), String>>,
    /// Root descriptors reused for a second.
    roots: resolve::Roots,
    /// Names this instance in the open-file cache.
    id: u64,
    limits: cache::Limits,
}

/// Builds the handler from its options.
pub fn new(options: &Options) -> Result<Static, String> {
    let cfg: Config = options.parse()?;
    let root = match &cfg.root {
        Some(r) => {
            let base = options
                .vhost()
                .config_file()
                .parent()
                .map(Path::to_owned)
                .unwrap_or_default();
            let abs = if r.is_absolute() {
                r.clone()
            } else {
                base.join(r)
            };
            if !abs.is_dir() {
                return Err(format!("root: {} is not a folder", abs.display()));
            }
            Some(abs)
        }
        None => None,
    };
    for (code, page) in &cfg.error_pages {
        if !(400..=599).contains(code) {
            return Err(format!(
                "error_pages: {code} is not an error status (400-599)"
            ));
        }
        if !page.starts_with('/') {
            return Err(format!("error_pages: {code}: `{page}` must start with /"));
        }
    }
    if let Some(f) = &cfg.fallback
        && !f.starts_with('/')
    {
        return Err(format!("fallback: `{f}` must start with /"));
    }
    if cfg.index.iter().any(|i| i.contains('/') || i.is_empty()) {
        return Err("index: names must be plain file names".into());
    }
    let mime = cfg
        .mime_types
        .iter()
        .map(|(k, v)| (k.trim_start_matches('.').to_ascii_lowercase(), v.clone()))
        .collect();
    let limits = cache::Limits {
        valid: cfg.cache.valid.0,
        entries: cfg.cache.entries,
        max_file_size: cfg.cache.max_file_size.0,
        max_bytes: cfg.cache.memory.0,
    };
    Ok(Static {
        cfg,
        root,
        mime,
        hashes: Mutex::new(HashMap::new()),
        roots: resolve::Roots::default(),
        id: cache::next_id(),
        limits,
    })
}

tamada_sdk::export_plugin!(
    name: "static",
    new: new,
    roles: [Handler],
    schema: |_| tamada_sdk::schema::of::<Config>(),
);

/// A file chosen to be served.
struct Chosen {
    src: Src,
    md: Meta,
    /// Name used for the content type (without `.gz`/`.br`).
    type_name: String,
    encoding: Option<&'static str>,
    /// Whether compressed siblings exist (Vary: Accept-Encoding).
    vary: bool,
}

/// The body for `len` bytes from `offset` of a file.
fn body(src: Src, offset: u64, len: u64) -> Body {
    match src {
        Src::Fd(file) => Body::File { file, offset, len },
        Src::Mem(m) => Body::Bytes(m.bytes[offset as usize..(offset + len) as usize].to_vec()),
    }
}

/// Whether a content coding is acceptable (q > 0) per Accept-Encoding.
fn accepts(ae: Option<&str>, coding: &str) -> bool {
    let Some(ae) = ae else { return false };
    let mut star = None;
    for item in ae.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q = parts
            .find_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .map(|q| q.trim().parse::<f32>().unwrap_or(0.0))
            })
            .unwrap_or(1.0);
        if name.eq_ignore_ascii_case(coding) {
            return q > 0.0;
        }
        if name == "*" {
            star = Some(q > 0.0);
        }
    }
    star.unwrap_or(false)
}

impl Static {
    fn root<'a>(&'a self, req: &Request<'a>) -> &'a Path {
        self.root
            .as_deref()
            .unwrap_or_else(|| req.vhost().document_root())
    }

    /// The path inside the root for this request.
    fn rel<'a>(&self, req: &Request<'a>) -> &'a str {
        if self.root.is_some() {
            req.rest()
        } else {
            req.path()
        }
    }

    fn content_type(&self, name: &str) -> String {
        let ext = Path::new(name)
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .unwrap_or_default();
        if let Some(t) = self.mime.get(&ext) {
            return t.clone();
        }
        let m = mime_guess::from_ext(&ext)
            .first_raw()
            .unwrap_or("application/octet-stream");
        let text = m.starts_with("text/")
            || matches!(
                m,
                "application/javascript" | "application/json" | "application/xml" | "image/svg+xml"
            );
        if text {
            format!("{m}; charset=utf-8")
        } else {
            m.to_owned()
        }
    }

    fn etag(&self, c: &Chosen) -> Option<String> {
        let md = &c.md;
        match self.cfg.etag {
            EtagMode::Off => None,
            EtagMode::Metadata => Some(format!(
                "\"{:x}-{:x}.{:x}-{:x}\"",
                md.size, md.mtime, md.mtime_nsec, md.ino
            )),
            EtagMode::Content => {
                let key = (md.dev, md.ino, md.size, md.mtime_ns());
                if let Some(h) = self.hashes.lock().ok().and_then(|m| m.get(&key).cloned()) {
                    return Some(h);
                }
                let mut h = xxhash_rust::xxh3::Xxh3::new();
                match &c.src {
                    Src::Mem(m) => h.update(&m.bytes),
                    Src::Fd(file) => {
                        use std::io::Read;
                        // Read with pread-like offsets: the descriptor's
                        // position stays at 0 for the core's sendfile.
                        let mut f = file.try_clone().ok()?;
                        let mut buf = vec![0u8; 64 * 1024];
                        use std::io::{Seek, SeekFrom};
                        f.seek(SeekFrom::Start(0)).ok()?;
                        loop {
                            let n = f.read(&mut buf).ok()?;
                            if n == 0 {
                                break;
                            }
                            h.update(&buf[..n]);
                        }
                    }
                }
                let tag = format!("\"{:032x}\"", h.digest128());
                if let Ok(mut m) = self.hashes.lock() {
                    if m.len() > 100_000 {
                        m.clear();
                    }
                    m.insert(key, tag.clone());
                }
                Some(tag)
            }
        }
    }

    /// Whether the content hash of this file identity is known.
    fn hashed(&self, md: &Meta) -> bool {
        let key = (md.dev, md.ino, md.size, md.mtime_ns());
        self.hashes.lock().is_ok_and(|m| m.contains_key(&key))
    }

    /// Opens a path (relative to the root) as a regular file or a
    /// directory; on an event loop through its open-file cache.
    fn open(&self, req: &Request, root: &Path, rel: &str) -> Result<(Src, Meta), Miss> {
        let open = || {
            let f = resolve::open_beneath(
                &self.roots,
                root,
                rel,
                self.cfg.symlinks == Symlinks::Follow,
            )?;
            let md = f.metadata().map_err(|_| Miss::NotFound)?;
            if md.is_file() || md.is_dir() {
                Ok((f, md))
            } else {
                Err(Miss::Forbidden)
            }
        };
        if req.is_inline() && self.limits.entries > 0 {
            cache::open(self.id, rel, &self.limits, open)
        } else {
            open().map(|(f, md)| (Src::Fd(f), Meta::of(&md)))
        }
    }

    fn choose(&self, req: &Request, root: &Path, rel: &str, src: Src, md: Meta) -> Chosen {
        let type_name = rel.rsplit('/').next().unwrap_or(rel).to_owned();
        if !self.cfg.precompressed {
            return Chosen {
                src,
                md,
                type_name,
                encoding: None,
                vary: false,
            };
        }
        let ae = req.header("accept-encoding");
        let mut vary = false;
        for (ext, coding) in [("br", "br"), ("gz", "gzip")] {
            let sib = format!("{rel}.{ext}");
            if let Ok((f, m)) = self.open(req, root, &sib)
                && !m.is_dir
            {
                vary = true;
                if accepts(ae, coding) {
                    return Chosen {
                        src: f,
                        md: m,
                        type_name,
                        encoding: Some(coding),
                        vary: true,
                    };
                }
            }
        }
        Chosen {
            src,
            md,
            type_name,
            encoding: None,
            vary,
        }
    }

    /// The validators and type of a chosen file: made once for a file in
    /// the open-file cache, else for this request.
    fn prepared(&self, c: &Chosen) -> Rc<Prepared> {
        let make = || {
            Rc::new(Prepared {
                type_name: c.type_name.as_str().into(),
                etag: self.etag(c),
                last_modified: httpdate::fmt_http_date(c.md.modified()),
                content_type: self.content_type(&c.type_name),
            })
        };
        match &c.src {
            Src::Mem(m) => {
                let p = m.prepared.get_or_init(make);
                if *p.type_name == *c.type_name {
                    p.clone()
                } else {
                    make()
                }
            }
            Src::Fd(_) => make(),
        }
    }

    fn common_headers(&self, res: &mut ResponseBuilder, c: &Chosen, p: &Prepared) {
        if let Some(e) = &p.etag {
            res.header("etag", e);
        }
        res.header("last-modified", &p.last_modified);
        if let Some(cc) = &self.cfg.cache_control {
            res.header("cache-control", cc);
        }
        if c.vary {
            res.header("vary", "Accept-Encoding");
        }
    }

    /// Serves a chosen file with validators, preconditions and ranges.
    fn serve_file(
        &self,
        req: &Request,
        res: &mut ResponseBuilder,
        c: Chosen,
        status: u16,
    ) -> Outcome {
        if self.cfg.etag == EtagMode::Content && req.is_inline() && !self.hashed(&c.md) {
            // Hashing reads the whole file: not on the event loop.
            return req.defer();
        }
        let prep = self.prepared(&c);
        let etag = &prep.etag;
        let size = c.md.size;
        let ctype = &prep.content_type;
        if status != 200 {
            // An error page: no conditionals, no ranges.
            res.status(status).header("content-type", ctype);
            self.common_headers(res, &c, &prep);
            res.body(body(c.src, 0, size));
            return Outcome::Done;
        }
        let range_hdr = if req.method() == "GET" {
            req.header("range")
        } else {
            None
        };
        let conds = Conditions {
            if_match: req.header("if-match"),
            if_none_match: req.header("if-none-match"),
            if_modified_since: req.header("if-modified-since"),
            if_unmodified_since: req.header("if-unmodified-since"),
            if_range: req.header("if-range"),
            has_range: range_hdr.is_some(),
            get_or_head: true,
        };
        match cond::evaluate(&conds, etag.as_deref(), c.md.modified()) {
            Precondition::NotModified => {
                res.status(304);
                self.common_headers(res, &c, &prep);
                Outcome::Done
            }
            Precondition::Failed => {
                res.status(412)
                    .header("content-type", "text/plain; charset=utf-8")
                    .body("412 Precondition Failed\n");
                Outcome::Done
            }
            Precondition::Proceed { range_ok } => {
                res.header("accept-ranges", "bytes");
                if let Some(enc) = c.encoding {
                    res.header("content-encoding", enc);
                }
                self.common_headers(res, &c, &prep);
                if range_ok && let Some(r) = range_hdr {
                    match range::parse(r, size, self.cfg.max_ranges) {
                        Ranges::Ignore => {}
                        Ranges::Unsatisfiable => {
                            res.status(416)
                                .header("content-range", format!("bytes */{size}"))
                                .header("content-type", "text/plain; charset=utf-8")
                                .body("416 Range Not Satisfiable\n");
                            return Outcome::Done;
                        }
                        Ranges::Parts(parts) if parts.len() == 1 => {
                            let (a, b) = parts[0];
                            res.status(206)
                                .header("content-type", ctype)
                                .header("content-range", format!("bytes {a}-{b}/{size}"))
                                .body(body(c.src, a, b - a + 1));
                            return Outcome::Done;
                        }
                        Ranges::Parts(parts) => {
                            let boundary = format!(
                                "tamada-{:016x}",
                                xxhash_rust::xxh3::xxh3_64(
                                    format!("{etag:?}{size}{:?}", std::time::SystemTime::now())
                                        .as_bytes()
                                )
                            );
                            let mut seg = Segments::new();
                            let (id, mem) = match c.src {
                                Src::Fd(f) => (Some(seg.file(f)), None),
                                Src::Mem(m) => (None, Some(m)),
                            };
                            for (a, b) in parts {
                                seg.bytes(format!(
                                    "\r\n--{boundary}\r\nContent-Type: {ctype}\r\nContent-Range: bytes {a}-{b}/{size}\r\n\r\n"
                                ));
                                match (id, &mem) {
                                    (Some(id), _) => {
                                        seg.range(id, a, b - a + 1);
                                    }
                                    (None, Some(m)) => {
                                        seg.bytes(&m.bytes[a as usize..=b as usize]);
                                    }
                                    (None, None) => {}
                                }
                            }
                            seg.bytes(format!("\r\n--{boundary}--\r\n"));
                            res.status(206)
                                .header(
                                    "content-type",
                                    format!("multipart/byteranges; boundary={boundary}"),
                                )
                                .body(seg);
                            return Outcome::Done;
                        }
                    }
                }
                res.status(200)
                    .header("content-type", ctype)
                    .body(body(c.src, 0, size));
                Outcome::Done
            }
        }
    }

    /// Answers an error status, with the configured page if any.
    fn error(&self, req: &Request, res: &mut ResponseBuilder, status: u16) -> Outcome {
        if let Some(page) = self.cfg.error_pages.get(&status) {
            let root = self.root(req);
            let rel = page.trim_start_matches('/');
            if let Ok((f, md)) = self.open(req, root, rel)
                && !md.is_dir
            {
                let c = Chosen {
                    src: f,
                    md,
                    type_name: rel.to_owned(),
                    encoding: None,
                    vary: false,
                };
                return self.serve_file(req, res, c, status);
            }
            log::warn!(
                "error page {page} for {status} is missing under {}",
                root.display()
            );
        }
        let reason = match status {
            403 => "Forbidden",
            404 => "Not Found",
            _ => "Error",
        };
        res.status(status)
            .header("content-type", "text/html; charset=utf-8")
            .body(format!(
                "<!DOCTYPE html>\n<html><head><title>{status} {reason}</title></head>\n<body><h1>{status} {reason}</h1></body></html>\n"
            ));
        Outcome::Done
    }

    fn not_found(&self, req: &Request, res: &mut ResponseBuilder, rel: &str) -> Outcome {
        if let Some(fb) = &self.cfg.fallback {
            let last = rel.rsplit('/').next().unwrap_or("");
            if !last.contains('.') {
                let root = self.root(req);
                let frel = fb.trim_start_matches('/');
                if let Ok((f, md)) = self.open(req, root, frel)
                    && !md.is_dir
                {
                    let c = self.choose(req, root, frel, f, md);
                    return self.serve_file(req, res, c, 200);
                }
            }
        }
        self.error(req, res, 404)
    }
}

impl Handler for Static {
    /// Opening and sending files is fast local work (SDK 1.1): it runs on
    /// the event loop; a content hash not yet computed is deferred.
    fn placement(&self) -> Placement {
        Placement::Inline
    }
    fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
        let method = req.method();
        if method != "GET" && method != "HEAD" {
            res.status(405)
                .header("allow", "GET, HEAD")
                .header("content-type", "text/plain; charset=utf-8")
                .body("405 Method Not Allowed\n");
            return Outcome::Done;
        }
        let root = self.root(req);
        let rel_full = self.rel(req);
        let rel = rel_full.trim_start_matches('/');
        if resolve::check_components(rel, self.cfg.dotfiles).is_err() {
            return self.error(req, res, 404);
        }
        let (file, md) = match self.open(req, root, rel) {
            Ok(x) => x,
            Err(Miss::NotFound) => return self.not_found(req, res, rel),
            Err(Miss::Forbidden) => return self.error(req, res, 403),
        };
        if md.is_dir {
            if !rel_full.ends_with('/') && !rel_full.is_empty() {
                // 301 to the slash form, relative to the Host the client
                // used. SECURITY: built from the normalised path (never
                // the raw target, whose `//host/..` would make an open
                // redirect), re-encoded, with the query kept.
                let mut loc = listing::encode_path(req.path());
                loc.push('/');
                if let Some(q) = req.query() {
                    loc.push('?');
                    loc.push_str(q);
                }
                res.status(301)
                    .header("location", &loc)
                    .header("content-type", "text/html; charset=utf-8")
                    .body(format!(
                        "<!DOCTYPE html>\n<html><head><title>301 Moved Permanently</title></head>\n<body><h1>301 Moved Permanently</h1><p><a href=\"{}\">{}</a></p></body></html>\n",
                        listing::html_escape(&loc),
                        listing::html_escape(&loc)
                    ));
                return Outcome::Done;
            }
            drop(file);
            for idx in &self.cfg.index {
                let irel = format!(
                    "{rel}{}{idx}",
                    if rel.is_empty() || rel.ends_with('/') {
                        ""
                    } else {
                        "/"
                    }
                );
                match self.open(req, root, &irel) {
                    Ok((f, m)) if !m.is_dir => {
                        let c = self.choose(req, root, &irel, f, m);
                        return self.serve_file(req, res, c, 200);
                    }
                    Err(Miss::Forbidden) => return self.error(req, res, 403),
                    _ => {}
                }
            }
            if self.cfg.autoindex {
                let dir = root.join(rel);
                return match listing::render(&dir, req.path(), self.cfg.dotfiles) {
                    Ok(html) => {
                        res.status(200)
                            .header("content-type", "text/html; charset=utf-8")
                            .header("last-modified", httpdate::fmt_http_date(md.modified()))
                            .body(html);
                        Outcome::Done
                    }
                    Err(_) => self.error(req, res, 403),
                };
            }
            return self.error(req, res, 403);
        }
        let c = self.choose(req, root, rel, file, md);
        self.serve_file(req, res, c, 200)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tamada_sdk::testing::TestRequest;

    #[test]
    fn serves_a_file_with_validators() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.txt"), "hello").unwrap();
        let req = TestRequest::get("/a.txt").document_root(d.path().to_str().unwrap());
        let h = new(&req.options("")).unwrap();
        let out = req.run(&h);
        assert_eq!(out.response.get_status(), 200);
        assert_eq!(
            out.response.get_header("content-type"),
            Some(&b"text/plain; charset=utf-8"[..])
        );
        assert!(out.response.get_header("etag").is_some());
        assert_eq!(out.body_bytes(), b"hello");
    }

    #[test]
    fn accept_encoding() {
        assert!(accepts(Some("gzip, br;q=0.5"), "br"));
        assert!(!accepts(Some("gzip, br;q=0"), "br"));
        assert!(accepts(Some("*"), "gzip"));
        assert!(!accepts(None, "gzip"));
        assert!(!accepts(Some("identity"), "gzip"));
    }
}
