//! The script's environment: the meta-variables of RFC 3875 section 4.1,
//! one HTTP_* variable per request header, PATH and the route's `env:`.
//! Nothing else of the server's own environment reaches a script.

use base64::Engine;
use std::path::Path;
use tamada_sdk::Request;

/// Variables that are the same for every request of a route, computed once.
pub fn base(
    path: &str,
    document_root: &Path,
    extra: &[(String, String)],
) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = extra
        .iter()
        .map(|(k, val)| (k.clone(), val.clone().into_bytes()))
        .collect();
    let mut set = |k: &str, val: &[u8]| v.push((k.to_owned(), val.to_vec()));
    set("PATH", path.as_bytes());
    set("GATEWAY_INTERFACE", b"CGI/1.1");
    set(
        "SERVER_SOFTWARE",
        concat!("tamada/", env!("CARGO_PKG_VERSION")).as_bytes(),
    );
    set(
        "DOCUMENT_ROOT",
        document_root.as_os_str().as_encoded_bytes(),
    );
    // php-cgi refuses to run without it (cgi.force_redirect).
    set("REDIRECT_STATUS", b"200");
    v
}

/// The script a request runs.
/// The names [`build`] sets per request (besides `HTTP_*`).
pub const PER_REQUEST: &[&str] = &[
    "SERVER_PROTOCOL",
    "SERVER_NAME",
    "SERVER_ADDR",
    "SERVER_PORT",
    "REQUEST_METHOD",
    "REQUEST_URI",
    "REQUEST_SCHEME",
    "HTTPS",
    "SSL_PROTOCOL",
    "SSL_CIPHER",
    "SSL_TLS_SNI",
    "SSL_SESSION_RESUMED",
    "SSL_CLIENT_VERIFY",
    "SSL_CLIENT_S_DN",
    "SSL_CLIENT_I_DN",
    "SSL_CLIENT_M_SERIAL",
    "SSL_CLIENT_CERT",
    "SCRIPT_NAME",
    "SCRIPT_FILENAME",
    "PATH_INFO",
    "PATH_TRANSLATED",
    "QUERY_STRING",
    "REMOTE_ADDR",
    "REMOTE_HOST",
    "REMOTE_PORT",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "AUTH_TYPE",
    "REMOTE_USER",
];

#[derive(Clone, Copy)]
pub struct Script<'a> {
    /// SCRIPT_NAME: the URL path that names the script.
    pub name: &'a str,
    /// SCRIPT_FILENAME: the script's file.
    pub filename: &'a Path,
    /// PATH_INFO: what follows the script in the URL path (decoded).
    pub path_info: &'a str,
}

/// What varies per request besides the request itself.
pub struct PerRequest<'a> {
    pub script: Script<'a>,
    /// The root PATH_TRANSLATED is under (`None`: the vhost's
    /// document_root; fastcgi gives its own `root`).
    pub path_root: Option<&'a Path>,
    /// CONTENT_LENGTH, when the body's length is known.
    pub content_length: Option<u64>,
    pub pass_authorization: bool,
    pub basic_remote_user: bool,
}

