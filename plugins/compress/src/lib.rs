//! `compress`: a response filter (SDK 1.2) that compresses answers on
//! the fly with zstd, brotli or gzip, whichever the client's
//! `Accept-Encoding` weighs highest (ties go to the server's order), and
//! keeps compressed copies of static files in a bounded cache.
//!
//! ```yaml
//! filters:
//!   - handler: compress
//!     options:
//!       encodings: [zstd, br, gzip]     # the server's order (the default)
//!       levels: { gzip: 5, br: 4, zstd: 3 }
//!       min_length: 256
//!       cache: { dir: /var/cache/tamada/compress, max_size: 256MiB }
//! ```
//!
//! What is compressed: status 200 answers of a listed MIME type
//! (`types`, text, JSON, JavaScript, XML, SVG, wasm and fonts by
//! default) of at least `min_length` bytes (or of unknown length), to
//! GET and POST alike, unless the answer already has a
//! `Content-Encoding` (a precompressed file) or says
//! `Cache-Control: no-transform`. Such answers get `Vary:
//! Accept-Encoding` whatever the client asked; a compressed one gets
//! `Content-Encoding`, loses `Content-Length` (it is chunked on
//! HTTP/1.1) and `Accept-Ranges`, and its ETag gets the coding as a
//! suffix (`"5f-1a-gzip"`, as Apache and Caddy), so that a cache never
//! mixes representations: the request side turns that tag in
//! `If-None-Match` back into the file's (the 304 then carries the
//! compressed tag again), and drops a `Range` whose `If-Range` names a
//! compressed tag (the whole body is sent: a compressed body cannot be
//! ranged). A HEAD gets the fields a GET would.
//!
//! Streams are compressed as they come: each piece a handler gives (a
//! CGI script's write, a proxied chunk) is flushed through the
//! compressor, so nothing waits for the next one. `text/event-stream` is
//! left alone unless `types` names it.
//!
//! `identity;q=0` (or `*;q=0`) with a coding the client accepts: the
//! answer is compressed whatever its type and length; with none, it is
//! sent as it is (as nginx, Apache and Caddy do) rather than refused.

mod cache;
mod encoder;

use encoder::Encoder;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use tamada_coding::{Accept, Coding};
use tamada_sdk::filter::{Action, BodyFilter, BodyKind, Filter, RequestEdit, ResponseHead};
use tamada_sdk::prelude::*;
use tamada_sdk::units::Size;

/// The levels by default: measured in docs/plugins/compress.md (the
/// knee of size against CPU on text, and what nginx, Caddy and
/// Cloudflare use on the fly).
pub const DEFAULT_LEVELS: Levels = Levels {
    gzip: 5,
    br: 4,
    zstd: 3,
};

/// The MIME types compressed by default (`*` in a type matches any
/// run of characters: `text/*`, `application/*+json`).
pub const DEFAULT_TYPES: &[&str] = &[
    "text/*",
    "application/json",
    "application/*+json",
    "application/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "application/xml",
    "application/*+xml",
    "image/svg+xml",
    "application/wasm",
    "application/x-ndjson",
    "application/vnd.ms-fontobject",
    "font/ttf",
    "font/otf",
    "font/collection",
    "image/x-icon",
    "image/vnd.microsoft.icon",
    "image/bmp",
];

/// Compression levels per coding.
#[derive(Debug, Clone, Copy)]
pub struct Levels {
    pub gzip: u32,
    pub br: u32,
    pub zstd: u32,
}

