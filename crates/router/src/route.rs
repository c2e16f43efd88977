//! Routing: leader tracking, health checks, forwarding with retries.

use crate::coalesce::Coalescer;
use crate::gate::Gate;
use crate::trace::{self, Trace};
use hongbao_auth::Role;
use hongbao_proto::v1::cluster_client::ClusterClient;
use hongbao_proto::v1::cluster_server::Cluster;
use hongbao_proto::v1::grab_gateway_server::GrabGateway;
use hongbao_proto::v1::notifier_client::NotifierClient;
use hongbao_proto::v1::notifier_server::Notifier;
use hongbao_proto::v1::packets_client::PacketsClient;
use hongbao_proto::v1::packets_server::Packets;
use hongbao_proto::v1::wallet_client::WalletClient;
use hongbao_proto::v1::wallet_server::Wallet;
use hongbao_proto::v1::*;
use hongbao_proto::{detail_of, error, retry_step, ErrorCode, RetryStep};
use hongbao_topology::{NodeId, PacketId, ShardId, Topology};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::limits::{
    ADMIN_TIMEOUT, ATTEMPT_TIMEOUT, HEALTH_EVERY, HEALTH_TIMEOUT, MAP_EVERY, MAP_TIMEOUT, MAX_ATTEMPTS, MAX_LEADER_HOPS,
    MEMBERSHIP_TIMEOUT, ROUTE_DEADLINE, WAIT_MAX, WAIT_START,
};

#[derive(Default, Clone, Copy)]
struct Health {
    up: bool,
    fails: u32,
}

pub struct Router {
    /// The cluster map in force: the topology file at start, then each higher version the meta
    /// shard's leader answers `GetMap` with (`refresh_map`, #16, #28). Read it with `topology()`.
    map: RwLock<Arc<Topology>>,
    pub region: String,
    /// This router's certificate, for channels to nodes that join later.
    tls: ClientTlsConfig,
    /// A channel per node, made on first use, with the address it was made for (a node that
    /// reappears at another address gets a new one).
    channels: RwLock<HashMap<NodeId, (String, Channel)>>,
    leaders: RwLock<HashMap<ShardId, NodeId>>,
    /// An entry per node of the map: added (up) when a node joins, dropped when it leaves.
    health: RwLock<HashMap<NodeId, Health>>,
    /// Requests in flight per shard, a semaphore made on a shard's first request.
    inflight: RwLock<HashMap<ShardId, Arc<Semaphore>>>,
    max_inflight: usize,
    /// Grabs go to nodes coalesced, many per call (None: one call per grab).
    coalescer: Option<Arc<Coalescer>>,
    /// Whether the last health round reached a leader of every shard (`unreached_shards`), and
    /// if not, why: what this router's grpc.health.v1 status says.
    ready: RwLock<Result<(), NotReady>>,
    /// Every node's answer about its own replicas in the last health round (the status page).
    last_round: RwLock<Vec<ShardStatus>>,
    /// Count and latency of forwarded calls, per second (the status page's chart).
    pub traffic: crate::status_page::Traffic,
}

/// A channel to node `node`: connects on first use, and keeps the connection alive so a dead
/// node is noticed within seconds. TLS accepts that node's certificate only (#28).
fn node_channel(node: NodeId, addr: &str, tls: &ClientTlsConfig) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls.clone().domain_name(hongbao_auth::node_dns_name(node)))?
        .connect_timeout(Duration::from_millis(300))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(1))
        .connect_lazy())
}

impl Router {
    /// `tls`: this router's own certificate (nodes serve their API only to routers and admin).
    pub fn new(topology: Arc<Topology>, region: String, max_inflight: usize, coalesce: bool, tls: ClientTlsConfig) -> Arc<Router> {
        assert!(max_inflight > 0, "a router must let at least one request through");
        let coalescer = coalesce.then(|| Coalescer::new(ATTEMPT_TIMEOUT));
        // Until health checks say otherwise, assume every node is up.
        let health = topology.nodes.iter().map(|n| (n.id, Health { up: true, fails: 0 })).collect();
        metrics::gauge!(crate::metrics::MAP_VERSION).set(topology.version as f64);
        Arc::new(Router {
            map: RwLock::new(topology),
            region,
            tls,
            channels: RwLock::new(HashMap::new()),
            leaders: RwLock::new(HashMap::new()),
            health: RwLock::new(health),
            inflight: RwLock::new(HashMap::new()),
            max_inflight,
            coalescer,
            ready: RwLock::new(Err(NotReady::NoRoundYet)),
            last_round: RwLock::new(Vec::new()),
            traffic: crate::status_page::Traffic::default(),
        })
    }

    /// The cluster map in force (a snapshot: a newer one may be installed meanwhile).
    pub fn topology(&self) -> Arc<Topology> {
        self.map.read().expect("map lock").clone()
    }

    /// Puts `new` in force if its version is higher than the map's (a meta leader may answer
    /// before it applied a change another answered with: an older or equal version is ignored);
    /// returns whether it did. Only a map the meta shard committed comes here (`refresh_map`). Nodes
    /// that left the map, or moved to another address, lose their channel, coalescer queue,
    /// health entry and any shard routed to them; nodes that joined are assumed up until the
    /// health loop says otherwise. Channels and semaphores for new nodes and shards are made on
    /// first use.
    pub fn install(&self, new: Topology) -> bool {
        let new = Arc::new(new);
        let old = {
            let mut map = self.map.write().expect("map lock");
            if new.version <= map.version {
                return false;
            }
            std::mem::replace(&mut *map, new.clone())
        };
        let moved = |id: NodeId, addr: &str| new.node(id).map(|n| n.addr != addr).unwrap_or(true);
        self.channels.write().expect("channels lock").retain(|id, (addr, _)| !moved(*id, addr));
        if let Some(c) = &self.coalescer {
            for n in old.nodes.iter().filter(|n| moved(n.id, &n.addr)) {
                c.forget(n.id);
            }
        }
        {
            let mut health = self.health.write().expect("health lock");
            health.retain(|id, _| new.node(*id).is_some());
            for n in &new.nodes {
                health.entry(n.id).or_insert(Health { up: true, fails: 0 });
            }
        }
        self.leaders
            .write()
            .expect("leaders lock")
            .retain(|shard, node| new.shard(*shard).map(|s| s.replicas.contains(node)).unwrap_or(false));
        tracing::info!(version = new.version, "cluster map installed");
        metrics::gauge!(crate::metrics::MAP_VERSION).set(new.version as f64);
        true
    }

