//! Request heads: bytes in, `Incomplete` or a checked [`RequestHead`] out.
//! Never touches a socket, so it is tested with input split at every byte.
//!
//! The checks follow RFC 9112: Host rules, message framing (section 6.3),
//! persistence (section 9.3), and the limits that map to 414 and 431.

use super::path::{PathError, normalise};
use super::{HttpError, Limits};

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Content-Length.
    Length(u64),
    /// Transfer-Encoding: chunked.
    Chunked,
}

/// A parsed and checked request head (owned).
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    pub version_minor: u8,
    /// The request came over HTTP/2 (`version_minor` is then 1: the
    /// semantics are HTTP/1.1's).
    pub http2: bool,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Normalised path.
    pub path: String,
    /// Raw query without `?`.
    pub query: Option<String>,
    /// Host asked for: lowercased, no port. Empty if none (HTTP/1.0).
    pub host: String,
    pub framing: Framing,
    /// Whether the client wants the connection kept (before the server's say).
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// Bytes of the head on the wire.
    pub head_len: usize,
}

impl RequestHead {
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// Methods of RFC 9110, PATCH (RFC 5789) and WebDAV (RFC 4918, 3253,
/// 5323). Anything else gets 501.
const KNOWN_METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "SEARCH",
    "REPORT",
    "MKACTIVITY",
    "CHECKOUT",
    "MERGE",
    "VERSION-CONTROL",
    "MKWORKSPACE",
    "UPDATE",
    "LABEL",
    "BASELINE-CONTROL",
    "ORDERPATCH",
    "ACL",
    "BIND",
    "UNBIND",
    "REBIND",
    "MKCALENDAR",
];

/// Parses one request head from the front of `buf`.
/// `Ok(None)`: more bytes are needed. `Ok(Some((head, n)))`: `n` bytes made
/// the head (including leading empty lines).
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<RequestHead>, HttpError> {
    // RFC 9112 section 2.2: ignore empty lines before the request line.
    let mut skip = 0;
    while skip < buf.len() && (buf[skip] == b'\r' || buf[skip] == b'\n') {
        skip += 1;
    }
    // At most a few: an endless stream of CRLF must not grow the buffer.
    if skip > 64 {
        return Err(HttpError::close(
            400,
            "too many empty lines before the request line",
        ));
    }
    let buf_all = buf;
    let buf = &buf[skip..];
    if buf.is_empty() {
        return Ok(None);
    }
    // The request line's length, before httparse sees it.
    match memchr(b'\n', buf) {
        Some(i) if i > limits.max_request_line => {
            return Err(HttpError::new(414, "request line too long"));
        }
        None if buf.len() > limits.max_request_line => {
            return Err(HttpError::new(414, "request line too long"));
        }
        _ => {}
    }
    // PERF: the header slots live on the stack, uninitialised (a zeroed
    // Vec of 100 slots was 3.2 KB to allocate and clear per parse).
    const STACK_SLOTS: usize = 128;
    let mut stack =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_SLOTS];
    let mut heap = Vec::new();
    let slots: &mut [std::mem::MaybeUninit<httparse::Header<'_>>] =
        if limits.max_headers <= STACK_SLOTS {
            &mut stack[..limits.max_headers]
        } else {
            heap.resize_with(limits.max_headers, std::mem::MaybeUninit::uninit);
            &mut heap[..]
        };
    let mut req = httparse::Request::new(&mut []);
    let status = match req.parse_with_uninit_headers(buf, slots) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::new(431, "too many header fields"));
        }
        Err(httparse::Error::Version) => {
            // RFC 9110 section 2.5: a higher minor version of HTTP/1 is
            // handled as the highest we implement (1.1). httparse only
            // knows 1.0 and 1.1, so parse a copy that says 1.1.
            if let Some(at) = minor_version_at(buf) {
                let mut copy = buf_all.to_vec();
                copy[skip + at] = b'1';
                return parse(&copy, limits);
            }
            // A version still arriving (`HTTP/2` of `HTTP/2.0`): wait for
            // it, or the answer would depend on how the bytes were split
            // into reads (400 now, 505 for the whole line; found by the
            // split property below).
            if memchr(b'\n', buf).is_none() && version_so_far(buf) {
                return Ok(None);
            }
            return Err(version_error(buf));
        }
        Err(e) => return Err(HttpError::new(400, format!("malformed request: {e}"))),
    };
    let n = match status {
        httparse::Status::Partial => {
            if buf_all.len() > limits.max_header_size {
                return Err(HttpError::new(431, "request head too large"));
            }
            return Ok(None);
        }
        httparse::Status::Complete(n) => n,
    };
    if n > limits.max_header_size {
        return Err(HttpError::new(431, "request head too large"));
    }
    // All three are Some on a complete parse.
    let method = req.method.unwrap_or("").to_owned();
    let target = req.path.unwrap_or("").to_owned();
    let version_minor = req.version.unwrap_or(1);
    let headers: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect();
    build(method, target, version_minor, headers, skip + n).map(Some)
}

