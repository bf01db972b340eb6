//! The test harness: builds the plugin `.so` files once, writes a temporary
//! conf.d, starts the real `tamada` binary on free loopback ports, waits
//! for its "ready" line (bounded), and kills it on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("server/ has a parent")
        .to_owned()
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The workspace's plugins, built once into target/debug.
pub fn real_plugin_dir() -> PathBuf {
    static DONE: OnceLock<PathBuf> = OnceLock::new();
    DONE.get_or_init(|| {
        let root = workspace_root();
        let st = Command::new(cargo())
            .current_dir(&root)
            .args(["build", "--quiet", "--workspace", "--lib"])
            .status()
            .expect("run cargo build for the plugins");
        assert!(st.success(), "building the workspace plugins failed");
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_tamada"));
        bin.parent().expect("binary folder").to_owned()
    })
    .clone()
}

/// The test-only plugins, built once into target/testplugins.
pub fn test_plugin_dir() -> PathBuf {
    static DONE: OnceLock<PathBuf> = OnceLock::new();
    DONE.get_or_init(|| {
        let root = workspace_root();
        let target = root.join("target").join("testplugins");
        // Each a workspace of its own: the test plugins; the frozen SDK
        // 1.0, 1.1, 1.2 and 1.3 compatibility fixtures (their vendored crates are
        // also called `tamada-sdk`); a plugin built with panic = "abort"
        // (the profile is the point), exporting its tables by hand.
        let builds: [(&str, &[&str]); 6] = [
            (".", &[]),
            ("frozen-v1_0", &[]),
            ("frozen-v1_1", &[]),
            ("frozen-v1_2", &[]),
            ("frozen-v1_3", &[]),
            ("abort", &["-p", "test-abort-raw"]),
        ];
        for (dir, extra) in builds {
            let st = Command::new(cargo())
                .current_dir(root.join("testplugins").join(dir))
                .args(["build", "--quiet"])
                .args(extra)
                .arg("--target-dir")
                .arg(&target)
                .status()
                .unwrap_or_else(|e| panic!("run cargo build in testplugins/{dir}: {e}"));
            assert!(st.success(), "building testplugins/{dir} failed");
        }
        target.join("debug")
    })
    .clone()
}

/// Which plugins a test server loads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Plugins {
    /// The workspace's plugins plus `echo`.
    Standard,
    /// Standard plus the broken ones (not a plugin, wrong major, bad layout,
    /// a duplicate name).
    WithBroken,
}

/// A folder of symlinks to the chosen `.so` files.
pub fn plugin_dir(which: Plugins, into: &Path) -> PathBuf {
    let dir = into.join("plugins");
    std::fs::create_dir_all(&dir).expect("plugin dir");
    let real = real_plugin_dir();
    for e in std::fs::read_dir(&real).expect("read target/debug") {
        let p = e.expect("entry").path();
        let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if n.starts_with("libtamada_") && n.ends_with(".so") {
            std::os::unix::fs::symlink(&p, dir.join(n)).expect("symlink");
        }
    }
    let test = test_plugin_dir();
    let mut names = vec![
        "libtest_echo.so",
        "libtest_place.so",
        "libtest_minimal.so",
        "libtest_frozen_v1_0.so",
        "libtest_frozen_v1_1.so",
        "libtest_frozen_v1_2.so",
        "libtest_frozen_v1_3.so",
    ];
    if which == Plugins::WithBroken {
        names.extend([
            "libtest_notplugin.so",
            "libtest_wrongmajor.so",
            "libtest_badlayout.so",
            "libtest_zdup.so",
            "libtest_abort_raw.so",
        ]);
    }
    for n in names {
        let src = if n == "libtest_zdup.so" {
            test.join("libtest_dup.so")
        } else {
            test.join(n)
        };
        std::os::unix::fs::symlink(&src, dir.join(n)).expect("symlink");
    }
    dir
}

/// A free loopback port (bound and released; the kernel hands ports out in
/// turn, so it is not reused at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The server's stderr, collected by a thread.
#[derive(Default)]
pub struct LogBuf {
    text: Mutex<String>,
    changed: Condvar,
}

impl LogBuf {
    pub fn text(&self) -> String {
        self.text.lock().expect("log lock").clone()
    }
    /// Waits (bounded) until the log contains `needle` `count` times.
    pub fn wait_for_n(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut t = self.text.lock().expect("log lock");
        loop {
            if t.matches(needle).count() >= count {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            t = self
                .changed
                .wait_timeout(t, deadline - now)
                .expect("log lock")
                .0;
        }
    }
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_n(needle, 1, timeout)
    }
}

/// A running `tamada`.
pub struct TestServer {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub ports: Vec<u16>,
    pub log: Arc<LogBuf>,
}

