//! Answering with a file: validators and preconditions, ranges, the
//! headers every file answer carries, and the error pages.

use crate::cache::Src;
use crate::cond::{Conditions, Precondition};
use crate::range::Ranges;
use crate::{Chosen, EtagMode, Static, body, cond, range};
use tamada_sdk::prelude::*;

impl Static {
    /// Serves a chosen file with validators, preconditions and ranges.
    pub(crate) fn serve_file(
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
    pub(crate) fn error(&self, req: &Request, res: &mut ResponseBuilder, status: u16) -> Outcome {
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

    pub(crate) fn not_found(&self, req: &Request, res: &mut ResponseBuilder, rel: &str) -> Outcome {
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
