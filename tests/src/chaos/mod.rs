//! The chaos suite: a real cluster (nodes and routers as processes), a recorded client workload,
//! a fault schedule, then quiescence and the bank checker. `hongbao-chaos` (scripts/chaos) and
//! tests/tests/chaos.rs both run it.

pub mod checker;
pub mod history;
pub mod workload;

use crate::{Cluster, Spec};
use checker::Final;
use history::{Event, Outcome};
use hongbao_client::{settle, Client};
use hongbao_proto::v1::{AuditReply, Faults};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
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
}

impl Schedule {
    pub const ALL: [Schedule; 8] = [
        Schedule::KillLeader,
        Schedule::KillRegion,
        Schedule::PartitionRegion,
        Schedule::IsolateLeader,
        Schedule::PauseNode,
        Schedule::SlowLinks,
        Schedule::RollingRestart,
        Schedule::ClockJump,
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
        }
    }

    pub fn parse(s: &str) -> Option<Schedule> {
        Schedule::ALL.into_iter().find(|x| x.name() == s)
    }
}

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
}

impl Default for Options {
    fn default() -> Self {
        Options { duration: Duration::from_secs(20), workers: 9, seed: 7, wan_latency_ms: 5, packet_ttl_ms: 6_000, users_per_shard: 4 }
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
    let (mut c, users) = start_cluster(opts).await;
    let shared = Shared::new(c.topology.clone(), users.clone());
    let regions: Vec<String> = c.topology.regions.iter().map(|r| r.name.clone()).collect();
    let clients: Vec<Arc<Client>> = regions.iter().map(|r| Arc::new(c.router_client(r).with_deadline(CLIENT_DEADLINE))).collect();
    workload::setup(&shared, &clients[0]).await?;

    let load = Load::start(opts, &shared, &clients);
    let (faults, ran_for) = fault_window(schedule, opts, &mut c, &shared).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let audits = load.stop(&shared).await?;

    let settle = c.router_client(&regions[0]).with_deadline(Duration::from_secs(10));
    let mut report =
        Report { schedule: schedule.name().into(), ran_for, faults, logs: c.keep_on_failure().display().to_string(), ..Report::default() };
    verify(&c, &shared, &settle, &users, &audits, &mut report).await;
    if !report.violations.is_empty() {
        let kept = std::mem::replace(&mut c.dir, tempfile::tempdir()?);
        let _ = kept.keep();
    }
    Ok(report)
}

/// A fresh cluster (nodes and routers, short packet ttl, frequent snapshots), ready, and the
/// users of the run: `users_per_shard` in each shard.
async fn start_cluster(opts: &Options) -> (Cluster, Vec<u64>) {
    let c = Cluster::start(Spec {
        routers: true,
        packet_ttl_ms: Some(opts.packet_ttl_ms),
        wan_latency_ms: opts.wan_latency_ms,
        snapshot_every: 2_000,
        keep_behind_snapshot: 500,
        ..Spec::default()
    });
    c.wait_ready(Duration::from_secs(60)).await;
    let mut users = Vec::new();
    for s in &c.topology.shards {
        let mut u = 10_000;
        for _ in 0..opts.users_per_shard {
            u = c.topology.user_in_shard(s.id, u + 1);
            users.push(u);
        }
    }
    (c, users)
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
/// healed. Returns the fault log and how long the faults ran.
async fn fault_window(schedule: Schedule, opts: &Options, c: &mut Cluster, shared: &Shared) -> (Vec<(Duration, String)>, Duration) {
    let started = Instant::now();
    let mut faults = Vec::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    while started.elapsed() < opts.duration {
        inject(schedule, c, &mut rng, shared, &mut faults).await;
    }
    heal(c).await;
    faults.push((shared.start.elapsed(), "healed: every node running, no injected faults".into()));
    (faults, started.elapsed())
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
        Ok(fin) => report.violations = checker::check(&history, audits, &fin),
        Err(e) => report.violations.push(format!("cluster did not settle: {e}")),
    }
    for s in &c.topology.shards {
        if !history.iter().any(|e| e.shard == s.id && matches!(e.outcome, Outcome::Ok(_))) {
            report.violations.push(format!("shard {}: no operation acknowledged in the whole run", s.id));
        }
    }
}

async fn leader_of_random_shard(c: &Cluster, rng: &mut impl Rng) -> u64 {
    let leaders: Vec<u64> = c.leaders().await.into_values().collect();
    match leaders.choose(rng) {
        Some(l) => *l,
        None => c.topology.nodes.choose(rng).expect("nodes").id,
    }
}

async fn cut(c: &Cluster, group: &[u64]) {
    let others: Vec<u64> = c.topology.nodes.iter().map(|n| n.id).filter(|n| !group.contains(n)).collect();
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

async fn set(c: &Cluster, node: u64, f: Faults) {
    for _ in 0..5 {
        if c.set_faults(node, f.clone()).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("could not set faults on node {node}");
}

/// The run's fault log: what was done, and when (since the workload started).
struct Log<'a> {
    shared: &'a Shared,
    entries: &'a mut Vec<(Duration, String)>,
}

impl Log<'_> {
    fn note(&mut self, what: impl Into<String>) {
        self.entries.push((self.shared.start.elapsed(), what.into()));
    }
}

async fn sleep(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// One fault cycle: inject, hold, heal, let the cluster recover.
async fn inject(schedule: Schedule, c: &mut Cluster, rng: &mut impl Rng, shared: &Shared, log: &mut Vec<(Duration, String)>) {
    let mut log = Log { shared, entries: log };
    match schedule {
        Schedule::KillLeader => kill_leader(c, rng, &mut log).await,
        Schedule::KillRegion => kill_region(c, rng, &mut log).await,
        Schedule::PartitionRegion => partition_region(c, rng, &mut log).await,
        Schedule::IsolateLeader => isolate_leader(c, rng, &mut log).await,
        Schedule::PauseNode => pause_node(c, rng, &mut log).await,
        Schedule::SlowLinks => slow_links(c, rng, &mut log).await,
        Schedule::RollingRestart => rolling_restart(c, &mut log).await,
        Schedule::ClockJump => clock_jump(c, rng, &mut log).await,
    }
}

async fn kill_leader(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let n = leader_of_random_shard(c, rng).await;
    log.note(format!("kill -9 node {n} (a leader)"));
    c.kill(n);
    sleep(3_000).await;
    log.note(format!("restart node {n}"));
    c.start_node(n);
    sleep(3_000).await;
}

async fn kill_region(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let r = c.topology.regions.choose(rng).expect("regions").name.clone();
    log.note(format!("kill -9 region {r} (nodes and router)"));
    c.kill_region(&r);
    sleep(4_000).await;
    log.note(format!("restart region {r}"));
    c.start_region(&r);
    sleep(5_000).await;
}

async fn partition_region(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let r = c.topology.regions.choose(rng).expect("regions").name.clone();
    log.note(format!("partition region {r} from the others"));
    cut(c, &c.nodes_in(&r)).await;
    sleep(4_000).await;
    log.note("heal partition");
    clear_faults(c).await;
    sleep(4_000).await;
}

async fn isolate_leader(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let n = leader_of_random_shard(c, rng).await;
    log.note(format!("isolate node {n} (a leader) from every other node"));
    cut(c, &[n]).await;
    sleep(4_000).await;
    log.note("heal partition");
    clear_faults(c).await;
    sleep(4_000).await;
}

async fn pause_node(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let n = leader_of_random_shard(c, rng).await;
    log.note(format!("SIGSTOP node {n} (a leader)"));
    c.signal(n, "STOP");
    sleep(3_000).await;
    log.note(format!("SIGCONT node {n}"));
    c.signal(n, "CONT");
    sleep(3_000).await;
}

async fn slow_links(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let delay = rng.gen_range(20..=120);
    log.note(format!("every link: +{delay} ms each way, 5 % loss"));
    for n in c.topology.nodes.clone() {
        set(c, n.id, Faults { delay_ms: delay, drop_percent: 5, ..Faults::default() }).await;
    }
    sleep(5_000).await;
    log.note("links back to normal");
    clear_faults(c).await;
    sleep(2_000).await;
}

async fn rolling_restart(c: &mut Cluster, log: &mut Log<'_>) {
    for n in c.topology.nodes.iter().map(|n| n.id).collect::<Vec<_>>() {
        log.note(format!("restart node {n} (SIGTERM, start)"));
        c.stop(n);
        sleep(300).await;
        c.start_node(n);
        sleep(3_000).await;
    }
}

/// Back an hour, or ahead 30 s: after a forward jump the ledger's clock (which never runs
/// backwards) waits for the wall clock to catch up, so packets made meanwhile expire late by up
/// to the jump; 30 s keeps that inside the settling time.
async fn clock_jump(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let n = c.topology.nodes.choose(rng).expect("nodes").id;
    let jump: i64 = if rng.gen_bool(0.5) { 30_000 } else { -3_600_000 };
    log.note(format!("node {n}: clock jumps {:+} s", jump / 1000));
    set(c, n, Faults { clock_offset_ms: jump, ..Faults::default() }).await;
    sleep(5_000).await;
    log.note(format!("node {n}: clock back"));
    set(c, n, Faults::default()).await;
    sleep(3_000).await;
}

/// Every node running and reachable, no injected fault left.
async fn heal(c: &mut Cluster) {
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
            Some(history::Ack::Sent { packet }) => Some(packet),
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
