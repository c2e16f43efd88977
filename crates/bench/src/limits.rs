//! Every bound and deadline of the bench in one place, with compile-time checks of how they
//! relate. (Setup sizes and the evening-mix weights stay with the scenarios in `main.rs` and
//! `workload.rs`: they shape the load, they do not bound it.)

use std::time::Duration;

/// Per-call deadline of the client (its own retries and failover happen inside it).
pub const CALL_DEADLINE: Duration = Duration::from_secs(5);
/// Re-sends (same request id) after an outcome-unknown error, on top of the client's own retries
/// within its deadline.
pub const MAX_RESENDS: u32 = 2;
/// Time bound of `hongbao_client::settle` here. Never the binding one: MAX_RESENDS + 1 calls of
/// at most CALL_DEADLINE each end well before it.
pub const SETTLE_WITHIN: Duration = Duration::from_secs(60);
const _: () = assert!((MAX_RESENDS as u64 + 1) * CALL_DEADLINE.as_secs() < SETTLE_WITHIN.as_secs());

/// Highest latency a histogram holds (µs). Longer than any op can take (client deadline times
/// re-sends); a longer value is clamped, never dropped.
pub const MAX_LATENCY_US: u64 = 120_000_000;
const _: () = assert!(SETTLE_WITHIN.as_micros() <= MAX_LATENCY_US as u128, "every settled op's latency fits the histogram");
/// The time series stops growing here (seconds), so a runaway run cannot eat memory.
pub const MAX_SECONDS: usize = 3_600;

/// Most shares a packet may have (the ledger's `max_count`).
pub const MAX_SHARES: usize = 100;
/// evening-mix keeps at most this many packets open for grabbing; older ones are forgotten
/// (left to expire and be refunded), so the pool is bounded.
pub const POOL_MAX: usize = 512;

/// Clients per region: each is one connection per router.
pub const CLIENTS_PER_REGION: usize = 4;
/// Setup calls in flight at once.
pub const SETUP_PARALLEL: usize = 48;
/// Audit polls while waiting for credits in flight to land.
pub const AUDIT_POLLS: usize = 40;
