//! The plugin author's guide: everything past the [quick start](crate).
//!
//! This module holds documentation only, one chapter per module:
//!
//! 1. [`phases`]: when each [`Handler`](crate::Handler) hook runs, on
//!    which thread, and what its return value means.
//! 2. [`requests`]: the request view and the streaming request body.
//! 3. [`responses`]: status, headers, and the four body forms.
//! 4. [`options`]: a route's `options:` parsed with serde; errors at
//!    `tamada -t`.
//! 5. [`errors`]: failures and panics; why `panic = "abort"` is forbidden.
//! 6. [`logging`]: the `log` crate inside a plugin.
//! 7. [`threads`]: instances, threads and reloads.
//! 8. [`testing`]: unit tests with the `testing` feature.
//! 9. [`compatibility`]: which server loads which plugin; the semver
//!    policy of this crate; installing a plugin safely.
//!
//! SDK 1.2 additions (released and frozen like 1.0 and 1.1): [`access`](crate::access)
//! (rules that run before routing: pass, answer, rewrite, name a user),
//! [`filters`] (a chapter: writing a response filter with
//! [`filter`](crate::filter)),
//! [`Request::tls`](crate::Request::tls) and
//! [`Request::user`](crate::Request::user) (in [`requests`]).

pub mod phases {
    //! # Phases: when each hook runs and what it returns
    //!
    //! A plugin is a [`Handler`]: a trait whose every method has a no-op
    //! default, so a plugin implements only the phases it cares about.
    //! The server builds one *instance* of it for every route (and every
    //! logger entry) that names the plugin, by calling the constructor
    //! given to [`export_plugin!`](crate::export_plugin) with that entry's
    //! `options:`.
    //!
    //! | hook | runs | thread |
    //! |---|---|---|
    //! | constructor (`new:` of [`export_plugin!`](crate::export_plugin)) | once per `routes:` / `loggers:` entry naming the plugin: at start-up, on `tamada -t`, on every SIGHUP | the main thread; the event loop on SIGHUP (keep it quick) |
    //! | [`Handler::handle`] | for each request routed to a `routes:` instance | a thread of the blocking pool, many at once; or the connection's event loop for an instance that declares [`Placement::Inline`](crate::Placement::Inline) (see [`placement`](super::placement)) |
    //! | [`Handler::log`] | after a response is complete (or failed), for each `loggers:` instance of the vhost | the pool, or the event loop that wrote the response for an inline instance |
    //! | [`Handler::record`] | for each log record routed to the vhost, for each `loggers:` instance | the thread that made the record |
    //! | [`Handler::reopen`] | when the server gets SIGUSR1 | a thread started for it |
    //! | [`Handler::flush`] | about once a second; before an instance is dropped (after a reload); at exit | a flusher thread |
    //! | [`Handler::shutdown`] | once, at exit, after the last `flush` | the main thread |
    //! | `Drop` of your type | when a reload has replaced the instance and no request uses it any more | any |
    //!
    //! [`Options::role`](crate::Options::role) tells a constructor whether
    //! it builds a route's handler ([`Role::Handler`](crate::Role::Handler))
    //! or a vhost's logger ([`Role::Logger`](crate::Role::Logger)); one
    //! plugin may be both.
    //!
    //! ## `handle`: the content phase
    //!
    //! The core has parsed the head, picked the vhost by `Host`, and
    //! matched the normalised path against the vhost's routes, longest
    //! prefix first (routes with the same prefix in file order). It calls
    //! `handle` with a [`Request`](crate::Request) view and an empty
    //! [`ResponseBuilder`](crate::ResponseBuilder) (status 200, no headers,
    //! no body). What the returned [`Outcome`] means:
    //!
    //! - [`Outcome::Done`]: the builder holds the answer. The core frames
    //!   it and writes it; `handle` has already returned when the body goes
    //!   out (a file or a stream is sent later, see
    //!   [`responses`](super::responses)).
    //! - [`Outcome::Decline`]: not mine. The builder is discarded and the
    //!   request goes to the next route with the same prefix, then to
    //!   shorter prefixes; when no route is left the core answers 404. Do
    //!   not read the body before declining: the next handler would miss
    //!   what you consumed.
    //! - [`Outcome::Redirect`]`(path)`: an internal redirect (what a CGI
    //!   `Location: /local` header does). The core normalises `path` (a
    //!   `?query` is allowed), and routes it again from the start as a
    //!   `GET` without a body; the new handler sees
    //!   [`Request::redirects`](crate::Request::redirects) `> 0`. After 10
    //!   redirects in a row, or with an invalid path, the core answers 500.
    //! - [`Outcome::Error`]`(message)`: the server failed. The core answers
    //!   500 and writes ``plugin `NAME` failed on METHOD TARGET: message``
    //!   to the vhost's error log. Client mistakes are not errors: answer
    //!   them yourself with a 4xx status and [`Outcome::Done`].
    //!
    //! On the pool (the default placement), `handle` may block on what it
    //! owns (a file, a child process, a database) and on reading the
    //! request body. While it runs it holds a pool thread (64 by default,
    //! `workers:` in `server.yaml`), so do not wait without bound. An
    //! instance that declares [`Placement::Inline`](crate::Placement::Inline)
    //! runs on the event loop and must never block: see
    //! [`placement`](super::placement).
    //!
    //! ```
    //! use tamada_sdk::prelude::*;
    //!
    //! struct Api;
    //!
    //! impl Handler for Api {
    //!     fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
    //!         match req.rest() {
    //!             // Another route of this prefix (or a shorter one) answers.
    //!             "" | "/" => Outcome::Decline,
    //!             // Served as if the client had asked for /api/v2/status.
    //!             "/status" => Outcome::Redirect("/api/v2/status".into()),
    //!             "/v2/status" => {
    //!                 res.status(200)
    //!                     .header("content-type", "application/json")
    //!                     .body(r#"{"ok":true}"#);
    //!                 Outcome::Done
    //!             }
    //!             // A client's mistake: answer it, it is no server error.
    //!             _ if req.method() != "GET" && req.method() != "HEAD" => {
    //!                 res.status(405).header("allow", "GET, HEAD");
    //!                 Outcome::Done
    //!             }
    //!             // A server-side failure: 500, and the text goes to the error log.
    //!             other => Outcome::Error(format!("no backend for {other}")),
    //!         }
    //!     }
    //! }
    //! # #[cfg(feature = "testing")]
    //! # {
    //! # use tamada_sdk::testing::TestRequest;
    //! # let run = |p: &str| TestRequest::get(p).route("/api/").run(&Api);
    //! # assert_eq!(run("/api/").outcome, Outcome::Decline);
    //! # assert_eq!(run("/api/status").outcome, Outcome::Redirect("/api/v2/status".into()));
    //! # assert_eq!(run("/api/v2/status").outcome, Outcome::Done);
    //! # assert!(matches!(run("/api/x").outcome, Outcome::Error(_)));
    //! # }
    //! ```
    //!
    //! ## `log`: after the response
    //!
    //! For every instance listed under the vhost's `loggers:`, once per
    //! exchange, after the last byte of the response went out, or when the
    //! exchange failed (the client left, a stream broke): the
    //! [`LogEntry`](crate::LogEntry) has the request (its body can no
    //! longer be read), the status, bytes sent and received, the duration,
    //! whether the response [completed](crate::LogEntry::completed) and
    //! the [error](crate::LogEntry::error) if any. An access log is written
    //! here. Handlers under `routes:` are never called for `log`.
    //!
    //! ## `record`: log records routed to the vhost
    //!
    //! For every `loggers:` instance of a vhost, for each log record that
    //! belongs to it: a plugin's `log::warn!` while it serves one of the
    //! vhost's requests, a plugin's failure or panic, a CGI script's
    //! stderr, a [`record_for`](crate::record_for) call. An error log is
    //! written here. Logging from inside `record` does not come back to
    //! `record`: such records go to the server's own log.
    //!
    //! ## `reopen`, `flush`, `shutdown`: the lifecycle
    //!
    //! - `reopen`: the server got SIGUSR1 (logrotate's `postrotate`):
    //!   reopen the files you write, by path.
    //! - `flush`: write out what you buffer. It comes about once a second,
    //!   before an instance is dropped after a reload, and at exit; so a
    //!   buffering logger loses at most about a second of lines to
    //!   `kill -9`.
    //! - `shutdown`: the server is stopping (SIGTERM or SIGINT), after the
    //!   requests in flight and a last `flush`. The process exits soon
    //!   after, without necessarily dropping instances: do the final work
    //!   here, not in `Drop`.
    //!
    //! A reload (SIGHUP) calls no lifecycle hook on the old instances other
    //! than `flush`: they are dropped (your `Drop` runs) once the last
    //! request that uses them is done. Libraries are never unloaded: an
    //! unchanged plugin keeps its statics across reloads; a plugin file
    //! replaced by a new build is loaded as a new library, with statics of
    //! its own, while the old library stays mapped for the old instances.
    //!
    //! Plugins never install signal handlers: the server owns every
    //! signal and calls these hooks instead.
    //!
    //! [`Handler`]: crate::Handler
    //! [`Handler::handle`]: crate::Handler::handle
    //! [`Handler::log`]: crate::Handler::log
    //! [`Handler::record`]: crate::Handler::record
    //! [`Handler::reopen`]: crate::Handler::reopen
    //! [`Handler::flush`]: crate::Handler::flush
    //! [`Handler::shutdown`]: crate::Handler::shutdown
    //! [`Outcome`]: crate::Outcome
    //! [`Outcome::Done`]: crate::Outcome::Done
    //! [`Outcome::Decline`]: crate::Outcome::Decline
    //! [`Outcome::Redirect`]: crate::Outcome::Redirect
    //! [`Outcome::Error`]: crate::Outcome::Error
}

