//! The HTTP client under instant-acme: blocking ureq calls on the ACME
//! thread. instant-acme's API is async, but every future it returns here
//! waits only on this client, whose futures are ready when made: one poll
//! finishes them ([`block_on`]), so no async runtime is needed. (Its
//! `poll_ready`/`poll_certificate` sleep on tokio's timer: the manager
//! polls with `refresh` and `std::thread::sleep` instead.)

use bytes::Bytes;
use http_crate::Request;
use instant_acme::{BodyWrapper, BytesResponse, Error, HttpClient};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// The most bytes read of a CA's answer (a certificate chain is a few
/// KiB).
const MAX_BODY: u64 = 1 << 20;

/// ureq with aws-lc-rs, trusting the public roots (Mozilla's, built in)
/// and `ca_root` if given.
pub struct Ureq(ureq::Agent);

impl Ureq {
    pub fn new(ca_root: Option<&Path>) -> Result<Ureq, String> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
        let mut roots: Vec<Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()))
            .collect();
        if let Some(p) = ca_root {
            for c in
                CertificateDer::pem_file_iter(p).map_err(|e| format!("{}: {e}", p.display()))?
            {
                let c = c.map_err(|e| format!("{}: {e}", p.display()))?;
                roots.push(Certificate::from_der(c.as_ref()).to_owned());
            }
        }
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(RootCerts::Specific(Arc::new(roots)))
            .unversioned_rustls_crypto_provider(crate::config::tls::provider())
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .user_agent(concat!("tamada/", env!("CARGO_PKG_VERSION")))
            .max_redirects(0)
            .build()
            .into();
        Ok(Ureq(agent))
    }

    fn run(&self, req: Request<BodyWrapper<Bytes>>) -> Result<BytesResponse, Error> {
        let (parts, body) = req.into_parts();
        let body = block_on(collect(body));
        let rsp = if body.is_empty() {
            self.0.run(Request::from_parts(parts, ()))
        } else {
            self.0.run(Request::from_parts(parts, body.to_vec()))
        }
        .map_err(|e| Error::Other(Box::new(e)))?;
        let (parts, mut body) = rsp.into_parts();
        let data = body
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| Error::Other(Box::new(e)))?;
        Ok(BytesResponse {
            parts,
            body: Box::new(Bytes::from(data)),
        })
    }
}

/// The bytes of a request body (instant-acme gives them whole).
pub(crate) async fn collect(mut body: BodyWrapper<Bytes>) -> Bytes {
    use http_body::Body;
    let mut out = Vec::new();
    while let Some(Ok(f)) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(d) = f.into_data() {
            out.extend_from_slice(&d);
        }
    }
    Bytes::from(out)
}

impl HttpClient for Ureq {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, Error>> + Send>> {
        let r = self.run(req);
        Box::pin(std::future::ready(r))
    }
}

/// Runs a future whose every wait is on [`Ureq`] (ready at once) to its
/// end on this thread.
pub fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        // Not reached with `Ureq`: nothing else is waited on.
        std::thread::sleep(Duration::from_millis(10));
    }
}
