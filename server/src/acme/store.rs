//! What the event loops read of ACME, and the files in `state_dir`.
//!
//! - **Slots.** Each vhost with `tls: { acme: true }` has one [`Slot`]
//!   for the whole life of the process (it survives reloads): its
//!   rustls configuration resolves certificates through it
//!   ([`AcmeResolver`]), and the manager thread stores a new certificate
//!   into it. A handshake loads it once; nothing is rebuilt on a renewal.
//! - **Challenges.** HTTP-01 key authorizations by token and TLS-ALPN-01
//!   configurations by name, in copy-on-write maps the loops read
//!   without a lock; only the manager thread writes them. The loops never
//!   read a file for a challenge.
//! - **Files.** Folders 0700, files 0600, written to a temporary file
//!   in the same folder and renamed over the old one.

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// Where HTTP-01 challenges are fetched (RFC 8555 section 8.3).
pub const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737 section 6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The file of a vhost's key and chain (one file: the pair changes at
/// once).
pub const CURRENT: &str = "current.pem";

/// What is known of a certificate in a slot.
#[derive(Debug, Clone, Default)]
pub struct CertInfo {
    pub names: Vec<String>,
    pub serial: String,
    pub issuer: String,
    pub not_before: Option<SystemTime>,
    pub not_after: Option<SystemTime>,
    /// The RFC 9773 certificate identifier (authority key ID and serial).
    pub ari_id: Option<(Vec<u8>, Vec<u8>)>,
}

/// A vhost's certificate as handshakes see it.
#[derive(Debug, Default)]
pub struct Slot {
    pub vhost: String,
    cert: ArcSwapOption<CertifiedKey>,
    /// The certificate's details and the last error, for log lines.
    state: Mutex<(Option<CertInfo>, Option<String>)>,
}

impl Slot {
    /// Serves `key` from the next handshake on.
    pub fn store(&self, key: Arc<CertifiedKey>, info: CertInfo) {
        self.cert.store(Some(key));
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        g.0 = Some(info);
    }

    /// The certificate served now.
    pub fn info(&self) -> Option<CertInfo> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Whether a certificate is there.
    pub fn is_empty(&self) -> bool {
        self.cert.load().is_none()
    }

    /// Remembers the last failure (for the handshake's log line).
    pub fn set_error(&self, e: Option<String>) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = e;
    }

    fn error(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// Loads `current.pem` from `dir` if there is a usable one (not
    /// expired). `Ok(false)`: none.
    pub fn load_file(&self, dir: &Path) -> Result<bool, String> {
        let f = dir.join(CURRENT);
        if !f.exists() {
            return Ok(false);
        }
        let (key, info) = read_pem(&f)?;
        if info.not_after.is_some_and(|t| t <= SystemTime::now()) {
            return Ok(false);
        }
        self.store(Arc::new(key), info);
        Ok(true)
    }
}

fn registry() -> &'static Mutex<HashMap<String, Arc<Slot>>> {
    static SLOTS: OnceLock<Mutex<HashMap<String, Arc<Slot>>>> = OnceLock::new();
    SLOTS.get_or_init(Default::default)
}

/// The slot of a vhost (made on first use, kept for the process's life).
pub fn slot(vhost: &str) -> Arc<Slot> {
    let mut g = registry().lock().unwrap_or_else(|p| p.into_inner());
    g.entry(vhost.to_owned())
        .or_insert_with(|| {
            Arc::new(Slot {
                vhost: vhost.to_owned(),
                ..Slot::default()
            })
        })
        .clone()
}

/// The folder of a vhost's certificate in a CA's folder.
pub fn cert_dir(ca_dir: &Path, vhost: &str) -> PathBuf {
    ca_dir.join("certs").join(vhost)
}

/// The resolver of an ACME vhost's configuration: its slot's
/// certificate. With none yet the handshake fails (rustls sends a
/// `handshake_failure` alert) and the error log says why, once a second
/// at most.
#[derive(Debug)]
pub struct AcmeResolver(pub Arc<Slot>);

