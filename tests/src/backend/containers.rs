//! Clusters of containers: the image of `scripts/image` and the compose deployment of
//! `deploy/compose`, started and driven through `scripts/cluster` (`up --containers`), so the
//! tests exercise exactly what an operator runs. A node kill is `docker kill`, a restart
//! `docker start`, and a region partition `docker network disconnect` of the region's
//! containers from its links to the other regions (reconnected to heal).
//!
//! The harness itself stays on the host: it reaches every node and router through the ports
//! published on 127.0.0.1 (`--free-ports`, so a cluster of processes on the default ports is no
//! obstacle), with the host-side `topology.toml` the script writes; their metrics over TLS with
//! the script's bearer token (`METRICS_TOKEN`, `Cluster::scraper`).

use super::{Backend, MetricsAccess};
use crate::topology::topology_toml;
use crate::{bin, repo_root, Cluster, Spec};
use hongbao_topology::Topology;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The docker engine cannot run on this machine (scripts exit 3).
#[derive(Debug)]
pub struct DockerUnavailable(pub String);

impl fmt::Display for DockerUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "docker cannot run here: {}", self.0)
    }
}

impl std::error::Error for DockerUnavailable {}

/// The backend of a cluster of containers: its HONGBAO_HOME (apart from `Cluster::dir`, which a
/// failed chaos run may swap out), and what the harness took down.
pub struct Containers {
    home: PathBuf,
    down_nodes: BTreeSet<u64>,
    partitioned: BTreeSet<String>,
}

/// The bearer token `scripts/cluster up --containers` writes to the security folder and mounts
/// for every process: the containers serve metrics on 0.0.0.0, so over TLS with a token.
pub const METRICS_TOKEN: &str = "metrics.token";

/// Bounds every script call: docker commands that hang must not hang the test.
const SCRIPT_TIMEOUT_S: &str = "300";

/// Runs a script of the repository with the binaries this test was built with; its output.
fn run_script(script: &str, home: Option<&Path>, envs: &[(&str, String)], args: &[&str]) -> std::process::Output {
    // The script's build dir is the one these binaries are in (<target>/release/hongbao).
    let target = bin("hongbao").parent().and_then(Path::parent).expect("target dir").to_path_buf();
    let mut cmd = Command::new("timeout");
    cmd.arg(SCRIPT_TIMEOUT_S).arg(repo_root().join("scripts").join(script)).args(args);
    cmd.env("CARGO_TARGET_DIR", target).env("HONGBAO_NO_BUILD", "1").env("HONGBAO_LINK", "0");
    if let Some(h) = home {
        cmd.env("HONGBAO_HOME", h);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let run = move || {
        let mut cmd = cmd;
        cmd.output().unwrap_or_else(|e| panic!("run scripts/{script}: {e}"))
    };
    // Docker takes seconds: inside the chaos run's runtime, let its other tasks (the workload)
    // move to other workers meanwhile.
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(run),
        _ => run(),
    }
}

fn output_text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Builds `hongbao:<version>` from the binaries built beside the tests, with the node of the
/// default build (no fault-injection service: every fault in the containers is the network's
/// or docker's) when `scripts/test` kept one in `default-build/`.
pub fn build_image() -> anyhow::Result<()> {
    let default_node = bin("hongbao").parent().expect("bin dir").join("default-build/hongbao-node");
    let envs: Vec<(&str, String)> =
        if default_node.exists() { vec![("HONGBAO_IMAGE_NODE", default_node.display().to_string())] } else { vec![] };
    let out = run_script("image", None, &envs, &[]);
    match out.status.code() {
        Some(0) => {
            println!("{}", output_text(&out).trim());
            Ok(())
        }
        Some(3) => Err(DockerUnavailable(output_text(&out).trim().to_string()).into()),
        _ => anyhow::bail!("scripts/image failed ({}):\n{}", out.status, output_text(&out)),
    }
}

