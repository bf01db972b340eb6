//! The client's real address behind a load balancer.
//!
//! Two ways, both only from peers in `trusted_proxies` (server.yaml):
//!
//! - `X-Forwarded-For`: read right to left, every address of a trusted
//!   proxy is skipped; the first one that is not trusted is the client (as
//!   nginx's realip module with `real_ip_recursive on`). A list made only
//!   of trusted addresses gives its leftmost; an entry that is not an
//!   address stops the walk at the proxy that added it. Its port is not
//!   known: the address gets port 0.
//! - The PROXY protocol (v1 text and v2 binary, as HAProxy sends with
//!   `send-proxy` / `send-proxy-v2`) on a listener whose vhosts say
//!   `proxy_protocol: true`: every connection must start with the header,
//!   and it must come from a trusted peer; anything else is closed.
//!
//! The address found is the request's peer everywhere: access logs, CGI
//! `REMOTE_ADDR`, `Request::peer_addr` in plugins. The local address stays
//! the socket's own (it selects the vhost).

use ipnet::IpNet;
use ppp::PartialResult;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};

/// An address or a network in CIDR notation (`10.0.0.0/8`, `::1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub IpNet);

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(n) = s.parse::<IpNet>() {
            // 10.1.2.3/8 means the network 10.0.0.0/8.
            return Ok(Cidr(n.trunc()));
        }
        match s.parse::<IpAddr>() {
            Ok(ip) => Ok(Cidr(IpNet::from(ip))),
            Err(_) => Err(format!(
                "`{s}` is not an IP address or a network (like 10.0.0.0/8 or ::1)"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is the IPv4 one.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Whether `ip` is one of the trusted proxies.
pub fn trusted(list: &[Cidr], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    list.iter().any(|c| c.0.contains(&ip))
}

/// One `X-Forwarded-For` entry: an address, maybe with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`), maybe quoted.
fn entry_ip(e: &str) -> Option<IpAddr> {
    let e = e.trim().trim_matches('"');
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = e.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    // `[v6]` without a port.
    e.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// The client's address for a request from `peer` that carries these
/// `X-Forwarded-For` values (in the order they came; several fields are
/// one list, RFC 9110 section 5.3).
pub fn forwarded_for<'a>(
    list: &[Cidr],
    peer: SocketAddr,
    values: impl DoubleEndedIterator<Item = &'a str>,
) -> SocketAddr {
    if !trusted(list, peer.ip()) {
        return peer;
    }
    let mut client = peer;
    for value in values.rev() {
        for e in value.rsplit(',') {
            if e.trim().is_empty() {
                continue;
            }
            let Some(ip) = entry_ip(e) else {
                return client;
            };
            client = SocketAddr::new(canonical(ip), 0);
            if !trusted(list, ip) {
                return client;
            }
        }
    }
    client
}

/// The client's address for a request from `peer`: the peer itself, or
/// what a trusted proxy's `X-Forwarded-For` (else its `Forwarded`) says.
pub fn client(
    list: &[Cidr],
    peer: SocketAddr,
    head: &crate::http::request::RequestHead,
) -> SocketAddr {
    if list.is_empty() {
        return peer;
    }
    let field = |name: &str| -> Vec<&str> {
        head.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .collect()
    };
    let values = field("x-forwarded-for");
    if values.is_empty() {
        // RFC 7239 `Forwarded`, when the proxy sends that one instead.
        let nodes = forwarded_nodes(field("forwarded").into_iter());
        return forwarded_for(list, peer, nodes.iter().map(String::as_str));
    }
    forwarded_for(list, peer, values.into_iter())
}

/// Whether a trusted proxy says that the client came over HTTPS
/// (`X-Forwarded-Proto: https`, else `Forwarded: proto=https`): the
/// value the nearest proxy added (the rightmost) counts. `peer` is the
/// connection's own; anyone else's word is ignored.
pub fn forwarded_https(
    list: &[Cidr],
    peer: SocketAddr,
    head: &crate::http::request::RequestHead,
) -> bool {
    if list.is_empty() || !trusted(list, peer.ip()) {
        return false;
    }
    let last = |name: &str| {
        head.headers
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    };
    if let Some(v) = last("x-forwarded-proto") {
        let p = v.rsplit(',').next().unwrap_or("").trim();
        return p.eq_ignore_ascii_case("https");
    }
    if let Some(v) = last("forwarded") {
        let element = split_outside_quotes(v, ',').pop().unwrap_or("");
        return split_outside_quotes(element, ';').into_iter().any(|pair| {
            pair.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("proto")
                    && v.trim().trim_matches('"').eq_ignore_ascii_case("https")
            })
        });
    }
    false
}

/// Whether a PROXY protocol v2 header says that the client's connection
/// to the balancer was TLS (its `PP2_TYPE_SSL` field, client bit set).
pub fn proxy_ssl(header: &[u8]) -> bool {
    const PP2_TYPE_SSL: u8 = 0x20;
    const PP2_CLIENT_SSL: u8 = 0x01;
    match ppp::v2::Header::try_from(header) {
        Ok(h) => h.tlvs().any(|t| {
            t.is_ok_and(|t| {
                t.kind == PP2_TYPE_SSL && t.value.first().is_some_and(|c| c & PP2_CLIENT_SSL != 0)
            })
        }),
        Err(_) => false,
    }
}

/// The `for=` nodes of `Forwarded` values (RFC 7239), in order, as
/// X-Forwarded-For entries: `192.0.2.1`, `"[2001:db8::1]:4711"`; an
/// element without `for=`, `unknown` or an obfuscated node stays in the
/// list as it is, so the walk stops there (it names no address).
pub fn forwarded_nodes<'a>(values: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out = Vec::new();
    for value in values {
        for element in split_outside_quotes(value, ',') {
            if element.trim().is_empty() {
                continue;
            }
            let node = split_outside_quotes(element, ';')
                .into_iter()
                .find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| v.trim().to_owned())
                });
            out.push(node.unwrap_or_else(|| "unknown".into()));
        }
    }
    out
}

