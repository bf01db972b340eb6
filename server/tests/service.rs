//! Running as a service: dropping root for a configured user, `-t` as a
//! dry run that creates nothing.

use crate::harness::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

const ID_SH: &str = "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho \"uid=$(id -u) gid=$(id -g)\"\n";

fn fixture() -> Fixture {
    Fixture::new()
        .file("conf.d/server.yaml", "user: nobody\n")
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\ncgi_bin: ../cgi-bin\nlog: ../logs\n",
        )
        .file("www/index.html", "home\n")
        .file("www/secret.txt", "root only\n")
        .file("cgi-bin/id.sh", ID_SH)
        .file("logs/.keep", "")
        .ports(2)
}

/// Makes the tree readable by everyone, but `secret.txt` by root only.
/// Replaces each symlink in `dir` by a copy of its target.
fn materialise(dir: &std::path::Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_symlink() {
            let target = std::fs::read_link(&p).unwrap();
            let tmp = p.with_extension("copy");
            std::fs::copy(&target, &tmp).unwrap();
            std::fs::rename(&tmp, &p).unwrap();
        }
    }
}

fn open_up(root: &std::path::Path) {
    for e in walk(root) {
        let mode = if e.is_dir() || e.ends_with("id.sh") {
            0o755
        } else {
            0o644
        };
        std::fs::set_permissions(&e, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = root.join("www/secret.txt");
    std::fs::set_permissions(secret, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn walk(d: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

fn ids(status: &str, key: &str) -> Vec<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

#[test]
fn started_as_root_it_serves_as_the_configured_user_on_every_thread() {
    let f = fixture();
    if !is_root() {
        // Not root: `user:` cannot be dropped to, and the log says so.
        let s = f.start();
        assert!(
            s.log.wait_for(
                "is ignored: the server was not started as root",
                Duration::from_secs(5)
            ),
            "{}",
            s.log.text()
        );
        return;
    }
    let (dir, conf, plugins, ports) = f.write();
    // The plugin folder holds symlinks into target/, which `nobody` cannot
    // follow when the checkout lives under a folder only root may enter
    // (root's home, 0700): the reload after the drop reads copies.
    materialise(&plugins);
    open_up(dir.path());
    let s = TestServer::spawn(dir, &conf, &plugins, ports, &[]);
    assert!(
        s.log.wait_for(
            "serving as user `nobody` (uid 65534)",
            Duration::from_secs(5)
        ),
        "{}",
        s.log.text()
    );
    // Every thread: the loops, the pool, the plugins' own.
    let pid = s.child.id();
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(tasks.len() > 3, "{tasks:?}");
    for t in &tasks {
        let st = std::fs::read_to_string(t.join("status")).unwrap();
        assert_eq!(ids(&st, "Uid:"), ["65534"; 4], "{t:?}: {st}");
        assert_eq!(ids(&st, "Gid:"), ["65534"; 4], "{t:?}: {st}");
        assert!(
            !ids(&st, "Groups:").contains(&"0".to_owned()),
            "{t:?}: {st}"
        );
    }
    // CGI children are that user too, and a file only root may read is
    // refused.
    let r = get(s.port(), "/cgi-bin/id.sh", "a");
    assert_eq!(r.text(), "uid=65534 gid=65534\n");
    assert_eq!(get(s.port(), "/secret.txt", "a").status, 403);
    assert_eq!(get(s.port(), "/index.html", "a").text(), "home\n");
    // After the drop, a reload that needs a port below 1024 is refused
    // with a clear line, and the running configuration stays.
    std::fs::write(
        s.conf().join("b.yaml"),
        "vhost: b\nip: 127.0.0.1\nport: 999\ndocument_root: ../www\n",
    )
    .unwrap();
    s.signal(libc::SIGHUP);
    assert!(
        s.log
            .wait_for("ports below 1024 need root", Duration::from_secs(10)),
        "{}",
        s.log.text()
    );
    assert!(s.log.text().contains("keeping the running configuration"));
    assert_eq!(get(s.port(), "/index.html", "a").status, 200);
}

#[test]
fn dash_t_is_a_dry_run_that_creates_no_log_file_and_checks_the_user() {
    let f = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nlog: ../logs\n",
        )
        .file("logs/.keep", "");
    let (dir, conf, plugins, _) = f.write();
    let (code, out, err) = run_tamada(&[
        "-t",
        "-c",
        conf.to_str().unwrap(),
        "--plugin-dir",
        plugins.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let logs: Vec<_> = std::fs::read_dir(dir.path().join("logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(logs, [".keep"], "-t created log files");
    // A user that does not exist is a configuration error.
    std::fs::write(conf.join("server.yaml"), "user: no-such-user-here\n").unwrap();
    let (code, _out, err) = run_tamada(&[
        "-t",
        "-c",
        conf.to_str().unwrap(),
        "--plugin-dir",
        plugins.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("server.yaml: user: no user named `no-such-user-here`"),
        "{err}"
    );
}

#[test]
fn cgi_refuses_to_run_scripts_as_root_unless_told_to() {
    let vhost = |opts: &str| {
        format!(
            "vhost: a\nip: 127.0.0.1\nport: {{port0}}\ndocument_root: ../www\ncgi_bin: ../cgi-bin\nroutes:\n  - path: /cgi-bin/\n    handler: cgi\n    options: {{ {opts} }}\n"
        )
    };
    let start = |opts: &str| {
        let s = Fixture::new()
            .file("conf.d/a.yaml", &vhost(opts))
            .file("cgi-bin/id.sh", ID_SH)
            .start();
        std::fs::set_permissions(
            s.dir.path().join("cgi-bin/id.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        s
    };
    let s = start("");
    let r = get(s.port(), "/cgi-bin/id.sh", "a");
    if !is_root() {
        // A server run by a normal user runs scripts as that user.
        assert_eq!(r.status, 200, "{}", r.text());
        return;
    }
    assert_eq!(r.status, 500);
    assert!(
        s.log
            .wait_for("refusing to run id.sh as root", Duration::from_secs(5)),
        "{}",
        s.log.text()
    );
    assert!(s.log.text().contains("serving as root: set `user:`"));
    // Said explicitly, it runs them.
    let s = start("run_as_root: true");
    let r = get(s.port(), "/cgi-bin/id.sh", "a");
    assert_eq!(r.text(), "uid=0 gid=0\n");
}

#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    // The service manager's side of Type=notify: a datagram socket named
    // by NOTIFY_SOCKET.
    let sockdir = tempfile::tempdir().unwrap();
    let path = sockdir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let recv = || {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut s = Fixture::new()
        .file("conf.d/a.yaml", &echo_vhost("a", "{port0}", ""))
        .file("www/.keep", "")
        .env("NOTIFY_SOCKET", path.to_str().unwrap())
        .start();
    assert_eq!(recv(), "READY=1\n");
    // Ready means every listener accepts.
    assert_eq!(get(s.port(), "/", "a").status, 200);
    s.signal(libc::SIGHUP);
    let m = recv();
    assert!(m.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{m:?}");
    assert_eq!(recv(), "READY=1\n");
    s.signal(libc::SIGTERM);
    assert_eq!(recv(), "STOPPING=1\n");
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn help_and_the_man_page_come_from_one_definition() {
    let (code, help, _) = run_tamada(&["--help"]);
    assert_eq!(code, 0);
    let (code, man, _) = run_tamada(&["--man"]);
    assert_eq!(code, 0);
    assert!(man.contains(".TH tamada 8"), "{man}");
    for flag in [
        "--conf",
        "--test",
        "--plugin-dir",
        "--plugins",
        "--workers",
        "--loops",
        "--log-level",
        "--verbose",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
        assert!(
            man.contains(&flag.replace('-', "\\-")),
            "the man page lacks {flag}"
        );
    }
    assert!(help.contains("SIGHUP reloads conf.d"), "{help}");
    let (code, _, err) = run_tamada(&["--no-such-flag"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("unexpected argument '--no-such-flag'"),
        "{err}"
    );
}

#[test]
fn the_committed_man_page_is_what_the_binary_prints() {
    // The package installs packaging/tamada.8 (so that `cargo deb` works
    // from a clean checkout): it must not drift from the flags.
    let (code, printed, err) = run_tamada(&["--man"]);
    assert_eq!(code, 0, "{err}");
    let committed =
        std::fs::read_to_string(workspace_root().join("packaging/tamada.8")).expect("man page");
    assert!(
        printed == committed,
        "packaging/tamada.8 is stale: run `tamada --man > packaging/tamada.8`"
    );
}

#[test]
fn the_conf_d_schema_is_what_the_server_parses_and_catches_typos() {
    // The committed schema (which the example files name for editors) is
    // what `tamada --schema` prints for the shipped plugins: it cannot
    // drift from the types the server parses.
    let root = workspace_root();
    let (code, printed, err) = run_tamada(&[
        "--schema",
        "--plugin-dir",
        real_plugin_dir().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let committed = std::fs::read_to_string(root.join("conf.d/tamada.schema.json")).unwrap();
    assert!(
        printed.trim() == committed.trim(),
        "conf.d/tamada.schema.json is stale: run `tamada --schema --plugin-dir target/debug > conf.d/tamada.schema.json`"
    );
    let check = |files: &[&std::path::Path]| {
        let out = std::process::Command::new("python3")
            .arg(root.join("scripts/validate-conf.py"))
            .arg(root.join("conf.d/tamada.schema.json"))
            .args(files)
            .output()
            .expect("python3 (with python3-jsonschema and python3-yaml)");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // Every example file validates.
    let examples: Vec<_> = [
        "conf.d/example.yaml",
        "conf.d/server.yaml",
        "packaging/conf.d/default.yaml",
        "packaging/conf.d/server.yaml",
    ]
    .iter()
    .map(|f| root.join(f))
    .collect();
    let refs: Vec<&std::path::Path> = examples.iter().map(|p| p.as_path()).collect();
    let (code, out) = check(&refs);
    assert_eq!(code, Some(0), "{out}");
    // A misspelt key, in the file and in a plugin's options, fails.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "vhost: a\nip: 127.0.0.1\nport: 8080\ndocument_root: /srv\nmax_bdy: 1MiB\nroutes:\n  - path: /\n    handler: static\n    options: { autoindx: true }\n",
    )
    .unwrap();
    let (code, out) = check(&[&bad]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("'max_bdy' was unexpected"), "{out}");
    assert!(
        out.contains(
            "routes/0/options: Additional properties are not allowed ('autoindx' was unexpected)"
        ),
        "{out}"
    );
    let typo = dir.path().join("server.yaml");
    std::fs::write(&typo, "workerz: 4\n").unwrap();
    let (code, out) = check(&[&typo]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("'workerz' was unexpected"), "{out}");
}

/// Kills a process the test did not spawn (the upgraded server) at the end.
struct KillOnDrop(Option<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // SAFETY: kill with a pid read from the server's own log line.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// The pid the upgraded process announces (`... this process (N) now serves`),
/// the `nth` time.
fn new_pid(log: &str, nth: usize) -> Option<i32> {
    log.match_indices("binary upgrade: this process (")
        .nth(nth)
        .and_then(|(i, m)| log[i + m.len()..].split(')').next())
        .and_then(|p| p.parse().ok())
}

#[test]
fn a_binary_upgrade_under_load_refuses_and_fails_nothing() {
    // SIGUSR2 twice: once under `ab` (a new connection per request), once
    // under `wrk` (keep-alive). Neither sees a failed request or a refused
    // connection; the old process drains and exits; the new one serves.
    let mut s = logged_site("pid_file: ../tamada.pid\n").start();
    let url = format!("http://127.0.0.1:{}/index.html", s.port());
    let mut guard = KillOnDrop(None);

    // 1. ab: 20,000 requests, 10 at a time, each on its own connection.
    let ab = {
        let url = url.clone();
        std::thread::spawn(move || {
            std::process::Command::new("ab")
                .args(["-q", "-n", "20000", "-c", "10", "-r", &url])
                .output()
                .expect("ab (apache2-utils)")
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    s.signal(libc::SIGUSR2);
    assert!(
        s.log
            .wait_for("binary upgrade: this process (", Duration::from_secs(30)),
        "{}",
        s.log.text()
    );
    let pid1 = new_pid(&s.log.text(), 0).expect("the new process's pid");
    guard.0 = Some(pid1);
    assert_eq!(
        s.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        s.log.text()
    );
    // The pid file follows the process that serves.
    let pid_file = s.dir.path().join("tamada.pid");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        pid1.to_string()
    );
    let out = ab.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Complete requests:      20000"), "{text}");
    assert!(text.contains("Failed requests:        0"), "{text}");
    assert!(!text.contains("Non-2xx"), "{text}");
    assert_eq!(get(s.port(), "/index.html", "a").text(), "home\n");

    // 2. wrk: keep-alive connections through a second upgrade.
    let wrk = {
        let url = url.clone();
        std::thread::spawn(move || {
            std::process::Command::new("wrk")
                .args(["-t1", "-c10", "-d3s", &url])
                .output()
                .expect("wrk")
        })
    };
    std::thread::sleep(Duration::from_millis(800));
    // SAFETY: kill with the pid the upgraded server announced.
    unsafe {
        libc::kill(pid1, libc::SIGUSR2);
    }
    let out = wrk.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("requests in"), "{text}");
    assert!(!text.contains("Socket errors"), "{text}");
    assert!(!text.contains("Non-2xx"), "{text}");
    assert!(
        s.log
            .wait_for_n("binary upgrade: this process (", 2, Duration::from_secs(10)),
        "{}",
        s.log.text()
    );
    let pid2 = new_pid(&s.log.text(), 1).expect("the second new process's pid");
    guard.0 = Some(pid2);
    assert_ne!(pid1, pid2);
    assert_eq!(get(s.port(), "/index.html", "a").text(), "home\n");
    // The access log saw every request, whichever process answered it.
    let lines = std::fs::read_to_string(s.dir.path().join("logs/access.log")).unwrap_or_default();
    assert!(
        lines.lines().count() >= 20000,
        "{} lines",
        lines.lines().count()
    );
}

#[test]
fn a_failed_upgrade_leaves_the_old_process_serving() {
    // The new process cannot start (its conf.d is broken meanwhile): the
    // old one says why and goes on.
    let s = Fixture::new()
        .file("conf.d/a.yaml", &echo_vhost("a", "{port0}", ""))
        .file("www/.keep", "")
        .start();
    std::fs::write(s.conf().join("b.yaml"), "vhost: [broken\n").unwrap();
    s.signal(libc::SIGUSR2);
    assert!(
        s.log
            .wait_for("binary upgrade failed:", Duration::from_secs(30)),
        "{}",
        s.log.text()
    );
    assert!(s.log.text().contains("still serving"));
    assert_eq!(get(s.port(), "/", "a").status, 200);
}

#[test]
fn the_running_docs_list_every_flag_of_help() {
    let (code, out, _) = crate::harness::run_tamada(&["--help"]);
    assert_eq!(code, 0);
    let docs =
        std::fs::read_to_string(crate::harness::workspace_root().join("docs/running.md")).unwrap();
    let flags: Vec<&str> = out
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .collect();
    assert!(flags.contains(&"--schema"), "{out}");
    for f in flags {
        assert!(docs.contains(f), "docs/running.md does not mention {f}");
    }
}
