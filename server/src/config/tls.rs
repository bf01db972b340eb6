//! A vhost's TLS: the `tls:` block as written (certificates, versions,
//! client certificates), checked at load with the file's line, and built
//! into one rustls `ServerConfig` per vhost. A TLS listening socket's
//! vhosts make a [`SiteTls`], which picks a connection's configuration by
//! the ClientHello's SNI (`transport/tls.rs`). Keys are read when the
//! configuration is built: at start-up as root (before the privilege
//! drop), on a reload as the serving user.

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The `tls:` block of a vhost file.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsRaw {
    /// The certificate chain (PEM, leaf first).
    pub cert: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Several pairs (an ECDSA and an RSA one): the handshake picks by
    /// the client's signature schemes.
    pub certs: Option<Vec<Pair>>,
    /// Refuse a handshake whose server name is unknown (or missing), as
    /// nginx's `ssl_reject_handshake` (only meaningful on the `default`
    /// vhost of the socket).
    #[serde(default)]
    pub reject_unknown_sni: bool,
    /// The oldest TLS version accepted: "1.2" (default) or "1.3".
    pub min_version: Option<String>,
    /// Client certificates (mutual TLS) are verified against these CAs
    /// (PEM).
    pub client_ca: Option<PathBuf>,
    /// `required` (default with `client_ca`) or `optional`.
    pub client_auth: Option<ClientAuth>,
    /// Session ticket keys from this file (see server.yaml's
    /// `ticket_key_file`), for this vhost.
    pub ticket_key_file: Option<PathBuf>,
    /// Certificates for the vhost's name and aliases from the ACME CA
    /// of server.yaml's `acme:` block, obtained and renewed by the
    /// server (instead of `cert` and `key`).
    #[serde(default)]
    pub acme: bool,
}

/// A certificate chain and its key.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Whether a client certificate is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    Required,
    Optional,
}

/// A vhost's TLS, checked, with absolute paths.
#[derive(Debug, Clone)]
pub struct TlsConf {
    pub pairs: Vec<(PathBuf, PathBuf)>,
    pub reject_unknown_sni: bool,
    pub tls13_only: bool,
    pub client_ca: Option<PathBuf>,
    pub client_required: bool,
    pub ticket_key_file: Option<PathBuf>,
    /// Certificates come from the ACME CA (`pairs` is empty).
    pub acme: bool,
}

impl TlsRaw {
    /// Checks the block; relative paths resolve against `base` (the
    /// file's folder). `Err` is `(key, message)`.
    pub fn check(self, base: &Path) -> Result<TlsConf, (&'static str, String)> {
        let abs = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
        let mut pairs = Vec::new();
        match (self.cert, self.key) {
            (Some(c), Some(k)) => pairs.push((abs(c), abs(k))),
            (None, None) => {}
            (Some(_), None) => return Err(("cert", "tls: `cert` needs its `key`".into())),
            (None, Some(_)) => return Err(("key", "tls: `key` needs its `cert`".into())),
        }
        for p in self.certs.unwrap_or_default() {
            pairs.push((abs(p.cert), abs(p.key)));
        }
        if self.acme && !pairs.is_empty() {
            return Err((
                "acme",
                "tls: `acme: true` and `cert`/`key` (or `certs`) exclude each other: \
                 certificates from the CA, or your own files"
                    .into(),
            ));
        }
        if pairs.is_empty() && !self.acme {
            return Err((
                "tls",
                "tls: give `cert` and `key` (or `certs`), or `acme: true`".into(),
            ));
        }
        let tls13_only = match self.min_version.as_deref() {
            None | Some("1.2") => false,
            Some("1.3") => true,
            Some(v) => {
                return Err((
                    "min_version",
                    format!("tls.min_version: `{v}` is not \"1.2\" or \"1.3\""),
                ));
            }
        };
        if self.client_auth.is_some() && self.client_ca.is_none() {
            return Err((
                "client_auth",
                "tls.client_auth needs `client_ca` (the CAs client certificates are checked against)"
                    .into(),
            ));
        }
        Ok(TlsConf {
            pairs,
            reject_unknown_sni: self.reject_unknown_sni,
            tls13_only,
            client_ca: self.client_ca.map(abs),
            client_required: self.client_auth != Some(ClientAuth::Optional),
            ticket_key_file: self.ticket_key_file.map(abs),
            acme: self.acme,
        })
    }
}

/// The crypto provider: aws-lc-rs, whose default key exchange groups
/// put the hybrid post-quantum X25519MLKEM768 first, then X25519 and
/// P-256; its TLS 1.2 suites are ECDHE with AEAD only (rustls has no CBC).
///
/// PERF: the server's order puts AES-128-GCM first (then AES-256-GCM,
/// then ChaCha20-Poly1305), as Go and Caddy do. The AES-256 suites hash
/// with SHA-384, which has no instructions on x86 (SHA-256 has them):
/// with OpenSSL clients, which ask for AES-256 first, SHA-512 blocks were
/// 12% of the CPU of full handshakes.
pub fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites.sort_by_key(|s| {
        let name = s.suite().as_str().unwrap_or("");
        if name.contains("AES_128") {
            0
        } else if name.contains("AES_256") {
            1
        } else {
            2
        }
    });
    Arc::new(p)
}

