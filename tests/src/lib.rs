//! Test harness: real `hongbao-node` and `hongbao-router` processes, each with its own RocksDB,
//! talking real gRPC over mutual TLS (a development CA made per cluster in `<dir>/security`).
//! One `Cluster`, run by a backend (`backend`: processes on loopback, the same in network
//! namespaces, or containers), and the helpers every test shares: `grpc` (raw channels),
//! `scrape` (metrics endpoints), `poll` (`eventually!`). Used by the tests in `tests/`.

use backend::process::Processes;
use backend::Backend;
use hongbao_auth::{Role, SecurityDir};
use hongbao_client::{Client, Credentials, PacketRef};
use hongbao_topology::Topology;
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

// First: `eventually!` is used by the modules below.
#[macro_use]
pub mod poll;
pub mod backend;
pub mod chaos;
pub mod grpc;
pub mod scrape;
mod topology;

/// The container backend keeps its old path: `hongbao_tests::containers::build_image`.
pub use backend::containers;

/// The payment PIN and device every test user is given by `Cluster::funded`.
pub const TEST_PIN: &str = "246810";
pub const TEST_DEVICE: &str = "test-phone";
/// The router name on the harness's own certificate (`Cluster::node_credentials`).
pub const HARNESS_ROUTER: &str = "test-harness";

/// Where cargo put the binaries: beside this executable (`hongbao-chaos` in
/// `<target>/release/`) or one level up (test executables live in `<target>/release/deps/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let here = exe.parent().expect("executable dir");
    let p = [here.join(name), here.parent().map(|d| d.join(name)).unwrap_or_default()]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} not built next to {}; run scripts/test (it builds every binary first)", exe.display()));
    p
}

/// The repository's root folder (scripts, deploy files, examples).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the repository").to_path_buf()
}

/// Hands out ports the OS reports free. Every listener is held until the cluster has all its
/// ports, so no two processes of one cluster are given the same port (a port released at once
/// could be handed out again by the next bind: a router once got a node's port).
pub(crate) struct Ports(pub(crate) Vec<TcpListener>);

impl Ports {
    pub(crate) fn next(&mut self) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().expect("addr").port();
        self.0.push(l);
        port
    }
}

/// `n` distinct loopback ports the OS reports free (each held until all are chosen).
pub fn free_ports(n: usize) -> Vec<u16> {
    let mut ports = Ports(vec![]);
    (0..n).map(|_| ports.next()).collect()
}

/// The standard OTLP endpoint variable nodes and routers read (`--otlp-endpoint`).
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

pub struct Spec {
    pub regions: Vec<&'static str>,
    pub nodes_per_region: usize,
    pub routers: bool,
    pub packet_ttl_ms: Option<u64>,
    /// How long settled packets stay hot before the archive (None: the ledger's default).
    pub packet_retention_ms: Option<u64>,
    /// Raft: take a snapshot every this many entries (small in tests to exercise snapshots).
    pub snapshot_every: u64,
    pub keep_behind_snapshot: u64,
    /// Simulated one-way WAN latency between every pair of regions (0 = none).
    pub wan_latency_ms: u64,
    /// Routers' --max-inflight-per-shard (None: their default).
    pub router_max_inflight: Option<usize>,
    /// The node binary to run (None: the one built beside the tests).
    pub node_binary: Option<PathBuf>,
    /// Environment for every node and router (e.g. `OTEL_EXPORTER_OTLP_ENDPOINT`). Without it
    /// in here, that variable is removed, so a developer's shell never exports a test's spans.
    pub env: Vec<(&'static str, String)>,
    /// The topology says `development = true` (routers accept tokens of the dev key, which the
    /// harness and its clients mint). Every test cluster is one, but for tests of a production
    /// topology's refusals.
    pub development: bool,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            regions: vec!["shenzhen", "shanghai", "tianjin"],
            nodes_per_region: 1,
            routers: false,
            packet_ttl_ms: None,
            packet_retention_ms: None,
            snapshot_every: 20_000,
            keep_behind_snapshot: 5_000,
            wan_latency_ms: 0,
            router_max_inflight: None,
            node_binary: None,
            env: Vec::new(),
            development: true,
        }
    }
}