impl Levels {
    pub fn of(&self, c: Coding) -> u32 {
        match c {
            Coding::Gzip => self.gzip,
            Coding::Br => self.br,
            Coding::Zstd => self.zstd,
        }
    }
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// The codings used, in the server's order of preference among those
    /// a client weighs equally (default `[zstd, br, gzip]`); one left out
    /// is never used.
    encodings: Option<Vec<String>>,
    /// Levels: gzip 1-9 (default 5), br 0-11 (default 4), zstd 1-19
    /// (default 3).
    levels: LevelsConf,
    /// MIME types compressed; replaces the default list. `*` matches any
    /// run of characters (`text/*`, `application/*+json`).
    types: Option<Vec<String>>,
    /// Bodies shorter than this are sent as they are (default 256).
    min_length: Option<Size>,
    /// Compress streams (CGI, proxied answers of unknown length), each
    /// piece flushed as it comes (default true).
    streams: Option<bool>,
    /// The compressed-file cache: `true` (the default folder,
    /// `$CACHE_DIRECTORY/compress` under systemd, else
    /// `/var/cache/tamada/compress`) or `{ dir, max_size }` (default
    /// 256 MiB). Off by default.
    cache: Option<CacheConf>,
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
struct LevelsConf {
    gzip: Option<u32>,
    br: Option<u32>,
    zstd: Option<u32>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
enum CacheConf {
    On(bool),
    At {
        /// The folder (relative: to the vhost file's folder).
        dir: Option<PathBuf>,
        /// Its size limit; the least recently used entries go past it.
        max_size: Option<Size>,
    },
}

/// The `compress` filter of one `filters:` entry.
pub struct Compress {
    order: Vec<Coding>,
    levels: Levels,
    types: Vec<String>,
    min_length: u64,
    streams: bool,
    cache: Option<Arc<cache::Cache>>,
}

fn default_cache_dir() -> PathBuf {
    match std::env::var_os("CACHE_DIRECTORY") {
        // systemd's CacheDirectory=tamada (several folders: the first).
        Some(d) => PathBuf::from(
            d.to_string_lossy()
                .split(':')
                .next()
                .unwrap_or("/var/cache/tamada"),
        )
        .join("compress"),
        None => PathBuf::from("/var/cache/tamada/compress"),
    }
}

/// Builds the filter from its options.
pub fn new(options: &Options) -> Result<Compress, String> {
    let c: Config = options.parse()?;
    let order = match &c.encodings {
        None => Coding::ALL.to_vec(),
        Some(list) => {
            let mut v = Vec::new();
            for (i, t) in list.iter().enumerate() {
                let coding = Coding::parse(t)
                    .ok_or_else(|| format!("encodings[{i}]: `{t}` is not one of zstd, br, gzip"))?;
                if v.contains(&coding) {
                    return Err(format!("encodings[{i}]: `{t}` is listed twice"));
                }
                v.push(coding);
            }
            if v.is_empty() {
                return Err("encodings: lists no coding (remove the filter instead)".into());
            }
            v
        }
    };
    let check = |name: &str, v: Option<u32>, lo: u32, hi: u32, def: u32| match v {
        Some(n) if !(lo..=hi).contains(&n) => Err(format!(
            "levels.{name}: {n} is not a {name} level ({lo} to {hi})"
        )),
        Some(n) => Ok(n),
        None => Ok(def),
    };
    let levels = Levels {
        gzip: check("gzip", c.levels.gzip, 1, 9, DEFAULT_LEVELS.gzip)?,
        br: check("br", c.levels.br, 0, 11, DEFAULT_LEVELS.br)?,
        zstd: check("zstd", c.levels.zstd, 1, 19, DEFAULT_LEVELS.zstd)?,
    };
    let types = match c.types {
        Some(t) => {
            for (i, m) in t.iter().enumerate() {
                if !m.contains('/') || m.contains(';') || m.trim() != m {
                    return Err(format!(
                        "types[{i}]: `{m}` is not a MIME type (type/subtype, `*` for any run)"
                    ));
                }
            }
            t.into_iter().map(|m| m.to_ascii_lowercase()).collect()
        }
        None => DEFAULT_TYPES.iter().map(|s| s.to_string()).collect(),
    };
    let cache = match c.cache {
        None | Some(CacheConf::On(false)) => None,
        Some(CacheConf::On(true)) => Some((default_cache_dir(), None)),
        Some(CacheConf::At { dir, max_size }) => {
            let dir = dir.unwrap_or_else(default_cache_dir);
            let dir = if dir.is_absolute() {
                dir
            } else {
                let base = options.vhost().config_file().parent().map(|p| p.to_owned());
                base.unwrap_or_default().join(dir)
            };
            Some((dir, max_size.map(|s| s.0)))
        }
    };
    let cache = match cache {
        None => None,
        Some((dir, max)) => {
            let max = max.unwrap_or(256 << 20);
            if max < 1 << 20 {
                return Err(format!(
                    "cache.max_size: {max} bytes is too small for a cache (1 MiB at least)"
                ));
            }
            Some(cache::open(&dir, max).map_err(|e| format!("cache.dir: {e}"))?)
        }
    };
    Ok(Compress {
        order,
        levels,
        types,
        min_length: c.min_length.map_or(256, |s| s.0),
        streams: c.streams.unwrap_or(true),
        cache,
    })
}

impl Compress {
    /// Whether a Content-Type is one this filter compresses.
    fn compressible(&self, content_type: Option<&str>) -> bool {
        let Some(ct) = content_type else {
            return false;
        };
        let m = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if m == "text/event-stream" {
            // A live event stream: only when named.
            return self.types.iter().any(|t| t == "text/event-stream");
        }
        self.types
            .iter()
            .any(|t| tamada_coding::type_matches(t, &m))
    }

