//! Cluster admin on a node: status (this node, or fanned out to all), audit over all shards,
//! leader transfer, drain / undrain of a region.

use crate::host::Host;
use crate::service::convert::{self, detail};
use hongbao_proto::v1::cluster_client::ClusterClient;
use hongbao_proto::v1::cluster_server::Cluster;
use hongbao_proto::v1::*;
use hongbao_proto::{status, ErrorCode};
use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Bound on any one node-to-node admin call.
const ADMIN_CALL_TIMEOUT: Duration = Duration::from_secs(3);

pub struct ClusterService {
    pub host: Arc<Host>,
}

fn role(s: &ServerState) -> ReplicaRole {
    match s {
        ServerState::Leader => ReplicaRole::Leader,
        ServerState::Follower => ReplicaRole::Follower,
        ServerState::Candidate => ReplicaRole::Candidate,
        ServerState::Learner => ReplicaRole::Learner,
        ServerState::Shutdown => ReplicaRole::Shutdown,
    }
}

impl ClusterService {
    fn local_status(&self) -> NodeStatus {
        let h = &self.host;
        let mut shards = Vec::new();
        for s in h.replica_list() {
            let m = s.raft.metrics().borrow_watched().clone();
            let lag = match (&m.replication, m.last_log_index) {
                (Some(rep), Some(last)) => {
                    rep.values().map(|matched| last.saturating_sub(matched.as_ref().map(|l| l.index).unwrap_or(0))).max().unwrap_or(0)
                }
                _ => 0,
            };
            shards.push(ShardStatus {
                shard: s.id,
                node: h.node_id,
                region: h.region.clone(),
                role: role(&m.state) as i32,
                leader: m.current_leader.unwrap_or(0),
                term: m.current_term,
                last_log_index: m.last_log_index.unwrap_or(0),
                committed: m.local_committed.map(|l| l.index).unwrap_or(0),
                applied: m.last_applied.map(|l| l.index).unwrap_or(0),
                lag,
                home_region: s.home_region.clone(),
                catching_up: h.rejoin.is_rejoining(s.id),
                members: {
                    let members = m.membership_config.membership();
                    members.voter_ids().chain(members.learner_ids()).collect()
                },
            });
        }
        let addr = h.topology().node(h.node_id).map(|n| n.addr.clone()).unwrap_or_default();
        let clock_untrusted = h.clock.trusted().err().map(|u| u.0).unwrap_or_default();
        NodeStatus { node: h.node_id, region: h.region.clone(), addr, up: true, shards, error: String::new(), clock_untrusted }
    }

    fn client(&self, node: u64) -> Option<ClusterClient<crate::transport::peers::PeerChannel>> {
        self.host.peers.channel(node).map(ClusterClient::new)
    }

    /// Every node's status; unreachable nodes appear as down with the error.
    pub async fn all_status(&self) -> StatusReply {
        let mut nodes = Vec::new();
        let map = self.host.topology();
        let calls = map.nodes.iter().map(|n| {
            let me = n.id == self.host.node_id;
            let client = self.client(n.id);
            let (id, region, addr) = (n.id, n.region.clone(), n.addr.clone());
            let local = if me { Some(self.local_status()) } else { None };
            async move {
                if let Some(l) = local {
                    return l;
                }
                let down = |error: String| NodeStatus { node: id, region: region.clone(), addr: addr.clone(), error, ..Default::default() };
                let res = match client {
                    Some(mut c) => tokio::time::timeout(ADMIN_CALL_TIMEOUT, c.status(StatusRequest { local_only: true })).await,
                    None => return down("no address".into()),
                };
                match res {
                    Ok(Ok(r)) => r.into_inner().nodes.into_iter().next().unwrap_or_default(),
                    Ok(Err(s)) => down(s.message().to_string()),
                    Err(_) => down("timed out".into()),
                }
            }
        });
        for n in futures::future::join_all(calls).await {
            nodes.push(n);
        }
        let mut regions: BTreeMap<String, bool> = BTreeMap::new();
        for n in &nodes {
            *regions.entry(n.region.clone()).or_insert(false) |= n.up;
        }
        let drained = self.host.placement.drained_regions();
        StatusReply {
            nodes,
            regions: regions.into_iter().map(|(region, up)| RegionStatus { drained: drained.contains(&region), region, up }).collect(),
            router: None,
        }
    }

    /// The node currently leading `shard`, as seen by the cluster (our replica first).
    async fn leader_of(&self, shard: u32) -> Option<u64> {
        if let Ok(s) = self.host.replica(shard) {
            if let Some(l) = s.raft.metrics().borrow_watched().current_leader {
                return Some(l);
            }
        }
        let st = self.all_status().await;
        st.leader_of(shard).map(|s| s.node)
    }