pub mod requests {
    //! # Reading the request
    //!
    //! [`Request`](crate::Request) is a borrowed view of the core's parsed
    //! request, valid for the call. Everything is already checked: the
    //! method is a token, `Host` is present and single, framing headers
    //! agree (else the core answered 400 without calling you).
    //!
    //! | method | what |
    //! |---|---|
    //! | [`method`](crate::Request::method) | `GET`, `POST`, ... (HEAD too: the core sends no body for it, answer as for GET) |
    //! | [`path`](crate::Request::path) | the normalised path: percent-decoded, dot segments removed, never above `/`, no NUL. Route on this. |
    //! | [`target`](crate::Request::target), [`query`](crate::Request::query) | the target as the client sent it, and its raw (still encoded) query |
    //! | [`route`](crate::Request::route), [`rest`](crate::Request::rest) | the matched route prefix, and the path after it (`/hello/` + `/x` for `/hello/x`) |
    //! | [`header`](crate::Request::header), [`header_bytes`](crate::Request::header_bytes), [`header_all`](crate::Request::header_all), [`header_joined`](crate::Request::header_joined), [`headers`](crate::Request::headers) | headers, names compared case-insensitively |
    //! | [`host`](crate::Request::host), [`scheme`](crate::Request::scheme), [`version`](crate::Request::version) | the Host asked for (lowercased, no port), `http`, `(1, 1)` |
    //! | [`peer_addr`](crate::Request::peer_addr), [`local_addr`](crate::Request::local_addr) | the client's and the server's socket addresses |
    //! | [`vhost`](crate::Request::vhost) | the vhost's name, `document_root`, `cgi_bin` and `log` folders (absolute) |
    //!
    //! The path is decoded once by the core, so `/%61pp/x` arrives as
    //! `/app/x`. Never decode [`path`](crate::Request::path) again (that
    //! would turn `%252e%252e` into `..`); when you map it onto the file
    //! system, still open files beneath a root (`openat2` with
    //! `RESOLVE_BENEATH`, as the `static` plugin does), because symlinks
    //! can lead anywhere.
    //!
    //! ## The body
    //!
    //! [`Request::body`](crate::Request::body) returns a
    //! [`BodyReader`](crate::BodyReader), a [`std::io::Read`] that streams
    //! from the client's socket as you read: the body is never buffered
    //! whole, so a 4 GiB upload costs one buffer of yours. Every call to
    //! `body()` continues where the last read stopped; `Ok(0)` is the end.
    //!
    //! - **Length.** [`content_length`](crate::Request::content_length) is
    //!   `Some(n)` for a `Content-Length` body (`Some(0)` when there is no
    //!   body) and `None` for `Transfer-Encoding: chunked`, which the
    //!   reader de-chunks for you.
    //! - **Limit.** The route's `max_body` (default 1 GiB) is enforced by
    //!   the core: a `Content-Length` over it is answered 413 before your
    //!   handler is called; a chunked body that crosses it makes `read`
    //!   fail, and the core answers 413 whatever you return.
    //! - **`Expect: 100-continue`** is answered by the core when you first
    //!   read, so a client waiting for it sends nothing until you ask. A
    //!   handler that answers without reading (a 401, a 404) never invites
    //!   the body at all.
    //! - **Timeout.** A read waits for a slow client at most `body_timeout`
    //!   (`server.yaml`, default 30 s) between bytes, then fails. Any read
    //!   error (timeout, client gone, bad chunking) means the body is lost:
    //!   answer with an error status or return [`Outcome::Error`](crate::Outcome::Error);
    //!   the connection is closed after the response.
    //! - **Unread body.** You need not read it. After your response the
    //!   core discards what has already arrived; if more is still on the
    //!   way it closes the connection rather than wait for it.
    //! - **Only during `handle`.** The reader borrows the request, so it
    //!   cannot move into a [`BodyStream`](crate::BodyStream) (the compiler
    //!   then names the ABI's `RequestV1` and `*mut c_void`: that is this
    //!   rule). A response cannot stream the body back while the upload is
    //!   still arriving (no full duplex in SDK 1.x so far): the server reads
    //!   a request's body before it writes that connection's response, as
    //!   HTTP/1.1 clients expect of nearly every server (curl, browsers and
    //!   proxies send the whole body, then read). To echo or transform an
    //!   upload, read it in `handle` and answer from what you read: keep it
    //!   in memory when it is small, else write it to an unlinked temporary
    //!   file (the `tempfile` crate) and answer with
    //!   [`Body::File`](crate::Body::File) or a stream that reads the file
    //!   (the `cgi` plugin spools chunked bodies this way). The body already
    //!   streams in without being held whole: only your copy costs memory.
    //!
    //! ```
    //! use std::io::Read;
    //! use tamada_sdk::prelude::*;
    //!
    //! /// Counts the bytes of an upload without keeping them.
    //! struct Count;
    //!
    //! impl Handler for Count {
    //!     fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
    //!         if req.method() != "POST" {
    //!             res.status(405).header("allow", "POST");
    //!             return Outcome::Done;
    //!         }
    //!         let mut body = req.body();
    //!         let mut buf = [0u8; 64 * 1024];
    //!         let mut total: u64 = 0;
    //!         loop {
    //!             match body.read(&mut buf) {
    //!                 Ok(0) => break,
    //!                 Ok(n) => total += n as u64,
    //!                 // Too large, too slow, or the client left: the
    //!                 // core closes the connection after this answer.
    //!                 Err(e) => {
    //!                     log::info!("upload failed after {total} bytes: {e}");
    //!                     res.status(400).body("incomplete body\n");
    //!                     return Outcome::Done;
    //!                 }
    //!             }
    //!         }
    //!         res.status(200).body(format!("{total} bytes\n"));
    //!         Outcome::Done
    //!     }
    //! }
    //! # #[cfg(feature = "testing")]
    //! # {
    //! # use tamada_sdk::testing::TestRequest;
    //! # let out = TestRequest::new("POST", "/up").body(vec![7u8; 100_000]).run(&Count);
    //! # assert_eq!(out.body_bytes(), b"100000 bytes\n");
    //! # }
    //! ```
    //!
    //! ## HTTPS and client certificates (SDK 1.2)
    //!
    //! [`scheme`](crate::Request::scheme) is `https` for a request that
    //! came over the server's own TLS, and for one a trusted
    //! TLS-terminating proxy says came over HTTPS. What the server's own TLS
    //! negotiated is [`Request::tls`](crate::Request::tls), a
    //! [`TlsInfo`](crate::tls::TlsInfo): version, cipher, SNI, ALPN,
    //! whether the session was resumed, and the client's certificate when
    //! the vhost asks for one (`client_ca`, mutual TLS). It is `None` over
    //! plain HTTP, behind a terminating proxy, and on a server older than
    //! SDK 1.2 ([`tls::available`](crate::tls::available) tells which). A
    //! logger sees the same view in `log`. In unit tests,
    //! [`with_test_tls`](crate::tls::with_test_tls) gives one.
    //!
    //! ```
    //! use tamada_sdk::prelude::*;
    //!
    //! /// Admits only clients whose certificate names them `CN=ops`.
    //! struct OpsOnly;
    //!
    //! impl Handler for OpsOnly {
    //!     fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
    //!         match req.tls().and_then(|t| t.client_cert) {
    //!             Some(c) if c.subject.split(", ").any(|p| p == "CN=ops") => {
    //!                 res.status(200).body(format!("hello {}\n", c.subject));
    //!             }
    //!             _ => {
    //!                 res.status(403).body("a client certificate for ops is required\n");
    //!             }
    //!         }
    //!         Outcome::Done
    //!     }
    //! }
    //! # #[cfg(feature = "testing")]
    //! # {
    //! # use tamada_sdk::testing::TestRequest;
    //! # use tamada_sdk::tls::{with_test_tls, ClientCert, TlsInfo};
    //! # assert_eq!(TestRequest::get("/").run(&OpsOnly).response.get_status(), 403);
    //! # let info = TlsInfo {
    //! #     version: "TLSv1.3".into(),
    //! #     client_cert: Some(ClientCert { subject: "CN=ops, O=Example".into(), ..Default::default() }),
    //! #     ..Default::default()
    //! # };
    //! # let out = with_test_tls(info, || TestRequest::get("/").run(&OpsOnly));
    //! # assert_eq!(out.response.get_status(), 200);
    //! # }
    //! ```
}

