//! The faults a seed chooses: crashes and restarts, a disk lost and replaced, partitions (one
//! node, one region, one way), the network's weather (loss, lost replies, duplicates, slow
//! messages), clock jumps, leader transfers, and replayed requests. Bounded so that the cluster
//! can always recover once they stop: at most a minority of each shard's replicas is down.

use crate::cluster::Cluster;
use crate::net::Weather;
use crate::trace::Trace;
use hongbao_topology::NodeId;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;

#[derive(Debug, Default, Clone, Copy)]
pub struct FaultCounts {
    pub crashes: u64,
    pub restarts: u64,
    pub disks_lost: u64,
    pub partitions: u64,
    pub heals: u64,
    pub weather: u64,
    pub clock_jumps: u64,
    pub leader_transfers: u64,
    pub replays: u64,
}

impl FaultCounts {
    pub fn total(&self) -> u64 {
        self.crashes + self.disks_lost + self.partitions + self.weather + self.clock_jumps + self.leader_transfers + self.replays
    }

    pub fn add(&mut self, o: &FaultCounts) {
        self.crashes += o.crashes;
        self.restarts += o.restarts;
        self.disks_lost += o.disks_lost;
        self.partitions += o.partitions;
        self.heals += o.heals;
        self.weather += o.weather;
        self.clock_jumps += o.clock_jumps;
        self.leader_transfers += o.leader_transfers;
        self.replays += o.replays;
    }
}

/// What the driver does besides sending commands.
pub enum Fault {
    Crash(NodeId),
    LoseDisk(NodeId),
    Restart(NodeId),
    Isolate(Vec<NodeId>),
    OneWay(NodeId, NodeId),
    Heal,
    Weather(Weather),
    ClockJump(NodeId, i64),
    TransferLeader(u32, NodeId),
    Replay,
}

pub struct Schedule {
    rng: ChaCha8Rng,
    pub counts: FaultCounts,
    /// Nodes down now (crashed, or with a replaced disk, not restarted yet).
    down: BTreeSet<NodeId>,
}

impl Schedule {
    pub fn new(rng: ChaCha8Rng) -> Schedule {
        Schedule { rng, counts: FaultCounts::default(), down: BTreeSet::new() }
    }

    pub fn down(&self) -> Vec<NodeId> {
        self.down.iter().copied().collect()
    }

    /// Whether taking `n` down keeps a majority of every shard's replicas up with their data. A
    /// replica rejoining after a lost disk counts as down: with two of three replicas' disks lost
    /// before the first caught up, no majority holds the committed history any more, and no
    /// system can recover that (the fault model is a minority of failures).
    fn may_take_down(&self, c: &Cluster, n: NodeId) -> bool {
        c.topology.shards.iter().all(|s| {
            let down = s.replicas.iter().filter(|r| self.down.contains(r) || **r == n || c.rejoining(**r)).count();
            down <= (s.replicas.len() - 1) / 2
        })
    }

