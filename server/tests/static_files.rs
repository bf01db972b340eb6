//! The static plugin through the real server.

use crate::harness::*;
use std::process::Command;
use std::time::Duration;

fn site(options: &str) -> TestServer {
    let mut f = Fixture::new()
        .file(
            "conf.d/a.yaml",
            &format!(
                "vhost: a\nip: 127.0.0.1\nport: {{port0}}\ndocument_root: ../www\nroutes:\n  - path: /\n    handler: static\n    options: {options}\n"
            ),
        )
        .file("www/index.html", "<h1>home</h1>\n")
        .file("www/hello.txt", "hello world\n")
        .file("www/style.css", "body{}\n")
        .file("www/data.json", "{}\n")
        .file("www/img.png", "\u{89}PNG fake")
        .file("www/noext", "x")
        .file("www/weird.qqq", "w")
        .file("www/empty.txt", "")
        .file("www/.env", "SECRET=1\n")
        .file("www/.git/config", "[core]\n")
        .file("www/.well-known/security.txt", "Contact: x\n")
        .file("www/docs/index.html", "<h1>docs</h1>\n")
        .file("www/docs/page.html", "<p>page</p>\n")
        .file("www/files/b.txt", "b\n")
        .file("www/files/a <&>\".txt", "a\n")
        .file("www/files/sub/c.txt", "c\n")
        .file("www/files/.hidden", "h\n")
        .file("www/caf\u{e9} \u{1f600}.txt", "unicode\n")
        .file("www/100%.txt", "percent\n")
        .file("www/404.html", "<h1>custom 404</h1>\n")
        .file("www/app/index.html", "<h1>spa</h1>\n")
        .file("www/pre/x.css", "uncompressed\n")
        .file("www/pre/x.css.gz", "GZIPPED")
        .file("www/pre/x.css.br", "BROTLI")
        .file("secret.txt", "TOP SECRET\n");
    f = f.file("www/big.bin", "");
    let s = f.start();
    let www = s.dir.path().join("www");
    std::os::unix::fs::symlink(s.dir.path().join("secret.txt"), www.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(s.dir.path(), www.join("up")).unwrap();
    std::os::unix::fs::symlink("hello.txt", www.join("inner-link.txt")).unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(www.join("big.bin"), data).unwrap();
    s
}

fn req(port: u16, head: &str) -> Resp {
    let mut c = Client::connect(port);
    c.request(head)
}

fn g(port: u16, path: &str, extra: &str) -> Resp {
    req(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: a\r\n{extra}\r\n"),
    )
}

#[test]
fn hostile_paths_never_serve_outside_the_root() {
    let s = site("{}");
    let hostile = [
        "/../secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/docs/../../secret.txt",
        "/docs/%2e%2e/%2e%2e/secret.txt",
        "/./../secret.txt",
        "/..\\secret.txt",
        "/%5c..%5csecret.txt",
        "/..%5csecret.txt",
        "/%c0%ae%c0%ae/secret.txt",
        "/%c0%ae%c0%ae%c0%afsecret.txt",
        "/%e0%80%ae%e0%80%ae/secret.txt",
        "/%25%32%65%25%32%65/secret.txt",
        "/%252e%252e/secret.txt",
        "/secret.txt%00.html",
        "/hello.txt%00",
        "/leak.txt",
        "/up/secret.txt",
        "/up/www/hello.txt/../../secret.txt",
        "//secret.txt",
        "/docs/..;/..;/secret.txt",
        "/.%2e/secret.txt",
        "/%2e./secret.txt",
        "/docs/.../secret.txt",
        "/....//secret.txt",
        "/..%00/secret.txt",
        "/..%ff/secret.txt",
        "/..%u2216secret.txt",
        "/%2e%2e%5c%2e%2e%5csecret.txt",
        "/.env",
        "/.git/config",
        "/files/.hidden",
        "/%2egit/config",
        "/docs/%2e%2e%2f%2e%2e%2fsecret.txt",
    ];
    assert!(hostile.len() >= 30);
    for p in hostile {
        let r = g(s.port(), p, "Connection: close\r\n");
        assert!(
            [400, 403, 404].contains(&r.status),
            "{p}: status {} body {:?}",
            r.status,
            r.text()
        );
        assert!(!r.text().contains("TOP SECRET"), "{p} leaked");
        assert!(
            !r.text().contains("SECRET=1") && !r.text().contains("[core]"),
            "{p} leaked a dotfile"
        );
    }
    // Inside the root, symlinks work; .well-known is served.
    assert_eq!(g(s.port(), "/inner-link.txt", "").text(), "hello world\n");
    assert_eq!(g(s.port(), "/.well-known/security.txt", "").status, 200);
}

#[test]
fn symlinks_may_leave_the_root_only_when_allowed() {
    let s = site("{ symlinks: follow }");
    assert_eq!(g(s.port(), "/leak.txt", "").text(), "TOP SECRET\n");
}

#[test]
fn names_types_and_methods() {
    let s = site("{ mime_types: { qqq: application/x-q } }");
    let p = s.port();
    let r = g(p, "/hello.txt", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("content-length"), Some("12"));
    assert_eq!(
        g(p, "/style.css", "").header("content-type"),
        Some("text/css; charset=utf-8")
    );
    assert_eq!(
        g(p, "/img.png", "").header("content-type"),
        Some("image/png")
    );
    assert_eq!(
        g(p, "/noext", "").header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(
        g(p, "/weird.qqq", "").header("content-type"),
        Some("application/x-q")
    );
    let r = g(p, "/empty.txt", "");
    assert_eq!((r.status, r.header("content-length")), (200, Some("0")));
    assert_eq!(
        g(p, "/caf%C3%A9%20%F0%9F%98%80.txt", "").text(),
        "unicode\n"
    );
    assert_eq!(g(p, "/100%25.txt", "").text(), "percent\n");
    assert_eq!(g(p, "/missing", "").status, 404);
    let r = req(
        p,
        "POST /hello.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = req(p, "HEAD /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(
        (r.status, r.header("content-length"), r.body.len()),
        (200, Some("12"), 0)
    );
}

#[test]
fn directories_index_redirect_and_autoindex() {
    let s = site("{ autoindex: true }");
    let p = s.port();
    let r = g(p, "/docs?x=1", "");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/docs/?x=1"));
    // Regression: the raw target `//evil.example/..%2Fdocs` normalises to
    // /docs; the redirect must not point at another host.
    let r = g(p, "//evil.example/..%2Fdocs", "");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/docs/"));
    let r = g(p, "/fil%65s", "");
    assert_eq!(r.header("location"), Some("/files/"));
    assert_eq!(g(p, "/docs/", "").text(), "<h1>docs</h1>\n");
    assert_eq!(g(p, "/", "").text(), "<h1>home</h1>\n");
    let r = g(p, "/files/", "");
    assert_eq!(r.status, 200);
    let t = r.text();
    assert!(t.contains("<a href=\"../\">../</a>"), "{t}");
    assert!(t.contains("a &lt;&amp;&gt;&quot;.txt"), "{t}");
    assert!(t.contains("href=\"a%20%3C%26%3E%22.txt\""), "{t}");
    assert!(!t.contains(".hidden"), "{t}");
    let sub = t.find("sub/").unwrap();
    let a = t.find("a &lt;").unwrap();
    let b = t.find(">b.txt<").unwrap();
    assert!(sub < a && a < b, "directories first, then by name:\n{t}");
    // Without autoindex a folder without index is 403.
    let s2 = site("{}");
    assert_eq!(g(s2.port(), "/files/", "").status, 403);
}

#[test]
fn spa_fallback_and_error_pages() {
    let s = site("{ fallback: /app/index.html, error_pages: { 404: /404.html } }");
    let p = s.port();
    let r = g(p, "/app/settings", "");
    assert_eq!((r.status, r.text().as_str()), (200, "<h1>spa</h1>\n"));
    let r = g(p, "/app.js", "");
    assert_eq!(
        (r.status, r.text().as_str()),
        (404, "<h1>custom 404</h1>\n")
    );
}

#[test]
fn conditional_requests() {
    // `valid: 0`: the file touched below is looked at again at once.
    let s = site("{ cache_control: \"max-age=60\", cache: { valid: 0 } }");
    let p = s.port();
    let r = g(p, "/hello.txt", "");
    let etag = r.header("etag").unwrap().to_owned();
    let lm = r.header("last-modified").unwrap().to_owned();
    assert_eq!(r.header("cache-control"), Some("max-age=60"));
    let r = g(
        p,
        "/hello.txt",
        &format!("If-None-Match: \"zz\", {etag}\r\n"),
    );
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert!(r.body.is_empty());
    let r = g(p, "/hello.txt", &format!("If-None-Match: W/{etag}\r\n"));
    assert_eq!(r.status, 304, "weak comparison for If-None-Match");
    let r = g(p, "/hello.txt", &format!("If-Modified-Since: {lm}\r\n"));
    assert_eq!(r.status, 304);
    let r = g(
        p,
        "/hello.txt",
        &format!("If-None-Match: \"other\"\r\nIf-Modified-Since: {lm}\r\n"),
    );
    assert_eq!(r.status, 200, "If-None-Match takes precedence");
    let r = g(p, "/hello.txt", "If-Match: \"other\"\r\n");
    assert_eq!(r.status, 412);
    let r = g(p, "/hello.txt", &format!("If-Match: {etag}\r\n"));
    assert_eq!(r.status, 200);
    let r = g(
        p,
        "/hello.txt",
        "If-Unmodified-Since: Thu, 01 Jan 1970 00:00:01 GMT\r\n",
    );
    assert_eq!(r.status, 412);
    // Touching the file changes the ETag (mtime has nanoseconds).
    let path = s.dir.path().join("www/hello.txt");
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    let r = g(p, "/hello.txt", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(r.status, 200);
}

#[test]
fn content_hash_etags_survive_mtime_changes() {
    let s = site("{ etag: content, cache: { valid: 0 } }");
    let p = s.port();
    let e1 = g(p, "/hello.txt", "").header("etag").unwrap().to_owned();
    let path = s.dir.path().join("www/hello.txt");
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1))
        .unwrap();
    let e2 = g(p, "/hello.txt", "").header("etag").unwrap().to_owned();
    assert_eq!(e1, e2);
    std::fs::write(&path, "changed\n").unwrap();
    let e3 = g(p, "/hello.txt", "").header("etag").unwrap().to_owned();
    assert_ne!(e1, e3);
}

#[test]
fn ranges() {
    let s = site("{}");
    let p = s.port();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let r = g(p, "/big.bin", "Range: bytes=10-19\r\n");
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/200000"));
    assert_eq!(r.body, &data[10..20]);
    let r = g(p, "/big.bin", "Range: bytes=-5\r\n");
    assert_eq!(r.body, &data[199_995..]);
    let r = g(p, "/big.bin", "Range: bytes=199990-\r\n");
    assert_eq!(r.body, &data[199_990..]);
    let r = g(p, "/big.bin", "Range: bytes=300000-\r\n");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */200000"));
    let r = g(p, "/big.bin", "Range: bytes=oops\r\n");
    assert_eq!((r.status, r.body.len()), (200, 200_000));
    // Two ranges: multipart/byteranges.
    let r = g(p, "/big.bin", "Range: bytes=0-9,1000-1009\r\n");
    assert_eq!(r.status, 206);
    let ct = r.header("content-type").unwrap().to_owned();
    let boundary = ct.strip_prefix("multipart/byteranges; boundary=").unwrap();
    let body = r.body.clone();
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains(&format!("--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 0-9/200000\r\n\r\n")), "{text}");
    assert!(text.contains("Content-Range: bytes 1000-1009/200000"));
    assert!(text.ends_with(&format!("\r\n--{boundary}--\r\n")));
    let start = find(&body, b"bytes 1000-1009/200000\r\n\r\n").unwrap() + 26;
    assert_eq!(&body[start..start + 10], &data[1000..1010]);
    // If-Range with the current ETag honours the range; an old one does not.
    let etag = g(p, "/big.bin", "").header("etag").unwrap().to_owned();
    let r = g(
        p,
        "/big.bin",
        &format!("Range: bytes=0-1\r\nIf-Range: {etag}\r\n"),
    );
    assert_eq!(r.status, 206);
    let r = g(p, "/big.bin", "Range: bytes=0-1\r\nIf-Range: \"old\"\r\n");
    assert_eq!((r.status, r.body.len()), (200, 200_000));
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

#[test]
fn precompressed_siblings() {
    let s = site("{ precompressed: true }");
    let p = s.port();
    let r = g(p, "/pre/x.css", "Accept-Encoding: gzip, br\r\n");
    assert_eq!(r.text(), "BROTLI");
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
    let br_etag = r.header("etag").unwrap().to_owned();
    let r = g(p, "/pre/x.css", "Accept-Encoding: gzip\r\n");
    assert_eq!(
        (r.text().as_str(), r.header("content-encoding")),
        ("GZIPPED", Some("gzip"))
    );
    assert_ne!(r.header("etag").unwrap(), br_etag);
    let r = g(p, "/pre/x.css", "");
    assert_eq!(r.text(), "uncompressed\n");
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
}

#[test]
fn files_over_4_gib_and_clients_that_leave() {
    let s = site("{}");
    let p = s.port();
    let path = s.dir.path().join("www/huge.bin");
    let f = std::fs::File::create(&path).unwrap();
    let size: u64 = 5 * 1024 * 1024 * 1024 + 7;
    f.set_len(size).unwrap();
    let r = g(p, "/huge.bin", "Range: bytes=-7\r\n");
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes {}-{}/{size}", size - 7, size - 1).as_str())
    );
    assert_eq!(r.body, vec![0u8; 7]);
    let r = req(p, "HEAD /huge.bin HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.header("content-length"), Some(size.to_string().as_str()));
    // A client that reads a little of the 5 GiB and leaves: the server
    // releases the connection and the file at once.
    let pid = s.child.id();
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let before = fds();
    for _ in 0..5 {
        let mut c = Client::connect(p);
        c.send(b"GET /huge.bin HTTP/1.1\r\nHost: a\r\n\r\n");
        let mut buf = [0u8; 4096];
        use std::io::Read;
        let _ = c.stream.read(&mut buf);
        drop(c);
    }
    let mut ok = false;
    for _ in 0..100 {
        if fds() <= before {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ok, "fds not released: before {before}, now {}", fds());
    assert_eq!(g(p, "/hello.txt", "").status, 200);
}

fn have(cmd: &str) -> bool {
    Command::new(cmd).arg("--version").output().is_ok()
}

#[test]
fn curl_round_trips() {
    assert!(have("curl"), "curl is needed (scripts/test.sh installs it)");
    let s = site("{}");
    let url = s.url("/hello.txt");
    let tmp = tempfile::tempdir().unwrap();
    let etag_file = tmp.path().join("etag");
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--etag-save"])
        .arg(&etag_file)
        .arg(&url)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--etag-compare",
        ])
        .arg(&etag_file)
        .arg(&url)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "304");
    let local = tmp.path().join("copy.txt");
    std::fs::write(&local, "x").unwrap();
    let f = std::fs::File::options().write(true).open(&local).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(3600))
        .unwrap();
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-z"])
        .arg(&local)
        .arg(&url)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "304");
    let out = Command::new("curl")
        .args(["-s", "-r", "0-4"])
        .arg(&url)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello");
    let out = Command::new("curl")
        .args(["-s", "-I"])
        .arg(&url)
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("Content-Length: 12"), "{head}");
}

