//! The periodic checkpoint: every `CHECKPOINT_EVERY` the state column family is flushed
//! (`Db::checkpoint`), so after a crash openraft re-applies at most that much of the log, plus
//! what RocksDB's own flushes (a full memtable) and the snapshot builder's checkpoints did not
//! already cover. Runs on the blocking pool: a flush waits for disk writes.
//!
//! Every replica applies the same writes, so without care every node would flush at the same
//! moment and the whole shard would stall together (the p99.9 spikes of docs/benchmarks.md, #30).
//! Each node checkpoints at its own phase of the period, taken from the wall clock and its id
//! (`phase`), whenever the nodes started.

use crate::storage::Db;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the state is made durable. Bounds the log a restart re-applies (at the storm's rate,
/// a few seconds of entries) and the number of small flushed files (one per period).
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

/// Where in each period node `node` checkpoints: the fraction of the period that is the
/// fractional part of `node` times the golden ratio (Fibonacci hashing), so a few consecutive ids
/// sit far apart.
pub fn phase(node: u64) -> Duration {
    let period = CHECKPOINT_EVERY.as_millis() as u64;
    let fraction = node.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    Duration::from_millis((fraction * period) >> 32)
}

/// How long from `now_ms` (wall clock, ms since the epoch) until node `node`'s next checkpoint.
fn until_next(node: u64, now_ms: u64) -> Duration {
    let period = CHECKPOINT_EVERY.as_millis() as u64;
    let into = (now_ms + period - phase(node).as_millis() as u64) % period;
    Duration::from_millis(period - into)
}

/// Checkpoints `db` at node `node`'s phase of every period of `clock` (the node's wall clock).
pub fn spawn(db: Arc<Db>, node: u64, clock: Arc<crate::clock::Clock>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let now_ms = clock.now_ms();
            tokio::select! {
                biased; // a fixed order, which a seeded simulation can replay (`runtime`)
                _ = tokio::time::sleep(until_next(node, now_ms)) => {},
                _ = stop.changed() => return,
            }
            let started = tokio::time::Instant::now();
            let d = db.clone();
            match crate::runtime::blocking(move || d.checkpoint()).await {
                Ok(Ok(())) => {
                    metrics::counter!(crate::metrics::CHECKPOINTS).increment(1);
                    metrics::histogram!(crate::metrics::CHECKPOINT_SECONDS).record(started.elapsed().as_secs_f64());
                }
                // The state stays in memory and the log keeps it re-playable: retry next period.
                Ok(Err(e)) => tracing::error!(error = %e, "checkpoint failed"),
                Err(e) => tracing::error!(error = %e, "checkpoint task failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_of_one_shard_checkpoint_at_phases_at_least_a_tenth_of_the_period_apart() {
        let period = CHECKPOINT_EVERY.as_millis() as u64;
        for ids in [[1u64, 2, 3], [4, 5, 6], [7, 8, 9], [1, 4, 7], [2, 5, 8], [3, 6, 9]] {
            let mut p: Vec<u64> = ids.iter().map(|&n| phase(n).as_millis() as u64).collect();
            p.sort();
            let gaps = [p[1] - p[0], p[2] - p[1], p[0] + period - p[2]];
            assert!(gaps.iter().all(|&g| g >= period / 10), "nodes {ids:?}: phases {p:?}");
        }
    }

    #[test]
    fn the_next_checkpoint_is_within_one_period_and_lands_on_the_nodes_phase() {
        let period = CHECKPOINT_EVERY.as_millis() as u64;
        for node in 1..20u64 {
            for now in [0u64, 1, 4_999, 1_765_000_123_456, 1_765_000_125_000] {
                let wait = until_next(node, now).as_millis() as u64;
                assert!(wait >= 1 && wait <= period, "node {node} at {now}: {wait}");
                assert_eq!((now + wait) % period, phase(node).as_millis() as u64, "node {node} at {now}");
            }
        }
    }
}
