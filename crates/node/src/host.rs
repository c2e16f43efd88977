//! The shards this node hosts (multi-raft): one replica per shard, all on one RocksDB and one
//! set of peer connections. Proposals and reads go through here, which is where NotLeader (with a
//! leader hint), overload and timeouts become explicit errors (`HostError`).

use crate::clock::Clock;
use crate::cluster::map::Directory;
use crate::cluster::placement::Placement;
use crate::cluster::slot_load::SlotLoad;
use crate::config::{ledger_config, raft_config};
use crate::error::{ErrorKind, HostError};
use crate::faults::Faults;
use crate::limits::MAX_INFLIGHT_PER_SHARD;
use crate::limits::PROPOSE_TIMEOUT;
use crate::raft::log_store::LogStore;
use crate::raft::rejoin::Rejoin;
use crate::raft::state_machine::StateMachine;
use crate::raft::types::NodeId;
use crate::raft::Raft;
use crate::replica::{ConfigDoor, Failed, Proposal, Replica};
use crate::storage::{Db, ShardStore};
use crate::transport::client::NetworkFactory;
use crate::transport::peers::Peers;
use hongbao_ledger::{Command, LedgerConfig, Outcome, Request, RequestId, ShardId};
use hongbao_topology::Topology;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{LinearizableReadError, RaftError};
use openraft::{BasicNode, ReadPolicy, ServerState};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::RwLock;
use std::time::Duration;
use tokio::sync::watch;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// How long a leader transfer may take before the caller hears TIMEOUT.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Host {
    pub node_id: NodeId,
    pub region: String,
    /// The cluster map, newest version seen (`directory`): read it with `topology()`.
    pub map: Directory,
    pub peers: Arc<Peers>,
    pub db: Arc<Db>,
    pub config: Arc<LedgerConfig>,
    /// The replicas hosted here: the map's shards on this node, opened and closed online
    /// (`reconcile`).
    replicas: RwLock<BTreeMap<ShardId, Arc<Replica>>>,
    /// Serializes `reconcile` (opening a replica awaits).
    reconciling: tokio::sync::Mutex<()>,
    raft_config: Arc<openraft::Config>,
    /// The topology file's shards on this node: the only replicas this node may bootstrap.
    seeded: Vec<ShardId>,
    /// Ends the per-shard tasks (`leader`) of every replica, those opened online included.
    stop: watch::Sender<bool>,
    /// Bumped whenever a replica opens or closes here (`leader::supervise` starts its tasks).
    replicas_changed: watch::Sender<u64>,
    pub data_dir: PathBuf,
    pub placement: Placement,
    pub clock: Arc<Clock>,
    /// Shards this replica started empty for, still catching up (no votes, no campaign).
    pub rejoin: Rejoin,
    /// User requests served here as leader, per slot (rebalancing by load).
    pub slot_load: SlotLoad,
    /// Permits for reads in flight on this node (`read_permit`).
    reads: Arc<Semaphore>,
    max_reads: usize,
}

/// One read in flight on this node: its permit goes back when this is dropped.
pub struct ReadPermit {
    _permit: OwnedSemaphorePermit,
}

/// What a node needs from its security folder: how it reaches the other nodes (mutual TLS with
/// its own certificate, or a simulation's links) and the secret the replicas share for challenge
/// codes and PIN salts.
pub struct NodeSecrets {
    pub dial: crate::transport::peers::Dial,
    pub challenge_key: [u8; 32],
}

/// What differs between a node on a machine and one inside `hongbao-sim`: where its wall clock
/// comes from, and whether closing its RocksDB drops what was not made durable (a crash) rather
/// than flushing it.
#[derive(Clone)]
pub struct NodeEnv {
    pub time: crate::clock::TimeSource,
    pub close_as_crash: bool,
}

impl Default for NodeEnv {
    fn default() -> Self {
        NodeEnv { time: crate::clock::TimeSource::Wall, close_as_crash: false }
    }
}

impl Host {
    /// Opens the node's RocksDB and starts a Raft replica for every shard the topology places
    /// here. A fresh shard is bootstrapped by its home-region replica; existing data is resumed
    /// and never re-initialized.
    /// At most `max_reads` reads are in flight at once (`read_permit`).
    pub async fn start(
        seed: Topology,
        node_id: NodeId,
        data_dir: &Path,
        secrets: NodeSecrets,
        max_reads: usize,
    ) -> anyhow::Result<Arc<Host>> {
        Host::start_in(seed, node_id, data_dir, secrets, max_reads, NodeEnv::default()).await
    }

