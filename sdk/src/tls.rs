//! SDK 1.2 (frozen: the `frozen-v1_2` fixture guards it): what a request's TLS
//! connection negotiated, for handlers and loggers.
//!
//! ```
//! use tamada_sdk::prelude::*;
//!
//! /// Names the client by its certificate (mutual TLS).
//! struct Who;
//! impl Handler for Who {
//!     fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
//!         let who = match req.tls().and_then(|t| t.client_cert) {
//!             Some(c) => format!("certificate {}", c.subject),
//!             None => "anonymous".into(),
//!         };
//!         res.body(who);
//!         Outcome::Done
//!     }
//! }
//! # #[cfg(feature = "testing")]
//! # {
//! use tamada_sdk::testing::TestRequest;
//! use tamada_sdk::tls::{ClientCert, TlsInfo, with_test_tls};
//!
//! assert_eq!(TestRequest::get("/").run(&Who).body_bytes(), b"anonymous");
//! let info = TlsInfo {
//!     version: "TLSv1.3".into(),
//!     client_cert: Some(ClientCert { subject: "CN=alice".into(), ..Default::default() }),
//!     ..Default::default()
//! };
//! let out = with_test_tls(info, || TestRequest::get("/").run(&Who));
//! assert_eq!(out.body_bytes(), b"certificate CN=alice");
//! # }
//! ```
//!
//! [`Request::tls`](crate::Request::tls) is `None` for a plain-HTTP
//! request, for one that a TLS-terminating proxy forwarded (its
//! [`scheme`](crate::Request::scheme) still says `https`), and on a
//! server older than SDK 1.2.

use crate::abi::{HostTlsV1, TlsInfoV1, TlsVisitV1};
use abi_stable::std_types::ROption;
use std::cell::RefCell;
use std::ffi::c_void;
use std::sync::OnceLock;

/// Set when the server gives its TLS table.
pub(crate) static HOST_TLS: OnceLock<&'static HostTlsV1> = OnceLock::new();

/// What a request's TLS connection negotiated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// The cipher suite's IANA name (`TLS_AES_128_GCM_SHA256`).
    pub cipher: String,
    /// The server name the client asked for (SNI), lowercase.
    pub sni: Option<String>,
    /// The protocol ALPN chose (`http/1.1`).
    pub alpn: Option<String>,
    /// The session was resumed (a ticket or the session cache).
    pub resumed: bool,
    /// The client's certificate (mutual TLS), when it sent one.
    pub client_cert: Option<ClientCert>,
}

/// A client certificate, verified against the vhost's `client_ca`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject's distinguished name (`CN=alice, O=Example`).
    pub subject: String,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// The serial number, hexadecimal, upper case.
    pub serial: String,
    /// `SUCCESS` (as Apache's `SSL_CLIENT_VERIFY`).
    pub verify: String,
    /// The certificate in PEM.
    pub pem: String,
}

/// Whether the server gives the TLS view (SDK 1.2 and later). On an older
/// server [`Request::tls`](crate::Request::tls) is always `None`, even
/// for a request that came over HTTPS ([`Request::scheme`](crate::Request::scheme)
/// still says so).
pub fn available() -> bool {
    HOST_TLS.get().is_some()
}

thread_local! {
    /// [`with_test_tls`]'s view.
    static TEST: RefCell<Option<TlsInfo>> = const { RefCell::new(None) };
}

/// Runs `f` with [`Request::tls`](crate::Request::tls) answering `info`
/// on this thread: for a plugin's unit tests (with
/// [`testing`](crate::testing)), where no server gives the view.
pub fn with_test_tls<R>(info: TlsInfo, f: impl FnOnce() -> R) -> R {
    struct Reset(Option<TlsInfo>);
    impl Drop for Reset {
        fn drop(&mut self) {
            TEST.with(|t| *t.borrow_mut() = self.0.take());
        }
    }
    let _reset = Reset(TEST.with(|t| t.borrow_mut().replace(info)));
    f()
}

/// The TLS view of the request this thread handles or logs.
pub(crate) fn current() -> Option<TlsInfo> {
    if let Some(t) = TEST.with(|t| t.borrow().clone()) {
        return Some(t);
    }
    let host = HOST_TLS.get()?;
    let mut out: Option<TlsInfo> = None;
    extern "C" fn visit(ctx: *mut c_void, info: &TlsInfoV1<'_>) {
        // SAFETY: `ctx` is the `&mut Option<TlsInfo>` given to the call
        // below, alive and not otherwise borrowed while it runs.
        let out = unsafe { &mut *(ctx as *mut Option<TlsInfo>) };
        let opt = |o: &ROption<abi_stable::std_types::RStr<'_>>| match o {
            ROption::RSome(s) => Some(s.as_str().to_owned()),
            ROption::RNone => None,
        };
        *out = Some(TlsInfo {
            version: info.version.as_str().to_owned(),
            cipher: info.cipher.as_str().to_owned(),
            sni: opt(&info.sni),
            alpn: opt(&info.alpn),
            resumed: info.resumed,
            client_cert: match &info.client_cert {
                ROption::RSome(c) => Some(ClientCert {
                    subject: c.subject.as_str().to_owned(),
                    issuer: c.issuer.as_str().to_owned(),
                    serial: c.serial.as_str().to_owned(),
                    verify: c.verify.as_str().to_owned(),
                    pem: c.pem.as_str().to_owned(),
                }),
                ROption::RNone => None,
            },
        });
    }
    let visitor = TlsVisitV1 { func: visit };
    (host.tls)(visitor, &mut out as *mut Option<TlsInfo> as *mut c_void);
    out
}
