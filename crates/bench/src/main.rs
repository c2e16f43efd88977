//! `hongbao-bench`: load against a running cluster through its routers, as real clients would.
//!
//! Scenarios: `hot-packets` (lucky group packets of 100 shares, the whole group grabbing each one
//! at once) and `evening-mix` (sends, grabs, balance reads and cross-shard transfers). Closed loop
//! by default (a fixed number of rounds in flight, as fast as the cluster answers); `--rate`
//! switches to an open loop on a fixed schedule, measured from each op's scheduled start.
//!
//! Writes `result.json` and `plot.svg`, prints a table, then runs the cluster audit and a check of
//! acknowledged grabs against the packets; exits 1 when the money does not balance or an
//! acknowledged op is not where it should be. See docs/benchmarks.md.
//!
//! Credentials: the bench acts for many users at once, so it uses the local cluster's security
//! folder (`--security-dir`) in development mode: every service role's certificate (app for user
//! calls, payment-gateway for top-ups, admin for the audit) and user tokens minted on the fly
//! with the development signing key (`Credentials::dev`). That is for local and test clusters
//! only; a production cluster never hands out its signing key. Every bench account is opened on
//! one device and sets one payment PIN, so spends carry the PIN and never meet a challenge.

// Amounts are written yuan_cents (5_000_00 is 5,000.00 yuan), as in the ledger.
#![allow(clippy::inconsistent_digit_grouping)]

// Rust-side allocations (protobuf messages, batches, futures) are a visible share of the
// profile under load; mimalloc is cheaper than glibc malloc for them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod check;
mod cpu;
mod limits;
mod region_kill;
mod report;
mod stats;
mod svg;
mod workload;

use crate::limits::{AUDIT_POLLS, SETUP_PARALLEL};
use anyhow::Context;
use clap::Parser;
use hongbao_client::credentials::local_security_dir;
use hongbao_client::money::{audit_summary, yuan};
use hongbao_client::{Client, Credentials};
use hongbao_topology::Topology;
use rand::seq::SliceRandom;
use stats::{Kind, Recorder};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use svg::Event;
use workload::{Clients, Ctx, Scenario};

