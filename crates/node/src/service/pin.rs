//! The payment PIN on the shard's leader. The typed PIN is checked against the account's salted
//! slow hash before a spend is proposed, so only the verdict (`PinCheck`), never the PIN, enters
//! the Raft log; wrong tries and the lock are counted by the ledger, in replicated state.
//!
//! A slow hash costs milliseconds of CPU. A user who just typed the right PIN is remembered here
//! for a few minutes (in memory only, under a per-process random key), so a burst of payments
//! does not pay for the hash each time.

use crate::error::{ErrorKind, HostError};
use crate::host::Host;
use crate::limits::MAX_HASHES_IN_FLIGHT;
use hongbao_ledger::{view, Code, PinCheck, ShardId, UserId};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a verified PIN is remembered by this leader.
const REMEMBER: Duration = Duration::from_secs(300);
/// Users remembered at most; past it the memory is dropped whole (and rebuilt by use).
const MAX_REMEMBERED: usize = 100_000;

pub struct PinCache {
    key: std::collections::hash_map::RandomState,
    seen: Mutex<HashMap<UserId, (u64, Instant)>>,
}

impl Default for PinCache {
    fn default() -> Self {
        Self::new()
    }
}

impl PinCache {
    pub fn new() -> PinCache {
        PinCache { key: std::collections::hash_map::RandomState::new(), seen: Mutex::new(HashMap::new()) }
    }

    /// A keyed digest of (typed PIN, stored hash): equal only for the PIN that was verified
    /// against this very hash.
    fn digest(&self, pin: &str, stored: &[u8; 32]) -> u64 {
        let mut h = self.key.build_hasher();
        h.write(pin.as_bytes());
        h.write(stored);
        h.finish()
    }

    fn remembers(&self, user: UserId, d: u64) -> bool {
        let seen = self.seen.lock().expect("pin cache lock");
        matches!(seen.get(&user), Some((x, at)) if *x == d && at.elapsed() < REMEMBER)
    }

    fn remember(&self, user: UserId, d: u64) {
        let mut seen = self.seen.lock().expect("pin cache lock");
        if seen.len() >= MAX_REMEMBERED {
            seen.clear();
        }
        seen.insert(user, (d, Instant::now()));
    }

    /// Forget a user (a wrong try): the next right PIN is hashed again.
    fn forget(&self, user: UserId) {
        self.seen.lock().expect("pin cache lock").remove(&user);
    }
}

static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_HASHES_IN_FLIGHT);

fn hash_slot(shard: ShardId) -> Result<tokio::sync::SemaphorePermit<'static>, HostError> {
    HASHING.try_acquire().map_err(|_| {
        metrics::counter!(crate::metrics::OVERLOADED).increment(1);
        HostError::new(ErrorKind::Overloaded, shard, format!("{MAX_HASHES_IN_FLIGHT} payment-PIN checks in flight on this node"))
    })
}

/// The leader's verdict on a typed PIN, or the refusal that needs no proposal (locked, not set,
/// no such user). The ledger checks the lock again when it applies the spend. The outer error:
/// too many PIN checks in flight (no verdict; retry).
pub async fn verdict(host: &Host, pins: &PinCache, shard: ShardId, user: UserId, pin: &str) -> Result<Result<PinCheck, Code>, HostError> {
    let Some(state) = view::pin_state(&host.store(shard), user) else {
        // No wallet here: moved away with its slot (retryable), or none at all.
        return Ok(Err(view::moved(&host.store(shard), user).map(|(code, _)| code).unwrap_or(Code::UnknownUser)));
    };
    if host.ledger_time_ms(shard) < state.locked_until_ms {
        return Ok(Err(Code::PinLocked));
    }
    let Some(record) = state.pin else { return Ok(Err(Code::PinNotSet)) };
    if !hongbao_auth::valid_pin(pin) {
        return Ok(Ok(PinCheck::Wrong));
    }
    let d = pins.digest(pin, &record.hash);
    if pins.remembers(user, d) {
        return Ok(Ok(PinCheck::Verified));
    }
    let typed = pin.to_string();
    let slot = hash_slot(shard)?;
    // The slow hash runs off the async workers, so it never stalls Raft or other requests.
    let ok = tokio::task::spawn_blocking(move || hongbao_auth::verify_pin(&typed, &record.salt, &record.hash))
        .await
        .expect("pin hash task does not panic");
    drop(slot);
    if ok {
        pins.remember(user, d);
        Ok(Ok(PinCheck::Verified))
    } else {
        pins.forget(user);
        metrics::counter!(crate::metrics::WRONG_PINS).increment(1);
        Ok(Ok(PinCheck::Wrong))
    }
}

/// The record a new PIN is stored as: a salt that is the same on every leader for the same
/// request (so a retried SetPin is the same command), and the slow hash.
pub async fn new_record(
    challenge_key: [u8; 32],
    shard: ShardId,
    user: UserId,
    request_id: [u8; 16],
    pin: String,
) -> Result<([u8; 16], [u8; 32]), HostError> {
    let _slot = hash_slot(shard)?;
    Ok(tokio::task::spawn_blocking(move || {
        let salt = hongbao_auth::pin_salt(&challenge_key, user, &request_id);
        (salt, hongbao_auth::hash_pin(&pin, &salt))
    })
    .await
    .expect("pin hash task does not panic"))
}

#[cfg(test)]
mod bound_tests {
    use super::*;

    /// The slow hashes in flight are bounded: past the limit a PIN check is refused at once
    /// as OVERLOADED (retryable), and a slot freed is taken again.
    #[test]
    fn pin_hashes_past_the_limit_are_refused_as_overloaded_not_queued() {
        let held: Vec<_> = (0..MAX_HASHES_IN_FLIGHT).map(|_| hash_slot(1).expect("a free slot")).collect();
        let e = hash_slot(1).expect_err("every slot is taken");
        assert_eq!(e.kind, ErrorKind::Overloaded);
        drop(held);
        assert!(hash_slot(1).is_ok(), "freed slots are taken again");
    }
}