pub mod responses {
    //! # Building the response
    //!
    //! `handle` fills the [`ResponseBuilder`](crate::ResponseBuilder) it is
    //! given: [`status`](crate::ResponseBuilder::status) (200 unless set;
    //! a status outside 200-999 becomes a 500),
    //! [`header`](crate::ResponseBuilder::header) (repeats are kept, in
    //! order) and [`body`](crate::ResponseBuilder::body).
    //!
    //! ## Headers the core owns
    //!
    //! The core frames every response, so these headers of yours are
    //! dropped: `Content-Length` (except with a stream, below),
    //! `Transfer-Encoding`, `Connection`, `Keep-Alive`, `TE`, `Trailer`,
    //! `Upgrade`, `Proxy-Connection`, and `Date` and `Server`, which it
    //! writes itself. A header whose name is not a token, or whose value
    //! holds CR, LF or NUL, is dropped with a warning in the vhost's error
    //! log. For `HEAD` requests and for 204 and 304 responses the core sends
    //! no body, whatever you set; build the same headers as for `GET`.
    //!
    //! ## The four body forms
    //!
    //! | form | use it for | how the core sends it |
    //! |---|---|---|
    //! | [`Body::Bytes`] (`.body(string)`) | generated pages, JSON, errors | with the head, `Content-Length` set |
    //! | [`Body::File`] | a file or one range of it | `sendfile(2)`, zero-copy, resumed when a slow client drains; `Content-Length` set |
    //! | [`Body::Segments`] | bytes and file ranges mixed (`multipart/byteranges`) | writes and `sendfile`s in order; `Content-Length` is the sum |
    //! | [`Body::Stream`] | output whose length you do not know in advance (a child process, a proxy) | pulled by the core as the socket drains; chunked on HTTP/1.1, close-delimited on HTTP/1.0 |
    //!
    //! **Bytes** are simplest: anything that is `Into<Body>` (`String`,
    //! `&str`, `Vec<u8>`, `&[u8]`, [`Segments`](crate::Segments)).
    //!
    //! **Shared bytes** (SDK 1.2): a plugin that answers from a store it
    //! keeps (a cache, a key-value store) gives an `Arc<[u8]>`
    //! ([`Body::shared`](crate::Body::shared), or `.body(arc.clone())`;
    //! [`Body::shared_range`](crate::Body::shared_range) for a range):
    //! the server sends the bytes where they are, with no copy per
    //! response, and drops its reference when the response is done. An
    //! older server reads them as a stream: the same bytes, pulled.
    //!
    //! **Files** give the core an open [`std::fs::File`]: its descriptor's
    //! ownership passes to the core, which sends `len` bytes from `offset`
    //! with `sendfile` and closes it when the response is done or the
    //! client leaves. Nothing is read into memory, files over 4 GiB work,
    //! and no thread waits for a slow client. The length is sent as
    //! `Content-Length` before the file: if the file turns out shorter
    //! (truncated meanwhile) the connection is closed. Take `len` from the
    //! open file's metadata, not from an earlier `stat` of the path.
    //!
    //! ```
    //! use std::fs::File;
    //! use tamada_sdk::prelude::*;
    //!
    //! /// Serves one fixed file, zero-copy.
    //! struct OneFile {
    //!     path: std::path::PathBuf,
    //! }
    //!
    //! impl Handler for OneFile {
    //!     fn handle(&self, _req: &Request, res: &mut ResponseBuilder) -> Outcome {
    //!         let file = match File::open(&self.path) {
    //!             Ok(f) => f,
    //!             Err(e) => return Outcome::Error(format!("{}: {e}", self.path.display())),
    //!         };
    //!         let len = match file.metadata() {
    //!             Ok(m) => m.len(),
    //!             Err(e) => return Outcome::Error(format!("{}: {e}", self.path.display())),
    //!         };
    //!         res.status(200)
    //!             .header("content-type", "text/plain; charset=utf-8")
    //!             .body(Body::File { file, offset: 0, len });
    //!         Outcome::Done
    //!     }
    //! }
    //! # #[cfg(feature = "testing")]
    //! # {
    //! # let dir = std::env::temp_dir().join(format!("tamada-sdk-doc-{}", std::process::id()));
    //! # std::fs::create_dir_all(&dir).unwrap();
    //! # let path = dir.join("file.txt");
    //! # std::fs::write(&path, "file body\n").unwrap();
    //! # let out = tamada_sdk::testing::TestRequest::get("/").run(&OneFile { path });
    //! # assert_eq!(out.body_bytes(), b"file body\n");
    //! # std::fs::remove_dir_all(&dir).unwrap();
    //! # }
    //! ```
    //!
    //! **Segments** hand files to the body once with
    //! [`Segments::file`](crate::Segments::file) and then add byte pieces
    //! and [ranges](crate::Segments::range) of those files in any order; the
    //! core owns and closes every file, as above.
    //!
    //! ```
    //! use tamada_sdk::Segments;
    //!
    //! # fn main() -> std::io::Result<()> {
    //! # let path = std::env::temp_dir().join(format!("tamada-sdk-seg-{}", std::process::id()));
    //! # std::fs::write(&path, "0123456789")?;
    //! let file = std::fs::File::open(&path)?;
    //! let mut body = Segments::new();
    //! let f = body.file(file);
    //! body.bytes("--sep\r\nContent-Range: bytes 0-1/10\r\n\r\n")
    //!     .range(f, 0, 2)
    //!     .bytes("\r\n--sep\r\nContent-Range: bytes 8-9/10\r\n\r\n")
    //!     .range(f, 8, 2)
    //!     .bytes("\r\n--sep--\r\n");
    //! assert_eq!(body.len(), 38 + 2 + 40 + 2 + 11); // bytes and ranges
    //! // res.status(206).header("content-type", "multipart/byteranges; boundary=sep").body(body);
    //! # std::fs::remove_file(&path)?;
    //! # Ok(())
    //! # }
    //! ```
    //!
    //! **Streams** are pulled by the core: after `handle` returns, it calls
    //! [`BodyStream::read`](crate::BodyStream::read) on a thread of the
    //! blocking pool, filling a bounded buffer (256 KiB) that the event loop
    //! writes to the client as its socket takes it; when the buffer is full
    //! the pull stops and the thread goes back to the pool until the client
    //! has read half of it (never two reads at once, hence `Send`). `read` may block on what the
    //! plugin owns (a pipe); `Ok(0)` ends the body. Then the core calls
    //! [`close`](crate::BodyStream::close) exactly once, last: with
    //! `client_gone: true` when the client left, the core gave up (a send
    //! timeout, a HEAD request, a 204 or 304), or the stream failed, so you
    //! can stop the work behind it (kill the child). An error from `read`
    //! after the head went out cannot become an error status: the core
    //! closes the connection, which tells the client the body is
    //! incomplete. A `Content-Length` header set with a stream is trusted:
    //! the core sends it instead of chunking, reads at most that many
    //! bytes, and closes the connection if the stream ends short.
    //! [`ReadStream`](crate::ReadStream) turns any `Read + Send` into a
    //! stream.
    //!
    //! ```
    //! use tamada_sdk::prelude::*;
    //!
    //! /// Counts down, one line per read; knows when the client has gone.
    //! struct Countdown {
    //!     left: u32,
    //! }
    //!
    //! impl BodyStream for Countdown {
    //!     fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
    //!         if self.left == 0 {
    //!             return Ok(0);
    //!         }
    //!         let line = format!("{}\n", self.left);
    //!         let n = line.len().min(buf.len());
    //!         buf[..n].copy_from_slice(&line.as_bytes()[..n]);
    //!         self.left -= 1;
    //!         Ok(n)
    //!     }
    //!     fn close(&mut self, client_gone: bool) {
    //!         if client_gone {
    //!             log::debug!("client left with {} lines unsent", self.left);
    //!         }
    //!     }
    //! }
    //!
    //! struct Lines;
    //!
    //! impl Handler for Lines {
    //!     fn handle(&self, _req: &Request, res: &mut ResponseBuilder) -> Outcome {
    //!         res.status(200)
    //!             .header("content-type", "text/plain")
    //!             .body(Body::Stream(Box::new(Countdown { left: 3 })));
    //!         Outcome::Done
    //!     }
    //! }
    //!
    //! // Any reader works too: a child's stdout, a file of unknown length.
    //! let _ = Body::Stream(Box::new(ReadStream(std::io::Cursor::new(b"abc".to_vec()))));
    //! # #[cfg(feature = "testing")]
    //! # {
    //! # let out = tamada_sdk::testing::TestRequest::get("/").run(&Lines);
    //! # assert_eq!(out.body_bytes(), b"3\n2\n1\n");
    //! # }
    //! ```
    //!
    //! Every other allocation is freed by whoever made it: the SDK frees
    //! what your plugin allocated, the server what it allocated; nothing of
    //! this shows in plugin code.
    //!
    //! ## After a 101: relays (SDK 1.1)
    //!
    //! A handler that has switched protocols with a server of its own (the
    //! `proxy` plugin does so for WebSocket) answers 101 and hands over the
    //! socket with [`ResponseBuilder::relay`](crate::ResponseBuilder::relay):
    //! the core writes the head, then moves bytes both ways between the
    //! client and that socket on the connection's event loop (no thread per
    //! relay), sends first the bytes you already read past the other
    //! server's 101, passes each side's end of stream on as a half-close,
    //! and closes both after `idle` with no byte either way (or when the
    //! server stops). The access log line comes when the relay closes.
    //! Only for an HTTP/1.1 request without a body, and only when
    //! [`host::has`](crate::host::has)`(Ability::Relay)`; otherwise the
    //! request gets a 500 and the socket is closed.
    //!
    //! ```no_run
    //! use std::net::TcpStream;
    //! use tamada_sdk::prelude::*;
    //!
    //! fn switch(res: &mut ResponseBuilder, upstream: TcpStream, read_past_101: Vec<u8>) -> Outcome {
    //!     res.status(101).header("upgrade", "websocket");
    //!     res.relay(upstream, read_past_101, std::time::Duration::from_secs(60));
    //!     Outcome::Done
    //! }
    //! # let _ = switch;
    //! ```
    //!
    //! [`Body::Bytes`]: crate::Body::Bytes
    //! [`Body::File`]: crate::Body::File
    //! [`Body::Segments`]: crate::Body::Segments
    //! [`Body::Stream`]: crate::Body::Stream
}

