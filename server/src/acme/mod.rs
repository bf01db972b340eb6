//! Automatic HTTPS: certificates for vhosts with `tls: { acme: true }`
//! from an ACME CA (RFC 8555), obtained and renewed by the server.
//!
//! - `store.rs`: what the loops read (each vhost's certificate slot, the
//!   pending challenges) and the files of `state_dir`;
//! - `client.rs`: the HTTP client under instant-acme (blocking ureq on
//!   the ACME thread);
//! - `manager.rs`: the ACME thread (orders, renewals);
//! - `fleet.rs`: what a fleet shares in `state_dir` (the order lock, the
//!   challenges any server may be asked to answer).
//!
//! The core answers the challenges: HTTP-01 in `proto/h1/answer.rs` and
//! `proto/h2/stream.rs` before any route, TLS-ALPN-01 in
//! `transport/tls.rs` before the SNI picks a vhost. docs/acme.md is the
//! admin's guide.

pub mod client;
pub mod fleet;
pub mod manager;
pub mod store;

use crate::config::acme::AcmeConf;
use std::path::Path;
use std::sync::Arc;

/// The resolver of an ACME vhost's TLS configuration. Its slot is loaded
/// from `state_dir` the first time (a restart with a valid stored
/// certificate serves it at once and orders nothing).
pub fn resolver(conf: &AcmeConf, vhost: &str) -> Arc<store::AcmeResolver> {
    let slot = store::slot(vhost);
    if slot.is_empty() {
        let dir = store::cert_dir(&conf.ca_dir(), vhost);
        match slot.load_file(&dir) {
            Ok(true) => log::debug!("ACME: vhost {vhost}: stored certificate loaded"),
            Ok(false) => {}
            Err(e) => log::warn!("ACME: vhost {vhost}: {e}"),
        }
    }
    Arc::new(store::AcmeResolver(slot))
}

/// Makes `state_dir` (0700) before the privilege drop and gives it to
/// the serving user (`owner`: uid, gid), so that the ACME thread can
/// write there once the server runs as that user.
pub fn prepare_state_dir(conf: &AcmeConf, owner: Option<(u32, u32)>) -> Result<(), String> {
    let d = &conf.state_dir;
    let existed = d.is_dir();
    // Missing parents as any folder (0755: the serving user must reach
    // its own), the folder itself 0700.
    if let Some(parent) = d.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("acme.state_dir: {}: {e}", parent.display()))?;
    }
    store::make_dir(d).map_err(|e| format!("acme.state_dir: {}: {e}", d.display()))?;
    if let Some((uid, gid)) = owner
        && !existed
    {
        std::os::unix::fs::chown(d, Some(uid), Some(gid))
            .map_err(|e| format!("acme.state_dir: {}: {e}", d.display()))?;
    }
    Ok(())
}

/// `tamada --certs`: every managed vhost's names, issuer, expiry,
/// renewal time, last renewal and last error, from `state_dir` (no
/// network).
pub fn report(conf: &AcmeConf, vhosts: &[crate::config::VhostConf]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "CA: {}", conf.directory);
    let _ = writeln!(out, "state_dir: {}", conf.ca_dir().display());
    let wants = manager::Want::all(vhosts);
    if wants.is_empty() {
        let _ = writeln!(out, "no vhost has tls: {{ acme: true }}");
        return out;
    }
    for w in wants {
        let dir = store::cert_dir(&conf.ca_dir(), &w.vhost);
        let _ = writeln!(out, "\nvhost {}", w.vhost);
        let _ = writeln!(out, "  names:        {}", w.names.join(", "));
        let file = dir.join(store::CURRENT);
        let cert = if file.exists() {
            describe_file(&file)
        } else {
            Err("not obtained yet".to_owned())
        };
        match &cert {
            Ok(i) => {
                let _ = writeln!(out, "  certificate:  serial {}", i.serial);
                let _ = writeln!(out, "  covers:       {}", i.names.join(", "));
                let _ = writeln!(out, "  issuer:       {}", i.issuer);
                let _ = writeln!(
                    out,
                    "  valid:        {} to {}",
                    manager::fmt_time(i.not_before),
                    manager::fmt_time(i.not_after)
                );
            }
            Err(e) => {
                let _ = writeln!(out, "  certificate:  none ({e})");
            }
        }
        let meta = manager::read_meta(&dir).unwrap_or_default();
        let t = |s: Option<u64>| {
            manager::fmt_time(
                s.map(|s| std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s)),
            )
        };
        let renew = meta.renew_at.or_else(|| {
            cert.as_ref()
                .ok()
                .map(|i| manager::unix(manager::default_renewal(i)))
        });
        let _ = writeln!(out, "  renewal at:   {}", t(renew));
        if let Some((a, b)) = meta.ari_window {
            let _ = writeln!(out, "  CA's window:  {} to {}", t(Some(a)), t(Some(b)));
        }
        let _ = writeln!(out, "  last renewal: {}", t(meta.last_ok));
        if !meta.without.is_empty()
            && let Some(until) = meta.without_until
            && until > manager::unix(std::time::SystemTime::now())
        {
            let _ = writeln!(
                out,
                "  left out:     {} (until {}; a reload tries again)",
                meta.without.join(", "),
                t(Some(until))
            );
        }
        match &meta.last_error {
            Some(e) => {
                let _ = writeln!(
                    out,
                    "  last error:   {e} (at {}, {} failed attempt(s) in a row)",
                    t(meta.last_attempt),
                    meta.failures
                );
            }
            None => {
                let _ = writeln!(out, "  last error:   -");
            }
        }
    }
    out
}

fn describe_file(f: &Path) -> Result<store::CertInfo, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let leaf = CertificateDer::pem_file_iter(f)
        .map_err(|e| format!("{}: {e}", f.display()))?
        .next()
        .ok_or_else(|| format!("{}: no certificate", f.display()))?
        .map_err(|e| format!("{}: {e}", f.display()))?;
    store::describe(leaf.as_ref())
}