#[derive(Parser, Debug)]
#[command(
    name = "hongbao-bench",
    about = "Benchmark the local hongbao cluster through its routers",
    long_about = "Benchmark the local hongbao cluster through its routers.\n\nThe bench acts for many users: it \
                  uses the cluster's security folder in development mode (every service role's certificate, and user \
                  tokens minted with the development signing key), so it runs against local and test clusters only."
)]
struct Args {
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Open loop at this many ops a second (hot-packets: grabs a second; packets arrive at
    /// rate / group-size a second). Omitted: closed loop, as fast as answers come.
    #[arg(long)]
    rate: Option<f64>,
    /// Most ops in flight. hot-packets: packet rounds in flight = concurrency / group-size.
    /// Default: closed loop 400 (hot-packets) / 64 (evening-mix); open loop 2000 / 1000.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Seconds of load before measuring starts (not recorded).
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// Router address (repeatable). Default: the topology's routers, each user's home region first.
    #[arg(long = "router")]
    routers: Vec<String>,
    /// Default: $HONGBAO_HOME/topology.toml, .cluster/topology.toml, or deploy/local-3x1.toml.
    #[arg(long)]
    topology: Option<PathBuf>,
    /// Security folder (CA, service certificates, development token key) of the cluster. The
    /// bench mints its users' tokens with the development key found here. Default:
    /// $HONGBAO_SECURITY_DIR, else `security/` beside the topology file.
    #[arg(long)]
    security_dir: Option<PathBuf>,
    /// Output folder. Default: bench-results/<scenario>-<UTC timestamp>.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Kill every node of this region during the run (`scripts/cluster kill-region`).
    #[arg(long, requires_all = ["kill_at", "restart_at"])]
    kill_region: Option<String>,
    /// Seconds after warm-up at which the region is killed.
    #[arg(long, requires = "kill_region")]
    kill_at: Option<u64>,
    /// Seconds after warm-up at which it is started again (`scripts/cluster start-region`).
    #[arg(long, requires = "kill_region")]
    restart_at: Option<u64>,
    /// Path of scripts/cluster. Default: $HONGBAO_CLUSTER_SCRIPT, else scripts/cluster.
    #[arg(long)]
    cluster_script: Option<PathBuf>,
    /// hot-packets: grabbers per packet (every one a different user). Above 100 the late ones
    /// find the packet empty (PACKET_EXHAUSTED, an expected outcome).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    group_size: u64,
    /// Packets fetched with `show` after the run to check acknowledged grabs against claims.
    #[arg(long, default_value_t = 50)]
    check_sample: usize,
    /// Grabs go to routers in `GrabGateway.Grabs` batches (each with its grabber's token), as a
    /// gateway holding many users' grabs would send them, instead of one call each.
    #[arg(long)]
    batch_grabs: bool,
}

/// Senders per shard in hot-packets. The daily send limit is 5,000.00 per user and a packet is
/// at most 8.00, so 20 a shard covers 60 x 625 = 37,500 packets (3.75 M grabs).
const SENDERS_PER_SHARD: usize = 20;
const SENDER_TOPUP: u64 = 5_000_00;
/// evening-mix: users per shard and their starting balance.
const USERS_PER_SHARD: usize = 150;
const USER_TOPUP: u64 = 2_000_00;

fn topology_path(given: &Option<PathBuf>) -> PathBuf {
    hongbao_client::local_topology_path(given.as_deref())
}

/// `YYYYMMDD-HHMMSS` in UTC.
fn utc_stamp(unix_secs: u64) -> String {
    let secs = i64::try_from(unix_secs).unwrap_or(i64::MAX);
    let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (y, m, d) = (t.year(), u8::from(t.month()), t.day());
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", t.hour(), t.minute(), t.second())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// The command line, checked, and what follows from it: the run's fixed settings.
struct Plan {
    args: Args,
    group_size: usize,
    /// Most ops in flight (see `--concurrency`).
    concurrency: usize,
    topo_path: PathBuf,
    topology: Topology,
    /// Role certificates and development tokens.
    credentials: Arc<Credentials>,
    /// scripts/cluster, for `--kill-region`.
    script: PathBuf,
    /// Unix time at start.
    started: Duration,
    out: PathBuf,
}

/// The users of a run (hot-packets: senders and grabbers; evening-mix: users by shard).
struct Users {
    senders: Vec<u64>,
    grabbers: Vec<u64>,
    by_shard: Vec<Vec<u64>>,
}

/// What the load phase leaves behind.
struct Load {
    ctx: Arc<Ctx>,
    /// "closed loop, N rounds in flight" or "open loop at ...".
    mode: String,
    slots: usize,
    events: Vec<Event>,
    warnings: Vec<String>,
    failures: Vec<String>,
    /// `/proc` samples of the cluster's processes when measuring started and when it ended.
    cpu: Option<(cpu::Sample, cpu::Sample)>,
}

async fn run(args: Args) -> anyhow::Result<i32> {
    let plan = plan(args)?;
    let clients = Arc::new(Clients::new(plan.topology.clone(), &plan.args.routers, plan.credentials.clone(), plan.args.batch_grabs));
    let users = setup(&plan, &clients).await?;
    let Load { ctx, mode, slots, events, warnings, mut failures, cpu } = load(&plan, clients.clone(), users).await;

    // Results of the measured window. Ops still in flight at stop_at are counted when they
    // finish; ops/s divides by the scheduled window.
    let summary = ctx.recorder.lock().expect("recorder lock").summary(Duration::from_secs(plan.args.duration));
    let title = format!("hongbao-bench {}: {}", plan.args.scenario.name(), mode);
    report::print_table(&title, &summary);
    let cpu = cpu.and_then(|(a, b)| cpu::between(&a, &b, summary.headline.ops));
    match &cpu {
        Some(u) => println!(
            "cluster CPU per op: {:.1} µs ({} nodes {:.1} µs, {} routers {:.1} µs; /proc, the bench not counted)",
            u.cluster_us_per_op, u.node_processes, u.nodes_us_per_op, u.router_processes, u.routers_us_per_op
        ),
        None => println!("cluster CPU per op: not measured (no hongbao-node process found in /proc)"),
    }
    if summary.headline.ops == 0 {
        failures.push("no op was answered in the measured window".into());
    }
    let client = clients.any();
    let checks = check_grabs(&ctx, &client, plan.args.check_sample).await;
    if !checks.problems.is_empty() {
        failures.push(format!("{} acknowledged-op problems", checks.problems.len()));
    }
    let audit = audit(&client, &mut failures).await;

    let result = report::RunResult {
        scenario: plan.args.scenario.name(),
        started_unix_s: plan.started.as_secs(),
        config: config(&plan, slots),
        summary: &summary,
        events: &events,
        checks,
        audit,
        cpu,
        warnings: &warnings,
        failures: &failures,
        passed: failures.is_empty(),
    };
    report::write(&plan.out, &title, &result)?;
    Ok(report::verdict(&warnings, &failures))
}

/// Checks the command line, loads the topology and creates the output folder.
fn plan(args: Args) -> anyhow::Result<Plan> {
    // Closed loop: the in-flight count *is* the load. Open loop: the schedule is the load and
    // the bound only stops a stalled cluster from piling up unbounded work in the bench, so it
    // is set well above what the schedule needs when answers come in time.
    let concurrency = args.concurrency.unwrap_or(match (args.scenario, args.rate.is_some()) {
        (Scenario::HotPackets, false) => 400,
        (Scenario::EveningMix, false) => 64,
        (Scenario::HotPackets, true) => 2_000,
        (Scenario::EveningMix, true) => 1_000,
    });
    anyhow::ensure!(concurrency >= 1, "--concurrency must be at least 1");
    if let Some(r) = args.rate {
        anyhow::ensure!(r.is_finite() && r > 0.0, "--rate must be a positive number of ops a second");
    }
    if let (Some(k), Some(r)) = (args.kill_at, args.restart_at) {
        anyhow::ensure!(k <= r, "--restart-at must not come before --kill-at");
    }
    let topo_path = topology_path(&args.topology);
    let topology = Topology::load(&topo_path).map_err(anyhow::Error::msg).with_context(|| format!("reading {}", topo_path.display()))?;
    anyhow::ensure!(!args.routers.is_empty() || !topology.routers.is_empty(), "{} lists no router; pass --router", topo_path.display());
    let security_dir = args.security_dir.clone().unwrap_or_else(|| local_security_dir(&topo_path));
    let credentials = Arc::new(
        Credentials::dev(&security_dir)
            .with_context(|| format!("loading credentials from {} (pass --security-dir)", security_dir.display()))?,
    );
    let script = args
        .cluster_script
        .clone()
        .or_else(|| std::env::var_os("HONGBAO_CLUSTER_SCRIPT").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("scripts/cluster"));
    if args.kill_region.is_some() {
        anyhow::ensure!(script.exists(), "{} not found (pass --cluster-script)", script.display());
        let known = topology.regions.iter().any(|r| Some(&r.name) == args.kill_region.as_ref());
        anyhow::ensure!(known, "no region {:?} in {}", args.kill_region, topo_path.display());
    }
    let started = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("bench-results/{}-{}", args.scenario.name(), utc_stamp(started.as_secs()))));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let group_size = args.group_size as usize;
    Ok(Plan { args, group_size, concurrency, topo_path, topology, credentials, script, started, out })
}

