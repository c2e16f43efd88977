//! The cluster audit's JSON shape, written once: `hongbao cluster audit --json` prints `Audit`
//! (totals and each shard), the bench's `result.json` records `Totals`. Derived with serde from
//! the proto reply; key names are part of the CLI's documented output.

use hongbao_proto::v1::{AuditReply, ShardTotals};
use serde::Serialize;

/// The cluster's totals and verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    pub balanced: bool,
    pub problems: Vec<String>,
    pub total_topups_cents: u64,
    pub total_withdrawals_cents: u64,
    pub total_balances_cents: u64,
    pub total_escrow_cents: u64,
    pub total_in_flight_cents: u64,
    pub total_fees_cents: u64,
}

/// The totals and every shard's own books.
#[derive(Debug, Clone, Serialize)]
pub struct Audit {
    #[serde(flatten)]
    pub totals: Totals,
    pub shards: Vec<Shard>,
}

/// One shard's books and whether its own identity holds.
#[derive(Debug, Clone, Serialize)]
pub struct Shard {
    pub shard: u32,
    pub balances_cents: u64,
    pub escrow_cents: u64,
    pub outbox_pending_cents: u64,
    pub fees_cents: u64,
    pub topups_cents: u64,
    pub withdrawals_cents: u64,
    pub credits_in_cents: u64,
    pub credits_out_delivered_cents: u64,
    pub identity_holds: bool,
}

impl From<&AuditReply> for Totals {
    fn from(a: &AuditReply) -> Totals {
        Totals {
            balanced: a.balanced,
            problems: a.problems.clone(),
            total_topups_cents: a.total_topups_cents,
            total_withdrawals_cents: a.total_withdrawals_cents,
            total_balances_cents: a.total_balances_cents,
            total_escrow_cents: a.total_escrow_cents,
            total_in_flight_cents: a.total_in_flight_cents,
            total_fees_cents: a.total_fees_cents,
        }
    }
}

impl From<&ShardTotals> for Shard {
    fn from(s: &ShardTotals) -> Shard {
        Shard {
            shard: s.shard,
            balances_cents: s.balances_cents,
            escrow_cents: s.escrow_cents,
            outbox_pending_cents: s.outbox_pending_cents,
            fees_cents: s.fees_cents,
            topups_cents: s.topups_cents,
            withdrawals_cents: s.withdrawals_cents,
            credits_in_cents: s.credits_in_cents,
            credits_out_delivered_cents: s.credits_out_delivered_cents,
            identity_holds: s.identity_holds,
        }
    }
}

impl From<&AuditReply> for Audit {
    fn from(a: &AuditReply) -> Audit {
        Audit { totals: Totals::from(a), shards: a.shards.iter().map(Shard::from).collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_shape_keeps_its_flat_documented_keys() {
        let reply = AuditReply { balanced: true, shards: vec![ShardTotals { shard: 1, ..Default::default() }], ..Default::default() };
        let v = serde_json::to_value(Audit::from(&reply)).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "balanced",
                "problems",
                "shards",
                "total_balances_cents",
                "total_escrow_cents",
                "total_fees_cents",
                "total_in_flight_cents",
                "total_topups_cents",
                "total_withdrawals_cents"
            ]
        );
        assert_eq!(v["shards"][0]["shard"], 1);
    }
}
