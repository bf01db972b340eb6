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

pub mod acme;
pub mod clock;
pub mod config;
pub mod exchange;
pub mod http;
pub mod net;
pub mod plugins;
pub mod pool;
pub mod proto;
pub mod ratelog;
pub mod transport;

use arc_swap::ArcSwap;
use config::runtime::Runtime;
use std::sync::atomic::AtomicBool;

/// What the control, flusher and pool threads share.
pub struct Shared {
    /// The running configuration; replaced whole on SIGHUP (each loop
    /// holds its own copy of it: `Runtime::fork`).
    pub runtime: ArcSwap<Runtime>,
    /// SIGTERM was received.
    pub draining: AtomicBool,
}

/// Tells the service manager (systemd, `Type=notify`) how the server
/// stands; nothing when it did not start us (no `NOTIFY_SOCKET`).
pub fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        log::warn!("cannot notify the service manager: {e}");
    }
}
