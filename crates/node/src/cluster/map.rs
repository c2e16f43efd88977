//! The cluster map as this node holds it (`Directory`): the topology file seeds it (version 0);
//! every later version is replicated in the meta shard (`Command::SetClusterMap`) and installed
//! here by `cluster::directory`, which follows it.
//!
//! A map is believed only as the meta shard committed it, never for its version number (#28):
//! it comes from this node's own replica of the meta shard, or from the meta shard's leader,
//! which answers `GetMap` only after a linearizable read (ReadIndex, `Peers::fetch_map`). Only
//! nodes that the map held here names as meta-shard replicas are asked, so another node's key
//! cannot hand this node (or a router) a map of its own making.

use crate::transport::peers::Peers;
use hongbao_topology::{NodeId, Topology};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

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

/// The map a starting node begins with: the seed, or the newer one the meta shard's leader
/// answers (asked among the meta replicas the seed names). A node the seed does not name (added
/// online) waits for a map that names it.
pub async fn at_start(seed: Topology, peers: &Peers, node_id: NodeId) -> anyhow::Result<Topology> {
    let deadline = tokio::time::Instant::now() + JOIN_DEADLINE;
    let mut best = seed;
    loop {
        if let Some(t) = peers.fetch_map(&best, None, best.version).await.newer() {
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
