//! Plugins loading and failing, `-t`, reload and shutdown.

use crate::harness::*;
use std::time::Duration;

#[test]
fn a_panicking_plugin_gives_500_and_the_server_keeps_serving() {
    let s = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nroutes:\n  - path: /\n    handler: echo\n    options: { panic_on: /boom, fail_on: /fail }\n",
        )
        .file("www/.keep", "")
        .start();
    let mut c = Client::connect(s.port());
    let r = c.request("GET /boom HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 500);
    let r = c.request("GET /fine HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.echo("path"), "/fine");
    assert!(
        s.log.wait_for(
            "echo: failed on GET /boom: panic: echo was told to panic on /boom",
            Duration::from_secs(5)
        ),
        "{}",
        s.log.text()
    );
    // Where it panicked reaches the log too, not only stderr.
    assert!(
        s.log.text().contains("(at echo/src/lib.rs:") || s.log.text().contains("src/lib.rs:"),
        "{}",
        s.log.text()
    );
    let r = get(s.port(), "/fail", "a");
    assert_eq!(r.status, 500);
    // The plugin's own log::error! reaches the host, tagged with the plugin.
    assert!(
        s.log
            .wait_for("echo: echo fails on /fail", Duration::from_secs(5)),
        "{}",
        s.log.text()
    );
}

#[test]
fn plugin_load_errors_are_one_line_each_and_skipped() {
    let f = Fixture::new()
        .plugins(Plugins::WithBroken)
        .file("conf.d/a.yaml", &echo_vhost("a", "{port0}", ""))
        .file("www/.keep", "");
    let (_dir, conf, plugins, _ports) = f.write();
    let (code, out, _err) = run_tamada(&[
        "--plugins",
        "--plugin-dir",
        plugins.to_str().unwrap(),
        "-c",
        conf.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    let skipped: Vec<&str> = out.lines().filter(|l| l.starts_with("skipped")).collect();
    let line = |file: &str| {
        skipped
            .iter()
            .find(|l| l.contains(file))
            .unwrap_or_else(|| panic!("no skipped line for {file}:\n{out}"))
            .to_string()
    };
    assert!(
        line("libtest_notplugin.so").contains("not a tamada plugin"),
        "{out}"
    );
    assert!(
        line("libtest_wrongmajor.so")
            .contains("built for tamada SDK 9.3, this server speaks SDK 1."),
        "{out}"
    );
    assert!(
        line("libtest_badlayout.so").contains("does not match this server's"),
        "{out}"
    );
    assert!(
        line("libtest_zdup.so").contains("plugin name `echo` is already taken by"),
        "{out}"
    );
    // Regression: a plugin built with panic = "abort" used to load, and its
    // first panic ended the server with no log line.
    assert!(
        line("libtest_abort_raw.so").contains("built with `panic = \"abort\"`"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("echo\t") && l.contains("libtest_echo.so")),
        "{out}"
    );
    assert!(out.lines().any(|l| l.starts_with("placeholder\t")), "{out}");
    // The server still starts and serves with the good plugins.
    let mut s = f_start_with(&plugins, &conf);
    assert_eq!(get(s.port(), "/", "a").status, 200);
    assert!(s.log.text().contains("skipped plugin"), "{}", s.log.text());
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(15)), Some(0));
}

fn f_start_with(plugins: &std::path::Path, conf: &std::path::Path) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(conf.join("a.yaml")).unwrap();
    let port: u16 = text
        .lines()
        .find_map(|l| l.strip_prefix("port: "))
        .unwrap()
        .parse()
        .unwrap();
    TestServer::spawn(dir, conf, plugins, vec![port], &[])
}

