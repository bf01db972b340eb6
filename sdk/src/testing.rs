//! Test doubles (feature `testing`): build a [`Request`] in a unit test and
//! run a handler on it without loading a `.so`. See
//! [`guide::testing`](crate::guide::testing).
//!
//! ```
//! use tamada_sdk::prelude::*;
//! use tamada_sdk::testing::TestRequest;
//!
//! struct Hi;
//! impl Handler for Hi {
//!     fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
//!         res.status(200).body(format!("hi {}", req.path()));
//!         Outcome::Done
//!     }
//! }
//!
//! let out = TestRequest::get("/there").run(&Hi);
//! assert_eq!(out.outcome, Outcome::Done);
//! assert_eq!(out.response.get_status(), 200);
//! assert_eq!(out.body_bytes(), b"hi /there");
//! ```

use crate::abi::{BodyReaderV1, HeaderV1, LogEntryV1, RequestV1, VhostV1};
use crate::plugin::{Handler, LogEntry, Options, Outcome, Role};
use crate::request::{Request, Vhost, addr_to_raw};
use crate::response::{Body, ResponseBuilder};
use abi_stable::std_types::{ROption, RResult, RSlice, RSliceMut, RStr, RString};
use std::ffi::c_void;
use std::io::Read;
use std::net::SocketAddr;

/// A request made in a test.
#[derive(Clone, Debug)]
pub struct TestRequest {
    /// Method.
    pub method: String,
    /// Raw target.
    pub target: String,
    /// Normalised path (defaults to the target's path, not decoded: set
    /// it as the core would).
    pub path: String,
    /// Query.
    pub query: Option<String>,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body.
    pub body: Vec<u8>,
    /// Send the body as if chunked ([`Request::content_length`] is `None`).
    pub chunked: bool,
    /// Vhost name.
    pub vhost: String,
    /// Document root.
    pub document_root: String,
    /// cgi-bin folder.
    pub cgi_bin: String,
    /// Route prefix.
    pub route: String,
    /// Client address.
    pub peer: SocketAddr,
    /// Server address.
    pub local: SocketAddr,
}

/// How a test exchange ended, for the log phase ([`TestRequest::log`]).
#[derive(Clone, Debug)]
pub struct Exchange {
    /// Status sent (default 200).
    pub status: u16,
    /// Body bytes sent (default 0).
    pub body_bytes_sent: u64,
    /// Head bytes sent (default 150).
    pub head_bytes_sent: u64,
    /// Bytes received, head and body (default 80).
    pub bytes_received: u64,
    /// Time taken (default 1 ms).
    pub duration: std::time::Duration,
    /// When it started (default: now).
    pub start: std::time::SystemTime,
    /// Whether the whole response went out (default true).
    pub completed: bool,
    /// Why it failed, empty if it did not.
    pub error: String,
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange {
            status: 200,
            body_bytes_sent: 0,
            head_bytes_sent: 150,
            bytes_received: 80,
            duration: std::time::Duration::from_millis(1),
            start: std::time::SystemTime::now(),
            completed: true,
            error: String::new(),
        }
    }
}

/// What a handler did with a [`TestRequest`].
pub struct TestResponse {
    /// The outcome.
    pub outcome: Outcome,
    /// The response it built.
    pub response: ResponseBuilder,
}

impl TestResponse {
    /// The body read whole (file, segments and stream bodies are read; a
    /// file body honours its offset and length).
    pub fn body_bytes(mut self) -> Vec<u8> {
        self.read_body()
    }

