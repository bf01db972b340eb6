//! The request as a plugin sees it: a borrowed view of the core's parsed
//! request, with the body as a streaming reader. See
//! [`guide::requests`](crate::guide::requests).

/// The host's protocol view (SDK 1.3), once the server gave it.
pub(crate) static HOST_PROTO: std::sync::OnceLock<&'static crate::abi::HostProtoV1> =
    std::sync::OnceLock::new();

use crate::abi::{AddrV1, HeaderV1, RequestV1, VhostV1};
use crate::outcome::Outcome;
use abi_stable::std_types::RSliceMut;
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;
use std::path::Path;
use std::time::Duration;

/// A request, borrowed for the duration of a phase. Its strings borrow
/// the core's buffers: copy what you keep past the call.
pub struct Request<'a> {
    raw: &'a RequestV1<'a>,
    /// SDK 1.1: the call runs inline on an event loop.
    inline: bool,
    /// SDK 1.1: [`Request::defer`] was called.
    deferred: Cell<bool>,
    /// SDK 1.1: why this call happens (after a wait or not).
    woke: Woke,
    /// SDK 1.1: the call may answer [`Request::wait`].
    may_wait: bool,
    /// SDK 1.1: the state the last wait saved, until taken.
    resumed: RefCell<Option<Box<dyn Any + Send>>>,
    /// SDK 1.1: [`Request::wait`] was called.
    waiting: RefCell<Option<Waiting>>,
    /// SDK 1.2: call the handler again at once with this state (an
    /// [`offload`](Self::offload) that ran where it could not wait).
    recall: RefCell<Option<Box<dyn Any + Send>>>,
}

thread_local! {
    /// Unit tests (no server): notes attached on this thread, collected
    /// while `Some` (the testing helpers turn it on).
    pub(crate) static TEST_NOTES: RefCell<Option<Vec<(String, String)>>> =
        const { RefCell::new(None) };
    /// Unit tests: the notes a logger's [`LogEntry::notes`](crate::LogEntry::notes) gives.
    pub(crate) static TEST_LOG_NOTES: RefCell<Vec<(String, String)>> =
        const { RefCell::new(Vec::new()) };
}

/// Why `handle` is called ([`Request::woke`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woke {
    /// The route's first call for this request.
    First,
    /// The descriptor of the last [`Request::wait`] is ready.
    Ready,
    /// The last wait's timeout passed before the descriptor was ready.
    TimedOut,
}

/// What [`Request::wait`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Readable (data, the peer's end, or an error).
    Read,
    /// Writable (room to write, or an error).
    Write,
    /// Either.
    Both,
}

/// A wait the handler asked for (for the SDK's shims and tests).
pub(crate) struct Waiting {
    pub(crate) fd: i32,
    pub(crate) interest: Interest,
    pub(crate) timeout: Duration,
    pub(crate) state: Box<dyn Any + Send>,
}

impl<'a> Request<'a> {
    /// Wraps the raw view (the SDK's shims and the testing helpers do this).
    #[doc(hidden)]
    pub fn from_raw(raw: &'a RequestV1<'a>) -> Self {
        Self::from_raw_placed(raw, false)
    }

    /// Wraps the raw view of a call that knows its placement.
    #[doc(hidden)]
    pub fn from_raw_placed(raw: &'a RequestV1<'a>, inline: bool) -> Self {
        Self::from_raw_resumed(raw, inline, false, Woke::First, None)
    }

    /// Wraps the raw view of a call after a wait, with its state.
    pub(crate) fn from_raw_resumed(
        raw: &'a RequestV1<'a>,
        inline: bool,
        may_wait: bool,
        woke: Woke,
        state: Option<Box<dyn Any + Send>>,
    ) -> Self {
        Request {
            raw,
            inline,
            deferred: Cell::new(false),
            woke,
            may_wait: inline && may_wait,
            resumed: RefCell::new(state),
            waiting: RefCell::new(None),
            recall: RefCell::new(None),
        }
    }

    /// SDK 1.1: whether this call may answer [`wait`](Self::wait): it runs
    /// inline and the server can wait ([`Ability::Wait`](crate::host::Ability::Wait)).
    pub fn can_wait(&self) -> bool {
        self.may_wait
    }