    /// Reads the cluster map from the meta shard's leader and installs it when it is newer.
    pub async fn refresh_map(&self) {
        let m = match self.committed_map().await {
            Ok(m) => m.into_inner(),
            Err(s) => {
                tracing::debug!("cluster map not read: {}", detail_of(&s).message);
                return;
            }
        };
        // Most rounds bring the same map: skip parsing it.
        if m.version <= self.topology().version {
            return;
        }
        match Topology::parse(&m.toml) {
            Ok(t) => {
                self.install(t);
            }
            Err(e) => tracing::warn!(version = m.version, "cluster map from the meta leader does not parse, kept the old one: {e}"),
        }
    }

    /// The cluster map as the meta shard committed it: asked of the meta shard's replicas that
    /// this router's map names (its leader first when known), following a NotLeader hint only
    /// to another of them. Only the leader answers, after a linearizable read, so a map is
    /// believed because the meta shard committed it, never for its version; a node that is no
    /// meta replica is never asked (its key could answer any map: #28).
    pub async fn committed_map(&self) -> Result<Response<ClusterMap>, Status> {
        let t = self.topology();
        let meta_shard = t.meta_shard();
        let mut meta: Vec<NodeId> = t.shard(meta_shard).map(|s| s.replicas.clone()).unwrap_or_default();
        meta.sort_by_key(|n| (!self.is_up(*n), t.region_of(*n) != Some(self.region.as_str())));
        let known = self.leaders.read().expect("leaders lock").get(&meta_shard).copied();
        let mut queue: std::collections::VecDeque<NodeId> =
            known.filter(|n| meta.contains(n)).into_iter().chain(meta.iter().copied()).collect();
        let mut asked = std::collections::BTreeSet::new();
        let mut last = error(ErrorCode::Unavailable, format!("no replica of the meta shard (shard {meta_shard}) answered"));
        while let Some(n) = queue.pop_front() {
            if !asked.insert(n) {
                continue;
            }
            let Some(ch) = self.channel(n) else { continue };
            match tokio::time::timeout(MAP_TIMEOUT, ClusterClient::new(ch).get_map(GetMapRequest {})).await {
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(s)) => {
                    let hint = detail_of(&s).leader_hint_node;
                    if meta.contains(&hint) {
                        queue.push_front(hint);
                    }
                    last = s;
                }
                Err(_) => last = error(ErrorCode::Timeout, format!("node {n}: cluster map not read in {MAP_TIMEOUT:?}")),
            }
        }
        Err(last)
    }

    /// The channel to `node`, made on first use; None when the node is not in the map (or its
    /// address is not one).
    fn channel(&self, node: NodeId) -> Option<Channel> {
        let t = self.topology();
        let addr = &t.node(node)?.addr;
        if let Some((a, ch)) = self.channels.read().expect("channels lock").get(&node) {
            if a == addr {
                return Some(ch.clone());
            }
        }
        let mut channels = self.channels.write().expect("channels lock");
        // Another call may have made it meanwhile: one connection per node.
        if let Some((a, ch)) = channels.get(&node) {
            if a == addr {
                return Some(ch.clone());
            }
        }
        match node_channel(node, addr, &self.tls) {
            Ok(ch) => {
                channels.insert(node, (addr.clone(), ch.clone()));
                Some(ch)
            }
            Err(e) => {
                tracing::warn!(node, addr, "no channel to the node: {e}");
                None
            }
        }
    }

    /// `shard`'s in-flight limit, made on its first request; None for a shard not in the map.
    fn inflight(&self, shard: ShardId) -> Option<Arc<Semaphore>> {
        if let Some(s) = self.inflight.read().expect("inflight lock").get(&shard) {
            return Some(s.clone());
        }
        self.topology().shard(shard)?;
        let mut all = self.inflight.write().expect("inflight lock");
        Some(all.entry(shard).or_insert_with(|| Arc::new(Semaphore::new(self.max_inflight))).clone())
    }

    /// What this router sees: node health, the leader it routes each shard to, regions up.
    pub fn view(&self) -> RouterView {
        let t = self.topology();
        let health = self.health.read().expect("health lock");
        let nodes: Vec<NodeHealth> = t
            .nodes
            .iter()
            .map(|n| NodeHealth { node: n.id, region: n.region.clone(), up: health.get(&n.id).map(|h| h.up).unwrap_or(false) })
            .collect();
        let mut leaders: Vec<ShardLeader> =
            self.leaders.read().expect("leaders lock").iter().map(|(s, n)| ShardLeader { shard: *s, node: *n }).collect();
        leaders.sort_by_key(|l| l.shard);
        let regions = t
            .regions
            .iter()
            .map(|r| RegionStatus { region: r.name.clone(), up: nodes.iter().any(|n| n.region == r.name && n.up), drained: false })
            .collect();
        RouterView { region: self.region.clone(), nodes, leaders, regions }
    }

    /// Ok when the last health round reached, for every shard, a leader that a majority of the
    /// shard's replicas follows; else which shards it did not.
    pub fn readiness(&self) -> Result<(), NotReady> {
        self.ready.read().expect("ready lock").clone()
    }

    /// The last health round's answers: each node that answered, about its own replicas.
    pub fn last_round(&self) -> Vec<ShardStatus> {
        self.last_round.read().expect("round lock").clone()
    }

    /// Whether any node answered its last health checks (cluster-wide admin calls can be served).
    pub fn any_node_up(&self) -> bool {
        self.health.read().expect("health lock").values().any(|h| h.up)
    }

    fn is_up(&self, node: NodeId) -> bool {
        self.health.read().expect("health lock").get(&node).map(|h| h.up).unwrap_or(false)
    }

    /// Nodes to try for `shard`, best first: known leader, then up replicas in this region, then
    /// other up replicas, then the rest (they may have come back before the health check saw it).
    fn candidates(&self, shard: ShardId) -> Vec<NodeId> {
        let mut out = Vec::new();
        if let Some(l) = self.leaders.read().expect("leaders lock").get(&shard) {
            if self.is_up(*l) {
                out.push(*l);
            }
        }
        let t = self.topology();
        let Some(s) = t.shard(shard) else { return out };
        let mut reps: Vec<NodeId> = s.replicas.clone();
        reps.sort_by_key(|r| (!self.is_up(*r), t.region_of(*r) != Some(self.region.as_str())));
        for r in reps {
            if !out.contains(&r) {
                out.push(r);
            }
        }
        out
    }

    fn set_leader(&self, shard: ShardId, node: NodeId) {
        let mut l = self.leaders.write().expect("leaders lock");
        if l.insert(shard, node) != Some(node) {
            tracing::info!(shard, leader = node, "leader changed");
            metrics::counter!(crate::metrics::LEADER_CHANGES).increment(1);
        }
    }

    fn node_by_addr(&self, addr: &str) -> Option<NodeId> {
        self.topology().nodes.iter().find(|n| n.addr == addr).map(|n| n.id)
    }

    /// Sends `req` to the leader of `shard`, following hints and failing over, within the
    /// deadline. The request (and so its request id) is the same on every attempt, each sent with
    /// the call's `traceparent`. Counted in `traffic`; one log line per call with its trace id
    /// (info when the trace is sampled, else debug), in a span exported over OTLP when that is on.
    pub async fn forward<Q, T, F, Fut>(&self, shard: ShardId, trace: &Trace, req: Q, call: F) -> Result<Response<T>, Status>
    where
        Q: Clone,
        F: Fn(NodeId, Channel, Request<Q>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let start = Instant::now();
        let what = std::any::type_name::<Q>().rsplit("::").next().unwrap_or_default();
        let span = trace.span(what, shard);
        let res = self.attempts(shard, trace, req, call).instrument(span.clone()).await;
        let elapsed = start.elapsed();
        self.traffic.record(elapsed);
        // Read only when the line or the span is written.
        let node = || self.leaders.read().expect("leaders lock").get(&shard).copied().unwrap_or(0);
        let code = || match &res {
            Ok(_) => "OK",
            Err(s) => detail_of(s).code().as_str_name(),
        };
        if !span.is_disabled() {
            span.record("node", node());
            span.record("code", code());
        }
        if trace.sampled {
            tracing::info!(trace_id = %trace.id, what, shard, node = node(), code = code(), ?elapsed, "routed");
        } else {
            tracing::debug!(trace_id = %trace.id, what, shard, node = node(), code = code(), ?elapsed, "routed");
        }
        res
    }

    async fn attempts<Q, T, F, Fut>(&self, shard: ShardId, trace: &Trace, req: Q, call: F) -> Result<Response<T>, Status>
    where
        Q: Clone,
        F: Fn(NodeId, Channel, Request<Q>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let sem = self.inflight(shard).ok_or_else(|| error(ErrorCode::UnknownShard, format!("no shard {shard}")))?;
        let _permit = sem.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!(crate::metrics::OVERLOADED).increment(1);
            error(ErrorCode::Overloaded, format!("router: {} requests in flight for shard {shard}; back off and retry", self.max_inflight))
        })?;
        let start = Instant::now();
        let mut last = error(ErrorCode::Unavailable, format!("shard {shard}: no replica reachable"));
        let mut hinted: Option<NodeId> = None;
        let mut hops = 0u32;
        let mut tried_round = 0usize;
        let mut wait = WAIT_START;
        for _ in 0..MAX_ATTEMPTS {
            let left = ROUTE_DEADLINE.saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            let cands = self.candidates(shard);
            let node = match hinted.take() {
                Some(n) => n,
                None if cands.is_empty() => return Err(error(ErrorCode::UnknownShard, format!("no shard {shard}"))),
                None => {
                    let n = cands[tried_round % cands.len()];
                    tried_round += 1;
                    n
                }
            };
            let res = match self.channel(node) {
                Some(ch) => tokio::time::timeout(left.min(ATTEMPT_TIMEOUT), call(node, ch, trace.request(req.clone()))).await,
                // A hint naming a node this router's map does not have yet (or any more): like
                // an unreachable node, the next candidate after a pause.
                None => Ok(Err(error(ErrorCode::Unavailable, format!("node {node} is not in this router's cluster map")))),
            };
            let status = match res {
                Ok(Ok(r)) => {
                    self.set_leader(shard, node);
                    return Ok(r);
                }
                Ok(Err(s)) => s,
                Err(_) => Status::deadline_exceeded(format!("node {node} did not answer in time")),
            };
            let d = detail_of(&status);
            match retry_step(d.code()) {
                // A node's own overload is the client's to back off from: pass it through.
                RetryStep::Final | RetryStep::BackOff => return Err(status),
                RetryStep::FollowHint => {
                    if let Some(l) = self.node_by_addr(&d.leader_hint_addr).or(Some(d.leader_hint_node).filter(|n| *n != 0)) {
                        self.set_leader(shard, l);
                        hinted = Some(l);
                    }
                    // Mid-election two nodes can each name the other: after a couple of hops,
                    // give the election a moment instead of burning every attempt in a few ms.
                    hops += 1;
                    if hops > 2 {
                        tokio::time::sleep(Duration::from_millis(20).min(ROUTE_DEADLINE.saturating_sub(start.elapsed()))).await;
                    }
                }
                RetryStep::Elsewhere => {
                    // No leader yet (election), node gone, or a node without this shard: give
                    // the cluster a moment, longer each time, then the next candidate.
                    tokio::time::sleep(wait.min(ROUTE_DEADLINE.saturating_sub(start.elapsed()))).await;
                    wait = (wait * 2).min(WAIT_MAX);
                }
            }
            last = status;
        }
        metrics::counter!(crate::metrics::GAVE_UP).increment(1);
        // Clients talk to routers, never to nodes: a give-up is UNAVAILABLE (retry, same request
        // id), without the node address a NotLeader hint would carry.
        let d = detail_of(&last);
        Err(error(ErrorCode::Unavailable, format!("shard {shard}: no leader answered in {:?} (last: {})", start.elapsed(), d.message)))
    }

    /// Any node that answers, for cluster-wide admin calls: best first, each given 30 s.
    pub async fn any_node<T, F, Fut>(&self, call: F) -> Result<Response<T>, Status>
    where
        F: Fn(ClusterClient<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.any_node_core(ADMIN_TIMEOUT, Duration::MAX, |c, _| call(c)).await
    }

    /// Like `any_node`, for calls that may take a node up to `within` (membership steps): the
    /// nodes tried share that time. `call` gets the time its node has, to send as the gRPC
    /// deadline, so the node knows how long it may work on the step.
    pub async fn any_node_within<T, F, Fut>(&self, within: Duration, call: F) -> Result<Response<T>, Status>
    where
        F: Fn(ClusterClient<Channel>, Duration) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.any_node_core(within, within, call).await
    }

    /// Tries the map's nodes, up ones in this region first, until one answers something other
    /// than UNAVAILABLE / DEADLINE_EXCEEDED; each gets `per_node`, all together `budget`.
    async fn any_node_core<T, F, Fut>(&self, per_node: Duration, budget: Duration, call: F) -> Result<Response<T>, Status>
    where
        F: Fn(ClusterClient<Channel>, Duration) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let start = Instant::now();
        let t = self.topology();
        let mut nodes: Vec<NodeId> = t.nodes.iter().map(|n| n.id).collect();
        nodes.sort_by_key(|n| (!self.is_up(*n), t.region_of(*n) != Some(self.region.as_str())));
        let mut queue: std::collections::VecDeque<NodeId> = nodes.into();
        let mut last = error(ErrorCode::Unavailable, "no node reachable");
        // A step that only a shard's leader takes (leader transfer, replica changes) answers
        // NotLeader elsewhere, with the leader: it is re-sent there (nodes never forward them).
        let mut hops = 0;
        while let Some(n) = queue.pop_front() {
            let left = per_node.min(budget.saturating_sub(start.elapsed()));
            if left.is_zero() {
                break;
            }
            let Some(ch) = self.channel(n) else { continue };
            match tokio::time::timeout(left, call(ClusterClient::new(ch), left)).await {
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(s)) => {
                    let d = detail_of(&s);
                    match d.code() {
                        ErrorCode::NotLeader if d.leader_hint_node != 0 && d.leader_hint_node != n && hops < MAX_LEADER_HOPS => {
                            hops += 1;
                            queue.push_front(d.leader_hint_node);
                            last = s;
                        }
                        ErrorCode::UnknownShard | ErrorCode::NotLeader => last = s,
                        _ if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded) => last = s,
                        _ => return Err(s),
                    }
                }
                Err(_) => last = error(ErrorCode::Timeout, format!("node {n} timed out")),
            }
        }
        // Every node pointed elsewhere and no leader took the step (its leader died, a new one is
        // being elected): UNAVAILABLE, which the caller re-sends, rather than the last NotLeader.
        if detail_of(&last).code() == ErrorCode::NotLeader {
            return Err(error(ErrorCode::Unavailable, format!("no leader took the step yet (re-send): {}", last.message())));
        }
        Err(last)
    }
}

