//! The cluster map: regions, nodes, shards (Raft groups) and the slot table, read from a TOML
//! file under `deploy/`. Node, router and client all place data with this one crate, so a user
//! or packet maps to the same shard everywhere.
//!
//! Placement, as in Ant's LDC: `slot = user_id % slots`, and the slot table names the shard that
//! owns each slot. A packet id carries its shard in its high bits (`hongbao_ids::PacketId`), so
//! a grab is routed without a lookup: `PacketId(id).shard()`.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use hongbao_ids::{NodeId, PacketId, ShardId, UserId};

/// Bounds that keep a topology file sane; a typo should fail loudly, not allocate wildly.
pub const MAX_NODES: usize = 64;
pub const MAX_SHARDS: usize = 256;
pub const MAX_SLOTS: u32 = 10_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// The cluster map's version: 0 for a topology file (the seed), then one more for each
    /// change an admin made online (`hongbao cluster add-node`, ...), replicated in the meta
    /// shard. Nodes and routers keep the highest version they have seen.
    #[serde(default)]
    pub version: u64,
    /// A development cluster (`scripts/cluster up`, the test harness): its routers accept
    /// end-user tokens signed with the development key (kid `dev`, whose private key
    /// `hongbao dev-ca` leaves in the security folder, so anyone holding that folder can sign in
    /// as any user). Default false: a production topology never says it, and its routers refuse
    /// those tokens even if `token-keys/dev.pub.pem` found its way into their folder.
    #[serde(default, skip_serializing_if = "is_false")]
    pub development: bool,
    /// Number of slots users are hashed into (`user_id % slots`).
    pub slots: u32,
    /// Regions an admin drained (`hongbao cluster drain`): no shard's leadership stays in or
    /// moves into them. Part of the map, so every node reads it as the meta shard committed it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drained: Vec<String>,
    pub regions: Vec<Region>,
    pub nodes: Vec<Node>,
    pub shards: Vec<Shard>,
    /// Slot moves an admin started and that have not flipped yet (`hongbao cluster move-slot`).
    /// The shards' leaders take a move's steps (`MoveSlotIn`, `MoveSlotOut`, `FinishSlotIn`)
    /// only for a move recorded here: what the meta shard committed, not what a node says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moves: Vec<SlotMove>,
    #[serde(default)]
    pub routers: Vec<Router>,
    /// Simulated WAN latency between region pairs, applied by the Raft transport filter.
    #[serde(default)]
    pub links: Vec<Link>,
    /// Ledger settings that must be identical on every replica (e.g. packet ttl in tests).
    #[serde(default)]
    pub ledger: LedgerSettings,
    /// Raft timing. Defaults suit a loopback cluster with WAN-like links.
    #[serde(default)]
    pub raft: RaftSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub id: NodeId,
    pub region: String,
    /// gRPC address: Raft transport, public API and admin on one server.
    pub addr: String,
    /// HTTP address for Prometheus metrics.
    pub metrics_addr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shard {
    pub id: ShardId,
    /// The region whose node should lead this shard when it is healthy.
    pub home: String,
    /// Nodes holding a replica (voters).
    pub replicas: Vec<NodeId>,
    /// Slots `[from, to)` owned by this shard.
    pub slots: Vec<[u32; 2]>,
    /// The map version that added this shard online (0: a shard of the topology file). Its
    /// first home-region replica founds its Raft group (`Topology::add_shard`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub founded: u64,
}

/// A slot on its way from one shard to another (`Topology::begin_move`); the move's last step
/// (`Topology::move_slot`) gives the slot to `to` and drops the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotMove {
    pub slot: u32,
    pub from: ShardId,
    pub to: ShardId,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Router {
    pub region: String,
    pub addr: String,
    /// HTTP address for the router's Prometheus metrics (none: the router serves no metrics).
    #[serde(default)]
    pub metrics_addr: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub a: String,
    pub b: String,
    pub latency_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSettings {
    /// Packet lifetime; design default 24 h.
    pub packet_ttl_ms: Option<u64>,
    /// How long request ids are remembered for idempotent replay, and so the request window
    /// (an id issued longer ago is refused as REQUEST_EXPIRED); default 24 h.
    pub dedup_retention_ms: Option<u64>,
    /// How long a settled packet stays in hot state before it moves to the archive; default 3 days.
    pub packet_retention_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSettings {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Take a snapshot after this many applied entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, so a briefly lagging follower catches up by log.
    pub keep_behind_snapshot: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            heartbeat_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            // A snapshot scans the shard's whole state: every 200k entries keeps that cost
            // small per entry (tests that exercise snapshots set it low).
            snapshot_every: 200_000,
            keep_behind_snapshot: 50_000,
        }
    }
}

