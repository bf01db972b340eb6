//! HTTP/1.1 wire format: request heads in (`request`), paths
//! (`path`), chunked bodies (`chunked`), response heads and error pages out
//! (this file). Nothing here touches a socket.

pub mod chunked;
pub mod path;
pub mod request;

use std::cell::RefCell;
use std::time::UNIX_EPOCH;

/// The server's `Server:` header.
/// The HTTP/2 client connection preface (RFC 9113 section 3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const SERVER: &str = concat!("tamada/", env!("CARGO_PKG_VERSION"));

/// Limits on a request head.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_line: usize,
    pub max_header_size: usize,
    pub max_headers: usize,
}

/// A request the core answers itself with an error status.
#[derive(Debug, Clone)]
pub struct HttpError {
    pub status: u16,
    pub reason: String,
}

impl HttpError {
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        HttpError {
            status,
            reason: reason.into(),
        }
    }
    /// An error after which framing is unsure. (The core closes the
    /// connection after every error it answers on its own.)
    pub fn close(status: u16, reason: impl Into<String>) -> Self {
        HttpError::new(status, reason)
    }
}

/// The reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// The small HTML page sent with a status the core produces itself.
pub fn error_page(status: u16) -> Vec<u8> {
    let r = reason(status);
    format!(
        "<!DOCTYPE html>\n<html><head><title>{status} {r}</title></head>\n<body><h1>{status} {r}</h1><hr><p>{SERVER}</p></body></html>\n"
    )
    .into_bytes()
}

thread_local! {
    static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

/// The current `Date:` value, formatted once per second per thread.
pub fn date_now(out: &mut Vec<u8>) {
    let now = crate::clock::wall();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs || d.1.is_empty() {
            *d = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(d.1.as_bytes());
    });
}

/// Header names the core owns and drops from a handler's response.
pub fn is_hop_header(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Whether `status` never has a body (RFC 9110 section 6.4.1).
pub fn bodiless(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

/// The bytes of a token (RFC 9110 section 5.6.2).
const TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    t
};

/// Valid header name (token) and value (no CR, LF or NUL).
pub fn valid_header(name: &str, value: &[u8]) -> bool {
    // PERF: a table for the name, one compare per ordinary value byte
    // (every response header passes here).
    !name.is_empty()
        && name.bytes().all(|b| TOKEN[b as usize])
        && !value
            .iter()
            .any(|&b| b < 0x20 && (b == b'\r' || b == b'\n' || b == 0))
}
