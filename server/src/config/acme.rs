//! server.yaml's `acme:` block: where certificates for vhosts with
//! `tls: { acme: true }` come from (an ACME CA such as Let's Encrypt),
//! and where they are kept. Checked offline here (`tamada -t`); the
//! certificates themselves are the business of `server/src/acme/`.

use super::Secs;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Let's Encrypt's production directory, the default.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous
/// rate limits): for trying a setup out.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// server.yaml's `acme:` block.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeConf {
    /// The CA's ACME directory URL (default: Let's Encrypt production;
    /// staging is https://acme-staging-v02.api.letsencrypt.org/directory).
    pub directory: String,
    /// A contact address for the account (expiry and incident mail).
    pub email: Option<String>,
    /// An extra root certificate (PEM) trusted for the directory's own
    /// HTTPS: a private or test CA. The public roots stay trusted.
    pub ca_root: Option<PathBuf>,
    /// Where the account key, certificates and keys are kept (folders
    /// 0700, files 0600, owned by the serving user). Several servers may
    /// share it (a shared filesystem): each certificate is ordered once.
    pub state_dir: PathBuf,
    /// External account binding, for CAs that require one (ZeroSSL,
    /// Google, private CAs): the key ID and the base64url HMAC key the
    /// CA gave.
    pub eab: Option<Eab>,
    /// The key type of certificates: `ecdsa-p256` (default),
    /// `ecdsa-p384`, `rsa2048` or `rsa4096`.
    pub key_type: KeyType,
    /// The challenges to use, in order of preference (default both:
    /// `http-01` on the vhost's plain port, `tls-alpn-01` on its HTTPS
    /// port). A CA validates on ports 80 and 443.
    pub challenges: Vec<ChallengeKind>,
    /// The longest wait between two attempts after failures (default
    /// `1d`); waits double from a few seconds up to it, with jitter.
    pub retry_max: Secs,
    /// A certificate profile the CA offers (draft-aaron-acme-profiles):
    /// at Let's Encrypt `classic` (the default, 90 days), `tlsserver`, or
    /// `shortlived` (6 days). Default: none (the CA's default).
    pub profile: Option<String>,
}

/// External account binding (RFC 8555 section 7.3.4).
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Eab {
    /// The key identifier the CA gave.
    pub kid: String,
    /// The HMAC key the CA gave, base64url (padding allowed).
    pub hmac: String,
}

/// A certificate's key type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    #[default]
    EcdsaP256,
    EcdsaP384,
    Rsa2048,
    Rsa4096,
}

/// An ACME challenge type the core answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
pub enum ChallengeKind {
    /// `/.well-known/acme-challenge/TOKEN` on the plain port (RFC 8555).
    #[serde(rename = "http-01")]
    Http01,
    /// The `acme-tls/1` ALPN on the HTTPS port (RFC 8737).
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl Default for AcmeConf {
    fn default() -> Self {
        AcmeConf {
            directory: LETS_ENCRYPT.into(),
            email: None,
            ca_root: None,
            state_dir: PathBuf::from("/var/lib/tamada/acme"),
            eab: None,
            key_type: KeyType::EcdsaP256,
            challenges: vec![ChallengeKind::Http01, ChallengeKind::TlsAlpn01],
            retry_max: Secs(Duration::from_secs(86_400)),
            profile: None,
        }
    }
}

impl AcmeConf {
    /// Checks what can be checked offline. `Err` is `(key, message)`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let d = &self.directory;
        let rest = d.strip_prefix("https://").ok_or((
            "directory",
            format!("acme.directory: `{d}` is not an https:// URL (RFC 8555 requires HTTPS)"),
        ))?;
        if rest.is_empty() || rest.starts_with('/') || d.contains(char::is_whitespace) {
            return Err(("directory", format!("acme.directory: `{d}` has no host")));
        }
        if let Some(e) = &self.email
            && (!e.contains('@') || e.contains([' ', ',', '\n']) || e.starts_with("mailto:"))
        {
            return Err((
                "email",
                format!("acme.email: `{e}` is not an address (write it without mailto:)"),
            ));
        }
        if let Some(r) = &self.ca_root {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let n = CertificateDer::pem_file_iter(r)
                .map_err(|e| ("ca_root", format!("acme.ca_root: {}: {e}", r.display())))?
                .filter(Result::is_ok)
                .count();
            if n == 0 {
                return Err((
                    "ca_root",
                    format!("acme.ca_root: {}: no PEM certificate in it", r.display()),
                ));
            }
        }
        if let Some(eab) = &self.eab {
            if eab.kid.is_empty() {
                return Err(("kid", "acme.eab.kid: must not be empty".into()));
            }
            if eab_key(&eab.hmac).is_none() {
                return Err((
                    "hmac",
                    "acme.eab.hmac: not a base64url key (as the CA gave it)".into(),
                ));
            }
        }
        if self.challenges.is_empty() {
            return Err((
                "challenges",
                "acme.challenges: name at least one of http-01, tls-alpn-01".into(),
            ));
        }
        if let Some(p) = &self.profile
            && (p.is_empty()
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'))
        {
            return Err((
                "profile",
                format!("acme.profile: `{p}` is not a profile name (as `shortlived`)"),
            ));
        }
        if self.retry_max.0 < Duration::from_secs(10) {
            return Err(("retry_max", "acme.retry_max: at least 10s".into()));
        }
        if !self.state_dir.is_absolute() {
            return Err((
                "state_dir",
                format!(
                    "acme.state_dir: `{}` must be an absolute path",
                    self.state_dir.display()
                ),
            ));
        }
        Ok(())
    }