impl Topology {
    pub fn load(path: &Path) -> Result<Topology, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read { path: path.to_owned(), source })?;
        Topology::parse(&text).map_err(|e| TopologyError::InFile { path: path.to_owned(), error: Box::new(e) })
    }

    pub fn parse(text: &str) -> Result<Topology, TopologyError> {
        let t: Topology = toml::from_str(text).map_err(|e| TopologyError::Syntax(e.to_string()))?;
        t.validate()?;
        Ok(t)
    }

    /// Checks everything the rest of the system assumes, so a bad file fails at start-up.
    pub fn validate(&self) -> Result<(), TopologyError> {
        if self.slots == 0 || self.slots > MAX_SLOTS {
            return Err(invalid(format!("slots must be 1..={MAX_SLOTS}")));
        }
        if self.nodes.is_empty() || self.nodes.len() > MAX_NODES {
            return Err(invalid(format!("need 1..={MAX_NODES} nodes")));
        }
        if self.shards.is_empty() || self.shards.len() > MAX_SHARDS {
            return Err(invalid(format!("need 1..={MAX_SHARDS} shards")));
        }
        let regions: BTreeSet<&str> = self.regions.iter().map(|r| r.name.as_str()).collect();
        if regions.len() != self.regions.len() {
            return Err(invalid("duplicate region name"));
        }
        let mut ids = BTreeSet::new();
        for n in &self.nodes {
            if n.id == 0 || !ids.insert(n.id) {
                return Err(invalid(format!("node id {} is zero or duplicated", n.id)));
            }
            if !regions.contains(n.region.as_str()) {
                return Err(invalid(format!("node {} names unknown region {}", n.id, n.region)));
            }
        }
        let mut owner: Vec<Option<ShardId>> = vec![None; self.slots as usize];
        let mut shard_ids = BTreeSet::new();
        for s in &self.shards {
            // Shard ids go into the high bits of packet ids.
            if s.id == 0 || s.id > PacketId::MAX_SHARD || !shard_ids.insert(s.id) {
                return Err(invalid(format!("shard id {} is zero, too large or duplicated", s.id)));
            }
            if !regions.contains(s.home.as_str()) {
                return Err(invalid(format!("shard {} has unknown home region {}", s.id, s.home)));
            }
            if s.replicas.is_empty() {
                return Err(invalid(format!("shard {} has no replicas", s.id)));
            }
            let uniq: BTreeSet<_> = s.replicas.iter().collect();
            if uniq.len() != s.replicas.len() {
                return Err(invalid(format!("shard {} lists a replica twice", s.id)));
            }
            for r in &s.replicas {
                if !ids.contains(r) {
                    return Err(invalid(format!("shard {} names unknown node {}", s.id, r)));
                }
            }
            for [from, to] in &s.slots {
                if from >= to || *to > self.slots {
                    return Err(invalid(format!("shard {} has bad slot range [{from},{to})", s.id)));
                }
                for slot in *from..*to {
                    if let Some(other) = owner[slot as usize] {
                        return Err(invalid(format!("slot {slot} owned by shards {other} and {}", s.id)));
                    }
                    owner[slot as usize] = Some(s.id);
                }
            }
        }
        if let Some(slot) = owner.iter().position(|o| o.is_none()) {
            return Err(invalid(format!("slot {slot} is owned by no shard")));
        }
        for r in &self.routers {
            if !regions.contains(r.region.as_str()) {
                return Err(invalid(format!("router {} names unknown region {}", r.addr, r.region)));
            }
        }
        for l in &self.links {
            if !regions.contains(l.a.as_str()) || !regions.contains(l.b.as_str()) {
                return Err(invalid(format!("link {}-{} names an unknown region", l.a, l.b)));
            }
        }
        let mut drained = BTreeSet::new();
        for r in &self.drained {
            if !regions.contains(r.as_str()) || !drained.insert(r.as_str()) {
                return Err(invalid(format!("drained region {r} is unknown or listed twice")));
            }
        }
        let mut moving = BTreeSet::new();
        for m in &self.moves {
            if !moving.insert(m.slot) || m.slot >= self.slots || m.from == m.to {
                return Err(invalid(format!("slot move {m:?}: slot out of range, listed twice, or to its own shard")));
            }
            if owner[m.slot as usize] != Some(m.from) || !shard_ids.contains(&m.to) {
                return Err(invalid(format!("slot move {m:?}: slot {} is not on shard {} or shard {} is unknown", m.slot, m.from, m.to)));
            }
        }
        if self.raft.election_timeout_min_ms <= self.raft.heartbeat_ms
            || self.raft.election_timeout_max_ms <= self.raft.election_timeout_min_ms
        {
            return Err(invalid("raft: need heartbeat < election_timeout_min < election_timeout_max"));
        }
        Ok(())
    }

    pub fn slot_of(&self, user: UserId) -> u32 {
        (user % self.slots as u64) as u32
    }

    /// The shard owning a user's wallet. Total: validate() guarantees every slot has an owner.
    pub fn shard_of_user(&self, user: UserId) -> ShardId {
        let slot = self.slot_of(user);
        self.shards
            .iter()
            .find(|s| s.slots.iter().any(|[f, t]| (*f..*t).contains(&slot)))
            .map(|s| s.id)
            .expect("validated topology owns every slot")
    }

    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn shard(&self, id: ShardId) -> Option<&Shard> {
        self.shards.iter().find(|s| s.id == id)
    }

    /// Shards with a replica on `node`.
    pub fn shards_on(&self, node: NodeId) -> Vec<&Shard> {
        self.shards.iter().filter(|s| s.replicas.contains(&node)).collect()
    }

    pub fn nodes_in(&self, region: &str) -> Vec<&Node> {
        self.nodes.iter().filter(|n| n.region == region).collect()
    }

    pub fn region_of(&self, node: NodeId) -> Option<&str> {
        self.node(node).map(|n| n.region.as_str())
    }

    /// One-way simulated latency between two regions (0 inside a region or when unset).
    pub fn link_latency_ms(&self, a: &str, b: &str) -> u64 {
        if a == b {
            return 0;
        }
        self.links.iter().find(|l| (l.a == a && l.b == b) || (l.a == b && l.b == a)).map(|l| l.latency_ms).unwrap_or(0)
    }

    /// A user id homed in `shard`, counting from `start`; handy for demos and tests.
    pub fn user_in_shard(&self, shard: ShardId, start: UserId) -> UserId {
        (start..start + self.slots as u64).find(|u| self.shard_of_user(*u) == shard).expect("every shard owns at least one slot")
    }

    /// Slot ranges per shard, for display.
    pub fn slot_table(&self) -> BTreeMap<ShardId, Vec<[u32; 2]>> {
        self.shards.iter().map(|s| (s.id, s.slots.clone())).collect()
    }
}

