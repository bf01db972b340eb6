//! Turns a finished exchange (`LogEntry`) into one access-log line, and
//! holds the escaping and timestamp helpers the error log shares.
//!
//! Invariant of every function here: the text produced holds no raw line
//! break, so one record is always exactly one line of the file.

use base64::Engine;
use serde::Deserialize;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tamada_sdk::{LogEntry, Request};

/// The access log's layout (`format:` option).
#[derive(Deserialize, schemars::JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// nginx's `combined`: common plus referer and user agent.
    #[default]
    Combined,
    /// The Common Log Format.
    Common,
    /// One JSON object per line.
    Json,
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// nginx's escaping of logged variables: `"`, `\`, control characters,
/// DEL and every byte >= 0x80 become `\xHH`, so a field never holds a
/// quote or a line break and the line stays parseable.
pub fn escape_into(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.push('\\');
            out.push('x');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        } else {
            out.push(b as char);
        }
    }
}

/// A field that may be missing: `-` then, as nginx writes it.
fn field_into(out: &mut String, value: Option<&[u8]>) {
    match value {
        Some(v) => escape_into(out, v),
        None => out.push('-'),
    }
}

/// The user name, the one field of the line without quotes around it:
/// escaped as the others, and a space too (`\x20`), so that a user name
/// like `6.6.6.6 - realuser` cannot forge the fields that follow it. A
/// user named `-` is written `\x2D`, never as the `-` of no user.
fn user_into(out: &mut String, value: Option<&[u8]>) {
    match value {
        None => out.push('-'),
        Some(v) => {
            for (i, &b) in v.iter().enumerate() {
                if b == b' ' || (b == b'-' && i == 0 && v.len() == 1) {
                    out.push_str(if b == b' ' { "\\x20" } else { "\\x2D" });
                } else {
                    escape_into(out, &[b]);
                }
            }
        }
    }
}

/// Escapes a message for the error log: readable (UTF-8 kept), but one
/// line: `\` -> `\\`, newline -> `\n`, CR -> `\r`, tab -> `\t`, any other
/// control character -> `\xHH`.
pub fn escape_message_into(out: &mut String, msg: &str) {
    for c in msg.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let b = c as u32 as u8;
                out.push('\\');
                out.push('x');
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 15) as usize] as char);
            }
            c => out.push(c),
        }
    }
}

/// The user an access rule authenticated (`auth_basic`), else the user
/// name of an `Authorization: Basic` header (nginx's `$remote_user`);
/// `None` for any other scheme or a malformed value.
pub fn remote_user(req: &Request) -> Option<Vec<u8>> {
    if let Some(u) = req.user() {
        return Some(u.name.into_bytes());
    }
    let v = req.header_bytes("authorization")?;
    let v = v.trim_ascii();
    let split = v.iter().position(|b| b.is_ascii_whitespace())?;
    let (scheme, cred) = v.split_at(split);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(cred.trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = &decoded[..colon];
    (!user.is_empty()).then(|| user.to_vec())
}

/// UTC calendar fields of a time. httpdate does the calendar arithmetic;
/// its IMF-fixdate (`Thu, 26 Nov 2026 01:40:53 GMT`) is fixed-width, so
/// the fields are found by position.
pub struct Stamp {
    imf: String,
    micros: u32,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl Stamp {
    pub fn new(t: SystemTime) -> Stamp {
        // httpdate panics outside 1970..=9999; clamp (a log line with a
        // wrong year beats a lost one).
        let max = UNIX_EPOCH + Duration::from_secs(253_402_300_799);
        let t = t.clamp(UNIX_EPOCH, max);
        let micros = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_micros())
            .unwrap_or(0);
        Stamp {
            imf: httpdate::fmt_http_date(t),
            micros,
        }
    }
    fn day(&self) -> &str {
        &self.imf[5..7]
    }
    fn month(&self) -> &str {
        &self.imf[8..11]
    }
    fn month_number(&self) -> usize {
        MONTHS.iter().position(|m| *m == self.month()).unwrap_or(0) + 1
    }
    fn year(&self) -> &str {
        &self.imf[12..16]
    }
    fn hms(&self) -> &str {
        &self.imf[17..25]
    }
    /// nginx's `$time_local` (always UTC here): `26/Nov/2026:01:40:53 +0000`.
    pub fn clf(&self) -> String {
        format!(
            "{}/{}/{}:{} +0000",
            self.day(),
            self.month(),
            self.year(),
            self.hms()
        )
    }
    /// ISO 8601 in UTC with milliseconds: `2026-11-26T01:40:53.123Z`.
    pub fn iso(&self) -> String {
        format!(
            "{}-{:02}-{}T{}.{:03}Z",
            self.year(),
            self.month_number(),
            self.day(),
            self.hms(),
            self.micros / 1000
        )
    }
}

/// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`.
fn protocol(req: &Request) -> &'static str {
    match req.version() {
        (1, 0) => "HTTP/1.0",
        (2, _) => "HTTP/2.0",
        _ => "HTTP/1.1",
    }
}

