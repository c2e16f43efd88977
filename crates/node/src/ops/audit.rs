//! The cluster-wide conservation check, and the per-shard totals it is made of.
//!
//! Each shard reports its totals from ONE consistent read (on its leader, after ReadIndex), and
//! the ledger checks its own identity there:
//!   Σ balances + escrow + outbox pending + fees = top-ups − withdrawals + credits in − credits out,
//! and that its pair counters add up to those credits: Σ sent = outbox pending + credits out,
//! Σ received = credits in, and each destination's outbox holds exactly the records after its
//! delivered mark. Summed over all shards, credits in and out cancel except for money in flight,
//!   Σ balances + Σ escrow + in flight + Σ fees = Σ top-ups − Σ withdrawals,
//! where in flight is MEASURED per (source, destination) pair: what the source sent minus what
//! the destination applied. It is not what the totals leave unexplained, which would pass off
//! money lost between shards as in flight.
//!
//! What is left to prove is that no credit was applied twice or lost. Reads of different shards
//! happen at different moments, so the audit reads every shard twice, and each comparison is one
//! that no movement between the reads can break:
//! - applied twice: what destination D had received from S in pass 1 can never exceed what S had
//!   sent to D by pass 2; where D had received S's last sequence number, to the cent;
//! - lost: what S had dropped from its outbox to D by pass 1 (marked delivered, which the relay
//!   does only after D applied it) must be held by D by pass 2. Money that left S, is no longer
//!   in S's outbox and is not at D is gone: the pair is named.

use crate::error::HostError;
use crate::host::Host;
use crate::storage::ShardStore;
use hongbao_ledger::{view, ShardId, Store};
use hongbao_proto::v1::{AuditReply, PairTotals, ShardTotals};

/// What `dst` reports having applied from `src`: (seq, cents).
fn received_by(shards: &[ShardTotals], dst: u32, src: u32) -> (u64, u64) {
    shards
        .iter()
        .find(|s| s.shard == dst)
        .and_then(|s| s.received.iter().find(|p| p.shard == src))
        .map(|p| (p.seq, p.cents))
        .unwrap_or((0, 0))
}

