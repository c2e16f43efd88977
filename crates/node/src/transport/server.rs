//! Raft transport, server side: hands openraft messages to the right shard's Raft, and accepts
//! proposals forwarded by other nodes (the cross-shard relay, the steps of a slot move the map
//! records: `access::forwarded_proposal`). The client side is
//! `transport::client`.

use crate::codec::{decode, encode};
use crate::host::Host;
use crate::limits::MAX_SNAPSHOT_BYTES;
use crate::raft::snapshot::ReceivingFile;
use crate::raft::types::{SnapshotMeta, TypeConfig, Vote};
use crate::service::access;
use hongbao_auth::Identity;
use hongbao_proto::v1::raft_transport_server::RaftTransport;
use hongbao_proto::v1::{RaftMessage, RaftReply, SnapshotChunk};
use openraft::async_runtime::WatchReceiver;
use openraft::errors::RaftError;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status, Streaming};

/// A snapshot stream that sends no chunk for this long is abandoned (its file deleted). The
/// stream as a whole has no deadline (`service::RAFT_STREAMS`): a large snapshot may take
/// minutes, but each 1 MiB chunk arrives within seconds while the sender is alive.
pub const SNAPSHOT_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

pub struct RaftService {
    pub host: Arc<Host>,
}

impl RaftService {
    /// Every reply carries this node's clock, for the sender to learn its offset to us.
    fn reply<T: serde::Serialize>(&self, res: &T) -> Result<Response<RaftReply>, Status> {
        Ok(Response::new(RaftReply { payload: encode(res), error: String::new(), now_ms: self.host.clock.now_ms() }))
    }

    /// A replica that started empty grants no vote to a candidate with history until it has
    /// caught up (`rejoin`): its forgotten vote could elect a leader without committed entries.
    /// A vote or pre-vote as it arrives: from a node that hosts the shard, not from a candidate
    /// whose clock runs ahead, and not to a replica still rejoining (unless the candidate's log
    /// is empty).
    fn vote_request(&self, req: Request<RaftMessage>) -> Result<(Arc<crate::replica::Replica>, VoteRequest<TypeConfig>), Status> {
        let caller = access::caller(&req)?;
        let m = req.into_inner();
        let shard = self.shard(&caller, m.shard, m.from_node)?;
        self.host.clock.observe_message(m.from_node, m.sent_ms);
        self.refuse_fast_candidate(&m)?;
        let rpc: VoteRequest<TypeConfig> = decode(&m.payload).map_err(bad)?;
        self.refuse_while_rejoining(m.shard, &rpc)?;
        Ok((shard, rpc))
    }

    fn refuse_while_rejoining(&self, shard: u32, rpc: &VoteRequest<TypeConfig>) -> Result<(), Status> {
        if self.host.rejoin.may_vote(shard, rpc.last_log_id.map(|l| l.index)) {
            return Ok(());
        }
        tracing::warn!(shard, candidate = ?rpc.vote, "vote refused: this replica started empty and has not caught up");
        Err(Status::failed_precondition(format!("node {} is rejoining shard {shard} after an empty start", self.host.node_id)))
    }

    /// A candidate whose clock runs ahead of ours by more than the maximum offset gets no vote
    /// (nor pre-vote): it would stamp ledger time from the future.
    fn refuse_fast_candidate(&self, m: &RaftMessage) -> Result<(), Status> {
        match self.host.clock.ahead_of_mine(m.sent_ms) {
            Some(ahead) => {
                tracing::warn!(shard = m.shard, candidate = m.from_node, ahead_ms = ahead, "vote refused: candidate's clock is ahead");
                Err(Status::failed_precondition(format!(
                    "node {}'s clock is {ahead} ms ahead of node {}'s",
                    m.from_node, self.host.node_id
                )))
            }
            None => Ok(()),
        }
    }

    /// Messages from a node cut off by an injected fault are refused, as if they never arrived.
    fn heard_from(&self, from: u64) -> Result<(), Status> {
        if self.host.peers.faults.is_cut_off(from) {
            return Err(Status::unavailable(format!("node {from} is cut off (injected fault)")));
        }
        Ok(())
    }

    /// The shard a message is for, from a node we can hear that is a replica of it (its
    /// certificate says so; the message's own `from_node` must agree).
    fn shard(&self, caller: &Identity, id: u32, from: u64) -> Result<Arc<crate::replica::Replica>, Status> {
        access::raft_peer(&self.host.topology(), caller, id, from)?;
        self.heard_from(from)?;
        Ok(self.host.replica(id)?)
    }
}

fn bad(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("undecodable raft payload: {e}"))
}