/// `$time_local` for a time, formatted once per second per thread.
/// PERF: formatting the date was the largest part of a line's cost.
fn clf_time(t: SystemTime) -> std::rc::Rc<str> {
    use std::cell::RefCell;
    thread_local! {
        static CACHE: RefCell<(u64, std::rc::Rc<str>)> = RefCell::new((u64::MAX, "".into()));
    }
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (secs, Stamp::new(t).clf().into());
        }
        c.1.clone()
    })
}

/// When the entry is logged: the end of the response (nginx writes
/// `$time_local` when the request is done).
fn end_time(e: &LogEntry) -> SystemTime {
    e.start() + e.duration()
}

/// One access-log line, newline included.
pub fn access_line(format: Format, vhost: &str, e: &LogEntry) -> String {
    match format {
        Format::Combined => clf_line(e, true),
        Format::Common => clf_line(e, false),
        Format::Json => json_line(vhost, e),
    }
}

/// `$remote_addr - $remote_user [$time_local] "$request" $status
/// $body_bytes_sent` and, for combined, `"$http_referer" "$http_user_agent"`.
fn clf_line(e: &LogEntry, combined: bool) -> String {
    let req = e.request();
    let mut s = String::with_capacity(256);
    let _ = write!(s, "{} - ", req.peer_addr().ip());
    user_into(&mut s, remote_user(&req).as_deref());
    s.push_str(" [");
    s.push_str(&clf_time(end_time(e)));
    s.push_str("] \"");
    escape_into(&mut s, req.method().as_bytes());
    s.push(' ');
    escape_into(&mut s, req.target().as_bytes());
    s.push(' ');
    s.push_str(protocol(&req));
    let _ = write!(s, "\" {} {}", e.status(), e.body_bytes_sent());
    if combined {
        s.push_str(" \"");
        field_into(&mut s, req.header_bytes("referer"));
        s.push_str("\" \"");
        field_into(&mut s, req.header_bytes("user-agent"));
        s.push('"');
    }
    s.push('\n');
    s
}

fn lossy(b: Option<&[u8]>) -> Option<String> {
    b.map(|b| String::from_utf8_lossy(b).into_owned())
}

