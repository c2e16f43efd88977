//! One shard's replica on this node: its Raft, its place in the topology, and the leader-side
//! proposer that batches queued requests into Raft entries.

use crate::raft::types::{AppResponse, Batch, NodeId, Raft};
use hongbao_ledger::{Outcome, Request, ShardId};
use openraft::errors::{ClientWriteError, RaftError};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Proposals in flight per shard before new ones get OVERLOADED instead of queueing without end.
pub const MAX_INFLIGHT_PER_SHARD: usize = 20_000;
/// Most requests in one Raft entry: bounds the entry (and an AppendEntries of up to
/// `max_payload_entries` of them) in size.
pub const MAX_BATCH: usize = 256;
/// Entries one shard's leader has proposed and not yet seen applied. While they are in flight,
/// new requests wait in the queue and go out together in the next entry: that is the batching.
pub const MAX_ENTRIES_IN_FLIGHT: usize = 8;

pub struct Replica {
    pub id: ShardId,
    pub raft: Raft,
    pub home_region: String,
    pub replicas: Vec<NodeId>,
    pub(crate) inflight: Arc<Semaphore>,
    pub(crate) proposals: mpsc::Sender<Proposal>,
}

impl Replica {
    /// Wraps a started Raft and starts its proposer.
    pub fn new(id: ShardId, raft: Raft, home_region: String, replicas: Vec<NodeId>) -> Replica {
        // The queue holds at most what the in-flight limit lets through.
        let (proposals, queue) = mpsc::channel(MAX_INFLIGHT_PER_SHARD);
        tokio::spawn(proposer(raft.clone(), queue));
        Replica { id, raft, home_region, replicas, inflight: Arc::new(Semaphore::new(MAX_INFLIGHT_PER_SHARD)), proposals }
    }
}

/// One request waiting for the shard's proposer, and where its outcome goes.
pub(crate) struct Proposal {
    pub req: Request,
    pub done: oneshot::Sender<Result<Outcome, Failed>>,
}

/// Why a proposed entry did not produce outcomes.
#[derive(Debug, Clone)]
pub(crate) enum Failed {
    NotLeader(Option<NodeId>),
    Unavailable(String),
    Internal(String),
}

/// The shard's proposer: gathers queued requests into one entry (up to MAX_BATCH) and keeps at
/// most MAX_ENTRIES_IN_FLIGHT entries in flight, answering each request with its own outcome.
async fn proposer(raft: Raft, mut queue: mpsc::Receiver<Proposal>) {
    let slots = Arc::new(Semaphore::new(MAX_ENTRIES_IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        metrics::histogram!(crate::metrics::BATCH_REQUESTS).record(batch.len() as f64);
        let raft = raft.clone();
        tokio::spawn(async move {
            let (reqs, waiters): (Vec<Request>, Vec<_>) = batch.into_iter().map(|p| (p.req, p.done)).unzip();
            let res = propose_entry(&raft, reqs).await;
            drop(slot);
            match res {
                Ok(outcomes) => {
                    for (w, o) in waiters.into_iter().zip(outcomes) {
                        let _ = w.send(Ok(o));
                    }
                }
                Err(f) => {
                    for w in waiters {
                        let _ = w.send(Err(f.clone()));
                    }
                }
            }
        });
    }
}

/// One Raft entry carrying `reqs`; one outcome per request, in order.
async fn propose_entry(raft: &Raft, reqs: Vec<Request>) -> Result<Vec<Outcome>, Failed> {
    let n = reqs.len();
    match raft.client_write(Batch(reqs)).await {
        Ok(resp) => match resp.data {
            AppResponse::Ledger(outcomes) => {
                assert_eq!(outcomes.len(), n, "one outcome per request of the entry");
                Ok(outcomes)
            }
            AppResponse::Empty => Err(Failed::Internal("ledger entry answered empty".into())),
        },
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(Failed::NotLeader(f.leader_id)),
        Err(e) => Err(Failed::Unavailable(e.to_string())),
    }
}
