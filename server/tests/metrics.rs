//! Integration tests: the `metrics` plugin counting real traffic as a
//! logger and serving it as a route, end to end through the server.
//!
//! Counters are updated in the log phase, which runs after a response has
//! gone out, so a client can read its response before it is counted:
//! every check polls the endpoint until the expected total shows (bounded).
//! The endpoint lives on a vhost of its own (`m`) without the logger, so
//! scrapes do not count themselves.

use crate::harness::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// One sample line of the exposition.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition format 0.0.4 strictly enough to catch what
/// Prometheus would refuse: every line is `# HELP name text`,
/// `# TYPE name kind`, or `name{label="value",...} value`; label values
/// use only the `\\`, `\"` and `\n` escapes; every sample belongs to a
/// family whose TYPE came before it, and no TYPE repeats.
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    if !text.ends_with('\n') {
        return Err("the body does not end with a newline".into());
    }
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        let bad = |why: &str| format!("{why}: {line:?}");
        if let Some(c) = line.strip_prefix("# ") {
            let mut parts = c.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(bad("unknown type"));
                    }
                    if types.insert(name.to_owned(), kind.to_owned()).is_some() {
                        return Err(bad("TYPE repeated"));
                    }
                }
                (Some("HELP"), Some(_), Some(_)) => {}
                _ => return Err(bad("malformed comment")),
            }
            continue;
        }
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .ok_or_else(|| bad("no value"))?;
        let name = &line[..name_end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(bad("bad metric name"));
        }
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = r;
            loop {
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let (lname, r) = rest.split_once("=\"").ok_or_else(|| bad("bad label"))?;
                let mut value = String::new();
                let mut chars = r.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((i, '"')) => break i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            _ => return Err(bad("bad escape")),
                        },
                        Some((_, c)) => value.push(c),
                        None => return Err(bad("unterminated label value")),
                    }
                };
                if labels.insert(lname.to_owned(), value).is_some() {
                    return Err(bad("label repeated"));
                }
                rest = &r[end + 1..];
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
        }
        let value = rest
            .strip_prefix(' ')
            .ok_or_else(|| bad("no space before value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| bad("bad value"))?,
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        if !types.contains_key(family) {
            return Err(bad("sample before its TYPE"));
        }
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(samples)
}

/// The value of the sample `name` whose labels include `labels`, if any.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// The sum of every sample of `name` with label `key` = `val`.
fn total(samples: &[Sample], name: &str, key: &str, val: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && s.labels.get(key).map(String::as_str) == Some(val))
        .map(|s| s.value)
        .sum()
}