/// Reads a certificate chain and its key; errors name the file.
pub fn load_pair(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it (PEM)", cert.display()));
    }
    let k = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{}: not a PEM private key: {e}", key.display()))?;
    let ck = CertifiedKey::from_der(chain, k, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "{}: the key does not match the certificate {}",
            key.display(),
            cert.display()
        ),
        e => format!("{}: {e}", key.display()),
    })?;
    Ok(ck)
}

/// Picks the certificate the client can verify: the first (ECDSA before
/// RSA) whose key can sign with one of the client's signature schemes.
#[derive(Debug)]
struct Pairs(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for Pairs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        self.0
            .iter()
            .find(|k| k.key.choose_scheme(schemes).is_some())
            .or(self.0.first())
            .cloned()
    }
}

/// What every vhost's configuration shares: the provider, the session
/// cache, and the ticket keys (rotated).
pub struct Shared {
    pub provider: Arc<CryptoProvider>,
    pub cache: Arc<dyn rustls::server::StoresServerSessions>,
    pub ticketer: Arc<dyn rustls::server::ProducesTickets>,
}

static SHARED: std::sync::OnceLock<Result<Shared, String>> = std::sync::OnceLock::new();

/// The process's shared TLS state: made once, kept across reloads (a
/// ticket issued before a SIGHUP still resumes after it).
pub fn shared() -> Result<&'static Shared, String> {
    SHARED
        .get_or_init(Shared::new)
        .as_ref()
        .map_err(Clone::clone)
}

impl Shared {
    fn new() -> Result<Shared, String> {
        Ok(Shared {
            provider: provider(),
            // A bounded cache beside the tickets (clients that ask for
            // session IDs): 20,000 sessions at most.
            cache: rustls::server::ServerSessionMemoryCache::new(20_000),
            // Stateless tickets, keys rotated by rustls.
            ticketer: rustls::crypto::aws_lc_rs::Ticketer::new()
                .map_err(|e| format!("session tickets: {e}"))?,
        })
    }
}

/// A vhost's TLS as connections use it.
pub struct VhostTls {
    /// The vhost's name (SNI and Host are compared through it).
    pub vhost: String,
    pub config: Arc<ServerConfig>,
    pub reject_unknown_sni: bool,
}

/// Builds a vhost's configuration; errors name the file. `tickets` is
/// server.yaml's `ticket_key_file`, the vhost's own taking precedence.
pub fn build(
    name: &str,
    t: &TlsConf,
    tickets: Option<&Path>,
    http2: bool,
    acme: Option<Arc<dyn ResolvesServerCert>>,
) -> Result<VhostTls, String> {
    let shared = shared()?;
    let mut keys = t
        .pairs
        .iter()
        .map(|(c, k)| load_pair(c, k, &shared.provider).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    // An ECDSA (or Ed25519) pair first: its handshake costs the server a
    // fraction of an RSA one's, and every current client takes it.
    keys.sort_by_key(|k| k.key.algorithm() == rustls::SignatureAlgorithm::RSA);
    let versions: &[&rustls::SupportedProtocolVersion] = if t.tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = ServerConfig::builder_with_provider(shared.provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match &t.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in
                CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))?
            {
                let c =
                    c.map_err(|e| format!("{}: not a PEM certificate file: {e}", ca.display()))?;
                roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                shared.provider.clone(),
            );
            let v = if t.client_required {
                v
            } else {
                v.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                v.build()
                    .map_err(|e| format!("{}: client CAs: {e}", ca.display()))?,
            )
        }
    };
    let resolver: Arc<dyn ResolvesServerCert> = match acme {
        Some(r) => r,
        None => Arc::new(Pairs(keys)),
    };
    let mut cfg = builder.with_cert_resolver(resolver);
    // HTTP/2 first when offered: a client that speaks it chooses it.
    cfg.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    // The server's cipher preference, not the client's.
    cfg.ignore_client_order = true;
    // PERF: one TLS 1.3 ticket per full handshake (rustls sends two by
    // default, as OpenSSL): a browser resumes with one, and each costs a
    // key derivation and an encryption.
    cfg.send_tls13_tickets = 1;
    cfg.session_storage = shared.cache.clone();
    cfg.ticketer = match t.ticket_key_file.as_deref().or(tickets) {
        Some(f) => Arc::new(crate::config::tickets::FileTicketer::load(f)?),
        None => shared.ticketer.clone(),
    };
    Ok(VhostTls {
        vhost: name.to_owned(),
        config: Arc::new(cfg),
        reject_unknown_sni: t.reject_unknown_sni,
    })
}

/// The vhosts of one TLS listening socket, by server name.
#[derive(Default)]
pub struct SiteTls {
    pub by_name: HashMap<String, Arc<VhostTls>>,
    /// The `default: true` vhost's (or the first file's) configuration.
    pub default: Option<Arc<VhostTls>>,
}