/// Where the minor digit of an `HTTP/1.x` (x >= 2) request line is.
fn minor_version_at(buf: &[u8]) -> Option<usize> {
    let end = memchr(b'\n', buf)?;
    let line = &buf[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let v = line.len().checked_sub(8)?;
    let tail = &line[v..];
    (tail.starts_with(b"HTTP/1.") && (b'2'..=b'9').contains(&tail[7])).then_some(v + 7)
}

fn version_error(buf: &[u8]) -> HttpError {
    let line = &buf[..memchr(b'\n', buf).unwrap_or(buf.len())];
    let line = String::from_utf8_lossy(line);
    let v = line.trim_end().rsplit(' ').next().unwrap_or("");
    if let Some(ver) = v.strip_prefix("HTTP/")
        && ver.len() == 3
        && ver.as_bytes()[1] == b'.'
        && ver.as_bytes()[0].is_ascii_digit()
        && ver.as_bytes()[2].is_ascii_digit()
        && ver.as_bytes()[0] != b'1'
    {
        return HttpError::new(505, format!("{v} is not supported"));
    }
    HttpError::new(400, "malformed request line")
}

/// Whether an unfinished request line ends in what may still become an
/// `HTTP/d.d` version.
fn version_so_far(buf: &[u8]) -> bool {
    let v = buf.rsplit(|&b| b == b' ').next().unwrap_or(b"");
    let v = v.strip_suffix(b"\r").unwrap_or(v);
    let pattern = b"HTTP/d.d";
    v.len() <= pattern.len()
        && v.iter().zip(pattern).all(|(&c, &p)| match p {
            b'd' => c.is_ascii_digit(),
            _ => c == p,
        })
}

fn memchr(b: u8, s: &[u8]) -> Option<usize> {
    s.iter().position(|&c| c == b)
}

fn build(
    method: String,
    target: String,
    version_minor: u8,
    headers: Vec<(String, Vec<u8>)>,
    head_len: usize,
) -> Result<RequestHead, HttpError> {
    let mut host_vals = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.as_slice());
    let host_hdr = host_vals.next();
    if host_vals.next().is_some() {
        return Err(HttpError::close(400, "more than one Host header"));
    }
    if version_minor >= 1 && host_hdr.is_none() {
        return Err(HttpError::new(400, "HTTP/1.1 request without Host"));
    }
    let mut host = match host_hdr {
        Some(h) => parse_host(h).ok_or_else(|| HttpError::new(400, "invalid Host header"))?,
        None => String::new(),
    };

    // Persistence (RFC 9112 section 9.3).
    let mut close = false;
    let mut ka = false;
    for (n, v) in &headers {
        if n.eq_ignore_ascii_case("connection") {
            for t in String::from_utf8_lossy(v).split(',') {
                let t = t.trim();
                if t.eq_ignore_ascii_case("close") {
                    close = true;
                } else if t.eq_ignore_ascii_case("keep-alive") {
                    ka = true;
                }
            }
        }
    }
    let keep_alive = !close && (version_minor >= 1 || ka);

    // Framing (RFC 9112 section 6).
    let mut te: Vec<String> = Vec::new();
    let mut te_seen = false;
    let mut cl: Option<u64> = None;
    for (n, v) in &headers {
        // SECURITY: framing headers must be plain ASCII, trimmed of SP and
        // HTAB only: a Unicode space that `str::trim` would remove could
        // make a proxy in front frame the message differently.
        let framing_header =
            n.eq_ignore_ascii_case("transfer-encoding") || n.eq_ignore_ascii_case("content-length");
        if framing_header && !v.is_ascii() {
            return Err(HttpError::close(400, format!("non-ASCII {n} header")));
        }
        let ows = |x: &str| x.trim_matches([' ', '\t']).to_owned();
        if n.eq_ignore_ascii_case("transfer-encoding") {
            te_seen = true;
            for c in String::from_utf8_lossy(v).split(',') {
                let c = ows(c);
                if !c.is_empty() {
                    te.push(c.to_ascii_lowercase());
                }
            }
        } else if n.eq_ignore_ascii_case("content-length") {
            for part in String::from_utf8_lossy(v).split(',') {
                let part = ows(part);
                let part = part.as_str();
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(HttpError::close(400, "invalid Content-Length"));
                }
                let len: u64 = part
                    .parse()
                    .map_err(|_| HttpError::close(400, "invalid Content-Length"))?;
                if cl.is_some_and(|c| c != len) {
                    return Err(HttpError::close(400, "conflicting Content-Length values"));
                }
                cl = Some(len);
            }
        }
    }
    let framing = if te_seen {
        if version_minor == 0 {
            return Err(HttpError::close(
                400,
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if cl.is_some() {
            return Err(HttpError::close(
                400,
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if te.last().map(String::as_str) != Some("chunked") {
            return Err(HttpError::close(
                400,
                "Transfer-Encoding does not end with chunked",
            ));
        }
        if te.len() > 1 {
            return Err(HttpError::close(
                501,
                format!("unsupported transfer coding `{}`", te[0]),
            ));
        }
        Framing::Chunked
    } else {
        match cl {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    };

    let mut expect_continue = false;
    for (n, v) in &headers {
        if n.eq_ignore_ascii_case("expect") {
            if v.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = version_minor >= 1;
            } else {
                return Err(HttpError::new(417, "unsupported expectation"));
            }
        }
    }

    if !KNOWN_METHODS.contains(&method.as_str()) {
        return Err(HttpError::new(
            501,
            format!("method {method} not implemented"),
        ));
    }

    // The target: origin-form, absolute-form (overrides Host), `*` for
    // OPTIONS, authority-form for CONNECT.
    let (path_part, query) = if target.starts_with('/') {
        split_query(&target)
    } else if let Some(rest) = strip_scheme(&target) {
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        host = parse_host(authority.as_bytes())
            .ok_or_else(|| HttpError::new(400, "invalid host in absolute-form target"))?;
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        let (p, q) = split_query(&path);
        (p.to_owned(), q)
    } else if target == "*" && method == "OPTIONS" {
        ("*".to_owned(), None)
    } else if method == "CONNECT" {
        return Err(HttpError::new(405, "CONNECT is not supported"));
    } else {
        return Err(HttpError::new(400, "invalid request target"));
    };
    let path = if path_part == "*" {
        "*".to_owned()
    } else {
        normalise(&path_part).map_err(|e| {
            HttpError::new(
                400,
                match e {
                    PathError::AboveRoot => "path climbs above the root",
                    PathError::Nul => "NUL in path",
                    PathError::BadEscape => "bad percent-escape in path",
                    PathError::NotUtf8 => "path is not UTF-8",
                    PathError::NotAbsolute => "invalid path",
                },
            )
        })?
    };
    if let Some(q) = &query
        && q.bytes().any(|b| b == b'#')
    {
        return Err(HttpError::new(400, "fragment in request target"));
    }
    Ok(RequestHead {
        http2: false,
        method,
        target,
        version_minor,
        headers,
        path,
        query,
        host,
        framing,
        keep_alive,
        expect_continue,
        head_len,
    })
}

fn split_query(t: &str) -> (String, Option<String>) {
    match t.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (t.to_owned(), None),
    }
}

fn strip_scheme(t: &str) -> Option<&str> {
    let (scheme, rest) = t.split_once("://")?;
    (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")).then_some(rest)
}

/// Checks a Host value (RFC 9110 section 7.2: uri-host [":" port]) and
/// returns the host lowercased without port.
/// The bytes of a reg-name (RFC 3986 section 3.2.2: unreserved,
/// sub-delims, `%` of pct-encoded), by table (PERF: every request).
const HOST_CHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
            );
        i += 1;
    }
    t
};

fn parse_host(v: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(v).ok()?.trim();
    if s.contains('@') {
        return None;
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        let h = &s[..end + 2];
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return None,
        };
        if !h[1..h.len() - 1]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        (h, port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if let Some(p) = port
        && (!p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 5)
    {
        return None;
    }
    if !host.starts_with('[') && !host.bytes().all(|b| HOST_CHAR[b as usize]) {
        return None;
    }
    let mut h = host.to_ascii_lowercase();
    if h.ends_with('.') && h.len() > 1 {
        h.pop();
    }
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_request_line: 8192,
            max_header_size: 32768,
            max_headers: 100,
        }
    }

    fn status(req: &str) -> u16 {
        match parse(req.as_bytes(), &limits()) {
            Ok(Some(_)) => 200,
            Ok(None) => 0,
            Err(e) => e.status,
        }
    }

    #[test]
    fn split_at_every_byte() {
        let req = b"GET /a%20b?x=1 HTTP/1.1\r\nHost: Example.COM:8080\r\nX-A: 1\r\nX-A: 2\r\n\r\n";
        for i in 0..req.len() {
            assert!(parse(&req[..i], &limits()).unwrap().is_none(), "prefix {i}");
        }
        let h = parse(req, &limits()).unwrap().unwrap();
        assert_eq!(h.head_len, req.len());
        assert_eq!(h.path, "/a b");
        assert_eq!(h.query.as_deref(), Some("x=1"));
        assert_eq!(h.host, "example.com");
        assert!(h.keep_alive);
    }

    #[test]
    fn bad_requests() {
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
        assert_eq!(
            status(
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(status("BREW / HTTP/1.1\r\nHost: a\r\n\r\n"), 501);
        // Regression: Unicode space around framing values (smuggling).
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\u{a0}\r\n\r\n"),
            400
        );
        assert_eq!(
            status(&format!(
                "{}{}",
                "\r\n".repeat(40),
                "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
            )),
            400
        );
        assert_eq!(status("GET /../x HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
        // A higher minor version is served as HTTP/1.1.
        assert_eq!(status("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), 200);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        assert_eq!(status(&long), 414);
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "a".repeat(40000)
        );
        assert_eq!(status(&big), 431);
        let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..101 {
            many.push_str(&format!("X-{i}: 1\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(status(&many), 431);
    }

    #[test]
    fn absolute_form_overrides_host() {
        let h = parse(
            b"GET http://Other.example/p?q HTTP/1.1\r\nHost: a\r\n\r\n",
            &limits(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.host, "other.example");
        assert_eq!(h.path, "/p");
        assert_eq!(h.query.as_deref(), Some("q"));
    }

    #[test]
    fn persistence() {
        let p = |s: &str| parse(s.as_bytes(), &limits()).unwrap().unwrap().keep_alive;
        assert!(!p("GET / HTTP/1.0\r\n\r\n"));
        assert!(p("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        assert!(!p("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
    }
}

#[cfg(test)]
mod robustness {
    use super::*;
    use crate::http::chunked::Decoder;

    /// xorshift: a dependency-free, repeatable stream of numbers.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const SEEDS: &[&[u8]] = &[
        b"GET /a%20b?x=1 HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n",
        b"POST http://h:80/p HTTP/1.0\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
        b"PUT /x HTTP/1.1\r\nHost: [::1]:8\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    ];
    const ALPHABET: &[u8] = b" \r\n:%/.?#[]@\t\x00\x7f\xff0123456789abcdefHTP-;=,\"";

    /// Mutated requests never panic the parser, whatever they hold.
    #[test]
    fn mutated_heads_never_panic() {
        let limits = Limits {
            max_request_line: 256,
            max_header_size: 512,
            max_headers: 8,
        };
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..50_000 {
            let mut b = SEEDS[rng.below(SEEDS.len())].to_vec();
            for _ in 0..1 + rng.below(6) {
                let i = rng.below(b.len() + 1);
                match rng.below(3) {
                    0 if i < b.len() => b[i] = ALPHABET[rng.below(ALPHABET.len())],
                    1 => b.insert(i, ALPHABET[rng.below(ALPHABET.len())]),
                    _ if i < b.len() => {
                        b.remove(i);
                    }
                    _ => {}
                }
            }
            let cut = rng.below(b.len() + 1);
            let _ = parse(&b[..cut], &limits);
            let _ = parse(&b, &limits);
        }
    }

    /// Random chunked input never panics the decoder and never yields
    /// more bytes than it was given.
    #[test]
    fn random_chunked_input_never_panics() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut out = [0u8; 64];
        for _ in 0..20_000 {
            let len = rng.below(200);
            let input: Vec<u8> = (0..len)
                .map(|_| match rng.below(4) {
                    0 => b"\r\n"[rng.below(2)],
                    1 => b"0123456789abcdefABCDEF"[rng.below(22)],
                    2 => b";= \t\"x"[rng.below(6)],
                    _ => rng.next() as u8,
                })
                .collect();
            let mut d = Decoder::default();
            let mut rest = &input[..];
            let mut produced = 0;
            for _ in 0..500 {
                match d.decode(rest, &mut out[..1 + rng.below(63)]) {
                    Ok((c, n)) => {
                        produced += n;
                        rest = &rest[c..];
                        if (c == 0 && n == 0) || d.is_done() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            assert!(produced <= input.len());
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> Limits {
        Limits {
            max_request_line: 8192,
            max_header_size: 32768,
            max_headers: 100,
        }
    }

    /// Request heads made of parts that are often valid, sometimes not.
    fn head() -> impl Strategy<Value = Vec<u8>> {
        let method =
            prop::sample::select(vec!["GET", "POST", "HEAD", "PUT", "OPTIONS", "BREW", "get"]);
        let path = "(/[a-z0-9%.]{0,6}){1,4}(\\?[a-z=&%]{0,8})?";
        let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 "]);
        let field = prop::sample::select(vec![
            "Host: a.test",
            "Host: b",
            "Content-Length: 5",
            "Content-Length: 05",
            "Transfer-Encoding: chunked",
            "Transfer-Encoding: gzip",
            "Connection: close",
            "Connection: keep-alive",
            "Expect: 100-continue",
            "X-A: 1",
            "X-B:\tx y ",
            "Bad Name: 1",
            " folded",
        ]);
        let eol = prop::sample::select(vec!["\r\n", "\n"]);
        (
            method,
            path,
            version,
            prop::collection::vec((field, eol.clone()), 0..6),
            eol,
            "[a-z]{0,8}",
        )
            .prop_map(|(m, p, v, fields, end, body)| {
                let mut s = format!("{m} {p} {v}\r\n");
                for (f, e) in fields {
                    s.push_str(f);
                    s.push_str(e);
                }
                s.push_str(end);
                s.push_str(&body);
                s.into_bytes()
            })
    }

    proptest! {
        /// The parser gives the same result for every split of the same
        /// bytes into reads: a connection parses its buffer again after
        /// each read, so every prefix of a head is "more, please" (or the
        /// same refusal found early), and the whole gives the same head.
        #[test]
        fn every_split_into_reads_gives_the_same_result(data in head()) {
            let whole = parse(&data, &limits());
            let end = match &whole {
                Ok(Some(h)) => h.head_len,
                _ => data.len(),
            };
            for k in 0..end {
                match (parse(&data[..k], &limits()), &whole) {
                    (Ok(None), _) => {}
                    (Err(e), Err(w)) => prop_assert_eq!(e.status, w.status, "split at {}", k),
                    (got, _) => prop_assert!(false, "split at {}: {:?} but whole {:?}", k, got.map(|h| h.map(|h| h.head_len)), whole.as_ref().map(|h| h.as_ref().map(|h| h.head_len))),
                }
            }
            // What follows a head never changes it.
            if let Ok(Some(h)) = &whole {
                let again = parse(&data[..h.head_len], &limits());
                prop_assert!(matches!(again, Ok(Some(ref g)) if g.path == h.path && g.framing == h.framing && g.head_len == h.head_len));
            }
        }
    }
}