/// Scrapes `path` on vhost `m` until `done` holds (bounded: 10 s).
fn scrape_until(port: u16, path: &str, done: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(port, path, "m");
        assert_eq!(r.status, 200, "{}", r.text());
        let samples = parse_exposition(&r.text()).unwrap_or_else(|e| panic!("{e}\n{}", r.text()));
        if done(&samples) || Instant::now() > deadline {
            return samples;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A vhost named `name` on `{port0}` that counts into `registry`: `/e/`
/// echo, everything else `static` (www has `hello.txt`).
fn counted_vhost(name: &str, registry: &str) -> String {
    format!(
        "vhost: {name}\nip: 127.0.0.1\nport: {{port0}}\ndocument_root: ../www\n\
         loggers:\n  - handler: metrics\n    options: {{ registry: {registry} }}\n\
         routes:\n  - path: /e/\n    handler: echo\n  - path: /\n    handler: static\n"
    )
}

/// The vhost `m` that serves metrics: `routes` is its YAML route list.
fn metrics_vhost(routes: &str) -> String {
    format!("vhost: m\nip: 127.0.0.1\nport: {{port0}}\ndocument_root: ../www\nroutes:\n{routes}")
}

/// Vhost `a` counted into the default registry, and `m` serving /metrics.
fn counted_site() -> TestServer {
    Fixture::new()
        .file("conf.d/a.yaml", &counted_vhost("a", "default"))
        .file(
            "conf.d/m.yaml",
            &metrics_vhost("  - path: /metrics\n    handler: metrics\n"),
        )
        .file("www/hello.txt", "hello\n")
        .start()
}

#[test]
fn every_exchange_is_counted_exactly_and_the_output_parses() {
    let s = counted_site();
    let requests = [
        ("GET /e/one HTTP/1.1\r\nHost: a\r\n", "", 200),
        ("GET /e/two?x=1 HTTP/1.1\r\nHost: a\r\n", "", 200),
        ("GET /e/three HTTP/1.1\r\nHost: a\r\n", "", 200),
        ("GET /hello.txt HTTP/1.1\r\nHost: a\r\n", "", 200),
        ("HEAD /hello.txt HTTP/1.1\r\nHost: a\r\n", "", 200),
        ("GET /missing.txt HTTP/1.1\r\nHost: a\r\n", "", 404),
        ("GET /gone/ HTTP/1.1\r\nHost: a\r\n", "", 404),
        (
            "POST /e/post HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n",
            "hello world",
            200,
        ),
        ("PROPFIND /hello.txt HTTP/1.1\r\nHost: a\r\n", "", 405),
    ];
    let (mut bytes_in, mut bytes_out) = (0, 0);
    for (head, body, status) in requests {
        let req = format!("{head}Connection: close\r\n\r\n{body}");
        let r = Client::connect(s.port()).request(&req);
        assert_eq!(r.status, status, "{head}");
        bytes_in += req.len();
        bytes_out += r.body.len();
    }
    let n = requests.len() as f64;
    let m = scrape_until(s.port(), "/metrics", |m| {
        total(m, "tamada_requests_total", "vhost", "a") >= n
    });
    let count = |method: &str, code: &str| {
        value(
            &m,
            "tamada_requests_total",
            &[("vhost", "a"), ("method", method), ("code", code)],
        )
    };
    assert_eq!(count("GET", "200"), Some(4.0));
    assert_eq!(count("HEAD", "200"), Some(1.0));
    assert_eq!(count("GET", "404"), Some(2.0));
    assert_eq!(count("POST", "200"), Some(1.0));
    assert_eq!(count("other", "405"), Some(1.0), "PROPFIND is `other`");
    assert_eq!(total(&m, "tamada_requests_total", "vhost", "a"), n);
    let a = [("vhost", "a")];
    assert_eq!(
        value(&m, "tamada_response_bytes_total", &a),
        Some(bytes_out as f64),
        "body bytes the client received"
    );
    assert_eq!(
        value(&m, "tamada_request_bytes_total", &a),
        Some(bytes_in as f64),
        "bytes the client sent"
    );
    assert_eq!(
        value(&m, "tamada_responses_incomplete_total", &a),
        Some(0.0)
    );
    // The histogram: cumulative, +Inf = _count = every exchange.
    let buckets: Vec<&Sample> = m
        .iter()
        .filter(|x| x.name == "tamada_request_duration_seconds_bucket")
        .collect();
    assert_eq!(buckets.last().unwrap().labels["le"], "+Inf");
    assert_eq!(buckets.last().unwrap().value, n);
    assert!(
        buckets.windows(2).all(|w| w[0].value <= w[1].value),
        "{buckets:?}"
    );
    let les: Vec<f64> = buckets
        .iter()
        .map(|b| b.labels["le"].parse().unwrap())
        .collect();
    assert!(les.windows(2).all(|w| w[0] < w[1]), "{les:?}");
    assert_eq!(
        value(&m, "tamada_request_duration_seconds_count", &a),
        Some(n)
    );
    assert!(value(&m, "tamada_request_duration_seconds_sum", &a).unwrap() > 0.0);
    // Build info and process start.
    let version = m.iter().find(|x| x.name == "tamada_build_info").unwrap();
    assert_eq!(version.value, 1.0);
    assert!(!version.labels["version"].is_empty());
    let started = value(&m, "process_start_time_seconds", &[]).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started <= now && started > now - 600.0,
        "{started} vs {now}"
    );
    // The scrapes themselves went to `m`, which has no logger.
    assert!(
        !m.iter()
            .any(|x| x.labels.get("vhost").is_some_and(|v| v == "m"))
    );
}

#[test]
fn the_endpoint_streams_and_refuses_what_it_should() {
    let s = Fixture::new()
        .file("conf.d/a.yaml", &counted_vhost("a", "default"))
        .file(
            "conf.d/m.yaml",
            &metrics_vhost(
                "  - path: /metrics\n    handler: metrics\n\
                 \x20 - path: /private\n    handler: metrics\n    options: { allow: [10.0.0.0/8, \"fd00::/8\"] }\n",
            ),
        )
        .file("www/.keep", "")
        .start();
    let r = get(s.port(), "/metrics", "m");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    // A `Body::Stream` of unknown length goes out chunked on HTTP/1.1.
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert!(r.text().contains("# TYPE tamada_requests_total counter"));
    // HEAD: the same head, no body.
    let mut c = Client::connect(s.port());
    let h = c.request("HEAD /metrics HTTP/1.1\r\nHost: m\r\n\r\n");
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-type"), r.header("content-type"));
    // Other methods: 405 with Allow, on the same keep-alive connection.
    let p = c.request("POST /metrics HTTP/1.1\r\nHost: m\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(p.status, 405);
    assert_eq!(p.header("allow"), Some("GET, HEAD"));
    // An allow-list without loopback refuses this client.
    let f = get(s.port(), "/private", "m");
    assert_eq!(f.status, 403);
    assert!(!f.text().contains("tamada_"), "{}", f.text());
}

#[test]
fn two_vhosts_feed_one_registry_and_another_stays_apart() {
    let s = Fixture::new()
        .file("conf.d/a.yaml", &counted_vhost("a", "shared"))
        .file("conf.d/b.yaml", &counted_vhost("b", "shared"))
        .file("conf.d/c.yaml", &counted_vhost("c", "solo"))
        .file(
            "conf.d/m.yaml",
            &metrics_vhost(
                "  - path: /all\n    handler: metrics\n    options: { registry: shared }\n\
                 \x20 - path: /solo\n    handler: metrics\n    options: { registry: solo }\n",
            ),
        )
        .file("www/hello.txt", "hello\n")
        .start();
    for (host, times) in [("a", 2), ("b", 3), ("c", 1)] {
        for _ in 0..times {
            assert_eq!(get(s.port(), "/hello.txt", host).status, 200);
        }
    }
    let shared = scrape_until(s.port(), "/all", |m| {
        total(m, "tamada_requests_total", "vhost", "a") >= 2.0
            && total(m, "tamada_requests_total", "vhost", "b") >= 3.0
    });
    let get200 = |m: &[Sample], v: &str| {
        value(
            m,
            "tamada_requests_total",
            &[("vhost", v), ("method", "GET"), ("code", "200")],
        )
    };
    assert_eq!(get200(&shared, "a"), Some(2.0));
    assert_eq!(get200(&shared, "b"), Some(3.0));
    let vhosts: BTreeSet<&str> = shared
        .iter()
        .filter_map(|x| x.labels.get("vhost").map(String::as_str))
        .collect();
    assert_eq!(vhosts, BTreeSet::from(["a", "b"]));
    let solo = scrape_until(s.port(), "/solo", |m| get200(m, "c") == Some(1.0));
    assert_eq!(get200(&solo, "c"), Some(1.0));
    assert_eq!(total(&solo, "tamada_requests_total", "vhost", "a"), 0.0);
}

#[test]
fn a_client_that_leaves_mid_body_is_counted_incomplete() {
    let s = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\n\
             loggers:\n  - handler: metrics\n\
             routes:\n  - path: /\n    handler: echo\n    options: { stream: 10000000 }\n",
        )
        .file(
            "conf.d/m.yaml",
            &metrics_vhost("  - path: /metrics\n    handler: metrics\n"),
        )
        .file("www/.keep", "")
        .start();
    {
        // ~100 MB of lines: far more than the socket buffers hold, so the
        // server is still writing when this connection goes away.
        let mut c = Client::connect(s.port());
        c.send(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n");
        let mut first = [0u8; 1024];
        let n = std::io::Read::read(&mut c.stream, &mut first).unwrap();
        assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    }
    // Families are read one after another as the body streams, so wait
    // for both: one scrape may render `tamada_requests_total` before the
    // log phase ran and `tamada_responses_incomplete_total` after it.
    let a = [("vhost", "a")];
    let get200 = [("vhost", "a"), ("method", "GET"), ("code", "200")];
    let m = scrape_until(s.port(), "/metrics", |m| {
        value(m, "tamada_responses_incomplete_total", &a) == Some(1.0)
            && value(m, "tamada_requests_total", &get200) == Some(1.0)
    });
    assert_eq!(
        value(&m, "tamada_responses_incomplete_total", &a),
        Some(1.0)
    );
    assert_eq!(value(&m, "tamada_requests_total", &get200), Some(1.0));
}

#[test]
fn counters_survive_a_reload() {
    let s = counted_site();
    let get200 = [("vhost", "a"), ("method", "GET"), ("code", "200")];
    for _ in 0..2 {
        assert_eq!(get(s.port(), "/hello.txt", "a").status, 200);
    }
    let m = scrape_until(s.port(), "/metrics", |m| {
        value(m, "tamada_requests_total", &get200) == Some(2.0)
    });
    assert_eq!(value(&m, "tamada_requests_total", &get200), Some(2.0));
    // SIGHUP builds every instance anew; the registry is the plugin's
    // static, so the counts carry on instead of restarting at zero.
    s.signal(libc::SIGHUP);
    assert!(
        s.log
            .wait_for("reloaded configuration", Duration::from_secs(10)),
        "{}",
        s.log.text()
    );
    assert_eq!(get(s.port(), "/hello.txt", "a").status, 200);
    let m = scrape_until(s.port(), "/metrics", |m| {
        value(m, "tamada_requests_total", &get200) == Some(3.0)
    });
    assert_eq!(value(&m, "tamada_requests_total", &get200), Some(3.0));
}

#[test]
fn dash_t_names_the_file_of_a_mistyped_or_bad_option() {
    let f = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\n\
             loggers:\n  - handler: metrics\n    options: { registy: shared }\n",
        )
        .file(
            "conf.d/m.yaml",
            &metrics_vhost(
                "  - path: /metrics\n    handler: metrics\n    options: { allow: [10.0.0.0/33] }\n",
            ),
        )
        .file("www/.keep", "");
    let (code, _out, err) = f.check();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("a.yaml:")
            && err.contains(
                "loggers[0]: plugin `metrics` refused its options: unknown field `registy`"
            ),
        "{err}"
    );
    assert!(
        err.contains("m.yaml:")
            && err.contains(
                "routes[0] (/metrics): plugin `metrics` refused its options: allow: `10.0.0.0/33`: the prefix length must be 0 to 32"
            ),
        "{err}"
    );
}
