//! The chaos suite: a real cluster (nodes and routers as processes), a recorded client workload,
//! a fault schedule, then quiescence and the bank checker. `hongbao-chaos` (scripts/chaos) and
//! tests/tests/chaos.rs both run it.

pub mod checker;
pub mod history;
pub mod netns;
pub mod workload;

use crate::{Cluster, Spec};
use checker::Final;
use history::{Event, Op, Outcome, Size};
use hongbao_client::{settle, Client};
use hongbao_proto::v1::{AuditReply, Faults, NodeStatus, ReplicaRole};
use hongbao_proto::ErrorCode;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use workload::Shared;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    KillLeader,
    KillRegion,
    PartitionRegion,
    IsolateLeader,
    PauseNode,
    SlowLinks,
    RollingRestart,
    ClockJump,
    DiskLoss,
    SnapshotStorm,
    ClockLeap,
    BigEntries,
    CorruptSnapshot,
    NetnsPartition,
    Reshape,
    MoveSlots,
}

impl Schedule {
    pub const ALL: [Schedule; 16] = [
        Schedule::KillLeader,
        Schedule::KillRegion,
        Schedule::PartitionRegion,
        Schedule::IsolateLeader,
        Schedule::PauseNode,
        Schedule::SlowLinks,
        Schedule::RollingRestart,
        Schedule::ClockJump,
        Schedule::DiskLoss,
        Schedule::SnapshotStorm,
        Schedule::ClockLeap,
        Schedule::BigEntries,
        Schedule::CorruptSnapshot,
        Schedule::NetnsPartition,
        Schedule::Reshape,
        Schedule::MoveSlots,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Schedule::KillLeader => "kill-leader",
            Schedule::KillRegion => "kill-region",
            Schedule::PartitionRegion => "partition-region",
            Schedule::IsolateLeader => "isolate-leader",
            Schedule::PauseNode => "pause-node",
            Schedule::SlowLinks => "slow-links",
            Schedule::RollingRestart => "rolling-restart",
            Schedule::ClockJump => "clock-jump",
            Schedule::DiskLoss => "disk-loss",
            Schedule::SnapshotStorm => "snapshot-storm",
            Schedule::ClockLeap => "clock-leap",
            Schedule::BigEntries => "big-entries",
            Schedule::CorruptSnapshot => "corrupt-snapshot",
            Schedule::NetnsPartition => "netns-partition",
            Schedule::Reshape => "reshape",
            Schedule::MoveSlots => "move-slots",
        }
    }

    pub fn parse(s: &str) -> Option<Schedule> {
        Schedule::ALL.into_iter().find(|x| x.name() == s)
    }

    /// Schedules that need replicas to fall behind the leaders' purged logs: their clusters
    /// snapshot every SMALL_SNAPSHOT_EVERY entries.
    fn small_snapshots(self) -> bool {
        matches!(self, Schedule::DiskLoss | Schedule::SnapshotStorm | Schedule::CorruptSnapshot)
    }

    /// Schedules that run on a cluster of containers too (`Options::containers`): their faults
    /// are docker's (kill, start) or the network's (disconnect a region from its links).
    pub fn runs_in_containers(self) -> bool {
        matches!(self, Schedule::KillLeader | Schedule::KillRegion | Schedule::PartitionRegion)
    }

    /// Schedules whose nodes each run in their own network namespace (root and `ip netns`).
    pub fn needs_netns(self) -> bool {
        self == Schedule::NetnsPartition
    }
}

/// Snapshot interval and log kept behind it for the snapshot schedules: a follower cut off for
/// a few seconds under the workload falls behind the purged log and needs a snapshot.
const SMALL_SNAPSHOT_EVERY: u64 = 100;
const SMALL_KEEP_BEHIND: u64 = 20;
/// +2 days: the clock-leap schedule's offset.
const TWO_DAYS_MS: i64 = 2 * 24 * 3600 * 1000;

pub struct Options {
    /// How long faults are injected while the workload runs.
    pub duration: Duration,
    pub workers: usize,
    pub seed: u64,
    /// Simulated one-way WAN latency between regions.
    pub wan_latency_ms: u64,
    /// Short, so packets expire and refund during the run.
    pub packet_ttl_ms: u64,
    pub users_per_shard: u64,
    /// Run on containers (scripts/cluster up --containers, the image of scripts/image) instead
    /// of processes: kill is `docker kill`, partition-region is `docker network disconnect`.
    pub containers: bool,
    /// 1: the 3 × 1 topology; 3: the 3 × 3 (each node holds one shard).
    pub nodes_per_region: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            duration: Duration::from_secs(20),
            workers: 9,
            seed: 7,
            wan_latency_ms: 5,
            packet_ttl_ms: 6_000,
            users_per_shard: 4,
            containers: false,
            nodes_per_region: 1,
        }
    }
}

/// Short, so that some calls made during a failover end "unknown" and the checker has to
/// settle them by re-sending.
const CLIENT_DEADLINE: Duration = Duration::from_secs(2);
/// Served-nothing gaps longer than this count as unavailability.
pub const UNAVAILABLE_GAP: Duration = Duration::from_millis(500);
/// Most sends of one request id when settling an unknown outcome after the run.
const RESOLVE_SENDS: u32 = 6;
/// Time bound of that settling, per operation. Never the binding one: RESOLVE_SENDS calls of
/// at most the settling client's 10 s deadline end before it.
const RESOLVE_WITHIN: Duration = Duration::from_secs(120);
/// How long the cluster gets to settle after the faults stop (relay drained, packets refunded).
const QUIESCE: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Report {
    pub schedule: String,
    pub ran_for: Duration,
    pub faults: Vec<(Duration, String)>,
    pub ops: usize,
    pub ok: usize,
    pub failures: BTreeMap<String, usize>,
    pub unknown: usize,
    pub resolved_ok: usize,
    /// (shard, start, length) of every gap with nothing served.
    pub windows: Vec<(u32, Duration, Duration)>,
    pub audits_during: usize,
    /// What the faults were seen to do (each schedule proves its fault took hold).
    pub effects: Vec<String>,
    pub violations: Vec<String>,
    pub logs: String,
}