impl SiteTls {
    /// The configuration for a ClientHello's server name: that vhost's,
    /// else the default's (none when it rejects unknown names).
    pub fn select(&self, sni: Option<&str>) -> Option<Arc<VhostTls>> {
        if let Some(v) = sni.and_then(|n| self.by_name.get(n)) {
            return Some(v.clone());
        }
        self.default
            .as_ref()
            .filter(|d| !d.reject_unknown_sni)
            .cloned()
    }
}

/// What `tamada -t` (and a start or a reload) warns of in a vhost's TLS
/// files, naming each: a certificate expired or not yet valid, names of
/// the vhost its certificates do not cover, a key other users may read,
/// a key the serving user (`serve_as`: uid, gids) could not re-read on a
/// reload. Warnings, not errors: an expired certificate must not block
/// every reload.
pub fn warnings(names: &[&str], t: &TlsConf, serve_as: Option<(u32, &[u32])>) -> Vec<String> {
    let mut out = Vec::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut covered = vec![false; names.len()];
    for (cert, key) in &t.pairs {
        if let Some(Ok(leaf)) = CertificateDer::pem_file_iter(cert)
            .ok()
            .and_then(|mut i| i.next())
            && let Ok((_, c)) = x509_parser::parse_x509_certificate(leaf.as_ref())
        {
            let v = c.validity();
            if v.not_after.timestamp() < now {
                out.push(format!(
                    "{}: the certificate expired on {}",
                    cert.display(),
                    v.not_after
                ));
            } else if v.not_before.timestamp() > now {
                out.push(format!(
                    "{}: the certificate is not valid before {}",
                    cert.display(),
                    v.not_before
                ));
            }
            let dns = cert_names(&c);
            for (i, n) in names.iter().enumerate() {
                covered[i] |= dns.iter().any(|d| name_matches(d, n));
            }
        }
        if let Some(w) = key_access(key, serve_as) {
            out.push(w);
        }
    }
    let missing: Vec<&str> = names
        .iter()
        .zip(&covered)
        .filter(|(_, c)| !**c)
        .map(|(n, _)| *n)
        .collect();
    if !missing.is_empty() {
        out.push(format!(
            "{}: the certificate does not cover {} (clients will refuse it)",
            t.pairs[0].0.display(),
            missing.join(", ")
        ));
    }
    out
}

/// The DNS names a certificate is for: its subjectAltName entries, or
/// its common name when it has none.
pub fn cert_names(c: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let mut v = Vec::new();
    if let Ok(Some(san)) = c.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => v.push(d.to_ascii_lowercase()),
                GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        v.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
        return v;
    }
    for cn in c.subject().iter_common_name() {
        if let Ok(s) = cn.as_str() {
            v.push(s.to_ascii_lowercase());
        }
    }
    v
}

/// A certificate name covers a host name: equal, or a wildcard for one
/// label (`*.example.com` covers `www.example.com`, not `example.com`).
pub fn name_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(label, tail)| !label.is_empty() && tail.eq_ignore_ascii_case(rest)),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// A warning about who may read a private key.
fn key_access(key: &Path, serve_as: Option<(u32, &[u32])>) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(key).ok()?;
    let mode = m.mode();
    if mode & 0o004 != 0 {
        return Some(format!(
            "{}: the private key is readable by every user (mode {:o}): chmod o-r",
            key.display(),
            mode & 0o777
        ));
    }
    let (uid, gids) = serve_as?;
    let readable = uid == 0
        || (m.uid() == uid && mode & 0o400 != 0)
        || (gids.contains(&m.gid()) && mode & 0o040 != 0);
    (!readable).then(|| {
        format!(
            "{}: the serving user (uid {uid}) cannot read the private key (owner {}, group {}, mode {:o}): \
             a reload or an upgrade would fail; make it readable by the server's group (Debian: ssl-cert)",
            key.display(),
            m.uid(),
            m.gid(),
            mode & 0o777
        )
    })
}

/// Logs [`warnings`] for every vhost with TLS, each line naming its
/// conf.d file.
pub fn warn_all(vhosts: &[crate::config::VhostConf], serve_as: Option<(u32, &[u32])>) {
    for v in vhosts {
        let Some(t) = &v.tls else { continue };
        if t.acme {
            let plain80 = v.listens.iter().any(|l| !l.tls && l.addr.port() == 80);
            if !plain80 && v.tls_port != Some(443) {
                log::warn!(
                    "{}: tls.acme: the vhost listens on neither port 80 nor 443, the only \
                     ports a public CA validates on (RFC 8555 8.3, RFC 8737 3)",
                    v.file.display()
                );
            }
            continue;
        }
        let names: Vec<&str> = std::iter::once(&v.name)
            .chain(&v.aliases)
            .map(String::as_str)
            .collect();
        for w in warnings(&names, t, serve_as) {
            log::warn!("{}: tls: {w}", v.file.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_matches("example.com", "EXAMPLE.com"));
        assert!(name_matches("*.example.com", "www.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("www.example.com", "example.com"));
    }
}
