//! hongbao-chaos: runs one fault schedule against a fresh local cluster (real processes on
//! loopback) under a recorded workload, then checks the money. Exit code 1 on any violation.
//!
//!   hongbao-chaos kill-leader --duration 60
//!   hongbao-chaos all --duration 20

use clap::Parser;
use hongbao_tests::chaos::{self, Options, Schedule};
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Chaos schedules with a bank-style checker against a local hongbao cluster")]
struct Args {
    /// kill-leader | kill-region | partition-region | isolate-leader | pause-node | slow-links |
    /// rolling-restart | clock-jump | disk-loss | snapshot-storm | clock-leap | big-entries |
    /// corrupt-snapshot | netns-partition (root: nodes in network namespaces) | reshape |
    /// move-slots | all
    schedule: String,
    /// Seconds of fault injection (the workload runs throughout).
    #[arg(long, default_value_t = 30)]
    duration: u64,
    #[arg(long, default_value_t = 9)]
    workers: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Simulated one-way WAN latency between regions, in ms.
    #[arg(long, default_value_t = 5)]
    wan_latency_ms: u64,
    /// Nodes per region: 1 is the 3 × 1 topology (every node holds every shard), 3 the 3 × 3
    /// (each node one shard).
    #[arg(long, default_value_t = 1)]
    nodes_per_region: usize,
    /// Run on containers (scripts/cluster up --containers; the image must exist: scripts/chaos
    /// builds it): kill-leader, kill-region and partition-region, the last by disconnecting
    /// the region's containers from the other regions' networks.
    #[arg(long)]
    containers: bool,
}

fn main() {
    let a = Args::parse();
    let schedules: Vec<Schedule> = if a.schedule == "all" {
        Schedule::ALL.into_iter().filter(|s| !a.containers || s.runs_in_containers()).collect()
    } else {
        match Schedule::parse(&a.schedule) {
            Some(s) => vec![s],
            None => {
                eprintln!("unknown schedule {:?}; one of: all, {}", a.schedule, Schedule::ALL.map(|s| s.name()).join(", "));
                std::process::exit(2);
            }
        }
    };
    if a.duration == 0 || a.duration > 24 * 3600 || a.workers == 0 || a.workers > 256 || !(1..=3).contains(&a.nodes_per_region) {
        eprintln!("--duration must be 1..=86400 s, --workers 1..=256 and --nodes-per-region 1..=3");
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    let opts = Options {
        duration: Duration::from_secs(a.duration),
        workers: a.workers,
        seed: a.seed,
        wan_latency_ms: a.wan_latency_ms,
        containers: a.containers,
        nodes_per_region: a.nodes_per_region,
        ..Options::default()
    };
    let mut failed = false;
    for s in schedules {
        // On Ctrl-C the run is dropped, so its cluster and (netns-partition) its namespaces,
        // veths and bridge are removed before exiting.
        let run = rt.block_on(async {
            tokio::select! {
                r = chaos::run(s, &opts) => Some(r),
                _ = tokio::signal::ctrl_c() => None,
            }
        });
        let Some(run) = run else {
            eprintln!("interrupted during {}: cluster stopped and cleaned up", s.name());
            std::process::exit(130);
        };
        match run {
            Ok(report) => {
                println!("{report}");
                failed |= !report.violations.is_empty();
            }
            Err(e) => {
                println!("schedule {} could not run: {e:#}", s.name());
                failed = true;
            }
        }
    }
    std::process::exit(if failed { 1 } else { 0 });
}
