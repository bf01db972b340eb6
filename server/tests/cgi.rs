//! The cgi plugin through the real binary: shell, Python, Perl and PHP
//! scripts, bodies (urlencoded, multipart 5 MB, chunked), Status and
//! Location, stderr to the error log, faults (crash, hang, stall, client
//! gone) with the children gone, and git clone/push over smart HTTP.

use crate::harness::*;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VHOST: &str = r#"vhost: cgi.test
ip: 127.0.0.1
port: {port0}
document_root: ../www
cgi_bin: ../cgi-bin
routes:
  - path: /cgi-bin/
    handler: cgi
    # The tests run as root with no `user:` (see privileges.rs for a drop).
    options: { header_timeout: 2s, idle_timeout: 2s, run_as_root: true }
  - path: /git/
    handler: cgi
    options:
      script: /usr/lib/git-core/git-http-backend
      env: { GIT_PROJECT_ROOT: "{dir}/repos", GIT_HTTP_EXPORT_ALL: "1" }
      run_as_root: true
  - path: /echo/
    handler: echo
    options: { tag: redirected }
  - path: /
    handler: cgi
    options: { interpreters: { .php: /usr/bin/php-cgi }, run_as_root: true }
  - path: /
    handler: echo
    options: { tag: fallback }
"#;

const ENV_SH: &str = r#"#!/bin/sh
printf 'Content-Type: text/plain\r\nX-Script: sh\r\n\r\n'
echo "method=$REQUEST_METHOD"
echo "query=$QUERY_STRING"
echo "path_info=$PATH_INFO"
echo "script_name=$SCRIPT_NAME"
echo "content_length=${CONTENT_LENGTH-unset}"
echo "server_name=$SERVER_NAME"
echo "request_uri=$REQUEST_URI"
echo "gateway=$GATEWAY_INTERFACE"
echo "x_test=$HTTP_X_TEST"
echo "proxy=${HTTP_PROXY-unset}"
echo "home=${HOME-unset}"
echo "pwd=$(pwd)"
echo "stdin=$(wc -c | tr -d ' ')"
"#;

const FORM_PY: &str = r#"#!/usr/bin/env python3
import hashlib, os, sys, urllib.parse
n = int(os.environ.get("CONTENT_LENGTH") or 0)
data = sys.stdin.buffer.read(n) if n else b""
ct = os.environ.get("CONTENT_TYPE", "")
w = sys.stdout.write
w("Content-Type: text/plain; charset=utf-8\r\n\r\n")
w("path_info=%s\n" % os.environ["PATH_INFO"])
w("query=%s\n" % sorted(urllib.parse.parse_qsl(os.environ["QUERY_STRING"])))
if ct.startswith("application/x-www-form-urlencoded"):
    w("form=%s\n" % sorted(urllib.parse.parse_qsl(data.decode())))
w("type=%s\n" % ct.split(";")[0])
w("len=%d\nmd5=%s\n" % (len(data), hashlib.md5(data).hexdigest()))
"#;

// Bare LF line ends throughout.
const STATUS_PL: &str = r#"#!/usr/bin/perl
use strict;
my $q = $ENV{QUERY_STRING};
print STDERR "perl stderr line one\nperl stderr line two\n";
if ($q eq 'local') { print "Location: /echo/target?from=perl\n\n"; exit 0; }
if ($q eq 'url') { print "Location: http://example.com/elsewhere\n\n"; exit 0; }
print "Status: 201 Created\nContent-Type: text/plain\nX-Perl: yes\n\n";
print "created by perl, path_info=$ENV{PATH_INFO}\n";
"#;

// A grandchild carrying the script's (unique) path in its command line, to
// see that the whole process group goes.
const HANG_SH: &str = "#!/bin/sh\nsh -c 'sleep 300; true' \"$0-child\" &\nsleep 300\n";
const STALL_SH: &str = "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nfirst part\\n'\nsh -c 'sleep 300; true' \"$0-child\"\n";
const FOREVER_SH: &str = "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nwhile :; do echo 'a line of output'; done\n";
const CRASH_SH: &str = "#!/bin/sh\nprintf 'Content-Ty'\nkill -SEGV $$\n";
const EXIT_SH: &str = "#!/bin/sh\necho 'oops: not a header' >&2\nexit 3\n";

