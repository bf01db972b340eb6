//! SDK 1.2 (unfrozen until "SDK 1.2 released"): access rules, the phase
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

use crate::abi::{HostAccessV1, UserVisitV1};
use crate::request::Request;
use crate::response::ResponseBuilder;
use std::cell::RefCell;
use std::ffi::c_void;
use std::sync::OnceLock;

/// An access rule's plugin: one instance per rule that names it.
pub trait Access: Send + Sync + 'static {
    /// Checks a request before routing. The response is sent only with
    /// [`Verdict::Answer`].
    fn check(&self, req: &Request, res: &mut ResponseBuilder) -> Verdict;
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
}

/// A user an access rule established.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    /// The user name.
    pub name: String,
    /// How it was established (`Basic`).
    pub auth_type: String,
}

/// Set when the server gives its access services.
pub(crate) static HOST_ACCESS: OnceLock<&'static HostAccessV1> = OnceLock::new();

thread_local! {
    /// [`with_test_user`]'s user.
    static TEST: RefCell<Option<User>> = const { RefCell::new(None) };
}

/// Whether the server runs access rules and gives their user (SDK 1.2
/// and later).
pub fn available() -> bool {
    HOST_ACCESS.get().is_some()
}

/// Runs `f` with [`Request::user`] answering `user` on this thread, for a
/// plugin's unit tests.
pub fn with_test_user<R>(user: User, f: impl FnOnce() -> R) -> R {
    struct Reset(Option<User>);
    impl Drop for Reset {
        fn drop(&mut self) {
            TEST.with(|t| *t.borrow_mut() = self.0.take());
        }
    }
    let _reset = Reset(TEST.with(|t| t.borrow_mut().replace(user)));
    f()
}

/// The user of the request this thread handles or logs.
pub(crate) fn current() -> Option<User> {
    if let Some(u) = TEST.with(|t| t.borrow().clone()) {
        return Some(u);
    }
    let host = HOST_ACCESS.get()?;
    let mut out: Option<User> = None;
    extern "C" fn visit(
        ctx: *mut c_void,
        name: abi_stable::std_types::RStr<'_>,
        auth_type: abi_stable::std_types::RStr<'_>,
    ) {
        // SAFETY: `ctx` is the `&mut Option<User>` given to the call
        // below, alive and not otherwise borrowed while it runs.
        let out = unsafe { &mut *(ctx as *mut Option<User>) };
        *out = Some(User {
            name: name.as_str().to_owned(),
            auth_type: auth_type.as_str().to_owned(),
        });
    }
    (host.user)(
        UserVisitV1 { func: visit },
        &mut out as *mut Option<User> as *mut c_void,
    );
    out
}
