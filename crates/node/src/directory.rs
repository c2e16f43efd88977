//! The cluster map as this node knows it: the topology file seeds it (version 0); every later
//! version is replicated in the meta shard (`Command::SetClusterMap`), and this node keeps the
//! highest version it has seen. `follow` refreshes it (from the meta shard's applied state when
//! a replica of it is here, else from the other nodes' `GetMap`) and makes the node match it:
//! peer addresses, and the replicas it hosts (`Host::reconcile`).

use crate::host::Host;
use hongbao_proto::v1::cluster_client::ClusterClient;
use hongbao_proto::v1::GetMapRequest;
use hongbao_topology::{NodeId, Topology};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often a node looks for a newer map.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(500);
/// Bound on one GetMap call to another node.
const GET_MAP_TIMEOUT: Duration = Duration::from_millis(500);
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

    /// Keeps `map` if it is newer than the one held; says whether it was.
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

/// How many of `nodes` answered, and the newest map they answered with if newer than `than`
/// (answers no newer are not parsed: most rounds bring the same map).
pub async fn fetch(peers: &crate::peers::Peers, nodes: &[NodeId], than: u64) -> (usize, Option<Topology>) {
    let calls = nodes.iter().filter(|n| **n != peers.self_id).filter_map(|n| peers.channel(*n)).map(|ch| async move {
        let r = tokio::time::timeout(GET_MAP_TIMEOUT, ClusterClient::new(ch).get_map(GetMapRequest {})).await.ok()?.ok()?;
        let m = r.into_inner();
        Some(if m.version > than { parse(m.version, m.toml.as_bytes()) } else { None })
    });
    let answers: Vec<Option<Topology>> = futures::future::join_all(calls).await.into_iter().flatten().collect();
    (answers.len(), answers.into_iter().flatten().max_by_key(|t| t.version))
}

/// The map a starting node begins with: the newest of the seed and what the seed's nodes
/// answer. A node the seed does not name (added online) waits for a map that names it.
pub async fn at_start(seed: Topology, peers: &crate::peers::Peers, node_id: NodeId) -> anyhow::Result<Topology> {
    let nodes: Vec<NodeId> = seed.nodes.iter().map(|n| n.id).collect();
    let deadline = tokio::time::Instant::now() + JOIN_DEADLINE;
    let mut best = seed;
    loop {
        if let (_, Some(t)) = fetch(peers, &nodes, best.version).await {
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

/// Installs the newest map this node can find: the meta shard's applied state if a replica of
/// it is here, and what the meta shard's replicas answer. Both: a replica removed from the meta
/// shard stops hearing of new versions (the change that removed it may be the last it got).
/// Only if none of those answers, every node of the map is asked (the meta replicas this node
/// knows of may all have been replaced while it was away).
pub async fn refresh(host: &Host) {
    let t = host.topology();
    let meta: Vec<NodeId> = t.shard(t.meta_shard()).map(|s| s.replicas.clone()).unwrap_or_default();
    let (answered, mut asked) = fetch(&host.peers, &meta, t.version).await;
    if answered == 0 {
        let all: Vec<NodeId> = t.nodes.iter().map(|n| n.id).collect();
        asked = fetch(&host.peers, &all, t.version).await.1;
    }
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