    /// The next fault, drawn by the seed.
    pub fn next(&mut self, c: &Cluster) -> Fault {
        let nodes = c.node_ids();
        let any = |rng: &mut ChaCha8Rng| nodes[rng.gen_range(0..nodes.len())];
        let roll = self.rng.gen_range(0..100);
        if !self.down.is_empty() && roll < 30 {
            let down: Vec<NodeId> = self.down();
            return Fault::Restart(down[self.rng.gen_range(0..down.len())]);
        }
        match roll {
            0..=19 => {
                let n = any(&mut self.rng);
                if self.down.contains(&n) || !self.may_take_down(c, n) {
                    return Fault::Heal;
                }
                if self.rng.gen_range(0..4) == 0 {
                    Fault::LoseDisk(n)
                } else {
                    Fault::Crash(n)
                }
            }
            20..=34 => {
                // One node, or a whole region, cut off both ways.
                let n = any(&mut self.rng);
                let region = c.topology.region_of(n).unwrap_or_default().to_string();
                let whole_region = self.rng.gen_range(0..2) == 0;
                let cut: Vec<NodeId> = if whole_region {
                    nodes.iter().copied().filter(|m| c.topology.region_of(*m) == Some(region.as_str())).collect()
                } else {
                    vec![n]
                };
                Fault::Isolate(cut)
            }
            35..=42 => {
                let a = any(&mut self.rng);
                let b = any(&mut self.rng);
                if a == b {
                    Fault::Heal
                } else {
                    Fault::OneWay(a, b)
                }
            }
            43..=57 => Fault::Heal,
            58..=69 => {
                let w = match self.rng.gen_range(0..4) {
                    0 => Weather::CALM,
                    1 => Weather { loss_pct: self.rng.gen_range(1..15), ..Weather::CALM },
                    2 => Weather { reply_loss_pct: self.rng.gen_range(1..10), dup_pct: self.rng.gen_range(1..15), ..Weather::CALM },
                    _ => Weather { jitter_ms: self.rng.gen_range(2..30), slow_pct: self.rng.gen_range(1..20), ..Weather::CALM },
                };
                Fault::Weather(w)
            }
            70..=79 => {
                let n = any(&mut self.rng);
                // Mostly small steps (NTP slews, a VM pause), sometimes a leap the node must refuse to stamp.
                let ms = if self.rng.gen_range(0..3) == 0 { self.rng.gen_range(-60_000..60_000) } else { self.rng.gen_range(-400..400) };
                Fault::ClockJump(n, ms)
            }
            80..=89 => {
                let shards = &c.topology.shards;
                let s = &shards[self.rng.gen_range(0..shards.len())];
                let to = s.replicas[self.rng.gen_range(0..s.replicas.len())];
                Fault::TransferLeader(s.id, to)
            }
            _ => Fault::Replay,
        }
    }

    /// Applies `f` to the cluster (replays are the driver's: they need a client).
    pub async fn apply(&mut self, f: &Fault, c: &mut Cluster, trace: &Trace) -> anyhow::Result<()> {
        match f {
            Fault::Crash(n) => {
                c.crash(*n).await?;
                self.down.insert(*n);
                self.counts.crashes += 1;
            }
            Fault::LoseDisk(n) => {
                c.crash(*n).await?;
                c.wipe(*n)?;
                self.down.insert(*n);
                self.counts.disks_lost += 1;
            }
            Fault::Restart(n) => {
                c.restart(*n).await?;
                self.down.remove(n);
                self.counts.restarts += 1;
            }
            Fault::Isolate(cut) => {
                for a in cut {
                    for b in c.node_ids().into_iter().filter(|b| !cut.contains(b)) {
                        c.net.cut(*a, b);
                        c.net.cut(b, *a);
                    }
                }
                trace.note(format!("partition: {cut:?} cut off"));
                self.counts.partitions += 1;
            }
            Fault::OneWay(a, b) => {
                c.net.cut(*a, *b);
                trace.note(format!("partition: nothing from {a} reaches {b}"));
                self.counts.partitions += 1;
            }
            Fault::Heal => {
                if c.net.cut_links() > 0 {
                    c.net.heal();
                    trace.note("partitions healed".into());
                    self.counts.heals += 1;
                }
            }
            Fault::Weather(w) => {
                c.net.set_weather(*w);
                trace.note(format!("weather: {w:?}"));
                self.counts.weather += 1;
            }
            Fault::ClockJump(n, ms) => {
                c.clock(*n).jump(*ms);
                trace.note(format!("node {n}'s clock jumps {ms} ms"));
                self.counts.clock_jumps += 1;
            }
            Fault::TransferLeader(shard, to) => {
                let leader = c.up().into_iter().filter_map(|n| c.host(n)).find(|h| h.replica(*shard).is_ok_and(|r| h.is_leader(&r)));
                if let Some(h) = leader {
                    let from = h.node_id;
                    // Awaited: a transfer waits at most its own timeout.
                    let res = h.transfer_leader(*shard, *to).await;
                    trace.note(format!("shard {shard}: leadership {from} -> {to}: {}", if res.is_ok() { "moved" } else { "refused" }));
                    self.counts.leader_transfers += 1;
                }
            }
            Fault::Replay => self.counts.replays += 1,
        }
        Ok(())
    }
}
