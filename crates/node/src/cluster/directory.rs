//! Following the cluster map (`cluster::map`): `follow` refreshes it and makes the node match
//! it: peer addresses, and the replicas it hosts (`Host::reconcile`).
//!
//! A map is believed only as the meta shard committed it, never for its version number (#28):
//! it comes from this node's own replica of the meta shard, or from the meta shard's leader,
//! which answers `GetMap` only after a linearizable read (ReadIndex). Only nodes that the map
//! held here names as meta-shard replicas are asked, so another node's key cannot hand this node
//! (or a router) a map of its own making. A node that is away while every meta replica it knows
//! of is replaced needs a topology file naming a live one (`hongbao cluster map`).

use crate::cluster::map::parse;
use crate::host::Host;
use crate::transport::peers::MapAnswer;
use hongbao_topology::Topology;
use openraft::async_runtime::WatchReceiver;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often a node looks for a newer map.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// The map as the meta shard's replica here has applied it (None: no replica here, or no map
/// stored yet).
pub fn local_map(host: &Host) -> Option<Topology> {
    let meta = host.topology().meta_shard();
    host.replica(meta).ok()?;
    let (version, toml) = hongbao_ledger::view::cluster_map(&host.store(meta))?;
    parse(version, &toml)
}

/// Installs the newest map the meta shard committed: from this node's replica of it if that
/// leads (its applied state, after a ReadIndex, is the committed map), else from the meta
/// shard's leader. Both when a replica is here but does not lead: one removed from the meta
/// shard stops hearing of new versions (the change that removed it may be the last it got).
/// Whether the map held now is confirmed as the newest (false: no meta leader answered, so a
/// refusal judged on it must not be final).
pub async fn refresh(host: &Host) -> bool {
    let t = host.topology();
    let meta = t.meta_shard();
    let here = host.replica(meta).ok();
    let leads = here.as_ref().is_some_and(|r| host.is_leader(r));
    let known = here.as_ref().and_then(|r| r.raft.metrics().borrow_watched().current_leader);
    let (asked, confirmed) = if leads {
        (None, host.linearizable(meta).await.is_ok())
    } else {
        match host.peers.fetch_map(&t, known, t.version).await {
            MapAnswer::Newer(m) => (Some(*m), true),
            MapAnswer::NotNewer => (None, true),
            MapAnswer::NoAnswer => (None, false),
        }
    };
    let newest = [local_map(host), asked].into_iter().flatten().max_by_key(|m| m.version);
    if let Some(m) = newest.filter(|m| m.version > host.topology().version) {
        host.install_map(m);
    }
    confirmed
}

/// Keeps this node on the newest map until `stop`: reads it, installs it, reconciles.
pub async fn follow(host: Arc<Host>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            biased; // a fixed order, which a seeded simulation can replay (`runtime`)
            _ = tokio::time::sleep(FOLLOW_EVERY) => {},
            _ = stop.changed() => return,
        }
        refresh(&host).await;
        host.reconcile().await;
    }
}
