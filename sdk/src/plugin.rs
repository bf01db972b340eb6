//! The handler trait, the phases, and the shims that turn a Rust
//! [`Handler`] into the FFI table (with every panic caught).

use crate::abi::{
    CreateCtxV1, ExchangeV1, HandleExtV1, HandleResultV1, HostV1, Instance, LogEntryV1,
    PlacementV1, PluginV1, RecordV1, RequestV1, RoleV1, TraitsV1,
};
use crate::request::{Request, Vhost, Woke};
use crate::response::ResponseBuilder;
use abi_stable::std_types::{RResult, RSlice, RStr, RString, RVec};

use std::ffi::c_void;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

pub use crate::outcome::Outcome;
use crate::outcome::{panic_message, set_panic_at};

/// A request handler, logger, or both. Every method has a no-op default,
/// so implement only the phases you need.
///
/// One instance is built per route (or per logger entry) from its
/// `options:` by the constructor given to [`export_plugin!`](crate::export_plugin), and is
/// shared by all the server's threads: hence `Send + Sync`. Keep per-request
/// state on the stack; use atomics or locks for shared counters (see
/// [`guide::threads`](crate::guide::threads)). Every method is called with
/// panics caught (see [`guide::errors`](crate::guide::errors)).
///
/// | method | called | for instances under |
/// |---|---|---|
/// | [`handle`](Self::handle) | per request, on the blocking pool (or inline on the event loop, see [`placement`](Self::placement)) | `routes:` |
/// | [`log`](Self::log) | after each response is complete | `loggers:` |
/// | [`record`](Self::record) | per log record routed to the vhost | `loggers:` |
/// | [`reopen`](Self::reopen) | on SIGUSR1 | both |
/// | [`flush`](Self::flush) | about once a second, before a drop, at exit | both |
/// | [`shutdown`](Self::shutdown) | once at exit | both |
///
/// The full story, with examples, is in
/// [`guide::phases`](crate::guide::phases).
pub trait Handler: Send + Sync + 'static {
    /// Content phase, for each request routed to this instance: on a
    /// thread of the blocking pool, or inline on the connection's event
    /// loop when [`placement`](Self::placement) says so. Fill `res` and
    /// return [`Outcome::Done`], or return [`Outcome::Decline`] to pass,
    /// [`Outcome::Redirect`] to serve another local path,
    /// [`Outcome::Error`] for a 500 (inline, also
    /// [`Request::defer`](crate::Request::defer)). On the pool it may block
    /// on what it owns (files, child processes) and on reading the request
    /// body; it holds a pool thread while it does. The default declines.
    fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
        let _ = (req, res);
        Outcome::Decline
    }
    /// Log phase: after the response is complete (or failed), once per
    /// exchange, for each instance under the vhost's `loggers:`. Runs on
    /// the pool, or on the event loop that wrote the response for an
    /// instance placed inline; the request's body is no longer readable.
    fn log(&self, entry: &LogEntry) {
        let _ = entry;
    }
    /// A log record (plugin `log::` records made during a request, plugin
    /// errors and panics, CGI stderr, [`record_for`]) routed by the host
    /// to each instance under the vhost's `loggers:`, on the thread that
    /// made it. Records logged from here go to the server's own log, never
    /// back here.
    fn record(&self, rec: &Record) {
        let _ = rec;
    }
    /// SDK 1.1: where this instance's [`handle`](Self::handle) and
    /// [`log`](Self::log) run, read once after the constructor. The
    /// default, [`Placement::Pool`], is what every 1.0 plugin gets and is
    /// always safe. Declare [`Placement::Inline`] only if these methods
    /// never block: see [`guide::placement`](crate::guide::placement)
    /// for what inline code may and may not do.
    fn placement(&self) -> Placement {
        Placement::Pool
    }
    /// Reopen files by path (the server got SIGUSR1, e.g. from
    /// logrotate). Runs on a thread started for it.
    fn reopen(&self) {}
    /// Flush buffers: about once a second from a flusher thread, before
    /// an instance replaced by a reload is dropped, and at exit.
    fn flush(&self) {}
    /// The server is stopping (SIGTERM/SIGINT): called once, after the
    /// requests in flight and a last [`flush`](Self::flush). The process
    /// exits soon after without necessarily dropping the instance, so do
    /// final work here rather than in `Drop`. Not called on reload.
    fn shutdown(&self) {}
}

/// SDK 1.1: where an instance runs ([`Handler::placement`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// On the server's blocking pool: the handler may block on what it
    /// owns (files, child processes, the network) and on the request body.
    #[default]
    Pool,
    /// On the connection's event loop, with no thread hand-off, when the
    /// request body is already in memory; otherwise (and always on servers
    /// older than 1.1) on the pool. The code never blocks.
    Inline,
}

/// What an instance is built for (and, in
/// [`export_plugin!`](crate::export_plugin)'s `roles:`, what a plugin can be).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A route's content handler.
    Handler = 0,
    /// A vhost's logger (`loggers:`).
    Logger = 1,
}

/// A route's (or logger's) `options:` and where they come from, handed to
/// the plugin's constructor. See [`guide::options`](crate::guide::options).
pub struct Options<'a> {
    yaml: &'a str,
    role: Role,
    vhost: Vhost<'a>,
    route: &'a str,
    /// Where the last [`Options::parse`] error lies (for the host).
    error_path: std::cell::RefCell<Option<String>>,
}

impl<'a> Options<'a> {
    #[doc(hidden)]
    pub fn new(yaml: &'a str, role: Role, vhost: Vhost<'a>, route: &'a str) -> Self {
        Options {
            yaml,
            error_path: std::cell::RefCell::new(None),
            role,
            vhost,
            route,
        }
    }
    /// Parses the options into your own type with serde. Use
    /// `#[serde(deny_unknown_fields)]` so admins' typos are caught; a
    /// missing `options:` parses as an empty mapping. The error text is
    /// serde's; return it from the constructor and `tamada -t` prints it
    /// after the vhost file, line and route.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        let text = if self.yaml.trim().is_empty() || self.yaml.trim() == "null" {
            "{}"
        } else {
            self.yaml
        };
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let mut path = e.path().to_string();
            let inner = strip_position(&e.into_inner().to_string());
            // An unknown key lies one level down from where serde was.
            if let Some(key) = inner
                .strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
            {
                path = if path == "." {
                    key.to_owned()
                } else {
                    format!("{path}.{key}")
                };
            }
            if path == "." {
                path.clear();
            }
            *self.error_path.borrow_mut() = Some(path.clone());
            // Some messages name the field already (`unknown field `x``).
            let last = path.rsplit('.').next().unwrap_or("");
            if path.is_empty() || inner.starts_with(&path) || inner.contains(&format!("`{last}`")) {
                inner
            } else {
                format!("{path}: {inner}")
            }
        })
    }

    /// Where the last [`parse`](Self::parse) error lies (for the SDK's
    /// shims, which tell the host).
    #[doc(hidden)]
    pub fn error_path(&self) -> Option<String> {
        self.error_path.borrow().clone()
    }
    /// A single scalar option as a string (numbers and booleans
    /// included), for quick plugins. Nothing is checked: prefer
    /// [`parse`](Self::parse).
    pub fn get(&self, key: &str) -> Option<String> {
        let v: serde_yaml::Value = serde_yaml::from_str(self.yaml).ok()?;
        match v.get(key)? {
            serde_yaml::Value::String(s) => Some(s.clone()),
            serde_yaml::Value::Number(n) => Some(n.to_string()),
            serde_yaml::Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    /// The options as YAML text.
    pub fn yaml(&self) -> &'a str {
        self.yaml
    }
    /// Handler or logger.
    pub fn role(&self) -> Role {
        self.role
    }
    /// The vhost the instance serves.
    pub fn vhost(&self) -> Vhost<'a> {
        self.vhost
    }
    /// The route prefix (empty for a logger).
    pub fn route(&self) -> &'a str {
        self.route
    }
}