/// Set to 1 to let the container tests skip where docker cannot run. Unset, a machine without
/// docker fails them: a skip nobody asked for would pass a run that tested nothing.
pub const SKIP_ENV: &str = "HONGBAO_SKIP_CONTAINERS";

/// Builds the image (`build_image`) for `test`; false, after saying why, only where docker
/// cannot run here and `SKIP_ENV` asks to skip. Any other failure panics.
pub fn image_or_skip(test: &str) -> bool {
    match build_image() {
        Ok(()) => true,
        Err(e) if e.downcast_ref::<DockerUnavailable>().is_some() && std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") => {
            println!("SKIPPED {test} ({SKIP_ENV}=1): {e}");
            eprintln!("SKIPPED {test} ({SKIP_ENV}=1): {e}");
            false
        }
        Err(e) if e.downcast_ref::<DockerUnavailable>().is_some() => {
            panic!("{test}: {e}\n(set {SKIP_ENV}=1 to skip the container tests on a machine without docker)")
        }
        Err(e) => panic!("{e:#}"),
    }
}

impl Cluster {
    /// The cluster of `spec` as containers: 3 regions x 1 node with routers, the compose
    /// services' names and ports, the spec's ledger, Raft and WAN settings. Ready when it
    /// returns (the script waits for every shard's leader). Err(DockerUnavailable) when docker
    /// cannot run here.
    pub fn start_containers(spec: Spec) -> anyhow::Result<Cluster> {
        let d = Spec::default();
        anyhow::ensure!(
            spec.regions == d.regions && spec.nodes_per_region == 1 && spec.routers && spec.node_binary.is_none(),
            "deploy/compose has the 3 x 1 topology with routers ({:?}, one node each) and the image's node",
            d.regions
        );
        let dir = tempfile::Builder::new().prefix("hongbao-containers-").tempdir()?;
        // The compose services' names and container ports (deploy/compose/docker-compose.yml).
        let t = topology_toml(&spec, &mut |id| (format!("node-{id}:{}", 7100 + id), format!("node-{id}:{}", 9100 + id)), &mut |i, r| {
            (format!("router-{r}:{}", 7001 + i), format!("router-{r}:{}", 9001 + i))
        });
        let input = dir.path().join("topology.input.toml");
        std::fs::write(&input, &t)?;
        let home = dir.path().to_path_buf();
        let input = input.display().to_string();
        let out = run_script("cluster", Some(&home), &[], &["up", "--containers", "--free-ports", "--topology", &input]);
        let backend = Containers { home: home.clone(), down_nodes: BTreeSet::new(), partitioned: BTreeSet::new() };
        // From here on, dropping `c` removes whatever the script created.
        let mut c = Cluster::new(dir, home.join("topology.toml"), Topology::parse(&t).map_err(anyhow::Error::msg)?, Box::new(backend));
        match out.status.code() {
            Some(0) => {}
            Some(3) => return Err(DockerUnavailable(output_text(&out).trim().to_string()).into()),
            _ => anyhow::bail!("scripts/cluster up --containers failed ({}):\n{}", out.status, output_text(&out)),
        }
        // The host's view: the same topology with the published ports.
        c.topology = Topology::load(&c.topology_path).map_err(anyhow::Error::msg)?;
        Ok(c)
    }

    /// `scripts/cluster ARGS` on this cluster of containers; panics when it fails.
    pub fn cluster_script(&self, args: &[&str]) -> String {
        self.containers().script(args)
    }

    /// Cuts `region` off from the others at the network layer: its containers leave the links
    /// to the other regions' networks.
    pub fn partition_region(&mut self, region: &str) {
        self.cluster_script(&["partition-region", region]);
        self.containers_mut().partitioned.insert(region.to_string());
    }

    pub fn heal_region(&mut self, region: &str) {
        self.cluster_script(&["heal-region", region]);
        self.containers_mut().partitioned.remove(region);
    }

    /// Every partitioned region healed, every killed container started.
    pub fn heal_containers(&mut self) {
        for r in std::mem::take(&mut self.containers_mut().partitioned) {
            self.heal_region(&r);
        }
        for r in self.topology.regions.iter().map(|r| r.name.clone()).collect::<Vec<_>>() {
            self.start_region(&r);
        }
    }