    /// The body read whole, leaving the response in place (its headers
    /// can still be looked at, and a second call gives the same bytes: a
    /// file, segments or stream body is replaced by the bytes it gave).
    ///
    /// ```
    /// use tamada_sdk::prelude::*;
    /// use tamada_sdk::testing::TestRequest;
    ///
    /// struct Lines;
    /// impl Handler for Lines {
    ///     fn handle(&self, _: &Request, res: &mut ResponseBuilder) -> Outcome {
    ///         let data: &'static [u8] = b"one\ntwo\n";
    ///         res.header("x-lines", "2").body(Body::Stream(Box::new(ReadStream(data))));
    ///         Outcome::Done
    ///     }
    /// }
    /// let mut out = TestRequest::get("/").run(&Lines);
    /// assert_eq!(out.read_body(), b"one\ntwo\n");
    /// assert_eq!(out.response.get_header("x-lines"), Some(&b"2"[..]));
    /// assert_eq!(out.read_body(), b"one\ntwo\n");
    /// ```
    pub fn read_body(&mut self) -> Vec<u8> {
        use std::io::{Seek, SeekFrom};
        let bytes = match self.response.take_body() {
            Body::Empty => Vec::new(),
            Body::Bytes(b) => b,
            Body::File {
                mut file,
                offset,
                len,
            } => {
                let mut out = Vec::new();
                file.seek(SeekFrom::Start(offset)).expect("seek");
                file.take(len).read_to_end(&mut out).expect("read");
                out
            }
            Body::Segments(s) => s.read_all().expect("read a segments body"),
            Body::Stream(mut s) => {
                let mut out = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    let n = s.read(&mut buf).expect("stream read");
                    if n == 0 {
                        break;
                    }
                    out.extend_from_slice(&buf[..n]);
                }
                s.close(false);
                out
            }
        };
        self.response.body(bytes.clone());
        bytes
    }
}

/// A log record a plugin made while [`capture`] ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// Severity.
    pub level: log::Level,
    /// `log::` records: the target (the plugin's module path, or the
    /// `target:` given); [`record_for`](crate::record_for): its `source`.
    pub source: String,
    /// The text.
    pub message: String,
    /// The vhost named by [`record_for`](crate::record_for), if any.
    pub vhost: Option<String>,
    /// The client named by [`record_for`](crate::record_for), if any.
    pub peer: Option<SocketAddr>,
}

std::thread_local! {
    static CAPTURED: std::cell::RefCell<Option<Vec<Captured>>> = const { std::cell::RefCell::new(None) };
}

extern "C" fn test_log(level: u8, target: RStr<'_>, message: RStr<'_>) {
    push(Captured {
        level: crate::plugin::level_from_u8(level),
        source: target.as_str().to_owned(),
        message: message.as_str().to_owned(),
        vhost: None,
        peer: None,
    });
}

extern "C" fn test_record(
    vhost: RStr<'_>,
    peer: ROption<crate::abi::AddrV1>,
    level: u8,
    source: RStr<'_>,
    message: RStr<'_>,
) {
    push(Captured {
        level: crate::plugin::level_from_u8(level),
        source: source.as_str().to_owned(),
        message: message.as_str().to_owned(),
        vhost: Some(vhost.as_str().to_owned()),
        peer: peer.as_ref().map(crate::request::addr).into_option(),
    });
}

fn push(c: Captured) {
    CAPTURED.with(|v| {
        if let Some(v) = v.borrow_mut().as_mut() {
            v.push(c);
        }
    });
}

static TEST_HOST: crate::abi::HostV1 = crate::abi::HostV1 {
    log: test_log,
    record: test_record,
};

/// Runs `f` with a test host installed, as the server would be, and
/// returns what it returned with every record made on this thread while
/// it ran: `log::error!` and friends, and [`record_for`](crate::record_for)
/// (which does nothing in tests otherwise). Records made on other threads
/// are not captured.
///
/// ```
/// use tamada_sdk::prelude::*;
/// use tamada_sdk::testing::{TestRequest, capture};
///
/// struct Loud;
/// impl Handler for Loud {
///     fn handle(&self, req: &Request, _res: &mut ResponseBuilder) -> Outcome {
///         log::warn!("no page for {}", req.path());
///         Outcome::Decline
///     }
/// }
///
/// let (out, records) = capture(|| TestRequest::get("/x").run(&Loud));
/// assert_eq!(out.outcome, Outcome::Decline);
/// assert_eq!(records[0].level, log::Level::Warn);
/// assert_eq!(records[0].message, "no page for /x");
/// ```
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, Vec<Captured>) {
    crate::plugin::__private::install_host(&TEST_HOST);
    let outer = CAPTURED.with(|v| v.borrow_mut().replace(Vec::new()));
    let r = f();
    let got = CAPTURED.with(|v| std::mem::replace(&mut *v.borrow_mut(), outer));
    (r, got.unwrap_or_default())
}

