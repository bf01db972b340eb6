//! The raw plugin ABI: `#[repr(C)]` tables that cross the boundary between
//! the server and a plugin `.so`.
//!
//! Plugin authors never touch this module: [`export_plugin!`](crate::export_plugin)
//! builds the tables and the safe types in this crate wrap them. It is public
//! because the server (and the frozen compatibility fixtures) must name it.
//!
//! # How a plugin is found
//! 1. The host resolves [`HEADER_SYMBOL`] and calls it. [`PluginHeader`] is the
//!    bootstrap record and never changes in any SDK version: a magic number
//!    and the SDK major.minor the plugin was built with.
//! 2. For major 1 the host resolves [`V1_SYMBOL`], which returns a
//!    [`PluginDeclV1`]: the layout of the plugin's [`PluginV1`] table (checked
//!    with abi_stable's layout checker against the host's own) and the table.
//! 3. Optional tables added by later minor versions are exported under their
//!    own symbol names and probed by name; a plugin that lacks one simply does
//!    not have that ability.
//!
//! Once the SDK is 1.0 every table here is frozen: new abilities arrive as new
//! tables, never as new fields.

use abi_stable::StableAbi;
use abi_stable::std_types::{ROption, RResult, RSlice, RSliceMut, RStr, RString, RVec};
use abi_stable::type_layout::TypeLayout;
use std::ffi::c_void;

/// The SDK major version. A plugin built for another major is refused.
pub const SDK_MAJOR: u16 = 1;
/// The SDK minor version. Minor versions only add tables.
pub const SDK_MINOR: u16 = 3;
/// `b"TMDA"`: marks a tamada plugin header.
pub const MAGIC: u32 = u32::from_le_bytes(*b"TMDA");

/// Symbol of the frozen bootstrap function: `extern "C" fn() -> PluginHeader`.
pub const HEADER_SYMBOL: &[u8] = b"tamada_plugin_header";
/// Symbol of the v1 declaration: `extern "C" fn() -> PluginDeclV1`.
pub const V1_SYMBOL: &[u8] = b"tamada_plugin_v1";
/// Symbol of the optional lifecycle table:
/// `extern "C" fn() -> LifecycleDeclV1`. A plugin without it has no log,
/// record or lifecycle hooks (they are no-ops).
pub const LIFECYCLE_V1_SYMBOL: &[u8] = b"tamada_plugin_lifecycle_v1";

/// Symbol of the optional SDK 1.1 extension table:
/// `extern "C" fn() -> ExtDeclV1`. A plugin without it (every 1.0 plugin)
/// runs on the blocking pool and is called through [`PluginV1::handle`].
///
/// The 1.1 tables ([`ExtV1`], [`HostExtV1`], [`TraitsV1`],
/// [`ExchangeV1`], [`HandleExtV1`], [`RelayV1`], [`WaitV1`]) are frozen
/// since SDK 1.1 (the `frozen-v1_1` fixture guards them): later
/// abilities come as new tables.
pub const EXT_V1_SYMBOL: &[u8] = b"tamada_plugin_ext_v1";

/// The bootstrap record. Frozen for all SDK versions.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PluginHeader {
    /// Always [`MAGIC`].
    pub magic: u32,
    /// SDK major the plugin was built with.
    pub sdk_major: u16,
    /// SDK minor the plugin was built with.
    pub sdk_minor: u16,
}

/// What [`V1_SYMBOL`] returns.
#[repr(C)]
pub struct PluginDeclV1 {
    /// `<PluginV1 as StableAbi>::LAYOUT` as the plugin saw it.
    pub layout: &'static TypeLayout,
    /// The plugin's table.
    pub table: &'static PluginV1,
}

/// Opaque handle to a handler instance living in the plugin.
pub type InstancePtr = *const c_void;