#[test]
fn a_route_naming_a_missing_plugin_stops_startup_listing_the_skipped() {
    let f = Fixture::new()
        .plugins(Plugins::WithBroken)
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nroutes:\n  - path: /\n    handler: echo\n  - path: /x/\n    handler: nosuch\n",
        )
        .file("www/.keep", "");
    let (code, _out, err) = f.check();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("a.yaml:9:5: routes[1] (/x/): no plugin named `nosuch` is loaded"),
        "{err}"
    );
    assert!(
        err.contains("skipped") && err.contains("libtest_wrongmajor.so: built for tamada SDK 9.3"),
        "{err}"
    );
}

#[test]
fn dash_t_points_at_the_broken_line() {
    let f = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nroutse:\n  - path: /\n",
        )
        .file(
            "conf.d/b.yaml",
            "vhost: b\nip: 127.0.0.1\nport: 80800\ndocument_root: ../www\n",
        )
        .file(
            "conf.d/c.yaml",
            "vhost: c\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../nowhere\n",
        )
        .file("www/.keep", "");
    let (code, _out, err) = f.check();
    assert_eq!(code, 1);
    assert!(err.contains("a.yaml:5:1: unknown field `routse`"), "{err}");
    assert!(
        err.contains("b.yaml:3:7: port: invalid value") || err.contains("b.yaml:3:7:"),
        "{err}"
    );
    assert!(
        err.contains("c.yaml:4:1: document_root:") && err.contains("is not a folder"),
        "{err}"
    );
}

#[test]
fn dash_t_reports_a_plugin_options_error_with_file_and_route() {
    let f = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nroutes:\n  - path: /\n    handler: echo\n    options: { tga: x }\n",
        )
        .file("www/.keep", "");
    let (code, _out, err) = f.check();
    assert_eq!(code, 1);
    // Regression: the line was the route's, and serde's own "at line 1
    // column 1" counted from the options block.
    assert!(
        err.contains(
            "a.yaml:8:16: routes[0] (/): plugin `echo` refused its options: unknown field `tga`"
        ),
        "{err}"
    );
    assert!(!err.contains(" at line "), "{err}");
    // A nested option, in block style, and a value of the wrong kind.
    let f = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nroutes:\n  - path: /\n    handler: static\n    options:\n      autoindex: true\n      cache:\n        memory: -5\n",
        )
        .file("www/.keep", "");
    let (code, _out, err) = f.check();
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "a.yaml:11:9: routes[0] (/): plugin `static` refused its options: cache.memory: `-5` is not a size: use 4096, 512KiB, 10MB, 1GiB"
        ),
        "{err}"
    );
    // And a good file passes.
    let good = Fixture::new()
        .file("conf.d/a.yaml", &echo_vhost("a", "{port0}", ""))
        .file("www/.keep", "");
    let (code, out, err) = good.check();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("is OK"));
}

#[test]
fn sighup_swaps_a_good_config_and_keeps_the_running_one_on_errors() {
    let s = Fixture::new()
        .ports(2)
        .file("conf.d/a.yaml", &echo_vhost("a", "{port0}", ""))
        .file("www/.keep", "")
        .start();
    let mut c = Client::connect(s.port());
    assert_eq!(
        c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").echo("tag"),
        "a"
    );
    // A broken file: the running config stays.
    std::fs::write(s.conf().join("b.yaml"), "vhost: b\nport: nope\n").unwrap();
    s.signal(libc::SIGHUP);
    assert!(
        s.log.wait_for(
            "reload failed; keeping the running configuration",
            Duration::from_secs(10)
        ),
        "{}",
        s.log.text()
    );
    // The reason follows on the next line(s) of the same record.
    assert!(
        s.log.wait_for("b.yaml", Duration::from_secs(5)),
        "{}",
        s.log.text()
    );
    assert_eq!(
        c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").echo("tag"),
        "a"
    );
    // A good change: new tag, and a new port, without dropping `c`.
    std::fs::remove_file(s.conf().join("b.yaml")).unwrap();
    let text = std::fs::read_to_string(s.conf().join("a.yaml"))
        .unwrap()
        .replace("tag: a", "tag: reloaded");
    std::fs::write(s.conf().join("a.yaml"), text).unwrap();
    std::fs::write(
        s.conf().join("c.yaml"),
        echo_vhost("c", &s.ports[1].to_string(), ""),
    )
    .unwrap();
    s.signal(libc::SIGHUP);
    assert!(
        s.log
            .wait_for("reloaded configuration", Duration::from_secs(10)),
        "{}",
        s.log.text()
    );
    assert_eq!(
        c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").echo("tag"),
        "reloaded"
    );
    assert_eq!(get(s.ports[1], "/", "c").echo("tag"), "c");
}

