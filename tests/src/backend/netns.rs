//! The network-namespace backend: a cluster of processes (`process`) whose nodes each run in
//! their own Linux network namespace, for the `netns-partition` schedule: a partition made by
//! the kernel, not by the node's own fault-injection filter.
//!
//! Layout of one run (k: a free index 0..=249, so two runs never share a name or a subnet):
//!
//! ```text
//!   root namespace: bridge hbbr<k>, 10.199.<k>.254/24; routers, the workload, the checker
//!     └─ veth hbv<k>n<N> (host side, a port of the bridge)
//!          └─ hbp<k>n<N> in namespace hongbao-chaos-<k>-n<N>: 10.199.<k>.<N>/24, node N
//! ```
//!
//! Node N listens on 10.199.<k>.<N>:7000 (metrics :9100, over TLS with a bearer token, as any
//! address but loopback must be); the topology and the development certificates carry those addresses. Cutting node N is `ip link set hbv<k>n<N> down`: no frame
//! reaches it or leaves it, to its peers, the routers or the harness alike. Healing is `up`.
//!
//! Everything is deleted when the `Net` is dropped (also while a panic unwinds), and a new run
//! first deletes what a crashed run left: the bridge's alias names the process that owns it
//! (`hongbao-chaos pid=P`), and a set whose owner is gone is removed, with any process still
//! inside its namespaces. Needs root and iproute2; no iptables, nft or netem.

use super::process::Processes;
use crate::topology::{topology_toml, write_with_pki};
use crate::{bin, scrape, Cluster, Ports, Spec};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const BRIDGE: &str = "hbbr";
const HOST_VETH: &str = "hbv";
const NS_VETH: &str = "hbp";
const NS: &str = "hongbao-chaos-";
const ALIAS: &str = "hongbao-chaos pid=";
/// Every node has an address of its own, so every node uses the same ports.
const NODE_PORT: u16 = 7000;
const METRICS_PORT: u16 = 9100;
/// Subnets 10.199.0.0/24 ..= 10.199.249.0/24.
const MAX_NETS: u32 = 250;

/// One run's namespaces, veth pairs and bridge. Dropping it deletes them all.
pub struct Net {
    k: u32,
    nodes: Vec<u64>,
}

/// Runs `ip ARGS`; its stderr on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip {}: cannot run ip: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn names_in(dir: &str) -> Vec<String> {
    std::fs::read_dir(dir).into_iter().flatten().flatten().filter_map(|e| e.file_name().into_string().ok()).collect()
}

/// The owner of bridge `k` (from its alias), if it names one.
fn owner(k: u32) -> Option<u32> {
    let alias = std::fs::read_to_string(format!("/sys/class/net/{BRIDGE}{k}/ifalias")).ok()?;
    alias.trim().strip_prefix(ALIAS)?.parse().ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn ns_name(k: u32, node: u64) -> String {
    format!("{NS}{k}-n{node}")
}

/// The firewall rule that lets bridge `k` forward between its own ports. Where Docker runs it
/// sets the FORWARD policy to DROP, and bridged frames pass through iptables (br_netfilter):
/// without this rule the nodes could not reach each other at all.
fn forward_rule(k: u32) -> [String; 7] {
    let b = format!("{BRIDGE}{k}");
    ["FORWARD", "-i", &b, "-o", &b, "-j", "ACCEPT"].map(String::from)
}

/// `iptables -I` (insert) or `-D` (delete) of `forward_rule(k)`. Without iptables there is no
/// firewall to open: nothing to do.
fn firewall(op: &str, k: u32) -> Result<(), String> {
    // -w: wait for the xtables lock (Docker may hold it) instead of failing.
    let args: Vec<String> = ["-w".to_string(), op.to_string()].into_iter().chain(forward_rule(k)).collect();
    match Command::new("iptables").args(&args).output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("iptables {}: {e}", args.join(" "))),
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("iptables {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())),
    }
}

/// Deletes everything of set `k`: processes left in its namespaces (nodes of a crashed run),
/// the namespaces, the host-side veths, the bridge and its firewall rule. Errors are ignored
/// (already gone).
fn teardown(k: u32) {
    let _ = firewall("-D", k);
    let prefix = format!("{NS}{k}-n");
    for ns in names_in("/run/netns").into_iter().filter(|n| n.starts_with(&prefix)) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = ip(&["netns", "del", &ns]);
    }
    let veth = format!("{HOST_VETH}{k}n");
    for l in names_in("/sys/class/net").into_iter().filter(|l| l.starts_with(&veth)) {
        let _ = ip(&["link", "del", &l]);
    }
    let _ = ip(&["link", "del", &format!("{BRIDGE}{k}")]);
}