/// Keeps the router's cluster map current: asks the nodes for it every `MAP_EVERY`.
pub async fn map_loop(router: Arc<Router>) {
    loop {
        tokio::time::sleep(MAP_EVERY).await;
        router.refresh_map().await;
    }
}

/// Polls every node's local status: liveness, and who leads each shard.
pub async fn health_loop(router: Arc<Router>) {
    loop {
        // This round's map: nodes that joined are polled, nodes that left are not.
        let t = router.topology();
        let polls = t.nodes.iter().map(|n| {
            let ch = router.channel(n.id);
            let id = n.id;
            async move {
                let res = match ch {
                    Some(ch) => {
                        tokio::time::timeout(HEALTH_TIMEOUT, ClusterClient::new(ch).status(StatusRequest { local_only: true })).await
                    }
                    None => Ok(Err(Status::unavailable(format!("no channel to node {id}")))),
                };
                (id, res)
            }
        });
        let mut answers: Vec<ShardStatus> = Vec::new();
        for (id, res) in futures::future::join_all(polls).await {
            let ok = matches!(res, Ok(Ok(_)));
            {
                let mut h = router.health.write().expect("health lock");
                // No entry: the node left the map during this round.
                if let Some(e) = h.get_mut(&id) {
                    let was = e.up;
                    // Two misses in a row mark a node down: one slow answer is not a failure.
                    e.fails = if ok { 0 } else { e.fails + 1 };
                    e.up = ok || (e.up && e.fails < 2);
                    if was != e.up {
                        tracing::warn!(node = id, up = e.up, "node health changed");
                    }
                }
            }
            if let Ok(Ok(r)) = res {
                let r = r.into_inner();
                for s in &t.shards {
                    if let Some(l) = r.leader_of(s.id) {
                        router.set_leader(s.id, l.node);
                    }
                }
                answers.extend(r.nodes.into_iter().filter(|n| n.node == id).flat_map(|n| n.shards));
            }
        }
        let unreached = unreached_shards(&t, &answers);
        *router.ready.write().expect("ready lock") = if unreached.is_empty() { Ok(()) } else { Err(NotReady::Unreached(unreached)) };
        *router.last_round.write().expect("round lock") = answers;
        tokio::time::sleep(HEALTH_EVERY).await;
    }
}