const FORM_PHP: &str = r#"<?php
header("X-PHP: yes");
if ($_SERVER["REQUEST_METHOD"] === "POST") {
    echo "Hello " . htmlspecialchars($_POST["name"]) . " n=" . intval($_POST["n"]) . "\n";
} else {
    echo "<form method=\"post\"><input name=\"name\"><input name=\"n\"></form>\n";
}
echo "script=" . $_SERVER["SCRIPT_NAME"] . "\n";
"#;

fn server() -> TestServer {
    let s = Fixture::new()
        .file("conf.d/cgi.yaml", VHOST)
        .file("cgi-bin/env.sh", ENV_SH)
        .file("cgi-bin/form.py", FORM_PY)
        .file("cgi-bin/status.pl", STATUS_PL)
        .file("cgi-bin/hang.sh", HANG_SH)
        .file("cgi-bin/stall.sh", STALL_SH)
        .file("cgi-bin/forever.sh", FOREVER_SH)
        .file("cgi-bin/crash.sh", CRASH_SH)
        .file("cgi-bin/exit.sh", EXIT_SH)
        .file(
            "cgi-bin/count.sh",
            "#!/bin/sh\nn=$(wc -c)\nprintf 'Content-Type: text/plain\\n\\n%s\\n' \"$n\"\n",
        )
        .file("www/app/form.php", FORM_PHP)
        .file("www/app/style.css", "body {}\n")
        .file("repos/.keep", "")
        .start();
    for e in std::fs::read_dir(s.dir.path().join("cgi-bin")).expect("cgi-bin") {
        let p = e.expect("entry").path();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    s
}

fn request(port: u16, head: &str, body: &[u8]) -> Resp {
    let mut c = Client::connect(port);
    let mut all = head.as_bytes().to_vec();
    all.extend_from_slice(body);
    c.send(&all);
    c.read_response(head.starts_with("HEAD "))
}

fn post(port: u16, path: &str, ctype: &str, body: &[u8]) -> Resp {
    request(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: cgi.test\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ),
        body,
    )
}

fn md5(data: &[u8]) -> String {
    let mut c = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("md5sum");
    let mut stdin = c.stdin.take().expect("stdin");
    let data = data.to_vec();
    let w = std::thread::spawn(move || stdin.write_all(&data));
    let out = c.wait_with_output().expect("md5sum output");
    w.join().expect("writer").expect("write to md5sum");
    String::from_utf8_lossy(&out.stdout)[..32].to_owned()
}

/// Deterministic incompressible bytes (xorshift).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-a", "-f", needle])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains("pgrep"))
        .map(str::to_owned)
        .collect()
}

/// Zombie children of `pid`.
fn zombies_of(pid: u32) -> Vec<String> {
    let mut z = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(i) = stat.rfind(')') else { continue };
        let f: Vec<&str> = stat[i + 1..].split_whitespace().collect();
        if f.len() > 1 && f[0] == "Z" && f[1] == pid.to_string() {
            z.push(stat);
        }
    }
    z
}

