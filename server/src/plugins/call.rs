//! The one place the core calls plugin code. A call runs inside a
//! [`Scope`]: the vhost and client of the request it is for, so that the
//! plugin's log records reach that vhost's loggers, and the plugin's name,
//! so that they are tagged with it. Instance calls (`handle`, `log`,
//! `record`, lifecycle hooks) go through [`PluginInstance`], which names
//! itself here; the raw tables a plugin hands over (a response stream, a
//! notes visitor, a wait state) are called by the functions below. The
//! SDK's shims catch the plugin's panics; what they hand back is checked
//! where it is turned into core types (`plugins/mod.rs`, `exchange/`).
//!
//! [`PluginInstance`]: crate::plugins::PluginInstance

use abi_stable::std_types::{RSliceMut, RStr};
use std::cell::Cell;
use std::net::SocketAddr;
use tamada_sdk::abi::{NoteVisitV1, RecordV1, StreamV1};

/// The vhost and client that plugin calls are made for, until dropped.
/// It must be dropped before the vhost it borrows (declare it after).
pub struct Scope(#[allow(dead_code)] Restore);

/// Enters the context of a request (or of a vhost, outside requests).
pub fn scope(vhost: &dyn RecordSink, peer: SocketAddr) -> Scope {
    Scope(enter(vhost, peer))
}

/// Runs a call into plugin `name` (its records are tagged with it).
pub fn named<R>(name: &'static str, f: impl FnOnce() -> R) -> R {
    struct Unname;
    impl Drop for Unname {
        fn drop(&mut self) {
            set_plugin(None);
        }
    }
    set_plugin(Some(name));
    let _unname = Unname;
    f()
}

/// One `read` of a response stream (on the pool: it may block).
pub fn stream_read(s: &StreamV1, buf: &mut [u8]) -> Result<usize, String> {
    (s.read)(s.ctx, RSliceMut::from_mut_slice(buf))
        .into_result()
        .map_err(|e| e.into_string())
}

/// Closes a response stream, once (on the pool: closing may block, a CGI
/// child is killed and reaped). `client_gone` when it was not all sent.
pub fn stream_close(s: StreamV1, client_gone: bool) {
    (s.close)(s.ctx, client_gone)
}

/// Hands one note to a logger's visitor (`Request::notes`).
pub fn visit_note(visit: &NoteVisitV1, ctx: *mut std::ffi::c_void, key: &str, value: &str) {
    (visit.func)(ctx, RStr::from_str(key), RStr::from_str(value));
}

/// Calls a plugin's TLS view visitor (`HostTlsV1::tls`).
pub fn visit_tls(
    visit: &tamada_sdk::abi::TlsVisitV1,
    ctx: *mut std::ffi::c_void,
    info: &tamada_sdk::abi::TlsInfoV1<'_>,
) {
    (visit.func)(ctx, info)
}

/// Calls a plugin's user view visitor (`HostAccessV1::user`).
pub fn visit_user(
    visit: &tamada_sdk::abi::UserVisitV1,
    ctx: *mut std::ffi::c_void,
    name: &str,
    auth_type: &str,
) {
    (visit.func)(ctx, RStr::from_str(name), RStr::from_str(auth_type))
}

/// Frees a waiting handler's state with the plugin's own function.
pub fn free_state(free: extern "C" fn(*mut std::ffi::c_void), state: *mut std::ffi::c_void) {
    free(state)
}

/// Where a vhost's records go: its loggers.
pub trait RecordSink {
    /// The vhost's name (records carry it; a vhost with no logger writes
    /// it in front of the line in the server's log).
    fn vhost_name(&self) -> &str;
    /// Whether it has loggers at all (else records go to the server log).
    fn has_loggers(&self) -> bool;
    /// Hands a record to every logger: those that may run here now, the
    /// others on the pool (through [`delivering`]).
    fn deliver(&self, rec: &RecordV1<'_>, on_loop: bool);
}

impl<T: RecordSink + ?Sized> RecordSink for std::sync::Arc<T> {
    fn vhost_name(&self) -> &str {
        (**self).vhost_name()
    }
    fn has_loggers(&self) -> bool {
        (**self).has_loggers()
    }
    fn deliver(&self, rec: &RecordV1<'_>, on_loop: bool) {
        (**self).deliver(rec, on_loop)
    }
}

/// What the current thread is serving, as [`enter`] set it. PERF: a pointer and a
/// `&'static` name instead of reference-counted clones: the counts of a
/// vhost shared by every worker bounced between CPUs on each request.
#[derive(Clone, Copy)]
pub struct Current {
    /// Valid while set: [`Restore`] clears it before the borrow ends.
    vhost: *const dyn RecordSink,
    peer: SocketAddr,
    /// The plugin being called (its name lives as long as its library,
    /// which is never unloaded).
    plugin: Option<&'static str>,
}

thread_local! {
    static CONTEXT: Cell<Option<Current>> = const { Cell::new(None) };
    /// This thread is an event loop.
    static ON_LOOP: Cell<bool> = const { Cell::new(false) };
}

/// Restores the previous context, also when unwinding.
pub struct Restore(Option<Current>);

impl Drop for Restore {
    fn drop(&mut self) {
        CONTEXT.with(|c| c.set(self.0));
    }
}

/// Sets the thread's context until the guard is dropped. The guard must
/// be dropped before `vhost` is (declare it after the vhost it borrows).
pub(crate) fn enter(vhost: &dyn RecordSink, peer: SocketAddr) -> Restore {
    let cur = Current {
        // SAFETY (of the later dereference): see `current`.
        vhost: unsafe { erase(vhost) },
        peer,
        plugin: None,
    };
    Restore(CONTEXT.with(|c| c.replace(Some(cur))))
}

/// Marks this thread as an event loop (plugin code that may block is then
/// sent to the pool).
pub fn set_on_loop() {
    ON_LOOP.with(|c| c.set(true));
    crate::plugins::watchdog::watch_this_loop();
}

/// Whether this thread is an event loop.
pub fn on_loop() -> bool {
    ON_LOOP.with(|c| c.get())
}

/// Marks which plugin is being called (for tagging its records).
fn set_plugin(name: Option<&'static str>) {
    CONTEXT.with(|c| {
        if let Some(mut cur) = c.get() {
            cur.plugin = name;
            c.set(Some(cur));
        }
    });
}

/// The borrow's lifetime erased, for the thread-local context.
///
/// # Safety
/// The pointer must not be dereferenced after the borrow ends: the guard
/// that sets it (`Restore`) clears it first.
unsafe fn erase(v: &dyn RecordSink) -> *const dyn RecordSink {
    // SAFETY: only the lifetime changes (same fat pointer); the caller
    // keeps the pointer within the borrow (see above).
    unsafe { std::mem::transmute::<&dyn RecordSink, &'static dyn RecordSink>(v) as *const _ }
}

/// Runs `f` with the current vhost, client and plugin, if any.
pub(crate) fn current<R>(
    f: impl FnOnce(Option<(&dyn RecordSink, SocketAddr, Option<&'static str>)>) -> R,
) -> R {
    match CONTEXT.with(|c| c.get()) {
        // SAFETY: `vhost` was set by `enter` from a reference that
        // outlives the call, and is cleared (by `Restore`) before it ends.
        Some(cur) => f(Some((unsafe { &*cur.vhost }, cur.peer, cur.plugin))),
        None => f(None),
    }
}