/// One JSON object, its keys in alphabetical order; serde_json escapes
/// quotes, backslashes and control characters, and compact output never
/// holds a raw newline.
///
/// PERF: written straight into one buffer (serde_json only escapes the
/// strings): building a `serde_json::Value` map per line was 15% of the
/// server's CPU on 1 KiB responses over TLS.
fn json_line(vhost: &str, e: &LogEntry) -> String {
    let req = e.request();
    // SDK 1.2: what TLS negotiated (null for plain HTTP, and on servers
    // that do not say).
    let tls = req.tls();
    let mut j = Json(Vec::with_capacity(512));
    j.0.push(b'{');
    j.num("body_bytes_sent", e.body_bytes_sent());
    j.num("bytes_received", e.bytes_received());
    j.num("bytes_sent", e.bytes_sent());
    j.raw("completed", if e.completed() { "true" } else { "false" });
    j.num("duration_us", e.duration().as_micros() as u64);
    j.opt("error", e.error());
    j.str("method", req.method());
    j.key("notes");
    j.0.push(b'{');
    for (i, (k, v)) in e.notes().iter().enumerate() {
        if i > 0 {
            j.0.push(b',');
        }
        j.string(k);
        j.0.push(b':');
        j.string(v);
    }
    j.0.extend_from_slice(b"},");
    j.str("protocol", protocol(&req));
    j.opt("referer", lossy(req.header_bytes("referer")).as_deref());
    j.str("remote_addr", &req.peer_addr().ip().to_string());
    j.opt(
        "remote_user",
        lossy(remote_user(&req).as_deref()).as_deref(),
    );
    j.str("scheme", req.scheme());
    j.num("status", e.status() as u64);
    j.str("target", req.target());
    j.str("time", &Stamp::new(end_time(e)).iso());
    j.opt("tls_cipher", tls.as_ref().map(|t| t.cipher.as_str()));
    j.raw(
        "tls_resumed",
        match &tls {
            Some(t) if t.resumed => "true",
            Some(_) => "false",
            None => "null",
        },
    );
    j.opt("tls_version", tls.as_ref().map(|t| t.version.as_str()));
    j.opt(
        "user_agent",
        lossy(req.header_bytes("user-agent")).as_deref(),
    );
    j.str("vhost", vhost);
    // The last comma closes the object.
    if let Some(last) = j.0.last_mut() {
        *last = b'}';
    }
    j.0.push(b'\n');
    String::from_utf8(j.0).unwrap_or_default()
}

/// A JSON object being written: each field ends with a comma.
struct Json(Vec<u8>);

