//! Passwords: generation, and the `mysql_native_password` hash the catalog stores.
//!
//! The catalog keeps `SHA1(SHA1(password))`, exactly what MariaDB keeps in `mysql.global_priv`
//! ([mysql_native_password](https://mariadb.com/kb/en/authentication-plugin-mysql_native_password/)).
//! It is enough to verify a client's scramble reply, and the reply then yields `SHA1(password)`,
//! with which the proxy logs into the backend as the same user; the password itself is never kept.

use sha1::{Digest, Sha1};
use std::fmt;

/// `SHA1(SHA1(password))`, shown the way MariaDB shows it: `*` and 40 upper-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NativeHash(pub [u8; 20]);

impl NativeHash {
    pub fn of_password(password: &str) -> Self {
        let stage1 = Sha1::digest(password.as_bytes());
        Self(Sha1::digest(stage1).into())
    }

    /// Parses `*<40 hex>` as printed by `PASSWORD()` and `SHOW GRANTS`.
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_prefix('*')?;
        if hex.len() != 40 {
            return None;
        }
        let mut out = [0u8; 20];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(out))
    }
}

impl fmt::Display for NativeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02X}"))
    }
}

impl fmt::Debug for NativeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hashes are credentials too: keep them out of logs.
        f.write_str("NativeHash(..)")
    }
}

/// `bytes` random bytes as lowercase hex: an id no one can guess or collide with by chance.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random number generator is unavailable");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random password of 24 characters from `[A-Za-z0-9]` (about 142 bits).
pub fn random_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(24);
    let mut buf = [0u8; 64];
    while out.len() < 24 {
        getrandom::fill(&mut buf).expect("the OS random number generator is unavailable");
        // Rejection sampling keeps the distribution uniform: 248 = 4 * 62.
        out.extend(
            buf.iter()
                .filter(|&&b| b < 248)
                .map(|&b| ALPHABET[(b % 62) as usize] as char),
        );
    }
    out.truncate(24);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_mariadb_password_function() {
        // SELECT PASSWORD('secret') on MariaDB 10.11.
        let h = NativeHash::of_password("secret");
        assert_eq!(h.to_string(), "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7");
        assert_eq!(NativeHash::parse(&h.to_string()), Some(h));
    }

    #[test]
    fn parse_rejects_garbage() {
        for bad in [
            "",
            "*",
            "14E65567ABDB5135D0CFD9A70B3032C179A49EE7",
            "*zz",
            "*€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€",
        ] {
            assert_eq!(NativeHash::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn random_passwords_differ_and_use_the_alphabet() {
        let (a, b) = (random_password(), random_password());
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
    }
}
