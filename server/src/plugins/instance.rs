//! A plugin's instances (one per route or logger entry): made from
//! options, called for each phase (through `call.rs`), and what their
//! content phase hands back turned into core types: an answer, a decline,
//! a deferral to the pool, a wait on a descriptor, a relay.

use super::Plugin;
use super::call;
use abi_stable::std_types::RStr;
use std::sync::Arc;
use tamada_sdk::abi::{
    CreateCtxV1, ExchangeV1, ExtV1, HandleExtV1, HandleResultV1, Instance, PlacementV1, RequestV1,
    RoleV1, VhostV1, WAIT_READ, WAIT_WRITE,
};

/// The start of the trace record every stall makes (docs/plugins/metrics.md).
pub const LOOP_STALL: &str = "loop stall: ";

/// Calls into plugin `tag` under the watchdog (a call that held its
/// event loop is reported) with its records tagged.
pub(super) fn watched<R>(tag: &'static str, f: impl FnOnce() -> R) -> R {
    let (r, stall) = super::watchdog::around(|| call::named(tag, f));
    if let Some(held) = stall {
        stalled(tag, held);
    }
    r
}

/// Builds an instance with an SDK 1.2 table's `create` (access rules,
/// filters): the context's role is `Handler`, its route `path`; an error
/// keeps where in the options it lies.
pub(super) fn create_with(
    create: extern "C" fn(
        RStr<'_>,
        &CreateCtxV1<'_>,
    ) -> abi_stable::std_types::RResult<
        Instance,
        tamada_sdk::abi::OptionErrorV1,
    >,
    options_yaml: &str,
    vhost: VhostV1<'_>,
    path: &str,
) -> Result<Instance, OptionError> {
    let ctx = CreateCtxV1 {
        role: RoleV1::Handler,
        vhost,
        route: RStr::from_str(path),
    };
    create(RStr::from_str(options_yaml), &ctx)
        .into_result()
        .map_err(|e| OptionError {
            path: Some(e.path.into_string()).filter(|p| !p.is_empty()),
            message: e.message.into_string(),
        })
}

/// Runs a plugin's destroy (which may block) off the event loops: on
/// the pool when called on a loop, else at once.
pub(super) fn off_loop(end: impl FnOnce() + Send + 'static) {
    if call::on_loop() {
        crate::pool::global().submit(Box::new(end));
    } else {
        end();
    }
}

/// Reports a plugin call that held its event loop (`watchdog.rs`).
pub(super) fn stalled(tag: &'static str, held: std::time::Duration) {
    // Every stall, for loggers that count them (the metrics plugin's
    // `tamada_loop_stalls_total`); the error log's levels drop it.
    super::host::record_here(
        log::Level::Trace,
        "tamada",
        &format!("{LOOP_STALL}plugin `{tag}`, {} ms", held.as_millis()),
    );
    if !super::watchdog::may_report(tag) {
        return;
    }
    let route = super::watchdog::route()
        .map(|r| format!(" on route {r}"))
        .unwrap_or_default();
    super::host::record_here(
        log::Level::Warn,
        "tamada",
        &format!(
            "plugin `{tag}`{route} held its event loop for about {} ms in one call, stalling every connection of that loop: a handler that may block must run on the pool (Placement::Pool), wait with Request::wait, or defer",
            held.as_millis()
        ),
    );
}

/// A live instance of a plugin (one per route or logger entry).
pub struct PluginInstance {
    pub plugin: Arc<Plugin>,
    pub inst: Instance,
    /// It declared (SDK 1.1) that it never blocks: it may run on a loop.
    pub inline: bool,
    /// The plugin's name, for tagging records (the library is never
    /// unloaded, so the table's string lives for good).
    pub tag: &'static str,
    /// For a plugin that does not declare its roles: requests it declined
    /// before it ever answered one (counted up to [`DECLINE_WATCH`]).
    declined: std::sync::atomic::AtomicU32,
    answered: std::sync::atomic::AtomicBool,
}

/// A route whose plugin (with no declared roles) declines this many first
/// requests in a row is reported once: it may have no `handle` at all.
pub const DECLINE_WATCH: u32 = 100;

/// Why a plugin refused its options, and where in them when it says.
#[derive(Debug)]
pub struct OptionError {
    /// `cache.valid`, `hosts[2]`: keys and indexes from the options' top.
    pub path: Option<String>,
    pub message: String,
}

