//! The periodic checkpoint: every `CHECKPOINT_EVERY` the state column family is flushed
//! (`Db::checkpoint`), so after a crash openraft re-applies at most that much of the log, plus
//! what RocksDB's own flushes (a full memtable) and the snapshot builder's checkpoints did not
//! already cover. Runs on the blocking pool: a flush waits for disk writes.

use crate::storage::Db;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the state is made durable. Bounds the log a restart re-applies (at the storm's rate,
/// a few seconds of entries) and the number of small flushed files (one per period).
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

pub fn spawn(db: Arc<Db>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(CHECKPOINT_EVERY) => {},
                _ = stop.changed() => return,
            }
            let started = std::time::Instant::now();
            let d = db.clone();
            match tokio::task::spawn_blocking(move || d.checkpoint()).await {
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
