//! HTTPS: certificates made at test time (rcgen), curl and
//! `openssl s_client` as clients, the real binary and plugins.

use crate::harness::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A test certificate authority and the certificates it signs.
pub struct Pki {
    ca: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A certificate chain (leaf then CA) and its key, in PEM.
pub struct Pair {
    pub cert: String,
    pub key: String,
}

impl Pki {
    pub fn new() -> Pki {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "tamada test CA");
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = p.self_signed(&key).expect("CA");
        Pki { ca, key }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A server certificate for `names` (ECDSA P-256, or RSA 2048).
    pub fn server(&self, names: &[&str], rsa: bool) -> Pair {
        self.leaf(names, rsa, names.first().copied().unwrap_or("x"), false, 0)
    }

    /// A client certificate whose subject's common name is `cn`.
    pub fn client(&self, cn: &str) -> Pair {
        self.leaf(&[], false, cn, true, 0)
    }

    /// A server certificate that expired `days_ago` days ago.
    pub fn expired(&self, names: &[&str], days_ago: i64) -> Pair {
        self.leaf(names, false, names[0], false, days_ago)
    }

    fn leaf(&self, names: &[&str], rsa: bool, cn: &str, client: bool, expired_days: i64) -> Pair {
        let key = if rsa {
            rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key")
        } else {
            rcgen::KeyPair::generate().expect("key")
        };
        let mut p =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        if expired_days > 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs() as i64;
            let day = 86_400;
            let (y, m, d) = civil_from_days(now / day - expired_days - 30);
            p.not_before = rcgen::date_time_ymd(y as i32, m as u8, d as u8);
            let (y, m, d) = civil_from_days(now / day - expired_days);
            p.not_after = rcgen::date_time_ymd(y as i32, m as u8, d as u8);
        }
        let cert = p.signed_by(&key, &self.ca, &self.key).expect("sign");
        Pair {
            cert: format!("{}{}", cert.pem(), self.ca.pem()),
            key: key.serialize_pem(),
        }
    }
}

/// Days since 1970-01-01 -> (year, month, day) (Howard Hinnant's).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A vhost file: echo on `/`, plain on `{port0}`, HTTPS on `{port1}`
/// with `tls/<name>.pem` and its key, and `extra` lines.
fn tls_vhost(name: &str, extra: &str) -> String {
    format!(
        "vhost: {name}\nip: 127.0.0.1\nport: {{port0}}\ntls_port: {{port1}}\n\
         tls: {{ cert: ../tls/{name}.pem, key: ../tls/{name}.key }}\n\
         document_root: ../www\n{extra}routes:\n  - path: /\n    handler: echo\n    options: {{ tag: {name} }}\n"
    )
}

/// The fixture with certificate files for `names` (one each) and the CA.
fn with_certs(pki: &Pki, names: &[&str]) -> Fixture {
    let mut f = Fixture::new()
        .ports(2)
        .file("tls/ca.pem", &pki.ca_pem())
        .file("www/.keep", "");
    for n in names {
        let p = pki.server(&[n], false);
        f = f
            .file(&format!("tls/{n}.pem"), &p.cert)
            .file(&format!("tls/{n}.key"), &p.key);
    }
    f
}

/// What curl got: (exit code, status, headers and body as text).
struct Curl {
    code: i32,
    status: u16,
    out: String,
    err: String,
}

