//! What HTTPS changes for a request, whatever protocol carries it: the
//! scheme it came with (its own TLS, or a trusted TLS-terminating
//! proxy's word), the answers it gets before routing (421 when its Host
//! names another vhost than its connection's SNI chose; 308 to HTTPS
//! from a vhost with `https_redirect`), and `Strict-Transport-Security`
//! on what HTTPS answers.

use crate::exchange::Exchange;
use crate::exchange::response::{Owned, OwnedBody};
use abi_stable::std_types::{RString, RVec};
use tamada_sdk::abi::OwnedHeaderV1;

/// ACME's HTTP-01 challenges are answered on plain HTTP, redirect or not
/// (a CA follows redirects, but an HTTPS-only vhost may not have its
/// certificate yet). Those of tamada's own ACME client are answered
/// before this (`acme/store.rs`); another client's webroot files are
/// served by the routes.
pub use crate::acme::store::ACME_CHALLENGE;

/// The answer a request gets before any route, if it gets one.
pub fn gate(x: &Exchange) -> Option<Owned> {
    // RFC 9110 section 15.5.20: the connection's certificate (and its
    // client-certificate rules) were chosen for another vhost. A client
    // that sent no name (it connected by address) is not misdirected.
    if let Some(t) = &x.tls
        && let Some(v) = &t.vhost
        && *v != x.vhost.name
    {
        return Some(page(421, None));
    }
    if !x.https && x.vhost.https_redirect && !x.path().starts_with(ACME_CHALLENGE) {
        return Some(page(308, Some(redirect_location(x))));
    }
    None
}

/// `https://host[:tls_port]/path?query`: the request's own target (as
/// the client sent it) on the vhost's HTTPS port.
fn redirect_location(x: &Exchange) -> String {
    let host = if x.head.host.is_empty() {
        &x.vhost.name
    } else {
        &x.head.host
    };
    let port = match x.vhost.tls_port {
        Some(443) | None => String::new(),
        Some(p) => format!(":{p}"),
    };
    let target = if x.head.target.starts_with('/') {
        x.head.target.clone()
    } else {
        // The absolute form (`GET http://host/path`): its path and query.
        match &x.head.query {
            Some(q) => format!("{}?{q}", x.head.path),
            None => x.head.path.clone(),
        }
    };
    format!("https://{host}{port}{target}")
}

/// The core's own page for a status, with a `Location` when it redirects.
fn page(status: u16, location: Option<String>) -> Owned {
    let body = crate::http::error_page(status);
    let mut headers = RVec::new();
    headers.push(header("Content-Type", b"text/html; charset=utf-8"));
    if let Some(l) = location {
        headers.push(header("Location", l.as_bytes()));
    }
    Owned {
        status,
        headers,
        body: OwnedBody::Bytes(RVec::from(body)),
    }
}

fn header(name: &str, value: &[u8]) -> OwnedHeaderV1 {
    OwnedHeaderV1 {
        name: RString::from(name),
        value: RVec::from(value.to_vec()),
    }
}

/// The `Strict-Transport-Security` value to add to an answer, when the
/// vhost sets one and the request came over HTTPS (RFC 6797 section
/// 7.2: never over plain HTTP).
pub fn hsts(x: &Exchange) -> Option<&str> {
    if x.https {
        x.vhost.hsts.as_deref()
    } else {
        None
    }
}