#[test]
fn sigterm_finishes_the_request_in_flight() {
    let mut s = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nroutes:\n  - path: /\n    handler: echo\n    options: { sleep_ms: 1500 }\n",
        )
        .file("www/.keep", "")
        .start();
    let mut c = Client::connect(s.port());
    c.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
    std::thread::sleep(Duration::from_millis(300));
    s.signal(libc::SIGTERM);
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.echo("path"), "/slow");
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(s.wait_exit(Duration::from_secs(15)), Some(0));
    // New connections are refused once it stopped listening.
    assert!(std::net::TcpStream::connect(s.addr()).is_err());
}

#[test]
fn a_plugin_without_the_optional_lifecycle_table_loads_and_serves() {
    let s = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nlog: ../logs\nroutes:\n  - path: /\n    handler: minimal\nloggers:\n  - handler: minimal\n",
        )
        .file("www/.keep", "")
        .file("logs/.keep", "")
        .start();
    let r = get(s.port(), "/x", "a");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "minimal plugin saw /x\n");
}

/// Installs `src` into `dir` as `name` the safe way: copy to a temporary
/// name that does not match `lib*.so`, then rename into place.
fn install(src: &std::path::Path, dir: &std::path::Path, name: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::copy(src, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[test]
fn sighup_loads_new_and_replaced_plugins() {
    let f = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nroutes:\n  - path: /\n    handler: placeholder\n    options: { body: before }\n",
        )
        .file("www/.keep", "");
    let (dir, conf, _plugins, ports) = f.write();
    // A plugin folder of copies (not symlinks), without echo at first.
    let plugins = dir.path().join("own-plugins");
    std::fs::create_dir(&plugins).unwrap();
    install(
        &real_plugin_dir().join("libtamada_placeholder.so"),
        &plugins,
        "libtamada_placeholder.so",
    );
    let s = TestServer::spawn(dir, &conf, &plugins, ports, &[]);
    assert_eq!(get(s.port(), "/", "a").text(), "before");

    // A new plugin dropped in, and a route to it: one SIGHUP.
    install(
        &test_plugin_dir().join("libtest_echo.so"),
        &plugins,
        "libtest_echo.so",
    );
    let text = std::fs::read_to_string(conf.join("a.yaml"))
        .unwrap()
        .replace(
            "routes:\n",
            "routes:\n  - path: /e/\n    handler: echo\n    options: { tag: new }\n",
        );
    std::fs::write(conf.join("a.yaml"), text).unwrap();
    let mut keep = Client::connect(s.port());
    assert_eq!(
        keep.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").text(),
        "before"
    );
    s.signal(libc::SIGHUP);
    assert!(
        s.log
            .wait_for("loaded plugin `echo`", Duration::from_secs(10)),
        "{}",
        s.log.text()
    );
    assert!(
        s.log
            .wait_for("reloaded configuration", Duration::from_secs(10)),
        "{}",
        s.log.text()
    );
    assert_eq!(get(s.port(), "/e/x", "a").echo("tag"), "new");

    // The same file name replaced by another build (here: a plugin that
    // also calls itself `echo` but declines everything): after SIGHUP the
    // new code answers, and the connection opened before is still served.
    install(
        &test_plugin_dir().join("libtest_dup.so"),
        &plugins,
        "libtest_echo.so",
    );
    s.signal(libc::SIGHUP);
    assert!(
        s.log
            .wait_for("reloaded plugin `echo`", Duration::from_secs(10)),
        "{}",
        s.log.text()
    );
    assert!(
        s.log
            .wait_for_n("reloaded configuration", 2, Duration::from_secs(10)),
        "{}",
        s.log.text()
    );
    let r = get(s.port(), "/e/x", "a");
    assert_eq!(
        r.text(),
        "before",
        "the replaced echo declines, so / answers"
    );
    assert_eq!(
        keep.request("GET /e/y HTTP/1.1\r\nHost: a\r\n\r\n").text(),
        "before"
    );
}

#[test]
fn the_frozen_sdk_1_1_fixture_keeps_loading_waiting_deferring_and_noting() {
    // Regression guard for the 1.1 promise: a plugin built from the
    // vendored 1.1 tables (inline, Wait, Defer, notes, option paths) must
    // load and behave in every server of major 1.
    let s = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nlog: ../logs\nloggers:\n  - handler: logging\n    options: { format: json }\nroutes:\n  - path: /\n    handler: frozen11\n",
        )
        .file("www/.keep", "")
        .file("logs/.keep", "")
        .start();
    let mut c = Client::connect(s.port());
    // A wait on the event loop for a socket a thread writes to 100 ms on.
    let t0 = std::time::Instant::now();
    assert_eq!(
        c.request("GET /wait HTTP/1.1\r\nHost: a\r\n\r\n").text(),
        "frozen 1.1 plugin: woke 1 read ready inline true\n"
    );
    assert!(t0.elapsed() >= Duration::from_millis(90));
    // While one connection waits, the loop serves the others.
    let mut waiting = Client::connect(s.port());
    waiting.send(b"GET /wait HTTP/1.1\r\nHost: a\r\n\r\n");
    let mut other = Client::connect(s.port());
    assert_eq!(
        other.request("GET /x HTTP/1.1\r\nHost: a\r\n\r\n").text(),
        format!(
            "frozen 1.1 plugin: /x inline true server SDK 1.{}\n",
            tamada_sdk::abi::SDK_MINOR
        )
    );
    assert_eq!(
        waiting.read_response(false).text(),
        "frozen 1.1 plugin: woke 1 read ready inline true\n"
    );
    // Defer: called again on the pool.
    assert_eq!(
        c.request("GET /defer HTTP/1.1\r\nHost: a\r\n\r\n").text(),
        "frozen 1.1 plugin: /defer inline false server SDK 1.1\n"
            .replace("SDK 1.1", &format!("SDK 1.{}", tamada_sdk::abi::SDK_MINOR))
    );
    // Its note is in the access log.
    let log = s.dir.path().join("logs/access.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text
            .lines()
            .filter(|l| l.contains("\"frozen11\":\"noted\""))
            .count()
            >= 4
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, out, _) = run_tamada(&[
        "--plugins",
        "--plugin-dir",
        s.dir.path().join("plugins").to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with("frozen11\t1.1.0\tSDK 1.1\t")),
        "{out}"
    );
    // Its option error is placed at the file's own line.
    let (code, _, err) = Fixture::new()
        .file(
            "conf.d/b.yaml",
            "vhost: b\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nroutes:\n  - path: /\n    handler: frozen11\n    options:\n      answer: bad\n",
        )
        .file("www/.keep", "")
        .check();
    assert_ne!(code, 0);
    assert!(
        err.contains("b.yaml:9:") && err.contains("not a good one"),
        "{err}"
    );
}

