//! `metrics`: request counters in the Prometheus text format.
//!
//! One plugin, two roles, chosen by where a vhost's YAML file names it:
//!
//! ```yaml
//! loggers:                     # count this vhost's traffic ...
//!   - handler: metrics
//! routes:                      # ... and serve it to Prometheus
//!   - path: /metrics
//!     handler: metrics
//!     options: { allow: [127.0.0.1, 10.0.0.0/8] }
//! ```
//!
//! - **As a logger** ([`Role::Logger`]) its [`Handler::log`] phase runs on
//!   the worker thread after each response of the vhost is complete, and
//!   adds the exchange to a process-wide registry: requests by method and
//!   status code, bytes in and out, incomplete responses, and a duration
//!   histogram. The cost is a handful of atomic adds (`registry.rs`
//!   explains the layout and why it is a `static`).
//! - **As a route handler** ([`Role::Handler`]) its [`Handler::handle`]
//!   answers `GET` and `HEAD` with the registry in the text exposition
//!   format 0.0.4 (`exposition.rs`), to clients on its allow-list
//!   (`allow.rs`; loopback by default, others get 403). Other methods get
//!   405 with `Allow: GET, HEAD`.
//!
//! ## What this plugin shows SDK users
//!
//! - **A streaming body.** The response is a [`Body::Stream`]: a
//!   [`BodyStream`] that the server pulls from as the client drains the
//!   socket, so the exposition is rendered one metric family at a time,
//!   and not at all for `HEAD`. Use this form whenever a body is generated
//!   and its length is not known up front; the server sends it chunked on
//!   HTTP/1.1 and close-delimited on HTTP/1.0.
//! - **One plugin as logger and handler**, picked with
//!   [`Options::role`], each role with its own options type.
//! - **State shared between instances** (and between vhosts, and across
//!   reloads) in a `static`, locked only to insert.
//! - **Options with serde and `deny_unknown_fields`**, checked when the
//!   instance is built, so `tamada -t` names the file and the mistake
//!   (a typo in a key, a bad CIDR, unsorted buckets) before any request.
//!
//! Several vhosts may feed one registry (the `registry` option names it;
//! default `default`), each with its own `vhost` label; one `/metrics`
//! route then shows them all. Counters live as long as the server
//! process: a reload (SIGHUP) keeps them, a restart starts them at zero,
//! and `process_start_time_seconds` tells Prometheus which one happened.
//!
//! This plugin contains no `unsafe` and depends on nothing but the SDK,
//! serde and log.

mod allow;
mod exposition;
mod process;
mod registry;

use allow::AllowList;
use registry::{Histogram, Method, Registry, VhostSeries};
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tamada_sdk::prelude::*;

/// Duration buckets in seconds when `buckets` is not given: Prometheus'
/// client defaults (5 ms to 10 s) plus 1 ms and 2.5 ms, since a file
/// served from the page cache finishes well under 5 ms and would
/// otherwise all land in the first bucket.
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn default_registry() -> String {
    "default".into()
}

/// Options of the logger role (`loggers: - handler: metrics`).
#[derive(Deserialize, schemars::JsonSchema, Debug)]
#[serde(deny_unknown_fields)]
struct LoggerConfig {
    /// The registry to count into.
    #[serde(default = "default_registry")]
    registry: String,
    /// Upper bounds of the duration histogram, in seconds.
    buckets: Option<Vec<f64>>,
}

/// Options of the handler role (`routes: - handler: metrics`).
#[derive(Deserialize, schemars::JsonSchema, Debug)]
#[serde(deny_unknown_fields)]
struct EndpointConfig {
    /// The registry to show.
    #[serde(default = "default_registry")]
    registry: String,
    /// Addresses and CIDR blocks that may read the metrics.
    allow: Option<Vec<String>>,
}

/// An instance: counting for a vhost, or serving a registry.
pub enum Metrics {
    /// Built for `loggers:`.
    Logger(Logger),
    /// Built for `routes:`.
    Endpoint(Endpoint),
}

/// The logger role: counts one vhost's exchanges.
pub struct Logger {
    /// Held directly, so the log phase never looks the vhost up.
    series: Arc<VhostSeries>,
    duration: Arc<Histogram>,
}

/// The handler role: serves one registry.
pub struct Endpoint {
    registry: Arc<Registry>,
    allow: AllowList,
}

