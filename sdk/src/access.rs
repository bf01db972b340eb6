//! SDK 1.2 (frozen: the `frozen-v1_2` fixture guards it): access rules, the phase
//! that runs before routing.
//!
//! A vhost lists rules, each a path prefix and an access plugin:
//!
//! ```yaml
//! access:
//!   - path: /admin/
//!     handler: auth_basic
//!     options: { file: admin.htpasswd, realm: Admin }
//! ```
//!
//! Every rule whose prefix matches the request's normalised path runs, in
//! file order, before a route is picked; whichever route then serves, the
//! request has passed them. A rule [passes](Verdict::Pass) (perhaps naming
//! the [user](Verdict::User) it authenticated), [answers](Verdict::Answer)
//! with the response it built (a 301, a 401, a 403, a 429), or
//! [rewrites](Verdict::Rewrite) the path, after which the rules and the
//! routing run again for the new path.
//!
//! ```
//! use tamada_sdk::prelude::*;
//! use tamada_sdk::access::{Access, Verdict};
//!
//! /// Answers 403 to requests without a `X-Api-Key` header.
//! struct NeedsKey;
//!
//! impl Access for NeedsKey {
//!     fn check(&self, req: &Request, res: &mut ResponseBuilder) -> Verdict {
//!         if req.header("x-api-key").is_some() {
//!             return Verdict::Pass;
//!         }
//!         res.status(403).body("an API key is required\n");
//!         Verdict::Answer
//!     }
//! }
//!
//! tamada_sdk::export_plugin!(name: "needs_key", access: |_: &Options| Ok(NeedsKey));
//! # fn main() {
//! # #[cfg(feature = "testing")]
//! # {
//! # use tamada_sdk::testing::TestRequest;
//! # let v = TestRequest::get("/").check(&NeedsKey);
//! # assert_eq!(v.response.get_status(), 403);
//! # assert!(matches!(TestRequest::get("/").header("x-api-key", "1").check(&NeedsKey).verdict, Verdict::Pass));
//! # }
//! # }
//! ```
//!
//! Checks run on the event loop (they must not block). One that must (a
//! password hash not verified yet) calls [`Request::defer`] and returns
//! anything: it is called again on the pool. A plugin may be both a
//! handler and an access plugin (`new:` and `access:` together).

use crate::request::Request;
use crate::response::ResponseBuilder;

pub use crate::user::{User, available, with_test_user};

/// An access rule's plugin: one instance per rule that names it.
pub trait Access: Send + Sync + 'static {
    /// Checks a request before routing. The response is sent only with
    /// [`Verdict::Answer`].
    fn check(&self, req: &Request, res: &mut ResponseBuilder) -> Verdict;

    /// Called, when [`finishes`](Self::finishes) says so, once for every
    /// `check` that passed ([`Verdict::Pass`] or [`Verdict::User`]) when
    /// its exchange ends: the response was sent
    /// and logged, or the client left. What `check` counted for the
    /// request (requests in flight per client) is released here. Runs on
    /// any thread; must not block. The default does nothing.
    fn finish(&self, _req: &Request) {}

    /// Whether [`finish`](Self::finish) must be called: true for a rule
    /// that counts something per request. Asked once, after the
    /// constructor. The default is false: no call.
    fn finishes(&self) -> bool {
        false
    }
}

/// What a check decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The next rule runs, then routing.
    Pass,
    /// As `Pass`, and the request is this user's from now on: loggers see
    /// it (the combined log's user), CGI and FastCGI get `REMOTE_USER`
    /// and `AUTH_TYPE`, handlers [`Request::user`].
    User {
        /// The user name.
        name: String,
        /// How it was established (`Basic`).
        auth_type: String,
    },
    /// Send the response built in `res`; no route is asked.
    Answer,
    /// Serve this local path (and `?query`) instead; the rules and the
    /// routing run again for it. Rewrites and internal redirects together
    /// stop at 10 (then 500, logged).
    Rewrite(String),
    /// The check failed: the core answers 500 and logs this.
    Error(String),
    /// Call this check again after this long ([`Request::woke`] then says
    /// [`Woke::TimedOut`](crate::Woke::TimedOut)); the request waits on a
    /// timer of its event loop, holding no thread (millisecond
    /// resolution). For a rate limit's delay, or a slow-down after failed
    /// logins.
    Delay(std::time::Duration),
}