impl std::fmt::Display for OptionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What a content phase answered.
pub enum Handled {
    V1(HandleResultV1),
    /// Run it again on the pool.
    Defer,
    /// A 101, then a relay to this socket (SDK 1.1); `Err` when the
    /// plugin gave no socket (its response is refused).
    Relay(tamada_sdk::abi::ResponseV1, Result<Relay, String>),
    /// Call it again on this loop when a descriptor is ready (SDK 1.1).
    Wait(Wait),
}

/// A waiting handler's saved state: given back to its next call, or
/// freed with the plugin's own function when the exchange ends first.
/// (Whoever holds it must drop it before the exchange, whose vhost keeps
/// the plugin loaded.)
pub struct WaitState {
    ptr: *mut std::ffi::c_void,
    free: extern "C" fn(*mut std::ffi::c_void),
}

// SAFETY: the SDK makes wait states only from `Send` values.
unsafe impl Send for WaitState {}

extern "C" fn free_nothing(_: *mut std::ffi::c_void) {}

impl WaitState {
    /// No plugin state (a wait of the core's own: an access rule's timer).
    pub fn none() -> WaitState {
        WaitState {
            ptr: std::ptr::null_mut(),
            free: free_nothing,
        }
    }
    fn into_raw(mut self) -> *mut std::ffi::c_void {
        std::mem::replace(&mut self.ptr, std::ptr::null_mut())
    }
}

impl Drop for WaitState {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            call::free_state(self.free, self.ptr);
        }
    }
}

/// What a handler waits for before it is called again.
pub struct Wait {
    pub fd: std::os::fd::RawFd,
    pub read: bool,
    pub write: bool,
    pub timeout: std::time::Duration,
    pub state: WaitState,
}

/// The call after a wait.
pub struct Resume {
    pub state: WaitState,
    pub timed_out: bool,
}

/// The socket and bytes of a relay, owned.
pub struct Relay {
    pub fd: std::os::fd::OwnedFd,
    pub pre: Vec<u8>,
    pub idle: std::time::Duration,
}

impl Relay {
    /// The plugin's idle timeout, or 60 s when it gave none (nginx's
    /// proxy_read_timeout, which bounds its WebSockets).
    pub fn idle_or(&self) -> std::time::Duration {
        if self.idle.is_zero() {
            std::time::Duration::from_secs(60)
        } else {
            self.idle
        }
    }
}

