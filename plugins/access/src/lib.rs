//! `access`: an access rule (SDK 1.2) that lets addresses in or keeps
//! them out, as nginx's `allow` and `deny`. The address is the client's
//! as the core reports it: behind `trusted_proxies` (X-Forwarded-For,
//! Forwarded) or the PROXY protocol, the real client's.
//!
//! ```yaml
//! access:
//!   - path: /admin/
//!     handler: access
//!     options: { allow: [10.0.0.0/8, "2001:db8::/32", 127.0.0.1] }   # everyone else: 403
//!   - path: /
//!     handler: access
//!     options:
//!       rules: [{ deny: 192.0.2.7 }, { allow: 192.0.2.0/24 }, { deny: all }]
//! ```
//!
//! Options (one of the three forms):
//! - `rules`: an ordered list of `{allow: X}` / `{deny: X}`, X an
//!   address, a network or `all`; the first that matches decides, and a
//!   request no rule matches passes (nginx's behaviour);
//! - `allow`: a list; these pass, everyone else is refused;
//! - `deny`: a list; these are refused, everyone else passes.
//!
//! `status` (default 403) and `body` shape the refusal.

use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;
use tamada_sdk::access::{Access, Verdict};
use tamada_sdk::prelude::*;

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Ordered `{allow: X}` / `{deny: X}` entries (X: an address, a
    /// network, or `all`); the first match decides; no match passes.
    rules: Option<Vec<RuleConf>>,
    /// These pass; everyone else is refused.
    allow: Option<Vec<String>>,
    /// These are refused; everyone else passes.
    deny: Option<Vec<String>>,
    /// The refusal's status (default 403).
    status: Option<u16>,
    /// The refusal's body.
    body: Option<String>,
}

/// `{allow: X}` or `{deny: X}`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RuleConf {
    allow: Option<String>,
    deny: Option<String>,
}

#[derive(Debug, Clone)]
enum Who {
    All,
    Net(IpNet),
}

impl Who {
    fn parse(s: &str) -> Result<Who, String> {
        if s == "all" {
            return Ok(Who::All);
        }
        if let Ok(n) = s.parse::<IpNet>() {
            return Ok(Who::Net(n.trunc()));
        }
        match s.parse::<IpAddr>() {
            Ok(a) => Ok(Who::Net(IpNet::from(a))),
            Err(_) => Err(format!(
                "`{s}` is not an address, a network (10.0.0.0/8, 2001:db8::/32) or `all`"
            )),
        }
    }
    fn matches(&self, ip: IpAddr) -> bool {
        match self {
            Who::All => true,
            Who::Net(n) => n.contains(&ip),
        }
    }
}

/// One rule list.
#[derive(Debug)]
pub struct AccessList {
    rules: Vec<(bool, Who)>,
    status: u16,
    body: String,
}

/// An IPv4 client seen through an IPv6 socket (`::ffff:a.b.c.d`) is
/// matched as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl AccessList {
    /// Whether `ip` may pass.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.rules
            .iter()
            .find(|(_, w)| w.matches(ip))
            .is_none_or(|(allow, _)| *allow)
    }
}