/// The index in a name like `hbbr7`, `hbv7n2` or `hongbao-chaos-7-n2` after `prefix`.
fn index_after(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Deletes the sets of runs that are gone: a bridge whose owner is not running (or that never
/// got an owner within a second of being seen), and namespaces or veths without their bridge.
fn remove_leftovers() {
    let bridges: Vec<u32> = names_in("/sys/class/net").iter().filter_map(|l| index_after(l, BRIDGE)).collect();
    let mut unowned = Vec::new();
    for &k in &bridges {
        match owner(k) {
            Some(pid) if alive(pid) => {}
            Some(_) => teardown(k),
            None => unowned.push(k),
        }
    }
    if !unowned.is_empty() {
        // A run names itself right after creating its bridge: give it the moment.
        std::thread::sleep(Duration::from_secs(1));
        for k in unowned {
            if owner(k).map(|p| !alive(p)).unwrap_or(true) {
                teardown(k);
            }
        }
    }
    let mut orphans: Vec<u32> = names_in("/run/netns").iter().filter_map(|n| index_after(n, NS)).collect();
    orphans.extend(names_in("/sys/class/net").iter().filter_map(|l| index_after(l, HOST_VETH)));
    for k in orphans {
        if !link_exists(&format!("{BRIDGE}{k}")) {
            teardown(k);
        }
    }
}

impl Net {
    /// Makes a namespace for each of `nodes`, each joined to a new bridge by a veth pair.
    /// Fails with what to do when this machine cannot (not root, no `ip netns`).
    pub fn create(nodes: &[u64]) -> anyhow::Result<Net> {
        if let Some(n) = nodes.iter().find(|&&n| n == 0 || n > 253) {
            anyhow::bail!("netns-partition: node id {n} does not fit the last byte of an address");
        }
        let probe = Command::new("ip").args(["netns", "list"]).output();
        if !probe.as_ref().map(|o| o.status.success()).unwrap_or(false) {
            anyhow::bail!(
                "netns-partition needs iproute2's `ip netns` (root, network namespaces, veth and bridge): `ip netns list` {}",
                match probe {
                    Ok(o) => format!("failed: {}", String::from_utf8_lossy(&o.stderr).trim()),
                    Err(e) => format!("could not run: {e}"),
                }
            );
        }
        remove_leftovers();
        let used = Command::new("ip").args(["-4", "-o", "addr", "show"]).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        let used = used.unwrap_or_default();
        let mut last_err = String::from("every subnet 10.199.0-249.0/24 is taken");
        let mut k = None;
        for i in 0..MAX_NETS {
            if used.contains(&format!(" 10.199.{i}.")) {
                continue;
            }
            // Creating the bridge is the claim: it fails if another run made it first.
            match ip(&["link", "add", &format!("{BRIDGE}{i}"), "type", "bridge"]) {
                Ok(()) => {
                    k = Some(i);
                    break;
                }
                Err(e) => last_err = e,
            }
        }
        let Some(k) = k else {
            anyhow::bail!("netns-partition needs root to create a bridge (and a free 10.199.x.0/24): {last_err}");
        };
        // From here on, dropping `net` deletes whatever was made.
        let net = Net { k, nodes: nodes.to_vec() };
        let bridge = format!("{BRIDGE}{k}");
        let setup = || -> Result<(), String> {
            ip(&["link", "set", &bridge, "alias", &format!("{ALIAS}{}", std::process::id())])?;
            ip(&["addr", "add", &format!("10.199.{k}.254/24"), "dev", &bridge])?;
            ip(&["link", "set", &bridge, "up"])?;
            firewall("-I", k)?;
            for &n in nodes {
                let ns = ns_name(k, n);
                let (host, inner) = (net.veth(n), format!("{NS_VETH}{k}n{n}"));
                ip(&["netns", "add", &ns])?;
                ip(&["link", "add", &host, "type", "veth", "peer", "name", &inner, "netns", &ns])?;
                ip(&["-n", &ns, "addr", "add", &format!("{}/24", net.ip(n)), "dev", &inner])?;
                ip(&["-n", &ns, "link", "set", &inner, "up"])?;
                ip(&["-n", &ns, "link", "set", "lo", "up"])?;
                ip(&["link", "set", &host, "master", &bridge, "up"])?;
            }
            Ok(())
        };
        setup().map_err(|e| anyhow::anyhow!("netns-partition could not set up its namespaces: {e}"))?;
        Ok(net)
    }

    /// Node `n`'s address on the bridge.
    pub fn ip(&self, n: u64) -> String {
        format!("10.199.{}.{n}", self.k)
    }

    /// The root-side end of node `n`'s veth pair: the port of the bridge that a cut takes down.
    pub fn veth(&self, n: u64) -> String {
        format!("{HOST_VETH}{}n{n}", self.k)
    }

    pub fn bridge(&self) -> String {
        format!("{BRIDGE}{}", self.k)
    }

    pub fn namespace(&self, n: u64) -> String {
        ns_name(self.k, n)
    }

    /// Takes node `n`'s link down: it can neither send nor receive a frame.
    pub fn cut(&self, n: u64) -> Result<(), String> {
        ip(&["link", "set", &self.veth(n), "down"])?;
        if self.is_up(n) {
            return Err(format!("{} still up after `ip link set down`", self.veth(n)));
        }
        Ok(())
    }

    /// Brings node `n`'s link back up.
    pub fn heal(&self, n: u64) -> Result<(), String> {
        ip(&["link", "set", &self.veth(n), "up"])
    }

    /// Every link up.
    pub fn heal_all(&self) {
        for &n in &self.nodes {
            if let Err(e) = self.heal(n) {
                eprintln!("netns-partition: could not heal node {n}: {e}");
            }
        }
    }

    /// Whether node `n`'s host-side link is administratively up.
    pub fn is_up(&self, n: u64) -> bool {
        std::fs::read_to_string(format!("/sys/class/net/{}/flags", self.veth(n)))
            .ok()
            .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
            .map(|f| f & 1 == 1) // IFF_UP
            .unwrap_or(false)
    }

    /// Starts a cluster like `Cluster::start` does, but each node inside its own namespace at
    /// its bridge address (routers stay in the root namespace on loopback).
    pub fn start_cluster(&self, spec: Spec) -> Cluster {
        let dir = tempfile::Builder::new().prefix("hongbao-test-").tempdir().expect("temp dir");
        let mut ports = Ports(vec![]);
        let t = topology_toml(
            &spec,
            &mut |id| {
                assert!(self.nodes.contains(&id), "node {id} has no namespace");
                (format!("{}:{NODE_PORT}", self.ip(id)), format!("{}:{METRICS_PORT}", self.ip(id)))
            },
            &mut |_, _| (format!("127.0.0.1:{}", ports.next()), format!("127.0.0.1:{}", ports.next())),
        );
        // Node certificates name the bridge addresses (the dev PKI issues SANs from `addr`).
        let (topology_path, topology) = write_with_pki(dir.path(), &t);
        // Nodes serve metrics on their bridge address, not loopback: only over TLS with a
        // bearer token (hongbao_telemetry::http), which `Cluster::scraper` then uses.
        let token = dir.path().join("security").join("metrics.token");
        scrape::new_token_file(&token);
        let mut env = spec.env;
        env.push((scrape::TLS_ENV, "1".into()));
        env.push((scrape::CREDENTIAL_ENV, token.display().to_string()));
        drop(ports);
        // The harness starts `node_binary --topology .. --node-id N ..`: this wrapper runs the
        // real binary inside node N's namespace (`ip netns exec` execs it: same pid, so kill,
        // SIGSTOP and SIGCONT reach the node itself).
        let node = spec.node_binary.unwrap_or_else(|| bin("hongbao-node"));
        let wrapper = dir.path().join("node-in-netns.sh");
        let script = format!(
            "#!/bin/sh\n# hongbao-node inside the namespace of the node id it is given\nid=\nprev=\nfor a in \"$@\"; do\n  \
             [ \"$prev\" = --node-id ] && id=$a\n  prev=$a\ndone\nexec ip netns exec \"{NS}{}-n$id\" \"{}\" \"$@\"\n",
            self.k,
            node.display()
        );
        std::fs::write(&wrapper, script).expect("write the netns wrapper");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod the netns wrapper");
        let processes = Processes::new(dir.path(), wrapper, env, spec.router_max_inflight);
        Cluster::launch(dir, topology_path, topology, processes)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        teardown(self.k);
    }
}

#[cfg(test)]
mod tests {
    use super::index_after;

    #[test]
    fn indices_are_read_from_names() {
        assert_eq!(index_after("hbbr12", "hbbr"), Some(12));
        assert_eq!(index_after("hbv3n2", "hbv"), Some(3));
        assert_eq!(index_after("hongbao-chaos-249-n1", "hongbao-chaos-"), Some(249));
        assert_eq!(index_after("eth0", "hbbr"), None);
        assert_eq!(index_after("hbbr", "hbbr"), None);
    }
}
