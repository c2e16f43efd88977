//! The payment PIN: six ASCII digits, kept only as a salted slow hash (PBKDF2-HMAC-SHA256).
//!
//! A million possible PINs cannot be protected by any hash against someone holding the hash;
//! the slow hash only makes a leak expensive to exploit in bulk. What protects a PIN is the
//! ledger's limit on wrong attempts.

use ring::{hmac, pbkdf2};
use std::num::NonZeroU32;

/// PBKDF2 rounds per hash. Measured on the 2-core development machine: about 5 ms per hash
/// (`hash_cost` below), paid once per SetPin and once per payment checking a PIN: compute it
/// before proposing to Raft, never inside the single-threaded apply loop.
pub const PIN_ITERATIONS: u32 = 20_000;
pub const PIN_DIGITS: usize = 6;

/// Exactly six ASCII digits.
pub fn valid_pin(pin: &str) -> bool {
    pin.len() == PIN_DIGITS && pin.bytes().all(|b| b.is_ascii_digit())
}

/// The salt for a user's new PIN: an HMAC (keyed with the cluster's challenge key) of user and
/// request id. Deterministic, so a SetPin retried on another leader builds the same Raft
/// command, and still unique per user and request.
pub fn pin_salt(key: &[u8; 32], user: u64, request_id: &[u8]) -> [u8; 16] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(b"hongbao pin salt v1\0"); // the challenge key has other uses: separate this one
    ctx.update(&user.to_be_bytes());
    ctx.update(&(request_id.len() as u64).to_be_bytes());
    ctx.update(request_id);
    let tag = ctx.sign();
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&tag.as_ref()[..16]);
    salt
}

fn iterations() -> NonZeroU32 {
    NonZeroU32::new(PIN_ITERATIONS).expect("nonzero constant")
}

/// Callers check [`valid_pin`] first; this hashes whatever it is given.
pub fn hash_pin(pin: &str, salt: &[u8; 16]) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations(), salt, pin.as_bytes(), &mut out);
    out
}

/// Constant-time comparison (ring's PBKDF2 verify), so timing tells nothing about the hash.
pub fn verify_pin(pin: &str, salt: &[u8; 16], hash: &[u8; 32]) -> bool {
    pbkdf2::verify(pbkdf2::PBKDF2_HMAC_SHA256, iterations(), salt, pin.as_bytes(), hash).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_six_ascii_digits_are_a_pin() {
        for ok in ["000000", "123456", "999999"] {
            assert!(valid_pin(ok), "{ok}");
        }
        for bad in ["", "12345", "1234567", "12345a", " 12345", "12345\n", "١٢٣٤٥٦", "+12345", "-12345"] {
            assert!(!valid_pin(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_hashed_pin_verifies_and_no_other_does() {
        let salt = pin_salt(&[7; 32], 1001, b"req-1");
        let hash = hash_pin("123456", &salt);
        assert!(verify_pin("123456", &salt, &hash));
        assert!(!verify_pin("123457", &salt, &hash));
        assert!(!verify_pin("123456", &pin_salt(&[7; 32], 1002, b"req-1"), &hash), "the salt matters");
        assert_ne!(hash, hash_pin("123456", &pin_salt(&[7; 32], 1001, b"req-2")), "same PIN, other salt, other hash");
    }

    #[test]
    fn the_salt_is_deterministic_and_differs_per_user_request_and_key() {
        let key = [1u8; 32];
        let s = pin_salt(&key, 1, b"abc");
        assert_eq!(s, pin_salt(&key, 1, b"abc"), "a retried SetPin gets the same salt");
        assert_ne!(s, pin_salt(&key, 2, b"abc"));
        assert_ne!(s, pin_salt(&key, 1, b"abd"));
        assert_ne!(s, pin_salt(&[2u8; 32], 1, b"abc"));
        // Lengths are framed: (user, "ab" + "c") never collides with a shifted split.
        assert_ne!(pin_salt(&key, 1, b""), pin_salt(&key, 1, b"\0"));
    }

    /// Measured cost of one hash (run with --nocapture to see it).
    #[test]
    fn hash_cost() {
        let salt = [3u8; 16];
        let n = 20;
        let t = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(hash_pin("123456", &salt));
        }
        println!("hash_pin with {PIN_ITERATIONS} iterations: {:?} per hash", t.elapsed() / n);
    }
}
