//! Connections from this node to every other node, shared by all its shards' Raft groups, the
//! cross-shard relay and cluster admin. Every outgoing node-to-node call takes its channel here,
//! which is where injected faults cut it off. Every channel is mutual TLS with this node's own
//! certificate, so the receiver knows which node is calling.

use crate::clock::Clock;
use crate::codec::{decode, encode};
use crate::faults::Faults;
use hongbao_ledger::{Command, Outcome, Request, ShardId};
use hongbao_proto::v1::cluster_client::ClusterClient;
use hongbao_proto::v1::raft_transport_client::RaftTransportClient;
use hongbao_proto::v1::{GetMapRequest, RaftMessage, StatusReply, StatusRequest};
use hongbao_topology::{NodeId, Topology};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tonic::transport::{ClientTlsConfig, Endpoint};
use tonic::Status;

/// Bound on one GetMap call to another node (the leader's answer waits for a ReadIndex).
const GET_MAP_TIMEOUT: Duration = Duration::from_secs(1);

/// What the meta shard's leader said of the map (`Peers::fetch_map`).
#[derive(Debug)]
pub enum MapAnswer {
    /// A newer map than the one held, as the meta shard committed it.
    Newer(Box<Topology>),
    /// The map held is the newest.
    NotNewer,
    /// No leader answered (or its map did not validate): the map held may be stale.
    NoAnswer,
}

impl MapAnswer {
    pub fn newer(self) -> Option<Topology> {
        match self {
            MapAnswer::Newer(t) => Some(*t),
            _ => None,
        }
    }
}

/// A channel to another node: tonic's (HTTP/2 with mutual TLS), or a simulated link. Every
/// client in this crate is built on it.
pub type PeerChannel = tower::util::BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    // A concrete error type: a boxed trait object here trips tonic's `Into<StdError>` bound in
    // every `Send` future that calls through it (a higher-ranked lifetime error).
    std::io::Error,
>;

/// How this node reaches another: over the network with mutual TLS (this node's certificate),
/// or through the link a simulation hands out for (from, to) (hongbao-sim), which delivers to
/// the other node's services in the same process as if over the wire.
#[derive(Clone)]
pub enum Dial {
    Tls(ClientTlsConfig),
    Simulated(Arc<dyn Fn(NodeId, NodeId) -> PeerChannel + Send + Sync>),
}

/// Channels to the other nodes, opened lazily and kept.
pub struct Peers {
    pub self_id: NodeId,
    /// Every node's address, from the cluster map (`set_addrs` when a newer map arrives).
    addrs: RwLock<HashMap<NodeId, String>>,
    channels: Mutex<HashMap<NodeId, PeerChannel>>,
    pub faults: Arc<Faults>,
    /// This node's clock: stamps every outgoing Raft message, learns peers' from replies.
    pub clock: Arc<Clock>,
    dial: Dial,
}

impl Peers {
    pub fn new(self_id: NodeId, faults: Arc<Faults>, clock: Arc<Clock>, dial: Dial) -> Peers {
        Peers { self_id, addrs: RwLock::new(HashMap::new()), channels: Mutex::new(HashMap::new()), faults, clock, dial }
    }

    /// Takes every node's address from `map`; a node whose address changed or that left the
    /// map loses its open channel.
    pub fn set_addrs(&self, map: &hongbao_topology::Topology) {
        let new: HashMap<NodeId, String> = map.nodes.iter().map(|n| (n.id, n.addr.clone())).collect();
        let mut addrs = self.addrs.write().expect("addrs lock");
        self.channels.lock().expect("channels lock").retain(|id, _| new.get(id) == addrs.get(id));
        *addrs = new;
    }

    pub fn addr(&self, node: NodeId) -> Option<String> {
        self.addrs.read().expect("addrs lock").get(&node).cloned()
    }

    /// The channel to `node`; None when the node is unknown or an injected fault cuts it off.
    pub fn channel(&self, node: NodeId) -> Option<PeerChannel> {
        if self.faults.is_cut_off(node) {
            return None;
        }
        let addr = self.addr(node)?;
        let mut map = self.channels.lock().expect("channels lock");
        Some(
            map.entry(node)
                .or_insert_with(|| match &self.dial {
                    Dial::Tls(tls) => {
                        let ch = Endpoint::from_shared(format!("https://{addr}"))
                            .expect("topology addresses are valid")
                            // Node `node`'s own certificate only, not any of the CA's (#28).
                            .tls_config(tls.clone().domain_name(hongbao_auth::node_dns_name(node)))
                            .expect("TLS settings were loaded at start-up")
                            .connect_timeout(Duration::from_millis(300))
                            .tcp_nodelay(true)
                            .http2_keep_alive_interval(Duration::from_secs(1))
                            .keep_alive_timeout(Duration::from_secs(2))
                            .connect_lazy();
                        PeerChannel::new(tower::ServiceExt::map_err(ch, std::io::Error::other))
                    }
                    Dial::Simulated(link) => link(self.self_id, node),
                })
                .clone(),
        )
    }

