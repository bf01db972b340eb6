//! The `proxy` plugin through the real server, against real upstreams:
//! Python's http.server (`tests/upstreams/app.py`), a second tamada, and
//! scripted sockets for the upstreams that misbehave.

use crate::harness::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Python upstream (see app.py), killed when dropped.
pub struct PyUpstream {
    child: Child,
    pub port: u16,
}

impl PyUpstream {
    pub fn start(name: &str, idle_timeout: f64) -> PyUpstream {
        let port = free_port();
        let child = Self::spawn(&port.to_string(), idle_timeout, name);
        PyUpstream { child, port }
    }
    pub fn start_unix(path: &std::path::Path, name: &str) -> PyUpstream {
        let child = Self::spawn(&format!("unix:{}", path.display()), 30.0, name);
        PyUpstream { child, port: 0 }
    }
    fn spawn(where_: &str, idle: f64, name: &str) -> Child {
        let app = workspace_root().join("server/tests/upstreams/app.py");
        let mut child = Command::new("python3")
            .args([app.to_str().unwrap(), where_, &idle.to_string(), name])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("upstream ready line");
        assert_eq!(line.trim(), "ready");
        child
    }
}

impl Drop for PyUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scripted upstream: `f` runs for each accepted connection, on a
/// thread of its own.
pub fn scripted(f: impl Fn(TcpStream) + Send + Sync + Clone + 'static) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let f = f.clone();
            std::thread::spawn(move || f(s));
        }
    });
    port
}

/// Reads a request head from a scripted upstream's socket.
pub fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Vhost `a` on `{port0}` whose `/` (and `extra` routes first) goes to
/// the proxy with these options; JSON access log in logs/.
pub fn proxy_site(options: &str, extra_routes: &str) -> Fixture {
    proxy_site_with(options, extra_routes, "")
}

/// [`proxy_site`] with more vhost keys (`max_body: 1KiB\n`).
pub fn proxy_site_with(options: &str, extra_routes: &str, vhost_keys: &str) -> Fixture {
    Fixture::new()
        .file(
            "conf.d/a.yaml",
            &format!(
                "vhost: a\nip: 127.0.0.1\nport: {{port0}}\ndocument_root: ../www\nlog: ../logs\n{vhost_keys}loggers:\n  - handler: logging\n    options: {{ format: json }}\nroutes:\n{extra_routes}  - path: /\n    handler: proxy\n    options: {options}\n"
            ),
        )
        .file("logs/.keep", "")
}