impl Report {
    pub fn longest_window(&self) -> Duration {
        self.windows.iter().map(|w| w.2).max().unwrap_or_default()
    }

    pub fn p99_recovery(&self) -> Duration {
        let mut l: Vec<Duration> = self.windows.iter().map(|w| w.2).collect();
        l.sort();
        if l.is_empty() {
            return Duration::ZERO;
        }
        l[((l.len() * 99).div_ceil(100)).saturating_sub(1)]
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "schedule       {} ({:.1} s of faults)", self.schedule, self.ran_for.as_secs_f64())?;
        for (t, what) in &self.faults {
            writeln!(f, "  {:>7.2} s  {what}", t.as_secs_f64())?;
        }
        writeln!(
            f,
            "operations     {} ({} ok, {} failed, {} unknown at first, {} of them applied when re-sent)",
            self.ops,
            self.ok,
            self.failures.values().sum::<usize>(),
            self.unknown,
            self.resolved_ok
        )?;
        for (k, n) in &self.failures {
            writeln!(f, "  {n:>6}  {k}")?;
        }
        writeln!(
            f,
            "unavailability {} windows over {} ms; longest {} ms, p99 time to recover {} ms",
            self.windows.len(),
            UNAVAILABLE_GAP.as_millis(),
            self.longest_window().as_millis(),
            self.p99_recovery().as_millis()
        )?;
        for (s, start, len) in &self.windows {
            writeln!(f, "  shard {s}: from {:.2} s for {} ms", start.as_secs_f64(), len.as_millis())?;
        }
        writeln!(f, "effects        {} seen", self.effects.len())?;
        for e in &self.effects {
            writeln!(f, "  {e}")?;
        }
        writeln!(f, "audits         {} answered during the run", self.audits_during)?;
        if self.violations.is_empty() {
            writeln!(f, "checker        OK: money conserved, every acknowledged operation applied exactly once")
        } else {
            writeln!(f, "checker        {} VIOLATIONS", self.violations.len())?;
            for v in &self.violations {
                writeln!(f, "  - {v}")?;
            }
            writeln!(f, "logs kept in   {}", self.logs)
        }
    }
}

/// Runs one schedule on a fresh cluster and checks the money.
pub async fn run(schedule: Schedule, opts: &Options) -> anyhow::Result<Report> {
    if opts.containers && !schedule.runs_in_containers() {
        let ok: Vec<&str> = Schedule::ALL.into_iter().filter(|s| s.runs_in_containers()).map(|s| s.name()).collect();
        anyhow::bail!("{} does not run on containers; these do: {}", schedule.name(), ok.join(", "));
    }
    // Declared before the cluster, so dropped after it: the nodes are killed before their
    // namespaces go.
    let net = if schedule.needs_netns() {
        let d = Spec::default();
        let ids: Vec<u64> = (1..=(d.regions.len() * d.nodes_per_region) as u64).collect();
        Some(netns::Net::create(&ids)?)
    } else {
        None
    };
    let (mut c, users) = start_cluster(schedule, opts, net.as_ref()).await?;
    let mut proved_before = Vec::new();
    if c.is_containers() {
        // Whether a cut could come from the node's own filter: not when it has no such service.
        match c.set_faults(1, Faults::default()).await {
            Err(e) if e.to_lowercase().contains("unimplemented") => {
                proved_before.push("the containers' nodes have no fault-injection service: every cut is the network's".to_string())
            }
            Err(e) => anyhow::bail!("node 1 did not answer a SetFaults probe as expected: {e}"),
            Ok(()) => proved_before.push("(the image's nodes have the fault-injection service; the run never uses it)".to_string()),
        }
    }
    let shared = Shared::new(c.topology.clone(), users.clone(), schedule == Schedule::BigEntries);
    let regions: Vec<String> = c.topology.regions.iter().map(|r| r.name.clone()).collect();
    let clients: Vec<Arc<Client>> = regions.iter().map(|r| Arc::new(c.router_client(r).with_deadline(CLIENT_DEADLINE))).collect();
    workload::setup(&shared, &clients[0]).await?;

    let load = Load::start(opts, &shared, &clients);
    let (faults, ran_for, effects) = fault_window(schedule, opts, &mut c, net.as_ref(), &shared).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let audits = load.stop(&shared).await?;

    let settle = c.router_client(&regions[0]).with_deadline(Duration::from_secs(10));
    let mut report = Report {
        schedule: schedule.name().into(),
        ran_for,
        faults,
        effects: proved_before.into_iter().chain(effects.proved).collect(),
        violations: effects.missed.into_iter().map(|m| format!("effect not seen: {m}")).collect(),
        logs: c.keep_on_failure().display().to_string(),
        ..Report::default()
    };
    verify(&c, &shared, &settle, &users, &audits, &mut report).await;
    if !report.violations.is_empty() {
        if c.is_containers() {
            report.logs = c.save_container_logs().map(|p| p.display().to_string()).unwrap_or_else(|| "(not saved)".into());
        } else {
            let kept = std::mem::replace(&mut c.dir, tempfile::tempdir()?);
            let _ = kept.keep();
        }
    }
    Ok(report)
}

/// A fresh cluster (nodes and routers, short packet ttl, frequent snapshots), ready, and the
/// users of the run: `users_per_shard` in each shard.
async fn start_cluster(schedule: Schedule, opts: &Options, net: Option<&netns::Net>) -> anyhow::Result<(Cluster, Vec<u64>)> {
    let small = schedule.small_snapshots();
    let spec = Spec {
        routers: true,
        packet_ttl_ms: Some(opts.packet_ttl_ms),
        wan_latency_ms: opts.wan_latency_ms,
        snapshot_every: if small { SMALL_SNAPSHOT_EVERY } else { 2_000 },
        keep_behind_snapshot: if small { SMALL_KEEP_BEHIND } else { 500 },
        nodes_per_region: opts.nodes_per_region,
        ..Spec::default()
    };
    let c = match net {
        Some(net) => net.start_cluster(spec),
        None if opts.containers => Cluster::start_containers(spec)?,
        None => Cluster::start(spec),
    };
    c.wait_ready(Duration::from_secs(60)).await;
    let mut users = Vec::new();
    for s in &c.topology.shards {
        let mut u = 10_000;
        for _ in 0..opts.users_per_shard {
            u = c.topology.user_in_shard(s.id, u + 1);
            users.push(u);
        }
    }
    Ok((c, users))
}

