//! The chaos runner: a fresh cluster, the recorded workload and its auditor, the fault window
//! of one schedule, then the checks of `verify`.

use super::effects::Effects;
use super::effects::Log;
use super::netns;
use super::report::Report;
use super::schedule::{Schedule, SMALL_KEEP_BEHIND, SMALL_SNAPSHOT_EVERY};
use super::schedules::{finish, heal, inject};
use super::verify::verify;
use super::workload::{self, Shared};
use crate::{Cluster, Spec};
use hongbao_client::Client;
use hongbao_proto::v1::{AuditReply, Faults};
use rand::SeedableRng;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

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
pub(crate) const CLIENT_DEADLINE: Duration = Duration::from_secs(2);
/// Served-nothing gaps longer than this count as unavailability.
pub const UNAVAILABLE_GAP: Duration = Duration::from_millis(500);
/// Most sends of one request id when settling an unknown outcome after the run.
pub(crate) const RESOLVE_SENDS: u32 = 6;
/// Time bound of that settling, per operation. Never the binding one: RESOLVE_SENDS calls of
/// at most the settling client's 10 s deadline end before it.
pub(crate) const RESOLVE_WITHIN: Duration = Duration::from_secs(120);
/// How long one background audit may go unanswered (asked again meanwhile) before the run fails:
/// longer than any one fault the schedules cause (the auditor asks through one router, which a
/// region partition cuts off with its region for up to ~10 s, plus reconnection), far shorter
/// than a run: a shard that never answers still fails it.
pub(crate) const AUDIT_WITHIN: Duration = Duration::from_secs(30);
/// How long the cluster gets to settle after the faults stop (relay drained, packets refunded).
pub(crate) const QUIESCE: Duration = Duration::from_secs(60);

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
    report.violations.extend(audits.failed);
    verify(&c, &shared, &settle, &users, &audits.answered, &mut report).await;
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
pub(crate) async fn start_cluster(schedule: Schedule, opts: &Options, net: Option<&netns::Net>) -> anyhow::Result<(Cluster, Vec<u64>)> {
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
pub(crate) struct Load {
    workers: Vec<JoinHandle<()>>,
    auditor: JoinHandle<()>,
    audits: Arc<Mutex<Audits>>,
}

/// The background audits of a run: those answered, and those that found no answer within
/// AUDIT_WITHIN (each fails the run).
#[derive(Default)]
pub(crate) struct Audits {
    pub(crate) answered: Vec<AuditReply>,
    pub(crate) failed: Vec<String>,
}

impl Load {
    fn start(opts: &Options, shared: &Arc<Shared>, clients: &[Arc<Client>]) -> Load {
        let mut workers = Vec::new();
        for w in 0..opts.workers {
            workers.push(tokio::spawn(workload::worker(shared.clone(), clients[w % clients.len()].clone(), opts.seed * 1000 + w as u64)));
        }
        let audits: Arc<Mutex<Audits>> = Arc::default();
        let auditor = {
            let (shared, client, audits) = (shared.clone(), clients[1 % clients.len()].clone(), audits.clone());
            tokio::spawn(async move {
                while !shared.stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let asked = shared.start.elapsed();
                    let answer = audit_within(&client, AUDIT_WITHIN).await;
                    let mut a = audits.lock().expect("audits lock");
                    match answer {
                        Ok(r) => a.answered.push(r),
                        Err(e) => a
                            .failed
                            .push(format!("the audit asked at {:.1} s had no answer within {AUDIT_WITHIN:?}: {e}", asked.as_secs_f64())),
                    }
                }
            })
        };
        Load { workers, auditor, audits }
    }

    /// Stops the workload and waits for every operation in flight; the audits made meanwhile.
    async fn stop(self, shared: &Shared) -> anyhow::Result<Audits> {
        shared.stop.store(true, Ordering::Relaxed);
        for t in self.workers {
            t.await?;
        }
        self.auditor.await?;
        let audits = std::mem::take(&mut *self.audits.lock().expect("audits lock"));
        Ok(audits)
    }
}

/// Asks for an audit until one answers or `within` passes (a failover makes calls fail for a
/// moment; an audit is a read, so asking again is harmless): the answer or the last error.
async fn audit_within(client: &Client, within: Duration) -> Result<AuditReply, hongbao_client::ClientError> {
    let t = Instant::now();
    loop {
        match client.audit().await {
            Ok(a) => return Ok(a),
            Err(e) if t.elapsed() >= within => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Fault cycles of the schedule for `opts.duration` (after a quiet second), then every fault
/// healed. Returns the fault log, how long the faults ran, and the effects seen and missed.
pub(crate) async fn fault_window(
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
