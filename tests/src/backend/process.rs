//! Nodes and routers as child processes of the test, each with its own RocksDB in the
//! cluster's folder and its output in `<dir>/<name>.log`.

use super::{Backend, MetricsAccess};
use crate::{bin, scrape, OTLP_ENDPOINT_ENV};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Processes {
    dir: PathBuf,
    topology_path: PathBuf,
    node_binary: PathBuf,
    env: Vec<(&'static str, String)>,
    router_max_inflight: Option<usize>,
    nodes: BTreeMap<u64, Child>,
    routers: BTreeMap<String, Child>,
}

impl Processes {
    /// Processes of the cluster in `dir` (its `topology.toml`, `security/`): nodes run
    /// `node_binary`, every process gets `env` (and no OTLP endpoint of the developer's shell).
    pub fn new(dir: &Path, node_binary: PathBuf, env: Vec<(&'static str, String)>, router_max_inflight: Option<usize>) -> Processes {
        Processes {
            dir: dir.to_path_buf(),
            topology_path: dir.join("topology.toml"),
            node_binary,
            env,
            router_max_inflight,
            nodes: BTreeMap::new(),
            routers: BTreeMap::new(),
        }
    }

    fn log(&self, name: &str) -> Stdio {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("{name}.log"))).expect("log file");
        Stdio::from(f)
    }

    /// Starts node `id` on the topology file at `topology` (the cluster's own, or a variant).
    pub fn start_node_on(&mut self, id: u64, topology: &Path) {
        assert!(!self.nodes.contains_key(&id), "node {id} already running");
        let child = Command::new(&self.node_binary)
            .arg("--topology")
            .arg(topology)
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--data-dir")
            .arg(self.dir.join(format!("node-{id}")))
            .arg("--security-dir")
            .arg(self.dir.join("security"))
            .env("RUST_LOG", "info,openraft=warn")
            .env_remove(OTLP_ENDPOINT_ENV)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(self.log(&format!("node-{id}")))
            .stderr(self.log(&format!("node-{id}")))
            .spawn()
            .expect("start hongbao-node");
        self.nodes.insert(id, child);
    }

    /// Deletes a stopped node's whole data directory: the disk lost.
    pub fn wipe_node(&mut self, id: u64) {
        assert!(!self.is_running(id), "wipe_node: node {id} is still running");
        let dir = self.dir.join(format!("node-{id}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("wipe {}: {e}", dir.display()));
        }
    }

    fn env(&self, k: &str) -> Option<String> {
        self.env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    }
}

/// `kill -SIG pid`; whether it was delivered.
fn kill(pid: u32, sig: &str) -> bool {
    Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().is_ok_and(|s| s.success())
}

fn end(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

impl Backend for Processes {
    fn start_node(&mut self, id: u64) {
        let topology = self.topology_path.clone();
        self.start_node_on(id, &topology);
    }

    fn kill_node(&mut self, id: u64) {
        if let Some(c) = self.nodes.remove(&id) {
            end(c);
        }
    }

    fn is_running(&self, id: u64) -> bool {
        self.nodes.contains_key(&id)
    }

    fn stop_node(&mut self, id: u64) {
        if let Some(mut c) = self.nodes.remove(&id) {
            kill(c.id(), "TERM");
            if !crate::poll::until(Duration::from_secs(10), || matches!(c.try_wait(), Ok(Some(_)))) {
                end(c);
            }
        }
    }

    fn signal_node(&self, id: u64, sig: &str) {
        let c = self.nodes.get(&id).unwrap_or_else(|| panic!("SIG{sig} to node {id}: it is not running"));
        assert!(kill(c.id(), sig), "SIG{sig} to node {id} (pid {}) was not delivered", c.id());
    }

    fn start_router(&mut self, region: &str) {
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
            .arg(self.dir.join("security"))
            .stdout(self.log(&format!("router-{region}")))
            .stderr(self.log(&format!("router-{region}")))
            .spawn()
            .expect("start hongbao-router");
        self.routers.insert(region.to_string(), child);
    }

    fn kill_router(&mut self, region: &str) {
        if let Some(c) = self.routers.remove(region) {
            end(c);
        }
    }

    fn signal_router(&self, region: &str, sig: &str) {
        let c = self.routers.get(region).unwrap_or_else(|| panic!("SIG{sig} to router {region}: it is not running"));
        assert!(kill(c.id(), sig), "SIG{sig} to router {region} (pid {}) was not delivered", c.id());
    }

    fn kill_region(&mut self, region: &str, nodes: &[u64]) {
        for &id in nodes {
            self.kill_node(id);
        }
        self.kill_router(region);
    }

    fn start_region(&mut self, region: &str, nodes: &[u64], router: bool) {
        for &id in nodes {
            if !self.is_running(id) {
                self.start_node(id);
            }
        }
        if router && !self.routers.contains_key(region) {
            self.start_router(region);
        }
    }

    fn pids(&self) -> Vec<(String, u32)> {
        let nodes = self.nodes.iter().map(|(id, c)| (format!("node-{id}"), c.id()));
        nodes.chain(self.routers.iter().map(|(r, c)| (format!("router-{r}"), c.id()))).collect()
    }

    /// HTTPS when the processes serve TLS (`scrape::TLS_ENV` in their env), with the credential
    /// file they were given (`scrape::CREDENTIAL_ENV`).
    fn metrics_access(&self) -> MetricsAccess {
        MetricsAccess {
            tls: self.env(scrape::TLS_ENV).is_some_and(|v| !matches!(v.as_str(), "" | "0" | "false")),
            token_file: self.env(scrape::CREDENTIAL_ENV).map(PathBuf::from),
        }
    }

    fn shutdown(&mut self) {
        for (_, c) in std::mem::take(&mut self.nodes) {
            // A paused (SIGSTOP) node is woken first: kill -9 alone leaves it to the reaper.
            kill(c.id(), "CONT");
            end(c);
        }
        for (_, c) in std::mem::take(&mut self.routers) {
            end(c);
        }
    }

    fn as_processes(&mut self) -> Option<&mut Processes> {
        Some(self)
    }
}
