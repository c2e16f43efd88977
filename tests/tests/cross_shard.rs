//! Cross-shard money under leader kills: group packets grabbed by members of every shard,
//! transfers between shards, expiries, while source and destination leaders die and come back.
//! After quiescence every cent is accounted for: the audit balances, outboxes are empty, each
//! user's balance equals what the client saw acknowledged, each expired packet refunded once.

// Amounts are written yuan_fen (200_00 is 200.00 yuan): the grouping is the money, not a typo.
#![allow(clippy::inconsistent_digit_grouping)]

use hongbao_client::{new_request_id, settle, PacketRef};
use hongbao_proto::v1::TransferRequest;
use hongbao_tests::{eventually, lucky_packet, Cluster, Spec, TEST_DEVICE, TEST_PIN};
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
    // Settled packets move to the archive a second later: claims, refunds and late grabs are
    // read from it while leaders die and snapshots carry it.
    let mut c = Cluster::start(Spec {
        packet_ttl_ms: Some(3_000),
        packet_retention_ms: Some(1_000),
        snapshot_every: 500,
        keep_behind_snapshot: 100,
        ..Spec::default()
    });
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
                let req = lucky_packet(sender, total, 5);
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
                        if let Ok(r) = settle(|| client.grab(rid.clone(), PacketRef::from(&p), g, ""), u32::MAX, SETTLE_WITHIN).await {
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
                    from_user: sender,
                    to_user: to,
                    amount_cents: amount,
                    device: TEST_DEVICE.into(),
                    verification: None,
                    pin: TEST_PIN.into(),
                    token_issued_s: 0,
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
    let mut audit;
    let quiet = eventually!(Duration::from_secs(60), {
        audit = client.audit().await.unwrap();
        audit.balanced && audit.shards.iter().all(|s| s.outbox_records == 0 && s.open_packets == 0)
    });
    assert!(quiet, "never quiesced: {audit:?}");
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
    let archived: u64 = client.audit().await.unwrap().shards.iter().map(|s| s.archived_packets).sum();
    println!("archived packets {archived}");
    assert!(archived > 3, "packets were read back from the archive, not only from hot state");
}

/// Money to nobody: a transfer to a user id that was never opened, on another shard. The
/// destination opens no wallet (the owner must stay free to open theirs with their own device)
/// and sends the money back through its outbox; the sender has it again to the cent, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_shard_transfer_to_a_user_never_opened_comes_back_to_the_sender_exactly_once() {
    let c = Cluster::start(Spec::default());
    c.wait_ready(Duration::from_secs(30)).await;
    let client = c.node_client().with_deadline(Duration::from_secs(8));
    let (home, away) = (c.topology.shards[0].id, c.topology.shards[1].id);
    let sender = c.topology.user_in_shard(home, 20_000);
    let nobody = c.topology.user_in_shard(away, 20_000);
    c.funded(&client, sender, START_BALANCE).await;
    let amount = 123_45;
    let req = TransferRequest {
        request_id: new_request_id(),
        from_user: sender,
        to_user: nobody,
        amount_cents: amount,
        device: TEST_DEVICE.into(),
        verification: None,
        pin: TEST_PIN.into(),
        token_issued_s: 0,
    };
    let r = settle(|| client.transfer(req.clone()), u32::MAX, SETTLE_WITHIN).await.expect("transfer");
    assert!(r.credit_in_flight);
    assert_eq!(r.balance_cents, START_BALANCE - amount);

    // Back on the sender, then quiet: every outbox drained and the audit balanced.
    let mut a;
    let back = eventually!(Duration::from_secs(30), {
        a = client.audit().await.unwrap();
        let back = client.balance(sender).await.unwrap().balance_cents == START_BALANCE;
        back && a.balanced && a.shards.iter().all(|s| s.outbox_records == 0)
    });
    assert!(back, "the money never came back: {a:?}");
    // Give a second return every chance to land (relays run every 10 ms): it must not.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(client.balance(sender).await.unwrap().balance_cents, START_BALANCE, "came back exactly once");
    let st = client.statement(sender, 10).await.unwrap();
    let kinds: Vec<(&str, i64)> = st.entries.iter().rev().map(|e| (e.kind.as_str(), e.delta_cents)).collect();
    assert_eq!(kinds, vec![("topup", START_BALANCE as i64), ("transfer_out", -(amount as i64)), ("transfer_returned", amount as i64)]);
    let returned = &st.entries[0];
    assert_eq!((returned.counterparty_user, returned.counterparty_shard), (nobody, away));

    // No wallet on the destination: the id is still free for its owner, with their device.
    let e = client.balance(nobody).await.expect_err("no ghost wallet");
    assert_eq!(e.code(), hongbao_proto::v1::ErrorCode::UnknownUser, "{e}");
    let a = client.audit().await.unwrap();
    assert!(a.balanced, "{:?}", a.problems);
    assert_eq!(a.total_in_flight_cents, 0);
    assert_eq!(a.total_balances_cents, START_BALANCE);
    assert_eq!(a.total_topups_cents, START_BALANCE);
    c.funded(&client, nobody, 0).await;
    assert_eq!(client.balance(nobody).await.unwrap().balance_cents, 0, "the refused money is not in the new wallet");
}

