//! One shard's replica on this node: its Raft, its place in the topology, and the leader-side
//! proposer that batches queued requests into Raft entries.

use crate::limits::{MAX_BATCH, MAX_ENTRIES_IN_FLIGHT, MAX_ENTRY_BYTES, MAX_INFLIGHT_PER_SHARD};
use crate::raft::types::{AppResponse, Batch, NodeId};
use crate::raft::Raft;
use crate::transport::peers::Peers;
use hongbao_ledger::{Outcome, Request, ShardId};
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::ServerState;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

pub struct Replica {
    pub id: ShardId,
    pub raft: Raft,
    pub home_region: String,
    pub(crate) inflight: Arc<Semaphore>,
    pub(crate) proposals: mpsc::Sender<Proposal>,
    pub door: Arc<ConfigDoor>,
}

impl Replica {
    /// Wraps a started Raft and starts its proposer.
    pub fn new(id: ShardId, raft: Raft, home_region: String, door: ConfigDoor) -> Replica {
        // The queue holds at most what the in-flight limit lets through.
        let (proposals, queue) = mpsc::channel(MAX_INFLIGHT_PER_SHARD);
        let door = Arc::new(door);
        tokio::spawn(proposer(raft.clone(), queue, door.clone()));
        Replica { id, raft, home_region, inflight: Arc::new(Semaphore::new(MAX_INFLIGHT_PER_SHARD)), proposals, door }
    }

    /// The shard's voters, as this replica's Raft membership says (the authority on who votes;
    /// the cluster map follows it).
    pub fn voters(&self) -> Vec<NodeId> {
        voters(&self.raft)
    }

    /// Whether `node` is in this replica's Raft membership, as a voter or a learner.
    pub fn is_member(&self, node: NodeId) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let members = m.membership_config.membership();
        members.voter_ids().any(|v| v == node) || members.learner_ids().any(|l| l == node)
    }
}

/// The voters of `raft`'s current membership (the joint configuration's, both halves).
pub fn voters(raft: &Raft) -> Vec<NodeId> {
    let m = raft.metrics();
    let m = m.borrow_watched();
    m.membership_config.membership().voter_ids().collect()
}

/// How soon a leader asks its peers again after they did not confirm its ledger config.
const DOOR_RETRY: Duration = Duration::from_secs(1);
/// Bound on one peer's answer to a config check (the same as a placement probe's).
const CONFIG_CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// The leader's check before it proposes in a term: a majority of the shard's replicas (itself
/// included) has its ledger-config fingerprint. Every entry carries the fingerprint and replicas
/// with another one refuse to apply it (fail-stop), so a leader started with a config of its
/// own would stop its healthy followers; this keeps it from proposing at all (and `placement`
/// hands its leadership away).
pub struct ConfigDoor {
    pub node_id: NodeId,
    pub shard: ShardId,
    pub peers: Arc<Peers>,
    pub fingerprint: u64,
    /// (term, admitted, when): admitted for a whole term; refused, asked again after DOOR_RETRY.
    verdict: Mutex<Option<(u64, bool, Instant)>>,
}

impl ConfigDoor {
    pub fn new(node_id: NodeId, shard: ShardId, peers: Arc<Peers>, fingerprint: u64) -> Self {
        ConfigDoor { node_id, shard, peers, fingerprint, verdict: Mutex::new(None) }
    }

    /// Ok if a majority of `voters` (the shard's, this node among them) agrees with this node's
    /// config in `term` (asked once per term).
    pub async fn admits(&self, term: u64, voters: &[NodeId]) -> Result<(), ConfigRefused> {
        let cached = *self.verdict.lock().expect("door lock");
        if let Some((t, ok, at)) = cached {
            if t == term && (ok || at.elapsed() < DOOR_RETRY) {
                return if ok { Ok(()) } else { Err(self.refusal(&[])) };
            }
        }
        let others: Vec<NodeId> = voters.iter().copied().filter(|r| *r != self.node_id).collect();
        let asks = others.iter().map(|n| self.peers.config_agrees(*n, self.shard, self.fingerprint, CONFIG_CHECK_TIMEOUT));
        let answers = futures::future::join_all(asks).await;
        let agree = 1 + answers.iter().filter(|a| **a == Some(true)).count();
        let differ: Vec<NodeId> = others.iter().zip(&answers).filter(|(_, a)| **a == Some(false)).map(|(n, _)| *n).collect();
        let ok = agree > voters.len().max(1) / 2;
        *self.verdict.lock().expect("door lock") = Some((term, ok, Instant::now()));
        if ok {
            if !differ.is_empty() {
                tracing::error!(
                    shard = self.shard,
                    ?differ,
                    "replicas run another ledger config: they stop applying (fail-stop) at this leader's entries"
                );
            }
            return Ok(());
        }
        let why = self.refusal(&differ);
        tracing::error!(shard = self.shard, term, "{why}");
        Err(why)
    }