impl ResolvesServerCert for AcmeResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let k = self.0.cert.load_full();
        if k.is_none() {
            static RL: crate::ratelog::RateLog = crate::ratelog::RateLog::new();
            if let Some(held) = RL.hit(std::time::Instant::now()) {
                let why = self
                    .0
                    .error()
                    .unwrap_or_else(|| "being obtained".to_owned());
                let more = if held > 0 {
                    format!(" ({held} more in the second before)")
                } else {
                    String::new()
                };
                log::warn!(
                    "TLS: no certificate yet for {} (vhost {}; ACME: {why}){more}",
                    hello.server_name().unwrap_or("(no name)"),
                    self.0.vhost,
                );
            }
        }
        k
    }
}

/// Reads a `current.pem`: the private key and the chain, leaf first.
pub fn read_pem(f: &Path) -> Result<(CertifiedKey, CertInfo), String> {
    let text = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
    parse_pem(&text).map_err(|e| format!("{}: {e}", f.display()))
}

/// A key and its chain (PEM), checked: the key matches the leaf.
pub fn parse_pem(text: &[u8]) -> Result<(CertifiedKey, CertInfo), String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(text)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(text).map_err(|e| format!("no private key: {e}"))?;
    let Some(leaf) = chain.first() else {
        return Err("no certificate in it".into());
    };
    let info = describe(leaf.as_ref())?;
    let provider = &crate::config::tls::shared()?.provider;
    let ck = CertifiedKey::from_der(chain, key, provider).map_err(|e| e.to_string())?;
    Ok((ck, info))
}

/// A certificate's names, serial, issuer, validity and ARI identifier.
pub fn describe(der: &[u8]) -> Result<CertInfo, String> {
    use x509_parser::extensions::ParsedExtension;
    let (_, c) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let names = crate::config::tls::cert_names(&c);
    let at = |t: &x509_parser::time::ASN1Time| {
        let s = t.timestamp();
        (s > 0).then(|| SystemTime::UNIX_EPOCH + Duration::from_secs(s as u64))
    };
    let aki = c
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        });
    let serial_der = c.tbs_certificate.raw_serial().to_vec();
    Ok(CertInfo {
        names,
        serial: c.tbs_certificate.raw_serial_as_string().replace(':', ""),
        issuer: c.issuer().to_string(),
        not_before: at(&c.validity().not_before),
        not_after: at(&c.validity().not_after),
        ari_id: aki.map(|a| (a, serial_der)),
    })
}

/// A TLS-ALPN-01 challenge: its key authorization and configuration.
type AlpnChallenge = (Arc<str>, Arc<ServerConfig>);

/// The challenges being answered now.
#[derive(Default)]
struct Challenges {
    /// HTTP-01: token to the name and key authorization.
    http01: ArcSwap<HashMap<String, (String, Arc<str>)>>,
    /// TLS-ALPN-01: name to the key authorization and the
    /// configuration with its challenge certificate.
    tls_alpn: ArcSwap<HashMap<String, AlpnChallenge>>,
}

fn challenges() -> &'static Challenges {
    static C: OnceLock<Challenges> = OnceLock::new();
    C.get_or_init(Challenges::default)
}

/// The key authorization for a request path under
/// `/.well-known/acme-challenge/`, if its token is pending for the
/// request's host (GET and HEAD; answered by the core ahead of every
/// route, redirect and access rule).
pub fn http01(method: &str, path: &str, host: &str) -> Option<Arc<str>> {
    let token = path.strip_prefix(ACME_CHALLENGE)?;
    if method != "GET" && method != "HEAD" {
        return None;
    }
    let m = challenges().http01.load();
    let (name, ka) = m.get(token)?;
    // (`host` is the request's, lowercased, without its port.)
    (name == host.trim_end_matches('.')).then(|| ka.clone())
}

/// The TLS-ALPN-01 configuration for a server name, if one is pending.
pub fn tls_alpn(name: &str) -> Option<Arc<ServerConfig>> {
    let m = challenges().tls_alpn.load();
    if m.is_empty() {
        return None;
    }
    m.get(&name.to_ascii_lowercase()).map(|(_, c)| c.clone())
}

/// A challenge, as the manager publishes it (and as other servers of a
/// fleet read it from `state_dir`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    pub kind: String,
    pub name: String,
    pub token: String,
    pub key_authorization: String,
}

