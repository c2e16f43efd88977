//! Online membership: the steps `hongbao cluster add-node / remove-node / replace-node` are
//! made of. Each step is idempotent (a re-send after a timeout goes on where the last one
//! stopped) and keeps money safe by ordering:
//!
//! - A replica is added to the map first (so its node opens the replica and the other replicas
//!   accept its Raft messages), then to the shard's Raft group as a learner; it is made a voter
//!   only once it has caught up, so the shard's commit never waits on it.
//! - A replica is removed from the Raft group first (joint consensus, by openraft), then from
//!   the map; only then does its node close it.
//! - The map's rules (`Topology::add_replica`, `remove_replica`) are checked before the Raft
//!   group changes: no shard below three voters, none with a majority in one region.
//!
//! The map itself changes by compare-and-set on the meta shard (`change_map`), so two admins'
//! changes never overwrite each other, and only on the meta shard's leader, for an admin's call
//! (no node forwards a map change: #28); a step that needs both the map and a shard's Raft group
//! answers NotLeader at the one it is not, and the admin's router re-sends it there.

use crate::cluster::placement::caught_up;
use crate::error::{ErrorKind, HostError};
use crate::host::{system_id, Host};
use crate::replica::Replica;
use hongbao_ledger::{Code, Command, ShardId};
use hongbao_proto::v1::ReplicaRole;
use hongbao_topology::{Edit, NodeId, Topology};
use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, ChangeMembers, ServerState};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// How long one AddReplica call waits for the learner to catch up before it answers TIMEOUT
/// (the admin re-sends; the learner keeps catching up meanwhile). Inside ADMIN_DEADLINES.
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(20);
/// Attempts of one map change that lost a race (CLUSTER_MAP_STALE) before the admin hears it.
const MAP_ATTEMPTS: usize = 10;
const MAP_RETRY: Duration = Duration::from_millis(300);
/// Bound on one map change, all attempts included (inside the caller's deadline).
const MAP_DEADLINE: Duration = Duration::from_secs(15);
/// Bound on one Raft membership change (a learner's entry, a promotion, a removal) to commit.
const RAFT_CHANGE_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);
/// Bound on one status probe of another replica (who leads, who is a member).
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// What one membership step did: the map version it left, and in words what is true now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub map_version: u64,
    pub done: String,
}

fn refused(msg: impl Into<String>) -> HostError {
    HostError::invalid(msg)
}

fn unavailable(shard: ShardId, msg: impl Into<String>) -> HostError {
    HostError::unavailable(shard, msg)
}

fn reply(map_version: u64, done: impl Into<String>) -> Done {
    Done { map_version, done: done.into() }
}

/// Changes the cluster map: `edit` builds the next version from the newest, which the meta
/// shard stores if no other change came first (else this reads the map again and redoes it).
/// Unchanged (the map says so already) is a success: the step was done before.
pub async fn change_map(host: &Arc<Host>, edit: impl Fn(&Topology) -> Result<Topology, Edit>) -> Result<Done, HostError> {
    let mut last = String::new();
    let deadline = tokio::time::Instant::now() + MAP_DEADLINE;
    for _ in 0..MAP_ATTEMPTS {
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        // The edit is judged on a map the meta shard's leader confirmed (its own after a
        // ReadIndex, or its answer), never on a stale one (a restarted node's): then a refusal
        // is final and "unchanged" is true wherever this runs.
        let confirmed = crate::cluster::directory::refresh(host).await;
        let cur = host.topology();
        let meta = cur.meta_shard();
        let next = match edit(&cur) {
            Err(Edit::Unchanged(m)) if confirmed => return Ok(reply(cur.version, m)),
            Err(Edit::Refused(m)) if confirmed => return Err(refused(m)),
            Ok(next) if confirmed => next,
            _ => {
                if leading(host, meta).is_none() {
                    return Err(not_leading(host, meta).await);
                }
                last = format!("node {} could not confirm the map it leads (read index)", host.node_id);
                tokio::time::sleep(MAP_RETRY).await;
                continue;
            }
        };
        // Only the meta shard's leader proposes a map change, for an admin's call that reached
        // it; no node forwards one (one node's key must not rewrite the map, #28). Elsewhere
        // the call answers NotLeader with that leader, where the admin's router re-sends it.
        if leading(host, meta).is_none() {
            return Err(not_leading(host, meta).await);
        }
        let version = next.version;
        let cmd = Command::SetClusterMap { version, map: next.to_toml().into_bytes() };
        let id = system_id(b'v', meta, host.node_id, version);
        match host.propose(meta, id, cmd).await {
            Ok(o) if o.code == Code::Ok => {
                host.install_map(next);
                return Ok(reply(version, format!("cluster map version {version}")));
            }
            Ok(o) if o.code == Code::ClusterMapStale => last = format!("map version {version} was taken by another change"),
            Ok(o) => return Err(refused(format!("the meta shard refused map version {version}: {:?}", o.code))),
            Err(e) if e.kind == ErrorKind::NotLeader => return Err(e),
            Err(e) => last = e.to_string(),
        }
        tracing::info!(version, %last, "cluster map change not taken; reading the map again");
        tokio::time::sleep(MAP_RETRY).await;
    }
    Err(unavailable(0, format!("cluster map not changed (re-send): {last}")))
}