    /// The containers' logs, copied to a folder that outlives the cluster; its path.
    pub fn save_container_logs(&self) -> Option<PathBuf> {
        self.containers().save_logs()
    }
}

impl Containers {
    /// `scripts/cluster ARGS` on these containers; panics when it fails.
    fn script(&self, args: &[&str]) -> String {
        let out = run_script("cluster", Some(&self.home), &[], args);
        let text = output_text(&out);
        assert!(out.status.success(), "scripts/cluster {}: {}\n{text}", args.join(" "), out.status);
        text
    }

    fn save_logs(&self) -> Option<PathBuf> {
        let out = run_script("cluster", Some(&self.home), &[], &["logs"]);
        let log = self.home.join("logs/containers.log");
        if !out.status.success() || !log.exists() {
            return None;
        }
        let keep = tempfile::Builder::new().prefix("hongbao-containers-logs-").tempdir().ok()?.keep();
        std::fs::copy(&log, keep.join("containers.log")).ok()?;
        let _ = std::fs::copy(self.home.join("topology.toml"), keep.join("topology.toml"));
        Some(keep)
    }

    fn not_wired(what: &str) -> ! {
        panic!("{what}: not for containers (the compose deployment is driven by scripts/cluster's commands)")
    }
}

impl Backend for Containers {
    fn start_node(&mut self, id: u64) {
        self.script(&["start", &id.to_string()]);
        self.down_nodes.remove(&id);
    }

    fn kill_node(&mut self, id: u64) {
        self.script(&["kill", &id.to_string()]);
        self.down_nodes.insert(id);
    }

    fn is_running(&self, id: u64) -> bool {
        !self.down_nodes.contains(&id)
    }

    fn stop_node(&mut self, _: u64) {
        Containers::not_wired("stop (docker stop)")
    }

    fn signal_node(&self, _: u64, sig: &str) {
        Containers::not_wired(&format!("SIG{sig} to a node"))
    }

    fn start_router(&mut self, _: &str) {
        Containers::not_wired("start_router (a router container starts with its region: start_region)")
    }

    fn kill_router(&mut self, _: &str) {
        Containers::not_wired("kill_router (a router container is killed with its region: kill_region)")
    }

    fn signal_router(&self, _: &str, sig: &str) {
        Containers::not_wired(&format!("SIG{sig} to a router"))
    }

    fn kill_region(&mut self, region: &str, nodes: &[u64]) {
        self.script(&["kill-region", region]);
        self.down_nodes.extend(nodes);
    }

    fn start_region(&mut self, region: &str, nodes: &[u64], _router: bool) {
        self.script(&["start-region", region]);
        for id in nodes {
            self.down_nodes.remove(id);
        }
    }

    fn pids(&self) -> Vec<(String, u32)> {
        Vec::new()
    }

    /// The containers serve metrics on 0.0.0.0: over TLS, with the token the script mounted.
    fn metrics_access(&self) -> MetricsAccess {
        MetricsAccess { tls: true, token_file: Some(self.home.join("security").join(METRICS_TOKEN)) }
    }

    /// Removes the containers, their networks and volumes, and the folder; their logs first
    /// while a test panics.
    fn shutdown(&mut self) {
        if std::thread::panicking() {
            match self.save_logs() {
                Some(p) => eprintln!("containers' logs kept in {}", p.display()),
                None => eprintln!("could not save the containers' logs"),
            }
        }
        let out = run_script("cluster", Some(&self.home), &[], &["wipe"]);
        if !out.status.success() {
            eprintln!("scripts/cluster wipe of {} failed: {}\n{}", self.home.display(), out.status, output_text(&out));
        }
    }

    fn as_containers(&self) -> Option<&Containers> {
        Some(self)
    }

    fn as_containers_mut(&mut self) -> Option<&mut Containers> {
        Some(self)
    }
}