impl TestRequest {
    /// A GET for `target`.
    pub fn get(target: &str) -> Self {
        Self::new("GET", target)
    }
    /// Any method.
    pub fn new(method: &str, target: &str) -> Self {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (target.to_owned(), None),
        };
        TestRequest {
            method: method.to_owned(),
            target: target.to_owned(),
            path,
            query,
            headers: vec![("Host".into(), b"localhost".to_vec())],
            body: Vec::new(),
            chunked: false,
            vhost: "localhost".into(),
            document_root: ".".into(),
            cgi_bin: String::new(),
            route: "/".into(),
            peer: "127.0.0.1:40000".parse().expect("literal address"),
            local: "127.0.0.1:8080".parse().expect("literal address"),
        }
    }
    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }
    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
    /// Sets the document root.
    pub fn document_root(mut self, root: impl Into<String>) -> Self {
        self.document_root = root.into();
        self
    }
    /// Sets the route prefix.
    pub fn route(mut self, route: impl Into<String>) -> Self {
        self.route = route.into();
        self
    }
    /// Sets the client's address.
    pub fn peer(mut self, peer: SocketAddr) -> Self {
        self.peer = peer;
        self
    }
    /// Sets the server's address on the connection.
    pub fn local(mut self, local: SocketAddr) -> Self {
        self.local = local;
        self
    }
    /// Sends the body as if chunked ([`Request::content_length`] is `None`).
    pub fn chunked(mut self, chunked: bool) -> Self {
        self.chunked = chunked;
        self
    }
    /// Sets the query string (without `?`), or none.
    pub fn query(mut self, query: Option<&str>) -> Self {
        self.query = query.map(str::to_owned);
        self
    }
    /// Sets the vhost's name (also the `Host` the request asks for).
    pub fn vhost(mut self, name: impl Into<String>) -> Self {
        self.vhost = name.into();
        self
    }
    /// Sets the vhost's cgi-bin folder.
    pub fn cgi_bin(mut self, dir: impl Into<String>) -> Self {
        self.cgi_bin = dir.into();
        self
    }

    /// Builds the handler's options from YAML text as the server would,
    /// for this request's vhost and route: pass it to your constructor.
    pub fn options<'a>(&'a self, yaml: &'a str) -> Options<'a> {
        Options::new(
            yaml,
            Role::Handler,
            Vhost::from_raw(self.vhost_raw()),
            &self.route,
        )
    }

    fn vhost_raw(&self) -> VhostV1<'_> {
        VhostV1 {
            name: RStr::from_str(&self.vhost),
            document_root: RStr::from_str(&self.document_root),
            cgi_bin: RStr::from_str(&self.cgi_bin),
            log_dir: RStr::from_str(""),
            config_file: RStr::from_str(""),
        }
    }

    /// Builds a logger's options (`loggers:` in a vhost file) as the
    /// server would.
    pub fn logger_options<'a>(&'a self, yaml: &'a str) -> Options<'a> {
        Options::new(yaml, Role::Logger, Vhost::from_raw(self.vhost_raw()), "")
    }

    /// Runs a logger's log phase as if this request had been answered as
    /// `exchange` says.
    ///
    /// ```
    /// use tamada_sdk::prelude::*;
    /// use tamada_sdk::testing::{Exchange, TestRequest};
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// #[derive(Default)]
    /// struct Bytes(AtomicU64);
    /// impl Handler for Bytes {
    ///     fn log(&self, e: &LogEntry) {
    ///         self.0.fetch_add(e.body_bytes_sent(), Ordering::Relaxed);
    ///     }
    /// }
    ///
    /// let b = Bytes::default();
    /// let req = TestRequest::get("/x");
    /// req.log(&b, &Exchange { body_bytes_sent: 1234, ..Exchange::default() });
    /// req.log(&b, &Exchange { status: 404, body_bytes_sent: 100, ..Exchange::default() });
    /// assert_eq!(b.0.load(Ordering::Relaxed), 1334);
    /// ```
    pub fn log(&self, h: &dyn Handler, exchange: &Exchange) {
        self.with_log_entry(exchange, |e| h.log(e));
    }

    /// SDK 1.2 testing: as [`log`](Self::log), with these notes for
    /// [`LogEntry::notes`] (what handlers attached with `Request::note`).
    ///
    /// ```
    /// use std::sync::Mutex;
    /// use tamada_sdk::prelude::*;
    /// use tamada_sdk::testing::{Exchange, TestRequest};
    ///
    /// #[derive(Default)]
    /// struct Seen(Mutex<Vec<(String, String)>>);
    /// impl Handler for Seen {
    ///     fn log(&self, entry: &LogEntry) {
    ///         self.0.lock().unwrap().extend(entry.notes());
    ///     }
    /// }
    /// let seen = Seen::default();
    /// TestRequest::get("/").log_with_notes(&seen, &Exchange::default(), &[("cache", "hit")]);
    /// assert_eq!(*seen.0.lock().unwrap(), vec![("cache".to_string(), "hit".to_string())]);
    /// ```
    pub fn log_with_notes(&self, h: &dyn Handler, exchange: &Exchange, notes: &[(&str, &str)]) {
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                crate::request::TEST_LOG_NOTES.with(|n| n.borrow_mut().clear());
            }
        }
        crate::request::TEST_LOG_NOTES.with(|n| {
            *n.borrow_mut() = notes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        });
        let _reset = Reset;
        self.log(h, exchange);
    }

    /// Runs `f` with a [`LogEntry`] for this request (see [`TestRequest::log`]).
    pub fn with_log_entry<R>(&self, x: &Exchange, f: impl FnOnce(&LogEntry) -> R) -> R {
        self.with(|req| {
            let raw = LogEntryV1 {
                request: req.raw(),
                status: x.status,
                body_bytes_sent: x.body_bytes_sent,
                bytes_sent: x.body_bytes_sent + x.head_bytes_sent,
                bytes_received: x.bytes_received,
                duration_us: x.duration.as_micros() as u64,
                start_unix_us: x
                    .start
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_micros() as i64)
                    .unwrap_or(0),
                error: RStr::from_str(&x.error),
                completed: x.completed,
            };
            f(&LogEntry::from_raw(&raw))
        })
    }

    /// Runs `f` with a [`Request`] view of this test request.
    pub fn with<R>(&self, f: impl FnOnce(&Request) -> R) -> R {
        self.with_placed(false, f)
    }

    /// Like [`with`](Self::with), for a call placed inline on an event
    /// loop ([`Request::is_inline`] is true).
    pub fn with_inline<R>(&self, f: impl FnOnce(&Request) -> R) -> R {
        self.with_placed(true, f)
    }

    fn with_placed<R>(&self, inline: bool, f: impl FnOnce(&Request) -> R) -> R {
        self.with_raw(|raw| f(&Request::from_raw_placed(raw, inline)))
    }

    fn with_raw<R>(&self, f: impl FnOnce(&RequestV1<'_>) -> R) -> R {
        // Notes attached from here on are kept for `take_notes`.
        crate::request::TEST_NOTES.with(|n| {
            n.borrow_mut().get_or_insert_with(Vec::new);
        });
        let headers: Vec<HeaderV1> = self
            .headers
            .iter()
            .map(|(n, v)| HeaderV1 {
                name: RStr::from_str(n),
                value: RSlice::from_slice(v),
            })
            .collect();
        let mut cursor = std::io::Cursor::new(self.body.as_slice());
        let reader = BodyReaderV1 {
            ctx: &mut cursor as *mut std::io::Cursor<&[u8]> as *mut c_void,
            read: read_cursor,
            content_length: if self.chunked {
                -1
            } else {
                self.body.len() as i64
            },
        };
        let rest = self
            .path
            .strip_prefix(self.route.trim_end_matches('/'))
            .unwrap_or(&self.path);
        let raw = RequestV1 {
            method: RStr::from_str(&self.method),
            target: RStr::from_str(&self.target),
            path: RStr::from_str(&self.path),
            query: match &self.query {
                Some(q) => ROption::RSome(RStr::from_str(q)),
                None => ROption::RNone,
            },
            version_minor: 1,
            headers: RSlice::from_slice(&headers),
            scheme: RStr::from_str("http"),
            host: RStr::from_str(&self.vhost),
            local: addr_to_raw(self.local),
            peer: addr_to_raw(self.peer),
            vhost: self.vhost_raw(),
            route: RStr::from_str(&self.route),
            rest: RStr::from_str(rest),
            body: &reader,
            redirects: 0,
        };
        f(&raw)
    }

    /// SDK 1.1: runs a non-blocking handler as the server's event loop
    /// does: inline, where [`Request::can_wait`] is true, and each
    /// [`Request::wait`] really waits (with `poll(2)`) for its descriptor
    /// or its timeout, then calls `handle` again with the saved state and
    /// [`Request::woke`] set. A [`Request::defer`] runs it on "the pool"
    /// (once more, not inline). Panics after 100,000 waits. (Only with the
    /// `testing` feature itself.)
    ///
    /// ```
    /// use tamada_sdk::prelude::*;
    /// use tamada_sdk::testing::TestRequest;
    /// use tamada_sdk::{Interest, Woke};
    /// use std::io::{Read, Write};
    /// use std::os::fd::AsRawFd;
    /// use std::os::unix::net::UnixStream;
    /// use std::time::Duration;
    ///
    /// /// Asks a peer socket and answers with what it says.
    /// struct Ask(std::sync::Mutex<Option<UnixStream>>);
    /// impl Handler for Ask {
    ///     fn placement(&self) -> Placement { Placement::Inline }
    ///     fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
    ///         let mut sock = match req.resume::<UnixStream>() {
    ///             Some(s) => s,
    ///             None => self.0.lock().unwrap().take().unwrap(),
    ///         };
    ///         if req.woke() == Woke::TimedOut {
    ///             res.status(504);
    ///             return Outcome::Done;
    ///         }
    ///         let mut buf = [0u8; 64];
    ///         match sock.read(&mut buf) {
    ///             Ok(n) => {
    ///                 res.body(buf[..n].to_vec());
    ///                 Outcome::Done
    ///             }
    ///             Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
    ///                 let fd = sock.as_raw_fd();
    ///                 req.wait(fd, Interest::Read, Duration::from_secs(5), sock)
    ///             }
    ///             Err(e) => Outcome::Error(e.to_string()),
    ///         }
    ///     }
    /// }
    ///
    /// let (ours, mut theirs) = UnixStream::pair().unwrap();
    /// ours.set_nonblocking(true).unwrap();
    /// let h = Ask(std::sync::Mutex::new(Some(ours)));
    /// let peer = std::thread::spawn(move || {
    ///     std::thread::sleep(Duration::from_millis(50));
    ///     theirs.write_all(b"answer").unwrap();
    /// });
    /// let out = TestRequest::get("/").run_waiting(&h);
    /// assert_eq!(out.body_bytes(), b"answer");
    /// peer.join().unwrap();
    /// ```
    #[cfg(feature = "testing")]
    pub fn run_waiting(&self, h: &dyn Handler) -> TestResponse {
        use crate::request::{Interest, Woke};
        use rustix::event::{PollFd, PollFlags};
        self.with_raw(|raw| {
            let mut woke = Woke::First;
            let mut state = None;
            for _ in 0..100_000 {
                let req = Request::from_raw_resumed(raw, true, true, woke, state.take());
                let r = contained(&req, h);
                if req.deferred() {
                    return contained(&Request::from_raw_placed(raw, false), h);
                }
                let Some(w) = req.take_waiting() else {
                    return r;
                };
                let flags = match w.interest {
                    Interest::Read => PollFlags::IN,
                    Interest::Write => PollFlags::OUT,
                    Interest::Both => PollFlags::IN | PollFlags::OUT,
                };
                // SAFETY: the handler keeps `fd` open in its state (which
                // `w.state` holds) for as long as the wait lasts.
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(w.fd) };
                let mut fds = [PollFd::new(&fd, flags)];
                let ts = rustix::event::Timespec::try_from(w.timeout).ok();
                let ready = loop {
                    match rustix::event::poll(&mut fds, ts.as_ref()) {
                        Err(rustix::io::Errno::INTR) => continue,
                        Ok(n) => break n > 0,
                        Err(_) => break true,
                    }
                };
                woke = if ready { Woke::Ready } else { Woke::TimedOut };
                state = Some(w.state);
            }
            panic!("the handler waited 100,000 times without an answer")
        })
    }

    /// SDK 1.1: runs a handler's content phase as the server runs an
    /// inline handler, on the event loop. `None` means the handler
    /// answered [`Request::defer`]: the server would then call it again on
    /// the pool, which [`run`](Self::run) does.
    ///
    /// ```
    /// use tamada_sdk::prelude::*;
    /// use tamada_sdk::testing::TestRequest;
    ///
    /// struct Slow;
    /// impl Handler for Slow {
    ///     fn placement(&self) -> Placement { Placement::Inline }
    ///     fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
    ///         if req.is_inline() {
    ///             return req.defer();
    ///         }
    ///         res.body("done on the pool");
    ///         Outcome::Done
    ///     }
    /// }
    ///
    /// let req = TestRequest::get("/");
    /// assert!(req.run_inline(&Slow).is_none());
    /// assert_eq!(req.run(&Slow).body_bytes(), b"done on the pool");
    /// ```
    pub fn run_inline(&self, h: &dyn Handler) -> Option<TestResponse> {
        self.with_inline(|req| {
            let r = contained(req, h);
            (!req.deferred()).then_some(r)
        })
    }

    /// Runs a handler's content phase on this request. A panic is caught
    /// as the server catches it: the outcome is then
    /// `Outcome::Error("panic: <message>")` (the server answers 500) and
    /// the response is empty.
    ///
    /// ```
    /// use tamada_sdk::prelude::*;
    /// use tamada_sdk::testing::TestRequest;
    ///
    /// struct Buggy;
    /// impl Handler for Buggy {
    ///     fn handle(&self, _: &Request, _: &mut ResponseBuilder) -> Outcome {
    ///         panic!("index out of range")
    ///     }
    /// }
    /// let out = TestRequest::get("/").run(&Buggy);
    /// assert_eq!(out.outcome, Outcome::Error("panic: index out of range".into()));
    /// ```
    pub fn run(&self, h: &dyn Handler) -> TestResponse {
        self.with(|req| contained(req, h))
    }

    /// SDK 1.2: runs an access rule's check as the server does: inline
    /// first, and again on the pool (not inline) when it deferred.
    pub fn check(&self, a: &dyn crate::access::Access) -> TestVerdict {
        use std::panic::{AssertUnwindSafe, catch_unwind};
        let call = |req: &Request| {
            let mut response = ResponseBuilder::new();
            let verdict = match catch_unwind(AssertUnwindSafe(|| a.check(req, &mut response))) {
                Ok(v) => v,
                Err(p) => crate::access::Verdict::Error(format!(
                    "panic: {}",
                    crate::outcome::panic_message(&p)
                )),
            };
            (verdict, response, req.deferred())
        };
        let (mut verdict, mut response, mut deferred) = self.with_inline(call);
        // A delay: called again (at once here), as after the timer.
        let mut delays = 0;
        while let crate::access::Verdict::Delay(_) = verdict {
            delays += 1;
            assert!(
                delays < 100,
                "an access check asked for 100 delays in a row"
            );
            let again = |req: &Request| {
                let r =
                    Request::from_raw_resumed(req.raw(), true, false, crate::Woke::TimedOut, None);
                call(&r)
            };
            (verdict, response, deferred) = self.with_inline(again);
        }
        let (verdict, response, deferred_on_pool) = if deferred {
            self.with(call)
        } else {
            (verdict, response, false)
        };
        if deferred_on_pool {
            return TestVerdict {
                verdict: crate::access::Verdict::Error(
                    "Request::defer was called on the blocking pool, where it has no meaning"
                        .into(),
                ),
                response: ResponseBuilder::new(),
                deferred,
                delays,
            };
        }
        TestVerdict {
            verdict,
            response,
            deferred,
            delays,
        }
    }
}

