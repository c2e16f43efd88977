//! The one writer of a test cluster's topology file, for every backend: 3 shards (one homed per
//! region, one replica per region), the spec's ledger and Raft settings, WAN latency as `links`.
//! Backends differ only in the addresses they give each process.

use crate::Spec;
use hongbao_auth::SecurityDir;
use hongbao_topology::Topology;
use std::path::{Path, PathBuf};

/// The topology of a `Spec`: 3 shards (one homed per region, one replica per region), the
/// ledger and Raft settings, WAN latency as `links`. `node(id)` and `router(i, region)` give each
/// process's (addr, metrics_addr).
pub(crate) fn topology_toml(
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

/// Writes topology `t` to `<dir>/topology.toml` and makes the development CA and keys of every
/// identity it names in `<dir>/security` (certificates carry each process's address).
pub(crate) fn write_with_pki(dir: &Path, t: &str) -> (PathBuf, Topology) {
    let topology = Topology::parse(t).unwrap_or_else(|e| panic!("test topology invalid: {e}\n{t}"));
    let path = dir.join("topology.toml");
    std::fs::write(&path, t).expect("write topology");
    hongbao_auth::ensure_dev_pki(&SecurityDir::new(dir.join("security")), &topology).expect("development CA and keys");
    (path, topology)
}