/// Why the router does not route client calls now (its grpc.health.v1 status says
/// NOT_SERVING with these words).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("no health check yet")]
    NoRoundYet,
    #[error("no reachable leader followed by a majority for shards {0:?}")]
    Unreached(Vec<ShardId>),
}

/// Shards for which no answer of one health round (each node's own replicas) shows a leader
/// that a majority of the shard's replicas follows in its term. A leader that claims the shard
/// alone does not count: one cut off from its followers keeps saying it leads (openraft does
/// not step down), and a follower keeps naming a dead leader until another is elected.
pub fn unreached_shards(topology: &Topology, answers: &[ShardStatus]) -> Vec<ShardId> {
    let followed = |shard: ShardId, leader: &ShardStatus| {
        answers.iter().filter(|a| a.shard == shard && a.leader == leader.node && a.term == leader.term).count()
    };
    topology
        .shards
        .iter()
        .filter(|s| {
            !answers
                .iter()
                .filter(|a| a.shard == s.id && a.role() == ReplicaRole::Leader && a.leader == a.node)
                .any(|l| followed(s.id, l) > s.replicas.len() / 2)
        })
        .map(|s| s.id)
        .collect()
}

#[derive(Clone)]
pub struct RouterService {
    pub router: Arc<Router>,
    pub gate: Arc<Gate>,
}

