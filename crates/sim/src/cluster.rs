//! The simulated cluster's nodes: each a real `Host` (its replicas, openraft, RocksDB, the
//! relay, sweeper, placement and slot-move tasks, checkpoints, map following) on its own
//! directory, its own drifting clock, and the simulated network. A crash stops every task and
//! drops the node's RocksDB without a flush, losing what a power cut would: the state written
//! since the last checkpoint (it never goes through the WAL); the Raft log, which does, survives.

use crate::net::Net;
use crate::trace::Trace;
use anyhow::Context;
use hongbao_node::clock::TimeSource;
use hongbao_node::host::{Host, NodeEnv, NodeSecrets};
use hongbao_node::leader::{self, Task};
use hongbao_node::transport::peers::Dial;
use hongbao_proto::v1::cluster_server::ClusterServer;
use hongbao_proto::v1::raft_transport_server::RaftTransportServer;
use hongbao_topology::{NodeId, Topology};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::task::JoinHandle;
use tonic::service::Routes;

/// Every simulated clock starts here (2027-01-15, as the ledger's tests do).
pub const EPOCH_MS: u64 = 1_800_000_000_000;
/// A crashed node's RocksDB must be closed within this much simulated time (every task holding
/// it has a timeout shorter than this).
const CLOSE_WITHIN: Duration = Duration::from_secs(120);

/// One node's wall clock: simulated time, scaled by its drift, plus its jumps.
pub struct SimClock {
    drift_ppm: i64,
    offset_ms: AtomicI64,
    start: tokio::time::Instant,
}

impl SimClock {
    pub fn new(drift_ppm: i64) -> Arc<SimClock> {
        Arc::new(SimClock { drift_ppm, offset_ms: AtomicI64::new(0), start: tokio::time::Instant::now() })
    }

    pub fn now_ms(&self) -> u64 {
        let elapsed = self.start.elapsed().as_millis() as i64;
        let drifted = elapsed + elapsed * self.drift_ppm / 1_000_000;
        (EPOCH_MS as i64 + drifted + self.offset_ms.load(Ordering::Relaxed)).max(0) as u64
    }

    /// The clock leaps by `ms` (either way), as an NTP step or a bad RTC does.
    pub fn jump(&self, ms: i64) {
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Set right again (an operator fixed it): itself a leap back, which the node notices.
    pub fn reset(&self) {
        self.offset_ms.store(0, Ordering::Relaxed);
    }
}

/// The hosts that are up, shared with the client tasks.
pub type Hosts = Arc<Mutex<BTreeMap<NodeId, Arc<Host>>>>;

struct Node {
    dir: PathBuf,
    clock: Arc<SimClock>,
    tasks: Vec<JoinHandle<()>>,
    /// The RocksDB of the last run, to know when a crash has closed it.
    db: Option<Weak<hongbao_node::storage::Db>>,
}

pub struct Cluster {
    pub topology: Topology,
    pub net: Arc<Net>,
    pub hosts: Hosts,
    nodes: BTreeMap<NodeId, Node>,
    trace: Arc<Trace>,
}

/// The node's gRPC services another node calls (Raft transport, cluster status and map), as the
/// node's server serves them; the link supplies the caller's identity.
fn routes(host: &Arc<Host>) -> Routes {
    let max = hongbao_node::limits::MAX_RAFT_MESSAGE;
    let raft = hongbao_node::transport::server::RaftService { host: host.clone() };
    Routes::new(RaftTransportServer::new(raft).max_decoding_message_size(max).max_encoding_message_size(max))
        .add_service(ClusterServer::new(hongbao_node::service::cluster::ClusterService { host: host.clone() }))
}

impl Cluster {
    /// Every node of `topology`, each with a clock drifting by `drift_ppm[i]`, started together.
    pub async fn start(topology: Topology, dir: &Path, net: Arc<Net>, trace: Arc<Trace>, drift_ppm: &[i64]) -> anyhow::Result<Cluster> {
        let mut nodes = BTreeMap::new();
        for (i, n) in topology.nodes.iter().enumerate() {
            let clock = SimClock::new(drift_ppm.get(i).copied().unwrap_or(0));
            nodes.insert(n.id, Node { dir: dir.join(format!("node-{}", n.id)), clock, tasks: Vec::new(), db: None });
        }
        let mut c = Cluster { topology, net, hosts: Arc::new(Mutex::new(BTreeMap::new())), nodes, trace };
        let ids: Vec<NodeId> = c.nodes.keys().copied().collect();
        let started = futures::future::join_all(ids.iter().map(|id| c.boot(*id))).await;
        for (id, host) in ids.into_iter().zip(started) {
            c.attach(id, host.with_context(|| format!("node {id} did not start"))?);
        }
        Ok(c)
    }

    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn up(&self) -> Vec<NodeId> {
        self.hosts.lock().expect("hosts lock").keys().copied().collect()
    }

