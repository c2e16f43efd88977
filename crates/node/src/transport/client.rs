//! Raft transport, client side: openraft's messages to other nodes over gRPC (the server side
//! is `transport::server`).
//!
//! openraft's request/response types are bincode-encoded into the `payload` bytes of
//! `RaftMessage`; `shard` picks the Raft group on the receiving node. Snapshots stream as bounded
//! chunks read from the snapshot file, never loaded whole.

use crate::codec::{decode, encode};
use crate::limits::MAX_RAFT_MESSAGE;
use crate::limits::SNAPSHOT_CHUNK;
use crate::raft::snapshot::SnapshotFile;
use crate::raft::types::{NodeId, TypeConfig, Vote};
use crate::transport::peers::PeerChannel as Channel;
use crate::transport::peers::Peers;
use hongbao_ledger::ShardId;
use hongbao_proto::v1::raft_transport_client::RaftTransportClient;
use hongbao_proto::v1::{RaftMessage, RaftReply, SnapshotChunk};
use openraft::errors::{NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetworkV2};
use std::future::Future;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

/// Time a follower gets to append a batch of entries.
pub const APPEND_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct NetworkFactory {
    pub shard: ShardId,
    pub peers: Arc<Peers>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Network {
        Network { shard: self.shard, target, peers: self.peers.clone() }
    }
}

pub struct Network {
    shard: ShardId,
    target: NodeId,
    peers: Arc<Peers>,
}

fn unreachable<E: std::fmt::Display>(e: E) -> Unreachable<TypeConfig> {
    Unreachable::new(&std::io::Error::other(e.to_string()))
}

fn network_err<E: std::fmt::Display>(e: E) -> NetworkError<TypeConfig> {
    NetworkError::new(&std::io::Error::other(e.to_string()))
}

impl Network {
    fn client(&self) -> Result<RaftTransportClient<Channel>, Unreachable<TypeConfig>> {
        let ch = self.peers.channel(self.target).ok_or_else(|| unreachable(format!("node {} unknown or cut off", self.target)))?;
        Ok(RaftTransportClient::new(ch).max_decoding_message_size(MAX_RAFT_MESSAGE).max_encoding_message_size(MAX_RAFT_MESSAGE))
    }

    fn message<T: serde::Serialize>(&self, req: &T) -> RaftMessage {
        RaftMessage { shard: self.shard, from_node: self.peers.self_id, payload: encode(req), sent_ms: self.peers.clock.now_ms() }
    }

    /// Sends one RPC and decodes the remote `Result<Resp, RaftError>`.
    async fn rpc<Req, Resp, F, Fut>(&self, req: &Req, ttl: Duration, call: F) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(RaftTransportClient<Channel>, RaftMessage) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftReply>, tonic::Status>>,
    {
        let client = self.client()?;
        let msg = self.message(req);
        let sent_ms = msg.sent_ms;
        // Injected faults and simulated WAN latency: lost messages look like an unreachable
        // peer; the delay applies once each way.
        if self.peers.faults.drops(self.target) {
            return Err(RPCError::Unreachable(unreachable(format!("message to node {} dropped (injected fault)", self.target))));
        }
        let delay = self.peers.faults.delay_to(self.target);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let reply = tokio::time::timeout(ttl, call(client, msg)).await;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let reply = match reply {
            Err(_) => return Err(RPCError::Unreachable(unreachable(format!("node {} timed out after {ttl:?}", self.target)))),
            Ok(Err(s)) if s.code() == tonic::Code::Unavailable => return Err(RPCError::Unreachable(unreachable(s))),
            Ok(Err(s)) => return Err(RPCError::Network(network_err(s))),
            Ok(Ok(r)) => r.into_inner(),
        };
        // The round trip brackets the peer's clock reading: our offset to it, within the trip.
        self.peers.clock.observe_reply(self.target, sent_ms, self.peers.clock.now_ms(), reply.now_ms);
        if !reply.error.is_empty() {
            return Err(RPCError::Network(network_err(reply.error)));
        }
        let res: Result<Resp, RaftError<TypeConfig>> = decode(&reply.payload).map_err(|e| RPCError::Network(network_err(e)))?;
        res.map_err(|e| RPCError::Network(network_err(e)))
    }
}

