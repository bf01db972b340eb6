//! Response filters (SDK 1.2, `filters:` of a vhost or a route): the
//! request side runs once routing is about to start (after the access
//! rules), the response side on every answer of the exchange, the
//! handler's, an access rule's or the core's own error page, before the
//! protocol frames it.
//!
//! A filter that keeps the body costs one call: a file stays a file. A
//! transform of a small body in memory or a small file runs at once
//! (where the answer is, the loop or the pool); anything larger, and
//! every stream, is pulled through the transforms on the pool
//! (`stream.rs`), in bounded pieces.

use crate::config::runtime::Filters;
use crate::exchange::response::{Owned, OwnedBody, own_body};
use crate::exchange::stream::{Chain, Source};
use crate::exchange::{Exchange, body, view};
use crate::http;
use crate::plugins::filter::Transform;
use abi_stable::std_types::{RString, RVec};
use std::os::fd::AsRawFd;
use tamada_sdk::abi::{FilterBodyV1, FilterHeadV1, FilterResultV1, OwnedHeaderV1};

/// Bodies up to this size are transformed at once where the answer is;
/// larger ones on the pool. Compressing 64 KiB of HTML with gzip at
/// level 5 takes about 0.3 ms here (docs/filters.md): the cost of a pool
/// hand-off is paid only above it.
pub const INLINE_TRANSFORM: u64 = 64 * 1024;

/// The filters of an exchange (chosen by its path when first asked).
fn filters(x: &Exchange) -> Filters {
    match &x.filters {
        Some(f) => f.clone(),
        None => x.vhost.filters_for(x.path()).clone(),
    }
}

/// The request side: each filter may set or remove request header
/// fields before the handler sees them. Runs once per path (again after
/// a rewrite or an internal redirect).
pub fn request_side(x: &mut Exchange) {
    if x.filters.is_some() {
        return;
    }
    let list = x.vhost.filters_for(x.path()).clone();
    if list.is_empty() {
        x.filters = Some(list);
        return;
    }
    let edits: Vec<_> = {
        let headers = view::headers(&x.head);
        let empty = body::empty_reader();
        let req = view::request(x, &headers, &empty);
        list.iter().flat_map(|f| f.request(&req)).collect()
    };
    if !edits.is_empty() && x.client_headers.is_none() {
        x.client_headers = Some(x.head.headers.clone());
    }
    for e in edits {
        let name = e.name.as_str();
        if !http::valid_header(name, e.value.as_ref().map_or(&[][..], |v| v.as_slice())) {
            continue;
        }
        x.head
            .headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        if let Some(v) = e.value.into_option() {
            x.head
                .headers
                .push((name.to_ascii_lowercase(), v.into_vec()));
        }
    }
    x.filters = Some(list);
}

/// Whether an answer of this exchange goes through filters.
pub fn any(x: &Exchange) -> bool {
    // PERF: no clone of the list (asked for every answer).
    !x.filtered
        && !match &x.filters {
            Some(f) => f.is_empty(),
            None => x.vhost.filters_for(x.path()).is_empty(),
        }
}

/// The response side: each filter in turn edits the head and keeps,
/// transforms or replaces the body. `Err` when a filter failed (the
/// caller answers 500 and logs it); the response's descriptors are then
/// closed.
pub fn response_side(x: &mut Exchange, o: Owned, head_only: bool) -> Result<Owned, String> {
    if x.filtered {
        return Ok(o);
    }
    x.filtered = true;
    let list = filters(x);
    if list.is_empty() {
        return Ok(o);
    }
    let Owned {
        mut status,
        mut headers,
        mut body,
    } = o;
    let mut chain = Chain::default();
    // A transform was asked for (even one not run: a HEAD's).
    let mut transformed = false;
    let client = x.client_headers.take();
    let result = {
        let hs = match &client {
            Some(h) => view::headers_of(h),
            None => view::headers(&x.head),
        };
        let empty = body::empty_reader();
        let req = view::request(x, &hs, &empty);
        let mut failed = None;
        for f in list.iter() {
            let silent = head_only || http::bodiless(status);
            let info = if transformed {
                FilterBodyV1 {
                    kind: 4,
                    len: -1,
                    fd: -1,
                    offset: 0,
                }
            } else {
                describe(&body, &headers)
            };
            let mut head = FilterHeadV1 {
                status,
                headers: std::mem::take(&mut headers),
                body: info,
                head_only: silent,
            };
            let r = f.response(&req, &mut head);
            status = head.status;
            headers = head.headers;
            match r {
                FilterResultV1::Keep => {}
                FilterResultV1::Transform(t) => {
                    // (kept even for a HEAD or a bodiless status: a later
                    // filter may change the status; decided below)
                    chain.0.push(Transform::new(t, f.tag));
                    transformed = true;
                }
                FilterResultV1::Replace(b) => {
                    let old = std::mem::replace(&mut body, own_body(b));
                    discard(old);
                    chain.0.clear();
                    transformed = false;
                    drop_length(&mut headers);
                }
                FilterResultV1::Error(e) => {
                    failed = Some(format!("filter `{}` failed: {e}", f.tag));
                    break;
                }
            }
        }
        failed
    };
    x.client_headers = client;
    if let Some(e) = result {
        discard(body);
        return Err(e);
    }
    if transformed {
        drop_length(&mut headers);
    }
    let body = if !transformed {
        body
    } else if head_only || http::bodiless(status) {
        // A HEAD or a bodiless status (as the last filter left it): its
        // fields say what a GET's would (no length: chunked), nothing is
        // sent.
        discard(body);
        OwnedBody::Stream(None)
    } else {
        transform(body, chain)?
    };
    Ok(Owned {
        status,
        headers,
        body,
    })
}