    async fn shard_totals(&self, shard: u32) -> Result<ShardTotals, Status> {
        let leader = self
            .leader_of(shard)
            .await
            .ok_or_else(|| status(detail(ErrorCode::Unavailable, format!("shard {shard} has no leader"), shard)))?;
        if leader == self.host.node_id {
            return self.local_totals(shard).await;
        }
        let mut c = self.client(leader).ok_or_else(|| Status::internal("leader has no address"))?;
        match tokio::time::timeout(ADMIN_CALL_TIMEOUT, c.shard_totals_of(ShardTotalsRequest { shard })).await {
            Ok(r) => r.map(|r| r.into_inner()),
            Err(_) => Err(status(detail(ErrorCode::Timeout, format!("shard {shard}: totals timed out"), shard))),
        }
    }

    /// One shard's totals from this node's replica, its leader: one consistent read after a
    /// ReadIndex, as `audit::shard_totals`, with the scan of the whole shard on a blocking
    /// thread rather than an async worker, and counted as a read in flight until it is done.
    async fn local_totals(&self, shard: u32) -> Result<ShardTotals, Status> {
        let read = self.host.begin_read(shard, false).await?;
        let host = self.host.clone();
        tokio::task::spawn_blocking(move || {
            let _read = read;
            crate::ops::audit::totals_of(shard, &crate::storage::ShardStore::frozen(&host.db, shard))
        })
        .await
        .map_err(|e| Status::internal(format!("shard {shard}: totals task: {e}")))
    }

    async fn move_leader(&self, shard: u32, to: u64) -> Result<(), Status> {
        let leader = self
            .leader_of(shard)
            .await
            .ok_or_else(|| status(detail(ErrorCode::Unavailable, format!("shard {shard} has no leader"), shard)))?;
        if leader == to {
            return Ok(());
        }
        if leader == self.host.node_id {
            return self.host.transfer_leader(shard, to).await.map_err(Status::from);
        }
        let mut c = self.client(leader).ok_or_else(|| Status::internal("leader has no address"))?;
        tokio::time::timeout(ADMIN_CALL_TIMEOUT * 3, c.transfer_leader(TransferLeaderRequest { shard, to_node: to }))
            .await
            .map_err(|_| Status::deadline_exceeded("leader transfer timed out"))??;
        Ok(())
    }

    /// Membership changes come only from an admin (directly or through a router); a node never
    /// asks another for one (a step that reaches a node not leading its shard answers NotLeader
    /// and the router re-sends it to the leader), so one node's key cannot make itself a
    /// replica of another shard, or remove one (#28).
    fn admin_only<T>(&self, req: &Request<T>, what: &str) -> Result<(), Status> {
        let who = crate::service::access::caller(req)?;
        if matches!(who, hongbao_auth::Identity::Node(_)) {
            metrics::counter!(crate::metrics::ACCESS_DENIED, "what" => what.to_string()).increment(1);
            tracing::warn!(caller = %who, what, "refused: a node asked for an admin's change");
            return Err(hongbao_proto::denied(format!("{who} may not {what}")));
        }
        Ok(())
    }

    /// The start of a drain or undrain: the region's mark in the map, then every node's status
    /// (to pick the leaders to move). None for a `local_only` call, the in-memory broadcast of
    /// older nodes (marks travel in the log now), which does nothing.
    async fn mark_drained(&self, req: &Request<DrainRequest>, drained: bool) -> Result<Option<(String, StatusReply)>, Status> {
        let DrainRequest { region, local_only } = req.get_ref().clone();
        if local_only {
            return Ok(None);
        }
        self.replicate_drain(req, &region, drained).await?;
        Ok(Some((region, self.all_status().await)))
    }

    /// Drain and undrain start only from an admin (directly or through a router, which checked
    /// the admin role); a node never starts one. The mark is a map change (`membership::
    /// set_drained`): taken on the meta shard's leader, NotLeader elsewhere.
    async fn replicate_drain<T>(&self, req: &Request<T>, region: &str, drained: bool) -> Result<(), Status> {
        let who = crate::service::access::caller(req)?;
        if matches!(who, hongbao_auth::Identity::Node(_)) {
            return Err(hongbao_proto::denied(format!("{who} may not drain or undrain a region")));
        }
        if !self.host.topology().regions.iter().any(|r| r.name == region) {
            return Err(Status::not_found(format!("no region {region}")));
        }
        crate::cluster::membership::set_drained(&self.host, region, drained).await.map(|_| ()).map_err(Status::from)
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        if req.get_ref().local_only {
            return Ok(Response::new(StatusReply { nodes: vec![self.local_status()], regions: vec![], router: None }));
        }
        Ok(Response::new(self.all_status().await))
    }