    /// `start`, in `env` (a simulation's clock and crash model: hongbao-sim).
    pub async fn start_in(
        seed: Topology,
        node_id: NodeId,
        data_dir: &Path,
        secrets: NodeSecrets,
        max_reads: usize,
        env: NodeEnv,
    ) -> anyhow::Result<Arc<Host>> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("db");
        let db = Arc::new(if env.close_as_crash { Db::open_losing_memtables_on_close(&path)? } else { Db::open(&path)? });
        let seeded: Vec<ShardId> = seed.shards_on(node_id).iter().map(|s| s.id).collect();
        let faults = Arc::new(Faults::new(&seed, node_id));
        // The nodes this one exchanges Raft messages with: whose clocks it is judged against.
        let raft_peers: std::collections::BTreeSet<NodeId> =
            seed.shards_on(node_id).into_iter().flat_map(|s| s.replicas.iter().copied()).filter(|n| *n != node_id).collect();
        // A node added online has no shard in the file: its peers will be the other two
        // replicas of a three-replica shard.
        let clock = Arc::new(Clock::with_source(faults.clone(), raft_peers.len().max(2), env.time));
        let peers = Arc::new(Peers::new(node_id, faults, clock.clone(), secrets.dial));
        peers.set_addrs(&seed);
        let config = Arc::new(ledger_config(&seed, secrets.challenge_key));
        let raft_config = Arc::new(raft_config(&seed).validate()?);
        // The newest map the other nodes know (a node added online is in no topology file).
        let topology = crate::cluster::map::at_start(seed, &peers, node_id).await?;
        peers.set_addrs(&topology);
        let me = topology.node(node_id).expect("at_start returns a map naming this node").clone();
        // Every entry carries it; replicas refuse entries with another (see `ConfigDoor`).
        let fingerprint = config.fingerprint();
        tracing::info!(fingerprint = %format!("{fingerprint:016x}"), map_version = topology.version, "ledger config fingerprint");
        crate::service::access::set_config_fingerprint(fingerprint);
        let map = Directory::new(topology);
        let host = Arc::new(Host {
            node_id,
            region: me.region.clone(),
            placement: Placement::new(map.clone()),
            map,
            peers,
            db,
            config,
            replicas: RwLock::new(BTreeMap::new()),
            reconciling: tokio::sync::Mutex::new(()),
            raft_config,
            seeded,
            stop: watch::Sender::new(false),
            replicas_changed: watch::Sender::new(0),
            data_dir: data_dir.to_path_buf(),
            clock,
            rejoin: Rejoin::default(),
            slot_load: SlotLoad::default(),
            reads: Arc::new(Semaphore::new(max_reads)),
            max_reads,
        });
        for s in host.topology().shards_on(node_id) {
            host.open_replica(s).await?;
        }
        Ok(host)
    }

    /// The cluster map (newest version this node has seen).
    pub fn topology(&self) -> Arc<Topology> {
        self.map.get()
    }

    /// Installs a newer map: peers' addresses follow it at once (replicas at the next
    /// `reconcile`).
    pub fn install_map(&self, map: Topology) -> bool {
        let addrs = map.clone();
        let newer = self.map.install(map);
        if newer {
            self.peers.set_addrs(&addrs);
        }
        newer
    }

    /// Opens the Raft replica of `s` here (`leader::supervise` starts its tasks). A shard of this node's
    /// topology file (a new cluster) or one added online may be founded here (by its first
    /// home-region replica, when no peer has its history); a replica added to an existing shard
    /// never is: it waits, empty and without a vote, for its leader to add it as a learner.
    async fn open_replica(self: &Arc<Self>, s: &hongbao_topology::Shard) -> anyhow::Result<Arc<Replica>> {
        let log = LogStore::open(self.db.clone(), s.id)?;
        let sm = StateMachine::open(self.db.clone(), s.id, self.config.clone(), &self.data_dir.join("snapshots"))?;
        let net = NetworkFactory { shard: s.id, peers: self.peers.clone() };
        let raft = Raft::new(self.node_id, self.raft_config.clone(), net, log, sm).await?;
        // A shard of the topology file in a new cluster, or one added online (`founded`).
        let may_bootstrap = s.founded > 0 || (self.seeded.contains(&s.id) && self.topology().version == 0);
        bootstrap_if_new(&raft, &self.topology(), s, self.node_id, &self.peers, &self.rejoin, may_bootstrap).await?;
        // The rejoin outlives a crash: a replica that started empty and crashed again before it
        // caught up restarts with part of the log, but still without the votes it forgot. Were it
        // to vote again, it could elect a leader missing committed entries (hongbao-sim seed 52
        // found exactly that: a linearizable read of an older balance, #31).
        let marker = crate::storage::keys::rejoining(s.id);
        if self.rejoin.is_rejoining(s.id) {
            let mut b = self.db.batch();
            b.put(&marker, &[1]);
            self.db.write_synced(b)?;
        } else if self.db.get(&marker)?.is_some() {
            self.rejoin.start(s.id);
            raft.runtime_config().elect(false);
        }
        let door = ConfigDoor::new(self.node_id, s.id, self.peers.clone(), self.config.fingerprint());
        let replica = Arc::new(Replica::new(s.id, raft, s.home.clone(), door));
        self.replicas.write().expect("replicas lock").insert(s.id, replica.clone());
        self.replicas_changed.send_modify(|n| *n += 1);
        tracing::info!(shard = s.id, "replica opened");
        Ok(replica)
    }

    /// Makes the replicas hosted here match the map: opens those it places here; closes those
    /// it no longer does. A replica leaves the map only after its Raft group removed it
    /// (`membership::remove_replica`), so the group no longer counts on it; it may not know
    /// that itself (the last config entry need not reach it), which is why the map decides.
    pub async fn reconcile(self: &Arc<Self>) {
        let _one = self.reconciling.lock().await;
        let map = self.topology();
        for s in map.shards_on(self.node_id) {
            if self.replica(s.id).is_err() {
                if let Err(e) = self.open_replica(s).await {
                    tracing::error!(shard = s.id, error = %e, "could not open a replica the cluster map places here");
                }
            }
        }
        for r in self.replica_list() {
            let placed = map.shard(r.id).is_some_and(|s| s.replicas.contains(&self.node_id));
            if placed {
                continue;
            }
            tracing::warn!(shard = r.id, "replica removed from its shard: closing it");
            self.replicas.write().expect("replicas lock").remove(&r.id);
            self.replicas_changed.send_modify(|n| *n += 1);
            if let Err(e) = r.raft.shutdown().await {
                tracing::warn!(shard = r.id, "raft shutdown: {e}");
            }
        }
    }

    /// A receiver that sees every replica opened or closed here.
    pub fn replicas_changed(&self) -> watch::Receiver<u64> {
        self.replicas_changed.subscribe()
    }

    /// Ends every per-shard task (`leader`).
    pub fn stop_tasks(&self) {
        let _ = self.stop.send(true);
    }

    /// A receiver that sees `stop_tasks`.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    pub fn replica(&self, id: ShardId) -> Result<Arc<Replica>, HostError> {
        self.replicas
            .read()
            .expect("replicas lock")
            .get(&id)
            .cloned()
            .ok_or_else(|| HostError::new(ErrorKind::UnknownShard, id, format!("node {} hosts no replica of shard {id}", self.node_id)))
    }

    /// The replicas hosted here now, by shard id.
    pub fn replica_list(&self) -> Vec<Arc<Replica>> {
        self.replicas.read().expect("replicas lock").values().cloned().collect()
    }

    /// NotLeader, pointing at the leader this replica knows of (if any); Unavailable if none.
    pub fn not_leader(&self, replica: &Replica, leader: Option<NodeId>) -> HostError {
        let leader = leader.or_else(|| replica.raft.metrics().borrow_watched().current_leader).filter(|l| *l != self.node_id);
        match leader {
            Some(l) => HostError {
                kind: ErrorKind::NotLeader,
                shard: replica.id,
                message: format!("node {} does not lead shard {}", self.node_id, replica.id),
                leader: Some((l, self.peers.addr(l).unwrap_or_default().to_string())),
            },
            None => HostError::new(
                ErrorKind::Unavailable,
                replica.id,
                format!("shard {} has no known leader (election in progress?)", replica.id),
            ),
        }
    }

    pub fn is_leader(&self, replica: &Replica) -> bool {
        let m = replica.raft.metrics();
        let m = m.borrow_watched();
        m.state == ServerState::Leader && m.current_leader == Some(self.node_id)
    }

    /// The shard's time as its ledger sees it: never behind the last time it applied, which may
    /// be ahead of this node's clock (another leader's clock ran fast).
    pub fn ledger_time_ms(&self, shard: ShardId) -> u64 {
        self.clock.now_ms().max(hongbao_ledger::view::totals(&self.store(shard)).last_time_ms)
    }

    /// Proposes one ledger command on `shard` and waits until it is committed and applied.
    pub async fn propose(&self, shard_id: ShardId, id: RequestId, cmd: Command) -> Result<Outcome, HostError> {
        let replica = self.replica(shard_id)?;
        if !self.is_leader(&replica) {
            return Err(self.not_leader(&replica, None));
        }
        let _permit = replica.inflight.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!(crate::metrics::OVERLOADED).increment(1);
            HostError::new(ErrorKind::Overloaded, shard_id, format!("shard {shard_id} has {MAX_INFLIGHT_PER_SHARD} proposals in flight"))
        })?;
        let time_ms = self.clock.stamp().map_err(|u| {
            metrics::counter!(crate::metrics::CLOCK_REFUSED).increment(1);
            HostError::new(ErrorKind::Unavailable, shard_id, format!("node {} stamps nothing: {}", self.node_id, u.0))
        })?;
        let req = Request { id, time_ms, cmd };
        let started = std::time::Instant::now();
        metrics::counter!(crate::metrics::PROPOSALS).increment(1);
        let (done, outcome) = oneshot::channel();
        replica
            .proposals
            .try_send(Proposal { req, done })
            .map_err(|_| HostError::new(ErrorKind::Overloaded, shard_id, format!("shard {shard_id}: proposal queue full")))?;
        let res = tokio::time::timeout(PROPOSE_TIMEOUT, outcome).await;
        metrics::histogram!(crate::metrics::COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
        let err = |kind, msg: String| Err(HostError::new(kind, shard_id, format!("shard {shard_id}: {msg}")));
        match res {
            Err(_) => err(ErrorKind::Timeout, format!("not committed within {PROPOSE_TIMEOUT:?}; retry with the same request id")),
            Ok(Err(_)) => err(ErrorKind::Internal, "proposer stopped".into()),
            Ok(Ok(Ok(o))) => Ok(o),
            Ok(Ok(Err(Failed::NotLeader(l)))) => Err(self.not_leader(&replica, l)),
            Ok(Ok(Err(Failed::Unavailable(e)))) => err(ErrorKind::Unavailable, e),
            Ok(Ok(Err(Failed::Internal(e)))) => err(ErrorKind::Internal, e),
        }
    }

    /// Proposes `cmd` on `shard`'s leader from wherever this node stands: locally if it leads
    /// the shard, else over the Raft transport's Propose on the leader its replica knows of, then
    /// on every other replica in turn (a follower answers NotLeader). Each remote call waits at
    /// most `call_timeout` (and carries it as its deadline). One pass over the candidates: the
    /// caller retries as its own policy says. The error (UNAVAILABLE when no replica answered
    /// with an outcome) says why no outcome came, for the log.
    pub async fn propose_on_leader(
        &self,
        shard: ShardId,
        id: RequestId,
        cmd: Command,
        call_timeout: Duration,
    ) -> Result<Outcome, HostError> {
        if let Ok(r) = self.replica(shard) {
            if self.is_leader(&r) {
                return self.propose(shard, id, cmd).await;
            }
        }
        let known = self.replica(shard).ok().and_then(|r| r.raft.metrics().borrow_watched().current_leader);
        let mut candidates: Vec<NodeId> = known.into_iter().collect();
        if let Some(s) = self.topology().shard(shard) {
            candidates.extend(s.replicas.iter().copied().filter(|r| Some(*r) != known && *r != self.node_id));
        }
        let req = Request { id, time_ms: 0, cmd };
        let mut last = format!("no replica of shard {shard} reachable");
        for node in candidates {
            match self.peers.propose_at(node, shard, &req, call_timeout).await {
                Ok(o) => return Ok(o),
                Err(s) => last = format!("node {node}: {:?}: {}", s.code(), s.message()),
            }
        }
        Err(HostError::new(ErrorKind::Unavailable, shard, last))
    }

    /// A permit for one read on this node (of `shard`, named in the error), held until the read
    /// is answered; OVERLOADED at once when `max_reads` reads are in flight already, like a
    /// proposal past its shard's in-flight limit.
    pub fn read_permit(&self, shard: ShardId) -> Result<ReadPermit, HostError> {
        self.reads.clone().try_acquire_owned().map(|p| ReadPermit { _permit: p }).map_err(|_| {
            metrics::counter!(crate::metrics::OVERLOADED).increment(1);
            let msg = format!("node {} has {} reads in flight; back off and retry", self.node_id, self.max_reads);
            HostError::new(ErrorKind::Overloaded, shard, msg)
        })
    }

    /// Starts a read of `shard` here: linearizable (ReadIndex through the leader) unless
    /// `allow_stale`, when only the replica must exist. Hold the permit until the read is
    /// answered: it bounds the reads in flight on this node.
    pub async fn begin_read(&self, shard_id: ShardId, allow_stale: bool) -> Result<ReadPermit, HostError> {
        let replica = self.replica(shard_id)?;
        if allow_stale {
            return self.read_permit(shard_id);
        }
        if !self.is_leader(&replica) {
            return Err(self.not_leader(&replica, None));
        }
        let permit = self.read_permit(shard_id)?;
        self.confirm_read_index(&replica).await?;
        Ok(permit)
    }

    /// Waits until this replica may serve a linearizable read (ReadIndex through the leader),
    /// holding a read permit while it waits (`begin_read` hands the permit to its caller).
    pub async fn linearizable(&self, shard_id: ShardId) -> Result<Arc<Replica>, HostError> {
        let replica = self.replica(shard_id)?;
        if !self.is_leader(&replica) {
            return Err(self.not_leader(&replica, None));
        }
        let _permit = self.read_permit(shard_id)?;
        self.confirm_read_index(&replica).await?;
        Ok(replica)
    }

    /// Waits until this replica, leading its shard, may answer from its own applied state
    /// without a Raft round (PIN verdicts, revoked tokens, fast grab refusals). It may once it
    /// has applied an entry of its own term: a new leader's first entry is the blank one it
    /// commits after every entry of earlier terms, so its state then holds everything committed
    /// before it led, even if it restarted knowing less (the committed index and the applied
    /// state are written unsynced). Before that, one ReadIndex round waits for it.
    pub async fn fence_local_read(&self, replica: &Replica) -> Result<(), HostError> {
        if Self::applied_own_term(replica) {
            return Ok(());
        }
        metrics::counter!(crate::metrics::FENCED_LOCAL_READS).increment(1);
        let _permit = self.read_permit(replica.id)?;
        self.confirm_read_index(replica).await
    }

    fn applied_own_term(replica: &Replica) -> bool {
        let m = replica.raft.metrics();
        let m = m.borrow_watched();
        m.last_applied.as_ref().is_some_and(|l| l.leader_id.term == m.current_term)
    }

    async fn confirm_read_index(&self, replica: &Replica) -> Result<(), HostError> {
        let shard_id = replica.id;
        match tokio::time::timeout(PROPOSE_TIMEOUT, replica.raft.ensure_linearizable(ReadPolicy::ReadIndex)).await {
            Err(_) => Err(HostError::new(ErrorKind::Timeout, shard_id, format!("shard {shard_id}: read index not confirmed in time"))),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f)))) => Err(self.not_leader(replica, f.leader_id)),
            Ok(Err(e)) => Err(HostError::new(ErrorKind::Unavailable, shard_id, format!("shard {shard_id}: {e}"))),
        }
    }

    /// The ledger's view of a shard's applied state on this replica.
    pub fn store(&self, shard: ShardId) -> ShardStore<'_> {
        ShardStore::live(&self.db, shard)
    }

    /// Hands leadership of `shard` (led here) to `to`, and waits until `to` leads or the time
    /// runs out, so callers know the move happened.
    pub async fn transfer_leader(&self, shard_id: ShardId, to: NodeId) -> Result<(), HostError> {
        let replica = self.replica(shard_id)?;
        if !self.is_leader(&replica) {
            return Err(self.not_leader(&replica, None));
        }
        replica.raft.trigger().transfer_leader(to).await.map_err(|e| HostError::new(ErrorKind::Internal, shard_id, e.to_string()))?;
        let deadline = tokio::time::Instant::now() + TRANSFER_TIMEOUT;
        let mut rx = replica.raft.metrics();
        loop {
            if rx.borrow_watched().current_leader == Some(to) {
                tracing::info!(shard = shard_id, to, "leadership transferred");
                metrics::counter!(crate::metrics::LEADER_TRANSFERS).increment(1);
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                // The replica's Raft stopped (the node is shutting down): waiting on would spin on
                // a closed channel until the deadline (hongbao-sim found it, #31).
                Ok(Err(_)) => return Err(HostError::unavailable(shard_id, format!("shard {shard_id}: raft stopped during the transfer"))),
                Err(_) => {
                    let msg = format!("shard {shard_id}: node {to} did not take over in {TRANSFER_TIMEOUT:?}");
                    return Err(HostError::new(ErrorKind::Timeout, shard_id, msg));
                }
            }
        }
    }

    /// `shard`'s replica caught up after an empty start: it votes again, across restarts too.
    pub fn rejoined(&self, shard: ShardId) {
        let mut b = self.db.batch();
        b.delete(&crate::storage::keys::rejoining(shard));
        if let Err(e) = self.db.write_synced(b) {
            // The replica stays a non-voter after its next restart, until it catches up again.
            tracing::error!(shard, error = %e, "could not record that the replica caught up");
        }
    }

    pub async fn shutdown(&self) {
        for r in self.replica_list() {
            if let Err(e) = r.raft.shutdown().await {
                tracing::warn!(shard = r.id, "raft shutdown: {e}");
            }
        }
    }
}