/// The plugin's main table.
#[repr(C)]
#[derive(StableAbi)]
pub struct PluginV1 {
    /// The name routes use in `handler:`.
    pub name: RStr<'static>,
    /// The plugin's own version (its crate version).
    pub version: RStr<'static>,
    /// Called once after loading: hands the host's services to the plugin
    /// (the SDK installs the forwarding `log` logger here).
    pub init: extern "C" fn(host: &'static HostV1),
    /// Builds an instance from a route's (or logger's) `options:` (YAML text).
    pub create:
        extern "C" fn(options: RStr<'_>, ctx: &CreateCtxV1<'_>) -> RResult<Instance, RString>,
    /// Content phase.
    pub handle: extern "C" fn(inst: Instance, req: &RequestV1<'_>) -> HandleResultV1,
    /// Frees an instance; the host never uses it again.
    pub destroy: extern "C" fn(inst: Instance),
}

/// What [`LIFECYCLE_V1_SYMBOL`] returns.
#[repr(C)]
pub struct LifecycleDeclV1 {
    /// `<LifecycleV1 as StableAbi>::LAYOUT` as the plugin saw it.
    pub layout: &'static TypeLayout,
    /// The plugin's table.
    pub table: &'static LifecycleV1,
}

/// The optional table of the log and lifecycle phases.
#[repr(C)]
#[derive(StableAbi)]
pub struct LifecycleV1 {
    /// Log phase: after the response is complete.
    pub log: extern "C" fn(inst: Instance, entry: &LogEntryV1<'_>),
    /// A log record routed by the host to the vhost's loggers.
    pub record: extern "C" fn(inst: Instance, rec: &RecordV1<'_>),
    /// Lifecycle: reopen files (SIGUSR1).
    pub reopen: extern "C" fn(inst: Instance),
    /// Lifecycle: flush buffers (about once a second, and before shutdown).
    pub flush: extern "C" fn(inst: Instance),
    /// Lifecycle: the server is stopping.
    pub shutdown: extern "C" fn(inst: Instance),
}

/// An instance pointer, `Send + Sync` by the contract of [`crate::Handler`].
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct Instance(pub *const c_void);
// SAFETY: instances are `Box<Box<dyn Handler>>` and `Handler: Send + Sync`.
unsafe impl Send for Instance {}
// SAFETY: as above.
unsafe impl Sync for Instance {}

/// Services the host gives to every plugin.
#[repr(C)]
#[derive(StableAbi)]
pub struct HostV1 {
    /// A log record from the plugin. `level` is 1 (error) to 5 (trace), as
    /// `log::Level`. The host adds the vhost and client of the request the
    /// calling thread serves, if any.
    pub log: extern "C" fn(level: u8, target: RStr<'_>, message: RStr<'_>),
    /// A record for a named vhost's error log, from any thread (a CGI
    /// stderr reader, a background task). `source` tags it (`cgi:x.py`).
    pub record: extern "C" fn(
        vhost: RStr<'_>,
        peer: ROption<AddrV1>,
        level: u8,
        source: RStr<'_>,
        message: RStr<'_>,
    ),
}

/// What an instance is built for.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleV1 {
    /// A route's content handler.
    Handler,
    /// A vhost's logger.
    Logger,
}

/// Context for `create`.
#[repr(C)]
#[derive(StableAbi)]
pub struct CreateCtxV1<'a> {
    /// Handler or logger.
    pub role: RoleV1,
    /// The vhost the instance serves.
    pub vhost: VhostV1<'a>,
    /// The route's path prefix (empty for a logger).
    pub route: RStr<'a>,
}

/// A virtual host as plugins see it.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct VhostV1<'a> {
    /// The `vhost:` name.
    pub name: RStr<'a>,
    /// Absolute document root.
    pub document_root: RStr<'a>,
    /// Absolute cgi-bin folder, empty if unset.
    pub cgi_bin: RStr<'a>,
    /// Absolute log folder, empty if unset.
    pub log_dir: RStr<'a>,
    /// The vhost's file in conf.d.
    pub config_file: RStr<'a>,
}

/// A socket address, FFI-safe.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, Default)]
pub struct AddrV1 {
    /// 4 or 6.
    pub family: u8,
    /// IPv4 in the first four bytes, or IPv6.
    pub ip: [u8; 16],
    /// Port.
    pub port: u16,
}

/// One request header, as received.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct HeaderV1<'a> {
    /// Name as the client wrote it.
    pub name: RStr<'a>,
    /// Raw value bytes.
    pub value: RSlice<'a, u8>,
}

/// The request body, read by pulling.
#[repr(C)]
#[derive(StableAbi)]
pub struct BodyReaderV1 {
    /// Host state.
    pub ctx: *mut c_void,
    /// Reads up to `buf.len()` bytes; `Ok(0)` is the end of the body.
    pub read: extern "C" fn(ctx: *mut c_void, buf: RSliceMut<'_, u8>) -> RResult<usize, RString>,
    /// Content-Length, or -1 when the body is chunked. 0 when there is none.
    pub content_length: i64,
}

/// The request view.
#[repr(C)]
#[derive(StableAbi)]
pub struct RequestV1<'a> {
    /// Method token.
    pub method: RStr<'a>,
    /// The request target exactly as received.
    pub target: RStr<'a>,
    /// The normalised, percent-decoded path.
    pub path: RStr<'a>,
    /// The query string without `?` (raw, still encoded); None if no `?`.
    pub query: ROption<RStr<'a>>,
    /// HTTP/1.x minor version (0 or 1).
    pub version_minor: u8,
    /// Headers in order received.
    pub headers: RSlice<'a, HeaderV1<'a>>,
    /// `http` (later `https`).
    pub scheme: RStr<'a>,
    /// The host the client asked for (Host or absolute-form), lowercased, port stripped.
    pub host: RStr<'a>,
    /// Server address of the connection.
    pub local: AddrV1,
    /// Client address.
    pub peer: AddrV1,
    /// The vhost serving the request.
    pub vhost: VhostV1<'a>,
    /// The matched route prefix.
    pub route: RStr<'a>,
    /// `path` after the route prefix, starting with `/` (or empty).
    pub rest: RStr<'a>,
    /// The body.
    pub body: &'a BodyReaderV1,
    /// How many internal redirects led here (0 for a client's request).
    pub redirects: u8,
}

/// An owned response header.
#[repr(C)]
#[derive(StableAbi, Clone)]
pub struct OwnedHeaderV1 {
    /// Name.
    pub name: RString,
    /// Value bytes.
    pub value: RVec<u8>,
}