/// 發出的紅包 / 收到的紅包 through the routers: a sender's packets listed newest first, shares
/// grabbed from other shards listed on each grabber's own shard once the relay credited them,
/// this year's counts and sums on both sides, and the statement read whole by its cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_history_lists_sent_and_received_across_shards_with_the_year_totals() {
    use hongbao_proto::v1::PacketSide;
    let c = Cluster::start(Spec { routers: true, ..Spec::default() });
    c.wait_ready(Duration::from_secs(30)).await;
    let admin = c.node_client().with_deadline(Duration::from_secs(8));
    let client = c.router_client("shenzhen").with_deadline(Duration::from_secs(8));
    let shards: Vec<u32> = c.topology.shards.iter().map(|s| s.id).collect();
    let sender = c.topology.user_in_shard(shards[0], 30_000);
    let grabbers: Vec<u64> = shards.iter().map(|s| c.topology.user_in_shard(*s, 31_000)).collect();
    c.funded(&admin, sender, START_BALANCE).await;
    for g in &grabbers {
        c.funded(&admin, *g, 0).await;
    }
    let mut packets = vec![];
    let mut received: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new(); // grabber -> (packet, amount)
    for i in 0..7u64 {
        let req = lucky_packet(sender, 3_00 + i, 3);
        let p = settle(|| client.send_packet(req.clone()), u32::MAX, SETTLE_WITHIN).await.expect("send");
        packets.push((PacketRef::from(&p), 3_00 + i));
        for g in &grabbers {
            let rid = new_request_id();
            let r = settle(|| client.grab(rid.clone(), PacketRef::from(&p), *g, ""), u32::MAX, SETTLE_WITHIN).await.expect("grab");
            received.entry(*g).or_default().push((p.packet_id, r.amount_cents));
        }
    }
    // Sent, newest first, three at a time.
    let (mut listed, mut before) = (vec![], 0);
    loop {
        let page = client.packet_history(sender, PacketSide::Sent, 3, before).await.expect("history");
        assert!(page.entries.len() <= 3);
        // The sender's own packets come with their keys (they live on the sender's shard).
        listed.extend(page.entries.iter().map(|e| (PacketRef { id: e.packet_id, key: e.packet_key }, e.amount_cents)));
        let y = page.year.expect("year");
        assert_eq!((y.sent_count, y.sent_cents), (7, packets.iter().map(|p| p.1).sum::<u64>()));
        if page.next_before_seq == 0 {
            break;
        }
        before = page.next_before_seq;
    }
    assert_eq!(listed, packets.iter().rev().copied().collect::<Vec<_>>());
    // A refusal says what happened, in words with the ids (the code's name stays in the code).
    let (g, p) = (grabbers[1], packets[0].0);
    let e = client.grab(new_request_id(), p, g, "").await.expect_err("a second grab");
    assert_eq!(e.code(), hongbao_proto::v1::ErrorCode::AlreadyGrabbed);
    assert_eq!(e.detail.message, format!("user {g} already grabbed packet {}", p.id));
    // Received: each grabber on its own shard, once the relay has credited every share.
    let deadline = Instant::now() + Duration::from_secs(30);
    for g in &grabbers {
        let want: Vec<(u64, u64)> = received[g].iter().rev().copied().collect();
        let (mut page, mut got);
        let credited = eventually!(deadline.saturating_duration_since(Instant::now()), {
            page = client.packet_history(*g, PacketSide::Received, 50, 0).await.expect("history");
            got = page.entries.iter().map(|e| (e.packet_id, e.amount_cents)).collect::<Vec<(u64, u64)>>();
            got == want
        });
        assert!(credited, "user {g}: received {got:?}, want {want:?}");
        let y = page.year.expect("year");
        assert_eq!((y.received_count, y.received_cents), (7, want.iter().map(|w| w.1).sum::<u64>()));
    }
    // The sender's statement, two entries a page: the top-up and seven sends, each once.
    let (mut seqs, mut before) = (vec![], 0);
    loop {
        let page = client.statement_page(sender, 2, before).await.expect("statement");
        seqs.extend(page.entries.iter().map(|e| e.seq));
        if page.next_before_seq == 0 {
            break;
        }
        before = page.next_before_seq;
    }
    assert_eq!(seqs, (0..seqs.len() as u64).rev().collect::<Vec<_>>(), "every entry once, newest first");
    assert_eq!(seqs.len(), 1 + 7, "the top-up and seven sends");
}
