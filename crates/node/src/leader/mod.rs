//! Work each shard's leader does on its own, one task per shard and kind: the expiry sweeper,
//! the cross-shard relay, leadership placement and finishing slot moves left half-way; and a
//! rejoining replica's watch. Each reads only replicated state and proposes commands, so a new
//! leader simply resumes where the old one stopped. `main` starts them from one list
//! (`Task::ALL`) through `supervise`, which keeps them running for every replica hosted here,
//! those opened online included.

pub mod placement;
pub mod rejoin;
pub mod relay;
pub mod slot_moves;
pub mod sweeper;

use crate::host::Host;
use hongbao_ledger::ShardId;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One kind of per-shard task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
    /// Refunds expired packets (`sweeper`).
    Sweeper,
    /// Delivers outbox credits to other shards (`relay`).
    Relay,
    /// Moves leadership where it belongs (`placement`).
    Placement,
    /// Finishes slot moves left half-way (`slot_moves`).
    SlotMoves,
    /// Gives a replica that started empty its vote back once caught up (`rejoin`).
    RejoinWatch,
}

impl Task {
    /// Every per-shard task, as `main` starts them.
    pub const ALL: [Task; 5] = [Task::Sweeper, Task::Relay, Task::Placement, Task::SlotMoves, Task::RejoinWatch];

    /// Whether the task has work on `shard`'s replica here (a rejoin watch only while it rejoins).
    fn applies(self, host: &Host, shard: ShardId) -> bool {
        match self {
            Task::RejoinWatch => host.rejoin.is_rejoining(shard),
            _ => true,
        }
    }

    fn spawn(self, host: Arc<Host>, shard: ShardId, stop: watch::Receiver<bool>) -> JoinHandle<()> {
        match self {
            Task::Sweeper => tokio::spawn(sweeper::run(host, shard, stop)),
            Task::Relay => tokio::spawn(relay::run(host, shard, stop)),
            Task::Placement => tokio::spawn(placement::run(host, shard, stop)),
            Task::SlotMoves => tokio::spawn(slot_moves::resume(host, shard, stop)),
            Task::RejoinWatch => tokio::spawn(rejoin::watch(host, shard, stop)),
        }
    }
}

/// Keeps `tasks` running for every replica hosted here until `stop`: each starts when its
/// replica opens (at start or online), and again if the replica is opened again after its task
/// ended (a task ends by itself when its replica closes: `next_turn` finds none).
pub async fn supervise(host: Arc<Host>, tasks: &'static [Task], mut stop: watch::Receiver<bool>) {
    let mut opened = host.replicas_changed();
    let mut running: HashMap<(ShardId, Task), JoinHandle<()>> = HashMap::new();
    loop {
        running.retain(|_, h| !h.is_finished());
        for r in host.replica_list() {
            for task in tasks {
                if running.contains_key(&(r.id, *task)) || !task.applies(&host, r.id) {
                    continue;
                }
                running.insert((r.id, *task), task.spawn(host.clone(), r.id, stop.clone()));
            }
        }
        tokio::select! {
            biased; // a fixed order, which a seeded simulation can replay (`runtime`)
            changed = opened.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}

/// One turn of a leader task: waits `period`, then says whether this node leads `shard` now.
/// None ends the task: the node is stopping, or it hosts no replica of the shard.
pub async fn next_turn(host: &Host, shard: ShardId, period: Duration, stop: &mut watch::Receiver<bool>) -> Option<bool> {
    tokio::select! {
        biased; // a fixed order, which a seeded simulation can replay (`runtime`)
        _ = tokio::time::sleep(period) => {},
        _ = stop.changed() => return None,
    }
    let replica = host.replica(shard).ok()?;
    Some(host.is_leader(&replica))
}