type Res<T> = Result<Response<T>, Status>;

/// Where each rule below comes from: `gate.rs` has the table of roles.
const ANY_WALLET: &[Role] = &[Role::Risk, Role::Admin];

impl RouterService {
    fn user(&self, user: u64) -> ShardId {
        self.router.topology().shard_of_user(user)
    }
}

/// Forwards a wallet RPC to the shard of `$user`.
macro_rules! to_wallet {
    ($self:ident, $t:expr, $r:expr, $user:expr, $method:ident) => {{
        let shard = $self.user($user);
        $self.router.forward(shard, &$t, $r, |_, ch, r| async move { WalletClient::new(ch).$method(r).await }).await
    }};
}

#[tonic::async_trait]
impl Wallet for RouterService {
    async fn open_account(&self, req: Request<OpenAccountRequest>) -> Res<WalletReply> {
        let claims = self.gate.user(&req, req.get_ref().user, "open an account")?;
        let _in_flight = self.gate.spend_allowed(req.get_ref().user)?;
        let (t, mut r) = trace::split(req);
        r.device = claims.dev;
        to_wallet!(self, t, r, r.user, open_account)
    }
    async fn top_up(&self, req: Request<TopUpRequest>) -> Res<WalletReply> {
        self.gate.roles(&req, &[Role::PaymentGateway], "top up")?;
        let (t, r) = trace::split(req);
        to_wallet!(self, t, r, r.user, top_up)
    }
    async fn withdraw(&self, req: Request<WithdrawRequest>) -> Res<WalletReply> {
        let claims = self.gate.user(&req, req.get_ref().user, "withdraw")?;
        let _in_flight = self.gate.spend_allowed(req.get_ref().user)?;
        let (t, mut r) = trace::split(req);
        r.device = claims.dev;
        r.token_issued_s = claims.iat.max(1);
        to_wallet!(self, t, r, r.user, withdraw)
    }
    async fn transfer(&self, req: Request<TransferRequest>) -> Res<WalletReply> {
        let claims = self.gate.user(&req, req.get_ref().from_user, "transfer")?;
        let _in_flight = self.gate.spend_allowed(req.get_ref().from_user)?;
        let (t, mut r) = trace::split(req);
        r.device = claims.dev;
        r.token_issued_s = claims.iat.max(1);
        to_wallet!(self, t, r, r.from_user, transfer)
    }
    async fn balance(&self, req: Request<BalanceRequest>) -> Res<BalanceReply> {
        let issued = self.gate.user_or(&req, req.get_ref().user, ANY_WALLET, "read the wallet")?;
        let _in_flight = self.gate.read_allowed(req.get_ref().user)?;
        let (t, mut r) = trace::split(req);
        r.token_issued_s = issued;
        to_wallet!(self, t, r, r.user, balance)
    }
    async fn statement(&self, req: Request<StatementRequest>) -> Res<StatementReply> {
        let issued = self.gate.user_or(&req, req.get_ref().user, ANY_WALLET, "read the statement")?;
        let _in_flight = self.gate.read_allowed(req.get_ref().user)?;
        let (t, mut r) = trace::split(req);
        r.token_issued_s = issued;
        to_wallet!(self, t, r, r.user, statement)
    }
    async fn set_pin(&self, req: Request<SetPinRequest>) -> Res<WalletReply> {
        let claims = self.gate.user(&req, req.get_ref().user, "set the payment PIN")?;
        let _in_flight = self.gate.spend_allowed(req.get_ref().user)?;
        let (t, mut r) = trace::split(req);
        r.token_issued_s = claims.iat.max(1);
        to_wallet!(self, t, r, r.user, set_pin)
    }
    async fn set_risk(&self, req: Request<SetRiskRequest>) -> Res<BalanceReply> {
        self.gate.roles(&req, &[Role::Risk, Role::Admin], "set risk")?;
        let (t, r) = trace::split(req);
        to_wallet!(self, t, r, r.user, set_risk)
    }
    async fn revoke_tokens(&self, req: Request<RevokeTokensRequest>) -> Res<BalanceReply> {
        self.gate.roles(&req, &[Role::Risk, Role::Admin], "revoke a user's tokens")?;
        let (t, mut r) = trace::split(req);
        if r.issued_before_s == 0 {
            // "Now" by this router's clock; the tokens it verified were checked by it too.
            r.issued_before_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) + 1;
        }
        to_wallet!(self, t, r, r.user, revoke_tokens)
    }
}

