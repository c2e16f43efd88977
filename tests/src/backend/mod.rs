//! What runs a `Cluster`'s nodes and routers. One trait, one file per backend:
//! - `process`: child processes on loopback (every test but the container ones);
//! - `netns`: the same processes, each node inside its own network namespace (`Net`), so that a
//!   partition is the kernel's;
//! - `containers`: the image and compose deployment, driven through `scripts/cluster`.
//!
//! `Cluster` holds one as `Box<dyn Backend>` and never asks which it is, but for the operations
//! only one backend has (`Cluster::processes`, `Cluster::containers`).

pub mod containers;
pub mod netns;
pub mod process;

use std::path::PathBuf;

/// How a backend's metrics endpoints are reached (`Cluster::scraper`).
pub struct MetricsAccess {
    /// HTTPS trusting the cluster's CA (else plain HTTP).
    pub tls: bool,
    /// The file holding the bearer token the processes were given.
    pub token_file: Option<PathBuf>,
}

/// The lifecycle operations of a cluster's processes. Operations a backend cannot do panic with
/// the reason (a test that asks for them is wrong for that backend).
pub trait Backend: Send + Sync {
    fn start_node(&mut self, id: u64);
    /// kill -9: no chance to flush anything that was not already synced.
    fn kill_node(&mut self, id: u64);
    fn is_running(&self, id: u64) -> bool;
    /// SIGTERM and wait: a graceful stop.
    fn stop_node(&mut self, id: u64);
    /// Sends `sig` (e.g. STOP, CONT) to a running node; panics when it could not be sent.
    fn signal_node(&self, id: u64, sig: &str);
    fn start_router(&mut self, region: &str);
    fn kill_router(&mut self, region: &str);
    fn signal_router(&self, region: &str, sig: &str);
    /// kill -9 of `nodes` (those of `region`) and of the region's router.
    fn kill_region(&mut self, region: &str, nodes: &[u64]);
    /// Starts what of `region` is down: `nodes`, and its router when `router`.
    fn start_region(&mut self, region: &str, nodes: &[u64], router: bool);
    /// Every running process: (`node-<id>` or `router-<region>`, pid).
    fn pids(&self) -> Vec<(String, u32)>;
    fn metrics_access(&self) -> MetricsAccess;
    /// Ends every process (from `Cluster`'s drop); while a test panics, keeps what explains it.
    fn shutdown(&mut self);
    fn as_processes(&mut self) -> Option<&mut process::Processes> {
        None
    }
    fn as_containers(&self) -> Option<&containers::Containers> {
        None
    }
    fn as_containers_mut(&mut self) -> Option<&mut containers::Containers> {
        None
    }
}
