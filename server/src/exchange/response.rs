//! A plugin's response, owned by the core: every descriptor it carries is
//! wrapped at once (so any early return closes them), its lengths are
//! checked, and a stream body starts being pulled on the pool or is
//! closed. How the response goes on the wire is the protocol's business
//! (`proto/h1/head.rs` for HTTP/1.1). Nothing here touches a socket or
//! calls a plugin but to close a stream.

use crate::exchange::stream::{Chain, Puller, Source, StreamPipe};
use crate::http;
pub use crate::plugins::shared::SharedBody;
use abi_stable::std_types::RVec;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use tamada_sdk::abi::{BodyV1, OwnedHeaderV1, ResponseV1, SegmentV1, StreamV1};

/// A plugin's response with every descriptor owned by the core.
pub struct Owned {
    pub status: u16,
    pub headers: RVec<OwnedHeaderV1>,
    pub body: OwnedBody,
}

pub enum OwnedBody {
    Empty,
    Bytes(RVec<u8>),
    File {
        fd: OwnedFd,
        offset: u64,
        len: u64,
    },
    Segments {
        files: Vec<OwnedFd>,
        segs: Vec<SegmentV1>,
    },
    /// A plugin's shared bytes (SDK 1.2), sent where they are.
    Shared(SharedBody),
    /// A stream not pulled yet.
    Raw(StreamV1),
    /// A body that response filters transform, not pulled yet.
    Filtered(Box<(Source, Chain)>),
    /// A stream being pulled on the pool; `None` when it is not sent (a
    /// HEAD request, a status without a body) and was closed.
    Stream(Option<Arc<StreamPipe>>),
}

/// The bytes a segments body sends.
pub fn segments_len(segs: &[SegmentV1]) -> u64 {
    segs.iter()
        .map(|s| {
            if s.file < 0 {
                s.bytes.len() as u64
            } else {
                s.len
            }
        })
        .sum()
}

/// Takes ownership of every descriptor in a plugin's response at once, so
/// that any early return closes them.
pub fn own(resp: ResponseV1) -> Owned {
    let ResponseV1 {
        status,
        headers,
        body,
    } = resp;
    Owned {
        status,
        headers,
        body: own_body(body),
    }
}

/// Takes ownership of every descriptor of a plugin's body at once.
pub fn own_body(body: BodyV1) -> OwnedBody {
    // SAFETY (for each from_raw_fd below): the ABI passes ownership of
    // these descriptors to the core (SDK: `into_raw_fd` on an open `File`);
    // each is wrapped exactly once.
    match body {
        BodyV1::Empty => OwnedBody::Empty,
        BodyV1::Bytes(b) => OwnedBody::Bytes(b),
        BodyV1::File { fd, offset, len } => OwnedBody::File {
            // SAFETY: see above.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            offset,
            len,
        },
        BodyV1::Segments(s) => OwnedBody::Segments {
            files: s
                .files
                .iter()
                // SAFETY: see above.
                .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
                .collect(),
            segs: s.segments.into_vec(),
        },
        BodyV1::Stream(s) => match SharedBody::of(s) {
            Ok(b) => OwnedBody::Shared(b),
            Err(s) => OwnedBody::Raw(s),
        },
    }
}