/// Why a topology file or cluster map was not taken.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// What was wrong with the file at `path`.
    #[error("{}: {error}", path.display())]
    InFile { path: PathBuf, error: Box<TopologyError> },
    /// Not TOML of a topology's shape.
    #[error("{0}")]
    Syntax(String),
    /// Parsed, but breaks a rule the rest of the system assumes.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(why: impl Into<String>) -> TopologyError {
    TopologyError::Invalid(why.into())
}

/// Sorted slots as `[from, to)` ranges, adjacent ones merged.
fn ranges(slots: &BTreeSet<u32>) -> Vec<[u32; 2]> {
    let mut out: Vec<[u32; 2]> = Vec::new();
    for s in slots {
        match out.last_mut() {
            Some(r) if r[1] == *s => r[1] = s + 1,
            _ => out.push([*s, s + 1]),
        }
    }
    out
}

/// Where a new node goes: what `Topology::add_node` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub id: NodeId,
    pub region: String,
    pub addr: String,
    pub metrics_addr: String,
}

/// Fewest voters a shard may be left with by removing one (a shard of two loses its quorum
/// with any one node).
pub const MIN_VOTERS: usize = 3;

/// Online changes to the map (membership). Each returns the next version, validated, or why
/// the change is refused; none touches `self`. Doing a change twice gives an error the caller
/// reads as "already done" (`Edit::Unchanged`), so every admin step can be re-sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// The map already says so: nothing to do.
    Unchanged(String),
    /// The change is not allowed (the message says why).
    Refused(String),
}

