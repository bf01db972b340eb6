//! HTTP/1.1 response heads: a plugin's [`Owned`] response (or a status
//! the core answers itself) becomes a head of bytes and a body in one of
//! the forms the writer sends. The core owns `Date`, `Server`,
//! `Content-Length`, `Transfer-Encoding` and `Connection`, and writes
//! every header name in one canonical case (`Content-Type`, `ETag`),
//! whatever case the plugin used.

use crate::exchange::response::{Owned, OwnedBody, declared_len};
use crate::exchange::stream::StreamPipe;
use crate::http;
use abi_stable::std_types::RVec;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use tamada_sdk::abi::SegmentV1;

/// Bodies up to this size are copied behind the head: one write.
pub const INLINE_BODY: usize = 16 * 1024;

/// The body still to send, in the form the writer sends it.
pub enum OutBody {
    None,
    Bytes(RVec<u8>),
    /// A plugin's shared bytes, written where they are.
    Shared(crate::exchange::response::SharedBody),
    File {
        fd: OwnedFd,
        off: u64,
        end: u64,
    },
    Segments {
        files: Vec<OwnedFd>,
        segs: VecDeque<SegmentV1>,
    },
    Stream(Arc<StreamPipe>),
}

impl OutBody {
    /// Whether a file range comes first (the head is then sent with
    /// `MSG_MORE` so that it shares a segment with the first file bytes).
    pub fn starts_with_file(&self) -> bool {
        match self {
            OutBody::File { off, end, .. } => end > off,
            OutBody::Segments { segs, .. } => {
                segs.front().is_some_and(|s| s.file >= 0 && s.len > 0)
            }
            _ => false,
        }
    }
}

/// A response ready for the writer.
pub struct Response {
    /// Status line and headers, and a small body copied behind them.
    pub head: Vec<u8>,
    /// Bytes of `head` that are the status line and headers.
    pub head_len: usize,
    pub body: OutBody,
    /// Close the connection after it.
    pub close: bool,
    pub status: u16,
}

impl Response {
    /// Adds a header field to a head already framed (before the blank
    /// line that ends it; a small body behind it moves along).
    pub fn add_header(&mut self, name: &str, value: &[u8]) {
        let mut field = Vec::with_capacity(name.len() + value.len() + 4);
        push_header(&mut field, name, value);
        let at = self.head_len - 2;
        self.head.splice(at..at, field.iter().copied());
        self.head_len += field.len();
    }
}

/// Header names whose canonical spelling is not the `Word-Word` rule.
const SPECIAL: &[&str] = &[
    "ETag",
    "WWW-Authenticate",
    "Content-MD5",
    "TE",
    "DNT",
    "X-XSS-Protection",
    "Content-Security-Policy-Report-Only",
    "X-DNS-Prefetch-Control",
    "SourceMap",
];

/// Appends [`canonical`]`(name)` with no allocation (PERF: plugins often
/// name their fields in lower case, and every field of every response
/// passes here).
fn push_canonical(h: &mut Vec<u8>, name: &str) {
    if let Some(s) = SPECIAL.iter().find(|s| s.eq_ignore_ascii_case(name)) {
        h.extend_from_slice(s.as_bytes());
        return;
    }
    let mut up = true;
    for b in name.bytes() {
        h.push(if up {
            b.to_ascii_uppercase()
        } else {
            b.to_ascii_lowercase()
        });
        up = b == b'-';
    }
}