pub mod options {
    //! # Options: a route's `options:` with serde
    //!
    //! Each `routes:` or `loggers:` entry may carry free YAML under
    //! `options:`; the server hands it, unchanged, to your constructor as
    //! [`Options`](crate::Options). Parse it into a type of your own with
    //! [`Options::parse`](crate::Options::parse), and mark the type
    //! `#[serde(deny_unknown_fields)]`: an admin's typo (`greting:`) then
    //! stops the server from starting instead of being ignored in silence.
    //! A missing `options:` parses as an empty mapping, so give every
    //! field a default (`#[serde(default)]`) or make it `Option`.
    //!
    //! Validate everything the constructor can (values in range, folders
    //! that exist) and return `Err(message)`: the constructor runs at
    //! start-up, on every reload and on `tamada -t`, so a mistake is caught
    //! before a request meets it. The message needs no location:
    //! `tamada -t` (and start-up, and a reload, which then keeps the
    //! running configuration) prints it after the vhost file, line and
    //! route. When the error comes from [`Options::parse`](crate::Options::parse),
    //! the SDK also tells the server where in the options it lies (SDK
    //! 1.1), and the line and column are those of the offending key in the
    //! vhost file itself, e.g.
    //!
    //! ```text
    //! Thu, 26 Nov 2026 02:24:24 GMT [ERROR] configuration error:
    //! conf.d/example.yaml:11:9: routes[0] (/hello/): plugin `hello` refused its options: unknown field `greting`, expected one of `greeting`, `uppercase`, `skip`
    //! ```
    //!
    //! With the SDK's `schema` feature, describe the options for editors:
    //! `use tamada_sdk::schema::schemars;` (the SDK's own copy: no
    //! dependency to add), derive `schemars::JsonSchema` on the options
    //! type and add
    //! `schema: |_| tamada_sdk::schema::of::<Config>()` to
    //! [`export_plugin!`](crate::export_plugin) (see
    //! the `tamada_sdk::schema` module); `tamada --schema` then puts them into the
    //! schema of conf.d, and `autoindx:` is flagged as it is typed.
    //!
    //! [`units::Size`](crate::units::Size) and [`units::Secs`](crate::units::Secs)
    //! read sizes and durations as conf.d writes them, and say what they
    //! expected (`` `-5` is not a size: use 4096, 512KiB, 10MB, 1GiB ``).
    //!
    //! A panic in the constructor is caught and reported the same way.
    //! For quick experiments, [`Options::get`](crate::Options::get) reads
    //! one scalar option as a string, without checking for typos.
    //!
    //! ```
    //! use serde::Deserialize;
    //! use tamada_sdk::prelude::*;
    //!
    //! #[derive(Deserialize, Debug)]
    //! #[serde(deny_unknown_fields)]
    //! struct Config {
    //!     #[serde(default = "default_greeting")]
    //!     greeting: String,
    //!     #[serde(default)]
    //!     uppercase: bool,
    //!     skip: Option<String>,
    //! }
    //!
    //! fn default_greeting() -> String {
    //!     "hello".into()
    //! }
    //!
    //! fn check(options: &Options) -> Result<Config, String> {
    //!     let c: Config = options.parse()?;
    //!     if let Some(skip) = &c.skip
    //!         && !skip.starts_with('/')
    //!     {
    //!         return Err(format!("skip: `{skip}` must start with `/`"));
    //!     }
    //!     Ok(c)
    //! }
    //! # #[cfg(feature = "testing")]
    //! # {
    //! # let req = tamada_sdk::testing::TestRequest::get("/");
    //! # assert_eq!(check(&req.options("")).unwrap().greeting, "hello");
    //! # assert!(check(&req.options("{ uppercase: true }")).unwrap().uppercase);
    //! # let e = check(&req.options("{ greting: hi }")).unwrap_err();
    //! # assert!(e.contains("unknown field `greting`"), "{e}");
    //! # assert!(check(&req.options("{ skip: x }")).is_err());
    //! # }
    //! ```
    //!
    //! The constructor also learns where it is used:
    //! [`vhost`](crate::Options::vhost) (name, folders, config file),
    //! [`route`](crate::Options::route) and
    //! [`role`](crate::Options::role). Relative paths in your options are
    //! best resolved against the vhost's file
    //! ([`Vhost::config_file`](crate::Vhost::config_file)), as the server
    //! does for its own.
}