/// The log phase's view of a finished exchange ([`Handler::log`]).
pub struct LogEntry<'a> {
    raw: &'a LogEntryV1<'a>,
}

impl<'a> LogEntry<'a> {
    #[doc(hidden)]
    pub fn from_raw(raw: &'a LogEntryV1<'a>) -> Self {
        LogEntry { raw }
    }
    /// The request (its body is no longer readable).
    pub fn request(&self) -> Request<'a> {
        Request::from_raw(self.raw.request)
    }
    /// Status sent.
    pub fn status(&self) -> u16 {
        self.raw.status
    }
    /// Body bytes actually sent (less than planned if the client left).
    pub fn body_bytes_sent(&self) -> u64 {
        self.raw.body_bytes_sent
    }
    /// All bytes sent, head included.
    pub fn bytes_sent(&self) -> u64 {
        self.raw.bytes_sent
    }
    /// Bytes received, head and body.
    pub fn bytes_received(&self) -> u64 {
        self.raw.bytes_received
    }
    /// Time from the request's first byte to the response's last.
    pub fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.raw.duration_us)
    }
    /// When the request started.
    pub fn start(&self) -> std::time::SystemTime {
        unix_us_to_time(self.raw.start_unix_us)
    }
    /// Why it failed, if it did.
    pub fn error(&self) -> Option<&'a str> {
        let e = self.raw.error.as_str();
        (!e.is_empty()).then_some(e)
    }
    /// Whether the whole response went out.
    pub fn completed(&self) -> bool {
        self.raw.completed
    }
    /// SDK 1.1: the notes handlers attached to the exchange
    /// ([`Request::note`](crate::Request::note)), in order. Empty on
    /// servers older than 1.1.
    pub fn notes(&self) -> Vec<(String, String)> {
        extern "C" fn visit(ctx: *mut c_void, key: RStr<'_>, value: RStr<'_>) {
            // SAFETY: ctx is the `&mut Vec` below, alive for the call to
            // `notes`, which calls `visit` only during that call.
            let v = unsafe { &mut *(ctx as *mut Vec<(String, String)>) };
            v.push((key.as_str().to_owned(), value.as_str().to_owned()));
        }
        let mut out: Vec<(String, String)> = Vec::new();
        match crate::host::HOST_EXT.get() {
            Some(h) => (h.notes)(
                crate::abi::NoteVisitV1 { func: visit },
                &mut out as *mut Vec<(String, String)> as *mut c_void,
            ),
            // Unit tests: what `TestRequest::log_with_notes` gave.
            None => out = crate::request::TEST_LOG_NOTES.with(|n| n.borrow().clone()),
        }
        out
    }
}

/// A log record routed to the vhost's loggers ([`Handler::record`]).
pub struct Record<'a> {
    raw: &'a RecordV1<'a>,
}

impl<'a> Record<'a> {
    #[doc(hidden)]
    pub fn from_raw(raw: &'a RecordV1<'a>) -> Self {
        Record { raw }
    }
    /// Severity.
    pub fn level(&self) -> log::Level {
        level_from_u8(self.raw.level)
    }
    /// Where it came from: a plugin name, `tamada`, or `cgi:<script>`.
    pub fn source(&self) -> &'a str {
        self.raw.source.as_str()
    }
    /// The text.
    pub fn message(&self) -> &'a str {
        self.raw.message.as_str()
    }
    /// The vhost, if known.
    pub fn vhost(&self) -> Option<&'a str> {
        let v = self.raw.vhost.as_str();
        (!v.is_empty()).then_some(v)
    }
    /// The client of the request the record belongs to.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.raw
            .peer
            .as_ref()
            .map(crate::request::addr)
            .into_option()
    }
    /// When it was recorded.
    pub fn time(&self) -> std::time::SystemTime {
        unix_us_to_time(self.raw.unix_us)
    }
}

fn unix_us_to_time(us: i64) -> std::time::SystemTime {
    let base = std::time::UNIX_EPOCH;
    if us >= 0 {
        base + std::time::Duration::from_micros(us as u64)
    } else {
        base - std::time::Duration::from_micros(us.unsigned_abs())
    }
}

/// `log::Level` from the ABI's number.
#[doc(hidden)]
pub fn level_from_u8(l: u8) -> log::Level {
    match l {
        0 | 1 => log::Level::Error,
        2 => log::Level::Warn,
        3 => log::Level::Info,
        4 => log::Level::Debug,
        _ => log::Level::Trace,
    }
}

/// Drops serde_yaml's ` at line L column C`: positions within the options
/// text the host handed over mean nothing to the admin (the host names
/// the conf.d file's own line instead).
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i)
            if msg[i + 9..]
                .split(" column ")
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            msg[..i].to_owned()
        }
        _ => msg.to_owned(),
    }
}

// ---------------------------------------------------------------------
// The forwarding logger: every cdylib has its own `log` global, so the SDK
// installs this one at load; it sends records to the host.

static HOST: OnceLock<&'static HostV1> = OnceLock::new();

struct Forwarder;

impl log::Log for Forwarder {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        if let Some(host) = HOST.get() {
            let msg = record.args().to_string();
            // The default target is the module path (the crate's name):
            // the plugin's declared name is what the admin knows it by.
            let target = match NAME.get() {
                Some(name) if Some(record.target()) == record.module_path() => name,
                _ => record.target(),
            };
            (host.log)(
                record.level() as u8,
                RStr::from_str(target),
                RStr::from_str(&msg),
            );
        }
    }
    fn flush(&self) {}
}

static FORWARDER: Forwarder = Forwarder;

/// The plugin's declared name (set by the macro's `init`): its records are
/// tagged with it, in the server's log as in the vhosts' error logs.
static NAME: OnceLock<&'static str> = OnceLock::new();

/// Sends a record to a vhost's error log (its loggers' `record` phase)
/// from any thread, also outside a request: for example a CGI script's
/// stderr read by a thread of its own. `vhost` is the `vhost:` name
/// ([`Vhost::name`]); `peer` the client, if the record is about one;
/// `source` says where it comes from (`cgi:tool.py`). Records made with
/// `log::error!` and friends while a request is being handled reach the
/// same place without this. Outside a server (unit tests) it does nothing.
/// See [`guide::logging`](crate::guide::logging).
pub fn record_for(
    vhost: &str,
    peer: Option<SocketAddr>,
    level: log::Level,
    source: &str,
    message: &str,
) {
    if let Some(host) = HOST.get() {
        (host.record)(
            RStr::from_str(vhost),
            match peer {
                Some(p) => abi_stable::std_types::ROption::RSome(crate::request::addr_to_raw(p)),
                None => abi_stable::std_types::ROption::RNone,
            },
            level as u8,
            RStr::from_str(source),
            RStr::from_str(message),
        );
    }
}

