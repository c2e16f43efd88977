//! The placement loop on each shard's leader: moves leadership home (failback), out of a
//! drained region, or off this node when its clock is not trusted or its ledger config differs
//! from its peers' — by leader transfer, so client requests see at most a NotLeader that
//! routers retry. The policy (where leadership belongs) is `cluster::placement`.

use crate::cluster::placement::caught_up;
use crate::host::Host;
use hongbao_ledger::ShardId;
use hongbao_proto::v1::ReplicaRole;
use hongbao_topology::NodeId;
use openraft::async_runtime::WatchReceiver;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often a leader checks whether its leadership belongs elsewhere.
const PLACEMENT_EVERY: Duration = Duration::from_millis(1000);
/// Bound on one probe of another replica (its status, its ledger config).
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The leader's loop for one shard: moves leadership home (failback), out of a drained region,
/// or off this node when its clock is not trusted (which also stops it standing for election).
pub async fn run(host: Arc<Host>, shard_id: ShardId, mut stop: watch::Receiver<bool>) {
    let mut elects = true;
    while let Some(leads) = super::next_turn(&host, shard_id, PLACEMENT_EVERY, &mut stop).await {
        let untrusted = host.clock.trusted().err();
        if elects != untrusted.is_none() {
            elects = untrusted.is_none();
            tracing::warn!(shard = shard_id, elects, why = ?untrusted, "standing for election: {elects}");
            if let Ok(r) = host.replica(shard_id) {
                r.raft.runtime_config().elect(elects);
            }
        }
        if !leads {
            continue;
        }
        if let Ok(r) = host.replica(shard_id) {
            let term = r.raft.metrics().borrow_watched().current_term;
            if r.door.admits(term, &r.voters()).await.is_err() {
                // No majority has this node's ledger config: another replica leads in its place
                // (one that does not share this node's config, so not asked about it).
                if let Some(to) = any_caught_up(&host, shard_id, false).await {
                    tracing::warn!(shard = shard_id, to, "handing leadership away: this node's ledger config differs from its peers'");
                    if let Err(e) = host.transfer_leader(shard_id, to).await {
                        tracing::warn!(shard = shard_id, to, msg = %e.message, "leader transfer failed");
                    }
                }
                continue;
            }
        }
        if let Some(why) = untrusted {
            if let Some(to) = any_caught_up(&host, shard_id, true).await {
                tracing::warn!(shard = shard_id, to, why = %why.0, "handing leadership away: this node's clock is not trusted");
                if let Err(e) = host.transfer_leader(shard_id, to).await {
                    tracing::warn!(shard = shard_id, to, msg = %e.message, "leader transfer failed");
                }
            }
            continue;
        }
        let Some(target) = target(&host, shard_id).await else { continue };
        tracing::info!(shard = shard_id, from = host.node_id, to = target, "moving leadership (failback or drain)");
        if let Err(e) = host.transfer_leader(shard_id, target).await {
            tracing::warn!(shard = shard_id, to = target, msg = %e.message, "leader transfer failed");
        }
    }
}

/// Where this shard's leadership should go, if not here: home replicas first (failback), then,
/// if this region is drained, any replica outside drained regions; the first that answers a
/// probe and has caught up.
async fn target(host: &Host, shard_id: ShardId) -> Option<NodeId> {
    let map = host.topology();
    let topo = map.shard(shard_id)?;
    let here_drained = host.placement.drained_regions().contains(&host.region);
    if host.region == topo.home && !here_drained {
        return None;
    }
    let last = host.replica(shard_id).ok()?.raft.metrics().borrow_watched().last_log_index.unwrap_or(0);
    let mut cands = host.placement.home_candidates(shard_id);
    if here_drained {
        cands.extend(host.placement.undrained_replicas(shard_id));
    }
    for node in cands.into_iter().filter(|n| *n != host.node_id) {
        if probe_applied(host, node, shard_id, true).await.is_some_and(|applied| caught_up(applied, last)) {
            return Some(node);
        }
    }
    None
}

/// Any other replica that answers a probe and has caught up (and, if `same_config`, runs this
/// node's ledger config).
async fn any_caught_up(host: &Host, shard_id: ShardId, same_config: bool) -> Option<NodeId> {
    let last = host.replica(shard_id).ok()?.raft.metrics().borrow_watched().last_log_index.unwrap_or(0);
    let map = host.topology();
    for node in map.shard(shard_id)?.replicas.iter().copied().filter(|n| *n != host.node_id) {
        if probe_applied(host, node, shard_id, same_config).await.is_some_and(|applied| caught_up(applied, last)) {
            return Some(node);
        }
    }
    None
}

/// How far `node`'s replica of the shard has applied, if it answers in time and may lead: a
/// node whose clock is not trusted would never be elected, and a leader that started handing
/// over to it would stop taking writes until an election; a node with another ledger config
/// would refuse to propose (asked if `same_config`), and a replica that stopped (fail-stop)
/// cannot lead.
async fn probe_applied(host: &Host, node: NodeId, shard_id: ShardId, same_config: bool) -> Option<u64> {
    let n = host.peers.status(node, PROBE_TIMEOUT).await?.nodes.into_iter().next()?;
    if !n.clock_untrusted.is_empty() {
        return None;
    }
    let s = n.shards.iter().find(|s| s.shard == shard_id && s.role != ReplicaRole::Shutdown as i32)?;
    let fingerprint = host.config.fingerprint();
    if same_config && host.peers.config_agrees(node, shard_id, fingerprint, PROBE_TIMEOUT).await != Some(true) {
        return None;
    }
    Some(s.applied)
}
