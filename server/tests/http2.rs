//! HTTP/2 through the real binary: curl and nghttp over TLS (ALPN `h2`)
//! and h2c with prior knowledge, and a scripted client of raw frames for
//! malformed requests and the known attacks.

use crate::harness::*;
use crate::tls::Pki;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// A vhost `a.test`: static files from `www/`, CGI under `/cgi-bin/`, a
/// slow pool handler under `/slow/`, echo under `/echo/`; h2c on
/// `{port0}`, TLS on `{port1}`; access log in `logs/`.
fn site(extra: &str) -> Fixture {
    let pki = Pki::new();
    let pair = pki.server(&["a.test", "localhost"], false);
    let vhost = format!(
        "vhost: a.test\nip: 127.0.0.1\nport: {{port0}}\ntls_port: {{port1}}\nh2c: true\n\
         tls: {{ cert: ../tls/a.pem, key: ../tls/a.key }}\n\
         document_root: ../www\ncgi_bin: ../cgi-bin\nlog: ../logs\n{extra}\
         routes:\n  - path: /cgi-bin/\n    handler: cgi\n    options: {{ run_as_root: true }}\n\
         \x20 - path: /stream/\n    handler: cgi\n    request_buffering: false\n    max_body: 4MiB\n    options: {{ run_as_root: true }}\n\
         \x20 - path: /small/\n    handler: cgi\n    request_buffering: false\n    max_body: 100KiB\n    options: {{ run_as_root: true }}\n\
         \x20 - path: /slow/\n    handler: place\n    options: {{ sleep_ms: 1500, tag: sleeper }}\n\
         \x20 - path: /echo/\n    handler: echo\n\
         \x20 - path: /frozen13/\n    handler: frozen13\n\
         \x20 - path: /\n    handler: static\n"
    );
    let big: String = (0..200_000).map(|i| format!("{:07}\n", i)).collect();
    Fixture::new()
        .ports(2)
        .file("conf.d/server.yaml", "send_timeout: 2s\nworkers: 8\n")
        .file("conf.d/a.yaml", &vhost)
        .file("tls/ca.pem", &pki.ca_pem())
        .file("tls/a.pem", &pair.cert)
        .file("tls/a.key", &pair.key)
        .file("www/index.html", "<h1>home</h1>\n")
        .file("www/big.txt", &big)
        .file(
            "cgi-bin/env.sh",
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\nConnection: close\\r\\nKeep-Alive: timeout=5\\r\\nUpgrade: h2c\\r\\n\\r\\n'\n\
             echo \"proto=$SERVER_PROTOCOL len=$CONTENT_LENGTH cookie=$HTTP_COOKIE\"\ncat\n",
        )
        .file("logs/.keep", "")
}

fn start(f: Fixture) -> TestServer {
    let s = f.start();
    let script = s.dir.path().join("cgi-bin/env.sh");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    s
}

