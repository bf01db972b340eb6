//! Regressions for the defects a probe of the server found (issue 16),
//! each through the real binary: one test per defect, named for it.

use crate::harness::*;
use crate::proxy::{proxy_site, read_head, scripted};
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

/// A keep-alive upstream answering each request with its own path as
/// the body; `after` runs on the socket after the answer to `/bad/...`.
fn misbehaving_upstream(after: fn(&mut TcpStream)) -> u16 {
    scripted(move |mut s| {
        loop {
            let head = read_head(&mut s);
            let Some(path) = head.split_whitespace().nth(1).map(str::to_owned) else {
                return;
            };
            let body = format!("answer for {path}");
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if s.write_all(resp.as_bytes()).is_err() {
                return;
            }
            if path.starts_with("/bad/") {
                after(&mut s);
                if path.ends_with("/close") {
                    return;
                }
            }
        }
    })
}

fn one_loop_proxy(upstream: u16) -> TestServer {
    // One event loop: every request takes its idle connections from the
    // same list, so the poisoned connection is the one offered next.
    proxy_site(&format!("{{ upstreams: [\"127.0.0.1:{upstream}\"] }}"), "")
        .arg("--loops")
        .arg("1")
        .start()
}

#[test]
fn issue16_1_a_late_unasked_for_upstream_response_never_reaches_the_next_client() {
    let up = misbehaving_upstream(|s| {
        std::thread::sleep(Duration::from_millis(300));
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 22\r\n\r\nanswer for /user2/priv");
    });
    let s = one_loop_proxy(up);
    for round in 0..3 {
        let r = get(s.port(), &format!("/bad/late{round}"), "a");
        assert_eq!(r.text(), format!("answer for /bad/late{round}"));
        // The stray answer arrives while the connection is idle.
        std::thread::sleep(Duration::from_millis(500));
        for i in 0..5 {
            let path = format!("/user5/private-{round}-{i}");
            let r = get(s.port(), &path, "a");
            assert_eq!(r.status, 200);
            assert_eq!(r.text(), format!("answer for {path}"), "round {round}");
        }
    }
}

#[test]
fn issue16_1_a_408_on_an_idle_upstream_connection_never_reaches_the_next_client() {
    let up = misbehaving_upstream(|s| {
        std::thread::sleep(Duration::from_millis(300));
        let _ = s.write_all(
            b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 7\r\n\r\ntimeout",
        );
        let _ = s.shutdown(std::net::Shutdown::Both);
    });
    let s = one_loop_proxy(up);
    for round in 0..3 {
        let r = get(s.port(), &format!("/bad/{round}/close"), "a");
        assert_eq!(r.status, 200);
        std::thread::sleep(Duration::from_millis(500));
        let path = format!("/next/{round}");
        let r = get(s.port(), &path, "a");
        assert_eq!(r.status, 200, "round {round}: {}", r.text());
        assert_eq!(r.text(), format!("answer for {path}"));
    }
}

/// A vhost whose `/cgi-bin/` runs the scripts written into `cgi-bin/`
/// (executable), with a JSON access log and an error log in `logs/`.
fn cgi_site(scripts: &[(&str, &str)]) -> TestServer {
    let mut f = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\ncgi_bin: ../cgi-bin\nlog: ../logs\nroutes:\n  - path: /cgi-bin/\n    handler: cgi\n    options: { run_as_root: true }\n  - path: /\n    handler: static\n",
        )
        .file("www/index.html", "home\n")
        .file("logs/.keep", "");
    for (name, text) in scripts {
        f = f.file(&format!("cgi-bin/{name}"), text);
    }
    let s = f.start();
    for (name, _) in scripts {
        use std::os::unix::fs::PermissionsExt;
        let p = s.dir.path().join("cgi-bin").join(name);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    s
}

