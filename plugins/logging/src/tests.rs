//! Unit tests of the logger as the host drives it: options, the `log` and
//! `record` phases, flush and reopen, on real files in a temporary folder.

use super::*;
use tamada_sdk::abi::{RecordV1, VhostV1};
use tamada_sdk::request::addr_to_raw;
use tamada_sdk::testing::TestRequest;

/// A vhost named `site` whose YAML file and `log:` folder are in `dir`.
fn options_in<'a>(dir: &'a str, conf: &'a str, yaml: &'a str, log_dir: &'a str) -> Options<'a> {
    Options::new(
        yaml,
        Role::Logger,
        Vhost::from_raw(VhostV1 {
            name: "site".into(),
            document_root: dir.into(),
            cgi_bin: "".into(),
            log_dir: log_dir.into(),
            config_file: conf.into(),
        }),
        "",
    )
}

struct Env {
    dir: tempfile::TempDir,
    conf: String,
    logs: String,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        Env {
            conf: dir.path().join("site.yaml").to_string_lossy().into_owned(),
            logs: logs.to_string_lossy().into_owned(),
            dir,
        }
    }
    fn build(&self, yaml: &str) -> Result<Logging, String> {
        let d = self.dir.path().to_string_lossy().into_owned();
        new(&options_in(&d, &self.conf, yaml, &self.logs))
    }
    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(Path::new(&self.logs).join(name)).unwrap_or_default()
    }
}

fn record(l: &Logging, level: u8, source: &str, msg: &str) {
    let raw = RecordV1 {
        level,
        source: source.into(),
        message: msg.into(),
        vhost: "site".into(),
        peer: Some(addr_to_raw("192.0.2.7:5555".parse().unwrap())).into(),
        unix_us: 1_795_657_253_250_000,
    };
    l.record(&Record::from_raw(&raw));
}

#[test]
fn access_lines_go_to_the_log_folder_after_flush() {
    let env = Env::new();
    let l = env.build("").unwrap();
    let req = TestRequest::get("/x").header("User-Agent", "t");
    format::tests::with_entry(&req, |e| l.log(e));
    assert_eq!(env.read("access.log"), "", "buffered until flush");
    l.flush();
    assert_eq!(
        env.read("access.log"),
        "127.0.0.1 - - [26/Nov/2026:01:40:53 +0000] \"GET /x HTTP/1.1\" 200 1234 \"-\" \"t\"\n"
    );
}

#[test]
fn error_records_are_one_line_each_and_filtered_by_level() {
    let env = Env::new();
    let l = env.build("{error_level: warn}").unwrap();
    record(&l, 1, "echo", "first line\nsecond line");
    record(&l, 2, "cgi:x.sh", "careful");
    record(&l, 3, "echo", "too chatty");
    l.shutdown();
    assert_eq!(
        env.read("error.log"),
        "2026-11-26T01:40:53.250Z [error] [client 192.0.2.7] [vhost site] echo: first line\\nsecond line\n\
         2026-11-26T01:40:53.250Z [warn] [client 192.0.2.7] [vhost site] cgi:x.sh: careful\n"
    );
}

#[test]
fn explicit_paths_off_and_json() {
    let env = Env::new();
    let l = env
        .build("{format: json, access_log: custom/a.json, error_log: off}")
        .err()
        .unwrap();
    assert!(l.contains("access_log: cannot open"), "{l}");
    std::fs::create_dir(env.dir.path().join("custom")).unwrap();
    let l = env
        .build("{format: json, access_log: custom/a.json, error_log: off}")
        .unwrap();
    assert!(l.errors.is_none());
    record(&l, 1, "echo", "nowhere");
    format::tests::with_entry(&TestRequest::get("/j"), |e| l.log(e));
    l.flush();
    let text = std::fs::read_to_string(env.dir.path().join("custom/a.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(v["vhost"], "site");
    assert_eq!(v["target"], "/j");
    assert_eq!(env.read("error.log"), "");
}

#[test]
fn vhosts_sharing_a_folder_share_the_writer() {
    let env = Env::new();
    let a = env.build("").unwrap();
    let b = env.build("{format: common}").unwrap();
    assert!(Arc::ptr_eq(
        a.access.as_ref().unwrap(),
        b.access.as_ref().unwrap()
    ));
    format::tests::with_entry(&TestRequest::get("/a"), |e| a.log(e));
    format::tests::with_entry(&TestRequest::get("/b"), |e| b.log(e));
    b.flush();
    let text = env.read("access.log");
    assert_eq!(text.lines().count(), 2, "{text}");
}

#[test]
fn reopen_follows_a_rename() {
    let env = Env::new();
    let l = env.build("").unwrap();
    format::tests::with_entry(&TestRequest::get("/old"), |e| l.log(e));
    let logs = Path::new(&env.logs);
    std::fs::rename(logs.join("access.log"), logs.join("access.log.1")).unwrap();
    l.reopen();
    format::tests::with_entry(&TestRequest::get("/new"), |e| l.log(e));
    l.flush();
    assert!(env.read("access.log.1").contains("/old"));
    assert!(env.read("access.log").contains("/new"));
    assert!(!env.read("access.log").contains("/old"));
}

#[test]
fn bad_options_are_errors() {
    let env = Env::new();
    let e = env.build("{fromat: json}").err().unwrap();
    assert!(e.contains("unknown field `fromat`"), "{e}");
    let e = env.build("{format: xml}").err().unwrap();
    assert!(e.contains("unknown variant `xml`"), "{e}");
    let e = env.build("{error_level: loud}").err().unwrap();
    assert!(e.contains("error_level: `loud`"), "{e}");
    let e = env.build("{access_log: ''}").err().unwrap();
    assert!(e.contains("access_log: an empty path"), "{e}");
    // No folder and no explicit file: nothing to write to.
    let d = env.dir.path().to_string_lossy().into_owned();
    let e = new(&options_in(&d, &env.conf, "", "")).err().unwrap();
    assert!(e.contains("has no `log:` folder"), "{e}");
    // As a route's handler it is refused.
    let req = TestRequest::get("/");
    let e = new(&req.options("")).err().unwrap();
    assert!(e.contains("is a logger"), "{e}");
}
