//! Cross-shard money under leader kills: group packets grabbed by members of every shard,
//! transfers between shards, expiries, while source and destination leaders die and come back.
//! After quiescence every cent is accounted for: the audit balances, outboxes are empty, each
//! user's balance equals what the client saw acknowledged, each expired packet refunded once.

// Amounts are written yuan_fen (200_00 is 200.00 yuan): the grouping is the money, not a typo.
#![allow(clippy::inconsistent_digit_grouping)]

use hongbao_client::{new_request_id, settle};
use hongbao_proto::v1::{PacketKind, SendPacketRequest, TransferRequest};
use hongbao_tests::{Cluster, Spec, TEST_DEVICE, TEST_PIN};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const START_BALANCE: u64 = 1_000_00;

/// Every request is re-sent (`hongbao_client::settle`, same request id) until its outcome is
/// known, a real client's duty after a timeout: as often as it takes, giving up only after this
/// generous bound, which fails the test.
const SETTLE_WITHIN: Duration = Duration::from_secs(60);

#[derive(Default)]
struct History {
    /// Net effect on each user's balance of every acknowledged operation.
    delta: BTreeMap<u64, i64>,
    packets: Vec<(u64, u64, u64)>, // (packet, sender, total)
    grabs: u64,
    transfers: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_shard_grabs_transfers_and_expiries_add_up_while_leaders_die() {
    let mut c = Cluster::start(Spec { packet_ttl_ms: Some(3_000), snapshot_every: 500, keep_behind_snapshot: 100, ..Spec::default() });
    c.wait_ready(Duration::from_secs(30)).await;
    let client = Arc::new(c.node_client().with_deadline(Duration::from_secs(8)));
    let mut users = vec![];
    for s in &c.topology.shards {
        let mut u = 10_000;
        for _ in 0..4 {
            u = c.topology.user_in_shard(s.id, u + 1);
            c.funded(&client, u, START_BALANCE).await;
            users.push(u);
        }
    }
    let hist = Arc::new(Mutex::new(History::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = vec![];
    for (w, sender) in users.iter().copied().enumerate() {
        let (client, hist, stop, users) = (client.clone(), hist.clone(), stop.clone(), users.clone());
        workers.push(tokio::spawn(async move {
            let mut round = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                round += 1;
                // A group packet: half the rounds it is left partly unclaimed, to expire.
                let total = 100 + ((w * 31 + round * 7) % 400) as u64;
                let req = SendPacketRequest {
                    request_id: new_request_id(),
                    sender,
                    kind: PacketKind::Lucky as i32,
                    total_cents: total,
                    count: 5,
                    device: TEST_DEVICE.into(),
                    pin: TEST_PIN.into(),
                    ..Default::default()
                };
                let sent = settle(|| client.send_packet(req.clone()), u32::MAX, SETTLE_WITHIN).await;
                if let Ok(p) = sent {
                    {
                        let mut h = hist.lock().unwrap();
                        *h.delta.entry(sender).or_default() -= total as i64;
                        h.packets.push((p.packet_id, sender, total));
                    }
                    let grabbers = if round.is_multiple_of(2) { 5 } else { 3 };
                    for k in 0..grabbers {
                        let g = users[(w + 1 + k * 2) % users.len()]; // five distinct members
                        let rid = new_request_id();
                        if let Ok(r) = settle(|| client.grab(rid.clone(), p.packet_id, g, ""), u32::MAX, SETTLE_WITHIN).await {
                            let mut h = hist.lock().unwrap();
                            *h.delta.entry(g).or_default() += r.amount_cents as i64;
                            h.grabs += 1;
                        }
                    }
                }
                // A transfer to someone on another shard.
                let to = users[(w + 5) % users.len()];
                let amount = 1 + (round as u64 % 50);
                let req = TransferRequest {
                    request_id: new_request_id(),
                    from: sender,
                    to,
                    amount_cents: amount,
                    device: TEST_DEVICE.into(),
                    verification: None,
                    pin: TEST_PIN.into(),
                };
                if settle(|| client.transfer(req.clone()), u32::MAX, SETTLE_WITHIN).await.is_ok() {
                    let mut h = hist.lock().unwrap();
                    *h.delta.entry(sender).or_default() -= amount as i64;
                    *h.delta.entry(to).or_default() += amount as i64;
                    h.transfers += 1;
                }
            }
        }));
    }
    // Kill the leaders of source and destination shards in turn, and bring them back.
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let leaders = c.leaders().await;
        let shard = 1 + (round % 3) as u32;
        if let Some(victim) = leaders.get(&shard).copied() {
            c.kill(victim);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            c.start_node(victim);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    // Quiescence: every packet expired and refunded, every outbox drained.
    let deadline = Instant::now() + Duration::from_secs(60);
    let audit = loop {
        let a = client.audit().await.unwrap();
        let quiet = a.shards.iter().all(|s| s.outbox_records == 0 && s.open_packets == 0);
        if a.balanced && quiet {
            break a;
        }
        assert!(Instant::now() < deadline, "never quiesced: {:?}", a);
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(audit.total_in_flight_cents, 0);
    assert_eq!(audit.total_escrow_cents, 0);
    assert_eq!(audit.total_topups_cents, START_BALANCE * users.len() as u64);
    assert_eq!(audit.total_balances_cents, audit.total_topups_cents, "every cent is in a wallet");

    // Every packet: claims + refund = total, refunded at most once (a refund is a single field).
    // The workers are done: take the history out of its lock (no guard across the awaits below).
    let h = std::mem::take(&mut *hist.lock().unwrap());
    let mut expected = h.delta.clone();
    let (mut refunds, mut grabbed_out) = (0, 0);
    for (packet, sender, total) in &h.packets {
        let v = client.show_packet(*packet).await.unwrap();
        let claimed: u64 = v.claims.iter().map(|c| c.amount_cents).sum();
        assert_eq!(claimed + v.refunded_cents, *total, "packet {packet}");
        assert!(v.remaining_count == 0 || v.refunded, "packet {packet} neither grabbed out nor refunded");
        if v.remaining_count == 0 && !v.refunded {
            grabbed_out += 1;
        }
        if v.refunded {
            refunds += 1;
            *expected.entry(*sender).or_default() += v.refunded_cents as i64;
        }
    }
    // Each user's balance is exactly what the acknowledged history says: every cross-shard
    // grab and transfer credited once, every refund once.
    for u in &users {
        let want = START_BALANCE as i64 + expected.get(u).copied().unwrap_or(0);
        let got = client.balance(*u).await.unwrap().balance_cents as i64;
        assert_eq!(got, want, "user {u}");
    }
    println!("packets {} (grabbed out {grabbed_out}, refunded {refunds}) grabs {} transfers {}", h.packets.len(), h.grabs, h.transfers);
    assert!(h.grabs > 20 && h.transfers > 5 && refunds > 3 && grabbed_out > 3, "the workload did too little to prove anything");
}
