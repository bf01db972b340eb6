//! `rewrite`: an access rule (SDK 1.2) that serves a request under another
//! path, internally (the client sees no redirect), as nginx's `rewrite
//! ... last` and `try_files`. After a rewrite the vhost's access rules
//! and routing run again for the new path; method and body stay.
//!
//! ```yaml
//! access:
//!   # /user/42 is served as /profile.php?id=42 (plus the client's query)
//!   - path: /user/
//!     handler: rewrite
//!     options: { match: "^/user/([0-9]+)$", to: "/profile.php?id=$1" }
//!   # a single-page application: existing files, else /index.html
//!   - path: /
//!     handler: rewrite
//!     options: { try_files: ["$path", "$path/index.html"], fallback: /index.html }
//! ```
//!
//! Options:
//! - `match` and `to`: a regular expression on the normalised path and
//!   the new path (and query) for what it matches, a template
//!   (`plugins/rules/src/template.rs`: `$path`, `$query`, `$1`...); a
//!   path it does not match passes unchanged;
//! - `query`: what becomes of the client's query: `append` (the default
//!   when `to` has a `?`: the new one, then `&` and the client's, as
//!   nginx), `keep` (the default without `?`), `replace` (the new one
//!   only);
//! - `try_files` and `fallback`: templates tried in order, each naming a
//!   file under the document root (one ending in `/`, a folder); the
//!   first that exists is served (a rewrite, unless it is the path
//!   itself), else `fallback` (which may carry a query:
//!   `/index.php?$query`, a PHP front controller through FastCGI).

use percent_encoding::percent_decode_str;
use serde::Deserialize;
use std::path::Path;
use tamada_rules::{Pattern, Template};
use tamada_sdk::access::{Access, Verdict};
use tamada_sdk::prelude::*;

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    /// A regular expression on the normalised path; its groups are `$1`...
    #[serde(rename = "match")]
    pattern: Option<String>,
    /// The new path (and `?query`), a template.
    to: Option<String>,
    /// `append`, `keep` or `replace`: the client's query after a rewrite.
    query: Option<QueryMode>,
    /// Templates of files under the document root, tried in order.
    try_files: Option<Vec<String>>,
    /// Served when no file of `try_files` exists (a template).
    fallback: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum QueryMode {
    Append,
    Keep,
    Replace,
}

/// One rule.
#[derive(Debug)]
pub struct Rewrite {
    pattern: Pattern,
    to: Option<(Template, QueryMode)>,
    try_files: Vec<Template>,
    fallback: Option<Template>,
}

/// `target` with the client's query as `mode` says.
fn with_query(target: String, mode: QueryMode, req: &Request) -> String {
    let client = req.query().filter(|q| !q.is_empty());
    match (mode, target.split_once('?'), client) {
        (QueryMode::Replace, _, _) | (_, _, None) => target,
        (QueryMode::Keep, Some((p, _)), Some(q)) => format!("{p}?{q}"),
        (QueryMode::Keep, None, Some(q)) => format!("{target}?{q}"),
        (QueryMode::Append, Some((_, "")), Some(q)) => format!("{target}{q}"),
        (QueryMode::Append, Some(_), Some(q)) => format!("{target}&{q}"),
        (QueryMode::Append, None, Some(q)) => format!("{target}?{q}"),
    }
}

/// Whether the (encoded) path of `target` names an existing file under
/// `root` (a folder when it ends in `/`); never outside it.
fn exists(root: &Path, target: &str) -> bool {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let Ok(decoded) = percent_decode_str(path).decode_utf8() else {
        return false;
    };
    if decoded.split('/').any(|s| s == "..") || decoded.contains('\0') {
        return false;
    }
    let p = root.join(decoded.trim_start_matches('/'));
    match std::fs::metadata(&p) {
        Ok(m) if decoded.ends_with('/') => m.is_dir(),
        Ok(m) => m.is_file(),
        Err(_) => false,
    }
}

impl Access for Rewrite {
    fn check(&self, req: &Request, _res: &mut ResponseBuilder) -> Verdict {
        let Some(caps) = self.pattern.captures(req.path()) else {
            return Verdict::Pass;
        };
        if let Some((t, mode)) = &self.to {
            return Verdict::Rewrite(with_query(t.expand(req, &caps), *mode, req));
        }
        let root = Path::new(req.vhost().document_root());
        for t in &self.try_files {
            let target = t.expand(req, &caps).replace("//", "/");
            if exists(root, &target) {
                let path = target.split_once('?').map_or(target.as_str(), |(p, _)| p);
                let same = percent_decode_str(path)
                    .decode_utf8()
                    .is_ok_and(|p| p == req.path());
                return if same {
                    Verdict::Pass
                } else {
                    Verdict::Rewrite(with_query(target, QueryMode::Keep, req))
                };
            }
        }
        match &self.fallback {
            Some(f) => Verdict::Rewrite(f.expand(req, &caps)),
            None => Verdict::Pass,
        }
    }
}