/// `curl` over HTTP/2 (TLS when `tls`, else h2c): (http_version, status,
/// headers, body).
fn curl(s: &TestServer, tls: bool, path: &str, extra: &[&str]) -> (String, u16, String, Vec<u8>) {
    let dir = s.dir.path();
    let _ = std::fs::remove_file(dir.join("curl.out"));
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "10", "-D", "-", "-o"])
        .arg(dir.join("curl.out"))
        .args(["-w", "\n%{http_version} %{http_code}"]);
    if tls {
        c.arg("--http2")
            .arg("--cacert")
            .arg(dir.join("tls/ca.pem"))
            .arg("--resolve")
            .arg(format!("a.test:{}:127.0.0.1", s.ports[1]))
            .arg(format!("https://a.test:{}{path}", s.ports[1]));
    } else {
        c.arg("--http2-prior-knowledge")
            .arg(format!("http://127.0.0.1:{}{path}", s.ports[0]));
    }
    let out = c.args(extra).output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, last) = text.rsplit_once('\n').unwrap_or(("", ""));
    let mut it = last.split_whitespace();
    let version = it.next().unwrap_or("").to_owned();
    let status = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = std::fs::read(dir.join("curl.out")).unwrap_or_default();
    (version, status, head.to_owned(), body)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn access_log(s: &TestServer, lines: usize) -> Vec<String> {
    let path = s.dir.path().join("logs/access.log");
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let l: Vec<String> = text.lines().map(str::to_owned).collect();
        if l.len() >= lines || Instant::now() > end {
            return l;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn static_files_over_h2_and_h2c_with_ranges_conditionals_and_the_log() {
    let s = start(site(""));
    for tls in [true, false] {
        let (v, st, head, body) = curl(&s, tls, "/index.html", &[]);
        assert_eq!((v.as_str(), st), ("2", 200), "{head}");
        assert_eq!(body, b"<h1>home</h1>\n");
        assert_eq!(header(&head, "content-length"), Some("14"));
        let etag = header(&head, "etag").expect("etag").to_owned();
        let (_, st, _, body) = curl(
            &s,
            tls,
            "/index.html",
            &["-H", &format!("If-None-Match: {etag}")],
        );
        assert_eq!(st, 304);
        assert!(body.is_empty());
        let (_, st, head, body) = curl(&s, tls, "/big.txt", &["-r", "8-15"]);
        assert_eq!(st, 206);
        assert_eq!(body, b"0000001\n");
        assert_eq!(header(&head, "content-range"), Some("bytes 8-15/1600000"));
        // Two ranges: a multipart body of segments (bytes and file ranges).
        let (_, st, head, body) = curl(&s, tls, "/big.txt", &["-r", "0-7,800000-800007"]);
        assert_eq!(st, 206);
        assert!(
            header(&head, "content-type").is_some_and(|t| t.starts_with("multipart/byteranges")),
            "{head}"
        );
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains("0000000\n") && body.contains("0100000\n"),
            "{body}"
        );
        assert_eq!(
            header(&head, "content-length"),
            Some(body.len().to_string().as_str())
        );
        // A body larger than every window: sent as the client allows.
        let (_, st, _, body) = curl(&s, tls, "/big.txt", &[]);
        assert_eq!(st, 200);
        assert_eq!(body.len(), 1_600_000);
        assert!(body.ends_with(b"0199999\n"));
        let (_, st, _, body) = curl(&s, tls, "/nothing", &[]);
        assert_eq!(st, 404);
        assert!(String::from_utf8_lossy(&body).contains("404"));
        let (_, st, head, body) = curl(&s, tls, "/index.html", &["-I"]);
        assert_eq!(st, 200);
        assert_eq!(header(&head, "content-length"), Some("14"));
        // (curl -I writes the head where the body would go)
        assert!(!String::from_utf8_lossy(&body).contains("home"));
    }
    // HTTP/1.1 still works on the h2c socket.
    let out = Command::new("curl")
        .args([
            "-sS",
            "--http1.1",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .arg(format!("http://127.0.0.1:{}/index.html", s.ports[0]))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1.1 200");
    let log = access_log(&s, 15);
    assert!(log.len() >= 15, "{log:?}");
    assert!(log[14].contains(" HTTP/1.1\" 200"), "{log:?}");
    assert!(
        log[..14].iter().all(|l| l.contains(" HTTP/2.0\" ")),
        "every request is logged as HTTP/2.0: {log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("\"GET /big.txt HTTP/2.0\" 200 1600000"))
    );
}

#[test]
fn the_frozen_sdk_1_3_fixture_learns_the_http_version_by_its_protocol_table() {
    // testplugins/frozen-v1_3: written against the vendored 1.3 tables;
    // every later server of major 1 must keep answering it like this.
    let s = start(site(""));
    for tls in [true, false] {
        let (_, st, _, body) = curl(&s, tls, "/frozen13/x", &[]);
        assert_eq!(st, 200);
        assert_eq!(
            String::from_utf8_lossy(&body),
            "frozen 1.3: HTTP/2.0 (1.0 field: 1.1)\n"
        );
    }
    let r = get(s.ports[0], "/frozen13/x", "a.test");
    assert_eq!(r.text(), "frozen 1.3: HTTP/1.1 (1.0 field: 1.1)\n");
    let r = raw(
        s.ports[0],
        b"GET /frozen13/x HTTP/1.0\r\nHost: a.test\r\n\r\n",
    );
    assert!(
        r.ends_with("frozen 1.3: HTTP/1.0 (1.0 field: 1.0)\n"),
        "{r}"
    );
}

#[test]
fn http2_off_gives_http_1_1_by_alpn_and_no_h2c() {
    let pki = Pki::new();
    let pair = pki.server(&["b.test"], false);
    let s = Fixture::new()
        .ports(2)
        .file(
            "conf.d/b.yaml",
            "vhost: b.test\nip: 127.0.0.1\nport: {port0}\ntls_port: {port1}\nhttp2: false\n\
             tls: { cert: ../tls/b.pem, key: ../tls/b.key }\ndocument_root: ../www\n",
        )
        .file("tls/ca.pem", &pki.ca_pem())
        .file("tls/b.pem", &pair.cert)
        .file("tls/b.key", &pair.key)
        .file("www/index.html", "b\n")
        .start();
    let out = Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .arg("--cacert")
        .arg(s.dir.path().join("tls/ca.pem"))
        .arg("--resolve")
        .arg(format!("b.test:{}:127.0.0.1", s.ports[1]))
        .arg(format!("https://b.test:{}/index.html", s.ports[1]))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1.1 200");
    // No h2c on a socket that did not ask for it: the preface is refused
    // as an HTTP/1.1 request line.
    let r = raw(s.ports[0], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    assert!(
        r.starts_with("HTTP/1.1 505") || r.starts_with("HTTP/1.1 400"),
        "{r}"
    );
}

#[test]
fn vhosts_on_one_socket_must_agree_on_http2_and_h2c() {
    let (code, _, err) = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\nh2c: true\ndocument_root: ../www\n",
        )
        .file(
            "conf.d/b.yaml",
            "vhost: b\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\n",
        )
        .check();
    assert_ne!(code, 0);
    assert!(
        err.contains("b.yaml") && err.contains("h2c") && err.contains("must agree"),
        "{err}"
    );
}

#[test]
fn cgi_over_h2_gets_the_body_http2_protocol_joined_cookies_and_loses_connection_headers() {
    let s = start(site(""));
    for tls in [true, false] {
        let (v, st, head, body) = curl(
            &s,
            tls,
            "/cgi-bin/env.sh",
            &[
                "--data-binary",
                "hello=world",
                "-H",
                "Cookie: a=1",
                "-H",
                "Cookie: b=2",
            ],
        );
        assert_eq!((v.as_str(), st), ("2", 200), "{head}");
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.starts_with("proto=HTTP/2.0 len=11 cookie=a=1; b=2\nhello=world"),
            "{body}"
        );
        // The script's connection-specific fields are not HTTP/2 fields.
        for h in ["connection", "keep-alive", "upgrade", "transfer-encoding"] {
            assert_eq!(header(&head, h), None, "{h} in {head}");
        }
    }
    // A large upload, spooled and whole.
    let up = s.dir.path().join("up.bin");
    std::fs::write(&up, vec![b'x'; 3 << 20]).expect("write");
    let (_, st, _, body) = curl(
        &s,
        true,
        "/cgi-bin/env.sh",
        &["--data-binary", &format!("@{}", up.display())],
    );
    assert_eq!(st, 200);
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.starts_with("proto=HTTP/2.0 len=3145728"),
        "{}",
        &body[..80.min(body.len())]
    );
    assert_eq!(
        body.len(),
        "proto=HTTP/2.0 len=3145728 cookie=\n".len() + (3 << 20)
    );
}