pub mod errors {
    //! # Errors and panics
    //!
    //! - **A failure you detect** in `handle`: return
    //!   [`Outcome::Error`](crate::Outcome::Error) with a message. The
    //!   client gets a 500 page; the vhost's error log gets
    //!   ``plugin `NAME` failed on GET /path: message``. Nothing of the
    //!   message reaches the client.
    //! - **A panic** in any hook (`handle`, the constructor, `log`,
    //!   `record`, the lifecycle hooks, a stream's `read` and `close`,
    //!   `Drop`) is caught by the SDK before it can cross into the server.
    //!   In `handle` it becomes a 500 and the log line
    //!   ``plugin `NAME` failed on GET /path: panic: <message>``; in the
    //!   constructor, a configuration error (`panicked while reading
    //!   options: ...`); in `log` and the lifecycle hooks, an error record;
    //!   in `record`, a stream's `close` and `Drop` it is swallowed. The
    //!   server and the other requests carry on. A panic in a stream's
    //!   `read` comes after the head was sent, so the connection is closed
    //!   instead (the client sees a truncated response).
    //! - **Panics must unwind.** A plugin built with `panic = "abort"`
    //!   cannot be contained: its first panic ends the whole server, every
    //!   connection with it. **Building a plugin with `panic = "abort"` is
    //!   forbidden**, in every profile (`[profile.release]` included), and
    //!   so is calling [`std::process::abort`] or [`std::process::exit`].
    //!   Since SDK 1.1 it is also enforced: [`export_plugin!`](crate::export_plugin)
    //!   fails to compile under `panic = "abort"`, and the server refuses,
    //!   in one line, a plugin whose extension table says it aborts (a
    //!   plugin built for SDK 1.0 has no such table and cannot be checked).
    //! - State that a panic interrupted may be inconsistent: a `Mutex`
    //!   whose holder panicked is poisoned for later requests. Recover
    //!   (`lock().unwrap_or_else(|e| e.into_inner())`) only where that is
    //!   safe.
    //!
    //! ```
    //! use tamada_sdk::prelude::*;
    //!
    //! struct Fragile;
    //!
    //! impl Handler for Fragile {
    //!     fn handle(&self, req: &Request, _res: &mut ResponseBuilder) -> Outcome {
    //!         if req.path() == "/bug" {
    //!             // Caught by the SDK: this request gets a 500, the next is served.
    //!             panic!("a bug");
    //!         }
    //!         Outcome::Error("the backend is down".into())
    //!     }
    //! }
    //! # #[cfg(feature = "testing")]
    //! # {
    //! # let out = tamada_sdk::testing::TestRequest::get("/").run(&Fragile);
    //! # assert_eq!(out.outcome, Outcome::Error("the backend is down".into()));
    //! # }
    //! ```
}

pub mod logging {
    //! # Logging
    //!
    //! Use the `log` crate's macros (`log::error!`, `log::warn!`,
    //! `log::info!`, ...). Every `cdylib` carries its own copy of `log`'s
    //! global logger, so when the server loads a plugin the SDK installs in
    //! it a logger that forwards each record to the server. The server
    //! then routes it:
    //!
    //! - made while the plugin serves a request (in `handle`, or in a
    //!   stream's `read`): to the vhost's error log (its `loggers:`, see
    //!   [`Handler::record`](crate::Handler::record)), tagged with the
    //!   plugin's name and the client's address, e.g.
    //!   `2026-11-26T01:40:53.123Z [error] [client 127.0.0.1] [vhost example.com] hello: message`;
    //!   a vhost without loggers sends it to the server's own log;
    //! - made anywhere else (the constructor, threads of your own): to the
    //!   server's own log (stderr or `log_file:`), as `target: message`.
    //!
    //! The server's log level and each logger's `error_level` decide what
    //! is kept. A thread of your own that works for a vhost (reading a
    //! child's stderr, a background refresh) sends its records to that
    //! vhost's error log with [`record_for`](crate::record_for), which works
    //! from any thread:
    //!
    //! ```
    //! use tamada_sdk::record_for;
    //!
    //! let vhost = "example.com".to_owned();
    //! std::thread::spawn(move || {
    //!     record_for(&vhost, None, log::Level::Warn, "hello:refresher", "cache refresh failed");
    //! })
    //! .join()
    //! .unwrap();
    //! ```
    //!
    //! Outside a server (unit tests) these records go nowhere.
    //!
    //! **Never install a global logger** in a plugin: no
    //! `env_logger::init()`, no `fern::Dispatch::apply()`, no
    //! `log::set_logger`. The SDK owns the plugin's logger; replacing it
    //! cuts the plugin off from the server's logs. To format records with
    //! fern (a logging plugin writing its own files), build the `Dispatch`
    //! and use it through `into_log()`. Likewise **never install a signal
    //! handler**: the server owns the signals and calls
    //! [`reopen`](crate::Handler::reopen),
    //! [`flush`](crate::Handler::flush) and
    //! [`shutdown`](crate::Handler::shutdown) instead.
    //! ## Notes: details for the loggers (SDK 1.1)
    //!
    //! A handler may attach notes to its exchange with
    //! [`Request::note`](crate::Request::note)`("upstream", "10.0.0.7:8080")`:
    //! string keys and values that every logger of the vhost sees after the
    //! response, in [`LogEntry::notes`](crate::LogEntry::notes) (the
    //! `logging` plugin's JSON format writes them as `"notes": {...}`), as
    //! nginx's `$upstream_addr` reaches its access log. It works on
    //! whichever thread runs the handler (the loop or the pool); the notes
    //! of a call that answered `defer` are dropped with its answer.
    //!
    //! [`tamada_sdk::host`](crate::host) tells what the server offers
    //! (`host::has(Ability::Notes)`), its version and whether it is
    //! draining, so a plugin built for a newer SDK can run, reduced, on an
    //! older server.
}

pub mod threads {
    //! # Threads and instances
    //!
    //! The server builds **one instance per route** (and per logger entry)
    //! and shares it between all the server's threads (its event loops and
    //! the blocking pool): while one runs `handle` for a request, others run
    //! it for other requests on the same `&self`. Hence
    //! [`Handler`](crate::Handler)` : Send + Sync + 'static`.
    //!
    //! - Keep per-request state on the stack of `handle` (or in the stream
    //!   you return), never in `self`.
    //! - Shared counters: atomics. Shared caches: a `Mutex` or `RwLock`,
    //!   held briefly and never across a blocking call.
    //! - Do not rely on thread-locals for per-connection or per-request
    //!   state: a thread serves many connections, and one slow response
    //!   may be continued on another thread. (A thread-local *cache* is
    //!   fine: the static plugin keeps one per event loop.)
    //! - A stream is used by one thread at a time but may move between
    //!   threads: it must be `Send`, not `Sync`.
    //! - Blocking in `handle` holds a pool thread; bound every wait (a
    //!   child's output, a backend) with a timeout of your own. Inline
    //!   handlers never block at all (see [`placement`](super::placement)).
    //! - Threads you start yourself must finish or be told to stop in
    //!   [`shutdown`](crate::Handler::shutdown) (or in `Drop`, for a
    //!   reload): the library is never unloaded, so a forgotten thread
    //!   merely lingers, but it keeps what it holds.
    //!
    //! On SIGHUP the server builds new instances from the new `options:`
    //! and swaps the whole configuration in at once; requests already
    //! running finish on the old instances, which are flushed and dropped
    //! afterwards. Two instances of one plugin may therefore live at the
    //! same time, as they do for two routes. Statics are shared by every
    //! instance of the plugin and survive reloads, unless the plugin file
    //! itself was replaced (see [`phases`](super::phases)).
    //!
    //! ```
    //! use std::sync::atomic::{AtomicU64, Ordering};
    //! use tamada_sdk::prelude::*;
    //!
    //! #[derive(Default)]
    //! struct Counter {
    //!     served: AtomicU64, // shared by every thread: an atomic, not a `u64`
    //! }
    //!
    //! impl Handler for Counter {
    //!     fn handle(&self, _req: &Request, res: &mut ResponseBuilder) -> Outcome {
    //!         let n = self.served.fetch_add(1, Ordering::Relaxed) + 1; // per-request: on the stack
    //!         res.body(format!("request {n}\n"));
    //!         Outcome::Done
    //!     }
    //! }
    //! # #[cfg(feature = "testing")]
    //! # {
    //! # let c = Counter::default();
    //! # let req = tamada_sdk::testing::TestRequest::get("/");
    //! # std::thread::scope(|s| { for _ in 0..4 { s.spawn(|| { req.run(&c); }); } });
    //! # assert_eq!(req.run(&c).body_bytes(), b"request 5\n");
    //! # }
    //! ```
}