/// The whole environment for one request. Later entries win over earlier
/// ones of the same name when the child is spawned, so the meta-variables
/// come after the route's `env:`.
pub fn build(base: &[(String, Vec<u8>)], req: &Request, p: &PerRequest) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::with_capacity(base.len() + 40);
    v.extend_from_slice(base);
    let mut set = |k: &str, val: &[u8]| v.push((k.to_owned(), val.to_vec()));
    let t = p.script;
    let (maj, min) = req.version();
    set("SERVER_PROTOCOL", format!("HTTP/{maj}.{min}").as_bytes());
    let name = req.vhost().name();
    set(
        "SERVER_NAME",
        if name.is_empty() { req.host() } else { name }.as_bytes(),
    );
    let local = req.local_addr();
    set("SERVER_ADDR", local.ip().to_string().as_bytes());
    set("SERVER_PORT", local.port().to_string().as_bytes());
    set("REQUEST_METHOD", req.method().as_bytes());
    set("REQUEST_URI", req.target().as_bytes());
    set("REQUEST_SCHEME", req.scheme().as_bytes());
    // Only when on, as nginx's fastcgi_params and Apache: PHP code tests
    // `!empty($_SERVER['HTTPS'])`.
    if req.scheme() == "https" {
        set("HTTPS", b"on");
    }
    // SDK 1.2: what TLS negotiated, under Apache mod_ssl's names.
    if let Some(tls) = req.tls() {
        set("SSL_PROTOCOL", tls.version.as_bytes());
        set("SSL_CIPHER", tls.cipher.as_bytes());
        if let Some(sni) = &tls.sni {
            set("SSL_TLS_SNI", sni.as_bytes());
        }
        let resumed: &[u8] = if tls.resumed { b"Resumed" } else { b"Initial" };
        set("SSL_SESSION_RESUMED", resumed);
        match &tls.client_cert {
            Some(c) => {
                set("SSL_CLIENT_VERIFY", c.verify.as_bytes());
                set("SSL_CLIENT_S_DN", c.subject.as_bytes());
                set("SSL_CLIENT_I_DN", c.issuer.as_bytes());
                set("SSL_CLIENT_M_SERIAL", c.serial.as_bytes());
                set("SSL_CLIENT_CERT", c.pem.as_bytes());
            }
            None => set("SSL_CLIENT_VERIFY", b"NONE"),
        }
    }
    set("SCRIPT_NAME", t.name.as_bytes());
    set("SCRIPT_FILENAME", t.filename.as_os_str().as_encoded_bytes());
    set("PATH_INFO", t.path_info.as_bytes());
    if !t.path_info.is_empty() {
        let mut translated = p
            .path_root
            .unwrap_or(req.vhost().document_root())
            .as_os_str()
            .as_encoded_bytes()
            .to_vec();
        while translated.last() == Some(&b'/') {
            translated.pop();
        }
        translated.extend_from_slice(t.path_info.as_bytes());
        set("PATH_TRANSLATED", &translated);
    }
    set("QUERY_STRING", req.query().unwrap_or("").as_bytes());
    let peer = req.peer_addr();
    let ip = peer.ip().to_string();
    set("REMOTE_ADDR", ip.as_bytes());
    // No DNS look-up (RFC 3875 4.1.9 allows the address).
    set("REMOTE_HOST", ip.as_bytes());
    // Port 0: the address came from a proxy's X-Forwarded-For, which
    // gives no port.
    if peer.port() != 0 {
        set("REMOTE_PORT", peer.port().to_string().as_bytes());
    }
    if let Some(ct) = req.header_bytes("content-type") {
        set("CONTENT_TYPE", ct);
    }
    if let Some(n) = p.content_length {
        set("CONTENT_LENGTH", n.to_string().as_bytes());
    }
    // A user an access rule authenticated wins over the header's claim.
    if let Some(u) = req.user() {
        set("AUTH_TYPE", u.auth_type.as_bytes());
        set("REMOTE_USER", u.name.as_bytes());
    } else if let Some(user) = req
        .header("authorization")
        .filter(|_| p.basic_remote_user)
        .and_then(basic_user)
    {
        set("AUTH_TYPE", b"Basic");
        set("REMOTE_USER", user.as_bytes());
    }
    http_vars(req, p.pass_authorization, &mut v);
    v
}

/// One HTTP_* variable per header name, repeated headers joined with `, `.
fn http_vars(req: &Request, pass_authorization: bool, out: &mut Vec<(String, Vec<u8>)>) {
    let mut seen: Vec<String> = Vec::new();
    for (name, _) in req.headers() {
        let lower = name.to_ascii_lowercase();
        if seen.contains(&lower) {
            continue;
        }
        seen.push(lower.clone());
        // SECURITY: `X_Forwarded_For` and `X-Forwarded-For` would both
        // become HTTP_X_FORWARDED_FOR; a name with `_` could spoof one
        // set by a proxy in front, so it is dropped (as nginx and Apache do).
        if lower.contains('_') || !lower.bytes().all(|b| b.is_ascii_graphic()) {
            continue;
        }
        match lower.as_str() {
            // Already CONTENT_TYPE / CONTENT_LENGTH.
            "content-type" | "content-length" => continue,
            // SECURITY: "httpoxy" (CVE-2016-5385): HTTP_PROXY is read as
            // the proxy setting by many HTTP libraries.
            "proxy" => continue,
            // Credentials stay out unless the route asks for them.
            "authorization" if !pass_authorization => continue,
            "proxy-authorization" => continue,
            _ => {}
        }
        let var = format!("HTTP_{}", lower.to_ascii_uppercase().replace('-', "_"));
        let mut val: Vec<u8> = Vec::new();
        for (i, v) in req.header_all(name).enumerate() {
            if i > 0 {
                val.extend_from_slice(b", ");
            }
            val.extend_from_slice(v);
        }
        out.push((var, val));
    }
}

/// The user name of `Authorization: Basic <base64(user:password)>`.
fn basic_user(value: &str) -> Option<String> {
    let (scheme, cred) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(cred.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, _) = text.split_once(':')?;
    Some(user.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tamada_sdk::testing::TestRequest;

    #[test]
    fn per_request_names_every_variable_build_sets() {
        // fastcgi skips making its list unique when no fixed parameter
        // has one of these names: the list must be whole.
        let req = TestRequest::new("POST", "/a.php/more?x=1")
            .header("content-type", "text/plain")
            .header("authorization", "Basic dTpw")
            .header("x-thing", "1")
            .body(b"hi".to_vec());
        let names = req.with(|r| {
            let p = PerRequest {
                script: Script {
                    name: "/a.php",
                    filename: Path::new("/srv/a.php"),
                    path_info: "/more",
                },
                path_root: None,
                content_length: Some(2),
                pass_authorization: true,
                basic_remote_user: true,
            };
            build(&[], r, &p)
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        });
        assert!(names.iter().any(|n| n == "REMOTE_USER"), "{names:?}");
        for n in &names {
            assert!(
                n.starts_with("HTTP_") || PER_REQUEST.contains(&n.as_str()),
                "{n} is missing from PER_REQUEST"
            );
        }
    }
}
