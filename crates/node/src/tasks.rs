//! Work each shard leader does on its own, one task per shard and kind: the expiry sweeper,
//! the cross-shard relay, leadership placement and finishing slot moves left half-way (and a
//! rejoining replica's watch). Each reads only replicated state and
//! proposes commands, so a new leader simply resumes where the old one stopped.

use crate::host::Host;
use hongbao_ledger::{RequestId, ShardId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Starts one shard's tasks (when its replica opens). They end with `stop`, or when the
/// replica closes (`next_turn` finds none).
pub fn spawn_shard(host: Arc<Host>, shard: ShardId, stop: watch::Receiver<bool>) {
    tokio::spawn(crate::sweeper::run(host.clone(), shard, stop.clone()));
    tokio::spawn(crate::relay::run(host.clone(), shard, stop.clone()));
    tokio::spawn(crate::placement::run(host.clone(), shard, stop.clone()));
    tokio::spawn(crate::slot_move::resume(host.clone(), shard, stop.clone()));
    if host.rejoin.is_rejoining(shard) {
        tokio::spawn(crate::rejoin::watch(host.clone(), shard, stop.clone()));
    }
}

/// A request id for a system command, derived from what it does (these commands are idempotent
/// by their own sequence numbers / state, so the id only has to be well-formed and stable).
pub fn system_id(tag: u8, shard: ShardId, a: u64, b: u64) -> RequestId {
    let mut id = [0u8; 16];
    id[0] = 0xff;
    id[1] = tag;
    id[2..4].copy_from_slice(&(shard as u16).to_be_bytes());
    id[4..10].copy_from_slice(&a.to_be_bytes()[2..]);
    id[10..16].copy_from_slice(&b.to_be_bytes()[2..]);
    RequestId(id)
}

/// One turn of a leader task: waits `period`, then says whether this node leads `shard` now.
/// None ends the task: the node is stopping, or it hosts no replica of the shard.
pub async fn next_turn(host: &Host, shard: ShardId, period: Duration, stop: &mut watch::Receiver<bool>) -> Option<bool> {
    tokio::select! {
        _ = tokio::time::sleep(period) => {},
        _ = stop.changed() => return None,
    }
    let replica = host.replica(shard).ok()?;
    Some(host.is_leader(&replica))
}