    /// SDK 1.1: answer "call me again, on this event loop, when `fd` is
    /// ready (or `timeout` has passed)", keeping `state` for that call
    /// ([`resume`](Self::resume) gives it back). This is how a handler
    /// talks to another server without a thread: a non-blocking socket's
    /// read or write says `WouldBlock`, the handler saves where it is and
    /// returns what `wait` returns; the next call goes on from there.
    ///
    /// - Only when [`can_wait`](Self::can_wait); anywhere else the request
    ///   is answered 500 and the error log says why.
    /// - `fd` (`as_raw_fd()` of the socket) must be the descriptor whose
    ///   operation said `WouldBlock`, and stay open (held by `state`) until
    ///   the next call: the core watches it and never closes it.
    /// - If the request ends without another call (the client left, the
    ///   server stopped), `state` is dropped on the event loop: its `Drop`
    ///   must not block.
    /// - The response builder is discarded; notes stay.
    ///
    /// ```
    /// # use tamada_sdk::prelude::*;
    /// # use tamada_sdk::{Interest, Woke};
    /// # use std::io::Read;
    /// # use std::os::fd::AsRawFd;
    /// # use std::time::Duration;
    /// struct Call { sock: std::net::TcpStream, got: Vec<u8> }
    /// # struct H;
    /// # impl H { fn start(&self, _: &Request) -> std::io::Result<Call> { unimplemented!() } }
    /// # impl Handler for H {
    /// fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
    ///     if !req.can_wait() {
    ///         return req.defer(); // (or do it blocking on the pool)
    ///     }
    ///     if req.woke() == Woke::TimedOut {
    ///         res.status(504);
    ///         return Outcome::Done; // dropping the state closes the socket
    ///     }
    ///     let mut call = match req.resume::<Call>() {
    ///         Some(c) => c,
    ///         None => match self.start(req) { // connect, write the question
    ///             Ok(c) => c,
    ///             Err(e) => return Outcome::Error(e.to_string()),
    ///         },
    ///     };
    ///     let mut buf = [0u8; 4096];
    ///     loop {
    ///         match call.sock.read(&mut buf) {
    ///             Ok(0) => break,
    ///             Ok(n) => call.got.extend_from_slice(&buf[..n]),
    ///             Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
    ///                 let fd = call.sock.as_raw_fd();
    ///                 return req.wait(fd, Interest::Read, Duration::from_secs(60), call);
    ///             }
    ///             Err(e) => return Outcome::Error(e.to_string()),
    ///         }
    ///     }
    ///     res.body(call.got);
    ///     Outcome::Done
    /// }
    /// # }
    /// ```
    pub fn wait<S: Send + 'static>(
        &self,
        fd: RawFd,
        interest: Interest,
        timeout: Duration,
        state: S,
    ) -> Outcome {
        *self.waiting.borrow_mut() = Some(Waiting {
            fd,
            interest,
            timeout,
            state: Box::new(state),
        });
        Outcome::Decline
    }

    /// SDK 1.1: the state the last [`wait`](Self::wait) saved, on the call
    /// after it (once: it is moved out). `None` on a first call, or when
    /// the saved state is not an `S`.
    pub fn resume<S: Send + 'static>(&self) -> Option<S> {
        let b = self.resumed.borrow_mut().take()?;
        match b.downcast::<S>() {
            Ok(s) => Some(*s),
            Err(b) => {
                *self.resumed.borrow_mut() = Some(b);
                None
            }
        }
    }

    /// SDK 1.1: why this call happens: [`Woke::First`], or after a
    /// [`wait`](Self::wait), whether its descriptor is ready or its time
    /// ran out.
    pub fn woke(&self) -> Woke {
        self.woke
    }

    /// The wait the handler asked for (for the SDK's shims and tests).
    pub(crate) fn take_waiting(&self) -> Option<Waiting> {
        self.waiting.borrow_mut().take()
    }

    /// SDK 1.1: whether this call runs inline on the connection's event
    /// loop (see [`Handler::placement`](crate::Handler::placement)). Inline
    /// code must not block; when the request needs slow work (reading a
    /// whole file to hash it, a child process), answer
    /// [`defer`](Self::defer) and the server calls `handle` again on the
    /// blocking pool, where `is_inline` is false. Always false on servers
    /// older than 1.1 and for plugins that run on the pool.
    pub fn is_inline(&self) -> bool {
        self.inline
    }

    /// SDK 1.1: answer "run me again on the blocking pool". Return what it
    /// returns from `handle`, inline only:
    ///
    /// ```
    /// # use tamada_sdk::prelude::*;
    /// # struct H;
    /// # impl H { fn cached(&self, _: &str) -> Option<Vec<u8>> { None } }
    /// # impl Handler for H {
    /// fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
    ///     let Some(page) = self.cached(req.path()) else {
    ///         if req.is_inline() {
    ///             return req.defer(); // the slow path runs on the pool
    ///         }
    ///         // ... on the pool: do the slow work, fill the cache ...
    /// #       return Outcome::Decline;
    ///     };
    ///     res.body(page);
    ///     Outcome::Done
    /// }
    /// # }
    /// ```
    ///
    /// Called on the pool (where [`is_inline`](Self::is_inline) is
    /// false) it is a mistake in the plugin: the request is answered 500
    /// and the error log says so. The response builder is discarded.
    pub fn defer(&self) -> Outcome {
        self.deferred.set(true);
        Outcome::Decline
    }

    /// SDK 1.1: attaches a note to this exchange: a key and a value that
    /// every logger of the vhost sees after the response
    /// ([`LogEntry::notes`](crate::LogEntry::notes); the JSON access log
    /// writes them), as nginx's `$upstream_addr`. Returns false when the
    /// server does not keep notes (before 1.1). In unit tests
    /// ([`testing`](crate::testing)) they are kept for
    /// `testing::take_notes`.
    pub fn note(&self, key: &str, value: &str) -> bool {
        use abi_stable::std_types::RStr;
        match crate::host::HOST_EXT.get() {
            Some(h) => (h.note)(RStr::from_str(key), RStr::from_str(value)),
            None => TEST_NOTES.with(|n| match n.borrow_mut().as_mut() {
                Some(v) => {
                    v.push((key.to_owned(), value.to_owned()));
                    true
                }
                None => false,
            }),
        }
    }

    /// SDK 1.2: what the request's TLS connection negotiated (version,
    /// cipher, SNI, ALPN, the client's certificate); `None` for plain
    /// HTTP, behind a TLS-terminating proxy, or on a server older than
    /// 1.2 ([`tls`](crate::tls)). Works in the content and log phases.
    pub fn tls(&self) -> Option<crate::tls::TlsInfo> {
        crate::tls::current()
    }

    /// SDK 1.2: the user an access rule authenticated (`auth_basic`),
    /// `None` when no rule did, or on a server older than 1.2
    /// ([`access`](crate::access)). Works in the content and log phases.
    /// The `Authorization` header itself is the client's unverified claim.
    pub fn user(&self) -> Option<crate::user::User> {
        crate::user::current()
    }

    /// The state to call the handler again with at once (for the SDK's
    /// shims: an offload that ran where it could not wait).
    pub(crate) fn take_recall(&self) -> Option<Box<dyn Any + Send>> {
        self.recall.borrow_mut().take()
    }

    /// Sets the state [`take_recall`](Self::take_recall) gives.
    pub(crate) fn set_recall(&self, state: Box<dyn Any + Send>) {
        *self.recall.borrow_mut() = Some(state);
    }

    /// Whether [`defer`](Self::defer) was called (for the SDK's shims).
    #[doc(hidden)]
    pub fn deferred(&self) -> bool {
        self.deferred.get()
    }

    /// The method token, e.g. `GET`.
    pub fn method(&self) -> &'a str {
        self.raw.method.as_str()
    }
    /// The request target exactly as the client sent it (still encoded).
    pub fn target(&self) -> &'a str {
        self.raw.target.as_str()
    }
    /// The normalised path: percent-decoded, dot segments removed, always
    /// starting with `/`. Never contains NUL or climbs above `/`.
    pub fn path(&self) -> &'a str {
        self.raw.path.as_str()
    }
    /// The raw query string (without `?`), if the target had one.
    pub fn query(&self) -> Option<&'a str> {
        self.raw.query.as_ref().map(|q| q.as_str()).into_option()
    }
    /// `(1, 0)`, `(1, 1)` or `(2, 0)`. A server older than SDK 1.3 says
    /// `(1, 1)` for an HTTP/2 request (whose semantics are HTTP/1.1's).
    pub fn version(&self) -> (u8, u8) {
        match HOST_PROTO.get().map(|h| (h.version)()) {
            Some(v) if v >> 8 == 2 => (2, (v & 0xff) as u8),
            _ => (1, self.raw.version_minor),
        }
    }
    /// `http` or `https`.
    pub fn scheme(&self) -> &'a str {
        self.raw.scheme.as_str()
    }
    /// The host name the client asked for, lowercased, without port.
    pub fn host(&self) -> &'a str {
        self.raw.host.as_str()
    }
    /// The server's address on this connection.
    pub fn local_addr(&self) -> SocketAddr {
        addr(&self.raw.local)
    }
    /// The client's address. Behind a load balancer listed in the
    /// server's `trusted_proxies`, it is the address the balancer reports
    /// (PROXY protocol, or `X-Forwarded-For`, which gives no port: the
    /// port is then 0), not the balancer's own.
    pub fn peer_addr(&self) -> SocketAddr {
        addr(&self.raw.peer)
    }
    /// The virtual host serving this request.
    pub fn vhost(&self) -> Vhost<'a> {
        Vhost {
            raw: self.raw.vhost,
        }
    }
    /// The prefix of the route that matched.
    pub fn route(&self) -> &'a str {
        self.raw.route.as_str()
    }
    /// The path after the route prefix (starts with `/`, or is empty).
    pub fn rest(&self) -> &'a str {
        self.raw.rest.as_str()
    }
    /// How many internal redirects led here (0 for a client's own request).
    pub fn redirects(&self) -> u8 {
        self.raw.redirects
    }
    /// All headers in the order received.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.raw
            .headers
            .as_slice()
            .iter()
            .map(|h: &'a HeaderV1<'a>| (h.name.as_str(), h.value.as_slice()))
    }
    /// The first header of that name (case-insensitive), if it is text.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.header_bytes(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }
    /// The first header of that name (case-insensitive), as bytes.
    pub fn header_bytes(&self, name: &str) -> Option<&'a [u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
    /// Every header of that name, in order (repeated headers).
    pub fn header_all(&self, name: &str) -> impl Iterator<Item = &'a [u8]> + 'a {
        let name = name.to_owned();
        self.headers()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(&name))
            .map(|(_, v)| v)
    }
    /// Every value of a list header joined with `, ` (RFC 9110 section 5.3).
    pub fn header_joined(&self, name: &str) -> Option<String> {
        let mut out: Option<String> = None;
        for v in self.header_all(name) {
            let v = String::from_utf8_lossy(v);
            match &mut out {
                None => out = Some(v.into_owned()),
                Some(s) => {
                    s.push_str(", ");
                    s.push_str(&v);
                }
            }
        }
        out
    }
    /// Content-Length of the body, `None` when chunked. `Some(0)` when there is none.
    pub fn content_length(&self) -> Option<u64> {
        u64::try_from(self.raw.body.content_length).ok()
    }
    /// The body as a reader. It streams from the socket (de-chunked when
    /// needed) and never buffers the whole body; each call continues where
    /// the last read stopped. The first read answers `Expect: 100-continue`.
    /// A read fails when the body goes over the route's `max_body` (the
    /// core then answers 413, whatever the handler returns), when the client
    /// stalls longer than `body_timeout`, leaves, or sends bad chunking.
    /// After an internal redirect the body is empty.
    pub fn body(&self) -> BodyReader<'a> {
        BodyReader { raw: self.raw }
    }
    /// The raw view (for the SDK's own use).
    #[doc(hidden)]
    pub fn raw(&self) -> &'a RequestV1<'a> {
        self.raw
    }
}

