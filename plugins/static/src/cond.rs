//! Validators and conditional requests (RFC 9110 sections 8.8 and 13).

use std::time::{SystemTime, UNIX_EPOCH};

/// The result of evaluating the preconditions.
#[derive(Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Go on (and honour Range, if `range_ok`).
    Proceed { range_ok: bool },
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// One entity-tag.
#[derive(Debug, PartialEq, Eq)]
struct Tag<'a> {
    weak: bool,
    opaque: &'a str,
}

/// Parses an `If-Match`/`If-None-Match` list. `None` for `*`.
fn parse_list(v: &str) -> Option<Vec<Tag<'_>>> {
    if v.trim() == "*" {
        return None;
    }
    let mut out = Vec::new();
    let mut rest = v;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            break;
        }
        let (weak, r) = match rest.strip_prefix("W/") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let Some(r) = r.strip_prefix('"') else {
            // Not an entity-tag: skip to the next comma.
            rest = r.split_once(',').map(|x| x.1).unwrap_or("");
            continue;
        };
        let Some(end) = r.find('"') else { break };
        out.push(Tag {
            weak,
            opaque: &r[..end],
        });
        rest = &r[end + 1..];
    }
    Some(out)
}

/// `etag` is the full quoted value (`"..."`).
fn opaque(etag: &str) -> &str {
    etag.trim_start_matches("W/").trim_matches('"')
}

/// Strong comparison: both strong and equal.
fn matches_strong(list: &str, etag: &str) -> bool {
    match parse_list(list) {
        None => true,
        Some(tags) => tags.iter().any(|t| !t.weak && t.opaque == opaque(etag)),
    }
}

/// Weak comparison: equal opaque tags.
fn matches_weak(list: &str, etag: &str) -> bool {
    match parse_list(list) {
        None => true,
        Some(tags) => tags.iter().any(|t| t.opaque == opaque(etag)),
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The request's conditional headers.
#[derive(Default)]
pub struct Conditions<'a> {
    pub if_match: Option<&'a str>,
    pub if_none_match: Option<&'a str>,
    pub if_modified_since: Option<&'a str>,
    pub if_unmodified_since: Option<&'a str>,
    pub if_range: Option<&'a str>,
    pub has_range: bool,
    pub get_or_head: bool,
}

/// RFC 9110 section 13.2.2, in its order.
pub fn evaluate(c: &Conditions, etag: Option<&str>, mtime: SystemTime) -> Precondition {
    // 1. If-Match.
    if let Some(im) = c.if_match {
        let ok = etag.is_some_and(|e| matches_strong(im, e)) || im.trim() == "*";
        if !ok {
            return Precondition::Failed;
        }
    } else if let Some(ius) = c.if_unmodified_since {
        // 2. If-Unmodified-Since (ignored when not a valid date).
        if let Ok(d) = httpdate::parse_http_date(ius)
            && secs(mtime) > secs(d)
        {
            return Precondition::Failed;
        }
    }
    // 3. If-None-Match.
    if let Some(inm) = c.if_none_match {
        let m = match etag {
            Some(e) => matches_weak(inm, e),
            None => inm.trim() == "*",
        };
        if m {
            return if c.get_or_head {
                Precondition::NotModified
            } else {
                Precondition::Failed
            };
        }
    } else if let Some(ims) = c.if_modified_since
        && c.get_or_head
        && let Ok(d) = httpdate::parse_http_date(ims)
        && secs(mtime) <= secs(d)
    {
        // 4. If-Modified-Since.
        return Precondition::NotModified;
    }
    // 5. If-Range decides whether Range applies.
    let range_ok = match (c.has_range, c.if_range) {
        (false, _) => false,
        (true, None) => true,
        (true, Some(ir)) => {
            let ir = ir.trim();
            if ir.starts_with('"') || ir.starts_with("W/") {
                // Strong comparison; a weak tag never matches.
                !ir.starts_with("W/") && etag.is_some_and(|e| opaque(e) == opaque(ir))
            } else {
                httpdate::parse_http_date(ir).is_ok_and(|d| secs(d) == secs(mtime))
            }
        }
    };
    Precondition::Proceed { range_ok }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn order_and_comparisons() {
        let e = Some("\"abc\"");
        let m = t(1_000_000_000);
        let date = httpdate::fmt_http_date(m);
        let base = || Conditions {
            get_or_head: true,
            ..Default::default()
        };
        let c = |c: Conditions| evaluate(&c, e, m);
        let old = httpdate::fmt_http_date(t(999_999_000));
        assert_eq!(
            c(Conditions {
                if_none_match: Some("\"x\", W/\"abc\""),
                ..base()
            }),
            Precondition::NotModified
        );
        assert_eq!(
            c(Conditions {
                if_none_match: Some("*"),
                ..base()
            }),
            Precondition::NotModified
        );
        assert_eq!(
            c(Conditions {
                if_none_match: Some("\"x\""),
                ..base()
            }),
            Precondition::Proceed { range_ok: false }
        );
        assert_eq!(
            c(Conditions {
                if_match: Some("W/\"abc\""),
                ..base()
            }),
            Precondition::Failed
        );
        assert_eq!(
            c(Conditions {
                if_match: Some("\"abc\""),
                ..base()
            }),
            Precondition::Proceed { range_ok: false }
        );
        assert_eq!(
            c(Conditions {
                if_modified_since: Some(&date),
                ..base()
            }),
            Precondition::NotModified
        );
        // If-None-Match wins over If-Modified-Since.
        assert_eq!(
            c(Conditions {
                if_none_match: Some("\"other\""),
                if_modified_since: Some(&date),
                ..base()
            }),
            Precondition::Proceed { range_ok: false }
        );
        assert_eq!(
            c(Conditions {
                if_unmodified_since: Some(&old),
                ..base()
            }),
            Precondition::Failed
        );
        assert_eq!(
            c(Conditions {
                if_unmodified_since: Some("garbage"),
                ..base()
            }),
            Precondition::Proceed { range_ok: false }
        );
        assert_eq!(
            c(Conditions {
                has_range: true,
                if_range: Some("\"abc\""),
                ..base()
            }),
            Precondition::Proceed { range_ok: true }
        );
        assert_eq!(
            c(Conditions {
                has_range: true,
                if_range: Some("\"zzz\""),
                ..base()
            }),
            Precondition::Proceed { range_ok: false }
        );
        assert_eq!(
            c(Conditions {
                has_range: true,
                if_range: Some(&date),
                ..base()
            }),
            Precondition::Proceed { range_ok: true }
        );
    }
}