impl RouterService {
    /// A grab the gate let through, to its packet's shard: coalesced with others for the same
    /// node unless the router runs with `--no-coalesce`.
    async fn forward_grab(&self, t: &Trace, r: GrabRequest) -> Res<GrabReply> {
        let shard = PacketId(r.packet_id).shard();
        match self.router.coalescer.clone() {
            Some(coalescer) => {
                self.router
                    .forward(shard, t, r, |node, ch, r| {
                        let coalescer = coalescer.clone();
                        async move { coalescer.grab(node, &ch, r).await.map(Response::new) }
                    })
                    .await
            }
            None => self.router.forward(shard, t, r, |_, ch, r| async move { PacketsClient::new(ch).grab(r).await }).await,
        }
    }

    /// One grab of a `GrabGateway.Grabs` batch: the same checks as a single `Packets.Grab`, with
    /// the grab's own token in place of the call's `authorization`.
    async fn batch_grab(&self, t: &Trace, g: UserGrab) -> GrabResult {
        let res = async {
            let grab = g.grab.ok_or_else(|| error(ErrorCode::InvalidArgument, "a batch entry without its grab"))?;
            self.gate.user_token(&g.token, grab.grabber, "grab")?;
            let _in_flight = self.gate.grab_allowed(grab.grabber)?;
            self.forward_grab(t, grab).await
        }
        .await;
        match res {
            Ok(r) => GrabResult { reply: Some(r.into_inner()), error: None },
            Err(s) => GrabResult { reply: None, error: Some(detail_of(&s)) },
        }
    }
}

#[tonic::async_trait]
impl GrabGateway for RouterService {
    /// Many users' grabs in one call (a gateway's, a load generator's). The caller's certificate
    /// must name the `app` role; each grab is then its own user's, by its own token.
    async fn grabs(&self, req: Request<UserGrabBatchRequest>) -> Res<GrabBatchReply> {
        self.gate.roles(&req, &[Role::App], "send a batch of grabs")?;
        let n = req.get_ref().grabs.len();
        if n > hongbao_proto::MAX_GRAB_BATCH {
            return Err(error(ErrorCode::InvalidArgument, format!("{n} grabs in one batch; at most {}", hongbao_proto::MAX_GRAB_BATCH)));
        }
        metrics::histogram!(crate::metrics::GATEWAY_BATCH_GRABS).record(n as f64);
        let (t, r) = trace::split(req);
        let results = futures::future::join_all(r.grabs.into_iter().map(|g| self.batch_grab(&t, g))).await;
        Ok(Response::new(GrabBatchReply { results }))
    }
}

#[tonic::async_trait]
impl Packets for RouterService {
    async fn send(&self, req: Request<SendPacketRequest>) -> Res<SendPacketReply> {
        let claims = self.gate.user(&req, req.get_ref().sender, "send a packet")?;
        let _in_flight = self.gate.spend_allowed(req.get_ref().sender)?;
        let (t, mut r) = trace::split(req);
        r.device = claims.dev;
        r.token_issued_s = claims.iat.max(1);
        let shard = self.user(r.sender);
        self.router.forward(shard, &t, r, |_, ch, r| async move { PacketsClient::new(ch).send(r).await }).await
    }
    async fn grab(&self, req: Request<GrabRequest>) -> Res<GrabReply> {
        self.gate.user(&req, req.get_ref().grabber, "grab")?;
        let _in_flight = self.gate.grab_allowed(req.get_ref().grabber)?;
        let (t, r) = trace::split(req);
        self.forward_grab(&t, r).await
    }
    async fn show(&self, req: Request<ShowPacketRequest>) -> Res<PacketView> {
        // Any signed-in user holding the packet's key may look at it (it is shown to a whole
        // group chat, with its key).
        let role = self.gate.roles(&req, &[Role::App, Role::Risk, Role::Admin], "show a packet")?;
        let _in_flight = match role {
            Role::App => Some(self.gate.read_allowed(self.gate.signed_in(&req, "show a packet")?)?),
            _ => None,
        };
        let (t, mut r) = trace::split(req);
        // A user names the packet's key like a grab; risk and admin look at any packet.
        r.inspect = role != Role::App;
        let shard = PacketId(r.packet_id).shard();
        self.router.forward(shard, &t, r, |_, ch, r| async move { PacketsClient::new(ch).show(r).await }).await
    }
    async fn history(&self, req: Request<PacketHistoryRequest>) -> Res<PacketHistoryReply> {
        let issued = self.gate.user_or(&req, req.get_ref().user, ANY_WALLET, "read the packet history")?;
        let _in_flight = self.gate.read_allowed(req.get_ref().user)?;
        let (t, mut r) = trace::split(req);
        r.token_issued_s = issued;
        let shard = self.user(r.user);
        self.router.forward(shard, &t, r, |_, ch, r| async move { PacketsClient::new(ch).history(r).await }).await
    }
}

#[tonic::async_trait]
impl Notifier for RouterService {
    async fn poll(&self, req: Request<PollNotificationsRequest>) -> Res<PollNotificationsReply> {
        self.gate.roles(&req, &[Role::Notifier], "read notifications")?;
        let (t, r) = trace::split(req);
        self.router.forward(r.shard, &t, r, |_, ch, r| async move { NotifierClient::new(ch).poll(r).await }).await
    }
    async fn ack(&self, req: Request<AckNotificationsRequest>) -> Res<AckNotificationsReply> {
        self.gate.roles(&req, &[Role::Notifier], "acknowledge notifications")?;
        let (t, r) = trace::split(req);
        self.router.forward(r.shard, &t, r, |_, ch, r| async move { NotifierClient::new(ch).ack(r).await }).await
    }
}