/// Answers these challenges (and no others) from now on.
pub fn set_pending(list: &[Pending]) -> Result<(), String> {
    let mut h = HashMap::new();
    let mut t = HashMap::new();
    let old = challenges().tls_alpn.load();
    let mut first_error = None;
    for p in list {
        match p.kind.as_str() {
            "http-01" => {
                h.entry(p.token.clone()).or_insert_with(|| {
                    (
                        p.name.to_ascii_lowercase(),
                        Arc::from(p.key_authorization.as_str()),
                    )
                });
            }
            "tls-alpn-01" if !t.contains_key(&p.name.to_ascii_lowercase()) => {
                // Kept when unchanged: a challenge certificate costs a key.
                let name = p.name.to_ascii_lowercase();
                let e = match old.get(&name) {
                    Some(e) if *e.0 == *p.key_authorization => e.clone(),
                    _ => match tls_alpn_config(&p.name, &p.key_authorization) {
                        Ok(c) => (Arc::from(p.key_authorization.as_str()), c),
                        // One bad entry (a fleet file) does not keep the
                        // others from being answered.
                        Err(e) => {
                            first_error.get_or_insert(format!("{}: {e}", p.name));
                            continue;
                        }
                    },
                };
                t.insert(name, e);
            }
            _ => {}
        }
    }
    challenges().http01.store(Arc::new(h));
    challenges().tls_alpn.store(Arc::new(t));
    first_error.map_or(Ok(()), Err)
}

/// A certificate for exactly one name, with the `acmeIdentifier`
/// extension holding SHA-256 of the key authorization (RFC 8737 section
/// 3), in a configuration that offers only `acme-tls/1`.
pub fn tls_alpn_config(name: &str, key_authorization: &str) -> Result<Arc<ServerConfig>, String> {
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key_authorization.as_bytes());
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(|e| e.to_string())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest.as_ref())];
    let kp = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&kp).map_err(|e| e.to_string())?;
    let shared = crate::config::tls::shared()?;
    let key = PrivateKeyDer::try_from(kp.serialize_der()).map_err(|e| e.to_string())?;
    // `new`, not `from_der`: the latter parses the certificate with
    // webpki, which refuses the critical `acmeIdentifier` extension.
    let signer = shared
        .provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| e.to_string())?;
    let ck = CertifiedKey::new(vec![cert.der().clone()], signer);
    let mut cfg = ServerConfig::builder_with_provider(shared.provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(ck)));
    cfg.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    cfg.send_tls13_tickets = 0;
    Ok(Arc::new(cfg))
}

/// Makes `dir` and its missing parents, 0700.
pub fn make_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes `bytes` to `path` atomically: a temporary file (0600) in the
/// same folder, synced, renamed over `path`, then the folder synced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    make_dir(dir)?;
    let mut t = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    t.write_all(bytes)?;
    t.as_file().sync_all()?;
    t.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_files_are_private() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a/b/c.json");
        write_atomic(&f, b"one").unwrap();
        write_atomic(&f, b"two").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&f), 0o600);
        assert_eq!(mode(&d.path().join("a/b")), 0o700);
        assert_eq!(mode(&d.path().join("a")), 0o700);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(d.path().join("a/b")).unwrap().count(), 1);
    }

    #[test]
    fn challenges_are_answered_while_pending() {
        set_pending(&[Pending {
            kind: "http-01".into(),
            name: "a.example".into(),
            token: "tok".into(),
            key_authorization: "tok.thumb".into(),
        }])
        .unwrap();
        let p = "/.well-known/acme-challenge/tok";
        assert_eq!(http01("GET", p, "a.example").as_deref(), Some("tok.thumb"));
        assert_eq!(http01("HEAD", p, "a.example").as_deref(), Some("tok.thumb"));
        assert!(http01("POST", p, "a.example").is_none());
        // Another vhost's name: not answered.
        assert!(http01("GET", p, "b.example").is_none());
        assert!(http01("GET", "/.well-known/acme-challenge/other", "a.example").is_none());
        set_pending(&[]).unwrap();
        assert!(http01("GET", p, "a.example").is_none());
    }

    #[test]
    fn the_challenge_certificate_names_one_host_and_carries_the_digest() {
        let cfg = tls_alpn_config("a.example.com", "tok.thumb").unwrap();
        assert_eq!(cfg.alpn_protocols, vec![ACME_TLS_ALPN.to_vec()]);
    }
}
