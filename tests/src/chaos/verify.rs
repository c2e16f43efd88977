//! After the fault window: settle every unknown outcome, count, wait for quiescence, then run
//! the bank checker and the checks that need the cluster (every node's replicas hold the final
//! balances).

use super::checker::{self, Final};
use super::history::{self, Event, Outcome};
use super::replay;
use super::report::Report;
use super::runner::{QUIESCE, RESOLVE_SENDS, RESOLVE_WITHIN};
use super::workload::{self, Shared};
use super::UNAVAILABLE_GAP;
use crate::Cluster;
use hongbao_client::{settle, Client};
use hongbao_proto::v1::AuditReply;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// After the run: settle every unknown outcome, count, wait for quiescence, run the bank
/// checker, and check that every shard served something.
pub(crate) async fn verify(c: &Cluster, shared: &Shared, client: &Client, users: &[u64], audits: &[AuditReply], report: &mut Report) {
    resolve_unknown(shared, client, report).await;
    let history = shared.history.lock().expect("history lock").clone();
    summarize(&history, report, shared.start.elapsed());
    let fin = quiesce(client, &history, users).await;
    report.audits_during = audits.len();
    if audits.is_empty() {
        report.violations.push("no background audit answered during the run".into());
    }
    match fin {
        Ok(fin) => {
            report.violations.extend(checker::check(&history, audits, &fin));
            replicas_agree(c, &fin, report).await;
            match replay::replay_acknowledged(client, &history, &fin).await {
                Ok(proved) => report.effects.push(proved),
                Err(v) => report.violations.extend(v),
            }
            if shared.big {
                let proved = checker::big_entries_held(&history, &fin, &mut report.violations);
                report.effects.extend(proved);
            }
        }
        Err(e) => report.violations.push(format!("cluster did not settle: {e}")),
    }
    for s in &c.topology.shards {
        if !history.iter().any(|e| e.shard == s.id && matches!(e.outcome, Outcome::Ok(_))) {
            report.violations.push(format!("shard {}: no operation acknowledged in the whole run", s.id));
        }
    }
}

/// Re-sends every operation whose outcome was unknown, with its own request id, until it has a
/// definite answer: the ledger's dedup makes this apply it at most once.
pub(crate) async fn resolve_unknown(shared: &Shared, client: &Client, report: &mut Report) {
    let pending: Vec<usize> = {
        let h = shared.history.lock().expect("history lock");
        h.iter().enumerate().filter(|(_, e)| matches!(e.outcome, Outcome::Unknown(_))).map(|(i, _)| i).collect()
    };
    report.unknown = pending.len();
    for i in pending {
        let (rid, op) = {
            let h = shared.history.lock().expect("history lock");
            (h[i].request_id.clone(), h[i].op)
        };
        let out = workload::outcome(settle(|| workload::send(client, &rid, &op), RESOLVE_SENDS - 1, RESOLVE_WITHIN).await);
        if matches!(out, Outcome::Ok(_)) {
            report.resolved_ok += 1;
        }
        let mut h = shared.history.lock().expect("history lock");
        h[i].outcome = out;
        h[i].resolved = true;
    }
}

/// Counts and unavailability windows: per shard, gaps between answers (any answer that was not
/// "unknown" the first time) longer than UNAVAILABLE_GAP.
pub(crate) fn summarize(history: &[Event], r: &mut Report, end: Duration) {
    r.ops = history.len();
    for e in history {
        match e.outcome {
            Outcome::Ok(_) => r.ok += 1,
            Outcome::Fail(code) => *r.failures.entry(format!("{}: {}", e.op.name(), code.as_str_name())).or_default() += 1,
            Outcome::Unknown(code) => *r.failures.entry(format!("{} (unresolved): {}", e.op.name(), code.as_str_name())).or_default() += 1,
        }
    }
    let mut served: BTreeMap<u32, Vec<Duration>> = BTreeMap::new();
    let first = history.iter().map(|e| e.completed).min().unwrap_or_default();
    for e in history.iter().filter(|e| !e.resolved) {
        served.entry(e.shard).or_default().push(e.completed);
    }
    let stop = history.iter().filter(|e| !e.resolved).map(|e| e.completed).max().unwrap_or(end);
    for (shard, mut t) in served {
        t.sort();
        t.insert(0, first);
        t.push(stop);
        for w in t.windows(2) {
            if w[1] - w[0] > UNAVAILABLE_GAP {
                r.windows.push((shard, w[0], w[1] - w[0]));
            }
        }
    }
    r.windows.sort_by_key(|w| w.1);
}

/// Waits until nothing is in flight and every acknowledged packet is fully grabbed or refunded,
/// then reads the final state (linearizable reads).
pub(crate) async fn quiesce(client: &Client, history: &[Event], users: &[u64]) -> anyhow::Result<Final> {
    let deadline = Instant::now() + QUIESCE;
    let packets: Vec<u64> = history
        .iter()
        .filter_map(|e| match e.ack() {
            Some(history::Ack::Sent { packet, .. }) => Some(packet),
            _ => None,
        })
        .collect();
    let mut views = BTreeMap::new();
    loop {
        let mut settled = true;
        for &p in &packets {
            if views.get(&p).map(|v: &hongbao_proto::v1::PacketView| v.refunded || v.remaining_count == 0).unwrap_or(false) {
                continue;
            }
            match client.show_packet(p).await {
                Ok(v) => {
                    settled &= v.refunded || v.remaining_count == 0;
                    views.insert(p, v);
                }
                Err(_) => settled = false,
            }
        }
        let audit = client.audit().await;
        if let Ok(a) = &audit {
            if settled && a.total_in_flight_cents == 0 {
                let mut balances = BTreeMap::new();
                for &u in users {
                    balances.insert(u, client.balance(u).await?.balance_cents);
                }
                // Read the audit again after the balances: nothing may have moved meanwhile.
                let audit = client.audit().await?;
                return Ok(Final { balances, packets: views, audit });
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("not settled within {QUIESCE:?}: last audit {audit:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// After quiescence every node's own replicas (stale reads, no leader asked) hold exactly the
/// final balances: a replica that caught up by log or by snapshot (torn or wiped on the way)
/// holds the leader's data.
pub(crate) async fn replicas_agree(c: &Cluster, fin: &Final, report: &mut Report) {
    for n in c.topology.nodes.iter().map(|n| n.id) {
        // The users of the shards this node holds (all of them in 3 × 1).
        let users: Vec<u64> = fin
            .balances
            .keys()
            .copied()
            .filter(|u| c.topology.shard(c.topology.shard_of_user(*u)).is_some_and(|s| s.replicas.contains(&n)))
            .collect();
        let want: BTreeMap<u64, u64> = users.iter().map(|u| (*u, fin.balances[u])).collect();
        let mut last;
        let same = eventually!(Duration::from_secs(20), {
            last = c.stale_balances(n, &users).await;
            matches!(&last, Ok(b) if *b == want)
        });
        if same {
            report.effects.push(format!("node {n}'s own replicas hold the final balances of all {} users", users.len()));
            continue;
        }
        match last {
            Ok(b) => {
                let diff: Vec<String> = b
                    .iter()
                    .filter(|(u, v)| fin.balances.get(u) != Some(v))
                    .map(|(u, v)| format!("user {u}: {v} on node {n}, {} final", fin.balances.get(u).copied().unwrap_or_default()))
                    .collect();
                report.violations.push(format!("node {n}'s replicas differ from the final state: {}", diff.join("; ")));
            }
            Err(e) => report.violations.push(format!("node {n}'s replicas could not be read: {e}")),
        }
    }
}