/// Opens the run's users, sets their PINs and funds them (not measured).
async fn setup(plan: &Plan, clients: &Arc<Clients>) -> anyhow::Result<Users> {
    let topology = &plan.topology;
    // Fresh users for every run (100,000 ids per millisecond of start time), so runs on the
    // same cluster never share accounts or daily send limits.
    let base = (plan.started.as_millis() as u64 % 10_000_000_000_000) * 100_000;
    let shards: Vec<u32> = topology.shards.iter().map(|s| s.id).collect();
    let setup_start = Instant::now();
    let users = match plan.args.scenario {
        Scenario::HotPackets => {
            let per_shard = (2 * plan.group_size).max(300).div_ceil(shards.len());
            let senders: Vec<u64> = shards.iter().flat_map(|s| workload::users_in_shard(topology, *s, base, SENDERS_PER_SHARD)).collect();
            let grabbers: Vec<u64> = shards.iter().flat_map(|s| workload::users_in_shard(topology, *s, base + 50_000, per_shard)).collect();
            let (n_senders, n_grabbers, topup) = (senders.len(), grabbers.len(), yuan(SENDER_TOPUP));
            println!(
                "setup: opening {n_senders} senders (topped up {topup} each) and {n_grabbers} grabbers over {} shards, each with a PIN",
                shards.len()
            );
            workload::open_and_fund(clients, &senders, SENDER_TOPUP, SETUP_PARALLEL).await?;
            workload::open_and_fund(clients, &grabbers, 0, SETUP_PARALLEL).await?;
            Users { senders, grabbers, by_shard: Vec::new() }
        }
        Scenario::EveningMix => {
            let by_shard: Vec<Vec<u64>> = shards.iter().map(|s| workload::users_in_shard(topology, *s, base, USERS_PER_SHARD)).collect();
            let all: Vec<u64> = by_shard.iter().flatten().copied().collect();
            println!(
                "setup: opening {} users over {} shards, each with a PIN, topped up {} each",
                all.len(),
                shards.len(),
                yuan(USER_TOPUP)
            );
            workload::open_and_fund(clients, &all, USER_TOPUP, SETUP_PARALLEL).await?;
            Users { senders: Vec::new(), grabbers: Vec::new(), by_shard }
        }
    };
    println!("setup done in {:.1} s", setup_start.elapsed().as_secs_f64());
    Ok(users)
}