    pub fn host(&self, id: NodeId) -> Option<Arc<Host>> {
        self.hosts.lock().expect("hosts lock").get(&id).cloned()
    }

    /// Whether node `id` is up but still catching up after starting with an empty disk: until
    /// it has, it holds no durable copy of its shards' history and gives no vote.
    pub fn rejoining(&self, id: NodeId) -> bool {
        self.host(id).is_some_and(|h| h.replica_list().iter().any(|r| h.rejoin.is_rejoining(r.id)))
    }

    pub fn clock(&self, id: NodeId) -> &SimClock {
        &self.nodes[&id].clock
    }

    async fn boot(&self, id: NodeId) -> anyhow::Result<Arc<Host>> {
        let node = &self.nodes[&id];
        let clock = node.clock.clone();
        let env = NodeEnv { time: TimeSource::Simulated(Arc::new(move || clock.now_ms())), close_as_crash: true };
        let net = self.net.clone();
        let secrets = NodeSecrets { dial: Dial::Simulated(Arc::new(move |from, to| net.link(from, to))), challenge_key: [0x5e; 32] };
        Host::start_in(self.topology.clone(), id, &node.dir, secrets, 1024, env).await
    }

    /// Starts the node's own tasks, as `main` does, and lets the others reach it.
    fn attach(&mut self, id: NodeId, host: Arc<Host>) {
        let stop = host.stop_signal();
        let node = self.nodes.get_mut(&id).expect("a node of the topology");
        node.db = Some(Arc::downgrade(&host.db));
        node.tasks = vec![
            hongbao_node::storage::checkpoint::spawn(host.db.clone(), id, host.clock.clone(), stop.clone()),
            tokio::spawn(hongbao_node::cluster::directory::follow(host.clone(), stop.clone())),
            tokio::spawn(leader::supervise(host.clone(), &Task::ALL, stop)),
        ];
        self.net.attach(id, routes(&host));
        self.hosts.lock().expect("hosts lock").insert(id, host);
    }

    /// Kills node `id`: no more messages in or out, every task stopped, Raft halted, and its
    /// RocksDB closed without a flush. Waits until nothing holds the RocksDB any more.
    pub async fn crash(&mut self, id: NodeId) -> anyhow::Result<()> {
        let Some(host) = self.hosts.lock().expect("hosts lock").remove(&id) else { return Ok(()) };
        self.net.detach(id);
        host.stop_tasks();
        host.shutdown().await;
        drop(host);
        let node = self.nodes.get_mut(&id).expect("a node of the topology");
        for t in node.tasks.drain(..) {
            t.abort();
        }
        let deadline = tokio::time::Instant::now() + CLOSE_WITHIN;
        while node.db.as_ref().is_some_and(|w| w.strong_count() > 0) {
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "node {id}'s RocksDB still open {CLOSE_WITHIN:?} after its crash");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.trace.note(format!("node {id} crashed"));
        Ok(())
    }

    /// The node's disk is lost and replaced by an empty one (it must be down).
    pub fn wipe(&mut self, id: NodeId) -> anyhow::Result<()> {
        anyhow::ensure!(self.host(id).is_none(), "node {id} is up: crash it first");
        let dir = &self.nodes[&id].dir;
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        self.trace.note(format!("node {id} disk replaced"));
        Ok(())
    }

    /// Starts node `id` again on what its disk kept.
    pub async fn restart(&mut self, id: NodeId) -> anyhow::Result<()> {
        anyhow::ensure!(self.host(id).is_none(), "node {id} is up already");
        let host = self.boot(id).await.with_context(|| format!("node {id} did not restart"))?;
        self.attach(id, host);
        self.trace.note(format!("node {id} restarted"));
        Ok(())
    }

    /// Stops every node (the end of a run), as crashes.
    pub async fn stop_all(&mut self) -> anyhow::Result<()> {
        for id in self.up() {
            self.crash(id).await?;
        }
        Ok(())
    }
}