pub fn check(first: &[ShardTotals], second: &[ShardTotals]) -> AuditReply {
    let mut problems = Vec::new();
    let mut reply = AuditReply::default();
    for s in second {
        if !s.identity_holds {
            problems.push(format!(
                "shard {}: ledger identity does not hold (recomputed sums or outbox records differ from aggregates and counters)",
                s.shard
            ));
        }
        let lhs = s.balances_cents as u128
            + s.escrow_cents as u128
            + s.outbox_pending_cents as u128
            + s.fees_cents as u128
            + s.credits_out_delivered_cents as u128;
        let rhs = s.topups_cents as u128 + s.credits_in_cents as u128;
        if lhs + s.withdrawals_cents as u128 != rhs {
            problems.push(format!(
                "shard {}: balances+escrow+outbox+fees+out+withdrawals = {} but top-ups+in = {}",
                s.shard,
                lhs + s.withdrawals_cents as u128,
                rhs
            ));
        }
        // The pair counters are what in flight is measured from: they must carry the totals.
        let sent: u128 = s.sent.iter().map(|p| p.cents as u128).sum();
        if sent != s.outbox_pending_cents as u128 + s.credits_out_delivered_cents as u128 {
            problems.push(format!(
                "shard {}: sent to other shards {} cents, but outbox {} + delivered {}",
                s.shard, sent, s.outbox_pending_cents, s.credits_out_delivered_cents
            ));
        }
        let received: u128 = s.received.iter().map(|p| p.cents as u128).sum();
        if received != s.credits_in_cents as u128 {
            problems
                .push(format!("shard {}: received from other shards {} cents, but credits in {}", s.shard, received, s.credits_in_cents));
        }
        for p in &s.sent {
            if p.delivered_seq > p.seq || p.outbox_records != p.seq - p.delivered_seq || p.outbox_cents > p.cents {
                problems.push(format!(
                    "shard {} -> shard {}: outbox holds {} records ({} cents) but seq {} was sent and {} delivered",
                    s.shard, p.shard, p.outbox_records, p.outbox_cents, p.seq, p.delivered_seq
                ));
            }
        }
        reply.total_topups_cents += s.topups_cents;
        reply.total_withdrawals_cents += s.withdrawals_cents;
        reply.total_balances_cents += s.balances_cents;
        reply.total_escrow_cents += s.escrow_cents;
        reply.total_fees_cents += s.fees_cents;
    }
    // Applied twice: received (pass 1) vs sent (pass 2).
    for dst in first {
        for r in &dst.received {
            let sent = second
                .iter()
                .find(|s| s.shard == r.shard)
                .and_then(|s| s.sent.iter().find(|p| p.shard == dst.shard))
                .map(|p| (p.cents, p.seq))
                .unwrap_or((0, 0));
            if r.seq > sent.1 || r.cents > sent.0 {
                problems.push(format!(
                    "shard {} received {} cents (seq {}) from shard {}, which only sent {} cents (seq {})",
                    dst.shard, r.cents, r.seq, r.shard, sent.0, sent.1
                ));
            } else if r.seq == sent.1 && r.cents != sent.0 {
                problems.push(format!(
                    "shard {} received seq {} from shard {} but {} cents where {} were sent",
                    dst.shard, r.seq, r.shard, r.cents, sent.0
                ));
            }
        }
    }
    // Lost: gone from the source's outbox (pass 1) vs held by the destination (pass 2).
    for src in first {
        for p in &src.sent {
            let (seq, cents) = received_by(second, p.shard, src.shard);
            let gone = p.cents.saturating_sub(p.outbox_cents);
            if p.delivered_seq > seq || gone > cents {
                problems.push(format!(
                    "shard {} -> shard {}: {} cents (up to seq {}) left shard {}'s outbox but shard {} applied only {} cents (up to seq {}): \
                     {} cents are neither held by shard {} nor in an outbox",
                    src.shard,
                    p.shard,
                    gone,
                    p.delivered_seq,
                    src.shard,
                    p.shard,
                    cents,
                    seq,
                    gone.saturating_sub(cents),
                    p.shard
                ));
            }
        }
    }
    // In flight, measured per pair (pass 2): sent by the source minus applied by the destination.
    // Each term comes from its own shard's read, so one may be negative while a credit moves; the
    // equation below is exact anyway whenever every shard's identity and counters hold.
    let mut in_flight = 0i128;
    for s in second {
        in_flight += s.sent.iter().map(|p| p.cents as i128 - received_by(second, p.shard, s.shard).1 as i128).sum::<i128>();
        // Received from a source that reports no sending at all (flagged above as applied twice).
        let unsent = s.received.iter().filter(|r| !second.iter().any(|x| x.shard == r.shard && x.sent.iter().any(|p| p.shard == s.shard)));
        in_flight -= unsent.map(|r| r.cents as i128).sum::<i128>();
    }
    let held = reply.total_balances_cents as i128 + reply.total_escrow_cents as i128 + reply.total_fees_cents as i128;
    let net_in = reply.total_topups_cents as i128 - reply.total_withdrawals_cents as i128;
    if held + in_flight != net_in {
        problems.push(format!(
            "held {held} + in flight {in_flight} (measured from the outboxes) != net top-ups {net_in}: {} cents unaccounted",
            net_in - held - in_flight
        ));
    }
    // Below zero only by the reads' timing (a source read before it sent what its destination,
    // read later, already applied: that money is held twice and the sum makes up for it); a
    // credit really applied twice is the exactly-once check's to flag. Reported as nothing.
    reply.total_in_flight_cents = in_flight.clamp(0, u64::MAX as i128) as u64;
    reply.balanced = problems.is_empty();
    reply.problems = problems;
    reply.shards = second.to_vec();
    reply
}

/// One shard's totals from one consistent read on its leader (for the audit).
pub async fn shard_totals(host: &Host, shard: ShardId) -> Result<ShardTotals, HostError> {
    host.linearizable(shard).await?;
    // Everything from one RocksDB snapshot: totals, recomputed sums and pair counters agree.
    Ok(totals_of(shard, &ShardStore::frozen(&host.db, shard)))
}

