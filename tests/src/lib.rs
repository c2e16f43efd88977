//! Test harness: real `hongbao-node` and `hongbao-router` processes on loopback, each with its
//! own RocksDB in a temp dir, talking real gRPC over mutual TLS (a development CA made per
//! cluster in `<dir>/security`). Used by the multi-process tests in `tests/`.

use hongbao_auth::{Role, SecurityDir};
use hongbao_client::{Client, Credentials};
use hongbao_topology::Topology;
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod chaos;
pub mod containers;
pub mod scrape;

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

/// Hands out ports the OS reports free. Every listener is held until the cluster has all its
/// ports, so no two processes of one cluster are given the same port (a port released at once
/// could be handed out again by the next bind: a router once got a node's port).
struct Ports(Vec<TcpListener>);

impl Ports {
    fn next(&mut self) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().expect("addr").port();
        self.0.push(l);
        port
    }
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

/// The topology of a `Spec`: 3 shards (one homed per region, one replica per region), the
/// ledger and Raft settings, WAN latency as `links`. `node(id)` and `router(i, region)` give each
/// process's (addr, metrics_addr).
fn topology_toml(
    spec: &Spec,
    node: &mut dyn FnMut(u64) -> (String, String),
    router: &mut dyn FnMut(usize, &str) -> (String, String),
) -> String {
    let mut t = String::from("slots = 100\n");
    if spec.development {
        t += "development = true\n";
    }
    t += &format!("regions = [{}]\n", spec.regions.iter().map(|r| format!("{{ name = \"{r}\" }}")).collect::<Vec<_>>().join(", "));
    t += "nodes = [\n";
    let mut id = 0u64;
    let mut by_region: Vec<Vec<u64>> = vec![];
    for r in &spec.regions {
        let mut ids = vec![];
        for _ in 0..spec.nodes_per_region {
            id += 1;
            let (a, m) = node(id);
            t += &format!("  {{ id = {id}, region = \"{r}\", addr = \"{a}\", metrics_addr = \"{m}\" }},\n");
            ids.push(id);
        }
        by_region.push(ids);
    }
    t += "]\n";
    if spec.routers {
        t += "routers = [\n";
        for (i, r) in spec.regions.iter().enumerate() {
            let (a, m) = router(i, r);
            t += &format!("  {{ region = \"{r}\", addr = \"{a}\", metrics_addr = \"{m}\" }},\n");
        }
        t += "]\n";
    }
    if spec.wan_latency_ms > 0 {
        t += "links = [\n";
        for (i, a) in spec.regions.iter().enumerate() {
            for b in &spec.regions[i + 1..] {
                t += &format!("  {{ a = \"{a}\", b = \"{b}\", latency_ms = {} }},\n", spec.wan_latency_ms);
            }
        }
        t += "]\n";
    }
    let n = spec.regions.len() as u32;
    for (i, r) in spec.regions.iter().enumerate() {
        let i32_ = i as u32;
        let from = i32_ * 100 / n;
        let to = (i32_ + 1) * 100 / n;
        // One replica per region: the k-th node of each region for shard k (mod nodes).
        let reps: Vec<String> = by_region.iter().map(|ids| ids[i % ids.len()].to_string()).collect();
        t += &format!("[[shards]]\nid = {}\nhome = \"{r}\"\nreplicas = [{}]\nslots = [[{from}, {to}]]\n", i + 1, reps.join(", "));
    }
    t += "[ledger]\n";
    if let Some(ttl) = spec.packet_ttl_ms {
        t += &format!("packet_ttl_ms = {ttl}\n");
    }
    if let Some(r) = spec.packet_retention_ms {
        t += &format!("packet_retention_ms = {r}\n");
    }
    t += &format!("[raft]\nsnapshot_every = {}\nkeep_behind_snapshot = {}\n", spec.snapshot_every, spec.keep_behind_snapshot);
    t
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub topology_path: PathBuf,
    pub topology: Topology,
    nodes: BTreeMap<u64, Child>,
    routers: BTreeMap<String, Child>,
    router_max_inflight: Option<usize>,
    node_binary: PathBuf,
    env: Vec<(&'static str, String)>,
    /// Set when the processes are containers (`Cluster::start_containers`).
    containers: Option<containers::Containers>,
    /// Nodes the cluster map no longer names (removed online), still addressable here.
    gone: BTreeMap<u64, hongbao_topology::Node>,
    /// The highest map version a membership command said it made (`sync_map` waits for it).
    made_version: std::sync::atomic::AtomicU64,
}

impl Cluster {
    /// Writes a topology (3 shards, one homed per region, one replica per region) and starts
    /// every node (and router).
    pub fn start(spec: Spec) -> Cluster {
        let dir = tempfile::Builder::new().prefix("hongbao-test-").tempdir().expect("temp dir");
        let ports = std::cell::RefCell::new(Ports(vec![]));
        let addr = || format!("127.0.0.1:{}", ports.borrow_mut().next());
        let t = topology_toml(&spec, &mut |_| (addr(), addr()), &mut |_, _| (addr(), addr()));
        let topology = Topology::parse(&t).unwrap_or_else(|e| panic!("test topology invalid: {e}\n{t}"));
        let topology_path = dir.path().join("topology.toml");
        std::fs::write(&topology_path, &t).expect("write topology");
        hongbao_auth::ensure_dev_pki(&SecurityDir::new(dir.path().join("security")), &topology).expect("development CA and keys");
        drop(ports); // release them for the processes
        let mut c = Cluster {
            dir,
            topology_path,
            topology,
            nodes: BTreeMap::new(),
            routers: BTreeMap::new(),
            router_max_inflight: spec.router_max_inflight,
            node_binary: spec.node_binary.unwrap_or_else(|| bin("hongbao-node")),
            env: spec.env,
            containers: None,
            gone: BTreeMap::new(),
            made_version: Default::default(),
        };
        let ids: Vec<u64> = c.topology.nodes.iter().map(|n| n.id).collect();
        for id in ids {
            c.start_node(id);
        }
        let regions: Vec<String> = c.topology.routers.iter().map(|r| r.region.clone()).collect();
        for r in regions {
            c.start_router(&r);
        }
        c
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join(format!("{name}.log"))).expect("log file")
    }

    pub fn start_node(&mut self, id: u64) {
        if self.is_containers() {
            return self.container_start(id);
        }
        let topology = self.topology_path.clone();
        self.start_node_on(id, &topology);
    }

    pub fn start_router(&mut self, region: &str) {
        assert!(!self.is_containers(), "start_router: a router container starts with its region (start_region)");
        let mut cmd = Command::new(bin("hongbao-router"));
        cmd.env_remove(OTLP_ENDPOINT_ENV).envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(n) = self.router_max_inflight {
            cmd.arg("--max-inflight-per-shard").arg(n.to_string());
        }
        let child = cmd
            .arg("--topology")
            .arg(&self.topology_path)
            .arg("--region")
            .arg(region)
            .arg("--security-dir")
            .arg(self.security_dir())
            .stdout(Stdio::from(self.log(&format!("router-{region}"))))
            .stderr(Stdio::from(self.log(&format!("router-{region}"))))
            .spawn()
            .expect("start hongbao-router");
        self.routers.insert(region.to_string(), child);
    }

    /// kill -9: no chance to flush anything that was not already synced.
    pub fn kill(&mut self, id: u64) {
        if self.is_containers() {
            return self.container_kill(id);
        }
        if let Some(mut c) = self.nodes.remove(&id) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal to a region's router (e.g. HUP: re-read the trusted token keys).
    pub fn signal_router(&self, region: &str, sig: &str) {
        if let Some(c) = self.routers.get(region) {
            let _ = Command::new("kill").arg(format!("-{sig}")).arg(c.id().to_string()).status();
        }
    }

    pub fn kill_router(&mut self, region: &str) {
        assert!(!self.is_containers(), "kill_router: a router container is killed with its region (kill_region)");
        if let Some(mut c) = self.routers.remove(region) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// kill -9 of every node (and the router) of a region: a data center lost.
    pub fn kill_region(&mut self, region: &str) {
        if self.is_containers() {
            return self.container_kill_region(region);
        }
        for id in self.nodes_in(region) {
            self.kill(id);
        }
        self.kill_router(region);
    }

    pub fn start_region(&mut self, region: &str) {
        if self.is_containers() {
            return self.container_start_region(region);
        }
        for id in self.nodes_in(region) {
            if !self.is_running(id) {
                self.start_node(id);
            }
        }
        if self.topology.routers.iter().any(|r| r.region == region) && !self.routers.contains_key(region) {
            self.start_router(region);
        }
    }

    /// SIGTERM and wait: a graceful stop, as in a rolling restart.
    pub fn stop(&mut self, id: u64) {
        assert!(!self.is_containers(), "stop: not for containers (docker stop is not wired into the harness)");
        if let Some(mut c) = self.nodes.remove(&id) {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
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
        if self.is_containers() {
            return self.container_is_running(id);
        }
        self.nodes.contains_key(&id)
    }

    pub fn signal(&self, id: u64, sig: &str) {
        assert!(!self.is_containers(), "signal: not for containers");
        if let Some(c) = self.nodes.get(&id) {
            let _ = Command::new("kill").arg(format!("-{sig}")).arg(c.id().to_string()).status();
        }
    }

    pub fn nodes_in(&self, region: &str) -> Vec<u64> {
        self.topology.nodes_in(region).iter().map(|n| n.id).collect()
    }

    /// Every running process: (`node-<id>` or `router-<region>`, pid).
    pub fn pids(&self) -> Vec<(String, u32)> {
        let nodes = self.nodes.iter().map(|(id, c)| (format!("node-{id}"), c.id()));
        nodes.chain(self.routers.iter().map(|(r, c)| (format!("router-{r}"), c.id()))).collect()
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
        let start = Instant::now();
        loop {
            let mut ok = true;
            for s in &self.topology.shards {
                let user = self.topology.user_in_shard(s.id, 1);
                if c.balance(user)
                    .await
                    .map_err(|e| e.code())
                    .err()
                    .map(|code| code != hongbao_proto::ErrorCode::UnknownUser)
                    .unwrap_or(false)
                {
                    ok = false;
                }
            }
            // Every running replica has caught up after its empty start: until then it votes for
            // no candidate with history, so a test that kills a leader sooner could leave a shard
            // with no electable majority (a fresh cluster's followers start empty too).
            if ok {
                let st = c.status().await;
                ok = st.as_ref().is_ok_and(|st| st.nodes.iter().filter(|n| n.up).flat_map(|n| n.shards.iter()).all(|s| !s.catching_up));
            }
            if ok {
                return;
            }
            assert!(start.elapsed() < timeout, "cluster not ready after {timeout:?}; logs in {}", self.dir.path().display());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Who leads each shard right now (from any node that answers).
    pub async fn leaders(&self) -> BTreeMap<u32, u64> {
        let c = self.node_client().with_deadline(Duration::from_secs(3));
        let mut out = BTreeMap::new();
        if let Ok(st) = c.status().await {
            for s in &self.topology.shards {
                if let Some(l) = st.leader_of(s.id) {
                    out.insert(s.id, l.node);
                }
            }
        }
        out
    }

    /// Opens `user`'s wallet, sets the test PIN and tops it up with `cents` (0: no top-up).
    pub async fn funded(&self, c: &Client, user: u64, cents: u64) {
        c.open_account(user, TEST_DEVICE).await.unwrap_or_else(|e| panic!("open {user}: {e}"));
        c.set_pin(hongbao_client::new_request_id(), user, TEST_PIN).await.unwrap_or_else(|e| panic!("set pin of {user}: {e}"));
        if cents > 0 {
            c.top_up(hongbao_client::new_request_id(), user, cents).await.unwrap_or_else(|e| panic!("top up {user}: {e}"));
        }
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
        assert!(!self.is_containers(), "wipe_node: a container's data is in its volume");
        assert!(!self.is_running(id), "wipe_node: node {id} is still running");
        let dir = self.node_dir(id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("wipe {}: {e}", dir.display()));
        }
    }

    /// How this cluster's metrics endpoints are reached: HTTPS with the cluster's CA when its
    /// processes serve TLS (`scrape::TLS_ENV` in the spec's env; always in containers), with the
    /// bearer token of the credential file they were given.
    pub fn scraper(&self) -> scrape::Scraper {
        let env = |k: &str| self.env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        let (tls, token_file) = if self.is_containers() {
            (true, Some(self.security_dir().join(containers::METRICS_TOKEN)))
        } else {
            (
                env(scrape::TLS_ENV).is_some_and(|v| !matches!(v.as_str(), "" | "0" | "false")),
                env(scrape::CREDENTIAL_ENV).map(PathBuf::from),
            )
        };
        let scraper = if tls { scrape::Scraper::tls(&self.security_dir().join("ca.crt")) } else { scrape::Scraper::plain() };
        match token_file {
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
        let body = self.scraper().metrics(&addr).await?;
        let mut sum = 0.0;
        for l in body.lines() {
            if let Some(rest) = l.strip_prefix(name) {
                if rest.starts_with(' ') || rest.starts_with('{') {
                    sum += l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                }
            }
        }
        Some(sum)
    }

    /// Balances read from one node's own replicas (allow_stale: no leader involved), as admin.
    pub async fn stale_balances(&self, id: u64, users: &[u64]) -> Result<BTreeMap<u64, u64>, String> {
        use hongbao_proto::v1::{wallet_client::WalletClient, BalanceRequest};
        let creds = self.node_credentials();
        let (_, tls) = creds.tls(Role::Admin)?;
        let ch = tonic::transport::Endpoint::from_shared(format!("https://{}", self.node_addr(id)))
            .map_err(|e| e.to_string())?
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_millis(500))
            .connect_lazy();
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
        if self.is_containers() {
            if std::thread::panicking() {
                match self.save_container_logs() {
                    Some(p) => eprintln!("containers' logs kept in {}", p.display()),
                    None => eprintln!("could not save the containers' logs"),
                }
            }
            self.remove_containers();
            return;
        }
        for (_, mut c) in std::mem::take(&mut self.nodes) {
            let _ = Command::new("kill").arg("-CONT").arg(c.id().to_string()).status();
            let _ = c.kill();
            let _ = c.wait();
        }
        for (_, mut c) in std::mem::take(&mut self.routers) {
            let _ = c.kill();
            let _ = c.wait();
        }
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
    pub fn start_node_on(&mut self, id: u64, topology: &std::path::Path) {
        assert!(!self.is_containers(), "start_node_on: a container's topology is the compose deployment's");
        assert!(!self.nodes.contains_key(&id), "node {id} already running");
        let child = Command::new(&self.node_binary)
            .arg("--topology")
            .arg(topology)
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("node-{id}")))
            .arg("--security-dir")
            .arg(self.security_dir())
            .env("RUST_LOG", "info,openraft=warn")
            .env_remove(OTLP_ENDPOINT_ENV)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(self.log(&format!("node-{id}"))))
            .stderr(Stdio::from(self.log(&format!("node-{id}"))))
            .spawn()
            .expect("start hongbao-node");
        self.nodes.insert(id, child);
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
        let deadline = Instant::now() + Duration::from_secs(10);
        let t = loop {
            let out = self.cli_ok(&["--json", "cluster", "map"]);
            let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("cluster map --json: {e}: {out}"));
            let t = Topology::parse(v["toml"].as_str().expect("the map's toml")).expect("the served map validates");
            if t.version >= want {
                break t;
            }
            assert!(Instant::now() < deadline, "the served map stays at version {} < {want}", t.version);
            std::thread::sleep(Duration::from_millis(100));
        };
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