// ---------------------------------------------------------------------
// The shims. Everything below is called through the FFI table; each one
// catches panics so that none crosses the boundary.

type Constructor = fn(&Options) -> Result<Box<dyn Handler>, String>;
type AccessConstructor = fn(&Options) -> Result<Box<dyn crate::access::Access>, String>;
type FilterConstructor = fn(&Options) -> Result<Box<dyn crate::filter::Filter>, String>;

#[doc(hidden)]
pub mod __private {
    pub use super::*;
    use crate::abi::{
        ExtDeclV1, ExtV1, LifecycleDeclV1, LifecycleV1, MAGIC, OptionErrorV1, PluginDeclV1,
        PluginHeader, SDK_MAJOR, SDK_MINOR,
    };
    pub use abi_stable;
    use abi_stable::StableAbi;

    /// Boxes a user constructor's result.
    pub fn boxed<H, F>(o: &Options, f: F) -> Result<Box<dyn Handler>, String>
    where
        H: Handler,
        F: FnOnce(&Options) -> Result<H, String>,
    {
        f(o).map(|h| Box::new(h) as Box<dyn Handler>)
    }

    /// The frozen bootstrap record.
    pub fn header() -> PluginHeader {
        PluginHeader {
            magic: MAGIC,
            sdk_major: SDK_MAJOR,
            sdk_minor: SDK_MINOR,
        }
    }

    /// The v1 declaration.
    pub fn decl(table: &'static PluginV1) -> PluginDeclV1 {
        PluginDeclV1 {
            layout: <PluginV1 as StableAbi>::LAYOUT,
            table,
        }
    }

    /// Builds the table; `create` is the macro's monomorphic shim.
    pub const fn table(
        name: &'static str,
        version: &'static str,
        create: extern "C" fn(RStr<'_>, &CreateCtxV1<'_>) -> RResult<Instance, RString>,
    ) -> PluginV1 {
        table_with_init(name, version, create, init)
    }

    /// Builds the table with the macro's own `init` shim (which knows the
    /// plugin's name).
    pub const fn table_with_init(
        name: &'static str,
        version: &'static str,
        create: extern "C" fn(RStr<'_>, &CreateCtxV1<'_>) -> RResult<Instance, RString>,
        init: extern "C" fn(&'static HostV1),
    ) -> PluginV1 {
        PluginV1 {
            name: RStr::from_str(name),
            version: RStr::from_str(version),
            init,
            create,
            handle,
            destroy,
        }
    }

    /// The macro's `init`: the host table, the forwarding logger, the
    /// plugin's name for its records, and the panic hook that keeps where
    /// a panic happened.
    pub fn init_named(host: &'static HostV1, name: &'static str) {
        let _ = NAME.set(name);
        init(host);
        // This cdylib has a std (and a panic hook) of its own: the hook
        // keeps the location for the shims' error text instead of
        // printing to the server's stderr.
        std::panic::set_hook(Box::new(|info| {
            let at = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            set_panic_at(at);
        }));
    }

    /// The optional lifecycle table (every SDK plugin has it).
    pub static LIFECYCLE: LifecycleV1 = LifecycleV1 {
        log: log_shim,
        record,
        reopen,
        flush,
        shutdown,
    };

    /// The lifecycle declaration.
    pub fn lifecycle_decl() -> LifecycleDeclV1 {
        LifecycleDeclV1 {
            layout: <LifecycleV1 as StableAbi>::LAYOUT,
            table: &LIFECYCLE,
        }
    }

    /// The extension declaration.
    pub fn ext_decl(table: &'static ExtV1) -> ExtDeclV1 {
        ExtDeclV1 {
            layout: <ExtV1 as StableAbi>::LAYOUT,
            table,
        }
    }

    /// Calls the plugin's `schema:` function, with panics caught.
    pub fn schema_shim(role: RoleV1, f: fn(Role) -> Option<String>) -> RString {
        let role = match role {
            RoleV1::Handler => Role::Handler,
            RoleV1::Logger => Role::Logger,
        };
        match catch_unwind(AssertUnwindSafe(|| f(role))) {
            Ok(Some(s)) => RString::from(s),
            _ => RString::new(),
        }
    }

    extern "C" fn init_ext(host: &'static crate::abi::HostExtV1) {
        let _ = crate::host::HOST_EXT.set(host);
    }

    extern "C" fn init_tls(host: &'static crate::abi::HostTlsV1) {
        let _ = crate::tls::HOST_TLS.set(host);
    }

    /// The TLS declaration (SDK 1.2): the host gives its TLS services.
    pub fn tls_decl() -> crate::abi::TlsDeclV1 {
        crate::abi::TlsDeclV1 {
            layout: <crate::abi::HostTlsV1 as StableAbi>::LAYOUT,
            init: init_tls,
        }
    }

    extern "C" fn init_proto(host: &'static crate::abi::HostProtoV1) {
        let _ = crate::request::HOST_PROTO.set(host);
    }

    /// The protocol declaration (SDK 1.3): the host tells the HTTP
    /// version of a request.
    pub fn proto_decl() -> crate::abi::ProtoDeclV1 {
        crate::abi::ProtoDeclV1 {
            layout: <crate::abi::HostProtoV1 as StableAbi>::LAYOUT,
            init: init_proto,
        }
    }

    extern "C" fn init_user(host: &'static crate::abi::HostAccessV1) {
        let _ = crate::user::HOST_ACCESS.set(host);
    }

    /// The shared-bytes table every SDK 1.2 plugin exports.
    pub fn shared_decl() -> crate::abi::SharedDeclV1 {
        crate::abi::SharedDeclV1 {
            layout: <crate::abi::SharedV1 as StableAbi>::LAYOUT,
            table: &crate::response::SHARED_V1,
        }
    }

    /// The user table every SDK 1.2 plugin exports.
    pub fn user_decl() -> crate::abi::UserDeclV1 {
        crate::abi::UserDeclV1 {
            layout: <crate::abi::HostAccessV1 as StableAbi>::LAYOUT,
            init: init_user,
        }
    }

    /// Boxes a user's access constructor's result.
    pub fn boxed_access<A, F>(o: &Options, f: F) -> Result<Box<dyn crate::access::Access>, String>
    where
        A: crate::access::Access,
        F: FnOnce(&Options) -> Result<A, String>,
    {
        f(o).map(|a| Box::new(a) as Box<dyn crate::access::Access>)
    }

    /// The handler type of a plugin that is an access plugin only (its
    /// constructor always fails).
    pub struct Never;
    impl Handler for Never {}

    /// Why an access plugin cannot be a route's handler or a logger.
    pub fn access_only_message(name: &str) -> String {
        format!(
            "`{name}` is an access plugin: name it in the vhost's `access:` rules, not in `routes:` or `loggers:`"
        )
    }

    /// Called by the macro's access `create` shim.
    pub fn create_access(
        options: RStr<'_>,
        ctx: &CreateCtxV1<'_>,
        ctor: AccessConstructor,
    ) -> RResult<Instance, OptionErrorV1> {
        let opts = Options::new(
            options.as_str(),
            Role::Handler,
            Vhost::from_raw(ctx.vhost),
            ctx.route.as_str(),
        );
        construct_boxed(&opts, ctor)
    }

    /// Runs a constructor with panics caught; the instance is the boxed
    /// box it made (`Box<Box<dyn Handler>>`, `Box<Box<dyn Access>>`), or
    /// an error that says where in the options it lies.
    fn construct_boxed<T>(
        opts: &Options,
        ctor: fn(&Options) -> Result<T, String>,
    ) -> RResult<Instance, OptionErrorV1> {
        let fail = |path: Option<String>, message: String| {
            RResult::RErr(OptionErrorV1 {
                path: RString::from(path.unwrap_or_default()),
                message: RString::from(message),
            })
        };
        match catch_unwind(AssertUnwindSafe(|| ctor(opts))) {
            Ok(Ok(made)) => {
                let ptr = Box::into_raw(Box::new(made)) as *const c_void;
                RResult::ROk(Instance(ptr))
            }
            Ok(Err(e)) => fail(opts.error_path(), e),
            Err(p) => fail(
                None,
                format!("panicked while reading options: {}", panic_message(&p)),
            ),
        }
    }

    fn access_inst(i: Instance) -> &'static dyn crate::access::Access {
        // SAFETY: `i` was made by `create_access` from a
        // `Box<Box<dyn Access>>` and the host calls nothing after
        // `destroy_access`; callers use the reference only during the call.
        unsafe { &**(i.0 as *const Box<dyn crate::access::Access>) }
    }