pub mod placement {
    //! # Placement (SDK 1.1): inline on the event loop, or on the pool
    //!
    //! The server runs one event loop per CPU core. Each loop owns its
    //! connections for their whole life: it reads and parses requests,
    //! writes responses and keeps idle connections, with no thread per
    //! connection. A handler runs in one of two places:
    //!
    //! - **The blocking pool** ([`Placement::Pool`](crate::Placement::Pool),
    //!   the default and what every plugin built for SDK 1.0 gets): the
    //!   request's work moves to a pool thread and its answer comes back
    //!   to the loop. The handler may block; the request body streams in
    //!   from the loop through a bounded channel; a
    //!   [`BodyStream`](crate::BodyStream) is pulled on the pool into a
    //!   bounded buffer, so a slow client never holds a pool thread.
    //! - **Inline** ([`Placement::Inline`](crate::Placement::Inline)): the
    //!   loop calls `handle` itself, with no hand-off, when the request
    //!   body is empty or wholly in memory (it came with the head, or the
    //!   loop collected it first: a `Content-Length` of at most 64 KiB).
    //!   Otherwise (a larger body still arriving, a pending `Expect:
    //!   100-continue`) the same instance runs on the pool: inline code
    //!   must also be correct there. This is how `static` beats servers
    //!   written in C.
    //!
    //! Declare it in [`Handler::placement`](crate::Handler::placement),
    //! which the server reads once per instance, right after the
    //! constructor; the same declaration places the instance's
    //! [`log`](crate::Handler::log) phase (after the response is out).
    //!
    //! ## Blocking work: offload it (SDK 1.2)
    //!
    //! The pool is shared: by every plugin that may block, and by the
    //! large request bodies the core spools. A handler that waits 200 ms
    //! on a slow backend from the pool holds a pool thread for those
    //! 200 ms, and 20 of them made an unrelated upload wait almost a
    //! second in a trial. Declare the handler inline and hand the slow
    //! part to [`Request::offload`](crate::Request::offload): it runs on
    //! a thread of its own, the request waits on its loop holding no
    //! thread of the server's, and the handler is called again with the
    //! result ([`offload`](crate::offload) has the complete pattern).
    //! Where it cannot wait (on the pool, on an older server) the same code
    //! runs the work in place. Bound a route whose backend may get slow
    //! with `max_in_flight` in its conf.d route, so that it never has more
    //! than that many requests, offloaded or not, in flight; or give a
    //! route that must block on the pool threads of its own (`pool: 8`):
    //! its handler calls and response streams run there, and the shared
    //! pool stays free for every other route.
    //!
    //! ## The contract of inline code
    //!
    //! While an inline handler runs, every other connection of its loop
    //! waits. Inline code may do:
    //! - work in memory (a cache lookup, formatting a page, a counter);
    //! - fast system calls on local files: `open`, `fstat`, reading a
    //!   small file, `readdir` of a small folder;
    //! - take a lock that is only ever held for memory work.
    //!
    //! It must never:
    //! - sleep, or wait for a timer;
    //! - touch the network (a backend, DNS, a database);
    //! - start or wait for a child process;
    //! - wait on a lock that anyone holds across I/O (a log file's writer,
    //!   a cache filled by a slow read);
    //! - read the request body when it is not in memory: the server only
    //!   runs a handler inline when it is (the body reader then never
    //!   waits).
    //!
    //! When a request needs slow work, answer
    //! [`Request::defer`](crate::Request::defer) and the server calls
    //! `handle` again on the pool, where
    //! [`Request::is_inline`](crate::Request::is_inline) is false; the
    //! builder of the inline call is discarded. `static` does this for
    //! `etag: content` on a file it has not hashed yet.
    //!
    //! ```
    //! use std::collections::HashMap;
    //! use std::sync::RwLock;
    //! use tamada_sdk::prelude::*;
    //!
    //! #[derive(Default)]
    //! struct Pages {
    //!     rendered: RwLock<HashMap<String, String>>,
    //! }
    //!
    //! impl Handler for Pages {
    //!     fn placement(&self) -> Placement {
    //!         Placement::Inline
    //!     }
    //!     fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
    //!         let hit = self.rendered.read().ok().and_then(|m| m.get(req.path()).cloned());
    //!         let page = match hit {
    //!             Some(p) => p,
    //!             // Not in memory yet: the slow render runs on the pool.
    //!             None if req.is_inline() => return req.defer(),
    //!             None => {
    //!                 let p = format!("rendered {}\n", req.path()); // slow work here
    //!                 if let Ok(mut m) = self.rendered.write() {
    //!                     m.insert(req.path().to_owned(), p.clone());
    //!                 }
    //!                 p
    //!             }
    //!         };
    //!         res.header("content-type", "text/plain").body(page);
    //!         Outcome::Done
    //!     }
    //! }
    //! # #[cfg(feature = "testing")]
    //! # {
    //! # let p = Pages::default();
    //! # let req = tamada_sdk::testing::TestRequest::get("/a");
    //! # assert!(req.run_inline(&p).is_none());
    //! # assert_eq!(req.run(&p).body_bytes(), b"rendered /a\n");
    //! # assert_eq!(req.run_inline(&p).unwrap().body_bytes(), b"rendered /a\n");
    //! # }
    //! ```
    //!
    //! A decline chain and an internal redirect pick the place again for
    //! each handler: an inline handler that declines may pass the request
    //! to a pool handler. Once a request is on the pool it stays there
    //! (an inline instance may always run on the pool).
    //!
    //! Servers older than SDK 1.1 ignore the declaration and run every
    //! handler on their worker threads; `is_inline` is then always false.
    //!
    //! ## Talking to another server from the loop: `wait`
    //!
    //! A handler that speaks to a backend (a proxy, FastCGI, a cache
    //! server) can run inline without blocking: it uses a non-blocking
    //! socket, and when a read or write says `WouldBlock` it answers
    //! [`Request::wait`](crate::Request::wait) with the socket's
    //! descriptor, what to wait for ([`Interest`](crate::Interest)), a
    //! timeout and its state (anything `Send + 'static`: the socket and
    //! where the exchange is). The loop watches the descriptor with its
    //! own epoll set (no thread waits) and calls `handle` again on the same
    //! loop when it is ready or the time is up;
    //! [`Request::resume`](crate::Request::resume) gives the state back and
    //! [`Request::woke`](crate::Request::woke) says which it was. The
    //! `proxy` and `fastcgi` plugins work this way: measured, the hand-off
    //! to the pool and back cost the proxy 40% of its speed.
    //!
    //! The rules:
    //! - only when [`Request::can_wait`](crate::Request::can_wait) (inline,
    //!   on a server with [`Ability::Wait`](crate::host::Ability::Wait));
    //!   otherwise block on the pool, or `defer` to get there;
    //! - wait only after an operation said `WouldBlock` (or on a socket
    //!   just connected or just written to): the loop wakes the handler on
    //!   a change, not on a state;
    //! - a wake may be spurious: a read that says `WouldBlock` again means
    //!   wait again;
    //! - keep the descriptor open, inside the state, until the next call;
    //!   the core never closes it. When the request ends without another
    //!   call (the client left, the server stopped), the state is dropped
    //!   on the loop, so its `Drop` must not block;
    //! - the timeout is the handler's own deadline (a `read_timeout`): on
    //!   [`Woke::TimedOut`](crate::Woke::TimedOut) answer (504, say);
    //!   the loop checks deadlines four times a second;
    //! - the response builder of a call that waits is discarded; notes
    //!   stay. A body longer than what fits in memory is best answered as a
    //!   [`BodyStream`](crate::BodyStream) over a blocking socket: the core
    //!   pulls it on the pool into a bounded buffer.
    //!
    //! `TestRequest::run_waiting` (feature `testing`) runs such a handler
    //! in a unit test, with real waits.
}