/// The workload in flight: the workers, and an auditor asking for an audit every 2 s.
struct Load {
    workers: Vec<JoinHandle<()>>,
    auditor: JoinHandle<()>,
    audits: Arc<Mutex<Vec<AuditReply>>>,
}

impl Load {
    fn start(opts: &Options, shared: &Arc<Shared>, clients: &[Arc<Client>]) -> Load {
        let mut workers = Vec::new();
        for w in 0..opts.workers {
            workers.push(tokio::spawn(workload::worker(shared.clone(), clients[w % clients.len()].clone(), opts.seed * 1000 + w as u64)));
        }
        let audits: Arc<Mutex<Vec<AuditReply>>> = Arc::default();
        let auditor = {
            let (shared, client, audits) = (shared.clone(), clients[1 % clients.len()].clone(), audits.clone());
            tokio::spawn(async move {
                while !shared.stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    if let Ok(a) = client.audit().await {
                        audits.lock().expect("audits lock").push(a);
                    }
                }
            })
        };
        Load { workers, auditor, audits }
    }

    /// Stops the workload and waits for every operation in flight; the audits answered meanwhile.
    async fn stop(self, shared: &Shared) -> anyhow::Result<Vec<AuditReply>> {
        shared.stop.store(true, Ordering::Relaxed);
        for t in self.workers {
            t.await?;
        }
        self.auditor.await?;
        let audits = std::mem::take(&mut *self.audits.lock().expect("audits lock"));
        Ok(audits)
    }
}

/// Fault cycles of the schedule for `opts.duration` (after a quiet second), then every fault
/// healed. Returns the fault log, how long the faults ran, and the effects seen and missed.
async fn fault_window(
    schedule: Schedule,
    opts: &Options,
    c: &mut Cluster,
    net: Option<&netns::Net>,
    shared: &Shared,
) -> (Vec<(Duration, String)>, Duration, Effects) {
    let started = Instant::now();
    let mut faults = Vec::new();
    let mut effects = Effects::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    while started.elapsed() < opts.duration {
        inject(schedule, c, net, &mut rng, shared, &mut faults, &mut effects).await;
    }
    if let Some(net) = net {
        net.heal_all();
    }
    heal(c).await;
    faults.push((shared.start.elapsed(), "healed: every node running and linked, no injected faults".into()));
    let mut log = Log { shared, entries: &mut faults, effects: &mut effects };
    finish(schedule, c, &mut log).await;
    (faults, started.elapsed(), effects)
}

/// After the run: settle every unknown outcome, count, wait for quiescence, run the bank
/// checker, and check that every shard served something.
async fn verify(c: &Cluster, shared: &Shared, client: &Client, users: &[u64], audits: &[AuditReply], report: &mut Report) {
    resolve_unknown(shared, client, report).await;
    let history = shared.history.lock().expect("history lock").clone();
    summarize(&history, report, shared.start.elapsed());
    let fin = quiesce(client, &history, users).await;
    report.audits_during = audits.len();
    match fin {
        Ok(fin) => {
            report.violations.extend(checker::check(&history, audits, &fin));
            replicas_agree(c, &fin, report).await;
            if shared.big {
                big_entries_held(&history, &fin, report);
            }
        }
        Err(e) => report.violations.push(format!("cluster did not settle: {e}")),
    }
    for s in &c.topology.shards {
        if !history.iter().any(|e| e.shard == s.id && matches!(e.outcome, Outcome::Ok(_))) {
            report.violations.push(format!("shard {}: no operation acknowledged in the whole run", s.id));
        }
    }
}

/// A shard and the node leading it, at random (None when no shard has a leader right now).
async fn random_leader(c: &Cluster, rng: &mut impl Rng) -> Option<(u32, u64)> {
    let leaders: Vec<(u32, u64)> = c.leaders().await.into_iter().collect();
    leaders.choose(rng).copied()
}

async fn leader_of_random_shard(c: &Cluster, rng: &mut impl Rng) -> u64 {
    match random_leader(c, rng).await {
        Some((_, l)) => l,
        None => c.topology.nodes.choose(rng).expect("nodes").id,
    }
}

/// Every node but `group`.
fn others(c: &Cluster, group: &[u64]) -> Vec<u64> {
    c.topology.nodes.iter().map(|n| n.id).filter(|n| !group.contains(n)).collect()
}

async fn cut(c: &Cluster, group: &[u64]) {
    let others = others(c, group);
    for &n in group {
        set(c, n, Faults { cut_off: others.clone(), ..Faults::default() }).await;
    }
    for &n in &others {
        set(c, n, Faults { cut_off: group.to_vec(), ..Faults::default() }).await;
    }
}

/// No injected fault left on any node.
async fn clear_faults(c: &Cluster) {
    for n in c.topology.nodes.iter().map(|n| n.id) {
        set(c, n, Faults::default()).await;
    }
}

