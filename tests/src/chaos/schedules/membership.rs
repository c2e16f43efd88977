//! Membership under load: a node replaced online (`hongbao cluster replace-node`) and slots
//! moved between shards (`hongbao cluster move-slot`), a leader killed meanwhile.

use crate::chaos::effects::Log;
use crate::chaos::probes::*;
use crate::Cluster;
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// reshape: membership changes online under the workload. A new node replaces one region's
/// node in every shard it holds (`hongbao cluster replace-node`: learner, caught up, voter, then
/// the old one out of the Raft group and the map), while a shard's leader is killed and
/// restarted in the middle of it: the kill must land while the command still runs.
pub(crate) async fn reshape(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let region = c.topology.regions.choose(rng).expect("regions").name.clone();
    let Some(old) = c.topology.nodes_in(&region).iter().map(|n| n.id).find(|n| !c.topology.shards_on(*n).is_empty()) else {
        log.missed(format!("region {region} has no node holding a shard to replace"));
        sleep(1_000).await;
        return;
    };
    let new = c.next_node_id();
    let spec = c.prepare_node(new, &region);
    c.start_node(new);
    log.note(format!("replace node {old} ({region}) by new node {new}, online"));
    let t = Instant::now();
    let (o, n) = (old.to_string(), new.to_string());
    let args = [
        "cluster",
        "replace-node",
        "--old",
        &o,
        "--new",
        &n,
        "--region",
        &region,
        "--addr",
        &spec.addr,
        "--metrics-addr",
        &spec.metrics_addr,
    ];
    let mut child = c.cli_spawn(&args);
    sleep(800).await;
    match a_leader(c, rng, Duration::from_secs(2)).await {
        Some((victim, led)) => {
            log.note(format!("kill -9 node {victim} (leader of {led:?}) while the replacement runs"));
            c.kill(victim);
            // Asked after the kill returned: a command still running then was running at the kill.
            match child.try_wait() {
                Ok(None) => log.proved(format!("node {victim}, leader of {led:?}, died while replace-node {old} -> {new} was running")),
                Ok(Some(s)) => log.missed(format!("replace-node {old} -> {new} had already ended ({s}) when node {victim} was killed")),
                Err(e) => log.missed(format!("replace-node {old} -> {new}: {e}")),
            }
            sleep(1_500).await;
            log.note(format!("restart node {victim}"));
            c.start_node(victim);
        }
        None => log.missed(format!("no node led a shard 0.8 s into replace-node {old} -> {new}, so none was killed")),
    }
    if finished(c, child, &format!("replace-node {old} -> {new}"), log).await.is_none() {
        return;
    }
    let map = c.sync_map();
    let moved = map.node(old).is_none() && map.shards.iter().all(|s| !s.replicas.contains(&old)) && !map.shards_on(new).is_empty();
    if moved {
        log.effects.replaced += 1;
        log.proved(format!(
            "node {new} replaced node {old} in shards {:?} in {} ms, with a leader killed meanwhile (map version {})",
            map.shards_on(new).iter().map(|s| s.id).collect::<Vec<_>>(),
            t.elapsed().as_millis(),
            map.version
        ));
    } else {
        log.missed(format!("after replace-node {old} -> {new} the map still says: {:?}", map.shards));
    }
    let voter = eventually!(Duration::from_secs(10), is_voter_everywhere(c, new).await);
    if voter {
        log.proved(format!("node {new} votes (follower or leader) in every shard it holds"));
    } else {
        log.missed(format!("node {new} is not a voter of every shard it holds"));
    }
    log.note(format!("stop node {old} (no replica left)"));
    c.stop(old);
    sleep(1_000).await;
}