#[test]
fn a_streaming_route_reads_its_body_as_it_comes_and_refuses_one_too_large() {
    let s = start(site(""));
    let up = s.dir.path().join("up.bin");
    std::fs::write(&up, vec![b'y'; 3 << 20]).expect("write");
    for tls in [true, false] {
        // With a length.
        let (_, st, _, body) = curl(
            &s,
            tls,
            "/stream/env.sh",
            &["--data-binary", &format!("@{}", up.display())],
        );
        assert_eq!(st, 200);
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.starts_with("proto=HTTP/2.0 len=3145728"),
            "{}",
            &body[..60.min(body.len())]
        );
        assert_eq!(
            body.len(),
            "proto=HTTP/2.0 len=3145728 cookie=\n".len() + (3 << 20)
        );
        // Without one (read from a pipe): the cgi plugin counts it for
        // CONTENT_LENGTH (RFC 3875 wants one) as it takes it from the pipe.
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "head -c 1000000 /dev/zero | tr '\\0' z | curl -sS --max-time 10 {} -T - -X POST -o - {}",
                if tls {
                    format!(
                        "--http2 --cacert {} --resolve a.test:{p}:127.0.0.1",
                        s.dir.path().join("tls/ca.pem").display(),
                        p = s.ports[1]
                    )
                } else {
                    "--http2-prior-knowledge".to_owned()
                },
                if tls {
                    format!("https://a.test:{}/stream/env.sh", s.ports[1])
                } else {
                    format!("http://127.0.0.1:{}/stream/env.sh", s.ports[0])
                }
            ))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout);
        let head = "proto=HTTP/2.0 len=1000000 cookie=\n";
        assert!(text.starts_with(head), "{}", &text[..80.min(text.len())]);
        assert_eq!(text.len(), head.len() + 1_000_000);
    }
    // Over the route's max_body (100 KiB) with no length announced: the
    // handler's read fails, the answer is 413.
    let mut c = Raw::connect(s.ports[0], &[]);
    c.until(|f| f.ty == SETTINGS && f.flags & 1 == 0)
        .expect("settings");
    let mut out = frame(
        HEADERS,
        END_HEADERS,
        1,
        &block("POST", "/small/env.sh", &[]),
    );
    let piece = vec![b'q'; 16_384];
    for _ in 0..13 {
        out.extend(frame(DATA, 0, 1, &piece));
    }
    out.extend(frame(DATA, END_STREAM, 1, b"end"));
    c.send(&out);
    let f = c
        .until(|f| f.sid == 1 && (f.ty == HEADERS || f.ty == RST_STREAM))
        .expect("an answer");
    assert_eq!(f.ty, HEADERS, "{f:?}");
    assert_ne!(f.payload[0], 0x88, "not a 200");
    let end = Instant::now() + Duration::from_secs(5);
    while !access_log(&s, 1)
        .iter()
        .any(|l| l.contains("\"POST /small/env.sh HTTP/2.0\" 413"))
    {
        assert!(Instant::now() < end, "no 413 in the access log");
        std::thread::sleep(Duration::from_millis(100));
    }
    still_serves(&s);
}

