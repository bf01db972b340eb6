//! `headers`: a response filter (SDK 1.2) that sets, adds and removes
//! response header fields, by status and MIME type: `Cache-Control` and
//! `Expires` for assets (nginx's `expires`), security headers, and CORS
//! for an allow-list of origins.
//!
//! ```yaml
//! filters:
//!   - handler: headers
//!     options:
//!       set:
//!         X-Content-Type-Options: nosniff
//!         Referrer-Policy: strict-origin-when-cross-origin
//!       always: true                 # on error pages too
//!       rules:
//!         - types: [image/*, text/css, application/javascript]
//!           expires: 30d             # Expires and Cache-Control: max-age
//!         - status: [404]
//!           set: { Cache-Control: no-store }
//!       cors:
//!         origins: [https://app.example.com]
//!         credentials: true
//! ```
//!
//! The top-level keys are a first rule; `rules:` are more, applied in
//! order after it. A rule's keys:
//! - `set`: fields that replace any of the same name (the handler's
//!   too: a filter runs after the handler);
//! - `add`: fields added beside those of the same name (a value or a
//!   list of values);
//! - `remove`: names of fields taken out (`X-Powered-By`);
//! - `expires`: a duration (`30d`, `1h`), `epoch` or `max`: sets
//!   `Expires` and `Cache-Control: max-age=N` (`no-cache` for epoch),
//!   as nginx's `expires`;
//! - `status`: the statuses it applies to; by default those nginx's
//!   `add_header` applies to (200, 201, 204, 206, 301, 302, 303, 304,
//!   307, 308), or every status with `always: true`;
//! - `types`: MIME types it applies to (`*` matches any run: `image/*`);
//!   by default every answer.
//!
//! A value with CR, LF or NUL, or a name that is not a token, is a
//! `tamada -t` error at its line. The server's own framing fields
//! (`Content-Length`, `Transfer-Encoding`, `Connection`, `Date`,
//! `Server`) cannot be named.
//!
//! `cors`: for a request whose `Origin` is in `origins` (or any, with
//! `"*"`), `Access-Control-Allow-Origin` names it (with `Vary: Origin`),
//! and `Access-Control-Allow-Credentials`, `Access-Control-Expose-Headers`
//! follow the options; a preflight (`OPTIONS` with
//! `Access-Control-Request-Method`) is answered `204` with
//! `Access-Control-Allow-Methods`, `-Allow-Headers` and `-Max-Age`
//! whatever the handler said. Other origins get no CORS field (the
//! browser then refuses the answer to the page).

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};
use tamada_sdk::filter::{Action, Filter, ResponseHead};
use tamada_sdk::prelude::*;
use tamada_sdk::units::Secs;

/// A header field name, checked as it is read (a token, not one of the
/// server's framing fields).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, schemars::JsonSchema)]
#[schemars(transparent)]
struct Name(String);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if s.is_empty() || !s.bytes().all(token) {
            return Err(serde::de::Error::custom(format!(
                "`{}` is not a header field name (letters, digits and !#$%&'*+-.^_`|~)",
                s.escape_debug()
            )));
        }
        const OWN: &[&str] = &[
            "content-length",
            "transfer-encoding",
            "connection",
            "date",
            "server",
            "keep-alive",
            "upgrade",
            "trailer",
        ];
        if OWN.iter().any(|o| o.eq_ignore_ascii_case(&s)) {
            return Err(serde::de::Error::custom(format!(
                "`{s}` is the server's own field; it cannot be set here"
            )));
        }
        Ok(Name(s))
    }
}

/// A header field value, checked as it is read (no CR, LF or NUL).
#[derive(Debug, Clone, schemars::JsonSchema)]
#[schemars(transparent)]
struct Value(String);

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(serde::de::Error::custom(format!(
                "`{}`: a header value may not hold CR, LF or NUL",
                s.escape_debug()
            )));
        }
        Ok(Value(s.trim().to_owned()))
    }
}

#[derive(Deserialize, schemars::JsonSchema, Clone)]
#[serde(untagged)]
enum Values {
    One(Value),
    Many(Vec<Value>),
}

#[derive(Deserialize, schemars::JsonSchema, Clone)]
#[serde(untagged)]
enum Expires {
    /// A duration (`30d`, `1h`).
    For(Secs),
    /// `epoch` or `max` (or `off`).
    Word(String),
}

