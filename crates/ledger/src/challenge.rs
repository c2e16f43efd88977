//! The one-time code of a new-device challenge.
//!
//! The code is never stored: every replica (and the notifier that pushes it to the known phone)
//! recomputes it as HMAC-SHA256 under the cluster's shared `challenge_key`, over the challenge
//! id, the user and the operation. Reading the ledger's records (a snapshot, a backup, a view)
//! therefore reveals no code, and a code confirms only the operation it was issued for.

use crate::types::{ChallengeOp, UserId};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Separates this MAC from any other use of the key; bump the version if the encoding changes.
const DOMAIN: &[u8] = b"hongbao/challenge-code/v1";

/// Codes are six digits: `0..1_000_000`.
pub const CODE_SPACE: u32 = 1_000_000;

/// The six-digit code for `challenge_id` issued to `user` for `op`.
///
/// MAC input, fixed-width big-endian so no two inputs share an encoding: the domain tag, then
/// challenge id (8 bytes), user (8), operation kind tag (1), amount in cents (8), counterparty
/// (8). The first 8 bytes of the MAC, big-endian, modulo 10^6 (the bias of 2^64 mod 10^6 is
/// below 10^-13).
pub fn challenge_code(key: &[u8; 32], challenge_id: u64, user: UserId, op: &ChallengeOp) -> u32 {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(DOMAIN);
    mac.update(&challenge_id.to_be_bytes());
    mac.update(&user.to_be_bytes());
    mac.update(&[op.kind.tag()]);
    mac.update(&op.amount.0.to_be_bytes());
    mac.update(&op.counterparty.to_be_bytes());
    let tag = mac.finalize().into_bytes();
    let head = u64::from_be_bytes(tag[..8].try_into().expect("SHA-256 gives 32 bytes"));
    (head % CODE_SPACE as u64) as u32
}

/// Compares two codes without a data-dependent branch.
pub(crate) fn codes_equal(a: u32, b: u32) -> bool {
    std::hint::black_box(a ^ b) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Cents;
    use crate::types::ChallengeKind;

    fn op(kind: ChallengeKind, amount: u64, counterparty: UserId) -> ChallengeOp {
        ChallengeOp { kind, amount: Cents(amount), counterparty }
    }

    #[test]
    fn the_code_is_six_digits_and_depends_on_every_input() {
        let key = [7u8; 32];
        let base = challenge_code(&key, 1, 42, &op(ChallengeKind::Withdraw, 200_00, 0));
        assert!(base < CODE_SPACE);
        assert_eq!(base, challenge_code(&key, 1, 42, &op(ChallengeKind::Withdraw, 200_00, 0)), "deterministic");
        let others = [
            challenge_code(&[8u8; 32], 1, 42, &op(ChallengeKind::Withdraw, 200_00, 0)),
            challenge_code(&key, 2, 42, &op(ChallengeKind::Withdraw, 200_00, 0)),
            challenge_code(&key, 1, 43, &op(ChallengeKind::Withdraw, 200_00, 0)),
            challenge_code(&key, 1, 42, &op(ChallengeKind::Transfer, 200_00, 0)),
            challenge_code(&key, 1, 42, &op(ChallengeKind::Withdraw, 200_01, 0)),
            challenge_code(&key, 1, 42, &op(ChallengeKind::Withdraw, 200_00, 9)),
        ];
        for c in others {
            assert_ne!(c, base);
        }
    }
}
