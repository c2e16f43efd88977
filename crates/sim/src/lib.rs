//! hongbao-sim: a whole cluster in one thread, driven by one seed (#31).
//!
//! - `cluster`: the nodes, each a real `Host` with its own directory and drifting clock;
//!   crashes, lost disks, restarts.
//! - `net`: the simulated links behind the transport's channel type (`Dial::Simulated`).
//! - `workload`: the clients, which retry as a router does, and the model of what they heard.
//! - `schedule`: the faults the seed chooses.
//! - `trace`: every event, and the hash that names a run.
//!
//! Time is tokio's paused clock: it jumps to the next timer whenever every task waits, so a
//! simulated minute takes what its CPU work takes. The seed drives everything that would be
//! random: the workload, the faults, the network's weather, and (through
//! `hongbao_node::runtime`) openraft's election timeouts and the nodes' own draws. Blocking work
//! runs inline. So one seed gives one run, and its trace hash says so.

pub mod cluster;
pub mod net;
pub mod schedule;
pub mod trace;
pub mod workload;

use cluster::Cluster;
use hongbao_node::runtime::{self, Bug};
use hongbao_topology::Topology;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schedule::{Fault, FaultCounts, Schedule};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use trace::Trace;
use workload::{Client, Model, OpCounts, User};

/// Users per shard the workload drives.
const USERS_PER_SHARD: u64 = 4;
/// Commands in flight at once, at most.
const MAX_IN_FLIGHT: usize = 8;
/// Once faults stop: every shard has a leader within this much simulated time...
const ELECT_WITHIN: Duration = Duration::from_secs(30);
/// ...and every relay has drained within this much more.
const DRAIN_WITHIN: Duration = Duration::from_secs(60);

/// One run's settings.
#[derive(Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub steps: u64,
    pub topology: Topology,
    pub bugs: Vec<Bug>,
    /// Print every event as it happens.
    pub verbose: bool,
    /// Wall time a run may take before the watchdog declares it stuck.
    pub wall_limit: Duration,
}

/// What one run did and found.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub steps: u64,
    pub sim_ms: u64,
    pub events: u64,
    pub trace_hash: String,
    pub faults: FaultCounts,
    pub ops: OpCounts,
    pub messages: u64,
    /// The first failed check, with the trace's last events.
    pub failure: Option<Failure>,
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub check: String,
    pub trace_tail: Vec<String>,
}

/// How a failed check that is about progress (no leader, a relay that never drains, a request
/// never answered once faults stopped) begins; every other failed check is about the money or
/// the answers (a broken rule).
pub const LIVENESS: &str = "liveness: ";

impl Failure {
    pub fn is_liveness(&self) -> bool {
        self.check.starts_with(LIVENESS)
    }
}

/// The topology a simulation runs: the file's nodes and shards, with snapshots taken and sent
/// often (so restarts and lagging replicas install them) and short packet lifetimes (so the
/// sweeper refunds within a run).
pub fn sim_topology(mut t: Topology) -> Topology {
    t.raft.snapshot_every = 300;
    t.raft.keep_behind_snapshot = 50;
    t.ledger.packet_ttl_ms = Some(20_000);
    t
}

thread_local! {
    /// A panic in any task of this thread's run (a node's assertion, openraft's own), caught by
    /// the hook `run` installs: the run fails with it. Per thread, as runs are (tests run several
    /// at once).
    static PANICKED: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if runtime::simulated() {
                PANICKED.with(|p| {
                    let mut p = p.borrow_mut();
                    if p.is_none() {
                        *p = Some(info.to_string());
                    }
                });
            } else {
                default(info);
            }
        }));
    });
}

fn panicked() -> Option<String> {
    PANICKED.with(|p| p.borrow().clone())
}

/// Runs one seed to its end (or its first failed check).
pub fn run(cfg: &SimConfig) -> Report {
    install_panic_hook();
    // A run whose simulated time stops (a task that never waits) would spin for ever: the
    // watchdog names the seed and ends the process.
    let (done, watch) = std::sync::mpsc::channel::<()>();
    let (seed, limit) = (cfg.seed, cfg.wall_limit);
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = watch.recv_timeout(limit) {
            eprintln!("seed {seed}: no end after {limit:?} of wall time: simulated time stopped (a task spins without waiting)");
            std::process::exit(3);
        }
    });
    PANICKED.with(|p| *p.borrow_mut() = None);
    // Each concern draws from its own stream, so a change in one does not reshuffle the others.
    let mut seeds = ChaCha8Rng::seed_from_u64(cfg.seed);
    let node_seed: u64 = seeds.gen();
    runtime::enter_simulation(node_seed);
    for b in &cfg.bugs {
        runtime::plant(*b);
    }
    // In memory where possible: a simulated fsync need not cost a real one.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("a temporary directory");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("a tokio runtime");
    let report = rt.block_on(drive(cfg, seeds, dir.path()));
    // Every task of the run ends with the runtime (nodes' RocksDBs close with their last holder).
    drop(rt);
    runtime::leave_simulation();
    let _ = done.send(());
    report
}