#[derive(Deserialize, schemars::JsonSchema, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RuleConf {
    /// Fields that replace any of the same name.
    #[serde(default)]
    set: BTreeMap<Name, Value>,
    /// Fields added beside any of the same name.
    #[serde(default)]
    add: BTreeMap<Name, Values>,
    /// Names of fields taken out.
    #[serde(default)]
    remove: Vec<Name>,
    /// `Expires` and `Cache-Control: max-age`: a duration, `epoch` or
    /// `max`.
    expires: Option<Expires>,
    /// The statuses it applies to (default: nginx's `add_header` list).
    status: Option<Vec<u16>>,
    /// Every status (error pages included).
    #[serde(default)]
    always: bool,
    /// MIME types it applies to (`*` matches any run).
    types: Option<Vec<String>>,
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Fields that replace any of the same name.
    #[serde(default)]
    set: BTreeMap<Name, Value>,
    /// Fields added beside any of the same name.
    #[serde(default)]
    add: BTreeMap<Name, Values>,
    /// Names of fields taken out.
    #[serde(default)]
    remove: Vec<Name>,
    /// `Expires` and `Cache-Control: max-age`: a duration, `epoch` or
    /// `max`.
    expires: Option<Expires>,
    /// The statuses the top-level rule applies to (default: nginx's
    /// `add_header` list).
    status: Option<Vec<u16>>,
    /// Every status (error pages included).
    #[serde(default)]
    always: bool,
    /// MIME types the top-level rule applies to (`*` matches any run).
    types: Option<Vec<String>>,
    /// More rules, applied in order after the top-level one.
    #[serde(default)]
    rules: Vec<RuleConf>,
    /// Cross-origin requests from an allow-list of origins.
    cors: Option<CorsConf>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct CorsConf {
    /// Allowed origins (`https://app.example.com`), or `"*"` for any.
    origins: Vec<Value>,
    /// A preflight's `Access-Control-Allow-Methods` (default GET, HEAD,
    /// POST).
    methods: Option<Vec<Name>>,
    /// A preflight's `Access-Control-Allow-Headers` (default: those the
    /// preflight asks for).
    headers: Option<Vec<Name>>,
    /// `Access-Control-Expose-Headers`.
    #[serde(default)]
    expose: Vec<Name>,
    /// `Access-Control-Allow-Credentials: true`.
    #[serde(default)]
    credentials: bool,
    /// A preflight's `Access-Control-Max-Age` (default 1 day).
    max_age: Option<Secs>,
}

const NGINX_STATUSES: &[u16] = &[200, 201, 204, 206, 301, 302, 303, 304, 307, 308];

enum Expiry {
    Off,
    Epoch,
    Max,
    For(Duration),
}

struct Rule {
    set: Vec<(String, String)>,
    add: Vec<(String, String)>,
    remove: Vec<String>,
    expires: Expiry,
    status: Option<Vec<u16>>,
    types: Option<Vec<String>>,
}

struct Cors {
    any: bool,
    origins: Vec<String>,
    methods: String,
    headers: Option<String>,
    expose: Option<String>,
    credentials: bool,
    max_age: u64,
}

/// The `headers` filter of one `filters:` entry.
pub struct Headers {
    rules: Vec<Rule>,
    cors: Option<Cors>,
}

fn rule(r: RuleConf, at: &str) -> Result<Rule, String> {
    let expires = match r.expires {
        None => Expiry::Off,
        // Past ten years a date means nothing more (nginx's `max`), and
        // it keeps the date printable.
        Some(Expires::For(s)) if s.0 > Duration::from_secs(315_360_000) => Expiry::Max,
        Some(Expires::For(s)) => Expiry::For(s.0),
        Some(Expires::Word(w)) => match w.as_str() {
            "off" => Expiry::Off,
            "epoch" => Expiry::Epoch,
            "max" => Expiry::Max,
            other => {
                return Err(format!(
                    "{at}expires: `{other}` is not a duration (30d, 1h), epoch, max or off"
                ));
            }
        },
    };
    if let Some(s) = &r.status
        && let Some(bad) = s.iter().find(|s| !(100..=999).contains(*s))
    {
        return Err(format!("{at}status: {bad} is not a status"));
    }
    Ok(Rule {
        set: r.set.into_iter().map(|(n, v)| (n.0, v.0)).collect(),
        add: r
            .add
            .into_iter()
            .flat_map(|(n, v)| match v {
                Values::One(v) => vec![(n.0.clone(), v.0)],
                Values::Many(vs) => vs.into_iter().map(|v| (n.0.clone(), v.0)).collect(),
            })
            .collect(),
        remove: r.remove.into_iter().map(|n| n.0).collect(),
        expires,
        status: if r.always {
            None
        } else {
            Some(r.status.unwrap_or_else(|| NGINX_STATUSES.to_vec()))
        },
        types: r
            .types
            .map(|t| t.into_iter().map(|m| m.to_ascii_lowercase()).collect()),
    })
}