#[test]
fn a_body_trickled_below_body_min_rate_gets_408() {
    let s = start(site("").file(
        "conf.d/server.yaml",
        "send_timeout: 2s\nworkers: 8\nbody_timeout: 1s\nbody_min_rate: 100000\n",
    ));
    let mut c = Raw::connect(s.ports[0], &[]);
    c.until(|f| f.ty == SETTINGS && f.flags & 1 == 0)
        .expect("settings");
    let fields = [("content-length", "100000")];
    c.send(&frame(
        HEADERS,
        END_HEADERS,
        1,
        &block("POST", "/cgi-bin/env.sh", &fields),
    ));
    // A byte every 200 ms: never a stall of body_timeout, far below the
    // rate.
    c.s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let t0 = Instant::now();
    let mut answered = None;
    while t0.elapsed() < Duration::from_secs(6) && answered.is_none() {
        c.send(&frame(DATA, 0, 1, b"x"));
        answered = c.until(|f| f.sid == 1 && (f.ty == HEADERS || f.ty == RST_STREAM));
    }
    let f = answered.expect("an answer before 6 s");
    assert_eq!(f.ty, HEADERS, "{f:?}");
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    let end = Instant::now() + Duration::from_secs(5);
    while !access_log(&s, 1)
        .iter()
        .any(|l| l.contains("\"POST /cgi-bin/env.sh HTTP/2.0\" 408"))
    {
        assert!(Instant::now() < end, "no 408 in the access log");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_slow_pool_stream_does_not_hold_up_the_others_on_its_connection() {
    let s = start(site(""));
    let base = format!("http://127.0.0.1:{}", s.ports[0]);
    let mut args = vec![
        "-n".to_owned(),
        "-s".to_owned(),
        "-m".to_owned(),
        "1".to_owned(),
    ];
    args.push(format!("{base}/slow/x"));
    for i in 0..40 {
        args.push(format!("{base}/echo/{i}"));
    }
    let t0 = Instant::now();
    let out = Command::new("nghttp")
        .args(&args)
        .output()
        .expect("run nghttp (apt-get install nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // "id  responseEnd requestStart  process code size request path"
    let mut slow_end = None;
    let mut fast = Vec::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 7 && f[1].starts_with('+') {
            let end = parse_ms(f[1]);
            assert_eq!(f[4], "200", "{l}");
            if f[6].starts_with("/slow/") {
                slow_end = Some(end);
            } else {
                fast.push(end);
            }
        }
    }
    let slow_end = slow_end.unwrap_or_else(|| panic!("no slow stream in {text}"));
    assert_eq!(fast.len(), 40, "{text}");
    assert!(slow_end >= 1400.0, "{text}");
    for f in fast {
        assert!(f < 1000.0, "a fast stream waited for the slow one: {text}");
    }
    assert!(t0.elapsed() < Duration::from_secs(10));
}

fn parse_ms(s: &str) -> f64 {
    let s = s.trim_start_matches('+');
    if let Some(v) = s.strip_suffix("ms") {
        v.parse().unwrap_or(f64::MAX)
    } else if let Some(v) = s.strip_suffix("us") {
        v.parse::<f64>().map(|v| v / 1000.0).unwrap_or(f64::MAX)
    } else if let Some(v) = s.strip_suffix('s') {
        v.parse::<f64>().map(|v| v * 1000.0).unwrap_or(f64::MAX)
    } else {
        f64::MAX
    }
}

// ---------------------------------------------------------------------
// A scripted client of raw frames (h2c).

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;

fn frame(ty: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut f = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, ty, flags];
    f.extend_from_slice(&sid.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A header block: `:method`, `:scheme http`, `:path`, `:authority`,
/// then literal fields (no Huffman, not indexed).
fn block(method: &str, path: &str, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    match method {
        "GET" => b.push(0x82),
        "POST" => b.push(0x83),
        m => lit_indexed_name(&mut b, 2, m),
    }
    b.push(0x86);
    lit_indexed_name(&mut b, 4, path);
    lit_indexed_name(&mut b, 1, "a.test");
    for (n, v) in fields {
        b.push(0x00);
        len(&mut b, n.len());
        b.extend_from_slice(n.as_bytes());
        len(&mut b, v.len());
        b.extend_from_slice(v.as_bytes());
    }
    b
}

fn lit_indexed_name(b: &mut Vec<u8>, idx: u8, v: &str) {
    b.push(idx); // literal without indexing, indexed name (idx < 15)
    len(b, v.len());
    b.extend_from_slice(v.as_bytes());
}

/// An HPACK string length (7-bit prefix, no Huffman).
fn len(b: &mut Vec<u8>, n: usize) {
    if n < 127 {
        b.push(n as u8);
        return;
    }
    b.push(127);
    let mut n = n - 127;
    while n >= 128 {
        b.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    b.push(n as u8);
}

struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Frame {
    ty: u8,
    flags: u8,
    sid: u32,
    payload: Vec<u8>,
}

impl Raw {
    /// Connects with the preface and an empty SETTINGS (plus `settings`).
    fn connect(port: u16, settings: &[(u16, u32)]) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut r = Raw { s, buf: Vec::new() };
        let mut p = Vec::new();
        for (id, v) in settings {
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&v.to_be_bytes());
        }
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend(frame(SETTINGS, 0, 0, &p));
        r.send(&out);
        r
    }
    fn send(&mut self, b: &[u8]) -> bool {
        self.s.write_all(b).is_ok()
    }
    /// The next frame (settings are acknowledged), `None` at the end.
    fn next(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let n = (self.buf[0] as usize) << 16
                    | (self.buf[1] as usize) << 8
                    | self.buf[2] as usize;
                if self.buf.len() >= 9 + n {
                    let f = Frame {
                        ty: self.buf[3],
                        flags: self.buf[4],
                        sid: u32::from_be_bytes([
                            self.buf[5],
                            self.buf[6],
                            self.buf[7],
                            self.buf[8],
                        ]) & 0x7fff_ffff,
                        payload: self.buf[9..9 + n].to_vec(),
                    };
                    self.buf.drain(..9 + n);
                    if f.ty == SETTINGS && f.flags & 1 == 0 {
                        self.send(&frame(SETTINGS, 1, 0, &[]));
                    }
                    return Some(f);
                }
            }
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
    /// Frames until one matches (or the connection ends).
    fn until(&mut self, want: impl Fn(&Frame) -> bool) -> Option<Frame> {
        while let Some(f) = self.next() {
            if want(&f) {
                return Some(f);
            }
        }
        None
    }
}

fn goaway_code(f: &Frame) -> u32 {
    u32::from_be_bytes([f.payload[4], f.payload[5], f.payload[6], f.payload[7]])
}

fn rst_code(f: &Frame) -> u32 {
    u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]])
}

/// The server still answers a plain GET on a new connection.
fn still_serves(s: &TestServer) {
    let (_, st, _, _) = curl(s, false, "/index.html", &[]);
    assert_eq!(st, 200, "the server stopped serving others");
}

