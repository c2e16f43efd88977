//! The simulator's own tests: a seed replays exactly, seeds keep the money right on both shipped
//! topologies, and each planted bug is caught by some seed (a simulator that never caught
//! anything has not been shown to work).

use hongbao_node::runtime::Bug;
use hongbao_sim::{run, Report, SimConfig};
use hongbao_topology::Topology;

fn topology(file: &str) -> Topology {
    let path = format!("{}/../../deploy/{file}", env!("CARGO_MANIFEST_DIR"));
    Topology::parse(&std::fs::read_to_string(&path).expect("a shipped topology")).expect("valid")
}

fn config(file: &str, seed: u64, steps: u64, bugs: Vec<Bug>) -> SimConfig {
    SimConfig { seed, steps, topology: topology(file), bugs, verbose: false, wall_limit: std::time::Duration::from_secs(300) }
}

fn explain(r: &Report) -> String {
    match &r.failure {
        None => format!("seed {} ok", r.seed),
        Some(f) => format!("seed {}: {}\n{}", r.seed, f.check, f.trace_tail.join("\n")),
    }
}

/// Seeds per topology in the suite (`scripts/sim` runs many more; docs/chaos.md).
fn suite_seeds() -> u64 {
    std::env::var("HONGBAO_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(100)
}

#[test]
fn the_same_seed_gives_the_same_run_and_trace_hash_and_another_seed_another() {
    let a = run(&config("local-3x1.toml", 7, 600, vec![]));
    let b = run(&config("local-3x1.toml", 7, 600, vec![]));
    let c = run(&config("local-3x1.toml", 8, 600, vec![]));
    assert!(a.failure.is_none(), "{}", explain(&a));
    assert!(a.ops.ok > 50 && a.faults.total() > 0, "the run did something: {a:?}");
    assert_eq!((a.events, &a.trace_hash), (b.events, &b.trace_hash), "seed 7 twice");
    assert_ne!(a.trace_hash, c.trace_hash, "seeds 7 and 8");
}

/// No seed breaks a money rule or an answer; most seeds also recover in time once faults stop.
/// Liveness failures are printed (docs/chaos.md lists the open ones); a rule broken fails at once.
fn sweep(file: &str, steps: u64) {
    let (mut crashes, mut liveness) = (0, Vec::new());
    let n = suite_seeds();
    for seed in 0..n {
        let r = run(&config(file, seed, steps, vec![]));
        if let Some(f) = &r.failure {
            assert!(f.is_liveness(), "{}", explain(&r));
            println!("{file}: seed {seed}: {}", f.check);
            liveness.push(seed);
        }
        crashes += r.faults.crashes + r.faults.disks_lost;
    }
    assert!(crashes > 0, "the seeds crashed no node");
    // Open (docs/chaos.md, "Open liveness failures"): about one seed in six does not recover
    // within the bounds after a lost disk and a clock leap. A quarter would mean the simulator
    // or the cluster broke.
    assert!(liveness.len() as u64 * 4 <= n, "{} of {n} seeds did not recover: {liveness:?}", liveness.len());
}

#[test]
fn seeds_keep_every_cent_and_every_answer_on_three_regions_of_one_node() {
    sweep("local-3x1.toml", 1_000);
}

#[test]
fn seeds_keep_every_cent_and_every_answer_on_three_regions_of_three_nodes() {
    sweep("local-3x3.toml", 1_000);
}

/// The first seed (from 0) that catches `bug`, within `budget` seeds: its run with the bug
/// breaks a rule, or gets stuck where the same seed without the bug passes.
fn first_catch(bug: Bug, file: &str, steps: u64, budget: u64) -> (u64, Report) {
    for seed in 0..budget {
        let r = run(&config(file, seed, steps, vec![bug]));
        match &r.failure {
            Some(f) if !f.is_liveness() => return (seed, r),
            Some(_) if run(&config(file, seed, steps, vec![])).failure.is_none() => return (seed, r),
            _ => {}
        }
    }
    panic!("no seed of 0..{budget} caught {}", bug.name());
}

#[test]
fn a_relay_that_skips_a_sequence_number_is_caught() {
    let (seed, r) = first_catch(Bug::RelaySkipsASequence, "local-3x1.toml", 1_000, 20);
    println!("{} caught by seed {seed}: {}", Bug::RelaySkipsASequence.name(), r.failure.unwrap().check);
}

#[test]
fn an_applied_index_durable_ahead_of_its_state_is_caught() {
    let (seed, r) = first_catch(Bug::AppliedIndexAheadOfState, "local-3x1.toml", 1_000, 60);
    println!("{} caught by seed {seed}: {}", Bug::AppliedIndexAheadOfState.name(), r.failure.unwrap().check);
}

#[test]
fn an_empty_replica_that_votes_before_it_caught_up_is_caught() {
    let (seed, r) = first_catch(Bug::EmptyReplicaVotesAtOnce, "local-3x1.toml", 1_000, 60);
    println!("{} caught by seed {seed}: {}", Bug::EmptyReplicaVotesAtOnce.name(), r.failure.unwrap().check);
}