impl TestRequest {
    /// SDK 1.2: a filter's request side on this request: the header
    /// fields it sets or removes.
    pub fn filter_request(&self, f: &dyn crate::filter::Filter) -> crate::filter::RequestEdit {
        let mut edit = crate::filter::RequestEdit::default();
        self.with(|req| f.request(req, &mut edit));
        edit
    }

    /// SDK 1.2: a filter's response side on `res`, as the server runs it
    /// for this request: the head as the filter left it, and the body as
    /// it would go out (kept, transformed in 8 KiB pieces with a flush
    /// after each piece of a stream, or replaced). A panic or a failed
    /// transform is in [`TestFiltered::error`].
    pub fn filter(&self, f: &dyn crate::filter::Filter, mut res: ResponseBuilder) -> TestFiltered {
        use crate::abi::{FilterBodyV1, OwnedHeaderV1};
        use crate::filter::Action;
        use abi_stable::std_types::{RString, RVec};
        use std::os::fd::AsRawFd;
        use std::panic::{AssertUnwindSafe, catch_unwind};
        let mut body = res.take_body();
        // Shared bytes are bytes to a filter, as on the server.
        let shared_len = match &mut body {
            Body::Stream(s) => s.shared().map(|b| b.as_slice().len() as i64),
            _ => None,
        };
        let declared = res
            .get_header_str("content-length")
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(-1);
        let info = match &body {
            Body::Empty => (0, 0, -1, 0),
            Body::Bytes(b) => (1, b.len() as i64, -1, 0),
            Body::File { file, offset, len } => (2, *len as i64, file.as_raw_fd(), *offset),
            Body::Segments(s) => (3, s.len() as i64, -1, 0),
            Body::Stream(_) => match shared_len {
                Some(n) => (1, n, -1, 0),
                None => (4, declared, -1, 0),
            },
        };
        let headers: RVec<OwnedHeaderV1> = res
            .get_headers()
            .iter()
            .map(|(n, v)| OwnedHeaderV1 {
                name: RString::from(n.as_str()),
                value: RVec::from(v.as_slice()),
            })
            .collect();
        let mut head = crate::filter::__private::head(
            res.get_status(),
            headers,
            FilterBodyV1 {
                kind: info.0,
                len: info.1,
                fd: info.2,
                offset: info.3,
            },
            self.method.eq_ignore_ascii_case("HEAD"),
        );
        let action = self.with(|req| catch_unwind(AssertUnwindSafe(|| f.response(req, &mut head))));
        let stream = matches!(body, Body::Stream(_)) && shared_len.is_none();
        let bytes = |b: Body| {
            let mut r = ResponseBuilder::new();
            r.body(b);
            TestResponse {
                outcome: Outcome::Done,
                response: r,
            }
            .body_bytes()
        };
        let (body, error, transformed, replaced) = match action {
            Err(p) => (
                Vec::new(),
                Some(format!("panic: {}", crate::outcome::panic_message(&p))),
                false,
                false,
            ),
            Ok(Action::Keep) => (bytes(body), None, false, false),
            Ok(Action::Replace(b)) => (bytes(b), None, false, true),
            Ok(Action::Transform(mut t)) => {
                let input = bytes(body);
                let mut out = Vec::new();
                let r = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
                    for piece in input.chunks(8192) {
                        t.data(piece, &mut out)?;
                        if stream {
                            t.flush(&mut out)?;
                        }
                    }
                    t.finish(&mut out)
                }));
                let error = match r {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(p) => Some(format!("panic: {}", crate::outcome::panic_message(&p))),
                };
                (out, error, true, false)
            }
        };
        TestFiltered {
            head,
            body,
            transformed,
            replaced,
            error,
        }
    }
}