/// One piece of a segments body.
#[repr(C)]
#[derive(StableAbi, Clone)]
pub struct SegmentV1 {
    /// Bytes to send (used when `file` is -1).
    pub bytes: RVec<u8>,
    /// Index into [`SegmentsV1::files`], or -1.
    pub file: i32,
    /// Offset in the file.
    pub offset: u64,
    /// Bytes of the file to send.
    pub len: u64,
}

/// A body of bytes and file ranges; the core owns (and closes) `files`.
#[repr(C)]
#[derive(StableAbi)]
pub struct SegmentsV1 {
    /// Open file descriptors the segments refer to.
    pub files: RVec<i32>,
    /// The pieces in order.
    pub segments: RVec<SegmentV1>,
}

/// A body the core pulls from.
#[repr(C)]
#[derive(StableAbi)]
pub struct StreamV1 {
    /// Plugin state.
    pub ctx: *mut c_void,
    /// Reads up to `buf.len()` bytes; `Ok(0)` ends the body.
    pub read: extern "C" fn(ctx: *mut c_void, buf: RSliceMut<'_, u8>) -> RResult<usize, RString>,
    /// Called exactly once, last: `client_gone` is true when the client left
    /// (or the core gave up) before the stream ended. Frees `ctx`.
    pub close: extern "C" fn(ctx: *mut c_void, client_gone: bool),
}
// SAFETY: the SDK builds streams only from `Send` readers.
unsafe impl Send for StreamV1 {}

/// The body forms.
#[repr(C, u8)]
#[derive(StableAbi)]
pub enum BodyV1 {
    /// No body.
    Empty,
    /// In memory.
    Bytes(RVec<u8>),
    /// `len` bytes of `fd` from `offset`; the core sends it with sendfile
    /// and closes `fd`.
    File {
        /// Owned descriptor.
        fd: i32,
        /// Start.
        offset: u64,
        /// Length.
        len: u64,
    },
    /// Bytes and file ranges.
    Segments(SegmentsV1),
    /// Pulled by the core.
    Stream(StreamV1),
}

/// A response.
#[repr(C)]
#[derive(StableAbi)]
pub struct ResponseV1 {
    /// Status code.
    pub status: u16,
    /// Headers; the core owns framing (Content-Length, Transfer-Encoding,
    /// Connection are its own, except a Content-Length on a stream, which
    /// it trusts).
    pub headers: RVec<OwnedHeaderV1>,
    /// Body.
    pub body: BodyV1,
}

/// What `handle` returns.
#[repr(C, u8)]
#[derive(StableAbi)]
pub enum HandleResultV1 {
    /// The plugin answered.
    Respond(ResponseV1),
    /// Pass to the next route.
    Decline,
    /// Serve this local path (with query) internally instead, as GET.
    Redirect(RString),
    /// The plugin failed (or panicked): the core answers 500 and logs this.
    Error(RString),
}

/// What the log phase is told.
#[repr(C)]
#[derive(StableAbi)]
pub struct LogEntryV1<'a> {
    /// The request (its body reader returns end-of-body).
    pub request: &'a RequestV1<'a>,
    /// Status sent.
    pub status: u16,
    /// Body bytes actually sent.
    pub body_bytes_sent: u64,
    /// All bytes sent (head and body).
    pub bytes_sent: u64,
    /// Bytes received (head and body).
    pub bytes_received: u64,
    /// From the first byte of the request to the last of the response.
    pub duration_us: u64,
    /// Unix time of the request's start, microseconds.
    pub start_unix_us: i64,
    /// Why it failed, empty if it did not.
    pub error: RStr<'a>,
    /// Whether the whole response went out.
    pub completed: bool,
}

/// A log record routed to loggers.
#[repr(C)]
#[derive(StableAbi)]
pub struct RecordV1<'a> {
    /// 1 (error) to 5 (trace).
    pub level: u8,
    /// Where it came from (a plugin name, `tamada`, or `cgi:script`).
    pub source: RStr<'a>,
    /// The text.
    pub message: RStr<'a>,
    /// The vhost, empty when none.
    pub vhost: RStr<'a>,
    /// The client, when the record belongs to a request.
    pub peer: ROption<AddrV1>,
    /// Unix time, microseconds.
    pub unix_us: i64,
}

// ---------------------------------------------------------------------
// SDK 1.1 (frozen with SDK_MINOR 1): the extension table.

/// What [`EXT_V1_SYMBOL`] returns.
#[repr(C)]
pub struct ExtDeclV1 {
    /// `<ExtV1 as StableAbi>::LAYOUT` as the plugin saw it.
    pub layout: &'static TypeLayout,
    /// The plugin's table.
    pub table: &'static ExtV1,
}