/// Builds an instance from its options and role.
pub fn new(options: &Options) -> Result<Metrics, String> {
    match options.role() {
        Role::Logger => {
            let c: LoggerConfig = options.parse()?;
            let buckets = match c.buckets {
                Some(b) => check_buckets(&b).map_err(|e| format!("buckets: {e}"))?,
                None => DEFAULT_BUCKETS.to_vec(),
            };
            let registry = registry::registry(&check_registry(&c.registry)?);
            let (series, duration) = registry.vhost(options.vhost().name(), &buckets);
            Ok(Metrics::Logger(Logger { series, duration }))
        }
        Role::Handler => {
            let c: EndpointConfig = options.parse()?;
            let allow = match &c.allow {
                Some(list) => AllowList::parse(list).map_err(|e| format!("allow: {e}"))?,
                None => AllowList::loopback(),
            };
            Ok(Metrics::Endpoint(Endpoint {
                registry: registry::registry(&check_registry(&c.registry)?),
                allow,
            }))
        }
    }
}

fn check_registry(name: &str) -> Result<String, String> {
    if name.trim().is_empty() {
        return Err("registry: the name is empty".into());
    }
    Ok(name.to_owned())
}

/// Bucket bounds must be finite, not negative, and strictly increasing:
/// Prometheus rejects a histogram whose `le` values repeat, and a bound
/// out of order would make the cumulative counts go down.
fn check_buckets(b: &[f64]) -> Result<Vec<f64>, String> {
    for (i, &v) in b.iter().enumerate() {
        if !v.is_finite() || v < 0.0 {
            return Err(format!(
                "`{v}` is not a duration in seconds (`+Inf` is always added)"
            ));
        }
        if i > 0 && v <= b[i - 1] {
            return Err(format!(
                "`{v}` follows `{}`: bounds must be strictly increasing",
                b[i - 1]
            ));
        }
    }
    Ok(b.to_vec())
}

impl Handler for Logger {
    fn log(&self, entry: &LogEntry) {
        let s = &self.series;
        s.response_bytes
            .fetch_add(entry.body_bytes_sent(), Ordering::Relaxed);
        s.request_bytes
            .fetch_add(entry.bytes_received(), Ordering::Relaxed);
        if !entry.completed() {
            s.incomplete.fetch_add(1, Ordering::Relaxed);
        }
        self.duration.observe(entry.duration());
        // Last, so that a scrape that counts this exchange also sees the
        // counters above (see `VhostSeries` on memory ordering).
        let method = Method::from_token(entry.request().method());
        s.count_request(method, entry.status());
    }

    /// The server's record of a plugin call that held its event loop
    /// (its watchdog makes one for every such call, at trace level).
    fn record(&self, rec: &Record) {
        if rec.source() == "tamada" && rec.message().starts_with("loop stall: ") {
            self.series.loop_stalls.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Handler for Endpoint {
    fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
        // The allow-list comes first, for every method: a refused client
        // learns nothing, not even which methods exist here.
        if !self.allow.allows(req.peer_addr().ip()) {
            res.status(403)
                .header("content-type", "text/plain; charset=utf-8")
                .body("403 Forbidden: this address may not read the metrics\n");
            return Outcome::Done;
        }
        match req.method() {
            "GET" | "HEAD" => {
                // For HEAD the server sends the head and drops the stream
                // unread, so nothing is rendered.
                let body = exposition::Exposition::new(self.registry.clone());
                res.status(200)
                    .header("content-type", exposition::CONTENT_TYPE)
                    // Every scrape must see fresh counters.
                    .header("cache-control", "no-store")
                    .body(Body::Stream(Box::new(body)));
            }
            _ => {
                res.status(405)
                    .header("allow", "GET, HEAD")
                    .header("content-type", "text/plain; charset=utf-8")
                    .body("405 Method Not Allowed\n");
            }
        }
        Outcome::Done
    }
}

impl Handler for Metrics {
    /// Only memory work (SDK 1.1): runs on the event loop.
    fn placement(&self) -> Placement {
        Placement::Inline
    }
    fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
        match self {
            Metrics::Endpoint(e) => e.handle(req, res),
            // A logger is never routed to; decline to be safe.
            Metrics::Logger(_) => Outcome::Decline,
        }
    }

    fn log(&self, entry: &LogEntry) {
        if let Metrics::Logger(l) = self {
            l.log(entry);
        }
    }

    fn record(&self, rec: &Record) {
        if let Metrics::Logger(l) = self {
            l.record(rec);
        }
    }
}

tamada_sdk::export_plugin!(
    name: "metrics",
    new: new,
    roles: [Handler, Logger],
    schema: |role| match role {
        Role::Handler => tamada_sdk::schema::of::<EndpointConfig>(),
        Role::Logger => tamada_sdk::schema::of::<LoggerConfig>(),
    },
);

#[cfg(test)]
mod tests;
