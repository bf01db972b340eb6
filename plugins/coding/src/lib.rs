//! Content codings as tamada's `static` (precompressed files) and
//! `compress` (on the fly) plugins choose them: one negotiation, so that
//! a client gets the same choice from either (RFC 9110 section 12.5.3),
//! and one way of naming a compressed representation's entity tag; and
//! media type patterns as `compress` and `headers` match them.

/// A content coding tamada produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    Zstd = 0,
    Br = 1,
    Gzip = 2,
}

impl Coding {
    /// Every coding, in the default server order (smallest output
    /// first for text: zstd and brotli beat gzip).
    pub const ALL: [Coding; 3] = [Coding::Zstd, Coding::Br, Coding::Gzip];

    /// The token of `Content-Encoding` and `Accept-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }

    /// The file extension of a precompressed sibling (`x.css.zst`).
    pub fn extension(self) -> &'static str {
        match self {
            Coding::Zstd => "zst",
            Coding::Br => "br",
            Coding::Gzip => "gz",
        }
    }

    /// The coding a token names (`x-gzip` is gzip, RFC 9110 8.4.1.3).
    pub fn parse(token: &str) -> Option<Coding> {
        let t = token.trim();
        if t.eq_ignore_ascii_case("zstd") {
            Some(Coding::Zstd)
        } else if t.eq_ignore_ascii_case("br") {
            Some(Coding::Br)
        } else if t.eq_ignore_ascii_case("gzip") || t.eq_ignore_ascii_case("x-gzip") {
            Some(Coding::Gzip)
        } else {
            None
        }
    }
}

/// An `Accept-Encoding` field, parsed: the weights of the codings tamada
/// knows, of `*` and of `identity` (no allocation: it runs for every
/// answer a filter may compress).
#[derive(Debug, Default, Clone, Copy)]
pub struct Accept {
    /// Weights in thousandths, `None` when not named: zstd, br, gzip
    /// (the order of [`Coding::ALL`]), `*`, `identity`.
    q: [Option<u16>; 5],
    /// The field was present.
    present: bool,
}

impl Accept {
    /// Parses the field's value (`None`: the request has none).
    pub fn parse(value: Option<&str>) -> Accept {
        let Some(v) = value else {
            return Accept::default();
        };
        let mut a = Accept {
            q: [None; 5],
            present: true,
        };
        for item in v.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim();
            if token.is_empty() {
                continue;
            }
            let mut q = 1000;
            for p in parts {
                let p = p.trim();
                if let Some(val) = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) {
                    // A malformed weight makes the entry unusable.
                    q = parse_q(val.trim()).unwrap_or(0);
                }
            }
            let slot = if token == "*" {
                3
            } else if token.eq_ignore_ascii_case("identity") {
                4
            } else {
                match Coding::parse(token) {
                    Some(c) => c as usize,
                    None => continue,
                }
            };
            // Named twice: the higher weight.
            a.q[slot] = Some(a.q[slot].map_or(q, |old| old.max(q)));
        }
        a
    }

    /// The weight (0 to 1000) the client gives a coding: its own entry,
    /// else `*`'s, else 0. Without the field no coding is used (servers
    /// send identity then, as nginx and Apache do).
    pub fn weight(&self, c: Coding) -> u16 {
        self.q[c as usize].or(self.q[3]).unwrap_or(0)
    }

    /// Whether the client refuses the uncompressed representation
    /// (`identity;q=0`, or `*;q=0` with no entry for identity).
    pub fn refuses_identity(&self) -> bool {
        self.present && self.q[4].or(self.q[3]) == Some(0)
    }

    /// The codings the client accepts among `order`, best first: by its
    /// weights, ties broken by the server's order.
    pub fn preference(&self, order: &[Coding]) -> Vec<Coding> {
        let mut v: Vec<(usize, Coding, u16)> = order
            .iter()
            .enumerate()
            .map(|(i, &c)| (i, c, self.weight(c)))
            .filter(|(_, _, q)| *q > 0)
            .collect();
        v.sort_by_key(|&(i, _, q)| (std::cmp::Reverse(q), i));
        v.into_iter().map(|(_, c, _)| c).collect()
    }

    /// The best coding among `order`, if the client accepts one.
    pub fn choose(&self, order: &[Coding]) -> Option<Coding> {
        let mut best: Option<(Coding, u16)> = None;
        for &c in order {
            let q = self.weight(c);
            if q > 0 && best.is_none_or(|(_, b)| q > b) {
                best = Some((c, q));
            }
        }
        best.map(|(c, _)| c)
    }
}