/// The 1.1 extension table: per-instance traits and a content phase that
/// knows where it runs and may defer to the pool.
#[repr(C)]
#[derive(StableAbi)]
pub struct ExtV1 {
    /// The plugin was built with `panic = "unwind"` (the default): its
    /// panics can be caught. The server refuses a plugin that aborts.
    pub unwinds: bool,
    /// What it can be: [`ROLE_HANDLER`] and/or [`ROLE_LOGGER`]; 0 when
    /// the plugin does not say (then anything goes, as for 1.0 plugins).
    pub roles: u8,
    /// Builds an instance, as [`PluginV1::create`], but an error says
    /// where in the options it lies (the host then names the conf.d
    /// file's own line). The host calls this one when the table is there.
    pub create:
        extern "C" fn(options: RStr<'_>, ctx: &CreateCtxV1<'_>) -> RResult<Instance, OptionErrorV1>,
    /// Called once after loading, after [`PluginV1::init`]: the host's
    /// SDK 1.1 services.
    pub init: extern "C" fn(host: &'static HostExtV1),
    /// The JSON Schema of the options the plugin takes in `role` (text;
    /// empty when it does not say).
    pub options_schema: extern "C" fn(role: RoleV1) -> RString,
    /// Read once per instance, right after `create`.
    pub traits: extern "C" fn(inst: Instance) -> TraitsV1,
    /// Content phase; when the table is present the host calls this
    /// instead of [`PluginV1::handle`].
    pub handle: extern "C" fn(inst: Instance, req: &RequestV1<'_>, ex: &ExchangeV1) -> HandleExtV1,
}

/// The host's SDK 1.1 services, given to [`ExtV1::init`].
#[repr(C)]
#[derive(StableAbi)]
pub struct HostExtV1 {
    /// The server's name and version (`tamada/1.2.0`).
    pub server: RStr<'static>,
    /// The SDK major.minor the server speaks.
    pub sdk_major: u16,
    /// See [`HostExtV1::sdk_major`].
    pub sdk_minor: u16,
    /// What the server can do: `ABILITY_*` bits.
    pub abilities: u64,
    /// Whether the server is stopping (SIGTERM): finish, start nothing long.
    pub draining: extern "C" fn() -> bool,
    /// Whether this is `tamada -t`: instances are built to check the
    /// options and thrown away; create no files.
    pub dry_run: extern "C" fn() -> bool,
    /// Whether the server will serve as root (started as root with no
    /// `user:`): a plugin that starts programs should refuse to.
    pub serves_as_root: extern "C" fn() -> bool,
    /// The user the server will serve as, when it drops root (`user:`):
    /// files a plugin creates before the drop should be given to it.
    pub service_user: extern "C" fn() -> ROption<ServiceUserV1>,
    /// Attaches a note to the exchange the calling thread is handling
    /// (content phase): false when it handles none.
    pub note: extern "C" fn(key: RStr<'_>, value: RStr<'_>) -> bool,
    /// Calls `visit.func(ctx, key, value)` for each note of the exchange
    /// the calling thread is logging (log phase).
    pub notes: extern "C" fn(visit: NoteVisitV1, ctx: *mut c_void),
}

/// [`HostExtV1::service_user`].
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct ServiceUserV1 {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// The callback of [`HostExtV1::notes`].
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy)]
pub struct NoteVisitV1 {
    /// Called once per note, during the call to `notes`.
    pub func: extern "C" fn(ctx: *mut c_void, key: RStr<'_>, value: RStr<'_>),
}

/// [`HostExtV1::abilities`]: handlers may run inline on the event loop.
pub const ABILITY_INLINE: u64 = 1;
/// [`HostExtV1::abilities`]: an inline handler may answer `Defer`.
pub const ABILITY_DEFER: u64 = 1 << 1;
/// [`HostExtV1::abilities`]: request notes, seen by the loggers.
pub const ABILITY_NOTES: u64 = 1 << 2;
/// [`HostExtV1::abilities`]: option errors are placed by their path.
pub const ABILITY_OPTION_PATHS: u64 = 1 << 3;
/// [`HostExtV1::abilities`]: declared roles are checked.
pub const ABILITY_ROLES: u64 = 1 << 4;
/// [`HostExtV1::abilities`]: [`HandleExtV1::Relay`] (WebSocket and other
/// upgrades).
pub const ABILITY_RELAY: u64 = 1 << 5;
/// [`HostExtV1::abilities`]: an inline handler may answer
/// [`HandleExtV1::Wait`] (a non-blocking handler on the event loop).
pub const ABILITY_WAIT: u64 = 1 << 6;

/// [`ExtV1::roles`]: it answers requests (`routes:`).
pub const ROLE_HANDLER: u8 = 1;
/// [`ExtV1::roles`]: it logs exchanges (`loggers:`).
pub const ROLE_LOGGER: u8 = 2;

/// Why a constructor refused its options.
#[repr(C)]
#[derive(StableAbi)]
pub struct OptionErrorV1 {
    /// Where in the options: keys and `[index]`es joined by `.`
    /// (`cache.valid`, `hosts[2]`); empty when the error is about the
    /// options as a whole or the constructor did not say.
    pub path: RString,
    /// The text (with the path in front when there is one).
    pub message: RString,
}

/// Where an instance's `handle` and `log` run.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlacementV1 {
    /// On the blocking pool (what every 1.0 plugin gets).
    Pool,
    /// On the connection's event loop, when the request body is already
    /// in memory; the plugin promises never to block.
    Inline,
}

/// What an instance declares about itself.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct TraitsV1 {
    /// Where it runs.
    pub placement: PlacementV1,
}