    extern "C" fn access_traits(_: Instance) -> TraitsV1 {
        // A check runs inline and defers itself when it must block.
        TraitsV1 {
            placement: PlacementV1::Inline,
        }
    }

    extern "C" fn access_check(
        i: Instance,
        req: &RequestV1<'_>,
        call: &crate::abi::AccessCallV1,
    ) -> crate::abi::AccessResultV1 {
        use crate::abi::{AccessResultV1, AccessUserV1};
        use crate::access::Verdict;
        let inline = call.inline;
        let woke = if call.delayed {
            crate::request::Woke::TimedOut
        } else {
            crate::request::Woke::First
        };
        let r = catch_unwind(AssertUnwindSafe(|| {
            let request = Request::from_raw_resumed(req, inline, false, woke, None);
            let mut res = ResponseBuilder::new();
            let verdict = access_inst(i).check(&request, &mut res);
            (verdict, res, request.deferred())
        }));
        match r {
            Ok((_, _, true)) if inline => AccessResultV1::Defer,
            Ok((_, _, true)) => AccessResultV1::Error(RString::from(
                "Request::defer was called on the blocking pool, where it has no meaning",
            )),
            Ok((_, res, _)) if res.is_relay() => AccessResultV1::Error(RString::from(
                "an access rule cannot relay: the socket was closed",
            )),
            Ok((Verdict::Pass, _, _)) => AccessResultV1::Pass,
            Ok((Verdict::User { name, auth_type }, _, _)) => AccessResultV1::User(AccessUserV1 {
                name: RString::from(name),
                auth_type: RString::from(auth_type),
            }),
            Ok((Verdict::Answer, res, _)) => AccessResultV1::Answer(res.into_raw()),
            Ok((Verdict::Rewrite(to), _, _)) => AccessResultV1::Rewrite(RString::from(to)),
            Ok((Verdict::Error(e), _, _)) => AccessResultV1::Error(RString::from(e)),
            Ok((Verdict::Delay(d), _, _)) => {
                AccessResultV1::Delay(d.as_millis().clamp(1, u64::MAX as u128) as u64)
            }
            Err(p) => AccessResultV1::Error(RString::from(format!("panic: {}", panic_message(&p)))),
        }
    }

