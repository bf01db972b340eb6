//! # tamada-sdk: write request handlers for the tamada web server
//!
//! A tamada plugin is a Rust `cdylib` that depends on this crate. It
//! implements [`Handler`] and exports itself with [`export_plugin!`]; the
//! server loads every `lib*.so` in its plugin folder at start-up, and a
//! vhost's `conf.d/*.yaml` sends requests to it by the name it exports
//! (`handler: hello`). You write safe Rust: the SDK owns every `unsafe`
//! line, every `extern "C"` function and the binary interface
//! ([`abi`]) between the server and your `.so`.
//!
//! This page is the quick start. The [`guide`] explains the rest, one
//! chapter per topic:
//!
//! | chapter | what it answers |
//! |---|---|
//! | [`guide::phases`] | when each hook runs, on which thread, and what its return value means |
//! | [`guide::requests`] | reading the request, its headers and its body |
//! | [`guide::responses`] | the body forms (bytes, files, segments, streams) and the headers the server owns |
//! | [`guide::options`] | a route's `options:` with serde, and how `tamada -t` reports mistakes |
//! | [`guide::errors`] | failing, panicking, and why `panic = "abort"` is forbidden |
//! | [`guide::logging`] | the `log` crate inside a plugin, and where records end up |
//! | [`guide::threads`] | one instance per route, shared by every thread: `Send + Sync` |
//! | [`guide::placement`] | SDK 1.1: running inline on the event loop, what inline code may do, `defer`, talking to a backend with `wait` |
//! | [`guide::filters`] | SDK 1.2: response filters: editing heads, transforming bodies, caching |
//! | [`guide::testing`] | unit tests without a server: [`testing`] (enable the `testing` feature in `[dev-dependencies]`) |
//! | [`guide::compatibility`] | which server loads which plugin, the semver policy, installing safely |
//!
//! A complete plugin to copy, with its tests and a README of the steps
//! below, is the template in the tamada repository:
//! `examples/hello-plugin/`.
//!
//! # Quick start
//!
//! ## 1. A crate
//!
//! ```toml
//! [package]
//! name = "hello-plugin"
//! version = "0.1.0"        # `tamada --plugins` shows it
//! edition = "2024"
//!
//! [lib]
//! # cdylib: the .so the server loads; rlib: so that `cargo test` can
//! # link your handler into unit tests.
//! crate-type = ["cdylib", "rlib"]
//!
//! [dependencies]
//! tamada-sdk = { path = "../tamada/sdk" }   # the SDK of the server you deploy to
//! serde = { version = "1", features = ["derive"] }
//! log = "0.4"
//!
//! [dev-dependencies]
//! tamada-sdk = { path = "../tamada/sdk", features = ["testing"] }
//!
//! # Never set `panic = "abort"` in any profile: a panic could then not be
//! # contained and would end the whole server (see guide::errors).
//! ```
//!
//! ## 2. The handler, `src/lib.rs`
//!
//! ```
//! use serde::Deserialize;
//! use tamada_sdk::prelude::*;
//!
//! /// The route's `options:`; a misspelt key is an error, not a silent default.
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields, default)]
//! struct Config {
//!     greeting: String,
//! }
//!
//! impl Default for Config {
//!     fn default() -> Self {
//!         Config { greeting: "hello".into() }
//!     }
//! }
//!
//! /// One instance per route, shared by every server thread.
//! struct Hello {
//!     greeting: String,
//! }
//!
//! impl Handler for Hello {
//!     fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
//!         res.status(200)
//!             .header("content-type", "text/plain; charset=utf-8")
//!             .body(format!("{} {}\n", self.greeting, req.path()));
//!         Outcome::Done
//!     }
//! }
//!
//! /// Runs once per route that names `hello`: at start-up, on `tamada -t`
//! /// and on every reload.
//! fn new(options: &Options) -> Result<Hello, String> {
//!     let config: Config = options.parse()?;
//!     log::info!("greeting with {:?} on {}", config.greeting, options.route());
//!     Ok(Hello { greeting: config.greeting })
//! }
//!
//! // The name routes use in `handler:`, and the constructor.
//! tamada_sdk::export_plugin!(name: "hello", new: new);
//! # fn main() {}
//! ```
//!
//! ## 3. Build
//!
//! ```sh
//! cargo build --release
//! ```
//!
//! The plugin is `target/release/libhello_plugin.so`: `lib`, the package
//! name with `-` turned into `_`, and `.so`.
//!
//! ## 4. Install: copy under a temporary name, then rename
//!
//! ```sh
//! DIR=/srv/tamada/plugins     # --plugin-dir, or plugin_dir: in server.yaml,
//!                             # else the folder of the tamada binary
//! cp target/release/libhello_plugin.so "$DIR/.libhello_plugin.so.tmp"
//! mv "$DIR/.libhello_plugin.so.tmp" "$DIR/libhello_plugin.so"
//! ```
//!
//! The server loads only files named `lib*.so`, so it never sees the
//! half-copied `.libhello_plugin.so.tmp`; `mv` within one folder is an
//! atomic rename. **Never `cp` over a `.so` in the plugin folder** (GNU
//! `install` is no better): a library rewritten in place crashes the
//! process that has it mapped, and a reload in the middle of the copy
//! would read a half-written file. See [`guide::compatibility`].
//!
//! ## 5. Route requests to it
//!
//! In a vhost's file in `conf.d/` (routes are matched by the longest path
//! prefix; a vhost that lists `routes:` gets no default routes, so name
//! the static files too):
//!
//! ```yaml
//! routes:
//!   - path: /hello/
//!     handler: hello          # the name given to export_plugin!
//!     options: { greeting: hi }
//!   - path: /
//!     handler: static
//! ```
//!
//! ## 6. Check, then reload
//!
//! ```sh
//! tamada -t -c conf.d          # loads the plugins, runs every constructor; exit 0 or 1
//! tamada --plugins             # hello  0.1.0  SDK 1.2  /srv/tamada/plugins/libhello_plugin.so
//! kill -HUP "$(pidof tamada)"  # load new plugins, re-read conf.d; no connection is dropped
//! curl http://127.0.0.1:8080/hello/world    # hi /hello/world
//! ```
//!
//! `tamada -t` does everything start-up does except serving, so a wrong
//! option is reported there with the file, line and route (see
//! [`guide::options`]). Give `-t` and `--plugins` the same `--plugin-dir`
//! as the running server when it is not the default.
//!
//! On SIGHUP the server looks at the plugin folder again (new files are
//! loaded, files replaced by `mv` are loaded anew, unchanged ones are
//! kept), re-reads `conf.d`, builds every route's instance from its
//! `options:`, and swaps the new configuration in; requests in flight
//! finish on the old one. If anything fails (a plugin a route names is
//! missing or refused, options are wrong) the server logs why and keeps
//! running the old configuration.
//!
//! # The rules in one place
//!
//! - Answer with [`Outcome::Done`], pass the request on with
//!   [`Outcome::Decline`], fail with [`Outcome::Error`] (500, logged):
//!   [`guide::phases`].
//! - Panics are caught and become a 500 naming the plugin, **only if they
//!   unwind**: building a plugin with `panic = "abort"` is forbidden
//!   ([`guide::errors`]).
//! - Log with the `log` crate; never install a global logger
//!   (`fern::Dispatch::apply()`) or a signal handler: the server owns both
//!   ([`guide::logging`]).
//! - A handler is shared by every server thread (`Send + Sync`); keep
//!   per-request state on the stack ([`guide::threads`]).
//! - A plugin runs on servers of its SDK major only; install by copy and
//!   rename ([`guide::compatibility`]).

pub mod abi;
pub mod access;
pub mod filter;
pub mod guide;
pub mod host;
pub mod offload;
mod outcome;
pub mod plugin;
pub mod request;
pub mod response;
// Needs the optional schemars: documented when the feature is on (docs.rs
// turns every feature on).
#[cfg(feature = "schema")]
pub mod schema;
// Documented whatever the features (`cargo doc` and docs.rs show it);
// usable with the `testing` feature.
#[cfg(any(feature = "testing", doc))]
pub mod testing;
pub mod tls;
pub mod units;
mod user;

pub use plugin::{Handler, LogEntry, Options, Outcome, Placement, Record, Role, record_for};
pub use request::{BodyReader, Interest, Request, Vhost, Woke};
pub use response::{
    Body, BodyStream, FileId, ReadStream, Relay, ResponseBuilder, Segment, Segments,
};

/// `use tamada_sdk::prelude::*;` brings what a handler needs.
pub mod prelude {
    pub use crate::plugin::{Handler, LogEntry, Options, Outcome, Placement, Record, Role};
    pub use crate::request::{Request, Vhost};
    pub use crate::response::{Body, BodyStream, ReadStream, ResponseBuilder, Segments};
}
