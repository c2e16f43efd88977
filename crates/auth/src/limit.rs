//! Per-caller rate limits at the boundary: one token bucket per key (user id, identity, ...),
//! with a bounded number of keys so a flood of distinct keys cannot grow memory without end.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

pub struct RateLimiter<K> {
    per_second: f64,
    burst: f64,
    max_keys: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl<K> std::fmt::Debug for RateLimiter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("per_second", &self.per_second)
            .field("burst", &self.burst)
            .field("max_keys", &self.max_keys)
            .finish()
    }
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `burst` requests at once, refilled at `per_second`; at most `max_keys` keys remembered.
    pub fn new(per_second: f64, burst: f64, max_keys: usize) -> Self {
        RateLimiter {
            per_second: per_second.max(0.0),
            burst: burst.max(1.0),
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `key`'s bucket; false when it is empty.
    pub fn allow(&self, key: &K) -> bool {
        self.allow_at(key, Instant::now())
    }

    /// [`allow`](Self::allow) at a given instant (tests; callers with their own clock).
    pub fn allow_at(&self, key: &K, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            self.evict(&mut buckets, now);
        }
        let b = buckets.entry(key.clone()).or_insert(Bucket { tokens: self.burst, last: now });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_second).min(self.burst);
        b.last = b.last.max(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes room: first forget buckets that have refilled (forgetting them changes nothing),
    /// then, if that freed less than a quarter, the least recently used quarter. Sweeping a
    /// quarter at a time keeps the cost per new key constant on average.
    fn evict(&self, buckets: &mut HashMap<K, Bucket>, now: Instant) {
        let (rate, burst) = (self.per_second, self.burst);
        buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst);
        let target = self.max_keys - self.max_keys.div_ceil(4);
        if buckets.len() > target {
            let mut ages: Vec<(Instant, K)> = buckets.iter().map(|(k, b)| (b.last, k.clone())).collect();
            let excess = buckets.len() - target;
            ages.select_nth_unstable_by_key(excess - 1, |(t, _)| *t);
            for (_, k) in &ages[..excess] {
                buckets.remove(k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_refusal_then_refill() {
        let l = RateLimiter::new(10.0, 5.0, 100);
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(l.allow_at(&1u64, t0), "burst request {i}");
        }
        assert!(!l.allow_at(&1u64, t0), "burst spent");
        assert!(l.allow_at(&2u64, t0), "another key has its own bucket");
        assert!(!l.allow_at(&1u64, t0 + Duration::from_millis(50)), "half a token is not enough");
        assert!(l.allow_at(&1u64, t0 + Duration::from_millis(100)), "one token after 100 ms at 10/s");
        assert!(!l.allow_at(&1u64, t0 + Duration::from_millis(100)));
        let later = t0 + Duration::from_secs(60);
        for _ in 0..5 {
            assert!(l.allow_at(&1u64, later));
        }
        assert!(!l.allow_at(&1u64, later), "refill stops at the burst");
    }

    #[test]
    fn the_number_of_keys_stays_bounded_and_busy_keys_stay_limited() {
        let l = RateLimiter::new(1.0, 2.0, 64);
        let t0 = Instant::now();
        assert!(l.allow_at(&u64::MAX, t0) && l.allow_at(&u64::MAX, t0));
        for k in 0..10_000u64 {
            let now = t0 + Duration::from_micros(k);
            l.allow_at(&k, now);
            assert!(l.len() <= 64);
            if k % 16 == 0 {
                // The busy key is used recently, so eviction passes it over.
                assert!(!l.allow_at(&u64::MAX, now), "still limited at key {k}");
            }
        }
        assert!(l.allow_at(&u64::MAX, t0 + Duration::from_secs(2)));
    }
}
