//! `redirect`: an access rule (SDK 1.2) that sends a redirect or a fixed
//! answer, as nginx's `return` and `rewrite ... redirect|permanent`.
//!
//! ```yaml
//! access:
//!   - path: /
//!     handler: redirect
//!     options: { hosts: [www.example.com], to: "https://example.com$request_uri", status: 301 }
//!   - path: /old/
//!     handler: redirect
//!     options: { match: "^/old/(.*)$", to: "/new/$1$is_args$query", status: 308 }
//!   - path: /private/
//!     handler: redirect
//!     options: { status: 403, body: "Not here.\n" }
//! ```
//!
//! Options:
//! - `to`: the `Location`, a template (`plugins/rules/src/template.rs`: `$scheme`, `$host`,
//!   `$request_uri`, `$path`, `$query`, `$is_args`, `$1`-`$9`, `$$`);
//! - `status`: 301, 302 (the default with `to`), 303, 307 or 308 with
//!   `to`; any final status (200-599) without it, a fixed answer;
//! - `match`: a regular expression on the normalised path; the rule acts
//!   only when it matches, and its groups are `$1`...;
//! - `hosts`: act only for these Host names; `scheme`: only for `http` or
//!   `https` requests (per-path HTTPS redirects);
//! - `body` and `content_type`: the answer's body (default: a short page
//!   with the link, as nginx's, or the status line for a fixed answer).
//!
//! A request the conditions do not select passes to the next rule.

use serde::Deserialize;
use tamada_rules::{Pattern, Template};
use tamada_sdk::access::{Access, Verdict};
use tamada_sdk::prelude::*;

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The `Location` template (`$scheme`, `$host`, `$request_uri`,
    /// `$path`, `$query`, `$is_args`, `$1`-`$9`, `$$`).
    to: Option<String>,
    /// 301, 302 (default), 303, 307, 308 with `to`; any final status
    /// without it (a fixed answer, as nginx's `return 403`).
    status: Option<u16>,
    /// A regular expression on the normalised path: the rule acts only
    /// when it matches; its groups are `$1`...
    #[serde(rename = "match")]
    pattern: Option<String>,
    /// Act only for these Host names (lowercase, no port).
    hosts: Option<Vec<String>>,
    /// Act only for `http` or `https` requests.
    scheme: Option<String>,
    /// The answer's body.
    body: Option<String>,
    /// The body's type (default `text/html; charset=utf-8` for redirects,
    /// `text/plain; charset=utf-8` for fixed answers).
    content_type: Option<String>,
}

/// One rule.
#[derive(Debug)]
pub struct Redirect {
    to: Option<Template>,
    status: u16,
    pattern: Pattern,
    hosts: Vec<String>,
    scheme: Option<String>,
    body: Option<String>,
    content_type: Option<String>,
}