    /// The folder of this CA's account and certificates inside
    /// `state_dir`: one per directory URL, so that staging and
    /// production never mix.
    pub fn ca_dir(&self) -> PathBuf {
        self.state_dir.join(ca_folder(&self.directory))
    }

    /// Whether a challenge type is enabled.
    pub fn allows(&self, k: ChallengeKind) -> bool {
        self.challenges.contains(&k)
    }
}

/// The folder name for a directory URL: its host and path, with every
/// character but letters, digits, `.` and `-` made `_`.
pub fn ca_folder(directory: &str) -> String {
    let s = directory
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The EAB HMAC key's bytes (base64url, padded or not; some CAs hand out
/// standard base64).
pub fn eab_key(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let t = s.trim().trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(t)
        .or_else(|_| STANDARD.decode(s.trim()))
        .ok()
        .filter(|k| !k.is_empty())
}

/// Whether `name` can be in an ACME order for HTTP-01 or TLS-ALPN-01: a
/// DNS name of letters, digits and hyphens, with a dot, no wildcard and
/// no IP address. `Err` says why not.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.starts_with("*.") || name.contains('*') {
        return Err(format!(
            "`{name}` is a wildcard: a CA validates wildcards only by DNS-01, which tamada does not answer"
        ));
    }
    if name.parse::<std::net::IpAddr>().is_ok()
        || name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::Ipv6Addr>()
            .is_ok()
    {
        return Err(format!(
            "`{name}` is an IP address: give the vhost a DNS name for ACME"
        ));
    }
    if name.ends_with('.') {
        return Err(format!(
            "`{name}` ends with a dot: write it without (a CA refuses the absolute form)"
        ));
    }
    let n = name;
    if n.len() > 253 || !n.contains('.') {
        return Err(format!(
            "`{name}` is not a public DNS name (a CA issues only for names with a dot, as example.com)"
        ));
    }
    for label in n.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(format!(
                "`{name}` is not a valid DNS name (label `{label}`)"
            ));
        }
    }
    Ok(())
}

/// Whether the serving user (`uid`, `gids`; the current user when none)
/// can create files in `dir`. A `dir` not there yet is made at start:
/// by root (and given to the serving user), else by the current user,
/// who must then be able to write in its nearest existing parent. `Err`
/// says why not.
pub fn check_writable(dir: &Path, serve_as: Option<(u32, &[u32])>) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let mut p = dir;
    let m = loop {
        match std::fs::metadata(p) {
            Ok(m) => break m,
            Err(_) => match p.parent() {
                Some(q) => p = q,
                None => return Err(format!("{}: no such folder", dir.display())),
            },
        }
    };
    if !m.is_dir() {
        return Err(format!("{}: not a folder", p.display()));
    }
    // SAFETY: getuid and getgid have no preconditions.
    let (me, my_gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let (uid, gids): (u32, Vec<u32>) = if p != dir {
        // It will be made at start.
        if me == 0 {
            return Ok(());
        }
        (me, my_groups(my_gid))
    } else {
        match serve_as {
            Some((u, g)) => (u, g.to_vec()),
            None => (me, my_groups(my_gid)),
        }
    };
    let mode = m.mode();
    // The owner's bits for the owner, the group's for a member, else the
    // others' (as the kernel decides).
    let bits = if m.uid() == uid {
        mode >> 6
    } else if gids.contains(&m.gid()) {
        mode >> 3
    } else {
        mode
    };
    let ok = uid == 0 || bits & 0o3 == 0o3;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{}: uid {uid} cannot create files there (owner {}, group {}, mode {:o})",
            p.display(),
            m.uid(),
            m.gid(),
            mode & 0o777
        ))
    }
}

/// The current process's group and supplementary groups.
fn my_groups(gid: u32) -> Vec<u32> {
    let mut v = vec![gid];
    if let Ok(s) = std::fs::read_to_string("/proc/self/status")
        && let Some(l) = s.lines().find(|l| l.starts_with("Groups:"))
    {
        v.extend(
            l["Groups:".len()..]
                .split_whitespace()
                .filter_map(|g| g.parse::<u32>().ok()),
        );
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("example.com").is_ok());
        assert!(check_name("www.example.co.uk").is_ok());
        assert!(check_name("*.example.com").is_err());
        assert!(check_name("127.0.0.1").is_err());
        assert!(check_name("::1").is_err());
        assert!(check_name("localhost").is_err());
        assert!(check_name("bad_name.example.com").is_err());
        assert!(check_name("-a.example.com").is_err());
        assert!(check_name("example.com.").is_err());
    }

    #[test]
    fn folders_and_keys() {
        assert_eq!(
            ca_folder(LETS_ENCRYPT),
            "acme-v02.api.letsencrypt.org_directory"
        );
        assert_eq!(
            ca_folder("https://127.0.0.1:14000/dir"),
            "127.0.0.1_14000_dir"
        );
        assert_eq!(eab_key("AAEC").unwrap(), vec![0, 1, 2]);
        assert!(eab_key("!!").is_none());
        let mut c = AcmeConf::default();
        assert!(c.check().is_ok());
        c.directory = "http://x/dir".into();
        assert!(c.check().unwrap_err().1.contains("https"));
    }
}
