//! TLS session ticket keys shared by several instances: derived from a
//! file of random bytes (`ticket_key_file`), so that every server given
//! the same file encrypts and decrypts the same tickets, as nginx's
//! `ssl_session_ticket_key`. Unlike a fixed key, the key changes every
//! 12 hours by itself: a ticket is sealed with the key of the current
//! period (HKDF-SHA256 of the file's secret and the period's number) and
//! opened with that one or the previous one, so tickets live 12 to 24
//! hours and every instance rotates at the same moment without talking.
//!
//! A ticket: the period (4 bytes, big-endian), a random nonce (12), and
//! the sealed state with its AES-256-GCM tag.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use std::path::Path;

/// How long one key seals tickets.
const PERIOD_SECS: u64 = 12 * 3600;

/// Tickets sealed with keys derived from a shared file.
pub struct FileTicketer {
    secret: [u8; 32],
}

impl std::fmt::Debug for FileTicketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileTicketer")
    }
}

impl FileTicketer {
    /// Reads the file; errors name it.
    pub fn load(path: &Path) -> Result<FileTicketer, String> {
        let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if data.len() < 32 {
            return Err(format!(
                "{}: {} bytes; a ticket key file needs at least 32 random bytes (openssl rand 80 > {})",
                path.display(),
                data.len(),
                path.display()
            ));
        }
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &data);
        let mut secret = [0u8; 32];
        secret.copy_from_slice(d.as_ref());
        Ok(FileTicketer { secret })
    }

    fn key(&self, period: u32) -> Option<LessSafeKey> {
        let prk = Salt::new(HKDF_SHA256, b"tamada session ticket key").extract(&self.secret);
        let info = period.to_be_bytes();
        let info = [&info[..]];
        let okm = prk.expand(&info, &AES_256_GCM).ok()?;
        Some(LessSafeKey::new(UnboundKey::from(okm)))
    }

    fn period_now() -> u32 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        (now / PERIOD_SECS) as u32
    }

    fn seal_at(&self, period: u32, plain: &[u8]) -> Option<Vec<u8>> {
        let key = self.key(period)?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let p = period.to_be_bytes();
        let mut out = Vec::with_capacity(4 + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&p);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&p),
            &mut body,
        )
        .ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }

    fn open_at(&self, now: u32, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() < 4 + NONCE_LEN + 16 {
            return None;
        }
        let p: [u8; 4] = ticket[..4].try_into().ok()?;
        let period = u32::from_be_bytes(p);
        if period != now && period.checked_add(1) != Some(now) {
            return None;
        }
        let nonce: [u8; NONCE_LEN] = ticket[4..4 + NONCE_LEN].try_into().ok()?;
        let mut body = ticket[4 + NONCE_LEN..].to_vec();
        let key = self.key(period)?;
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&p),
                &mut body,
            )
            .ok()?;
        Some(plain.to_vec())
    }
}

impl rustls::server::ProducesTickets for FileTicketer {
    fn enabled(&self) -> bool {
        true
    }
    fn lifetime(&self) -> u32 {
        PERIOD_SECS as u32
    }
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal_at(Self::period_now(), plain)
    }
    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open_at(Self::period_now(), cipher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticketer(byte: u8) -> FileTicketer {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        std::fs::write(&p, [byte; 80]).unwrap();
        FileTicketer::load(&p).unwrap()
    }

    #[test]
    fn the_same_file_opens_the_same_tickets_for_two_periods() {
        let (a, b, other) = (ticketer(7), ticketer(7), ticketer(8));
        let t = a.seal_at(100, b"state").unwrap();
        assert_eq!(b.open_at(100, &t).unwrap(), b"state");
        assert_eq!(b.open_at(101, &t).unwrap(), b"state");
        assert!(b.open_at(102, &t).is_none());
        assert!(b.open_at(99, &t).is_none());
        assert!(other.open_at(100, &t).is_none());
        let mut bad = t.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(b.open_at(100, &bad).is_none());
        assert!(b.open_at(100, &t[..10]).is_none());
    }

    #[test]
    fn a_short_file_is_refused_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("short");
        std::fs::write(&p, [1; 16]).unwrap();
        let e = FileTicketer::load(&p).unwrap_err();
        assert!(e.contains("short: 16 bytes"), "{e}");
    }
}