async fn drive(cfg: &SimConfig, mut seeds: ChaCha8Rng, dir: &std::path::Path) -> Report {
    let trace = Arc::new(Trace::new(cfg.verbose));
    let net = net::Net::new(ChaCha8Rng::seed_from_u64(seeds.gen()), trace.clone());
    let mut sched = Schedule::new(ChaCha8Rng::seed_from_u64(seeds.gen()));
    let mut driver_rng = ChaCha8Rng::seed_from_u64(seeds.gen());
    let topology = sim_topology(cfg.topology.clone());
    let drift: Vec<i64> = topology.nodes.iter().map(|_| driver_rng.gen_range(-2_000..=2_000)).collect();
    let model = Arc::new(Mutex::new(Model::default()));
    let mut report = Report {
        seed: cfg.seed,
        steps: cfg.steps,
        sim_ms: 0,
        events: 0,
        trace_hash: String::new(),
        faults: FaultCounts::default(),
        ops: OpCounts::default(),
        messages: 0,
        failure: None,
    };
    let cluster = match Cluster::start(topology.clone(), dir, net.clone(), trace.clone(), &drift).await {
        Ok(c) => c,
        Err(e) => {
            report.failure = Some(Failure { check: format!("start: {e:#}"), trace_tail: trace.tail(40) });
            return report;
        }
    };
    let client = Arc::new(Client::new(
        cluster.hosts.clone(),
        topology.clone(),
        model.clone(),
        trace.clone(),
        ChaCha8Rng::seed_from_u64(seeds.gen()),
    ));
    let mut cluster = cluster;
    let outcome = steps(cfg, &mut cluster, &client, &mut sched, &mut driver_rng, &trace).await;
    let outcome = match outcome {
        Ok(()) => settle(&mut cluster, &client, &mut sched, &trace).await,
        Err(e) => Err(e),
    };
    let failure = outcome.err().or_else(|| panicked().map(|p| format!("a task panicked: {p}")));
    report.failure = failure.map(|check| {
        trace.note(format!("FAILED: {check}"));
        Failure { check, trace_tail: trace.tail(60) }
    });
    if let Err(e) = cluster.stop_all().await {
        report.failure.get_or_insert_with(|| Failure { check: format!("stop: {e:#}"), trace_tail: trace.tail(60) });
    }
    report.faults = sched.counts;
    report.ops = model.lock().expect("model lock").counts;
    report.messages = net.counts().messages;
    report.sim_ms = trace.now_ms();
    report.events = trace.events();
    report.trace_hash = trace.hash();
    report
}

/// The first broken rule the model or a task saw.
fn violation(client: &Client) -> Option<String> {
    if let Some(v) = client.model.lock().expect("model lock").violation.clone() {
        return Some(v);
    }
    panicked().map(|p| format!("a task panicked: {p}"))
}

/// Opens every user's wallet and sets its PIN, with faults off.
async fn open_wallets(client: &Arc<Client>, topology: &Topology) -> Result<(), String> {
    let mut users = Vec::new();
    for s in &topology.shards {
        let (lo, hi) = s.slots.first().map(|r| (r[0], r[1])).unwrap_or((0, 1));
        for k in 0..USERS_PER_SHARD {
            // A user whose slot is the shard's: user_id % slots picks the slot.
            let slot = lo as u64 + k % (hi - lo).max(1) as u64;
            let id = slot + topology.slots as u64 * (k + 1);
            users.push(User { id, shard: topology.shard_of_user(id), ..User::default() });
        }
    }
    client.model.lock().expect("model lock").users = users.clone();
    for (i, u) in users.iter().enumerate() {
        for cmd in [
            hongbao_ledger::Command::OpenAccount { user: u.id, device: "sim-phone".into() },
            hongbao_ledger::Command::SetPin { user: u.id, salt: [i as u8; 16], hash: [0x5a; 32], verification: None },
        ] {
            let op = workload::Op { shard: u.shard, actor: i, id: client.fresh_id(), cmd, credits: None };
            let Some(o) = client.call(&op, Duration::from_secs(60)).await else {
                return Err(format!("{LIVENESS}user {}'s wallet could not be opened", u.id));
            };
            if !o.is_ok() {
                return Err(format!("user {}: {:?} answered {:?}", u.id, op.cmd, o.code));
            }
            client.model.lock().expect("model lock").heard(&op, &o);
        }
    }
    Ok(())
}

