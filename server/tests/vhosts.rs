//! Virtual hosts and routing.

use crate::harness::*;
use std::time::Duration;

#[test]
fn two_vhosts_on_one_port_and_one_on_another() {
    let s = Fixture::new()
        .ports(2)
        .file(
            "conf.d/a.yaml",
            &echo_vhost("a.test", "{port0}", "aliases: [www.a.test]\n"),
        )
        .file("conf.d/b.yaml", &echo_vhost("b.test", "{port0}", ""))
        .file("conf.d/c.yaml", &echo_vhost("c.test", "{port1}", ""))
        .file("www/.keep", "")
        .start();
    let p0 = s.ports[0];
    let p1 = s.ports[1];
    assert_eq!(get(p0, "/", "a.test").echo("vhost"), "a.test");
    assert_eq!(get(p0, "/", "B.TEST:1234").echo("vhost"), "b.test");
    assert_eq!(get(p0, "/", "www.a.test").echo("vhost"), "a.test");
    assert_eq!(get(p1, "/", "c.test").echo("vhost"), "c.test");
    // c.test is not on port0: the first file on that port answers.
    assert_eq!(get(p0, "/", "c.test").echo("vhost"), "a.test");
}

#[test]
fn unknown_host_goes_to_the_default_vhost() {
    let s = Fixture::new()
        .file("conf.d/a.yaml", &echo_vhost("a.test", "{port0}", ""))
        .file(
            "conf.d/b.yaml",
            &echo_vhost("b.test", "{port0}", "default: true\n"),
        )
        .file("www/.keep", "")
        .start();
    assert_eq!(get(s.port(), "/", "nobody.test").echo("vhost"), "b.test");
    assert_eq!(get(s.port(), "/", "a.test").echo("vhost"), "a.test");
    // HTTP/1.0 without Host: the default too.
    let out = raw(s.port(), b"GET / HTTP/1.0\r\n\r\n");
    assert!(out.contains("vhost=b.test"), "{out}");
}

#[test]
fn wildcard_and_specific_address_share_one_socket() {
    let s = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: any.test\nip: 0.0.0.0\nport: {port0}\ndocument_root: ../www\nroutes:\n  - path: /\n    handler: echo\n",
        )
        .file(
            "conf.d/b.yaml",
            "vhost: local.test\nip: 127.0.0.2\nport: {port0}\ndocument_root: ../www\nroutes:\n  - path: /\n    handler: echo\n",
        )
        .file("www/.keep", "")
        .start();
    // 127.0.0.1 reaches the wildcard's vhosts.
    assert_eq!(get(s.port(), "/", "local.test").echo("vhost"), "any.test");
    // 127.0.0.2 reaches the vhosts configured on that address.
    let mut c = std::net::TcpStream::connect(("127.0.0.2", s.port())).expect("connect 127.0.0.2");
    use std::io::{Read, Write};
    c.write_all(b"GET / HTTP/1.1\r\nHost: whatever\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert!(out.contains("vhost=local.test"), "{out}");
}

#[test]
fn routes_longest_prefix_then_decline_then_404() {
    let s = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nroutes:\n  - path: /app/\n    handler: echo\n    options: { decline: true }\n  - path: /app/\n    handler: echo\n    options: { tag: app }\n  - path: /app/admin\n    handler: echo\n    options: { tag: admin }\n  - path: /only/\n    handler: echo\n    options: { decline: true }\n  - path: /\n    handler: echo\n    options: { tag: root }\n",
        )
        .file(
            "conf.d/b.yaml",
            "vhost: b\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nroutes:\n  - path: /x/\n    handler: echo\n    options: { decline: true }\n",
        )
        .file("www/.keep", "")
        .start();
    let r = get(s.port(), "/app/admin/users", "a");
    assert_eq!(
        (r.echo("tag"), r.echo("route"), r.echo("rest")),
        ("admin".into(), "/app/admin".into(), "/users".into())
    );
    // Not on a segment boundary: /app/administrator is not under /app/admin.
    assert_eq!(get(s.port(), "/app/administrator", "a").echo("tag"), "app");
    // The first /app/ route declines; the second answers.
    let r = get(s.port(), "/app/x.php", "a");
    assert_eq!(
        (r.echo("tag"), r.echo("rest")),
        ("app".into(), "/x.php".into())
    );
    // Routing sees the normalised path.
    assert_eq!(get(s.port(), "/%61pp/x.php", "a").echo("tag"), "app");
    // A declining prefix passes to shorter ones.
    assert_eq!(get(s.port(), "/only/z", "a").echo("tag"), "root");
    // Nothing answers: 404.
    let r = get(s.port(), "/x/y", "b");
    assert_eq!(r.status, 404);
    assert!(r.text().contains("404 Not Found"));
}