#[test]
fn the_frozen_sdk_1_0_fixture_keeps_loading_and_serving() {
    // Regression guard for the compatibility promise: a plugin built from
    // the vendored 1.0 tables must load in every server of major 1.
    let s = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nlog: ../logs\nroutes:\n  - path: /\n    handler: frozen\nloggers:\n  - handler: frozen\n",
        )
        .file("www/.keep", "")
        .file("logs/.keep", "")
        .start();
    let mut c = Client::connect(s.port());
    assert_eq!(
        c.request("GET /one HTTP/1.1\r\nHost: a\r\n\r\n").text(),
        "frozen 1.0 plugin: GET /one (logged 0)\n"
    );
    // Its log hook ran for the first exchange. (On the pool, beside the
    // next request's handler: the count may lag one request behind.)
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut n = 1;
    loop {
        n += 1;
        let t = c
            .request(&format!("GET /{n} HTTP/1.1\r\nHost: a\r\n\r\n"))
            .text();
        let logged: u32 = t
            .rsplit("(logged ")
            .next()
            .and_then(|r| r.trim_end().trim_end_matches(')').parse().ok())
            .unwrap_or_else(|| panic!("{t}"));
        assert!(
            t.starts_with(&format!("frozen 1.0 plugin: GET /{n} ")),
            "{t}"
        );
        assert!(logged == n - 1 || logged == n - 2, "{t}");
        if logged == n - 1 || std::time::Instant::now() > deadline {
            assert_eq!(logged, n - 1, "{t}");
            break;
        }
    }
    let (code, out, _) = run_tamada(&[
        "--plugins",
        "--plugin-dir",
        s.dir.path().join("plugins").to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with("frozen\t1.0.0\tSDK 1.0\t")),
        "{out}"
    );
    // A plugin that says it was built for a newer minor (ours + 7) loads
    // too.
    let newer = format!("SDK 1.{}", tamada_sdk::abi::SDK_MINOR + 7);
    assert!(
        out.lines()
            .any(|l| l.starts_with("minimal\t") && l.contains(&newer)),
        "{out}"
    );
}