/// What [`TestRequest::filter`] gives.
pub struct TestFiltered {
    /// The head as the filter left it.
    pub head: crate::filter::ResponseHead,
    /// The body as it would be sent (empty after an error).
    pub body: Vec<u8>,
    /// The filter transformed the body.
    pub transformed: bool,
    /// The filter replaced the body.
    pub replaced: bool,
    /// The filter panicked or its transform failed.
    pub error: Option<String>,
}

/// SDK 1.2 testing: the notes handlers attached with
/// [`Request::note`] on this thread since the last call (each run of a
/// [`TestRequest`] keeps them), in order; the list starts empty again.
///
/// ```
/// use tamada_sdk::prelude::*;
/// use tamada_sdk::testing::{TestRequest, take_notes};
///
/// struct Noting;
/// impl Handler for Noting {
///     fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
///         req.note("upstream_addr", "10.0.0.7:8080");
///         res.body("ok");
///         Outcome::Done
///     }
/// }
/// TestRequest::get("/").run(&Noting);
/// assert_eq!(take_notes(), vec![("upstream_addr".into(), "10.0.0.7:8080".into())]);
/// ```
pub fn take_notes() -> Vec<(String, String)> {
    crate::request::TEST_NOTES.with(|n| n.borrow_mut().take().unwrap_or_default())
}

