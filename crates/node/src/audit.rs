//! The cluster-wide conservation check, and the per-shard totals it is made of.
//!
//! Each shard reports its totals from ONE consistent read (on its leader, after ReadIndex), and
//! the ledger checks its own identity there:
//!   Σ balances + escrow + outbox pending + fees = top-ups − withdrawals + credits in − credits out.
//! Summed over all shards, credits in and out cancel except for money in flight, so
//!   Σ balances + Σ escrow + in flight + Σ fees = Σ top-ups − Σ withdrawals
//! holds whenever every shard's identity does. What is left to prove is that no credit was
//! applied twice or lost between shards. Reads of different shards happen at different moments,
//! so the audit reads every shard twice: what destination D had received from S in the first
//! pass can never exceed what S had sent to D by the second pass; and where D had received S's
//! last sequence number, the amounts must be equal to the cent.

use crate::error::HostError;
use crate::host::Host;
use crate::storage::ShardStore;
use hongbao_ledger::{view, ShardId};
use hongbao_proto::v1::{AuditReply, PairTotals, ShardTotals};

pub fn check(first: &[ShardTotals], second: &[ShardTotals]) -> AuditReply {
    let mut problems = Vec::new();
    let mut reply = AuditReply::default();
    for s in second {
        if !s.identity_holds {
            problems.push(format!("shard {}: ledger identity does not hold (recomputed sums differ from aggregates)", s.shard));
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
        reply.total_topups_cents += s.topups_cents;
        reply.total_withdrawals_cents += s.withdrawals_cents;
        reply.total_balances_cents += s.balances_cents;
        reply.total_escrow_cents += s.escrow_cents;
        reply.total_fees_cents += s.fees_cents;
    }
    // Cross-shard exactly-once: received (pass 1) vs sent (pass 2).
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
    let held = reply.total_balances_cents as u128 + reply.total_escrow_cents as u128 + reply.total_fees_cents as u128;
    let net_in = reply.total_topups_cents as i128 - reply.total_withdrawals_cents as i128;
    let in_flight = net_in - held as i128;
    if in_flight < 0 {
        problems.push(format!("more money held ({held}) than ever came in net ({net_in})"));
    }
    reply.total_in_flight_cents = in_flight.max(0) as u64;
    reply.balanced = problems.is_empty();
    reply.problems = problems;
    reply.shards = second.to_vec();
    reply
}

/// One shard's totals from one consistent read on its leader (for the audit).
pub async fn shard_totals(host: &Host, shard: ShardId) -> Result<ShardTotals, HostError> {
    host.linearizable(shard).await?;
    // Everything from one RocksDB snapshot: totals, recomputed sums and pair counters agree.
    let store = ShardStore::frozen(&host.db, shard);
    let a = view::audit(&store);
    let sent = view::sent(&store);
    let received = view::received(&store);
    let t = &a.totals;
    Ok(ShardTotals {
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
        identity_holds: a.ok,
        sent: sent.into_iter().map(|(s, p)| PairTotals { shard: s, cents: p.cents.0, seq: p.seq }).collect(),
        received: received.into_iter().map(|(s, p)| PairTotals { shard: s, cents: p.cents.0, seq: p.seq }).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hongbao_proto::v1::PairTotals;

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

    #[test]
    fn audit_balances_with_a_credit_in_flight_and_flags_a_double_credit() {
        // Shard 1 sent 30 to shard 2 (seq 1), still pending; shard 2 has not applied it yet.
        let mut a = shard(1, 70, 30, 100, 0, 0);
        a.sent = vec![PairTotals { shard: 2, cents: 30, seq: 1 }];
        let b = shard(2, 0, 0, 0, 0, 0);
        let r = check(&[a.clone(), b.clone()], &[a.clone(), b.clone()]);
        assert!(r.balanced, "{:?}", r.problems);
        assert_eq!(r.total_in_flight_cents, 30);

        // Shard 2 claims to have received seq 1 twice over (60 cents): flagged.
        let mut b2 = shard(2, 60, 0, 0, 60, 0);
        b2.received = vec![PairTotals { shard: 1, cents: 60, seq: 1 }];
        let r = check(&[a.clone(), b2.clone()], &[a, b2]);
        assert!(!r.balanced);
    }

    #[test]
    fn audit_flags_a_shard_whose_identity_breaks() {
        let mut a = shard(1, 71, 30, 100, 0, 0);
        a.sent = vec![PairTotals { shard: 2, cents: 30, seq: 1 }];
        let r = check(&[a.clone()], &[a]);
        assert!(!r.balanced);
    }
}
