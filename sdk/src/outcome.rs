//! What a handler decided ([`Outcome`]), and the text of a caught panic:
//! shared by the plugin shims, the request and the response.

use std::any::Any;

/// What [`Handler::handle`](crate::Handler::handle) decided; see [`guide::phases`](crate::guide::phases).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The response in the builder is the answer. Client mistakes are
    /// answered this way too, with a 4xx status.
    Done,
    /// Not mine: the builder is discarded and the core tries the next
    /// route (same prefix, then shorter ones); none left -> 404. Decline
    /// before reading the body.
    Decline,
    /// Serve this local path (`/x?q` allowed) instead, internally, as GET
    /// without a body (a CGI `Location: /local`). The path is normalised
    /// and routed from the start; the new request's
    /// [`Request::redirects`](crate::Request::redirects) counts the hops (more than 10 -> 500).
    Redirect(String),
    /// Failed on the server's side: the core answers 500 and logs
    /// ``plugin `NAME` failed on METHOD TARGET: <text>`` in the vhost's
    /// error log. The text never reaches the client.
    Error(String),
}

std::thread_local! {
    /// Where the last panic on this thread happened (`file:line`).
    static PANIC_AT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Remembers where a panic happened (the panic hook of the macro's `init`).
pub(crate) fn set_panic_at(at: String) {
    PANIC_AT.with(|p| *p.borrow_mut() = Some(at));
}

/// The text of a caught panic, with where it happened when the panic hook
/// of the macro's `init` saw it (`index out of bounds ... at src/lib.rs:12`).
pub(crate) fn panic_message(p: &Box<dyn Any + Send>) -> String {
    let msg = if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_owned()
    };
    match PANIC_AT.with(|a| a.borrow_mut().take()) {
        Some(at) if !at.is_empty() => format!("{msg} (at {at})"),
        _ => msg,
    }
}