/// The vhost's error log, once it has `needle` (bounded wait).
pub fn error_log(s: &TestServer, needle: &str) -> String {
    let p = s.dir.path().join("logs/error.log");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let t = std::fs::read_to_string(&p).unwrap_or_default();
        if t.contains(needle) || Instant::now() > deadline {
            return t;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn json(r: &Resp) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

fn header_of(doc: &serde_json::Value, name: &str) -> Option<String> {
    doc["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|h| h[1].as_str().unwrap().to_owned())
}

fn sha256(data: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn headers_go_upstream_end_to_end_only_with_forwarded_ones_rewritten() {
    let up = PyUpstream::start("py", 30.0);
    let s = proxy_site(
        &format!("{{ upstreams: [\"127.0.0.1:{}\"], forwarded: true }}", up.port),
        &format!(
            "  - path: /trusted/\n    handler: proxy\n    options: {{ upstreams: [\"127.0.0.1:{p}\"], trusted: [127.0.0.0/8], forwarded: true }}\n  - path: /api/\n    handler: proxy\n    options: {{ upstreams: [\"127.0.0.1:{p}\"], replace_prefix: /v1/, host: upstream }}\n  - path: /fixed/\n    handler: proxy\n    options: {{ upstreams: [\"127.0.0.1:{p}\"], host: app.internal, x_forwarded: false }}\n",
            p = up.port
        ),
    )
    .start();
    let mut c = Client::connect(s.port());
    let r = c.request(
        "GET /some/p%20ath?q=1&r=%2F HTTP/1.1\r\nHost: a:8080\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\nUpgrade: websocket\r\nX-Forwarded-For: 203.0.113.9\r\nForwarded: for=203.0.113.9\r\nX-Custom: kept\r\nX-Custom: twice\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // The core's Server and Date; the upstream's own headers pass.
    assert!(r.header("server").unwrap().starts_with("tamada"));
    assert_eq!(r.header("x-upstream"), Some("py"));
    let d = json(&r);
    assert_eq!(d["target"], "/some/p%20ath?q=1&r=%2F");
    assert_eq!(header_of(&d, "host").as_deref(), Some("a:8080"));
    for gone in [
        "x-secret",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
    ] {
        assert_eq!(header_of(&d, gone), None, "{gone} went upstream: {d}");
    }
    // Untrusted peer: its X-Forwarded-For and Forwarded are replaced.
    assert_eq!(
        header_of(&d, "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(header_of(&d, "x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(header_of(&d, "x-forwarded-host").as_deref(), Some("a:8080"));
    assert_eq!(
        header_of(&d, "forwarded").as_deref(),
        Some("for=127.0.0.1;proto=http;host=\"a:8080\"")
    );
    let customs: Vec<_> = d["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == "X-Custom")
        .map(|h| h[1].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(customs, ["kept", "twice"]);

    // A trusted peer: appended to.
    let r = c.request(
        "GET /trusted/x HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\nForwarded: for=203.0.113.9;proto=https\r\n\r\n",
    );
    let d = json(&r);
    assert_eq!(d["target"], "/trusted/x");
    assert_eq!(
        header_of(&d, "x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(header_of(&d, "x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(
        header_of(&d, "forwarded").as_deref(),
        Some("for=203.0.113.9;proto=https, for=127.0.0.1;proto=http;host=a")
    );

    // The route prefix replaced (decoded path encoded again), Host set to
    // the upstream's address.
    let r = c.request("GET /api/users/a%20b?x=1 HTTP/1.1\r\nHost: a\r\nForwarded: for=198.51.100.1;proto=https\r\nX-Real-IP: 198.51.100.1\r\n\r\n");
    let d = json(&r);
    assert_eq!(d["target"], "/v1/users/a%20b?x=1");
    // An untrusted client's Forwarded and X-Real-IP never pass.
    assert_eq!(header_of(&d, "forwarded"), None, "{d}");
    assert_eq!(header_of(&d, "x-real-ip"), None, "{d}");
    assert_eq!(
        header_of(&d, "host"),
        Some(format!("127.0.0.1:{}", up.port))
    );
    let r = c.request("GET /fixed/ HTTP/1.1\r\nHost: a\r\n\r\n");
    let d = json(&r);
    assert_eq!(header_of(&d, "host").as_deref(), Some("app.internal"));
    assert_eq!(header_of(&d, "x-forwarded-for"), None);

    // Absolute-form: the path the core routed goes upstream, and the
    // target's authority is the Host (RFC 9112 3.2.2).
    let r = c.request("GET http://a/p%20q?z=1 HTTP/1.1\r\nHost: other\r\n\r\n");
    let d = json(&r);
    assert_eq!(d["target"], "/p%20q?z=1");
    assert_eq!(header_of(&d, "host").as_deref(), Some("a"));
    let r = c.request("GET http://a?/admin HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(json(&r)["target"], "/?/admin");
    // HEAD: the length of the GET, no body.
    c.send(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.read_response(true);
    assert_eq!(r.status, 200);
    assert!(r.header("content-length").unwrap().parse::<u64>().unwrap() > 10);
    assert!(r.body.is_empty());
    // Still in step on the same connection.
    let r = c.request("GET /after-head HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(json(&r)["target"], "/after-head");
}

#[test]
fn upstream_connections_are_kept_alive_and_a_closed_one_is_never_a_502() {
    // The upstream closes idle connections after 1 s; requests 1.1 s
    // apart, POSTs with bodies included, all answer 200.
    let up = PyUpstream::start("py", 1.0);
    let s = proxy_site(&format!("{{ upstreams: [\"127.0.0.1:{}\"] }}", up.port), "").start();
    // Back to back on one client connection (one event loop, whose idle
    // connections are its own): one upstream connection serves them all.
    let mut c = Client::connect(s.port());
    let ports: Vec<u64> = (0..5)
        .map(|i| {
            json(&c.request(&format!("GET /k{i} HTTP/1.1\r\nHost: a\r\n\r\n")))["port"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(ports.iter().all(|p| *p == ports[0]), "{ports:?}");
    for i in 0..4 {
        std::thread::sleep(Duration::from_millis(1100));
        let mut c = Client::connect(s.port());
        let r = if i % 2 == 0 {
            c.request(
                "POST /form HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\na=1&b=2",
            )
        } else {
            c.request("GET /again HTTP/1.1\r\nHost: a\r\n\r\n")
        };
        assert_eq!(r.status, 200, "round {i}: {}\n{}", r.text(), s.log.text());
        if i % 2 == 0 {
            assert_eq!(json(&r)["body_len"], 7);
        }
    }
    let log = error_log(&s, "");
    assert!(!log.contains("[error]") && !log.contains("ERROR"), "{log}");
}

#[test]
fn request_bodies_stream_upstream_with_their_length_or_chunked() {
    let up = PyUpstream::start("py", 30.0);
    let s = proxy_site(&format!("{{ upstreams: [\"127.0.0.1:{}\"] }}", up.port), "").start();
    let body: Vec<u8> = (0..10 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let want = sha256(&body);
    let mut c = Client::connect(s.port());
    c.send(
        format!(
            "PUT /up HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.send(&body);
    let r = c.read_response(false);
    let d = json(&r);
    assert_eq!(d["body_len"], body.len() as u64);
    assert_eq!(d["body_sha256"], want);
    assert_eq!(
        header_of(&d, "content-length"),
        Some(body.len().to_string())
    );
    // Chunked from the client: collected whole by the core (request
    // buffering, as nginx's), so it goes upstream with its length; on a
    // route that streams bodies, chunked upstream.
    let streaming = proxy_site_with(
        &format!("{{ upstreams: [\"127.0.0.1:{}\"] }}", up.port),
        "",
        "request_buffering: false\n",
    )
    .start();
    let mut c2 = Client::connect(streaming.port());
    for (c, te) in [(&mut c, None), (&mut c2, Some("chunked"))] {
        c.send(b"POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        let mut sent = Vec::new();
        for part in body.chunks(300_000).take(4) {
            c.send(format!("{:x}\r\n", part.len()).as_bytes());
            c.send(part);
            c.send(b"\r\n");
            sent.extend_from_slice(part);
        }
        c.send(b"0\r\n\r\n");
        let r = c.read_response(false);
        let d = json(&r);
        assert_eq!(d["body_len"], sent.len() as u64);
        assert_eq!(d["body_sha256"], sha256(&sent));
        assert_eq!(header_of(&d, "transfer-encoding").as_deref(), te);
        let len = te.is_none().then(|| sent.len().to_string());
        assert_eq!(header_of(&d, "content-length"), len);
    }
    // Over the route's max_body: 413 from the core.
    let s2 = proxy_site_with(
        &format!("{{ upstreams: [\"127.0.0.1:{}\"] }}", up.port),
        "",
        "max_body: 1KiB\n",
    )
    .start();
    let mut c = Client::connect(s2.port());
    c.send(b"POST /big HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.send(format!("{:x}\r\n", 4096).as_bytes());
    c.send(&body[..4096]);
    c.send(b"\r\n0\r\n\r\n");
    assert_eq!(c.read_response(false).status, 413);
}

#[test]
fn an_upstream_that_answers_early_gets_no_more_body_and_nothing_deadlocks() {
    // 401 straight after the head, the body never read.
    let port = scripted(|mut s| {
        read_head(&mut s);
        let _ = s.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\nContent-Length: 5\r\nConnection: close\r\n\r\nno!!\n",
        );
        std::thread::sleep(Duration::from_secs(3));
    });
    // A route that streams request bodies (with buffering, the core would
    // wait for the whole body first, as nginx does).
    let s = proxy_site_with(
        &format!("{{ upstreams: [\"127.0.0.1:{port}\"] }}"),
        "",
        "request_buffering: false\n",
    )
    .start();
    let mut c = Client::connect(s.port());
    let t0 = Instant::now();
    c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000\r\n\r\n");
    // The client keeps sending for a while; the answer comes anyway.
    let chunk = vec![b'x'; 256 * 1024];
    let mut w = c_stream(&c);
    let writer = std::thread::spawn(move || {
        for _ in 0..40 {
            if w.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let r = c.read_response(false);
    assert_eq!(r.status, 401);
    assert_eq!(r.body, b"no!!\n");
    assert!(r.header("www-authenticate").is_some());
    assert!(t0.elapsed() < Duration::from_secs(10));
    drop(c);
    writer.join().unwrap();
    // The server serves on.
    let r = get(s.port(), "/x", "a");
    assert_eq!(r.status, 401);
}

fn c_stream(c: &Client) -> TcpStream {
    c.stream.try_clone().unwrap()
}

#[test]
fn responses_chunked_close_delimited_interim_and_bodiless() {
    let port = scripted(|mut s| {
        loop {
            let head = read_head(&mut s);
            if head.is_empty() {
                return;
            }
            let path = head.split(' ').nth(1).unwrap_or("").to_owned();
            let out: &[u8] = match path.as_str() {
                "/chunked" => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n",
                "/close" => {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end");
                    return;
                }
                "/204" => b"HTTP/1.1 204 No Content\r\nX-B: 2\r\n\r\n",
                "/gzip-te" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
                "/304" => b"HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\n\r\n",
                "/conn" => b"HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=3\r\nContent-Length: 2\r\n\r\nok",
                _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            };
            if s.write_all(out).is_err() {
                return;
            }
        }
    });
    let s = proxy_site(&format!("{{ upstreams: [\"127.0.0.1:{port}\"] }}"), "").start();
    let mut c = Client::connect(s.port());
    let r = c.request("GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello, world");
    assert_eq!(r.header("x-a"), Some("1"));
    assert_eq!(r.header("link"), None, "103's fields stay upstream");
    let r = c.request("GET /204 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.status, r.header("x-b")), (204, Some("2")));
    let r = c.request("GET /304 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.status, r.header("etag")), (304, Some("\"e\"")));
    assert!(r.body.is_empty());
    let r = c.request("GET /conn HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.text(), "ok");
    assert_eq!(r.header("x-hop"), None);
    assert_eq!(r.header("keep-alive"), None);
    // A transfer coding the core cannot pass on: 502 (as nginx).
    let r = c.request("GET /gzip-te HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 502);
    let mut c = Client::connect(s.port());
    let r = c.request("GET /close HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.text(), "until the end");
    // HTTP/1.0 client, close-delimited upstream: close-delimited reply.
    let text = raw(s.port(), b"GET /close HTTP/1.0\r\nHost: a\r\n\r\n");
    assert!(text.ends_with("\r\n\r\nuntil the end"), "{text}");
}

#[test]
fn failing_upstreams_give_502_or_504_and_a_cut_body_is_never_a_valid_one() {
    let garbage = scripted(|mut s| {
        read_head(&mut s);
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n");
    });
    let cut = scripted(|mut s| {
        read_head(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n");
        let _ = s.write_all(&[b'x'; 5000]);
    });
    let closes = scripted(|mut s| {
        read_head(&mut s);
    });
    let big_head = scripted(|mut s| {
        read_head(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\n");
        let filler = format!("X-Filler: {}\r\n", "a".repeat(400));
        for _ in 0..100 {
            if s.write_all(filler.as_bytes()).is_err() {
                return;
            }
        }
    });
    let slow = scripted(|mut s| {
        read_head(&mut s);
        std::thread::sleep(Duration::from_secs(4));
    });
    let routes = format!(
        "  - path: /garbage/\n    handler: proxy\n    options: {{ upstreams: [\"127.0.0.1:{garbage}\"] }}\n  - path: /cut/\n    handler: proxy\n    options: {{ upstreams: [\"127.0.0.1:{cut}\"] }}\n  - path: /closes/\n    handler: proxy\n    options: {{ upstreams: [\"127.0.0.1:{closes}\"], max_fails: 0 }}\n  - path: /bighead/\n    handler: proxy\n    options: {{ upstreams: [\"127.0.0.1:{big_head}\"], max_response_head: 16KiB }}\n  - path: /slow/\n    handler: proxy\n    options: {{ upstreams: [\"127.0.0.1:{slow}\"], read_timeout: 1s }}\n"
    );
    let refused = free_port();
    let s = proxy_site(
        &format!("{{ upstreams: [\"127.0.0.1:{refused}\"] }}"),
        &routes,
    )
    .start();
    assert_eq!(get(s.port(), "/garbage/x", "a").status, 502);
    assert_eq!(get(s.port(), "/closes/x", "a").status, 502);
    assert_eq!(get(s.port(), "/bighead/x", "a").status, 502);
    let t0 = Instant::now();
    assert_eq!(get(s.port(), "/slow/x", "a").status, 504);
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(get(s.port(), "/refused", "a").status, 502);
    // A body cut after the head: the client's connection is cut too,
    // short of the length it was promised.
    let mut c = Client::connect(s.port());
    c.send(b"GET /cut/x HTTP/1.1\r\nHost: a\r\n\r\n");
    let mut got = Vec::new();
    let _ = c.stream.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("Content-Length: 1000000"), "{text}");
    assert!(got.len() < 1_000_000);
    let log = error_log(&s, "Connection refused");
    assert!(log.contains("a bad response head"), "{log}");
    assert!(log.contains("max_response_head"), "{log}");
    assert!(log.contains("read_timeout"), "{log}");
    assert!(log.contains("Connection refused"), "{log}");
    // The server serves on.
    assert_eq!(get(s.port(), "/garbage/y", "a").status, 502);
}

#[test]
fn a_dead_upstream_is_taken_out_and_tried_again_after_fail_timeout() {
    let good = PyUpstream::start("good", 30.0);
    let dead = free_port();
    let dead2 = free_port();
    let s = proxy_site(
        &format!(
            "{{ upstreams: [\"127.0.0.1:{dead}\", \"127.0.0.1:{}\"], fail_timeout: 2s }}",
            good.port
        ),
        &format!(
            "  - path: /alldown/\n    handler: proxy\n    options: {{ upstreams: [\"127.0.0.1:{dead}\", \"127.0.0.1:{dead2}\"], fail_timeout: 2s }}\n  - path: /single/\n    handler: proxy\n    options: {{ upstreams: [\"127.0.0.1:{dead}\"] }}\n"
        ),
    )
    .start();
    // GETs and POSTs: a refused connect goes to the next upstream.
    for i in 0..10 {
        let mut c = Client::connect(s.port());
        let r = if i % 2 == 0 {
            c.request("GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        } else {
            c.request("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
        };
        assert_eq!(r.status, 200, "{i}");
        assert_eq!(r.header("x-upstream"), Some("good"));
    }
    let log = error_log(&s, "is out for");
    assert_eq!(
        log.matches(&format!("upstream 127.0.0.1:{dead} is out for"))
            .count(),
        1,
        "{log}"
    );
    // The only upstream of a route is never taken out (as nginx): each
    // request tries it.
    for _ in 0..2 {
        let before = error_log(&s, "").matches("connecting to").count();
        assert_eq!(get(s.port(), "/single/", "a").status, 502);
        let deadline = Instant::now() + Duration::from_secs(5);
        while error_log(&s, "").matches("connecting to").count() == before {
            assert!(
                Instant::now() < deadline,
                "the single upstream was not tried"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // All down: 502 at once, then tried again after fail_timeout.
    assert_eq!(get(s.port(), "/alldown/", "a").status, 502);
    let t0 = Instant::now();
    assert_eq!(get(s.port(), "/alldown/", "a").status, 502);
    assert!(t0.elapsed() < Duration::from_millis(500));
    std::thread::sleep(Duration::from_millis(2100));
    let before = error_log(&s, "").matches("connecting to").count();
    assert_eq!(get(s.port(), "/alldown/", "a").status, 502);
    let deadline = Instant::now() + Duration::from_secs(5);
    while error_log(&s, "").matches("connecting to").count() == before {
        assert!(Instant::now() < deadline, "not tried again");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn round_robin_and_least_conn_spread_and_unix_sockets_work() {
    let a = PyUpstream::start("one", 30.0);
    let b = PyUpstream::start("two", 30.0);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("app.sock");
    let _u = PyUpstream::start_unix(&sock, "unix");
    let s = proxy_site(
        &format!(
            "{{ upstreams: [\"127.0.0.1:{}\", \"127.0.0.1:{}\"] }}",
            a.port, b.port
        ),
        &format!(
            "  - path: /least/\n    handler: proxy\n    options: {{ upstreams: [\"127.0.0.1:{}\", \"127.0.0.1:{}\"], balance: least_conn }}\n  - path: /unix/\n    handler: proxy\n    options: {{ upstreams: [\"unix:{}\"] }}\n",
            a.port,
            b.port,
            sock.display()
        ),
    )
    .start();
    for prefix in ["/", "/least/"] {
        let names: Vec<String> = (0..10)
            .map(|i| {
                get(s.port(), &format!("{prefix}r{i}"), "a")
                    .header("x-upstream")
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert!(names.iter().any(|n| n == "one"), "{prefix}: {names:?}");
        assert!(names.iter().any(|n| n == "two"), "{prefix}: {names:?}");
    }
    let r = get(s.port(), "/unix/x", "a");
    assert_eq!(r.header("x-upstream"), Some("unix"));
    assert_eq!(json(&r)["target"], "/unix/x");
}

#[test]
fn the_json_access_log_names_the_upstream_its_status_and_time() {
    let up = PyUpstream::start("py", 30.0);
    let s = proxy_site(&format!("{{ upstreams: [\"127.0.0.1:{}\"] }}", up.port), "").start();
    get(s.port(), "/noted", "a");
    let log = s.dir.path().join("logs/access.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("/noted") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let line: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let notes = &line["notes"];
    assert_eq!(notes["upstream_addr"], format!("127.0.0.1:{}", up.port));
    assert_eq!(notes["upstream_status"], "200");
    let t: f64 = notes["upstream_response_time"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((0.0..5.0).contains(&t));
}

#[test]
fn a_client_that_leaves_frees_the_upstream_connection() {
    let (tx, rx) = std::sync::mpsc::channel::<Duration>();
    let tx = std::sync::Arc::new(std::sync::Mutex::new(tx));
    let port = scripted(move |mut s| {
        read_head(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n");
        let t0 = Instant::now();
        let block = vec![b'z'; 64 * 1024];
        while t0.elapsed() < Duration::from_secs(20) {
            if s.write_all(&block).is_err() {
                let _ = tx.lock().unwrap().send(t0.elapsed());
                return;
            }
        }
    });
    let s = proxy_site(&format!("{{ upstreams: [\"127.0.0.1:{port}\"] }}"), "").start();
    let mut c = Client::connect(s.port());
    c.send(b"GET /endless HTTP/1.1\r\nHost: a\r\n\r\n");
    let mut b = vec![0u8; 100_000];
    let _ = c.stream.read(&mut b);
    drop(c);
    let took = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("the upstream's connection closed");
    assert!(took < Duration::from_secs(15));
}

#[test]
fn a_client_that_leaves_before_the_answer_frees_the_waiting_upstream_connection() {
    // The request waits on the event loop for an upstream that never
    // answers; the client goes: the upstream's connection closes at once
    // (not after read_timeout), and the access log says 499.
    let (tx, rx) = std::sync::mpsc::channel::<Duration>();
    let tx = std::sync::Arc::new(std::sync::Mutex::new(tx));
    let port = scripted(move |mut s| {
        read_head(&mut s);
        let t0 = Instant::now();
        let mut b = [0u8; 64];
        // Nothing is sent back: wait for tamada to close.
        while !matches!(s.read(&mut b), Ok(0) | Err(_)) {}
        let _ = tx.lock().unwrap().send(t0.elapsed());
    });
    let s = proxy_site(&format!("{{ upstreams: [\"127.0.0.1:{port}\"] }}"), "").start();
    let mut c = Client::connect(s.port());
    c.send(b"GET /never HTTP/1.1\r\nHost: a\r\n\r\n");
    std::thread::sleep(Duration::from_millis(300));
    drop(c);
    let took = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the upstream's connection closed");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let log = s.dir.path().join("logs/access.log");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("/never")) {
            let line: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(line["status"], 499, "{l}");
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn pipelined_requests_behind_a_waiting_one_are_answered_in_order() {
    // Four requests in one write, POSTs with bodies among them: each waits
    // on the loop for the upstream in turn, the others stay buffered, and
    // the answers come back in order on the one connection.
    let up = PyUpstream::start("py", 30.0);
    let s = proxy_site(&format!("{{ upstreams: [\"127.0.0.1:{}\"] }}", up.port), "").start();
    let mut c = Client::connect(s.port());
    c.send(
        b"GET /p1 HTTP/1.1\r\nHost: a\r\n\r\n\
POST /p2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
HEAD /p3 HTTP/1.1\r\nHost: a\r\n\r\n\
POST /p4 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    let r1 = c.read_response(false);
    assert_eq!(json(&r1)["target"], "/p1");
    let r2 = c.read_response(false);
    assert_eq!(json(&r2)["target"], "/p2");
    assert_eq!(json(&r2)["body_len"], 5);
    let r3 = c.read_response(true);
    assert_eq!(r3.status, 200);
    assert!(r3.body.is_empty());
    let r4 = c.read_response(false);
    assert_eq!(json(&r4)["target"], "/p4");
    assert_eq!(json(&r4)["body_len"], 3);
    // And the connection goes on.
    assert_eq!(
        json(&c.request("GET /p5 HTTP/1.1\r\nHost: a\r\n\r\n"))["target"],
        "/p5"
    );
}

#[test]
fn an_upgrade_on_a_connection_a_loop_waited_on_is_relayed() {
    // Plain requests leave their upstream connections pooled (and still
    // known to the loop that waited on them); an upgrade may take one of
    // them for its relay. Each round: a GET, then a WebSocket upgrade and
    // an echo, on one client connection.
    let port = scripted(|mut s| {
        loop {
            let head = read_head(&mut s);
            if head.is_empty() {
                return;
            }
            if head.to_ascii_lowercase().contains("upgrade: websocket") {
                let _ = s.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                );
                let mut b = [0u8; 4096];
                while let Ok(n) = s.read(&mut b) {
                    if n == 0 || s.write_all(&b[..n]).is_err() {
                        return;
                    }
                }
                return;
            }
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_err()
            {
                return;
            }
        }
    });
    let s = proxy_site(&format!("{{ upstreams: [\"127.0.0.1:{port}\"] }}"), "").start();
    for round in 0..8 {
        let mut c = Client::connect(s.port());
        for _ in 0..3 {
            assert_eq!(
                c.request("GET /plain HTTP/1.1\r\nHost: a\r\n\r\n").text(),
                "ok"
            );
        }
        c.send(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
        let r = c.read_response(false);
        assert_eq!(r.status, 101, "round {round}: {}", r.text());
        c.send(b"echo me");
        let mut got = vec![0u8; 7];
        c.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        c.stream.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"echo me", "round {round}");
    }
}

#[test]
fn proxying_a_second_tamada_passes_files_ranges_and_304s() {
    let upstream = logged_site("")
        .file("www/big.bin", &"0123456789abcdef".repeat(200_000))
        .start();
    let s = proxy_site(
        &format!("{{ upstreams: [\"127.0.0.1:{}\"] }}", upstream.port()),
        "",
    )
    .start();
    let r = get(s.port(), "/big.bin", "a");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 3_200_000);
    let etag = r.header("etag").unwrap().to_owned();
    let mut c = Client::connect(s.port());
    let r = c.request(&format!(
        "GET /big.bin HTTP/1.1\r\nHost: a\r\nIf-None-Match: {etag}\r\n\r\n"
    ));
    assert_eq!(r.status, 304);
    let r = c.request("GET /big.bin HTTP/1.1\r\nHost: a\r\nRange: bytes=16-31\r\n\r\n");
    assert_eq!(r.status, 206);
    assert_eq!(r.text(), "0123456789abcdef");
    assert_eq!(r.header("content-range"), Some("bytes 16-31/3200000"));
    let r = c.request("GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.text(), "home\n");
    // curl agrees on every byte.
    let out = Command::new("curl")
        .args([
            "-sS",
            "--fail",
            &format!("http://127.0.0.1:{}/big.bin", s.port()),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), 3_200_000);
}

#[test]
fn dash_t_reports_bad_upstreams_cidrs_and_keys_with_file_and_line() {
    for (options, want) in [
        (
            "{ upstreams: [\"127.0.0.1:8080\", \"nope\"] }",
            "upstreams[1]",
        ),
        (
            "{ upstreams: [\"ftp://127.0.0.1:8080\"] }",
            "is not host:port, https://host:port or unix:/path",
        ),
        (
            "{ upstreams: [\"https://127.0.0.1:8443/app\"] }",
            "without a path",
        ),
        (
            "{ upstreams: [\"127.0.0.1:8080\"], tls: { ca: ca.pem } }",
            "tls: no upstream is https://",
        ),
        (
            "{ upstreams: [\"https://127.0.0.1:8443\"], tls: { ca: missing.pem } }",
            "missing.pem",
        ),
        ("{ upstreams: [\"unix:run/app.sock\"] }", "absolute path"),
        (
            "{ upstreams: [\"127.0.0.1:8080\"], trusted: [10.0.0.0/33] }",
            "trusted[0]",
        ),
        (
            "{ upstreams: [\"127.0.0.1:8080\"], keepalve: 3 }",
            "keepalve",
        ),
        ("{ upstreams: [] }", "at least one"),
        (
            "{ upstreams: [\"127.0.0.1:8080\"], read_timeout: 0 }",
            "read_timeout: 0",
        ),
    ] {
        let (code, out, err) = proxy_site(options, "").check();
        assert_ne!(code, 0, "{options}: {out}{err}");
        let all = format!("{out}{err}");
        assert!(all.contains(want), "{options}: {all}");
        assert!(all.contains("a.yaml:"), "{options}: {all}");
    }
    let (code, out, err) = proxy_site("{ upstreams: [\"127.0.0.1:8080\", \"unix:/run/x.sock\"], trusted: [10.0.0.0/8, \"::1\"], balance: least_conn }", "").check();
    assert_eq!(code, 0, "{out}{err}");
}

/// A python3 that has the `websockets` module (Debian's, when another
/// python3 comes first on PATH).
fn python_with_websockets() -> String {
    for py in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(py)
            .args(["-c", "import websockets"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return py.to_owned();
        }
    }
    panic!("no python3 with the websockets module: apt-get install python3-websockets");
}

#[test]
fn websockets_are_relayed_both_ways_and_logged_when_they_close() {
    let py = python_with_websockets();
    let script = workspace_root().join("server/tests/upstreams/ws.py");
    let port = free_port();
    let mut server = KillChild(
        Command::new(&py)
            .args([script.to_str().unwrap(), "server", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let s = proxy_site(&format!("{{ upstreams: [\"127.0.0.1:{port}\"] }}"), "").start();
    // A real client through tamada: text, a 300 KB binary, 50 in a row.
    let out = Command::new(&py)
        .args([
            script.to_str().unwrap(),
            "client",
            &format!("ws://127.0.0.1:{}/chat", s.port()),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        error_log(&s, "")
    );
    // The access log has the tunnel, once closed: 101, bytes both ways.
    let log = s.dir.path().join("logs/access.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("/chat") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let line: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(line["status"], 101, "{line}");
    assert!(
        line["body_bytes_sent"].as_u64().unwrap() > 300_000,
        "{line}"
    );
    assert!(line["bytes_received"].as_u64().unwrap() > 300_000, "{line}");
    // Half-close and the idle timeout, with a raw upstream: it answers 101,
    // sends "hi", and ends its side; the client then still sends, and the
    // upstream gets it.
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let tx = std::sync::Arc::new(std::sync::Mutex::new(tx));
    let raw_up = scripted(move |mut s| {
        let head = read_head(&mut s);
        assert!(head.contains("Upgrade: websocket"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("connection: upgrade"),
            "{head}"
        );
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhi",
        )
        .unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let _ = tx.lock().unwrap().send(got);
    });
    let s2 = proxy_site(
        &format!("{{ upstreams: [\"127.0.0.1:{raw_up}\"], read_timeout: 2s }}"),
        "",
    )
    .start();
    let mut c = Client::connect(s2.port());
    c.send(b"GET /raw HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    let mut got = Vec::new();
    let mut b = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\nhi") {
        let n = c.stream.read(&mut b).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&b[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("Upgrade: websocket") && head.contains("Connection: upgrade"),
        "{head}"
    );
    // The upstream's end reached us as an end of stream...
    assert_eq!(c.stream.read(&mut b).unwrap(), 0);
    // ...and our side still goes through, then ends.
    c.stream.write_all(b"after half-close").unwrap();
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let up_got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(up_got, b"after half-close");
    // An idle relay closes after read_timeout.
    let idle_up = scripted(|mut s| {
        read_head(&mut s);
        let _ = s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
        std::thread::sleep(Duration::from_secs(8));
    });
    let s3 = proxy_site(
        &format!("{{ upstreams: [\"127.0.0.1:{idle_up}\"], read_timeout: 1s }}"),
        "",
    )
    .start();
    let mut c = Client::connect(s3.port());
    let t0 = Instant::now();
    c.send(b"GET /idle HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
    let mut all = Vec::new();
    let _ = c.stream.read_to_end(&mut all);
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 101"));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

/// A child process killed when the test ends, however it ends.
pub struct KillChild(pub Child);

impl Drop for KillChild {
    fn drop(&mut self) {
        // SIGTERM first: nginx, gunicorn and php-fpm stop their workers
        // then (a SIGKILL to the master would leave them running).
        // SAFETY: kill with the pid of our own child.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn gunicorn_behind_the_proxy_with_its_closing_connections_and_chunked_streams() {
    let port = free_port();
    let dir = workspace_root().join("server/tests/upstreams");
    let _g = KillChild(
        Command::new("gunicorn")
            .args([
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--workers",
                "2",
                "--chdir",
                dir.to_str().unwrap(),
                "wsgi_app:application",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gunicorn (Debian package gunicorn)"),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "gunicorn did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = proxy_site(&format!("{{ upstreams: [\"127.0.0.1:{port}\"] }}"), "").start();
    let mut c = Client::connect(s.port());
    for i in 0..5 {
        // gunicorn's sync workers close every connection: never reused,
        // never a 502.
        let r = c.request(&format!(
            "POST /items?n={i} HTTP/1.1\r\nHost: app.example\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
        ));
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(r.header("x-app"), Some("wsgi"));
        let d = json(&r);
        assert_eq!(d["method"], "POST");
        assert_eq!(d["path"], "/items");
        assert_eq!(d["query"], format!("n={i}"));
        assert_eq!(d["body"], "hello");
        assert_eq!(d["host"], "app.example");
        assert_eq!(d["xff"], "127.0.0.1");
    }
    let r = c.request("GET /stream HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200);
    let text = r.text();
    assert_eq!(text.lines().count(), 1000);
    assert!(text.ends_with("part 999\n"));
}

#[test]
fn an_interim_response_during_an_upload_does_not_stop_the_body() {
    // 103 Early Hints right after the head, then the whole body is read
    // and answered: the proxy goes back to sending after the 103.
    let port = scripted(|mut s| {
        let head = read_head(&mut s);
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let _ = s.write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n");
        let mut got = 0;
        let mut b = vec![0u8; 65536];
        while got < len {
            match s.read(&mut b) {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
        let body = format!("got {got}");
        let _ = s.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    });
    let s = proxy_site(
        &format!("{{ upstreams: [\"127.0.0.1:{port}\"], read_timeout: 10s }}"),
        "",
    )
    .start();
    let mut c = Client::connect(s.port());
    let body = vec![b'u'; 2_000_000];
    c.send(
        format!(
            "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.send(&body);
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "got 2000000");
}

#[test]
fn a_stop_closes_open_relays_after_the_drain_grace_and_logs_them() {
    let up = scripted(|mut s| {
        read_head(&mut s);
        let _ = s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
        std::thread::sleep(Duration::from_secs(30));
    });
    let mut s = proxy_site(
        &format!("{{ upstreams: [\"127.0.0.1:{up}\"], read_timeout: 60s }}"),
        "",
    )
    .start();
    let mut c = Client::connect(s.port());
    c.send(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
    let mut b = [0u8; 512];
    let n = c.stream.read(&mut b).unwrap();
    assert!(String::from_utf8_lossy(&b[..n]).starts_with("HTTP/1.1 101"));
    let t0 = Instant::now();
    s.signal(libc::SIGTERM);
    assert_eq!(
        s.wait_exit(Duration::from_secs(8)),
        Some(0),
        "{}",
        s.log.text()
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(
        !s.log.text().contains("shutdown timeout"),
        "{}",
        s.log.text()
    );
    let text = std::fs::read_to_string(s.dir.path().join("logs/access.log")).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(line["status"], 101);
    assert_eq!(line["completed"], false);
    assert_eq!(line["error"], "the server is stopping");
}