#[test]
fn export_plugin_refuses_to_compile_under_panic_abort() {
    // The fixture crate's profile sets panic = "abort"; building it must
    // fail with the SDK's own message, not link a plugin that would take
    // the server down.
    let root = workspace_root();
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root.join("testplugins").join("abort"))
        .args(["build", "-p", "test-abort-macro", "--target-dir"])
        .arg(root.join("target").join("testplugins"))
        .output()
        .expect("run cargo build");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a panic=abort plugin compiled:\n{err}"
    );
    assert!(
        err.contains("tamada plugins must be built with `panic = \"unwind\"`"),
        "{err}"
    );
}

#[test]
fn a_route_to_a_plugin_that_declares_no_handler_fails_dash_t_naming_the_route() {
    // `logging` declares itself a logger only (SDK 1.1 roles).
    let f = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nroutes:\n  - path: /logs/\n    handler: logging\n  - path: /\n    handler: static\nloggers:\n  - handler: static\n",
        )
        .file("www/.keep", "");
    let (code, _out, err) = f.check();
    assert_eq!(code, 1);
    assert!(
        err.contains("a.yaml:7:5: routes[0] (/logs/): plugin `logging` declares no handler, it is a logger: name it under `loggers:`"),
        "{err}"
    );
    assert!(
        err.contains("loggers[0]: plugin `static` declares no logger, it is a handler: name it under `routes:`"),
        "{err}"
    );
}

#[test]
fn a_plugin_without_declared_roles_that_declines_everything_is_reported_once() {
    // Regression: a route to a plugin that cannot answer silently gave
    // 404s. `echo` (built without `roles:`) declines here.
    let s = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nroutes:\n  - path: /\n    handler: echo\n    options: { decline: true }\n  - path: /\n    handler: static\n",
        )
        .file("www/index.html", "home\n")
        .start();
    let mut c = Client::connect(s.port());
    for _ in 0..120 {
        let r = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(r.status, 200);
    }
    let msg = "route /: plugin `echo` declined all of the first 100 requests it was given";
    assert!(
        s.log.wait_for(msg, Duration::from_secs(5)),
        "{}",
        s.log.text()
    );
    assert_eq!(s.log.text().matches(msg).count(), 1, "{}", s.log.text());
}