/// A fresh shard is initialized by its replica in the home region (else its first replica),
/// with every replica as a voter. A replica that has a vote or log already never re-initializes.
/// One that starts empty while a peer has the shard's history (a lost or wiped disk) rejoins
/// instead (`rejoin`): it must not start a second history nor vote before it caught up.
async fn bootstrap_if_new(
    raft: &Raft,
    topology: &Topology,
    s: &hongbao_topology::Shard,
    node_id: NodeId,
    peers: &Peers,
    rejoin: &Rejoin,
    may_bootstrap: bool,
) -> anyhow::Result<()> {
    if raft.is_initialized().await? {
        return Ok(());
    }
    let bootstrapper = s.replicas.iter().copied().find(|r| topology.region_of(*r) == Some(s.home.as_str())).unwrap_or(s.replicas[0]);
    if !may_bootstrap || bootstrapper != node_id || peers_have_history(peers, s, node_id).await {
        // Every non-bootstrapper starts empty in a new cluster too: `rejoin` still lets it vote
        // for the bootstrapper's first election (an empty log), so nothing waits on it.
        rejoin.start(s.id);
        raft.runtime_config().elect(false);
        return Ok(());
    }
    let members: BTreeMap<NodeId, BasicNode> =
        s.replicas.iter().map(|r| (*r, BasicNode::new(topology.node(*r).expect("validated").addr.clone()))).collect();
    tracing::info!(shard = s.id, ?members, "bootstrapping shard");
    raft.initialize(members).await?;
    Ok(())
}

