//! The plugin template `examples/hello-plugin`, taken the way its README
//! tells a new user: built as a project of its own, put into a plugin
//! folder, checked with `-t` and `--plugins`, and served by the real
//! server.

use crate::harness::*;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tamada_sdk::abi::{SDK_MAJOR, SDK_MINOR};

/// A plugin folder of symlinks: the workspace's plugins and the template.
fn plugin_folder(into: &Path) -> PathBuf {
    let dir = into.join("plugins");
    std::fs::create_dir_all(&dir).expect("plugin dir");
    for e in std::fs::read_dir(real_plugin_dir()).expect("read target/debug") {
        let p = e.expect("entry").path();
        let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if n.starts_with("libtamada_") && n.ends_with(".so") {
            std::os::unix::fs::symlink(&p, dir.join(n)).expect("symlink");
        }
    }
    let so = template_plugin_dir().join("libhello_plugin.so");
    assert!(so.is_file(), "the template build made no {}", so.display());
    std::os::unix::fs::symlink(&so, dir.join("libhello_plugin.so")).expect("symlink");
    dir
}

/// The template's own `version = "..."`, which `--plugins` must show.
fn template_version() -> String {
    let toml = std::fs::read_to_string(workspace_root().join("examples/hello-plugin/Cargo.toml"))
        .expect("read the template's Cargo.toml");
    toml.lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("a version line")
        .to_owned()
}

/// Writes conf.d/hello.yaml with `routes` (YAML lines) and a www folder.
fn write_conf(dir: &Path, port: u16, routes: &str) -> PathBuf {
    let conf = dir.join("conf.d");
    std::fs::create_dir_all(&conf).expect("conf.d");
    std::fs::create_dir_all(dir.join("www")).expect("www");
    std::fs::write(
        conf.join("hello.yaml"),
        format!(
            "vhost: hello.test\nip: 127.0.0.1\nport: {port}\ndocument_root: ../www\nroutes:\n{routes}"
        ),
    )
    .expect("write hello.yaml");
    conf
}

/// The response with the values of `Date` and `Server` (which change)
/// replaced by `*`.
fn stable(resp: &str) -> String {
    resp.split("\r\n")
        .map(|l| {
            for h in ["Date: ", "Server: "] {
                if l.starts_with(h) {
                    return format!("{h}*");
                }
            }
            l.to_owned()
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

#[test]
fn the_template_builds_loads_and_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let conf = write_conf(
        dir.path(),
        port,
        "  - path: /
    handler: hello
    options: { greeting: Howdy, skip: /other }
  - path: /
    handler: placeholder
    options: { body: \"fallback\\n\", content_type: text/plain }
  - path: /loud/
    handler: hello
    options: { greeting: hi, uppercase: true }
  - path: /slow/
    handler: hello
    options: { greeting: later, backend_ms: 300 }
  - path: /filtered/
    handler: placeholder
    options: { body: \"quiet\\n\", content_type: text/plain }
    filters: [{ handler: hello, options: { greeting: hey, shout: true } }]
",
    );
    let plugins = plugin_folder(dir.path());
    let (conf_s, plugins_s) = (conf.to_str().unwrap(), plugins.to_str().unwrap());

    // `tamada --plugins` lists it with its version and SDK version.
    let (code, out, err) = run_tamada(&["--plugins", "--plugin-dir", plugins_s]);
    assert_eq!(code, 0, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("hello\t"))
        .unwrap_or_else(|| panic!("`hello` is not listed:\n{out}"));
    assert_eq!(
        line,
        format!(
            "hello\t{}\tSDK {SDK_MAJOR}.{SDK_MINOR}\t{}",
            template_version(),
            plugins.join("libhello_plugin.so").display()
        )
    );
    assert!(!out.contains("skipped"), "{out}");

    // `tamada -t` builds the routes: the constructor runs and logs,
    // tagged with the plugin's declared name (regression: the server log
    // said `hello_plugin:`, the crate's name, where error logs said `hello:`).
    let (code, out, err) = run_tamada(&["-t", "-c", conf_s, "--plugin-dir", plugins_s]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("hello: greeting \"Howdy\" on / of vhost hello.test"),
        "{err}"
    );

    let s = TestServer::spawn(dir, &conf, &plugins, vec![port], &[]);
    assert!(
        s.log.wait_for(
            "hello: greeting \"HI\" on /loud/ of vhost hello.test",
            Duration::from_secs(5)
        ),
        "{}",
        s.log.text()
    );

    let got = raw(
        port,
        b"GET /w%6Frld HTTP/1.1\r\nHost: hello.test\r\nConnection: close\r\n\r\n",
    );
    let want = "HTTP/1.1 200 OK\r\nServer: *\r\nDate: *\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 13\r\nConnection: close\r\n\r\nHowdy /world\n";
    assert_eq!(stable(&got), want, "\nwant {want:?}\n got {got:?}");

    // HEAD: the same head, no body.
    let got = raw(
        port,
        b"HEAD /world HTTP/1.1\r\nHost: hello.test\r\nConnection: close\r\n\r\n",
    );
    let want_head = want.strip_suffix("Howdy /world\n").unwrap();
    assert_eq!(stable(&got), want_head);

    // `skip:` declines, and the next route of the same prefix answers.
    for path in ["/other", "/other/page"] {
        let r = get(port, path, "hello.test");
        assert_eq!((r.status, r.text().as_str()), (200, "fallback\n"), "{path}");
    }
    // Only on a segment boundary.
    let r = get(port, "/otherwise", "hello.test");
    assert_eq!(r.text(), "Howdy /otherwise\n");

    // A second instance of the plugin, with its own options.
    let r = get(port, "/loud/x", "hello.test");
    assert_eq!((r.status, r.text().as_str()), (200, "HI /loud/x\n"));

    // The template's filter: another handler's answer, greeted and shouted.
    let r = get(port, "/filtered/x", "hello.test");
    assert_eq!(r.header("x-greeting"), Some("hey"));
    assert_eq!(r.text(), "QUIET\n");

    // The blocking-work pattern: slow answers offloaded, the loop free.
    let slow = std::thread::spawn(move || get(port, "/slow/a", "hello.test"));
    std::thread::sleep(std::time::Duration::from_millis(50));
    let t = std::time::Instant::now();
    assert_eq!(get(port, "/loud/y", "hello.test").text(), "HI /loud/y\n");
    assert!(
        t.elapsed() < std::time::Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    let r = slow.join().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "later /slow/a\n"));

    let r = Client::connect(port)
        .request("POST /x HTTP/1.1\r\nHost: hello.test\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
}

#[test]
fn a_typo_in_the_template_options_fails_dash_t_naming_file_and_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = write_conf(
        dir.path(),
        free_port(),
        "  - path: /hello/\n    handler: hello\n    options: { greting: hi }\n",
    );
    let plugins = plugin_folder(dir.path());
    let (code, out, err) = run_tamada(&[
        "-t",
        "-c",
        conf.to_str().unwrap(),
        "--plugin-dir",
        plugins.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        // The misspelt key's own line and column in the vhost file.
        err.contains("hello.yaml:8:16: routes[0] (/hello/): plugin `hello` refused its options: unknown field `greting`"),
        "{err}"
    );
}