async fn steps(
    cfg: &SimConfig,
    cluster: &mut Cluster,
    client: &Arc<Client>,
    sched: &mut Schedule,
    rng: &mut ChaCha8Rng,
    trace: &Trace,
) -> Result<(), String> {
    wait_for_leaders(cluster, ELECT_WITHIN).await.map_err(|e| format!("{e} (at start)"))?;
    open_wallets(client, &cluster.topology).await?;
    let mut in_flight: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    for step in 0..cfg.steps {
        in_flight.retain(|t| !t.is_finished());
        let roll = rng.gen_range(0..100);
        if roll < 4 {
            let f = sched.next(cluster);
            if let Fault::Replay = f {
                if let Some(op) = client.replay() {
                    let c = client.clone();
                    in_flight.push(tokio::spawn(async move { c.run_replay(op).await }));
                }
            }
            sched.apply(&f, cluster, trace).await.map_err(|e| format!("fault at step {step}: {e:#}"))?;
        } else if roll < 14 {
            let n = client.model.lock().expect("model lock").users.len();
            let c = client.clone();
            let u = rng.gen_range(0..n);
            in_flight.push(tokio::spawn(async move { c.check_read(u).await }));
        } else if in_flight.len() < MAX_IN_FLIGHT {
            if let Some(op) = client.next_op() {
                let c = client.clone();
                in_flight.push(tokio::spawn(async move { c.run(op).await }));
            }
        }
        if let Some(v) = violation(client) {
            return Err(v);
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1..=20))).await;
    }
    for t in in_flight {
        let _ = t.await;
    }
    violation(client).map_or(Ok(()), Err)
}