#[test]
fn malformed_requests_are_reset_with_protocol_error() {
    let s = start(site(""));
    let cases: &[(&str, Vec<(&str, &str)>)] = &[
        (
            "connection-specific field",
            vec![("connection", "keep-alive")],
        ),
        ("te other than trailers", vec![("te", "gzip")]),
        ("uppercase name", vec![("X-Big", "1")]),
        ("host and :authority disagree", vec![("host", "other.test")]),
        ("a value with leading space", vec![("x-a", " b")]),
        ("a value with a trailing tab", vec![("x-a", "b\t")]),
    ];
    for (what, fields) in cases {
        let mut c = Raw::connect(s.ports[0], &[]);
        c.send(&frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            1,
            &block("GET", "/index.html", fields),
        ));
        let f = c
            .until(|f| f.sid == 1 || f.ty == GOAWAY)
            .unwrap_or_else(|| panic!("{what}: no answer"));
        let protocol_error =
            (f.ty == RST_STREAM && rst_code(&f) == 1) || (f.ty == GOAWAY && goaway_code(&f) == 1);
        assert!(protocol_error, "{what}: {f:?}");
    }
    // A missing pseudo-header field (`:path`).
    let mut c = Raw::connect(s.ports[0], &[]);
    let mut b = vec![0x82, 0x86];
    lit_indexed_name(&mut b, 1, "a.test");
    c.send(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &b));
    let f = c
        .until(|f| f.sid == 1 || f.ty == GOAWAY)
        .expect("an answer");
    assert!(f.ty == RST_STREAM || f.ty == GOAWAY, "{f:?}");
    // A well-formed request on a fresh connection: HEADERS then DATA.
    let mut c = Raw::connect(s.ports[0], &[]);
    c.send(&frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &block("GET", "/index.html", &[]),
    ));
    let f = c.until(|f| f.sid == 1).expect("headers");
    assert_eq!(f.ty, HEADERS);
    assert_eq!(f.payload[0], 0x88, ":status 200 (indexed)");
    let f = c.until(|f| f.sid == 1 && f.ty == DATA).expect("data");
    assert_eq!(f.payload, b"<h1>home</h1>\n");
    still_serves(&s);
}

#[test]
fn the_more_urgent_stream_gets_the_connection_window_first() {
    let s = start(site(""));
    // Streams may take 1 MiB each, the connection only its first 64 KiB
    // (never raised): whichever stream gets it first shows the order.
    let mut c = Raw::connect(s.ports[0], &[(4, 1 << 20)]);
    let mut out = frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &block("GET", "/big.txt", &[("priority", "u=6")]),
    );
    out.extend(frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        3,
        &block("GET", "/big.txt", &[("priority", "u=0")]),
    ));
    c.send(&out);
    let f = c.until(|f| f.ty == DATA).expect("data");
    assert_eq!(f.sid, 3, "the u=0 stream is served first");
}

#[test]
fn frames_of_a_wrong_length_are_frame_size_errors() {
    let s = start(site(""));
    let cases: [(&str, Vec<u8>, u32); 4] = [
        ("PING of 7 bytes", frame(PING, 0, 0, &[0; 7]), 6),
        (
            "SETTINGS ack with a payload",
            frame(SETTINGS, 1, 0, &[0; 6]),
            6,
        ),
        (
            "WINDOW_UPDATE of 3 bytes",
            frame(WINDOW_UPDATE, 0, 0, &[0, 0, 1]),
            6,
        ),
        // SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1.
        (
            "a window too large",
            frame(SETTINGS, 0, 0, &[0, 4, 0x80, 0, 0, 0]),
            3,
        ),
    ];
    for (what, bad, code) in cases {
        let mut c = Raw::connect(s.ports[0], &[]);
        c.until(|f| f.ty == SETTINGS && f.flags & 1 == 0)
            .expect("settings");
        c.send(&bad);
        let f = c
            .until(|f| f.ty == GOAWAY)
            .unwrap_or_else(|| panic!("{what}: no GOAWAY"));
        assert_eq!(goaway_code(&f), code, "{what}");
    }
    still_serves(&s);
}

#[test]
fn rapid_reset_ends_the_connection_with_enhance_your_calm() {
    let s = start(site(""));
    let mut c = Raw::connect(s.ports[0], &[]);
    let mut out = Vec::new();
    for i in 0..2000u32 {
        let sid = 1 + 2 * i;
        out.extend(frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            sid,
            &block("GET", "/slow/x", &[]),
        ));
        out.extend(frame(RST_STREAM, 0, sid, &8u32.to_be_bytes()));
    }
    c.send(&out);
    let f = c.until(|f| f.ty == GOAWAY).expect("a GOAWAY");
    assert_eq!(goaway_code(&f), 0xb, "ENHANCE_YOUR_CALM: {f:?}");
    still_serves(&s);
}

#[test]
fn resets_after_the_streams_were_accepted_count_too() {
    let s = start(site(""));
    let mut c = Raw::connect(s.ports[0], &[]);
    // Each stream is accepted (and handed to the pool) before its reset
    // arrives: h2's own pending-accept limit does not see these.
    for i in 0..400u32 {
        let sid = 1 + 2 * i;
        let h = frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            sid,
            &block("GET", "/slow/x", &[]),
        );
        if !c.send(&h) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
        if !c.send(&frame(RST_STREAM, 0, sid, &8u32.to_be_bytes())) {
            break;
        }
    }
    let f = c.until(|f| f.ty == GOAWAY).expect("a GOAWAY");
    assert_eq!(goaway_code(&f), 0xb, "{f:?}");
    assert!(
        s.log.wait_for("rapid reset", Duration::from_secs(3)),
        "{}",
        s.log.text()
    );
    still_serves(&s);
}