    /// Whether the last verdict (of any term) refused this node.
    pub fn refused(&self) -> bool {
        matches!(*self.verdict.lock().expect("door lock"), Some((_, false, _)))
    }

    fn refusal(&self, differ: &[NodeId]) -> ConfigRefused {
        ConfigRefused(format!(
            "shard {}: node {} proposes nothing: no majority of replicas confirms its ledger config fingerprint {:016x} \
             (replicas that differ: {differ:?}); restart it with the cluster's topology file",
            self.shard, self.node_id, self.fingerprint
        ))
    }
}

/// Why a leader proposes nothing: no majority of its shard's replicas confirms its ledger
/// config (the message says which replicas differ and what to do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRefused(pub String);

impl std::fmt::Display for ConfigRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
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

/// The shard's proposer: gathers queued requests into one entry (`next_batch`) and keeps at most
/// MAX_ENTRIES_IN_FLIGHT entries in flight, answering each request with its own outcome.
async fn proposer(raft: Raft, mut queue: mpsc::Receiver<Proposal>, door: Arc<ConfigDoor>) {
    let slots = Arc::new(Semaphore::new(MAX_ENTRIES_IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let batch = next_batch(first, &mut queue);
        metrics::histogram!(crate::metrics::BATCH_REQUESTS).record(batch.len() as f64);
        let (leads, term) = {
            let m = raft.metrics();
            let m = m.borrow_watched();
            (m.state == ServerState::Leader, m.current_term)
        };
        // A follower's client_write answers NotLeader below; only a leader needs the door.
        if leads {
            if let Err(why) = door.admits(term, &voters(&raft)).await {
                for p in batch {
                    let _ = p.done.send(Err(Failed::Unavailable(why.0.clone())));
                }
                continue;
            }
        }
        let raft = raft.clone();
        let fingerprint = door.fingerprint;
        tokio::spawn(async move {
            let (reqs, waiters): (Vec<Request>, Vec<_>) = batch.into_iter().map(|p| (p.req, p.done)).unzip();
            let res = propose_entry(&raft, reqs, fingerprint).await;
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

/// `first` and what is queued behind it, up to MAX_BATCH requests or MAX_ENTRY_BYTES.
fn next_batch(first: Proposal, queue: &mut mpsc::Receiver<Proposal>) -> Vec<Proposal> {
    let mut bytes = crate::codec::encoded_len(&first.req);
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH && bytes < MAX_ENTRY_BYTES {
        match queue.try_recv() {
            Ok(p) => {
                bytes += crate::codec::encoded_len(&p.req);
                batch.push(p);
            }
            Err(_) => break,
        }
    }
    batch
}

/// One Raft entry carrying `reqs` and this node's config fingerprint; one outcome per request.
async fn propose_entry(raft: &Raft, reqs: Vec<Request>, fingerprint: u64) -> Result<Vec<Outcome>, Failed> {
    let n = reqs.len();
    match raft.client_write(Batch(reqs, fingerprint)).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use hongbao_ledger::{Command, RequestId};

    fn proposal(device_bytes: usize) -> Proposal {
        let cmd = Command::OpenAccount { user: 1, device: "d".repeat(device_bytes) };
        Proposal { req: Request { id: RequestId([1; 16]), time_ms: 0, cmd }, done: oneshot::channel().0 }
    }

    /// Large requests close an entry by size long before the count limit: 256 requests of
    /// 16 KiB would make a 4 MiB entry.
    #[test]
    fn an_entry_of_large_requests_closes_at_its_byte_budget() {
        let (tx, mut rx) = mpsc::channel(1_000);
        for _ in 0..MAX_BATCH {
            tx.try_send(proposal(16 << 10)).unwrap();
        }
        let batch = next_batch(proposal(16 << 10), &mut rx);
        let bytes: usize = batch.iter().map(|p| crate::codec::encoded_len(&p.req)).sum();
        assert!(batch.len() < MAX_BATCH, "{} requests", batch.len());
        assert!((MAX_ENTRY_BYTES..MAX_ENTRY_BYTES + (17 << 10)).contains(&bytes), "{bytes} bytes");
        // Small requests still fill an entry up to the count limit.
        let (tx, mut rx) = mpsc::channel(1_000);
        for _ in 0..2 * MAX_BATCH {
            tx.try_send(proposal(10)).unwrap();
        }
        assert_eq!(next_batch(proposal(10), &mut rx).len(), MAX_BATCH);
    }
}
