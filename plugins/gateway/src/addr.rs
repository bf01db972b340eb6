//! Upstream addresses (`host:port`, `unix:/path`) and trusted networks
//! (CIDRs), checked while the options are parsed: an error carries the
//! option path, so the host names the conf.d file's own line.

use serde::{Deserialize, Deserializer};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// An upstream address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addr {
    /// `host:port`; `tls` for an `https://` upstream.
    Tcp {
        addr: SocketAddr,
        name: String,
        tls: bool,
    },
    Unix(PathBuf),
}

impl Addr {
    /// As the admin wrote it (log lines, notes): `host:port`,
    /// `https://host:port`, `unix:/path`.
    pub fn label(&self) -> String {
        match self {
            Addr::Tcp {
                name, tls: true, ..
            } => format!("https://{name}"),
            Addr::Tcp { name, .. } => name.clone(),
            Addr::Unix(p) => format!("unix:{}", p.display()),
        }
    }

    /// The host part of `host:port` (the name TLS verifies), without
    /// brackets.
    pub fn host(&self) -> Option<&str> {
        match self {
            Addr::Tcp { name, .. } => name
                .rsplit_once(':')
                .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']')),
            Addr::Unix(_) => None,
        }
    }

    /// An HTTPS upstream.
    pub fn is_tls(&self) -> bool {
        matches!(self, Addr::Tcp { tls: true, .. })
    }

    /// `host:port` (the name resolved now, its first address),
    /// `https://host[:port]` (443 by default), `http://host[:port]` or
    /// `unix:/absolute/path`.
    pub fn parse(s: &str) -> Result<Addr, String> {
        let s = s.trim();
        for (scheme, port, tls) in [("https://", 443, true), ("http://", 80, false)] {
            if let Some(rest) = s.strip_prefix(scheme) {
                let rest = rest.strip_suffix('/').unwrap_or(rest);
                if rest.contains('/') || rest.contains('?') || rest.is_empty() {
                    return Err(format!(
                        "`{s}`: an upstream is {scheme}host[:port], without a path (replace_prefix rewrites paths)"
                    ));
                }
                let has_port = match rest.rsplit_once(':') {
                    Some((h, p)) => !h.ends_with(':') && p.bytes().all(|b| b.is_ascii_digit()),
                    None => false,
                } && !(rest.starts_with('[') && rest.ends_with(']'));
                let with_port = if has_port {
                    rest.to_owned()
                } else {
                    format!("{rest}:{port}")
                };
                return match Addr::parse(&with_port)? {
                    Addr::Tcp { addr, name, .. } => Ok(Addr::Tcp { addr, name, tls }),
                    u => Ok(u),
                };
            }
        }
        if let Some(p) = s.strip_prefix("unix:") {
            if !p.starts_with('/') {
                return Err(format!(
                    "`{s}`: a unix socket needs an absolute path (unix:/run/app.sock)"
                ));
            }
            return Ok(Addr::Unix(PathBuf::from(p)));
        }
        if s.contains("://") {
            return Err(format!(
                "`{s}` is not host:port, https://host:port or unix:/path"
            ));
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!(
                "`{s}` is not host:port or unix:/path (the port is missing)"
            ));
        };
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("`{s}` is not host:port or unix:/path"));
        }
        let addr = s
            .to_socket_addrs()
            .map_err(|e| format!("`{s}`: {e}"))?
            .next()
            .ok_or_else(|| format!("`{s}`: the name has no address"))?;
        Ok(Addr::Tcp {
            addr,
            name: s.to_owned(),
            tls: false,
        })
    }
}

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Addr::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A trusted network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr(pub ipnet::IpNet);

impl Cidr {
    /// `10.0.0.0/8`, `::1/128` or a bare address.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        if let Ok(n) = s.parse::<ipnet::IpNet>() {
            return Ok(Cidr(n.trunc()));
        }
        s.parse::<IpAddr>()
            .map(|ip| Cidr(ipnet::IpNet::from(ip)))
            .map_err(|_| format!("`{s}` is not an address or a CIDR (10.0.0.0/8, ::1)"))
    }
    /// Whether `ip` (an IPv4-mapped IPv6 address as IPv4) is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Cidr::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_and_http_urls_name_tcp_upstreams() {
        let a = Addr::parse("https://127.0.0.1:8443").unwrap();
        assert!(a.is_tls());
        assert_eq!(a.host(), Some("127.0.0.1"));
        assert_eq!(a.label(), "https://127.0.0.1:8443");
        let a = Addr::parse("https://localhost/").unwrap();
        assert!(matches!(&a, Addr::Tcp { name, tls: true, .. } if name == "localhost:443"));
        assert_eq!(a.host(), Some("localhost"));
        let a = Addr::parse("https://[::1]").unwrap();
        assert!(matches!(&a, Addr::Tcp { name, .. } if name == "[::1]:443"));
        assert_eq!(a.host(), Some("::1"));
        let a = Addr::parse("http://127.0.0.1").unwrap();
        assert!(matches!(&a, Addr::Tcp { name, tls: false, .. } if name == "127.0.0.1:80"));
        assert!(!Addr::parse("127.0.0.1:80").unwrap().is_tls());
        for bad in [
            "https://",
            "https://host/path",
            "ftp://host:21",
            "https://h:0",
        ] {
            assert!(Addr::parse(bad).is_err(), "{bad}");
        }
    }
}