/// Builds the filter from its options.
pub fn new(options: &Options) -> Result<Headers, String> {
    let c: Config = options.parse()?;
    let first = RuleConf {
        set: c.set,
        add: c.add,
        remove: c.remove,
        expires: c.expires,
        status: c.status,
        always: c.always,
        types: c.types,
    };
    let mut rules = vec![rule(first, "")?];
    for (i, r) in c.rules.into_iter().enumerate() {
        rules.push(rule(r, &format!("rules[{i}]."))?);
    }
    let cors = match c.cors {
        None => None,
        Some(cc) => {
            let any = cc.origins.iter().any(|o| o.0 == "*");
            if any && cc.credentials {
                return Err(
                    "cors: `*` with credentials: true would let any site read answers with the user's cookies; list the origins"
                        .into(),
                );
            }
            let join = |v: Vec<Name>| v.into_iter().map(|n| n.0).collect::<Vec<_>>().join(", ");
            Some(Cors {
                any,
                origins: cc.origins.into_iter().map(|o| o.0).collect(),
                methods: cc
                    .methods
                    .map(join)
                    .unwrap_or_else(|| "GET, HEAD, POST".into()),
                headers: cc.headers.map(join),
                expose: (!cc.expose.is_empty()).then(|| join(cc.expose)),
                credentials: cc.credentials,
                max_age: cc.max_age.map_or(86_400, |s| s.0.as_secs()),
            })
        }
    };
    Ok(Headers { rules, cors })
}

impl Rule {
    fn applies(&self, head: &ResponseHead) -> bool {
        if let Some(s) = &self.status
            && !s.contains(&head.status())
        {
            return false;
        }
        if let Some(types) = &self.types {
            let m = tamada_coding::essence(head.header_str("content-type").unwrap_or(""));
            if !types.iter().any(|t| tamada_coding::type_matches(t, &m)) {
                return false;
            }
        }
        true
    }

    fn apply(&self, head: &mut ResponseHead) {
        for n in &self.remove {
            head.remove_header(n);
        }
        for (n, v) in &self.set {
            head.set_header(n, v);
        }
        for (n, v) in &self.add {
            head.append_header(n, v);
        }
        match self.expires {
            Expiry::Off => {}
            Expiry::Epoch => {
                head.set_header("expires", "Thu, 01 Jan 1970 00:00:01 GMT");
                head.set_header("cache-control", "no-cache");
            }
            Expiry::Max => {
                head.set_header("expires", "Thu, 31 Dec 2037 23:55:55 GMT");
                head.set_header("cache-control", "max-age=315360000");
            }
            Expiry::For(d) => {
                let at = SystemTime::now() + d;
                head.set_header("expires", httpdate::fmt_http_date(at));
                head.set_header("cache-control", format!("max-age={}", d.as_secs()));
            }
        }
    }
}

impl Cors {
    fn apply(&self, req: &Request, head: &mut ResponseHead) {
        let Some(origin) = req.header("origin") else {
            return;
        };
        let allowed = self.any || self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin));
        // Answers differ by Origin: caches must know.
        if !self.any || self.credentials {
            add_vary(head, "Origin");
        }
        if !allowed {
            return;
        }
        let value = if self.any && !self.credentials {
            "*"
        } else {
            origin
        };
        head.set_header("access-control-allow-origin", value);
        if self.credentials {
            head.set_header("access-control-allow-credentials", "true");
        }
        let preflight =
            req.method() == "OPTIONS" && req.header("access-control-request-method").is_some();
        if preflight {
            head.set_status(204);
            head.remove_header("content-type");
            head.set_header("access-control-allow-methods", &self.methods);
            let asked = req.header("access-control-request-headers");
            match (&self.headers, asked) {
                (Some(h), _) => {
                    head.set_header("access-control-allow-headers", h);
                }
                (None, Some(a)) if !a.trim().is_empty() => {
                    head.set_header("access-control-allow-headers", a);
                    add_vary(head, "Access-Control-Request-Headers");
                }
                _ => {}
            }
            head.set_header("access-control-max-age", self.max_age.to_string());
        } else if let Some(e) = &self.expose {
            head.set_header("access-control-expose-headers", e);
        }
    }
}

fn add_vary(head: &mut ResponseHead, what: &str) {
    match head.header_str("vary").map(str::to_owned) {
        None => {
            head.set_header("vary", what);
        }
        Some(v)
            if !v
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(what) || t.trim() == "*") =>
        {
            head.set_header("vary", format!("{v}, {what}"));
        }
        _ => {}
    }
}

impl Filter for Headers {
    fn response(&self, req: &Request, head: &mut ResponseHead) -> Action {
        for r in &self.rules {
            if r.applies(head) {
                r.apply(head);
            }
        }
        if let Some(c) = &self.cors {
            let preflight =
                req.method() == "OPTIONS" && req.header("access-control-request-method").is_some();
            c.apply(req, head);
            if preflight && head.status() == 204 {
                // The handler's body (an Allow page) is not sent.
                return Action::Replace(Body::Empty);
            }
        }
        Action::Keep
    }
}

tamada_sdk::export_plugin!(
    name: "headers",
    filter: new,
    schema: || tamada_sdk::schema::of::<Config>(),
);

#[cfg(test)]
mod tests;