/// AddReplica: `node` into `shard`'s replicas in the map, then, on the shard's leader, a
/// learner that becomes a voter once caught up. Elsewhere the step answers NotLeader with the
/// leader, where the admin's router re-sends it (a node never forwards it: #28).
pub async fn add_replica(host: &Arc<Host>, shard: ShardId, node: NodeId) -> Result<Done, HostError> {
    tracing::info!(shard, node, "add replica");
    let mapped = change_map(host, |t| t.add_replica(shard, node)).await?;
    let Some(r) = leading(host, shard) else {
        return Err(not_leading(host, shard).await);
    };
    let done = promote(host, &r, node).await?;
    Ok(reply(mapped.map_version.max(host.topology().version), done))
}

/// RemoveReplica: `node` out of `shard`'s Raft group (on its leader), then out of the map.
pub async fn remove_replica(host: &Arc<Host>, shard: ShardId, node: NodeId) -> Result<Done, HostError> {
    tracing::info!(shard, node, "remove replica");
    let confirmed = crate::cluster::directory::refresh(host).await;
    if let Err(Edit::Refused(m)) = host.topology().remove_replica(shard, node) {
        // Judged on a map no meta leader confirmed (this node just restarted, or the meta shard
        // is electing): the admin re-sends rather than stops on a stale map's verdict.
        if !confirmed {
            return Err(unavailable(shard, format!("the cluster map here is not confirmed by the meta shard's leader: re-send ({m})")));
        }
        return Err(refused(m));
    }
    let Some(r) = leading(host, shard) else {
        // The Raft step is the shard leader's, the map step the meta leader's: here (not the
        // shard's leader) only the map step, once the shard's leader says `node` left the group.
        if still_member(host, shard, node).await != Some(false) {
            return Err(not_leading(host, shard).await);
        }
        let mapped = change_map(host, |t| t.remove_replica(shard, node)).await?;
        return Ok(reply(mapped.map_version, format!("node {node} is no replica of shard {shard} any more")));
    };
    if r.is_member(node) {
        if node == host.node_id {
            // A leader does not remove itself: it hands over, and the new leader removes it.
            let to = r.voters().into_iter().find(|v| *v != node).ok_or_else(|| unavailable(shard, "no other voter"))?;
            host.transfer_leader(shard, to).await?;
            return Err(not_leading(host, shard).await);
        }
        let gone: BTreeSet<NodeId> = [node].into();
        // A voter leaves by joint consensus (retain = false: not kept as a learner); a learner
        // that was never promoted is simply dropped.
        let change = if r.voters().contains(&node) { ChangeMembers::RemoveVoters(gone) } else { ChangeMembers::RemoveNodes(gone) };
        bounded(shard, "removing", node, r.raft.change_membership(change, false)).await?;
        metrics::counter!(crate::metrics::MEMBERSHIP_CHANGES, "step" => "remove").increment(1);
        tracing::warn!(shard, node, "replica removed from the shard's Raft group");
    }
    let mapped = change_map(host, |t| t.remove_replica(shard, node)).await?;
    Ok(reply(mapped.map_version, format!("node {node} is no replica of shard {shard} any more")))
}

/// AddShard: the shard into the map (every replica's node opens it; its first home-region
/// replica founds the Raft group), then a wait for its first leader.
pub async fn add_shard(host: &Arc<Host>, shard: ShardId, home: &str, replicas: &[NodeId]) -> Result<Done, HostError> {
    tracing::info!(shard, home, ?replicas, "add shard");
    let mapped = change_map(host, |t| t.add_shard(shard, home, replicas)).await?;
    let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
    loop {
        if let Some(l) = leader_of(host, shard).await {
            return Ok(reply(mapped.map_version, format!("shard {shard} founded on nodes {replicas:?}, led by node {l}")));
        }
        if tokio::time::Instant::now() >= deadline {
            let msg = format!("shard {shard} is in the map but has no leader yet: re-send to wait on");
            return Err(HostError::timeout(shard, msg));
        }
        tokio::time::sleep(POLL * 2).await;
    }
}

/// This node's replica of `shard` if it leads it.
fn leading(host: &Host, shard: ShardId) -> Option<Arc<Replica>> {
    host.replica(shard).ok().filter(|r| host.is_leader(r))
}

