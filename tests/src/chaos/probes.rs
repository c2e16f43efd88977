//! What the schedules ask of the cluster: who leads, what each node applied and committed,
//! whether a node caught up, trusts its clock or votes; and the faults they set through the
//! nodes' fault-injection service.

use crate::Cluster;
use hongbao_proto::v1::{Faults, NodeStatus, ReplicaRole};
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A shard and the node leading it, at random (None when no shard has a leader right now, or no
/// node answered: faults are under way).
pub(crate) async fn random_leader(c: &Cluster, rng: &mut impl Rng) -> Option<(u32, u64)> {
    let leaders: Vec<(u32, u64)> = c.try_leaders().await.unwrap_or_default().into_iter().collect();
    leaders.choose(rng).copied()
}

/// A node that leads some shard in its own view, at random, with the shards it leads; waits up
/// to `within` for one (None: no node said it leads anything).
pub(crate) async fn a_leader(c: &Cluster, rng: &mut impl Rng, within: Duration) -> Option<(u64, Vec<u32>)> {
    let mut found = None;
    eventually!(within, {
        if let Some((_, n)) = random_leader(c, rng).await {
            let led = led_by(c, n).await.unwrap_or_default();
            if !led.is_empty() {
                found = Some((n, led));
            }
        }
        found.is_some()
    });
    found
}

pub(crate) async fn leader_of_random_shard(c: &Cluster, rng: &mut impl Rng) -> u64 {
    match random_leader(c, rng).await {
        Some((_, l)) => l,
        None => c.topology.nodes.choose(rng).expect("nodes").id,
    }
}

/// Every node but `group`.
pub(crate) fn others(c: &Cluster, group: &[u64]) -> Vec<u64> {
    c.topology.nodes.iter().map(|n| n.id).filter(|n| !group.contains(n)).collect()
}

pub(crate) async fn cut(c: &Cluster, group: &[u64]) {
    let others = others(c, group);
    for &n in group {
        set(c, n, Faults { cut_off: others.clone(), ..Faults::default() }).await;
    }
    for &n in &others {
        set(c, n, Faults { cut_off: group.to_vec(), ..Faults::default() }).await;
    }
}

/// No injected fault left on any node.
pub(crate) async fn clear_faults(c: &Cluster) {
    for n in c.topology.nodes.iter().map(|n| n.id) {
        set(c, n, Faults::default()).await;
    }
}

/// Replaces one node's faults; false when the node never took them.
pub(crate) async fn set(c: &Cluster, node: u64, f: Faults) -> bool {
    for _ in 0..5 {
        if c.set_faults(node, f.clone()).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("could not set faults on node {node}");
    false
}

/// One node's own status (its replicas, its clock), asked of that node only.
pub(crate) async fn local(c: &Cluster, n: u64) -> Option<NodeStatus> {
    c.node_client().status_of(&c.node_addr(n)).await.ok().and_then(|r| r.nodes.into_iter().next())
}

/// The shards a node leads, in its own view (None: it did not answer).
pub(crate) async fn led_by(c: &Cluster, n: u64) -> Option<Vec<u32>> {
    let st = local(c, n).await?;
    Some(st.shards.iter().filter(|s| s.role() == ReplicaRole::Leader).map(|s| s.shard).collect())
}

/// Some node of `among` leads `shard` (in its own view).
pub(crate) async fn led_among(c: &Cluster, among: &[u64], shard: u32) -> Option<u64> {
    for &n in among {
        if led_by(c, n).await.unwrap_or_default().contains(&shard) {
            return Some(n);
        }
    }
    None
}

/// Per shard, the highest commit index any of `nodes` reports.
pub(crate) async fn committed(c: &Cluster, nodes: &[u64]) -> BTreeMap<u32, u64> {
    let mut out: BTreeMap<u32, u64> = BTreeMap::new();
    for &n in nodes {
        if let Some(st) = local(c, n).await {
            for s in st.shards {
                let e = out.entry(s.shard).or_default();
                *e = (*e).max(s.committed);
            }
        }
    }
    out
}

/// Per shard, the index a node has applied (None: it did not answer).
pub(crate) async fn applied(c: &Cluster, n: u64) -> Option<BTreeMap<u32, u64>> {
    Some(local(c, n).await?.shards.iter().map(|s| (s.shard, s.applied)).collect())
}

/// Waits up to `within` until, for some shard, what the nodes `rest` committed is past what
/// `before` holds for it (a shard missing from `before` never counts). Returns whether it was,
/// and the commit indexes seen last.
pub(crate) async fn committed_past(c: &Cluster, rest: &[u64], before: &BTreeMap<u32, u64>, within: Duration) -> (bool, BTreeMap<u32, u64>) {
    let mut seen;
    let behind = eventually!(within, {
        seen = committed(c, rest).await;
        seen.iter().any(|(s, ci)| *ci > before.get(s).copied().unwrap_or(u64::MAX))
    });
    (behind, seen)
}

/// Waits until `n` has applied, on every shard, what the other nodes had committed when the
/// wait began. Ok(time it took, the target) or Err(what was missing).
pub(crate) async fn catch_up(c: &Cluster, n: u64, within: Duration) -> Result<Duration, String> {
    let t = Instant::now();
    let target = committed(c, &others(c, &[n])).await;
    let mut last;
    let ok = eventually!(within, {
        let a = applied(c, n).await;
        let ok = a.as_ref().map(|a| target.iter().all(|(s, t)| a.get(s).copied().unwrap_or(0) >= *t)).unwrap_or(false);
        last = a;
        ok
    });
    if ok {
        Ok(t.elapsed())
    } else {
        Err(format!("node {n} did not catch up within {within:?}: applied {last:?}, the others had committed {target:?}"))
    }
}

/// Sum of a metric over every node that answers.
pub(crate) async fn metric_sum(c: &Cluster, name: &str) -> f64 {
    let mut sum = 0.0;
    for n in c.topology.nodes.iter().map(|n| n.id) {
        sum += c.node_metric(n, name).await.unwrap_or(0.0);
    }
    sum
}

pub(crate) const SNAPSHOTS_INSTALLED: &str = "hongbao_snapshots_installed_total";
pub(crate) const SNAPSHOTS_BUILT: &str = "hongbao_snapshots_built_total";
/// Snapshot streams a node received, by shard and result (ok, failed: refused or broken off).
pub(crate) const SNAPSHOTS_RECEIVED: &str = "hongbao_snapshots_received_total";
/// Snapshot streams a leader sent, by shard and result.
pub(crate) const SNAPSHOTS_SENT: &str = "hongbao_snapshots_sent_total";
/// Time from proposal to applied outcome on a leader (a histogram: its `_sum` and `_count`).
pub(crate) const COMMIT_SECONDS_SUM: &str = "hongbao_commit_seconds_sum";
pub(crate) const COMMIT_SECONDS_COUNT: &str = "hongbao_commit_seconds_count";
/// Slot-move steps the node drove as the meta shard's leader (arriving, sent, delivered, flipped).
pub(crate) const SLOT_MOVE_STEPS: &str = "hongbao_slot_move_steps_total";

/// The sum of the series of metric `name` on node `n` whose labels include every one of
/// `labels` (`key="value"`); None when the node does not answer.
pub(crate) async fn node_metric_where(c: &Cluster, n: u64, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let addr = c.topology.node(n)?.metrics_addr.clone();
    let body = c.scraper().metrics(&addr).await?;
    let mut sum = 0.0;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let Some(series) = rest.strip_prefix('{') else { continue };
        let Some((inside, value)) = series.split_once('}') else { continue };
        let have: Vec<&str> = inside.split(',').map(str::trim).collect();
        if labels.iter().all(|(k, v)| have.contains(&format!("{k}=\"{v}\"").as_str())) {
            sum += value.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    Some(sum)
}

/// The pid of node `n`'s process (None: not running here).
pub(crate) fn pid_of(c: &Cluster, n: u64) -> Option<u32> {
    let name = format!("node-{n}");
    c.pids().into_iter().find(|(p, _)| *p == name).map(|(_, pid)| pid)
}

/// Sends `sig` (STOP, CONT, ...) to node `n`'s process with kill(1): Ok(pid) once kill exits 0.
pub(crate) fn signal(c: &Cluster, n: u64, sig: &str) -> Result<u32, String> {
    let pid = pid_of(c, n).ok_or_else(|| format!("node {n} has no process to send SIG{sig}"))?;
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .map_err(|e| format!("kill -{sig} {pid} (node {n}) did not run: {e}"))?;
    if !status.success() {
        return Err(format!("kill -{sig} {pid} (node {n}) failed: {status}"));
    }
    Ok(pid)
}

/// The state letter of a process in /proc/<pid>/stat (R, S, D, T for stopped, Z, ...).
pub(crate) fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": comm may hold spaces and parentheses, the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Waits up to `within` for process `pid` to be in (`stopped`) or out of state T.
pub(crate) async fn stopped_within(pid: u32, stopped: bool, within: Duration) -> Result<char, String> {
    let mut state;
    let ok = eventually!(within, {
        state = process_state(pid);
        state.is_some_and(|s| (s == 'T') == stopped)
    });
    match (ok, state) {
        (true, Some(s)) => Ok(s),
        (_, s) => Err(format!("process {pid} is in state {s:?} after {within:?}, want {}", if stopped { "T" } else { "not T" })),
    }
}

pub(crate) async fn sleep(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Sleeps what is left of `ms` since `t`.
pub(crate) async fn sleep_rest(t: Instant, ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms).saturating_sub(t.elapsed())).await;
}

/// After a kill or a cut of `group`: every shard `led` (led by the group before) gets a leader
/// outside it within `within`.
pub(crate) async fn leaders_moved(c: &Cluster, group: &[u64], led: &[u32], within: Duration, what: &str) -> Result<String, String> {
    if led.is_empty() {
        return Err(format!("{what}: nodes {group:?} led no shard when the fault began, so it could not move a leader"));
    }
    let t = Instant::now();
    let rest = others(c, group);
    let mut moved = BTreeMap::new();
    let ok = eventually!(within, {
        for &s in led {
            if let std::collections::btree_map::Entry::Vacant(e) = moved.entry(s) {
                if let Some(l) = led_among(c, &rest, s).await {
                    e.insert(l);
                }
            }
        }
        moved.len() == led.len()
    });
    if ok {
        Ok(format!("{what}: shard(s) {led:?} of nodes {group:?} led by {moved:?} after {} ms", t.elapsed().as_millis()))
    } else {
        Err(format!("{what}: shard(s) {led:?} of nodes {group:?} had no leader outside them within {within:?} (moved: {moved:?})"))
    }
}

/// The shards led by any node of `group`, by the cluster's view (none when no node answered:
/// the fault that follows then records a miss, "led no shard", never a pass).
pub(crate) async fn led_by_group(c: &Cluster, group: &[u64]) -> Vec<u32> {
    c.try_leaders().await.unwrap_or_default().into_iter().filter(|(_, l)| group.contains(l)).map(|(s, _)| s).collect()
}

/// Whether every replica node `n` holds is a follower or a leader (not a learner, not catching
/// up), as the node itself says.
pub(crate) async fn is_voter_everywhere(c: &Cluster, n: u64) -> bool {
    use hongbao_proto::v1::ReplicaRole;
    let Ok(st) = c.node_client().status_of(&c.node_addr(n)).await else { return false };
    let shards: Vec<_> = st.nodes.iter().flat_map(|x| x.shards.iter()).collect();
    !shards.is_empty() && shards.iter().all(|s| matches!(s.role(), ReplicaRole::Follower | ReplicaRole::Leader))
}

/// The node says its clock is not trusted (Ok: the reason), within `within`.
pub(crate) async fn untrusted(c: &Cluster, n: u64, within: Duration) -> Option<String> {
    let mut why;
    let ok = eventually!(within, {
        why = local(c, n).await.map(|s| s.clock_untrusted).unwrap_or_default();
        !why.is_empty()
    });
    ok.then_some(why)
}

/// The node trusts its clock again within `within`.
pub(crate) async fn trusted(c: &Cluster, n: u64, within: Duration) -> Result<(), String> {
    let mut why;
    let ok = eventually!(within, {
        match local(c, n).await {
            Some(s) => {
                why = s.clock_untrusted;
                why.is_empty()
            }
            None => {
                why = "no answer".into();
                false
            }
        }
    });
    if ok {
        Ok(())
    } else {
        Err(format!("node {n}'s clock still untrusted {within:?} after it was healed: {why}"))
    }
}
