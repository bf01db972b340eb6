//! Integration tests: the `logging` plugin's access and error logs, end to
//! end through the real server (flush about once a second, so every check
//! polls the file, bounded).

use crate::harness::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Routes: `/e/` echo (fails on /e/fail, panics on /e/panic), `/s304/` and
/// `/s500/` echo with that status; nothing on `/`, so other paths are 404.
fn vhost(name: &str, extra: &str) -> String {
    format!(
        "vhost: {name}\nip: 127.0.0.1\nport: {{port0}}\ndocument_root: ../www\n{extra}routes:\n  \
         - path: /e/\n    handler: echo\n    options: {{ tag: {name}, fail_on: /e/fail, panic_on: /e/panic }}\n  \
         - path: /s304/\n    handler: echo\n    options: {{ status: 304 }}\n  \
         - path: /s500/\n    handler: echo\n    options: {{ status: 500 }}\n"
    )
}

fn start(files: &[(&str, &str)]) -> TestServer {
    let mut f = Fixture::new().file("www/.keep", "").file("logs/.keep", "");
    for (name, text) in files {
        f = f.file(name, text);
    }
    f.start()
}

fn logs(s: &TestServer) -> PathBuf {
    s.dir.path().join("logs")
}

fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Polls until `pred` holds for the lines of the files (bounded: 10 s).
fn wait_until(files: &[PathBuf], pred: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<String> = files.iter().flat_map(|f| read_lines(f)).collect();
        if pred(&lines) || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One line of the Combined Log Format.
#[derive(Debug)]
struct Clf {
    addr: String,
    user: String,
    time: String,
    request: String,
    status: u16,
    bytes: u64,
    referer: String,
    agent: String,
}

/// `$remote_addr - $remote_user [$time_local] "$request" $status
/// $body_bytes_sent "$http_referer" "$http_user_agent"`. Fields hold no
/// raw `"` (nginx escaping), so splitting on quotes is exact.
fn parse_clf(line: &str) -> Result<Clf, String> {
    let bad = || format!("not Combined Log Format: {line:?}");
    let parts: Vec<&str> = line.split('"').collect();
    if parts.len() != 7 || parts[4] != " " || !parts[6].is_empty() {
        return Err(bad());
    }
    let (addr, rest) = parts[0].split_once(" - ").ok_or_else(bad)?;
    let (user, rest) = rest.split_once(" [").ok_or_else(bad)?;
    let time = rest.strip_suffix("] ").ok_or_else(bad)?;
    // 26/Nov/2026:01:40:53 +0000
    let t = time.as_bytes();
    if t.len() != 26 || t[2] != b'/' || t[6] != b'/' || t[11] != b':' || !time.ends_with(" +0000") {
        return Err(bad());
    }
    let mut nums = parts[2].split_whitespace();
    let status = nums.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let bytes = nums.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    if nums.next().is_some() || !parts[2].starts_with(' ') || !parts[2].ends_with(' ') {
        return Err(bad());
    }
    Ok(Clf {
        addr: addr.into(),
        user: user.into(),
        time: time.into(),
        request: parts[1].into(),
        status,
        bytes,
        referer: parts[3].into(),
        agent: parts[5].into(),
    })
}

#[test]
fn ten_thousand_requests_from_twenty_threads_give_ten_thousand_lines() {
    let s = start(&[("conf.d/a.yaml", &vhost("a", "log: ../logs\n"))]);
    let port = s.port();
    let threads: Vec<_> = (0..20)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(port);
                let mut seen = Vec::with_capacity(500);
                for i in 0..500 {
                    let path = format!("/e/t{t}/r{i}");
                    let r = c.request(&format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n"));
                    assert_eq!(r.status, 200);
                    seen.push((path, r.body.len() as u64));
                }
                seen
            })
        })
        .collect();
    let sent: HashMap<String, u64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect();
    assert_eq!(sent.len(), 10_000);
    let access = logs(&s).join("access.log");
    let lines = wait_until(&[access], |l| l.len() >= 10_000);
    assert_eq!(lines.len(), 10_000);
    let mut logged = HashMap::new();
    for line in &lines {
        let e = parse_clf(line).unwrap();
        assert_eq!(e.addr, "127.0.0.1");
        assert_eq!(e.user, "-");
        assert_eq!((e.referer.as_str(), e.agent.as_str()), ("-", "-"));
        assert_eq!(e.status, 200, "{line}");
        let path = e
            .request
            .strip_prefix("GET ")
            .and_then(|r| r.strip_suffix(" HTTP/1.1"))
            .unwrap_or_else(|| panic!("request field of {line:?}"));
        assert!(
            logged.insert(path.to_owned(), e.bytes).is_none(),
            "twice: {line}"
        );
    }
    assert_eq!(
        logged, sent,
        "logged byte counts differ from those received"
    );
}

