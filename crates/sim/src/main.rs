//! `hongbao-sim --seed S --steps N` replays one run; `--seeds A..B` runs many and lists the
//! failing ones. See docs/chaos.md ("The simulator").

use clap::Parser;
use hongbao_node::runtime::Bug;
use hongbao_sim::{run, Report, SimConfig};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "A seeded simulation of a whole hongbao cluster in one thread (#31)")]
struct Args {
    /// Run this one seed, printing the first failed check with the trace's last events.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run every seed of a range, A..B (B excluded).
    #[arg(long)]
    seeds: Option<String>,
    /// Driver steps per run (each a few ms of simulated time and a command, read or fault).
    #[arg(long, default_value_t = 2_000)]
    steps: u64,
    /// The cluster: a topology file (deploy/local-3x1.toml, deploy/local-3x3.toml).
    #[arg(long, default_value = "deploy/local-3x1.toml")]
    topology: PathBuf,
    /// Plant a known bug (relay-skips-a-sequence, applied-index-ahead-of-state,
    /// empty-replica-votes-at-once): the seeds must catch it.
    #[arg(long)]
    bug: Vec<String>,
    /// With --seeds: stop at the first failing seed.
    #[arg(long)]
    stop_at_first: bool,
    /// Write the failing seeds here, one per line.
    #[arg(long)]
    failures: Option<PathBuf>,
    /// Print every event of the run (one seed).
    #[arg(long)]
    verbose: bool,
    /// Wall seconds one seed may take before the run is declared stuck (exit 3).
    #[arg(long, default_value_t = 300)]
    wall_limit_secs: u64,
}

fn parse_bug(name: &str) -> anyhow::Result<Bug> {
    Bug::ALL.into_iter().find(|b| b.name() == name).ok_or_else(|| {
        let names: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
        anyhow::anyhow!("unknown bug {name:?}; known: {}", names.join(", "))
    })
}

fn parse_range(s: &str) -> anyhow::Result<std::ops::Range<u64>> {
    let (a, b) = s.split_once("..").ok_or_else(|| anyhow::anyhow!("--seeds wants A..B, got {s:?}"))?;
    let (a, b): (u64, u64) = (a.parse()?, b.parse()?);
    anyhow::ensure!(a < b, "--seeds {s}: empty range");
    Ok(a..b)
}

fn line(r: &Report) -> String {
    let f = &r.faults;
    format!(
        "seed {} {}: {} steps, {:.1} s simulated, {} ops ({} ok, {} refused, {} unanswered, {} reads, {} replays), {} messages, \
         faults: {} crashes, {} disks lost, {} partitions, {} weather, {} clock jumps, {} leader transfers; trace {}",
        r.seed,
        match &r.failure {
            None => "ok",
            Some(f) if f.is_liveness() => "FAILED (liveness)",
            Some(_) => "FAILED (a broken rule)",
        },
        r.steps,
        r.sim_ms as f64 / 1000.0,
        r.ops.sent,
        r.ops.ok,
        r.ops.refused,
        r.ops.unanswered,
        r.ops.reads,
        r.ops.replays,
        r.messages,
        f.crashes,
        f.disks_lost,
        f.partitions,
        f.weather,
        f.clock_jumps,
        f.leader_transfers,
        r.trace_hash
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Nodes log only what is wrong; the trace is the simulation's own record.
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .init();
    let text = std::fs::read_to_string(&args.topology).map_err(|e| anyhow::anyhow!("{}: {e}", args.topology.display()))?;
    let topology = hongbao_topology::Topology::parse(&text)?;
    let bugs = args.bug.iter().map(|b| parse_bug(b)).collect::<anyhow::Result<Vec<_>>>()?;
    let seeds = match (&args.seed, &args.seeds) {
        (Some(s), _) => *s..*s + 1,
        (None, Some(r)) => parse_range(r)?,
        (None, None) => anyhow::bail!("give --seed S or --seeds A..B"),
    };
    let single = seeds.end - seeds.start == 1;
    let started = Instant::now();
    let (mut failed, mut total, mut sim_ms) = (Vec::new(), hongbao_sim::schedule::FaultCounts::default(), 0u64);
    let mut broken_rules = 0u64;
    let mut ran = 0u64;
    for seed in seeds {
        let cfg = SimConfig {
            seed,
            steps: args.steps,
            topology: topology.clone(),
            bugs: bugs.clone(),
            verbose: args.verbose && single,
            wall_limit: std::time::Duration::from_secs(args.wall_limit_secs),
        };
        let r = run(&cfg);
        ran += 1;
        sim_ms += r.sim_ms;
        total.add(&r.faults);
        println!("{}", line(&r));
        if let Some(f) = &r.failure {
            println!("  first failed check: {}", f.check);
            if single {
                println!("  last events:");
                for e in &f.trace_tail {
                    println!("    {e}");
                }
            }
            failed.push(seed);
            broken_rules += u64::from(!f.is_liveness());
            if args.stop_at_first {
                break;
            }
        }
    }
    println!(
        "{ran} seeds, {} failed ({broken_rules} on a broken rule, {} on liveness), {:.1} simulated hours, {} faults ({} crashes, {} disks lost, {} partitions, {} clock jumps), {:.0} s wall",
        failed.len(),
        failed.len() as u64 - broken_rules,
        sim_ms as f64 / 3_600_000.0,
        total.total(),
        total.crashes,
        total.disks_lost,
        total.partitions,
        total.clock_jumps,
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.failures {
        let text: String = failed.iter().map(|s| format!("{s}\n")).collect();
        std::fs::write(path, text)?;
    }
    if !failed.is_empty() {
        println!("failing seeds: {failed:?} (replay one: hongbao-sim --seed S --steps {})", args.steps);
        std::process::exit(1);
    }
    Ok(())
}