/// Waits (bounded) until no process carries `needle` and the server has
/// no zombie child.
fn assert_all_gone(s: &TestServer, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_with(needle);
        let zombies = zombies_of(s.child.id());
        if left.is_empty() && zombies.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still there: {left:?}, zombies: {zombies:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/pid/fd")
        .count()
}

/// Waits (bounded) until the server holds no more descriptors than `base`.
fn assert_fds_back(s: &TestServer, base: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while fd_count(s.child.id()) > base {
        assert!(
            Instant::now() < deadline,
            "fd leak: {} open, {base} before",
            fd_count(s.child.id())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn shell_script_gets_the_cgi_environment() {
    let s = server();
    let r = request(
        s.port(),
        "GET /cgi-bin/env.sh/extra/path?a=1&b=x%20y HTTP/1.1\r\nHost: cgi.test\r\nX-Test: hi\r\nProxy: http://evil/\r\nConnection: close\r\n\r\n",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-script"), Some("sh"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let cgi_bin = std::fs::canonicalize(s.dir.path().join("cgi-bin")).expect("canon");
    let want = format!(
        "method=GET\nquery=a=1&b=x%20y\npath_info=/extra/path\nscript_name=/cgi-bin/env.sh\ncontent_length=unset\nserver_name=cgi.test\nrequest_uri=/cgi-bin/env.sh/extra/path?a=1&b=x%20y\ngateway=CGI/1.1\nx_test=hi\nproxy=unset\nhome=unset\npwd={}\nstdin=0\n",
        cgi_bin.display()
    );
    assert_eq!(r.text(), want);
    // HEAD: same head, no body, and the script is not left behind.
    let r = request(
        s.port(),
        "HEAD /cgi-bin/env.sh HTTP/1.1\r\nHost: cgi.test\r\nConnection: close\r\n\r\n",
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    // Missing, not executable, dotfile, symlink out of the folder, climbing.
    let bin = s.dir.path().join("cgi-bin");
    std::fs::write(bin.join("noexec.sh"), ENV_SH).expect("write");
    std::fs::write(bin.join(".hidden.sh"), ENV_SH).expect("write");
    std::fs::set_permissions(
        bin.join(".hidden.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    std::os::unix::fs::symlink("/bin/sh", bin.join("escape")).expect("symlink");
    for (path, code) in [
        ("/cgi-bin/nope.sh", 404),
        ("/cgi-bin/noexec.sh", 403),
        ("/cgi-bin/.hidden.sh", 403),
        ("/cgi-bin/escape", 403),
        ("/cgi-bin/", 403),
        ("/cgi-bin/%2e%2e/%2e%2e/bin/sh", 400),
    ] {
        assert_eq!(get(s.port(), path, "cgi.test").status, code, "{path}");
    }
}

#[test]
fn python_query_urlencoded_and_multipart_5mb() {
    let s = server();
    let r = get(s.port(), "/cgi-bin/form.py/p/i?x=1&y=%C3%A9", "cgi.test");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        "path_info=/p/i\nquery=[('x', '1'), ('y', 'é')]\ntype=\nlen=0\nmd5=d41d8cd98f00b204e9800998ecf8427e\n"
    );
    let body = b"name=J%C3%BCrgen+S&n=42";
    let r = post(
        s.port(),
        "/cgi-bin/form.py",
        "application/x-www-form-urlencoded",
        body,
    );
    assert!(
        r.text()
            .contains("form=[('n', '42'), ('name', 'Jürgen S')]\n"),
        "{}",
        r.text()
    );
    // multipart/form-data of 5 MB: every byte arrives.
    let file = noise(5 << 20, 7);
    let mut mp = Vec::new();
    mp.extend_from_slice(b"--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nbig\r\n--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"f.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n");
    mp.extend_from_slice(&file);
    mp.extend_from_slice(b"\r\n--XyZ--\r\n");
    let t = Instant::now();
    let r = post(
        s.port(),
        "/cgi-bin/form.py",
        "multipart/form-data; boundary=XyZ",
        &mp,
    );
    let took = t.elapsed();
    assert_eq!(r.status, 200);
    let want = format!(
        "type=multipart/form-data\nlen={}\nmd5={}\n",
        mp.len(),
        md5(&mp)
    );
    assert!(r.text().ends_with(&want), "{} (want {want})", r.text());
    eprintln!("5 MiB multipart POST through form.py: {took:?}");
    // The same body chunked: spooled (partly to a temporary file) so that
    // the script still gets CONTENT_LENGTH.
    let mut c = Client::connect(s.port());
    c.send(b"POST /cgi-bin/form.py HTTP/1.1\r\nHost: cgi.test\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    for piece in file.chunks(300_000) {
        c.send(format!("{:x}\r\n", piece.len()).as_bytes());
        c.send(piece);
        c.send(b"\r\n");
    }
    c.send(b"0\r\n\r\n");
    let r = c.read_response(false);
    let want = format!("len={}\nmd5={}\n", file.len(), md5(&file));
    assert!(r.text().ends_with(&want), "{} (want {want})", r.text());
}

#[test]
fn perl_status_location_bare_lf_and_stderr() {
    let s = server();
    let r = get(s.port(), "/cgi-bin/status.pl/pi", "cgi.test");
    assert_eq!(r.status, 201, "{}", r.head);
    assert_eq!(r.header("x-perl"), Some("yes"));
    assert_eq!(r.text(), "created by perl, path_info=/pi\n");
    // stderr: one record per line in the vhost's error log (here: stderr).
    assert!(
        s.log.wait_for(
            "[cgi.test] cgi:status.pl: perl stderr line two",
            Duration::from_secs(5)
        ),
        "{}",
        s.log.text()
    );
    assert!(s.log.text().contains("cgi:status.pl: perl stderr line one"));
    // A local Location: served internally by another route, as GET.
    let r = post(
        s.port(),
        "/cgi-bin/status.pl?local",
        "text/plain",
        b"ignored",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.echo("tag"), "redirected");
    assert_eq!(r.echo("path"), "/echo/target");
    assert_eq!(r.echo("query"), "from=perl");
    assert_eq!(r.echo("method"), "GET");
    // A URL: a 302 to the client.
    let r = get(s.port(), "/cgi-bin/status.pl?url", "cgi.test");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("http://example.com/elsewhere"));
}

#[test]
fn crash_and_garbage_are_502_and_logged() {
    let s = server();
    assert_eq!(get(s.port(), "/cgi-bin/env.sh", "cgi.test").status, 200);
    let fds = fd_count(s.child.id());
    for _ in 0..5 {
        let r = get(s.port(), "/cgi-bin/crash.sh", "cgi.test");
        assert_eq!(r.status, 502);
        let r = get(s.port(), "/cgi-bin/exit.sh", "cgi.test");
        assert_eq!(r.status, 502);
        let r = post(s.port(), "/cgi-bin/env.sh", "text/plain", &[b'x'; 100_000]);
        assert!(r.text().ends_with("stdin=100000\n"), "{}", r.text());
    }
    assert!(
        s.log
            .wait_for("cgi:exit.sh: oops: not a header", Duration::from_secs(5)),
        "{}",
        s.log.text()
    );
    assert!(
        s.log
            .wait_for("cgi:crash.sh: bad response", Duration::from_secs(5)),
        "{}",
        s.log.text()
    );
    assert_all_gone(&s, &s.dir.path().join("cgi-bin").to_string_lossy());
    assert_fds_back(&s, fds);
}

#[test]
fn hang_is_504_stall_ends_the_response_and_children_go() {
    let s = server();
    assert_eq!(get(s.port(), "/cgi-bin/env.sh", "cgi.test").status, 200);
    let fds = fd_count(s.child.id());
    let marker = s.dir.path().join("cgi-bin").to_string_lossy().into_owned();
    let t = Instant::now();
    let r = get(s.port(), "/cgi-bin/hang.sh", "cgi.test");
    assert_eq!(r.status, 504);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert_all_gone(&s, &marker);
    assert!(
        s.log
            .text()
            .contains("cgi:hang.sh: no complete header block")
    );

    // Output that stalls after the head: the response ends without its
    // last chunk and the connection closes.
    let t = Instant::now();
    let text = raw(
        s.port(),
        b"GET /cgi-bin/stall.sh HTTP/1.1\r\nHost: cgi.test\r\n\r\n",
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("first part\n"), "{text}");
    assert!(!text.ends_with("0\r\n\r\n"), "{text}");
    assert!(t.elapsed() < Duration::from_secs(8));
    assert_all_gone(&s, &marker);

    // The client leaves in the middle of an endless output.
    let mut c = Client::connect(s.port());
    c.send(b"GET /cgi-bin/forever.sh HTTP/1.1\r\nHost: cgi.test\r\n\r\n");
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("a line of output") {
        let n = c.stream.read(&mut buf).expect("read");
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    drop(c);
    assert_all_gone(&s, &marker);
    assert_fds_back(&s, fds);
}

#[test]
fn php_form_post_and_decline_to_the_next_route() {
    let s = server();
    let r = get(s.port(), "/app/form.php", "cgi.test");
    assert_eq!(r.status, 200, "{}\n{}", r.head, s.log.text());
    assert_eq!(r.header("x-php"), Some("yes"));
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/html")
    );
    assert!(r.text().contains("<form method=\"post\">"), "{}", r.text());
    let r = post(
        s.port(),
        "/app/form.php",
        "application/x-www-form-urlencoded",
        b"name=%3Cb%3EWorld&n=42",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        "Hello &lt;b&gt;World n=42\nscript=/app/form.php\n"
    );
    // Not PHP: declined, the next route (echo here, static in real life) answers.
    let r = get(s.port(), "/app/style.css", "cgi.test");
    assert_eq!(r.echo("tag"), "fallback");
    assert_eq!(get(s.port(), "/app/missing.php", "cgi.test").status, 404);
}

fn git(dir: &Path, home: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new("git")
        .current_dir(dir)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .envs(extra_env.iter().copied())
        .args([
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("run git");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn git_push_chunked_and_clone_v2_over_smart_http() {
    let s = server();
    let root = s.dir.path();
    let home = root.join("home");
    std::fs::create_dir_all(&home).expect("home");
    let (ok, out) = git(root, &home, &["init", "--bare", "repos/proj.git"], &[]);
    assert!(ok, "{out}");
    let bare = root.join("repos/proj.git");
    let (ok, out) = git(&bare, &home, &["config", "http.receivepack", "true"], &[]);
    assert!(ok, "{out}");

    let work = root.join("work");
    let (ok, out) = git(root, &home, &["init", "work"], &[]);
    assert!(ok, "{out}");
    let data = noise(200 * 1024, 42);
    std::fs::write(work.join("data.bin"), &data).expect("data");
    std::fs::write(work.join("README"), "pushed through tamada\n").expect("readme");
    let (ok, out) = git(&work, &home, &["add", "."], &[]);
    assert!(ok, "{out}");
    let (ok, out) = git(&work, &home, &["commit", "-q", "-m", "first"], &[]);
    assert!(ok, "{out}");

    let url = s.url("/git/proj.git");
    // A pack over http.postBuffer goes out chunked.
    let (ok, out) = git(
        &work,
        &home,
        &[
            "-c",
            "http.postBuffer=65536",
            "push",
            &url,
            "HEAD:refs/heads/main",
        ],
        &[("GIT_TRACE_CURL", "1"), ("GIT_TRACE_CURL_NO_DATA", "1")],
    );
    assert!(ok, "push failed:\n{out}\n{}", s.log.text());
    assert!(
        out.contains("Transfer-Encoding: chunked"),
        "push was not chunked:\n{out}"
    );
    let (_, pushed) = git(&bare, &home, &["rev-parse", "main"], &[]);
    let (_, head) = git(&work, &home, &["rev-parse", "HEAD"], &[]);
    assert_eq!(pushed, head);

    let (ok, out) = git(
        root,
        &home,
        &["-c", "protocol.version=2", "clone", &url, "clone"],
        &[("GIT_TRACE_PACKET", "1")],
    );
    assert!(ok, "clone failed:\n{out}\n{}", s.log.text());
    assert!(out.contains("git< version 2"), "not protocol v2:\n{out}");
    assert_eq!(
        std::fs::read(root.join("clone/data.bin")).expect("cloned data"),
        data
    );
    assert_eq!(
        std::fs::read_to_string(root.join("clone/README")).expect("cloned readme"),
        "pushed through tamada\n"
    );
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_500_mb_upload_is_never_held_in_memory() {
    // Issue 4: the server's RSS grows by less than 64 MiB during a 500 MB
    // upload, with Content-Length (streamed to stdin) and chunked (spooled
    // to a file, then streamed).
    let s = server();
    let pid = s.child.id();
    for chunked in [false, true] {
        let base = rss_kb(pid);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut max = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    max = max.max(rss_kb(pid));
                    std::thread::sleep(Duration::from_millis(20));
                }
                max
            })
        };
        let total: usize = 500_000_000;
        let mut c = Client::connect(s.port());
        let head = if chunked {
            "POST /cgi-bin/count.sh HTTP/1.1\r\nHost: cgi.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_string()
        } else {
            format!(
                "POST /cgi-bin/count.sh HTTP/1.1\r\nHost: cgi.test\r\nContent-Length: {total}\r\n\r\n"
            )
        };
        c.send(head.as_bytes());
        let block = vec![b'u'; 1 << 20];
        let mut sent = 0;
        while sent < total {
            let n = block.len().min(total - sent);
            if chunked {
                c.send(format!("{n:x}\r\n").as_bytes());
            }
            c.send(&block[..n]);
            if chunked {
                c.send(b"\r\n");
            }
            sent += n;
        }
        if chunked {
            c.send(b"0\r\n\r\n");
        }
        let r = c.read_response(false);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let max = sampler.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text().trim(), total.to_string());
        let grew_mb = max.saturating_sub(base) / 1024;
        assert!(
            grew_mb < 64,
            "chunked={chunked}: RSS grew by {grew_mb} MiB ({base} kB -> {max} kB)"
        );
    }
}
