//! The Prometheus text exposition format (version 0.0.4), rendered lazily
//! as a [`BodyStream`].
//!
//! ```text
//! # HELP tamada_requests_total Finished exchanges, by vhost, method and status code.
//! # TYPE tamada_requests_total counter
//! tamada_requests_total{vhost="example.com",method="GET",code="200"} 1027
//! ```
//!
//! The body is a stream rather than one `String` because a registry fed by
//! many vhosts renders to many kilobytes, and the server pulls a stream
//! only as fast as the client reads: so at most one metric family is held
//! in memory at a time, and a `HEAD` (whose body the server never pulls)
//! renders nothing at all.

use crate::process;
use crate::registry::{Registry, VhostSeries};
use std::fmt::Write as _;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tamada_sdk::BodyStream;

/// The `Content-Type` of format 0.0.4: what Prometheus asks for first
/// when it does not get OpenMetrics.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes `v` as a label value: `\`, `"` and newline are the three
/// characters the format escapes (as `\\`, `\"` and `\n`); everything
/// else, UTF-8 included, goes as it is.
pub fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str(r#"\""#),
            '\n' => out.push_str(r"\n"),
            c => out.push(c),
        }
    }
}

/// A family renderer: writes one metric family (`# HELP`, `# TYPE` and
/// its samples) from a fresh look at the registry.
type Family = fn(&Registry, &mut String);

/// The families in the order they are sent. Each is read from the
/// registry when it is rendered, so one scrape is not one instant; that is
/// harmless for counters, which the next scrape catches up on.
/// `requests_total` stays first: read first, with `Acquire`, it makes
/// every exchange it counts complete in the families after it (see
/// `VhostSeries` on memory ordering).
const FAMILIES: &[Family] = &[
    requests_total,
    response_bytes_total,
    request_bytes_total,
    responses_incomplete_total,
    loop_stalls_total,
    request_duration_seconds,
    build_info,
    process_start_time_seconds,
];

// Writing into a `String` cannot fail: `fmt::Write for String` always
// returns `Ok`, so its results are ignored below with `let _`.

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
}

/// `name{vhost="..."<extra>} value`: every per-vhost sample has this shape.
fn sample(out: &mut String, name: &str, vhost: &str, extra: &str, value: impl std::fmt::Display) {
    out.push_str(name);
    out.push_str("{vhost=\"");
    escape_label_value(out, vhost);
    out.push('"');
    out.push_str(extra);
    let _ = writeln!(out, "}} {value}");
}

fn requests_total(reg: &Registry, out: &mut String) {
    const NAME: &str = "tamada_requests_total";
    header(
        out,
        NAME,
        "counter",
        "Finished exchanges, by vhost, method and status code.",
    );
    for (vhost, series) in reg.vhosts() {
        for (method, code, n) in series.requests() {
            // Both label values come from fixed sets (a method name of
            // ours, a number): nothing to escape.
            let extra = format!(",method=\"{}\",code=\"{code}\"", method.as_str());
            sample(out, NAME, &vhost, &extra, n);
        }
    }
}

/// The three plain per-vhost counters differ only in name, help and field.
fn vhost_counter(
    reg: &Registry,
    out: &mut String,
    name: &str,
    help: &str,
    field: fn(&VhostSeries) -> &AtomicU64,
) {
    header(out, name, "counter", help);
    for (vhost, series) in reg.vhosts() {
        let n = field(&series).load(Ordering::Relaxed);
        sample(out, name, &vhost, "", n);
    }
}

fn response_bytes_total(reg: &Registry, out: &mut String) {
    vhost_counter(
        reg,
        out,
        "tamada_response_bytes_total",
        "Response body bytes sent (0 for HEAD and 304).",
        |s| &s.response_bytes,
    );
}

fn request_bytes_total(reg: &Registry, out: &mut String) {
    vhost_counter(
        reg,
        out,
        "tamada_request_bytes_total",
        "Request bytes received, head and body.",
        |s| &s.request_bytes,
    );
}

fn responses_incomplete_total(reg: &Registry, out: &mut String) {
    vhost_counter(
        reg,
        out,
        "tamada_responses_incomplete_total",
        "Responses that did not go out whole (the client left or a write failed).",
        |s| &s.incomplete,
    );
}

fn loop_stalls_total(reg: &Registry, out: &mut String) {
    vhost_counter(
        reg,
        out,
        "tamada_loop_stalls_total",
        "Plugin calls that held an event loop for 100 ms or more (every connection of that loop waited).",
        |s| &s.loop_stalls,
    );
}