#[test]
fn a_continuation_flood_is_bounded_by_max_header_size() {
    let s = start(site(""));
    let mut c = Raw::connect(s.ports[0], &[]);
    c.send(&frame(
        HEADERS,
        END_STREAM,
        1,
        &block("GET", "/index.html", &[]),
    ));
    let junk: Vec<u8> = {
        let v = "v".repeat(1000);
        let mut b = Vec::new();
        for i in 0..15 {
            b.push(0x00);
            let n = format!("x-junk-{i}");
            len(&mut b, n.len());
            b.extend_from_slice(n.as_bytes());
            len(&mut b, v.len());
            b.extend_from_slice(v.as_bytes());
        }
        b
    };
    let mut sent = 0usize;
    let mut cut = false;
    // 100 MiB of header block, never ended, unless the server stops it.
    for _ in 0..6_400 {
        if !c.send(&frame(CONTINUATION, 0, 1, &junk)) {
            cut = true;
            break;
        }
        sent += junk.len();
    }
    let answer =
        c.until(|f| f.ty == GOAWAY || (f.sid == 1 && (f.ty == HEADERS || f.ty == RST_STREAM)));
    assert!(
        cut || answer.is_some(),
        "the server took {sent} bytes of one header block without a word"
    );
    if let Some(f) = &answer {
        assert_ne!(f.ty, DATA);
        if f.ty == HEADERS {
            assert_ne!(f.payload[0], 0x88, "not a 200");
        }
    }
    still_serves(&s);
}

#[test]
fn an_hpack_bomb_is_bounded() {
    let s = start(site(""));
    let mut c = Raw::connect(s.ports[0], &[]);
    let mut b = block("GET", "/index.html", &[]);
    // One 4000-byte field into the dynamic table, then 12 000 one-byte
    // references to it: 48 MB of decoded fields from 16 KB.
    b.push(0x40);
    len(&mut b, 6);
    b.extend_from_slice(b"x-bomb");
    len(&mut b, 4000);
    b.extend(std::iter::repeat_n(b'b', 4000));
    b.extend(std::iter::repeat_n(0xbeu8, 12_000)); // index 62
    let mut first = true;
    for piece in b.chunks(16_000) {
        let ty = if first { HEADERS } else { CONTINUATION };
        first = false;
        c.send(&frame(ty, 0, 1, piece));
    }
    c.send(&frame(CONTINUATION, END_HEADERS, 1, &[]));
    let f = c
        .until(|f| f.ty == GOAWAY || (f.sid == 1 && (f.ty == HEADERS || f.ty == RST_STREAM)))
        .expect("an answer");
    if f.ty == HEADERS {
        assert_ne!(f.payload[0], 0x88, "not a 200: {f:?}");
    }
    still_serves(&s);
}

#[test]
fn settings_ping_window_update_and_empty_data_floods_leave_the_server_serving() {
    let s = start(site(""));
    let floods: Vec<(&str, Vec<u8>)> = vec![
        ("SETTINGS", frame(SETTINGS, 0, 0, &[0, 4, 0, 1, 0, 0])),
        ("PING", frame(PING, 0, 0, &[1, 2, 3, 4, 5, 6, 7, 8])),
        (
            "WINDOW_UPDATE",
            frame(WINDOW_UPDATE, 0, 0, &1u32.to_be_bytes()),
        ),
    ];
    for (what, one) in floods {
        let mut c = Raw::connect(s.ports[0], &[]);
        // The flooder never reads: the server must stop reading it rather
        // than queue its answers without bound.
        let batch: Vec<u8> = one
            .iter()
            .copied()
            .cycle()
            .take(one.len() * 10_000)
            .collect();
        c.s.set_write_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let t0 = Instant::now();
        let mut total = 0usize;
        while t0.elapsed() < Duration::from_secs(3) {
            if c.s.write_all(&batch).is_err() {
                break;
            }
            total += batch.len();
            if total > 200 << 20 {
                break;
            }
        }
        still_serves(&s);
        let rss = rss_kib(&s);
        assert!(
            rss < 200_000,
            "{what} flood: the server's memory grew to {rss} KiB"
        );
    }
    // Empty DATA frames on an open stream.
    let mut c = Raw::connect(s.ports[0], &[]);
    c.send(&frame(
        HEADERS,
        END_HEADERS,
        1,
        &block("POST", "/echo/x", &[]),
    ));
    let empty = frame(DATA, 0, 1, &[]);
    let batch: Vec<u8> = empty
        .iter()
        .copied()
        .cycle()
        .take(empty.len() * 100_000)
        .collect();
    c.s.set_write_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let _ = c.s.write_all(&batch);
    let f = c.until(|f| f.ty == GOAWAY || (f.sid == 1 && f.ty == RST_STREAM));
    assert!(f.is_some(), "an empty DATA flood got no answer");
    still_serves(&s);
}

/// The server's CPU time so far (utime + stime), in seconds.
fn cpu_secs(s: &TestServer) -> f64 {
    let st = std::fs::read_to_string(format!("/proc/{}/stat", s.child.id())).unwrap_or_default();
    let after = st.rsplit_once(')').map_or("", |(_, a)| a);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat; `after` starts at field 3.
    (ticks(11) + ticks(12)) / 100.0
}