/// The canonical spelling of a header name: `Content-Type`, with the
/// usual exceptions (`ETag`, `WWW-Authenticate`...).
pub fn canonical(name: &str) -> Cow<'_, str> {
    if let Some(s) = SPECIAL.iter().find(|s| s.eq_ignore_ascii_case(name)) {
        return Cow::Borrowed(s);
    }
    let mut up = true;
    let ok = name.bytes().all(|b| {
        let good = if up {
            !b.is_ascii_lowercase()
        } else {
            !b.is_ascii_uppercase()
        };
        up = b == b'-';
        good
    });
    if ok {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len());
    let mut up = true;
    for c in name.chars() {
        out.push(if up {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        up = c == '-';
    }
    Cow::Owned(out)
}

pub fn start_head(status: u16, minor: u8) -> Vec<u8> {
    let mut h = Vec::with_capacity(256);
    h.extend_from_slice(if minor == 0 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    let mut num = itoa::Buffer::new();
    h.extend_from_slice(num.format(status).as_bytes());
    h.push(b' ');
    h.extend_from_slice(http::reason(status).as_bytes());
    h.extend_from_slice(b"\r\nServer: ");
    h.extend_from_slice(http::SERVER.as_bytes());
    h.extend_from_slice(b"\r\nDate: ");
    http::date_now(&mut h);
    h.extend_from_slice(b"\r\n");
    h
}

/// The head of a `101 Switching Protocols` before a relay: the plugin's
/// headers (`Upgrade` included) and the core's `Connection: upgrade`.
pub fn switching(o: &Owned) -> Response {
    let mut h = start_head(101, 1);
    for hd in o.headers.iter() {
        let name = hd.name.as_str();
        let value = hd.value.as_slice();
        let lower = name.to_ascii_lowercase();
        if !http::valid_header(name, value)
            || matches!(
                lower.as_str(),
                "connection"
                    | "content-length"
                    | "transfer-encoding"
                    | "keep-alive"
                    | "date"
                    | "server"
                    | "te"
                    | "trailer"
                    | "proxy-connection"
            )
        {
            continue;
        }
        push_header(&mut h, name, value);
    }
    h.extend_from_slice(b"Connection: upgrade\r\n\r\n");
    Response {
        head_len: h.len(),
        head: h,
        body: OutBody::None,
        close: false,
        status: 101,
    }
}

pub fn push_header(h: &mut Vec<u8>, name: &str, value: &[u8]) {
    h.reserve(name.len() + value.len() + 4);
    push_canonical(h, name);
    h.extend_from_slice(b": ");
    h.extend_from_slice(value);
    h.extend_from_slice(b"\r\n");
}

fn push_length(h: &mut Vec<u8>, n: u64) {
    let mut num = itoa::Buffer::new();
    h.extend_from_slice(b"Content-Length: ");
    h.extend_from_slice(num.format(n).as_bytes());
    h.extend_from_slice(b"\r\n");
}

fn finish_head(h: &mut Vec<u8>, minor: u8, close: bool) {
    if close {
        h.extend_from_slice(b"Connection: close\r\n");
    } else if minor == 0 {
        h.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    h.extend_from_slice(b"\r\n");
}

/// A response the core makes itself, with its small error page.
pub fn simple(status: u16, minor: u8, head_only: bool, close: bool) -> Response {
    simple_with(status, minor, head_only, close, &[])
}

/// [`simple`] with more header fields (`Retry-After` on a 503).
pub fn simple_with(
    status: u16,
    minor: u8,
    head_only: bool,
    close: bool,
    extra: &[(&str, &[u8])],
) -> Response {
    let mut h = start_head(status, minor);
    for (n, v) in extra {
        push_header(&mut h, n, v);
    }
    let body = if http::bodiless(status) {
        Vec::new()
    } else {
        http::error_page(status)
    };
    if !http::bodiless(status) {
        push_header(&mut h, "Content-Type", b"text/html; charset=utf-8");
        push_length(&mut h, body.len() as u64);
    }
    with_body(h, minor, close, head_only, &body, status)
}

/// Ends a head and appends a small body (none for HEAD).
fn with_body(
    mut h: Vec<u8>,
    minor: u8,
    close: bool,
    head_only: bool,
    body: &[u8],
    status: u16,
) -> Response {
    finish_head(&mut h, minor, close);
    let head_len = h.len();
    if !head_only {
        h.extend_from_slice(body);
    }
    Response {
        head: h,
        head_len,
        body: OutBody::None,
        close,
        status,
    }
}

/// A short `text/plain` answer of the core's own (the health route),
/// never cached.
pub fn plain_text(
    status: u16,
    minor: u8,
    head_only: bool,
    close: bool,
    extra: &[(&str, &[u8])],
    body: &[u8],
) -> Response {
    let mut h = start_head(status, minor);
    push_header(&mut h, "Content-Type", b"text/plain; charset=utf-8");
    push_header(&mut h, "Cache-Control", b"no-store");
    for (n, v) in extra {
        push_header(&mut h, n, v);
    }
    push_length(&mut h, body.len() as u64);
    with_body(h, minor, close, head_only, body, status)
}

/// `OPTIONS *` (RFC 9110 section 9.3.7): about the server itself.
pub fn options_star(minor: u8, close: bool) -> Response {
    let mut h = start_head(200, minor);
    push_header(
        &mut h,
        "Allow",
        b"GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH",
    );
    push_length(&mut h, 0);
    finish_head(&mut h, minor, close);
    Response {
        head_len: h.len(),
        head: h,
        body: OutBody::None,
        close,
        status: 200,
    }
}

/// Why a plugin's response is not sent: the status the core answers
/// instead, and the line for the error log.
pub struct Refused {
    pub status: u16,
    pub why: String,
}

/// Frames a plugin's response. `Err` says why it is not acceptable (the
/// caller answers with its status and logs it).
pub fn respond(o: Owned, minor: u8, head_only: bool, keep: bool) -> Result<Response, Refused> {
    let Owned {
        status,
        headers,
        body,
    } = o;
    if !(200..=999).contains(&status) {
        return Err(Refused {
            status: 500,
            why: format!("a handler answered with status {status}, which is not a final status"),
        });
    }
    // Whatever the body form: a plugin or script whose lengths disagree
    // is a bad gateway (as nginx answers an upstream's), never framed.
    let declared = declared_len(&headers).map_err(|why| Refused { status: 502, why })?;
    let mut h = start_head(status, minor);
    let small = match &body {
        OwnedBody::Bytes(b) => Some(b.len()),
        OwnedBody::Shared(b) => Some(b.as_slice().len()),
        _ => None,
    };
    if let Some(n) = small
        && n <= INLINE_BODY
    {
        // Room for the headers and the body behind them: no realloc.
        h.reserve(n + 64 * headers.len() + 64);
    }
    let mut dropped = Vec::new();
    for hd in headers.iter() {
        let name = hd.name.as_str();
        let value = hd.value.as_slice();
        if !http::valid_header(name, value) {
            dropped.push(name.to_owned());
            continue;
        }
        if name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        if http::is_hop_header(name)
            || name.eq_ignore_ascii_case("date")
            || name.eq_ignore_ascii_case("server")
        {
            continue;
        }
        push_header(&mut h, name, value);
    }
    for name in dropped {
        crate::plugins::host::record_here(
            log::Level::Warn,
            "tamada",
            &format!("dropped invalid response header `{name}`"),
        );
    }
    let mut close = !keep;
    let (len, out): (Option<u64>, OutBody) = match body {
        OwnedBody::Empty => (Some(0), OutBody::None),
        OwnedBody::Bytes(b) => (Some(b.len() as u64), OutBody::Bytes(b)),
        OwnedBody::Shared(b) => (Some(b.as_slice().len() as u64), OutBody::Shared(b)),
        OwnedBody::File { fd, offset, len } => (
            Some(len),
            OutBody::File {
                fd,
                off: offset,
                end: offset + len,
            },
        ),
        OwnedBody::Segments { files, segs } => {
            let total = crate::exchange::response::segments_len(&segs);
            (
                Some(total),
                OutBody::Segments {
                    files,
                    segs: segs.into(),
                },
            )
        }
        OwnedBody::Raw(_) | OwnedBody::Filtered(_) => {
            return Err(Refused {
                status: 500,
                why: "a stream was not started (internal error)".into(),
            });
        }
        OwnedBody::Stream(pipe) => {
            if declared.is_none() && minor == 0 {
                // HTTP/1.0 and unknown length: the end of the body is the
                // end of the connection.
                close = true;
            }
            match pipe {
                Some(p) => (declared, OutBody::Stream(p)),
                // Not sent: a HEAD (framed as its GET) or a bodiless
                // status; anything else would promise chunks that never
                // come, so it is an empty body.
                None if !head_only => (Some(0), OutBody::None),
                None => (declared, OutBody::None),
            }
        }
    };
    if http::bodiless(status) {
        // 1xx/204/304: no body and no framing headers.
    } else if let Some(n) = len {
        push_length(&mut h, n);
    } else if minor >= 1 {
        h.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    finish_head(&mut h, minor, close);
    let head_len = h.len();
    let body = if head_only || http::bodiless(status) {
        OutBody::None
    } else {
        out
    };
    let body = match body {
        OutBody::Bytes(b) if b.len() <= INLINE_BODY => {
            h.extend_from_slice(&b);
            OutBody::None
        }
        OutBody::Shared(b) if b.as_slice().len() <= INLINE_BODY => {
            h.extend_from_slice(b.as_slice());
            OutBody::None
        }
        b => b,
    };
    Ok(Response {
        head: h,
        head_len,
        body,
        close,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_written_in_one_case_without_allocating() {
        for (name, want) in [
            ("content-type", "Content-Type: v\r\n"),
            ("etag", "ETag: v\r\n"),
            ("x-echo-TAG", "X-Echo-Tag: v\r\n"),
            ("WWW-AUTHENTICATE", "WWW-Authenticate: v\r\n"),
        ] {
            let mut h = Vec::new();
            push_header(&mut h, name, b"v");
            assert_eq!(String::from_utf8(h).unwrap(), want);
        }
    }

    #[test]
    fn header_names_have_one_case() {
        assert_eq!(canonical("content-type"), "Content-Type");
        assert_eq!(canonical("Content-Type"), "Content-Type");
        assert_eq!(canonical("etag"), "ETag");
        assert_eq!(canonical("x-echo-TAG"), "X-Echo-Tag");
        assert_eq!(canonical("www-authenticate"), "WWW-Authenticate");
        assert!(matches!(canonical("Last-Modified"), Cow::Borrowed(_)));
    }
}
