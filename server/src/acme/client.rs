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
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

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

/// The status and `Retry-After` of an answer of the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<SystemTime>,
}

impl Answer {
    /// A refusal that says the thing asked for is not there or never will
    /// be (a 4xx other than 429): not a passing trouble of the CA's.
    pub fn is_final_refusal(&self) -> bool {
        (400..500).contains(&self.status) && self.status != 429
    }
}

/// The CA's last answer, as [`Watched`] saw it.
pub type LastAnswer = Arc<Mutex<Option<Answer>>>;

/// The CA's last answer, if any.
pub fn last(cell: &LastAnswer) -> Option<Answer> {
    cell.lock().ok().and_then(|a| *a)
}

/// The time a poll waits at least, after `hint` (the [`LastAnswer`]
/// of the poll; RFC 8555 section 7.5.1): `delay`, or what the CA asked
/// with `Retry-After`, up to a minute.
pub fn poll_wait(hint: &LastAnswer, delay: Duration) -> Duration {
    let asked = last(hint)
        .and_then(|a| a.retry_after)
        .and_then(|t| t.duration_since(SystemTime::now()).ok())
        .unwrap_or_default();
    delay.max(asked.min(Duration::from_secs(60)))
}

/// Another client (ureq, or a scripted CA in tests) that keeps the
/// status and `Retry-After` of the CA's last answer: for the back-off
/// after a 429 (`rateLimited`) or 503 (RFC 8555 section 6.6, RFC 9110
/// section 10.2.3), for the pace of polls, and to tell a refusal from a
/// passing trouble. instant-acme's errors carry the problem document,
/// not the status line or the headers.
pub struct Watched {
    inner: Box<dyn HttpClient>,
    last: LastAnswer,
}

impl Watched {
    pub fn new(inner: Box<dyn HttpClient>, last: LastAnswer) -> Watched {
        Watched { inner, last }
    }
}

impl HttpClient for Watched {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, Error>> + Send>> {
        let answer = self.inner.request(req);
        let cell = self.last.clone();
        Box::pin(async move {
            let r = answer.await;
            let a = r.as_ref().ok().map(|rsp| Answer {
                status: rsp.parts.status.as_u16(),
                retry_after: rsp
                    .parts
                    .headers
                    .get(http_crate::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry_after(v, SystemTime::now())),
            });
            if let Ok(mut c) = cell.lock() {
                *c = a;
            }
            r
        })
    }
}

/// A `Retry-After` value (delay-seconds or an HTTP-date) as a time.
pub fn retry_after(v: &str, now: SystemTime) -> Option<SystemTime> {
    let v = v.trim();
    match v.parse::<u64>() {
        // At most a year: a larger number is nonsense, not a wish.
        Ok(s) => Some(now + Duration::from_secs(s.min(365 * 86_400))),
        Err(_) => httpdate::parse_http_date(v).ok(),
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

#[cfg(test)]
mod tests {
    use super::retry_after;
    use std::time::{Duration, SystemTime};

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            retry_after(" 120 ", now),
            Some(now + Duration::from_secs(120))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        assert_eq!(
            retry_after("99999999999", now),
            Some(now + Duration::from_secs(365 * 86_400))
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
    }

    #[test]
    fn polls_wait_as_asked_up_to_a_minute() {
        use super::{Answer, LastAnswer, poll_wait};
        let hint = LastAnswer::default();
        let half = Duration::from_millis(500);
        assert_eq!(poll_wait(&hint, half), half);
        let set = |after: Option<SystemTime>| {
            *hint.lock().unwrap() = Some(Answer {
                status: 200,
                retry_after: after,
            })
        };
        set(None);
        assert_eq!(poll_wait(&hint, half), half);
        set(Some(SystemTime::now() + Duration::from_secs(3)));
        let w = poll_wait(&hint, half);
        assert!(
            w > Duration::from_secs(2) && w <= Duration::from_secs(3),
            "{w:?}"
        );
        set(Some(SystemTime::now() + Duration::from_secs(3600)));
        assert_eq!(poll_wait(&hint, half), Duration::from_secs(60));
        // A time past is no wait.
        set(Some(SystemTime::now() - Duration::from_secs(5)));
        assert_eq!(poll_wait(&hint, half), half);
    }
}
