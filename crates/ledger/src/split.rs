//! The lucky split (double-average rule), deterministic on every replica.
//!
//! With `R` cents and `n` shares left, the last share takes `R`; otherwise the share is drawn
//! uniformly from `[1, min(2R/n, R-(n-1))]`. The draw uses ChaCha8 seeded from the packet's seed
//! and the grab index, with our own rejection sampling (so a change in `rand`'s range algorithm
//! can never change a replayed split).

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The upper bound of the draw: min(2R/n, R-(n-1)).
pub fn bound(remaining: u64, left: u32) -> u64 {
    assert!(left >= 1 && remaining >= left as u64, "at least one cent per share left");
    if left == 1 {
        return remaining;
    }
    (2 * (remaining as u128) / left as u128).min((remaining - (left as u64 - 1)) as u128) as u64
}

pub fn share(seed: u64, index: u32, remaining: u64, left: u32) -> u64 {
    let max = bound(remaining, left);
    if left == 1 {
        return remaining;
    }
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..12].copy_from_slice(&index.to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(s);
    let v = 1 + uniform(&mut rng, max);
    debug_assert!(v >= 1 && v <= max);
    v
}

/// Uniform in `[0, n)` by rejection: no modulo bias.
fn uniform(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    assert!(n > 0);
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let x = rng.next_u64();
        if x < zone {
            return x % n;
        }
    }
}

/// FNV-1a 64: a stable hash for seeds and fingerprints (std's hasher is randomized).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_share_is_within_bounds_and_shares_sum_to_the_total() {
        for seed in 0..2000u64 {
            let total = 1 + seed * 37 % 20_000;
            let count = (1 + seed % 100).min(total) as u32;
            let mut r = total;
            let mut sum = 0;
            for i in 0..count {
                let left = count - i;
                let b = bound(r, left);
                let s = share(seed, i, r, left);
                assert!(s >= 1 && s <= b, "share {s} outside [1, {b}]");
                r -= s;
                sum += s;
                assert!(r >= (left - 1) as u64, "a cent is left for every share still to come");
            }
            assert_eq!(sum, total);
        }
    }

    #[test]
    fn the_split_is_a_pure_function_of_seed_and_index() {
        assert_eq!(share(42, 3, 1000, 7), share(42, 3, 1000, 7));
        let differs = (0..50u64).any(|s| share(s, 0, 10_000, 10) != share(s + 1, 0, 10_000, 10));
        assert!(differs);
    }
}