/// Splits on `sep` where it is not inside a quoted string.
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// What the start of a connection on a PROXY protocol listener holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Proxy {
    /// Not all of the header has come yet.
    Partial,
    /// A header of this many bytes; the client's address if it gives one
    /// (`UNKNOWN`, `LOCAL` and UNIX sockets do not: the connection's own
    /// peer stands).
    Header(usize, Option<SocketAddr>),
    /// Not a PROXY protocol header.
    Bad(String),
}

/// The longest v1 header (its specification's 107 bytes).
const V1_MAX: usize = 107;

/// Reads a PROXY protocol v1 or v2 header from the start of `data`.
pub fn parse_proxy(data: &[u8]) -> Proxy {
    if data.is_empty() {
        return Proxy::Partial;
    }
    if data[0] == b'P' {
        // v1 is one line: parse it once the line is whole (a line cut
        // anywhere can look like a wrong one).
        let Some(end) = data.iter().position(|&b| b == b'\n') else {
            return if data.len() < V1_MAX
                && (data.starts_with(b"PROXY") || b"PROXY ".starts_with(data))
            {
                Proxy::Partial
            } else {
                Proxy::Bad("not a PROXY protocol header".into())
            };
        };
        return match ppp::v1::Header::try_from(&data[..=end]) {
            Ok(h) => {
                let client = match h.addresses {
                    ppp::v1::Addresses::Tcp4(a) => {
                        Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
                    }
                    ppp::v1::Addresses::Tcp6(a) => {
                        Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
                    }
                    ppp::v1::Addresses::Unknown => None,
                };
                Proxy::Header(end + 1, client)
            }
            Err(e) => Proxy::Bad(format!("PROXY protocol v1: {e}")),
        };
    }
    let r = ppp::v2::Header::try_from(data);
    if r.is_incomplete() {
        return Proxy::Partial;
    }
    match r {
        Ok(h) => {
            let client = match (h.command, h.addresses) {
                (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
                }
                (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
                }
                _ => None,
            };
            Proxy::Header(h.header.len(), client)
        }
        Err(ppp::v2::ParseError::Prefix) => Proxy::Bad("not a PROXY protocol header".into()),
        Err(e) => Proxy::Bad(format!("PROXY protocol v2: {e}")),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn forwarded_for_nodes_are_read_as_rfc_7239_writes_them() {
        let v = [
            "for=192.0.2.43, for=\"[2001:db8:cafe::17]:4711\";proto=https",
            "for=unknown;by=x, proto=http",
        ];
        assert_eq!(
            forwarded_nodes(v.into_iter()),
            [
                "192.0.2.43",
                "\"[2001:db8:cafe::17]:4711\"",
                "unknown",
                "unknown"
            ]
        );
        let q = ["for=\"198.51.100.17;x,y\";proto=https"];
        assert_eq!(forwarded_nodes(q.into_iter()), ["\"198.51.100.17;x,y\""]);
    }

    use super::*;

    fn list(s: &[&str]) -> Vec<Cidr> {
        s.iter().map(|c| c.parse().unwrap()).collect()
    }
    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs() {
        assert!(trusted(&list(&["10.0.0.0/8"]), "10.9.8.7".parse().unwrap()));
        assert!(!trusted(
            &list(&["10.0.0.0/8"]),
            "11.0.0.1".parse().unwrap()
        ));
        assert!(trusted(
            &list(&["127.0.0.1"]),
            "::ffff:127.0.0.1".parse().unwrap()
        ));
        assert!(trusted(&list(&["::1"]), "::1".parse().unwrap()));
        assert!(trusted(
            &list(&["10.1.2.3/8"]),
            "10.200.0.1".parse().unwrap()
        ));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("proxy.example".parse::<Cidr>().is_err());
    }

    #[test]
    fn forwarded_for_walks_from_the_right() {
        let l = list(&["127.0.0.0/8", "10.0.0.0/8"]);
        let peer = sa("127.0.0.1:5000");
        let one = |v: &[&str]| forwarded_for(&l, peer, v.iter().copied());
        // The rightmost untrusted entry, whatever the client put before it.
        assert_eq!(
            one(&["1.1.1.1, 203.0.113.7, 10.0.0.2"]),
            sa("203.0.113.7:0")
        );
        // Several fields are one list.
        assert_eq!(
            one(&["1.1.1.1", "203.0.113.7", "10.0.0.2"]),
            sa("203.0.113.7:0")
        );
        // With ports, brackets, quotes and empty entries.
        assert_eq!(one(&["[2001:db8::1]:4711,"]), sa("[2001:db8::1]:0"));
        assert_eq!(one(&["\"192.0.2.9:80\""]), sa("192.0.2.9:0"));
        // All trusted: the leftmost.
        assert_eq!(one(&["10.0.0.3, 10.0.0.2"]), sa("10.0.0.3:0"));
        // Garbage stops the walk at the proxy that added it.
        assert_eq!(one(&["203.0.113.7, unknown, 10.0.0.2"]), sa("10.0.0.2:0"));
        assert_eq!(one(&["garbage"]), peer);
        // No header: the peer.
        assert_eq!(one(&[]), peer);
        // An untrusted peer's header is ignored.
        let stranger = sa("198.51.100.1:6000");
        assert_eq!(
            forwarded_for(&l, stranger, ["203.0.113.7"].into_iter()),
            stranger
        );
        // No trusted proxies configured: nothing is trusted.
        assert_eq!(forwarded_for(&[], peer, ["203.0.113.7"].into_iter()), peer);
    }

    #[test]
    fn proxy_v1() {
        let h = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 80\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse_proxy(h),
            Proxy::Header(44, Some(sa("192.0.2.1:56324")))
        );
        let h6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\n";
        assert_eq!(
            parse_proxy(h6),
            Proxy::Header(h6.len(), Some(sa("[2001:db8::1]:4000")))
        );
        let unk = b"PROXY UNKNOWN\r\nGET";
        assert_eq!(parse_proxy(unk), Proxy::Header(15, None));
        // Arriving a byte at a time: partial until the line ends.
        let full = &h[..44];
        for n in 1..44 {
            assert_eq!(parse_proxy(&full[..n]), Proxy::Partial, "{n} bytes");
        }
        assert!(matches!(
            parse_proxy(b"GET / HTTP/1.1\r\n\r\n"),
            Proxy::Bad(_)
        ));
        assert!(matches!(
            parse_proxy(b"PROXY TCP4 999.0.2.1 198.51.100.2 1 80\r\n"),
            Proxy::Bad(_)
        ));
    }

    #[test]
    fn proxy_v2() {
        use ppp::v2::{Builder, Command, Protocol, Version};
        let addrs: ppp::v2::Addresses = (sa("192.0.2.1:56324"), sa("198.51.100.2:80")).into();
        let h = Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, addrs)
            .write_tlv(ppp::v2::Type::NoOp, b"x")
            .unwrap()
            .build()
            .unwrap();
        let mut data = h.clone();
        data.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            parse_proxy(&data),
            Proxy::Header(h.len(), Some(sa("192.0.2.1:56324")))
        );
        for n in 1..h.len() {
            assert_eq!(parse_proxy(&h[..n]), Proxy::Partial, "{n} bytes");
        }
        // LOCAL (a balancer's own health check): the connection's peer.
        let local = Builder::with_addresses(
            Version::Two | Command::Local,
            Protocol::Unspecified,
            ppp::v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        assert_eq!(parse_proxy(&local), Proxy::Header(local.len(), None));
        let v6: ppp::v2::Addresses = (sa("[2001:db8::1]:4000"), sa("[2001:db8::2]:443")).into();
        let h6 = Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, v6)
            .build()
            .unwrap();
        assert_eq!(
            parse_proxy(&h6),
            Proxy::Header(h6.len(), Some(sa("[2001:db8::1]:4000")))
        );
        let mut bad = h.clone();
        bad[12] = 0x31; // version 3
        assert!(matches!(parse_proxy(&bad), Proxy::Bad(_)));
    }
}