#[test]
fn sigterm_sends_goaway_to_an_idle_connection_and_finishes_a_stream_in_flight() {
    let mut s = start(site(""));
    let mut idle = Raw::connect(s.ports[0], &[]);
    idle.send(&frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &block("GET", "/index.html", &[]),
    ));
    idle.until(|f| f.sid == 1 && f.ty == DATA)
        .expect("an answer");
    let mut busy = Raw::connect(s.ports[0], &[]);
    busy.send(&frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &block("GET", "/slow/x", &[]),
    ));
    std::thread::sleep(Duration::from_millis(200));
    s.signal(libc::SIGTERM);
    let f = idle
        .until(|f| f.ty == GOAWAY)
        .expect("a GOAWAY on the idle connection");
    assert_eq!(goaway_code(&f), 0, "NO_ERROR: {f:?}");
    // The slow stream still gets its whole answer.
    let f = busy
        .until(|f| f.sid == 1 && f.ty == HEADERS)
        .expect("the slow answer");
    assert_eq!(f.payload[0], 0x88, ":status 200");
    let f = busy.until(|f| f.sid == 1 && f.ty == DATA && f.flags & END_STREAM != 0);
    assert!(f.is_some(), "the slow answer ended");
    assert_eq!(
        s.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        s.log.text()
    );
}

fn rss_kib(s: &TestServer) -> u64 {
    let st = std::fs::read_to_string(format!("/proc/{}/status", s.child.id())).unwrap_or_default();
    st.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_client_that_keeps_its_window_shut_is_closed_at_send_timeout() {
    let s = start(site(""));
    // SETTINGS_INITIAL_WINDOW_SIZE = 0: no DATA may come.
    let mut c = Raw::connect(s.ports[0], &[(4, 0)]);
    c.send(&frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &block("GET", "/big.txt", &[]),
    ));
    let t0 = Instant::now();
    let cpu0 = cpu_secs(&s);
    let f = c.until(|f| f.ty == GOAWAY || f.ty == DATA);
    assert!(f.as_ref().is_none_or(|f| f.ty == GOAWAY), "{f:?}");
    let waited = t0.elapsed();
    // Waiting for a window costs nothing (no busy loop).
    let spent = cpu_secs(&s) - cpu0;
    assert!(spent < 0.3, "the server spent {spent} s of CPU waiting");
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(6),
        "closed after {waited:?} (send_timeout is 2s)"
    );
    still_serves(&s);
}

#[test]
fn streams_beyond_the_limit_are_refused() {
    let s = start(site(""));
    let mut c = Raw::connect(s.ports[0], &[]);
    // Wait for the server's SETTINGS (its limit) before opening streams.
    c.until(|f| f.ty == SETTINGS && f.flags & 1 == 0)
        .expect("settings");
    let mut out = Vec::new();
    for i in 0..140u32 {
        out.extend(frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            1 + 2 * i,
            &block("GET", "/slow/x", &[]),
        ));
    }
    c.send(&out);
    let f = c
        .until(|f| f.ty == RST_STREAM || f.ty == GOAWAY)
        .expect("a refusal");
    assert_eq!(f.ty, RST_STREAM, "{f:?}");
    assert_eq!(rst_code(&f), 7, "REFUSED_STREAM: {f:?}");
    assert!(f.sid > 2 * 127, "stream {} refused under the limit", f.sid);
}