/// Builds a rule from its options.
pub fn new(options: &Options) -> Result<Rewrite, String> {
    let c: Config = options.parse()?;
    let pattern = Pattern::parse(c.pattern.as_deref())?;
    let groups = pattern.groups();
    let local = |key: &str, t: &str| -> Result<Template, String> {
        if !t.starts_with('/') && !t.starts_with('$') {
            return Err(format!("{key}: `{t}` must be a local path (start with /)"));
        }
        Template::parse(t, groups).map_err(|e| format!("{key}: {e}"))
    };
    let to = match &c.to {
        Some(t) => {
            let mode = c.query.unwrap_or(if t.contains('?') {
                QueryMode::Append
            } else {
                QueryMode::Keep
            });
            Some((local("to", t)?, mode))
        }
        None => None,
    };
    let try_files = c
        .try_files
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, t)| local(&format!("try_files[{i}]"), t))
        .collect::<Result<Vec<_>, _>>()?;
    let fallback = match &c.fallback {
        Some(f) => Some(local("fallback", f)?),
        None => None,
    };
    match (&to, try_files.is_empty(), &fallback) {
        (None, true, None) => {
            return Err(
                "give `to` (with an optional `match`) or `try_files` (and `fallback`)".into(),
            );
        }
        (Some(_), false, _) | (Some(_), _, Some(_)) => {
            return Err("`to` and `try_files`/`fallback` are two rules: write two entries".into());
        }
        _ => {}
    }
    if c.query.is_some() && to.is_none() {
        return Err("query: goes with `to`".into());
    }
    Ok(Rewrite {
        pattern,
        to,
        try_files,
        fallback,
    })
}

tamada_sdk::export_plugin!(
    name: "rewrite",
    access: new,
    schema: || tamada_sdk::schema::of::<Config>(),
);

#[cfg(test)]
mod tests {
    use super::*;
    use tamada_sdk::testing::TestRequest;

    fn rule(yaml: &str) -> Result<Rewrite, String> {
        new(&TestRequest::get("/").options(yaml))
    }

    #[test]
    fn match_to_and_the_query() {
        let r = rule("{ match: '^/user/([0-9]+)$', to: '/profile.php?id=$1' }").unwrap();
        let v = TestRequest::get("/user/42?tab=x").check(&r).verdict;
        assert_eq!(v, Verdict::Rewrite("/profile.php?id=42&tab=x".into()));
        assert_eq!(
            TestRequest::get("/user/me").check(&r).verdict,
            Verdict::Pass
        );
        let r = rule("{ match: '^/a/(.*)$', to: '/b/$1' }").unwrap();
        let v = TestRequest::get("/a/c?q=1").check(&r).verdict;
        assert_eq!(v, Verdict::Rewrite("/b/c?q=1".into()));
        let r = rule("{ match: '^/a/(.*)$', to: '/b/$1?x=1', query: replace }").unwrap();
        let v = TestRequest::get("/a/c?q=1").check(&r).verdict;
        assert_eq!(v, Verdict::Rewrite("/b/c?x=1".into()));
    }

    #[test]
    fn try_files_then_the_fallback() {
        let dir = std::env::temp_dir().join(format!("tamada-rewrite-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("docs")).unwrap();
        std::fs::write(dir.join("app.js"), "x").unwrap();
        std::fs::write(dir.join("docs/index.html"), "x").unwrap();
        let r = rule("{ try_files: ['$path', '$path/index.html'], fallback: '/index.php?$query' }")
            .unwrap();
        let root = dir.to_str().unwrap();
        let check = |t: &str| TestRequest::get(t).document_root(root).check(&r).verdict;
        assert_eq!(check("/app.js"), Verdict::Pass);
        assert_eq!(check("/docs"), Verdict::Rewrite("/docs/index.html".into()));
        assert_eq!(
            check("/route/x?a=1"),
            Verdict::Rewrite("/index.php?a=1".into())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_options() {
        assert!(rule("{}").unwrap_err().contains("give"));
        assert!(
            rule("{ to: 'http://x/' }")
                .unwrap_err()
                .contains("local path")
        );
        assert!(
            rule("{ to: /x, try_files: [/y] }")
                .unwrap_err()
                .contains("two rules")
        );
        assert!(
            rule("{ match: '[', to: /x }")
                .unwrap_err()
                .contains("regular expression")
        );
        assert!(
            rule("{ try_files: ['$nope'] }")
                .unwrap_err()
                .contains("unknown")
        );
    }
}
