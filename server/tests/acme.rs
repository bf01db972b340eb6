//! Automatic HTTPS against pebble, the ACME test CA (Debian package
//! `pebble`, with `pebble-challtestsrv` as its DNS server, which answers
//! 127.0.0.1 for every name). Each test starts its own pebble on free
//! loopback ports, its validation ports pointed at the test vhost's
//! ports, and gives pebble's HTTPS CA (made here) as `acme.ca_root`.

use crate::harness::*;
use crate::tls::Pki;
use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running pebble and its DNS server.
pub struct Pebble {
    pebble: Option<Child>,
    dns: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub mgmt: u16,
    dns_port: u16,
    config: String,
    env: Vec<(String, String)>,
}

/// How pebble is set up.
#[derive(Default, Clone)]
pub struct PebbleOpts {
    /// Where it validates HTTP-01 and TLS-ALPN-01.
    pub http_port: u16,
    pub tls_port: u16,
    /// Certificate lifetime in seconds (pebble's default: 5 years).
    pub validity: Option<u64>,
    /// External account binding required, with this key ID and HMAC.
    pub eab: Option<(String, String)>,
    /// Percent of nonces rejected as bad (`PEBBLE_WFE_NONCEREJECT`).
    pub nonce_reject: u32,
    /// Listen on this port (default: a free one).
    pub port: Option<u16>,
    /// Names the CA refuses (`domainBlocklist`).
    pub blocklist: Vec<String>,
}

