//! HTTP/2 heads: a request's pseudo-header fields and fields become the
//! same checked [`RequestHead`] an HTTP/1.1 request gives (through the
//! HTTP/1.1 parser itself, so every rule on paths, Host and lengths is one
//! rule), and a plugin's [`Owned`] response becomes an `http::Response`
//! for `h2`, without the fields HTTP/2 forbids.

use crate::exchange::response::{Owned, OwnedBody, SharedBody, declared_len};
use crate::exchange::stream::StreamPipe;
use crate::http::request::{Framing, RequestHead, parse};
use crate::http::{self, HttpError, Limits};
use bytes::Bytes;
use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use tamada_sdk::abi::SegmentV1;

/// Why a request is malformed (RFC 9113 section 8.1.1): the stream is
/// reset with `PROTOCOL_ERROR`.
pub struct Malformed(pub &'static str);

/// The request as the rest of the server sees it. `Err(Ok(e))` is a
/// request the HTTP/1.1 rules refuse (answered with `e.status`),
/// `Err(Err(m))` a malformed HTTP/2 request.
pub fn request(
    req: &http_crate::Request<h2::RecvStream>,
    end_stream: bool,
    limits: &Limits,
) -> Result<RequestHead, Result<HttpError, Malformed>> {
    let uri = req.uri();
    let method = req.method().as_str();
    let authority = uri.authority().map(|a| a.as_str());
    if method == "CONNECT" && authority.is_none() {
        return Err(Err(Malformed("CONNECT without :authority")));
    }
    let target = match uri.path_and_query() {
        Some(p) => p.as_str(),
        None if method == "CONNECT" => authority.unwrap_or(""),
        None => return Err(Err(Malformed("no :path"))),
    };
    if target.is_empty() {
        return Err(Err(Malformed("empty :path")));
    }
    let mut h = Vec::with_capacity(256);
    h.extend_from_slice(method.as_bytes());
    h.push(b' ');
    h.extend_from_slice(target.as_bytes());
    h.extend_from_slice(b" HTTP/1.1\r\n");
    let mut cookies: Vec<&[u8]> = Vec::new();
    for (name, value) in req.headers() {
        let n = name.as_str();
        let v = value.as_bytes();
        // Section 8.2.1: no whitespace at either end of a value.
        if v.first().is_some_and(|b| matches!(b, b' ' | b'\t'))
            || v.last().is_some_and(|b| matches!(b, b' ' | b'\t'))
        {
            return Err(Err(Malformed(
                "a field value starts or ends with whitespace",
            )));
        }
        match n {
            // RFC 9113 section 8.2.3: split crumbs are one field again.
            "cookie" => {
                cookies.push(v);
                continue;
            }
            // Section 8.3.1: `:authority` and Host must agree; the
            // authority stands for both.
            "host" => {
                if let Some(a) = authority {
                    if !a.as_bytes().eq_ignore_ascii_case(v) {
                        return Err(Err(Malformed(":authority and Host differ")));
                    }
                    continue;
                }
            }
            _ => {}
        }
        h.extend_from_slice(n.as_bytes());
        h.extend_from_slice(b": ");
        h.extend_from_slice(v);
        h.extend_from_slice(b"\r\n");
    }
    if let Some(a) = authority {
        h.extend_from_slice(b"host: ");
        h.extend_from_slice(a.as_bytes());
        h.extend_from_slice(b"\r\n");
    }
    if !cookies.is_empty() {
        h.extend_from_slice(b"cookie: ");
        for (i, c) in cookies.iter().enumerate() {
            if i > 0 {
                h.extend_from_slice(b"; ");
            }
            h.extend_from_slice(c);
        }
        h.extend_from_slice(b"\r\n");
    }
    h.extend_from_slice(b"\r\n");
    // The field section was bounded by `h2` (max_header_list_size); the
    // request line may be longer than a HTTP/1.1 line limit allows.
    let limits = Limits {
        max_header_size: limits.max_header_size.max(h.len()),
        ..*limits
    };
    let mut head = match parse(&h, &limits) {
        Ok(Some(head)) => head,
        Ok(None) => return Err(Ok(HttpError::new(400, "incomplete request head"))),
        Err(e) => return Err(Ok(e)),
    };
    head.http2 = true;
    head.keep_alive = true;
    head.expect_continue = false;
    if !end_stream && head.framing == Framing::None {
        // DATA frames follow, of a length not announced.
        head.framing = Framing::Chunked;
    }
    if end_stream {
        head.framing = match head.framing {
            Framing::Length(0) | Framing::None => Framing::None,
            // A length announced but no DATA: h2 resets the stream too.
            _ => return Err(Err(Malformed("content-length without DATA"))),
        };
    }
    Ok(head)
}

/// Why a plugin's response is not sent (as HTTP/1.1's `head::Refused`).
pub struct Refused {
    pub status: u16,
    pub why: String,
}

/// The body still to send, as HTTP/2 sends it: in DATA frames of the
/// size the windows allow.
pub enum Src {
    None,
    Bytes(Bytes),
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

/// Bytes a `Bytes` can own without a copy.
struct Shared(SharedBody);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// A response head for `h2`, its body, and the length it announced.
pub fn respond(
    o: Owned,
    head_only: bool,
) -> Result<(http_crate::Response<()>, Src, Option<u64>), Refused> {
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
    let declared = declared_len(&headers).map_err(|why| Refused { status: 502, why })?;
    let mut r = http_crate::Response::new(());
    *r.status_mut() = http_crate::StatusCode::from_u16(status).map_err(|e| Refused {
        status: 500,
        why: format!("status {status}: {e}"),
    })?;
    // PERF: one allocation for the fields (the core adds up to three).
    *r.headers_mut() = http_crate::HeaderMap::with_capacity(headers.len() + 3);
    let map = r.headers_mut();
    let mut dropped = Vec::new();
    for hd in headers.iter() {
        let name = hd.name.as_str();
        let value = hd.value.as_slice();
        // RFC 9113 section 8.2.2: no connection-specific fields (a CGI
        // script's or an upstream's `Connection`, `Keep-Alive`...).
        if http::is_hop_header(name)
            || name.eq_ignore_ascii_case("date")
            || name.eq_ignore_ascii_case("server")
        {
            continue;
        }
        // Both refuse what `http::valid_header` refuses (a non-token
        // name; CR, LF, NUL in a value), and other control bytes.
        let (Ok(n), Ok(v)) = (
            http_crate::HeaderName::from_bytes(name.as_bytes()),
            http_crate::HeaderValue::from_bytes(value),
        ) else {
            dropped.push(name.to_owned());
            continue;
        };
        map.append(n, v);
    }
    for name in dropped {
        crate::plugins::host::record_here(
            log::Level::Warn,
            "tamada",
            &format!("dropped invalid response header `{name}`"),
        );
    }
    map.insert(
        http_crate::header::SERVER,
        http_crate::HeaderValue::from_static(http::SERVER),
    );
    map.insert(http_crate::header::DATE, date());
    let (len, src): (Option<u64>, Src) = match body {
        OwnedBody::Empty => (Some(0), Src::None),
        OwnedBody::Bytes(b) => (Some(b.len() as u64), Src::Bytes(Bytes::from(b.into_vec()))),
        OwnedBody::Shared(b) => {
            let n = b.as_slice().len() as u64;
            (Some(n), Src::Bytes(Bytes::from_owner(Shared(b))))
        }
        OwnedBody::File { fd, offset, len } => (
            Some(len),
            Src::File {
                fd,
                off: offset,
                end: offset + len,
            },
        ),
        OwnedBody::Segments { files, segs } => {
            let total = crate::exchange::response::segments_len(&segs);
            (
                Some(total),
                Src::Segments {
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
        OwnedBody::Stream(pipe) => match pipe {
            Some(p) => (declared, Src::Stream(p)),
            None if !head_only => (Some(0), Src::None),
            None => (declared, Src::None),
        },
    };
    if !http::bodiless(status)
        && let Some(n) = len
    {
        map.insert(http_crate::header::CONTENT_LENGTH, n.into());
    }
    let src = if head_only || http::bodiless(status) {
        if let Src::Stream(p) = &src {
            p.abandon();
        }
        Src::None
    } else {
        src
    };
    Ok((r, src, len))
}

/// The `date` value, made once per second per thread (PERF: formatting
/// and checking it was a tenth of a small response's cost).
fn date() -> http_crate::HeaderValue {
    use std::cell::RefCell;
    thread_local! {
        static DATE: RefCell<(u64, http_crate::HeaderValue)> =
            const { RefCell::new((u64::MAX, http_crate::HeaderValue::from_static(""))) };
    }
    let secs = crate::clock::wall()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            let mut v = Vec::with_capacity(32);
            http::date_now(&mut v);
            if let Ok(h) = http_crate::HeaderValue::from_bytes(&v) {
                *d = (secs, h);
            }
        }
        d.1.clone()
    })
}

/// The response to `OPTIONS *` (as HTTP/1.1 answers it).
pub fn options_star() -> Owned {
    let mut o = crate::exchange::filter::core_page(200, &[]);
    o.headers.clear();
    o.headers.push(tamada_sdk::abi::OwnedHeaderV1 {
        name: "Allow".into(),
        value: b"GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"
            .to_vec()
            .into(),
    });
    o.body = OwnedBody::Empty;
    o
}
