//! The services the host gives to plugins (`HostV1`), and the routing of
//! log records: a record made while a worker serves a request goes to that
//! vhost's loggers (`record` phase), tagged with the plugin and the client;
//! any other record goes to the server's own log.
//!
//! This module knows no vhost type: a vhost is a [`RecordSink`] (the
//! running configuration's `Vhost` is one, `config/runtime.rs`), and what
//! only the running server knows (a vhost by name, whether it drains)
//! comes through [`install`]. So plugin loading depends on this module,
//! and nothing here depends back on the configuration.
pub use crate::plugins::call::RecordSink;
use crate::plugins::call::{current, on_loop};
use abi_stable::std_types::{ROption, RStr};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};
use tamada_sdk::abi::AddrV1;
use tamada_sdk::abi::{
    ABILITY_DEFER, ABILITY_INLINE, ABILITY_NOTES, ABILITY_OPTION_PATHS, ABILITY_RELAY,
    ABILITY_ROLES, ABILITY_WAIT, HostExtV1, HostV1, NoteVisitV1, RecordV1,
};
use tamada_sdk::request::addr_to_raw;

/// The table every plugin gets in `init`.
pub static HOST_V1: HostV1 = HostV1 {
    log: host_log,
    record: host_record,
};

/// The SDK 1.1 services every plugin with the extension table gets.
pub static HOST_EXT_V1: HostExtV1 = HostExtV1 {
    server: RStr::from_str(crate::http::SERVER),
    sdk_major: tamada_sdk::abi::SDK_MAJOR,
    sdk_minor: tamada_sdk::abi::SDK_MINOR,
    abilities: ABILITY_INLINE
        | ABILITY_DEFER
        | ABILITY_NOTES
        | ABILITY_OPTION_PATHS
        | ABILITY_ROLES
        | ABILITY_RELAY
        | ABILITY_WAIT
        | tamada_sdk::abi::ABILITY_TLS
        | tamada_sdk::abi::ABILITY_ACCESS
        | tamada_sdk::abi::ABILITY_FILTER,
    draining: host_draining,
    dry_run: host_dry_run,
    serves_as_root: host_serves_as_root,
    service_user: host_service_user,
    note: host_note,
    notes: host_notes,
};

/// `tamada -t` (set by `main` before any plugin is created).
pub static DRY_RUN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Started as root with no `user:` (set by `main`).
pub static SERVES_AS_ROOT: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

extern "C" fn host_dry_run() -> bool {
    DRY_RUN.load(std::sync::atomic::Ordering::Relaxed)
}

/// The user to drop to, set by `main` before any plugin is created.
pub static SERVICE_USER: OnceLock<(u32, u32)> = OnceLock::new();

extern "C" fn host_service_user() -> ROption<tamada_sdk::abi::ServiceUserV1> {
    match SERVICE_USER.get() {
        Some(&(uid, gid)) => ROption::RSome(tamada_sdk::abi::ServiceUserV1 { uid, gid }),
        None => ROption::RNone,
    }
}

extern "C" fn host_serves_as_root() -> bool {
    SERVES_AS_ROOT.load(std::sync::atomic::Ordering::Relaxed)
}

extern "C" fn host_draining() -> bool {
    HOOKS.get().is_some_and(|h| (h.draining)())
}

/// A vhost's record sink, shared.
pub type Sink = std::sync::Arc<dyn RecordSink + Send + Sync>;
/// Finds a vhost of the running configuration by name.
pub type Lookup = Box<dyn Fn(&str) -> Option<Sink> + Send + Sync>;

/// What only the running server knows, installed once at start-up.
pub struct Hooks {
    /// SIGTERM was received.
    pub draining: Box<dyn Fn() -> bool + Send + Sync>,
    /// The vhost of this name in the running configuration.
    pub vhost: Lookup,
}

static HOOKS: OnceLock<Hooks> = OnceLock::new();

/// Called once at start-up.
pub fn install(hooks: Hooks) {
    let _ = HOOKS.set(hooks);
}

thread_local! {
    /// The notes of the exchange whose handler this thread runs.
    static NOTES_OUT: std::cell::RefCell<Option<Vec<(String, String)>>> = const { std::cell::RefCell::new(None) };
    /// The notes of the exchange whose loggers this thread runs.
    static NOTES_IN: Cell<*const Vec<(String, String)>> = const { Cell::new(std::ptr::null()) };
}