/// Warm-up and the measured window: the closed or open loop, a progress line a second, and the
/// region kill when asked for.
async fn load(plan: &Plan, clients: Arc<Clients>, users: Users) -> Load {
    let args = &plan.args;
    let run_start = Instant::now();
    let measure_start = run_start + Duration::from_secs(args.warmup);
    let stop_at = measure_start + Duration::from_secs(args.duration);
    let headline = match args.scenario {
        Scenario::HotPackets => vec![Kind::Grab],
        Scenario::EveningMix => vec![Kind::Send, Kind::Grab, Kind::Balance, Kind::Transfer],
    };
    let recorder = Recorder::new(measure_start, headline);
    let ctx = Arc::new(Ctx::new(args.scenario, clients, recorder, stop_at, users.senders, users.grabbers, plan.group_size, users.by_shard));

    // Rounds in flight: a hot-packets round is one send then group-size grabs at once.
    let (slots, rounds_per_sec) = match args.scenario {
        Scenario::HotPackets => ((plan.concurrency / plan.group_size).max(1), args.rate.map(|r| r / plan.group_size as f64)),
        Scenario::EveningMix => (plan.concurrency, args.rate),
    };
    let mode = match args.rate {
        Some(r) => format!("open loop at {r} ops/s, at most {slots} rounds in flight"),
        None => format!("closed loop, {slots} rounds in flight"),
    };
    println!("{}: {mode}; warm-up {} s, measuring {} s", args.scenario.name(), args.warmup, args.duration);

    let events = Arc::new(Mutex::new(Vec::new()));
    let kill_task = match (&args.kill_region, args.kill_at, args.restart_at) {
        (Some(region), Some(k), Some(r)) => {
            Some(tokio::spawn(region_kill::kill_and_restart(plan.script.clone(), region.clone(), measure_start, k, r, events.clone())))
        }
        _ => None,
    };
    let progress_task = tokio::spawn(progress(ctx.clone(), measure_start));
    let cpu_task = tokio::spawn(async move {
        tokio::time::sleep_until(measure_start.into()).await;
        let a = cpu::sample();
        tokio::time::sleep_until(stop_at.into()).await;
        (a, cpu::sample())
    });
    match rounds_per_sec {
        Some(per_sec) => workload::open_loop(ctx.clone(), per_sec, slots).await,
        None => workload::closed_loop(ctx.clone(), slots).await,
    }
    progress_task.abort();
    let load_end = Instant::now();
    let cpu = cpu_task.await.ok();
    let (mut failures, mut warnings) = (Vec::new(), Vec::new());
    if let Some(t) = kill_task {
        match t.await {
            Ok(Ok(w)) => warnings.extend(w),
            Ok(Err(e)) => failures.push(format!("region kill/restart failed: {e:#}")),
            Err(e) => failures.push(format!("region kill/restart task died: {e}")),
        }
    }
    println!(
        "load ended; last answers arrived {:.1} s after the schedule ended",
        load_end.saturating_duration_since(stop_at).as_secs_f64()
    );
    let events = events.lock().expect("events lock").clone();
    Load { ctx, mode, slots, events, warnings, failures, cpu }
}

/// One progress line a second: the last complete second's headline ops.
async fn progress(ctx: Arc<Ctx>, measure_start: Instant) {
    let mut next = measure_start + Duration::from_secs(1);
    while next <= ctx.stop_at {
        tokio::time::sleep_until(next.into()).await;
        let sec = (next - measure_start).as_secs() as usize - 1;
        let line = ctx.recorder.lock().expect("recorder lock").second(sec);
        let (ops, errors, p99) = line.unwrap_or((0, 0, 0.0));
        println!("[{:6}s] {ops:>7} ops/s  p99 {p99:>8.2} ms  errors {errors}", sec + 1);
        next += Duration::from_secs(1);
    }
}