impl Curl {
    fn header(&self, name: &str) -> Option<String> {
        let head = self.out.split("\r\n\r\n").next().unwrap_or("");
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
    fn body(&self) -> &str {
        self.out.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }
}

/// `curl https://host:port/path` resolved to 127.0.0.1, verified with the
/// test CA.
fn curl(s: &TestServer, host: &str, port: u16, path: &str, extra: &[&str]) -> Curl {
    let ca = s.dir.path().join("tls/ca.pem");
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10", "--http1.1"])
        .arg("--cacert")
        .arg(&ca)
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .args(extra)
        .arg(format!("https://{host}:{port}{path}"))
        .current_dir(s.dir.path())
        .output()
        .expect("run curl (apt-get install curl)");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    // Interim answers (100 Continue) come first: the final one counts.
    while text.starts_with("HTTP/1.1 1")
        && let Some(end) = text.find("\r\n\r\n")
    {
        text = text[end + 4..].to_owned();
    }
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Curl {
        code: out.status.code().unwrap_or(-1),
        status,
        out: text,
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `openssl s_client` with `args`, sending `input` (then waiting for the
/// server to close, at most a few seconds); its stdout and stderr.
fn s_client(port: u16, args: &[&str], input: &[u8]) -> String {
    let mut c = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl (apt-get install openssl)");
    let mut stdin = c.stdin.take().expect("stdin");
    stdin.write_all(input).expect("write to s_client");
    // s_client ends when its input ends (after the server's answer has
    // had time to come).
    std::thread::sleep(Duration::from_millis(700));
    drop(stdin);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if c.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let out = c.wait_with_output().expect("s_client output");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn three_vhosts_on_one_tls_port_each_with_its_certificate() {
    let pki = Pki::new();
    let s = with_certs(&pki, &["a.test", "b.test", "c.test"])
        .file("conf.d/a.yaml", &tls_vhost("a.test", ""))
        .file("conf.d/b.yaml", &tls_vhost("b.test", ""))
        .file("conf.d/c.yaml", &tls_vhost("c.test", ""))
        .start();
    let tls = s.ports[1];
    for name in ["a.test", "b.test", "c.test"] {
        // curl checks that the certificate names the host it asked for.
        let r = curl(&s, name, tls, "/x?y=1", &[]);
        assert_eq!(r.code, 0, "{name}: {}", r.err);
        assert_eq!(r.status, 200, "{}", r.out);
        let b = r.body();
        assert!(b.contains(&format!("vhost={name}")), "{b}");
        assert!(b.contains("scheme=https"), "{b}");
        assert!(b.contains(&format!("tls-sni={name}")), "{b}");
        assert!(b.contains("tls-version=TLSv1.3"), "{b}");
        assert!(b.contains("tls-cipher=TLS_"), "{b}");
        assert!(b.contains("tls-alpn=http/1.1"), "{b}");
    }
    // The plain port still serves them in clear text.
    let r = get(s.ports[0], "/", "b.test");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("scheme=http\n"), "{}", r.text());
    // TLS 1.2 too (ECDHE with AEAD).
    let r = curl(&s, "a.test", tls, "/", &["--tls-max", "1.2"]);
    assert_eq!(r.status, 200, "{}", r.err);
    assert!(r.body().contains("tls-version=TLSv1.2"), "{}", r.body());
    assert!(
        r.body().contains("tls-cipher=TLS_ECDHE_ECDSA_WITH_"),
        "{}",
        r.body()
    );
}

#[test]
fn no_sni_gets_the_default_vhost_and_no_421() {
    let pki = Pki::new();
    let s = with_certs(&pki, &["a.test", "b.test"])
        .file("conf.d/a.yaml", &tls_vhost("a.test", ""))
        .file("conf.d/b.yaml", &tls_vhost("b.test", "default: true\n"))
        .start();
    let out = s_client(
        s.ports[1],
        &["-noservername", "-quiet"],
        b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    );
    // The default vhost's certificate...
    assert!(out.contains("CN = b.test"), "{out}");
    // ...and the Host picks the vhost: a client without SNI is not
    // misdirected.
    assert!(out.contains("HTTP/1.1 200"), "{out}");
    assert!(out.contains("vhost=a.test"), "{out}");
    // An unknown name gets the default's certificate too.
    let out = s_client(
        s.ports[1],
        &["-servername", "nobody.test", "-quiet"],
        b"GET / HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n",
    );
    assert!(out.contains("CN = b.test"), "{out}");
    assert!(out.contains("vhost=b.test"), "{out}");
}

#[test]
fn reject_unknown_sni_refuses_the_handshake() {
    let pki = Pki::new();
    let s = with_certs(&pki, &["a.test", "b.test"])
        .file(
            "conf.d/a.yaml",
            &tls_vhost("a.test", "default: true\n").replace(
                "key: ../tls/a.test.key }",
                "key: ../tls/a.test.key, reject_unknown_sni: true }",
            ),
        )
        .file("conf.d/b.yaml", &tls_vhost("b.test", ""))
        .start();
    let out = s_client(s.ports[1], &["-servername", "nobody.test"], b"");
    assert!(out.contains("unrecognized name"), "{out}");
    assert!(!out.contains("BEGIN CERTIFICATE"), "{out}");
    let out = s_client(s.ports[1], &["-noservername"], b"");
    assert!(out.contains("unrecognized name"), "{out}");
    // Known names are served.
    assert_eq!(curl(&s, "a.test", s.ports[1], "/", &[]).status, 200);
    assert_eq!(curl(&s, "b.test", s.ports[1], "/", &[]).status, 200);
}

#[test]
fn a_host_naming_another_vhost_than_the_sni_is_misdirected() {
    let pki = Pki::new();
    let s = with_certs(&pki, &["a.test", "b.test"])
        .file(
            "conf.d/a.yaml",
            &tls_vhost("a.test", "aliases: [www.a.test]\n"),
        )
        .file("conf.d/b.yaml", &tls_vhost("b.test", ""))
        .start();
    let r = curl(&s, "a.test", s.ports[1], "/", &["-H", "Host: b.test"]);
    assert_eq!(r.status, 421, "{}", r.out);
    assert!(r.body().contains("421 Misdirected Request"), "{}", r.body());
    // An alias of the same vhost is not misdirected.
    let r = curl(&s, "a.test", s.ports[1], "/", &["-H", "Host: www.a.test"]);
    assert_eq!(r.status, 200, "{}", r.out);
    // Nor is the connection's own name with a port.
    let r = curl(&s, "a.test", s.ports[1], "/", &["-H", "Host: A.test:443"]);
    assert_eq!(r.status, 200, "{}", r.out);
}

#[test]
fn https_redirect_keeps_path_and_query_and_hsts_goes_over_https_only() {
    let pki = Pki::new();
    let s = with_certs(&pki, &["a.test"])
        .file(
            "conf.d/a.yaml",
            &tls_vhost(
                "a.test",
                "https_redirect: true\nhsts: { max_age: 30d, include_subdomains: true }\nmax_body: 10\n",
            ),
        )
        .start();
    let mut c = Client::connect(s.ports[0]);
    let r = c.request("GET /a%20b/c?x=1&y=2 HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert_eq!(r.status, 308, "{}", r.head);
    assert_eq!(
        r.header("location"),
        Some(format!("https://a.test:{}/a%20b/c?x=1&y=2", s.ports[1]).as_str())
    );
    assert_eq!(r.header("strict-transport-security"), None);
    // Keep-alive goes on after a redirect without a body.
    let r = c.request("HEAD /z HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert_eq!(r.status, 308);
    // ACME challenges stay on plain HTTP.
    let r = get(s.ports[0], "/.well-known/acme-challenge/tok", "a.test");
    assert_eq!(r.status, 200);
    // Over HTTPS: the answer, with HSTS.
    let r = curl(&s, "a.test", s.ports[1], "/p?q", &[]);
    assert_eq!(r.status, 200, "{}", r.err);
    assert_eq!(
        r.header("strict-transport-security").as_deref(),
        Some("max-age=2592000; includeSubDomains")
    );
    // The core's own pages carry it too.
    let r = curl(
        &s,
        "a.test",
        s.ports[1],
        "/",
        &["--data-binary", "0123456789abcdef"],
    );
    assert_eq!(r.status, 413, "{}", r.out);
    assert!(r.header("strict-transport-security").is_some(), "{}", r.out);
}

#[test]
fn ecdsa_and_rsa_certificates_are_picked_by_the_client_offer() {
    let pki = Pki::new();
    let ec = pki.server(&["a.test"], false);
    let rsa = pki.server(&["a.test"], true);
    let s = Fixture::new()
        .ports(2)
        .file("tls/ca.pem", &pki.ca_pem())
        .file("tls/ec.pem", &ec.cert)
        .file("tls/ec.key", &ec.key)
        .file("tls/rsa.pem", &rsa.cert)
        .file("tls/rsa.key", &rsa.key)
        .file("www/.keep", "")
        .file(
            "conf.d/a.yaml",
            "vhost: a.test\nip: 127.0.0.1\nport: {port0}\ntls_port: {port1}\n\
             tls:\n  certs:\n    - { cert: ../tls/rsa.pem, key: ../tls/rsa.key }\n    - { cert: ../tls/ec.pem, key: ../tls/ec.key }\n\
             document_root: ../www\nroutes:\n  - path: /\n    handler: echo\n",
        )
        .start();
    let port = s.ports[1];
    let rsa_only = s_client(
        port,
        &[
            "-servername",
            "a.test",
            "-sigalgs",
            "RSA-PSS+SHA256:RSA+SHA256",
        ],
        b"",
    );
    assert!(
        rsa_only.contains("Peer signature type: RSA-PSS"),
        "{rsa_only}"
    );
    let ec_only = s_client(
        port,
        &["-servername", "a.test", "-sigalgs", "ECDSA+SHA256"],
        b"",
    );
    assert!(ec_only.contains("Peer signature type: ECDSA"), "{ec_only}");
    // A client that takes both gets the ECDSA one (the faster handshake),
    // though the RSA pair is listed first.
    let both = s_client(port, &["-servername", "a.test"], b"");
    assert!(both.contains("Peer signature type: ECDSA"), "{both}");
}

#[test]
fn mutual_tls_required_and_optional() {
    let pki = Pki::new();
    let alice = pki.client("alice");
    let other = Pki::new().client("mallory");
    let s = with_certs(&pki, &["req.test", "opt.test"])
        .file("tls/alice.pem", &alice.cert)
        .file("tls/alice.key", &alice.key)
        .file("tls/mallory.pem", &other.cert)
        .file("tls/mallory.key", &other.key)
        .file(
            "conf.d/req.yaml",
            &tls_vhost("req.test", "").replace(
                "key: ../tls/req.test.key }",
                "key: ../tls/req.test.key, client_ca: ../tls/ca.pem, client_auth: required }",
            ),
        )
        .file(
            "conf.d/opt.yaml",
            &tls_vhost("opt.test", "").replace(
                "key: ../tls/opt.test.key }",
                "key: ../tls/opt.test.key, client_ca: ../tls/ca.pem, client_auth: optional }",
            ),
        )
        .start();
    let port = s.ports[1];
    let with_alice = ["--cert", "tls/alice.pem", "--key", "tls/alice.key"];
    let with_mallory = ["--cert", "tls/mallory.pem", "--key", "tls/mallory.key"];
    // Required: no certificate, or one from another CA, ends the handshake.
    let r = curl(&s, "req.test", port, "/", &[]);
    assert_ne!(r.code, 0, "{}", r.out);
    assert_eq!(r.status, 0);
    let r = curl(&s, "req.test", port, "/", &with_mallory);
    assert_ne!(r.code, 0, "{}", r.out);
    let r = curl(&s, "req.test", port, "/", &with_alice);
    assert_eq!(r.status, 200, "{}", r.err);
    assert!(r.body().contains("client-subject=CN=alice"), "{}", r.body());
    assert!(r.body().contains("client-verify=SUCCESS"), "{}", r.body());
    // Optional: without one the request goes on and says so.
    let r = curl(&s, "opt.test", port, "/", &[]);
    assert_eq!(r.status, 200, "{}", r.err);
    assert!(!r.body().contains("client-subject"), "{}", r.body());
    let r = curl(&s, "opt.test", port, "/", &with_alice);
    assert_eq!(r.status, 200, "{}", r.err);
    assert!(r.body().contains("client-subject=CN=alice"), "{}", r.body());
    // An untrusted certificate is refused even where it is optional.
    let r = curl(&s, "opt.test", port, "/", &with_mallory);
    assert_ne!(r.code, 0, "{}", r.out);
    // A Host naming the required vhost over the optional one's connection
    // cannot skip its certificate check.
    let r = curl(&s, "opt.test", port, "/", &["-H", "Host: req.test"]);
    assert_eq!(r.status, 421, "{}", r.out);
}

#[test]
fn plain_http_to_the_tls_port_gets_a_clear_400() {
    let pki = Pki::new();
    let s = with_certs(&pki, &["a.test"])
        .file("conf.d/a.yaml", &tls_vhost("a.test", ""))
        .start();
    let out = raw(s.ports[1], b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    assert!(
        out.contains("plain HTTP request was sent to the HTTPS port"),
        "{out}"
    );
    // Garbage ends its own connection only.
    let out = raw(s.ports[1], &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]);
    assert!(!out.contains("HTTP/1.1"), "{out}");
    assert_eq!(curl(&s, "a.test", s.ports[1], "/", &[]).status, 200);
}

#[test]
fn a_stalled_handshake_is_closed_at_header_timeout() {
    let pki = Pki::new();
    let s = with_certs(&pki, &["a.test"])
        .file("conf.d/server.yaml", "header_timeout: 1s\n")
        .file("conf.d/a.yaml", &tls_vhost("a.test", ""))
        .start();
    let mut c = TcpStream::connect(("127.0.0.1", s.ports[1])).expect("connect");
    // The start of a ClientHello, and then nothing.
    c.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .expect("write");
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let t = std::time::Instant::now();
    let mut b = [0u8; 64];
    let n = c.read(&mut b).unwrap_or(0);
    assert_eq!(n, 0, "the connection should close");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert_eq!(curl(&s, "a.test", s.ports[1], "/", &[]).status, 200);
}

#[test]
fn files_over_tls_arrive_whole() {
    let pki = Pki::new();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let f = with_certs(&pki, &["a.test"]).file(
        "conf.d/a.yaml",
        "vhost: a.test\nip: 127.0.0.1\nport: {port0}\ntls_port: {port1}\n\
         tls: { cert: ../tls/a.test.pem, key: ../tls/a.test.key }\ndocument_root: ../www\n",
    );
    let (dir, conf, plugins, ports) = f.write();
    std::fs::write(dir.path().join("www/big.bin"), &data).expect("write file");
    let s = TestServer::spawn(dir, &conf, &plugins, ports, &[]);
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(s.dir.path().join("tls/ca.pem"))
        .arg("--resolve")
        .arg(format!("a.test:{}:127.0.0.1", s.ports[1]))
        .arg(format!("https://a.test:{}/big.bin", s.ports[1]))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == data, "{} bytes differ", out.stdout.len());
    // A range of it.
    let r = curl(
        &s,
        "a.test",
        s.ports[1],
        "/big.bin",
        &["-r", "1000000-1000009"],
    );
    assert_eq!(r.status, 206);
}

#[test]
fn a_trusted_tls_terminating_proxy_sets_the_scheme() {
    let s = Fixture::new()
        .file("conf.d/server.yaml", "trusted_proxies: [127.0.0.1]\n")
        .file("conf.d/a.yaml", &echo_vhost("a.test", "{port0}", ""))
        .file("www/.keep", "")
        .start();
    let mut c = Client::connect(s.port());
    let r = c.request("GET / HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-Proto: https\r\n\r\n");
    assert!(r.text().contains("scheme=https"), "{}", r.text());
    let r =
        c.request("GET / HTTP/1.1\r\nHost: a.test\r\nForwarded: for=1.2.3.4;proto=https\r\n\r\n");
    assert!(r.text().contains("scheme=https"), "{}", r.text());
    let r = c.request("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert!(r.text().contains("scheme=http\n"), "{}", r.text());
}

#[test]
fn an_untrusted_peer_cannot_claim_https() {
    let s = Fixture::new()
        .file("conf.d/a.yaml", &echo_vhost("a.test", "{port0}", ""))
        .file("www/.keep", "")
        .start();
    let mut c = Client::connect(s.port());
    let r = c.request("GET / HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-Proto: https\r\n\r\n");
    assert!(r.text().contains("scheme=http\n"), "{}", r.text());
}

#[test]
fn https_redirect_does_not_loop_behind_a_trusted_proxy() {
    let pki = Pki::new();
    let s = with_certs(&pki, &["a.test"])
        .file("conf.d/server.yaml", "trusted_proxies: [127.0.0.1]\n")
        .file(
            "conf.d/a.yaml",
            &tls_vhost("a.test", "https_redirect: true\n"),
        )
        .start();
    let mut c = Client::connect(s.ports[0]);
    let r = c.request("GET /x HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-Proto: https\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.head);
    let r = c.request("GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert_eq!(r.status, 308, "{}", r.head);
}

#[test]
fn check_reports_bad_tls_files_naming_them() {
    let pki = Pki::new();
    let a = pki.server(&["a.test"], false);
    let b = pki.server(&["b.test"], false);
    let vhost = |name: &str, cert: &str, key: &str| {
        format!(
            "vhost: {name}\nip: 127.0.0.1\nport: {{port0}}\ntls_port: {{port1}}\n\
             tls: {{ cert: ../tls/{cert}, key: ../tls/{key} }}\ndocument_root: ../www\n"
        )
    };
    // A key that is not the certificate's: an error naming both.
    let (code, _, err) = Fixture::new()
        .ports(2)
        .file("tls/a.pem", &a.cert)
        .file("tls/b.key", &b.key)
        .file("conf.d/a.yaml", &vhost("a.test", "a.pem", "b.key"))
        .check();
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("b.key: the key does not match the certificate"),
        "{err}"
    );
    assert!(err.contains("a.yaml:"), "{err}");
    // A file that is not PEM.
    let (code, _, err) = Fixture::new()
        .ports(2)
        .file("tls/a.pem", "not a certificate\n")
        .file("tls/a.key", &a.key)
        .file("conf.d/a.yaml", &vhost("a.test", "a.pem", "a.key"))
        .check();
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("a.pem: no certificate in it"), "{err}");
    // Expired, names not covered, a key others may read: warnings only.
    let old = pki.expired(&["a.test"], 3);
    let (code, _, err) = Fixture::new()
        .ports(2)
        .file("tls/old.pem", &old.cert)
        .file("tls/old.key", &old.key)
        .file(
            "conf.d/a.yaml",
            &format!(
                "{}aliases: [www.a.test]\n",
                vhost("a.test", "old.pem", "old.key")
            ),
        )
        .check();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("old.pem: the certificate expired on"), "{err}");
    assert!(
        err.contains("old.pem: the certificate does not cover www.a.test"),
        "{err}"
    );
    assert!(
        err.contains("old.key: the private key is readable by every user"),
        "{err}"
    );
    // A missing file.
    let (code, _, err) = Fixture::new()
        .ports(2)
        .file("conf.d/a.yaml", &vhost("a.test", "none.pem", "none.key"))
        .check();
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("none.pem"), "{err}");
}

#[test]
fn check_warns_when_the_serving_user_could_not_reread_a_key() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    let a = pki.server(&["a.test"], false);
    // The key only its owner (whoever runs the test) may read, and the
    // server serves as nobody: a reload after the drop would fail.
    let keys = tempfile::tempdir().expect("tempdir");
    let key = keys.path().join("a.key");
    std::fs::write(&key, &a.key).expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let conf = |user: &str| {
        Fixture::new()
            .ports(2)
            .file("tls/a.pem", &a.cert)
            .file("conf.d/server.yaml", &format!("user: {user}\n"))
            .file(
                "conf.d/a.yaml",
                &format!(
                    "vhost: a.test\nip: 127.0.0.1\nport: {{port0}}\ntls_port: {{port1}}\n\
                     tls: {{ cert: ../tls/a.pem, key: {} }}\ndocument_root: ../www\n",
                    key.display()
                ),
            )
            .check()
    };
    let (code, _, err) = conf("nobody");
    assert_eq!(code, 0, "a warning, not an error: {err}");
    assert!(
        err.contains("a.key: the serving user") && err.contains("cannot read the private key"),
        "{err}"
    );
    assert!(!err.contains("readable by every user"), "{err}");
    // Readable by the group the server serves as: no warning.
    // (the key's group is the runner's own, which `id -gn` names)
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let out = std::process::Command::new("id")
        .arg("-gn")
        .output()
        .expect("id");
    let group = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (code, _, err) = conf(&format!("nobody\ngroup: \"{group}\""));
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("cannot read the private key"), "{err}");
}

#[test]
fn check_reports_tls_settings_at_their_line() {
    let (code, _, err) = Fixture::new()
        .ports(2)
        .file(
            "conf.d/a.yaml",
            "vhost: a.test\nip: 127.0.0.1\nport: {port0}\ntls_port: {port1}\ndocument_root: ../www\n",
        )
        .check();
    assert_ne!(code, 0);
    assert!(err.contains("a.yaml:4"), "{err}");
    assert!(err.contains("tls_port: needs `tls`"), "{err}");
    let (code, _, err) = Fixture::new()
        .ports(2)
        .file(
            "conf.d/a.yaml",
            "vhost: a.test\nip: 127.0.0.1\nport: {port0}\nhttps_redirect: true\ndocument_root: ../www\n",
        )
        .check();
    assert_ne!(code, 0);
    assert!(err.contains("a.yaml:4"), "{err}");
    assert!(err.contains("https_redirect: needs `tls`"), "{err}");
    let (code, _, err) = Fixture::new()
        .file("tls/a.pem", "")
        .file(
            "conf.d/a.yaml",
            "vhost: a.test\nip: 127.0.0.1\nport: {port0}\ntls: { cert: ../tls/a.pem, key: ../tls/a.pem, min_version: \"1.1\" }\ndocument_root: ../www\n",
        )
        .check();
    assert_ne!(code, 0);
    assert!(err.contains("min_version"), "{err}");
}

#[test]
fn session_tickets_resume() {
    let pki = Pki::new();
    let s = with_certs(&pki, &["a.test"])
        .file("conf.d/a.yaml", &tls_vhost("a.test", ""))
        .start();
    let sess = s.dir.path().join("sess.pem");
    let sess = sess.to_str().expect("utf-8");
    let req = b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
    let first = s_client(
        s.ports[1],
        &["-servername", "a.test", "-sess_out", sess],
        req,
    );
    assert!(first.contains("New, TLSv1.3"), "{first}");
    let again = s_client(
        s.ports[1],
        &["-servername", "a.test", "-sess_in", sess],
        req,
    );
    assert!(again.contains("Reused, TLSv1.3"), "{again}");
    assert!(again.contains("tls-resumed=true"), "{again}");
    // TLS 1.2 resumes too.
    let sess12 = format!("{sess}.12");
    let first = s_client(
        s.ports[1],
        &["-servername", "a.test", "-tls1_2", "-sess_out", &sess12],
        req,
    );
    assert!(first.contains("New, TLSv1.2"), "{first}");
    let again = s_client(
        s.ports[1],
        &["-servername", "a.test", "-tls1_2", "-sess_in", &sess12],
        req,
    );
    assert!(again.contains("Reused, TLSv1.2"), "{again}");
}

#[test]
fn the_hybrid_post_quantum_group_is_negotiated() {
    use std::sync::Arc;
    let pki = Pki::new();
    let s = with_certs(&pki, &["a.test"])
        .file("conf.d/a.yaml", &tls_vhost("a.test", ""))
        .start();
    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls::pki_types::CertificateDer::from(pki.ca.der().to_vec());
    roots.add(ca).expect("root");
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("a.test").expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).expect("client");
    let mut sock = TcpStream::connect(("127.0.0.1", s.ports[1])).expect("connect");
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let group = conn.negotiated_key_exchange_group().expect("a group");
    assert_eq!(format!("{:?}", group.name()), "X25519MLKEM768");
}

#[test]
fn cgi_scripts_see_https_and_the_tls_variables() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    let f = with_certs(&pki, &["a.test"]).file(
        "conf.d/a.yaml",
        "vhost: a.test\nip: 127.0.0.1\nport: {port0}\ntls_port: {port1}\n\
         tls: { cert: ../tls/a.test.pem, key: ../tls/a.test.key }\n\
         document_root: ../www\ncgi_bin: ../cgi-bin\nroutes:\n  - path: /cgi-bin/\n    handler: cgi\n    options: { run_as_root: true }\n",
    ).file(
        "cgi-bin/env.sh",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\n\
         echo \"https=${HTTPS-unset}\"\necho \"scheme=$REQUEST_SCHEME\"\necho \"port=$SERVER_PORT\"\n\
         echo \"proto=${SSL_PROTOCOL-unset}\"\necho \"cipher=${SSL_CIPHER-unset}\"\n\
         echo \"sni=${SSL_TLS_SNI-unset}\"\necho \"verify=${SSL_CLIENT_VERIFY-unset}\"\n",
    );
    let (dir, conf, plugins, ports) = f.write();
    let script = dir.path().join("cgi-bin/env.sh");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let s = TestServer::spawn(dir, &conf, &plugins, ports, &[]);
    let r = curl(&s, "a.test", s.ports[1], "/cgi-bin/env.sh", &[]);
    assert_eq!(r.status, 200, "{}{}", r.out, r.err);
    let b = r.body();
    assert!(b.contains("https=on\n"), "{b}");
    assert!(b.contains("scheme=https\n"), "{b}");
    assert!(b.contains(&format!("port={}\n", s.ports[1])), "{b}");
    assert!(b.contains("proto=TLSv1.3\n"), "{b}");
    assert!(b.contains("cipher=TLS_"), "{b}");
    assert!(b.contains("sni=a.test\n"), "{b}");
    assert!(b.contains("verify=NONE\n"), "{b}");
    // Over plain HTTP: none of them.
    let r = get(s.ports[0], "/cgi-bin/env.sh", "a.test");
    let b = r.text();
    assert!(b.contains("https=unset\n"), "{b}");
    assert!(b.contains("proto=unset\n"), "{b}");
    assert!(b.contains(&format!("port={}\n", s.ports[0])), "{b}");
}