/// What [`TestRequest::check`] gives: the verdict, the response built
/// (sent only with [`Verdict::Answer`](crate::access::Verdict::Answer)),
/// and whether the check deferred to the pool first.
pub struct TestVerdict {
    /// The verdict of the last call.
    pub verdict: crate::access::Verdict,
    /// The response of the last call.
    pub response: ResponseBuilder,
    /// The inline call deferred (the verdict is the pool call's).
    pub deferred: bool,
    /// How many times it asked for a [`Delay`](crate::access::Verdict::Delay)
    /// (each answered at once here, with [`Woke::TimedOut`](crate::Woke::TimedOut)).
    pub delays: u32,
}

/// Calls `handle` with panics caught, as the SDK's shim does.
fn contained(req: &Request, h: &dyn Handler) -> TestResponse {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let mut response = ResponseBuilder::new();
    let run = || {
        let mut outcome = h.handle(req, &mut response);
        // An offload that ran here (no wait possible): at once again.
        let mut again = 0;
        while let Some(st) = req.take_recall()
            && again < 100
        {
            again += 1;
            let r = Request::from_raw_resumed(
                req.raw(),
                req.is_inline(),
                false,
                crate::Woke::Ready,
                Some(st),
            );
            response = ResponseBuilder::new();
            outcome = h.handle(&r, &mut response);
        }
        outcome
    };
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(outcome) => TestResponse { outcome, response },
        Err(p) => TestResponse {
            outcome: Outcome::Error(format!("panic: {}", crate::outcome::panic_message(&p))),
            response: ResponseBuilder::new(),
        },
    }
}

extern "C" fn read_cursor(ctx: *mut c_void, mut buf: RSliceMut<'_, u8>) -> RResult<usize, RString> {
    // SAFETY: ctx points at the cursor on `TestRequest::with`'s stack,
    // which outlives every use of the request view.
    let c = unsafe { &mut *(ctx as *mut std::io::Cursor<&[u8]>) };
    match c.read(buf.as_mut_slice()) {
        Ok(n) => RResult::ROk(n),
        Err(e) => RResult::RErr(RString::from(e.to_string())),
    }
}
