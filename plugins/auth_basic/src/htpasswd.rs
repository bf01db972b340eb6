//! htpasswd files: `user:hash` lines, as Apache's `htpasswd` writes them.
//! Hashes: bcrypt (`$2y$`, `$2a$`, `$2b$`: `htpasswd -B`), SHA-256-crypt
//! and SHA-512-crypt (`$5$`, `$6$`: `-2`, `-5`), Apache's MD5-crypt
//! (`$apr1$`: `-m`, the old default) and unsalted SHA-1 (`{SHA}`: `-s`).
//! Plain text and DES crypt are refused: they protect nothing.

use base64::Engine;
use md5::{Digest as _, Md5};
use std::collections::HashMap;
use subtle::ConstantTimeEq;

/// One user's stored hash.
#[derive(Debug, Clone)]
pub enum Hash {
    Bcrypt(String),
    Sha256Crypt(String),
    Sha512Crypt(String),
    Apr1 { salt: String, hash: String },
    Sha1(Vec<u8>),
}

impl Hash {
    /// Reads a stored hash; `Err` names the format when it is not one
    /// of the above.
    pub fn parse(s: &str) -> Result<Hash, String> {
        if s.starts_with("$2y$") || s.starts_with("$2a$") || s.starts_with("$2b$") {
            return Ok(Hash::Bcrypt(s.to_owned()));
        }
        if s.starts_with("$5$") {
            return Ok(Hash::Sha256Crypt(s.to_owned()));
        }
        if s.starts_with("$6$") {
            return Ok(Hash::Sha512Crypt(s.to_owned()));
        }
        if let Some(rest) = s.strip_prefix("$apr1$") {
            let (salt, hash) = rest
                .split_once('$')
                .ok_or("an $apr1$ hash without its salt")?;
            return Ok(Hash::Apr1 {
                salt: salt.to_owned(),
                hash: hash.to_owned(),
            });
        }
        if let Some(b64) = s.strip_prefix("{SHA}") {
            let d = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| "a {SHA} hash that is not base64")?;
            if d.len() != 20 {
                return Err("a {SHA} hash that is not 20 bytes".into());
            }
            return Ok(Hash::Sha1(d));
        }
        if s.starts_with("$1$") {
            return Err("MD5-crypt ($1$) is not supported: use htpasswd -B (bcrypt)".into());
        }
        Err(
            "an unknown hash format (plain text or DES crypt?): use htpasswd -B (bcrypt), -5, -2, -m or -s"
                .into(),
        )
    }

    /// Whether `password` matches (constant time where the library or
    /// this code compares).
    pub fn verify(&self, password: &str) -> bool {
        match self {
            Hash::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
            Hash::Sha256Crypt(h) => sha_crypt::sha256_check(password, h).is_ok(),
            Hash::Sha512Crypt(h) => sha_crypt::sha512_check(password, h).is_ok(),
            Hash::Apr1 { salt, hash } => {
                let got = apr1(password.as_bytes(), salt.as_bytes());
                got.as_bytes().ct_eq(hash.as_bytes()).into()
            }
            Hash::Sha1(d) => {
                let got = sha1::Sha1::digest(password.as_bytes());
                got.as_slice().ct_eq(d.as_slice()).into()
            }
        }
    }

    /// Whether verifying costs enough to belong off the event loop.
    pub fn is_slow(&self) -> bool {
        !matches!(self, Hash::Sha1(_))
    }
}

/// Users and their hashes.
pub type Users = HashMap<String, Hash>;

/// Parses a file's text; errors name the line.
pub fn parse(text: &str) -> Result<Users, String> {
    let mut users = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (user, hash) = line
            .split_once(':')
            .ok_or_else(|| format!("line {}: not `user:hash`", n + 1))?;
        let hash = Hash::parse(hash.trim()).map_err(|e| format!("line {} ({user}): {e}", n + 1))?;
        users.insert(user.to_owned(), hash);
    }
    Ok(users)
}

const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Apache's MD5-crypt (`apr_md5_encode`), the part after `$apr1$salt$`.
pub fn apr1(pw: &[u8], salt: &[u8]) -> String {
    let salt = &salt[..salt.len().min(8)];
    let mut ctx = Md5::new();
    ctx.update(pw);
    ctx.update(b"$apr1$");
    ctx.update(salt);
    let mut alt = Md5::new();
    alt.update(pw);
    alt.update(salt);
    alt.update(pw);
    let fin = alt.finalize();
    let mut left = pw.len();
    while left > 0 {
        ctx.update(&fin[..left.min(16)]);
        left = left.saturating_sub(16);
    }
    let mut i = pw.len();
    while i != 0 {
        if i & 1 != 0 {
            ctx.update([0u8]);
        } else {
            ctx.update(&pw[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();
    for i in 0..1000 {
        let mut c = Md5::new();
        if i & 1 != 0 {
            c.update(pw);
        } else {
            c.update(fin);
        }
        if i % 3 != 0 {
            c.update(salt);
        }
        if i % 7 != 0 {
            c.update(pw);
        }
        if i & 1 != 0 {
            c.update(fin);
        } else {
            c.update(pw);
        }
        fin = c.finalize();
    }
    let mut out = String::with_capacity(22);
    let mut to64 = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(ITOA64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    let b = |i: usize| fin[i] as u32;
    to64((b(0) << 16) | (b(6) << 8) | b(12), 4);
    to64((b(1) << 16) | (b(7) << 8) | b(13), 4);
    to64((b(2) << 16) | (b(8) << 8) | b(14), 4);
    to64((b(3) << 16) | (b(9) << 8) | b(15), 4);
    to64((b(4) << 16) | (b(10) << 8) | b(5), 4);
    to64(b(11), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apr1_matches_apache() {
        // htpasswd -nbm user password, with the salt fixed.
        assert_eq!(apr1(b"password", b"xxxxxxxx"), "dxHfLAsjHkDRmG83UXe8K0");
        let h = Hash::parse("$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00").unwrap();
        assert!(h.verify("password"));
        assert!(!h.verify("Password"));
    }

    #[test]
    fn every_format_verifies() {
        let users = parse(
            "# a comment\n\
             b:$2y$05$nC6nErr9XZJuMJ57WyCob.EuZEjylDt2KaHfbfOtyb.EgL1I2jCVa\n\
             s:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n\
             \n",
        )
        .unwrap();
        assert!(users["b"].verify("password"));
        assert!(!users["b"].verify("passw0rd"));
        assert!(users["s"].verify("password"));
        assert!(!users["s"].verify(""));
    }

    #[test]
    fn bad_lines_are_named() {
        let e = parse("a:$2y$05$x\nb:secret\n").unwrap_err();
        assert!(
            e.contains("line 2 (b)") && e.contains("unknown hash format"),
            "{e}"
        );
        assert!(parse("justaname\n").unwrap_err().contains("line 1"));
        assert!(parse("a:$1$abc$def\n").unwrap_err().contains("MD5-crypt"));
    }
}