/// Every shard has a leader that the up nodes agree on, within `within`.
async fn wait_for_leaders(cluster: &Cluster, within: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let leaderless: Vec<u32> = cluster
            .topology
            .shards
            .iter()
            .map(|s| s.id)
            .filter(|s| !cluster.up().into_iter().filter_map(|n| cluster.host(n)).any(|h| h.replica(*s).is_ok_and(|r| h.is_leader(&r))))
            .collect();
        if leaderless.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("{LIVENESS}shards {leaderless:?} have no leader {within:?} after faults stopped"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Faults stop: every node up, links healed, calm weather. Then the liveness and bank checks.
async fn settle(cluster: &mut Cluster, client: &Arc<Client>, sched: &mut Schedule, trace: &Trace) -> Result<(), String> {
    trace.note("faults stop".into());
    cluster.net.heal();
    cluster.net.set_weather(net::Weather::CALM);
    for n in cluster.node_ids() {
        cluster.clock(n).reset();
    }
    for n in sched.down() {
        sched.apply(&Fault::Restart(n), cluster, trace).await.map_err(|e| format!("restart after faults: {e:#}"))?;
    }
    wait_for_leaders(cluster, ELECT_WITHIN).await?;
    client.resolve_unanswered().await?;
    let totals = drain(cluster, DRAIN_WITHIN).await?;
    // The sweeper may refund an expired packet at any moment (ledger time follows the leaders'
    // clocks, which drift and jump): packets are read before and after the balances, until no
    // refund fell in between.
    let mut last = String::new();
    for _ in 0..5 {
        let before = packet_refunds(client).await?;
        let balances = balances(client).await?;
        if packet_refunds(client).await? != before {
            last = "the sweeper kept refunding packets while the balances were read".into();
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Every answered command applied exactly once: each balance is what its answers add up to.
        let users = client.model.lock().expect("model lock").users.clone();
        let wrong: Vec<String> = users
            .iter()
            .zip(&balances)
            .zip(&before)
            .filter(|((u, b), r)| **b as i128 != u.own + u.same_in + u.cross_in + **r)
            .map(|((u, b), r)| {
                format!("user {} holds {b} but the answers it was given add up to {}", u.id, u.own + u.same_in + u.cross_in + r)
            })
            .collect();
        if let Some(w) = wrong.first() {
            return Err(w.clone());
        }
        last.clear();
        break;
    }
    if !last.is_empty() {
        return Err(last);
    }
    trace.note(format!(
        "bank: balanced, {} cents in wallets, {} in escrow, {} top-ups, {} withdrawals",
        totals.total_balances_cents, totals.total_escrow_cents, totals.total_topups_cents, totals.total_withdrawals_cents
    ));
    violation(client).map_or(Ok(()), Err)
}

/// What the sweeper refunded to each user (by index), with every packet checked: it holds
/// exactly the grabs answered for it, each grabber once, and its shares, remainder and refund
/// add up to its total.
async fn packet_refunds(client: &Client) -> Result<Vec<i128>, String> {
    let (users, packets, grabs) = {
        let m = client.model.lock().expect("model lock");
        (m.users.clone(), m.packets.clone(), m.grabs.clone())
    };
    let mut refunds = vec![0i128; users.len()];
    for p in &packets {
        let view = client
            .read(p.shard, |store| hongbao_ledger::view::packet(store, p.id))
            .await
            .ok_or_else(|| format!("{LIVENESS}no leader of shard {} answered a read", p.shard))?
            .ok_or_else(|| format!("packet {:?}, answered as sent, does not exist", p.id))?;
        let mut claimed: Vec<(u64, u64)> = view.claims.iter().map(|c| (c.grabber, c.amount.0)).collect();
        let mut answered: Vec<(u64, u64)> = grabs.iter().filter(|g| g.0 == p.id).map(|g| (users[g.1].id, g.2)).collect();
        claimed.sort();
        answered.sort();
        if claimed != answered {
            return Err(format!("packet {:?}: claims {claimed:?} but grabs answered OK {answered:?}", p.id));
        }
        let taken: u64 = claimed.iter().map(|c| c.1).sum();
        let refunded = view.packet.refunded.map_or(0, |c| c.0);
        let left = if refunded > 0 { 0 } else { view.packet.remaining.0 };
        if taken + left + refunded != p.total {
            return Err(format!("packet {:?} of {}: {taken} grabbed, {left} left, {refunded} refunded", p.id, p.total));
        }
        refunds[p.sender] += refunded as i128;
    }
    Ok(refunds)
}

/// Every user's balance (by index), read linearizably.
async fn balances(client: &Client) -> Result<Vec<u64>, String> {
    let users = client.model.lock().expect("model lock").users.clone();
    let mut out = Vec::new();
    for u in &users {
        match client.read_balance(u.shard, u.id).await {
            None => return Err(format!("{LIVENESS}no leader of shard {} answered a read", u.shard)),
            Some(None) => return Err(format!("user {}'s wallet is missing", u.id)),
            Some(Some(b)) => out.push(b),
        }
    }
    Ok(out)
}

/// The cluster-wide audit (each shard read twice on its leader), until it balances with nothing
/// in flight between shards, within `within`.
async fn drain(cluster: &Cluster, within: Duration) -> Result<hongbao_proto::v1::AuditReply, String> {
    let deadline = tokio::time::Instant::now() + within;
    let mut last: String;
    loop {
        match audit(cluster).await {
            Ok(a) if a.balanced && a.total_in_flight_cents == 0 => return Ok(a),
            Ok(a) if !a.balanced => return Err(format!("audit: {}", a.problems.join("; "))),
            Ok(a) => last = format!("{} cents still in flight", a.total_in_flight_cents),
            Err(e) => last = e,
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("{LIVENESS}relays did not drain within {within:?} after faults stopped: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn audit(cluster: &Cluster) -> Result<hongbao_proto::v1::AuditReply, String> {
    let mut passes = Vec::new();
    for _ in 0..2 {
        let mut totals = Vec::new();
        for s in &cluster.topology.shards {
            let leader = cluster
                .up()
                .into_iter()
                .filter_map(|n| cluster.host(n))
                .find(|h| h.replica(s.id).is_ok_and(|r| h.is_leader(&r)))
                .ok_or_else(|| format!("shard {} has no leader", s.id))?;
            let t = hongbao_node::ops::audit::shard_totals(&leader, s.id).await.map_err(|e| e.message)?;
            totals.push(t);
        }
        passes.push(totals);
    }
    Ok(hongbao_node::ops::audit::check(&passes[0], &passes[1]))
}