/// Moves `count` random slots to other shards and back, one move at a time, under the bank
/// workload. Until one kill has landed in this cycle, each move kills the node driving it (the
/// meta shard's leader) as soon as it has done a step and restarts it 1.5 s later; the kill
/// counts only when the move was half-way (fewer than its 4 steps done) and the command still
/// running. Each move must end with the served map routing the slot to its destination; the
/// checker and the replicas' final balances prove no money was lost or doubled.
pub(crate) async fn move_slots(c: &mut Cluster, rng: &mut impl Rng, count: usize, log: &mut Log<'_>) {
    let shards: Vec<u32> = c.topology.shards.iter().map(|s| s.id).collect();
    // Slots holding the workload's wallets, so every move carries money that is in use.
    let mut slots: Vec<u32> = log.shared.users.iter().map(|u| c.topology.slot_of(*u)).collect::<BTreeSet<u32>>().into_iter().collect();
    slots.shuffle(rng);
    slots.truncate(count);
    let home: Vec<(u32, u32)> = slots.iter().map(|s| (*s, c.topology.owner_of_slot(*s).expect("owned"))).collect();
    let away: Vec<(u32, u32)> = home
        .iter()
        .map(|(s, from)| (*s, *shards.iter().filter(|x| *x != from).collect::<Vec<_>>().choose(rng).copied().expect("2+ shards")))
        .collect();
    let mut landed = false;
    for (slot, to) in away.into_iter().chain(home) {
        log.note(format!("move slot {slot} to shard {to}, online"));
        let t = Instant::now();
        let (s, d) = (slot.to_string(), to.to_string());
        let driver = if landed { None } else { c.try_leaders().await.ok().and_then(|l| l.get(&c.topology.meta_shard()).copied()) };
        let steps_before = match driver {
            Some(n) => c.node_metric(n, SLOT_MOVE_STEPS).await,
            None => None,
        };
        let mut child = c.cli_spawn(&["cluster", "move-slot", &s, "--to-shard", &d]);
        if let (Some(driver), Some(before)) = (driver, steps_before) {
            landed = kill_mid_move(c, &mut child, driver, before, slot, log).await;
        }
        let Some(stdout) = finished(c, child, &format!("move-slot {slot} -> {to}"), log).await else { continue };
        let map = c.sync_map();
        let wallets = stdout.rsplit("), ").next().and_then(|s| s.split(' ').next()).unwrap_or("?").to_string();
        if map.owner_of_slot(slot) == Some(to) {
            log.proved(format!(
                "slot {slot} moved to shard {to} with {wallets} wallets in {} ms (map version {})",
                t.elapsed().as_millis(),
                map.version
            ));
        } else {
            log.missed(format!("after move-slot {slot} -> {to} the map gives it to {:?}", map.owner_of_slot(slot)));
        }
    }
}

/// Every 5 ms, until the move-slot command ends: once `driver` has done a step of the move
/// (its `hongbao_slot_move_steps_total` past `before`), kill it, and restart it 1.5 s later.
/// Whether the kill landed half-way through the move, the command still running.
async fn kill_mid_move(c: &mut Cluster, child: &mut std::process::Child, driver: u64, before: f64, slot: u32, log: &mut Log<'_>) -> bool {
    let t = Instant::now();
    let steps = loop {
        if !matches!(child.try_wait(), Ok(None)) || t.elapsed() > Duration::from_secs(10) {
            log.note(format!("move of slot {slot} ended before node {driver} was seen driving it; no kill this time"));
            return false;
        }
        let now = c.node_metric(driver, SLOT_MOVE_STEPS).await.unwrap_or(before);
        if now > before {
            break now - before;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    if steps >= 4.0 {
        log.note(format!("node {driver} had done all {steps} steps of slot {slot}'s move when seen; no kill this time"));
        return false;
    }
    c.kill(driver);
    let running = matches!(child.try_wait(), Ok(None));
    log.note(format!("kill -9 node {driver} (the meta shard's leader, driving the move), seen after {steps} of the move's 4 steps"));
    let landed = running;
    if landed {
        log.effects.killed_mid_move += 1;
        log.proved(format!(
            "node {driver}, driving the move of slot {slot}, died with the command running, at least {steps} of the move's 4 steps done"
        ));
    } else {
        log.note(format!("move-slot of slot {slot} had ended by the time node {driver} was dead"));
    }
    sleep(1_500).await;
    log.note(format!("restart node {driver}"));
    c.start_node(driver);
    landed
}

/// The output of a CLI command the schedule spawned, once it exited 0 (the map versions it made
/// noted for `sync_map`); None, and the failure in the log, otherwise.
pub(crate) async fn finished(c: &Cluster, child: std::process::Child, what: &str, log: &mut Log<'_>) -> Option<String> {
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.expect("join").expect("hongbao");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if !out.status.success() {
        log.missed(format!("{what} failed: {}{}", text(&out.stdout), text(&out.stderr)));
        return None;
    }
    let stdout = text(&out.stdout);
    c.saw_versions(&stdout);
    Some(stdout)
}
