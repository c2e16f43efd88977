//! Admin state that every replica must agree on, replicated through the log: region drain marks
//! and the cluster map.

use hongbao_ledger::*;

fn apply(store: &mut MemStore, config: &LedgerConfig, cmd: Command) -> Outcome {
    let mut l = Ledger::new(1, config, &*store);
    let o = l.apply(&Request { id: RequestId::new(1_000, [9; 10]), time_ms: 1_000, cmd });
    let w = l.into_writes();
    store.apply(w);
    assert!(view::audit(&*store).ok, "audit after a drain mark");
    o
}

fn set(region: &str, drained: bool) -> Command {
    Command::SetDrained { region: region.into(), drained }
}

#[test]
fn drain_marks_are_applied_state_idempotent_and_cleared_by_undrain() {
    let (mut s, c) = (MemStore::default(), LedgerConfig::default());
    assert!(view::drained_regions(&s).is_empty());
    assert!(set("x", true).is_system(), "re-sent to every shard: no request-id table");
    assert!(apply(&mut s, &c, set("shenzhen", true)).is_ok());
    // The same id again still applies (system command, idempotent by its state).
    assert!(apply(&mut s, &c, set("shenzhen", true)).is_ok());
    assert!(apply(&mut s, &c, set("tianjin", true)).is_ok());
    let want: Vec<String> = vec!["shenzhen".into(), "tianjin".into()];
    assert_eq!(view::drained_regions(&s).into_iter().collect::<Vec<_>>(), want);
    assert!(apply(&mut s, &c, set("shenzhen", false)).is_ok());
    assert!(apply(&mut s, &c, set("shenzhen", false)).is_ok());
    assert_eq!(view::drained_regions(&s).into_iter().collect::<Vec<_>>(), vec!["tianjin".to_string()]);
    // A drain mark is no money: totals unchanged apart from the ledger time.
    assert_eq!(view::totals(&s).balances, Cents(0));
}

#[test]
fn a_drain_mark_with_an_empty_or_oversized_region_is_refused() {
    let (mut s, c) = (MemStore::default(), LedgerConfig::default());
    assert_eq!(apply(&mut s, &c, set("", true)).code, Code::InvalidArgument);
    assert_eq!(apply(&mut s, &c, set(&"r".repeat(c.max_string + 1), true)).code, Code::InvalidArgument);
    assert!(view::drained_regions(&s).is_empty());
}

fn map(version: u64, text: &str) -> Command {
    Command::SetClusterMap { version, map: text.as_bytes().to_vec() }
}

#[test]
fn the_cluster_map_advances_one_version_at_a_time_and_a_stale_change_is_refused() {
    let (mut s, c) = (MemStore::default(), LedgerConfig::default());
    assert_eq!(view::cluster_map(&s), None, "no map stored: the topology file is version 0");
    assert!(map(1, "a").is_system());
    // Version 2 before 1: built on a map this shard never had.
    assert_eq!(apply(&mut s, &c, map(2, "b")).code, Code::ClusterMapStale);
    assert!(apply(&mut s, &c, map(1, "a")).is_ok());
    // The same change re-sent is a no-op; another change at the same version lost the race.
    assert!(apply(&mut s, &c, map(1, "a")).is_ok());
    assert_eq!(apply(&mut s, &c, map(1, "other admin's change")).code, Code::ClusterMapStale);
    assert_eq!(view::cluster_map(&s), Some((1, b"a".to_vec())));
    assert!(apply(&mut s, &c, map(2, "b")).is_ok());
    assert_eq!(apply(&mut s, &c, map(1, "a")).code, Code::ClusterMapStale, "an old version never comes back");
    assert_eq!(view::cluster_map(&s), Some((2, b"b".to_vec())));
    assert_eq!(view::totals(&s).balances, Cents(0));
}

#[test]
fn an_empty_or_oversized_cluster_map_is_refused() {
    let (mut s, c) = (MemStore::default(), LedgerConfig::default());
    assert_eq!(apply(&mut s, &c, map(1, "")).code, Code::InvalidArgument);
    let big = "x".repeat(MAX_CLUSTER_MAP_BYTES + 1);
    assert_eq!(apply(&mut s, &c, map(1, &big)).code, Code::InvalidArgument);
    assert_eq!(view::cluster_map(&s), None);
}