#[test]
fn the_proxy_tells_the_upstream_the_request_came_over_https() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let got = seen.clone();
    let up = crate::proxy::scripted(move |mut s| {
        loop {
            let head = crate::proxy::read_head(&mut s);
            if head.is_empty() {
                return;
            }
            got.lock().expect("lock").push(head);
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_err()
            {
                return;
            }
        }
    });
    let pki = Pki::new();
    let s = with_certs(&pki, &["a.test"])
        .file(
            "conf.d/a.yaml",
            &format!(
                "vhost: a.test\nip: 127.0.0.1\nport: {{port0}}\ntls_port: {{port1}}\n\
                 tls: {{ cert: ../tls/a.test.pem, key: ../tls/a.test.key }}\n\
                 document_root: ../www\nroutes:\n  - path: /\n    handler: proxy\n    options: {{ upstreams: [\"127.0.0.1:{up}\"] }}\n"
            ),
        )
        .start();
    let r = curl(&s, "a.test", s.ports[1], "/over-tls", &[]);
    assert_eq!(r.status, 200, "{}{}", r.out, r.err);
    // A client's own claim is replaced over plain HTTP (it is not trusted).
    let mut c = Client::connect(s.ports[0]);
    let r = c.request("GET /plain HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-Proto: https\r\n\r\n");
    assert_eq!(r.status, 200);
    let heads = seen.lock().expect("lock").clone();
    let tls = heads
        .iter()
        .find(|h| h.contains("/over-tls"))
        .expect("TLS request");
    assert!(tls.contains("X-Forwarded-Proto: https\r\n"), "{tls}");
    let plain = heads
        .iter()
        .find(|h| h.contains("/plain"))
        .expect("plain request");
    assert!(plain.contains("X-Forwarded-Proto: http\r\n"), "{plain}");
}

