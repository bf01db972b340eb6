//! What a TLS connection negotiated (version, cipher, SNI, ALPN, the
//! client's certificate), read once from rustls after the handshake and
//! shared by the exchange, plugins (the SDK's TLS view), CGI and logs.

use rustls::ServerConnection;
use rustls::pki_types::CertificateDer;
use std::sync::Arc;

/// What a TLS connection negotiated, for the exchange, plugins and logs.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: &'static str,
    /// `TLS_AES_128_GCM_SHA256`, as IANA names it.
    pub cipher: &'static str,
    /// The server name the client asked for (lowercase), if any.
    pub sni: Option<String>,
    /// The protocol ALPN chose (`http/1.1`).
    pub alpn: Option<String>,
    /// The vhost the SNI chose, when the client sent a name: a request
    /// whose Host names another vhost is misdirected (421).
    pub vhost: Option<String>,
    /// The client's certificate (mutual TLS), if it sent one.
    pub client_cert: Option<Arc<ClientCert>>,
    /// The session was resumed (a ticket or the session cache).
    pub resumed: bool,
}

/// A client certificate, as plugins, CGI and logs see it.
#[derive(Debug, Clone, Default)]
pub struct ClientCert {
    /// The subject's distinguished name (`CN=alice, O=Example`).
    pub subject: String,
    pub issuer: String,
    /// The serial number in hexadecimal.
    pub serial: String,
    /// `SUCCESS`: verified against `client_ca` (Apache's
    /// `SSL_CLIENT_VERIFY`); the handshake refuses any other.
    pub verify: &'static str,
    pub pem: String,
}

/// The handshake's result, once (what plugins and logs see).
pub(super) fn negotiated(c: &ServerConnection, i: &mut TlsInfo) {
    i.version = match c.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "TLS",
    };
    i.cipher = c
        .negotiated_cipher_suite()
        .and_then(|s| s.suite().as_str())
        .map_or("", iana);
    i.alpn = c
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    i.resumed = matches!(c.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
    if let Some(leaf) = c.peer_certificates().and_then(|c| c.first()) {
        i.client_cert = Some(Arc::new(describe_client_cert(leaf)));
    }
}

/// A cipher suite's IANA name (rustls spells TLS 1.3's `TLS13_...`).
fn iana(rustls_name: &'static str) -> &'static str {
    match rustls_name {
        "TLS13_AES_128_GCM_SHA256" => "TLS_AES_128_GCM_SHA256",
        "TLS13_AES_256_GCM_SHA384" => "TLS_AES_256_GCM_SHA384",
        "TLS13_CHACHA20_POLY1305_SHA256" => "TLS_CHACHA20_POLY1305_SHA256",
        other => other,
    }
}

/// A client certificate as plugins, CGI and logs see it.
pub fn describe_client_cert(leaf: &CertificateDer<'_>) -> ClientCert {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(leaf.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or(""));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    let (subject, issuer, serial) = match x509_parser::parse_x509_certificate(leaf.as_ref()) {
        Ok((_, c)) => (
            c.subject().to_string(),
            c.issuer().to_string(),
            c.raw_serial_as_string()
                .replace(':', "")
                .to_ascii_uppercase(),
        ),
        Err(_) => Default::default(),
    };
    ClientCert {
        subject,
        issuer,
        serial,
        verify: "SUCCESS",
        pem,
    }
}
