//! HTTPS upstreams: a rustls client over a non-blocking TCP socket, for
//! the upstream exchange (`exchange.rs`), which only ever sees `Read` and
//! `Write` that say `WouldBlock`. The handshake goes on inside them: the
//! first write queues the request and sends the ClientHello; reads take
//! the server's flight, finish the handshake and send what was queued.
//! [`TlsSock::flush`] sends the records a full socket held back.
//!
//! The certificate is verified against the system's roots (or a CA file
//! of the route's), for the upstream's host name (sent as SNI), unless
//! the route says `insecure_skip_verify` (which `-t` warns about).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

/// What a route's HTTPS upstreams are checked with.
#[derive(Clone)]
pub struct TlsClient {
    pub config: Arc<ClientConfig>,
    /// The name sent (SNI) and verified instead of the upstream's own.
    pub server_name: Option<String>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// The route's choices, with paths resolved.
#[derive(Default)]
pub struct TlsOptions<'a> {
    /// CA certificates (PEM) instead of the system's roots.
    pub ca: Option<&'a Path>,
    /// A client certificate chain and its key (PEM).
    pub client: Option<(&'a Path, &'a Path)>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl TlsClient {
    /// Builds the client configuration; errors name the file.
    pub fn new(o: &TlsOptions<'_>) -> Result<TlsClient, String> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = if o.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider.clone())))
        } else {
            let mut roots = rustls::RootCertStore::empty();
            match o.ca {
                Some(ca) => {
                    for c in CertificateDer::pem_file_iter(ca)
                        .map_err(|e| format!("tls.ca: {}: {e}", ca.display()))?
                    {
                        let c = c.map_err(|e| format!("tls.ca: {}: not PEM: {e}", ca.display()))?;
                        roots
                            .add(c)
                            .map_err(|e| format!("tls.ca: {}: {e}", ca.display()))?;
                    }
                    if roots.is_empty() {
                        return Err(format!("tls.ca: {}: no certificate in it", ca.display()));
                    }
                }
                None => {
                    let found = rustls_native_certs::load_native_certs();
                    roots.add_parsable_certificates(found.certs);
                    if roots.is_empty() {
                        return Err(
                            "tls: no system root certificates found (install ca-certificates, or give tls.ca)"
                                .into(),
                        );
                    }
                }
            }
            builder.with_root_certificates(roots)
        };
        let mut config = match o.client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| format!("tls.cert: {}: {e}", cert.display()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("tls.cert: {}: not PEM: {e}", cert.display()))?;
                let k = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    format!("tls.key: {}: not a PEM private key: {e}", key.display())
                })?;
                builder
                    .with_client_auth_cert(chain, k)
                    .map_err(|e| format!("tls.key: {}: {e}", key.display()))?
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsClient {
            config: Arc::new(config),
            server_name: o.server_name.clone(),
        })
    }

    /// Starts a client connection to `host` over `tcp`.
    pub fn connect(&self, tcp: TcpStream, host: &str) -> io::Result<TlsSock> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let name = ServerName::try_from(name.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("`{name}`: {e}")))?
            .to_owned();
        let conn = ClientConnection::new(self.config.clone(), name)
            .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
        Ok(TlsSock { tcp, conn })
    }
}

/// A TLS client connection over a TCP socket.
pub struct TlsSock {
    pub tcp: TcpStream,
    conn: ClientConnection,
}

impl TlsSock {
    /// Sends the records rustls holds; false when the socket is full.
    pub fn flush_records(&mut self) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut Nosig(&self.tcp)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// An idle pooled connection is usable: nothing but TLS housekeeping
    /// (session tickets) came since its last answer, and it is not
    /// closed. Reads what is there without waiting.
    pub fn still_open(&mut self) -> bool {
        loop {
            match self.conn.read_tls(&mut DontWait(&self.tcp)) {
                Ok(0) => return false,
                Ok(_) => {
                    if self.conn.process_new_packets().is_err() {
                        return false;
                    }
                    let mut b = [0u8; 1];
                    match self.conn.reader().read(&mut b) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        // Bytes nobody asked for, or the end.
                        _ => return false,
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}

impl Read for TlsSock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Closed without close_notify: the end (the framing of
                // the answer says whether it was whole).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            // The handshake's next flight, or the request queued during it.
            self.flush_records()?;
            let n = self.conn.read_tls(&mut self.tcp)?;
            if n == 0 {
                return Ok(0);
            }
            self.conn
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")))?;
            self.flush_records()?;
        }
    }
}

impl Write for TlsSock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.flush_records()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.conn.writer().write(buf)?;
        if n == 0 && !buf.is_empty() {
            // rustls's buffer is full (the handshake is not done yet): the
            // server's answer makes room.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.flush_records() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.flush_records()? {
            Ok(())
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }
}

/// Writes with MSG_NOSIGNAL: an upstream that closed gives EPIPE.
struct Nosig<'a>(&'a TcpStream);

impl Write for Nosig<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        rustix::net::send(self.0, buf, rustix::net::SendFlags::NOSIGNAL).map_err(io::Error::from)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads without waiting, whatever the socket's mode.
struct DontWait<'a>(&'a TcpStream);

impl Read for DontWait<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        rustix::net::recv(self.0, buf, rustix::net::RecvFlags::DONTWAIT)
            .map(|(n, _)| n)
            .map_err(io::Error::from)
    }
}

/// `insecure_skip_verify`: any certificate for any name (its handshake
/// signature is still checked, so the peer holds the key it shows).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
