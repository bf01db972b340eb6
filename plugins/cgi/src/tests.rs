//! Unit tests: the environment, the mapping, and whole runs of small
//! shell scripts through `TestRequest` (no server).

use super::*;
use std::os::unix::fs::PermissionsExt;
use tamada_sdk::testing::TestRequest;

fn var<'a>(env: &'a [(String, Vec<u8>)], k: &str) -> Option<&'a str> {
    // The last entry wins, as when the child is spawned.
    env.iter()
        .rev()
        .find(|(n, _)| n == k)
        .map(|(_, v)| std::str::from_utf8(v).expect("utf-8"))
}

fn target() -> map::Target {
    map::Target {
        program: "/bin/true".into(),
        arg: None,
        script_filename: "/srv/cgi/x.sh".into(),
        script_name: "/cgi-bin/x.sh".into(),
        path_info: "/a/b".into(),
        cwd: "/srv/cgi".into(),
        label: "x.sh".into(),
    }
}

fn env_of(
    req: &TestRequest,
    pass_authorization: bool,
    extra: &[(String, String)],
) -> Vec<(String, Vec<u8>)> {
    let base = env::base("/bin", Path::new("/srv/www"), extra);
    let t = target();
    req.with(|r| {
        env::build(
            &base,
            r,
            &env::PerRequest {
                script: t.script(),
                path_root: None,
                content_length: Some(5),
                pass_authorization,
                basic_remote_user: true,
            },
        )
    })
}