fn request_duration_seconds(reg: &Registry, out: &mut String) {
    const NAME: &str = "tamada_request_duration_seconds";
    header(
        out,
        NAME,
        "histogram",
        "Time from the first byte of the request to the last byte of the response.",
    );
    let bucket = format!("{NAME}_bucket");
    for (vhost, series) in reg.vhosts() {
        let h = series.duration().snapshot();
        for (le, n) in &h.buckets {
            // `{le}` prints an f64 in its shortest exact form (`0.005`,
            // `1`), never in exponent notation: what Prometheus' own
            // clients write for the same bounds.
            sample(out, &bucket, &vhost, &format!(",le=\"{le}\""), n);
        }
        sample(out, &bucket, &vhost, ",le=\"+Inf\"", h.count);
        sample(out, &format!("{NAME}_sum"), &vhost, "", h.sum_seconds);
        sample(out, &format!("{NAME}_count"), &vhost, "", h.count);
    }
}

fn build_info(_: &Registry, out: &mut String) {
    header(
        out,
        "tamada_build_info",
        "gauge",
        "The version of the metrics plugin (built with the server); always 1.",
    );
    let mut v = String::new();
    escape_label_value(&mut v, env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "tamada_build_info{{version=\"{v}\"}} 1");
}

fn process_start_time_seconds(_: &Registry, out: &mut String) {
    header(
        out,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
    );
    let _ = writeln!(out, "process_start_time_seconds {}", process::start_time());
}

/// The response body: renders one family whenever the server has sent
/// everything rendered before.
pub struct Exposition {
    registry: Arc<Registry>,
    /// The index in [`FAMILIES`] of the next family to render.
    next: usize,
    /// The rendered family being sent, and how much of it has gone.
    pending: String,
    sent: usize,
}

impl Exposition {
    /// A body over `registry`; nothing is rendered until the first read.
    pub fn new(registry: Arc<Registry>) -> Self {
        Exposition {
            registry,
            next: 0,
            pending: String::new(),
            sent: 0,
        }
    }
}

impl BodyStream for Exposition {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.sent == self.pending.len() {
            let Some(family) = FAMILIES.get(self.next) else {
                return Ok(0);
            };
            self.next += 1;
            self.pending.clear();
            self.sent = 0;
            family(&self.registry, &mut self.pending);
        }
        let rest = &self.pending.as_bytes()[self.sent..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.sent += n;
        Ok(n)
    }
}

/// The whole exposition at once (for tests and for debugging).
#[cfg(test)]
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    for family in FAMILIES {
        family(registry, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Method, registry};
    use std::time::Duration;

    #[test]
    fn label_values_escape_backslash_quote_and_newline_only() {
        let mut s = String::new();
        escape_label_value(&mut s, "a\\b\"c\nd\té ok");
        assert_eq!(s, r#"a\\b\"c\nd"#.to_owned() + "\té ok");
    }

    #[test]
    fn renders_every_family_with_help_and_type() {
        let reg = registry("test-render");
        let (s, h) = reg.vhost("we\"ird\\host\n", &[0.01, 0.1]);
        s.count_request(Method::Get, 200);
        s.count_request(Method::Get, 200);
        s.count_request(Method::Other, 501);
        s.response_bytes.fetch_add(1234, Ordering::Relaxed);
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_millis(50));
        let text = render(&reg);
        let v = r#"vhost="we\"ird\\host\n""#;
        for line in [
            "# TYPE tamada_requests_total counter".to_owned(),
            format!(r#"tamada_requests_total{{{v},method="GET",code="200"}} 2"#),
            format!(r#"tamada_requests_total{{{v},method="other",code="501"}} 1"#),
            format!("tamada_response_bytes_total{{{v}}} 1234"),
            format!("tamada_request_bytes_total{{{v}}} 0"),
            format!("tamada_responses_incomplete_total{{{v}}} 0"),
            format!("tamada_loop_stalls_total{{{v}}} 0"),
            "# TYPE tamada_request_duration_seconds histogram".to_owned(),
            format!(r#"tamada_request_duration_seconds_bucket{{{v},le="0.01"}} 1"#),
            format!(r#"tamada_request_duration_seconds_bucket{{{v},le="0.1"}} 2"#),
            format!(r#"tamada_request_duration_seconds_bucket{{{v},le="+Inf"}} 2"#),
            format!("tamada_request_duration_seconds_sum{{{v}}} 0.055"),
            format!("tamada_request_duration_seconds_count{{{v}}} 2"),
            format!(
                "tamada_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            ),
            "# TYPE process_start_time_seconds gauge".to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        // Every family's HELP comes right before its TYPE.
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(lines[i - 1].starts_with(&format!("# HELP {name} ")), "{l}");
            }
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn the_stream_gives_the_same_bytes_whatever_the_buffer_size() {
        let reg = registry("test-stream");
        for i in 0..50 {
            let (s, _) = reg.vhost(&format!("host{i}"), &[0.1]);
            s.count_request(Method::Head, 200 + i);
        }
        let whole = render(&reg);
        for size in [1, 7, 4096, 1 << 20] {
            let mut body = Exposition::new(reg.clone());
            let mut out = Vec::new();
            let mut buf = vec![0u8; size];
            loop {
                let n = body.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            assert_eq!(String::from_utf8(out).unwrap(), whole, "buffer of {size}");
        }
    }
}