/// What the host tells a 1.1 content phase about the call.
#[repr(C)]
#[derive(StableAbi)]
pub struct ExchangeV1 {
    /// The call runs inline on an event loop (not on the pool).
    pub inline: bool,
    /// Why the handler is called: [`WOKE_FIRST`] for the first call of a
    /// route, [`WOKE_READY`] or [`WOKE_TIMEOUT`] for the call after a
    /// [`HandleExtV1::Wait`].
    pub woke: u8,
    /// After a wait: the state it saved (its ownership passes back to
    /// the plugin, which frees it); null otherwise.
    pub state: *mut c_void,
}

/// [`ExchangeV1::woke`]: the route's first call.
pub const WOKE_FIRST: u8 = 0;
/// [`ExchangeV1::woke`]: the descriptor of the last wait is ready.
pub const WOKE_READY: u8 = 1;
/// [`ExchangeV1::woke`]: the last wait's time ran out first.
pub const WOKE_TIMEOUT: u8 = 2;

/// What the 1.1 `handle` returns.
#[repr(C, u8)]
#[derive(StableAbi)]
pub enum HandleExtV1 {
    /// A 1.0 answer.
    V1(HandleResultV1),
    /// Run this handler again, on the blocking pool (only inline).
    Defer,
    /// A `101 Switching Protocols` answer (its body is ignored), after
    /// which the core relays bytes both ways between the client and the
    /// socket in [`RelayV1`] ([`ABILITY_RELAY`]).
    Relay(ResponseV1, RelayV1),
    /// (Inline only, [`ABILITY_WAIT`].) Call this handler again, on the
    /// same event loop, when the descriptor in [`WaitV1`] is ready or its
    /// time has run out, with the state it carries.
    Wait(WaitV1),
}

/// [`WaitV1::interest`]: wake when the descriptor is readable (or at its
/// end, or failed).
pub const WAIT_READ: u8 = 1;
/// [`WaitV1::interest`]: wake when the descriptor is writable.
pub const WAIT_WRITE: u8 = 2;

/// A non-blocking handler's wait: what to wait for and what to carry to
/// the next call.
#[repr(C)]
#[derive(StableAbi)]
pub struct WaitV1 {
    /// A descriptor the plugin owns (through `state`) and keeps open until
    /// the next call or until `drop_state` runs; the core only watches it.
    pub fd: i32,
    /// [`WAIT_READ`] and/or [`WAIT_WRITE`].
    pub interest: u8,
    /// Call again after this long even if the descriptor is not ready
    /// (milliseconds; the core's granularity is a quarter second).
    pub timeout_ms: u64,
    /// Plugin state, given back in [`ExchangeV1::state`].
    pub state: *mut c_void,
    /// Frees `state` when the exchange ends without another call (the
    /// client left, the server stopped). Runs on the event loop: it must
    /// not block.
    pub drop_state: extern "C" fn(state: *mut c_void),
}
// SAFETY: the SDK builds wait states only from `Send` values.
unsafe impl Send for WaitV1 {}

/// The other side of a relay.
#[repr(C)]
#[derive(StableAbi)]
pub struct RelayV1 {
    /// A connected stream socket; its ownership passes to the core, which
    /// closes it.
    pub fd: i32,
    /// Bytes already read from it past the 101 head: sent to the client
    /// first.
    pub pre: RVec<u8>,
    /// The relay closes after this long with no byte either way
    /// (milliseconds; 0: the core's default).
    pub idle_ms: u64,
}

// ---------------------------------------------------------------------
// SDK 1.2, the TLS view (added by the HTTPS issue; frozen since SDK 1.2:
// the `frozen-v1_2` fixture guards it). 1.0 and 1.1 tables are untouched.

/// Symbol of the optional TLS table: `extern "C" fn() -> TlsDeclV1`. A
/// plugin without it (every 1.0 and 1.1 plugin) sees no TLS details;
/// `Request::scheme` still says `https`.
pub const TLS_V1_SYMBOL: &[u8] = b"tamada_plugin_tls_v1";

/// What [`TLS_V1_SYMBOL`] returns.
#[repr(C)]
pub struct TlsDeclV1 {
    /// `<HostTlsV1 as StableAbi>::LAYOUT` as the plugin saw it.
    pub layout: &'static TypeLayout,
    /// Called once after loading: the host's TLS services.
    pub init: extern "C" fn(host: &'static HostTlsV1),
}

/// The host's TLS services.
#[repr(C)]
#[derive(StableAbi)]
pub struct HostTlsV1 {
    /// Calls `visit.func(ctx, info)` once, during the call, with the TLS
    /// view of the request the calling thread is handling (content phase)
    /// or logging (log phase). False, without a call, when that request
    /// did not come over TLS to this server (or there is none).
    pub tls: extern "C" fn(visit: TlsVisitV1, ctx: *mut c_void) -> bool,
}

/// The callback of [`HostTlsV1::tls`].
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy)]
pub struct TlsVisitV1 {
    /// Called with the view, which lives for the call only.
    pub func: extern "C" fn(ctx: *mut c_void, info: &TlsInfoV1<'_>),
}

/// What a request's TLS connection negotiated.
#[repr(C)]
#[derive(StableAbi)]
pub struct TlsInfoV1<'a> {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: RStr<'a>,
    /// The cipher suite's IANA name (`TLS_AES_128_GCM_SHA256`).
    pub cipher: RStr<'a>,
    /// The server name the client asked for (SNI), lowercase.
    pub sni: ROption<RStr<'a>>,
    /// The protocol ALPN chose (`http/1.1`).
    pub alpn: ROption<RStr<'a>>,
    /// The session was resumed (a ticket or the session cache).
    pub resumed: bool,
    /// The client's certificate (mutual TLS), when it sent one.
    pub client_cert: ROption<ClientCertV1<'a>>,
}

