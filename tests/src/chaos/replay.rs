//! After the checker: every acknowledged operation is sent again under its own request id. Each
//! must answer exactly what it answered the first time (the ledger remembers the outcome of a
//! request id), and no money may move: every user's balance and the audit's totals are the same
//! after the replays as before them.

use super::checker::{hex, Final};
use super::history::{Ack, Event, Outcome};
use super::workload;
use futures::StreamExt;
use hongbao_client::Client;
use hongbao_proto::v1::AuditReply;
use hongbao_proto::ErrorCode;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Replays in flight at once: well inside the routers' per-user limits' bursts, and quick.
const AT_ONCE: usize = 16;
/// How long one replay may keep meeting RATE_LIMITED or an unknown outcome before it counts as
/// a different answer.
const REPLAY_WITHIN: Duration = Duration::from_secs(30);

/// Replays every acknowledged operation of `history` against the quiesced cluster whose state
/// was `fin`: Ok(what it proved) or Err(each difference).
pub async fn replay_acknowledged(client: &Client, history: &[Event], fin: &Final) -> Result<String, Vec<String>> {
    let acked: Vec<(&Event, Ack)> = history.iter().filter_map(|e| e.ack().map(|a| (e, a))).collect();
    let answers: Vec<Option<String>> =
        futures::stream::iter(acked.iter().map(|(e, first)| replay_one(client, e, *first))).buffered(AT_ONCE).collect().await;
    let mut v: Vec<String> = answers.into_iter().flatten().collect();
    let users: Vec<u64> = fin.balances.keys().copied().collect();
    let mut balances = BTreeMap::new();
    for u in users {
        match client.balance(u).await {
            Ok(b) => {
                balances.insert(u, b.balance_cents);
            }
            Err(e) => v.push(format!("user {u}: balance not read after the replays: {e}")),
        }
    }
    for (u, before) in &fin.balances {
        if let Some(after) = balances.get(u).filter(|a| *a != before) {
            v.push(format!("user {u}: balance {before} before the replays, {after} after"));
        }
    }
    match client.audit().await {
        Ok(a) if totals(&a) == totals(&fin.audit) => {}
        Ok(a) => v.push(format!("the audit's totals moved with the replays: {:?} before, {:?} after", totals(&fin.audit), totals(&a))),
        Err(e) => v.push(format!("no audit after the replays: {e}")),
    }
    if v.is_empty() {
        Ok(format!(
            "{} acknowledged operations replayed under their request ids: each answered as the first time, no balance or audit total moved",
            acked.len()
        ))
    } else {
        Err(v)
    }
}

/// (balances, top-ups, withdrawals, fees, in flight), cents: what a replay must not change.
fn totals(a: &AuditReply) -> (u64, u64, u64, u64, u64) {
    (a.total_balances_cents, a.total_topups_cents, a.total_withdrawals_cents, a.total_fees_cents, a.total_in_flight_cents)
}

/// Sends one acknowledged operation again, re-sending while it meets RATE_LIMITED or an unknown
/// outcome; None when it answers as the first time, else the difference.
async fn replay_one(client: &Client, e: &Event, first: Ack) -> Option<String> {
    let t = Instant::now();
    loop {
        let out = workload::outcome(workload::send(client, &e.request_id, &e.op).await);
        let again = matches!(out, Outcome::Unknown(_) | Outcome::Fail(ErrorCode::RateLimited));
        if again && t.elapsed() < REPLAY_WITHIN {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        return (out != Outcome::Ok(first)).then(|| {
            format!("{} {:?} (request {}) answered {first:?} first, {out:?} when replayed", e.op.name(), e.op, hex(&e.request_id))
        });
    }
}
