//! Connections from this node to every other node, shared by all its shards' Raft groups, the
//! cross-shard relay and cluster admin. Every outgoing node-to-node call takes its channel here,
//! which is where injected faults cut it off. Every channel is mutual TLS with this node's own
//! certificate, so the receiver knows which node is calling.

use crate::clock::Clock;
use crate::codec::{decode, encode};
use crate::faults::Faults;
use hongbao_ledger::{Outcome, Request, ShardId};
use hongbao_proto::v1::raft_transport_client::RaftTransportClient;
use hongbao_proto::v1::RaftMessage;
use hongbao_topology::NodeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::Status;

/// Channels to the other nodes, opened lazily and kept.
pub struct Peers {
    pub self_id: NodeId,
    /// Every node's address, from the cluster map (`set_addrs` when a newer map arrives).
    addrs: RwLock<HashMap<NodeId, String>>,
    channels: Mutex<HashMap<NodeId, Channel>>,
    pub faults: Arc<Faults>,
    /// This node's clock: stamps every outgoing Raft message, learns peers' from replies.
    pub clock: Arc<Clock>,
    tls: ClientTlsConfig,
}

impl Peers {
    pub fn new(self_id: NodeId, faults: Arc<Faults>, clock: Arc<Clock>, tls: ClientTlsConfig) -> Peers {
        Peers { self_id, addrs: RwLock::new(HashMap::new()), channels: Mutex::new(HashMap::new()), faults, clock, tls }
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
    pub fn channel(&self, node: NodeId) -> Option<Channel> {
        if self.faults.is_cut_off(node) {
            return None;
        }
        let addr = self.addr(node)?;
        let mut map = self.channels.lock().expect("channels lock");
        Some(
            map.entry(node)
                .or_insert_with(|| {
                    Endpoint::from_shared(format!("https://{addr}"))
                        .expect("topology addresses are valid")
                        // Node `node`'s own certificate only, not any of the CA's (#28).
                        .tls_config(self.tls.clone().domain_name(hongbao_auth::node_dns_name(node)))
                        .expect("TLS settings were loaded at start-up")
                        .connect_timeout(Duration::from_millis(300))
                        .tcp_nodelay(true)
                        .http2_keep_alive_interval(Duration::from_secs(1))
                        .keep_alive_timeout(Duration::from_secs(2))
                        .connect_lazy()
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
}