    fn accept(req: &Request) -> Accept {
        Accept::parse(req.header("accept-encoding"))
    }
}

/// Adds `Accept-Encoding` to a response's `Vary` (unless it is there, or
/// `*`).
fn vary(head: &mut ResponseHead) {
    let cur = head.header_str("vary").map(str::to_owned);
    match cur {
        None => {
            head.set_header("vary", "Accept-Encoding");
        }
        Some(v) => {
            let has = v
                .split(',')
                .any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case("accept-encoding"));
            if !has {
                head.set_header("vary", format!("{v}, Accept-Encoding"));
            }
        }
    }
}

impl Filter for Compress {
    fn request(&self, req: &Request, edit: &mut RequestEdit) {
        let Some(coding) = Self::accept(req).choose(&self.order) else {
            return;
        };
        // The compressed tag in If-None-Match (and If-Match) becomes the
        // file's, so that the handler's comparison matches it (the 304
        // gets it back).
        for field in ["if-none-match", "if-match"] {
            if let Some(value) = req.header(field) {
                let list = tamada_coding::tags(value);
                if list
                    .iter()
                    .any(|t| tamada_coding::untag(t, coding).is_some())
                {
                    let v: Vec<String> = list
                        .iter()
                        .map(|t| tamada_coding::untag(t, coding).unwrap_or_else(|| t.to_string()))
                        .collect();
                    edit.set_header(field, v.join(", "));
                }
            }
        }
        // A range of a compressed representation cannot be served: the
        // whole body goes (RFC 9110 13.1.5 allows ignoring Range).
        if let Some(ir) = req.header("if-range")
            && tamada_coding::is_coded_tag(ir)
        {
            edit.remove_header("range");
            edit.remove_header("if-range");
        }
    }

    fn response(&self, req: &Request, head: &mut ResponseHead) -> Action {
        let status = head.status();
        if status == 304 {
            // The 304 for a compressed tag names that tag again.
            if let (Some(coding), Some(etag), Some(inm)) = (
                Self::accept(req).choose(&self.order),
                head.header_str("etag").map(str::to_owned),
                req.header("if-none-match"),
            ) && let Some(tagged) = tamada_coding::tag_for(&etag, coding)
                && tamada_coding::tags(inm).contains(&tagged.as_str())
            {
                head.set_header("etag", tagged);
                vary(head);
            }
            return Action::Keep;
        }
        if status != 200
            || head.header("content-encoding").is_some()
            || head.header("cache-control").is_some_and(|c| {
                c.windows(12)
                    .any(|w| w.eq_ignore_ascii_case(b"no-transform"))
            })
            || head.body_kind() == BodyKind::Empty
        {
            return Action::Keep;
        }
        let accept = Self::accept(req);
        let forced = accept.refuses_identity();
        let len = head.body_len();
        let stream = head.body_kind() == BodyKind::Stream && len.is_none();
        if !forced
            && (!self.compressible(head.header_str("content-type"))
                || len.is_some_and(|n| n < self.min_length)
                || (stream && !self.streams))
        {
            return Action::Keep;
        }
        vary(head);
        let Some(coding) = accept.choose(&self.order) else {
            return Action::Keep;
        };
        head.set_header("content-encoding", coding.token());
        head.remove_header("accept-ranges");
        if let Some(etag) = head.header_str("etag").map(str::to_owned) {
            match tamada_coding::tag_for(&etag, coding) {
                Some(t) => head.set_header("etag", t),
                None => head.remove_header("etag"),
            };
        }
        let level = self.levels.of(coding);
        let mut store = None;
        if let Some(cache) = &self.cache
            && !head.head_only()
            && let Some(f) = head.body_file()
            && let Ok(md) = f.metadata()
            && f.offset() == 0
            && f.len() == md.len()
        {
            let key = cache::Key::of(&md, coding, level);
            if let Some((file, len)) = cache.get(&key) {
                return Action::Replace(Body::File {
                    file,
                    offset: 0,
                    len,
                });
            }
            store = cache.writer(key).map(|w| (w, req.path().to_owned()));
        }
        Action::Transform(Box::new(Compressing {
            enc: Encoder::new(coding, &self.levels, len),
            store,
        }))
    }
}

/// One body on its way through a compressor (and into the cache).
struct Compressing {
    enc: Encoder,
    /// The cache entry being written, and the path for the log line.
    store: Option<(cache::Writer, String)>,
}

impl Compressing {
    fn tee(&mut self, out: &[u8]) {
        if let Some((w, _)) = &mut self.store {
            w.write(out);
        }
    }
}

impl BodyFilter for Compressing {
    fn data(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let start = out.len();
        self.enc.write(input, out)?;
        self.tee(&out[start..]);
        Ok(())
    }

    fn flush(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let start = out.len();
        self.enc.flush(out)?;
        self.tee(&out[start..]);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let start = out.len();
        self.enc.finish(out)?;
        self.tee(&out[start..]);
        if let Some((w, path)) = self.store.take()
            && let Some(name) = w.commit()
        {
            log::info!("compressed {path} into the cache as {name}");
        }
        Ok(())
    }
}

tamada_sdk::export_plugin!(
    name: "compress",
    filter: new,
    schema: || tamada_sdk::schema::of::<Config>(),
);

#[cfg(test)]
mod tests;