impl PluginInstance {
    /// Builds an instance from options YAML. An error may say where in
    /// the options it lies (SDK 1.1 plugins).
    pub fn create(
        plugin: &Arc<Plugin>,
        options_yaml: &str,
        role: RoleV1,
        vhost: VhostV1<'_>,
        route: &str,
    ) -> Result<PluginInstance, OptionError> {
        let ctx = CreateCtxV1 {
            role,
            vhost,
            route: RStr::from_str(route),
        };
        let made = match plugin.ext {
            Some(x) => (x.create)(RStr::from_str(options_yaml), &ctx)
                .into_result()
                .map_err(|e| OptionError {
                    path: Some(e.path.into_string()).filter(|p| !p.is_empty()),
                    message: e.message.into_string(),
                }),
            None => (plugin.table.create)(RStr::from_str(options_yaml), &ctx)
                .into_result()
                .map_err(|e| OptionError {
                    path: None,
                    message: e.into_string(),
                }),
        };
        let inst = made?;
        let inline = plugin
            .ext
            .is_some_and(|x| (x.traits)(inst).placement == PlacementV1::Inline);
        Ok(PluginInstance {
            plugin: plugin.clone(),
            inst,
            inline,
            tag: plugin.table.name.as_str(),
            declined: Default::default(),
            answered: Default::default(),
        })
    }
    /// Watches a plugin that does not say whether it is a handler: true
    /// once, when its first [`DECLINE_WATCH`] requests were all declined.
    pub fn watch(&self, declined: bool) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        if self.plugin.ext.is_some_and(|x| x.roles != 0) || self.answered.load(Relaxed) {
            return false;
        }
        if !declined {
            self.answered.store(true, Relaxed);
            return false;
        }
        // PERF: past the watch, a load only (no shared writes per request).
        if self.declined.load(Relaxed) >= DECLINE_WATCH {
            return false;
        }
        self.declined.fetch_add(1, Relaxed) + 1 == DECLINE_WATCH
    }

    /// Content phase; `inline` when called on an event loop (only for an
    /// instance that declared it).
    pub fn handle(&self, req: &RequestV1<'_>, inline: bool, resume: Option<Resume>) -> Handled {
        watched(self.tag, || self.handle_now(req, inline, resume))
    }

    fn handle_now(&self, req: &RequestV1<'_>, inline: bool, resume: Option<Resume>) -> Handled {
        match self.plugin.ext {
            Some(x) => {
                let ex = match resume {
                    None => ExchangeV1 {
                        inline,
                        woke: tamada_sdk::abi::WOKE_FIRST,
                        state: std::ptr::null_mut(),
                    },
                    Some(r) => ExchangeV1 {
                        inline,
                        woke: if r.timed_out {
                            tamada_sdk::abi::WOKE_TIMEOUT
                        } else {
                            tamada_sdk::abi::WOKE_READY
                        },
                        // The plugin owns it again from here.
                        state: r.state.into_raw(),
                    },
                };
                self.handle_ext(x, req, &ex)
            }
            None => Handled::V1((self.plugin.table.handle)(self.inst, req)),
        }
    }

    fn handle_ext(&self, x: &ExtV1, req: &RequestV1<'_>, ex: &ExchangeV1) -> Handled {
        {
            match (x.handle)(self.inst, req, ex) {
                HandleExtV1::V1(r) => Handled::V1(r),
                HandleExtV1::Defer => Handled::Defer,
                HandleExtV1::Wait(w) => {
                    let state = WaitState {
                        ptr: w.state,
                        free: w.drop_state,
                    };
                    if w.fd < 0 || w.interest & (WAIT_READ | WAIT_WRITE) == 0 {
                        return Handled::V1(HandleResultV1::Error(
                            "a wait without a descriptor or an interest".into(),
                        ));
                    }
                    Handled::Wait(Wait {
                        fd: w.fd,
                        read: w.interest & WAIT_READ != 0,
                        write: w.interest & WAIT_WRITE != 0,
                        timeout: std::time::Duration::from_millis(w.timeout_ms),
                        state,
                    })
                }
                HandleExtV1::Relay(resp, r) => {
                    use std::os::fd::FromRawFd;
                    if r.fd < 0 {
                        // The caller gives the response's descriptors back.
                        return Handled::Relay(resp, Err("a relay without a socket".into()));
                    }
                    // SAFETY: the plugin passed the descriptor's ownership
                    // (RelayV1::fd); nothing else closes it.
                    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(r.fd) };
                    Handled::Relay(
                        resp,
                        Ok(Relay {
                            fd,
                            pre: r.pre.into_vec(),
                            idle: std::time::Duration::from_millis(r.idle_ms),
                        }),
                    )
                }
            }
        }
    }
    pub fn name(&self) -> &str {
        &self.plugin.name
    }
    pub fn reopen(&self) {
        if let Some(l) = self.plugin.lifecycle {
            (l.reopen)(self.inst)
        }
    }
    pub fn flush(&self) {
        if let Some(l) = self.plugin.lifecycle {
            (l.flush)(self.inst)
        }
    }
    pub fn shutdown(&self) {
        if let Some(l) = self.plugin.lifecycle {
            (l.shutdown)(self.inst)
        }
    }
    /// Log phase.
    pub fn log(&self, entry: &tamada_sdk::abi::LogEntryV1<'_>) {
        if let Some(l) = self.plugin.lifecycle {
            call::named(self.tag, || (l.log)(self.inst, entry))
        }
    }
    /// Record phase.
    pub fn record(&self, rec: &tamada_sdk::abi::RecordV1<'_>) {
        if let Some(l) = self.plugin.lifecycle {
            call::named(self.tag, || (l.record)(self.inst, rec))
        }
    }
}

impl Drop for PluginInstance {
    /// An instance replaced by a reload is flushed and destroyed; both may
    /// block (a log file is written), so not on an event loop, where the
    /// last request using it may end.
    fn drop(&mut self) {
        let (plugin, inst) = (self.plugin.clone(), self.inst);
        let end = move || {
            if let Some(l) = plugin.lifecycle {
                (l.flush)(inst);
            }
            (plugin.table.destroy)(inst);
        };
        off_loop(end);
    }
}
