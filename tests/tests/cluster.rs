//! Multi-process tests of the replicated node: real processes, real RocksDB, real gRPC over
//! mutual TLS. Run by `scripts/test` (serially: each test runs its own cluster).

use hongbao_client::{new_request_id, settle, Client, PacketRef};
use hongbao_proto::v1::BalanceRequest;
use hongbao_proto::ErrorCode;
use hongbao_tests::{eventually, lucky_packet, Cluster, Spec, TEST_PIN};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const READY: Duration = Duration::from_secs(30);

/// Opens `n` accounts on each shard and returns them.
async fn open_users(c: &Cluster, client: &Client, per_shard: u64) -> Vec<u64> {
    let mut users = vec![];
    for s in &c.topology.shards {
        let mut u = 1000;
        for _ in 0..per_shard {
            u = c.topology.user_in_shard(s.id, u + 1);
            client.open_account(u, "phone").await.expect("open account");
            users.push(u);
        }
    }
    users
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_replicate_and_a_new_leader_serves_within_bounded_time_after_leader_kill() {
    let mut c = Cluster::ready(Spec::default(), READY).await;
    let client = c.node_client();
    let users = open_users(&c, &client, 2).await;
    for u in &users {
        client.top_up(new_request_id(), *u, 10_000).await.expect("top up");
    }
    // Every replica applies every write.
    for n in &c.topology.nodes {
        for u in &users {
            let applied = eventually!(Duration::from_secs(10), c.stale_balance(n.id, *u).await == Some(10_000));
            assert!(applied, "node {} never applied the top-up of {u}", n.id);
        }
    }

    let leaders = c.leaders().await;
    let victim = leaders[&1];
    let killed_at = Instant::now();
    c.kill(victim);
    let user = c.topology.user_in_shard(1, 5000);
    client.open_account(user, "phone").await.expect("a new leader takes writes");
    let took = killed_at.elapsed();
    println!("shard 1 served again {took:?} after its leader (node {victim}) was killed");
    assert!(took < Duration::from_secs(5), "failover took {took:?}");
    for u in &users {
        assert_eq!(client.balance(*u).await.expect("balance").balance_cents, 10_000, "acknowledged top-up lost");
    }

    // The restarted node catches up by log.
    client.top_up(new_request_id(), user, 777).await.expect("top up after failover");
    c.start_node(victim);
    let caught_up = eventually!(Duration::from_secs(20), c.stale_balance(victim, user).await == Some(777));
    assert!(caught_up, "restarted node {victim} did not catch up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_purged_log_catches_up_by_snapshot() {
    let mut c = Cluster::ready(Spec { snapshot_every: 100, keep_behind_snapshot: 20, ..Spec::default() }, READY).await;
    let client = c.node_client();
    let users = open_users(&c, &client, 1).await;
    let leaders = c.leaders().await;
    // A node that leads nothing, so writes keep flowing while it is down.
    let lagger = c.topology.nodes.iter().map(|n| n.id).find(|n| !leaders.values().any(|l| l == n)).unwrap_or(3);
    c.kill(lagger);
    let mut expected: BTreeMap<u64, u64> = BTreeMap::new();
    for i in 0..400u64 {
        let u = users[(i as usize) % users.len()];
        client.top_up(new_request_id(), u, 1 + i).await.expect("top up while a node is down");
        *expected.entry(u).or_default() += 1 + i;
    }
    c.start_node(lagger);
    let deadline = Instant::now() + Duration::from_secs(30);
    for (u, want) in &expected {
        let caught_up = eventually!(deadline.saturating_duration_since(Instant::now()), c.stale_balance(lagger, *u).await == Some(*want));
        assert!(caught_up, "node {lagger} did not catch up on user {u}");
    }
    let log = std::fs::read_to_string(c.dir.path().join(format!("node-{lagger}.log"))).unwrap();
    assert!(log.contains("snapshot installed"), "node {lagger} should have caught up by snapshot (log was purged)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_request_id_across_a_leader_change_moves_money_once() {
    let mut c = Cluster::ready(Spec::default(), READY).await;
    let client = c.node_client();
    let user = c.topology.user_in_shard(2, 100);
    client.open_account(user, "phone").await.unwrap();
    let rid = new_request_id();
    let first = client.top_up(rid.clone(), user, 5_000).await.unwrap();
    assert_eq!(first.balance_cents, 5_000);
    let old = c.leaders().await[&2];
    c.kill(old);
    // Same id, same payload, to whichever node leads now.
    let again = client.top_up(rid.clone(), user, 5_000).await.unwrap();
    assert_eq!(again.balance_cents, 5_000, "the retry returns the first result");
    assert_ne!(c.leaders().await.get(&2), Some(&old));
    assert_eq!(client.balance(user).await.unwrap().balance_cents, 5_000, "money moved once");
    // Same id, different payload: its own error, nothing moves.
    let err = client.top_up(rid, user, 6_000).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::RequestIdReused);
    assert_eq!(client.balance(user).await.unwrap().balance_cents, 5_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_of_nodes_and_the_money_adds_up() {
    let mut c = Cluster::ready(Spec { snapshot_every: 300, keep_behind_snapshot: 50, ..Spec::default() }, READY).await;
    let client = std::sync::Arc::new(c.node_client().with_deadline(Duration::from_secs(15)));
    let users = open_users(&c, &client, 3).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Writers: each top-up has its own request id; an unknown outcome is settled by re-sending
    // the same id until it answers, exactly as a real client must.
    let mut writers = vec![];
    for (w, u) in users.iter().copied().enumerate() {
        let client = client.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = 0u64;
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let amount = 1 + (w as u64 * 7 + i) % 50;
                let rid = new_request_id();
                if let Err(e) = settle(|| client.top_up(rid.clone(), u, amount), u32::MAX, Duration::from_secs(60)).await {
                    panic!("top-up rejected, or its outcome still unknown after a minute: {e}");
                }
                acked += amount;
            }
            (u, acked)
        }));
    }
    // Each round kills the leader of a shard being written to (every shard has writers), so
    // acknowledged writes must survive the loss of the node that acknowledged them.
    let shards: Vec<u32> = c.topology.shards.iter().map(|s| s.id).collect();
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let shard = shards[round % shards.len()];
        let victim = *c.leaders().await.get(&shard).unwrap_or_else(|| panic!("round {round}: shard {shard} has no leader to kill"));
        c.kill(victim);
        let mut now;
        let moved = eventually!(Duration::from_secs(10), {
            now = c.try_leaders().await.ok().and_then(|l| l.get(&shard).copied());
            now.is_some_and(|l| l != victim)
        });
        assert!(moved, "round {round}: shard {shard} still led by {now:?} after its leader, node {victim}, was killed");
        println!("round {round}: killed node {victim}, leader of shard {shard}; node {now:?} leads it now");
        tokio::time::sleep(Duration::from_millis(1000)).await;
        c.start_node(victim);
        // Caught up before the next kill: a replica still catching up votes for no candidate.
        c.wait_ready(READY).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for w in writers {
        let (u, acked) = w.await.unwrap();
        let b = client.balance(u).await.unwrap().balance_cents;
        assert_eq!(b, acked, "user {u}: balance {b} but acknowledged top-ups {acked}: lost or doubled");
        total += acked;
    }
    assert!(total > 0, "the workload made progress");
    let audit = client.audit().await.unwrap();
    assert!(audit.balanced, "audit: {:?}", audit.problems);
    assert_eq!(audit.total_topups_cents, total);
    assert_eq!(audit.total_balances_cents, total);
}