#[test]
fn statuses_head_and_hostile_headers_are_logged_right() {
    let s = start(&[("conf.d/a.yaml", &vhost("a", "log: ../logs\n"))]);
    let mut c = Client::connect(s.port());
    // User `alice` ("alice:secret"), and a user agent with `"`, `\` and UTF-8.
    let r = c.request(
        "GET /e/q?x=\"1\" HTTP/1.1\r\nHost: a\r\nAuthorization: Basic YWxpY2U6c2VjcmV0\r\n\
         Referer: http://r.example/\"x\"\r\nUser-Agent: evil \"agent\" \\ back\\slash é\r\n\r\n",
    );
    let q_len = r.body.len() as u64;
    let head = c.request("HEAD /e/h HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(head.status, 200);
    let r304 = c.request("GET /s304/x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r304.status, 304);
    let r404 = c.request("GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r404.status, 404);
    let r500 = c.request("GET /s500/x HTTP/1.0\r\nHost: a\r\n\r\n");
    assert_eq!(r500.status, 500);

    let lines = wait_until(&[logs(&s).join("access.log")], |l| l.len() >= 5);
    assert_eq!(lines.len(), 5, "{lines:#?}");
    let e: Vec<Clf> = lines.iter().map(|l| parse_clf(l).unwrap()).collect();
    // The target is logged raw; its quotes are escaped.
    assert_eq!(e[0].request, "GET /e/q?x=\\x221\\x22 HTTP/1.1");
    assert_eq!(e[0].user, "alice");
    assert_eq!(e[0].referer, "http://r.example/\\x22x\\x22");
    assert_eq!(
        e[0].agent,
        "evil \\x22agent\\x22 \\x5C back\\x5Cslash \\xC3\\xA9"
    );
    assert_eq!((e[0].status, e[0].bytes), (200, q_len));
    assert_eq!(
        (e[1].request.as_str(), e[1].status, e[1].bytes),
        ("HEAD /e/h HTTP/1.1", 200, 0)
    );
    assert_eq!((e[2].status, e[2].bytes), (304, 0));
    assert_eq!((e[3].status, e[3].bytes), (404, r404.body.len() as u64));
    assert_eq!(e[4].request, "GET /s500/x HTTP/1.0");
    assert_eq!((e[4].status, e[4].bytes), (500, r500.body.len() as u64));
    assert!(e[4].bytes > 0);
    assert!(!e[0].time.is_empty());
}

#[test]
fn rotation_under_load_loses_no_line() {
    let s = start(&[("conf.d/a.yaml", &vhost("a", "log: ../logs\n"))]);
    let port = s.port();
    let dir = logs(&s);
    let (access, rotated) = (dir.join("access.log"), dir.join("access.log.1"));
    const THREADS: usize = 4;
    const EACH: usize = 400;
    let done = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(port);
                for i in 0..EACH {
                    let r = c.request(&format!("GET /e/{t}/{i} HTTP/1.1\r\nHost: a\r\n\r\n"));
                    assert_eq!(r.status, 200);
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while done.load(Ordering::SeqCst) < THREADS * EACH / 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // What logrotate does: rename, then SIGUSR1.
    std::fs::rename(&access, &rotated).expect("rotate");
    s.signal(libc::SIGUSR1);
    // The reopen creates the new file.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !access.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(access.exists(), "no new access.log after SIGUSR1");
    let reopened_at = done.load(Ordering::SeqCst);
    for t in threads {
        t.join().expect("client thread");
    }
    let total = THREADS * EACH;
    assert!(reopened_at < total, "load ended before the reopen");
    let lines = wait_until(&[rotated.clone(), access.clone()], |l| l.len() >= total);
    assert_eq!(lines.len(), total);
    for l in &lines {
        parse_clf(l).unwrap();
    }
    let new = read_lines(&access).len();
    assert!(
        new >= total - reopened_at,
        "the new file got {new} lines, but {} requests were made after it appeared",
        total - reopened_at
    );
    assert!(!read_lines(&rotated).is_empty());
}

#[test]
fn error_log_gets_plugin_errors_and_panics_one_line_each() {
    let s = start(&[("conf.d/a.yaml", &vhost("a", "log: ../logs\n"))]);
    assert_eq!(get(s.port(), "/e/fail", "a").status, 500);
    assert_eq!(get(s.port(), "/e/panic", "a").status, 500);
    assert_eq!(get(s.port(), "/e/fine", "a").status, 200);
    let errors = logs(&s).join("error.log");
    let lines = wait_until(&[errors], |l| {
        l.iter().any(|x| x.contains("panic")) && l.iter().any(|x| x.contains("fails on"))
    });
    let find = |needle: &str| {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in error.log:\n{lines:#?}"))
            .clone()
    };
    // The plugin's own log::error!, tagged with the plugin.
    let own = find("echo: echo fails on /e/fail");
    assert!(
        own.contains(" [error] [client 127.0.0.1] [vhost a] "),
        "{own}"
    );
    // The core's record of the failure and of the panic.
    // Named once, by the tag (not again in the message).
    let fail = find("echo: failed on GET /e/fail: echo was told to fail on /e/fail");
    assert!(!fail.contains("plugin `echo`"), "{fail}");
    let panic = find("echo: failed on GET /e/panic: panic: echo was told to panic on /e/panic");
    assert!(
        panic.contains(" [error] [client 127.0.0.1] [vhost a] echo: "),
        "{panic}"
    );
    // 2026-11-26T01:40:53.123Z
    let time = panic.split(' ').next().unwrap();
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "{panic}"
    );
    // The plugin records went to the vhost's error log, not the server's.
    assert!(
        !s.log.text().contains("echo fails on /e/fail"),
        "{}",
        s.log.text()
    );
}

#[test]
fn a_full_disk_drops_lines_reports_them_and_serving_goes_on() {
    let s = start(&[(
        "conf.d/a.yaml",
        &vhost(
            "a",
            "log: ../logs\nloggers:\n  - handler: logging\n    options: { access_log: /dev/full }\n",
        ),
    )]);
    for i in 0..5 {
        assert_eq!(get(s.port(), &format!("/e/{i}"), "a").status, 200);
    }
    assert!(
        s.log
            .wait_for("log records dropped", Duration::from_secs(10)),
        "{}",
        s.log.text()
    );
    let text = s.log.text();
    let report = text
        .lines()
        .find(|l| l.contains("log records dropped"))
        .unwrap();
    assert!(
        report.contains("[ERROR]") && report.contains("/dev/full"),
        "{report}"
    );
    assert!(report.contains("No space left on device"), "{report}");
    assert!(report.contains("5 log records dropped"), "{report}");
    // Still serving; the next loss is reported again (rate-limited).
    for i in 0..3 {
        assert_eq!(get(s.port(), &format!("/e/again{i}"), "a").status, 200);
    }
    assert!(
        s.log
            .wait_for_n("log records dropped", 2, Duration::from_secs(10)),
        "{}",
        s.log.text()
    );
    assert!(s.log.text().contains("(8 since start)"), "{}", s.log.text());
    // The error log of the same logger still works.
    assert_eq!(get(s.port(), "/e/fail", "a").status, 500);
    let lines = wait_until(&[logs(&s).join("error.log")], |l| !l.is_empty());
    assert!(
        lines.iter().any(|l| l.contains("echo fails on /e/fail")),
        "{lines:#?}"
    );
}

#[test]
fn vhosts_sharing_a_folder_share_one_file_and_json_has_the_extras() {
    let s = start(&[
        ("conf.d/a.yaml", &vhost("a", "log: ../logs\n")),
        ("conf.d/b.yaml", &vhost("b", "log: ../logs\n")),
        (
            "conf.d/c.yaml",
            &vhost(
                "c",
                "loggers:\n  - handler: logging\n    options: { format: json, access_log: ../logs/c.json, error_log: off }\n",
            ),
        ),
    ]);
    let port = s.port();
    let threads: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|host| {
            std::thread::spawn(move || {
                let mut c = Client::connect(port);
                for i in 0..200 {
                    let r = c.request(&format!("GET /e/{i} HTTP/1.1\r\nHost: {host}\r\n\r\n"));
                    assert_eq!(r.echo("vhost"), host);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    let r = Client::connect(port).request(
        "POST /e/j HTTP/1.1\r\nHost: c\r\nContent-Length: 5\r\nUser-Agent: a\"b\r\n\r\nhello",
    );
    let lines = wait_until(&[logs(&s).join("access.log")], |l| l.len() >= 400);
    assert_eq!(lines.len(), 400);
    lines.iter().for_each(|l| {
        parse_clf(l).unwrap();
    });
    let json = wait_until(&[logs(&s).join("c.json")], |l| !l.is_empty());
    assert_eq!(json.len(), 1, "{json:#?}");
    let j = &json[0];
    assert!(j.starts_with('{') && j.ends_with('}'), "{j}");
    assert!(j.contains("\"vhost\":\"c\""), "{j}");
    assert!(j.contains("\"method\":\"POST\""), "{j}");
    assert!(j.contains("\"user_agent\":\"a\\\"b\""), "{j}");
    assert!(
        j.contains(&format!("\"body_bytes_sent\":{},", r.body.len())),
        "{j}"
    );
    assert!(j.contains("\"duration_us\":"), "{j}");
    let received: u64 = j
        .split("\"bytes_received\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no bytes_received in {j}"));
    assert!(received > 5 + 40, "{j}");
    assert!(
        !logs(&s).join("error.log").exists() || read_lines(&logs(&s).join("error.log")).is_empty()
    );
}

#[test]
fn bad_logger_options_fail_the_config_test_naming_the_file() {
    let f = Fixture::new()
        .file("www/.keep", "")
        .file("logs/.keep", "")
        .file(
            "conf.d/a.yaml",
            &vhost(
                "a",
                "log: ../logs\nloggers:\n  - handler: logging\n    options: { fromat: json }\n",
            ),
        );
    let (code, _out, err) = f.check();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("a.yaml"), "{err}");
    assert!(err.contains("loggers[0]"), "{err}");
    assert!(err.contains("unknown field `fromat`"), "{err}");
}

#[test]
fn requests_the_core_refuses_are_logged_too() {
    // As nginx does: a 400/501 answered before any vhost was chosen goes
    // to the access log of the address's default vhost, with its reason
    // in the error log.
    let s = start(&[("conf.d/a.yaml", &vhost("a", "log: ../logs\n"))]);
    let bad = [
        (&b"BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n"[..], 501),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"\x16\x03\x01 garbage \"quoted\"\r\n\r\n", 400),
    ];
    for (req, status) in bad {
        let out = raw(s.port(), req);
        assert!(out.starts_with(&format!("HTTP/1.1 {status}")), "{out}");
    }
    let access = logs(&s).join("access.log");
    let lines = wait_until(&[access], |l| l.len() >= 3);
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (line, (_, status)) in lines.iter().zip(bad) {
        let clf = parse_clf(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(clf.status, status, "{line}");
    }
    assert!(lines[0].contains("\"BREW /pot HTTP/1.1\""), "{}", lines[0]);
    assert!(
        lines[2].contains("\\x16\\x03\\x01"),
        "escaped: {}",
        lines[2]
    );
    let errors = wait_until(&[logs(&s).join("error.log")], |l| {
        l.iter()
            .any(|x| x.contains("501 Not Implemented: method BREW not implemented"))
    });
    assert!(
        errors
            .iter()
            .any(|x| x.contains("501 Not Implemented: method BREW not implemented")),
        "{errors:?}"
    );
}

#[test]
fn notes_a_handler_attaches_reach_the_json_access_log() {
    // SDK 1.1: `Request::note` on whichever thread runs the handler (here
    // the loop, and the pool for a deferred call), read by the logger.
    let s = start(&[(
        "conf.d/a.yaml",
        "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nlog: ../logs\nloggers:\n  - handler: logging\n    options: { format: json }\nroutes:\n  - path: /in/\n    handler: place\n    options: { placement: inline, note: true }\n  - path: /deferred/\n    handler: place\n    options: { placement: inline, defer: true, note: true }\n",
    )]);
    let r = get(s.port(), "/in/x", "a");
    let t = r.text();
    // The host table answers too.
    assert!(
        t.contains("server=tamada/") && t.contains("notes=true"),
        "{t}"
    );
    assert!(
        t.contains("noted=true") && t.contains("draining=false"),
        "{t}"
    );
    get(s.port(), "/deferred/y", "a");
    let lines = wait_until(&[logs(&s).join("access.log")], |l| l.len() >= 2);
    // (The two lines may be written in either order: each request's log
    // phase runs where its logger may.)
    let line = |path: &str| {
        lines
            .iter()
            .find(|l| l.contains(path))
            .unwrap_or_else(|| panic!("no line for {path}: {lines:?}"))
            .clone()
    };
    let l = line("/in/x");
    assert!(l.contains("\"notes\":{\"placed\":\"loop-"), "{l}");
    let l = line("/deferred/y");
    assert!(l.contains("\"notes\":{\"placed\":\"pool-"), "{l}");
}