#[test]
fn issue16_2_a_script_with_two_different_content_lengths_is_a_502_and_never_desyncs() {
    let s = cgi_site(&[
        (
            "twolen.sh",
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\nContent-Length: 2\\r\\nContent-Length: 40\\r\\n\\r\\nok'\n",
        ),
        (
            "samelen.sh",
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\nContent-Length: 2\\r\\nContent-Length: 2\\r\\n\\r\\nok'\n",
        ),
        (
            "badlen.sh",
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\nContent-Length: -2\\r\\n\\r\\nok'\n",
        ),
    ]);
    let mut c = Client::connect(s.port());
    // Pipelined: the second answer must start where the first one ends.
    c.send(
        b"GET /cgi-bin/twolen.sh HTTP/1.1\r\nHost: a\r\n\r\nGET /index.html HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    let r = c.read_response(false);
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.header("content-length") != Some("40"));
    // The next answer on the connection is the file, whole and in order.
    let r = c.read_response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "home\n"));
    let log = crate::proxy::error_log(&s, "differ");
    assert!(
        log.contains("Content-Length fields that differ (2 and 40)"),
        "{log}"
    );
    // Equal values are one length; a value that is not a number is a 502.
    let r = get(s.port(), "/cgi-bin/samelen.sh", "a");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert_eq!(r.header("content-length"), Some("2"));
    let r = get(s.port(), "/cgi-bin/badlen.sh", "a");
    assert_eq!(r.status, 502);
}

#[test]
fn issue16_5_a_trailer_that_is_no_header_field_is_a_400_and_the_connection_closes() {
    let s = Fixture::new()
        .file("conf.d/a.yaml", &echo_vhost("a", "{port0}", ""))
        .file("www/.keep", "")
        .start();
    for smuggle in [
        &b"0\r\n\rGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"0\r\nGET /smuggled HTTP/1.1\r\n\r\n",
    ] {
        let mut req =
            b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
                .to_vec();
        req.extend_from_slice(smuggle);
        let all = raw(s.port(), &req);
        assert!(all.starts_with("HTTP/1.1 400 "), "{all}");
        assert!(!all.contains("smuggled"), "{all}");
        assert_eq!(all.matches("HTTP/1.1 ").count(), 1, "{all}");
    }
    // Real trailers still pass.
    let all = raw(
        s.port(),
        b"POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n",
    );
    assert!(all.starts_with("HTTP/1.1 200 "), "{all}");
}