#[test]
fn internal_redirect_reroutes_as_get() {
    let s = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nroutes:\n  - path: /old/\n    handler: echo\n    options: { redirect: \"/new/place?from=old\" }\n  - path: /\n    handler: echo\n    options: { tag: root }\n",
        )
        .file("www/.keep", "")
        .start();
    let mut c = Client::connect(s.port());
    let r = c.request("POST /old/thing HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi");
    assert_eq!(r.status, 200);
    assert_eq!(r.echo("tag"), "root");
    assert_eq!(r.echo("path"), "/new/place");
    assert_eq!(r.echo("query"), "from=old");
    assert_eq!(r.echo("method"), "GET");
    assert_eq!(r.echo("redirects"), "1");
}

#[test]
fn ipv4_and_ipv6_wildcards_on_one_port() {
    // Regression: `[::]:P` was dual-stack and refused to bind beside
    // `0.0.0.0:P`; IPv6 listeners are IPv6-only now, as nginx's.
    let s = Fixture::new()
        .file(
            "conf.d/a.yaml",
            "vhost: four\nip: 0.0.0.0\nport: {port0}\ndocument_root: ../www\nroutes:\n  - path: /\n    handler: echo\n",
        )
        .file(
            "conf.d/b.yaml",
            "vhost: six\nip: \"::\"\nport: {port0}\ndocument_root: ../www\nroutes:\n  - path: /\n    handler: echo\n",
        )
        .file("www/.keep", "")
        .start();
    assert_eq!(get(s.port(), "/", "x").echo("vhost"), "four");
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("::1", s.port())).expect("connect [::1]");
    c.write_all(b"GET / HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert!(out.contains("vhost=six"), "{out}");
    assert!(out.contains("peer=[::1]:"), "{out}");
}

#[test]
fn the_default_vhost_of_each_address_is_logged_and_a_change_by_reload_warned() {
    let s = Fixture::new()
        .file("conf.d/b.yaml", &echo_vhost("b.test", "{port0}", ""))
        .file("conf.d/c.yaml", &echo_vhost("c.test", "{port0}", ""))
        .file("www/.keep", "")
        .start();
    let at = format!("127.0.0.1:{}", s.port());
    assert!(
        s.log.wait_for(
            &format!("{at}: default vhost b.test (the first file by name on it; mark one `default: true` to choose)"),
            Duration::from_secs(5)
        ),
        "{}",
        s.log.text()
    );
    // A new file that sorts first takes over unknown Hosts: said so.
    std::fs::write(
        s.conf().join("a.yaml"),
        echo_vhost("a.test", &s.port().to_string(), ""),
    )
    .unwrap();
    s.signal(libc::SIGHUP);
    assert!(
        s.log.wait_for(
            &format!("{at}: the default vhost is now a.test"),
            Duration::from_secs(10)
        ),
        "{}",
        s.log.text()
    );
    assert!(s.log.text().contains("was b.test"), "{}", s.log.text());
    // (the loops take the new configuration just after the log line)
    let mut got = String::new();
    for _ in 0..50 {
        got = get(s.port(), "/", "nobody.test").echo("vhost");
        if got == "a.test" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(got, "a.test");
}

#[test]
fn plugins_get_an_absolute_config_file_when_tamada_runs_with_a_relative_conf_d() {
    use std::io::BufRead;
    let f = Fixture::new()
        .file("conf.d/a.yaml", &echo_vhost("a.test", "{port0}", ""))
        .file("www/.keep", "");
    let (dir, _conf, plugins, ports) = f.write();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tamada"))
        .current_dir(dir.path())
        .args(["-c", "conf.d", "--plugin-dir"])
        .arg(&plugins)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tamada");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("tamada ready") {
                let _ = tx.send(());
            }
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(30)).is_ok();
    let r = ready.then(|| get(ports[0], "/", "a.test"));
    let _ = child.kill();
    let _ = child.wait();
    let r = r.expect("tamada started");
    let want = dir.path().join("conf.d").join("a.yaml");
    assert_eq!(r.echo("config-file"), want.display().to_string());
}
