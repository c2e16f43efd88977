//! Snapshot faults: followers cut off past the purged log while leaders move (a snapshot
//! storm), and the leader's snapshot file torn on disk while a follower needs it.

use crate::chaos::effects::Log;
use crate::chaos::probes::*;
use crate::Cluster;
use rand::seq::SliceRandom;
use rand::Rng;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Cut a node off while the others write and move leaders about; heal; it must catch up, by
/// snapshot when the leaders purged what it lacked.
pub(crate) async fn snapshot_storm(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let f = c.topology.nodes.choose(rng).expect("nodes").id;
    let rest = others(c, &[f]);
    let before = metric_sum(c, SNAPSHOTS_INSTALLED).await;
    log.note(format!("cut node {f} off; move leaders among {rest:?} meanwhile"));
    let t = Instant::now();
    cut(c, &[f]).await;
    let mut moves = Vec::new();
    for _ in 0..3 {
        sleep(1_300).await;
        let shard = c.topology.shards.choose(rng).expect("shards").id;
        let to = *rest.choose(rng).expect("others");
        let r = c.node_client().with_deadline(Duration::from_secs(3)).transfer_leader(shard, to).await;
        moves.push(format!(
            "shard {shard} -> node {to}: {}",
            if r.is_ok() { "ok".to_string() } else { format!("{:?}", r.err().map(|e| e.code())) }
        ));
    }
    log.note(format!("leader moves: {}", moves.join("; ")));
    sleep_rest(t, 4_500).await;
    log.note(format!("heal node {f}"));
    clear_faults(c).await;
    log.check(catch_up(c, f, Duration::from_secs(15)).await.map(|d| format!("node {f} caught up in {} ms after the cut", d.as_millis())));
    let after = metric_sum(c, SNAPSHOTS_INSTALLED).await;
    log.note(format!("snapshot installs: {before} before the cut, {after} after"));
    log.effects.installs += (after - before).max(0.0);
    sleep(1_000).await;
}

/// Truncates a file to half its length; its (old, new) length.
pub(crate) fn truncate_half(p: &std::path::Path) -> Option<(u64, u64)> {
    let len = std::fs::metadata(p).ok()?.len();
    let f = std::fs::OpenOptions::new().write(true).open(p).ok()?;
    f.set_len(len / 2).ok()?;
    Some((len, len / 2))
}

/// A follower left behind the purged log, and the leader's snapshot file of that shard torn
/// (truncated to half) on disk while the follower needs it: the refusal must show in the
/// follower's `hongbao_snapshots_received_total{result="failed"}` for that shard. The workload
/// holds still meanwhile, so the leader builds no whole snapshot over the torn one before it is
/// sent (with writes flowing it builds one every SMALL_SNAPSHOT_EVERY entries, and a send could
/// read each new file before the tear). Then the workload goes on, the leader builds a whole
/// snapshot, and the follower must catch up on it (and, checked after the run, end with exactly
/// the leader's data).
pub(crate) async fn corrupt_snapshot(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let Some((s, l)) = random_leader(c, rng).await else {
        log.note("no leader to take a snapshot from; waiting");
        sleep(1_000).await;
        return;
    };
    let f = *others(c, &[l]).choose(rng).expect("others");
    let built = c.node_metric(l, SNAPSHOTS_BUILT).await.unwrap_or(0.0);
    log.note(format!("cut node {f} off; wait for node {l} (leader of shard {s}) to snapshot and purge"));
    cut(c, &[f]).await;
    let t = Instant::now();
    let snapped = eventually!(Duration::from_secs(10), {
        c.node_metric(l, SNAPSHOTS_BUILT).await.unwrap_or(0.0) >= built + 3.0 && t.elapsed() > Duration::from_secs(3)
    });
    if !snapped {
        log.note(format!("node {l} built fewer than 3 snapshots in 10 s"));
    }
    log.shared.hold.store(true, Ordering::Relaxed);
    let still = builds_stop(c, l).await;
    log.note(format!("workload held; node {l} built no snapshot for 1.5 s: {still}"));
    tear_until_refused(c, s, l, f, log).await;
    log.shared.hold.store(false, Ordering::Relaxed);
    log.note("workload goes on; the leader builds a whole snapshot");
    let installed = c.node_metric(f, SNAPSHOTS_INSTALLED).await.unwrap_or(0.0);
    match catch_up(c, f, Duration::from_secs(20)).await {
        Ok(d) => {
            let now = c.node_metric(f, SNAPSHOTS_INSTALLED).await.unwrap_or(0.0);
            log.proved(format!(
                "node {f} caught up in {} ms past the torn snapshots ({} snapshot install(s) meanwhile)",
                d.as_millis(),
                now - installed
            ));
        }
        Err(e) => log.missed(e),
    }
    sleep(1_000).await;
}

