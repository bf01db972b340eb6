//! The control thread: the host owns the signals (plugins never install
//! handlers) and turns them into messages to every loop.
//!
//! - SIGHUP: conf.d is read again and checked, the plugin folder
//!   rescanned, every instance built; new addresses are bound (one socket
//!   per loop); then each loop gets its own copy of the new configuration
//!   with its new listeners, and drops the listeners no longer wanted.
//!   Anything wrong keeps the running configuration, and the log says why.
//! - SIGUSR1: plugins reopen their log files (on a thread of its own).
//! - SIGTERM/SIGINT: after the lame-duck delay (`health.rs`), every loop
//!   stops accepting and finishes what runs, within `shutdown_timeout`.

use crate::Shared;
use crate::config::runtime::Runtime;
use crate::net::cx::{LoopHandle, Msg, Reload};
use crate::net::listen;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Builds a new runtime on SIGHUP (conf.d re-read and checked).
pub type Reloader = Box<dyn FnMut() -> Result<Runtime, String> + Send>;

pub struct Control {
    pub signals: Signals,
    pub loops: Vec<LoopHandle>,
    pub shared: Arc<Shared>,
    pub reload: Reloader,
    /// The addresses listened on.
    pub addrs: BTreeSet<SocketAddr>,
    /// One descriptor per address, for a binary upgrade to hand over.
    pub handover: std::collections::BTreeMap<SocketAddr, Vec<std::os::fd::OwnedFd>>,
    /// The binary and arguments this process was started with.
    pub started_as: Option<(std::path::PathBuf, Vec<std::ffi::OsString>)>,
    /// Each socket's default vhost, to say when a reload changes one.
    pub defaults: std::collections::BTreeMap<String, (String, bool)>,
}

