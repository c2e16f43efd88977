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

use crate::{bin, topology_toml, Cluster, Spec};
use hongbao_topology::Topology;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The docker engine cannot run on this machine (scripts exit 3): the container tests skip.
#[derive(Debug)]
pub struct DockerUnavailable(pub String);

impl fmt::Display for DockerUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "docker cannot run here: {}", self.0)
    }
}

impl std::error::Error for DockerUnavailable {}

/// What a cluster of containers keeps beside the `Cluster`: its HONGBAO_HOME (apart from
/// `Cluster::dir`, which a failed chaos run may swap out), and what the harness took down.
pub(crate) struct Containers {
    home: PathBuf,
    down_nodes: BTreeSet<u64>,
    partitioned: BTreeSet<String>,
}

/// The bearer token `scripts/cluster up --containers` writes to the security folder and mounts
/// for every process: the containers serve metrics on 0.0.0.0, so over TLS with a token.
pub const METRICS_TOKEN: &str = "metrics.token";

/// Bounds every script call: docker commands that hang must not hang the test.
const SCRIPT_TIMEOUT_S: &str = "300";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the repository").to_path_buf()
}

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
        let mut c = Cluster {
            topology_path: home.join("topology.toml"),
            topology: Topology::parse(&t).map_err(anyhow::Error::msg)?,
            dir,
            nodes: Default::default(),
            routers: Default::default(),
            router_max_inflight: None,
            node_binary: PathBuf::new(),
            env: Vec::new(),
            containers: Some(Containers { home, down_nodes: BTreeSet::new(), partitioned: BTreeSet::new() }),
            gone: Default::default(),
            made_version: Default::default(),
        };
        // From here on, dropping `c` removes whatever the script created.
        match out.status.code() {
            Some(0) => {}
            Some(3) => return Err(DockerUnavailable(output_text(&out).trim().to_string()).into()),
            _ => anyhow::bail!("scripts/cluster up --containers failed ({}):\n{}", out.status, output_text(&out)),
        }
        // The host's view: the same topology with the published ports.
        c.topology = Topology::load(&c.topology_path).map_err(anyhow::Error::msg)?;
        Ok(c)
    }

    pub fn is_containers(&self) -> bool {
        self.containers.is_some()
    }

    fn containers(&mut self) -> &mut Containers {
        self.containers.as_mut().expect("a cluster of containers")
    }

    /// `scripts/cluster ARGS` on this cluster of containers; panics when it fails.
    pub fn cluster_script(&self, args: &[&str]) -> String {
        let home = &self.containers.as_ref().expect("a cluster of containers").home;
        let out = run_script("cluster", Some(home), &[], args);
        let text = output_text(&out);
        assert!(out.status.success(), "scripts/cluster {}: {}\n{text}", args.join(" "), out.status);
        text
    }

    pub(crate) fn container_kill(&mut self, id: u64) {
        self.cluster_script(&["kill", &id.to_string()]);
        self.containers().down_nodes.insert(id);
    }

    pub(crate) fn container_start(&mut self, id: u64) {
        self.cluster_script(&["start", &id.to_string()]);
        self.containers().down_nodes.remove(&id);
    }

    pub(crate) fn container_is_running(&self, id: u64) -> bool {
        !self.containers.as_ref().expect("a cluster of containers").down_nodes.contains(&id)
    }

    pub(crate) fn container_kill_region(&mut self, region: &str) {
        self.cluster_script(&["kill-region", region]);
        for id in self.nodes_in(region) {
            self.containers().down_nodes.insert(id);
        }
    }

    pub(crate) fn container_start_region(&mut self, region: &str) {
        self.cluster_script(&["start-region", region]);
        for id in self.nodes_in(region) {
            self.containers().down_nodes.remove(&id);
        }
    }

    /// Cuts `region` off from the others at the network layer: its containers leave the links
    /// to the other regions' networks.
    pub fn partition_region(&mut self, region: &str) {
        self.cluster_script(&["partition-region", region]);
        self.containers().partitioned.insert(region.to_string());
    }

    pub fn heal_region(&mut self, region: &str) {
        self.cluster_script(&["heal-region", region]);
        self.containers().partitioned.remove(region);
    }

    /// Every partitioned region healed, every killed container started.
    pub fn heal_containers(&mut self) {
        for r in std::mem::take(&mut self.containers().partitioned) {
            self.heal_region(&r);
        }
        for r in self.topology.regions.iter().map(|r| r.name.clone()).collect::<Vec<_>>() {
            self.container_start_region(&r);
        }
    }

    /// The containers' logs, copied to a folder that outlives the cluster; its path.
    pub fn save_container_logs(&self) -> Option<PathBuf> {
        let home = &self.containers.as_ref()?.home;
        let out = run_script("cluster", Some(home), &[], &["logs"]);
        let log = home.join("logs/containers.log");
        if !out.status.success() || !log.exists() {
            return None;
        }
        let keep = tempfile::Builder::new().prefix("hongbao-containers-logs-").tempdir().ok()?.keep();
        std::fs::copy(&log, keep.join("containers.log")).ok()?;
        let _ = std::fs::copy(home.join("topology.toml"), keep.join("topology.toml"));
        Some(keep)
    }

    /// Removes the containers, their networks and volumes, and the folder (from Drop).
    pub(crate) fn remove_containers(&mut self) {
        let Some(c) = self.containers.take() else { return };
        let out = run_script("cluster", Some(&c.home), &[], &["wipe"]);
        if !out.status.success() {
            eprintln!("scripts/cluster wipe of {} failed: {}\n{}", c.home.display(), out.status, output_text(&out));
        }
    }
}
