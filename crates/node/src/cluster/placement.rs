//! Where each shard's leadership belongs: in its home region when a home replica is up and
//! caught up (failback), out of regions an operator drained. `Placement` reads the drained
//! regions from the cluster map and holds the policy; `leader::placement` is the per-shard loop
//! on the leader that acts on it, by leader transfer, so client requests see at most a NotLeader that routers
//! retry.
//!
//! Drain marks are part of the cluster map (`Topology::drained`), which the meta shard commits
//! on an admin's Drain / Undrain (`membership::set_drained`): every node reads them from the map it
//! follows, and a restarted node from the map it reads at start. No node proposes a mark on
//! another's shard (#28). The ledger's older per-shard marks (`Command::SetDrained`) are no
//! longer written or read.

use crate::cluster::map::Directory;
use hongbao_ledger::ShardId;
use hongbao_proto::v1::StatusReply;
use hongbao_topology::NodeId;
use std::collections::BTreeSet;

/// A replica within this many entries of the leader counts as caught up for failback.
pub const CAUGHT_UP_SLACK: u64 = 100;

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
    pub fn home_candidates(&self, shard: ShardId) -> Vec<NodeId> {
        let map = self.map.get();
        let Some(s) = map.shard(shard) else { return vec![] };
        if self.drained_regions().contains(&s.home) {
            return vec![];
        }
        s.replicas.iter().copied().filter(|r| map.region_of(*r) == Some(s.home.as_str())).collect()
    }

    /// Replicas in regions that are not drained (where a drained region's leadership may go).
    pub fn undrained_replicas(&self, shard: ShardId) -> Vec<NodeId> {
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