/// The files of a test configuration. `{port0}`, `{port1}`... are replaced
/// by free ports, `{dir}` by the temporary folder.
pub struct Fixture {
    pub files: Vec<(String, String)>,
    pub plugins: Plugins,
    pub ports: usize,
    pub args: Vec<String>,
    pub envs: Vec<(String, String)>,
}

impl Fixture {
    pub fn new() -> Self {
        Fixture {
            files: Vec::new(),
            plugins: Plugins::Standard,
            ports: 1,
            args: Vec::new(),
            envs: Vec::new(),
        }
    }
    pub fn file(mut self, name: &str, text: &str) -> Self {
        self.files.push((name.to_owned(), text.to_owned()));
        self
    }
    pub fn plugins(mut self, p: Plugins) -> Self {
        self.plugins = p;
        self
    }
    pub fn ports(mut self, n: usize) -> Self {
        self.ports = n;
        self
    }
    /// An environment variable for the server (`{dir}` is expanded).
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.envs.push((k.to_owned(), v.to_owned()));
        self
    }
    #[allow(dead_code)]
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_owned());
        self
    }

    /// Writes the files; returns (tempdir, conf.d path, plugin dir, ports).
    pub fn write(&self) -> (tempfile::TempDir, PathBuf, PathBuf, Vec<u16>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<u16> = (0..self.ports).map(|_| free_port()).collect();
        std::fs::create_dir_all(dir.path().join("conf.d")).expect("conf.d");
        std::fs::create_dir_all(dir.path().join("www")).expect("www");
        for (name, text) in &self.files {
            let text = self.expand(text, dir.path(), &ports);
            let p = dir.path().join(name);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(&p, text).expect("write fixture file");
        }
        let plugins = plugin_dir(self.plugins, dir.path());
        let conf = dir.path().join("conf.d");
        (dir, conf, plugins, ports)
    }

    pub fn expand(&self, text: &str, dir: &Path, ports: &[u16]) -> String {
        let mut t = text.replace("{dir}", &dir.to_string_lossy());
        for (i, p) in ports.iter().enumerate() {
            t = t.replace(&format!("{{port{i}}}"), &p.to_string());
        }
        t
    }

    /// Writes the files and runs `tamada -t` on them: (exit code,
    /// stdout, stderr).
    pub fn check(self) -> (i32, String, String) {
        let (_dir, conf, plugins, _) = self.write();
        run_tamada(&[
            "-t",
            "--plugin-dir",
            plugins.to_str().expect("utf-8 path"),
            "-c",
            conf.to_str().expect("utf-8 path"),
        ])
    }

    pub fn start(self) -> TestServer {
        let (dir, conf, plugins, ports) = self.write();
        let envs: Vec<(String, String)> = self
            .envs
            .iter()
            .map(|(k, v)| (k.clone(), self.expand(v, dir.path(), &ports)))
            .collect();
        TestServer::spawn_with(dir, &conf, &plugins, ports, &self.args, &envs)
    }
}

/// One static vhost `a` on `{port0}` with an access log in `logs/`, a
/// home page, and this `server.yaml`.
pub fn logged_site(server_yaml: &str) -> Fixture {
    Fixture::new()
        .file("conf.d/server.yaml", server_yaml)
        .file(
            "conf.d/a.yaml",
            "vhost: a\nip: 127.0.0.1\nport: {port0}\ndocument_root: ../www\nlog: ../logs\n",
        )
        .file("www/index.html", "home\n")
        .file("logs/.keep", "")
}

/// A vhost file for `name` on `port` routing `/` to echo with a tag.
pub fn echo_vhost(name: &str, port: &str, extra: &str) -> String {
    format!(
        "vhost: {name}\nip: 127.0.0.1\nport: {port}\ndocument_root: ../www\n{extra}routes:\n  - path: /\n    handler: echo\n    options: {{ tag: {name} }}\n"
    )
}