/// Whether any other replica of the shard answers with a log: then the shard exists and an
/// empty replica here lost its data. Peers that do not answer in time say nothing (a new
/// cluster's nodes start together).
async fn peers_have_history(peers: &Peers, s: &hongbao_topology::Shard, node_id: NodeId) -> bool {
    let probes = s.replicas.iter().copied().filter(|r| *r != node_id).map(|r| async move {
        let st = peers.status(r, Duration::from_millis(500)).await;
        st.is_some_and(|st| st.nodes.iter().flat_map(|n| n.shards.iter()).any(|x| x.shard == s.id && x.last_log_index > 0))
    });
    futures::future::join_all(probes).await.into_iter().any(|h| h)
}

/// A request id for a system command, derived from what it does (these commands are idempotent
/// by their own sequence numbers / state, so the id only has to be well-formed and stable).
pub fn system_id(tag: u8, shard: ShardId, a: u64, b: u64) -> RequestId {
    let mut id = [0u8; 16];
    id[0] = 0xff;
    id[1] = tag;
    id[2..4].copy_from_slice(&(shard as u16).to_be_bytes());
    id[4..10].copy_from_slice(&a.to_be_bytes()[2..]);
    id[10..16].copy_from_slice(&b.to_be_bytes()[2..]);
    RequestId(id)
}
