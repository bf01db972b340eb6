//! The ABI views of an exchange: what a plugin sees of the request
//! (`RequestV1`) in the content and log phases. They borrow the core's
//! owned data for the duration of one call.

use crate::exchange::Exchange;
use crate::http::request::RequestHead;
use abi_stable::std_types::{ROption, RSlice, RStr};
use tamada_sdk::abi::{BodyReaderV1, ClientCertV1, HeaderV1, RequestV1, TlsInfoV1};
use tamada_sdk::request::addr_to_raw;

/// The headers as the ABI shows them.
pub fn headers(head: &RequestHead) -> Vec<HeaderV1<'_>> {
    headers_of(&head.headers)
}

/// Header fields kept apart (the client's, before a filter's edits) as
/// the ABI shows them.
pub fn headers_of(list: &[(String, Vec<u8>)]) -> Vec<HeaderV1<'_>> {
    list.iter()
        .map(|(n, v)| HeaderV1 {
            name: RStr::from_str(n),
            value: RSlice::from_slice(v),
        })
        .collect()
}

/// The request's header fields as the client sent them (before any
/// filter's request side edited them), for loggers and filters.
pub fn client_headers(x: &Exchange) -> Vec<HeaderV1<'_>> {
    match &x.client_headers {
        Some(h) => headers_of(h),
        None => headers(&x.head),
    }
}

/// The request view for the route the exchange is at (`x.route`).
pub fn request<'a>(
    x: &'a Exchange,
    headers: &'a [HeaderV1<'a>],
    body: &'a BodyReaderV1,
) -> RequestV1<'a> {
    let path = x.path();
    let (route, rest) = match x.route.and_then(|i| x.vhost.routes.get(i)) {
        Some(r) => (r.prefix.as_str(), r.rest(path)),
        None => ("", path),
    };
    RequestV1 {
        method: RStr::from_str(x.method()),
        target: RStr::from_str(&x.head.target),
        path: RStr::from_str(path),
        query: match x.query() {
            Some(q) => ROption::RSome(RStr::from_str(q)),
            None => ROption::RNone,
        },
        version_minor: x.head.version_minor,
        headers: RSlice::from_slice(headers),
        scheme: RStr::from_str(if x.https { "https" } else { "http" }),
        host: RStr::from_str(&x.head.host),
        local: addr_to_raw(x.local),
        peer: addr_to_raw(x.peer),
        vhost: x.vhost.raw(),
        route: RStr::from_str(route),
        rest: RStr::from_str(rest),
        body,
        redirects: x.redirects,
    }
}

/// The HTTP version of an exchange for the SDK 1.3 protocol view:
/// `major << 8 | minor`.
pub fn version(x: &Exchange) -> u16 {
    if x.head.http2 {
        0x0200
    } else {
        0x0100 | x.head.version_minor as u16
    }
}

/// The TLS view of an exchange (SDK 1.2), when it came over TLS.
pub fn tls(x: &Exchange) -> Option<TlsInfoV1<'_>> {
    let t = x.tls.as_deref()?;
    fn opt(o: &Option<String>) -> ROption<RStr<'_>> {
        match o {
            Some(s) => ROption::RSome(RStr::from_str(s)),
            None => ROption::RNone,
        }
    }
    Some(TlsInfoV1 {
        version: RStr::from_str(t.version),
        cipher: RStr::from_str(t.cipher),
        sni: opt(&t.sni),
        alpn: opt(&t.alpn),
        resumed: t.resumed,
        client_cert: match t.client_cert.as_deref() {
            Some(c) => ROption::RSome(ClientCertV1 {
                subject: RStr::from_str(&c.subject),
                issuer: RStr::from_str(&c.issuer),
                serial: RStr::from_str(&c.serial),
                verify: RStr::from_str(c.verify),
                pem: RStr::from_str(&c.pem),
            }),
            None => ROption::RNone,
        },
    })
}
