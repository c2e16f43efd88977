//! The shard audit ties the outbox to its pair counters: a record that vanished is caught even
//! when the running totals were made to agree with the loss.

use hongbao_ledger::*;

const SHARD: ShardId = 1;
const OTHER: ShardId = 2;

fn run(store: &mut MemStore, config: &LedgerConfig, n: u8, cmd: Command) -> Outcome {
    let mut l = Ledger::new(SHARD, config, store);
    let now = 1_800_000_000_000;
    let o = l.apply(&Request { id: RequestId::new(now, [n; 10]), time_ms: now, cmd });
    let w = l.into_writes();
    store.apply(w);
    o
}

/// Shard 1 with user 1 (10.00) and two transfers queued to shard 2 (1.00 and 2.00).
fn two_in_the_outbox() -> (MemStore, LedgerConfig) {
    let (mut s, c) = (MemStore::default(), LedgerConfig::default());
    assert!(run(&mut s, &c, 1, Command::OpenAccount { user: 1, device: "phone".into() }).is_ok());
    assert!(run(&mut s, &c, 2, Command::SetPin { user: 1, salt: [0; 16], hash: [0; 32], verification: None }).is_ok());
    assert!(run(&mut s, &c, 3, Command::TopUp { user: 1, amount: Cents(1000) }).is_ok());
    for (n, cents) in [(4, 100), (5, 200)] {
        let t = Command::Transfer {
            from: 1,
            to: 7,
            to_shard: OTHER,
            amount: Cents(cents),
            device: "phone".into(),
            verification: None,
            pin: PinCheck::Verified,
        };
        assert!(run(&mut s, &c, n, t).is_ok());
    }
    (s, c)
}

#[test]
fn the_audit_reports_each_destinations_outbox_against_its_counters() {
    let (mut s, c) = two_in_the_outbox();
    let a = view::audit(&s);
    assert!(a.ok, "{a:?}");
    let want = view::PairOut {
        dest: OTHER,
        sent: PairState { seq: 2, cents: Cents(300) },
        delivered_seq: 0,
        outbox_cents: Cents(300),
        outbox_records: 2,
    };
    assert_eq!(a.pairs_out, vec![want]);
    assert!(run(&mut s, &c, 6, Command::MarkDelivered { dest: OTHER, up_to_seq: 1 }).is_ok());
    let a = view::audit(&s);
    assert!(a.ok, "{a:?}");
    assert_eq!((a.pairs_out[0].delivered_seq, a.pairs_out[0].outbox_records, a.pairs_out[0].delivered_cents()), (1, 1, Some(Cents(100))));
}

#[test]
fn an_outbox_record_dropped_with_the_totals_made_to_agree_fails_the_shard_audit() {
    let (mut s, _) = two_in_the_outbox();
    // Record 1 disappears and the aggregates are "fixed" as if it had been delivered: recomputed
    // sums and the identity agree, which is all the audit used to look at.
    s.map.remove(&keys::outbox(OTHER, 1));
    let mut t = view::totals(&s);
    t.outbox_pending = Cents(200);
    t.outbox_records = 1;
    t.credits_out_delivered = Cents(100);
    s.map.insert(keys::totals(), bincode::serialize(&t).unwrap());
    assert!(t.identity_holds());
    let a = view::audit(&s);
    assert!(!a.ok, "the outbox to shard 2 holds seq 2 only, but nothing was ever marked delivered: {a:?}");
}