/// Replaces one node's faults; false when the node never took them.
async fn set(c: &Cluster, node: u64, f: Faults) -> bool {
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
async fn local(c: &Cluster, n: u64) -> Option<NodeStatus> {
    c.node_client().status_of(&c.node_addr(n)).await.ok().and_then(|r| r.nodes.into_iter().next())
}

/// The shards a node leads, in its own view (None: it did not answer).
async fn led_by(c: &Cluster, n: u64) -> Option<Vec<u32>> {
    let st = local(c, n).await?;
    Some(st.shards.iter().filter(|s| s.role() == ReplicaRole::Leader).map(|s| s.shard).collect())
}

/// Some node of `among` leads `shard` (in its own view).
async fn led_among(c: &Cluster, among: &[u64], shard: u32) -> Option<u64> {
    for &n in among {
        if led_by(c, n).await.unwrap_or_default().contains(&shard) {
            return Some(n);
        }
    }
    None
}

/// Evaluates `$cond` (it may await) every 200 ms until it holds or `$within` passes; whether it
/// held.
macro_rules! eventually {
    ($within:expr, $cond:expr) => {{
        let end = Instant::now() + $within;
        loop {
            if $cond {
                break true;
            }
            if Instant::now() > end {
                break false;
            }
            sleep(200).await;
        }
    }};
}

/// Per shard, the highest commit index any of `nodes` reports.
async fn committed(c: &Cluster, nodes: &[u64]) -> BTreeMap<u32, u64> {
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
async fn applied(c: &Cluster, n: u64) -> Option<BTreeMap<u32, u64>> {
    Some(local(c, n).await?.shards.iter().map(|s| (s.shard, s.applied)).collect())
}

/// Waits until `n` has applied, on every shard, what the other nodes had committed when the
/// wait began. Ok(time it took, the target) or Err(what was missing).
async fn catch_up(c: &Cluster, n: u64, within: Duration) -> Result<Duration, String> {
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
async fn metric_sum(c: &Cluster, name: &str) -> f64 {
    let mut sum = 0.0;
    for n in c.topology.nodes.iter().map(|n| n.id) {
        sum += c.node_metric(n, name).await.unwrap_or(0.0);
    }
    sum
}

const SNAPSHOTS_INSTALLED: &str = "hongbao_snapshots_installed_total";
const SNAPSHOTS_BUILT: &str = "hongbao_snapshots_built_total";

/// What the faults were seen to do, and what they should have done but did not.
#[derive(Default)]
struct Effects {
    proved: Vec<String>,
    missed: Vec<String>,
    /// Counters across cycles (snapshot installs seen, snapshot files corrupted).
    installs: f64,
    corrupted: usize,
}

/// The run's fault log: what was done, and when (since the workload started), and the effects.
struct Log<'a> {
    shared: &'a Shared,
    entries: &'a mut Vec<(Duration, String)>,
    effects: &'a mut Effects,
}

impl Log<'_> {
    fn note(&mut self, what: impl Into<String>) {
        self.entries.push((self.shared.start.elapsed(), what.into()));
    }

    /// The fault had the effect it was meant to have.
    fn proved(&mut self, what: impl Into<String>) {
        let what = what.into();
        self.note(format!("effect: {what}"));
        self.effects.proved.push(what);
    }

    /// It did not: the run fails.
    fn missed(&mut self, what: impl Into<String>) {
        let what = what.into();
        self.note(format!("EFFECT MISSING: {what}"));
        self.effects.missed.push(what);
    }

    fn check(&mut self, r: Result<String, String>) {
        match r {
            Ok(p) => self.proved(p),
            Err(m) => self.missed(m),
        }
    }
}

async fn sleep(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Sleeps what is left of `ms` since `t`.
async fn sleep_rest(t: Instant, ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms).saturating_sub(t.elapsed())).await;
}

/// One fault cycle: inject, hold, heal, let the cluster recover; each proves its effect.
async fn inject(
    schedule: Schedule,
    c: &mut Cluster,
    net: Option<&netns::Net>,
    rng: &mut impl Rng,
    shared: &Shared,
    log: &mut Vec<(Duration, String)>,
    effects: &mut Effects,
) {
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
        // Membership and slot moves, at random.
        Schedule::Reshape if rng.gen_bool(0.5) => move_slots(c, rng, 1, &mut log).await,
        Schedule::Reshape => reshape(c, rng, &mut log).await,
        Schedule::MoveSlots => move_slots(c, rng, 5, &mut log).await,
    }
}

/// Effects proved over the whole window rather than per cycle.
async fn finish(schedule: Schedule, c: &Cluster, log: &mut Log<'_>) {
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
        _ => {}
    }
}