impl Control {
    /// Registers the signals; do it before the loops start, so that a
    /// signal that comes early is not lost.
    pub fn signals() -> std::io::Result<Signals> {
        Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2])
    }

    /// Runs until SIGTERM/SIGINT has been passed on.
    pub fn run(mut self) {
        loop {
            let pending: Vec<i32> = self.signals.wait().collect();
            for sig in pending {
                match sig {
                    SIGTERM | SIGINT => {
                        log::info!(
                            "got {}: finishing requests in flight, then stopping",
                            if sig == SIGTERM { "SIGTERM" } else { "SIGINT" }
                        );
                        crate::notify(&[sd_notify::NotifyState::Stopping]);
                        let lame_duck = self.shared.runtime.load().settings.lame_duck();
                        if !lame_duck.is_zero() {
                            self.lame_duck(lame_duck);
                        }
                        self.shared.draining.store(true, Ordering::Relaxed);
                        let t = self.shared.runtime.load().settings.shutdown_timeout.0;
                        let deadline = Instant::now() + t;
                        for l in &self.loops {
                            l.send(Msg::Drain(deadline));
                        }
                        return;
                    }
                    SIGHUP => self.reload(),
                    // Once the new process serves, this one drains and ends.
                    SIGUSR2 if self.upgrade() => return,
                    SIGUSR1 => self.reopen(),
                    _ => {}
                }
            }
        }
    }

    fn reopen(&self) {
        log::info!("got SIGUSR1: reopening log files");
        let rt = self.shared.runtime.load_full();
        std::thread::spawn(move || {
            for i in rt.instances() {
                i.reopen();
            }
        });
    }

    /// The lame-duck delay after SIGTERM: the health route answers 503
    /// while everything else is served as before and the listeners stay
    /// open, so a load balancer's checks move traffic away before the
    /// drain. A second SIGTERM or SIGINT ends it at once.
    fn lame_duck(&mut self, d: std::time::Duration) {
        crate::exchange::health::enter_lame_duck();
        log::info!(
            "lame duck: the health route answers 503 for {:.1}s, requests are still served; \
             a second SIGTERM stops at once",
            d.as_secs_f64()
        );
        let until = Instant::now() + d;
        loop {
            let now = Instant::now();
            if now >= until {
                return;
            }
            std::thread::sleep((until - now).min(std::time::Duration::from_millis(20)));
            let pending: Vec<i32> = self.signals.pending().collect();
            for sig in pending {
                match sig {
                    SIGTERM | SIGINT => {
                        log::info!("got another stop signal: ending the lame duck");
                        return;
                    }
                    SIGUSR1 => self.reopen(),
                    SIGHUP | SIGUSR2 => log::warn!("stopping: signal {sig} ignored"),
                    _ => {}
                }
            }
        }
    }

    /// SIGUSR2: starts the new binary on the same sockets; once it is
    /// ready, this process drains (true) and ends. If it fails, this one
    /// goes on serving (false).
    fn upgrade(&mut self) -> bool {
        let Some((exe, args)) = self.started_as.clone() else {
            log::error!("binary upgrade: the binary's path is unknown; still serving");
            return false;
        };
        log::info!("got SIGUSR2: starting {} (binary upgrade)", exe.display());
        match crate::net::upgrade::start(&exe, &args, &self.handover) {
            Ok(child) => {
                log::info!(
                    "binary upgrade: new process {} serves; this one ({}) stops accepting and drains",
                    child.id(),
                    std::process::id()
                );
                self.shared.draining.store(true, Ordering::Relaxed);
                let t = self.shared.runtime.load().settings.shutdown_timeout.0;
                let deadline = Instant::now() + t;
                for l in &self.loops {
                    l.send(Msg::Drain(deadline));
                }
                true
            }
            Err(e) => {
                log::error!("binary upgrade failed: {e}; still serving");
                false
            }
        }
    }

    fn reload(&mut self) {
        log::info!("got SIGHUP: reloading configuration");
        // RELOADING=1 and READY=1 around it, whatever its outcome.
        crate::notify(&[
            sd_notify::NotifyState::Reloading,
            sd_notify::NotifyState::monotonic_usec_now()
                .unwrap_or(sd_notify::NotifyState::Status("reloading")),
        ]);
        self.reload_inner();
        crate::notify(&[sd_notify::NotifyState::Ready]);
    }

    fn reload_inner(&mut self) {
        let rt = match (self.reload)() {
            Ok(rt) => rt,
            Err(e) => {
                log::error!("reload failed; keeping the running configuration:\n{e}");
                return;
            }
        };
        rt.log_defaults(Some(&self.defaults));
        self.defaults = rt.defaults();
        let wanted: BTreeSet<SocketAddr> = rt.sites.keys().copied().collect();
        let new: Vec<SocketAddr> = wanted.difference(&self.addrs).copied().collect();
        let gone: Vec<SocketAddr> = self.addrs.difference(&wanted).copied().collect();
        let mut bound = match listen::bind_all(&new, self.loops.len()) {
            Ok(b) => b,
            Err(e) => {
                log::error!("reload failed; keeping the running configuration: {e}");
                return;
            }
        };
        for a in &new {
            log::info!("listening on {a}");
        }
        for a in &gone {
            log::info!("stopped listening on {a}");
        }
        // A vhost with a plain and an HTTPS port is in two sites: once.
        let n = rt
            .sites
            .values()
            .flat_map(|s| s.groups.values())
            .flat_map(|g| g.vhosts.iter())
            .map(Arc::as_ptr)
            .collect::<BTreeSet<_>>()
            .len();
        self.handover.extend(listen::handover(&bound));
        for a in &gone {
            self.handover.remove(a);
        }
        for l in &self.loops {
            let add = bound
                .iter_mut()
                .filter_map(|(a, socks)| socks.pop().map(|s| (*a, s)))
                .collect();
            l.send(Msg::Reload(Box::new(Reload {
                runtime: Arc::new(rt.fork()),
                add,
                remove: gone.clone(),
            })));
        }
        self.addrs = wanted;
        self.shared.runtime.store(Arc::new(rt));
        log::info!("reloaded configuration: {n} vhosts");
    }
}
