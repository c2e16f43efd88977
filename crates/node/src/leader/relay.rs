//! The cross-shard relay: on each shard's leader, delivers outbox credits to their destination
//! shards exactly once (the destination skips sequence numbers it has applied), then marks them
//! delivered at the source.

use crate::error::{ErrorKind, HostError};
use crate::host::system_id;
use crate::host::Host;
use crate::limits::{RELAY_BATCH, RELAY_BATCH_BYTES};
use hongbao_ledger::{Code, Command, RequestId, ShardId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const RELAY_EVERY: Duration = Duration::from_millis(10);
const RELAY_BACKOFF_MAX: Duration = Duration::from_secs(2);
const RELAY_CALL_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn run(host: Arc<Host>, shard_id: ShardId, mut stop: watch::Receiver<bool>) {
    let mut backoff = RELAY_EVERY;
    while let Some(leads) = super::next_turn(&host, shard_id, backoff, &mut stop).await {
        if !leads {
            backoff = RELAY_EVERY * 10;
            continue;
        }
        let mut failed = false;
        let mut backlog = 0u64;
        for dest in host.topology().shards.iter().map(|s| s.id).filter(|d| *d != shard_id) {
            // From the replicated delivered mark: the scan does not wade through the tombstones
            // of every record delivered before.
            let store = host.store(shard_id);
            let mut after = hongbao_ledger::view::delivered(&store, dest);
            if crate::runtime::planted(crate::runtime::Bug::RelaySkipsASequence) {
                after += 1;
            }
            let mut batch = hongbao_ledger::view::outbox(&store, dest, after, RELAY_BATCH);
            let mut bytes = 0usize;
            let fits = batch
                .iter()
                .position(|e| {
                    bytes = bytes.saturating_add(e.encoded_len());
                    bytes > RELAY_BATCH_BYTES
                })
                .unwrap_or(batch.len())
                .max(1);
            batch.truncate(fits);
            if batch.is_empty() {
                continue;
            }
            backlog += batch.len() as u64;
            let last = batch.last().expect("non-empty").seq;
            let credit = Command::Credit { source: shard_id, entries: batch };
            let id = system_id(b'c', shard_id, dest as u64, last);
            match deliver(&host, dest, id, credit).await {
                Ok(()) => {
                    let mark = Command::MarkDelivered { dest, up_to_seq: last };
                    if let Err(d) = host.propose(shard_id, system_id(b'd', shard_id, dest as u64, last), mark).await {
                        tracing::debug!(shard = shard_id, dest, msg = %d.message, "mark delivered failed; will redo");
                        failed = true;
                    } else {
                        metrics::counter!(crate::metrics::RELAY_DELIVERED).increment(1);
                    }
                }
                Err(e) => {
                    tracing::debug!(shard = shard_id, dest, msg = %e.message, "credit delivery failed; will retry");
                    failed = true;
                }
            }
        }
        metrics::gauge!(crate::metrics::RELAY_BACKLOG, "shard" => shard_id.to_string()).set(backlog as f64);
        backoff = if failed { (backoff * 2).clamp(Duration::from_millis(50), RELAY_BACKOFF_MAX) } else { RELAY_EVERY };
    }
}

/// Proposes a credit on the destination shard's leader, wherever it is (`propose_on_leader`).
/// The error says why, for the log; the relay retries either way.
async fn deliver(host: &Host, dest: ShardId, id: RequestId, cmd: Command) -> Result<(), HostError> {
    let o = host.propose_on_leader(dest, id, cmd, RELAY_CALL_TIMEOUT).await?;
    if o.code == Code::Ok {
        Ok(())
    } else {
        Err(HostError::new(ErrorKind::Ledger(o.code), dest, format!("credit rejected by shard {dest}: {:?}", o.code)))
    }
}