fn upstream_header(doc: &serde_json::Value, name: &str) -> Option<String> {
    doc["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .find(|h| h[0].as_str().unwrap_or("").eq_ignore_ascii_case(name))
        .map(|h| h[1].as_str().unwrap_or("").to_owned())
}

#[test]
fn issue16_4_and_9_underscored_names_proxy_and_trace_never_reach_the_upstream() {
    let up = crate::proxy::PyUpstream::start("py", 30.0);
    let s = proxy_site(
        &format!("{{ upstreams: [\"127.0.0.1:{}\"] }}", up.port),
        &format!(
            "  - path: /open/\n    handler: proxy\n    options: {{ upstreams: [\"127.0.0.1:{}\"], underscores_in_headers: true, allow_trace: true }}\n",
            up.port
        ),
    )
    .start();
    let mut c = Client::connect(s.port());
    let r = c.request(
        "GET /x HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 6.6.6.6\r\nX_Real_IP: 6.6.6.6\r\nProxy: http://evil.example:3128\r\nX-Kept: yes\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let d: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(upstream_header(&d, "x_forwarded_for"), None, "{d}");
    assert_eq!(upstream_header(&d, "x_real_ip"), None, "{d}");
    assert_eq!(upstream_header(&d, "proxy"), None, "{d}");
    assert_eq!(upstream_header(&d, "x-kept").as_deref(), Some("yes"));
    assert_eq!(
        upstream_header(&d, "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    // TRACE: 405 with Allow, never forwarded.
    let r = c.request("TRACE /x HTTP/1.1\r\nHost: a\r\nCookie: session=secret\r\n\r\n");
    assert_eq!(r.status, 405);
    assert!(r.header("allow").is_some_and(|a| a.contains("GET")));
    assert!(!r.text().contains("secret"));
    // A route that asks keeps underscores and forwards TRACE; `Proxy:`
    // is still dropped.
    let r = c.request(
        "TRACE /open/x HTTP/1.1\r\nHost: a\r\nX_Custom: 1\r\nProxy: http://evil.example:3128\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let d: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(d["method"], "TRACE");
    assert_eq!(upstream_header(&d, "x_custom").as_deref(), Some("1"));
    assert_eq!(upstream_header(&d, "proxy"), None, "{d}");
}

#[test]
fn issue16_6_read_timeout_bounds_the_whole_response_head_and_interims_are_capped() {
    use std::time::Instant;
    // A head trickled a line at a time, and 102s without end.
    let trickle = scripted(|mut s| {
        let _ = read_head(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\n");
        for i in 0..200 {
            std::thread::sleep(Duration::from_millis(300));
            if s.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .is_err()
            {
                return;
            }
        }
    });
    let processing = scripted(|mut s| {
        let _ = read_head(&mut s);
        for _ in 0..400 {
            std::thread::sleep(Duration::from_millis(50));
            if s.write_all(b"HTTP/1.1 102 Processing\r\n\r\n").is_err() {
                return;
            }
        }
    });
    let s = proxy_site(
        &format!("{{ upstreams: [\"127.0.0.1:{trickle}\"], read_timeout: 2s }}"),
        &format!(
            "  - path: /p/\n    handler: proxy\n    options: {{ upstreams: [\"127.0.0.1:{processing}\"], read_timeout: 30s }}\n"
        ),
    )
    .start();
    // Inline (a GET), then the pool's path (a body over 64 KiB).
    let big = vec![b'x'; 100_000];
    for body in [&b""[..], &big[..]] {
        let t0 = Instant::now();
        let mut c = Client::connect(s.port());
        let mut req = format!(
            "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        c.send(&req);
        let r = c.read_response(false);
        assert_eq!(r.status, 504, "{}", r.text());
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(5), "took {took:?}");
        let t0 = Instant::now();
        let mut c = Client::connect(s.port());
        let mut req = format!(
            "POST /p/x HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        c.send(&req);
        let r = c.read_response(false);
        assert_eq!(r.status, 502, "{}", r.text());
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    }
    let log = crate::proxy::error_log(&s, "interim");
    assert!(log.contains("more than 16 interim responses"), "{log}");
}

#[test]
fn issue16_7_refused_proxy_protocol_connections_log_one_line_a_second_with_a_count() {
    let s = Fixture::new()
        .file("conf.d/server.yaml", "trusted_proxies: [10.0.0.0/8]\n")
        .file(
            "conf.d/a.yaml",
            &echo_vhost("a", "{port0}", "proxy_protocol: true\n"),
        )
        .start();
    let t0 = std::time::Instant::now();
    for _ in 0..2000 {
        if let Ok(c) = TcpStream::connect(s.addr()) {
            drop(c);
        }
    }
    let took = t0.elapsed();
    // The count of the held-back ones follows within the next second.
    assert!(
        s.log.wait_for("more", Duration::from_secs(5)),
        "{}",
        s.log.text()
    );
    std::thread::sleep(Duration::from_millis(1500));
    let log = s.log.text();
    let lines = log
        .lines()
        .filter(|l| l.contains("expects the PROXY protocol") || l.contains("more connection"))
        .count();
    // At most about two lines per second of the flood, plus the summary.
    let bound = 2 * (took.as_secs() as usize + 1) + 2;
    assert!(lines <= bound, "{lines} lines for {took:?}:\n{log}");
    let counted: u64 = log
        .lines()
        .filter_map(|l| {
            let (n, rest) = l
                .split_once(" more refused")
                .map(|(a, b)| (a.rsplit('(').next().unwrap_or(""), b))
                .or_else(|| {
                    l.split_once(" more connection(s)")
                        .map(|(a, b)| (a.rsplit(' ').next().unwrap_or(""), b))
                })?;
            let _ = rest;
            n.trim().parse::<u64>().ok()
        })
        .sum();
    assert!(counted >= 1900, "counted {counted} of 2000:\n{log}");
}

const COUNT_SH: &str =
    "#!/bin/sh\nn=$(wc -c)\nprintf 'Content-Type: text/plain\\n\\n%s\\n' \"$n\"\n";

/// Starts an upload of `len` bytes of which only `sent` are sent; the
/// connection is held open.
fn held_upload(port: u16, path: &str, len: usize, sent: usize) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let head = format!("POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\n\r\n");
    s.write_all(head.as_bytes()).expect("head");
    s.write_all(&vec![b'u'; sent]).expect("body");
    s
}

fn post(port: u16, path: &str, body: &[u8]) -> Resp {
    let mut c = Client::connect(port);
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    c.send(&req);
    c.read_response(false)
}

#[test]
fn issue16_3_slow_uploads_over_64_kib_hold_no_pool_thread() {
    let s = {
        let f = Fixture::new()
            .arg("--workers")
            .arg("2")
            .file(
                "conf.d/a.yaml",
                "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\ncgi_bin: ../cgi-bin\nroutes:\n  - path: /cgi-bin/\n    handler: cgi\n    options: { run_as_root: true }\n",
            )
            .file("www/.keep", "")
            .file("cgi-bin/count.sh", COUNT_SH);
        let s = f.start();
        use std::os::unix::fs::PermissionsExt;
        let p = s.dir.path().join("cgi-bin/count.sh");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        s
    };
    // Ten times the pool's threads in slow uploads, each stopped after
    // 70,000 of 1,000,000 bytes.
    let held: Vec<TcpStream> = (0..20)
        .map(|_| held_upload(s.port(), "/cgi-bin/count.sh", 1_000_000, 70_000))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = std::time::Instant::now();
    let r = post(s.port(), "/cgi-bin/count.sh", &vec![b'x'; 100_000]);
    assert_eq!((r.status, r.text().trim()), (200, "100000"));
    let r = get(s.port(), "/cgi-bin/count.sh", "a");
    assert_eq!((r.status, r.text().trim()), (200, "0"));
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "answered in {:?}",
        t0.elapsed()
    );
    drop(held);
}

#[test]
fn issue16_3_an_upload_slower_than_body_min_rate_is_a_408() {
    let s = Fixture::new()
        .file(
            "conf.d/server.yaml",
            "body_timeout: 1s\nbody_min_rate: 100KiB\n",
        )
        .file("conf.d/a.yaml", &echo_vhost("a", "{port0}", ""))
        .file("www/.keep", "")
        .start();
    let t0 = std::time::Instant::now();
    let mut up = held_upload(s.port(), "/up", 1_000_000, 70_000);
    // A byte every 300 ms: never a 1 s stall, but far below the rate.
    let mut got = Vec::new();
    up.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    while t0.elapsed() < Duration::from_secs(8) {
        let _ = up.write_all(b"u");
        let mut b = [0u8; 4096];
        match std::io::Read::read(&mut up, &mut b) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(_) => {}
        }
        if got.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    let took = t0.elapsed();
    // 1 s, plus 70,000 bytes at 100 KiB/s.
    assert!(
        took > Duration::from_millis(1500) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn issue16_3_a_long_pool_queue_is_a_503_with_retry_after() {
    // One pool thread, and room for one request waiting for it; a handler
    // that blocks for 1.5 s (the `place` test plugin).
    let s = Fixture::new()
        .file("conf.d/server.yaml", "pool_queue: 1\n")
        .arg("--workers")
        .arg("1")
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nlog: ../logs\nroutes:\n  - path: /\n    handler: place\n    options: { sleep_ms: 1500, tag: slow }\n",
        )
        .file("www/.keep", "")
        .file("logs/.keep", "")
        .start();
    let port = s.port();
    let first = std::thread::spawn(move || get(port, "/a", "a"));
    std::thread::sleep(Duration::from_millis(300));
    let second = std::thread::spawn(move || get(port, "/b", "a"));
    std::thread::sleep(Duration::from_millis(300));
    let t0 = std::time::Instant::now();
    let r = get(port, "/c", "a");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(t0.elapsed() < Duration::from_millis(500));
    assert_eq!(first.join().expect("first").status, 200);
    assert_eq!(second.join().expect("second").status, 200);
    let log = crate::proxy::error_log(&s, "pool_queue");
    assert!(log.contains("pool_queue"), "{log}");
}

#[test]
fn issue16_8_spooled_bodies_are_bounded_by_max_spool_and_leave_no_file() {
    let s = Fixture::new()
        .file(
            "conf.d/server.yaml",
            "max_spool: 300KiB\nspool_dir: ../spool\n",
        )
        .file("conf.d/a.yaml", &echo_vhost("a", "{port0}", ""))
        .file("www/.keep", "")
        .file("spool/.keep", "")
        .start();
    // One upload holds 150,000 bytes on disk...
    let mut first = held_upload(s.port(), "/a", 200_000, 150_000);
    std::thread::sleep(Duration::from_millis(300));
    // ...so a second whole one of 200,000 passes the cap: 503, and the
    // connection closes.
    let r = post(s.port(), "/b", &vec![b'b'; 200_000]);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("5"));
    // The first one ends well; its file is gone, so the next one fits.
    first.write_all(&vec![b'u'; 50_000]).expect("rest");
    let mut c = Client::from_stream(first);
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.echo("body-len"), "200000");
    let r = post(s.port(), "/c", &vec![b'c'; 200_000]);
    assert_eq!(r.status, 200);
    assert_eq!(r.echo("body-len"), "200000");
    // Spool files are unlinked from the start.
    let left: Vec<_> = std::fs::read_dir(s.dir.path().join("spool"))
        .expect("spool dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != ".keep")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