#[test]
fn the_json_access_log_has_the_tls_version_and_cipher() {
    let pki = Pki::new();
    let s = with_certs(&pki, &["a.test"])
        .file("logs/.keep", "")
        .file(
            "conf.d/a.yaml",
            "vhost: a.test\nip: 127.0.0.1\nport: {port0}\ntls_port: {port1}\n\
             tls: { cert: ../tls/a.test.pem, key: ../tls/a.test.key }\n\
             document_root: ../www\nlog: ../logs\nloggers:\n  - handler: logging\n    options: { format: json }\n\
             routes:\n  - path: /\n    handler: echo\n",
        )
        .start();
    assert_eq!(curl(&s, "a.test", s.ports[1], "/tls", &[]).status, 200);
    assert_eq!(get(s.ports[0], "/plain", "a.test").status, 200);
    let path = s.dir.path().join("logs/access.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut text = String::new();
    while std::time::Instant::now() < deadline {
        text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().count() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let tls = lines
        .iter()
        .find(|v| v["target"] == "/tls")
        .expect("TLS line");
    assert_eq!(tls["scheme"], "https");
    assert_eq!(tls["tls_version"], "TLSv1.3");
    assert!(
        tls["tls_cipher"].as_str().unwrap_or("").starts_with("TLS_"),
        "{tls}"
    );
    assert_eq!(tls["tls_resumed"], false);
    let plain = lines
        .iter()
        .find(|v| v["target"] == "/plain")
        .expect("plain line");
    assert_eq!(plain["scheme"], "http");
    assert!(plain["tls_version"].is_null(), "{plain}");
}

#[test]
fn two_instances_sharing_a_ticket_key_file_resume_each_others_sessions() {
    let pki = Pki::new();
    let key: Vec<u8> = (0..80u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let start = || {
        let f = with_certs(&pki, &["a.test"])
            .file("conf.d/server.yaml", "ticket_key_file: ../ticket.key\n")
            .file("conf.d/a.yaml", &tls_vhost("a.test", ""));
        let (dir, conf, plugins, ports) = f.write();
        std::fs::write(dir.path().join("ticket.key"), &key).expect("key file");
        TestServer::spawn(dir, &conf, &plugins, ports, &[])
    };
    let (one, two) = (start(), start());
    let sess = one.dir.path().join("sess.pem");
    let sess = sess.to_str().expect("utf-8");
    let req = b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
    let first = s_client(
        one.ports[1],
        &["-servername", "a.test", "-sess_out", sess],
        req,
    );
    assert!(first.contains("New, TLSv1.3"), "{first}");
    let other = s_client(
        two.ports[1],
        &["-servername", "a.test", "-sess_in", sess],
        req,
    );
    assert!(other.contains("Reused, TLSv1.3"), "{other}");
    // An instance with its own keys cannot.
    let alone = with_certs(&pki, &["a.test"])
        .file("conf.d/a.yaml", &tls_vhost("a.test", ""))
        .start();
    let third = s_client(
        alone.ports[1],
        &["-servername", "a.test", "-sess_in", sess],
        req,
    );
    assert!(third.contains("New, TLSv1.3"), "{third}");
}

#[test]
fn a_renewed_certificate_is_swapped_by_sighup_while_wrk_runs_over_https() {
    let pki = Pki::new();
    let s = with_certs(&pki, &["a.test"])
        .file("conf.d/a.yaml", &tls_vhost("a.test", ""))
        .start();
    let port = s.ports[1];
    let serial_of = || {
        let out = s_client(port, &["-servername", "a.test"], b"");
        let pem_start = out
            .find("-----BEGIN CERTIFICATE-----")
            .expect("a certificate");
        let pem_end = out.find("-----END CERTIFICATE-----").expect("its end") + 25;
        let pem = &out[pem_start..pem_end];
        let mut c = Command::new("openssl")
            .args(["x509", "-noout", "-serial"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("openssl x509");
        c.stdin
            .take()
            .expect("stdin")
            .write_all(pem.as_bytes())
            .expect("pem");
        String::from_utf8_lossy(&c.wait_with_output().expect("serial").stdout).into_owned()
    };
    let before = serial_of();
    // wrk over HTTPS for 4 s, reconnecting for part of it.
    let wrk = Command::new("wrk")
        .args(["-t1", "-c8", "-d4s", "--timeout", "5s"])
        .arg(format!("https://127.0.0.1:{port}/"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run wrk (apt-get install wrk)");
    std::thread::sleep(Duration::from_millis(1000));
    let renewed = pki.server(&["a.test"], false);
    std::fs::write(s.dir.path().join("tls/a.test.pem.new"), &renewed.cert).expect("write");
    std::fs::write(s.dir.path().join("tls/a.test.key.new"), &renewed.key).expect("write");
    std::fs::rename(
        s.dir.path().join("tls/a.test.key.new"),
        s.dir.path().join("tls/a.test.key"),
    )
    .expect("rename");
    std::fs::rename(
        s.dir.path().join("tls/a.test.pem.new"),
        s.dir.path().join("tls/a.test.pem"),
    )
    .expect("rename");
    s.signal(libc::SIGHUP);
    assert!(
        s.log.wait_for("reloaded", Duration::from_secs(5)),
        "{}",
        s.log.text()
    );
    let out = wrk.wait_with_output().expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("requests in"), "{text}");
    assert!(!text.contains("Socket errors"), "{text}");
    assert!(!text.contains("Non-2xx"), "{text}");
    let after = serial_of();
    assert_ne!(before, after, "the new certificate is served");
    // A bad file keeps the running certificate, and the log names it.
    std::fs::write(s.dir.path().join("tls/a.test.pem"), "garbage\n").expect("write");
    s.signal(libc::SIGHUP);
    assert!(
        s.log.wait_for("a.test.pem", Duration::from_secs(5)),
        "{}",
        s.log.text()
    );
    assert_eq!(serial_of(), after);
    assert_eq!(curl(&s, "a.test", port, "/", &[]).status, 200);
}

/// An HTTPS upstream: tamada serving echo on TLS only, with a certificate
/// for `a.test` and 127.0.0.1; `extra_tls` goes into its `tls:` block.
fn https_upstream(pki: &Pki, extra_tls: &str) -> TestServer {
    let pair = pki.server(&["a.test", "127.0.0.1"], false);
    Fixture::new()
        .file("tls/ca.pem", &pki.ca_pem())
        .file("tls/up.pem", &pair.cert)
        .file("tls/up.key", &pair.key)
        .file("www/.keep", "")
        .file(
            "conf.d/up.yaml",
            &format!(
                "vhost: a.test\nip: 127.0.0.1\ntls_port: {{port0}}\n\
                 tls: {{ cert: ../tls/up.pem, key: ../tls/up.key{extra_tls} }}\n\
                 document_root: ../www\nroutes:\n  - path: /\n    handler: echo\n    options: {{ tag: upstream }}\n"
            ),
        )
        .start()
}

/// A plain front vhost on `{port0}` proxying `/` with these options.
fn front(pki: &Pki, client: Option<&Pair>, options: &str) -> TestServer {
    let mut f = Fixture::new()
        .file("tls/ca.pem", &pki.ca_pem())
        .file("logs/.keep", "")
        .file("www/.keep", "")
        .file(
            "conf.d/front.yaml",
            &format!(
                "vhost: front\nip: 127.0.0.1\nport: {{port0}}\ndocument_root: ../www\nlog: ../logs\n\
                 routes:\n  - path: /\n    handler: proxy\n    options: {options}\n"
            ),
        );
    if let Some(c) = client {
        f = f
            .file("tls/client.pem", &c.cert)
            .file("tls/client.key", &c.key);
    }
    f.start()
}

#[test]
fn https_upstreams_are_verified_and_named() {
    let pki = Pki::new();
    let up = https_upstream(&pki, "");
    let port = up.ports[0];
    // Verified against the route's CA, by address (an IP SAN).
    let s = front(
        &pki,
        None,
        &format!("{{ upstreams: [\"https://127.0.0.1:{port}\"], tls: {{ ca: ../tls/ca.pem }} }}"),
    );
    let r = get(s.port(), "/x?y=1", "front");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.log.text());
    assert!(r.text().contains("tag=upstream"), "{}", r.text());
    assert!(r.text().contains("scheme=https"), "{}", r.text());
    assert!(r.text().contains("target=/x?y=1"), "{}", r.text());
    // Kept alive: the next request reuses the TLS connection.
    let mut c = Client::connect(s.port());
    for i in 0..3 {
        let r = c.request(&format!("GET /k{i} HTTP/1.1\r\nHost: front\r\n\r\n"));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // A POST body of 2 MB goes through whole.
    let body = vec![b'z'; 2_000_000];
    let mut c = Client::connect(s.port());
    c.send(
        format!(
            "POST /up HTTP/1.1\r\nHost: front\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.send(&body);
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("body-len=2000000"), "{}", r.text());
    // By name: SNI sent, the certificate checked for it.
    let s = front(
        &pki,
        None,
        &format!(
            "{{ upstreams: [\"https://127.0.0.1:{port}\"], tls: {{ ca: ../tls/ca.pem, server_name: a.test }} }}"
        ),
    );
    let r = get(s.port(), "/", "front");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("tls-sni=a.test"), "{}", r.text());
}

#[test]
fn an_https_upstream_with_a_wrong_name_or_an_unknown_ca_is_refused() {
    let pki = Pki::new();
    let up = https_upstream(&pki, "");
    let port = up.ports[0];
    let s = front(
        &pki,
        None,
        &format!(
            "{{ upstreams: [\"https://127.0.0.1:{port}\"], tls: {{ ca: ../tls/ca.pem, server_name: wrong.test }} }}"
        ),
    );
    let r = get(s.port(), "/", "front");
    assert_eq!(r.status, 502, "{}", r.text());
    let log = crate::proxy::error_log(&s, "certificate");
    assert!(log.contains("https://127.0.0.1"), "{log}");
    assert!(log.contains("certificate"), "{log}");
    // The system's roots do not know the test CA.
    let s = front(
        &pki,
        None,
        &format!("{{ upstreams: [\"https://127.0.0.1:{port}\"] }}"),
    );
    let r = get(s.port(), "/", "front");
    assert_eq!(r.status, 502, "{}", r.text());
    let log = crate::proxy::error_log(&s, "UnknownIssuer");
    assert!(log.contains("UnknownIssuer"), "{log}");
    // Unless checking is off, which -t warns about.
    let opts = format!(
        "{{ upstreams: [\"https://127.0.0.1:{port}\"], tls: {{ insecure_skip_verify: true }} }}"
    );
    let s = front(&pki, None, &opts);
    assert_eq!(get(s.port(), "/", "front").status, 200);
    let (code, _, err) = Fixture::new()
        .file("www/.keep", "")
        .file(
            "conf.d/front.yaml",
            &format!(
                "vhost: front\nip: 127.0.0.1\nport: {{port0}}\ndocument_root: ../www\n\
                 routes:\n  - path: /\n    handler: proxy\n    options: {opts}\n"
            ),
        )
        .check();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("insecure_skip_verify"), "{err}");
}

#[test]
fn a_client_certificate_goes_to_an_upstream_that_asks_for_one() {
    let pki = Pki::new();
    let up = https_upstream(&pki, ", client_ca: ../tls/ca.pem");
    let port = up.ports[0];
    let client = pki.client("front-proxy");
    let without = front(
        &pki,
        None,
        &format!("{{ upstreams: [\"https://127.0.0.1:{port}\"], tls: {{ ca: ../tls/ca.pem }} }}"),
    );
    assert_eq!(get(without.port(), "/", "front").status, 502);
    let with = front(
        &pki,
        Some(&client),
        &format!(
            "{{ upstreams: [\"https://127.0.0.1:{port}\"], tls: {{ ca: ../tls/ca.pem, cert: ../tls/client.pem, key: ../tls/client.key }} }}"
        ),
    );
    let r = get(with.port(), "/", "front");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("client-subject=CN=front-proxy"),
        "{}",
        r.text()
    );
}

#[test]
fn the_clients_certificate_can_go_upstream_in_a_header() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let got = seen.clone();
    let up = crate::proxy::scripted(move |mut s| {
        loop {
            let head = crate::proxy::read_head(&mut s);
            if head.is_empty() {
                return;
            }
            got.lock().expect("lock").push(head);
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_err()
            {
                return;
            }
        }
    });
    let pki = Pki::new();
    let alice = pki.client("alice");
    let s = with_certs(&pki, &["a.test"])
        .file("tls/alice.pem", &alice.cert)
        .file("tls/alice.key", &alice.key)
        .file(
            "conf.d/a.yaml",
            &format!(
                "vhost: a.test\nip: 127.0.0.1\nport: {{port0}}\ntls_port: {{port1}}\n\
                 tls: {{ cert: ../tls/a.test.pem, key: ../tls/a.test.key, client_ca: ../tls/ca.pem, client_auth: optional }}\n\
                 document_root: ../www\nroutes:\n  - path: /\n    handler: proxy\n    options: {{ upstreams: [\"127.0.0.1:{up}\"], client_cert_header: X-Client-Cert }}\n"
            ),
        )
        .start();
    let r = curl(
        &s,
        "a.test",
        s.ports[1],
        "/with",
        &["--cert", "tls/alice.pem", "--key", "tls/alice.key"],
    );
    assert_eq!(r.status, 200, "{}{}", r.out, r.err);
    // A client cannot send its own.
    let r = curl(
        &s,
        "a.test",
        s.ports[1],
        "/forged",
        &["-H", "X-Client-Cert: forged"],
    );
    assert_eq!(r.status, 200, "{}{}", r.out, r.err);
    let heads = seen.lock().expect("lock").clone();
    let with = heads.iter().find(|h| h.contains("/with")).expect("request");
    assert!(
        with.contains("X-Client-Cert: -----BEGIN%20CERTIFICATE-----%0A"),
        "{with}"
    );
    let forged = heads
        .iter()
        .find(|h| h.contains("/forged"))
        .expect("request");
    assert!(
        !forged.to_ascii_lowercase().contains("x-client-cert"),
        "{forged}"
    );
}

#[test]
fn uploads_and_pipelined_requests_over_tls() {
    let pki = Pki::new();
    let s = with_certs(&pki, &["a.test"])
        .file("conf.d/a.yaml", &tls_vhost("a.test", "max_body: 64MiB\n"))
        .start();
    // 5 MB up, through the records rustls cannot take at once.
    let body: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(s.dir.path().join("up.bin"), &body).expect("write");
    let sum: u64 = body.iter().map(|&b| b as u64).sum();
    for extra in [
        &["--data-binary", "@up.bin"][..],
        &["-T", "up.bin", "-H", "Transfer-Encoding: chunked"][..],
    ] {
        let r = curl(&s, "a.test", s.ports[1], "/up", extra);
        assert_eq!(r.status, 200, "{}{}", r.out, r.err);
        assert!(r.body().contains("body-len=5000000"), "{}", r.body());
        assert!(
            r.body().contains(&format!("body-sum={sum}")),
            "{}",
            r.body()
        );
    }
    // Ten requests in one write, answered in order on one connection.
    let mut reqs = String::new();
    for i in 0..10 {
        reqs.push_str(&format!("GET /p{i} HTTP/1.1\r\nHost: a.test\r\n\r\n"));
    }
    reqs.push_str("GET /last HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
    let out = s_client(
        s.ports[1],
        &["-servername", "a.test", "-quiet"],
        reqs.as_bytes(),
    );
    let mut at = 0;
    for i in 0..10 {
        let p = out[at..]
            .find(&format!("path=/p{i}\n"))
            .unwrap_or_else(|| panic!("/p{i} missing in order:\n{out}"));
        at += p;
    }
    assert!(out[at..].contains("path=/last"), "{out}");
}

#[test]
fn the_frozen_sdk_1_2_fixture_keeps_every_1_2_ability() {
    // testplugins/frozen-v1_2: written against the vendored 1.2 tables by
    // hand; loaded beside the 1.0 and 1.1 fixtures (Plugins::Standard).
    let pki = Pki::new();
    let s = with_certs(&pki, &["f12.test"])
        .file(
            "conf.d/f12.yaml",
            "vhost: f12.test\nip: 127.0.0.1\nport: {port0}\ntls_port: {port1}\n\
             tls: { cert: ../tls/f12.test.pem, key: ../tls/f12.test.key }\n\
             document_root: ../www\n\
             access: [{ path: /, handler: frozen12 }]\n\
             filters: [{ handler: frozen12 }]\n\
             routes:\n  - path: /\n    handler: frozen12\n",
        )
        .start();
    let (plain, tls) = (s.ports[0], s.ports[1]);
    // The TLS view (over HTTPS), through the filter (upper-cased).
    let r = curl(&s, "f12.test", tls, "/tls", &[]);
    assert_eq!(r.status, 200, "{}{}", r.out, r.err);
    assert!(
        r.body().starts_with("FROZEN 1.2 TLS: TLSV1.3 TLS_"),
        "{}",
        r.body()
    );
    assert!(r.body().contains("SNI=F12.TEST"), "{}", r.body());
    assert_eq!(r.header("x-frozen12").as_deref(), Some("filtered"));
    // Over plain HTTP the view says so.
    let r = get(plain, "/tls", "f12.test");
    assert_eq!(r.text(), "FROZEN 1.2 TLS: NO TLS\n");
    // The access phase: answer, rewrite, a user, a timer.
    let r = get(plain, "/deny", "f12.test");
    assert_eq!(
        (r.status, r.text().as_str()),
        (403, "frozen 1.2 access: denied\n")
    );
    assert_eq!(
        r.header("x-frozen12"),
        Some("filtered"),
        "filters see access answers"
    );
    let r = get(plain, "/old", "f12.test");
    let sdk = format!("SDK 1.{}", tamada_sdk::abi::SDK_MINOR);
    assert_eq!(
        r.text(),
        format!("FROZEN 1.2 PLUGIN: /NEW SERVER {sdk} REQUEST-EDITED TRUE\n")
    );
    assert_eq!(
        get(plain, "/user", "f12.test").text(),
        "FROZEN 1.2 USER: ADA (FIXTURE)\n"
    );
    let t = std::time::Instant::now();
    assert_eq!(get(plain, "/slow", "f12.test").status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(140),
        "{:?}",
        t.elapsed()
    );
    // Blocking work offloaded while the request waits on its loop.
    assert_eq!(
        get(plain, "/offload", "f12.test").text(),
        "FROZEN 1.2 OFFLOAD: DONE AFTER THE WAIT\n"
    );
    // Shared bytes, recognised: sent whole with their length.
    let r = get(plain, "/shared", "f12.test");
    assert_eq!(r.header("content-length"), Some("24"), "{}", r.head);
    assert_eq!(r.body, b"frozen 1.2 shared bytes\n");
    // Listed as a 1.2 plugin.
    let (code, out, _) = run_tamada(&[
        "--plugins",
        "--plugin-dir",
        s.dir.path().join("plugins").to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with("frozen12\t1.2.0\tSDK 1.2\t")),
        "{out}"
    );
}