pub mod testing {
    //! # Testing a plugin
    //!
    //! Build the crate as `["cdylib", "rlib"]` and enable the SDK's
    //! `testing` feature for tests only:
    //!
    //! ```toml
    //! [dev-dependencies]
    //! tamada-sdk = { path = "../tamada/sdk", features = ["testing"] }
    //! ```
    //!
    //! The module `tamada_sdk::testing` (present with that feature) then
    //! gives `TestRequest`: a request built in a unit test (method, target,
    //! headers, body, chunked or not, vhost, route, document root,
    //! addresses: each has a builder method), on which `run(&handler)`
    //! calls your `handle` in-process, without a server or a `.so`, and
    //! returns the [`Outcome`] and the response (`read_body()` reads a
    //! bytes, file, segments or stream body whole and leaves the headers in
    //! place; `body_bytes()` does the same and consumes it). A panic is
    //! caught as the server catches it: the outcome is then
    //! `Outcome::Error("panic: ...")`. `run_inline` runs it as an inline
    //! handler (see [`placement`](super::placement)), and `run_waiting` as
    //! a non-blocking one whose `Request::wait`s really wait; `capture(|| ...)`
    //! returns the records your code logged (`log::warn!`,
    //! [`record_for`](crate::record_for)). `TestRequest::options(yaml)`
    //! builds [`Options`] as the server would, so the constructor is tested
    //! with the handler. Unlike the server, `TestRequest` does not
    //! normalise the path: give it as the core would. The module is in the
    //! documentation whatever the features (`cargo doc -p tamada-sdk`).
    //!
    //! ```
    //! use serde::Deserialize;
    //! use tamada_sdk::prelude::*;
    //!
    //! #[derive(Deserialize)]
    //! #[serde(deny_unknown_fields)]
    //! struct Hello {
    //!     #[serde(default)]
    //!     greeting: String,
    //! }
    //!
    //! impl Handler for Hello {
    //!     fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
    //!         if req.rest() == "/private" {
    //!             return Outcome::Decline;
    //!         }
    //!         res.header("content-type", "text/plain")
    //!             .body(format!("{} {}\n", self.greeting, req.path()));
    //!         Outcome::Done
    //!     }
    //! }
    //!
    //! fn new(options: &Options) -> Result<Hello, String> {
    //!     options.parse()
    //! }
    //!
    //! # #[cfg(feature = "testing")]
    //! # {
    //! // In the plugin: #[cfg(test)] mod tests { ... #[test] fn ... }
    //! use tamada_sdk::testing::TestRequest;
    //!
    //! let req = TestRequest::get("/hi/there?x=1").route("/hi/");
    //! let hello = new(&req.options("{ greeting: hey }")).unwrap();
    //! let out = req.run(&hello);
    //! assert_eq!(out.outcome, Outcome::Done);
    //! assert_eq!(out.response.get_status(), 200);
    //! assert_eq!(out.response.get_header("content-type"), Some(&b"text/plain"[..]));
    //! assert_eq!(out.body_bytes(), b"hey /hi/there\n");
    //!
    //! let out = TestRequest::get("/hi/private").route("/hi/").run(&hello);
    //! assert_eq!(out.outcome, Outcome::Decline);
    //!
    //! let err = new(&req.options("{ greting: hey }")).err().unwrap();
    //! assert!(err.contains("unknown field `greting`"));
    //! # }
    //! ```
    //!
    //! Unit tests cover the logic; the `.so` itself is best tested end to
    //! end: start a real `tamada` with a temporary `conf.d` and
    //! `--plugin-dir` holding your `.so`, send requests, and check
    //! `tamada --plugins --plugin-dir DIR` lists it. The template's
    //! integration test in the tamada repository
    //! (`server/tests/template.rs`) does exactly that.
    //!
    //! [`Outcome`]: crate::Outcome
    //! [`Options`]: crate::Options
}

pub mod filters {
    //! # Writing a response filter (SDK 1.2)
    //!
    //! A filter changes what other handlers answer: a header on every
    //! response of a vhost, a body rewritten on its way out, a cached copy
    //! served instead. Admins list filters in a vhost's or a route's
    //! `filters:` (a route's list replaces the vhost's); each entry is an
    //! instance of your [`Filter`](crate::filter::Filter) built from its
    //! `options:`, exported with `export_plugin!(name: ..., filter: ...)`
    //! (or after a handler's `new:`, with `filter_schema:` for its
    //! options' schema).
    //!
    //! ## The two sides
    //!
    //! [`Filter::request`](crate::filter::Filter::request) runs before the
    //! handler, on the event loop: it may set or remove request header
    //! fields ([`RequestEdit`](crate::filter::RequestEdit)). Use it to keep
    //! validators consistent: a filter that changes a representation must
    //! recognise its own ETag in `If-None-Match` and give the handler the
    //! one it knows.
    //!
    //! [`Filter::response`](crate::filter::Filter::response) runs once per
    //! response, on the event loop or on the pool (wherever the handler's
    //! answer is); it sees the request as the client sent it and the
    //! [`ResponseHead`](crate::filter::ResponseHead): status, header
    //! fields, the body's [kind](crate::filter::BodyKind) and length, the
    //! [file](crate::filter::ResponseHead::body_file) of a file body, and
    //! whether the body will be sent at all
    //! ([`head_only`](crate::filter::ResponseHead::head_only): a HEAD
    //! request must get the fields a GET would). It returns an
    //! [`Action`](crate::filter::Action):
    //!
    //! - `Keep`: the head as edited, the body as it is. This is free: a
    //!   file stays a `sendfile` body. Return it whenever you can.
    //! - `Transform(Box<dyn BodyFilter>)`: the body passes through your
    //!   [`BodyFilter`](crate::filter::BodyFilter), a piece at a time
    //!   ([`data`](crate::filter::BodyFilter::data)), with a
    //!   [`flush`](crate::filter::BodyFilter::flush) where a live stream's
    //!   handler gave a piece and a [`finish`](crate::filter::BodyFilter::finish)
    //!   at the end. The server drops `Content-Length`; a small body (64 KiB
    //!   or less, in memory or a file) is transformed at once and keeps an
    //!   exact length, a larger one or a stream is pulled through your
    //!   transform on the pool in 32 KiB pieces. Hold back as little as
    //!   you can: what you keep is memory per response.
    //! - `Replace(Body)`: another body (a cached copy; any body form).
    //!
    //! Neither side may block on anything but its own work: no network,
    //! no locks held for long. A panic is contained: before anything was
    //! sent the response becomes a 500, after the head it ends the
    //! connection; both are logged with your plugin's name.
    //!
    //! ## A complete filter, with its tests
    //!
    //! Adds `Server-Timing`-like `X-Words` with the word count of
    //! `text/plain` answers, counting as the body streams past:
    //!
    //! ```
    //! use serde::Deserialize;
    //! use tamada_sdk::filter::{Action, BodyFilter, Filter, RequestEdit, ResponseHead};
    //! use tamada_sdk::prelude::*;
    //!
    //! #[derive(Deserialize, Default)]
    //! #[serde(deny_unknown_fields, default)]
    //! struct Config {
    //!     /// Refuse answers longer than this (bytes), as the filter's own rule.
    //!     max: Option<u64>,
    //! }
    //!
    //! struct WordCount {
    //!     max: Option<u64>,
    //! }
    //!
    //! /// Passes the bytes on unchanged and appends a count at the end.
    //! struct Counting {
    //!     words: u64,
    //!     in_word: bool,
    //! }
    //!
    //! impl BodyFilter for Counting {
    //!     fn data(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    //!         for &b in input {
    //!             let space = b.is_ascii_whitespace();
    //!             if !space && !self.in_word {
    //!                 self.words += 1;
    //!             }
    //!             self.in_word = !space;
    //!         }
    //!         out.extend_from_slice(input);
    //!         Ok(())
    //!     }
    //!     fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
    //!         out.extend_from_slice(format!("\n-- {} words\n", self.words).as_bytes());
    //!         Ok(())
    //!     }
    //! }
    //!
    //! impl Filter for WordCount {
    //!     fn request(&self, _req: &Request, edit: &mut RequestEdit) {
    //!         // Word counts are appended: ranges of the original make no sense.
    //!         edit.remove_header("range");
    //!     }
    //!     fn response(&self, _req: &Request, head: &mut ResponseHead) -> Action {
    //!         let text = head.header_str("content-type").is_some_and(|t| t.starts_with("text/plain"));
    //!         if head.status() != 200 || !text {
    //!             return Action::Keep;
    //!         }
    //!         if let (Some(max), Some(len)) = (self.max, head.body_len()) && len > max {
    //!             head.set_header("x-words", "not counted");
    //!             return Action::Keep;
    //!         }
    //!         head.set_header("x-words", "appended");
    //!         head.remove_header("etag"); // another representation
    //!         Action::Transform(Box::new(Counting { words: 0, in_word: false }))
    //!     }
    //! }
    //!
    //! pub fn new(options: &Options) -> Result<WordCount, String> {
    //!     let c: Config = options.parse()?;
    //!     Ok(WordCount { max: c.max })
    //! }
    //!
    //! tamada_sdk::export_plugin!(name: "wordcount", filter: new);
    //!
    //! # fn main() {
    //! # #[cfg(feature = "testing")]
    //! # {
    //! // Tests (in `#[cfg(test)]`, with the `testing` feature):
    //! use tamada_sdk::testing::TestRequest;
    //!
    //! let req = TestRequest::get("/notes.txt").header("range", "bytes=0-9");
    //! let f = new(&req.options("max: 1000")).unwrap();
    //! // The request side drops the range.
    //! assert_eq!(req.filter_request(&f).edits(), &[("range".to_owned(), None)]);
    //! // The response side counts and appends.
    //! let mut res = ResponseBuilder::new();
    //! res.header("content-type", "text/plain").header("etag", "\"1\"").body("one two  three");
    //! let out = req.filter(&f, res);
    //! assert!(out.transformed);
    //! assert_eq!(out.body, b"one two  three\n-- 3 words\n");
    //! assert_eq!(out.head.header_str("x-words"), Some("appended"));
    //! assert_eq!(out.head.header("etag"), None);
    //! // Other types, and long bodies, are kept as they are.
    //! let mut res = ResponseBuilder::new();
    //! res.header("content-type", "text/plain").body(vec![b'a'; 2000]);
    //! let out = req.filter(&f, res);
    //! assert!(!out.transformed);
    //! assert_eq!(out.head.header_str("x-words"), Some("not counted"));
    //! # }
    //! # }
    //! ```
    //!
    //! [`TestRequest::filter`](crate::testing::TestRequest::filter) runs a
    //! response side as the server does (a stream's pieces each followed
    //! by a flush) and gives the head and the body as it would go out, or
    //! the panic; [`TestRequest::filter_request`](crate::testing::TestRequest::filter_request)
    //! gives the request side's edits. The server's own `compress` and
    //! `headers` plugins (in the tamada repository, `plugins/compress`,
    //! `plugins/headers`) are filters written this way.
    //!
    //! ## On an older server
    //!
    //! A 1.1 server loads a filter plugin (it ignores the table it does not
    //! know) and refuses a `filters:` entry naming it at `tamada -t`;
    //! [`filter::available`](crate::filter::available) tells a plugin at
    //! run time whether the server runs filters.
}

