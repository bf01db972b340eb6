//! Upstream addresses (`host:port`, `unix:/path`) and trusted networks
//! (CIDRs), checked while the options are parsed: an error carries the
//! option path, so the host names the conf.d file's own line.

use serde::{Deserialize, Deserializer};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// An upstream address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addr {
    Tcp { addr: SocketAddr, name: String },
    Unix(PathBuf),
}

impl Addr {
    /// As the admin wrote it (log lines, notes, `host: upstream`).
    pub fn label(&self) -> String {
        match self {
            Addr::Tcp { name, .. } => name.clone(),
            Addr::Unix(p) => format!("unix:{}", p.display()),
        }
    }

    /// `host:port` (the name resolved now, its first address) or
    /// `unix:/absolute/path`.
    pub fn parse(s: &str) -> Result<Addr, String> {
        let s = s.trim();
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
                "`{s}` is not host:port or unix:/path (no scheme: write 127.0.0.1:8080)"
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