/// kill -9 of every replica at once, again and again, while writers top up and snapshots are
/// taken every few entries (so kills land inside snapshot builds and purges). After each
/// restart the first linearizable read of every wallet must already hold every top-up
/// acknowledged before the kill, and each shard's leader must have been elected anew (a higher
/// term): a restarted leader restoring its leadership without a vote could answer from a state
/// short of what was committed (#30). At the end every acknowledged top-up is in, once.
async fn acknowledged_writes_survive_kill_9_of_every_replica_at_once(nodes_per_region: usize, rounds: u64) {
    use rand::{Rng, SeedableRng};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let spec = Spec { nodes_per_region, snapshot_every: 20, keep_behind_snapshot: 5, ..Spec::default() };
    let mut c = Cluster::ready(spec, READY).await;
    let client = Arc::new(c.node_client().with_deadline(Duration::from_secs(5)));
    let users = open_users(&c, &client, 2).await;
    let acked: Arc<Vec<AtomicU64>> = Arc::new(users.iter().map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = vec![];
    for (w, u) in users.iter().copied().enumerate() {
        let (client, stop, acked) = (client.clone(), stop.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let amount = 1 + (w as u64 * 7 + i) % 50;
                let rid = new_request_id();
                // Re-sent under the same id until it answers: the kills make outcomes unknown.
                if let Err(e) = settle(|| client.top_up(rid.clone(), u, amount), u32::MAX, Duration::from_secs(60)).await {
                    panic!("top-up rejected, or its outcome still unknown after a minute: {e}");
                }
                acked[w].fetch_add(amount, Ordering::SeqCst);
            }
        }));
    }
    let ids: Vec<u64> = c.topology.nodes.iter().map(|n| n.id).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(30);
    let mut snapshots = 0.0;
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..900))).await;
        let st = client.status().await.expect("status before the kill");
        let terms: BTreeMap<u32, u64> = c.topology.shards.iter().filter_map(|s| Some((s.id, st.leader_of(s.id)?.term))).collect();
        for &n in &ids {
            snapshots += c.node_metric(n, "hongbao_snapshots_built_total").await.unwrap_or(0.0);
        }
        for &n in &ids {
            c.kill(n);
        }
        // Everything acknowledged so far was acknowledged before the kill.
        let before: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
        for &n in &ids {
            c.start_node(n);
        }
        let restarted = Instant::now();
        for (w, &u) in users.iter().enumerate() {
            let mut b;
            let served = eventually!(Duration::from_secs(20), {
                b = client.balance(u).await.ok().map(|r| r.balance_cents);
                b.is_some()
            });
            assert!(served, "round {round}: user {u}'s balance not served within 20 s of restarting every node");
            let b = b.expect("served");
            assert!(
                b >= before[w],
                "round {round}: user {u}'s first read after the restart says {b} cents, but {} were acknowledged before the kill",
                before[w]
            );
        }
        let mut now_terms: BTreeMap<u32, u64>;
        let led = eventually!(Duration::from_secs(10), {
            let st = client.status().await.ok();
            now_terms = terms.keys().filter_map(|s| Some((*s, st.as_ref()?.leader_of(*s)?.term))).collect();
            now_terms.len() == terms.len()
        });
        assert!(led, "round {round}: shards led after the restart: {now_terms:?}, before: {terms:?}");
        for (shard, t) in &terms {
            let now = now_terms[shard];
            assert!(now > *t, "round {round}: shard {shard} is led in term {now} after every node restarted, was {t}: no new election");
        }
        println!("round {round}: killed all {} nodes; every wallet read back whole {:?} after restart", ids.len(), restarted.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    assert!(snapshots > 0.0, "snapshots were built while the nodes were killed");
    let mut total = 0;
    for (w, &u) in users.iter().enumerate() {
        let a = acked[w].load(Ordering::SeqCst);
        let b = client.balance(u).await.expect("balance").balance_cents;
        assert_eq!(b, a, "user {u}: balance {b} but acknowledged top-ups {a}: lost or doubled");
        total += a;
    }
    let audit = client.audit().await.expect("audit");
    assert!(audit.balanced, "audit: {:?}", audit.problems);
    assert_eq!(audit.total_topups_cents, total);
}