/// A q-value (`0`, `0.5`, `1.000`) in thousandths.
fn parse_q(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += (b - b'0') as u16 * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The entity tag of the `c`-compressed representation of the one
/// tagged `etag`: `"abc"` becomes `"abc-gzip"`, `W/"abc"` `W/"abc-gzip"`
/// (as Apache and Caddy name them). `None` for a malformed tag.
pub fn tag_for(etag: &str, c: Coding) -> Option<String> {
    let e = etag.trim();
    let (weak, rest) = match e.strip_prefix("W/") {
        Some(r) => ("W/", r),
        None => ("", e),
    };
    let inner = rest.strip_prefix('"')?.strip_suffix('"')?;
    Some(format!("{weak}\"{inner}-{}\"", c.token()))
}

/// The tag `tag` would be without the suffix of coding `c`, when it has
/// it (`"abc-gzip"` gives `"abc"`).
pub fn untag(tag: &str, c: Coding) -> Option<String> {
    let e = tag.trim();
    let (weak, rest) = match e.strip_prefix("W/") {
        Some(r) => ("W/", r),
        None => ("", e),
    };
    let inner = rest.strip_prefix('"')?.strip_suffix('"')?;
    let base = inner.strip_suffix(c.token())?.strip_suffix('-')?;
    Some(format!("{weak}\"{base}\""))
}

/// Whether `tag` is a compressed representation's tag, of any coding.
pub fn is_coded_tag(tag: &str) -> bool {
    Coding::ALL.iter().any(|&c| untag(tag, c).is_some())
}

/// Splits an `If-None-Match` list into its tags (commas inside quotes
/// kept).
pub fn tags(list: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, b) in list.bytes().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                out.push(list[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(list[start..].trim());
    out.retain(|t| !t.is_empty());
    out
}

/// The media type of a `Content-Type` value, lower case, without
/// parameters (`Text/HTML; charset=utf-8` gives `text/html`).
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether a media type pattern (lower case; `*` matches any run:
/// `text/*`, `application/*+json`) matches an [`essence`].
pub fn type_matches(pattern: &str, essence: &str) -> bool {
    fn glob(pat: &[u8], m: &[u8]) -> bool {
        match pat.split_first() {
            None => m.is_empty(),
            Some((b'*', rest)) => (0..=m.len()).any(|i| glob(rest, &m[i..])),
            Some((c, rest)) => m.first() == Some(c) && glob(rest, &m[1..]),
        }
    }
    glob(pattern.as_bytes(), essence.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_and_server_order() {
        let a = Accept::parse(Some("gzip, deflate, br;q=1.0, zstd;q=0.5"));
        assert_eq!(a.choose(&Coding::ALL), Some(Coding::Br));
        let a = Accept::parse(Some("gzip, br, zstd"));
        assert_eq!(a.choose(&Coding::ALL), Some(Coding::Zstd));
        assert_eq!(
            a.choose(&[Coding::Gzip, Coding::Br]),
            Some(Coding::Gzip),
            "ties go to the server's order"
        );
        let a = Accept::parse(Some("br;q=0, gzip;q=0.001"));
        assert_eq!(a.preference(&Coding::ALL), vec![Coding::Gzip]);
        let a = Accept::parse(Some("*;q=0.2, gzip;q=0"));
        assert_eq!(a.choose(&[Coding::Gzip, Coding::Br]), Some(Coding::Br));
        assert_eq!(Accept::parse(None).choose(&Coding::ALL), None);
        assert_eq!(Accept::parse(Some("")).choose(&Coding::ALL), None);
        assert_eq!(Accept::parse(Some("identity")).choose(&Coding::ALL), None);
        assert_eq!(Accept::parse(Some("gzip;q=2")).choose(&Coding::ALL), None);
        assert_eq!(
            Accept::parse(Some("x-gzip")).choose(&Coding::ALL),
            Some(Coding::Gzip)
        );
    }

    #[test]
    fn media_type_patterns() {
        assert_eq!(essence("Text/HTML; charset=utf-8"), "text/html");
        assert!(type_matches("text/*", "text/css"));
        assert!(type_matches("application/*+json", "application/ld+json"));
        assert!(!type_matches("application/*+json", "application/json"));
        assert!(type_matches("*", "x/y"));
        assert!(!type_matches("text/*", "image/png"));
    }

    #[test]
    fn identity_refused() {
        assert!(Accept::parse(Some("gzip, identity;q=0")).refuses_identity());
        assert!(Accept::parse(Some("gzip, *;q=0")).refuses_identity());
        assert!(!Accept::parse(Some("gzip, *;q=0, identity")).refuses_identity());
        assert!(!Accept::parse(Some("gzip")).refuses_identity());
        assert!(!Accept::parse(None).refuses_identity());
    }

    #[test]
    fn tags_of_compressed_representations() {
        assert_eq!(
            tag_for("\"5f-1a\"", Coding::Gzip).as_deref(),
            Some("\"5f-1a-gzip\"")
        );
        assert_eq!(
            tag_for("W/\"x\"", Coding::Zstd).as_deref(),
            Some("W/\"x-zstd\"")
        );
        assert_eq!(
            untag("\"5f-1a-gzip\"", Coding::Gzip).as_deref(),
            Some("\"5f-1a\"")
        );
        assert_eq!(untag("\"5f-1a-gzip\"", Coding::Br), None);
        assert_eq!(untag("\"5f-1a\"", Coding::Gzip), None);
        assert!(is_coded_tag("W/\"a-br\""));
        assert_eq!(
            tags("\"a,b\", W/\"c\" ,\"d\""),
            vec!["\"a,b\"", "W/\"c\"", "\"d\""]
        );
    }
}