impl Topology {
    /// The shard that holds the replicated cluster map: the lowest shard id (shards are never
    /// removed, so it never changes).
    pub fn meta_shard(&self) -> ShardId {
        self.shards.iter().map(|s| s.id).min().expect("validated: at least one shard")
    }

    /// The map as the topology file's TOML (what the meta shard stores and `GetMap` returns).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a topology always serializes")
    }

    fn next(&self, change: impl FnOnce(&mut Topology)) -> Result<Topology, Edit> {
        let mut t = self.clone();
        change(&mut t);
        t.version = self.version + 1;
        t.validate().map_err(|e| Edit::Refused(e.to_string()))?;
        Ok(t)
    }

    pub fn add_node(&self, n: &NodeSpec) -> Result<Topology, Edit> {
        if let Some(old) = self.node(n.id) {
            let same = old.region == n.region && old.addr == n.addr && old.metrics_addr == n.metrics_addr;
            return Err(if same {
                Edit::Unchanged(format!("node {} is in the map already", n.id))
            } else {
                Edit::Refused(format!("node id {} is taken (by {} in {})", n.id, old.addr, old.region))
            });
        }
        if let Some(o) = self.nodes.iter().find(|o| o.addr == n.addr || o.metrics_addr == n.metrics_addr) {
            return Err(Edit::Refused(format!("node {} uses that address already", o.id)));
        }
        let node = Node { id: n.id, region: n.region.clone(), addr: n.addr.clone(), metrics_addr: n.metrics_addr.clone() };
        self.next(|t| t.nodes.push(node))
    }

    /// Adds a shard (a new Raft group) on `replicas`, homed in `home`, owning no slot yet. The
    /// same shard again is Unchanged; its id for another one is refused.
    pub fn add_shard(&self, id: ShardId, home: &str, replicas: &[NodeId]) -> Result<Topology, Edit> {
        if let Some(s) = self.shard(id) {
            return Err(if s.home == home && s.replicas == replicas {
                Edit::Unchanged(format!("shard {id} is in the map already"))
            } else {
                Edit::Refused(format!("shard id {id} is taken (home {}, replicas {:?})", s.home, s.replicas))
            });
        }
        if replicas.len() < MIN_VOTERS {
            return Err(Edit::Refused(format!("shard {id} needs at least {MIN_VOTERS} replicas, not {}", replicas.len())));
        }
        if let Some(n) = replicas.iter().find(|n| self.node(**n).is_none()) {
            return Err(Edit::Refused(format!("node {n} is not in the map: add the node first")));
        }
        self.region_majority(id, replicas)?;
        let shard = Shard { id, home: home.to_string(), replicas: replicas.to_vec(), slots: vec![], founded: self.version + 1 };
        self.next(|t| t.shards.push(shard))
    }

    /// The shard that owns `slot` (None past the slot count).
    pub fn owner_of_slot(&self, slot: u32) -> Option<ShardId> {
        self.shards.iter().find(|s| s.slots.iter().any(|[f, t]| (*f..*t).contains(&slot))).map(|s| s.id)
    }

    /// Gives `slot` to shard `to` (the map's side of a slot move, its last step): the slot
    /// leaves its owner's ranges and joins `to`'s, adjacent ranges merged.
    pub fn move_slot(&self, slot: u32, to: ShardId) -> Result<Topology, Edit> {
        let from = self.owner_of_slot(slot).ok_or_else(|| Edit::Refused(format!("no slot {slot}: the map has {} slots", self.slots)))?;
        if self.shard(to).is_none() {
            return Err(Edit::Refused(format!("no shard {to}")));
        }
        if from == to {
            return Err(Edit::Unchanged(format!("slot {slot} is on shard {to} already")));
        }
        self.next(|t| {
            t.moves.retain(|m| m.slot != slot);
            for s in t.shards.iter_mut() {
                let mut owned: BTreeSet<u32> = s.slots.iter().flat_map(|[f, t]| *f..*t).collect();
                if s.id == from {
                    owned.remove(&slot);
                } else if s.id == to {
                    owned.insert(slot);
                } else {
                    continue;
                }
                s.slots = ranges(&owned);
            }
        })
    }

    /// Records that `slot` moves from its owner to shard `to` (the map's side of a slot move,
    /// its first step): until the move flips, the shards take its steps, and only its steps.
    /// The same move again is Unchanged; another move of the slot under way is refused.
    pub fn begin_move(&self, slot: u32, to: ShardId) -> Result<Topology, Edit> {
        let from = self.owner_of_slot(slot).ok_or_else(|| Edit::Refused(format!("no slot {slot}: the map has {} slots", self.slots)))?;
        if self.shard(to).is_none() {
            return Err(Edit::Refused(format!("no shard {to}")));
        }
        match self.moving(slot) {
            Some(m) if m.to == to => return Err(Edit::Unchanged(format!("slot {slot} is moving to shard {to} already"))),
            Some(m) => return Err(Edit::Refused(format!("slot {slot} is moving to shard {} already: finish that first", m.to))),
            None if from == to => return Err(Edit::Unchanged(format!("slot {slot} is on shard {to} already"))),
            None => {}
        }
        self.next(|t| t.moves.push(SlotMove { slot, from, to }))
    }

    /// The move of `slot` under way, if the map records one.
    pub fn moving(&self, slot: u32) -> Option<SlotMove> {
        self.moves.iter().find(|m| m.slot == slot).copied()
    }

    /// Marks `region` drained (or not): leadership leaves it and does not come back until the
    /// mark is cleared.
    pub fn set_drained(&self, region: &str, drained: bool) -> Result<Topology, Edit> {
        if !self.regions.iter().any(|r| r.name == region) {
            return Err(Edit::Refused(format!("no region {region}")));
        }
        if self.drained.iter().any(|r| r == region) == drained {
            return Err(Edit::Unchanged(format!("region {region} is {}drained already", if drained { "" } else { "un" })));
        }
        self.next(|t| {
            t.drained.retain(|r| r != region);
            if drained {
                t.drained.push(region.to_string());
            }
        })
    }

    /// Removes a node that holds no replica any more.
    pub fn remove_node(&self, id: NodeId) -> Result<Topology, Edit> {
        if self.node(id).is_none() {
            return Err(Edit::Unchanged(format!("node {id} is not in the map")));
        }
        let held: Vec<ShardId> = self.shards_on(id).iter().map(|s| s.id).collect();
        if !held.is_empty() {
            return Err(Edit::Refused(format!("node {id} still holds replicas of shards {held:?}: remove them first")));
        }
        self.next(|t| t.nodes.retain(|n| n.id != id))
    }

    /// Adds `node` to `shard`'s replicas (the map's side of adding a voter). Refused when one
    /// region would then hold a majority of the shard's replicas: losing that region would take
    /// the shard's quorum with it.
    pub fn add_replica(&self, shard: ShardId, node: NodeId) -> Result<Topology, Edit> {
        let s = self.shard(shard).ok_or_else(|| Edit::Refused(format!("no shard {shard}")))?;
        if self.node(node).is_none() {
            return Err(Edit::Refused(format!("node {node} is not in the map: add the node first")));
        }
        if s.replicas.contains(&node) {
            return Err(Edit::Unchanged(format!("node {node} is a replica of shard {shard} already")));
        }
        let mut after = s.replicas.clone();
        after.push(node);
        self.region_majority(shard, &after)?;
        self.next(|t| t.shards.iter_mut().filter(|x| x.id == shard).for_each(|x| x.replicas.push(node)))
    }

    /// Removes `node` from `shard`'s replicas. Refused below MIN_VOTERS, or when one region would
    /// then hold a majority.
    pub fn remove_replica(&self, shard: ShardId, node: NodeId) -> Result<Topology, Edit> {
        let s = self.shard(shard).ok_or_else(|| Edit::Refused(format!("no shard {shard}")))?;
        if !s.replicas.contains(&node) {
            return Err(Edit::Unchanged(format!("node {node} is no replica of shard {shard}")));
        }
        let after: Vec<NodeId> = s.replicas.iter().copied().filter(|r| *r != node).collect();
        if after.len() < MIN_VOTERS {
            return Err(Edit::Refused(format!(
                "shard {shard} would keep {} replicas, fewer than {MIN_VOTERS}: add a replacement first",
                after.len()
            )));
        }
        self.region_majority(shard, &after)?;
        self.next(|t| t.shards.iter_mut().filter(|x| x.id == shard).for_each(|x| x.replicas.retain(|r| *r != node)))
    }

    /// Refuses a replica set in which one region holds a majority (when the cluster has more
    /// than one region): the loss of that one region would stop the shard.
    fn region_majority(&self, shard: ShardId, replicas: &[NodeId]) -> Result<(), Edit> {
        if self.regions.len() < 2 {
            return Ok(());
        }
        for r in &self.regions {
            let here = replicas.iter().filter(|n| self.region_of(**n) == Some(r.name.as_str())).count();
            if here * 2 > replicas.len() {
                return Err(Edit::Refused(format!(
                    "shard {shard}: {here} of its {} replicas would be in {}; losing that region would stop the shard",
                    replicas.len(),
                    r.name
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The repository's deploy/ folder, found at run time (a cached test binary may have been
    /// built in another checkout).
    fn deploy_dir() -> std::path::PathBuf {
        Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")).join("../../deploy")
    }

    fn default_topology() -> Topology {
        let path = deploy_dir().join("local-3x1.toml");
        Topology::load(&path).expect("shipped topology is valid")
    }

    #[test]
    fn shipped_topologies_are_valid() {
        for f in ["local-3x1.toml", "local-3x3.toml"] {
            let path = deploy_dir().join(f);
            Topology::load(&path).unwrap();
        }
    }

    #[test]
    fn shipped_local_topologies_are_development_clusters_and_a_topology_is_not_one_unless_it_says_so() {
        for f in ["local-3x1.toml", "local-3x3.toml", "compose/topology.toml"] {
            assert!(Topology::load(&deploy_dir().join(f)).unwrap().development, "{f} runs with the dev CA and dev tokens");
        }
        let text = std::fs::read_to_string(deploy_dir().join("local-3x1.toml")).unwrap();
        let production = text.replace("development = true\n", "");
        assert_ne!(production, text, "the flag is one line of its own");
        let t = Topology::parse(&production).unwrap();
        assert!(!t.development, "absent means production");
        assert!(!t.to_toml().contains("development"), "a production map never mentions it");
        let t = Topology::parse(&production.replacen("slots = ", "development = false\nslots = ", 1)).unwrap();
        assert!(!t.development);
        // The replicated cluster map keeps the flag through its TOML and every online change.
        let dev = default_topology();
        assert!(Topology::parse(&dev.to_toml()).unwrap().development);
        let grown = dev.add_node(&spec(4, "tianjin")).unwrap();
        assert!(Topology::parse(&grown.to_toml()).unwrap().development);
        assert!(Topology::parse(&text.replace("development = true", "development = \"yes\"")).is_err(), "a bool, not a string");
    }

    #[test]
    fn every_user_maps_to_exactly_one_shard_by_slot() {
        let t = default_topology();
        for u in 0..1000u64 {
            let s = t.shard_of_user(u);
            assert!(t.shard(s).is_some());
            assert_eq!(s, t.shard_of_user(u + t.slots as u64), "same slot, same shard");
        }
        for s in &t.shards {
            assert_eq!(t.shard_of_user(t.user_in_shard(s.id, 1000)), s.id);
        }
    }

    #[test]
    fn a_shard_id_too_large_for_a_packet_id_is_rejected() {
        let base = std::fs::read_to_string(deploy_dir().join("local-3x1.toml")).unwrap();
        let big = base.replacen("id = 3\n", &format!("id = {}\n", PacketId::MAX_SHARD + 1), 1);
        assert!(Topology::parse(&big).unwrap_err().to_string().contains("too large"));
        let max = base.replacen("id = 3\n", &format!("id = {}\n", PacketId::MAX_SHARD), 1);
        let t = Topology::parse(&max).unwrap();
        assert_eq!(PacketId::new(PacketId::MAX_SHARD, 1).shard(), t.shards[2].id);
    }

    #[test]
    fn shipped_topologies_use_every_address_once() {
        for f in ["local-3x1.toml", "local-3x3.toml"] {
            let t = Topology::load(&deploy_dir().join(f)).unwrap();
            let nodes = t.nodes.iter().flat_map(|n| [n.addr.clone(), n.metrics_addr.clone()]);
            let routers = t.routers.iter().flat_map(|r| [Some(r.addr.clone()), r.metrics_addr.clone()].into_iter().flatten());
            let all: Vec<String> = nodes.chain(routers).collect();
            assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), all.len(), "{f}: an address is used twice: {all:?}");
        }
    }

    #[test]
    fn a_router_metrics_address_is_optional() {
        let t = default_topology();
        assert!(t.routers.iter().all(|r| r.metrics_addr.is_some()), "the shipped routers serve metrics");
        let mut text = std::fs::read_to_string(deploy_dir().join("local-3x1.toml")).unwrap();
        for r in &t.routers {
            text = text.replace(&format!(", metrics_addr = \"{}\"", r.metrics_addr.as_ref().unwrap()), "");
        }
        let t = Topology::parse(&text).unwrap();
        assert_eq!(t.routers.len(), 3);
        assert!(t.routers.iter().all(|r| r.metrics_addr.is_none()));
    }

    #[test]
    fn overlapping_or_missing_slots_are_rejected() {
        let base = std::fs::read_to_string(deploy_dir().join("local-3x1.toml")).unwrap();
        let overlap = base.replacen("slots = [[0, 34]]", "slots = [[0, 40]]", 1);
        assert!(Topology::parse(&overlap).unwrap_err().to_string().contains("owned by shards"));
        let gap = base.replacen("slots = [[0, 34]]", "slots = [[0, 30]]", 1);
        assert!(Topology::parse(&gap).unwrap_err().to_string().contains("owned by no shard"));
    }

    fn spec(id: NodeId, region: &str) -> NodeSpec {
        NodeSpec { id, region: region.into(), addr: format!("127.0.0.1:{}", 7200 + id), metrics_addr: format!("127.0.0.1:{}", 9200 + id) }
    }

    #[test]
    fn a_node_is_added_then_made_a_replica_then_replaces_another_one_version_at_a_time() {
        let t = default_topology();
        assert_eq!(t.version, 0, "a topology file is the seed, version 0");
        let t1 = t.add_node(&spec(4, "tianjin")).unwrap();
        assert_eq!(t1.version, 1);
        assert_eq!(t1.add_node(&spec(4, "tianjin")).unwrap_err(), Edit::Unchanged("node 4 is in the map already".into()));
        assert!(matches!(t1.add_node(&spec(4, "shanghai")), Err(Edit::Refused(_))), "an id is not reused for another node");
        let t2 = t1.add_replica(1, 4).unwrap();
        assert_eq!(t2.shard(1).unwrap().replicas, vec![1, 2, 3, 4]);
        assert!(matches!(t2.add_replica(1, 4), Err(Edit::Unchanged(_))));
        assert!(matches!(t2.remove_node(4), Err(Edit::Refused(_))), "a node holding replicas stays in the map");
        let t3 = t2.remove_replica(1, 3).unwrap();
        assert_eq!(t3.shard(1).unwrap().replicas, vec![1, 2, 4]);
        assert_eq!(t3.version, 3);
        // The map survives its own TOML, version included.
        let back = Topology::parse(&t3.to_toml()).unwrap();
        assert_eq!(back.version, 3);
        assert_eq!(back.shard(1).unwrap().replicas, vec![1, 2, 4]);
        assert_eq!(back.node(4).unwrap().region, "tianjin");
    }

    #[test]
    fn a_slot_moves_between_shards_and_the_ranges_stay_whole() {
        let t = default_topology();
        let (from, slots) = (t.owner_of_slot(5).unwrap(), t.slots);
        let to = t.shards.iter().map(|s| s.id).find(|s| *s != from).unwrap();
        let t1 = t.move_slot(5, to).unwrap();
        assert_eq!((t1.owner_of_slot(5), t1.version), (Some(to), 1));
        assert!((0..slots).filter(|s| *s != 5).all(|s| t1.owner_of_slot(s) == t.owner_of_slot(s)), "only slot 5 moved");
        assert!(matches!(t1.move_slot(5, to), Err(Edit::Unchanged(_))));
        assert!(matches!(t1.move_slot(slots, to), Err(Edit::Refused(_))));
        let back = t1.move_slot(5, from).unwrap();
        assert_eq!(back.shard(from).unwrap().slots, t.shard(from).unwrap().slots, "moved back, the ranges merge again");
        assert_eq!(Topology::parse(&back.to_toml()).unwrap().owner_of_slot(5), Some(from));
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10].into_iter().collect()), vec![[1, 4], [7, 8], [9, 11]]);
    }

    #[test]
    fn a_shard_is_added_with_no_slots_and_its_founding_version_and_survives_its_toml() {
        let t = default_topology();
        let t1 = t.add_shard(4, "shanghai", &[1, 2, 3]).unwrap();
        let s = t1.shard(4).unwrap();
        assert_eq!((s.founded, s.slots.len(), t1.version), (1, 0, 1));
        assert!(matches!(t1.add_shard(4, "shanghai", &[1, 2, 3]), Err(Edit::Unchanged(_))));
        assert!(matches!(t1.add_shard(4, "tianjin", &[1, 2, 3]), Err(Edit::Refused(_))), "an id is not reused");
        assert!(matches!(t1.add_shard(5, "shanghai", &[1, 2]), Err(Edit::Refused(m)) if m.contains("at least 3")));
        assert!(matches!(t1.add_shard(5, "nowhere", &[1, 2, 3]), Err(Edit::Refused(_))), "an unknown home region");
        let back = Topology::parse(&t1.to_toml()).unwrap();
        assert_eq!(back.shard(4).unwrap().founded, 1);
        assert_eq!(back.shard(1).unwrap().founded, 0, "a seed shard has no founding version");
        assert!(!t1.to_toml().contains("founded = 0"), "seed shards keep the topology file's shape");
    }

    #[test]
    fn a_change_that_leaves_too_few_replicas_or_a_region_majority_is_refused() {
        let t = default_topology().add_node(&spec(4, "shanghai")).unwrap();
        // Shard 1 on nodes 1, 2, 3: removing one leaves two.
        assert!(matches!(t.remove_replica(1, 3), Err(Edit::Refused(m)) if m.contains("fewer than 3")));
        // Node 4 in Shanghai beside node 2, then node 3 (Tianjin) out: Shanghai holds 2 of 3.
        let t = t.add_replica(1, 4).unwrap();
        assert!(matches!(t.remove_replica(1, 3), Err(Edit::Refused(m)) if m.contains("shanghai")));
        assert!(t.remove_replica(1, 2).is_ok(), "Shenzhen, Tianjin and Shanghai keep one each");
        assert!(matches!(t.add_replica(1, 9), Err(Edit::Refused(_))), "an unknown node is refused");
    }

    #[test]
    fn a_slot_move_and_a_drain_are_recorded_in_the_map_and_survive_its_toml() {
        let t = default_topology();
        let slot = (0..t.slots).find(|s| t.owner_of_slot(*s) == Some(1)).unwrap();
        let m = t.begin_move(slot, 2).unwrap();
        assert_eq!(m.moving(slot), Some(SlotMove { slot, from: 1, to: 2 }));
        assert_eq!(m.begin_move(slot, 2).unwrap_err(), Edit::Unchanged(format!("slot {slot} is moving to shard 2 already")));
        assert!(matches!(m.begin_move(slot, 3), Err(Edit::Refused(_))), "one move of a slot at a time");
        let d = m.set_drained("shenzhen", true).unwrap();
        assert!(matches!(d.set_drained("shenzhen", true), Err(Edit::Unchanged(_))));
        assert!(matches!(d.set_drained("atlantis", true), Err(Edit::Refused(_))));
        let back = Topology::parse(&d.to_toml()).unwrap();
        assert_eq!((back.moving(slot), back.drained.clone()), (Some(SlotMove { slot, from: 1, to: 2 }), vec!["shenzhen".to_string()]));
        let flipped = back.move_slot(slot, 2).unwrap();
        assert_eq!((flipped.owner_of_slot(slot), flipped.moving(slot)), (Some(2), None), "the flip ends the move");
        assert!(flipped.set_drained("shenzhen", false).unwrap().drained.is_empty());
        assert!(!t.to_toml().contains("drained") && !t.to_toml().contains("moves"), "a map without them does not mention them");
    }
}