    /// Sends one ledger request to `node`'s Propose door (the Raft transport's, which takes only
    /// what `access::forwarded_proposal` lets one node forward to another) and waits at most
    /// `ttl`, which also goes with the call as its deadline (`grpc-timeout`), so the other node
    /// stops waiting for the outcome when this one does. The outcome, or the status saying why
    /// there is none (UNAVAILABLE when the node is unknown or cut off, DEADLINE_EXCEEDED when no
    /// answer came in time).
    pub async fn propose_at(&self, node: NodeId, shard: ShardId, req: &Request, ttl: Duration) -> Result<Outcome, Status> {
        let ch = self.channel(node).ok_or_else(|| Status::unavailable("unknown or cut off"))?;
        let msg = RaftMessage { shard, from_node: self.self_id, payload: encode(req), sent_ms: self.clock.now_ms() };
        let mut call = tonic::Request::new(msg);
        call.set_timeout(ttl);
        match tokio::time::timeout(ttl, RaftTransportClient::new(ch).propose(call)).await {
            Ok(Ok(r)) => decode(&r.into_inner().payload).map_err(|e| Status::internal(format!("undecodable outcome: {e}"))),
            Ok(Err(s)) => Err(s),
            Err(_) => Err(Status::deadline_exceeded(format!("no answer in {ttl:?}"))),
        }
    }

    /// `node`'s own status (`Status` with `local_only`), if it answers within `ttl`: the one
    /// probe placement, membership and start-up ask another node with.
    pub async fn status(&self, node: NodeId, ttl: Duration) -> Option<StatusReply> {
        let ch = self.channel(node)?;
        let req = StatusRequest { local_only: true };
        Some(tokio::time::timeout(ttl, ClusterClient::new(ch).status(req)).await.ok()?.ok()?.into_inner())
    }

    /// The map as the meta shard committed it, from its leader: the meta replicas `map` names
    /// are asked (`first` first, the leader known here); a follower answers NotLeader with its
    /// leader, asked next if `map` names it a meta replica too. A map no newer than `than` is not
    /// parsed (most rounds bring the same map).
    pub async fn fetch_map(&self, map: &Topology, first: Option<NodeId>, than: u64) -> MapAnswer {
        let meta: Vec<NodeId> = map.shard(map.meta_shard()).map(|s| s.replicas.clone()).unwrap_or_default();
        let mut queue: VecDeque<NodeId> = first.filter(|n| meta.contains(n)).into_iter().chain(meta.iter().copied()).collect();
        let mut asked = BTreeSet::new();
        while let Some(n) = queue.pop_front() {
            if n == self.self_id || !asked.insert(n) {
                continue;
            }
            let Some(ch) = self.channel(n) else { continue };
            match tokio::time::timeout(GET_MAP_TIMEOUT, ClusterClient::new(ch).get_map(GetMapRequest {})).await {
                Ok(Ok(r)) => {
                    let m = r.into_inner();
                    if m.version <= than {
                        return MapAnswer::NotNewer;
                    }
                    return crate::cluster::map::parse(m.version, m.toml.as_bytes())
                        .map_or(MapAnswer::NoAnswer, |t| MapAnswer::Newer(Box::new(t)));
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
        MapAnswer::NoAnswer
    }

    /// Whether `node` runs the ledger config with this fingerprint (None: no answer in `ttl`).
    /// Asked with a `ConfigCheck` through the nodes' Propose door, which answers it there and
    /// proposes nothing.
    pub async fn config_agrees(&self, node: NodeId, shard: ShardId, fingerprint: u64, ttl: Duration) -> Option<bool> {
        let req = Request { id: hongbao_ledger::RequestId([0; 16]), time_ms: 0, cmd: Command::ConfigCheck { fingerprint } };
        match self.propose_at(node, shard, &req, ttl).await {
            Err(s) if s.code() == crate::service::access::CONFIG_AGREES => Some(true),
            Err(s) if s.code() == tonic::Code::FailedPrecondition => Some(false),
            _ => None,
        }
    }
}