impl Access for Redirect {
    fn check(&self, req: &Request, res: &mut ResponseBuilder) -> Verdict {
        if !self.hosts.is_empty() && !self.hosts.iter().any(|h| h == req.host()) {
            return Verdict::Pass;
        }
        if self.scheme.as_deref().is_some_and(|s| s != req.scheme()) {
            return Verdict::Pass;
        }
        let Some(caps) = self.pattern.captures(req.path()) else {
            return Verdict::Pass;
        };
        res.status(self.status);
        match &self.to {
            Some(t) => {
                let location = t.expand(req, &caps);
                let body = match &self.body {
                    Some(b) => b.clone(),
                    None => format!(
                        "<html><head><title>{s}</title></head><body><p>Moved to <a href=\"{l}\">{l}</a>.</p></body></html>\n",
                        s = self.status,
                        l = html_escape(&location)
                    ),
                };
                res.header("location", &location).header(
                    "content-type",
                    self.content_type
                        .as_deref()
                        .unwrap_or("text/html; charset=utf-8"),
                );
                res.body(body);
            }
            None => {
                let body = match &self.body {
                    Some(b) => b.clone(),
                    None => format!("{}\n", self.status),
                };
                res.header(
                    "content-type",
                    self.content_type
                        .as_deref()
                        .unwrap_or("text/plain; charset=utf-8"),
                )
                .body(body);
            }
        }
        Verdict::Answer
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Builds a rule from its options.
pub fn new(options: &Options) -> Result<Redirect, String> {
    let c: Config = options.parse()?;
    let pattern = Pattern::parse(c.pattern.as_deref())?;
    let groups = pattern.groups();
    let to = match &c.to {
        Some(t) => Some(Template::parse(t, groups).map_err(|e| format!("to: {e}"))?),
        None => None,
    };
    let status = match (c.status, &to) {
        (None, Some(_)) => 302,
        (Some(s @ (301 | 302 | 303 | 307 | 308)), Some(_)) => s,
        (Some(s), Some(_)) => {
            return Err(format!(
                "status: {s} with `to`: a redirect is 301, 302, 303, 307 or 308"
            ));
        }
        (None, None) => {
            return Err("give `to` (a redirect) or `status` (a fixed answer)".into());
        }
        (Some(s), None) if (200..=599).contains(&s) && !(300..400).contains(&s) => s,
        (Some(s), None) => {
            return Err(format!(
                "status: {s} without `to`: a fixed answer is 200-299 or 400-599 (a redirect needs `to`)"
            ));
        }
    };
    if let Some(s) = &c.scheme
        && s != "http"
        && s != "https"
    {
        return Err(format!("scheme: `{s}` is neither http nor https"));
    }
    if let Some(v) = &c.content_type
        && v.bytes().any(|b| b.is_ascii_control())
    {
        return Err("content_type: control characters are not allowed".into());
    }
    Ok(Redirect {
        to,
        status,
        pattern,
        hosts: c
            .hosts
            .unwrap_or_default()
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        scheme: c.scheme,
        body: c.body,
        content_type: c.content_type,
    })
}

tamada_sdk::export_plugin!(
    name: "redirect",
    access: new,
    schema: || tamada_sdk::schema::of::<Config>(),
);

#[cfg(test)]
mod tests {
    use super::*;
    use tamada_sdk::testing::TestRequest;

    fn rule(yaml: &str) -> Result<Redirect, String> {
        new(&TestRequest::get("/").options(yaml))
    }

    #[test]
    fn a_template_redirect_with_captures() {
        let r = rule("{ match: '^/old/(.*)$', to: '/new/$1$is_args$query', status: 308 }").unwrap();
        let v = TestRequest::get("/old/a/b?x=1").check(&r);
        assert_eq!(v.verdict, Verdict::Answer);
        assert_eq!(v.response.get_status(), 308);
        assert_eq!(
            v.response.get_header("location"),
            Some(&b"/new/a/b?x=1"[..])
        );
        // Not matching: the next rule.
        assert_eq!(TestRequest::get("/other").check(&r).verdict, Verdict::Pass);
    }

    #[test]
    fn hosts_scheme_and_fixed_answers() {
        let r = rule(
            "{ hosts: [www.example.com], to: 'https://example.com$request_uri', status: 301 }",
        )
        .unwrap();
        assert_eq!(TestRequest::get("/x").check(&r).verdict, Verdict::Pass);
        let v = TestRequest::get("/x?y").vhost("www.example.com").check(&r);
        assert_eq!(
            v.response.get_header("location"),
            Some(&b"https://example.com/x?y"[..])
        );
        let r = rule("{ status: 403, body: nope }").unwrap();
        let v = TestRequest::get("/").check(&r);
        assert_eq!(v.response.get_status(), 403);
        assert!(matches!(v.response.get_body(), Body::Bytes(b) if b.as_slice() == b"nope"));
        let r = rule("{ scheme: https, status: 410 }").unwrap();
        assert_eq!(TestRequest::get("/").check(&r).verdict, Verdict::Pass);
    }

    #[test]
    fn bad_options_say_what_is_wrong() {
        assert!(
            rule("{ to: /x, status: 200 }")
                .unwrap_err()
                .contains("301, 302")
        );
        assert!(rule("{ status: 301 }").unwrap_err().contains("needs `to`"));
        assert!(rule("{}").unwrap_err().contains("give `to`"));
        assert!(
            rule("{ match: '(', to: /x }")
                .unwrap_err()
                .contains("not a valid regular expression")
        );
        assert!(
            rule("{ to: /$hots }")
                .unwrap_err()
                .contains("unknown `$hots`")
        );
        assert!(
            rule("{ to: /x, scheme: ftp }")
                .unwrap_err()
                .contains("scheme")
        );
    }
}