#[test]
fn wget_mirrors_an_autoindexed_tree_and_gets_304s_the_second_time() {
    assert!(have("wget"), "wget is needed (scripts/test.sh installs it)");
    let s = site("{ autoindex: true }");
    let tmp = tempfile::tempdir().unwrap();
    let run = || {
        Command::new("wget")
            .current_dir(tmp.path())
            .args(["-m", "-np", "-nH", "-S", "--no-verbose"])
            .arg(s.url("/files/"))
            .output()
            .unwrap()
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("files/b.txt")).unwrap(),
        "b\n"
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("files/sub/c.txt")).unwrap(),
        "c\n"
    );
    let out = run();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("304 Not Modified"), "{log}");
}

#[test]
fn a_file_changed_on_disk_is_served_fresh_after_the_cache_validity() {
    let s = site("{ cache: { valid: 2s } }");
    let path = s.dir.path().join("www/hello.txt");
    let mut c = Client::connect(s.port());
    let get = |c: &mut Client| c.request("GET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(get(&mut c).text(), "hello world\n");
    // Replaced by a rename, as deploys do, and rewritten in place.
    let tmp = s.dir.path().join("www/.hello.tmp");
    std::fs::write(&tmp, "changed!\n").unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    // Within the validity this loop answers from its cache...
    let r = get(&mut c);
    assert_eq!(
        r.text(),
        "hello world\n",
        "the open-file cache is not in use"
    );
    // ...and after it, the new file, with its own validators.
    std::thread::sleep(Duration::from_millis(2300));
    let r = get(&mut c);
    assert_eq!(r.text(), "changed!\n");
    assert_eq!(r.header("content-length"), Some("9"));
    std::fs::write(&path, "in place, longer\n").unwrap();
    std::thread::sleep(Duration::from_millis(2300));
    assert_eq!(get(&mut c).text(), "in place, longer\n");
}
