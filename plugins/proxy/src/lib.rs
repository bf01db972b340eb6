//! `proxy`: a reverse proxy to HTTP/1.1 upstreams (`host:port`,
//! `https://host:port` or `unix:/path`), like nginx's `proxy_pass` with
//! `keepalive`.
//!
//! A request's life is one machine (`call.rs`) over the gateway's
//! upstream exchange: pick an upstream ([`upstream`]: round robin or least
//! connections, skipping one the passive health check took out), take an
//! idle connection that is still open or connect, send the head
//! ([`head`]) and the body while watching for an early answer, read the
//! response head ([`response`]) and hand its body to the core, from
//! memory when small, else as a stream that puts the connection back in
//! the pool once the body ended cleanly. It runs on the event loop for a
//! body in memory, on the pool otherwise. What may be retried is retried
//! on the next upstream; everything else is a 502 (504 for a timeout)
//! with one line in the error log.

pub mod body;
mod call;
pub mod config;
pub mod head;
pub mod response;
mod source;
pub mod upstream;

use config::{Config, Settings};
use std::sync::Arc;
use std::time::Duration;
use tamada_sdk::prelude::*;
use upstream::Upstreams;

/// A route's proxy.
pub struct Proxy {
    s: Settings,
    ups: Arc<Upstreams>,
}

/// Builds the handler from its options.
pub fn new(options: &Options) -> Result<Proxy, String> {
    let c: Config = options.parse()?;
    let base = options
        .vhost()
        .config_file()
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    let s = Settings::from_config(c, &base)?;
    let ups = Arc::new(Upstreams::new(&s));
    Ok(Proxy { s, ups })
}

impl Proxy {
    fn error(&self, res: &mut ResponseBuilder, status: u16, why: &str) -> Outcome {
        res.status(status)
            .header("content-type", "text/plain; charset=utf-8")
            .header("cache-control", "no-store")
            .body(match status {
                504 => "504 Gateway Timeout: the upstream did not answer in time\n",
                503 => "503 Service Unavailable\n",
                400 => "400 Bad Request: the request body could not be read\n",
                _ => "502 Bad Gateway: the upstream did not answer properly\n",
            });
        let _ = why;
        Outcome::Done
    }
}

impl Handler for Proxy {
    fn placement(&self) -> Placement {
        Placement::Inline
    }

    fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
        if req.method() == "TRACE" && !self.s.allow_trace {
            // As nginx: never forwarded (it would echo the client's
            // cookies and credentials back to a script that asks).
            res.status(405)
                .header("allow", "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH")
                .header("content-type", "text/plain; charset=utf-8")
                .body("405 Method Not Allowed: TRACE is not forwarded\n");
            return Outcome::Done;
        }
        if req.can_wait() {
            return self.handle_inline(req, res);
        }
        if req.is_inline() {
            // A server that cannot wait: the pool's path.
            return req.defer();
        }
        self.handle_blocking(req, res)
    }
}

/// The exchange's notes, as nginx's `$upstream_addr`, `$upstream_status`
/// and `$upstream_response_time` (seconds to the response head).
fn note(req: &Request, labels: &[String], status: u16, took: Duration) {
    match labels {
        [] => {}
        [one] => {
            req.note("upstream_addr", one);
        }
        _ => {
            req.note("upstream_addr", &labels.join(", "));
        }
    }
    req.note("upstream_status", &status.to_string());
    req.note(
        "upstream_response_time",
        &format!("{:.3}", took.as_secs_f64()),
    );
}

tamada_sdk::export_plugin!(
    name: "proxy",
    new: new,
    roles: [Handler],
    schema: |_| tamada_sdk::schema::of::<config::Config>(),
);
