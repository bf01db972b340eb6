//! The `fastcgi` plugin through the real server against the real php-fpm,
//! started by each test with its own pool on a temporary socket.

use crate::harness::*;
use crate::proxy::error_log;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// php-fpm with a pool listening on `listen`, killed when dropped.
pub struct Fpm {
    child: Child,
    conf: std::path::PathBuf,
}

fn fpm_binary() -> String {
    std::fs::read_dir("/usr/sbin")
        .expect("/usr/sbin")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("php-fpm"))
        .max()
        .map(|n| format!("/usr/sbin/{n}"))
        .expect("php-fpm is installed (Debian package php-fpm)")
}

impl Fpm {
    pub fn start(dir: &std::path::Path, listen: &str) -> Fpm {
        std::fs::create_dir_all(dir.join("sessions")).unwrap();
        let conf = dir.join("fpm.conf");
        std::fs::write(
            &conf,
            format!(
                "[global]\npid = {d}/fpm.pid\nerror_log = {d}/fpm.log\ndaemonize = no\n[test]\nlisten = {listen}\nlisten.mode = 0666\npm = static\npm.max_children = 4\ncatch_workers_output = yes\nphp_admin_value[upload_max_filesize] = 32M\nphp_admin_value[post_max_size] = 40M\nphp_admin_value[session.save_path] = {d}/sessions\nphp_admin_value[upload_tmp_dir] = {d}\nphp_admin_flag[log_errors] = on\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let mut f = Fpm {
            child: Command::new("true").spawn().unwrap(),
            conf,
        };
        f.spawn();
        f.wait_listening(listen);
        f
    }
    fn spawn(&mut self) {
        let _ = self.child.wait();
        self.child = Command::new(fpm_binary())
            .args(["-F", "-R", "-y", self.conf.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("php-fpm");
    }
    fn wait_listening(&self, listen: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let up = if let Some(port) = listen.strip_prefix("127.0.0.1:") {
                std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_ok()
            } else {
                std::os::unix::net::UnixStream::connect(listen).is_ok()
            };
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "php-fpm did not listen on {listen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    fn stop(&mut self) {
        // SIGTERM: the master stops its workers too (a SIGKILL would
        // leave them serving on the inherited socket).
        // SAFETY: kill with the pid of our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Fpm {
    fn drop(&mut self) {
        self.stop();
    }
}

const INFO: &str = r#"<?php
header('Content-Type: application/json');
$keys = ['QUERY_STRING','REQUEST_METHOD','CONTENT_TYPE','CONTENT_LENGTH','SCRIPT_NAME','REQUEST_URI','DOCUMENT_URI','DOCUMENT_ROOT','SERVER_PROTOCOL','REQUEST_SCHEME','GATEWAY_INTERFACE','SERVER_SOFTWARE','REMOTE_ADDR','REMOTE_PORT','SERVER_ADDR','SERVER_PORT','SERVER_NAME','REDIRECT_STATUS','SCRIPT_FILENAME','PATH_INFO','PATH_TRANSLATED','HTTP_X_TEST','HTTP_AUTHORIZATION','HTTP_PROXY','APP_ENV'];
$out = [];
foreach ($keys as $k) { if (isset($_SERVER[$k])) $out[$k] = $_SERVER[$k]; }
echo json_encode($out);
"#;

const FORM: &str = "<?php\necho 'a=', $_POST['a'] ?? '-', ' b=', $_POST['b'] ?? '-', \"\\n\";\n";
const UPLOAD: &str = "<?php\n$f = $_FILES['f'];\necho $f['error'], ' ', $f['size'], ' ', hash_file('sha256', $f['tmp_name']), \"\\n\";\n";
const SESSION: &str = "<?php\nsession_start();\n$_SESSION['n'] = ($_SESSION['n'] ?? 0) + 1;\necho 'n=', $_SESSION['n'], \"\\n\";\n";
const REDIRECT: &str = "<?php\nheader('Location: /form.php');\n";
const STATUS: &str =
    "<?php\nhttp_response_code(418);\nheader('X-From: php');\necho \"teapot\\n\";\n";
const STDERR: &str = "<?php\nerror_log('oops from php');\necho \"logged\\n\";\n";
const SLOW: &str = "<?php\nsleep(3);\necho \"late\\n\";\n";
const FRONT: &str =
    "<?php\necho 'front ', $_SERVER['REQUEST_URI'], ' ', $_SERVER['SCRIPT_NAME'], \"\\n\";\n";
const BIG: &str =
    "<?php\nfor ($i = 0; $i < 20000; $i++) { echo str_pad((string)$i, 99, '.'), \"\\n\"; }\n";

/// A vhost whose `/` goes to php-fpm at `address`, static files after it.
fn php_site(address: &str, extra: &str) -> Fixture {
    Fixture::new()
        .file(
            "conf.d/a.yaml",
            &format!(
                "vhost: a\nip: 127.0.0.1\nport: {{port0}}\ndocument_root: ../www\nlog: ../logs\nloggers:\n  - handler: logging\n    options: {{ format: json }}\nroutes:\n  - path: /\n    handler: fastcgi\n    options: {{ address: \"{address}\", front_controller: /index.php{extra} }}\n  - path: /\n    handler: static\n"
            ),
        )
        .file("logs/.keep", "")
        .file("www/info.php", INFO)
        .file("www/form.php", FORM)
        .file("www/upload.php", UPLOAD)
        .file("www/session.php", SESSION)
        .file("www/redirect.php", REDIRECT)
        .file("www/status.php", STATUS)
        .file("www/stderr.php", STDERR)
        .file("www/slow.php", SLOW)
        .file("www/big.php", BIG)
        .file("www/index.php", FRONT)
        .file("www/style.css", "body{}\n")
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn php_fpm_gets_the_parameters_nginx_gives_and_answers_forms_uploads_sessions() {
    let fdir = tempfile::tempdir().unwrap();
    let sock = fdir.path().join("php.sock");
    let _fpm = Fpm::start(fdir.path(), sock.to_str().unwrap());
    let s = php_site(
        &format!("unix:{}", sock.display()),
        ", params: { APP_ENV: test }",
    )
    .start();
    let base = format!("http://127.0.0.1:{}", s.port());

    // $_SERVER: what nginx's fastcgi_params (and fastcgi.conf's
    // SCRIPT_FILENAME) give.
    let r = get(s.port(), "/info.php/extra/path?x=1&y=%20", "a");
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let root = s.dir.path().join("www").canonicalize().unwrap();
    assert_eq!(v["QUERY_STRING"], "x=1&y=%20");
    assert_eq!(v["REQUEST_METHOD"], "GET");
    assert_eq!(v["SCRIPT_NAME"], "/info.php");
    assert_eq!(v["PATH_INFO"], "/extra/path");
    assert_eq!(
        v["PATH_TRANSLATED"],
        format!("{}/extra/path", root.display())
    );
    assert_eq!(v["REQUEST_URI"], "/info.php/extra/path?x=1&y=%20");
    assert_eq!(v["DOCUMENT_URI"], "/info.php/extra/path");
    assert_eq!(v["DOCUMENT_ROOT"], root.to_str().unwrap());
    assert_eq!(
        v["SCRIPT_FILENAME"],
        root.join("info.php").to_str().unwrap()
    );
    assert_eq!(v["SERVER_PROTOCOL"], "HTTP/1.1");
    assert_eq!(v["REQUEST_SCHEME"], "http");
    assert_eq!(v["GATEWAY_INTERFACE"], "CGI/1.1");
    assert!(
        v["SERVER_SOFTWARE"]
            .as_str()
            .unwrap()
            .starts_with("tamada/")
    );
    assert_eq!(v["REMOTE_ADDR"], "127.0.0.1");
    assert!(v["REMOTE_PORT"].as_str().unwrap().parse::<u16>().is_ok());
    assert_eq!(v["SERVER_ADDR"], "127.0.0.1");
    assert_eq!(v["SERVER_PORT"], s.port().to_string());
    assert_eq!(v["SERVER_NAME"], "a");
    assert_eq!(v["REDIRECT_STATUS"], "200");
    assert_eq!(v["APP_ENV"], "test");
    // Headers: HTTP_*, but no Authorization unless asked, no httpoxy.
    let out = curl(&[
        "-H",
        "X-Test: yes",
        "-H",
        "Authorization: Bearer t",
        "-H",
        "Proxy: http://evil",
        &format!("{base}/info.php"),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["HTTP_X_TEST"], "yes");
    assert!(v.get("HTTP_AUTHORIZATION").is_none(), "{v}");
    assert!(v.get("HTTP_PROXY").is_none(), "{v}");

    // A form POST.
    assert_eq!(
        curl(&["-d", "a=1&b=two", &format!("{base}/form.php")]),
        "a=1 b=two\n"
    );
    // A chunked one (spooled: PHP needs CONTENT_LENGTH).
    assert_eq!(
        curl(&[
            "-H",
            "Transfer-Encoding: chunked",
            "-d",
            "a=chunk",
            &format!("{base}/form.php")
        ]),
        "a=chunk b=-\n"
    );
    // A 10 MB upload, checksummed by PHP.
    let file = fdir.path().join("up.bin");
    let data: Vec<u8> = (0..10_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(&file, &data).unwrap();
    let want = Command::new("sha256sum").arg(&file).output().unwrap();
    let want = String::from_utf8_lossy(&want.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let got = curl(&[
        "-F",
        &format!("f=@{}", file.display()),
        &format!("{base}/upload.php"),
    ]);
    assert_eq!(got, format!("0 10000000 {want}\n"));

    // Sessions with a cookie across requests.
    let jar = fdir.path().join("jar");
    let jar = jar.to_str().unwrap();
    for n in 1..=3 {
        assert_eq!(
            curl(&["-b", jar, "-c", jar, &format!("{base}/session.php")]),
            format!("n={n}\n")
        );
    }
    // A redirect, a status of the script's own, a big streamed page.
    let r = get(s.port(), "/redirect.php", "a");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/form.php"));
    let r = get(s.port(), "/status.php", "a");
    assert_eq!((r.status, r.header("x-from")), (418, Some("php")));
    let r = get(s.port(), "/big.php", "a");
    assert_eq!(r.body.len(), 20000 * 100);
    assert!(r.text().lines().last().unwrap().starts_with("19999."));

    // The front controller for paths that name nothing; static files
    // are declined to the static route.
    assert_eq!(
        get(s.port(), "/blog/2026/hello?p=1", "a").text(),
        "front /blog/2026/hello?p=1 /index.php\n"
    );
    let r = get(s.port(), "/style.css", "a");
    assert_eq!(r.text(), "body{}\n");
    assert!(r.header("content-type").unwrap().starts_with("text/css"));
    assert_eq!(get(s.port(), "/", "a").text(), "front / /index.php\n");

    // STDERR reaches the vhost's error log.
    assert_eq!(get(s.port(), "/stderr.php", "a").text(), "logged\n");
    let log = error_log(&s, "oops from php");
    assert!(
        log.contains("FastCGI sent in stderr") && log.contains("oops from php"),
        "{log}"
    );

    // The access log names the socket, the status and the time.
    let access = s.dir.path().join("logs/access.log");
    let text = std::fs::read_to_string(access).unwrap();
    let line = text.lines().find(|l| l.contains("/status.php")).unwrap();
    let j: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(
        j["notes"]["upstream_addr"],
        format!("unix:{}", sock.display())
    );
    assert_eq!(j["notes"]["upstream_status"], "418");
}

#[test]
fn php_fpm_down_gives_502_too_slow_504_and_it_recovers() {
    let fdir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut fpm = Fpm::start(fdir.path(), &listen);
    let s = php_site(&listen, ", read_timeout: 1s, keepalive: 2").start();
    // Kept-alive connections are reused.
    for _ in 0..5 {
        assert_eq!(get(s.port(), "/form.php", "a").text(), "a=- b=-\n");
    }
    let t0 = Instant::now();
    assert_eq!(get(s.port(), "/slow.php", "a").status, 504);
    assert!(t0.elapsed() < Duration::from_millis(2900));
    fpm.stop();
    assert_eq!(get(s.port(), "/form.php", "a").status, 502);
    let log = error_log(&s, "connecting to");
    assert!(log.contains(&format!("connecting to {listen}")), "{log}");
    fpm.spawn();
    fpm.wait_listening(&listen);
    // Back: the pooled connections to the old one are never a 502.
    for _ in 0..3 {
        let r = get(s.port(), "/form.php", "a");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let mut c = Client::connect(s.port());
    let r = c.request("POST /form.php HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\n\r\na=9");
    assert_eq!(r.text(), "a=9 b=-\n");
}

#[test]
fn dash_t_reports_a_bad_fastcgi_address_with_file_and_line() {
    let (code, out, err) = php_site("php:9000", "").check();
    assert_ne!(code, 0);
    let all = format!("{out}{err}");
    assert!(all.contains("a.yaml:") && all.contains("address"), "{all}");
    let (code, out, err) = php_site("127.0.0.1:9000", ", indx: a.php").check();
    assert_ne!(code, 0);
    assert!(format!("{out}{err}").contains("indx"));
}

#[test]
fn a_deploy_that_swaps_the_root_symlink_is_followed_without_a_reload() {
    let fdir = tempfile::tempdir().unwrap();
    let sock = fdir.path().join("php.sock");
    let _fpm = Fpm::start(fdir.path(), sock.to_str().unwrap());
    let releases = tempfile::tempdir().unwrap();
    for (r, text) in [("r1", "one"), ("r2", "two")] {
        std::fs::create_dir_all(releases.path().join(r)).unwrap();
        std::fs::write(
            releases.path().join(r).join("v.php"),
            format!("<?php echo '{text} ', $_SERVER['DOCUMENT_ROOT'];"),
        )
        .unwrap();
    }
    let current = releases.path().join("current");
    std::os::unix::fs::symlink(releases.path().join("r1"), &current).unwrap();
    let s = php_site(
        &format!("unix:{}", sock.display()),
        &format!(", root: \"{}\"", current.display()),
    )
    .start();
    let real = |r: &str| releases.path().join(r).canonicalize().unwrap();
    assert_eq!(
        get(s.port(), "/v.php", "a").text(),
        format!("one {}", real("r1").display())
    );
    // The deploy: a new symlink renamed over the old one.
    let next = releases.path().join("next");
    std::os::unix::fs::symlink(releases.path().join("r2"), &next).unwrap();
    std::fs::rename(&next, &current).unwrap();
    // Seen within a second (the root is resolved again at most that often).
    let want = format!("two {}", real("r2").display());
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let got = get(s.port(), "/v.php", "a").text();
        if got == want {
            break;
        }
        assert!(Instant::now() < deadline, "still {got}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_parameters_are_what_nginx_with_its_fastcgi_params_gives_the_same_php() {
    // The same php-fpm pool and script behind tamada and behind nginx
    // (Debian's /etc/nginx/fastcgi_params, SCRIPT_FILENAME and the
    // PATH_INFO split as its snippets/fastcgi-php.conf): $_SERVER compared.
    let fdir = tempfile::tempdir().unwrap();
    // nginx's workers (nobody) reach the socket through this folder.
    std::fs::set_permissions(
        fdir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let sock = fdir.path().join("php.sock");
    let _fpm = Fpm::start(fdir.path(), sock.to_str().unwrap());
    let s = php_site(&format!("unix:{}", sock.display()), "").start();
    let root = s.dir.path().join("www").canonicalize().unwrap();
    let nport = free_port();
    let conf = fdir.path().join("nginx.conf");
    let d = fdir.path().display();
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/nb; proxy_temp_path {d}/np; fastcgi_temp_path {d}/nf; uwsgi_temp_path {d}/nu; scgi_temp_path {d}/ns;\n  server {{\n    listen 127.0.0.1:{nport};\n    server_name a;\n    root {root};\n    location ~ [^/]\\.php(/|$) {{\n      fastcgi_split_path_info ^(.+?\\.php)(/.*)$;\n      include /etc/nginx/fastcgi_params;\n      fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\n      fastcgi_param PATH_INFO $fastcgi_path_info;\n      fastcgi_param PATH_TRANSLATED $document_root$fastcgi_path_info;\n      fastcgi_pass unix:{sock};\n    }}\n  }}\n}}\n",
            root = root.display(),
            sock = sock.display()
        ),
    )
    .unwrap();
    let _nginx = crate::proxy::KillChild(
        Command::new("nginx")
            .args(["-c", conf.to_str().unwrap(), "-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (Debian package nginx-light)"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", nport)).is_err() {
        assert!(Instant::now() < deadline, "nginx did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let fetch = |port: u16| -> serde_json::Value {
        let mut c = Client::connect(port);
        let r = c.request(
            "POST /info.php/extra/path?x=1&y=%20 HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\nX-Test: yes\r\n\r\na=1",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_slice(&r.body).unwrap()
    };
    let ours = fetch(s.port());
    let theirs = fetch(nport);
    // What differs by nature: the port each listens on, the software.
    for key in [
        "QUERY_STRING",
        "REQUEST_METHOD",
        "CONTENT_TYPE",
        "CONTENT_LENGTH",
        "SCRIPT_NAME",
        "REQUEST_URI",
        "DOCUMENT_URI",
        "DOCUMENT_ROOT",
        "SERVER_PROTOCOL",
        "REQUEST_SCHEME",
        "GATEWAY_INTERFACE",
        "REMOTE_ADDR",
        "SERVER_ADDR",
        "SERVER_NAME",
        "REDIRECT_STATUS",
        "SCRIPT_FILENAME",
        "PATH_INFO",
        "PATH_TRANSLATED",
        "HTTP_X_TEST",
    ] {
        assert_eq!(
            ours[key], theirs[key],
            "{key}: tamada {ours} nginx {theirs}"
        );
    }
    assert_eq!(ours["SERVER_PORT"], s.port().to_string());
    assert_eq!(theirs["SERVER_PORT"], nport.to_string());
    assert!(ours.get("HTTPS").is_none() && theirs.get("HTTPS").is_none());
}

#[test]
fn try_files_sends_what_is_not_a_file_to_a_php_front_controller() {
    let fdir = tempfile::tempdir().unwrap();
    let sock = fdir.path().join("php.sock");
    let _fpm = Fpm::start(fdir.path(), sock.to_str().unwrap());
    let s = Fixture::new()
        .file(
            "conf.d/a.yaml",
            &format!(
                "vhost: a\nip: 127.0.0.1\nport: {{port0}}\ndocument_root: ../www\n\
                 access:\n  - path: /\n    handler: rewrite\n    options: {{ try_files: [\"$path\"], fallback: \"/index.php?$query\" }}\n\
                 routes:\n  - path: /\n    handler: fastcgi\n    options: {{ address: \"unix:{}\" }}\n  - path: /\n    handler: static\n",
                sock.display()
            ),
        )
        .file("www/index.php", FRONT)
        .file("www/info.php", INFO)
        .file("www/style.css", "body{}\n")
        .start();
    // A file: itself.
    let r = get(s.port(), "/style.css", "a");
    assert_eq!(r.text(), "body{}\n");
    let r = get(s.port(), "/info.php?x=1", "a");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["SCRIPT_NAME"], "/info.php");
    // Anything else: the front controller, with the client's target.
    let r = get(s.port(), "/blog/2026/hello?page=2", "a");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "front /blog/2026/hello?page=2 /index.php\n");
}