/// A client certificate, verified against the vhost's `client_ca`.
#[repr(C)]
#[derive(StableAbi)]
pub struct ClientCertV1<'a> {
    /// The subject's distinguished name (`CN=alice, O=Example`).
    pub subject: RStr<'a>,
    /// The issuer's distinguished name.
    pub issuer: RStr<'a>,
    /// The serial number, hexadecimal, upper case.
    pub serial: RStr<'a>,
    /// `SUCCESS` (as Apache's `SSL_CLIENT_VERIFY`).
    pub verify: RStr<'a>,
    /// The certificate in PEM.
    pub pem: RStr<'a>,
}

/// [`HostExtV1::abilities`]: the server serves HTTPS and gives the TLS
/// view ([`HostTlsV1`]).
pub const ABILITY_TLS: u64 = 1 << 7;

// ---------------------------------------------------------------------
// SDK 1.2, the access phase (added by the issue "What admins write in
// nginx's server blocks"; frozen since SDK 1.2 (the `frozen-v1_2` fixture guards it)).
// 1.0 and 1.1 tables are untouched.

/// Symbol of the optional access table: `extern "C" fn() -> AccessDeclV1`.
/// A plugin that exports it may be named in a vhost's `access:` rules.
pub const ACCESS_V1_SYMBOL: &[u8] = b"tamada_plugin_access_v1";

/// What [`ACCESS_V1_SYMBOL`] returns.
#[repr(C)]
pub struct AccessDeclV1 {
    /// `<AccessV1 as StableAbi>::LAYOUT` as the plugin saw it.
    pub layout: &'static TypeLayout,
    /// The plugin's access table.
    pub table: &'static AccessV1,
}