/// Runs a handler call collecting the notes it attaches.
pub fn collect_notes<R>(f: impl FnOnce() -> R) -> (R, Vec<(String, String)>) {
    let outer = NOTES_OUT.with(|n| n.borrow_mut().replace(Vec::new()));
    let r = f();
    let got = NOTES_OUT.with(|n| std::mem::replace(&mut *n.borrow_mut(), outer));
    (r, got.unwrap_or_default())
}

/// Runs loggers with the exchange's notes visible to them.
pub fn with_notes<R>(notes: &Vec<(String, String)>, f: impl FnOnce() -> R) -> R {
    struct Reset(*const Vec<(String, String)>);
    impl Drop for Reset {
        fn drop(&mut self) {
            NOTES_IN.with(|n| n.set(self.0));
        }
    }
    let _reset = Reset(NOTES_IN.with(|n| n.replace(notes as *const _)));
    f()
}

extern "C" fn host_note(key: RStr<'_>, value: RStr<'_>) -> bool {
    NOTES_OUT.with(|n| match n.borrow_mut().as_mut() {
        Some(v) => {
            v.push((key.as_str().to_owned(), value.as_str().to_owned()));
            true
        }
        None => false,
    })
}

extern "C" fn host_notes(visit: NoteVisitV1, ctx: *mut std::ffi::c_void) {
    let p = NOTES_IN.with(|n| n.get());
    if p.is_null() {
        return;
    }
    // SAFETY: set by `with_notes` from a reference that outlives the call
    // it wraps, and reset (by its guard) before that reference ends.
    let notes = unsafe { &*p };
    for (k, v) in notes {
        crate::plugins::call::visit_note(&visit, ctx, k, v);
    }
}

/// The SDK 1.2 TLS view every plugin with the TLS table gets.
pub static HOST_TLS_V1: tamada_sdk::abi::HostTlsV1 = tamada_sdk::abi::HostTlsV1 { tls: host_tls };

thread_local! {
    /// The TLS view of the exchange this thread handles or logs.
    static TLS_IN: Cell<*const std::ffi::c_void> = const { Cell::new(std::ptr::null()) };
}

/// Runs a handler or the loggers with the exchange's TLS view visible to
/// them (`None`: not a TLS request).
pub fn with_tls<R>(info: Option<&tamada_sdk::abi::TlsInfoV1<'_>>, f: impl FnOnce() -> R) -> R {
    struct Reset(*const std::ffi::c_void);
    impl Drop for Reset {
        fn drop(&mut self) {
            TLS_IN.with(|n| n.set(self.0));
        }
    }
    let p = info.map_or(std::ptr::null(), |i| {
        i as *const _ as *const std::ffi::c_void
    });
    let _reset = Reset(TLS_IN.with(|n| n.replace(p)));
    f()
}

