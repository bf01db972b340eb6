//! Unit tests of both roles as the server drives them, without a `.so`:
//! the logger fed `LogEntry`s, the endpoint run on `TestRequest`s.
//! Each test uses a registry name of its own, since registries are
//! process-wide and tests run in parallel.

use super::*;
use tamada_sdk::testing::{Exchange, TestRequest};

/// The logger of vhost `vhost`, built as the server would.
fn logger(vhost: &str, yaml: &str) -> Result<Metrics, String> {
    let mut req = TestRequest::get("/");
    req.vhost = vhost.into();
    new(&req.logger_options(yaml))
}

/// Feeds one finished exchange of `req` to `m`'s log phase.
fn log(
    m: &Metrics,
    req: &TestRequest,
    status: u16,
    sent: u64,
    received: u64,
    us: u64,
    completed: bool,
) {
    req.log(
        m,
        &Exchange {
            status,
            body_bytes_sent: sent,
            head_bytes_sent: 100,
            bytes_received: received,
            duration: std::time::Duration::from_micros(us),
            completed,
            ..Exchange::default()
        },
    );
}

fn endpoint(req: &TestRequest, yaml: &str) -> Metrics {
    new(&req.options(yaml)).unwrap()
}

fn scrape(m: &Metrics, req: &TestRequest) -> String {
    let out = req.run(m);
    assert_eq!(out.outcome, Outcome::Done);
    assert_eq!(out.response.get_status(), 200);
    String::from_utf8(out.body_bytes()).unwrap()
}

#[test]
fn the_logger_counts_what_the_endpoint_shows() {
    let l = logger("site", "{registry: unit-count, buckets: [0.001, 0.1]}").unwrap();
    log(&l, &TestRequest::get("/a"), 200, 1000, 80, 500, true);
    log(&l, &TestRequest::get("/b"), 200, 24, 70, 1000, true);
    log(
        &l,
        &TestRequest::new("POST", "/c"),
        404,
        0,
        300,
        50_000,
        true,
    );
    log(
        &l,
        &TestRequest::new("BREW", "/pot"),
        501,
        0,
        20,
        2_000_000,
        false,
    );
    let req = TestRequest::get("/metrics");
    let text = scrape(&endpoint(&req, "{registry: unit-count}"), &req);
    for line in [
        r#"tamada_requests_total{vhost="site",method="GET",code="200"} 2"#,
        r#"tamada_requests_total{vhost="site",method="POST",code="404"} 1"#,
        r#"tamada_requests_total{vhost="site",method="other",code="501"} 1"#,
        r#"tamada_response_bytes_total{vhost="site"} 1024"#,
        r#"tamada_request_bytes_total{vhost="site"} 470"#,
        r#"tamada_responses_incomplete_total{vhost="site"} 1"#,
        r#"tamada_request_duration_seconds_bucket{vhost="site",le="0.001"} 2"#,
        r#"tamada_request_duration_seconds_bucket{vhost="site",le="0.1"} 3"#,
        r#"tamada_request_duration_seconds_bucket{vhost="site",le="+Inf"} 4"#,
        r#"tamada_request_duration_seconds_sum{vhost="site"} 2.0515"#,
        r#"tamada_request_duration_seconds_count{vhost="site"} 4"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    }
}

#[test]
fn the_endpoint_answers_get_and_head_with_the_exposition_type() {
    let req = TestRequest::get("/metrics");
    let m = endpoint(&req, "");
    let out = req.run(&m);
    assert_eq!(
        out.response.get_header("content-type"),
        Some(exposition::CONTENT_TYPE.as_bytes())
    );
    assert!(matches!(out.response.get_body(), Body::Stream(_)));
    let head = TestRequest::new("HEAD", "/metrics").run(&m);
    assert_eq!(head.response.get_status(), 200);
}

#[test]
fn other_methods_get_405_with_allow() {
    let req = TestRequest::new("POST", "/metrics");
    let out = req.run(&endpoint(&req, ""));
    assert_eq!(out.response.get_status(), 405);
    assert_eq!(out.response.get_header("allow"), Some(&b"GET, HEAD"[..]));
}

#[test]
fn clients_off_the_allow_list_get_403_whatever_the_method() {
    let mut req = TestRequest::get("/metrics");
    req.peer = "192.0.2.9:5000".parse().unwrap();
    let m = endpoint(&req, "");
    assert_eq!(req.run(&m).response.get_status(), 403, "not loopback");
    req.method = "POST".into();
    assert_eq!(req.run(&m).response.get_status(), 403, "403 before 405");
    req.method = "GET".into();
    let m = endpoint(&req, "{allow: [192.0.2.0/24]}");
    assert_eq!(req.run(&m).response.get_status(), 200);
    let local = TestRequest::get("/metrics");
    assert_eq!(
        local.run(&m).response.get_status(),
        403,
        "loopback not listed"
    );
}

#[test]
fn option_mistakes_are_named() {
    let req = TestRequest::get("/metrics");
    let err = |yaml: &str| new(&req.options(yaml)).err().unwrap();
    assert!(
        err("{alow: []}").contains("unknown field `alow`"),
        "{}",
        err("{alow: []}")
    );
    assert_eq!(
        err("{allow: [10.0.0.0/33]}"),
        "allow: `10.0.0.0/33`: the prefix length must be 0 to 32"
    );
    assert!(
        err("{buckets: [1]}").contains("unknown field `buckets`"),
        "a route option only for loggers"
    );
    let lerr = |yaml: &str| logger("x", yaml).err().unwrap();
    assert!(lerr("{allow: [::1]}").contains("unknown field `allow`"));
    assert_eq!(
        lerr("{buckets: [0.1, 0.05]}"),
        "buckets: `0.05` follows `0.1`: bounds must be strictly increasing"
    );
    assert_eq!(
        lerr("{buckets: [0.1, .inf]}"),
        "buckets: `inf` is not a duration in seconds (`+Inf` is always added)"
    );
    assert_eq!(lerr("{registry: ''}"), "registry: the name is empty");
}

#[test]
fn two_vhosts_feed_one_registry() {
    let a = logger("a.example", "{registry: unit-shared}").unwrap();
    let b = logger("b.example", "{registry: unit-shared}").unwrap();
    let alone = logger("c.example", "{registry: unit-alone}").unwrap();
    log(&a, &TestRequest::get("/"), 200, 1, 1, 1, true);
    log(&b, &TestRequest::get("/"), 304, 0, 1, 1, true);
    log(&alone, &TestRequest::get("/"), 200, 1, 1, 1, true);
    let req = TestRequest::get("/metrics");
    let text = scrape(&endpoint(&req, "{registry: unit-shared}"), &req);
    assert!(
        text.contains(r#"{vhost="a.example",method="GET",code="200"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"{vhost="b.example",method="GET",code="304"} 1"#),
        "{text}"
    );
    assert!(!text.contains("c.example"), "{text}");
}