#[test]
fn meta_variables() {
    let mut req = TestRequest::new("POST", "/cgi-bin/x.sh/a/b?q=1&r=%20")
        .header("Content-Type", "text/plain")
        .header("Content-Length", "5")
        .header("Accept", "a/b")
        .header("accept", "c/d")
        .header("User-Agent", "t/1")
        .document_root("/srv/www");
    req.path = "/cgi-bin/x.sh/a/b".into();
    let env = env_of(&req, false, &[("GIT_PROJECT_ROOT".into(), "/g".into())]);
    let want = [
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "8080"),
        ("REQUEST_METHOD", "POST"),
        ("SCRIPT_NAME", "/cgi-bin/x.sh"),
        ("SCRIPT_FILENAME", "/srv/cgi/x.sh"),
        ("PATH_INFO", "/a/b"),
        ("PATH_TRANSLATED", "/srv/www/a/b"),
        ("QUERY_STRING", "q=1&r=%20"),
        ("REQUEST_URI", "/cgi-bin/x.sh/a/b?q=1&r=%20"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_HOST", "127.0.0.1"),
        ("REMOTE_PORT", "40000"),
        ("CONTENT_TYPE", "text/plain"),
        ("CONTENT_LENGTH", "5"),
        ("HTTP_ACCEPT", "a/b, c/d"),
        ("HTTP_USER_AGENT", "t/1"),
        ("HTTP_HOST", "localhost"),
        ("DOCUMENT_ROOT", "/srv/www"),
        ("REDIRECT_STATUS", "200"),
        ("REQUEST_SCHEME", "http"),
        ("PATH", "/bin"),
        ("GIT_PROJECT_ROOT", "/g"),
    ];
    for (k, v) in want {
        assert_eq!(var(&env, k), Some(v), "{k}");
    }
    assert_eq!(var(&env, "HTTPS"), None, "HTTPS only when on");
    assert_eq!(
        var(&env, "SERVER_SOFTWARE"),
        Some(concat!("tamada/", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(var(&env, "HTTP_CONTENT_TYPE"), None);
    assert_eq!(var(&env, "HTTP_CONTENT_LENGTH"), None);
    assert_eq!(var(&env, "AUTH_TYPE"), None);
    // Nothing of the test process's own environment.
    assert_eq!(var(&env, "HOME"), None);
}

#[test]
fn no_path_translated_without_path_info_and_empty_query() {
    let req = TestRequest::get("/cgi-bin/x.sh");
    let base = env::base("/bin", Path::new("/srv/www"), &[]);
    let mut t = target();
    t.path_info.clear();
    let env = req.with(|r| {
        env::build(
            &base,
            r,
            &env::PerRequest {
                script: t.script(),
                path_root: None,
                content_length: None,
                pass_authorization: false,
                basic_remote_user: false,
            },
        )
    });
    assert_eq!(var(&env, "PATH_INFO"), Some(""));
    assert_eq!(var(&env, "PATH_TRANSLATED"), None);
    assert_eq!(var(&env, "QUERY_STRING"), Some(""));
    assert_eq!(var(&env, "CONTENT_LENGTH"), None);
}

#[test]
fn httpoxy_and_underscore_headers_are_dropped() {
    let req = TestRequest::get("/x")
        .header("Proxy", "http://evil:8080")
        .header("X_Forwarded_For", "6.6.6.6")
        .header("X-Forwarded-For", "1.2.3.4");
    let env = env_of(&req, false, &[]);
    assert_eq!(var(&env, "HTTP_PROXY"), None);
    assert_eq!(var(&env, "HTTP_X_FORWARDED_FOR"), Some("1.2.3.4"));
    assert_eq!(
        env.iter()
            .filter(|(k, _)| k == "HTTP_X_FORWARDED_FOR")
            .count(),
        1
    );
}

#[test]
fn authorization_only_when_asked() {
    // "alice:secret"
    let req = TestRequest::get("/x").header("Authorization", "Basic YWxpY2U6c2VjcmV0");
    let env = env_of(&req, false, &[]);
    assert_eq!(var(&env, "HTTP_AUTHORIZATION"), None);
    assert_eq!(var(&env, "AUTH_TYPE"), Some("Basic"));
    assert_eq!(var(&env, "REMOTE_USER"), Some("alice"));
    let env = env_of(&req, true, &[]);
    assert_eq!(
        var(&env, "HTTP_AUTHORIZATION"),
        Some("Basic YWxpY2U6c2VjcmV0")
    );
    let req = TestRequest::get("/x").header("Authorization", "Bearer abc");
    let env = env_of(&req, false, &[]);
    assert_eq!(var(&env, "AUTH_TYPE"), None);
    assert_eq!(var(&env, "REMOTE_USER"), None);
}

// ---------------------------------------------------------------------
// Whole runs.

fn script(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn cgi_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    script(
        d.path(),
        "env.sh",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho \"PI=$PATH_INFO\"\necho \"SN=$SCRIPT_NAME\"\necho \"CWD=$(pwd)\"\necho \"LEN=$CONTENT_LENGTH\"\nwc -c | tr -d ' '\n",
    );
    script(d.path(), ".hidden.sh", "#!/bin/sh\necho x\n");
    std::fs::write(d.path().join("noexec.sh"), "#!/bin/sh\n").unwrap();
    std::fs::create_dir(d.path().join("sub")).unwrap();
    d
}

fn folder_req(target: &str, dir: &Path) -> TestRequest {
    let mut r = TestRequest::get(target).route("/cgi-bin/");
    r.cgi_bin = dir.to_string_lossy().into_owned();
    r
}

#[test]
fn folder_mode_runs_a_script_with_path_info() {
    let d = cgi_dir();
    let req = folder_req("/cgi-bin/env.sh/extra/path", d.path());
    let h = new(&req.options("")).unwrap();
    let out = req.run(&h);
    assert_eq!(out.outcome, Outcome::Done);
    assert_eq!(out.response.get_status(), 200);
    let text = String::from_utf8(out.body_bytes()).unwrap();
    let canon = std::fs::canonicalize(d.path()).unwrap();
    assert!(text.contains("PI=/extra/path\n"), "{text}");
    assert!(text.contains("SN=/cgi-bin/env.sh\n"), "{text}");
    assert!(
        text.contains(&format!("CWD={}\n", canon.display())),
        "{text}"
    );
}

#[test]
fn folder_mode_refusals() {
    let d = cgi_dir();
    std::os::unix::fs::symlink("/bin/sh", d.path().join("escape")).unwrap();
    for (path, code) in [
        ("/cgi-bin/missing.sh", 404),
        ("/cgi-bin/noexec.sh", 403),
        ("/cgi-bin/.hidden.sh", 403),
        ("/cgi-bin/sub", 403),
        ("/cgi-bin/", 403),
        ("/cgi-bin/escape", 403),
    ] {
        let req = folder_req(path, d.path());
        let h = new(&req.options("")).unwrap();
        let out = req.run(&h);
        assert_eq!(out.outcome, Outcome::Done, "{path}");
        assert_eq!(out.response.get_status(), code, "{path}");
    }
}

#[test]
fn chunked_body_is_spooled_and_counted() {
    let d = cgi_dir();
    let mut req = folder_req("/cgi-bin/env.sh", d.path()).body(vec![b'x'; 3000]);
    req.method = "POST".into();
    req.chunked = true;
    // A 1 KiB threshold: the body goes through a temporary file.
    let h = new(&req.options("{spool_threshold: 1KiB}")).unwrap();
    let text = String::from_utf8(req.run(&h).body_bytes()).unwrap();
    assert!(
        text.contains("LEN=3000\n") && text.ends_with("\n3000\n"),
        "{text}"
    );
    let h = new(&req.options("{stream_chunked: true}")).unwrap();
    let text = String::from_utf8(req.run(&h).body_bytes()).unwrap();
    assert!(
        text.contains("LEN=\n") && text.ends_with("\n3000\n"),
        "{text}"
    );
}

#[test]
fn interpreters_decline_what_they_do_not_run() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("page.sh"),
        "printf 'Content-Type: text/plain\\n\\nran %s' \"$SCRIPT_NAME\"\n",
    )
    .unwrap();
    std::fs::write(d.path().join("style.css"), "body{}").unwrap();
    let run = |path: &str| {
        let req = TestRequest::get(path).document_root(d.path().to_string_lossy());
        let h = new(&req.options("{interpreters: {.sh: /bin/sh}}")).unwrap();
        let out = req.run(&h);
        let (o, s) = (out.outcome.clone(), out.response.get_status());
        (o, s, String::from_utf8(out.body_bytes()).unwrap())
    };
    assert_eq!(run("/page.sh"), (Outcome::Done, 200, "ran /page.sh".into()));
    assert_eq!(run("/style.css").0, Outcome::Decline);
    assert_eq!(run("/missing.css").0, Outcome::Decline);
    assert_eq!(run("/").0, Outcome::Decline);
    assert_eq!(run("/missing.sh").1, 404);
}

#[test]
fn bad_and_missing_headers_are_502_local_location_redirects() {
    let d = tempfile::tempdir().unwrap();
    script(d.path(), "garbage.sh", "#!/bin/sh\necho '<html>'\n");
    script(
        d.path(),
        "notype.sh",
        "#!/bin/sh\nprintf 'X-A: 1\\n\\nhi'\n",
    );
    script(d.path(), "crash.sh", "#!/bin/sh\nkill -SEGV $$\n");
    script(
        d.path(),
        "local.sh",
        "#!/bin/sh\nprintf 'Location: /other?x=1\\n\\n'\n",
    );
    for (name, code) in [("garbage.sh", 502), ("notype.sh", 502), ("crash.sh", 502)] {
        let req = folder_req(&format!("/cgi-bin/{name}"), d.path());
        let out = req.run(&new(&req.options("")).unwrap());
        assert_eq!(out.response.get_status(), code, "{name}");
    }
    let req = folder_req("/cgi-bin/local.sh", d.path());
    let out = req.run(&new(&req.options("")).unwrap());
    assert_eq!(out.outcome, Outcome::Redirect("/other?x=1".into()));
}

#[test]
fn header_timeout_gives_504_and_max_processes_503() {
    let d = tempfile::tempdir().unwrap();
    script(d.path(), "slow.sh", "#!/bin/sh\nsleep 30\n");
    let req = folder_req("/cgi-bin/slow.sh", d.path());
    let h = new(&req.options("{header_timeout: 300ms}")).unwrap();
    let t = std::time::Instant::now();
    let out = req.run(&h);
    assert_eq!(out.response.get_status(), 504);
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(h.running.load(std::sync::atomic::Ordering::SeqCst), 0);
    h.running.store(64, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(req.run(&h).response.get_status(), 503);
}

#[test]
fn options_are_checked() {
    let req = TestRequest::get("/");
    let err = |y: &str| new(&req.options(y)).err().unwrap();
    assert!(err("{scirpt: /bin/sh}").contains("unknown field"));
    assert!(err("").contains("no scripts"));
    assert!(err("{script: /nonexistent/x}").contains("script"));
    assert!(err("{script: /bin/sh, interpreters: {.x: /bin/sh}}").contains("exclude"));
    assert!(err("{interpreters: {php: /bin/sh}}").contains("extension"));
    assert!(err("{script: /bin/sh, header_timeout: soon}").contains("header_timeout"));
}

#[test]
fn a_script_that_answers_while_reading_does_not_deadlock() {
    // `cat` writes its output while stdin is still being fed: far more
    // than a pipe holds, so the output read meanwhile is spooled.
    let d = tempfile::tempdir().unwrap();
    script(
        d.path(),
        "cat.sh",
        "#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\n\\n'\nexec cat\n",
    );
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut req = folder_req("/cgi-bin/cat.sh", d.path()).body(body.clone());
    req.method = "POST".into();
    let h = new(&req.options("{spool_threshold: 256KiB, idle_timeout: 5s}")).unwrap();
    let out = req.run(&h);
    assert_eq!(out.response.get_status(), 200);
    assert!(out.body_bytes() == body, "echoed body differs");
}

#[test]
fn remote_user_can_be_turned_off() {
    let d = cgi_dir();
    script(
        d.path(),
        "user.sh",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n[%s][%s]' \"$AUTH_TYPE\" \"$REMOTE_USER\"\n",
    );
    let req =
        folder_req("/cgi-bin/user.sh", d.path()).header("Authorization", "Basic YWxpY2U6c2VjcmV0");
    let on = req
        .run(&new(&req.options("{basic_remote_user: true}")).unwrap())
        .body_bytes();
    assert_eq!(on, b"[Basic][alice]");
    let off = req.run(&new(&req.options("")).unwrap()).body_bytes();
    assert_eq!(off, b"[][]", "off by default");
}

#[test]
fn interpreters_with_dir_map_the_rest_of_the_path() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("page.sh"),
        "printf 'Content-Type: text/plain\\n\\n%s|%s' \"$SCRIPT_NAME\" \"$PATH_INFO\"\n",
    )
    .unwrap();
    let req = TestRequest::get("/app/page.sh/x/y").route("/app/");
    let yaml = format!(
        "{{dir: {}, interpreters: {{.sh: /bin/sh}}}}",
        d.path().display()
    );
    let out = req.run(&new(&req.options(&yaml)).unwrap());
    assert_eq!(out.body_bytes(), b"/app/page.sh|/x/y");
}