impl Json {
    fn string(&mut self, s: &str) {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.0, s);
    }
    fn key(&mut self, k: &str) {
        self.0.push(b'"');
        self.0.extend_from_slice(k.as_bytes());
        self.0.extend_from_slice(b"\":");
    }
    fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        self.string(v);
        self.0.push(b',');
    }
    fn opt(&mut self, k: &str, v: Option<&str>) {
        match v {
            Some(v) => self.str(k, v),
            None => self.raw(k, "null"),
        }
    }
    fn num(&mut self, k: &str, v: u64) {
        self.key(k);
        self.0.extend_from_slice(v.to_string().as_bytes());
        self.0.push(b',');
    }
    fn raw(&mut self, k: &str, v: &str) {
        self.key(k);
        self.0.extend_from_slice(v.as_bytes());
        self.0.push(b',');
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tamada_sdk::abi::LogEntryV1;
    use tamada_sdk::testing::TestRequest;

    /// Runs `f` on a `LogEntry` for `req` (2026-11-26 01:40:53 UTC, 1.5 ms).
    pub(crate) fn with_entry<R>(req: &TestRequest, f: impl FnOnce(&LogEntry) -> R) -> R {
        req.with(|r| {
            let raw = LogEntryV1 {
                request: r.raw(),
                status: 200,
                body_bytes_sent: 1234,
                bytes_sent: 1400,
                bytes_received: 80,
                duration_us: 1500,
                start_unix_us: 1_795_657_253_000_000 - 1500,
                error: "".into(),
                completed: true,
            };
            f(&LogEntry::from_raw(&raw))
        })
    }

    #[test]
    fn escapes_like_nginx() {
        let mut s = String::new();
        escape_into(&mut s, b"a\"b\\c\n\x01\x7f\xc3\xa9 ok");
        assert_eq!(s, r#"a\x22b\x5Cc\x0A\x01\x7F\xC3\xA9 ok"#);
    }

    #[test]
    fn escapes_messages_onto_one_line() {
        let mut s = String::new();
        escape_message_into(&mut s, "line1\nline2\r\t\\ é\x1b");
        assert_eq!(s, r"line1\nline2\r\t\\ é\x1B");
    }

    #[test]
    fn timestamps() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_657_253_123_456);
        let st = Stamp::new(t);
        assert_eq!(st.clf(), "26/Nov/2026:01:40:53 +0000");
        assert_eq!(st.iso(), "2026-11-26T01:40:53.123Z");
        assert_eq!(
            Stamp::new(UNIX_EPOCH - Duration::from_secs(5)).clf(),
            "01/Jan/1970:00:00:00 +0000"
        );
    }

    #[test]
    fn combined_line_exact() {
        let req = TestRequest::get("/a%20b?x=1")
            .header("Referer", "http://r/")
            .header("User-Agent", "curl/8.0");
        let line = with_entry(&req, |e| access_line(Format::Combined, "v", e));
        assert_eq!(
            line,
            "127.0.0.1 - - [26/Nov/2026:01:40:53 +0000] \"GET /a%20b?x=1 HTTP/1.1\" 200 1234 \"http://r/\" \"curl/8.0\"\n"
        );
        let line = with_entry(&req, |e| access_line(Format::Common, "v", e));
        assert_eq!(
            line,
            "127.0.0.1 - - [26/Nov/2026:01:40:53 +0000] \"GET /a%20b?x=1 HTTP/1.1\" 200 1234\n"
        );
    }

    #[test]
    fn hostile_user_agent_stays_one_parseable_line() {
        let req = TestRequest::get("/").header(
            "User-Agent",
            b"evil \"quoted\" \\ back\nslash \xff".as_slice(),
        );
        let line = with_entry(&req, |e| access_line(Format::Combined, "v", e));
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.ends_with("\"-\" \"evil \\x22quoted\\x22 \\x5C back\\x0Aslash \\xFF\"\n"));
        assert_eq!(line.matches('"').count(), 6, "{line}");
    }

    #[test]
    fn remote_user_from_basic_auth() {
        // "alice:secret"
        let req = TestRequest::get("/").header("Authorization", "Basic YWxpY2U6c2VjcmV0");
        let line = with_entry(&req, |e| access_line(Format::Common, "v", e));
        assert!(line.starts_with("127.0.0.1 - alice ["), "{line}");
        for bad in [
            "Bearer YWxpY2U6c2VjcmV0",
            "Basic !!!",
            "Basic YWxpY2U=",
            "Basic",
        ] {
            let req = TestRequest::get("/").header("Authorization", bad);
            req.with(|r| assert_eq!(remote_user(r), None, "{bad}"));
        }
        // Issue 16, defect 9: "6.6.6.6 - realuser:x" forged the line's
        // first fields; the spaces are escaped.
        let req =
            TestRequest::get("/").header("Authorization", "Basic Ni42LjYuNiAtIHJlYWx1c2VyOng=");
        let line = with_entry(&req, |e| access_line(Format::Combined, "v", e));
        assert!(
            line.starts_with("127.0.0.1 - 6.6.6.6\\x20-\\x20realuser ["),
            "{line}"
        );
        assert_eq!(line.split(' ').nth(2), Some("6.6.6.6\\x20-\\x20realuser"));
        // "q\"x:y": a quote in the user name is escaped.
        let req = TestRequest::get("/").header("authorization", "basic cSJ4Onk=");
        let line = with_entry(&req, |e| access_line(Format::Common, "v", e));
        assert!(line.starts_with("127.0.0.1 - q\\x22x ["), "{line}");
    }

    #[test]
    fn json_line_is_one_valid_object() {
        let req = TestRequest::new("POST", "/j?\"q\"")
            .header("User-Agent", "a\"b\\c\nd")
            .header("Authorization", "Basic YWxpY2U6c2VjcmV0");
        let line = with_entry(&req, |e| access_line(Format::Json, "site\"1", e));
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["vhost"], "site\"1");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["target"], "/j?\"q\"");
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["body_bytes_sent"], 1234);
        assert_eq!(v["bytes_sent"], 1400);
        assert_eq!(v["bytes_received"], 80);
        assert_eq!(v["duration_us"], 1500);
        assert_eq!(v["user_agent"], "a\"b\\c\nd");
        assert_eq!(v["remote_user"], "alice");
        assert_eq!(v["referer"], serde_json::Value::Null);
        assert_eq!(v["time"], "2026-11-26T01:40:53.000Z");
        assert_eq!(v["error"], serde_json::Value::Null);
    }
}