impl Pebble {
    pub fn start(o: &PebbleOpts) -> Pebble {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new();
        let pair = pki.server(&["localhost", "127.0.0.1"], false);
        std::fs::write(dir.path().join("ca.pem"), pki.ca_pem()).expect("write");
        std::fs::write(dir.path().join("cert.pem"), &pair.cert).expect("write");
        std::fs::write(dir.path().join("key.pem"), &pair.key).expect("write");
        let port = o.port.unwrap_or_else(free_port);
        let mgmt = free_port();
        let dns_port = free_port();
        let validity = o
            .validity
            .map(|v| format!(",\n\"certificateValidityPeriod\": {v}"))
            .unwrap_or_default();
        let eab = match &o.eab {
            Some((kid, hmac)) => format!(
                "\"externalAccountBindingRequired\": true,\n\"externalAccountMACKeys\": {{\"{kid}\": \"{hmac}\"}}"
            ),
            None => "\"externalAccountBindingRequired\": false".into(),
        };
        let blocklist = if o.blocklist.is_empty() {
            String::new()
        } else {
            format!(
                ",\n\"domainBlocklist\": [{}]",
                o.blocklist
                    .iter()
                    .map(|b| format!("\"{b}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let config = format!(
            "{{\"pebble\": {{\n\"listenAddress\": \"127.0.0.1:{port}\",\n\
             \"managementListenAddress\": \"127.0.0.1:{mgmt}\",\n\
             \"certificate\": \"{d}/cert.pem\",\n\"privateKey\": \"{d}/key.pem\",\n\
             \"httpPort\": {},\n\"tlsPort\": {},\n\"ocspResponderURL\": \"\",\n{eab}{validity}{blocklist}\n}}}}\n",
            o.http_port,
            o.tls_port,
            d = dir.path().display()
        );
        std::fs::write(dir.path().join("pebble.json"), &config).expect("write");
        let dns = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv (apt-get install pebble)");
        let env = vec![
            ("PEBBLE_VA_NOSLEEP".to_owned(), "1".to_owned()),
            (
                "PEBBLE_WFE_NONCEREJECT".to_owned(),
                o.nonce_reject.to_string(),
            ),
            ("PEBBLE_AUTHZREUSE".to_owned(), "0".to_owned()),
        ];
        let mut p = Pebble {
            pebble: None,
            dns,
            dir,
            port,
            mgmt,
            dns_port,
            config,
            env,
        };
        p.resume();
        p
    }

    /// Starts pebble (again: a new issuing root each time).
    pub fn resume(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("pebble.log")).expect("log");
        let child = Command::new("pebble")
            .arg("-config")
            .arg(self.dir.path().join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns_port)])
            // The changes of the API pebble tests clients against before
            // CAs make them.
            .arg("-strict")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("pebble (apt-get install pebble)");
        self.pebble = Some(child);
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err()
            || TcpStream::connect(("127.0.0.1", self.mgmt)).is_err()
        {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "pebble did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = &self.config;
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.pebble.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    pub fn ca_root(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }

    /// The root pebble issues under (new at each start), as PEM.
    pub fn issuing_root(&self) -> String {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert", &self.ca_root()])
            .arg(format!("https://127.0.0.1:{}/roots/0", self.mgmt))
            .output()
            .expect("curl");
        let pem = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(pem.contains("BEGIN CERTIFICATE"), "roots/0: {pem}");
        pem
    }

    /// The `server.yaml` lines for this pebble.
    pub fn acme_yaml(&self, state_dir: &str, extra: &str) -> String {
        format!(
            "acme:\n  directory: {}\n  ca_root: {}\n  state_dir: {state_dir}\n  email: admin@example.com\n{extra}",
            self.directory(),
            self.ca_root()
        )
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        let _ = self.dns.kill();
        let _ = self.dns.wait();
    }
}

/// `curl` over HTTPS to `name` on `port` (resolved to 127.0.0.1),
/// verifying against `root`: (exit code, status, body, stderr).
pub fn https_get(
    name: &str,
    port: u16,
    root: &str,
    dir: &std::path::Path,
) -> (i32, String, String) {
    let ca = dir.join("issuing-root.pem");
    std::fs::write(&ca, root).expect("write root");
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(&ca)
        .arg("--resolve")
        .arg(format!("{name}:{port}:127.0.0.1"))
        .arg(format!("https://{name}:{port}/"))
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The serial of the certificate served for `name` on `port`.
fn served_serial(name: &str, port: u16) -> String {
    let mut c = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl");
    drop(c.stdin.take());
    let out = c.wait_with_output().expect("openssl");
    let mut x = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl x509");
    x.stdin
        .take()
        .expect("stdin")
        .write_all(&out.stdout)
        .expect("write");
    let o = x.wait_with_output().expect("openssl x509");
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase()
}

fn vhost(name: &str, aliases: &[&str], plain: Option<&str>, tls: &str) -> String {
    let mut s = format!("vhost: {name}\nip: 127.0.0.1\n");
    if !aliases.is_empty() {
        s.push_str(&format!("aliases: [{}]\n", aliases.join(", ")));
    }
    if let Some(p) = plain {
        s.push_str(&format!("port: {p}\n"));
    }
    s.push_str(&format!(
        "tls_port: {tls}\ntls: {{ acme: true }}\ndocument_root: ../www\n"
    ));
    s
}

/// A server whose conf.d is `server` (server.yaml) and one vhost file,
/// with `index` as `www/index.html`, on `ports`.
fn acme_server(server: &str, vhost: &str, index: &str, ports: Vec<u16>) -> TestServer {
    let (dir, conf, plugins, _) = Fixture::new()
        .ports(0)
        .file("conf.d/server.yaml", server)
        .file("conf.d/a.yaml", vhost)
        .file("www/index.html", index)
        .write();
    TestServer::spawn(dir, &conf, &plugins, ports, &[])
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

#[test]
fn http01_certificate_is_obtained_served_extended_and_kept_over_a_restart() {
    let http = free_port();
    let tls = free_port();
    let mut pebble = Pebble::start(&PebbleOpts {
        http_port: http,
        tls_port: tls,
        ..PebbleOpts::default()
    });
    let acme = pebble.acme_yaml("{dir}/state", "  challenges: [http-01]\n");
    // Challenges are answered ahead of the redirect to HTTPS and of an
    // access rule that refuses everything under /.well-known/.
    let rules = "https_redirect: true\naccess:\n  - path: /.well-known/\n    handler: access\n    \
                 options: { deny: [all] }\n";
    let site = |aliases: &[&str]| {
        vhost(
            "a.acme.test",
            aliases,
            Some(&http.to_string()),
            &tls.to_string(),
        ) + rules
    };
    let (dir, conf, plugins, _) = Fixture::new()
        .ports(0)
        .file("conf.d/server.yaml", &acme)
        .file("conf.d/a.yaml", &site(&[]))
        .file("www/index.html", "hello over acme\n")
        .write();
    let s = TestServer::spawn(dir, &conf, &plugins, vec![http, tls], &[]);
    // Plain HTTP is served (here: redirected) while the certificate is
    // obtained.
    assert_eq!(get(http, "/", "a.acme.test").status, 308);
    assert!(
        s.log
            .wait_for("certificate obtained", Duration::from_secs(60)),
        "{}",
        s.log.text()
    );
    let root = pebble.issuing_root();
    let (code, out, err) = https_get("a.acme.test", tls, &root, s.dir.path());
    assert_eq!(code, 0, "{err}\n{}", s.log.text());
    assert!(out.ends_with("\n200"), "{out}");
    assert!(out.starts_with("hello over acme"), "{out}");
    // Files: 0600 in 0700 folders.
    let state = s.dir.path().join("state");
    let ca = state.join(format!("127.0.0.1_{}_dir", pebble.port));
    let cur = ca.join("certs/a.acme.test/current.pem");
    assert_eq!(mode(&cur), 0o600);
    assert_eq!(mode(&ca.join("account.json")), 0o600);
    assert_eq!(mode(&ca.join("certs/a.acme.test")), 0o700);
    assert_eq!(mode(&state), 0o700);
    // A token not pending goes on to the routes (for another client's
    // webroot files; access rules and the redirect leave challenge paths
    // alone): the static files have none.
    assert_eq!(
        get(http, "/.well-known/acme-challenge/nope", "a.acme.test").status,
        404
    );
    assert_eq!(get(http, "/.well-known/other", "a.acme.test").status, 308);
    // `tamada --certs` lists it.
    let (c, out, err) = run_tamada(&["--certs", "-c", s.conf().to_str().expect("utf-8")]);
    assert_eq!(c, 0, "{err}");
    assert!(out.contains("vhost a.acme.test"), "{out}");
    assert!(out.contains("Pebble Intermediate"), "{out}");
    assert!(out.contains("last error:   -"), "{out}");

    // An alias added by a reload: a new order, and an open connection
    // survives it.
    let mut keep = Client::connect(http);
    let r = keep.request("GET / HTTP/1.1\r\nHost: a.acme.test\r\n\r\n");
    assert_eq!(r.status, 308);
    std::fs::write(s.conf().join("a.yaml"), site(&["b.acme.test"])).expect("write");
    // ...and a new contact address: the CA is told.
    let acme2 = acme
        .replace("admin@example.com", "ops@example.com")
        .replace("{dir}", &s.dir.path().display().to_string());
    std::fs::write(s.conf().join("server.yaml"), acme2).expect("write");
    s.signal(libc::SIGHUP);
    assert!(
        s.log
            .wait_for_n("certificate obtained", 2, Duration::from_secs(60)),
        "{}",
        s.log.text()
    );
    let (code, out, err) = https_get("b.acme.test", tls, &root, s.dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("\n200"), "{out}");
    assert!(
        s.log.text().contains("contact at") && s.log.text().contains("is now ops@example.com"),
        "{}",
        s.log.text()
    );
    let r = keep.request("GET / HTTP/1.1\r\nHost: a.acme.test\r\n\r\n");
    assert_eq!(r.status, 308);
    let serial = served_serial("a.acme.test", tls);
    assert!(!serial.is_empty());

    // A restart with the CA down: the stored certificate is served at
    // once and nothing is ordered.
    let conf_dir = s.conf();
    let plugins = plugins.clone();
    let dir = {
        let mut s = s;
        s.signal(libc::SIGTERM);
        assert!(s.wait_exit(Duration::from_secs(10)).is_some());
        std::mem::replace(&mut s.dir, tempfile::tempdir().expect("tempdir"))
    };
    pebble.stop();
    let s = TestServer::spawn(dir, &conf_dir, &plugins, vec![http, tls], &[]);
    let (code, out, err) = https_get("b.acme.test", tls, &root, s.dir.path());
    assert_eq!(code, 0, "{err}\n{}", s.log.text());
    assert!(out.ends_with("\n200"), "{out}");
    assert_eq!(served_serial("a.acme.test", tls), serial);
    std::thread::sleep(Duration::from_secs(2));
    assert!(!s.log.text().contains("ordering"), "{}", s.log.text());
}

#[test]
fn tls_alpn01_on_an_https_only_vhost_with_bad_nonces() {
    let tls = free_port();
    let pebble = Pebble::start(&PebbleOpts {
        http_port: free_port(),
        tls_port: tls,
        // Nonces refused at random: retried at once (RFC 8555 6.5).
        nonce_reject: 30,
        ..PebbleOpts::default()
    });
    let acme = pebble.acme_yaml("{dir}/state", "  key_type: ecdsa-p384\n");
    let s = acme_server(
        &acme,
        &vhost("only.acme.test", &[], None, &tls.to_string()),
        "https only\n",
        vec![tls],
    );
    assert!(
        s.log
            .wait_for("certificate obtained", Duration::from_secs(90)),
        "{}",
        s.log.text()
    );
    let root = pebble.issuing_root();
    let (code, out, err) = https_get("only.acme.test", tls, &root, s.dir.path());
    assert_eq!(code, 0, "{err}\n{}", s.log.text());
    assert!(out.starts_with("https only"), "{out}");
    // A P-384 key, as asked.
    let pem = std::fs::read_to_string(s.dir.path().join(format!(
        "state/127.0.0.1_{}_dir/certs/only.acme.test/current.pem",
        pebble.port
    )))
    .expect("current.pem");
    let out = Command::new("openssl")
        .args(["pkey", "-noout", "-text"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().expect("stdin").write_all(pem.as_bytes())?;
            c.wait_with_output()
        })
        .expect("openssl pkey");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("P-384"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // An acme-tls/1 hello with nothing pending is refused.
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{tls}")])
        .args(["-servername", "only.acme.test", "-alpn", "acme-tls/1"])
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("no application protocol") || text.contains("alert number 120"),
        "{text}"
    );
}

#[test]
fn with_the_ca_down_at_start_http_is_served_and_https_follows_once_it_is_back() {
    let http = free_port();
    let tls = free_port();
    let mut pebble = Pebble::start(&PebbleOpts {
        http_port: http,
        tls_port: tls,
        ..PebbleOpts::default()
    });
    pebble.stop();
    let acme = pebble.acme_yaml("{dir}/state", "");
    let pki = Pki::new();
    let own = pki.server(&["own.test"], false);
    let (dir, conf, plugins, _) = Fixture::new()
        .ports(0)
        .file("conf.d/server.yaml", &acme)
        .file(
            "conf.d/a.yaml",
            &vhost(
                "down.acme.test",
                &[],
                Some(&http.to_string()),
                &tls.to_string(),
            ),
        )
        .file("www/index.html", "later\n")
        // Another vhost on the same HTTPS port, with its own certificate.
        .file(
            "conf.d/b.yaml",
            &format!(
                "vhost: own.test\nip: 127.0.0.1\ntls_port: {tls}\n\
                 tls: {{ cert: ../tls/b.pem, key: ../tls/b.key }}\ndocument_root: ../www\n"
            ),
        )
        .file("tls/ca.pem", &pki.ca_pem())
        .file("tls/b.pem", &own.cert)
        .file("tls/b.key", &own.key)
        .write();
    let s = TestServer::spawn(dir, &conf, &plugins, vec![http, tls], &[]);
    assert!(
        s.log
            .wait_for("no certificate from", Duration::from_secs(20)),
        "{}",
        s.log.text()
    );
    // The CA's address is in the error line; plain HTTP is served.
    assert!(s.log.text().contains(&pebble.directory()));
    assert_eq!(get(http, "/", "down.acme.test").status, 200);
    // HTTPS: an alert and a log line, no stall.
    let t = Instant::now();
    let (code, _, err) = https_get("down.acme.test", tls, "", s.dir.path());
    assert_ne!(code, 0, "{err}");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(
        s.log.wait_for(
            "no certificate yet for down.acme.test",
            Duration::from_secs(5)
        ),
        "{}",
        s.log.text()
    );
    // The other vhost of the port is served all along.
    let ca = std::fs::read_to_string(s.dir.path().join("tls/ca.pem")).expect("ca");
    let (code, out, err) = https_get("own.test", tls, &ca, s.dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("later"), "{out}");
    let (c, out, _) = run_tamada(&["--certs", "-c", s.conf().to_str().expect("utf-8")]);
    assert_eq!(c, 0);
    assert!(out.contains("certificate:  none"), "{out}");
    assert!(
        out.contains("last error:   the directory") || out.contains("last error:   creating"),
        "{out}"
    );
    pebble.resume();
    assert!(
        s.log
            .wait_for("certificate obtained", Duration::from_secs(60)),
        "{}",
        s.log.text()
    );
    let root = pebble.issuing_root();
    let (code, out, err) = https_get("down.acme.test", tls, &root, s.dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("later"), "{out}");
}

#[test]
fn two_servers_sharing_state_dir_order_once_and_both_serve_it() {
    let state = tempfile::tempdir().expect("tempdir");
    let (a_http, a_tls, b_http, b_tls) = (free_port(), free_port(), free_port(), free_port());
    // The CA validates HTTP-01 on A's plain port and TLS-ALPN-01 on B's
    // HTTPS port; A answers only TLS-ALPN-01 and B only HTTP-01. So
    // whichever server orders, its challenge is answered by the other,
    // which read it from the shared folder.
    let mut pebble = Pebble::start(&PebbleOpts {
        http_port: a_http,
        tls_port: b_tls,
        ..PebbleOpts::default()
    });
    pebble.stop();
    let shared = state.path().display().to_string();
    let server = |http: u16, tls: u16, challenge: &str| {
        let acme = pebble.acme_yaml(&shared, &format!("  challenges: [{challenge}]\n"));
        acme_server(
            &acme,
            &vhost(
                "fleet.acme.test",
                &[],
                Some(&http.to_string()),
                &tls.to_string(),
            ),
            "fleet\n",
            vec![http, tls],
        )
    };
    // Both run before the CA is up.
    let a = server(a_http, a_tls, "tls-alpn-01");
    let b = server(b_http, b_tls, "http-01");
    for s in [&a, &b] {
        assert!(
            s.log
                .wait_for("no certificate from", Duration::from_secs(20)),
            "{}",
            s.log.text()
        );
    }
    pebble.resume();
    let t = Instant::now();
    let obtained = |s: &TestServer| s.log.text().matches("certificate obtained").count();
    while obtained(&a) + obtained(&b) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "A:\n{}\nB:\n{}",
            a.log.text(),
            b.log.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The other one picks it up within a few seconds.
    for s in [&a, &b] {
        assert!(
            s.log
                .wait_for("serves certificate", Duration::from_secs(10)),
            "{}",
            s.log.text()
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        obtained(&a) + obtained(&b),
        1,
        "A:\n{}\nB:\n{}",
        a.log.text(),
        b.log.text()
    );
    let root = pebble.issuing_root();
    for tls in [a_tls, b_tls] {
        let (code, out, err) = https_get("fleet.acme.test", tls, &root, a.dir.path());
        assert_eq!(code, 0, "{err}");
        assert!(out.starts_with("fleet"), "{out}");
    }
    assert_eq!(
        served_serial("fleet.acme.test", a_tls),
        served_serial("fleet.acme.test", b_tls)
    );
}

#[test]
fn a_short_lived_certificate_is_renewed_under_load_without_a_failed_request() {
    if Command::new("wrk").arg("--version").output().is_err() {
        panic!("wrk is needed (apt-get install wrk)");
    }
    let http = free_port();
    let tls = free_port();
    let pebble = Pebble::start(&PebbleOpts {
        http_port: http,
        tls_port: tls,
        validity: Some(15),
        ..PebbleOpts::default()
    });
    let acme = pebble.acme_yaml("{dir}/state", "");
    let s = acme_server(
        &acme,
        &vhost(
            "short.acme.test",
            &[],
            Some(&http.to_string()),
            &tls.to_string(),
        ),
        "short\n",
        vec![http, tls],
    );
    assert!(
        s.log
            .wait_for("certificate obtained", Duration::from_secs(60)),
        "{}",
        s.log.text()
    );
    let first = served_serial("short.acme.test", tls);
    // A new handshake per request, across the renewal (at 10 s of 15).
    let out = Command::new("wrk")
        .args(["-t1", "-c4", "-d14s", "-H", "Connection: close"])
        .arg(format!("https://127.0.0.1:{tls}/"))
        .output()
        .expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        s.log
            .wait_for_n("certificate obtained", 2, Duration::from_secs(20)),
        "{}",
        s.log.text()
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("requests in"), "{text}");
    assert!(!text.contains("Socket errors"), "{text}");
    assert!(!text.contains("Non-2xx"), "{text}");
    let second = served_serial("short.acme.test", tls);
    assert_ne!(first, second, "{}", s.log.text());
    let root = pebble.issuing_root();
    let (code, out, err) = https_get("short.acme.test", tls, &root, s.dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("short"), "{out}");
}

#[test]
fn a_bad_external_account_binding_is_reported_and_a_good_one_works() {
    let http = free_port();
    let tls = free_port();
    let hmac = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let pebble = Pebble::start(&PebbleOpts {
        http_port: http,
        tls_port: tls,
        eab: Some(("kid-1".into(), hmac.into())),
        ..PebbleOpts::default()
    });
    let bad = pebble.acme_yaml(
        "{dir}/state",
        "  eab: { kid: kid-1, hmac: b10lLJs8l1GPIzsLP0s6pMt8O0XVGnfTaCeROxQM0BIt2XrJMDHJZBM5NuQmQJQH }\n",
    );
    let s = acme_server(
        &bad,
        &vhost(
            "eab.acme.test",
            &[],
            Some(&http.to_string()),
            &tls.to_string(),
        ),
        "eab\n",
        vec![http, tls],
    );
    assert!(
        s.log
            .wait_for("no certificate from", Duration::from_secs(30)),
        "{}",
        s.log.text()
    );
    let line = s
        .log
        .text()
        .lines()
        .find(|l| l.contains("no certificate from"))
        .unwrap_or_default()
        .to_owned();
    assert!(line.contains("vhost eab.acme.test"), "{line}");
    assert!(line.contains("creating the account"), "{line}");
    assert!(line.contains("urn:ietf:params:acme:error:"), "{line}");
    let (_, out, _) = run_tamada(&["--certs", "-c", s.conf().to_str().expect("utf-8")]);
    assert!(out.contains("creating the account"), "{out}");
    // The right key, and a reload: obtained at once.
    let good = pebble.acme_yaml(
        &s.dir.path().join("state").display().to_string(),
        &format!("  eab: {{ kid: kid-1, hmac: {hmac} }}\n"),
    );
    std::fs::write(s.conf().join("server.yaml"), good).expect("write");
    s.signal(libc::SIGHUP);
    assert!(
        s.log
            .wait_for("certificate obtained", Duration::from_secs(60)),
        "{}",
        s.log.text()
    );
}

#[test]
fn the_configuration_check_refuses_what_acme_cannot_do() {
    let check = |server: &str, vhost: &str| {
        let (code, out, err) = Fixture::new()
            .file("conf.d/server.yaml", server)
            .file("conf.d/a.yaml", vhost)
            .file("tls/a.pem", "x")
            .check();
        (code, out + &err)
    };
    let ok_server = "acme:\n  state_dir: {dir}/state\n";
    let v = "vhost: a.example.com\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\n";
    let (code, text) = check(ok_server, &format!("{v}tls: {{ acme: true }}\n"));
    assert_eq!(code, 0, "{text}");
    // acme and a certificate of one's own.
    let (code, text) = check(
        ok_server,
        &format!("{v}tls: {{ acme: true, cert: ../tls/a.pem, key: ../tls/a.pem }}\n"),
    );
    assert_eq!(code, 1);
    assert!(
        text.contains("a.yaml:5:") && text.contains("exclude each other"),
        "{text}"
    );
    // A wildcard alias.
    let (code, text) = check(
        ok_server,
        &format!("{v}aliases: ['*.example.com']\ntls: {{ acme: true }}\n"),
    );
    assert_eq!(code, 1);
    assert!(
        text.contains("a.yaml:5:") && text.contains("wildcard"),
        "{text}"
    );
    // An address as the vhost's name.
    let (code, text) = check(
        ok_server,
        "vhost: 127.0.0.1\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\ntls: { acme: true }\n",
    );
    assert_eq!(code, 1);
    assert!(
        text.contains("a.yaml:1:") && text.contains("IP address"),
        "{text}"
    );
    // A directory that is not HTTPS; a bad EAB key; an unknown key.
    for (server, want) in [
        (
            "acme:\n  directory: http://ca.example/dir\n  state_dir: /tmp\n",
            "server.yaml:2:",
        ),
        (
            "acme:\n  state_dir: /tmp\n  eab: { kid: k, hmac: '!!!' }\n",
            "acme.eab.hmac",
        ),
        ("acme:\n  state_dir: /tmp\n  key_type: dsa\n", "key_type"),
    ] {
        let (code, text) = check(server, &format!("{v}tls: {{ acme: true }}\n"));
        assert_eq!(code, 1, "{server}");
        assert!(text.contains(want), "{server}: {text}");
    }
    // A state_dir the serving user cannot write in.
    let (code, out, err) = Fixture::new()
        .file(
            "conf.d/server.yaml",
            "user: nobody\nacme:\n  state_dir: {dir}/owned\n",
        )
        .file("conf.d/a.yaml", &format!("{v}tls: {{ acme: true }}\n"))
        .file("owned/.keep", "")
        .check();
    let text = out + &err;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("server.yaml: acme.state_dir") && text.contains("cannot create files there"),
        "{text}"
    );
    // state_dir that cannot be a folder.
    let (code, text) = check(
        "acme:\n  state_dir: {dir}/tls/a.pem/state\n",
        &format!("{v}tls: {{ acme: true }}\n"),
    );
    assert_eq!(code, 1);
    assert!(
        text.contains("acme.state_dir") && text.contains("not a folder"),
        "{text}"
    );
}

#[test]
fn a_name_the_ca_refuses_is_reported_with_the_vhost_and_the_problem() {
    let http = free_port();
    let tls = free_port();
    let pebble = Pebble::start(&PebbleOpts {
        http_port: http,
        tls_port: tls,
        blocklist: vec!["blocked.acme.test".into()],
        ..PebbleOpts::default()
    });
    let s = acme_server(
        &pebble.acme_yaml("{dir}/state", ""),
        &vhost(
            "ok.acme.test",
            &["blocked.acme.test"],
            Some(&http.to_string()),
            &tls.to_string(),
        ),
        "plain\n",
        vec![http, tls],
    );
    assert!(
        s.log
            .wait_for("no certificate from", Duration::from_secs(30)),
        "{}",
        s.log.text()
    );
    let text = s.log.text();
    let line = text
        .lines()
        .find(|l| l.contains("no certificate from"))
        .unwrap_or_default();
    assert!(line.contains("vhost ok.acme.test"), "{line}");
    assert!(line.contains("blocked.acme.test"), "{line}");
    assert!(
        line.contains("urn:ietf:params:acme:error:rejectedIdentifier"),
        "{line}"
    );
    // Not retried in seconds: the CA's answer will not change by itself.
    assert!(line.contains("reload to retry at once"), "{line}");
    // Served in plain HTTP meanwhile.
    assert_eq!(get(http, "/", "ok.acme.test").status, 200);
    // The other name gets a certificate at once, served over HTTPS.
    assert!(
        s.log
            .wait_for("certificate obtained", Duration::from_secs(60)),
        "{}",
        s.log.text()
    );
    assert!(
        s.log
            .text()
            .contains("ordering a certificate for ok.acme.test only, until blocked.acme.test"),
        "{}",
        s.log.text()
    );
    let (code, out, err) = https_get("ok.acme.test", tls, &pebble.issuing_root(), s.dir.path());
    assert_eq!(code, 0, "{err}\n{}", s.log.text());
    assert!(out.ends_with("\n200"), "{out}");
    // `tamada --certs` says what is left out, and why.
    let (c, out, err) = run_tamada(&["--certs", "-c", s.conf().to_str().expect("utf-8")]);
    assert_eq!(c, 0, "{err}");
    assert!(out.contains("covers:       ok.acme.test\n"), "{out}");
    assert!(
        out.contains("left out:     blocked.acme.test (until"),
        "{out}"
    );
    assert!(
        out.contains("blocked.acme.test left out of the certificate until"),
        "{out}"
    );
    assert!(out.contains("rejectedIdentifier"), "{out}");
}

#[test]
fn challenges_published_by_another_server_are_answered_from_memory() {
    // The CA is never up here: the challenges come from the shared folder
    // as another server of a fleet writes them.
    let (http, tls, ca) = (free_port(), free_port(), free_port());
    let acme =
        format!("acme:\n  directory: https://127.0.0.1:{ca}/dir\n  state_dir: {{dir}}/state\n");
    let s = acme_server(
        &acme,
        &vhost(
            "alpn.acme.test",
            &[],
            Some(&http.to_string()),
            &tls.to_string(),
        ),
        "",
        vec![http, tls],
    );
    let folder = s
        .dir
        .path()
        .join(format!("state/127.0.0.1_{ca}_dir/challenges"));
    std::fs::create_dir_all(&folder).expect("mkdir");
    std::fs::write(
        folder.join("other-tok1.json"),
        r#"{"kind":"tls-alpn-01","name":"alpn.acme.test","token":"tok1","key_authorization":"tok1.thumb"}"#,
    )
    .expect("write");
    std::fs::write(
        folder.join("other-tok2.json"),
        r#"{"kind":"http-01","name":"alpn.acme.test","token":"tok2","key_authorization":"tok2.thumb"}"#,
    )
    .expect("write");
    // Read within a second or so (polled here: a loaded machine may be
    // slower).
    let t = Instant::now();
    let r = loop {
        let r = get(http, "/.well-known/acme-challenge/tok2", "alpn.acme.test");
        if r.status == 200 || t.elapsed() > Duration::from_secs(10) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // HTTP-01: for its name only.
    assert_eq!(r.status, 200, "{}", s.log.text());
    assert_eq!(r.text(), "tok2.thumb");
    assert_eq!(
        get(http, "/.well-known/acme-challenge/tok2", "other.acme.test").status,
        404
    );
    // TLS-ALPN-01: the challenge certificate, acme-tls/1, and the
    // connection ends with the handshake (no HTTP on it).
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{tls}")])
        .args([
            "-servername",
            "alpn.acme.test",
            "-alpn",
            "acme-tls/1",
            "-showcerts",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .expect("stdin")
                .write_all(b"GET / HTTP/1.1\r\nHost: alpn.acme.test\r\n\r\n")?;
            c.wait_with_output()
        })
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("ALPN protocol: acme-tls/1"), "{text}");
    assert!(!text.contains("HTTP/1.1 "), "{text}");
    let pem_start = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&text.as_bytes()[pem_start..]).expect("PEM");
    let cert = pem.parse_x509().expect("certificate");
    let ext = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
        .expect("the acmeIdentifier extension");
    assert!(ext.critical);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"tok1.thumb");
    let mut want = vec![0x04, 0x20];
    want.extend_from_slice(digest.as_ref());
    assert_eq!(ext.value, want.as_slice());
    let san = cert.subject_alternative_name().expect("SAN").expect("SAN");
    assert_eq!(san.value.general_names.len(), 1);
    // A name with nothing pending: no_application_protocol.
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{tls}")])
        .args(["-servername", "other.acme.test", "-alpn", "acme-tls/1"])
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("no application protocol") || text.contains("alert number 120"),
        "{text}"
    );
    // Removed by its server: no longer answered.
    std::fs::remove_file(folder.join("other-tok2.json")).expect("rm");
    let t = Instant::now();
    while get(http, "/.well-known/acme-challenge/tok2", "alpn.acme.test").status != 404 {
        assert!(t.elapsed() < Duration::from_secs(10), "still answered");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_acme_thread_writes_as_the_serving_user() {
    // SAFETY: getuid has no preconditions.
    assert_eq!(
        unsafe { libc::getuid() },
        0,
        "the integration tests run as root (as CI does): this one drops to `nobody`"
    );
    let nobody = Command::new("id")
        .args(["-u", "nobody"])
        .output()
        .expect("id");
    let nobody: u32 = String::from_utf8_lossy(&nobody.stdout)
        .trim()
        .parse()
        .expect("uid of nobody");
    let http = free_port();
    let tls = free_port();
    let pebble = Pebble::start(&PebbleOpts {
        http_port: http,
        tls_port: tls,
        ..PebbleOpts::default()
    });
    let server = format!(
        "user: nobody\n{}",
        pebble.acme_yaml("{dir}/lib/tamada/acme", "  challenges: [http-01]\n")
    );
    let (dir, conf, plugins, _) = Fixture::new()
        .ports(0)
        .file("conf.d/server.yaml", &server)
        .file(
            "conf.d/a.yaml",
            &vhost(
                "user.acme.test",
                &[],
                Some(&http.to_string()),
                &tls.to_string(),
            ),
        )
        .write();
    // `nobody` must reach its folder inside the test's (root's 0700) one.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let s = TestServer::spawn(dir, &conf, &plugins, vec![http, tls], &[]);
    assert!(
        s.log
            .wait_for("certificate obtained", Duration::from_secs(60)),
        "{}",
        s.log.text()
    );
    use std::os::unix::fs::MetadataExt;
    let state = s.dir.path().join("lib/tamada/acme");
    let cur = state.join(format!(
        "127.0.0.1_{}_dir/certs/user.acme.test/current.pem",
        pebble.port
    ));
    for (p, mode) in [(&state, 0o700), (&cur, 0o600)] {
        let m = std::fs::metadata(p).expect("stat");
        assert_eq!(m.uid(), nobody, "{}", p.display());
        assert_eq!(m.mode() & 0o777, mode, "{}", p.display());
    }
    // The parent made on the way is an ordinary folder.
    let parent = std::fs::metadata(s.dir.path().join("lib/tamada")).expect("stat");
    assert_eq!(parent.mode() & 0o777, 0o755);
}

#[test]
fn a_binary_upgrade_orders_nothing_and_serves_on() {
    let http = free_port();
    let tls = free_port();
    let pebble = Pebble::start(&PebbleOpts {
        http_port: http,
        tls_port: tls,
        ..PebbleOpts::default()
    });
    let server = format!(
        "pid_file: {{dir}}/tamada.pid\n{}",
        pebble.acme_yaml("{dir}/state", "")
    );
    let mut s = acme_server(
        &server,
        &vhost(
            "up.acme.test",
            &[],
            Some(&http.to_string()),
            &tls.to_string(),
        ),
        "upgraded\n",
        vec![http, tls],
    );
    assert!(
        s.log
            .wait_for("certificate obtained", Duration::from_secs(60)),
        "{}",
        s.log.text()
    );
    let serial = served_serial("up.acme.test", tls);
    s.signal(libc::SIGUSR2);
    assert!(
        s.log
            .wait_for("binary upgrade: this process (", Duration::from_secs(30)),
        "{}",
        s.log.text()
    );
    let exited = s.wait_exit(Duration::from_secs(20));
    let pid: i32 = std::fs::read_to_string(s.dir.path().join("tamada.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0);
    let root = pebble.issuing_root();
    let (code, out, err) = https_get("up.acme.test", tls, &root, s.dir.path());
    let new_serial = served_serial("up.acme.test", tls);
    std::thread::sleep(Duration::from_secs(2));
    let log = s.log.text();
    if pid > 0 && pid != s.child.id() as i32 {
        // SAFETY: kill(2) on the pid the upgraded server wrote.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    assert_eq!(exited, Some(0), "{log}");
    assert_eq!(code, 0, "{err}\n{log}");
    assert!(out.starts_with("upgraded"), "{out}");
    // The new process serves the stored certificate and orders nothing.
    assert_eq!(new_serial, serial);
    assert_eq!(log.matches("ordering a certificate").count(), 1, "{log}");
}
