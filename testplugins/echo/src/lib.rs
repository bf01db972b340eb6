//! Test plugin `echo`: reports what it saw of the request, so tests can
//! assert on the core's parsing, routing and body reading.
//!
//! Options: `tag` (put in the reply), `decline` (pass every request on),
//! `panic_on` (a path that panics), `sleep_ms` (delay before answering),
//! `stream` (answer with a streamed body of that many lines),
//! `stream_bytes` (a streamed body of that many bytes),
//! `redirect` (answer with an internal redirect to this path),
//! `fail_on` (a path answered with Outcome::Error), `status`.

use serde::Deserialize;
use std::io::Read;
use tamada_sdk::prelude::*;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Echo {
    #[serde(default)]
    tag: String,
    #[serde(default)]
    decline: bool,
    panic_on: Option<String>,
    fail_on: Option<String>,
    #[serde(default)]
    sleep_ms: u64,
    stream: Option<usize>,
    /// Stream this many bytes of `x`, in reads as large as asked.
    stream_bytes: Option<u64>,
    redirect: Option<String>,
    status: Option<u16>,
}

struct Lines {
    left: usize,
    n: usize,
}

impl BodyStream for Lines {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        self.left -= 1;
        self.n += 1;
        let line = format!("line {}\n", self.n);
        buf[..line.len()].copy_from_slice(line.as_bytes());
        Ok(line.len())
    }
}

struct Bytes {
    left: u64,
}

impl BodyStream for Bytes {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        buf[..n].fill(b'x');
        self.left -= n as u64;
        Ok(n)
    }
}

impl Handler for Echo {
    fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
        if self.decline {
            return Outcome::Decline;
        }
        if self.panic_on.as_deref() == Some(req.path()) {
            panic!("echo was told to panic on {}", req.path());
        }
        if self.fail_on.as_deref() == Some(req.path()) {
            log::error!("echo fails on {}", req.path());
            return Outcome::Error(format!("echo was told to fail on {}", req.path()));
        }
        if let Some(to) = &self.redirect
            && req.redirects() == 0
        {
            return Outcome::Redirect(to.clone());
        }
        if self.sleep_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(self.sleep_ms));
        }
        if let Some(n) = self.stream_bytes {
            res.status(200)
                .header("content-type", "application/octet-stream")
                .body(Body::Stream(Box::new(Bytes { left: n })));
            return Outcome::Done;
        }
        if let Some(n) = self.stream {
            res.status(200)
                .header("content-type", "text/plain")
                .body(Body::Stream(Box::new(Lines { left: n, n: 0 })));
            return Outcome::Done;
        }
        let mut body = Vec::new();
        let body_result = req.body().read_to_end(&mut body);
        let mut out = String::new();
        out.push_str(&format!("tag={}\n", self.tag));
        out.push_str(&format!("method={}\n", req.method()));
        out.push_str(&format!("target={}\n", req.target()));
        out.push_str(&format!("path={}\n", req.path()));
        out.push_str(&format!("query={}\n", req.query().unwrap_or("-")));
        out.push_str(&format!("host={}\n", req.host()));
        out.push_str(&format!("vhost={}\n", req.vhost().name()));
        out.push_str(&format!(
            "config-file={}\n",
            req.vhost().config_file().display()
        ));
        out.push_str(&format!("route={}\n", req.route()));
        out.push_str(&format!("rest={}\n", req.rest()));
        let (major, minor) = req.version();
        out.push_str(&format!("version={major}.{minor}\n"));
        out.push_str(&format!("peer={}\n", req.peer_addr()));
        out.push_str(&format!("local={}\n", req.local_addr()));
        out.push_str(&format!("redirects={}\n", req.redirects()));
        out.push_str(&format!("scheme={}\n", req.scheme()));
        if let Some(u) = req.user() {
            out.push_str(&format!("user={} ({})\n", u.name, u.auth_type));
        }
        if let Some(t) = req.tls() {
            out.push_str(&format!("tls-version={}\n", t.version));
            out.push_str(&format!("tls-cipher={}\n", t.cipher));
            out.push_str(&format!("tls-sni={}\n", t.sni.unwrap_or_default()));
            out.push_str(&format!("tls-alpn={}\n", t.alpn.unwrap_or_default()));
            out.push_str(&format!("tls-resumed={}\n", t.resumed));
            if let Some(c) = t.client_cert {
                out.push_str(&format!("client-subject={}\n", c.subject));
                out.push_str(&format!("client-verify={}\n", c.verify));
            }
        }
        out.push_str(&format!(
            "x-multi={}\n",
            req.header_joined("x-multi").unwrap_or_default()
        ));
        match body_result {
            Ok(_) => {
                out.push_str(&format!("body-len={}\n", body.len()));
                out.push_str(&format!(
                    "body-sum={}\n",
                    body.iter().map(|&b| b as u64).sum::<u64>()
                ));
                if body.len() <= 256 {
                    out.push_str(&format!("body={}\n", String::from_utf8_lossy(&body)));
                }
            }
            Err(e) => {
                out.push_str(&format!("body-error={e}\n"));
            }
        }
        res.status(self.status.unwrap_or(200))
            .header("content-type", "text/plain")
            .header("x-echo-tag", &self.tag)
            .body(out);
        Outcome::Done
    }
}

/// The access side (SDK 1.2): a rule that does what its options say, for
/// the core's access phase tests.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Rule {
    /// `pass`, `user`, `answer`, `rewrite` or `error`.
    verdict: String,
    /// Only when the path contains this.
    #[serde(default)]
    when: Option<String>,
    /// The user's name, the answer's status, or the rewrite's target.
    #[serde(default)]
    arg: String,
    /// Defer to the pool first (as a check that must block).
    #[serde(default)]
    defer: bool,
}

impl tamada_sdk::access::Access for Rule {
    fn check(&self, req: &Request, res: &mut ResponseBuilder) -> tamada_sdk::access::Verdict {
        use tamada_sdk::access::Verdict;
        if self
            .when
            .as_deref()
            .is_some_and(|w| !req.path().contains(w))
        {
            return Verdict::Pass;
        }
        if self.defer && req.is_inline() {
            req.defer();
            return Verdict::Pass;
        }
        match self.verdict.as_str() {
            "user" => Verdict::User {
                name: self.arg.clone(),
                auth_type: "Test".into(),
            },
            "answer" => {
                res.status(self.arg.parse().unwrap_or(403))
                    .header(
                        "x-rule",
                        &format!("{} inline={}", self.arg, req.is_inline()),
                    )
                    .body(format!("refused by rule {}\n", self.arg));
                Verdict::Answer
            }
            "rewrite" => Verdict::Rewrite(self.arg.clone()),
            "error" => Verdict::Error("told to fail".into()),
            _ => Verdict::Pass,
        }
    }
}

tamada_sdk::export_plugin!(
    name: "echo",
    new: |o: &Options| o.parse::<Echo>(),
    access: |o: &Options| o.parse::<Rule>(),
);