/// Cluster admin through a router: the admin role only.
#[tonic::async_trait]
impl Cluster for RouterService {
    async fn status(&self, req: Request<StatusRequest>) -> Res<StatusReply> {
        self.gate.roles(&req, &[Role::Admin], "read cluster status")?;
        let view = self.router.view();
        match self.router.any_node(|mut c| async move { c.status(StatusRequest { local_only: false }).await }).await {
            Ok(mut r) => {
                r.get_mut().router = Some(view);
                Ok(r)
            }
            // No node answers: the router's own view is still worth showing.
            Err(_) => Ok(Response::new(StatusReply { router: Some(view), ..Default::default() })),
        }
    }
    async fn audit(&self, req: Request<AuditRequest>) -> Res<AuditReply> {
        self.gate.roles(&req, &[Role::Admin], "audit")?;
        self.router.any_node(|mut c| async move { c.audit(AuditRequest {}).await }).await
    }
    async fn shard_totals_of(&self, req: Request<ShardTotalsRequest>) -> Res<ShardTotals> {
        self.gate.roles(&req, &[Role::Admin], "audit")?;
        let r = req.into_inner();
        self.router.any_node(|mut c| async move { c.shard_totals_of(r).await }).await
    }
    async fn transfer_leader(&self, req: Request<TransferLeaderRequest>) -> Res<TransferLeaderReply> {
        self.gate.roles(&req, &[Role::Admin], "move a leader")?;
        let r = req.into_inner();
        self.router.any_node(|mut c| async move { c.transfer_leader(r).await }).await
    }
    async fn drain(&self, req: Request<DrainRequest>) -> Res<DrainReply> {
        self.gate.roles(&req, &[Role::Admin], "drain a region")?;
        let r = req.into_inner();
        self.router
            .any_node(|mut c| {
                let r = r.clone();
                async move { c.drain(r).await }
            })
            .await
    }
    async fn undrain(&self, req: Request<DrainRequest>) -> Res<DrainReply> {
        self.gate.roles(&req, &[Role::Admin], "undrain a region")?;
        let r = req.into_inner();
        self.router
            .any_node(|mut c| {
                let r = r.clone();
                async move { c.undrain(r).await }
            })
            .await
    }
    async fn get_map(&self, req: Request<GetMapRequest>) -> Res<ClusterMap> {
        self.gate.roles(&req, &[Role::Admin], "read the cluster map")?;
        // The meta shard's committed map, not this router's, which may be a round behind.
        self.router.committed_map().await
    }
    async fn add_node(&self, req: Request<AddNodeRequest>) -> Res<MembershipReply> {
        self.gate.roles(&req, &[Role::Admin], "add a node")?;
        let r = req.into_inner();
        self.membership(|mut c, left| {
            let r = with_deadline(r.clone(), left);
            async move { c.add_node(r).await }
        })
        .await
    }
    async fn remove_node(&self, req: Request<RemoveNodeRequest>) -> Res<MembershipReply> {
        self.gate.roles(&req, &[Role::Admin], "remove a node")?;
        let r = req.into_inner();
        self.membership(|mut c, left| {
            let r = with_deadline(r, left);
            async move { c.remove_node(r).await }
        })
        .await
    }
    async fn add_replica(&self, req: Request<ReplicaChangeRequest>) -> Res<MembershipReply> {
        self.gate.roles(&req, &[Role::Admin], "add a replica")?;
        let r = req.into_inner();
        self.membership(|mut c, left| {
            let r = with_deadline(r, left);
            async move { c.add_replica(r).await }
        })
        .await
    }
    async fn remove_replica(&self, req: Request<ReplicaChangeRequest>) -> Res<MembershipReply> {
        self.gate.roles(&req, &[Role::Admin], "remove a replica")?;
        let r = req.into_inner();
        self.membership(|mut c, left| {
            let r = with_deadline(r, left);
            async move { c.remove_replica(r).await }
        })
        .await
    }
    async fn add_shard(&self, req: Request<AddShardRequest>) -> Res<MembershipReply> {
        self.gate.roles(&req, &[Role::Admin], "add a shard")?;
        let r = req.into_inner();
        self.membership(|mut c, left| {
            let r = with_deadline(r.clone(), left);
            async move { c.add_shard(r).await }
        })
        .await
    }

    async fn slot_load(&self, req: Request<SlotLoadRequest>) -> Res<SlotLoadReply> {
        self.gate.roles(&req, &[Role::Admin], "read the load per slot")?;
        self.router.any_node(|mut c| async move { c.slot_load(SlotLoadRequest { local_only: false }).await }).await
    }

    async fn move_slot(&self, req: Request<MoveSlotRequest>) -> Res<MoveSlotReply> {
        self.gate.roles(&req, &[Role::Admin], "move a slot")?;
        let r = req.into_inner();
        self.membership(|mut c, left| {
            let r = with_deadline(r, left);
            async move { c.move_slot(r).await }
        })
        .await
    }
}

impl RouterService {
    /// Forwards one membership step (idempotent) to any node, giving it `MEMBERSHIP_TIMEOUT`:
    /// adding a replica waits for the learner to catch up. Once a step is done this router
    /// reads the map at once rather than at its next refresh, so it routes by the new one
    /// without delay.
    async fn membership<T, F, Fut>(&self, call: F) -> Res<T>
    where
        F: Fn(ClusterClient<Channel>, Duration) -> Fut,
        Fut: Future<Output = Res<T>>,
    {
        let res = self.router.any_node_within(MEMBERSHIP_TIMEOUT, call).await;
        if res.is_ok() {
            let router = self.router.clone();
            tokio::spawn(async move { router.refresh_map().await });
        }
        res
    }
}