/// The request body; implements [`std::io::Read`]. `Ok(0)` is the end of
/// the body; an error means the rest of it is lost (see
/// [`Request::body`]).
pub struct BodyReader<'a> {
    raw: &'a RequestV1<'a>,
}

impl io::Read for BodyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let b = self.raw.body;
        match (b.read)(b.ctx, RSliceMut::from_mut_slice(buf)).into_result() {
            Ok(n) => Ok(n),
            Err(e) => Err(io::Error::other(e.into_string())),
        }
    }
}

/// A virtual host, as its `conf.d` file describes it (paths absolute).
#[derive(Clone, Copy)]
pub struct Vhost<'a> {
    raw: VhostV1<'a>,
}

impl<'a> Vhost<'a> {
    #[doc(hidden)]
    pub fn from_raw(raw: VhostV1<'a>) -> Self {
        Vhost { raw }
    }
    /// The `vhost:` name.
    pub fn name(&self) -> &'a str {
        self.raw.name.as_str()
    }
    /// Absolute document root.
    pub fn document_root(&self) -> &'a Path {
        Path::new(self.raw.document_root.as_str())
    }
    /// Absolute cgi-bin folder, if configured.
    pub fn cgi_bin(&self) -> Option<&'a Path> {
        non_empty(self.raw.cgi_bin.as_str()).map(Path::new)
    }
    /// Absolute log folder, if configured.
    pub fn log_dir(&self) -> Option<&'a Path> {
        non_empty(self.raw.log_dir.as_str()).map(Path::new)
    }
    /// The vhost's YAML file.
    pub fn config_file(&self) -> &'a Path {
        Path::new(self.raw.config_file.as_str())
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Converts an FFI address.
#[doc(hidden)]
pub fn addr(a: &AddrV1) -> SocketAddr {
    let ip = if a.family == 6 {
        IpAddr::V6(Ipv6Addr::from(a.ip))
    } else {
        IpAddr::V4(Ipv4Addr::new(a.ip[0], a.ip[1], a.ip[2], a.ip[3]))
    };
    SocketAddr::new(ip, a.port)
}

/// Converts to an FFI address.
#[doc(hidden)]
pub fn addr_to_raw(a: SocketAddr) -> AddrV1 {
    let mut ip = [0u8; 16];
    let family = match a.ip() {
        IpAddr::V4(v4) => {
            ip[..4].copy_from_slice(&v4.octets());
            4
        }
        IpAddr::V6(v6) => {
            ip = v6.octets();
            6
        }
    };
    AddrV1 {
        family,
        ip,
        port: a.port(),
    }
}