    async fn shard_totals_of(&self, req: Request<ShardTotalsRequest>) -> Result<Response<ShardTotals>, Status> {
        let shard = req.get_ref().shard;
        self.local_totals(shard).await.map(Response::new)
    }

    async fn audit(&self, _req: Request<AuditRequest>) -> Result<Response<AuditReply>, Status> {
        // Two passes (see docs/design.md, "audit"): money is checked per shard on one consistent
        // read each; the cross-shard check compares what each destination had received in pass 1
        // with what each source had sent by pass 2, so a credit in motion can't look doubled.
        let ids: Vec<u32> = self.host.topology().shards.iter().map(|s| s.id).collect();
        let mut first = Vec::new();
        for id in &ids {
            first.push(self.shard_totals(*id).await?);
        }
        let mut second = Vec::new();
        for id in &ids {
            second.push(self.shard_totals(*id).await?);
        }
        Ok(Response::new(crate::ops::audit::check(&first, &second)))
    }

    async fn transfer_leader(&self, req: Request<TransferLeaderRequest>) -> Result<Response<TransferLeaderReply>, Status> {
        let who = crate::service::access::caller(&req)?;
        let r = req.into_inner();
        let map = self.host.topology();
        let shard = map.shard(r.shard).ok_or_else(|| Status::not_found(format!("no shard {}", r.shard)))?;
        if !shard.replicas.contains(&r.to_node) {
            return Err(Status::invalid_argument(format!("node {} holds no replica of shard {}", r.to_node, r.shard)));
        }
        // Done here, on the shard's leader, and never forwarded: an admin's call that reached
        // another node answers NotLeader with the leader, where the router re-sends it.
        let replica = self.host.replica(r.shard).map_err(Status::from)?;
        if !self.host.is_leader(&replica) {
            return Err(self.host.not_leader(&replica, None).into());
        }
        if let hongbao_auth::Identity::Node(from) = who {
            // Another node may only ask for a move placement would make by itself (the leader
            // moves of a drain or undrain an admin started there). The drain that asks may be
            // newer than the map here: read the committed map once before refusing.
            let would = |host: &Host| host.placement.would_move(r.shard, &host.region, r.to_node);
            if !would(&self.host) {
                crate::cluster::directory::refresh(&self.host).await;
            }
            if !would(&self.host) {
                metrics::counter!(crate::metrics::ACCESS_DENIED, "what" => "leader transfer").increment(1);
                tracing::warn!(
                    from,
                    shard = r.shard,
                    to = r.to_node,
                    "refused: a node asked for a leader transfer placement would not make"
                );
                return Err(hongbao_proto::denied(format!(
                    "node {from} may not move the leadership of shard {} to node {}: only an admin may choose a leader",
                    r.shard, r.to_node
                )));
            }
        }
        if self.host.node_id != r.to_node {
            self.host.transfer_leader(r.shard, r.to_node).await.map_err(Status::from)?;
        }
        Ok(Response::new(TransferLeaderReply {}))
    }

    async fn drain(&self, req: Request<DrainRequest>) -> Result<Response<DrainReply>, Status> {
        let Some((region, st)) = self.mark_drained(&req, true).await? else {
            return Ok(Response::new(DrainReply { moved: vec![] }));
        };
        let mut moved = Vec::new();
        for s in &self.host.topology().shards {
            let leader = st.leader_of(s.id).map(|x| x.node);
            let Some(leader) = leader else { continue };
            if self.host.topology().region_of(leader) != Some(region.as_str()) {
                continue;
            }
            let target = self.host.placement.failover_target(s.id, &st, Some(&region));
            if let Some(to) = target {
                self.move_leader(s.id, to).await?;
                moved.push(format!("shard {}: leader {leader} -> {to}", s.id));
            }
        }
        Ok(Response::new(DrainReply { moved }))
    }

    async fn get_map(&self, _req: Request<GetMapRequest>) -> Result<Response<ClusterMap>, Status> {
        // Answered only by the meta shard's leader, after a linearizable read (ReadIndex): the
        // map its replica has applied then is the one the meta shard committed. Elsewhere
        // NotLeader with the leader (or UNKNOWN_SHARD on a node with no meta replica), so a
        // node or router that believes an answer believes the meta shard, not this node (#28).
        let meta = self.host.topology().meta_shard();
        self.host.linearizable(meta).await?;
        let t = crate::cluster::directory::local_map(&self.host).map(Arc::new).unwrap_or_else(|| self.host.topology());
        Ok(Response::new(ClusterMap { version: t.version, toml: t.to_toml() }))
    }