/// `msg` with a gRPC deadline of `left` (the node stops working on it then and says so).
fn with_deadline<T>(msg: T, left: Duration) -> Request<T> {
    let mut r = Request::new(msg);
    r.set_timeout(left);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        let path = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")).join("../../deploy/local-3x1.toml");
        Topology::load(&path).expect("shipped topology")
    }

    fn row(shard: u32, node: u64, leader: u64, term: u64) -> ShardStatus {
        let role = if leader == node { ReplicaRole::Leader } else { ReplicaRole::Follower };
        ShardStatus { shard, node, leader, term, role: role as i32, ..Default::default() }
    }

    /// Every node's own rows for all three shards, each led by `leader` in term 5.
    fn round(nodes: &[u64], leader: u64) -> Vec<ShardStatus> {
        nodes.iter().flat_map(|n| (1..=3).map(move |s| row(s, *n, leader, 5))).collect()
    }

    fn spec(id: NodeId, region: &str) -> hongbao_topology::NodeSpec {
        hongbao_topology::NodeSpec {
            id,
            region: region.into(),
            addr: format!("127.0.0.1:{}", 7200 + id),
            metrics_addr: format!("127.0.0.1:{}", 9200 + id),
        }
    }

    fn router(t: Topology) -> Arc<Router> {
        Router::new(Arc::new(t), "shanghai".into(), 10, true, ClientTlsConfig::new())
    }

    fn health_of(r: &Router, node: NodeId) -> Option<bool> {
        r.health.read().unwrap().get(&node).map(|h| h.up)
    }

    // Tokio: channels are made with connect_lazy, which starts a task.
    #[tokio::test]
    async fn a_newer_map_is_installed_and_an_older_or_equal_one_ignored() {
        let seed = topology();
        let v1 = seed.add_node(&spec(4, "tianjin")).unwrap();
        let v2 = v1.add_replica(1, 4).unwrap();
        let r = router(seed.clone());
        assert_eq!(r.topology().version, 0);
        assert!(r.channel(4).is_none() && health_of(&r, 4).is_none(), "node 4 is not in the seed");
        assert!(r.install(v2.clone()));
        assert_eq!(r.topology().version, 2);
        assert_eq!(r.topology().shard(1).unwrap().replicas, vec![1, 2, 3, 4]);
        assert_eq!(health_of(&r, 4), Some(true), "a new node is up until a health check says otherwise");
        assert!(r.channel(4).is_some(), "a channel for the new node");
        assert!(r.candidates(1).contains(&4), "and requests for shard 1 may go there");
        assert!(!r.install(v1), "an older map (a node behind) is ignored");
        assert!(!r.install(v2), "and so is the same version again");
        assert!(!r.install(seed));
        assert_eq!(r.topology().version, 2);
    }

    #[tokio::test]
    async fn a_node_that_leaves_the_map_is_forgotten() {
        let v1 = topology().add_node(&spec(4, "tianjin")).unwrap();
        let r = router(v1.clone());
        assert!(r.channel(4).is_some());
        r.set_leader(1, 1);
        let mut v2 = v1.remove_node(4).unwrap();
        // The same map with node 1 at a new address: its channel is made anew.
        assert!(r.channel(1).is_some());
        v2.nodes[0].addr = "127.0.0.1:7999".into();
        assert!(r.install(v2));
        assert!(r.channel(4).is_none() && health_of(&r, 4).is_none());
        assert_eq!(r.channels.read().unwrap().get(&1).map(|(a, _)| a.clone()), None, "node 1's old channel is dropped");
        assert!(r.channel(1).is_some());
        assert_eq!(r.channels.read().unwrap().get(&1).map(|(a, _)| a.clone()).as_deref(), Some("127.0.0.1:7999"));
        assert_eq!(r.leaders.read().unwrap().get(&1), Some(&1), "node 1 still holds shard 1");
    }

    #[tokio::test]
    async fn a_shard_gets_its_in_flight_limit_on_first_use() {
        let r = router(topology());
        assert!(r.inflight.read().unwrap().is_empty());
        assert_eq!(r.inflight(2).unwrap().available_permits(), 10);
        assert!(Arc::ptr_eq(&r.inflight(2).unwrap(), &r.inflight(2).unwrap()), "one semaphore per shard");
        assert!(r.inflight(99).is_none(), "no shard 99 in the map");
    }

    #[test]
    fn a_leader_counts_once_a_majority_of_its_replicas_follows_it() {
        let t = topology();
        assert!(unreached_shards(&t, &round(&[1, 2, 3], 1)).is_empty());
        assert!(unreached_shards(&t, &round(&[1, 2], 1)).is_empty(), "one follower down: still a majority");
        assert_eq!(unreached_shards(&t, &round(&[1], 1)), vec![1, 2, 3], "a leader alone (its followers gone) does not count");
        assert_eq!(unreached_shards(&t, &round(&[2, 3], 1)), vec![1, 2, 3], "followers naming a leader that did not answer");
        assert_eq!(unreached_shards(&t, &[]), vec![1, 2, 3]);
        // Cut off: the old leader still claims term 5, the others elected node 2 in term 6.
        let mut rows = round(&[1], 1);
        rows.extend([2, 3].iter().flat_map(|n| (1..=3).map(move |s| row(s, *n, 2, 6))));
        assert!(unreached_shards(&t, &rows).is_empty(), "the new leader is followed");
        let stale: Vec<ShardStatus> = rows.into_iter().filter(|r| r.node != 2).collect();
        assert_eq!(unreached_shards(&t, &stale), vec![1, 2, 3], "the old leader's term is over");
    }
}