/// NotLeader for a step that only `shard`'s leader takes, pointing at the leader known here or
/// to the shard's replicas (UNAVAILABLE when none is): the caller re-sends it there.
async fn not_leading(host: &Host, shard: ShardId) -> HostError {
    match leader_of(host, shard).await.filter(|l| *l != host.node_id) {
        Some(l) => HostError {
            kind: ErrorKind::NotLeader,
            shard,
            message: format!("node {} does not lead shard {shard}: the step goes to its leader, node {l}", host.node_id),
            leader: Some((l, host.peers.addr(l).unwrap_or_default().to_string())),
        },
        None => unavailable(shard, format!("shard {shard} has no leader now: re-send")),
    }
}

/// The leader of `shard` as known here (this node's replica), else as any replica says.
async fn leader_of(host: &Host, shard: ShardId) -> Option<NodeId> {
    if let Ok(r) = host.replica(shard) {
        if let Some(l) = r.raft.metrics().borrow_watched().current_leader {
            return Some(l);
        }
    }
    let map = host.topology();
    for n in map.shard(shard)?.replicas.iter().filter(|n| **n != host.node_id) {
        let Some(st) = host.peers.status(*n, PROBE_TIMEOUT).await else { continue };
        if let Some(l) = st.nodes.iter().flat_map(|x| x.shards.iter()).find(|s| s.shard == shard && s.leader != 0) {
            return Some(l.leader);
        }
    }
    None
}

/// Whether `node` is in `shard`'s Raft group, as the shard's leader (elsewhere) answers (None:
/// no leader answered).
async fn still_member(host: &Host, shard: ShardId, node: NodeId) -> Option<bool> {
    let leader = leader_of(host, shard).await.filter(|l| *l != host.node_id)?;
    let st = host.peers.status(leader, PROBE_TIMEOUT).await?;
    let row = st.nodes.iter().flat_map(|n| n.shards.iter()).find(|s| s.shard == shard && s.role == ReplicaRole::Leader as i32)?;
    Some(row.members.contains(&node))
}

/// On the leader: `node` as a learner, then a voter once within CAUGHT_UP_SLACK of the log.
async fn promote(host: &Host, r: &Replica, node: NodeId) -> Result<String, HostError> {
    let shard = r.id;
    if r.voters().contains(&node) {
        return Ok(format!("node {node} is a voter of shard {shard}"));
    }
    let addr = host.peers.addr(node).ok_or_else(|| refused(format!("node {node} is not in the cluster map")))?;
    if !r.is_member(node) {
        bounded(shard, "adding learner", node, r.raft.add_learner(node, BasicNode::new(addr), false)).await?;
        metrics::counter!(crate::metrics::MEMBERSHIP_CHANGES, "step" => "add_learner").increment(1);
        tracing::info!(shard, node, "learner added; waiting for it to catch up");
    }
    let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
    loop {
        let (leads, last, matched) = {
            let m = r.raft.metrics();
            let m = m.borrow_watched();
            let matched = m.replication.as_ref().and_then(|rep| rep.get(&node)).and_then(|l| l.as_ref()).map(|l| l.index);
            (m.state == ServerState::Leader, m.last_log_index.unwrap_or(0), matched)
        };
        if !leads {
            return Err(unavailable(shard, format!("node {} lost the lead of shard {shard}: re-send", host.node_id)));
        }
        if matched.is_some_and(|i| caught_up(i, last)) {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let msg =
                format!("shard {shard}: node {node} is still catching up ({} of {last} entries): re-send to go on", matched.unwrap_or(0));
            return Err(HostError::timeout(shard, msg));
        }
        tokio::time::sleep(POLL).await;
    }
    bounded(shard, "promoting", node, r.raft.change_membership(ChangeMembers::AddVoterIds([node].into()), false)).await?;
    metrics::counter!(crate::metrics::MEMBERSHIP_CHANGES, "step" => "promote").increment(1);
    tracing::warn!(shard, node, voters = ?r.voters(), "learner caught up and promoted to voter");
    Ok(format!("node {node} caught up and is a voter of shard {shard}"))
}

/// A Raft membership change, waited for at most RAFT_CHANGE_TIMEOUT (it commits like any entry:
/// a shard without a quorum would hold the admin's call forever). Re-sending is safe: each step
/// looks at the membership first.
async fn bounded<T, E: std::fmt::Display>(
    shard: ShardId,
    what: &str,
    node: NodeId,
    change: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, HostError> {
    match tokio::time::timeout(RAFT_CHANGE_TIMEOUT, change).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(unavailable(shard, format!("shard {shard}: {what} {node}: {e}"))),
        Err(_) => Err(HostError::timeout(shard, format!("shard {shard}: {what} {node} not committed in {RAFT_CHANGE_TIMEOUT:?}: re-send"))),
    }
}

/// Marks `region` drained (or not) in the cluster map: a map change, so on the meta shard's
/// leader only (elsewhere NotLeader with that leader, where the admin's router re-sends it).
/// Every node follows the map within a round (`directory::FOLLOW_EVERY`).
pub async fn set_drained(host: &Arc<Host>, region: &str, drained: bool) -> Result<Done, HostError> {
    change_map(host, |t| t.set_drained(region, drained)).await
}