/// The next chunk of a snapshot file (shorter than `SNAPSHOT_CHUNK` only at its end).
fn read_chunk(mut f: std::fs::File) -> (std::fs::File, std::io::Result<Vec<u8>>) {
    let mut buf = vec![0u8; SNAPSHOT_CHUNK];
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return (f, Err(e)),
        }
    }
    buf.truncate(n);
    (f, Ok(buf))
}

impl RaftNetworkV2<TypeConfig> for Network {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        // openraft allows one heartbeat interval (100 ms). A batch of entries on a busy follower
        // (its fsync, a CPU shared with five other processes) can take longer; calling that
        // "unreachable" would back replication off and stall commits. Heartbeats keep the short
        // limit, so a dead or paused follower is still noticed at once.
        let ttl = if rpc.entries.is_empty() { option.hard_ttl() } else { option.hard_ttl().max(APPEND_TIMEOUT) };
        self.rpc(&rpc, ttl, |mut c, m| async move { c.append(m).await }).await
    }

    async fn vote(&mut self, rpc: VoteRequest<TypeConfig>, option: RPCOption) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc(&rpc, option.hard_ttl(), |mut c, m| async move { c.vote(m).await }).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc(&rpc, option.hard_ttl(), |mut c, m| async move { c.pre_vote(m).await }).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc(&req, option.hard_ttl(), |mut c, m| async move { c.transfer_leader(m).await }).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: crate::raft::types::Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self.client().map_err(StreamingError::Unreachable)?;
        let counted = crate::metrics::SnapshotStream::new(crate::metrics::SNAPSHOTS_SENT, self.shard);
        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(4);
        let shard = self.shard;
        let from = self.peers.self_id;
        let path = snapshot.snapshot.path.clone();
        let meta = encode(&snapshot.meta);
        let vote = encode(&vote);
        // Reads the file chunk by chunk, each read off the async workers (`runtime::blocking`);
        // the channel bounds memory.
        let reader = tokio::spawn(async move {
            let mut f = crate::runtime::blocking(move || std::fs::File::open(&path)).await??;
            let mut first = true;
            loop {
                let (file, buf) = crate::runtime::blocking(move || read_chunk(f)).await?;
                f = file;
                let buf = buf?;
                let n = buf.len();
                let done = n < SNAPSHOT_CHUNK;
                let chunk = SnapshotChunk {
                    shard,
                    from_node: from,
                    vote: if first { vote.clone() } else { vec![] },
                    meta: if first { meta.clone() } else { vec![] },
                    data: buf,
                    done,
                };
                first = false;
                if tx.send(chunk).await.is_err() || done {
                    return Ok::<(), std::io::Error>(());
                }
            }
        });
        let send = client.install_snapshot(tokio_stream::wrappers::ReceiverStream::new(rx));
        let reply = tokio::select! {
            biased; // a fixed order, which a seeded simulation can replay (`runtime`)
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = send => r,
        };
        reader.await.map_err(|e| StreamingError::Network(network_err(e)))?.map_err(|e| StreamingError::Network(network_err(e)))?;
        let reply = reply.map_err(|s| StreamingError::Network(network_err(s)))?.into_inner();
        if !reply.error.is_empty() {
            return Err(StreamingError::Network(network_err(reply.error)));
        }
        let res: Result<SnapshotResponse<TypeConfig>, String> =
            decode(&reply.payload).map_err(|e| StreamingError::Network(network_err(e)))?;
        if res.is_ok() {
            counted.ok();
        }
        res.map_err(|e| StreamingError::Network(network_err(e)))
    }
}
