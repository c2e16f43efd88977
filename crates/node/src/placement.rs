//! Where each shard's leadership belongs: in its home region when a home replica is up and
//! caught up (failback), out of regions an operator drained. `Placement` reads the drained
//! regions from the cluster map and holds the policy; `run` is the per-shard loop on the leader
//! that acts on it, by leader transfer, so client requests see at most a NotLeader that routers
//! retry.
//!
//! Drain marks are part of the cluster map (`Topology::drained`), which the meta shard commits
//! on an admin's Drain / Undrain (`replicate_drain`): every node reads them from the map it
//! follows, and a restarted node from the map it reads at start. No node proposes a mark on
//! another's shard (#28). The ledger's older per-shard marks (`Command::SetDrained`) are no
//! longer written or read.

use crate::directory::Directory;
use crate::host::Host;
use hongbao_ledger::{Command, ShardId};
use hongbao_proto::v1::{ReplicaRole, StatusReply};
use hongbao_topology::NodeId;
use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A replica within this many entries of the leader counts as caught up for failback.
pub const CAUGHT_UP_SLACK: u64 = 100;
/// How often a leader checks whether its leadership belongs elsewhere.
const PLACEMENT_EVERY: Duration = Duration::from_millis(1000);
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Whether a replica that applied up to `applied` may take over from a leader at `leader_last`.
pub fn caught_up(applied: u64, leader_last: u64) -> bool {
    applied + CAUGHT_UP_SLACK >= leader_last
}

pub struct Placement {
    map: Directory,
}

impl Placement {
    pub fn new(map: Directory) -> Placement {
        Placement { map }
    }

    /// Regions an operator drained (no leadership is moved into them), as the cluster map says.
    pub fn drained_regions(&self) -> BTreeSet<String> {
        self.map.get().drained.iter().cloned().collect()
    }

    /// The failback policy: the shard's home-region replicas, unless its home is drained.
    fn home_candidates(&self, shard: ShardId) -> Vec<NodeId> {
        let map = self.map.get();
        let Some(s) = map.shard(shard) else { return vec![] };
        if self.drained_regions().contains(&s.home) {
            return vec![];
        }
        s.replicas.iter().copied().filter(|r| map.region_of(*r) == Some(s.home.as_str())).collect()
    }

    /// Replicas in regions that are not drained (where a drained region's leadership may go).
    fn undrained_replicas(&self, shard: ShardId) -> Vec<NodeId> {
        let map = self.map.get();
        let Some(s) = map.shard(shard) else { return vec![] };
        let drained = self.drained_regions();
        s.replicas.iter().copied().filter(|r| map.region_of(*r).is_some_and(|g| !drained.contains(g))).collect()
    }

    /// Whether handing `shard`'s leadership from this node (in `here`) to `to` is a move this
    /// placement would make by itself: back home (failback) while this node is away from an
    /// undrained home, or out of a drained region to a replica outside drained regions. The
    /// only leader transfer another node may ask of a leader (a drain or undrain an admin
    /// started at that node): one node's key must not choose any shard's leader (#28).
    pub fn would_move(&self, shard: ShardId, here: &str, to: NodeId) -> bool {
        let map = self.map.get();
        let Some(s) = map.shard(shard) else { return false };
        let drained = self.drained_regions();
        let at_home = here == s.home && !drained.contains(here);
        (!at_home && self.home_candidates(shard).contains(&to)) || (drained.contains(here) && self.undrained_replicas(shard).contains(&to))
    }

    /// The home replica to fail back to, per a cluster status: up and caught up with the leader.
    pub fn home_replica(&self, shard: ShardId, st: &StatusReply) -> Option<NodeId> {
        let leader_last = st.leader_of(shard).map(|x| x.last_log_index)?;
        let home = self.home_candidates(shard);
        st.nodes
            .iter()
            .filter(|n| n.up && home.contains(&n.node))
            .find(|n| n.shards.iter().any(|x| x.shard == shard && caught_up(x.applied, leader_last)))
            .map(|n| n.node)
    }

    /// A healthy replica outside `avoid` (and outside drained regions), the most caught-up first.
    pub fn failover_target(&self, shard: ShardId, st: &StatusReply, avoid: Option<&str>) -> Option<NodeId> {
        let allowed = self.undrained_replicas(shard);
        st.nodes
            .iter()
            .filter(|n| n.up && allowed.contains(&n.node) && Some(n.region.as_str()) != avoid)
            .filter_map(|n| n.shards.iter().find(|x| x.shard == shard).map(|x| (x.applied, n.node)))
            .max()
            .map(|(_, node)| node)
    }
}

/// The leader's loop for one shard: moves leadership home (failback), out of a drained region,
/// or off this node when its clock is not trusted (which also stops it standing for election).
pub async fn run(host: Arc<Host>, shard_id: ShardId, mut stop: watch::Receiver<bool>) {
    let mut elects = true;
    while let Some(leads) = crate::tasks::next_turn(&host, shard_id, PLACEMENT_EVERY, &mut stop).await {
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
    let ch = host.peers.channel(node)?;
    let mut c = hongbao_proto::v1::cluster_client::ClusterClient::new(ch);
    let req = hongbao_proto::v1::StatusRequest { local_only: true };
    let r = tokio::time::timeout(PROBE_TIMEOUT, c.status(req)).await.ok()?.ok()?;
    let n = r.into_inner().nodes.into_iter().next()?;
    if !n.clock_untrusted.is_empty() {
        return None;
    }
    let s = n.shards.iter().find(|s| s.shard == shard_id && s.role != ReplicaRole::Shutdown as i32)?;
    let fingerprint = host.config.fingerprint();
    if same_config && config_agrees(&host.peers, node, shard_id, fingerprint).await != Some(true) {
        return None;
    }
    Some(s.applied)
}

/// Whether `node` runs the ledger config with this fingerprint (None: no answer). Asked with a
/// `ConfigCheck` through the nodes' Propose door, which answers it there and proposes nothing.
pub async fn config_agrees(peers: &crate::peers::Peers, node: NodeId, shard: ShardId, fingerprint: u64) -> Option<bool> {
    let req = hongbao_ledger::Request { id: hongbao_ledger::RequestId([0; 16]), time_ms: 0, cmd: Command::ConfigCheck { fingerprint } };
    match peers.propose_at(node, shard, &req, PROBE_TIMEOUT).await {
        Err(s) if s.code() == crate::access::CONFIG_AGREES => Some(true),
        Err(s) if s.code() == tonic::Code::FailedPrecondition => Some(false),
        _ => None,
    }
}

/// Marks `region` drained (or not) in the cluster map: a map change, so on the meta shard's
/// leader only (elsewhere NotLeader with that leader, where the admin's router re-sends it).
/// Every node follows the map within a round (`directory::FOLLOW_EVERY`).
pub async fn replicate_drain(host: &Arc<Host>, region: &str, drained: bool) -> Result<(), tonic::Status> {
    crate::membership::change_map(host, |t| t.set_drained(region, drained)).await.map(|_| ())
}
