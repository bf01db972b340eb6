//! The script's response header block (RFC 3875 section 6): lines ending
//! in CRLF or a bare LF, up to an empty line; then what they mean
//! (`Status:`, `Location:`, `Content-Type:`).

/// Header lines as (name, value), in the script's order.
pub type Headers = Vec<(String, Vec<u8>)>;

/// The longest header block a script may send before its body.
pub const MAX_HEAD: usize = 64 * 1024;

/// Result of scanning the bytes read so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// No empty line yet.
    Incomplete,
    /// The header lines, and how many bytes the block took (the body starts
    /// there).
    Done(Headers, usize),
    /// Not a CGI header block.
    Bad(String),
}

/// Scans `buf` for a complete header block.
pub fn scan(buf: &[u8]) -> Scan {
    let mut headers = Vec::new();
    let mut pos = 0;
    loop {
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            // A partial line: check what we can so garbage fails early.
            let partial = &buf[pos..];
            if let Some(colon) = partial.iter().position(|&b| b == b':') {
                if !is_token(&partial[..colon]) {
                    return Scan::Bad(bad_line(partial));
                }
            } else if !partial.iter().all(|&b| is_tchar(b) || b == b'\r') {
                return Scan::Bad(bad_line(partial));
            }
            return Scan::Incomplete;
        };
        let mut line = &buf[pos..pos + nl];
        pos += nl + 1;
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        if line.is_empty() {
            return Scan::Done(headers, pos);
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Scan::Bad(bad_line(line));
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if !is_token(name) {
            return Scan::Bad(bad_line(line));
        }
        let value = trim(value);
        if value.iter().any(|&b| b == b'\r' || b == 0) {
            return Scan::Bad(bad_line(line));
        }
        // is_token: ASCII only, so this is valid UTF-8.
        let name = String::from_utf8_lossy(name).into_owned();
        headers.push((name, value.to_vec()));
    }
}

/// What the script asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Local redirect (`Location: /path` without `Status:`): the core
    /// serves that path instead, as GET.
    Local(String),
    /// A response: status and the headers to send (without `Status:`).
    Respond(u16, Headers),
    /// The script broke the protocol: 502.
    Bad(String),
}

/// Interprets a scanned header block.
pub fn interpret(mut headers: Headers) -> Reply {
    let get =
        |hs: &[(String, Vec<u8>)], n: &str| hs.iter().position(|(k, _)| k.eq_ignore_ascii_case(n));
    let status = match get(&headers, "status") {
        None => None,
        Some(i) => {
            let (_, v) = headers.remove(i);
            let code = v
                .get(..3)
                .filter(|d| d.iter().all(u8::is_ascii_digit))
                .filter(|_| v.len() == 3 || v[3] == b' ' || v[3] == b'\t')
                .and_then(|d| std::str::from_utf8(d).ok()?.parse::<u16>().ok());
            match code {
                Some(c) if (200..=599).contains(&c) => Some(c),
                _ => {
                    return Reply::Bad(format!(
                        "bad Status header `{}`",
                        String::from_utf8_lossy(&v)
                    ));
                }
            }
        }
    };
    if get(&headers, "status").is_some() {
        return Reply::Bad("more than one Status header".into());
    }
    if let Some(i) = get(&headers, "location") {
        let loc = &headers[i].1;
        let local = loc.first() == Some(&b'/') && loc.get(1) != Some(&b'/');
        if local && status.is_none() {
            return match String::from_utf8(loc.clone()) {
                Ok(l) => Reply::Local(l),
                Err(_) => Reply::Bad("Location is not UTF-8".into()),
            };
        }
        // A client redirect (RFC 3875 6.2.3, 6.2.4).
        return Reply::Respond(status.unwrap_or(302), headers);
    }
    let status = status.unwrap_or(200);
    // A bodiless status needs no type.
    if get(&headers, "content-type").is_none() && !matches!(status, 204 | 304) {
        return Reply::Bad("no Content-Type (nor Location) header".into());
    }
    Reply::Respond(status, headers)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', r @ ..] = v {
        v = r;
    }
    while let [r @ .., b' ' | b'\t'] = v {
        v = r;
    }
    v
}

fn bad_line(line: &[u8]) -> String {
    let shown: String = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
    format!("not a header line: {shown:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn crlf_and_bare_lf_give_the_same_headers() {
        let want = h(&[("Content-Type", "text/plain"), ("X-A", "1")]);
        let crlf = b"Content-Type: text/plain\r\nX-A:  1 \r\n\r\nbody";
        let lf = b"Content-Type: text/plain\nX-A:1\n\nbody";
        let mixed = b"Content-Type: text/plain\r\nX-A: 1\n\r\nbody";
        assert_eq!(scan(crlf), Scan::Done(want.clone(), crlf.len() - 4));
        assert_eq!(scan(lf), Scan::Done(want.clone(), lf.len() - 4));
        assert_eq!(scan(mixed), Scan::Done(want, mixed.len() - 4));
    }

    #[test]
    fn split_anywhere_is_incomplete_until_the_empty_line() {
        let all = b"Status: 201 Created\r\nContent-Type: text/plain\r\n\r\n";
        for i in 0..all.len() {
            assert_eq!(scan(&all[..i]), Scan::Incomplete, "cut at {i}");
        }
        assert!(matches!(scan(all), Scan::Done(_, n) if n == all.len()));
    }

    #[test]
    fn garbage_is_bad_early() {
        assert!(matches!(scan(b"<html>hello"), Scan::Bad(_)));
        assert!(matches!(
            scan(b"Content-Type: x\nno colon here\n\n"),
            Scan::Bad(_)
        ));
        assert!(matches!(scan(b"Bad Name: x\n\n"), Scan::Bad(_)));
    }

    #[test]
    fn status_location_and_type() {
        assert_eq!(
            interpret(h(&[("Content-Type", "text/plain")])),
            Reply::Respond(200, h(&[("Content-Type", "text/plain")]))
        );
        assert_eq!(
            interpret(h(&[("Status", "404 Not Found"), ("Content-Type", "a/b")])),
            Reply::Respond(404, h(&[("Content-Type", "a/b")]))
        );
        assert_eq!(
            interpret(h(&[("Location", "/other?x=1")])),
            Reply::Local("/other?x=1".into())
        );
        assert_eq!(
            interpret(h(&[("Location", "http://example.com/")])),
            Reply::Respond(302, h(&[("Location", "http://example.com/")]))
        );
        assert_eq!(
            interpret(h(&[("Location", "//evil.example/")])),
            Reply::Respond(302, h(&[("Location", "//evil.example/")]))
        );
        assert_eq!(
            interpret(h(&[("Status", "301 Moved"), ("Location", "/x")])),
            Reply::Respond(301, h(&[("Location", "/x")]))
        );
        assert_eq!(
            interpret(h(&[("Status", "204")])),
            Reply::Respond(204, vec![])
        );
        assert!(matches!(interpret(h(&[("X-A", "1")])), Reply::Bad(_)));
        assert!(matches!(
            interpret(h(&[("Status", "abc"), ("Content-Type", "a/b")])),
            Reply::Bad(_)
        ));
        assert!(matches!(
            interpret(h(&[("Status", "100 Continue"), ("Content-Type", "a/b")])),
            Reply::Bad(_)
        ));
    }
}
