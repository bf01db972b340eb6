//! Placement (SDK 1.1): inline handlers run on the connection's event loop,
//! everything else on the blocking pool, and the two mix on one vhost and
//! one connection. The `place` test plugin answers with the name of the
//! thread it ran on (`loop-N` or `pool-N`) and whether it ran inline.

use crate::harness::*;
use std::io::Write;
use std::time::Duration;

fn vhost(extra_routes: &str) -> String {
    format!(
        "vhost: a\nip: 127.0.0.1\nport: {{port0}}\ndocument_root: ../www\nroutes:\n{extra_routes}  - path: /inline/\n    handler: place\n    options: {{ placement: inline, tag: in }}\n  - path: /pool/\n    handler: place\n    options: {{ tag: pool }}\n  - path: /defer/\n    handler: place\n    options: {{ placement: inline, defer: true, tag: defer }}\n  - path: /frozen/\n    handler: frozen\n  - path: /\n    handler: static\n"
    )
}

fn server(extra_routes: &str, args: &[&str]) -> TestServer {
    let mut f = Fixture::new()
        .file("conf.d/a.yaml", &vhost(extra_routes))
        .file("www/index.html", "home\n");
    for a in args {
        f = f.arg(a);
    }
    f.start()
}

#[test]
fn inline_and_pool_handlers_serve_side_by_side() {
    let s = server("", &[]);
    let mut c = Client::connect(s.port());
    let r = c.request("GET /inline/x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200);
    let t = r.text();
    assert!(
        t.contains("thread=loop-") && t.contains("inline=true"),
        "{t}"
    );
    let r = c.request("GET /pool/x HTTP/1.1\r\nHost: a\r\n\r\n");
    let t = r.text();
    assert!(
        t.contains("thread=pool-") && t.contains("inline=false"),
        "{t}"
    );
    let r = c.request("GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "home\n"));
}

#[test]
fn defer_reruns_the_handler_on_the_pool() {
    let s = server("", &[]);
    let r = get(s.port(), "/defer/x", "a");
    let t = r.text();
    assert!(t.contains("tag=defer") && t.contains("thread=pool-"), "{t}");
    assert!(t.contains("inline=false"), "{t}");
}

#[test]
fn a_small_body_that_came_with_the_head_runs_inline_and_so_does_one_after_100_continue() {
    let s = server("", &[]);
    let mut c = Client::connect(s.port());
    let r = c.request("POST /inline/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    let t = r.text();
    assert!(t.contains("inline=true") && t.contains("body=hello"), "{t}");
    // The same with a chunked body, whole in the first read.
    let r = c.request(
        "POST /inline/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    );
    let t = r.text();
    assert!(t.contains("inline=true") && t.contains("body=abcde"), "{t}");
    // Expect: 100-continue with the body not sent yet: the core sends the
    // interim response and collects the body on the loop (request
    // buffering), then the request runs inline.
    c.send(
        b"POST /inline/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    );
    let interim = c.read_response(false);
    assert_eq!(interim.status, 100);
    c.send(b"world");
    let r = c.read_response(false);
    let t = r.text();
    assert!(t.contains("inline=true") && t.contains("body=world"), "{t}");
}

#[test]
fn a_small_body_still_arriving_is_collected_on_the_loop_a_large_one_spooled_then_run_on_the_pool() {
    // One pool thread, kept busy by a sleeper: a request whose small body
    // comes in pieces is collected by the loop and runs inline at once.
    let s = server(
        "  - path: /sleep/\n    handler: place\n    options: { sleep_ms: 1500, tag: sleeper }\n",
        &["--workers", "1"],
    );
    let port = s.port();
    let sleeper = std::thread::spawn(move || get(port, "/sleep/a", "a").status);
    std::thread::sleep(Duration::from_millis(150));
    let t0 = std::time::Instant::now();
    let mut c = Client::connect(s.port());
    c.send(b"POST /inline/x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nfirst");
    std::thread::sleep(Duration::from_millis(100));
    c.send(b"-last");
    let r = c.read_response(false);
    let t = r.text();
    assert!(
        t.contains("thread=loop-") && t.contains("inline=true") && t.contains("body=first-last"),
        "{t}"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t0.elapsed()
    );
    // The connection is still usable, on its loop.
    let r = c.request("GET /inline/y HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(r.text().contains("inline=true"), "{}", r.text());
    assert_eq!(sleeper.join().unwrap(), 200);
    // A body over 64 KiB still arriving is spooled to a file by the loop,
    // then read by a pool handler.
    let big = vec![b'z'; 100 * 1024];
    c.send(
        format!(
            "POST /inline/big HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            big.len()
        )
        .as_bytes(),
    );
    std::thread::sleep(Duration::from_millis(100));
    c.send(&big);
    let r = c.read_response(false);
    let t = r.text();
    assert!(
        t.contains("thread=pool-") && t.contains("inline=false"),
        "{}",
        &t[..200.min(t.len())]
    );
    assert!(t.contains(&format!("body={}", "z".repeat(1000))));
}

#[test]
fn a_small_body_that_stalls_is_answered_408() {
    let s = Fixture::new()
        .file("conf.d/a.yaml", &vhost(""))
        .file("conf.d/server.yaml", "body_timeout: 1s\n")
        .file("www/index.html", "home\n")
        .start();
    let mut c = Client::connect(s.port());
    c.send(b"POST /inline/x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nfirst");
    let t0 = std::time::Instant::now();
    let r = c.read_response(false);
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(t0.elapsed() >= Duration::from_millis(900));
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(r.header("connection"), Some("close"));
}

#[test]
fn the_frozen_1_0_plugin_runs_on_the_pool_and_waits_behind_sleepers() {
    // One pool thread. Two sleepers take it in turn (the pool is FIFO);
    // the frozen 1.0 plugin's request, sent after them, can only finish
    // after both; an inline request sent last finishes first.
    let s = server(
        "  - path: /sleep/\n    handler: place\n    options: { sleep_ms: 800, tag: sleeper }\n",
        &["--workers", "1"],
    );
    let port = s.port();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut clients = Vec::new();
    for path in ["/sleep/a", "/sleep/b", "/frozen/x"] {
        let tx = tx.clone();
        clients.push(std::thread::spawn(move || {
            let r = get(port, path, "a");
            tx.send(format!("{path} {}", r.status)).unwrap();
        }));
        // Each request reaches the pool's queue before the next is sent.
        std::thread::sleep(Duration::from_millis(150));
    }
    let r = get(port, "/inline/now", "a");
    assert!(r.text().contains("thread=loop-"), "{}", r.text());
    tx.send(format!("inline {}", r.status)).unwrap();
    let order: Vec<String> = (0..4)
        .map(|_| rx.recv_timeout(Duration::from_secs(20)).unwrap())
        .collect();
    assert_eq!(order[0], "inline 200", "the inline route waited: {order:?}");
    // The one pool thread sleeps in /sleep/a when the 1.0 plugin's request
    // comes: that request can only finish after it.
    let at = |p: &str| order.iter().position(|o| o.starts_with(p)).unwrap();
    assert!(
        at("/frozen/x") > at("/sleep/a"),
        "the 1.0 plugin did not queue on the pool: {order:?}"
    );
    for t in clients {
        t.join().unwrap();
    }
}

#[test]
fn pipelined_requests_move_to_the_pool_and_back_in_order() {
    let s = server("", &[]);
    let mut c = Client::connect(s.port());
    let mut batch = Vec::new();
    let paths = [
        "/inline/1",
        "/pool/2",
        "/index.html",
        "/defer/4",
        "/inline/5",
        "/pool/6",
        "/inline/7",
    ];
    for p in paths {
        write!(batch, "GET {p} HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    }
    c.send(&batch);
    for p in paths {
        let r = c.read_response(false);
        assert_eq!(r.status, 200, "{p}");
        if p == "/index.html" {
            assert_eq!(r.text(), "home\n");
        } else {
            assert!(r.text().contains(&format!("path={p}")), "{p}: {}", r.text());
            let pooled = p.starts_with("/pool") || p.starts_with("/defer");
            assert_eq!(
                r.text().contains("thread=pool-"),
                pooled,
                "{p}: {}",
                r.text()
            );
        }
    }
}

#[test]
fn a_decline_chain_moves_from_the_loop_to_the_pool() {
    // An inline handler declines on the loop; the next one of the same
    // prefix runs on the pool.
    let s = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nroutes:\n  - path: /\n    handler: place\n    options: { placement: inline, decline: true }\n  - path: /\n    handler: place\n    options: { tag: second }\n",
        )
        .start();
    let r = get(s.port(), "/y", "a");
    let t = r.text();
    assert!(
        t.contains("tag=second") && t.contains("thread=pool-"),
        "{t}"
    );
}

#[test]
fn sighup_reaches_every_loop() {
    let s = Fixture::new()
        .ports(2)
        .file("conf.d/a.yaml", &vhost(""))
        .file("www/index.html", "home\n")
        .arg("--loops")
        .arg("2")
        .start();
    // A vhost on a new port and one on the running port.
    std::fs::write(
        s.conf().join("b.yaml"),
        format!(
            "vhost: b\nip: 127.0.0.1\nport: {}\ndocument_root: ../www\nroutes:\n  - path: /\n    handler: place\n    options: {{ placement: inline, tag: b }}\n",
            s.ports[1]
        ),
    )
    .unwrap();
    std::fs::write(
        s.conf().join("c.yaml"),
        format!(
            "vhost: c\nip: 127.0.0.1\nport: {}\ndocument_root: ../www\nroutes:\n  - path: /\n    handler: place\n    options: {{ placement: inline, tag: c }}\n",
            s.ports[0]
        ),
    )
    .unwrap();
    s.signal(libc::SIGHUP);
    assert!(
        s.log
            .wait_for("reloaded configuration", Duration::from_secs(10)),
        "{}",
        s.log.text()
    );
    // New connections spread over both loops (SO_REUSEPORT); every one
    // of them knows both new vhosts.
    let mut loops = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let r = get(s.ports[1], "/", "b");
        assert!(r.text().contains("tag=b"), "{}", r.text());
        let r = get(s.ports[0], "/", "c");
        assert!(r.text().contains("tag=c"), "{}", r.text());
        let t = r.text();
        let name = t
            .split("thread=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        loops.insert(name.to_owned());
    }
    assert_eq!(loops.len(), 2, "connections reached {loops:?}");
}

#[test]
fn slow_downloads_of_a_pool_stream_never_hold_a_pool_thread() {
    // Two pool threads and 40 clients that start a 64 MiB streamed
    // download each and then read nothing: every one of them gets its
    // head and first bytes, and the pool still answers a new request.
    let s = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nroutes:\n  - path: /big/\n    handler: echo\n    options: { stream_bytes: 67108864 }\n  - path: /\n    handler: place\n    options: { tag: pool }\n",
        )
        .arg("--workers")
        .arg("2")
        .start();
    let mut stalled = Vec::new();
    for i in 0..40 {
        let mut c = Client::connect(s.port());
        c.send(format!("GET /big/{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        let mut buf = [0u8; 4096];
        use std::io::Read;
        c.stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let n = c.stream.read(&mut buf).unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n"),
            "download {i}: {head}"
        );
        stalled.push(c);
    }
    let r = get(s.port(), "/other", "a");
    assert!(r.text().contains("thread=pool-"), "{}", r.text());
    drop(stalled);
}

#[test]
fn an_inline_handler_that_blocks_its_loop_is_reported_once_per_interval() {
    let s = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nlog: ../logs\n\
             loggers: [{ handler: logging }, { handler: metrics }]\n\
             routes:\n  - path: /stuck/\n    handler: place\n    options: { placement: inline, block_ms: 300 }\n\
             \x20 - path: /metrics\n    handler: metrics\n\
             \x20 - path: /\n    handler: place\n    options: { placement: inline }\n",
        )
        .file("www/.keep", "")
        .file("logs/.keep", "")
        .start();
    let p = s.port();
    assert_eq!(get(p, "/stuck/a", "a").status, 200);
    assert_eq!(get(p, "/stuck/b", "a").status, 200);
    assert_eq!(get(p, "/fine", "a").status, 200);
    let log = s.dir.path().join("logs/error.log");
    let mut text = String::new();
    for _ in 0..50 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("held its event loop") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        text.contains("plugin `place` on route /stuck/ held its event loop for about"),
        "{text}"
    );
    // Once per interval, however many calls stall.
    std::thread::sleep(Duration::from_millis(500));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(text.matches("held its event loop").count(), 1, "{text}");
    let ms: u64 = text
        .split("for about ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!((250..2000).contains(&ms), "{ms} ms: {text}");
    // The metrics plugin counts every stall, reported or not.
    let m = get(p, "/metrics", "a").text();
    assert!(
        m.lines()
            .any(|l| l == "tamada_loop_stalls_total{vhost=\"a\"} 2"),
        "{m}"
    );
}

#[test]
fn max_in_flight_keeps_a_slow_route_from_taking_every_pool_thread() {
    let s = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\n\
             routes:\n  - path: /slow/\n    handler: place\n    max_in_flight: 2\n    options: { sleep_ms: 700 }\n\
             \x20 - path: /\n    handler: place\n",
        )
        .file("conf.d/server.yaml", "workers: 4\n")
        .file("www/.keep", "")
        .start();
    let p = s.port();
    let slow: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || get(p, "/slow/x", "a")))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // The other route still has pool threads.
    let t = std::time::Instant::now();
    assert_eq!(get(p, "/other", "a").status, 200);
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    let done: Vec<_> = slow.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = done.iter().filter(|r| r.status == 200).count();
    let busy: Vec<_> = done.iter().filter(|r| r.status == 503).collect();
    assert_eq!(
        ok,
        2,
        "{:?}",
        done.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(busy.len(), 4);
    assert_eq!(busy[0].header("retry-after"), Some("1"));
    // Slots are given back: served again.
    assert_eq!(get(p, "/slow/y", "a").status, 200);
}

#[test]
fn offloaded_slow_work_holds_no_pool_thread_an_upload_elsewhere_needs() {
    // The trial of issue 23: 20 requests to a slow backend (200 ms each)
    // with -w 4 made an unrelated 200 KiB upload wait 0.89 s. Offloaded,
    // they hold no pool thread.
    let s = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\n\
             routes:\n  - path: /slow/\n    handler: place\n    options: { placement: inline, offload_ms: 200 }\n\
             \x20 - path: /up/\n    handler: place\n",
        )
        .arg("-w")
        .arg("4")
        .file("www/.keep", "")
        .start();
    let p = s.port();
    let slow: Vec<_> = (0..20)
        .map(|_| std::thread::spawn(move || get(p, "/slow/x", "a")))
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let body = vec![b'u'; 200 * 1024];
    let t = std::time::Instant::now();
    let mut c = Client::connect(p);
    let mut req = format!(
        "POST /up/x HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    c.send(&req);
    let r = c.read_response(false);
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    // (0.89 s without offload; the margin is for a loaded CI machine)
    assert!(
        took < Duration::from_millis(400),
        "the upload waited {took:?}"
    );
    for t in slow {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200);
        let text = r.text();
        assert!(text.contains("offloaded to tamada-offload"), "{text}");
        assert!(text.contains("answered on loop-"), "{text}");
    }
}

#[test]
fn a_max_in_flight_of_zero_is_an_error_at_its_line() {
    let (code, _, err) = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\n\
             routes:\n  - path: /x/\n    handler: place\n    max_in_flight: 4\n  - path: /\n    handler: place\n    max_in_flight: 0\n",
        )
        .file("www/.keep", "")
        .check();
    assert_ne!(code, 0);
    assert!(err.contains("a.yaml:11:"), "{err}");
    assert!(
        err.contains("routes[1].max_in_flight: 0 would refuse every request"),
        "{err}"
    );
}

/// Waits (up to 5 s) until the server has `n` threads named `prefix*` (a
/// new thread names itself once it runs; an ended one takes a moment).
fn wait_threads(pid: u32, prefix: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while threads_named(pid, prefix) != n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} threads named {prefix}, not {n}",
            threads_named(pid, prefix)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Threads of the server process whose name starts with `prefix`.
fn threads_named(pid: u32, prefix: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|n| n.starts_with(prefix))
        .count()
}

#[test]
fn a_route_with_a_pool_of_its_own_takes_no_shared_thread_and_ends_it_on_reload() {
    let s = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\n\
             routes:\n  - path: /slow/\n    handler: place\n    pool: 3\n    options: { sleep_ms: 600 }\n\
             \x20 - path: /\n    handler: place\n",
        )
        .file("conf.d/server.yaml", "workers: 2\n")
        .file("www/.keep", "")
        .start();
    let p = s.port();
    let pid = s.child.id();
    wait_threads(pid, "route-pool", 3);
    // Six slow requests: the route's 3 threads serve them, 3 at a time.
    let t0 = std::time::Instant::now();
    let slow: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || get(p, "/slow/x", "a")))
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    // The shared pool (2 threads) is free for everyone else.
    let t = std::time::Instant::now();
    let r = get(p, "/other", "a");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("thread=pool-"), "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    for h in slow {
        let r = h.join().unwrap();
        assert_eq!(r.status, 200);
        assert!(r.text().contains("thread=route-pool-"), "{}", r.text());
    }
    // Two rounds of three: the route's own threads, and only three.
    assert!(
        t0.elapsed() >= Duration::from_millis(1150),
        "{:?}",
        t0.elapsed()
    );
    // A reload while a request of the old configuration is in flight
    // (it keeps that configuration alive): the route keeps its pool, no
    // second one is started.
    let held = std::thread::spawn(move || get(p, "/slow/held", "a"));
    std::thread::sleep(Duration::from_millis(100));
    s.signal(libc::SIGHUP);
    assert!(
        s.log
            .wait_for("reloaded configuration", Duration::from_secs(10))
    );
    assert_eq!(threads_named(pid, "route-pool"), 3);
    assert_eq!(held.join().unwrap().status, 200);
    wait_threads(pid, "route-pool", 3);
    assert_eq!(get(p, "/slow/y", "a").status, 200);
}

#[test]
fn a_pool_of_zero_threads_is_an_error_at_its_line() {
    let (code, _, err) = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\n\
             routes:\n  - path: /x/\n    handler: place\n    pool: 0\n",
        )
        .file("www/.keep", "")
        .check();
    assert_ne!(code, 0);
    assert!(err.contains("a.yaml:8:"), "{err}");
    assert!(err.contains("routes[0].pool: 0 threads"), "{err}");
}
