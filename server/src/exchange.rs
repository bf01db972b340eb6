//! One request, top to bottom:
//!
//! 1. pick the vhost (`Runtime` -> site by listening socket -> Host);
//! 2. refuse a Content-Length over the route's `max_body` (413) before
//!    reading a byte of the body;
//! 3. offer the request to the routes whose prefix matches, longest first
//!    (a handler that declines passes it on; an internal redirect starts
//!    over with the new path; nothing left -> 404);
//! 4. turn the plugin's response into an `Output` (framing, Date, Server,
//!    persistence), which `conn.rs` writes and whose `finish` runs the log
//!    phase.

use crate::Shared;
use crate::body::{BodyCtx, BodyState, body_read, no_body_read};
use crate::conn::Conn;
use crate::host::{self, Context};
use crate::http::request::{Framing, RequestHead};
use crate::http::{self, HttpError};
use crate::output::{OutBody, Output, StreamOut};
use crate::runtime::Vhost;
use abi_stable::std_types::{ROption, RSlice, RStr};
use std::ffi::c_void;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tamada_sdk::abi::{
    BodyReaderV1, BodyV1, HandleResultV1, HeaderV1, LogEntryV1, RequestV1, ResponseV1,
};
use tamada_sdk::request::addr_to_raw;

/// Most internal redirects one request may take.
const MAX_REDIRECTS: u8 = 10;

/// What the log phase needs once the response is out.
pub struct LogInfo {
    pub head: RequestHead,
    pub vhost: Arc<Vhost>,
    /// Path after internal redirects.
    pub path: String,
    pub query: Option<String>,
    pub route: String,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub start: Instant,
    pub start_unix_us: i64,
    pub bytes_received: u64,
    pub error: Option<String>,
}

impl LogInfo {
    /// Runs every logger of the vhost.
    pub fn log(
        self,
        status: u16,
        body_sent: u64,
        total_sent: u64,
        completed: bool,
        error: Option<String>,
    ) {
        if self.vhost.loggers.is_empty() {
            return;
        }
        let err = error.or(self.error.clone()).unwrap_or_default();
        let empty = BodyReaderV1 {
            ctx: std::ptr::null_mut(),
            read: no_body_read,
            content_length: 0,
        };
        let headers = header_views(&self.head);
        let req = request_view(&self, &headers, &empty);
        let entry = LogEntryV1 {
            request: &req,
            status,
            body_bytes_sent: body_sent,
            bytes_sent: total_sent,
            bytes_received: self.bytes_received,
            duration_us: self.start.elapsed().as_micros() as u64,
            start_unix_us: self.start_unix_us,
            error: RStr::from_str(&err),
            completed,
        };
        let ctx = Context {
            vhost: &self.vhost,
            peer: self.peer,
        };
        host::with_context(ctx, || {
            for l in &self.vhost.loggers {
                host::set_plugin(Some(l.plugin.table.name.as_str()));
                l.log(&entry);
            }
        });
    }
}

fn header_views(head: &RequestHead) -> Vec<HeaderV1<'_>> {
    head.headers
        .iter()
        .map(|(n, v)| HeaderV1 {
            name: RStr::from_str(n),
            value: RSlice::from_slice(v),
        })
        .collect()
}

fn request_view<'a>(
    info: &'a LogInfo,
    headers: &'a [HeaderV1<'a>],
    body: &'a BodyReaderV1,
) -> RequestV1<'a> {
    let rest = info
        .vhost
        .routes
        .iter()
        .find(|r| r.prefix == info.route)
        .map(|r| r.rest(&info.path))
        .unwrap_or(&info.path);
    RequestV1 {
        method: RStr::from_str(&info.head.method),
        target: RStr::from_str(&info.head.target),
        path: RStr::from_str(&info.path),
        query: match &info.query {
            Some(q) => ROption::RSome(RStr::from_str(q)),
            None => ROption::RNone,
        },
        version_minor: info.head.version_minor,
        headers: RSlice::from_slice(headers),
        scheme: RStr::from_str("http"),
        host: RStr::from_str(&info.head.host),
        local: addr_to_raw(info.local),
        peer: addr_to_raw(info.peer),
        vhost: info.vhost.raw(),
        route: RStr::from_str(&info.route),
        rest: RStr::from_str(rest),
        body,
        redirects: 0,
    }
}

fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// A response to a head that could not be parsed or was refused.
/// The request line as far as it could be read goes to the access log of
/// the address's default vhost (as nginx logs its 400s), and the reason to
/// its error log at info level.
pub fn early_error(
    conn: &Conn,
    e: HttpError,
    line: &str,
    received: u64,
    started: Instant,
    shared: &Shared,
) -> Box<Output> {
    log::debug!("{}: {} {}", conn.peer, e.status, e.reason);
    let mut out = simple(e.status, 1, false, true, &[]);
    let rt = shared.runtime.load();
    let Some(vhost) = rt.vhost_for(conn.bind, conn.local, "").cloned() else {
        return out;
    };
    host::record(
        &vhost,
        Some(conn.peer),
        log::Level::Info,
        "tamada",
        &format!("{} {}: {}", e.status, http::reason(e.status), e.reason),
    );
    // Split what was read like a request line; garbage stays whole.
    let mut parts = line.splitn(3, ' ');
    let (method, target, version) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let head = RequestHead {
        method: method.to_owned(),
        target: target.chars().take(2048).collect(),
        version_minor: if version == "HTTP/1.0" { 0 } else { 1 },
        headers: Vec::new(),
        path: "/".to_owned(),
        query: None,
        host: String::new(),
        framing: Framing::None,
        keep_alive: false,
        expect_continue: false,
        head_len: received as usize,
    };
    out.info = Some(LogInfo {
        path: head.path.clone(),
        query: None,
        head,
        vhost,
        route: String::new(),
        local: conn.local,
        peer: conn.peer,
        start: started,
        start_unix_us: unix_us() - started.elapsed().as_micros() as i64,
        bytes_received: received,
        error: Some(e.reason),
    });
    out
}

/// A core-made response with an error page.
fn simple(
    status: u16,
    minor: u8,
    head_only: bool,
    close: bool,
    extra: &[(&str, &str)],
) -> Box<Output> {
    let body = if http::bodiless(status) {
        Vec::new()
    } else {
        http::error_page(status)
    };
    let mut h = start_head(status, minor);
    for (n, v) in extra {
        push_header(&mut h, n, v.as_bytes());
    }
    if !http::bodiless(status) {
        push_header(&mut h, "Content-Type", b"text/html; charset=utf-8");
        push_header(&mut h, "Content-Length", body.len().to_string().as_bytes());
    }
    finish_head(&mut h, minor, close, false);
    let mut out = Output::new(h, OutBody::None, close, status, None);
    if !head_only {
        out.inline_body(&body);
    }
    out
}