pub struct Cluster {
    /// What runs the processes; declared before `dir` so that they end before it is deleted.
    backend: Box<dyn Backend>,
    pub dir: tempfile::TempDir,
    pub topology_path: PathBuf,
    pub topology: Topology,
    /// Nodes the cluster map no longer names (removed online), still addressable here.
    gone: BTreeMap<u64, hongbao_topology::Node>,
    /// The highest map version a membership command said it made (`sync_map` waits for it).
    made_version: std::sync::atomic::AtomicU64,
}

impl Cluster {
    /// Writes a topology (3 shards, one homed per region, one replica per region) on free
    /// loopback ports and starts every node (and router) as a process.
    pub fn start(spec: Spec) -> Cluster {
        let dir = tempfile::Builder::new().prefix("hongbao-test-").tempdir().expect("temp dir");
        let ports = std::cell::RefCell::new(Ports(vec![]));
        let addr = || format!("127.0.0.1:{}", ports.borrow_mut().next());
        let t = topology::topology_toml(&spec, &mut |_| (addr(), addr()), &mut |_, _| (addr(), addr()));
        let (topology_path, topology) = topology::write_with_pki(dir.path(), &t);
        drop(ports); // release them for the processes
        let node_binary = spec.node_binary.unwrap_or_else(|| bin("hongbao-node"));
        let processes = Processes::new(dir.path(), node_binary, spec.env, spec.router_max_inflight);
        Cluster::launch(dir, topology_path, topology, processes)
    }

    /// A cluster of `backend` in `dir`, with nothing started.
    pub(crate) fn new(dir: tempfile::TempDir, topology_path: PathBuf, topology: Topology, backend: Box<dyn Backend>) -> Cluster {
        Cluster { backend, dir, topology_path, topology, gone: BTreeMap::new(), made_version: Default::default() }
    }

    /// A cluster of `processes`, every node and router of `topology` started.
    pub(crate) fn launch(dir: tempfile::TempDir, topology_path: PathBuf, topology: Topology, processes: Processes) -> Cluster {
        let mut c = Cluster::new(dir, topology_path, topology, Box::new(processes));
        for id in c.topology.nodes.iter().map(|n| n.id).collect::<Vec<_>>() {
            c.start_node(id);
        }
        for r in c.topology.routers.iter().map(|r| r.region.clone()).collect::<Vec<_>>() {
            c.start_router(&r);
        }
        c
    }

    /// The processes backend, for what only processes can do; panics naming `what` otherwise.
    fn processes(&mut self, what: &str) -> &mut Processes {
        self.backend.as_processes().unwrap_or_else(|| panic!("{what}: only for a cluster of processes"))
    }

    /// The containers backend; panics on a cluster of processes.
    pub(crate) fn containers(&self) -> &backend::containers::Containers {
        self.backend.as_containers().expect("a cluster of containers")
    }

    pub(crate) fn containers_mut(&mut self) -> &mut backend::containers::Containers {
        self.backend.as_containers_mut().expect("a cluster of containers")
    }

    pub fn is_containers(&self) -> bool {
        self.backend.as_containers().is_some()
    }

    pub fn start_node(&mut self, id: u64) {
        self.backend.start_node(id);
    }

    pub fn start_router(&mut self, region: &str) {
        self.backend.start_router(region);
    }

    /// kill -9: no chance to flush anything that was not already synced.
    pub fn kill(&mut self, id: u64) {
        self.backend.kill_node(id);
    }

    /// Sends a signal to a region's router (e.g. HUP: re-read the trusted token keys); panics
    /// when it could not be delivered.
    pub fn signal_router(&self, region: &str, sig: &str) {
        self.backend.signal_router(region, sig);
    }

    pub fn kill_router(&mut self, region: &str) {
        self.backend.kill_router(region);
    }

    /// kill -9 of every node (and the router) of a region: a data center lost.
    pub fn kill_region(&mut self, region: &str) {
        let nodes = self.nodes_in(region);
        self.backend.kill_region(region, &nodes);
    }

    pub fn start_region(&mut self, region: &str) {
        let nodes = self.nodes_in(region);
        let router = self.topology.routers.iter().any(|r| r.region == region);
        self.backend.start_region(region, &nodes, router);
    }

    /// SIGTERM and wait: a graceful stop, as in a rolling restart.
    pub fn stop(&mut self, id: u64) {
        self.backend.stop_node(id);
    }

    pub fn node_addr(&self, id: u64) -> String {
        self.topology.node(id).or_else(|| self.gone.get(&id)).map(|n| n.addr.clone()).unwrap_or_default()
    }