impl Access for AccessList {
    fn check(&self, req: &Request, res: &mut ResponseBuilder) -> Verdict {
        if self.allows(req.peer_addr().ip()) {
            return Verdict::Pass;
        }
        res.status(self.status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(self.body.clone());
        Verdict::Answer
    }
}

/// Builds a rule list from its options.
pub fn new(options: &Options) -> Result<AccessList, String> {
    let c: Config = options.parse()?;
    let list = |key: &str, v: &[String]| -> Result<Vec<Who>, String> {
        v.iter()
            .enumerate()
            .map(|(i, s)| Who::parse(s.trim()).map_err(|e| format!("{key}[{i}]: {e}")))
            .collect()
    };
    let rules = match (&c.rules, &c.allow, &c.deny) {
        (Some(r), None, None) => r
            .iter()
            .enumerate()
            .map(|(i, r)| match (&r.allow, &r.deny) {
                (Some(s), None) => Who::parse(s.trim())
                    .map(|w| (true, w))
                    .map_err(|e| format!("rules[{i}].allow: {e}")),
                (None, Some(s)) => Who::parse(s.trim())
                    .map(|w| (false, w))
                    .map_err(|e| format!("rules[{i}].deny: {e}")),
                _ => Err(format!(
                    "rules[{i}]: each entry is `{{allow: X}}` or `{{deny: X}}`"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        (None, Some(a), None) => {
            let mut r: Vec<_> = list("allow", a)?.into_iter().map(|w| (true, w)).collect();
            r.push((false, Who::All));
            r
        }
        (None, None, Some(d)) => list("deny", d)?.into_iter().map(|w| (false, w)).collect(),
        (None, None, None) => {
            return Err("give `allow`, `deny` or an ordered `rules` list".into());
        }
        _ => {
            return Err(
                "give one of `rules`, `allow` or `deny` (for both, an ordered `rules` list: the first match decides)"
                    .into(),
            );
        }
    };
    let status = c.status.unwrap_or(403);
    if !(400..=599).contains(&status) {
        return Err(format!("status: {status} is not an error status (400-599)"));
    }
    Ok(AccessList {
        rules,
        status,
        body: c
            .body
            .unwrap_or_else(|| format!("{status}: access denied\n")),
    })
}

tamada_sdk::export_plugin!(
    name: "access",
    access: new,
    schema: || tamada_sdk::schema::of::<Config>(),
);

#[cfg(test)]
mod tests {
    use super::*;
    use tamada_sdk::testing::TestRequest;

    fn list(yaml: &str) -> Result<AccessList, String> {
        new(&TestRequest::get("/").options(yaml))
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn first_match_decides_v4_and_v6() {
        let l = list("{ rules: [{deny: 192.0.2.7}, {allow: 192.0.2.0/24}, {allow: '2001:db8::/32'}, {deny: all}] }").unwrap();
        assert!(!l.allows(ip("192.0.2.7")));
        assert!(l.allows(ip("192.0.2.8")));
        assert!(l.allows(ip("::ffff:192.0.2.8")));
        assert!(l.allows(ip("2001:db8::1")));
        assert!(!l.allows(ip("2001:db9::1")));
        assert!(!l.allows(ip("10.0.0.1")));
        let open = list("{ rules: [{deny: 10.0.0.0/8}] }").unwrap();
        assert!(open.allows(ip("127.0.0.1")), "no match passes");
    }

    #[test]
    fn allow_and_deny_shortcuts() {
        let a = list("{ allow: [127.0.0.1, '::1'] }").unwrap();
        assert!(a.allows(ip("127.0.0.1")) && a.allows(ip("::1")));
        assert!(!a.allows(ip("127.0.0.2")));
        let d = list("{ deny: [127.0.0.2] }").unwrap();
        assert!(d.allows(ip("127.0.0.1")) && !d.allows(ip("127.0.0.2")));
        let v = TestRequest::get("/")
            .peer("127.0.0.2:5000".parse().unwrap())
            .check(&d);
        assert_eq!(v.verdict, Verdict::Answer);
        assert_eq!(v.response.get_status(), 403);
    }

    #[test]
    fn bad_options_name_the_entry() {
        let e = list("{ allow: [10.0.0.0/33] }").unwrap_err();
        assert!(e.contains("allow[0]"), "{e}");
        let e = list("{ rules: [{allow: 1.2.3.4}, {deny: nobody}] }").unwrap_err();
        assert!(e.contains("rules[1].deny"), "{e}");
        assert!(
            list("{ allow: [1.2.3.4], deny: [5.6.7.8] }")
                .unwrap_err()
                .contains("ordered")
        );
        assert!(list("{}").is_err());
        assert!(list("{ deny: [all], status: 200 }").is_err());
    }
}
