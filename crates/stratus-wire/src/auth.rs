//! `mysql_native_password` (<https://mariadb.com/kb/en/connection/#mysql_native_password-plugin>).
//!
//! The client answers a 20-byte scramble with `SHA1(pw) XOR SHA1(scramble ‖ SHA1(SHA1(pw)))`.
//! Knowing the stored `SHA1(SHA1(pw))`, the proxy XORs the reply with `SHA1(scramble ‖ stored)`
//! to get `SHA1(pw)`, checks it by hashing it once more, and can then answer any other scramble
//! for the same password: that is how it logs into the backend as the client's own user.

use sha1::{Digest, Sha1};

pub const NATIVE_PLUGIN: &str = "mysql_native_password";
pub const CACHING_SHA2_PLUGIN: &str = "caching_sha2_password";
pub const SCRAMBLE_LEN: usize = 20;

/// `SHA1(password)`: what the proxy learns from a successful login and logs in with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Stage1(pub [u8; 20]);

impl std::fmt::Debug for Stage1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stage1(..)")
    }
}

fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// The reply a client sends for `password` (empty password: empty reply).
pub fn scramble_reply(stage1: &Stage1, scramble: &[u8]) -> [u8; 20] {
    let stage2 = sha1(&[&stage1.0]);
    let mask = sha1(&[scramble, &stage2]);
    let mut out = stage1.0;
    out.iter_mut().zip(mask).for_each(|(o, m)| *o ^= m);
    out
}

pub fn stage1_of(password: &[u8]) -> Stage1 {
    Stage1(sha1(&[password]))
}

/// `SHA1(SHA1(password))`: what the server and the catalog keep.
pub fn stage2_of(stage1: &Stage1) -> [u8; 20] {
    sha1(&[&stage1.0])
}

/// Checks a client's reply against the stored `SHA1(SHA1(pw))`; on success returns `SHA1(pw)`.
/// Constant-time in the comparison, so timing says nothing about how close a guess was.
pub fn verify(stored_stage2: &[u8; 20], scramble: &[u8], reply: &[u8]) -> Option<Stage1> {
    if reply.len() != 20 {
        return None;
    }
    let mask = sha1(&[scramble, stored_stage2]);
    let mut stage1 = [0u8; 20];
    for i in 0..20 {
        stage1[i] = reply[i] ^ mask[i];
    }
    let check = sha1(&[&stage1]);
    let diff = check
        .iter()
        .zip(stored_stage2)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    (diff == 0).then_some(Stage1(stage1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_recovers_stage1() {
        let stage1 = stage1_of(b"secret");
        let stage2 = sha1(&[&stage1.0]);
        let scramble = *b"abcdefghijklmnopqrst";
        let reply = scramble_reply(&stage1, &scramble);
        assert_eq!(verify(&stage2, &scramble, &reply), Some(stage1));
        let mut wrong = reply;
        wrong[0] ^= 1;
        assert_eq!(verify(&stage2, &scramble, &wrong), None);
        assert_eq!(verify(&stage2, &scramble, &reply[..19]), None);
        // Another scramble, same password: the proxy's backend login.
        let other = *b"01234567890123456789";
        assert_eq!(
            verify(&stage2, &other, &scramble_reply(&stage1, &other)),
            Some(stage1)
        );
    }
}
