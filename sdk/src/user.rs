//! The user an access rule established, as handlers and loggers read it
//! ([`Request::user`](crate::Request::user)); re-exported by
//! [`access`](crate::access).

use crate::abi::{HostAccessV1, UserVisitV1};
use std::cell::RefCell;
use std::ffi::c_void;
use std::sync::OnceLock;

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

/// Runs `f` with [`Request::user`](crate::Request::user) answering `user` on this thread, for a
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
