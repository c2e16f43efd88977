//! The cluster map as this node knows it: the topology file seeds it (version 0); every later
//! version is replicated in the meta shard (`Command::SetClusterMap`). `follow` refreshes it and
//! makes the node match it: peer addresses, and the replicas it hosts (`Host::reconcile`).
//!
//! A map is believed only as the meta shard committed it, never for its version number (#28):
//! it comes from this node's own replica of the meta shard, or from the meta shard's leader,
//! which answers `GetMap` only after a linearizable read (ReadIndex). Only nodes that the map
//! held here names as meta-shard replicas are asked, so another node's key cannot hand this node
//! (or a router) a map of its own making. A node that is away while every meta replica it knows
//! of is replaced needs a topology file naming a live one (`hongbao cluster map`).

use crate::host::Host;
use hongbao_proto::v1::cluster_client::ClusterClient;
use hongbao_proto::v1::GetMapRequest;
use hongbao_topology::{NodeId, Topology};
use openraft::async_runtime::WatchReceiver;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often a node looks for a newer map.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(500);
/// Bound on one GetMap call to another node (the leader's answer waits for a ReadIndex).
const GET_MAP_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a node that is not in its topology file (added online) waits at start for another
/// node to tell it the map that names it.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(60);

/// The newest map this node has seen; cheap to clone (one shared cell).
#[derive(Clone)]
pub struct Directory {
    map: Arc<watch::Sender<Arc<Topology>>>,
}

impl Directory {
    pub fn new(seed: Topology) -> Directory {
        Directory { map: Arc::new(watch::Sender::new(Arc::new(seed))) }
    }

    pub fn get(&self) -> Arc<Topology> {
        self.map.borrow().clone()
    }

    /// Keeps `map` if it is newer than the one held; says whether it was. Callers hand it only
    /// maps the meta shard committed (`refresh`, `at_start`, a change made here).
    pub fn install(&self, map: Topology) -> bool {
        let version = map.version;
        let newer = self.map.send_if_modified(|cur| {
            if map.version > cur.version {
                *cur = Arc::new(map);
                true
            } else {
                false
            }
        });
        if newer {
            tracing::info!(version, "cluster map installed");
            metrics::gauge!(crate::metrics::MAP_VERSION).set(version as f64);
        }
        newer
    }
}

/// Parses a stored or received map: a map that does not validate is ignored (and logged), never
/// installed.
pub fn parse(version: u64, toml: &[u8]) -> Option<Topology> {
    let text = std::str::from_utf8(toml).ok()?;
    match Topology::parse(text) {
        Ok(t) if t.version == version => Some(t),
        Ok(t) => {
            tracing::error!(version, inner = t.version, "cluster map's version differs from the one it was stored under; ignored");
            None
        }
        Err(e) => {
            tracing::error!(version, error = %e, "cluster map does not validate; ignored");
            None
        }
    }
}

/// The map as the meta shard's replica here has applied it (None: no replica here, or no map
/// stored yet).
pub fn local_map(host: &Host) -> Option<Topology> {
    let meta = host.topology().meta_shard();
    host.replica(meta).ok()?;
    let (version, toml) = hongbao_ledger::view::cluster_map(&host.store(meta))?;
    parse(version, &toml)
}

/// The map as the meta shard committed it, from its leader: the meta replicas `map` names are
/// asked (`first` first, the leader known here); a follower answers NotLeader with its leader,
/// asked next if `map` names it a meta replica too. None: no leader answered. A map no newer
/// than `than` is not parsed (most rounds bring the same map) and answers None.
pub async fn fetch(peers: &crate::peers::Peers, map: &Topology, first: Option<NodeId>, than: u64) -> Option<Topology> {
    let meta: Vec<NodeId> = map.shard(map.meta_shard()).map(|s| s.replicas.clone()).unwrap_or_default();
    let mut queue: VecDeque<NodeId> = first.filter(|n| meta.contains(n)).into_iter().chain(meta.iter().copied()).collect();
    let mut asked = BTreeSet::new();
    while let Some(n) = queue.pop_front() {
        if n == peers.self_id || !asked.insert(n) {
            continue;
        }
        let Some(ch) = peers.channel(n) else { continue };
        match tokio::time::timeout(GET_MAP_TIMEOUT, ClusterClient::new(ch).get_map(GetMapRequest {})).await {
            Ok(Ok(r)) => {
                let m = r.into_inner();
                return if m.version > than { parse(m.version, m.toml.as_bytes()) } else { None };
            }
            Ok(Err(s)) => {
                let hint = hongbao_proto::detail_of(&s).leader_hint_node;
                if meta.contains(&hint) {
                    queue.push_front(hint);
                }
            }
            Err(_) => {}
        }
    }
    None
}

/// The map a starting node begins with: the seed, or the newer one the meta shard's leader
/// answers (asked among the meta replicas the seed names). A node the seed does not name (added
/// online) waits for a map that names it.
pub async fn at_start(seed: Topology, peers: &crate::peers::Peers, node_id: NodeId) -> anyhow::Result<Topology> {
    let deadline = tokio::time::Instant::now() + JOIN_DEADLINE;
    let mut best = seed;
    loop {
        if let Some(t) = fetch(peers, &best, None, best.version).await {
            best = t;
        }
        if best.node(node_id).is_some() {
            return Ok(best);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "node {node_id} is in neither the topology file nor the cluster map the nodes it names answered with \
             (version {}): add it with `hongbao cluster add-node` within a minute of starting it, and give it a \
             topology file naming live nodes (`hongbao cluster map > topology.toml`)",
            best.version
        );
        tracing::info!(node = node_id, "not in the cluster map yet; asking the other nodes again");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Installs the newest map the meta shard committed: from this node's replica of it if that
/// leads (its applied state is the committed map), else from the meta shard's leader. Both when
/// a replica is here but does not lead: one removed from the meta shard stops hearing of new
/// versions (the change that removed it may be the last it got).
pub async fn refresh(host: &Host) {
    let t = host.topology();
    let meta = t.meta_shard();
    let here = host.replica(meta).ok();
    let leads = here.as_ref().is_some_and(|r| host.is_leader(r));
    let known = here.as_ref().and_then(|r| r.raft.metrics().borrow_watched().current_leader);
    let asked = if leads { None } else { fetch(&host.peers, &t, known, t.version).await };
    let newest = [local_map(host), asked].into_iter().flatten().max_by_key(|m| m.version);
    if let Some(m) = newest.filter(|m| m.version > host.topology().version) {
        host.install_map(m);
    }
}

/// Keeps this node on the newest map until `stop`: reads it, installs it, reconciles.
pub async fn follow(host: Arc<Host>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_EVERY) => {},
            _ = stop.changed() => return,
        }
        refresh(&host).await;
        host.reconcile().await;
    }
}