/// The stream's next chunk, if one comes within `SNAPSHOT_IDLE_TIMEOUT`.
async fn next_chunk(stream: &mut Streaming<SnapshotChunk>) -> Result<Option<SnapshotChunk>, Status> {
    match tokio::time::timeout(SNAPSHOT_IDLE_TIMEOUT, stream.message()).await {
        Ok(next) => next,
        Err(_) => Err(Status::deadline_exceeded(format!("no snapshot chunk in {SNAPSHOT_IDLE_TIMEOUT:?}: stream abandoned"))),
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn append(&self, req: Request<RaftMessage>) -> Result<Response<RaftReply>, Status> {
        let caller = access::caller(&req)?;
        let m = req.into_inner();
        let shard = self.shard(&caller, m.shard, m.from_node)?;
        self.host.clock.observe_message(m.from_node, m.sent_ms);
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&m.payload).map_err(bad)?;
        let rejoining = self.host.rejoin.is_rejoining(m.shard);
        if rejoining {
            self.host.rejoin.heard_leader(m.shard, rpc.leader_commit.map(|l| l.index));
        }
        let res: Result<_, RaftError<TypeConfig>> = shard.raft.append_entries(rpc).await;
        if rejoining {
            let applied = shard.raft.metrics().borrow_watched().last_applied.map(|l| l.index).unwrap_or(0);
            if self.host.rejoin.caught_up(m.shard, applied) {
                self.host.rejoined(m.shard);
                shard.raft.runtime_config().elect(true);
            }
        }
        self.reply(&res)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftReply>, Status> {
        let (shard, rpc) = self.vote_request(req)?;
        let res: Result<_, RaftError<TypeConfig>> = shard.raft.vote(rpc).await;
        self.reply(&res)
    }

    async fn pre_vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftReply>, Status> {
        let (shard, rpc) = self.vote_request(req)?;
        let res: Result<_, RaftError<TypeConfig>> = shard.raft.pre_vote(rpc).await;
        self.reply(&res)
    }

    async fn transfer_leader(&self, req: Request<RaftMessage>) -> Result<Response<RaftReply>, Status> {
        let caller = access::caller(&req)?;
        let m = req.into_inner();
        let shard = self.shard(&caller, m.shard, m.from_node)?;
        let rpc = decode(&m.payload).map_err(bad)?;
        let res: Result<_, RaftError<TypeConfig>> = shard.raft.handle_transfer_leader(rpc).await.map_err(RaftError::Fatal);
        self.reply(&res)
    }

    async fn install_snapshot(&self, req: Request<Streaming<SnapshotChunk>>) -> Result<Response<RaftReply>, Status> {
        let caller = access::caller(&req)?;
        let mut stream = req.into_inner();
        let first = next_chunk(&mut stream).await?.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let shard = self.shard(&caller, first.shard, first.from_node)?.clone();
        let counted = crate::metrics::SnapshotStream::new(crate::metrics::SNAPSHOTS_RECEIVED, shard.id);
        let vote: Vote = decode(&first.vote).map_err(bad)?;
        let meta: SnapshotMeta = decode(&first.meta).map_err(bad)?;
        // This stream's own file (concurrent streams for the shard never share one), deleted
        // when the handler is done with it, however it ends.
        let dir = self.host.data_dir.join("snapshots");
        let id = shard.id;
        let mut file = crate::runtime::blocking(move || ReceivingFile::create(&dir, id))
            .await
            .and_then(|f| f)
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut chunk = Some(first);
        while let Some(c) = chunk {
            if file.bytes() + c.data.len() as u64 > MAX_SNAPSHOT_BYTES {
                return Err(Status::resource_exhausted("snapshot too large"));
            }
            // A file write may block on the disk: not on an async worker that Raft shares.
            let (f, wrote) = crate::runtime::blocking(move || {
                let wrote = file.write(&c.data);
                (file, wrote.map(|()| c.done))
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
            file = f;
            let done = wrote.map_err(|e| Status::internal(e.to_string()))?;
            if done {
                break;
            }
            chunk = next_chunk(&mut stream).await?;
            if chunk.is_none() {
                return Err(Status::aborted("snapshot stream ended before its last chunk"));
            }
        }
        // Fsynced and read back whole: complete, intact, and the snapshot the stream announced.
        let (shard_id, announced) = (shard.id, meta.clone());
        let (file, verified) = crate::runtime::blocking(move || {
            let verified = file.finish(shard_id, &announced);
            (file, verified)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        let data = verified.map_err(|e| Status::invalid_argument(format!("snapshot refused: {e}")))?;
        tracing::info!(shard = shard.id, bytes = file.bytes(), last = ?meta.last_log_id, "snapshot received");
        let snapshot = openraft::storage::Snapshot { meta, snapshot: data };
        // Returns once the snapshot is installed (or refused as stale); the install keeps its
        // own link to the file, so this stream's copy can go.
        let res: Result<_, String> = shard.raft.install_full_snapshot(vote, snapshot).await.map_err(|e| e.to_string());
        if res.is_ok() {
            counted.ok();
        }
        let _ = crate::runtime::blocking(move || drop(file)).await; // deletes it: off the async workers too
        self.reply(&res)
    }

    async fn propose(&self, req: Request<RaftMessage>) -> Result<Response<RaftReply>, Status> {
        let caller = access::caller(&req)?;
        let m = req.into_inner();
        let Identity::Node(from) = caller else { return Err(hongbao_proto::denied(format!("{caller} is not a node"))) };
        if m.from_node != from {
            return Err(hongbao_proto::denied(format!("node {from} may not speak as node {}", m.from_node)));
        }
        self.heard_from(from)?;
        let r: hongbao_ledger::Request = decode(&m.payload).map_err(bad)?;
        if let Err(refused) = access::forwarded_proposal(&self.host.topology(), from, m.shard, &r.cmd) {
            // A slot move's step is checked against the map: the change that recorded the move
            // may not have reached this node yet, so it reads the committed map once more.
            if !access::checked_against_map(&r.cmd) {
                return Err(refused);
            }
            crate::cluster::directory::refresh(&self.host).await;
            access::forwarded_proposal(&self.host.topology(), from, m.shard, &r.cmd)?;
        }
        match self.host.propose(m.shard, r.id, r.cmd).await {
            Ok(outcome) => self.reply(&outcome),
            Err(e) => Err(e.into()),
        }
    }
}
