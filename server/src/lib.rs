//! The tamada core as a library. The binary (`main.rs`) is start-up
//! only; the fuzz targets (`fuzz/`) reach the parsers of untrusted bytes
//! through it.
//!
//! Start-up: flags -> conf.d (`config`) -> plugins (`plugins`) -> routes
//! with plugin instances (`runtime`) -> listening sockets, one per loop
//! (`listen`) -> the blocking pool (`pool`) and one event loop per core
//! (`evloop`), each owning its connections (`conn`: the state machine a
//! request's life reads in); `route` offers requests to the handlers,
//! `framing` and `writer` send the answers, `logphase` logs them.
//! Signals are turned into messages to the loops by `control`.

pub mod body;
pub mod config;
pub mod conn;
pub mod control;
pub mod evloop;
pub mod framing;
pub mod health;
pub mod host;
pub mod http;
pub mod io;
pub mod listen;
pub mod logphase;
pub mod plugins;
pub mod pool;
pub mod privileges;
pub mod ratelog;
pub mod realip;
pub mod route;
pub mod runtime;
pub mod schema;
pub mod stream;
pub mod upgrade;
pub mod view;
pub mod writer;
pub mod yamlpos;

use arc_swap::ArcSwap;
use runtime::Runtime;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

/// What the control, flusher and pool threads share.
pub struct Shared {
    /// The running configuration; replaced whole on SIGHUP (each loop
    /// holds its own copy of it: `Runtime::fork`).
    pub runtime: ArcSwap<Runtime>,
    /// SIGTERM was received.
    pub draining: AtomicBool,
}

static POOL: OnceLock<Arc<pool::Pool>> = OnceLock::new();

/// Starts the blocking pool with `workers` threads (once, at start-up).
pub fn start_pool(workers: usize) {
    let _ = POOL.set(pool::Pool::start(workers));
}

/// The blocking pool (started before anything can use it).
pub fn pool() -> &'static Arc<pool::Pool> {
    POOL.get_or_init(|| pool::Pool::start(1))
}

/// A time in microseconds since the Unix epoch.
pub fn unix_us_at(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Tells the service manager (systemd, `Type=notify`) how the server
/// stands; nothing when it did not start us (no `NOTIFY_SOCKET`).
pub fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        log::warn!("cannot notify the service manager: {e}");
    }
}