/// A shard's totals, recomputed sums and pair counters, from one read of its store.
pub fn totals_of(shard: ShardId, store: &(impl Store + ?Sized)) -> ShardTotals {
    let a = view::audit(store);
    let t = &a.totals;
    ShardTotals {
        shard,
        balances_cents: t.balances.0,
        escrow_cents: t.escrow.0,
        outbox_pending_cents: t.outbox_pending.0,
        fees_cents: t.fees.0,
        topups_cents: t.topups.0,
        withdrawals_cents: t.withdrawals.0,
        credits_in_cents: t.credits_in.0,
        credits_out_delivered_cents: t.credits_out_delivered.0,
        accounts: t.accounts,
        open_packets: t.open_packets,
        outbox_records: t.outbox_records,
        archived_packets: t.archived_packets,
        identity_holds: a.ok,
        sent: a
            .pairs_out
            .iter()
            .map(|p| PairTotals {
                shard: p.dest,
                cents: p.sent.cents.0,
                seq: p.sent.seq,
                delivered_seq: p.delivered_seq,
                outbox_cents: p.outbox_cents.0,
                outbox_records: p.outbox_records,
            })
            .collect(),
        received: a.received.iter().map(|(s, p)| PairTotals { shard: *s, cents: p.cents.0, seq: p.seq, ..Default::default() }).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hongbao_ledger::testing::World;
    use hongbao_ledger::{Cents, Code, Command, LedgerConfig, Outcome, PinCheck, UserId};
    use hongbao_proto::v1::PairTotals;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    fn shard(id: u32, bal: u64, outbox: u64, topups: u64, cin: u64, cout: u64) -> ShardTotals {
        ShardTotals {
            shard: id,
            balances_cents: bal,
            outbox_pending_cents: outbox,
            topups_cents: topups,
            credits_in_cents: cin,
            credits_out_delivered_cents: cout,
            identity_holds: true,
            ..Default::default()
        }
    }

    fn pair(shard: u32, cents: u64, seq: u64, delivered_seq: u64, outbox_cents: u64) -> PairTotals {
        PairTotals { shard, cents, seq, delivered_seq, outbox_cents, outbox_records: seq - delivered_seq }
    }

    #[test]
    fn audit_balances_with_a_credit_in_flight_and_flags_a_double_credit() {
        // Shard 1 sent 30 to shard 2 (seq 1), still pending; shard 2 has not applied it yet.
        let mut a = shard(1, 70, 30, 100, 0, 0);
        a.sent = vec![pair(2, 30, 1, 0, 30)];
        let b = shard(2, 0, 0, 0, 0, 0);
        let r = check(&[a.clone(), b.clone()], &[a.clone(), b.clone()]);
        assert!(r.balanced, "{:?}", r.problems);
        assert_eq!(r.total_in_flight_cents, 30);

        // Shard 2 claims to have received seq 1 twice over (60 cents): flagged.
        let mut b2 = shard(2, 60, 0, 0, 60, 0);
        b2.received = vec![PairTotals { shard: 1, cents: 60, seq: 1, ..Default::default() }];
        let r = check(&[a.clone(), b2.clone()], &[a, b2]);
        assert!(!r.balanced);
    }

    #[test]
    fn audit_flags_a_shard_whose_identity_breaks() {
        let mut a = shard(1, 71, 30, 100, 0, 0);
        a.sent = vec![pair(2, 30, 1, 0, 30)];
        let r = check(&[a.clone()], &[a]);
        assert!(!r.balanced);
    }

    #[test]
    fn a_credit_lost_in_the_relay_fails_the_audit_naming_the_pair() {
        // Shard 1 sent 30 to shard 2 and dropped the record as delivered; shard 2 never applied
        // it. Both shards' identities hold, and net top-ups minus held is 30: the old audit called
        // that "in flight" and balanced.
        let mut a = shard(1, 70, 0, 100, 0, 30);
        a.sent = vec![pair(2, 30, 1, 1, 0)];
        let b = shard(2, 0, 0, 0, 0, 0);
        let r = check(&[a.clone(), b.clone()], &[a, b]);
        assert!(!r.balanced, "a lost credit must not pass as in flight");
        assert!(r.problems.iter().any(|p| p.contains("shard 1 -> shard 2") && p.contains("30 cents are neither held")), "{:?}", r.problems);
    }

    #[test]
    fn an_outbox_that_lost_a_record_its_counters_still_count_fails_the_audit() {
        // Two sent, none delivered, one record left: the other is gone.
        let mut a = shard(1, 70, 10, 100, 0, 20);
        a.sent = vec![PairTotals { shard: 2, cents: 30, seq: 2, delivered_seq: 0, outbox_cents: 10, outbox_records: 1 }];
        let b = shard(2, 0, 0, 0, 0, 0);
        let r = check(&[a.clone(), b.clone()], &[a, b]);
        assert!(!r.balanced);
        assert!(r.problems.iter().any(|p| p.contains("shard 1 -> shard 2: outbox holds 1 records")), "{:?}", r.problems);
    }

    /// Three real ledgers (the ledger's test world, a millisecond per command) and a relay that
    /// delivers and marks in separate steps.
    struct Sim {
        world: World,
        rng: rand_chacha::ChaCha8Rng,
        /// (source, dest) -> seq delivered but not yet marked at the source.
        unmarked: BTreeMap<(u32, u32), u64>,
    }

    const SHARDS: u32 = 3;

    fn user(shard: u32, k: u64) -> UserId {
        shard as u64 * 100 + k
    }

    impl Sim {
        fn new(seed: u64) -> Sim {
            let mut s = Sim {
                world: World::new(SHARDS, LedgerConfig::default()).ticking(1),
                rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
                unmarked: BTreeMap::new(),
            };
            for sh in 1..=SHARDS {
                for k in 1..=3 {
                    s.world.open(sh, user(sh, k), 10_000);
                }
            }
            s
        }

        fn run(&mut self, shard: u32, cmd: Command) -> Outcome {
            self.world.run(shard, cmd)
        }

        fn transfer(&mut self, from_shard: u32, to_shard: u32, to: UserId, cents: u64) -> Outcome {
            let from = user(from_shard, self.rng.gen_range(1..=3));
            let cmd = Command::Transfer {
                from,
                to,
                to_shard,
                amount: Cents(cents),
                device: "phone".into(),
                verification: None,
                pin: PinCheck::Verified,
            };
            self.run(from_shard, cmd)
        }

        /// One random step: a transfer (sometimes to a user nobody opened, which comes back), a
        /// top-up, or half a relay round (deliver a batch; or mark one delivered).
        fn step(&mut self) {
            let (src, dst) = (self.rng.gen_range(1..=SHARDS), self.rng.gen_range(1..=SHARDS));
            match self.rng.gen_range(0..10) {
                0..=3 => {
                    let to = user(dst, if self.rng.gen_bool(0.2) { 9 } else { self.rng.gen_range(1..=3) });
                    let cents = self.rng.gen_range(1..=500);
                    self.transfer(src, dst, to, cents);
                }
                4 => {
                    let u = user(src, self.rng.gen_range(1..=3));
                    assert!(self.run(src, Command::TopUp { user: u, amount: Cents(77) }).is_ok());
                }
                5..=7 if src != dst => {
                    if let Some((credit, last)) = self.world.next_credit(src, dst, 4) {
                        // Out of order only after the test drops a credit on purpose.
                        match self.run(dst, credit).code {
                            Code::Ok => drop(self.unmarked.insert((src, dst), last)),
                            c => assert_eq!(c, Code::CreditOutOfOrder),
                        }
                    }
                }
                _ => {
                    if let Some(up_to_seq) = self.unmarked.remove(&(src, dst)) {
                        assert!(self.run(src, Command::MarkDelivered { dest: dst, up_to_seq }).is_ok());
                    }
                }
            }
        }

        fn read(&self, shard: u32) -> ShardTotals {
            totals_of(shard, self.world.store(shard))
        }

        /// The two-pass audit, each shard read at its own moment with traffic in between.
        fn audit(&mut self, busy: bool) -> AuditReply {
            let pass = |sim: &mut Sim| {
                let mut order: Vec<u32> = (1..=SHARDS).collect();
                order.sort_by_key(|_| sim.rng.gen::<u32>());
                let mut out = vec![];
                for sh in order {
                    out.push(sim.read(sh));
                    for _ in 0..if busy { sim.rng.gen_range(0..4) } else { 0 } {
                        sim.step();
                    }
                }
                out
            };
            let first = pass(self);
            let second = pass(self);
            check(&first, &second)
        }

        /// Relays until every outbox is empty; what was delivered but unmarked is delivered
        /// again (and skipped) before its mark.
        fn drain(&mut self) {
            self.world.drain(64);
            self.unmarked.clear();
        }
    }

    /// Audits taken while credits move (each shard read at its own moment) always balance, and
    /// report exactly nothing in flight once drained; then one credit marked delivered that its
    /// destination never applied (every shard's own identity still holding) fails every audit,
    /// naming the pair, where the old derivation counted it as in flight.
    #[test]
    fn audits_amid_traffic_balance_and_a_credit_dropped_between_shards_never_does() {
        for seed in 0..40 {
            let mut sim = Sim::new(seed);
            for _ in 0..30 {
                for _ in 0..sim.rng.gen_range(0..8) {
                    sim.step();
                }
                let r = sim.audit(true);
                assert!(r.balanced, "seed {seed}: {:?}", r.problems);
            }
            sim.drain();
            let r = sim.audit(false);
            assert!(r.balanced && r.total_in_flight_cents == 0, "seed {seed}: {r:?}");

            // A credit lost in the relay: queued at 1, marked delivered at 1, never applied at 2.
            let o = sim.transfer(1, 2, user(2, 1), 123);
            assert!(o.is_ok(), "{o:?}");
            let sent = view::sent(sim.world.store(1)).into_iter().find(|(d, _)| *d == 2).expect("sent to 2").1;
            assert!(sim.run(1, Command::MarkDelivered { dest: 2, up_to_seq: sent.seq }).is_ok());
            for busy in [false, true] {
                let r = sim.audit(busy);
                assert!(r.shards.iter().all(|s| s.identity_holds), "seed {seed}: each shard alone looks fine");
                assert!(!r.balanced, "seed {seed}: the lost credit passed as in flight: {r:?}");
                let named = |p: &String| p.starts_with("shard 1 -> shard 2:") && p.contains("neither held by shard 2 nor in an outbox");
                assert!(r.problems.iter().any(named), "seed {seed}: {:?}", r.problems);
            }
        }
    }
}
