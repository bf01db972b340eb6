//! SDK 1.2: blocking work off the event loop, without the server's pool.
//!
//! A handler that must do something slow (a call to a backend without a
//! non-blocking client, a big file read, a password hash) hands it to
//! [`Request::offload`]: the work runs on a thread of its own, the request
//! waits on its event loop holding no thread of the server's, and the
//! handler is called again when the work is done, where
//! [`Request::offloaded`] gives the result. Unlike `Placement::Pool`, one
//! slow backend then cannot take the pool threads that other routes and
//! request bodies need (bound it with the route's `max_in_flight`).
//!
//! ```
//! use std::time::Duration;
//! use tamada_sdk::prelude::*;
//!
//! struct Slow;
//!
//! impl Handler for Slow {
//!     fn placement(&self) -> Placement {
//!         Placement::Inline
//!     }
//!     fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
//!         match req.offloaded::<String>() {
//!             Some(Ok(answer)) => {
//!                 res.body(answer);
//!                 Outcome::Done
//!             }
//!             Some(Err(_timed_out)) => {
//!                 res.status(504);
//!                 Outcome::Done
//!             }
//!             // The first call: the slow part goes elsewhere.
//!             None => req.offload(Duration::from_secs(5), || {
//!                 std::thread::sleep(Duration::from_millis(20)); // a slow backend
//!                 "done\n".to_string()
//!             }),
//!         }
//!     }
//! }
//! # #[cfg(feature = "testing")]
//! # {
//! # use tamada_sdk::testing::TestRequest;
//! # assert_eq!(TestRequest::get("/").run_waiting(&Slow).body_bytes(), b"done\n");
//! # assert_eq!(TestRequest::get("/").run(&Slow).body_bytes(), b"done\n");
//! # }
//! ```
//!
//! Where the handler cannot wait (it runs on the pool, or on a server
//! before 1.1), `offload` runs the work right there and the handler is
//! called again at once with its result: the same code works everywhere.

use crate::outcome::Outcome;
use crate::request::{Interest, Request, Woke};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The work did not finish within the timeout given to
/// [`Request::offload`] (it goes on; its result is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

/// What a waiting handler keeps while its work runs.
struct Pending<T> {
    wake: UnixStream,
    result: Arc<Mutex<Option<T>>>,
}

/// The result of work that ran where the handler could not wait.
struct Ready<T>(T);

impl Request<'_> {
    /// SDK 1.2: runs `work` on a thread of its own and calls this handler
    /// again when it is done (or after `timeout`), on its event loop;
    /// [`offloaded`](Self::offloaded) then gives the result. Return what
    /// this returns. See [`offload`](crate::offload).
    pub fn offload<T, F>(&self, timeout: Duration, work: F) -> Outcome
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        if !self.can_wait() {
            self.set_recall(Box::new(Ready(work())));
            return Outcome::Decline;
        }
        let (wake, mut done) = match UnixStream::pair() {
            Ok(p) => p,
            Err(_) => {
                self.set_recall(Box::new(Ready(work())));
                return Outcome::Decline;
            }
        };
        let result = Arc::new(Mutex::new(None));
        let slot = result.clone();
        let spawned = std::thread::Builder::new()
            .name("tamada-offload".into())
            .spawn(move || {
                let v = work();
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
                let _ = done.write_all(b"!");
            });
        if spawned.is_err() {
            return Outcome::Error("offload: cannot start a thread".into());
        }
        let fd = wake.as_raw_fd();
        self.wait(fd, Interest::Read, timeout, Pending { wake, result })
    }

    /// SDK 1.2: on the call after [`offload`](Self::offload), its work's
    /// result (`Err` when the timeout came first); `None` on a first call
    /// (once: it is moved out).
    pub fn offloaded<T: Send + 'static>(&self) -> Option<Result<T, TimedOut>> {
        if let Some(Ready(v)) = self.resume::<Ready<T>>() {
            return Some(Ok(v));
        }
        let p = self.resume::<Pending<T>>()?;
        let v = p.result.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(p.wake);
        match v {
            Some(v) if self.woke() != Woke::First => Some(Ok(v)),
            _ => Some(Err(TimedOut)),
        }
    }
}
