//! The README's demo, as a new user runs it: `scripts/cluster up` with each shipped topology,
//! then `hongbao demo` (top-ups, a group packet, grabs, a whole region killed with kill -9 while
//! late grabbers keep grabbing, the region back, the audit). It must pass on both topologies:
//! in 3 x 3 a node holds one shard, so nodes that cannot answer for a shard are met mid-election.
//! Each run moves the shipped topology to free ports, so a development cluster on the shipped
//! ports (`scripts/cluster up`) is no obstacle.

use hongbao_tests::{assert_demo_passed, bin, free_ports, poll, repo_root};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const LOOPBACK: &str = "127.0.0.1:";

/// The topology file at `from` with every loopback address on a free port of its own (the
/// same address twice keeps one port), written to `to`.
fn on_free_ports(from: &Path, to: &Path) {
    let text = std::fs::read_to_string(from).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    let mut addrs: Vec<String> = vec![];
    for (at, _) in text.match_indices(LOOPBACK) {
        let port: String = text[at + LOOPBACK.len()..].chars().take_while(char::is_ascii_digit).collect();
        let addr = format!("{LOOPBACK}{port}");
        if !port.is_empty() && !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    assert!(!addrs.is_empty(), "{} names no loopback address", from.display());
    let mut out = text.clone();
    for (addr, port) in addrs.iter().zip(free_ports(addrs.len())) {
        // The closing quote: 127.0.0.1:7101 is not replaced inside 127.0.0.1:71010.
        out = out.replace(&format!("\"{addr}\""), &format!("\"{LOOPBACK}{port}\""));
    }
    assert!(!addrs.iter().any(|a| out.contains(&format!("\"{a}\""))), "every shipped address replaced");
    std::fs::write(to, out).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
}

/// A cluster started by `scripts/cluster` in a folder of its own; wiped when dropped.
struct ScriptCluster {
    home: tempfile::TempDir,
}

impl ScriptCluster {
    fn script(&self, args: &[&str]) -> std::process::ExitStatus {
        Command::new(repo_root().join("scripts/cluster"))
            .args(args)
            .env("HONGBAO_HOME", self.home.path())
            // scripts/test built every binary already; a rebuild here would replace them.
            .env("HONGBAO_NO_BUILD", "1")
            .status()
            .expect("run scripts/cluster")
    }
}

impl Drop for ScriptCluster {
    fn drop(&mut self) {
        let _ = self.script(&["wipe"]);
    }
}

fn demo_passes_on(topology: &str) {
    let c = ScriptCluster { home: tempfile::Builder::new().prefix("hongbao-demo-").tempdir().expect("temp dir") };
    let moved = c.home.path().join("topology.free-ports.toml");
    on_free_ports(&repo_root().join(topology), &moved);
    let up = c.script(&["up", "--topology", &moved.to_string_lossy()]);
    assert!(up.success(), "scripts/cluster up --topology {topology}: {up}");
    let out = Command::new(bin("hongbao"))
        .arg("--topology")
        .arg(c.home.path().join("topology.toml"))
        .arg("demo")
        .arg("--cluster-script")
        .arg(repo_root().join("scripts/cluster"))
        .env("HONGBAO_HOME", c.home.path())
        .output()
        .expect("run hongbao demo");
    assert_demo_passed(&out, topology, "killing every node in region");
}

#[test]
fn the_demo_passes_on_the_three_by_one_topology() {
    demo_passes_on("deploy/local-3x1.toml");
}

#[test]
fn the_demo_passes_on_the_three_by_three_topology_twice() {
    demo_passes_on("deploy/local-3x3.toml");
    demo_passes_on("deploy/local-3x3.toml");
}

/// `scripts/cluster` must not take a zombie for a running process: right after a kill -9, until
/// the parent reaps it, `kill -0` still succeeds, and `restart` used to say "already running"
/// and start nothing. A live process of ours is still seen as running.
#[test]
fn scripts_cluster_sees_a_zombie_node_as_down_and_a_live_one_as_running() {
    let c = ScriptCluster { home: tempfile::Builder::new().prefix("hongbao-zombie-").tempdir().expect("temp dir") };
    std::fs::copy(repo_root().join("deploy/local-3x1.toml"), c.home.path().join("topology.toml")).expect("topology");
    let pids = c.home.path().join("pids");
    std::fs::create_dir_all(&pids).expect("pids dir");
    // A hongbao process that exits at once and is never waited for: a zombie of this test.
    let mut zombie = Command::new(bin("hongbao-node")).arg("--no-such-flag").stderr(std::process::Stdio::null()).spawn().expect("spawn");
    // A live process whose command line names hongbao, like a node's.
    let mut live = Command::new("bash").args(["-c", "exec -a hongbao-node-standin sleep 60"]).spawn().expect("spawn");
    std::fs::write(pids.join("node-1.pid"), zombie.id().to_string()).expect("pid file");
    std::fs::write(pids.join("node-2.pid"), live.id().to_string()).expect("pid file");
    let state = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie_now = poll::until(Duration::from_secs(5), || state(zombie.id()).contains(") Z"));
    assert!(zombie_now, "the first process is a zombie: {}", state(zombie.id()));
    let out = Command::new(repo_root().join("scripts/cluster"))
        .arg("status")
        .env("HONGBAO_HOME", c.home.path())
        .env("HONGBAO_NO_BUILD", "1")
        .output()
        .expect("scripts/cluster status");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("node 1 (shenzhen): down"), "a zombie is down:\n{stdout}");
    assert!(stdout.contains("node 2 (shanghai): running"), "a live process is running:\n{stdout}");
    let _ = live.kill();
    let _ = live.wait();
    let _ = zombie.wait(); // reaped only now, after the script has seen it
    std::fs::remove_file(pids.join("node-2.pid")).expect("no pid for wipe to kill");
}