    async fn add_node(&self, req: Request<AddNodeRequest>) -> Result<Response<MembershipReply>, Status> {
        self.admin_only(&req, "add a node")?;
        let n = req.into_inner().node.ok_or_else(|| crate::service::convert::invalid("no node given"))?;
        let spec = hongbao_topology::NodeSpec { id: n.id, region: n.region, addr: n.addr, metrics_addr: n.metrics_addr };
        convert::membership_reply(crate::cluster::membership::change_map(&self.host, |t| t.add_node(&spec)).await)
    }

    async fn remove_node(&self, req: Request<RemoveNodeRequest>) -> Result<Response<MembershipReply>, Status> {
        self.admin_only(&req, "remove a node")?;
        let id = req.get_ref().node;
        convert::membership_reply(crate::cluster::membership::change_map(&self.host, |t| t.remove_node(id)).await)
    }

    async fn add_replica(&self, req: Request<ReplicaChangeRequest>) -> Result<Response<MembershipReply>, Status> {
        self.admin_only(&req, "add a replica")?;
        let ReplicaChangeRequest { shard, node } = req.into_inner();
        convert::membership_reply(crate::cluster::membership::add_replica(&self.host, shard, node).await)
    }

    async fn remove_replica(&self, req: Request<ReplicaChangeRequest>) -> Result<Response<MembershipReply>, Status> {
        self.admin_only(&req, "remove a replica")?;
        let ReplicaChangeRequest { shard, node } = req.into_inner();
        convert::membership_reply(crate::cluster::membership::remove_replica(&self.host, shard, node).await)
    }

    async fn add_shard(&self, req: Request<AddShardRequest>) -> Result<Response<MembershipReply>, Status> {
        self.admin_only(&req, "add a shard")?;
        let AddShardRequest { shard, home, replicas } = req.into_inner();
        convert::membership_reply(crate::cluster::membership::add_shard(&self.host, shard, &home, &replicas).await)
    }

    async fn slot_load(&self, req: Request<SlotLoadRequest>) -> Result<Response<SlotLoadReply>, Status> {
        let local = || self.host.slot_load.counts().into_iter().map(|(slot, requests)| SlotCount { slot, requests }).collect::<Vec<_>>();
        if req.get_ref().local_only {
            return Ok(Response::new(SlotLoadReply { slots: local(), answered: vec![self.host.node_id], missing: vec![] }));
        }
        self.admin_only(&req, "read the load per slot")?;
        let map = self.host.topology();
        let mut sum: BTreeMap<u32, u64> = local().into_iter().map(|c| (c.slot, c.requests)).collect();
        let (mut answered, mut missing) = (vec![self.host.node_id], vec![]);
        let calls = map.nodes.iter().filter(|n| n.id != self.host.node_id).map(|n| {
            let (id, client) = (n.id, self.client(n.id));
            async move {
                let Some(mut c) = client else { return (id, None) };
                match tokio::time::timeout(ADMIN_CALL_TIMEOUT, c.slot_load(SlotLoadRequest { local_only: true })).await {
                    Ok(Ok(r)) => (id, Some(r.into_inner().slots)),
                    _ => (id, None),
                }
            }
        });
        for (id, slots) in futures::future::join_all(calls).await {
            match slots {
                Some(slots) => {
                    answered.push(id);
                    for c in slots {
                        *sum.entry(c.slot).or_default() += c.requests;
                    }
                }
                None => missing.push(id),
            }
        }
        let slots = sum.into_iter().map(|(slot, requests)| SlotCount { slot, requests }).collect();
        Ok(Response::new(SlotLoadReply { slots, answered, missing }))
    }

    async fn move_slot(&self, req: Request<MoveSlotRequest>) -> Result<Response<MoveSlotReply>, Status> {
        self.admin_only(&req, "move a slot")?;
        let MoveSlotRequest { slot, to_shard } = req.into_inner();
        convert::slot_move_reply(crate::cluster::slot_move::move_slot(&self.host, slot, to_shard).await)
    }

    async fn undrain(&self, req: Request<DrainRequest>) -> Result<Response<DrainReply>, Status> {
        let Some((region, st)) = self.mark_drained(&req, false).await? else {
            return Ok(Response::new(DrainReply { moved: vec![] }));
        };
        let mut moved = Vec::new();
        for s in self.host.topology().shards.iter().filter(|s| s.home == region) {
            if let Some(to) = self.host.placement.home_replica(s.id, &st) {
                self.move_leader(s.id, to).await?;
                moved.push(format!("shard {}: leader -> {to} (home)", s.id));
            }
        }
        Ok(Response::new(DrainReply { moved }))
    }
}
