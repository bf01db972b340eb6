//! The request head sent upstream: the method, the path (the route's
//! prefix replaced when asked), end-to-end headers only (RFC 9110 section
//! 7.6.1), `Host`, and X-Forwarded-* / Forwarded (RFC 7239) appended to
//! what a trusted peer sent and replaced for anyone else.

use crate::config::{Addr, HostMode, Settings};
use std::net::IpAddr;
use tamada_sdk::Request;

/// How the request body goes upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// Hop-by-hop fields (RFC 9110 7.6.1), in either direction.
pub fn hop_by_hop(lower: &str) -> bool {
    matches!(
        lower,
        "connection" | "keep-alive" | "te" | "trailer" | "transfer-encoding" | "upgrade"
    ) || lower.starts_with("proxy-")
}

/// Header names that never go upstream as the client sent them: the
/// hop-by-hop ones and those tamada sets itself.
fn not_forwarded(lower: &str) -> bool {
    hop_by_hop(lower)
        || matches!(
            lower,
            // `Proxy`: httpoxy (CVE-2016-5385), an application that maps it
            // to HTTP_PROXY would send its own requests through the
            // client's proxy (CGI and FastCGI drop it too).
            "http2-settings" | "content-length" | "host" | "expect" | "proxy"
        )
}

/// The fields the client's `Connection` header names (also hop-by-hop).
fn connection_tokens(req: &Request) -> Vec<String> {
    req.header_all("connection")
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The path and query to send.
pub fn upstream_target(req: &Request, s: &Settings) -> String {
    let target = req.target();
    if target == "*" {
        return target.to_owned();
    }
    let Some(new) = &s.replace_prefix else {
        // As the client sent it (still encoded), when that is what was
        // routed: origin-form and no internal redirect. Otherwise the path
        // the core routed, encoded again (an absolute-form target is never
        // cut by hand: `http://h?/admin` routes `/`).
        if target.starts_with('/') && req.redirects() == 0 {
            return target.to_owned();
        }
        let mut out = String::with_capacity(target.len());
        encode_path(req.path(), &mut out);
        if let Some(q) = req.query() {
            out.push('?');
            out.push_str(q);
        }
        return out;
    };
    let rest = req.rest().trim_start_matches('/');
    let mut out = new.clone();
    if !out.ends_with('/') && !rest.is_empty() {
        out.push('/');
    }
    encode_path(rest, &mut out);
    if let Some(q) = req.query() {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Percent-encodes what may not stand in a path as it is.
fn encode_path(p: &str, out: &mut String) {
    for b in p.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fn ip_for(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// RFC 7239 node: IPv6 in quotes and brackets.
fn forwarded_node(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
        v4 => v4.to_string(),
    }
}

/// RFC 7239 value: a token, or a quoted string.
fn forwarded_value(v: &str) -> String {
    if !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        v.to_owned()
    } else {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// The protocol the client asks to switch to (`Upgrade:` named by
/// `Connection:`), when the server can relay it.
pub fn upgrade_asked<'a>(req: &Request<'a>) -> Option<&'a str> {
    let named = connection_tokens(req);
    if !named.iter().any(|t| t == "upgrade") || req.version() != (1, 1) {
        return None;
    }
    if !tamada_sdk::host::has(tamada_sdk::host::Ability::Relay) {
        return None;
    }
    // WebSocket only: an `h2c` upgrade would open an HTTP/2 connection to
    // the upstream that tamada's routes never see.
    req.header("upgrade").filter(|u| {
        let u = u.trim().to_ascii_lowercase();
        u == "websocket" || u.starts_with("websocket/")
    })
}

/// The authority of an absolute-form target (`http://a.example:8080/x`).
fn absolute_authority(target: &str) -> Option<&str> {
    let lower = target.get(..8)?.to_ascii_lowercase();
    let after = if lower.starts_with("http://") {
        &target[7..]
    } else if lower.starts_with("https://") {
        &target[8..]
    } else {
        return None;
    };
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    Some(&after[..end]).filter(|a| !a.is_empty())
}

/// The whole request head.
pub fn build(req: &Request, s: &Settings, up: &Addr, body: BodyFraming) -> Vec<u8> {
    let mut h = Vec::with_capacity(512);
    h.extend_from_slice(req.method().as_bytes());
    h.push(b' ');
    h.extend_from_slice(upstream_target(req, s).as_bytes());
    h.extend_from_slice(b" HTTP/1.1\r\n");
    // The authority the core routed by: an absolute-form target's wins
    // over the Host header (RFC 9112 3.2.2).
    let client_host = absolute_authority(req.target())
        .or_else(|| req.header("host"))
        .map(str::to_owned)
        .unwrap_or_else(|| req.host().to_owned());
    let host = match &s.host {
        HostMode::Pass if !client_host.is_empty() => client_host.clone(),
        HostMode::Pass | HostMode::Upstream => match up {
            Addr::Tcp { name, .. } => name.clone(),
            Addr::Unix(_) => "localhost".to_owned(),
        },
        HostMode::Fixed(f) => f.clone(),
    };
    push(&mut h, "Host", host.as_bytes());
    let named = connection_tokens(req);
    let peer = ip_for(req.peer_addr().ip());
    let trusted = s.trusted.iter().any(|c| c.contains(peer));
    for (name, value) in req.headers() {
        let lower = name.to_ascii_lowercase();
        if not_forwarded(&lower) || named.contains(&lower) {
            continue;
        }
        // SECURITY: `X_Forwarded_For` reaches a WSGI or CGI application as
        // HTTP_X_FORWARDED_FOR, the same variable as the field this proxy
        // replaces: dropped unless asked for (nginx's
        // `underscores_in_headers off`).
        if !s.underscores_in_headers && lower.contains('_') {
            continue;
        }
        // SECURITY: only the server says which certificate the client had.
        if s.client_cert_header
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case(&lower))
        {
            continue;
        }
        let ours = match lower.as_str() {
            "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host" => s.x_forwarded,
            // From an untrusted client these would be believed by
            // applications that read them: dropped.
            "forwarded" | "x-forwarded-port" | "x-forwarded-prefix" | "x-real-ip" => {
                s.forwarded || !trusted
            }
            _ => false,
        };
        if ours {
            // Written below, from what a trusted peer sent.
            continue;
        }
        push(&mut h, name, value);
    }
    if s.x_forwarded {
        let prior = req.header_joined("x-forwarded-for").filter(|_| trusted);
        let xff = match prior {
            Some(p) if !p.trim().is_empty() => format!("{}, {peer}", p.trim()),
            _ => peer.to_string(),
        };
        push(&mut h, "X-Forwarded-For", xff.as_bytes());
        let proto = req
            .header("x-forwarded-proto")
            .filter(|_| trusted)
            .map_or_else(|| req.scheme().to_owned(), str::to_owned);
        push(&mut h, "X-Forwarded-Proto", proto.as_bytes());
        let fhost = req
            .header("x-forwarded-host")
            .filter(|_| trusted)
            .map_or_else(|| client_host.clone(), str::to_owned);
        if !fhost.is_empty() {
            push(&mut h, "X-Forwarded-Host", fhost.as_bytes());
        }
    }
    if s.forwarded {
        let mut el = format!("for={};proto={}", forwarded_node(peer), req.scheme());
        if !client_host.is_empty() {
            el.push_str(";host=");
            el.push_str(&forwarded_value(&client_host));
        }
        let v = match req.header_joined("forwarded").filter(|_| trusted) {
            Some(p) if !p.trim().is_empty() => format!("{}, {el}", p.trim()),
            _ => el,
        };
        push(&mut h, "Forwarded", v.as_bytes());
    }
    if let Some(name) = &s.client_cert_header
        && let Some(cert) = req.tls().and_then(|t| t.client_cert)
    {
        push(&mut h, name, escape_pem(&cert.pem).as_bytes());
    }
    if let Some(proto) = upgrade_asked(req).filter(|_| body == BodyFraming::None) {
        // Forwarded only when the client asked (RFC 9110 7.8).
        push(&mut h, "Upgrade", proto.as_bytes());
        h.extend_from_slice(b"Connection: upgrade\r\n");
    }
    match body {
        BodyFraming::None => {
            // A POST or PUT with no body still says so (some servers
            // want a length for them).
            if matches!(req.method(), "POST" | "PUT" | "PATCH") {
                h.extend_from_slice(b"Content-Length: 0\r\n");
            }
        }
        BodyFraming::Length(n) => push(&mut h, "Content-Length", n.to_string().as_bytes()),
        BodyFraming::Chunked => h.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    h.extend_from_slice(b"\r\n");
    h
}

/// A PEM certificate as one header value: URL-encoded, as nginx's
/// `$ssl_client_escaped_cert`.
fn escape_pem(pem: &str) -> String {
    let mut out = String::with_capacity(pem.len() + pem.len() / 8);
    for b in pem.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn push(h: &mut Vec<u8>, name: &str, value: &[u8]) {
    h.extend_from_slice(name.as_bytes());
    h.extend_from_slice(b": ");
    h.extend_from_slice(value);
    h.extend_from_slice(b"\r\n");
}
