//! A rejoining replica's watch (`raft::rejoin`): started with the shard's leader tasks on a
//! replica that began empty, it gives the replica its vote back as soon as it has applied up to
//! the commit index it must reach.

use crate::host::Host;
use hongbao_ledger::ShardId;
use openraft::async_runtime::WatchReceiver;
use std::sync::Arc;
use tokio::sync::watch;

/// Ends a shard's rejoin as soon as its applied index reaches the target, whatever delivered
/// the entries: the check in the append handler runs before they are applied, so if the leader
/// then goes quiet (or dies) no later append would ever make it again, and the replica would
/// refuse its vote to every candidate, leaving the shard with no majority to elect.
pub async fn watch(host: Arc<Host>, shard: ShardId, mut stop: watch::Receiver<bool>) {
    let Ok(replica) = host.replica(shard) else { return };
    let mut metrics = replica.raft.metrics();
    loop {
        if !host.rejoin.is_rejoining(shard) {
            return;
        }
        let applied = metrics.borrow_and_update().last_applied.map(|l| l.index).unwrap_or(0);
        if host.rejoin.caught_up(shard, applied) {
            host.rejoined(shard);
            replica.raft.runtime_config().elect(true);
            return;
        }
        tokio::select! {
            biased; // a fixed order, which a seeded simulation can replay (`runtime`)
            changed = metrics.changed() => if changed.is_err() { return },
            // The target is set by an append, which changes no metric when it carries nothing.
            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {},
            _ = stop.changed() => return,
        }
    }
}