    extern "C" fn access_finish(i: Instance, req: &RequestV1<'_>) {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            access_inst(i).finish(&Request::from_raw(req))
        }));
    }

    extern "C" fn access_finishes(i: Instance) -> bool {
        catch_unwind(AssertUnwindSafe(|| access_inst(i).finishes())).unwrap_or(false)
    }

    extern "C" fn access_destroy(i: Instance) {
        // SAFETY: see `access_inst`; destroy is the last call.
        let b = unsafe { Box::from_raw(i.0 as *mut Box<dyn crate::access::Access>) };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(b)));
    }

    /// The access table of a plugin whose shims are `create` and `schema`.
    pub const fn access_table(
        create: extern "C" fn(RStr<'_>, &CreateCtxV1<'_>) -> RResult<Instance, OptionErrorV1>,
        options_schema: extern "C" fn() -> RString,
    ) -> crate::abi::AccessV1 {
        crate::abi::AccessV1 {
            create,
            options_schema,
            traits: access_traits,
            check: access_check,
            finish: access_finish,
            finishes: access_finishes,
            destroy: access_destroy,
        }
    }

    /// The access declaration.
    pub fn access_decl(table: &'static crate::abi::AccessV1) -> crate::abi::AccessDeclV1 {
        crate::abi::AccessDeclV1 {
            layout: <crate::abi::AccessV1 as StableAbi>::LAYOUT,
            table,
        }
    }

    /// The options schema shim of an access plugin.
    pub fn access_schema_shim(f: fn() -> Option<String>) -> RString {
        match catch_unwind(f) {
            Ok(Some(s)) => RString::from(s),
            _ => RString::new(),
        }
    }

    /// Boxes a user's filter constructor's result.
    pub fn boxed_filter<F, C>(o: &Options, f: C) -> Result<Box<dyn crate::filter::Filter>, String>
    where
        F: crate::filter::Filter,
        C: FnOnce(&Options) -> Result<F, String>,
    {
        f(o).map(|a| Box::new(a) as Box<dyn crate::filter::Filter>)
    }

    /// Why a filter plugin cannot be a route's handler or a logger.
    pub fn filter_only_message(name: &str) -> String {
        format!(
            "`{name}` is a filter plugin: name it in a vhost's or route's `filters:`, not in `routes:` or `loggers:`"
        )
    }

    /// Called by the macro's filter `create` shim.
    pub fn create_filter(
        options: RStr<'_>,
        ctx: &CreateCtxV1<'_>,
        ctor: FilterConstructor,
    ) -> RResult<Instance, OptionErrorV1> {
        let opts = Options::new(
            options.as_str(),
            Role::Handler,
            Vhost::from_raw(ctx.vhost),
            ctx.route.as_str(),
        );
        construct_boxed(&opts, ctor)
    }

    fn filter_inst(i: Instance) -> &'static dyn crate::filter::Filter {
        // SAFETY: `i` was made by `create_filter` from a
        // `Box<Box<dyn Filter>>` and the host calls nothing after
        // `filter_destroy`; callers use the reference only during the call.
        unsafe { &**(i.0 as *const Box<dyn crate::filter::Filter>) }
    }

    extern "C" fn filter_request(
        i: Instance,
        req: &RequestV1<'_>,
        edits: &mut RVec<crate::abi::HeaderEditV1>,
    ) {
        let r = catch_unwind(AssertUnwindSafe(|| {
            let request = Request::from_raw(req);
            let mut e = crate::filter::RequestEdit::default();
            filter_inst(i).request(&request, &mut e);
            crate::filter::__private::edits(e)
        }));
        match r {
            Ok(list) => {
                for (name, value) in list {
                    edits.push(crate::abi::HeaderEditV1 {
                        name: RString::from(name),
                        value: value.map(RVec::from).into(),
                    });
                }
            }
            Err(p) => log::error!("filter panicked on the request side: {}", panic_message(&p)),
        }
    }

    extern "C" fn filter_response(
        i: Instance,
        req: &RequestV1<'_>,
        head: &mut crate::abi::FilterHeadV1,
    ) -> crate::abi::FilterResultV1 {
        use crate::abi::FilterResultV1;
        use crate::filter::Action;
        let mut h = crate::filter::__private::head(
            head.status,
            std::mem::take(&mut head.headers),
            head.body,
            head.head_only,
        );
        let r = catch_unwind(AssertUnwindSafe(|| {
            let request = Request::from_raw(req);
            filter_inst(i).response(&request, &mut h)
        }));
        let (status, headers) = crate::filter::__private::parts(h);
        head.status = status;
        head.headers = headers;
        match r {
            Ok(Action::Keep) => FilterResultV1::Keep,
            Ok(Action::Transform(t)) => FilterResultV1::Transform(body_filter_into_raw(t)),
            Ok(Action::Replace(b)) => FilterResultV1::Replace(crate::response::body_into_raw(b)),
            Err(p) => FilterResultV1::Error(RString::from(format!("panic: {}", panic_message(&p)))),
        }
    }

    extern "C" fn filter_destroy(i: Instance) {
        // SAFETY: see `filter_inst`; destroy is the last call.
        let b = unsafe { Box::from_raw(i.0 as *mut Box<dyn crate::filter::Filter>) };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(b)));
    }

    /// A transform in the FFI form.
    pub fn body_filter_into_raw(t: Box<dyn crate::filter::BodyFilter>) -> crate::abi::BodyFilterV1 {
        let state = Box::new(BodyFilterState {
            filter: t,
            scratch: Vec::new(),
        });
        crate::abi::BodyFilterV1 {
            ctx: Box::into_raw(state) as *mut c_void,
            data: body_filter_data,
            finish: body_filter_finish,
            drop: body_filter_drop,
        }
    }

    struct BodyFilterState {
        filter: Box<dyn crate::filter::BodyFilter>,
        /// Reused between calls: what the filter writes, copied to the
        /// host's buffer.
        scratch: Vec<u8>,
    }

    fn body_filter_call(
        ctx: *mut c_void,
        out: &mut RVec<u8>,
        f: impl FnOnce(&mut dyn crate::filter::BodyFilter, &mut Vec<u8>) -> Result<(), String>,
    ) -> RResult<(), RString> {
        // SAFETY: `ctx` was made by `body_filter_into_raw` from a
        // `Box<BodyFilterState>`; the host calls from one thread at a
        // time and never after `drop`.
        let s = unsafe { &mut *(ctx as *mut BodyFilterState) };
        let r = catch_unwind(AssertUnwindSafe(|| {
            s.scratch.clear();
            let r = f(&mut *s.filter, &mut s.scratch);
            out.extend_from_slice(&s.scratch);
            if s.scratch.capacity() > 1 << 20 {
                s.scratch = Vec::new();
            }
            r
        }));
        match r {
            Ok(Ok(())) => RResult::ROk(()),
            Ok(Err(e)) => RResult::RErr(RString::from(e)),
            Err(p) => RResult::RErr(RString::from(format!("panic: {}", panic_message(&p)))),
        }
    }

    extern "C" fn body_filter_data(
        ctx: *mut c_void,
        input: RSlice<'_, u8>,
        flush: bool,
        out: &mut RVec<u8>,
    ) -> RResult<(), RString> {
        body_filter_call(ctx, out, |f, o| {
            f.data(input.as_slice(), o)?;
            if flush { f.flush(o) } else { Ok(()) }
        })
    }

    extern "C" fn body_filter_finish(ctx: *mut c_void, out: &mut RVec<u8>) -> RResult<(), RString> {
        body_filter_call(ctx, out, |f, o| f.finish(o))
    }

    extern "C" fn body_filter_drop(ctx: *mut c_void) {
        // SAFETY: as in `body_filter_call`; drop is the last call.
        let b = unsafe { Box::from_raw(ctx as *mut BodyFilterState) };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(b)));
    }

    /// The filter table of a plugin whose shims are `create` and `schema`.
    pub const fn filter_table(
        create: extern "C" fn(RStr<'_>, &CreateCtxV1<'_>) -> RResult<Instance, OptionErrorV1>,
        options_schema: extern "C" fn() -> RString,
    ) -> crate::abi::FilterV1 {
        crate::abi::FilterV1 {
            create,
            options_schema,
            request: filter_request,
            response: filter_response,
            destroy: filter_destroy,
        }
    }

    /// The filter declaration.
    pub fn filter_decl(table: &'static crate::abi::FilterV1) -> crate::abi::FilterDeclV1 {
        crate::abi::FilterDeclV1 {
            layout: <crate::abi::FilterV1 as StableAbi>::LAYOUT,
            table,
        }
    }

    extern "C" fn traits(i: Instance) -> TraitsV1 {
        let placement = match catch_unwind(AssertUnwindSafe(|| inst(i).placement())) {
            Ok(Placement::Inline) => PlacementV1::Inline,
            // A panic here picks the safe default.
            Ok(Placement::Pool) | Err(_) => PlacementV1::Pool,
        };
        TraitsV1 { placement }
    }

    extern "C" fn handle_ext(i: Instance, req: &RequestV1<'_>, ex: &ExchangeV1) -> HandleExtV1 {
        let inline = ex.inline;
        let state = (!ex.state.is_null()).then(|| {
            // SAFETY: a non-null state is one this SDK made in `wait_v1`
            // (a leaked `Box<Box<dyn Any + Send>>`), given back by the host
            // exactly once: it is owned again here.
            *unsafe { Box::from_raw(ex.state as *mut Box<dyn std::any::Any + Send>) }
        });
        let woke = match ex.woke {
            crate::abi::WOKE_READY => crate::request::Woke::Ready,
            crate::abi::WOKE_TIMEOUT => crate::request::Woke::TimedOut,
            _ => crate::request::Woke::First,
        };
        let r = catch_unwind(AssertUnwindSafe(|| {
            let may_wait = crate::host::has(crate::host::Ability::Wait);
            let mut request = Request::from_raw_resumed(req, inline, may_wait, woke, state);
            let mut res = ResponseBuilder::new();
            let mut outcome = inst(i).handle(&request, &mut res);
            // An offload that ran here (no wait possible): at once again.
            let mut again = 0;
            while let Some(st) = request.take_recall()
                && again < 100
            {
                again += 1;
                request = Request::from_raw_resumed(req, inline, may_wait, Woke::Ready, Some(st));
                res = ResponseBuilder::new();
                outcome = inst(i).handle(&request, &mut res);
            }
            let waiting = request.take_waiting();
            (outcome, res, request.deferred(), waiting)
        }));
        match r {
            Ok((_, _, _, Some(w))) if inline && crate::host::has(crate::host::Ability::Wait) => {
                HandleExtV1::Wait(wait_v1(w))
            }
            Ok((_, _, _, Some(_))) => HandleExtV1::V1(HandleResultV1::Error(RString::from(
                "Request::wait was called where it cannot wait (check Request::can_wait)",
            ))),
            Ok((_, _, true, None)) if inline => HandleExtV1::Defer,
            Ok((_, _, true, None)) => HandleExtV1::V1(HandleResultV1::Error(RString::from(
                "Request::defer was called on the blocking pool, where it has no meaning",
            ))),
            Ok((Outcome::Done, res, false, None))
                if res.is_relay() && !crate::host::has(crate::host::Ability::Relay) =>
            {
                drop(res);
                HandleExtV1::V1(HandleResultV1::Error(RString::from(
                    "this server cannot relay (no ABILITY_RELAY): the socket was closed",
                )))
            }
            Ok((Outcome::Done, mut res, false, None)) if res.is_relay() => {
                let r = res.take_relay().expect("checked: is_relay");
                HandleExtV1::Relay(
                    res.into_raw(),
                    crate::abi::RelayV1 {
                        fd: std::os::fd::IntoRawFd::into_raw_fd(r.fd),
                        pre: r.pre.into(),
                        idle_ms: r.idle.as_millis().min(u64::MAX as u128) as u64,
                    },
                )
            }
            Ok((outcome, res, false, None)) => HandleExtV1::V1(result_v1(outcome, res)),
            Err(p) => HandleExtV1::V1(HandleResultV1::Error(RString::from(format!(
                "panic: {}",
                panic_message(&p)
            )))),
        }
    }

    /// A wait as the host sees it: the state leaked until the host gives
    /// it back or drops it.
    fn wait_v1(w: crate::request::Waiting) -> crate::abi::WaitV1 {
        use crate::request::Interest;
        let interest = match w.interest {
            Interest::Read => crate::abi::WAIT_READ,
            Interest::Write => crate::abi::WAIT_WRITE,
            Interest::Both => crate::abi::WAIT_READ | crate::abi::WAIT_WRITE,
        };
        crate::abi::WaitV1 {
            fd: w.fd,
            interest,
            timeout_ms: w.timeout.as_millis().min(u64::MAX as u128) as u64,
            state: Box::into_raw(Box::new(w.state)) as *mut std::ffi::c_void,
            drop_state,
        }
    }

    extern "C" fn drop_state(p: *mut std::ffi::c_void) {
        if p.is_null() {
            return;
        }
        // SAFETY: `p` is a state `wait_v1` leaked, which the host gives up
        // exactly once (here, instead of to another call).
        let b = unsafe { Box::from_raw(p as *mut Box<dyn std::any::Any + Send>) };
        // A panicking Drop must not unwind into the host.
        let _ = catch_unwind(AssertUnwindSafe(move || drop(b)));
    }

    fn result_v1(outcome: Outcome, res: ResponseBuilder) -> HandleResultV1 {
        if res.is_relay() {
            // The 1.0 content phase cannot carry a relay.
            return HandleResultV1::Error(RString::from(
                "a relay needs a server with SDK 1.1 relays: the socket was closed",
            ));
        }
        match outcome {
            Outcome::Done => HandleResultV1::Respond(res.into_raw()),
            Outcome::Decline => HandleResultV1::Decline,
            Outcome::Redirect(p) => HandleResultV1::Redirect(RString::from(p)),
            Outcome::Error(e) => HandleResultV1::Error(RString::from(e)),
        }
    }

    /// Called by the macro's `create` shim (the 1.0 table's).
    pub fn create(
        options: RStr<'_>,
        ctx: &CreateCtxV1<'_>,
        ctor: Constructor,
    ) -> RResult<Instance, RString> {
        match create_ext(options, ctx, ctor) {
            RResult::ROk(i) => RResult::ROk(i),
            RResult::RErr(e) => RResult::RErr(e.message),
        }
    }

    /// Called by the macro's SDK 1.1 `create` shim: the error says where
    /// in the options it lies.
    pub fn create_ext(
        options: RStr<'_>,
        ctx: &CreateCtxV1<'_>,
        ctor: Constructor,
    ) -> RResult<Instance, OptionErrorV1> {
        let role = match ctx.role {
            RoleV1::Handler => Role::Handler,
            RoleV1::Logger => Role::Logger,
        };
        let opts = Options::new(
            options.as_str(),
            role,
            Vhost::from_raw(ctx.vhost),
            ctx.route.as_str(),
        );
        construct_boxed(&opts, ctor)
    }

    /// The SDK 1.1 extension table of a plugin whose `create_ext` shim is
    /// `create` (the macro makes one per plugin).
    pub const fn ext_table(
        create: extern "C" fn(RStr<'_>, &CreateCtxV1<'_>) -> RResult<Instance, OptionErrorV1>,
        roles: u8,
    ) -> ExtV1 {
        ext_table_with_schema(create, roles, no_schema)
    }

    extern "C" fn no_schema(_: RoleV1) -> RString {
        RString::new()
    }

    /// The macro's table, with the plugin's options schema.
    pub const fn ext_table_with_schema(
        create: extern "C" fn(RStr<'_>, &CreateCtxV1<'_>) -> RResult<Instance, OptionErrorV1>,
        roles: u8,
        options_schema: extern "C" fn(RoleV1) -> RString,
    ) -> ExtV1 {
        ExtV1 {
            // Evaluated where the SDK is compiled: as part of the plugin,
            // with its profile's panic strategy.
            unwinds: cfg!(panic = "unwind"),
            roles,
            create,
            options_schema,
            init: init_ext,
            traits,
            handle: handle_ext,
        }
    }

    /// Installs the host table and the forwarding logger (at load; the
    /// testing helpers install a test host).
    pub fn install_host(host: &'static HostV1) {
        let _ = HOST.set(host);
        if log::set_logger(&FORWARDER).is_ok() {
            log::set_max_level(log::LevelFilter::Trace);
        }
    }

    extern "C" fn init(host: &'static HostV1) {
        let _ = HOST.set(host);
        // Fails only if this cdylib already has a logger: keep it then.
        if log::set_logger(&FORWARDER).is_ok() {
            log::set_max_level(log::LevelFilter::Trace);
        }
    }

    fn inst(i: Instance) -> &'static dyn Handler {
        // SAFETY: `i` was made by `create` from a `Box<Box<dyn Handler>>`
        // and the host calls nothing after `destroy`. The 'static here is
        // bounded by that contract: callers use it only during the call.
        unsafe { &**(i.0 as *const Box<dyn Handler>) }
    }

    extern "C" fn handle(i: Instance, req: &RequestV1<'_>) -> HandleResultV1 {
        let r = catch_unwind(AssertUnwindSafe(|| {
            let mut request = Request::from_raw(req);
            let mut res = ResponseBuilder::new();
            let mut outcome = inst(i).handle(&request, &mut res);
            let mut again = 0;
            while let Some(st) = request.take_recall()
                && again < 100
            {
                again += 1;
                request = Request::from_raw_resumed(req, false, false, Woke::Ready, Some(st));
                res = ResponseBuilder::new();
                outcome = inst(i).handle(&request, &mut res);
            }
            (outcome, res)
        }));
        match r {
            Ok((outcome, res)) => result_v1(outcome, res),
            Err(p) => HandleResultV1::Error(RString::from(format!("panic: {}", panic_message(&p)))),
        }
    }

    fn guard(what: &str, f: impl FnOnce()) {
        if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
            log::error!("panic in {what}: {}", panic_message(&p));
        }
    }

    extern "C" fn log_shim(i: Instance, e: &LogEntryV1<'_>) {
        guard("log", || inst(i).log(&LogEntry::from_raw(e)));
    }
    extern "C" fn record(i: Instance, r: &RecordV1<'_>) {
        // No log::error! on panic here: that record would come straight back.
        let _ = catch_unwind(AssertUnwindSafe(|| inst(i).record(&Record::from_raw(r))));
    }
    extern "C" fn reopen(i: Instance) {
        guard("reopen", || inst(i).reopen());
    }
    extern "C" fn flush(i: Instance) {
        guard("flush", || inst(i).flush());
    }
    extern "C" fn shutdown(i: Instance) {
        guard("shutdown", || inst(i).shutdown());
    }
    extern "C" fn destroy(i: Instance) {
        // SAFETY: see `inst`; destroy is the last call for this instance.
        let b = unsafe { Box::from_raw(i.0 as *mut Box<dyn Handler>) };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(b)));
    }
}