    /// Replaces the injected faults of one node (see `hongbao-node`'s faults module).
    pub async fn set_faults(&self, id: u64, faults: hongbao_proto::v1::Faults) -> Result<(), String> {
        // FaultInjection (test builds only) is the admin identity's alone, never a router's.
        let admin = self.credentials().only(Role::Admin);
        let c = Client::new(self.topology.nodes.iter().map(|n| n.addr.clone()).collect(), Arc::new(admin));
        c.set_faults_of(&self.node_addr(id), faults).await.map(|_| ()).map_err(|e| format!("node {id}: {e}"))
    }

    pub fn restart(&mut self, id: u64) {
        self.kill(id);
        self.start_node(id);
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.backend.is_running(id)
    }

    /// Sends `sig` (e.g. STOP, CONT, TERM) to a running node; panics when it could not be
    /// delivered, so a test never goes on believing a node paused that was not.
    pub fn signal(&self, id: u64, sig: &str) {
        self.backend.signal_node(id, sig);
    }

    pub fn nodes_in(&self, region: &str) -> Vec<u64> {
        self.topology.nodes_in(region).iter().map(|n| n.id).collect()
    }

    /// Every running process: (`node-<id>` or `router-<region>`, pid).
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.backend.pids()
    }

    /// The cluster's security folder: CA, every identity's certificate, dev keys.
    pub fn security_dir(&self) -> PathBuf {
        self.dir.path().join("security")
    }

    /// Every role's certificate and tokens minted with the development key.
    pub fn credentials(&self) -> Credentials {
        Credentials::dev(&self.security_dir()).expect("the cluster's security folder loads")
    }

    /// The identity the harness shows a node: a router's (nodes serve their public API to
    /// routers only, the admin identity included). The harness holds the cluster's CA, so it may
    /// stand in for a router; its certificate names `spiffe://hongbao/router/test-harness` and is
    /// issued on first use.
    pub fn harness_identity(&self) -> hongbao_auth::Identity {
        static ISSUE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = ISSUE.lock().unwrap_or_else(|e| e.into_inner());
        let id = hongbao_auth::Identity::Router(HARNESS_ROUTER.into());
        hongbao_auth::ensure_identity(&SecurityDir::new(self.security_dir()), &id).expect("the harness's router certificate");
        id
    }

    /// Credentials for calls straight at nodes: the harness's router certificate, every call
    /// made as admin would be (no user tokens, any wallet).
    pub fn node_credentials(&self) -> Credentials {
        self.credentials().only(Role::Admin).presenting(&self.harness_identity()).expect("the harness's router certificate loads")
    }

    /// A client that talks straight to the nodes (follows NotLeader hints), as a router would
    /// (`node_credentials`).
    pub fn node_client(&self) -> Client {
        Client::new(self.topology.nodes.iter().map(|n| n.addr.clone()).collect(), Arc::new(self.node_credentials()))
    }

    /// A client that talks to the routers, home region first, as a service would: each call
    /// with its role's certificate, user calls with the user's token.
    pub fn router_client(&self, home: &str) -> Client {
        let mut r: Vec<_> = self.topology.routers.iter().collect();
        r.sort_by_key(|x| x.region != home);
        Client::new(r.iter().map(|x| x.addr.clone()).collect(), Arc::new(self.credentials()))
    }

    /// Waits until every shard has a leader that answers a linearizable read and no running
    /// replica is still catching up after an empty start.
    pub async fn wait_ready(&self, timeout: Duration) {
        let c = self.node_client().with_deadline(Duration::from_secs(2));
        let ready = eventually!(timeout, {
            let mut ok = true;
            for s in &self.topology.shards {
                let user = self.topology.user_in_shard(s.id, 1);
                // UnknownUser is an answer: the leader read its state.
                ok &= c.balance(user).await.err().is_none_or(|e| e.code() == hongbao_proto::ErrorCode::UnknownUser);
            }
            // Every running replica has caught up after its empty start: until then it votes for
            // no candidate with history, so a test that kills a leader sooner could leave a shard
            // with no electable majority (a fresh cluster's followers start empty too).
            ok && c.status().await.is_ok_and(|st| st.nodes.iter().filter(|n| n.up).flat_map(|n| n.shards.iter()).all(|s| !s.catching_up))
        });
        assert!(ready, "cluster not ready after {timeout:?}; logs in {}", self.dir.path().display());
    }

    /// Who leads each shard right now, from any node that answers; panics when none answers, so
    /// that a test asserting "no leader" never passes on an error (`try_leaders` to handle it).
    pub async fn leaders(&self) -> BTreeMap<u32, u64> {
        self.try_leaders().await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Who leads each shard right now, from any node that answers; Err when none answers.
    pub async fn try_leaders(&self) -> Result<BTreeMap<u32, u64>, String> {
        let c = self.node_client().with_deadline(Duration::from_secs(3));
        let st = c.status().await.map_err(|e| format!("no node answered a status call: {e}"))?;
        Ok(self.topology.shards.iter().filter_map(|s| Some((s.id, st.leader_of(s.id)?.node))).collect())
    }

    /// Opens `user`'s wallet, sets the test PIN and tops it up with `cents` (0: no top-up).
    pub async fn funded(&self, c: &Client, user: u64, cents: u64) {
        c.open_account(user, TEST_DEVICE).await.unwrap_or_else(|e| panic!("open {user}: {e}"));
        c.set_pin(hongbao_client::new_request_id(), user, TEST_PIN).await.unwrap_or_else(|e| panic!("set pin of {user}: {e}"));
        if cents > 0 {
            c.top_up(hongbao_client::new_request_id(), user, cents).await.unwrap_or_else(|e| panic!("top up {user}: {e}"));
        }
    }

    /// Through `client`: `sender` given `funds` cents (`funded`), `grabber`'s wallet opened, and
    /// a lucky packet of `total_cents` in two shares sent by `sender`; the packet.
    pub async fn packet_to_grab(&self, client: &Client, sender: u64, grabber: u64, funds: u64, total_cents: u64) -> PacketRef {
        self.funded(client, sender, funds).await;
        client.open_account(grabber, TEST_DEVICE).await.unwrap_or_else(|e| panic!("open {grabber}: {e}"));
        PacketRef::from(
            &client.send_packet(lucky_packet(sender, total_cents, 2)).await.unwrap_or_else(|e| panic!("send a packet from {sender}: {e}")),
        )
    }

    /// `start`, then `wait_ready(within)`: a cluster every shard of which is led and caught up.
    pub async fn ready(spec: Spec, within: Duration) -> Cluster {
        let c = Cluster::start(spec);
        c.wait_ready(within).await;
        c
    }

    /// A user of `shard` (the first at or after `from`), with a wallet, the test PIN and `cents`.
    pub async fn funded_user(&self, client: &Client, shard: u32, from: u64, cents: u64) -> u64 {
        let user = self.topology.user_in_shard(shard, from);
        self.funded(client, user, cents).await;
        user
    }

    /// Keep the temp dir (logs, data) for a failed test to be inspected.
    pub fn keep_on_failure(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// A node's data directory (its RocksDB and `snapshots/`).
    pub fn node_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    /// Deletes a stopped node's whole data directory: the disk lost.
    pub fn wipe_node(&mut self, id: u64) {
        self.processes("wipe_node (a container's data is in its volume)").wipe_node(id);
    }

    /// How this cluster's metrics endpoints are reached: HTTPS with the cluster's CA when its
    /// processes serve TLS (`scrape::TLS_ENV` in the spec's env; always in containers), with the
    /// bearer token of the credential file they were given.
    pub fn scraper(&self) -> scrape::Scraper {
        let access = self.backend.metrics_access();
        let scraper = if access.tls { scrape::Scraper::tls(&self.security_dir().join("ca.crt")) } else { scrape::Scraper::plain() };
        match access.token_file {
            Some(f) => {
                let token = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("metrics credential {}: {e}", f.display()));
                scraper.with_token(token.trim())
            }
            None => scraper,
        }
    }

    /// The sum of every series of a Prometheus metric on a node's metrics endpoint (0 when the
    /// node answers without it; None when it does not answer).
    pub async fn node_metric(&self, id: u64, name: &str) -> Option<f64> {
        let addr = self.topology.node(id).or_else(|| self.gone.get(&id))?.metrics_addr.clone();
        self.metric(&addr, name, "").await
    }

    /// The sum of every series of `name` whose line contains `label` ("": every series) on the
    /// metrics endpoint at `addr` (0 when it answers without one; None when it does not answer).
    pub async fn metric(&self, addr: &str, name: &str, label: &str) -> Option<f64> {
        Some(scrape::sum(&self.scraper().metrics(addr).await?, name, label))
    }

    /// One user's balance read from node `id`'s own replica; None when it does not answer.
    pub async fn stale_balance(&self, id: u64, user: u64) -> Option<u64> {
        self.stale_balances(id, &[user]).await.ok()?.get(&user).copied()
    }

    /// Balances read from one node's own replicas (allow_stale: no leader involved), as admin.
    pub async fn stale_balances(&self, id: u64, users: &[u64]) -> Result<BTreeMap<u64, u64>, String> {
        use hongbao_proto::v1::{wallet_client::WalletClient, BalanceRequest};
        let ch = self.node_channel(id);
        let mut out = BTreeMap::new();
        for &u in users {
            let mut w = WalletClient::new(ch.clone());
            let r =
                tokio::time::timeout(Duration::from_secs(2), w.balance(BalanceRequest { user: u, allow_stale: true, token_issued_s: 0 }))
                    .await
                    .map_err(|_| format!("node {id}: balance of {u} timed out"))?
                    .map_err(|s| format!("node {id}: balance of {u}: {}", s.message()))?;
            out.insert(u, r.into_inner().balance_cents);
        }
        Ok(out)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.backend.shutdown();
        if std::thread::panicking() {
            let kept = self.dir.path().to_path_buf();
            // Leak the temp dir so its logs survive for the failure report.
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
            let _ = dir.keep();
            eprintln!("cluster logs kept in {}", kept.display());
            for entry in std::fs::read_dir(&kept).into_iter().flatten().flatten() {
                let p = entry.path();
                if p.extension().map(|e| e == "log").unwrap_or(false) {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(30).collect();
                    eprintln!("--- tail of {} ---", p.display());
                    for l in tail.iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
    }
}

impl Cluster {
    /// Starts node `id` on the topology file at `topology` instead of the cluster's own.
    pub fn start_node_on(&mut self, id: u64, topology: &Path) {
        self.processes("start_node_on (a container's topology is the compose deployment's)").start_node_on(id, topology);
    }

    /// kill -9 of node `id`, then a start on a copy of the topology whose `[ledger]` section also
    /// has `line` (e.g. `packet_ttl_ms = 1000`): one node given a config the others lack. The
    /// cluster's own `[ledger]` must not set that key already.
    pub fn restart_with_ledger_line(&mut self, id: u64, line: &str) {
        let t = std::fs::read_to_string(&self.topology_path).expect("read topology");
        assert!(t.contains("[ledger]\n"), "topology has a [ledger] section");
        let t = t.replacen("[ledger]\n", &format!("[ledger]\n{line}\n"), 1);
        let path = self.dir.path().join(format!("topology-node-{id}.toml"));
        std::fs::write(&path, t).expect("write topology");
        self.kill(id);
        self.start_node_on(id, &path);
    }

    /// The text node `id` has logged so far.
    pub fn node_log(&self, id: u64) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{id}.log"))).unwrap_or_default()
    }
}

/// Asserts that a run of `hongbao demo` (on `what`) passed and did what it says: a region
/// killed (`killed` is how its output says so), the late grabbers served while it was down, the
/// audit balanced. Prints the demo's output first.
pub fn assert_demo_passed(out: &std::process::Output, what: &str, killed: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "hongbao demo on {what} failed: {}", out.status);
    assert!(stdout.contains(killed), "no region was killed ({killed:?})");
    assert!(stdout.matches("after the region died").count() >= 3, "late grabbers were not all served");
    assert!(stdout.contains("BALANCED"), "the audit did not balance");
}

/// A lucky packet of `total_cents` in `count` shares from `sender`, from the test device with
/// the test PIN, under a new request id.
pub fn lucky_packet(sender: u64, total_cents: u64, count: u32) -> hongbao_proto::v1::SendPacketRequest {
    hongbao_proto::v1::SendPacketRequest {
        request_id: hongbao_client::new_request_id(),
        sender,
        kind: hongbao_proto::v1::PacketKind::Lucky as i32,
        total_cents,
        count,
        device: TEST_DEVICE.into(),
        pin: TEST_PIN.into(),
        ..Default::default()
    }
}

/// One run of the `hongbao` CLI.
pub struct CliOut {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Online membership (`hongbao cluster add-node / remove-node / replace-node`), as an operator
/// runs it: the CLI through the routers, with the admin's certificate.
impl Cluster {
    /// Ports and a certificate from the cluster's CA for node `id` in `region`, to be added
    /// online. It is in no topology file: started (`start_node`), it waits until
    /// `hongbao cluster add-node` puts it in the cluster map.
    pub fn prepare_node(&mut self, id: u64, region: &str) -> hongbao_topology::NodeSpec {
        let mut ports = Ports(vec![]);
        let spec = hongbao_topology::NodeSpec {
            id,
            region: region.to_string(),
            addr: format!("127.0.0.1:{}", ports.next()),
            metrics_addr: format!("127.0.0.1:{}", ports.next()),
        };
        let with = self.topology.add_node(&spec).unwrap_or_else(|e| panic!("node {id} cannot be added: {e:?}"));
        hongbao_auth::ensure_dev_pki(&SecurityDir::new(self.security_dir()), &with).expect("a certificate for the new node");
        self.topology.nodes.push(with.node(id).expect("just added").clone());
        spec
    }

    /// Runs `hongbao ARGS` against this cluster (its folder as `HONGBAO_HOME`: routers, admin).
    pub fn cli(&self, args: &[&str]) -> CliOut {
        let out = Command::new(bin("hongbao"))
            .args(args)
            .env("HONGBAO_HOME", self.dir.path())
            .env_remove("HONGBAO_SECURITY_DIR")
            .current_dir(self.dir.path())
            .output()
            .expect("run hongbao");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        CliOut { code: out.status.code().unwrap_or(-1), stdout: text(&out.stdout), stderr: text(&out.stderr) }
    }

    /// `hongbao ARGS` started in the background (output piped): the change runs while the
    /// caller injects faults.
    pub fn cli_spawn(&self, args: &[&str]) -> std::process::Child {
        Command::new(bin("hongbao"))
            .args(args)
            .env("HONGBAO_HOME", self.dir.path())
            .env_remove("HONGBAO_SECURITY_DIR")
            .current_dir(self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run hongbao")
    }

    /// An id no node of this cluster has had.
    pub fn next_node_id(&self) -> u64 {
        self.topology.nodes.iter().map(|n| n.id).chain(self.gone.keys().copied()).max().unwrap_or(0) + 1
    }

    /// `hongbao ARGS`, which must exit 0.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert_eq!(out.code, 0, "hongbao {}: exit {}\nstdout: {}\nstderr: {}", args.join(" "), out.code, out.stdout, out.stderr);
        self.saw_versions(&out.stdout);
        out.stdout
    }

    /// Notes the map versions a membership command's progress lines name ("(version N)"), so
    /// that `sync_map` reads a map at least that new.
    pub fn saw_versions(&self, progress: &str) {
        let newest = progress.split("(version ").skip(1).filter_map(|s| s.split(')').next()?.parse::<u64>().ok()).max();
        if let Some(v) = newest {
            self.made_version.fetch_max(v, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The cluster map the nodes serve (`hongbao cluster map --json`); the harness's view of the
    /// cluster (`topology`) becomes it, and so does the topology file every later (re)start
    /// reads, as an operator would save it (`hongbao cluster map > topology.toml`): a node
    /// starting asks the nodes its file names for the newest map, and after enough replacements
    /// none of the first file's nodes is left. Nodes the map does not name (removed, or prepared
    /// and not added yet) stay addressable (`gone`).
    pub fn sync_map(&mut self) -> Topology {
        let want = self.made_version.load(std::sync::atomic::Ordering::Relaxed);
        let mut t = self.topology.clone();
        let served = poll::until(Duration::from_secs(10), || {
            let out = self.cli_ok(&["--json", "cluster", "map"]);
            let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("cluster map --json: {e}: {out}"));
            t = Topology::parse(v["toml"].as_str().expect("the map's toml")).expect("the served map validates");
            t.version >= want
        });
        assert!(served, "the served map stays at version {} < {want}", t.version);
        for n in &self.topology.nodes {
            if t.node(n.id).is_none() {
                self.gone.insert(n.id, n.clone());
            }
        }
        // Whole or not at all (a write and a rename): a node starting meanwhile reads the file.
        let tmp = self.topology_path.with_extension("toml.new");
        std::fs::write(&tmp, t.to_toml()).expect("write the topology file");
        std::fs::rename(&tmp, &self.topology_path).expect("replace the topology file");
        self.topology = t.clone();
        t
    }
}
