//! The fault cycles of every schedule, one file per family: processes (kill, pause, restart,
//! disk loss), network (partitions, slow links), clocks, snapshots, membership (node
//! replacement, slot moves). Each cycle injects, holds, heals and proves its effect.

mod clocks;
mod membership;
mod network;
mod processes;
mod snapshots;

use super::effects::{Effects, Log};
use super::netns;
use super::probes::{clear_faults, metric_sum, SNAPSHOTS_INSTALLED};
use super::schedule::Schedule;
use super::workload::Shared;
use crate::Cluster;
use clocks::{clock_jump, clock_leap};
use membership::{move_slots, reshape};
use network::{isolate_leader, netns_partition, partition_region, slow_links};
use processes::{disk_loss, kill_leader, kill_region, pause_node, rolling_restart};
use rand::Rng;
use snapshots::{corrupt_snapshot, snapshot_storm};
use std::time::Duration;

/// One fault cycle: inject, hold, heal, let the cluster recover; each proves its effect.
pub(crate) async fn inject(
    schedule: Schedule,
    c: &mut Cluster,
    net: Option<&netns::Net>,
    rng: &mut impl Rng,
    shared: &Shared,
    log: &mut Vec<(Duration, String)>,
    effects: &mut Effects,
) {
    let cycle = effects.cycles;
    effects.cycles += 1;
    let mut log = Log { shared, entries: log, effects };
    match schedule {
        Schedule::KillLeader | Schedule::BigEntries => kill_leader(c, rng, &mut log).await,
        Schedule::KillRegion => kill_region(c, rng, &mut log).await,
        Schedule::PartitionRegion => partition_region(c, rng, &mut log).await,
        Schedule::IsolateLeader => isolate_leader(c, rng, &mut log).await,
        Schedule::PauseNode => pause_node(c, rng, &mut log).await,
        Schedule::SlowLinks => slow_links(c, rng, &mut log).await,
        Schedule::RollingRestart => rolling_restart(c, &mut log).await,
        Schedule::ClockJump => clock_jump(c, rng, &mut log).await,
        Schedule::DiskLoss => disk_loss(c, rng, &mut log).await,
        Schedule::SnapshotStorm => snapshot_storm(c, rng, &mut log).await,
        Schedule::ClockLeap => clock_leap(c, rng, &mut log).await,
        Schedule::CorruptSnapshot => corrupt_snapshot(c, rng, &mut log).await,
        Schedule::NetnsPartition => netns_partition(c, net.expect("netns-partition runs on a netns cluster"), rng, &mut log).await,
        // Membership and slot moves in turn, a replacement first: a short run replaces a node.
        Schedule::Reshape if cycle.is_multiple_of(2) => reshape(c, rng, &mut log).await,
        Schedule::Reshape => move_slots(c, rng, 1, &mut log).await,
        Schedule::MoveSlots => move_slots(c, rng, 5, &mut log).await,
    }
}

/// Effects proved over the whole window rather than per cycle.
pub(crate) async fn finish(schedule: Schedule, c: &Cluster, log: &mut Log<'_>) {
    match schedule {
        Schedule::SnapshotStorm => {
            let n = log.effects.installs;
            if n > 0.0 {
                log.proved(format!("{n} snapshot installs in all, during the storm"));
            } else {
                log.missed("no snapshot was installed anywhere during the storm (hongbao_snapshots_installed_total stayed 0)");
            }
        }
        Schedule::CorruptSnapshot => {
            if log.effects.corrupted == 0 {
                log.missed("no snapshot file was ever corrupted");
            }
            let n = metric_sum(c, SNAPSHOTS_INSTALLED).await;
            log.note(format!("{n} snapshot installs in all"));
        }
        Schedule::Reshape if log.effects.replaced == 0 => log.missed("no node was replaced in the whole run"),
        Schedule::MoveSlots if log.effects.killed_mid_move == 0 => {
            log.missed("no slot move had its driving leader killed half-way in the whole run")
        }
        _ => {}
    }
}

/// Every node running and reachable, no injected fault left.
pub(crate) async fn heal(c: &mut Cluster) {
    if c.is_containers() {
        // No in-node faults there: reconnect every region, start every container.
        c.heal_containers();
        return;
    }
    for n in c.topology.nodes.iter().map(|n| n.id).collect::<Vec<_>>() {
        if c.is_running(n) {
            c.signal(n, "CONT");
        } else {
            c.start_node(n);
        }
    }
    for r in c.topology.regions.iter().map(|r| r.name.clone()).collect::<Vec<_>>() {
        c.start_region(&r);
    }
    clear_faults(c).await;
}