/// Exports a plugin: its name and the constructor that builds a
/// [`Handler`] from a route's [`Options`].
///
/// `name` is what routes write in `handler:` (unique among the loaded
/// plugins); `new` is a function or closure
/// `Fn(&Options) -> Result<H, String>` for your handler type `H`, called
/// once per route or logger entry naming the plugin. An `Err` (or a panic)
/// is a configuration error naming the vhost file and route. The plugin's
/// version is its crate version (`CARGO_PKG_VERSION`).
///
/// ```
/// use tamada_sdk::prelude::*;
///
/// struct Hello { greeting: String }
/// impl Handler for Hello {}
///
/// tamada_sdk::export_plugin!(name: "hello", new: |options: &Options| {
///     Ok(Hello { greeting: options.get("greeting").unwrap_or_else(|| "hello".into()) })
/// });
/// # fn main() {}
/// ```
///
/// SDK 1.1: say what the plugin can be with `roles:` (`Handler`,
/// `Logger`, or both), so that `tamada -t` refuses a route to a plugin
/// that only logs (it would answer 404 to everything) and a logger entry
/// naming a plugin that only handles:
///
/// ```
/// use tamada_sdk::prelude::*;
///
/// struct Counter;
/// impl Handler for Counter {
///     fn log(&self, _entry: &LogEntry) { /* count */ }
/// }
///
/// tamada_sdk::export_plugin!(name: "counter", new: |_: &Options| Ok(Counter), roles: [Logger]);
/// # fn main() {}
/// ```
///
/// `schema:` (feature `schema`) gives the JSON Schema of the options, a
/// function of the role returning the text or `None`
/// ([`schema`](crate::schema) has a complete example);
/// `tamada --schema` puts it into the schema of conf.d.
///
/// SDK 1.2: `access:` exports an access rule's constructor
/// ([`access`](crate::access)), alone (`name`, `access`, optional
/// `schema: || ...`) or after a handler's `new`; `filter:` exports a
/// response filter's ([`filter`](crate::filter)) the same ways (with
/// `filter_schema:` after a handler's `new`).
///
/// Without `roles:` the plugin may be named anywhere, as with SDK 1.0;
/// a route whose plugin declines all of its first 100 requests is then
/// reported once in the error log.
///
/// Use it once per crate, at the crate root or in any module. It generates
/// the exported symbols (`tamada_plugin_header`, `tamada_plugin_v1`,
/// `tamada_plugin_lifecycle_v1`, `tamada_plugin_ext_v1`,
/// `tamada_plugin_tls_v1`, `tamada_plugin_user_v1`,
/// `tamada_plugin_shared_v1`, and `tamada_plugin_access_v1` or
/// `tamada_plugin_filter_v1` with `access:` or `filter:`; see
/// [`guide::compatibility`](crate::guide::compatibility)); the plugin's
/// own code stays free of `unsafe` and `extern "C"`.
#[macro_export]
macro_rules! export_plugin {
    (name: $name:expr, new: $new:expr
        $(, roles: [$($role:ident),+ $(,)?])?
        $(, schema: $schema:expr)? $(,)?) => {
        $crate::export_plugin!(@export $name, $new,
            0u8 $($(| (1u8 << ($crate::Role::$role as u8)))+)?,
            $crate::export_plugin!(@schema $($schema)?));
    };
    // SDK 1.2: a handler that is an access plugin too.
    (name: $name:expr, new: $new:expr
        $(, roles: [$($role:ident),+ $(,)?])?
        $(, schema: $schema:expr)?,
        access: $access:expr $(, access_schema: $aschema:expr)? $(,)?) => {
        $crate::export_plugin!(@export $name, $new,
            0u8 $($(| (1u8 << ($crate::Role::$role as u8)))+)?,
            $crate::export_plugin!(@schema $($schema)?));
        $crate::export_plugin!(@access $access, $crate::export_plugin!(@aschema $($aschema)?));
    };
    // SDK 1.2: an access plugin only.
    (name: $name:expr, access: $access:expr $(, schema: $aschema:expr)? $(,)?) => {
        $crate::export_plugin!(@export $name,
            |_: &$crate::Options| -> ::core::result::Result<$crate::plugin::__private::Never, ::std::string::String> {
                ::core::result::Result::Err($crate::plugin::__private::access_only_message($name))
            },
            0u8,
            $crate::export_plugin!(@schema));
        $crate::export_plugin!(@access $access, $crate::export_plugin!(@aschema $($aschema)?));
    };
    // SDK 1.2: a filter plugin only.
    (name: $name:expr, filter: $filter:expr $(, schema: $fschema:expr)? $(,)?) => {
        $crate::export_plugin!(@export $name,
            |_: &$crate::Options| -> ::core::result::Result<$crate::plugin::__private::Never, ::std::string::String> {
                ::core::result::Result::Err($crate::plugin::__private::filter_only_message($name))
            },
            0u8,
            $crate::export_plugin!(@schema));
        $crate::export_plugin!(@filter $filter, $crate::export_plugin!(@aschema $($fschema)?));
    };
    // SDK 1.2: a handler that is a filter too.
    (name: $name:expr, new: $new:expr
        $(, roles: [$($role:ident),+ $(,)?])?
        $(, schema: $schema:expr)?,
        filter: $filter:expr $(, filter_schema: $fschema:expr)? $(,)?) => {
        $crate::export_plugin!(@export $name, $new,
            0u8 $($(| (1u8 << ($crate::Role::$role as u8)))+)?,
            $crate::export_plugin!(@schema $($schema)?));
        $crate::export_plugin!(@filter $filter, $crate::export_plugin!(@aschema $($fschema)?));
    };
    (@filter $filter:expr, $schema:expr) => {
        #[doc(hidden)]
        pub mod __tamada_filter {
            use super::*;
            use $crate::plugin::__private as p;

            fn construct(o: &$crate::Options) -> ::core::result::Result<::std::boxed::Box<dyn $crate::filter::Filter>, ::std::string::String> {
                p::boxed_filter(o, $filter)
            }

            extern "C" fn create(
                options: p::abi_stable::std_types::RStr<'_>,
                ctx: &$crate::abi::CreateCtxV1<'_>,
            ) -> p::abi_stable::std_types::RResult<$crate::abi::Instance, $crate::abi::OptionErrorV1> {
                p::create_filter(options, ctx, construct)
            }

            extern "C" fn options_schema() -> p::abi_stable::std_types::RString {
                let f: fn() -> ::core::option::Option<::std::string::String> = $schema;
                p::access_schema_shim(f)
            }

            static FILTER: $crate::abi::FilterV1 = p::filter_table(create, options_schema);

            /// The SDK 1.2 filter table.
            #[unsafe(no_mangle)]
            pub extern "C" fn tamada_plugin_filter_v1() -> $crate::abi::FilterDeclV1 {
                p::filter_decl(&FILTER)
            }
        }
    };
    (@aschema) => { || -> ::core::option::Option<::std::string::String> { None } };
    (@aschema $schema:expr) => { $schema };
    (@access $access:expr, $schema:expr) => {
        #[doc(hidden)]
        pub mod __tamada_access {
            use super::*;
            use $crate::plugin::__private as p;

            fn construct(o: &$crate::Options) -> ::core::result::Result<::std::boxed::Box<dyn $crate::access::Access>, ::std::string::String> {
                p::boxed_access(o, $access)
            }

            extern "C" fn create(
                options: p::abi_stable::std_types::RStr<'_>,
                ctx: &$crate::abi::CreateCtxV1<'_>,
            ) -> p::abi_stable::std_types::RResult<$crate::abi::Instance, $crate::abi::OptionErrorV1> {
                p::create_access(options, ctx, construct)
            }

            extern "C" fn options_schema() -> p::abi_stable::std_types::RString {
                let f: fn() -> ::core::option::Option<::std::string::String> = $schema;
                p::access_schema_shim(f)
            }

            static ACCESS: $crate::abi::AccessV1 = p::access_table(create, options_schema);

            /// The SDK 1.2 access table.
            #[unsafe(no_mangle)]
            pub extern "C" fn tamada_plugin_access_v1() -> $crate::abi::AccessDeclV1 {
                p::access_decl(&ACCESS)
            }
        }
    };
    (@schema) => { |_: $crate::Role| -> ::core::option::Option<::std::string::String> { None } };
    (@schema $schema:expr) => { $schema };
    (@export $name:expr, $new:expr, $roles:expr, $schema:expr) => {
        // A panic that cannot unwind cannot be caught: it would end the
        // whole server with no log line (see the guide's `errors`).
        #[cfg(panic = "abort")]
        ::core::compile_error!(
            "tamada plugins must be built with `panic = \"unwind\"` (the default): remove `panic = \"abort\"` from the Cargo profile; an aborting plugin's first panic would end the whole server"
        );

        #[doc(hidden)]
        pub mod __tamada_export {
            use super::*;
            use $crate::plugin::__private as p;

            fn construct(o: &$crate::Options) -> ::core::result::Result<::std::boxed::Box<dyn $crate::Handler>, ::std::string::String> {
                p::boxed(o, $new)
            }

            extern "C" fn create(
                options: p::abi_stable::std_types::RStr<'_>,
                ctx: &$crate::abi::CreateCtxV1<'_>,
            ) -> p::abi_stable::std_types::RResult<$crate::abi::Instance, p::abi_stable::std_types::RString> {
                p::create(options, ctx, construct)
            }

            extern "C" fn create_ext(
                options: p::abi_stable::std_types::RStr<'_>,
                ctx: &$crate::abi::CreateCtxV1<'_>,
            ) -> p::abi_stable::std_types::RResult<$crate::abi::Instance, $crate::abi::OptionErrorV1> {
                p::create_ext(options, ctx, construct)
            }

            fn schema_of(role: $crate::Role) -> ::core::option::Option<::std::string::String> {
                let f: fn($crate::Role) -> ::core::option::Option<::std::string::String> = $schema;
                f(role)
            }

            extern "C" fn options_schema(
                role: $crate::abi::RoleV1,
            ) -> p::abi_stable::std_types::RString {
                p::schema_shim(role, schema_of)
            }

            static EXT: $crate::abi::ExtV1 = p::ext_table_with_schema(create_ext, $roles, options_schema);

            extern "C" fn init(host: &'static $crate::abi::HostV1) {
                p::init_named(host, $name)
            }

            static TABLE: $crate::abi::PluginV1 =
                p::table_with_init($name, ::core::env!("CARGO_PKG_VERSION"), create, init);

            /// The frozen bootstrap symbol.
            #[unsafe(no_mangle)]
            pub extern "C" fn tamada_plugin_header() -> $crate::abi::PluginHeader {
                p::header()
            }

            /// The v1 table.
            #[unsafe(no_mangle)]
            pub extern "C" fn tamada_plugin_v1() -> $crate::abi::PluginDeclV1 {
                p::decl(&TABLE)
            }

            /// The optional lifecycle table.
            #[unsafe(no_mangle)]
            pub extern "C" fn tamada_plugin_lifecycle_v1() -> $crate::abi::LifecycleDeclV1 {
                p::lifecycle_decl()
            }

            /// The SDK 1.1 extension table (placement, defer).
            #[unsafe(no_mangle)]
            pub extern "C" fn tamada_plugin_ext_v1() -> $crate::abi::ExtDeclV1 {
                p::ext_decl(&EXT)
            }

            /// The SDK 1.2 TLS view.
            #[unsafe(no_mangle)]
            pub extern "C" fn tamada_plugin_tls_v1() -> $crate::abi::TlsDeclV1 {
                p::tls_decl()
            }

            /// The SDK 1.2 user view (what access rules established).
            #[unsafe(no_mangle)]
            pub extern "C" fn tamada_plugin_user_v1() -> $crate::abi::UserDeclV1 {
                p::user_decl()
            }

            /// The SDK 1.2 shared-bytes table (bodies sent without a copy).
            #[unsafe(no_mangle)]
            pub extern "C" fn tamada_plugin_shared_v1() -> $crate::abi::SharedDeclV1 {
                p::shared_decl()
            }

            /// The SDK 1.3 protocol view (the HTTP version of a request).
            #[unsafe(no_mangle)]
            pub extern "C" fn tamada_plugin_proto_v1() -> $crate::abi::ProtoDeclV1 {
                p::proto_decl()
            }
        }
    };
}
