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
        let config = format!(
            "{{\"pebble\": {{\n\"listenAddress\": \"127.0.0.1:{port}\",\n\
             \"managementListenAddress\": \"127.0.0.1:{mgmt}\",\n\
             \"certificate\": \"{d}/cert.pem\",\n\"privateKey\": \"{d}/key.pem\",\n\
             \"httpPort\": {},\n\"tlsPort\": {},\n\"ocspResponderURL\": \"\",\n{eab}{validity}\n}}}}\n",
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
    let (dir, conf, plugins, _) = Fixture::new()
        .ports(0)
        .file("conf.d/server.yaml", &acme)
        .file(
            "conf.d/a.yaml",
            &vhost(
                "a.acme.test",
                &[],
                Some(&http.to_string()),
                &tls.to_string(),
            ),
        )
        .file("www/index.html", "hello over acme\n")
        .write();
    let s = TestServer::spawn(dir, &conf, &plugins, vec![http, tls], &[]);
    // Plain HTTP is served while the certificate is obtained.
    assert_eq!(get(http, "/", "a.acme.test").status, 200);
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
    assert_eq!(r.status, 200);
    std::fs::write(
        s.conf().join("a.yaml"),
        vhost(
            "a.acme.test",
            &["b.acme.test"],
            Some(&http.to_string()),
            &tls.to_string(),
        ),
    )
    .expect("write");
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
    let r = keep.request("GET / HTTP/1.1\r\nHost: a.acme.test\r\n\r\n");
    assert_eq!(r.status, 200);
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
