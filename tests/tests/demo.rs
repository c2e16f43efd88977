//! The README's demo, as a new user runs it: `scripts/cluster up` with each shipped topology,
//! then `hongbao demo` (top-ups, a group packet, grabs, a whole region killed with kill -9 while
//! late grabbers keep grabbing, the region back, the audit). It must pass on both topologies:
//! in 3 x 3 a node holds one shard, so nodes that cannot answer for a shard are met mid-election.

use hongbao_tests::bin;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the repository").to_path_buf()
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
    let up = c.script(&["up", "--topology", &repo_root().join(topology).to_string_lossy()]);
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
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "hongbao demo on {topology} failed: {}", out.status);
    // The region kill happened and the late grabs were served while it was down.
    assert!(stdout.contains("killing every node in region"), "no region was killed");
    assert!(stdout.matches("after the region died").count() >= 3, "late grabbers were not all served");
    assert!(stdout.contains("BALANCED"), "the audit did not balance");
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
