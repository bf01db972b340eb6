//! Behind a load balancer: the health route and its lame duck, the
//! client's address from trusted proxies (X-Forwarded-For, the PROXY
//! protocol v1 and v2).

use crate::harness::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Waits (bounded) until the file has a line containing `needle`.
fn wait_line(path: &std::path::Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = std::fs::read_to_string(path).unwrap_or_default();
        if t.contains(needle) || Instant::now() > deadline {
            return t;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const ENV_SH: &str = "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho \"addr=$REMOTE_ADDR\"\necho \"port=${REMOTE_PORT-unset}\"\n";

fn make_executable(p: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn the_health_route_answers_on_every_vhost_and_stays_out_of_the_access_log() {
    let s = logged_site("health: /healthz\n").start();
    let mut c = Client::connect(s.port());
    // Any Host, known or not, and on a keep-alive connection.
    let r = c.request("GET /healthz HTTP/1.1\r\nHost: 10.1.2.3\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ok\n");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("connection"), None);
    c.send(b"HEAD /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.read_response(true);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    let r = c.request("POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    // Only the exact path: below it is the vhost's.
    let r = c.request("GET /healthz/x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 404);
    let r = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.body, b"home\n");
    let log = wait_line(&s.dir.path().join("logs/access.log"), "GET / ");
    assert!(log.contains("\"GET / HTTP/1.1\" 200"), "{log}");
    assert!(log.contains("/healthz/x"), "{log}");
    assert!(
        !log.contains("/healthz HTTP"),
        "health checks are not logged:\n{log}"
    );
}

#[test]
fn sigterm_answers_503_on_health_for_the_lame_duck_while_serving_then_stops() {
    let mut s = Fixture::new()
        .file(
            "conf.d/server.yaml",
            "health: /healthz\nlame_duck: 1500ms\nshutdown_timeout: 2s\n",
        )
        .file("conf.d/a.yaml", &echo_vhost("a", "{port0}", ""))
        .start();
    assert_eq!(get(s.port(), "/healthz", "a").status, 200);
    let mut kept = Client::connect(s.port());
    assert_eq!(
        kept.request("GET /x HTTP/1.1\r\nHost: a\r\n\r\n").status,
        200
    );
    let t0 = Instant::now();
    s.signal(libc::SIGTERM);
    assert!(
        s.log.wait_for("lame duck", Duration::from_secs(5)),
        "{}",
        s.log.text()
    );
    let r = get(s.port(), "/healthz", "a");
    assert_eq!(r.status, 503, "{}", r.head);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(r.header("retry-after").is_some());
    // Everything else is still served, on new connections and on kept
    // ones, which are kept.
    assert_eq!(get(s.port(), "/x", "a").status, 200);
    let r = kept.request("GET /y HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), None);
    assert!(
        s.wait_exit(Duration::from_secs(10)).is_some(),
        "did not stop"
    );
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1400),
        "stopped after {took:?}, before the lame duck ended"
    );
    assert!(TcpStream::connect(s.addr()).is_err(), "still listening");
}

#[test]
fn a_second_sigterm_ends_the_lame_duck_at_once() {
    let mut s = Fixture::new()
        .file("conf.d/server.yaml", "health: /healthz\nlame_duck: 60s\n")
        .file("conf.d/a.yaml", &echo_vhost("a", "{port0}", ""))
        .start();
    s.signal(libc::SIGTERM);
    assert!(s.log.wait_for("lame duck", Duration::from_secs(5)));
    assert_eq!(get(s.port(), "/healthz", "a").status, 503);
    s.signal(libc::SIGTERM);
    assert_eq!(
        s.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        s.log.text()
    );
    assert!(
        s.log.text().contains("ending the lame duck"),
        "{}",
        s.log.text()
    );
}

#[test]
fn x_forwarded_for_gives_the_client_only_from_trusted_proxies() {
    let s = Fixture::new()
        .file("conf.d/server.yaml", "trusted_proxies: [127.0.0.0/8, 10.0.0.0/8]\n")
        .file("conf.d/a.yaml", &echo_vhost("a", "{port0}", ""))
        .file(
            "conf.d/b.yaml",
            "vhost: b\nip: 127.0.0.1\nport: {port1}\ndocument_root: ../www\ncgi_bin: ../cgi-bin\nlog: ../logs\n\
             routes:\n  - path: /cgi-bin/\n    handler: cgi\n    options: { run_as_root: true }\n",
        )
        .file("cgi-bin/env.sh", ENV_SH)
        .file("logs/.keep", "")
        .ports(2)
        .start();
    make_executable(&s.dir.path().join("cgi-bin/env.sh"));
    let mut c = Client::connect(s.port());
    // The client wrote 198.51.100.7 itself; the balancer 10.0.0.2 appended
    // 203.0.113.9, the address it saw: that is the client.
    let r = c.request(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 198.51.100.7, 203.0.113.9\r\nX-Forwarded-For: 10.0.0.2\r\n\r\n",
    );
    assert_eq!(r.echo("peer"), "203.0.113.9:0");
    // Per request, not per connection.
    let r = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(r.echo("peer").starts_with("127.0.0.1:"), "{}", r.text());
    let r = c.request("GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: [2001:db8::7]:4711\r\n\r\n");
    assert_eq!(r.echo("peer"), "[2001:db8::7]:0");
    // RFC 7239 `Forwarded`, from a proxy that sends that instead.
    let r = c.request(
        "GET / HTTP/1.1\r\nHost: a\r\nForwarded: for=198.51.100.7, for=\"[2001:db8::9]:4711\";proto=https\r\nForwarded: for=10.0.0.2\r\n\r\n",
    );
    assert_eq!(r.echo("peer"), "[2001:db8::9]:0");
    // An obfuscated node stops the walk at the last trusted hop.
    let r = c.request("GET / HTTP/1.1\r\nHost: a\r\nForwarded: for=_hidden, for=10.0.0.3\r\n\r\n");
    assert_eq!(r.echo("peer"), "10.0.0.3:0");

    // CGI and the access log see it too.
    let mut c = Client::connect(s.ports[1]);
    let r = c
        .request("GET /cgi-bin/env.sh HTTP/1.1\r\nHost: b\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("addr=203.0.113.9\n"), "{}", r.text());
    assert!(r.text().contains("port=unset\n"), "{}", r.text());
    let log = wait_line(&s.dir.path().join("logs/access.log"), "env.sh");
    assert!(log.starts_with("203.0.113.9 "), "{log}");
}

#[test]
fn x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let s = Fixture::new()
        .file("conf.d/server.yaml", "trusted_proxies: [10.0.0.0/8]\n")
        .file("conf.d/a.yaml", &echo_vhost("a", "{port0}", ""))
        .start();
    let mut c = Client::connect(s.port());
    let r = c.request("GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n");
    assert!(r.echo("peer").starts_with("127.0.0.1:"), "{}", r.text());
    // And with no trusted_proxies at all, nobody is trusted.
    let s = Fixture::new()
        .file("conf.d/a.yaml", &echo_vhost("a", "{port0}", ""))
        .start();
    let mut c = Client::connect(s.port());
    let r = c.request("GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n");
    assert!(r.echo("peer").starts_with("127.0.0.1:"), "{}", r.text());
}

/// A PROXY protocol v2 header for TCP over IPv4.
fn v2(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, local: bool) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    if local {
        h.extend_from_slice(&[0x20, 0x00, 0, 0]);
        return h;
    }
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h
}

fn proxy_fixture(trusted: &str) -> Fixture {
    Fixture::new()
        .file(
            "conf.d/server.yaml",
            &format!("trusted_proxies: [{trusted}]\n"),
        )
        .file(
            "conf.d/a.yaml",
            &echo_vhost("a", "{port0}", "proxy_protocol: true\n"),
        )
        .file("conf.d/b.yaml", &echo_vhost("b", "{port1}", ""))
        .ports(2)
}

#[test]
fn the_proxy_protocol_gives_the_client_address_for_the_whole_connection() {
    let s = proxy_fixture("127.0.0.1").start();
    // v1, with requests pipelined behind it in the same packet.
    let mut c = Client::connect(s.port());
    c.send(
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 80\r\nGET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    assert_eq!(c.read_response(false).echo("peer"), "192.0.2.1:56324");
    assert_eq!(c.read_response(false).echo("peer"), "192.0.2.1:56324");
    // v1 over IPv6, the header arriving in pieces.
    let mut c = Client::connect(s.port());
    c.send(b"PROXY TCP6 2001:db8::1 2001:");
    std::thread::sleep(Duration::from_millis(50));
    c.send(b"db8::2 4000 443\r\n");
    let r = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.echo("peer"), "[2001:db8::1]:4000");
    // v2.
    let mut c = Client::connect(s.port());
    c.send(&v2([203, 0, 113, 5], 1234, [127, 0, 0, 1], 80, false));
    let r = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.echo("peer"), "203.0.113.5:1234");
    // v2 LOCAL (the balancer's own health check) and v1 UNKNOWN: the
    // connection's own address.
    for h in [
        v2([0; 4], 0, [0; 4], 0, true),
        b"PROXY UNKNOWN\r\n".to_vec(),
    ] {
        let mut c = Client::connect(s.port());
        c.send(&h);
        let r = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(r.echo("peer").starts_with("127.0.0.1:"), "{}", r.text());
    }
    // Without the header: closed without an answer.
    assert_eq!(raw(s.port(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), "");
    assert!(
        s.log
            .wait_for("expects the PROXY protocol", Duration::from_secs(5))
    );
    // The other listener is plain HTTP, and a PROXY line there is a bad request.
    assert_eq!(get(s.ports[1], "/", "b").status, 200);
    let r = raw(
        s.ports[1],
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 80\r\nGET / HTTP/1.1\r\n\r\n",
    );
    assert!(
        r.starts_with("HTTP/1.1 400") || r.starts_with("HTTP/1.1 501"),
        "{r}"
    );
}

#[test]
fn the_proxy_protocol_from_an_untrusted_peer_is_refused() {
    let s = proxy_fixture("10.0.0.0/8").start();
    let mut c = TcpStream::connect(s.addr()).unwrap();
    let _ = c.write_all(
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 80\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    assert_eq!(
        raw(
            s.port(),
            b"PROXY UNKNOWN\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"
        ),
        ""
    );
    assert!(
        s.log
            .wait_for("not in trusted_proxies", Duration::from_secs(5)),
        "{}",
        s.log.text()
    );
}

#[test]
fn balancer_settings_are_checked_with_file_and_line() {
    // proxy_protocol with nobody to trust.
    let (code, _, err) = Fixture::new()
        .file(
            "conf.d/a.yaml",
            &echo_vhost("a", "{port0}", "proxy_protocol: true\n"),
        )
        .check();
    assert_ne!(code, 0);
    assert!(
        err.contains("a.yaml:5:1: proxy_protocol: needs trusted_proxies"),
        "{err}"
    );
    // Two vhosts on one socket that disagree.
    let (code, _, err) = Fixture::new()
        .file("conf.d/server.yaml", "trusted_proxies: [127.0.0.1]\n")
        .file(
            "conf.d/a.yaml",
            &echo_vhost("a", "{port0}", "proxy_protocol: true\n"),
        )
        .file("conf.d/b.yaml", &echo_vhost("b", "{port0}", ""))
        .check();
    assert_ne!(code, 0);
    assert!(
        err.contains("a.yaml:5:1: proxy_protocol:") && err.contains("every vhost on it must agree"),
        "{err}"
    );
    // A network that is not one.
    let (code, _, err) = Fixture::new()
        .file(
            "conf.d/server.yaml",
            "loops: 1\ntrusted_proxies: [10.0.0.0/8, balancer.local]\n",
        )
        .file("conf.d/a.yaml", &echo_vhost("a", "{port0}", ""))
        .check();
    assert_ne!(code, 0);
    assert!(
        err.contains("server.yaml:2:") && err.contains("`balancer.local` is not an IP address"),
        "{err}"
    );
    // A health route that is not a path.
    let (code, _, err) = Fixture::new()
        .file("conf.d/server.yaml", "health: healthz\n")
        .file("conf.d/a.yaml", &echo_vhost("a", "{port0}", ""))
        .check();
    assert_ne!(code, 0);
    assert!(
        err.contains("server.yaml:1:1: health: `healthz` must be a path"),
        "{err}"
    );
}
