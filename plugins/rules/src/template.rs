//! Templates of the `redirect` plugin's `to:`: literal text with
//! `$scheme`, `$host`, `$request_uri`, `$path`, `$query`, `$is_args`
//! (`?` when there is a query), `$1`...`$9` (the captures of `match:`),
//! `${name}` for a name followed by a letter, and `$$` for a `$`.
//! Checked when the options are read: an unknown name is an error there,
//! never at run time.

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use tamada_sdk::prelude::*;

/// What a decoded path needs encoded to go back into a URL (a path
/// segment's delimiters and what is never allowed).
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'%')
    .add(b'\\')
    .add(b'^')
    .add(b'|');

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Scheme,
    Host,
    RequestUri,
    Path,
    Query,
    IsArgs,
    Capture(usize),
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text`; `captures` is how many groups `match:` has (0
    /// without one), so `$3` with two groups is an error here.
    pub fn parse(text: &str, captures: usize) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            lit.push_str(&rest[..at]);
            rest = &rest[at + 1..];
            if let Some(r) = rest.strip_prefix('$') {
                lit.push('$');
                rest = r;
                continue;
            }
            let (name, after) = if let Some(r) = rest.strip_prefix('{') {
                let end = r
                    .find('}')
                    .ok_or_else(|| format!("`${{` without a closing `}}` in `{text}`"))?;
                (&r[..end], &r[end + 1..])
            } else if rest.starts_with(|c: char| c.is_ascii_digit()) {
                (&rest[..1], &rest[1..])
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            };
            let part = match name {
                "scheme" => Part::Scheme,
                "host" => Part::Host,
                "request_uri" => Part::RequestUri,
                "path" | "uri" => Part::Path,
                "query" | "args" => Part::Query,
                "is_args" => Part::IsArgs,
                n if n.len() == 1 && n.as_bytes()[0].is_ascii_digit() => {
                    let i = (n.as_bytes()[0] - b'0') as usize;
                    if i == 0 || i > captures {
                        return Err(if captures == 0 {
                            format!(
                                "`${i}` in `{text}`: there is no `match:` pattern to capture it"
                            )
                        } else {
                            format!("`${i}` in `{text}`: `match:` has only {captures} group(s)")
                        });
                    }
                    Part::Capture(i)
                }
                "" => {
                    return Err(format!(
                        "a `$` without a name in `{text}` (write `$$` for a dollar sign)"
                    ));
                }
                n => {
                    return Err(format!(
                        "unknown `${n}` in `{text}`: use $scheme, $host, $request_uri, $path, $query, $is_args or $1-$9"
                    ));
                }
            };
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(part);
            rest = after;
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template { parts })
    }

    /// The text for a request; `caps` are the captures of `match:`
    /// (decoded path pieces, encoded again here).
    pub fn expand(&self, req: &Request, caps: &[Option<&str>]) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Scheme => out.push_str(req.scheme()),
                Part::Host => out.push_str(req.host()),
                Part::RequestUri => out.push_str(req.target()),
                Part::Path => out.extend(utf8_percent_encode(req.path(), PATH)),
                Part::Query => out.push_str(req.query().unwrap_or("")),
                Part::IsArgs => {
                    if req.query().is_some() {
                        out.push('?')
                    }
                }
                Part::Capture(i) => {
                    if let Some(Some(c)) = caps.get(*i) {
                        out.extend(utf8_percent_encode(c, PATH));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tamada_sdk::testing::TestRequest;

    #[test]
    fn names_captures_and_dollars() {
        let t = Template::parse("https://$host$request_uri", 0).unwrap();
        let out = TestRequest::get("/a%20b?x=1")
            .vhost("www.example.com")
            .with(|r| t.expand(r, &[]));
        assert_eq!(out, "https://www.example.com/a%20b?x=1");
        let t = Template::parse("/new/$1${path}x$$ $is_args$query", 1).unwrap();
        let out = TestRequest::get("/old/a b?q=2").with(|r| t.expand(r, &[None, Some("a b")]));
        assert_eq!(out, "/new/a%20b/old/a%20bx$ ?q=2");
    }

    #[test]
    fn unknown_names_and_missing_groups_are_errors() {
        let e = Template::parse("/$hots/", 0).unwrap_err();
        assert!(e.contains("unknown `$hots`"), "{e}");
        let e = Template::parse("/$2", 1).unwrap_err();
        assert!(e.contains("only 1 group"), "{e}");
        let e = Template::parse("/$1", 0).unwrap_err();
        assert!(e.contains("no `match:`"), "{e}");
        assert!(Template::parse("/${path", 0).is_err());
        assert!(Template::parse("/a$", 0).is_err());
    }
}