pub mod compatibility {
    //! # Compatibility, versions and installing
    //!
    //! A plugin and the server meet only through the binary interface in
    //! [`abi`](crate::abi): `#[repr(C)]` tables of function pointers and
    //! FFI-safe types. These rules say which server loads which plugin.
    //!
    //! ## What the server checks when it loads a `.so`
    //!
    //! 1. **The bootstrap header is frozen forever.** Every plugin exports
    //!    `tamada_plugin_header`, returning a magic number and the SDK
    //!    major.minor it was built with
    //!    ([`PluginHeader`](crate::abi::PluginHeader)). No SDK version will
    //!    ever change it, so any server can read any plugin's version.
    //! 2. **Same major, or refused.** A plugin built with another SDK major
    //!    is not loaded; `tamada --plugins` and the log say so in one line,
    //!    e.g. `skipped  libx.so: built for tamada SDK 2.0, this server
    //!    speaks SDK 1.3: rebuild it against tamada-sdk 1.x`.
    //! 3. **Layout check.** Within the major, each table the plugin exports
    //!    carries its `abi_stable` layout, which the server checks against
    //!    its own at load; a mismatch is refused with a one-line summary
    //!    (`-v` shows abi_stable's full report).
    //! 4. **Optional tables** are looked up by symbol name. A plugin that
    //!    lacks one simply lacks that ability. `tamada_plugin_lifecycle_v1`
    //!    (the log, record and lifecycle hooks) is such a table already:
    //!    a plugin without it loads and serves, and those hooks are no-ops.
    //! 5. **Unique names.** A name already taken by an earlier file (files
    //!    load in name order) is skipped. `static`, `cgi`, `logging`,
    //!    `placeholder` and the other plugins shipped with the server have
    //!    theirs: pick a name of your own.
    //!
    //! A file that fails a check is skipped with its reason; the server
    //! still starts, unless a route names the missing plugin, and then the
    //! error lists every skipped file and why.
    //!
    //! ## The semver policy of `tamada-sdk`
    //!
    //! The SDK version *is* the plugin interface version:
    //!
    //! - **Since 1.0, a released table is frozen for its whole major**: no
    //!   field is added, removed, reordered or retyped, no function's
    //!   signature changes. (`abi_stable` rejects a plugin whose table has
    //!   fewer fields than the server expects, so growing a table would
    //!   refuse every older plugin.)
    //! - **A minor version may only add**: new tables, exported under new
    //!   symbol names and probed by name (a new hook arrives as
    //!   `tamada_plugin_<ability>_v1`), and Rust-side conveniences in the
    //!   SDK that do not touch a table. So a plugin built with SDK 1.2 loads
    //!   in a server of SDK 1.5 (it just lacks the newer abilities), and one
    //!   built with SDK 1.5 loads in a server of SDK 1.2, which ignores the
    //!   tables it does not know (abilities that need the newer server are
    //!   then absent).
    //! - **Anything that changes an existing table needs a new major.** A
    //!   new major means rebuilding every plugin against it.
    //! - A patch version changes no table and no behaviour a plugin can
    //!   rely on.
    //! - Before 1.0 (major 0) tables changed freely; a major-0 plugin is
    //!   refused by a 1.x server like any other major.
    //!
    //! So: build a plugin against the SDK of the oldest server it must run
    //! on, with the same major.
    //!
    //! What each minor added:
    //!
    //! | SDK | tables | abilities |
    //! |---|---|---|
    //! | 1.0 | `tamada_plugin_v1`, `tamada_plugin_lifecycle_v1` | handlers, loggers, the lifecycle hooks |
    //! | 1.1 | `tamada_plugin_ext_v1` (with the host's `HostExtV1`) | placement (inline or pool), `defer`, `wait` on the event loop, relays after a 101, request notes, declared roles, option errors at their line, the host's version, abilities and drain state |
    //! | 1.2 | `tamada_plugin_tls_v1` (`HostTlsV1`), `tamada_plugin_access_v1` (`AccessV1`), `tamada_plugin_user_v1` (`HostAccessV1`), `tamada_plugin_filter_v1` (`FilterV1`), `tamada_plugin_shared_v1` (`SharedV1`) | the TLS view of a request ([`Request::tls`](crate::Request::tls)); access rules that pass, answer, rewrite, name a user or wait on a timer ([`access`](crate::access)) and the user they name ([`Request::user`](crate::Request::user)); response filters ([`filter`](crate::filter), the [`filters`](crate::guide::filters) chapter); shared bytes sent without a copy ([`Body::shared`](crate::Body::shared)); and, with no table of its own, blocking work offloaded while the request waits on its loop ([`offload`](crate::offload), over the 1.1 wait) |
    //! | 1.3 | `tamada_plugin_proto_v1` (`HostProtoV1`) | the HTTP version of a request: [`Request::version`](crate::Request::version) says `(2, 0)` for HTTP/2 (a plugin built before 1.3 sees `(1, 1)`) |
    //!
    //! Each 1.2 ability is also visible at run time: `tls::available()`,
    //! `access::available()`, `filter::available()` say whether the server
    //! gives it (the 1.1 [`Ability`](crate::host::Ability) enum is
    //! exhaustive and frozen, so it gains no variants); on a 1.1 server a
    //! 1.2 plugin loads and serves as a 1.1 plugin, its 1.2 tables ignored,
    //! and `Request::offload` runs the work in place.
    //!
    //! The tamada repository keeps a plugin built from a frozen copy of
    //! each minor's tables (`testplugins/frozen-v1_0`, `frozen-v1_1`,
    //! `frozen-v1_2`, `frozen-v1_3`); its tests load and run them against
    //! every new server.
    //!
    //! ## Installing and replacing a plugin
    //!
    //! **Libraries are never unloaded**: their code may be running on any
    //! thread, and instances of an old configuration may still be in use.
    //! The server loads the plugin folder at start-up and looks at it again
    //! on every SIGHUP: new files are loaded, a file replaced by a rename
    //! is loaded anew (its new instances use the new library, the old
    //! library stays mapped for the old ones), unchanged files are kept.
    //! Hence:
    //!
    //! - Install by copying to a temporary name in the plugin folder that
    //!   does not match `lib*.so`, then renaming into place:
    //!   `cp libx.so DIR/.libx.so.tmp && mv DIR/.libx.so.tmp DIR/libx.so`.
    //!   The rename is atomic: a reload sees the old file or the new one,
    //!   never half of one.
    //! - **Never `cp` over a `.so` in the plugin folder** (nor GNU
    //!   `install`, nor a linker writing in place): rewriting a library in
    //!   place crashes any process that has it mapped, and a reload during
    //!   the copy would read a half-written file.
    //! - Check first with `tamada -t --plugin-dir DIR` and
    //!   `tamada --plugins --plugin-dir DIR`, then send SIGHUP. A reload
    //!   that fails (a route names a plugin that was refused) keeps the
    //!   running configuration and logs why.
}