/// Acknowledged grabs against the packets the cluster shows: every tracked packet's acks on their
/// own, and a sample of packets fetched with `show` and compared to their claims.
async fn check_grabs(ctx: &Ctx, client: &Client, sample_size: usize) -> report::Checks {
    let (tracked, grabs, untracked, mut problems, sample) = {
        let tracker = ctx.tracker.lock().expect("tracker lock");
        let mut problems = Vec::new();
        for (id, t) in &tracker.packets {
            problems.extend(check::check_acks(*id, t));
        }
        let ids: Vec<u64> = tracker.packets.keys().copied().collect();
        let sample: Vec<(u64, check::Tracked)> =
            ids.choose_multiple(&mut rand::thread_rng(), sample_size).map(|id| (*id, tracker.packets[id].clone())).collect();
        (tracker.packets.len(), tracker.grabs(), tracker.untracked_packets, problems, sample)
    };
    for (id, t) in &sample {
        match client.show_packet(*id).await {
            Ok(v) => problems.extend(check::check_view(*id, t, &v)),
            Err(e) => problems.push(format!("packet {id}: show failed: {e}")),
        }
    }
    println!(
        "\nchecked {tracked} packets with {grabs} acknowledged grabs ({} fetched and compared to their claims{}): {}",
        sample.len(),
        if untracked > 0 { format!("; {untracked} packets past the tracking bound") } else { String::new() },
        if problems.is_empty() { "consistent".to_string() } else { format!("{} PROBLEMS", problems.len()) }
    );
    for p in problems.iter().take(20) {
        println!("  PROBLEM: {p}");
    }
    report::Checks { packets: tracked, acknowledged_grabs: grabs, packets_shown: sample.len(), problems }
}

/// The audit: credits may still be in flight between shards; give the relays a moment.
async fn audit(client: &Client, failures: &mut Vec<String>) -> report::Audit {
    let mut audit = client.audit().await;
    for _ in 0..AUDIT_POLLS {
        if matches!(&audit, Ok(a) if a.balanced && a.total_in_flight_cents == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        audit = client.audit().await;
    }
    match &audit {
        Ok(a) => {
            println!("audit: {}", audit_summary(a));
            for p in &a.problems {
                println!("  AUDIT PROBLEM: {p}");
            }
            if !a.balanced {
                failures.push("the audit does not balance".into());
            }
        }
        Err(e) => {
            println!("audit failed: {e}");
            failures.push(format!("audit failed: {e}"));
        }
    }
    report::Audit::of(&audit)
}

/// The `config` part of result.json.
fn config(plan: &Plan, slots: usize) -> report::Config {
    let args = &plan.args;
    report::Config {
        mode: if args.rate.is_some() { "open" } else { "closed" },
        rate_ops_per_s: args.rate,
        concurrency: plan.concurrency,
        rounds_in_flight: slots,
        group_size: (args.scenario == Scenario::HotPackets).then_some(plan.group_size),
        warmup_s: args.warmup,
        duration_s: args.duration,
        routers: if args.routers.is_empty() {
            plan.topology.routers.iter().map(|r| r.addr.clone()).collect()
        } else {
            args.routers.clone()
        },
        topology: plan.topo_path.display().to_string(),
        kill_region: args.kill_region.clone(),
        kill_at_s: args.kill_at,
        restart_at_s: args.restart_at,
        batch_grabs: args.batch_grabs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(951_782_400), "20000229-000000");
        assert_eq!(utc_stamp(1_767_225_599), "20251231-235959");
    }

    #[test]
    fn args_parse() {
        let a = Args::try_parse_from([
            "hongbao-bench",
            "--scenario",
            "hot-packets",
            "--rate",
            "2000",
            "--router",
            "127.0.0.1:7001",
            "--router",
            "127.0.0.1:7002",
        ])
        .unwrap();
        assert_eq!(a.scenario, Scenario::HotPackets);
        assert_eq!(a.routers.len(), 2);
        assert_eq!(a.security_dir, None);
        let a = Args::try_parse_from(["hongbao-bench", "--scenario", "evening-mix", "--security-dir", "/tmp/sec"]).unwrap();
        assert_eq!(a.security_dir, Some(PathBuf::from("/tmp/sec")));
        assert!(
            Args::try_parse_from(["hongbao-bench", "--scenario", "evening-mix", "--kill-region", "shanghai"]).is_err(),
            "kill needs both times"
        );
        assert!(Args::try_parse_from([
            "hongbao-bench",
            "--scenario",
            "evening-mix",
            "--kill-region",
            "shanghai",
            "--kill-at",
            "5",
            "--restart-at",
            "10"
        ])
        .is_ok());
    }
}