/// Runs `tamada` with arguments and returns (exit code, stdout, stderr).
pub fn run_tamada(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tamada"))
        .args(args)
        .output()
        .expect("run tamada");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl TestServer {
    pub fn spawn(
        dir: tempfile::TempDir,
        conf: &Path,
        plugins: &Path,
        ports: Vec<u16>,
        args: &[String],
    ) -> TestServer {
        Self::spawn_with(dir, conf, plugins, ports, args, &[])
    }

    pub fn spawn_with(
        dir: tempfile::TempDir,
        conf: &Path,
        plugins: &Path,
        ports: Vec<u16>,
        args: &[String],
        envs: &[(String, String)],
    ) -> TestServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tamada"))
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .arg("-c")
            .arg(conf)
            .arg("--plugin-dir")
            .arg(plugins)
            .args(["--workers", "8"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tamada");
        let log = Arc::new(LogBuf::default());
        let stderr = child.stderr.take().expect("stderr piped");
        let l = log.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                if std::env::var_os("TAMADA_TEST_LOG").is_some() {
                    eprint!("server: {line}");
                }
                l.text.lock().expect("log lock").push_str(&line);
                l.changed.notify_all();
                line.clear();
            }
        });
        let server = TestServer {
            child,
            dir,
            ports,
            log,
        };
        if !server.log.wait_for("tamada ready", Duration::from_secs(30)) {
            panic!("server did not start:\n{}", server.log.text());
        }
        server
    }

    pub fn port(&self) -> u16 {
        self.ports[0]
    }
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port(), path)
    }
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("conf.d")
    }
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let r = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(r, 0, "kill failed");
    }
    /// Waits (bounded) for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw HTTP/1.1 client connection that reads responses one at a time.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// A response read off the wire.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// A `key=value` line of the echo plugin's reply.
    pub fn echo(&self, key: &str) -> String {
        let t = self.text();
        t.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_owned))
            .unwrap_or_else(|| panic!("no `{key}=` in echo reply:\n{t}"))
    }
}

impl Client {
    /// A client on a socket opened elsewhere.
    pub fn from_stream(stream: TcpStream) -> Client {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        Client {
            stream,
            buf: Vec::new(),
        }
    }
    pub fn connect(port: u16) -> Client {
        Client::from_stream(TcpStream::connect(("127.0.0.1", port)).expect("connect"))
    }
    pub fn send(&mut self, data: &[u8]) {
        self.stream.write_all(data).expect("send");
    }
    fn fill(&mut self) -> usize {
        let mut tmp = [0u8; 65536];
        match self.stream.read(&mut tmp) {
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                n
            }
            Err(e) => panic!(
                "read failed: {e} (have {:?})",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }
    /// Whether the server closed the connection (bounded wait).
    pub fn closed(&mut self) -> bool {
        self.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut tmp = [0u8; 1024];
        match self.stream.read(&mut tmp) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
    /// Reads one response; `head_request` for responses to HEAD.
    pub fn read_response(&mut self, head_request: bool) -> Resp {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.fill() == 0 {
                panic!(
                    "connection closed before a response head: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let mut resp = Resp {
            status,
            head,
            headers,
            body: Vec::new(),
        };
        if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
            return resp;
        }
        if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let line_end = loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        break i;
                    }
                    assert!(self.fill() > 0, "closed inside chunked body");
                };
                let size_line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size =
                    usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                        .unwrap_or_else(|_| panic!("bad chunk size {size_line:?}"));
                self.buf.drain(..line_end + 2);
                while self.buf.len() < size + 2 {
                    assert!(self.fill() > 0, "closed inside chunk");
                }
                resp.body.extend_from_slice(&self.buf[..size]);
                assert_eq!(
                    &self.buf[size..size + 2],
                    b"\r\n",
                    "chunk not followed by CRLF"
                );
                self.buf.drain(..size + 2);
                if size == 0 {
                    break;
                }
            }
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len.parse().expect("content-length");
            while self.buf.len() < len {
                assert!(self.fill() > 0, "closed inside body");
            }
            resp.body = self.buf.drain(..len).collect();
        } else {
            while self.fill() > 0 {}
            resp.body = std::mem::take(&mut self.buf);
        }
        resp
    }
    /// Sends a request and reads its response.
    pub fn request(&mut self, req: &str) -> Resp {
        self.send(req.as_bytes());
        self.read_response(req.starts_with("HEAD "))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One request on a fresh connection.
pub fn get(port: u16, path: &str, host: &str) -> Resp {
    Client::connect(port).request(&format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    ))
}

/// Sends raw bytes and reads everything until the server closes.
pub fn raw(port: u16, data: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(data).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The plugin template `examples/hello-plugin` (its own Cargo project),
/// built once into target/testplugins so that it shares the compiled SDK
/// dependencies with the test-only plugins.
pub fn template_plugin_dir() -> PathBuf {
    static DONE: OnceLock<PathBuf> = OnceLock::new();
    DONE.get_or_init(|| {
        let root = workspace_root();
        let target = root.join("target").join("testplugins");
        let st = Command::new(cargo())
            .current_dir(&root)
            .args([
                "build",
                "--quiet",
                "--manifest-path",
                "examples/hello-plugin/Cargo.toml",
                "--target-dir",
            ])
            .arg(&target)
            .status()
            .expect("run cargo build for the plugin template");
        assert!(st.success(), "building examples/hello-plugin failed");
        target.join("debug")
    })
    .clone()
}
