//! Admin state that every replica must agree on, replicated through the log: region drain marks.

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