extern "C" fn host_tls(visit: tamada_sdk::abi::TlsVisitV1, ctx: *mut std::ffi::c_void) -> bool {
    let p = TLS_IN.with(|n| n.get());
    if p.is_null() {
        return false;
    }
    // SAFETY: set by `with_tls` from a reference that outlives the call it
    // wraps, and reset (by its guard) before that reference ends.
    let info = unsafe { &*(p as *const tamada_sdk::abi::TlsInfoV1<'_>) };
    crate::plugins::call::visit_tls(&visit, ctx, info);
    true
}

/// The SDK 1.2 user view every plugin with the user table gets.
pub static HOST_ACCESS_V1: tamada_sdk::abi::HostAccessV1 =
    tamada_sdk::abi::HostAccessV1 { user: host_user };

/// A user an access rule established: name and auth type.
pub type AuthUser = (String, String);

thread_local! {
    /// The user of the exchange this thread handles or logs.
    static USER_IN: Cell<*const AuthUser> = const { Cell::new(std::ptr::null()) };
}

/// Runs a handler or the loggers with the exchange's TLS view, user and
/// HTTP version (`major << 8 | minor`) visible to them.
pub fn with_views<R>(
    tls: Option<&tamada_sdk::abi::TlsInfoV1<'_>>,
    user: Option<&AuthUser>,
    version: u16,
    f: impl FnOnce() -> R,
) -> R {
    struct Reset(*const AuthUser, u16);
    impl Drop for Reset {
        fn drop(&mut self) {
            USER_IN.with(|n| n.set(self.0));
            VERSION_IN.with(|n| n.set(self.1));
        }
    }
    let p = user.map_or(std::ptr::null(), |u| u as *const AuthUser);
    let _reset = Reset(
        USER_IN.with(|n| n.replace(p)),
        VERSION_IN.with(|n| n.replace(version)),
    );
    with_tls(tls, f)
}

/// The SDK 1.3 protocol view every plugin with the protocol table gets.
pub static HOST_PROTO_V1: tamada_sdk::abi::HostProtoV1 = tamada_sdk::abi::HostProtoV1 {
    version: host_version,
};

thread_local! {
    /// The HTTP version of the exchange this thread handles or logs.
    static VERSION_IN: Cell<u16> = const { Cell::new(0) };
}

extern "C" fn host_version() -> u16 {
    VERSION_IN.with(|n| n.get())
}

extern "C" fn host_user(visit: tamada_sdk::abi::UserVisitV1, ctx: *mut std::ffi::c_void) -> bool {
    let p = USER_IN.with(|n| n.get());
    if p.is_null() {
        return false;
    }
    // SAFETY: set by `with_views` from a reference that outlives the call
    // it wraps, and reset (by its guard) before that reference ends.
    let (name, auth_type) = unsafe { &*p };
    crate::plugins::call::visit_user(&visit, ctx, name, auth_type);
    true
}

thread_local! {
    /// Set while records are being delivered, so a logger that logs does
    /// not loop back into itself.
    static DELIVERING: Cell<bool> = const { Cell::new(false) };
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn level_of(l: u8) -> log::Level {
    tamada_sdk::plugin::__private::level_from_u8(l)
}

/// Sends a record to the vhost's loggers, or to the server log when the
/// vhost has none.
pub fn record(
    vhost: &(impl RecordSink + ?Sized),
    peer: Option<SocketAddr>,
    level: log::Level,
    source: &str,
    msg: &str,
) {
    if !vhost.has_loggers() || DELIVERING.with(|d| d.get()) {
        log::log!(level, "[{}] {source}: {msg}", vhost.vhost_name());
        return;
    }
    let rec = RecordV1 {
        level: level as u8,
        source: RStr::from_str(source),
        message: RStr::from_str(msg),
        vhost: RStr::from_str(vhost.vhost_name()),
        peer: match peer {
            Some(p) => ROption::RSome(addr_to_raw(p)),
            None => ROption::RNone,
        },
        unix_us: now_us(),
    };
    let on_loop = on_loop();
    delivering(|| vhost.deliver(&rec, on_loop));
}

/// Runs `f`, which hands records to loggers: a logger that logs meanwhile
/// writes to the server's log, never back into itself.
pub fn delivering<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            DELIVERING.with(|d| d.set(self.0));
        }
    }
    let _reset = Reset(DELIVERING.with(|d| d.replace(true)));
    f()
}

/// A record about the current request from the core itself.
pub fn record_here(level: log::Level, source: &str, msg: &str) {
    current(|c| match c {
        Some((vhost, peer, _)) => record(vhost, Some(peer), level, source, msg),
        None => log::log!(level, "{source}: {msg}"),
    })
}

extern "C" fn host_log(level: u8, target: RStr<'_>, message: RStr<'_>) {
    let level = level_of(level);
    current(|c| match c {
        Some((vhost, peer, plugin)) => {
            let source = plugin.unwrap_or(target.as_str());
            record(vhost, Some(peer), level, source, message.as_str());
        }
        None => log::log!(level, "{}: {}", target.as_str(), message.as_str()),
    })
}

extern "C" fn host_record(
    vhost: RStr<'_>,
    peer: ROption<AddrV1>,
    level: u8,
    source: RStr<'_>,
    message: RStr<'_>,
) {
    let level = level_of(level);
    let peer = peer.as_ref().map(tamada_sdk::request::addr).into_option();
    let v = HOOKS.get().and_then(|h| (h.vhost)(vhost.as_str()));
    match v {
        Some(v) => record(&*v, peer, level, source.as_str(), message.as_str()),
        None => log::log!(
            level,
            "[{}] {}: {}",
            vhost.as_str(),
            source.as_str(),
            message.as_str()
        ),
    }
}