/// After a kill or a cut of `group`: every shard `led` (led by the group before) gets a leader
/// outside it within `within`.
async fn leaders_moved(c: &Cluster, group: &[u64], led: &[u32], within: Duration, what: &str) -> Result<String, String> {
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

/// The shards led by any node of `group`, by the cluster's view.
async fn led_by_group(c: &Cluster, group: &[u64]) -> Vec<u32> {
    c.leaders().await.into_iter().filter(|(_, l)| group.contains(l)).map(|(s, _)| s).collect()
}

async fn kill_leader(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let n = leader_of_random_shard(c, rng).await;
    let led = led_by_group(c, &[n]).await;
    log.note(format!("kill -9 node {n} (leader of {led:?})"));
    let t = Instant::now();
    c.kill(n);
    log.check(leaders_moved(c, &[n], &led, Duration::from_secs(8), &format!("killed node {n}")).await);
    sleep_rest(t, 3_000).await;
    log.note(format!("restart node {n}"));
    c.start_node(n);
    sleep(1_000).await;
    log.check(catch_up(c, n, Duration::from_secs(15)).await.map(|d| format!("restarted node {n} caught up in {} ms", d.as_millis())));
    sleep(1_000).await;
}

/// reshape: membership changes online under the workload. A new node replaces one region's
/// node in every shard it holds (`hongbao cluster replace-node`: learner, caught up, voter, then
/// the old one out of the Raft group and the map), while the leader of a random shard is killed
/// and restarted in the middle of it.
async fn reshape(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let region = c.topology.regions.choose(rng).expect("regions").name.clone();
    let Some(old) = c.topology.nodes_in(&region).iter().map(|n| n.id).find(|n| !c.topology.shards_on(*n).is_empty()) else {
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
    let child = c.cli_spawn(&args);
    kill_a_leader_meanwhile(c, rng, 800, "the replacement runs", log).await;
    if finished(c, child, &format!("replace-node {old} -> {new}"), log).await.is_none() {
        return;
    }
    let map = c.sync_map();
    let moved = map.node(old).is_none() && map.shards.iter().all(|s| !s.replicas.contains(&old)) && !map.shards_on(new).is_empty();
    if moved {
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
/// workload, with a leader killed during the first move and restarted. Each move must end with
/// the served map routing the slot to its destination; the checker and the replicas' final
/// balances prove no money was lost or doubled.
async fn move_slots(c: &mut Cluster, rng: &mut impl Rng, count: usize, log: &mut Log<'_>) {
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
    let mut first = true;
    for (slot, to) in away.into_iter().chain(home) {
        log.note(format!("move slot {slot} to shard {to}, online"));
        let t = Instant::now();
        let (s, d) = (slot.to_string(), to.to_string());
        let child = c.cli_spawn(&["cluster", "move-slot", &s, "--to-shard", &d]);
        if first {
            first = false;
            kill_a_leader_meanwhile(c, rng, 300, &format!("slot {slot} moves"), log).await;
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

/// `after_ms` into a membership command, kills the leader of a random shard and restarts it
/// 1.5 s later.
async fn kill_a_leader_meanwhile(c: &mut Cluster, rng: &mut impl Rng, after_ms: u64, during: &str, log: &mut Log<'_>) {
    sleep(after_ms).await;
    let victim = leader_of_random_shard(c, rng).await;
    log.note(format!("kill -9 node {victim} (a leader) while {during}"));
    c.kill(victim);
    sleep(1_500).await;
    log.note(format!("restart node {victim}"));
    c.start_node(victim);
}

/// The output of a CLI command the schedule spawned, once it exited 0 (the map versions it made
/// noted for `sync_map`); None, and the failure in the log, otherwise.
async fn finished(c: &Cluster, child: std::process::Child, what: &str, log: &mut Log<'_>) -> Option<String> {
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

/// Whether every replica node `n` holds is a follower or a leader (not a learner, not catching
/// up), as the node itself says.
async fn is_voter_everywhere(c: &Cluster, n: u64) -> bool {
    use hongbao_proto::v1::ReplicaRole;
    let Ok(st) = c.node_client().status_of(&c.node_addr(n)).await else { return false };
    let shards: Vec<_> = st.nodes.iter().flat_map(|x| x.shards.iter()).collect();
    !shards.is_empty() && shards.iter().all(|s| matches!(s.role(), ReplicaRole::Follower | ReplicaRole::Leader))
}

async fn kill_region(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    // A region that leads something, so that the kill must move leaders.
    let n = leader_of_random_shard(c, rng).await;
    let r = c.topology.node(n).map(|x| x.region.clone()).unwrap_or_else(|| c.topology.regions.choose(rng).expect("regions").name.clone());
    let group = c.nodes_in(&r);
    let led = led_by_group(c, &group).await;
    log.note(format!("kill -9 region {r} (nodes {group:?}, leading {led:?}, and router)"));
    let t = Instant::now();
    c.kill_region(&r);
    log.check(leaders_moved(c, &group, &led, Duration::from_secs(8), &format!("killed region {r}")).await);
    sleep_rest(t, 4_000).await;
    log.note(format!("restart region {r}"));
    c.start_region(&r);
    sleep(2_000).await;
    for n in group {
        log.check(catch_up(c, n, Duration::from_secs(15)).await.map(|d| format!("restarted node {n} caught up in {} ms", d.as_millis())));
    }
    sleep(1_000).await;
}

async fn partition_region(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let n = leader_of_random_shard(c, rng).await;
    let r = c.topology.node(n).map(|x| x.region.clone()).unwrap_or_else(|| c.topology.regions.choose(rng).expect("regions").name.clone());
    let group = c.nodes_in(&r);
    let led = led_by_group(c, &group).await;
    if c.is_containers() {
        log.note(format!("docker network disconnect region {r} (nodes {group:?}, leading {led:?}, and router) from its links"));
        c.partition_region(&r);
        log.note(format!("region {r} disconnected"));
    } else {
        log.note(format!("partition region {r} (nodes {group:?}, leading {led:?}) from the others"));
        cut(c, &group).await;
    }
    // Held 4 s from the moment the cut is complete (docker takes seconds to disconnect).
    let t = Instant::now();
    log.check(leaders_moved(c, &group, &led, Duration::from_secs(8), &format!("partitioned region {r}")).await);
    sleep_rest(t, 4_000).await;
    if c.is_containers() {
        log.note(format!("docker network connect region {r} to its links again"));
        c.heal_region(&r);
    } else {
        log.note("heal partition");
        clear_faults(c).await;
    }
    sleep(2_000).await;
    for n in group {
        log.check(catch_up(c, n, Duration::from_secs(10)).await.map(|d| format!("healed node {n} caught up in {} ms", d.as_millis())));
    }
    sleep(1_000).await;
}

async fn isolate_leader(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let n = leader_of_random_shard(c, rng).await;
    let led = led_by_group(c, &[n]).await;
    log.note(format!("isolate node {n} (leader of {led:?}) from every other node"));
    let t = Instant::now();
    cut(c, &[n]).await;
    log.check(leaders_moved(c, &[n], &led, Duration::from_secs(8), &format!("isolated node {n}")).await);
    sleep_rest(t, 4_000).await;
    log.note("heal partition");
    clear_faults(c).await;
    sleep(2_000).await;
    log.check(catch_up(c, n, Duration::from_secs(10)).await.map(|d| format!("healed node {n} caught up in {} ms", d.as_millis())));
    sleep(1_000).await;
}

/// A leader's link taken down at the bridge (its namespace's veth): the kernel drops every frame
/// to and from it, peers, routers and harness alike. Its shards must be led by others, it must
/// not answer from the root namespace while cut, and healed it must catch up.
async fn netns_partition(c: &mut Cluster, net: &netns::Net, rng: &mut impl Rng, log: &mut Log<'_>) {
    let n = leader_of_random_shard(c, rng).await;
    let led = led_by_group(c, &[n]).await;
    let before = applied(c, n).await.unwrap_or_default();
    log.note(format!("ip link set {} down: node {n} ({}, leader of {led:?}) off the bridge {}", net.veth(n), net.ip(n), net.bridge()));
    let t = Instant::now();
    if let Err(e) = net.cut(n) {
        log.missed(format!("could not cut node {n}'s link: {e}"));
        sleep(1_000).await;
        return;
    }
    log.check(leaders_moved(c, &[n], &led, Duration::from_secs(8), &format!("node {n} cut at the link layer")).await);
    // Not a filter inside the node: nothing of it is reachable, not even its status.
    match local(c, n).await {
        None => log.proved(format!("node {n} does not answer at {} while its link is down", net.ip(n))),
        Some(_) => log.missed(format!("node {n} answered at {} through a link that is down", net.ip(n))),
    }
    // The others go on without it, so the catch-up after the heal has something to catch up
    // (a precondition of that check, not a proof of the cut: the two checks above are).
    let rest = others(c, &[n]);
    let mut seen;
    let behind = eventually!(Duration::from_millis(4_000).saturating_sub(t.elapsed()), {
        seen = committed(c, &rest).await;
        seen.iter().any(|(s, ci)| *ci > before.get(s).copied().unwrap_or(u64::MAX))
    });
    if behind {
        log.proved(format!("while node {n} was cut the others committed {seen:?}, past its {before:?} when cut"));
    } else {
        log.missed(format!("while node {n} was cut the others committed nothing past its {before:?} (they reached {seen:?})"));
    }
    sleep_rest(t, 4_000).await;
    log.note(format!("ip link set {} up", net.veth(n)));
    if let Err(e) = net.heal(n) {
        log.missed(format!("could not heal node {n}'s link: {e}"));
    }
    sleep(2_000).await;
    log.check(catch_up(c, n, Duration::from_secs(10)).await.map(|d| format!("relinked node {n} caught up in {} ms", d.as_millis())));
    sleep(1_000).await;
}

async fn pause_node(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let n = leader_of_random_shard(c, rng).await;
    let before = applied(c, n).await.unwrap_or_default();
    log.note(format!("SIGSTOP node {n} (a leader; applied {before:?})"));
    let t = Instant::now();
    c.signal(n, "STOP");
    let rest = others(c, &[n]);
    let mut seen;
    let behind = eventually!(Duration::from_millis(2_800), {
        seen = committed(c, &rest).await;
        seen.iter().any(|(s, ci)| *ci > before.get(s).copied().unwrap_or(u64::MAX))
    });
    if behind {
        log.proved(format!("paused node {n} fell behind: the others committed {seen:?}, it had applied {before:?}"));
    } else {
        log.missed(format!("paused node {n} never fell behind within 3 s: the others committed {seen:?}, it had applied {before:?}"));
    }
    sleep_rest(t, 3_000).await;
    log.note(format!("SIGCONT node {n}"));
    c.signal(n, "CONT");
    log.check(catch_up(c, n, Duration::from_secs(10)).await.map(|d| format!("resumed node {n} caught up in {} ms", d.as_millis())));
    sleep_rest(t, 6_000).await;
}

async fn slow_links(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let delay = rng.gen_range(20..=120);
    log.note(format!("every link: +{delay} ms each way, 5 % loss"));
    let mut took = Vec::new();
    for n in c.topology.nodes.clone() {
        if set(c, n.id, Faults { delay_ms: delay, drop_percent: 5, ..Faults::default() }).await {
            took.push(n.id);
        }
    }
    if took.len() == c.topology.nodes.len() {
        log.proved(format!("every node ({took:?}) took +{delay} ms and 5 % loss"));
    } else {
        log.missed(format!("only nodes {took:?} took the slow links"));
    }
    sleep(5_000).await;
    log.note("links back to normal");
    clear_faults(c).await;
    sleep(2_000).await;
}

async fn rolling_restart(c: &mut Cluster, log: &mut Log<'_>) {
    for n in c.topology.nodes.iter().map(|n| n.id).collect::<Vec<_>>() {
        log.note(format!("restart node {n} (SIGTERM, start)"));
        let t = Instant::now();
        c.stop(n);
        sleep(300).await;
        c.start_node(n);
        sleep(1_000).await;
        log.check(
            catch_up(c, n, Duration::from_secs(15))
                .await
                .map(|d| format!("restarted node {n} came back and caught up in {} ms", d.as_millis())),
        );
        sleep_rest(t, 3_300).await;
    }
}

/// The node says its clock is not trusted (Ok: the reason), within `within`.
async fn untrusted(c: &Cluster, n: u64, within: Duration) -> Option<String> {
    let mut why;
    let ok = eventually!(within, {
        why = local(c, n).await.map(|s| s.clock_untrusted).unwrap_or_default();
        !why.is_empty()
    });
    ok.then_some(why)
}

/// The node trusts its clock again within `within`.
async fn trusted(c: &Cluster, n: u64, within: Duration) -> Result<(), String> {
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

/// Back an hour, or ahead 30 s: after a forward jump the ledger's clock (which never runs
/// backwards) waits for the wall clock to catch up, so packets made meanwhile expire late by up
/// to the jump; 30 s keeps that inside the settling time.
async fn clock_jump(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let n = c.topology.nodes.choose(rng).expect("nodes").id;
    let jump: i64 = if rng.gen_bool(0.5) { 30_000 } else { -3_600_000 };
    log.note(format!("node {n}: clock jumps {:+} s", jump / 1000));
    let t = Instant::now();
    set(c, n, Faults { clock_offset_ms: jump, ..Faults::default() }).await;
    // Every jump here is over the 500 ms the nodes tolerate.
    match untrusted(c, n, Duration::from_secs(4)).await {
        Some(why) => log.proved(format!("node {n} distrusts its clock after a {:+} s jump: {why}", jump / 1000)),
        None => log.missed(format!("node {n}'s clock jumped {:+} s and its status still says trusted", jump / 1000)),
    }
    sleep_rest(t, 5_000).await;
    log.note(format!("node {n}: clock back"));
    set(c, n, Faults::default()).await;
    let t = Instant::now();
    // Coming back is a leap too (backwards): give the node time to notice it before asking
    // whether it trusts its clock again, or the answer predates the leap.
    sleep(1_500).await;
    log.check(
        trusted(c, n, Duration::from_secs(10))
            .await
            .map(|()| format!("node {n} trusts its clock again {} ms after the heal", t.elapsed().as_millis())),
    );
    sleep_rest(t, 3_000).await;
}

/// Two days ahead on a leader: it must stamp nothing, hand every leadership away, say why, and
/// be trusted again once its clock is back.
async fn clock_leap(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let n = leader_of_random_shard(c, rng).await;
    let led = led_by_group(c, &[n]).await;
    log.note(format!("node {n} (leader of {led:?}): clock leaps +2 days"));
    let t = Instant::now();
    set(c, n, Faults { clock_offset_ms: TWO_DAYS_MS, ..Faults::default() }).await;
    match untrusted(c, n, Duration::from_secs(4)).await {
        Some(why) => log.proved(format!("node {n} distrusts its clock after +2 days: {why}")),
        None => log.missed(format!("node {n}'s clock leapt +2 days and its status still says trusted")),
    }
    log.check(leaders_moved(c, &[n], &led, Duration::from_secs(5), &format!("node {n} two days fast")).await);
    let mut still;
    let none = eventually!(Duration::from_secs(5), {
        still = led_by(c, n).await.unwrap_or_default();
        still.is_empty()
    });
    if none {
        log.proved(format!("node {n} leads no shard while two days fast"));
    } else {
        log.missed(format!("node {n} still leads {still:?} while two days fast"));
    }
    sleep_rest(t, 5_000).await;
    // It must stay without leaderships (no failback to a node whose clock is off).
    let now = led_by(c, n).await.unwrap_or_default();
    if !now.is_empty() {
        log.missed(format!("node {n} leads {now:?} again while still two days fast"));
    }
    log.note(format!("node {n}: clock back"));
    set(c, n, Faults::default()).await;
    let t = Instant::now();
    // Coming back is a leap too (backwards): give the node time to notice it before asking
    // whether it trusts its clock again, or the answer predates the leap.
    sleep(1_500).await;
    log.check(
        trusted(c, n, Duration::from_secs(10))
            .await
            .map(|()| format!("node {n} trusts its clock again {} ms after the heal", t.elapsed().as_millis())),
    );
    sleep_rest(t, 3_000).await;
}

/// A follower's disk lost: kill it, delete its data dir, start it empty. It must catch up.
async fn disk_loss(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let ids: Vec<u64> = c.topology.nodes.iter().map(|n| n.id).collect();
    let n = *ids.choose(rng).expect("nodes");
    let rest = others(c, &[n]);
    // A follower: hand away whatever it leads first (home-region failback may take one back, so
    // check again right before the kill).
    let mut led;
    let follower = eventually!(Duration::from_secs(6), {
        led = led_by(c, n).await.unwrap_or_default();
        for &s in led.iter() {
            let to = rest[s as usize % rest.len()];
            let _ = c.node_client().with_deadline(Duration::from_secs(3)).transfer_leader(s, to).await;
        }
        led.is_empty()
    });
    if !follower {
        log.missed(format!("node {n} could not be made a follower: it still leads {led:?}"));
    }
    let installed_before = c.node_metric(n, SNAPSHOTS_INSTALLED).await.unwrap_or(0.0);
    log.note(format!("kill -9 node {n} (a follower; {installed_before} snapshots installed so far), delete its data dir"));
    c.kill(n);
    c.wipe_node(n);
    sleep(1_500).await;
    log.note(format!("start node {n} with an empty disk"));
    c.start_node(n);
    sleep(1_000).await;
    match catch_up(c, n, Duration::from_secs(30)).await {
        Ok(d) => {
            let installs = c.node_metric(n, SNAPSHOTS_INSTALLED).await.unwrap_or(0.0);
            let how = if installs > 0.0 { format!("{installs} snapshot install(s)") } else { "the log alone".into() };
            log.proved(format!("wiped node {n} caught up in {} ms, by {how}", d.as_millis()));
        }
        Err(e) => log.missed(format!("wiped {e}")),
    }
    sleep(1_500).await;
}

/// Cut a node off while the others write and move leaders about; heal; it must catch up, by
/// snapshot when the leaders purged what it lacked.
async fn snapshot_storm(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
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
fn truncate_half(p: &std::path::Path) -> Option<(u64, u64)> {
    let len = std::fs::metadata(p).ok()?.len();
    let f = std::fs::OpenOptions::new().write(true).open(p).ok()?;
    f.set_len(len / 2).ok()?;
    Some((len, len / 2))
}

/// A follower left behind the purged log, and the leader's snapshot file of that shard
/// truncated on disk just before and just after the follower comes back: the follower must
/// refuse any torn copy and end with exactly the leader's data (checked after the run).
async fn corrupt_snapshot(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
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
    let file = c.node_dir(l).join("snapshots").join(format!("shard-{s}.snap"));
    match truncate_half(&file) {
        Some((a, b)) => {
            log.effects.corrupted += 1;
            log.note(format!("truncated {} from {a} to {b} bytes", file.display()));
        }
        None => log.missed(format!("node {l} has no snapshot file {} to corrupt", file.display())),
    }
    let installed = c.node_metric(f, SNAPSHOTS_INSTALLED).await.unwrap_or(0.0);
    log.note(format!("heal node {f}"));
    clear_faults(c).await;
    sleep(150).await;
    if let Some((a, b)) = truncate_half(&file) {
        log.effects.corrupted += 1;
        log.note(format!("truncated {} again, from {a} to {b} bytes, while node {f} catches up", file.display()));
    }
    match catch_up(c, f, Duration::from_secs(20)).await {
        Ok(d) => {
            let now = c.node_metric(f, SNAPSHOTS_INSTALLED).await.unwrap_or(0.0);
            log.proved(format!(
                "node {f} caught up in {} ms past a torn snapshot ({} snapshot install(s) meanwhile)",
                d.as_millis(),
                now - installed
            ));
        }
        Err(e) => log.missed(e),
    }
    sleep(1_000).await;
}

/// Every node running and reachable, no injected fault left.
async fn heal(c: &mut Cluster) {
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

/// Re-sends every operation whose outcome was unknown, with its own request id, until it has a
/// definite answer: the ledger's dedup makes this apply it at most once.
async fn resolve_unknown(shared: &Shared, client: &Client, report: &mut Report) {
    let pending: Vec<usize> = {
        let h = shared.history.lock().expect("history lock");
        h.iter().enumerate().filter(|(_, e)| matches!(e.outcome, Outcome::Unknown(_))).map(|(i, _)| i).collect()
    };
    report.unknown = pending.len();
    for i in pending {
        let (rid, op) = {
            let h = shared.history.lock().expect("history lock");
            (h[i].request_id.clone(), h[i].op)
        };
        let out = workload::outcome(settle(|| workload::send(client, &rid, &op), RESOLVE_SENDS - 1, RESOLVE_WITHIN).await);
        if matches!(out, Outcome::Ok(_)) {
            report.resolved_ok += 1;
        }
        let mut h = shared.history.lock().expect("history lock");
        h[i].outcome = out;
        h[i].resolved = true;
    }
}

/// Counts and unavailability windows: per shard, gaps between answers (any answer that was not
/// "unknown" the first time) longer than UNAVAILABLE_GAP.
fn summarize(history: &[Event], r: &mut Report, end: Duration) {
    r.ops = history.len();
    for e in history {
        match e.outcome {
            Outcome::Ok(_) => r.ok += 1,
            Outcome::Fail(code) => *r.failures.entry(format!("{}: {}", e.op.name(), code.as_str_name())).or_default() += 1,
            Outcome::Unknown(code) => *r.failures.entry(format!("{} (unresolved): {}", e.op.name(), code.as_str_name())).or_default() += 1,
        }
    }
    let mut served: BTreeMap<u32, Vec<Duration>> = BTreeMap::new();
    let first = history.iter().map(|e| e.completed).min().unwrap_or_default();
    for e in history.iter().filter(|e| !e.resolved) {
        served.entry(e.shard).or_default().push(e.completed);
    }
    let stop = history.iter().filter(|e| !e.resolved).map(|e| e.completed).max().unwrap_or(end);
    for (shard, mut t) in served {
        t.sort();
        t.insert(0, first);
        t.push(stop);
        for w in t.windows(2) {
            if w[1] - w[0] > UNAVAILABLE_GAP {
                r.windows.push((shard, w[0], w[1] - w[0]));
            }
        }
    }
    r.windows.sort_by_key(|w| w.1);
}

/// Waits until nothing is in flight and every acknowledged packet is fully grabbed or refunded,
/// then reads the final state (linearizable reads).
async fn quiesce(client: &Client, history: &[Event], users: &[u64]) -> anyhow::Result<Final> {
    let deadline = Instant::now() + QUIESCE;
    let packets: Vec<u64> = history
        .iter()
        .filter_map(|e| match e.ack() {
            Some(history::Ack::Sent { packet, .. }) => Some(packet),
            _ => None,
        })
        .collect();
    let mut views = BTreeMap::new();
    loop {
        let mut settled = true;
        for &p in &packets {
            if views.get(&p).map(|v: &hongbao_proto::v1::PacketView| v.refunded || v.remaining_count == 0).unwrap_or(false) {
                continue;
            }
            match client.show_packet(p).await {
                Ok(v) => {
                    settled &= v.refunded || v.remaining_count == 0;
                    views.insert(p, v);
                }
                Err(_) => settled = false,
            }
        }
        let audit = client.audit().await;
        if let Ok(a) = &audit {
            if settled && a.total_in_flight_cents == 0 {
                let mut balances = BTreeMap::new();
                for &u in users {
                    balances.insert(u, client.balance(u).await?.balance_cents);
                }
                // Read the audit again after the balances: nothing may have moved meanwhile.
                let audit = client.audit().await?;
                return Ok(Final { balances, packets: views, audit });
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("not settled within {QUIESCE:?}: last audit {audit:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// After quiescence every node's own replicas (stale reads, no leader asked) hold exactly the
/// final balances: a replica that caught up by log or by snapshot (torn or wiped on the way)
/// holds the leader's data.
async fn replicas_agree(c: &Cluster, fin: &Final, report: &mut Report) {
    for n in c.topology.nodes.iter().map(|n| n.id) {
        // The users of the shards this node holds (all of them in 3 × 1).
        let users: Vec<u64> = fin
            .balances
            .keys()
            .copied()
            .filter(|u| c.topology.shard(c.topology.shard_of_user(*u)).is_some_and(|s| s.replicas.contains(&n)))
            .collect();
        let want: BTreeMap<u64, u64> = users.iter().map(|u| (*u, fin.balances[u])).collect();
        let mut last;
        let same = eventually!(Duration::from_secs(20), {
            last = c.stale_balances(n, &users).await;
            matches!(&last, Ok(b) if *b == want)
        });
        if same {
            report.effects.push(format!("node {n}'s own replicas hold the final balances of all {} users", users.len()));
            continue;
        }
        match last {
            Ok(b) => {
                let diff: Vec<String> = b
                    .iter()
                    .filter(|(u, v)| fin.balances.get(u) != Some(v))
                    .map(|(u, v)| format!("user {u}: {v} on node {n}, {} final", fin.balances.get(u).copied().unwrap_or_default()))
                    .collect();
                report.violations.push(format!("node {n}'s replicas differ from the final state: {}", diff.join("; ")));
            }
            Err(e) => report.violations.push(format!("node {n}'s replicas could not be read: {e}")),
        }
    }
}

/// big-entries: maximum-size sends went through and kept their strings; every oversize one was
/// refused with INVALID_ARGUMENT (and so, by the checker, moved nothing).
fn big_entries_held(history: &[Event], fin: &Final, report: &mut Report) {
    let (mut max_ok, mut over, mut huge) = (0, 0, 0);
    for e in history {
        let Op::Send { size, .. } = e.op else { continue };
        match size {
            Size::Normal => {}
            Size::Max => {
                if let Outcome::Ok(history::Ack::Sent { packet, .. }) = e.outcome {
                    max_ok += 1;
                    if let Some(v) = fin.packets.get(&packet) {
                        if v.greeting != workload::greeting(Size::Max) {
                            report.violations.push(format!(
                                "packet {packet}: its {}-byte greeting came back as {} bytes",
                                workload::MAX_STRING,
                                v.greeting.len()
                            ));
                        }
                    }
                }
            }
            Size::Over | Size::Huge => {
                if size == Size::Over {
                    over += 1;
                } else {
                    huge += 1;
                }
                if e.outcome != Outcome::Fail(ErrorCode::InvalidArgument) {
                    report.violations.push(format!("an oversize send ({size:?}) ended {:?}, not refused with INVALID_ARGUMENT", e.outcome));
                }
            }
        }
    }
    if max_ok == 0 || over == 0 {
        report.violations.push(format!(
            "big-entries mixed in too few: {max_ok} maximum-size sends acknowledged, {over} one byte over, {huge} of 20 KiB"
        ));
    } else {
        report.effects.push(format!(
            "{max_ok} maximum-size sends ({}-byte greeting and phrase) acknowledged, greetings intact; {over} one-byte-over and {huge} 20 KiB sends refused with INVALID_ARGUMENT",
            workload::MAX_STRING
        ));
    }
}
