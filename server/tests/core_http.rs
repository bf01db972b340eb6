//! The HTTP/1.1 core through the real binary: persistence, pipelining,
//! split input, bad requests, HEAD, request bodies.

use crate::harness::*;
use std::io::Write;
use std::time::Duration;

fn echo_server() -> TestServer {
    Fixture::new()
        .file("conf.d/a.yaml", &echo_vhost("a.test", "{port0}", ""))
        .file(
            "conf.d/server.yaml",
            "idle_timeout: 2s\nheader_timeout: 3s\nmax_request_line: 1KiB\nmax_header_size: 4KiB\n",
        )
        .file("www/.keep", "")
        .start()
}

#[test]
fn keep_alive_reuses_the_connection() {
    let s = echo_server();
    let mut c = Client::connect(s.port());
    let r1 = c.request("GET /one HTTP/1.1\r\nHost: a.test\r\n\r\n");
    let r2 = c.request("GET /two HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert_eq!((r1.status, r2.status), (200, 200));
    assert_eq!(r1.echo("path"), "/one");
    assert_eq!(r2.echo("path"), "/two");
    // Same TCP connection: the server saw the same client port.
    assert_eq!(r1.echo("peer"), r2.echo("peer"));
    assert!(r1.header("connection").is_none(), "{}", r1.head);
    assert!(r1.header("date").is_some() && r1.header("server").is_some());
}

#[test]
fn http10_keep_alive_only_when_asked() {
    let s = echo_server();
    let mut c = Client::connect(s.port());
    let r = c.request("GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.head.starts_with("HTTP/1.0 200"), "{}", r.head);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    let r = c.request("GET /b HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed());
}

#[test]
fn connection_close_is_honoured() {
    let s = echo_server();
    let mut c = Client::connect(s.port());
    let r = c.request("GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = echo_server();
    let mut c = Client::connect(s.port());
    let mut all = String::new();
    for i in 0..5 {
        all.push_str(&format!("GET /p{i}?n={i} HTTP/1.1\r\nHost: a.test\r\n\r\n"));
    }
    c.send(all.as_bytes());
    for i in 0..5 {
        let r = c.read_response(false);
        assert_eq!(r.status, 200);
        assert_eq!(r.echo("path"), format!("/p{i}"));
        assert_eq!(r.echo("query"), format!("n={i}"));
    }
}

#[test]
fn pipelined_post_bodies_stay_separate() {
    let s = echo_server();
    let mut c = Client::connect(s.port());
    c.send(b"POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhelloPOST /y HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /z HTTP/1.1\r\nHost: a.test\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(
        (r.echo("path"), r.echo("body")),
        ("/x".into(), "hello".into())
    );
    let r = c.read_response(false);
    assert_eq!(
        (r.echo("path"), r.echo("body")),
        ("/y".into(), "abc".into())
    );
    let r = c.read_response(false);
    assert_eq!(r.echo("path"), "/z");
}

#[test]
fn request_fed_one_byte_at_a_time() {
    let s = echo_server();
    let mut c = Client::connect(s.port());
    c.stream.set_nodelay(true).unwrap();
    let req = b"POST /slow%20ly?q=1 HTTP/1.1\r\nHost: a.test\r\nX-Multi: a\r\nX-Multi: b\r\nContent-Length: 4\r\n\r\nbody";
    for b in req {
        c.stream.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.echo("path"), "/slow ly");
    assert_eq!(r.echo("target"), "/slow%20ly?q=1");
    assert_eq!(r.echo("x-multi"), "a, b");
    assert_eq!(r.echo("body"), "body");
}

#[test]
fn head_never_sends_a_body() {
    let s = echo_server();
    let mut c = Client::connect(s.port());
    let g = c.request("GET /h HTTP/1.1\r\nHost: a.test\r\n\r\n");
    let h = c.request("HEAD /h HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
    // The HEAD's Content-Length is what a GET would send (same size: the
    // echo differs only in the method name, GET and HEAD are 3 and 4 bytes).
    let gl: usize = g.header("content-length").unwrap().parse().unwrap();
    let hl: usize = h.header("content-length").unwrap().parse().unwrap();
    assert_eq!(hl, gl + 1);
    // And the connection is still in step: a next request works.
    let g2 = c.request("GET /after HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert_eq!(g2.echo("path"), "/after");
}

#[test]
fn chunked_body_arrives_intact() {
    let s = echo_server();
    let mut c = Client::connect(s.port());
    // 1 MiB of patterned data in chunks of odd sizes, with an extension
    // and a trailer.
    let data: Vec<u8> = (0..(1 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    let mut req =
        b"PUT /up HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for (i, chunk) in data.chunks(65_537).enumerate() {
        if i == 0 {
            req.extend_from_slice(format!("{:x};name=v\r\n", chunk.len()).as_bytes());
        } else {
            req.extend_from_slice(format!("{:X}\r\n", chunk.len()).as_bytes());
        }
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\nX-Trailer: yes\r\n\r\n");
    c.send(&req);
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.echo("body-len"), data.len().to_string());
    let sum: u64 = data.iter().map(|&b| b as u64).sum();
    assert_eq!(r.echo("body-sum"), sum.to_string());
    let r = c.request("GET /next HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert_eq!(r.echo("path"), "/next");
}

#[test]
fn expect_100_continue() {
    let s = echo_server();
    let mut c = Client::connect(s.port());
    c.send(
        b"POST /e HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    );
    let interim = c.read_response(false);
    assert_eq!(interim.status, 100);
    c.send(b"abc");
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.echo("body"), "abc");
}

#[test]
fn streamed_response_is_chunked_on_11_and_close_delimited_on_10() {
    let s = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nroutes:\n  - path: /\n    handler: echo\n    options: { stream: 3 }\n",
        )
        .file("www/.keep", "")
        .start();
    let mut c = Client::connect(s.port());
    let r = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.text(), "line 1\nline 2\nline 3\n");
    let r = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.text(), "line 1\nline 2\nline 3\n");
    let out = raw(s.port(), b"GET / HTTP/1.0\r\n\r\n");
    assert!(out.starts_with("HTTP/1.0 200"), "{out}");
    assert!(
        !out.to_ascii_lowercase().contains("transfer-encoding"),
        "{out}"
    );
    assert!(out.ends_with("\r\n\r\nline 1\nline 2\nline 3\n"), "{out}");
}

fn status_of(out: &str) -> u16 {
    out.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn bad_requests_get_the_right_status_and_close() {
    let s = echo_server();
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: a.test\r\n\r\n", "x".repeat(2000));
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: a.test\r\nX-Big: {}\r\n\r\n",
        "y".repeat(5000)
    );
    let cases: Vec<(&str, String, u16)> = vec![
        ("1.1 without Host", "GET / HTTP/1.1\r\n\r\n".into(), 400),
        ("two Host lines", "GET / HTTP/1.1\r\nHost: a.test\r\nHost: b\r\n\r\n".into(), 400),
        ("CL and TE", "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(), 400),
        ("differing CLs", "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabc".into(), 400),
        ("TE not ending in chunked", "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n".into(), 400),
        ("TE in 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(), 400),
        ("request line too long", long_target, 414),
        ("head too large", big_head, 431),
        ("unknown method", "BREW /pot HTTP/1.1\r\nHost: a.test\r\n\r\n".into(), 501),
        ("malformed", "GET / HTTP/1.1\r\nHost a.test\r\n\r\n".into(), 400),
        ("garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\x7f\x03\x03\r\n\r\n".into(), 400),
        ("climb above root", "GET /a/../../etc/passwd HTTP/1.1\r\nHost: a.test\r\n\r\n".into(), 400),
        ("encoded climb", "GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: a.test\r\n\r\n".into(), 400),
        ("NUL", "GET /a%00b HTTP/1.1\r\nHost: a.test\r\n\r\n".into(), 400),
        ("HTTP/2.0 line", "GET / HTTP/2.0\r\nHost: a.test\r\n\r\n".into(), 505),
        ("bad CL", "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: -1\r\n\r\n".into(), 400),
    ];
    for (what, req, want) in cases {
        let out = raw(s.port(), req.as_bytes());
        assert_eq!(status_of(&out), want, "{what}: {out}");
        assert!(
            out.contains("Connection: close"),
            "{what}: not closed: {out}"
        );
        assert!(
            out.contains(&format!("<h1>{want} ")),
            "{what}: no error page: {out}"
        );
    }
}

#[test]
fn body_over_max_body_is_413() {
    let s = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nmax_body: 100\nroutes:\n  - path: /big/\n    handler: echo\n    max_body: 1KiB\n  - path: /\n    handler: echo\n",
        )
        .file("www/.keep", "")
        .start();
    // Content-Length over the limit: answered before the body is sent.
    let mut c = Client::connect(s.port());
    let r = c.request("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n");
    assert_eq!(r.status, 413);
    assert!(c.closed());
    // The route's own limit is larger.
    let mut c = Client::connect(s.port());
    let body = "z".repeat(1000);
    let r = c.request(&format!(
        "POST /big/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n{body}"
    ));
    assert_eq!(r.status, 200);
    assert_eq!(r.echo("body-len"), "1000");
    // Chunked over the limit: 413 as soon as it is crossed, then close.
    let mut c = Client::connect(s.port());
    c.send(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..3 {
        c.send(format!("40\r\n{}\r\n", "q".repeat(64)).as_bytes());
    }
    let r = c.read_response(false);
    assert_eq!(r.status, 413);
    assert!(c.closed());
}

#[test]
fn idle_connection_is_closed_after_the_timeout() {
    let s = echo_server();
    let mut c = Client::connect(s.port());
    let r = c.request("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert_eq!(r.status, 200);
    let t = std::time::Instant::now();
    assert!(c.closed());
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
}

#[test]
fn a_real_http_client_works() {
    let s = echo_server();
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    for i in 0..3 {
        let mut resp = agent
            .post(s.url(&format!("/real/{i}")))
            .header("Host", "a.test")
            .send("payload")
            .expect("request");
        assert_eq!(resp.status(), 200);
        let text = resp.body_mut().read_to_string().expect("body");
        assert!(text.contains(&format!("path=/real/{i}\n")), "{text}");
        assert!(text.contains("body=payload\n"), "{text}");
    }
}

#[test]
fn absolute_form_and_options_star() {
    let s = Fixture::new()
        .file(
            "conf.d/a.yaml",
            &echo_vhost("a.test", "{port0}", "default: true\n"),
        )
        .file("conf.d/b.yaml", &echo_vhost("b.test", "{port0}", ""))
        .file("www/.keep", "")
        .start();
    let mut c = Client::connect(s.port());
    let r = c.request("GET http://B.test/abs?x=1 HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert_eq!(r.echo("vhost"), "b.test");
    assert_eq!(r.echo("path"), "/abs");
    let r = c.request("OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.header("allow").is_some());
}

#[test]
fn malformed_chunked_body_is_400_and_close() {
    let s = echo_server();
    let mut c = Client::connect(s.port());
    let r = c.request("POST /x HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n");
    assert_eq!(r.status, 400);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed());
}

#[test]
fn early_413_reaches_a_client_that_keeps_sending() {
    // Regression: closing with unread input made the kernel reset the
    // connection, and the client lost the 413 (lingering close fixes it).
    let s = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nmax_body: 100\nroutes:\n  - path: /\n    handler: echo\n",
        )
        .file("www/.keep", "")
        .start();
    let mut c = Client::connect(s.port());
    let mut req = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 300000\r\n\r\n".to_vec();
    req.extend(std::iter::repeat_n(b'z', 300_000));
    let writer = {
        let mut w = c.stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = w.write_all(&req);
        })
    };
    let r = c.read_response(false);
    assert_eq!(r.status, 413);
    assert!(c.closed());
    writer.join().unwrap();
}

#[test]
fn a_declining_route_does_not_widen_max_body() {
    let s = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nroutes:\n  - path: /up/\n    handler: echo\n    max_body: 1MiB\n    options: { decline: true }\n  - path: /\n    handler: echo\n    max_body: 10\n",
        )
        .file("www/.keep", "")
        .start();
    let mut c = Client::connect(s.port());
    let r = c.request(
        "POST /up/x HTTP/1.1\r\nHost: a\r\nContent-Length: 20\r\n\r\n01234567890123456789",
    );
    assert_eq!(r.status, 413);
}
