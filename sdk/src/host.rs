//! SDK 1.1: what a plugin can ask the server it runs in. On a server
//! older than 1.1 (or in unit tests) there is nothing to ask: the
//! functions then say so (`None`, `false`, no abilities).
//!
//! ```
//! use tamada_sdk::host::{self, Ability};
//!
//! // A plugin built for a newer SDK can run, reduced, on an older server.
//! if !host::has(Ability::Notes) {
//!     // keep the details in the error log instead
//! }
//! ```

use crate::abi::{
    ABILITY_DEFER, ABILITY_INLINE, ABILITY_NOTES, ABILITY_OPTION_PATHS, ABILITY_RELAY,
    ABILITY_ROLES, ABILITY_WAIT, HostExtV1,
};
use std::sync::OnceLock;

/// Set when the server gives its SDK 1.1 table.
pub(crate) static HOST_EXT: OnceLock<&'static HostExtV1> = OnceLock::new();

/// An ability a server may offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ability {
    /// Handlers placed inline run on the event loop.
    Inline,
    /// [`Request::defer`](crate::Request::defer).
    Defer,
    /// [`Request::note`](crate::Request::note), seen by the loggers.
    Notes,
    /// Option errors reported at the conf.d file's own line.
    OptionPaths,
    /// `roles:` of [`export_plugin!`](crate::export_plugin) are checked.
    Roles,
    /// [`ResponseBuilder::relay`](crate::ResponseBuilder::relay): after a
    /// 101, the core relays bytes between the client and a socket.
    Relay,
    /// [`Request::wait`](crate::Request::wait): an inline handler waits
    /// for a descriptor on the event loop and is called again.
    Wait,
}

/// The server's name and version (`tamada/1.2.0`), if it says.
pub fn server() -> Option<&'static str> {
    HOST_EXT.get().map(|h| h.server.as_str())
}

/// The SDK version (major, minor) the server speaks; `None` before 1.1.
pub fn sdk_version() -> Option<(u16, u16)> {
    HOST_EXT.get().map(|h| (h.sdk_major, h.sdk_minor))
}

/// Whether the server offers `ability`.
pub fn has(ability: Ability) -> bool {
    let bit = match ability {
        Ability::Inline => ABILITY_INLINE,
        Ability::Defer => ABILITY_DEFER,
        Ability::Notes => ABILITY_NOTES,
        Ability::OptionPaths => ABILITY_OPTION_PATHS,
        Ability::Roles => ABILITY_ROLES,
        Ability::Relay => ABILITY_RELAY,
        Ability::Wait => ABILITY_WAIT,
    };
    HOST_EXT.get().is_some_and(|h| h.abilities & bit != 0)
}

/// Whether the server is stopping (SIGTERM): finish what runs, start
/// nothing long.
pub fn draining() -> bool {
    HOST_EXT.get().is_some_and(|h| (h.draining)())
}

/// Whether this is `tamada -t` (the options are checked and the instances
/// thrown away): create no files, start nothing.
pub fn dry_run() -> bool {
    HOST_EXT.get().is_some_and(|h| (h.dry_run)())
}

/// The user and group (ids) the server will serve as once it drops root
/// (`user:` in server.yaml): give them the files you create before that,
/// at start-up, so that the server can still open them afterwards.
pub fn service_user() -> Option<(u32, u32)> {
    HOST_EXT
        .get()
        .and_then(|h| (h.service_user)().into_option())
        .map(|u| (u.uid, u.gid))
}

/// Whether the server will serve as root (started as root, no `user:` in
/// server.yaml). A plugin that runs programs should refuse to run them as
/// root unless its options say so, as the `cgi` plugin does.
pub fn serves_as_root() -> bool {
    HOST_EXT.get().is_some_and(|h| (h.serves_as_root)())
}