/// What a filter is told of a body.
fn describe(body: &OwnedBody, headers: &[OwnedHeaderV1]) -> FilterBodyV1 {
    let (kind, len, fd, offset) = match body {
        OwnedBody::Empty => (0, 0, -1, 0),
        OwnedBody::Bytes(b) => (1, b.len() as i64, -1, 0),
        OwnedBody::Shared(b) => (1, b.as_slice().len() as i64, -1, 0),
        OwnedBody::File { fd, offset, len } => (2, *len as i64, fd.as_raw_fd(), *offset),
        OwnedBody::Segments { segs, .. } => (
            3,
            crate::exchange::response::segments_len(segs) as i64,
            -1,
            0,
        ),
        OwnedBody::Raw(_) | OwnedBody::Filtered(_) | OwnedBody::Stream(_) => {
            let n = crate::exchange::response::declared_len(headers)
                .ok()
                .flatten()
                .map_or(-1, |n| n as i64);
            (4, n, -1, 0)
        }
    };
    FilterBodyV1 {
        kind,
        len,
        fd,
        offset,
    }
}

fn drop_length(headers: &mut RVec<OwnedHeaderV1>) {
    headers.retain(|h| !h.name.eq_ignore_ascii_case("content-length"));
}

/// A body replaced or refused: its descriptors closed, a stream closed
/// on the pool.
fn discard(b: OwnedBody) {
    crate::exchange::response::drop_owned(Owned {
        status: 200,
        headers: RVec::new(),
        body: b,
    });
}

/// A body on its way through `chain`: at once when it is small and in
/// memory or in a file, else pulled on the pool.
fn transform(body: OwnedBody, mut chain: Chain) -> Result<OwnedBody, String> {
    let mut source = match body {
        OwnedBody::Empty => Source::Bytes {
            data: RVec::new(),
            pos: 0,
        },
        OwnedBody::Bytes(data) => Source::Bytes { data, pos: 0 },
        OwnedBody::Shared(body) => Source::Shared { body, pos: 0 },
        OwnedBody::File { fd, offset, len } => Source::File {
            fd,
            off: offset,
            end: offset + len,
        },
        OwnedBody::Segments { files, segs } => Source::Segments {
            files,
            segs: segs.into(),
            pos: 0,
        },
        OwnedBody::Raw(s) => Source::Plugin(s),
        OwnedBody::Filtered(f) => {
            // (filters are applied once: not reached)
            let (src, mut first) = *f;
            first.0.extend(chain.0);
            return Ok(OwnedBody::Filtered(Box::new((src, first))));
        }
        OwnedBody::Stream(s) => return Ok(OwnedBody::Stream(s)),
    };
    let small = match &source {
        Source::Bytes { data, .. } => data.len() as u64 <= INLINE_TRANSFORM,
        Source::Shared { body, .. } => body.as_slice().len() as u64 <= INLINE_TRANSFORM,
        Source::File { off, end, .. } => end - off <= INLINE_TRANSFORM,
        Source::Segments { segs, .. } => {
            crate::exchange::response::segments_len(segs.as_slices().0)
                + crate::exchange::response::segments_len(segs.as_slices().1)
                <= INLINE_TRANSFORM
        }
        Source::Plugin(_) => false,
    };
    if !small {
        return Ok(OwnedBody::Filtered(Box::new((source, chain))));
    }
    let mut out = RVec::new();
    let mut buf = vec![0u8; INLINE_TRANSFORM as usize];
    loop {
        let n = source.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chain.push(&buf[..n], false)?);
    }
    out.extend_from_slice(&chain.finish()?);
    Ok(OwnedBody::Bytes(out))
}

/// The core's own page for `status` as a response filters can edit:
/// `extra` fields first (`Retry-After`).
pub fn core_page(status: u16, extra: &[(&str, &[u8])]) -> Owned {
    let mut headers = RVec::new();
    for (n, v) in extra {
        headers.push(OwnedHeaderV1 {
            name: RString::from(*n),
            value: RVec::from(*v),
        });
    }
    let body = if http::bodiless(status) {
        OwnedBody::Empty
    } else {
        headers.push(OwnedHeaderV1 {
            name: RString::from("Content-Type"),
            value: RVec::from(&b"text/html; charset=utf-8"[..]),
        });
        OwnedBody::Bytes(RVec::from(http::error_page(status)))
    };
    Owned {
        status,
        headers,
        body,
    }
}
