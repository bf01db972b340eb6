//! Who may read the metrics: an allow-list of addresses and CIDR blocks.
//!
//! SECURITY: metrics tell an outsider which vhosts exist and how busy they
//! are, so the endpoint answers only loopback clients unless the admin
//! lists more. Written by hand on purpose: it is forty lines of `IpAddr`
//! arithmetic, fully tested here, and the plugin stays dependency-free.

use std::net::IpAddr;

/// One entry: an address and how many leading bits of it must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// Parses `10.0.0.0/8`, `::1`, `fd00::/8` or a bare address (a /32 or
    /// /128). The error names the value, since it ends up in `tamada -t`'s
    /// output next to the file name.
    pub fn parse(s: &str) -> Result<Net, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("`{s}`: the prefix length must be 0 to {max}")),
            },
        };
        let net = Net { addr, prefix };
        // `10.1.2.3/8` is almost always a typo for `10.0.0.0/8` (or for
        // `10.1.2.3/32`); refuse it rather than guess which.
        let masked = net.masked(addr);
        if masked != bits(addr) {
            let base = match addr {
                IpAddr::V4(_) => IpAddr::from(u32::try_from(masked).unwrap_or(0).to_be_bytes()),
                IpAddr::V6(_) => IpAddr::from(masked.to_be_bytes()),
            };
            return Err(format!(
                "`{s}` has bits set after the prefix: write `{base}/{prefix}` for the block, or `{addr}` for the one address"
            ));
        }
        Ok(net)
    }

    /// The leading `prefix` bits of `ip`, as a number.
    fn masked(&self, ip: IpAddr) -> u128 {
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let host_bits = width - u32::from(self.prefix);
        // A shift by 128 overflows; `checked_shl` turns a /0 into "no bits".
        let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
        bits(ip) & mask
    }

    /// Whether `ip` is inside this block (never across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && self.masked(ip) == bits(self.addr)
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The `allow` option: the clients that may read the metrics.
#[derive(Debug, Clone)]
pub struct AllowList(Vec<Net>);

impl AllowList {
    /// The default: this machine only (`127.0.0.0/8` and `::1`).
    pub fn loopback() -> AllowList {
        AllowList(vec![
            Net::parse("127.0.0.0/8").expect("literal CIDR"),
            Net::parse("::1").expect("literal address"),
        ])
    }

    /// Parses the option's entries; an empty list is refused, since it
    /// would lock everybody out and is more likely a mistake than a wish.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AllowList, String> {
        if entries.is_empty() {
            return Err("an empty list refuses every client; leave `allow` out for loopback only, or write [0.0.0.0/0, ::/0] for everybody".into());
        }
        entries
            .iter()
            .map(|e| Net::parse(e.as_ref().trim()))
            .collect::<Result<_, _>>()
            .map(AllowList)
    }

    /// Whether the client at `ip` may read the metrics.
    ///
    /// SECURITY: on a dual-stack socket an IPv4 client shows up as
    /// `::ffff:a.b.c.d`; it is matched as the IPv4 address it is, so that
    /// `127.0.0.0/8` and `10.0.0.0/8` mean the same whatever the server
    /// binds.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_is_loopback_only() {
        let a = AllowList::loopback();
        for ok in ["127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1"] {
            assert!(a.allows(ip(ok)), "{ok}");
        }
        for no in ["10.0.0.1", "128.0.0.1", "::2", "::ffff:10.0.0.1", "fe80::1"] {
            assert!(!a.allows(ip(no)), "{no}");
        }
    }

    #[test]
    fn blocks_and_single_addresses() {
        let a = AllowList::parse(&["10.0.0.0/8", "192.168.1.7", "fd00::/8", " 2001:db8::/32 "])
            .unwrap();
        for ok in [
            "10.0.0.0",
            "10.255.255.255",
            "192.168.1.7",
            "fd12::1",
            "2001:db8:ffff::1",
        ] {
            assert!(a.allows(ip(ok)), "{ok}");
        }
        for no in [
            "11.0.0.0",
            "192.168.1.8",
            "127.0.0.1",
            "fe00::1",
            "2001:db9::1",
        ] {
            assert!(!a.allows(ip(no)), "{no}");
        }
    }

    #[test]
    fn zero_prefixes_match_their_whole_family() {
        let a = AllowList::parse(&["0.0.0.0/0"]).unwrap();
        assert!(a.allows(ip("8.8.8.8")) && a.allows(ip("::ffff:1.2.3.4")));
        assert!(!a.allows(ip("::1")), "an IPv4 block never matches IPv6");
        let a = AllowList::parse(&["::/0"]).unwrap();
        assert!(a.allows(ip("2001:db8::1")) && !a.allows(ip("1.2.3.4")));
    }

    #[test]
    fn errors_name_the_value() {
        let err = |s: &str| Net::parse(s).unwrap_err();
        assert_eq!(
            err("10.0.0.0/33"),
            "`10.0.0.0/33`: the prefix length must be 0 to 32"
        );
        assert_eq!(
            err("::/129"),
            "`::/129`: the prefix length must be 0 to 128"
        );
        assert_eq!(
            err("10.0.0.0/x"),
            "`10.0.0.0/x`: the prefix length must be 0 to 32"
        );
        assert_eq!(
            err("localhost"),
            "`localhost` is not an IP address or CIDR block"
        );
        assert_eq!(
            err("10.0.0/8"),
            "`10.0.0/8` is not an IP address or CIDR block"
        );
        assert_eq!(
            err("10.1.2.3/8"),
            "`10.1.2.3/8` has bits set after the prefix: write `10.0.0.0/8` for the block, or `10.1.2.3` for the one address"
        );
        assert!(err("fd00::1/8").contains("write `fd00::/8`"));
        assert!(
            AllowList::parse::<&str>(&[])
                .unwrap_err()
                .contains("empty list")
        );
    }
}