/// h2load over TLS for `n` requests on 4 connections, 10 streams each.
fn h2load(port: u16, n: u32) -> std::thread::JoinHandle<String> {
    let url = format!("https://127.0.0.1:{port}/index.html");
    std::thread::spawn(move || {
        let out = Command::new("h2load")
            .args(["-n", &n.to_string(), "-c", "4", "-m", "10", "-t", "1"])
            .arg(url)
            .output()
            .expect("run h2load (apt-get install nghttp2-client)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
}

#[test]
fn sighup_and_a_binary_upgrade_under_h2load_fail_no_request() {
    let mut s = start(site("").file(
        "conf.d/server.yaml",
        "send_timeout: 2s\nworkers: 8\npid_file: ../tamada.pid\n",
    ));
    let load = h2load(s.ports[1], 30_000);
    std::thread::sleep(Duration::from_millis(300));
    s.signal(libc::SIGHUP);
    let text = load.join().expect("h2load");
    assert!(
        text.contains("30000 succeeded, 0 failed, 0 errored"),
        "h2load under SIGHUP:\n{text}"
    );
    assert!(text.contains("Application protocol: h2"), "{text}");
    // A binary upgrade: the old process sends GOAWAY, finishes its
    // streams and exits; h2load carries on with the new one.
    let load = h2load(s.ports[1], 30_000);
    std::thread::sleep(Duration::from_millis(300));
    s.signal(libc::SIGUSR2);
    assert!(
        s.log
            .wait_for("binary upgrade: this process (", Duration::from_secs(30)),
        "{}",
        s.log.text()
    );
    let pid: i32 = std::fs::read_to_string(s.dir.path().join("tamada.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0);
    let exited = s.wait_exit(Duration::from_secs(20));
    let text = load.join().expect("h2load");
    if pid > 0 && pid != s.child.id() as i32 {
        // SAFETY: kill(2) on the pid the upgraded server wrote.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    assert_eq!(exited, Some(0), "{}", s.log.text());
    assert!(
        text.contains("30000 succeeded, 0 failed, 0 errored"),
        "h2load under SIGUSR2:\n{text}"
    );
}

/// The base64 SHA-256 of a certificate's public key (what Chromium's
/// `--ignore-certificate-errors-spki-list` takes).
fn spki_hash(cert_pem: &std::path::Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der \
             | openssl dgst -sha256 -binary | base64",
            cert_pem.display()
        ))
        .output()
        .expect("run openssl");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_browser_loads_a_page_of_100_assets_over_http2() {
    // A 1x1 GIF, 100 times under different names, and a page naming them.
    const GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
    let mut page = String::from("<!DOCTYPE html><html><head><title>h2</title></head><body>\n");
    for i in 0..100 {
        page.push_str(&format!("<img src=\"/img/{i}.gif\" alt=\"\">\n"));
    }
    page.push_str("</body></html>\n");
    let s = start(site("").file("www/page.html", &page));
    for i in 0..100 {
        std::fs::create_dir_all(s.dir.path().join("www/img")).expect("mkdir");
        std::fs::write(s.dir.path().join(format!("www/img/{i}.gif")), GIF).expect("write");
    }
    // The leaf certificate alone (the file holds leaf then CA).
    let chain = std::fs::read_to_string(s.dir.path().join("tls/a.pem")).expect("cert");
    let leaf = chain
        .split_inclusive("-----END CERTIFICATE-----\n")
        .next()
        .expect("leaf");
    let leaf_path = s.dir.path().join("tls/leaf.pem");
    std::fs::write(&leaf_path, leaf).expect("write");
    let spki = spki_hash(&leaf_path);
    let profile = s.dir.path().join("chromium");
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok())
        .expect("chromium (apt-get install chromium)");
    let out = Command::new("timeout")
        .arg("60")
        .arg(chromium)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--ignore-certificate-errors-spki-list={spki}"))
        .arg("--host-resolver-rules=MAP a.test 127.0.0.1")
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("https://a.test:{}/page.html", s.ports[1]))
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("img/99.gif"),
        "chromium did not load the page: {dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = access_log(&s, 101);
    let page_lines: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("\"GET /page.html "))
        .collect();
    assert_eq!(page_lines.len(), 1, "{page_lines:?}");
    assert!(page_lines[0].contains("HTTP/2.0\" 200"), "{page_lines:?}");
    for i in 0..100 {
        let want = format!("\"GET /img/{i}.gif HTTP/2.0\" 200");
        assert!(
            log.iter().any(|l| l.contains(&want)),
            "no HTTP/2.0 line for /img/{i}.gif in {} lines",
            log.len()
        );
    }
    let other: Vec<&String> = log.iter().filter(|l| !l.contains("HTTP/2.0")).collect();
    assert!(other.is_empty(), "requests not over HTTP/2: {other:?}");
}

#[test]
fn the_proxy_fastcgi_and_a_plugin_serve_over_h2_unchanged() {
    let fpm_port = free_port();
    let s = start(
        site("")
        .ports(3)
        .file(
            "conf.d/b.yaml",
            "vhost: b.test\nip: 127.0.0.1\nport: {port2}\ndocument_root: ../www\nroutes:\n  - path: /\n    handler: echo\n    options: { tag: upstream }\n",
        )
        .file("www/form.php", "<?php\necho $_SERVER['SERVER_PROTOCOL'], ' a=', $_POST['a'] ?? '-', \"\\n\";\n"),
    );
    // The routes of a.test come from site(); the proxy and php ones are
    // added by a reload (php-fpm's port is known now).
    let a = std::fs::read_to_string(s.conf().join("a.yaml")).expect("a.yaml");
    let a = a.replace(
        "routes:\n",
        &format!(
            "routes:\n  - path: /up/\n    handler: proxy\n    options: {{ upstreams: [\"127.0.0.1:{}\"] }}\n\
             \x20 - path: /php/\n    handler: fastcgi\n    options: {{ address: \"127.0.0.1:{fpm_port}\" }}\n",
            s.ports[2]
        ),
    );
    std::fs::write(s.conf().join("a.yaml"), a).expect("write");
    std::fs::create_dir_all(s.dir.path().join("www/php")).expect("mkdir");
    std::fs::rename(
        s.dir.path().join("www/form.php"),
        s.dir.path().join("www/php/form.php"),
    )
    .expect("move");
    let _fpm = crate::fastcgi::Fpm::start(s.dir.path(), &format!("127.0.0.1:{fpm_port}"));
    s.signal(libc::SIGHUP);
    assert!(
        s.log
            .wait_for("reloaded configuration", Duration::from_secs(10)),
        "{}",
        s.log.text()
    );
    for tls in [true, false] {
        // The proxy speaks HTTP/1.1 upstream; the plugin behind it says so.
        let (v, st, _, body) = curl(&s, tls, "/up/x?q=1", &[]);
        assert_eq!((v.as_str(), st), ("2", 200));
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("tag=upstream\n"), "{body}");
        assert!(body.contains("version=1.1\n"), "{body}");
        assert!(body.contains("target=/up/x?q=1\n"), "{body}");
        // A plugin on the HTTP/2 side sees (2, 0).
        let (_, st, _, body) = curl(&s, tls, "/echo/y", &[]);
        assert_eq!(st, 200);
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("version=2.0\n"), "{body}");
        assert!(
            body.contains("host=a.test\n") || body.contains("host=127.0.0.1\n"),
            "{body}"
        );
        // PHP through php-fpm: a form POST.
        let (_, st, _, body) = curl(&s, tls, "/php/form.php", &["-d", "a=42"]);
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(String::from_utf8_lossy(&body), "HTTP/2.0 a=42\n");
    }
    let log = access_log(&s, 6);
    assert!(
        log.iter().filter(|l| l.contains("HTTP/2.0\" 200")).count() >= 6,
        "{log:?}"
    );
}
