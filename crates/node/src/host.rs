//! The shards this node hosts (multi-raft): one openraft instance per shard, all on one RocksDB
//! and one set of peer connections. Proposals and reads go through here, which is where
//! NotLeader (with a leader hint), overload and timeouts become explicit codes.

use openraft::async_runtime::WatchReceiver;
use crate::faults::Faults;
use crate::raft::log_store::LogStore;
use crate::peers::Peers;
use crate::transport::client::NetworkFactory;
use crate::raft::state_machine::StateMachine;
use crate::raft::types::{AppResponse, Batch, NodeId, Raft};
use crate::storage::{Db, ShardStore};
use hongbao_ledger::{Command, LedgerConfig, Outcome, Request, RequestId, ShardId};
use hongbao_proto::{ErrorCode, ErrorDetail};
use hongbao_topology::Topology;
use openraft::errors::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::{BasicNode, ReadPolicy, ServerState};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Proposals in flight per shard before new ones get OVERLOADED instead of queueing without end.
pub const MAX_INFLIGHT_PER_SHARD: usize = 20_000;
/// A proposal or read that takes longer than this answers TIMEOUT (outcome unknown: retry with
/// the same request id).
/// A replica within this many entries of the leader counts as caught up for failback.
pub const CAUGHT_UP_SLACK: u64 = 100;
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most requests in one Raft entry: bounds the entry (and an AppendEntries of up to
/// `max_payload_entries` of them) in size.
pub const MAX_BATCH: usize = 256;
/// Entries one shard's leader has proposed and not yet seen applied. While they are in flight,
/// new requests wait in the queue and go out together in the next entry: that is the batching.
pub const MAX_ENTRIES_IN_FLIGHT: usize = 8;

pub struct Shard {
    pub id: ShardId,
    pub raft: Raft,
    pub home_region: String,
    pub replicas: Vec<NodeId>,
    inflight: Arc<Semaphore>,
    proposals: mpsc::Sender<Proposal>,
}

/// One request waiting for the shard's proposer, and where its outcome goes.
struct Proposal {
    req: Request,
    done: oneshot::Sender<Result<Outcome, Failed>>,
}

/// Why a proposed entry did not produce outcomes.
#[derive(Debug, Clone)]
enum Failed {
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
        metrics::histogram!("hongbao_batch_requests").record(batch.len() as f64);
        let raft = raft.clone();
        tokio::spawn(async move {
            let (reqs, waiters): (Vec<Request>, Vec<_>) = batch.into_iter().map(|p| (p.req, p.done)).unzip();
            let n = reqs.len();
            let res = match raft.client_write(Batch(reqs)).await {
                Ok(resp) => match resp.data {
                    AppResponse::Ledger(outcomes) => {
                        assert_eq!(outcomes.len(), n, "one outcome per request of the entry");
                        Ok(outcomes)
                    }
                    AppResponse::Empty => Err(Failed::Internal("ledger entry answered empty".into())),
                },
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(Failed::NotLeader(f.leader_id)),
                Err(e) => Err(Failed::Unavailable(e.to_string())),
            };
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

pub struct Host {
    pub node_id: NodeId,
    pub region: String,
    pub topology: Arc<Topology>,
    pub peers: Arc<Peers>,
    pub db: Arc<Db>,
    pub config: Arc<LedgerConfig>,
    pub shards: BTreeMap<ShardId, Arc<Shard>>,
    pub data_dir: PathBuf,
    /// Regions an operator drained: no leadership is moved into them.
    drained: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Last time stamped into a proposal, so stamps never go backwards on this node even if the
    /// wall clock does (the ledger also clamps, across leaders).
    last_stamp: AtomicU64,
}

pub fn ledger_config(t: &Topology) -> LedgerConfig {
    let mut c = LedgerConfig::default();
    if let Some(ttl) = t.ledger.packet_ttl_ms {
        c.packet_ttl_ms = ttl;
    }
    if let Some(r) = t.ledger.dedup_retention_ms {
        c.dedup_retention_ms = r;
    }
    c
}

pub fn raft_config(t: &Topology) -> openraft::Config {
    let r = &t.raft;
    openraft::Config {
        cluster_name: "hongbao".into(),
        heartbeat_interval: r.heartbeat_ms,
        election_timeout_min: r.election_timeout_min_ms,
        election_timeout_max: r.election_timeout_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(r.snapshot_every),
        max_in_snapshot_log_to_keep: r.keep_behind_snapshot,
        // Entries carry up to MAX_BATCH requests each: 256 x 256 bounds one AppendEntries.
        max_payload_entries: 256,
        enable_pre_vote: Some(true),
        ..Default::default()
    }
}

impl Host {
    /// Opens the node's RocksDB and starts a Raft replica for every shard the topology places
    /// here. A fresh shard is bootstrapped by its home-region replica; existing data is resumed
    /// and never re-initialized.
    pub async fn start(topology: Arc<Topology>, node_id: NodeId, data_dir: &Path) -> anyhow::Result<Arc<Host>> {
        let me = topology.node(node_id).ok_or_else(|| anyhow::anyhow!("node {node_id} is not in the topology"))?.clone();
        std::fs::create_dir_all(data_dir)?;
        let db = Arc::new(Db::open(&data_dir.join("db"))?);
        let addrs: HashMap<NodeId, String> = topology.nodes.iter().map(|n| (n.id, n.addr.clone())).collect();
        let faults = Arc::new(Faults::new(&topology, node_id));
        let peers = Arc::new(Peers::new(node_id, addrs, faults));
        let config = Arc::new(ledger_config(&topology));
        let raft_config = Arc::new(raft_config(&topology).validate()?);
        let mut shards = BTreeMap::new();
        for s in topology.shards_on(node_id) {
            let log = LogStore::new(db.clone(), s.id);
            let sm = StateMachine::open(db.clone(), s.id, config.clone(), &data_dir.join("snapshots"))?;
            let net = NetworkFactory { shard: s.id, peers: peers.clone() };
            let raft = Raft::new(node_id, raft_config.clone(), net, log, sm).await?;
            if !raft.is_initialized().await? {
                let bootstrapper = s
                    .replicas
                    .iter()
                    .copied()
                    .find(|r| topology.region_of(*r) == Some(s.home.as_str()))
                    .unwrap_or(s.replicas[0]);
                if bootstrapper == node_id {
                    let members: BTreeMap<NodeId, BasicNode> = s
                        .replicas
                        .iter()
                        .map(|r| (*r, BasicNode::new(topology.node(*r).expect("validated").addr.clone())))
                        .collect();
                    tracing::info!(shard = s.id, ?members, "bootstrapping shard");
                    raft.initialize(members).await?;
                }
            }
            // The queue holds at most what the in-flight limit lets through.
            let (proposals, queue) = mpsc::channel(MAX_INFLIGHT_PER_SHARD);
            tokio::spawn(proposer(raft.clone(), queue));
            shards.insert(
                s.id,
                Arc::new(Shard {
                    id: s.id,
                    raft,
                    home_region: s.home.clone(),
                    replicas: s.replicas.clone(),
                    inflight: Arc::new(Semaphore::new(MAX_INFLIGHT_PER_SHARD)),
                    proposals,
                }),
            );
        }
        Ok(Arc::new(Host {
            node_id,
            region: me.region.clone(),
            topology,
            peers,
            db,
            config,
            shards,
            data_dir: data_dir.to_path_buf(),
            drained: Default::default(),
            last_stamp: AtomicU64::new(0),
        }))
    }

    pub fn shard(&self, id: ShardId) -> Result<&Arc<Shard>, ErrorDetail> {
        self.shards.get(&id).ok_or_else(|| detail(ErrorCode::UnknownShard, format!("node {} hosts no replica of shard {id}", self.node_id), id))
    }

    /// NotLeader, pointing at the leader this replica knows of (if any).
    pub fn not_leader(&self, shard: &Shard, leader: Option<NodeId>) -> ErrorDetail {
        let leader = leader.or_else(|| shard.raft.metrics().borrow_watched().current_leader).filter(|l| *l != self.node_id);
        let mut d = detail(ErrorCode::NotLeader, format!("node {} does not lead shard {}", self.node_id, shard.id), shard.id);
        if let Some(l) = leader {
            d.leader_hint_node = l;
            d.leader_hint_addr = self.peers.addr(l).unwrap_or_default().to_string();
        } else {
            d.code = ErrorCode::Unavailable as i32;
            d.message = format!("shard {} has no known leader (election in progress?)", shard.id);
        }
        d
    }

    pub fn is_leader(&self, shard: &Shard) -> bool {
        let m = shard.raft.metrics();
        let m = m.borrow_watched();
        m.state == ServerState::Leader && m.current_leader == Some(self.node_id)
    }

    /// This node's clock: the wall clock, shifted by an injected clock jump.
    pub fn clock_ms(&self) -> u64 {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as i64;
        wall.saturating_add(self.peers.faults.clock_offset_ms()).max(0) as u64
    }

    /// The shard's time as its ledger sees it: never behind the last time it applied, which may
    /// be ahead of this node's clock (another leader's clock ran fast).
    pub fn ledger_time_ms(&self, shard: ShardId) -> u64 {
        self.clock_ms().max(hongbao_ledger::view::totals(&self.store(shard)).last_time_ms)
    }

    /// Leader-side time stamp for a command: this node's clock, never below the previous stamp.
    fn stamp(&self) -> u64 {
        let now = self.clock_ms();
        let prev = self.last_stamp.fetch_max(now, Ordering::Relaxed);
        now.max(prev)
    }

    /// Proposes one ledger command on `shard` and waits until it is committed and applied.
    pub async fn propose(&self, shard_id: ShardId, id: RequestId, cmd: Command) -> Result<Outcome, ErrorDetail> {
        let shard = self.shard(shard_id)?;
        if !self.is_leader(shard) {
            return Err(self.not_leader(shard, None));
        }
        let _permit = shard.inflight.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!("hongbao_overloaded_total").increment(1);
            detail(ErrorCode::Overloaded, format!("shard {shard_id} has {MAX_INFLIGHT_PER_SHARD} proposals in flight"), shard_id)
        })?;
        let req = Request { id, time_ms: self.stamp(), cmd };
        let started = std::time::Instant::now();
        metrics::counter!("hongbao_proposals_total").increment(1);
        let (done, outcome) = oneshot::channel();
        shard.proposals.try_send(Proposal { req, done }).map_err(|_| {
            detail(ErrorCode::Overloaded, format!("shard {shard_id}: proposal queue full"), shard_id)
        })?;
        let res = tokio::time::timeout(PROPOSE_TIMEOUT, outcome).await;
        metrics::histogram!("hongbao_commit_seconds").record(started.elapsed().as_secs_f64());
        match res {
            Err(_) => Err(detail(ErrorCode::Timeout, format!("shard {shard_id}: not committed within {PROPOSE_TIMEOUT:?}; retry with the same request id"), shard_id)),
            Ok(Err(_)) => Err(detail(ErrorCode::Internal, format!("shard {shard_id}: proposer stopped"), shard_id)),
            Ok(Ok(Ok(o))) => Ok(o),
            Ok(Ok(Err(Failed::NotLeader(l)))) => Err(self.not_leader(shard, l)),
            Ok(Ok(Err(Failed::Unavailable(e)))) => Err(detail(ErrorCode::Unavailable, format!("shard {shard_id}: {e}"), shard_id)),
            Ok(Ok(Err(Failed::Internal(e)))) => Err(detail(ErrorCode::Internal, format!("shard {shard_id}: {e}"), shard_id)),
        }
    }

    /// Waits until this replica may serve a linearizable read (ReadIndex through the leader).
    pub async fn linearizable(&self, shard_id: ShardId) -> Result<&Arc<Shard>, ErrorDetail> {
        let shard = self.shard(shard_id)?;
        if !self.is_leader(shard) {
            return Err(self.not_leader(shard, None));
        }
        match tokio::time::timeout(PROPOSE_TIMEOUT, shard.raft.ensure_linearizable(ReadPolicy::ReadIndex)).await {
            Err(_) => Err(detail(ErrorCode::Timeout, format!("shard {shard_id}: read index not confirmed in time"), shard_id)),
            Ok(Ok(_)) => Ok(shard),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f)))) => Err(self.not_leader(shard, f.leader_id)),
            Ok(Err(e)) => Err(detail(ErrorCode::Unavailable, format!("shard {shard_id}: {e}"), shard_id)),
        }
    }

    /// The ledger's view of a shard's applied state on this replica.
    pub fn store(&self, shard: ShardId) -> ShardStore<'_> {
        ShardStore::live(&self.db, shard)
    }

    pub fn drained_regions(&self) -> std::collections::BTreeSet<String> {
        self.drained.lock().expect("drained lock").clone()
    }

    pub fn set_drained(&self, region: &str, drained: bool) {
        let mut d = self.drained.lock().expect("drained lock");
        if drained {
            d.insert(region.to_string());
        } else {
            d.remove(region);
        }
    }

    /// Hands leadership of `shard` (led here) to `to`, and waits until `to` leads or the time
    /// runs out, so callers know the move happened.
    pub async fn transfer_leader(&self, shard_id: ShardId, to: NodeId) -> Result<(), ErrorDetail> {
        let shard = self.shard(shard_id)?;
        if !self.is_leader(shard) {
            return Err(self.not_leader(shard, None));
        }
        shard.raft.trigger().transfer_leader(to).await.map_err(|e| detail(ErrorCode::Internal, e.to_string(), shard_id))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut rx = shard.raft.metrics();
        loop {
            if rx.borrow_watched().current_leader == Some(to) {
                tracing::info!(shard = shard_id, to, "leadership transferred");
                metrics::counter!("hongbao_leader_transfers_total").increment(1);
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return Err(detail(ErrorCode::Timeout, format!("shard {shard_id}: node {to} did not take over in 5 s"), shard_id));
            }
        }
    }

    /// The replica in the shard's home region, if it is up and has caught up with the leader.
    pub fn home_replica(&self, shard_id: ShardId, st: &hongbao_proto::v1::StatusReply) -> Option<NodeId> {
        let s = self.topology.shard(shard_id)?;
        if self.drained_regions().contains(&s.home) {
            return None;
        }
        let leader_last = st.leader_of(shard_id).map(|x| x.last_log_index)?;
        st.nodes
            .iter()
            .filter(|n| n.up && n.region == s.home && s.replicas.contains(&n.node))
            .find(|n| n.shards.iter().any(|x| x.shard == shard_id && x.applied + CAUGHT_UP_SLACK >= leader_last))
            .map(|n| n.node)
    }

    /// A healthy replica of `shard` outside `avoid` (and outside drained regions), the most
    /// caught-up first.
    pub fn failover_target(&self, shard_id: ShardId, st: &hongbao_proto::v1::StatusReply, avoid: Option<&str>) -> Option<NodeId> {
        let s = self.topology.shard(shard_id)?;
        let drained = self.drained_regions();
        st.nodes
            .iter()
            .filter(|n| n.up && s.replicas.contains(&n.node) && Some(n.region.as_str()) != avoid && !drained.contains(&n.region))
            .filter_map(|n| n.shards.iter().find(|x| x.shard == shard_id).map(|x| (x.applied, n.node)))
            .max()
            .map(|(_, node)| node)
    }

    pub async fn shutdown(&self) {
        for s in self.shards.values() {
            if let Err(e) = s.raft.shutdown().await {
                tracing::warn!(shard = s.id, "raft shutdown: {e}");
            }
        }
    }
}

pub fn detail(code: ErrorCode, message: impl Into<String>, shard: ShardId) -> ErrorDetail {
    ErrorDetail { code: code as i32, message: message.into(), shard, ..Default::default() }
}