/// Waits (up to 15 s) until node `l` has built no snapshot for 1.5 s; whether it did.
async fn builds_stop(c: &Cluster, l: u64) -> bool {
    let t = Instant::now();
    let mut last = (c.node_metric(l, SNAPSHOTS_BUILT).await.unwrap_or(0.0), Instant::now());
    while t.elapsed() < Duration::from_secs(15) {
        sleep(250).await;
        let now = c.node_metric(l, SNAPSHOTS_BUILT).await.unwrap_or(0.0);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= Duration::from_millis(1_500) {
            return true;
        }
    }
    false
}

/// Tears node `l`'s snapshot file of shard `s`, heals follower `f` and waits (up to 10 s) for `f`
/// to refuse a torn copy, tearing again any newer file the leader built meanwhile.
async fn tear_until_refused(c: &Cluster, s: u32, l: u64, f: u64, log: &mut Log<'_>) {
    let shard = s.to_string();
    let failed = [("shard", shard.as_str()), ("result", "failed")];
    let refused_before = node_metric_where(c, f, SNAPSHOTS_RECEIVED, &failed).await.unwrap_or(0.0);
    let sent_failed_before = node_metric_where(c, l, SNAPSHOTS_SENT, &failed).await.unwrap_or(0.0);
    let file = c.node_dir(l).join("snapshots").join(format!("shard-{s}.snap"));
    let mut left = None;
    let mut torn = tear(&file, &mut left, log);
    log.note(format!("heal node {f}; wait for it to refuse a torn copy of {}", file.display()));
    clear_faults(c).await;
    let mut refused = refused_before;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        sleep(100).await;
        refused = node_metric_where(c, f, SNAPSHOTS_RECEIVED, &failed).await.unwrap_or(refused);
        if refused > refused_before {
            break;
        }
        torn += tear(&file, &mut left, log);
    }
    log.effects.corrupted += torn;
    let sent_failed = node_metric_where(c, l, SNAPSHOTS_SENT, &failed).await.unwrap_or(0.0);
    if refused > refused_before {
        log.proved(format!(
            "node {f} refused {} torn snapshot stream(s) of shard {s} after {torn} tear(s) ({} stream(s) of node {l} failed)",
            refused - refused_before,
            sent_failed - sent_failed_before
        ));
    } else {
        log.missed(format!(
            "node {f} refused no snapshot of shard {s} in 10 s of tearing node {l}'s file {torn} times ({SNAPSHOTS_RECEIVED}{{result=\"failed\"}} stayed {refused})"
        ));
    }
}

/// Truncates the snapshot file to half its length unless it is still the length this left it
/// at (`left`): 1 when it tore a file, 0 otherwise.
fn tear(file: &std::path::Path, left: &mut Option<u64>, log: &mut Log<'_>) -> usize {
    if std::fs::metadata(file).ok().map(|m| m.len()) == *left {
        return 0;
    }
    match truncate_half(file) {
        Some((a, b)) => {
            log.note(format!("truncated {} from {a} to {b} bytes", file.display()));
            *left = Some(b);
            1
        }
        None => 0,
    }
}