/// An access plugin: rules that run before routing.
#[repr(C)]
#[derive(StableAbi)]
pub struct AccessV1 {
    /// Builds a rule's instance from its `options:` (YAML text); the
    /// context's role is `Handler` and its route the rule's `path`.
    pub create:
        extern "C" fn(options: RStr<'_>, ctx: &CreateCtxV1<'_>) -> RResult<Instance, OptionErrorV1>,
    /// The JSON Schema of the options (text; empty when it does not say).
    pub options_schema: extern "C" fn() -> RString,
    /// Read once per instance, right after `create`.
    pub traits: extern "C" fn(inst: Instance) -> TraitsV1,
    /// Checks a request.
    pub check:
        extern "C" fn(inst: Instance, req: &RequestV1<'_>, ex: &AccessCallV1) -> AccessResultV1,
    /// Once for every check that passed (`Pass` or `User`) of an instance
    /// whose `finishes` said so, when its
    /// exchange ends (the response sent and logged, or the client gone),
    /// on any thread: what the check counted (a request in flight) is
    /// released. Must not block.
    pub finish: extern "C" fn(inst: Instance, req: &RequestV1<'_>),
    /// Read once per instance, after `create`: whether it wants
    /// `finish` at all (most rules count nothing and are spared the call).
    pub finishes: extern "C" fn(inst: Instance) -> bool,
    /// Frees an instance; the host never uses it again.
    pub destroy: extern "C" fn(inst: Instance),
}

/// What the host tells an access check about the call.
#[repr(C)]
#[derive(StableAbi)]
pub struct AccessCallV1 {
    /// The call runs inline on an event loop (not on the pool): a check
    /// that would block answers [`AccessResultV1::Defer`] and is called
    /// again on the pool.
    pub inline: bool,
    /// The call comes after the [`AccessResultV1::Delay`] this check
    /// asked for.
    pub delayed: bool,
}

/// What an access check decided.
#[repr(C, u8)]
#[derive(StableAbi)]
pub enum AccessResultV1 {
    /// The next rule runs, then routing.
    Pass,
    /// As `Pass`, and the request is this user's from now on (loggers,
    /// CGI's `REMOTE_USER` and `AUTH_TYPE`).
    User(AccessUserV1),
    /// Send this response; no route is asked.
    Answer(ResponseV1),
    /// Serve this local path (with `?query`) instead: the access rules and
    /// routing run again for it.
    Rewrite(RString),
    /// Call again on the pool (only from an inline call).
    Defer,
    /// Call this check again after this many milliseconds (with
    /// [`AccessCallV1::delayed`]); the request waits without holding a
    /// thread (a timer on its event loop).
    Delay(u64),
    /// The check failed: 500, and this is logged.
    Error(RString),
}

/// A user an access rule established.
#[repr(C)]
#[derive(StableAbi)]
pub struct AccessUserV1 {
    /// The user name.
    pub name: RString,
    /// How it was established (`Basic`), as CGI's `AUTH_TYPE`.
    pub auth_type: RString,
}

/// Symbol of the user table every SDK 1.2 plugin exports:
/// `extern "C" fn() -> UserDeclV1`. Through it handlers and loggers read
/// the user an access rule established.
pub const USER_V1_SYMBOL: &[u8] = b"tamada_plugin_user_v1";

/// What [`USER_V1_SYMBOL`] returns.
#[repr(C)]
pub struct UserDeclV1 {
    /// `<HostAccessV1 as StableAbi>::LAYOUT` as the plugin saw it.
    pub layout: &'static TypeLayout,
    /// Called once after loading: the host's access services.
    pub init: extern "C" fn(host: &'static HostAccessV1),
}

/// The host's access services.
#[repr(C)]
#[derive(StableAbi)]
pub struct HostAccessV1 {
    /// Calls `visit.func(ctx, name, auth_type)` once, during the call,
    /// with the user an access rule established for the request the
    /// calling thread handles or logs; false, without a call, when none.
    pub user: extern "C" fn(visit: UserVisitV1, ctx: *mut c_void) -> bool,
}

/// The callback of [`HostAccessV1::user`].
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy)]
pub struct UserVisitV1 {
    /// Called with the user's name and auth type, which live for the call.
    pub func: extern "C" fn(ctx: *mut c_void, name: RStr<'_>, auth_type: RStr<'_>),
}

/// [`HostExtV1::abilities`]: the server runs access rules
/// ([`AccessV1`]) and gives the user they establish ([`HostAccessV1`]).
pub const ABILITY_ACCESS: u64 = 1 << 8;

// ---------------------------------------------------------------------
// SDK 1.2, response filters (added by the issue "Response filters";
// frozen since SDK 1.2 (the `frozen-v1_2` fixture guards it)). 1.0 and 1.1 tables are
// untouched.

/// Symbol of the optional filter table: `extern "C" fn() -> FilterDeclV1`.
/// A plugin that exports it may be named in a vhost's or a route's
/// `filters:`.
pub const FILTER_V1_SYMBOL: &[u8] = b"tamada_plugin_filter_v1";

/// What [`FILTER_V1_SYMBOL`] returns.
#[repr(C)]
pub struct FilterDeclV1 {
    /// `<FilterV1 as StableAbi>::LAYOUT` as the plugin saw it.
    pub layout: &'static TypeLayout,
    /// The plugin's filter table.
    pub table: &'static FilterV1,
}

/// A filter plugin: sees each request before its handler and each
/// response after it.
#[repr(C)]
#[derive(StableAbi)]
pub struct FilterV1 {
    /// Builds a filter's instance from its `options:` (YAML text); the
    /// context's role is `Handler` and its route the route's path (empty
    /// for a vhost's list).
    pub create:
        extern "C" fn(options: RStr<'_>, ctx: &CreateCtxV1<'_>) -> RResult<Instance, OptionErrorV1>,
    /// The JSON Schema of the options (text; empty when it does not say).
    pub options_schema: extern "C" fn() -> RString,
    /// Before the handler runs, on the event loop (must not block): the
    /// request's header fields to set or remove, appended to `edits`.
    pub request: extern "C" fn(inst: Instance, req: &RequestV1<'_>, edits: &mut RVec<HeaderEditV1>),
    /// The response's head, once per response, on the event loop or the
    /// pool (must not block): `head` may be edited in place (status,
    /// header fields). `req` is the request as the client sent it.
    pub response: extern "C" fn(
        inst: Instance,
        req: &RequestV1<'_>,
        head: &mut FilterHeadV1,
    ) -> FilterResultV1,
    /// Frees an instance; the host never uses it again.
    pub destroy: extern "C" fn(inst: Instance),
}

/// One edit of a request's header fields by a filter.
#[repr(C)]
#[derive(StableAbi)]
pub struct HeaderEditV1 {
    /// The field's name (any case).
    pub name: RString,
    /// The new value; `None` removes every field of that name.
    pub value: ROption<RVec<u8>>,
}

/// What a filter sees of a response before its body.
#[repr(C)]
#[derive(StableAbi)]
pub struct FilterHeadV1 {
    /// The status; the filter may change it.
    pub status: u16,
    /// The header fields (the core's framing fields are not among them);
    /// the filter may change them.
    pub headers: RVec<OwnedHeaderV1>,
    /// The body's form.
    pub body: FilterBodyV1,
    /// The body will not be sent (a HEAD request, or a status without a
    /// body): its header fields still must be those of a GET.
    pub head_only: bool,
}

/// [`FilterBodyV1::kind`]: no body.
pub const FILTER_BODY_EMPTY: u8 = 0;
/// [`FilterBodyV1::kind`]: bytes in memory (shared bytes too).
pub const FILTER_BODY_BYTES: u8 = 1;
/// [`FilterBodyV1::kind`]: a range of a file (`fd`, `offset`, `len`).
pub const FILTER_BODY_FILE: u8 = 2;
/// [`FilterBodyV1::kind`]: bytes and file ranges.
pub const FILTER_BODY_SEGMENTS: u8 = 3;
/// [`FilterBodyV1::kind`]: a stream (a transform's output included).
pub const FILTER_BODY_STREAM: u8 = 4;

/// The form of a response body, as a filter sees it.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct FilterBodyV1 {
    /// One of the `FILTER_BODY_*` constants.
    pub kind: u8,
    /// Its length; -1 when unknown (a stream without Content-Length).
    pub len: i64,
    /// For a file range: the file (borrowed for the call; -1 otherwise).
    pub fd: i32,
    /// For a file range: where it starts.
    pub offset: u64,
}

/// What a filter's response side decided.
#[repr(C, u8)]
#[derive(StableAbi)]
pub enum FilterResultV1 {
    /// The head as edited, the body as it is (a file stays a file).
    Keep,
    /// The body goes through this transform (its length changes: the core
    /// drops `Content-Length`).
    Transform(BodyFilterV1),
    /// This body replaces the handler's (closed unsent).
    Replace(BodyV1),
    /// The filter failed: 500 when nothing was sent, and this is logged.
    Error(RString),
}

/// A body transform: bytes in, bytes out, a final flush. Called from one
/// thread at a time, on the event loop or the pool; `drop` is the last
/// call.
#[repr(C)]
#[derive(StableAbi)]
pub struct BodyFilterV1 {
    /// The filter's state.
    pub ctx: *mut c_void,
    /// Transforms `input` into bytes appended to `out`; `flush`: the
    /// handler flushed here, so what was given must come out now.
    pub data: extern "C" fn(
        ctx: *mut c_void,
        input: RSlice<'_, u8>,
        flush: bool,
        out: &mut RVec<u8>,
    ) -> RResult<(), RString>,
    /// The body ended: the last bytes appended to `out`.
    pub finish: extern "C" fn(ctx: *mut c_void, out: &mut RVec<u8>) -> RResult<(), RString>,
    /// Frees the state (after `finish`, or instead of it when the body is
    /// abandoned).
    pub drop: extern "C" fn(ctx: *mut c_void),
}

// SAFETY: the transform is moved between threads but called from one at a
// time (the contract above); the SDK builds `ctx` from a `Send` value.
unsafe impl Send for BodyFilterV1 {}

/// [`HostExtV1::abilities`]: the server runs response filters
/// ([`FilterV1`]).
pub const ABILITY_FILTER: u64 = 1 << 9;

// ---------------------------------------------------------------------
// SDK 1.2, shared bytes (added by the issue "What a third-party plugin
// author still trips on"; frozen since SDK 1.2 (the `frozen-v1_2` fixture guards it)).
// A body of bytes the plugin shares with other responses (a cache's) goes
// out as a 1.0 `BodyV1::Stream` whose `read` is the plugin's own shared
// reader; a server that knows this table recognises that reader and sends
// the bytes in place, with no copy and no pull on the pool. An older
// server pulls the stream, and gets the same bytes.

/// Symbol of the shared-bytes table every SDK 1.2 plugin exports:
/// `extern "C" fn() -> SharedDeclV1`.
pub const SHARED_V1_SYMBOL: &[u8] = b"tamada_plugin_shared_v1";

/// What [`SHARED_V1_SYMBOL`] returns.
#[repr(C)]
pub struct SharedDeclV1 {
    /// `<SharedV1 as StableAbi>::LAYOUT` as the plugin saw it.
    pub layout: &'static TypeLayout,
    /// The plugin's shared-bytes table.
    pub table: &'static SharedV1,
}

/// How a server recognises and reads a plugin's shared-bytes stream.
#[repr(C)]
#[derive(StableAbi)]
pub struct SharedV1 {
    /// The `read` of every shared-bytes [`StreamV1`] this plugin makes.
    pub read: extern "C" fn(ctx: *mut c_void, buf: RSliceMut<'_, u8>) -> RResult<usize, RString>,
    /// The bytes of such a stream's `ctx`: valid, unchanged, until the
    /// stream's `close`.
    pub bytes: extern "C" fn(ctx: *mut c_void) -> RSlice<'static, u8>,
}

// ---------------------------------------------------------------------
// SDK 1.3, the protocol view (added with HTTP/2). 1.0 to 1.2 tables are
// untouched: a request that came over HTTP/2 has `version_minor` 1 in
// [`RequestV1`] (its semantics are HTTP/1.1's), so a plugin built before
// 1.3 sees `HTTP/1.1`; one with this table learns the real version.

/// Symbol of the optional protocol table: `extern "C" fn() -> ProtoDeclV1`.
pub const PROTO_V1_SYMBOL: &[u8] = b"tamada_plugin_proto_v1";

/// What [`PROTO_V1_SYMBOL`] returns.
#[repr(C)]
pub struct ProtoDeclV1 {
    /// `<HostProtoV1 as StableAbi>::LAYOUT` as the plugin saw it.
    pub layout: &'static TypeLayout,
    /// Called once after loading: the host's protocol services.
    pub init: extern "C" fn(host: &'static HostProtoV1),
}

/// The host's protocol services.
#[repr(C)]
#[derive(StableAbi)]
pub struct HostProtoV1 {
    /// The HTTP version of the request the calling thread is handling
    /// (content phase) or logging (log phase), as `major << 8 | minor`:
    /// `0x0200` for HTTP/2, `0x0101` for HTTP/1.1; 0 when there is none.
    pub version: extern "C" fn() -> u16,
}
