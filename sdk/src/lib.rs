//! # tamada-sdk: write request handlers for the tamada web server
//!
//! A plugin is a `cdylib` crate that depends on this crate only. It
//! implements [`Handler`] and exports itself with [`export_plugin!`]; the
//! server loads every `lib*.so` in its plugin folder at start-up and routes
//! requests to it by the `handler:` name in a vhost's `conf.d/*.yaml`.
//!
//! ```
//! use tamada_sdk::prelude::*;
//!
//! struct Hello { greeting: String }
//!
//! impl Handler for Hello {
//!     fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
//!         res.status(200).header("content-type", "text/plain")
//!            .body(format!("{} {}\n", self.greeting, req.path()));
//!         Outcome::Done
//!     }
//! }
//!
//! tamada_sdk::export_plugin!(name: "hello", new: |options: &Options| {
//!     Ok(Hello { greeting: options.get("greeting").unwrap_or_else(|| "hello".into()) })
//! });
//! # fn main() {}
//! ```
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib", "rlib"]
//! ```
//!
//! ## Phases
//! - [`Handler::handle`]: the content phase. Answer ([`Outcome::Done`]),
//!   pass ([`Outcome::Decline`]: the next route with the same prefix, then
//!   shorter prefixes, get the request), redirect internally
//!   ([`Outcome::Redirect`]), or fail ([`Outcome::Error`]: 500, logged).
//! - [`Handler::log`]: after the response is complete, for loggers.
//! - [`Handler::record`]: log records the host routes to a vhost's loggers.
//! - [`Handler::reopen`], [`Handler::flush`], [`Handler::shutdown`]: lifecycle.
//!
//! ## Rules
//! - Panics are caught by the SDK and turned into a 500 (the server keeps
//!   serving), but only if they unwind: never build a plugin with
//!   `panic = "abort"`.
//! - Use the `log` crate for diagnostics; the SDK forwards records to the
//!   server, which routes them to the vhost's error log. Never install a
//!   global logger (`fern::Dispatch::apply`) or a signal handler.
//! - Handlers are shared between worker threads (`Send + Sync`).
//!
//! ## Compatibility
//! The plugin records the SDK major.minor it was built with. The server
//! refuses a plugin of another major and loads one of its own major; its
//! tables are checked with abi_stable's layout checker at load. Until 1.0
//! (major 0) the tables may still change.

pub mod abi;
pub mod plugin;
pub mod request;
pub mod response;
#[cfg(feature = "testing")]
pub mod testing;

pub use plugin::{Handler, LogEntry, Options, Outcome, Record, Role, record_for};
pub use request::{BodyReader, Request, Vhost};
pub use response::{Body, BodyStream, FileId, ReadStream, ResponseBuilder, Segment, Segments};

/// `use tamada_sdk::prelude::*;` brings what a handler needs.
pub mod prelude {
    pub use crate::plugin::{Handler, LogEntry, Options, Outcome, Record, Role};
    pub use crate::request::{Request, Vhost};
    pub use crate::response::{Body, BodyStream, ReadStream, ResponseBuilder, Segments};
}