/// Rounds of the kill test: `default`, or `HONGBAO_KILL_ALL_ROUNDS` (the soak,
/// `scripts/soak-kill-all`).
fn kill_rounds(default: u64) -> u64 {
    std::env::var("HONGBAO_KILL_ALL_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_of_every_replica_at_once_twenty_times_on_3x1() {
    acknowledged_writes_survive_kill_9_of_every_replica_at_once(1, kill_rounds(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_of_every_replica_at_once_ten_times_on_3x3() {
    acknowledged_writes_survive_kill_9_of_every_replica_at_once(3, kill_rounds(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_router_serves_its_metrics_over_http_after_routing_requests() {
    let c = Cluster::ready(Spec { routers: true, ..Spec::default() }, READY).await;
    for (i, r) in (0u64..).zip(&c.topology.routers) {
        // One client per router (its region first): a top-up, a packet and a grab through it.
        let client = c.router_client(&r.region);
        let sender = c.topology.user_in_shard(1, 2_000 + 100 * i);
        let grabber = c.topology.user_in_shard(2, 3_000 + 100 * i);
        let p = c.packet_to_grab(&client, sender, grabber, 1_000, 100).await;
        client.grab(new_request_id(), p, grabber, "").await.unwrap();
    }
    for r in &c.topology.routers {
        let addr = r.metrics_addr.clone().expect("test topologies give routers a metrics port");
        let page = c.scraper().metrics(&addr).await.unwrap_or_else(|| panic!("router {}: no metrics over HTTP", r.region));
        // Leaders were learned (counted from none) and the grab went out in a coalesced call.
        for name in ["hongbao_router_leader_changes_total", "hongbao_router_coalesced_grabs"] {
            assert!(page.contains(&format!("\n{name}")), "router {} does not report {name}:\n{page}", r.region);
        }
        assert!(page.contains("# HELP hongbao_router_leader_changes_total"), "router {}: metrics are described:\n{page}", r.region);
    }
}

/// A leader whose clock leaps two days forward used to stamp ledger time two days ahead: every
/// request id of the last 24 h was forgotten (a client's retry after the failover ran again) and
/// every open packet expired. Now the node refuses to stamp at once, hands its leadership away
/// and is not elected again while its peers say its clock is off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_two_days_fast_loses_leadership_and_forgets_no_request_id_nor_expires_a_packet() {
    use hongbao_proto::v1::{wallet_client::WalletClient, Faults, TransferRequest};
    let c = Cluster::ready(Spec { routers: true, ..Spec::default() }, READY).await;
    let app = c.router_client("shenzhen");
    let (from, to) = (c.funded_user(&app, 1, 500, 10_000).await, c.funded_user(&app, 1, 600, 0).await);
    let rid = new_request_id();
    let transfer =
        TransferRequest { request_id: rid, from_user: from, to_user: to, amount_cents: 100, pin: TEST_PIN.into(), ..Default::default() };
    assert_eq!(app.transfer(transfer.clone()).await.expect("transfer").balance_cents, 9_900);
    let packet = PacketRef::from(&app.send_packet(lucky_packet(from, 1_000, 2)).await.expect("packet"));

    let leader = c.leaders().await[&1];
    let two_days = 2 * 24 * 3600 * 1000;
    c.set_faults(leader, Faults { clock_offset_ms: two_days, ..Faults::default() }).await.expect("clock leap");
    // Traffic meets the leap: the leader must refuse to stamp it, not apply it. Sent straight to
    // it (no client retry elsewhere), so the answer seen is the leader's own.
    let top_up = hongbao_proto::v1::TopUpRequest { request_id: new_request_id(), user: to, amount_cents: 1 };
    let refused = WalletClient::new(c.node_channel(leader)).top_up(top_up).await.expect_err("a leader with a leapt clock stamps nothing");
    assert_eq!(hongbao_proto::detail_of(&refused).code(), ErrorCode::Unavailable, "{refused:?}");
    assert!(refused.message().contains("stamps nothing"), "refused for its clock: {refused:?}");
    let start = Instant::now();
    let moved = eventually!(Duration::from_secs(15), c.leaders().await.get(&1) != Some(&leader));
    assert!(moved, "node {leader} still leads shard 1 with a clock two days fast");
    println!("leadership left node {leader} after {:?}", start.elapsed());
    assert_eq!(app.balance(to).await.expect("balance").balance_cents, 100, "the refused top-up moved no money");

    // The client retries its transfer after the failover: answered from the request-id table.
    let again = app.transfer(transfer).await.expect("the retry");
    assert_eq!(again.balance_cents, 9_900, "the retry returns the first result; nothing is paid twice");
    assert_eq!(app.balance(from).await.expect("balance").balance_cents, 8_900, "debited once");
    // The packet has not expired: ledger time did not leap.
    let grab = app.grab(new_request_id(), packet, to, "").await.expect("the packet is still open");
    assert!(grab.amount_cents > 0);
    // The node with the bad clock does not get its leadership back (failback would move it home).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_ne!(c.leaders().await.get(&1), Some(&leader), "no leadership for a node whose clock is off");
    let st = c.node_client().status().await.expect("status");
    let bad = st.nodes.iter().find(|n| n.node == leader).expect("the node");
    assert!(!bad.clock_untrusted.is_empty(), "its status says why it leads nothing");
    let audit = c.node_client().audit().await.expect("audit");
    assert!(audit.balanced, "{:?}", audit.problems);
}

/// Entries committed on two of three replicas must survive one of those two losing its disk.
/// The wiped replica restarts empty; before the fix it voted at once for the third replica,
/// which never had the entries, and so elected a leader without acknowledged money. Now it grants
/// no vote to a candidate with history until it has caught up: the shard waits for the replica
/// that still has the entries, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_that_lost_its_disk_cannot_elect_a_leader_that_lacks_acknowledged_money() {
    use hongbao_proto::v1::Faults;
    let mut c = Cluster::ready(Spec::default(), READY).await;
    let client = c.node_client().with_deadline(Duration::from_secs(5));
    let user = c.topology.user_in_shard(1, 700);
    client.open_account(user, "phone").await.unwrap();
    let leader = c.leaders().await[&1];
    let ids: Vec<u64> = c.topology.nodes.iter().map(|n| n.id).collect();
    let lagging = *ids.iter().find(|n| **n != leader).expect("a follower");
    let wiped = *ids.iter().find(|n| **n != leader && **n != lagging).expect("the third node");
    // The lagging replica misses everything from here on.
    c.set_faults(lagging, Faults { cut_off: vec![leader, wiped], ..Faults::default() }).await.expect("cut off");
    for _ in 0..5 {
        client.top_up(new_request_id(), user, 100).await.expect("acknowledged by the leader and the third node");
    }
    // The third node loses its disk; the leader (the only other holder of the top-ups) is down.
    c.kill(wiped);
    std::fs::remove_dir_all(c.dir.path().join(format!("node-{wiped}"))).expect("wipe its data");
    c.kill(leader);
    c.set_faults(lagging, Faults::default()).await.expect("heal");
    c.start_node(wiped);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let leaders = c.leaders().await;
    assert_eq!(leaders.get(&1), None, "the wiped replica helped elect a leader lacking the top-ups: {leaders:?}");
    // The replica with the entries comes back: a leader is elected and every top-up is there.
    c.start_node(leader);
    let mut read;
    let led = eventually!(Duration::from_secs(20), {
        read = client.balance(user).await;
        read.is_ok()
    });
    assert!(led, "no leader after the full replica returned: {read:?}");
    assert_eq!(read.expect("a balance").balance_cents, 500, "every acknowledged top-up survived");
    // The wiped replica caught up and votes again: it now holds the top-ups too.
    let caught_up = eventually!(Duration::from_secs(20), c.stale_balance(wiped, user).await == Some(500));
    assert!(caught_up, "the wiped replica did not catch up");
}

/// After a storm, expired packets must go back to their senders in bulk: the sweeper used to
/// spend one Raft round per packet (about 128 refunds a second per shard, hours of money held in
/// escrow after a New Year's Eve). Now a sweep proposes up to a full entry of expiries at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hundred_expired_packets_are_refunded_within_seconds_not_minutes() {
    use hongbao_proto::v1::{PacketKind, SendPacketRequest};
    // Long enough that every packet is sent before the first expires.
    let mut c = Cluster::ready(Spec { routers: true, packet_ttl_ms: Some(20_000), ..Spec::default() }, READY).await;
    let app = std::sync::Arc::new(c.router_client("shenzhen"));
    let sender = c.funded_user(&app, 1, 800, 100_000).await;
    const PACKETS: usize = 600;
    let send = |app: std::sync::Arc<Client>| async move {
        let req = SendPacketRequest {
            request_id: new_request_id(),
            sender,
            kind: PacketKind::Fixed as i32,
            per_share_cents: 100,
            count: 1,
            pin: TEST_PIN.into(),
            ..Default::default()
        };
        app.send_packet(req).await.expect("send").expires_at_ms
    };
    let mut expiries = vec![];
    let sending = Instant::now();
    for _ in 0..PACKETS / 50 {
        expiries.extend(futures::future::join_all((0..50).map(|_| send(app.clone()))).await);
    }
    println!("{PACKETS} packets sent in {:?}", sending.elapsed());
    assert_eq!(app.balance(sender).await.expect("balance").balance_cents, 100_000 - 100 * PACKETS as u64, "all in escrow");
    // The cluster is down while every packet expires, so all 600 are due at once when it is back
    // (as after a storm, when expiries pile up faster than one Raft round each could refund).
    let ids: Vec<u64> = c.topology.nodes.iter().map(|n| n.id).collect();
    for id in &ids {
        c.stop(*id);
    }
    let last_expiry = *expiries.iter().max().expect("packets");
    let now_ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(last_expiry.saturating_sub(now_ms()) + 100)).await;
    for id in &ids {
        c.start_node(*id);
    }
    c.wait_ready(READY).await;
    let expired_at = Instant::now();
    let refunded = eventually!(Duration::from_secs(4), app.balance(sender).await.expect("balance").balance_cents >= 100_000);
    assert!(refunded, "{PACKETS} refunds took longer than 4 s");
    println!("{PACKETS} expired packets refunded {:?} after the cluster was back", expired_at.elapsed());
    let audit = c.node_client().audit().await.expect("audit");
    assert!(audit.balanced && audit.total_escrow_cents == 0, "{:?}", audit.problems);
}

/// Every replica's applied index of every shard, per node, as that node reports it.
async fn applied_by_node(c: &Cluster) -> BTreeMap<u64, BTreeMap<u32, (u64, i32)>> {
    let client = c.node_client().with_deadline(Duration::from_secs(3));
    let mut out = BTreeMap::new();
    for n in &c.topology.nodes {
        if let Ok(st) = client.status_of(&n.addr).await {
            for node in st.nodes {
                let shards = node.shards.iter().map(|s| (s.shard, (s.applied, s.role))).collect();
                out.insert(node.node, shards);
            }
        }
    }
    out
}

/// A node restarted with a packet TTL the others do not have must not apply entries proposed
/// under the cluster's config differently: it stops applying (fail-stop, naming both config
/// fingerprints in its log) and never leads, while the other two keep serving and the money
/// read from them adds up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_ledger_config_differs_stops_applying_and_the_majority_keeps_serving() {
    let mut c = Cluster::ready(Spec::default(), READY).await;
    let client = c.node_client().with_deadline(Duration::from_secs(10));
    let users = open_users(&c, &client, 2).await;
    let mut want: BTreeMap<u64, u64> = BTreeMap::new();
    for u in &users {
        client.top_up(new_request_id(), *u, 1_000).await.expect("top up");
        *want.entry(*u).or_default() += 1_000;
    }
    // Node 3 (home of shard 3) comes back with a one-second packet TTL.
    let odd = 3;
    c.restart_with_ledger_line(odd, "packet_ttl_ms = 1000");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = applied_by_node(&c).await;
    // Writes on every shard for several placement periods: served by the healthy majority,
    // never by the odd node (failback must not hand it shard 3).
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(6) {
        for u in &users {
            n += 1;
            client.top_up(new_request_id(), *u, 1 + n % 7).await.expect("the healthy majority serves");
            *want.entry(*u).or_default() += 1 + n % 7;
        }
        let leaders = c.leaders().await;
        assert!(leaders.values().all(|l| *l != odd), "the node with another config leads: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = applied_by_node(&c).await;
    for s in &c.topology.shards {
        let healthy = c.topology.shards.iter().find(|x| x.id == s.id).unwrap().replicas.iter().copied().filter(|r| *r != odd);
        let best = healthy.filter_map(|r| after.get(&r).and_then(|m| m.get(&s.id)).map(|x| x.0)).max().unwrap_or(0);
        let odd_now = after.get(&odd).and_then(|m| m.get(&s.id)).map(|x| x.0).unwrap_or(0);
        let odd_before = before.get(&odd).and_then(|m| m.get(&s.id)).map(|x| x.0).unwrap_or(0);
        println!("shard {}: healthy applied {best}, odd node applied {odd_before} -> {odd_now}", s.id);
        assert!(odd_now < best, "shard {}: the odd node applied {odd_now}, as far as the healthy replicas ({best})", s.id);
        assert_eq!(odd_now, odd_before, "shard {}: the odd node went on applying", s.id);
    }
    let log = c.node_log(odd);
    assert!(log.contains("config fingerprint"), "the odd node's log names no config fingerprint");
    for (u, cents) in &want {
        assert_eq!(client.balance(*u).await.unwrap().balance_cents, *cents, "user {u}");
    }
    let a = client.audit().await.unwrap();
    assert!(a.balanced, "{:?}", a.problems);
}

/// Who leads `shard`, and every other node.
async fn leader_and_others(c: &Cluster, shard: u32) -> (u64, Vec<u64>) {
    let leader = c.leaders().await[&shard];
    (leader, c.topology.nodes.iter().map(|n| n.id).filter(|n| *n != leader).collect())
}

/// `msg` as a request whose caller gives it `deadline` (sent as `grpc-timeout`).
fn with_deadline<T>(msg: T, deadline: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(deadline);
    r
}

/// Runs one call (with a generous local bound, so a hang fails the test rather than block it)
/// and returns how long it took and its error status (panics if it succeeded).
async fn timed_failure<T: std::fmt::Debug>(
    what: &str,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> (Duration, tonic::Status) {
    let started = Instant::now();
    let res = tokio::time::timeout(Duration::from_secs(15), call).await.unwrap_or_else(|_| panic!("{what}: no answer in 15 s"));
    (started.elapsed(), res.expect_err(what))
}

/// Every server call has a deadline (#13 item 10): with the majority of a shard stopped, its
/// leader can neither commit nor confirm a read, and a call that would wait for that ends when
/// the caller's 300 ms deadline says, on every service (public API write and read, admin audit,
/// a proposal forwarded over the Raft transport), as DEADLINE_EXCEEDED with a TIMEOUT detail:
/// an unknown outcome, never a refusal. A call with no deadline ends by the server's own. The
/// writes that timed out are settled by re-sending their request ids once the majority is back:
/// each moved the money exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_cannot_finish_ends_at_its_deadline_with_an_unknown_outcome() {
    use hongbao_auth::Identity;
    use hongbao_proto::v1::{cluster_client::ClusterClient, raft_transport_client::RaftTransportClient, wallet_client::WalletClient};
    use hongbao_proto::v1::{AuditRequest, RaftMessage, TopUpRequest};
    use hongbao_proto::{detail_of, retry_step, RetryStep};

    let mut c = Cluster::ready(Spec::default(), READY).await;
    let client = c.node_client();
    let user = c.topology.user_in_shard(1, 4242);
    client.open_account(user, "phone").await.expect("open");
    let (leader, others) = leader_and_others(&c, 1).await;
    let admin = c.node_channel(leader);
    let deadline = Duration::from_millis(300);
    let unknown = |what: &str, took: Duration, s: &tonic::Status| {
        println!("{what}: {:?} after {took:?}: {}", s.code(), s.message());
        assert_eq!(s.code(), tonic::Code::DeadlineExceeded, "{what}: {s:?}");
        let d = detail_of(s);
        assert_eq!(d.code(), ErrorCode::Timeout, "{what}: {d:?}");
        assert_eq!(retry_step(d.code()), RetryStep::Elsewhere, "{what}: an unknown outcome, to be re-sent");
        assert!(took >= Duration::from_millis(250) && took < Duration::from_millis(1_000), "{what}: answered after {took:?}");
    };

    // A credit forwarded by another node, a replica of its source shard (with no entries: the
    // ledger refuses it and changes nothing if it is ever applied).
    let as_node = c.channel_as(&c.node_addr(leader), &Identity::Node(others[0]));
    assert!(c.topology.shard(2).expect("shard 2").replicas.contains(&others[0]), "the sender replicates the credit's source");
    let mark = hongbao_ledger::Request {
        id: hongbao_ledger::RequestId([0x5d; 16]),
        time_ms: 0,
        cmd: hongbao_ledger::Command::Credit { source: 2, entries: vec![] },
    };
    let forwarded = RaftMessage { shard: 1, from_node: others[0], payload: bincode::serialize(&mark).expect("encode"), sent_ms: 0 };
    let (rid, rid2) = (new_request_id(), new_request_id());
    let top_up = TopUpRequest { request_id: rid.clone(), user, amount_cents: 700 };
    let top_up2 = TopUpRequest { request_id: rid2.clone(), user, amount_cents: 300 };
    let read = BalanceRequest { user, allow_stale: false, token_issued_s: 0 };
    for n in &others {
        c.kill(*n);
    }
    // All at once, right after the majority stopped: a leader takes writes only while its lease
    // from the last majority acknowledgement lasts (0.8 s), then refuses them at once.
    let (mut w1, mut w2, mut w3) = (WalletClient::new(admin.clone()), WalletClient::new(admin.clone()), WalletClient::new(admin.clone()));
    let (mut cluster, mut raft) = (ClusterClient::new(admin.clone()), RaftTransportClient::new(as_node));
    let (write, read, audit, forwarded, no_deadline) = tokio::join!(
        timed_failure("write", w1.top_up(with_deadline(top_up, deadline))),
        timed_failure("linearizable read", w2.balance(with_deadline(read, deadline))),
        timed_failure("audit", cluster.audit(with_deadline(AuditRequest {}, deadline))),
        timed_failure("forwarded proposal", raft.propose(with_deadline(forwarded, deadline))),
        timed_failure("write without a deadline", w3.top_up(top_up2)),
    );
    unknown("write", write.0, &write.1);
    unknown("linearizable read", read.0, &read.1);
    unknown("audit", audit.0, &audit.1);
    unknown("forwarded proposal", forwarded.0, &forwarded.1);
    // No deadline sent: the server's own bounds the wait, still an unknown outcome.
    let (took, s) = no_deadline;
    println!("write without a deadline: {:?} after {took:?}: {}", s.code(), s.message());
    assert_ne!(retry_step(detail_of(&s).code()), RetryStep::Final, "{s:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");

    for n in &others {
        c.start_node(*n);
    }
    c.wait_ready(READY).await;
    // Both writes whose outcome was unknown, settled by re-sending their request ids.
    settle(|| client.top_up(rid.clone(), user, 700), 10, Duration::from_secs(30)).await.expect("settled");
    settle(|| client.top_up(rid2.clone(), user, 300), 10, Duration::from_secs(30)).await.expect("settled");
    assert_eq!(client.balance(user).await.expect("balance").balance_cents, 1_000, "each timed-out write applied exactly once");
}

/// Reads in flight are bounded per node (#13 item 10): with a shard's majority stopped its
/// leader cannot confirm reads, and past the node's limit (32 here, `--max-reads-in-flight`)
/// more reads are refused at once with RESOURCE_EXHAUSTED / OVERLOADED (back off and retry)
/// instead of piling up. Once the majority is back, reads are served again, as many at once as
/// the limit (every permit came back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_past_the_nodes_limit_are_shed_at_once_and_served_again_after() {
    use hongbao_proto::v1::wallet_client::WalletClient;
    use hongbao_proto::{detail_of, retry_step, RetryStep};
    const LIMIT: usize = 32;
    const FLOOD: usize = 300;

    // The node binary with a small read limit (a wrapper the harness runs in its place).
    let wrap = tempfile::tempdir().expect("temp dir");
    let node = wrap.path().join("node-small-read-limit.sh");
    let real = hongbao_tests::bin("hongbao-node");
    std::fs::write(&node, format!("#!/bin/sh\nexec \"{}\" \"$@\" --max-reads-in-flight {LIMIT}\n", real.display())).expect("write wrapper");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o755)).expect("chmod wrapper");

    let c = Cluster::ready(Spec { node_binary: Some(node), ..Spec::default() }, READY).await;
    let client = c.node_client();
    let user = c.topology.user_in_shard(1, 4343);
    client.open_account(user, "phone").await.expect("open");
    let (leader, others) = leader_and_others(&c, 1).await;
    let admin = c.node_channel(leader);
    // Connected before the flood, so the flood measures the node, not a TLS handshake.
    WalletClient::new(admin.clone()).balance(BalanceRequest { user, allow_stale: true, token_issued_s: 0 }).await.expect("stale read");

    for n in &others {
        c.signal(*n, "STOP");
    }
    let reads = (0..FLOOD).map(|_| {
        let mut w = WalletClient::new(admin.clone());
        async move {
            let started = Instant::now();
            let r = tokio::time::timeout(
                Duration::from_secs(10),
                w.balance(with_deadline(BalanceRequest { user, allow_stale: false, token_issued_s: 0 }, Duration::from_secs(3))),
            )
            .await
            .expect("every read answers");
            (started.elapsed(), r)
        }
    });
    let answers = futures::future::join_all(reads).await;
    for n in &others {
        c.signal(*n, "CONT");
    }
    let mut shed: Vec<Duration> = vec![];
    let mut other = 0;
    for (took, r) in &answers {
        let s = r.as_ref().expect_err("no read is confirmed without a majority");
        let d = detail_of(s);
        if d.code() == ErrorCode::Overloaded {
            assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
            assert_eq!(retry_step(d.code()), RetryStep::BackOff);
            assert_eq!(d.shard, 1, "{d:?}");
            shed.push(*took);
        } else {
            assert!(
                matches!(d.code(), ErrorCode::Unavailable | ErrorCode::Timeout),
                "a read that got in waits, then fails retryably: {s:?}"
            );
            other += 1;
        }
    }
    shed.sort();
    println!("{} of {FLOOD} reads shed (median {:?}, max {:?}), {other} waited", shed.len(), shed.get(shed.len() / 2), shed.last());
    assert!(shed.len() >= FLOOD / 2, "only {} of {FLOOD} reads were shed", shed.len());
    assert!(other >= LIMIT, "{other} reads got in; the limit is {LIMIT}");
    assert!(shed[shed.len() / 2] < Duration::from_millis(400), "shedding is not immediate: median {:?}", shed[shed.len() / 2]);

    // Back to normal: as many reads at once as the limit are all served (on whichever node
    // leads shard 1 now).
    let mut leader;
    let served = eventually!(Duration::from_secs(20), {
        leader = c.try_leaders().await.ok().and_then(|l| l.get(&1).copied());
        let read = BalanceRequest { user, allow_stale: false, token_issued_s: 0 };
        match leader {
            Some(l) => WalletClient::new(c.node_channel(l)).balance(read).await.is_ok(),
            None => false,
        }
    });
    assert!(served, "reads are not served again after the majority came back (shard 1 led by {leader:?})");
    let ch = c.node_channel(leader.expect("a leader"));
    let reads = (0..LIMIT).map(|_| {
        let mut w = WalletClient::new(ch.clone());
        async move { w.balance(BalanceRequest { user, allow_stale: false, token_issued_s: 0 }).await }
    });
    for r in futures::future::join_all(reads).await {
        r.expect("a read within the limit is served");
    }
}