fn start_head(status: u16, minor: u8) -> Vec<u8> {
    let mut h = Vec::with_capacity(256);
    h.extend_from_slice(if minor == 0 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    h.extend_from_slice(status.to_string().as_bytes());
    h.push(b' ');
    h.extend_from_slice(http::reason(status).as_bytes());
    h.extend_from_slice(b"\r\nServer: ");
    h.extend_from_slice(http::SERVER.as_bytes());
    h.extend_from_slice(b"\r\nDate: ");
    http::date_now(&mut h);
    h.extend_from_slice(b"\r\n");
    h
}

fn push_header(h: &mut Vec<u8>, name: &str, value: &[u8]) {
    h.extend_from_slice(name.as_bytes());
    h.extend_from_slice(b": ");
    h.extend_from_slice(value);
    h.extend_from_slice(b"\r\n");
}

fn finish_head(h: &mut Vec<u8>, minor: u8, close: bool, _chunked: bool) {
    if close {
        h.extend_from_slice(b"Connection: close\r\n");
    } else if minor == 0 {
        h.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    h.extend_from_slice(b"\r\n");
}

/// Answers one parsed request.
pub fn run(conn: &mut Conn, head: RequestHead, started: Instant, shared: &Shared) -> Box<Output> {
    // PERF: a guard, not a clone: no shared reference count to bump.
    let rt = shared.runtime.load();
    let draining = shared.draining.load(Ordering::Relaxed);
    let minor = head.version_minor;
    let head_only = head.is_head();
    let Some(vhost) = rt.vhost_for(conn.bind, conn.local, &head.host).cloned() else {
        return simple(404, minor, head_only, true, &[]);
    };
    let mut keep = head.keep_alive && !draining;

    if head.path == "*" {
        // OPTIONS * (RFC 9110 section 9.3.7): about the server itself.
        let mut h = start_head(200, minor);
        push_header(
            &mut h,
            "Allow",
            b"GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH",
        );
        push_header(&mut h, "Content-Length", b"0");
        let close = !keep || head.framing != Framing::None;
        finish_head(&mut h, minor, close, false);
        return Output::new(h, OutBody::None, close, 200, None);
    }

    let limit = vhost.max_body_for(&head.path);
    if let Framing::Length(n) = head.framing
        && n > limit
    {
        host::record(
            &vhost,
            Some(conn.peer),
            log::Level::Error,
            "tamada",
            &format!("request body of {n} bytes is over the limit of {limit} bytes"),
        );
        return with_info(
            simple(413, minor, head_only, true, &[]),
            &head,
            &vhost,
            conn,
            started,
            None,
        );
    }

    let mut body = BodyState::new(head.framing, limit, head.expect_continue, minor);
    let timeout = rt.settings.body_timeout.0;
    let ctx = Context {
        vhost: &vhost,
        peer: conn.peer,
    };
    let (result, info_path, info_query, route, error) =
        host::with_context(ctx, || dispatch(conn, &head, &vhost, &mut body, timeout));

    let mut info = LogInfo {
        head,
        vhost: vhost.clone(),
        path: info_path,
        query: info_query,
        route,
        local: conn.local,
        peer: conn.peer,
        start: started,
        start_unix_us: unix_us() - started.elapsed().as_micros() as i64,
        bytes_received: 0,
        error,
    };

    if shared.draining.load(Ordering::Relaxed) {
        // SIGTERM came while the handler ran: this is the last response.
        keep = false;
    }
    if body.bad_framing {
        // RFC 9112 section 7.1: malformed chunked framing is the client's
        // fault, and the rest of the connection cannot be trusted.
        info.bytes_received = info.head.head_len as u64 + body.wire_bytes;
        if let Some(r) = result {
            // Own the body so its fds are closed and a stream is closed.
            drop(own_body(r.body));
        }
        let mut out = simple(400, minor, head_only, true, &[]);
        out.info = Some(info);
        return out;
    }
    if body.exceeded {
        info.bytes_received = info.head.head_len as u64 + body.wire_bytes;
        host::record(
            &vhost,
            Some(conn.peer),
            log::Level::Error,
            "tamada",
            &format!("chunked request body is over the limit of {limit} bytes"),
        );
        if let Some(r) = result {
            // Own the body so its fds are closed and a stream is closed.
            drop(own_body(r.body));
        }
        let mut out = simple(413, minor, head_only, true, &[]);
        out.info = Some(info);
        return out;
    }
    if !body.done {
        // Unread body: take what is already here without waiting; if the
        // rest is still on its way, close after answering (RFC 9112 9.6).
        if body.continue_pending || !body.drain_available(&conn.sock, &mut conn.buf) {
            keep = false;
        }
    }
    info.bytes_received = info.head.head_len as u64 + body.wire_bytes;

    match result {
        Some(resp) => respond(resp, info, minor, head_only, keep),
        None => {
            let status = if info.error.is_some() { 500 } else { 404 };
            let mut out = simple(status, minor, head_only, !keep, &[]);
            out.info = Some(info);
            out
        }
    }
}

fn with_info(
    mut out: Box<Output>,
    head: &RequestHead,
    vhost: &Arc<Vhost>,
    conn: &Conn,
    started: Instant,
    error: Option<String>,
) -> Box<Output> {
    out.info = Some(LogInfo {
        head: head.clone(),
        vhost: vhost.clone(),
        path: head.path.clone(),
        query: head.query.clone(),
        route: String::new(),
        local: conn.local,
        peer: conn.peer,
        start: started,
        start_unix_us: unix_us() - started.elapsed().as_micros() as i64,
        bytes_received: head.head_len as u64,
        error,
    });
    out
}

type Dispatched = (
    Option<ResponseV1>,
    String,
    Option<String>,
    String,
    Option<String>,
);

/// Offers the request to the routes; follows internal redirects.
fn dispatch(
    conn: &mut Conn,
    head: &RequestHead,
    vhost: &Arc<Vhost>,
    body: &mut BodyState,
    timeout: std::time::Duration,
) -> Dispatched {
    let headers = header_views(head);
    let mut path = head.path.clone();
    let mut query = head.query.clone();
    let mut method: &str = &head.method;
    let mut redirects: u8 = 0;
    let mut with_body = true;
    'outer: loop {
        for route in vhost.routes.iter().filter(|r| r.matches(&path)) {
            // Each route's own max_body applies to the body it is offered
            // (a route that declines must not let a larger body through to
            // a stricter one).
            body.limit = route.max_body;
            if let (true, Framing::Length(n)) = (with_body, head.framing)
                && n > route.max_body
            {
                body.exceeded = true;
                return (None, path, query, route.prefix.clone(), None);
            }
            let mut bctx = BodyCtx {
                sock: &conn.sock,
                buf: &mut conn.buf,
                state: &mut *body,
                timeout,
            };
            let reader = BodyReaderV1 {
                ctx: if with_body {
                    &mut bctx as *mut BodyCtx as *mut c_void
                } else {
                    std::ptr::null_mut()
                },
                read: if with_body { body_read } else { no_body_read },
                content_length: match (with_body, head.framing) {
                    (true, Framing::Length(n)) => n as i64,
                    (true, Framing::Chunked) => -1,
                    _ => 0,
                },
            };
            let req = RequestV1 {
                method: RStr::from_str(method),
                target: RStr::from_str(&head.target),
                path: RStr::from_str(&path),
                query: match &query {
                    Some(q) => ROption::RSome(RStr::from_str(q)),
                    None => ROption::RNone,
                },
                version_minor: head.version_minor,
                headers: RSlice::from_slice(&headers),
                scheme: RStr::from_str("http"),
                host: RStr::from_str(&head.host),
                local: addr_to_raw(conn.local),
                peer: addr_to_raw(conn.peer),
                vhost: vhost.raw(),
                route: RStr::from_str(&route.prefix),
                rest: RStr::from_str(route.rest(&path)),
                body: &reader,
                redirects,
            };
            let plugin = route.handler.name();
            host::set_plugin(Some(route.handler.plugin.table.name.as_str()));
            let r = (route.handler.plugin.table.handle)(route.handler.inst, &req);
            host::set_plugin(None);
            match r {
                HandleResultV1::Respond(resp) => {
                    return (Some(resp), path, query, route.prefix.clone(), None);
                }
                HandleResultV1::Decline => continue,
                HandleResultV1::Error(msg) => {
                    let msg = format!(
                        "plugin `{plugin}` failed on {} {}: {}",
                        head.method,
                        head.target,
                        msg.as_str()
                    );
                    host::record_here(log::Level::Error, plugin, &msg);
                    return (None, path, query, route.prefix.clone(), Some(msg));
                }
                HandleResultV1::Redirect(to) => {
                    redirects += 1;
                    if redirects > MAX_REDIRECTS {
                        let msg = format!(
                            "more than {MAX_REDIRECTS} internal redirects, last to {}",
                            to.as_str()
                        );
                        host::record_here(log::Level::Error, plugin, &msg);
                        return (None, path, query, route.prefix.clone(), Some(msg));
                    }
                    let (p, q) = match to.as_str().split_once('?') {
                        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
                        None => (to.as_str().to_owned(), None),
                    };
                    match http::path::normalise(&p) {
                        Ok(p) => path = p,
                        Err(_) => {
                            let msg = format!(
                                "plugin `{plugin}` redirected to an invalid path `{}`",
                                to.as_str()
                            );
                            host::record_here(log::Level::Error, plugin, &msg);
                            return (None, path, query, route.prefix.clone(), Some(msg));
                        }
                    }
                    query = q;
                    // RFC 3875 section 6.2.2: the new request is a GET.
                    method = "GET";
                    with_body = false;
                    continue 'outer;
                }
            }
        }
        return (None, path, query, String::new(), None);
    }
}

/// Turns a plugin's response into an `Output`.
fn respond(resp: ResponseV1, info: LogInfo, minor: u8, head_only: bool, keep: bool) -> Box<Output> {
    let ResponseV1 {
        status,
        headers,
        body,
    } = resp;
    let vhost = info.vhost.clone();
    let peer = info.peer;
    // Own every fd right away so that any early return closes them.
    let body = own_body(body);
    if !(200..=999).contains(&status) {
        host::record(
            &vhost,
            Some(peer),
            log::Level::Error,
            "tamada",
            &format!("a handler answered with status {status}, which is not a final status"),
        );
        let mut out = simple(500, minor, head_only, !keep, &[]);
        out.info = Some(info);
        return out;
    }
    let mut h = start_head(status, minor);
    let mut declared_len: Option<u64> = None;
    for hd in headers.iter() {
        let name = hd.name.as_str();
        let value = hd.value.as_slice();
        if !http::valid_header(name, value) {
            host::record(
                &vhost,
                Some(peer),
                log::Level::Warn,
                "tamada",
                &format!("dropped invalid response header `{name}`"),
            );
            continue;
        }
        if name.eq_ignore_ascii_case("content-length") {
            declared_len = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
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
    let mut close = !keep;
    let no_body = http::bodiless(status);
    let (len, out_body): (Option<u64>, OutBody) = match body {
        Owned::Empty => (Some(0), OutBody::None),
        Owned::Bytes(b) => (Some(b.len() as u64), OutBody::Bytes { data: b, pos: 0 }),
        Owned::File { fd, offset, len } => (
            Some(len),
            OutBody::File {
                fd,
                off: offset,
                end: offset + len,
            },
        ),
        Owned::Segments { files, segs } => {
            let total = segs
                .iter()
                .map(|s| {
                    if s.file < 0 {
                        s.bytes.len() as u64
                    } else {
                        s.len
                    }
                })
                .sum();
            (
                Some(total),
                OutBody::Segments {
                    files,
                    segs: segs.into_iter().collect(),
                    pos: 0,
                },
            )
        }
        Owned::Stream(mut s) => {
            s.chunked = declared_len.is_none() && minor >= 1;
            s.remaining = declared_len;
            if declared_len.is_none() && minor == 0 {
                // HTTP/1.0 and unknown length: the end of the body is the
                // end of the connection.
                close = true;
            }
            (declared_len, OutBody::Stream(s))
        }
    };
    if no_body {
        // 1xx/204/304: no body and no framing headers.
    } else if let Some(n) = len {
        push_header(&mut h, "Content-Length", n.to_string().as_bytes());
    } else if minor >= 1 {
        push_header(&mut h, "Transfer-Encoding", b"chunked");
    }
    finish_head(&mut h, minor, close, false);
    let body = if head_only || no_body {
        OutBody::None
    } else {
        out_body
    };
    let small = matches!(&body, OutBody::Bytes { data, .. } if data.len() <= 16 * 1024);
    let mut out = Output::new(h, OutBody::None, close, status, Some(info));
    if small {
        if let OutBody::Bytes { data, .. } = &body {
            out.inline_body(data.as_slice());
        }
    } else {
        out.body = body;
    }
    out
}

/// A body whose file descriptors are owned by the core.
enum Owned {
    Empty,
    Bytes(abi_stable::std_types::RVec<u8>),
    File {
        fd: OwnedFd,
        offset: u64,
        len: u64,
    },
    Segments {
        files: Vec<OwnedFd>,
        segs: Vec<tamada_sdk::abi::SegmentV1>,
    },
    /// Closed on drop, whatever happens to the response.
    Stream(Box<StreamOut>),
}

fn own_body(b: BodyV1) -> Owned {
    // SAFETY (for each from_raw_fd below): the ABI passes ownership of these
    // descriptors to the core (SDK: `into_raw_fd` on an open `File`); each
    // is wrapped exactly once.
    match b {
        BodyV1::Empty => Owned::Empty,
        BodyV1::Bytes(b) => Owned::Bytes(b),
        BodyV1::File { fd, offset, len } => Owned::File {
            // SAFETY: see above.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            offset,
            len,
        },
        BodyV1::Segments(s) => Owned::Segments {
            files: s
                .files
                .iter()
                // SAFETY: see above.
                .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
                .collect(),
            segs: s.segments.into_vec(),
        },
        BodyV1::Stream(s) => Owned::Stream(Box::new(StreamOut::new(s, None, false))),
    }
}
