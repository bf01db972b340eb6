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
pub mod config;
mod listing;
pub mod range;
pub mod resolve;
mod serve;

use cache::{Meta, Prepared, Src};
use resolve::Miss;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Mutex;
use tamada_sdk::prelude::*;

pub use config::{CacheConfig, Config, EtagMode, Symlinks};

/// The handler of one route.
pub struct Static {
    pub(crate) cfg: Config,
    /// Absolute root when `root` is set (alias semantics).
    pub(crate) root: Option<PathBuf>,
    pub(crate) mime: HashMap<String, String>,
    /// Content hashes by file identity (dev, inode, size, mtime ns).
    pub(crate) hashes: Mutex<HashMap<(u64, u64, u64, i128), String>>,
    /// Root descriptors reused for a second.
    pub(crate) roots: resolve::Roots,
    /// Names this instance in the open-file cache.
    pub(crate) id: u64,
    pub(crate) limits: cache::Limits,
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
        // PERF: the cached bytes themselves, not a copy per response.
        Src::Mem(m) => {
            Body::shared_range(m.bytes.clone(), offset as usize..(offset + len) as usize)
        }
    }
}

/// Whether a content coding is acceptable (q > 0) per Accept-Encoding.
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
        // The client's weights, ties to the server's order (the one
        // `compress` uses): the best sibling that exists wins.
        let accept = tamada_coding::Accept::parse(req.header("accept-encoding"));
        let wanted = accept.preference(&tamada_coding::Coding::ALL);
        let mut vary = false;
        for coding in wanted.iter().copied().chain(
            tamada_coding::Coding::ALL
                .into_iter()
                .filter(|c| !wanted.contains(c)),
        ) {
            let sib = format!("{rel}.{}", coding.extension());
            if let Ok((f, m)) = self.open(req, root, &sib)
                && !m.is_dir
            {
                vary = true;
                if wanted.contains(&coding) {
                    return Chosen {
                        src: f,
                        md: m,
                        type_name,
                        encoding: Some(coding.token()),
                        vary: true,
                    };
                }
                // Not accepted: it only says the answer varies.
                break;
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
    fn precompressed_siblings_by_weight_then_server_order() {
        let d = tempfile::tempdir().unwrap();
        for (name, body) in [
            ("a.css", "plain"),
            ("a.css.gz", "gz"),
            ("a.css.br", "br"),
            ("a.css.zst", "zst"),
        ] {
            std::fs::write(d.path().join(name), body).unwrap();
        }
        let root = d.path().to_str().unwrap().to_owned();
        let h = new(&TestRequest::get("/").options("precompressed: true")).unwrap();
        for (ae, body, coding) in [
            (Some("gzip, br, zstd"), "zst", Some("zstd")),
            (Some("gzip, br;q=0.9"), "gz", Some("gzip")),
            (Some("br;q=0.5, gzip;q=0.4"), "br", Some("br")),
            (Some("zstd;q=0, *"), "br", Some("br")),
            (Some("identity"), "plain", None),
            (None, "plain", None),
        ] {
            let mut req = TestRequest::get("/a.css").document_root(root.clone());
            if let Some(ae) = ae {
                req = req.header("accept-encoding", ae);
            }
            let mut out = req.run(&h);
            assert_eq!(out.read_body(), body.as_bytes(), "{ae:?}");
            assert_eq!(
                out.response.get_header_str("content-encoding"),
                coding,
                "{ae:?}"
            );
            assert_eq!(
                out.response.get_header_str("vary"),
                Some("Accept-Encoding"),
                "{ae:?}"
            );
        }
    }
}