/// The length a response's `Content-Length` fields declare (RFC 9110
/// section 8.6): `None` without one; `Err` when one is not a number or
/// two disagree. SECURITY: a length the head says and a length the body
/// is framed by must be one number, or the client reads the next
/// response as part of this one (a CGI script sending `Content-Length: 2`
/// then `Content-Length: 40` desynchronised the connection).
pub fn declared_len(headers: &[OwnedHeaderV1]) -> Result<Option<u64>, String> {
    let mut found: Option<u64> = None;
    for h in headers
        .iter()
        .filter(|h| h.name.as_str().eq_ignore_ascii_case("content-length"))
    {
        // A list of equal values (`42, 42`) is one length, as the RFC allows.
        for v in h.value.as_slice().split(|&b| b == b',') {
            let v = v.trim_ascii();
            let n = (!v.is_empty() && v.len() <= 19 && v.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| {
                    format!(
                        "the response's Content-Length `{}` is not a number",
                        String::from_utf8_lossy(h.value.as_slice())
                    )
                })?;
            match found {
                Some(m) if m != n => {
                    return Err(format!(
                        "the response has Content-Length fields that differ ({m} and {n})"
                    ));
                }
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

/// How the protocol will send a response's body: a stream's pull frames
/// it (HTTP/1.1 chunks when no length is declared).
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// A HEAD request: no body goes out.
    pub head_only: bool,
    /// A body of unknown length goes out chunked (HTTP/1.1); else it
    /// ends with the connection (HTTP/1.0) or the protocol frames it.
    pub chunked: bool,
}

/// Starts pulling a raw stream (`start`) when its bytes will be sent, or
/// closes it (`close`, with `client_gone`) when they will not.
pub fn start_stream(
    o: &mut Owned,
    shape: Shape,
    start: impl FnOnce(Puller) -> Arc<StreamPipe>,
    close: impl FnOnce(StreamV1),
) {
    if !matches!(o.body, OwnedBody::Raw(_) | OwnedBody::Filtered(_)) {
        return;
    }
    let body = std::mem::replace(&mut o.body, OwnedBody::Stream(None));
    // Lengths that disagree are refused by `respond` (502): not read.
    let sent = declared_len(&o.headers).ok().filter(|_| {
        !shape.head_only && !http::bodiless(o.status) && (200..=999).contains(&o.status)
    });
    match (body, sent) {
        (OwnedBody::Raw(s), None) => close(s),
        (OwnedBody::Filtered(f), None) => {
            let (src, _chain) = *f;
            match src {
                Source::Plugin(s) => close(s),
                other => other.close(true),
            }
        }
        (OwnedBody::Raw(s), Some(declared)) => {
            let chunked = declared.is_none() && shape.chunked;
            o.body = OwnedBody::Stream(Some(start(Puller::new(s, declared, chunked))));
        }
        (OwnedBody::Filtered(f), Some(_)) => {
            let (src, chain) = *f;
            o.body = OwnedBody::Stream(Some(start(Puller::filtered(src, chain, shape.chunked))));
        }
        _ => {}
    }
}

/// A stream that will not be sent is closed on the pool (closing may
/// block: a CGI child is killed and reaped), in its vhost's context.
pub fn close_on_pool(
    s: StreamV1,
    pool: &crate::pool::Pool,
    vhost: &Arc<crate::config::runtime::Vhost>,
    peer: std::net::SocketAddr,
) {
    let vhost = vhost.clone();
    pool.submit(Box::new(move || {
        let _scope = crate::plugins::call::scope(&vhost, peer);
        close_stream(s)
    }));
}

/// Closes a stream that was never sent.
pub fn close_stream(s: StreamV1) {
    crate::plugins::call::stream_close(s, true)
}

/// A plugin's response that will not be sent: its descriptors closed,
/// its stream closed on the pool.
pub fn drop_response(r: ResponseV1) {
    drop_owned(own(r));
}

/// A response that will not be sent: its descriptors closed (they are
/// owned), a stream being pulled abandoned, one not started closed on
/// the pool.
pub fn drop_owned(o: Owned) {
    if let OwnedBody::Stream(Some(p)) = &o.body {
        p.abandon();
    }
    match o.body {
        OwnedBody::Raw(s) => {
            crate::pool::global().submit(Box::new(move || close_stream(s)));
        }
        OwnedBody::Filtered(f) => {
            let (src, chain) = *f;
            crate::pool::global().submit(Box::new(move || {
                drop(chain);
                src.close(true)
            }));
        }
        _ => {}
    }
}
