//! Routers, region failover, failback and drain: real nodes and routers over gRPC (mutual TLS),
//! a client workload through the routers, a whole region killed with kill -9.

use hongbao_auth::Role;
use hongbao_client::{new_request_id, Client};
use hongbao_tests::grpc::with_token;
use hongbao_tests::{eventually, lucky_packet, Cluster, Spec, TEST_DEVICE, TEST_PIN};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Top-ups in a loop for each user; each request id is re-sent until its outcome is known.
/// Returns the acknowledged sum per user and the number of calls that failed for good.
struct Workload {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
    acked: Arc<Mutex<BTreeMap<u64, u64>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    fn start(client: Arc<Client>, users: &[u64], settle_unknown: bool) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicU64::new(0));
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let mut tasks = vec![];
        for (i, u) in users.iter().copied().enumerate() {
            let (client, stop, failures, acked) = (client.clone(), stop.clone(), failures.clone(), acked.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let amount = 1 + (n + i as u64) % 9;
                    let rid = new_request_id();
                    loop {
                        match client.top_up(rid.clone(), u, amount).await {
                            Ok(_) => {
                                *acked.lock().unwrap().entry(u).or_default() += amount;
                                break;
                            }
                            Err(e) => {
                                failures.fetch_add(1, Ordering::Relaxed);
                                eprintln!("user {u}: top-up failed: {e}");
                                if !(settle_unknown && e.outcome_unknown()) {
                                    panic!("definitive failure: {e}");
                                }
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
        Workload { stop, failures, acked, tasks }
    }

    async fn finish(self) -> (BTreeMap<u64, u64>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        (acked, self.failures.load(Ordering::Relaxed))
    }
}

/// Two users a shard, and the workload on them through `client`, once Shenzhen's node leads
/// shard 1 (its home); that node's id.
async fn load_with_shard_1_home(c: &Cluster, client: &Arc<Client>, settle_unknown: bool) -> (Workload, u64) {
    let mut users = vec![];
    for s in &c.topology.shards {
        let mut u = 500;
        for _ in 0..2 {
            u = c.topology.user_in_shard(s.id, u + 1);
            client.open_account(u, "phone").await.unwrap();
            users.push(u);
        }
    }
    let home = c.nodes_in("shenzhen")[0];
    wait_leader(c, 1, home, Duration::from_secs(15)).await;
    (Workload::start(client.clone(), &users, settle_unknown), home)
}

async fn check_money(client: &Client, acked: &BTreeMap<u64, u64>) {
    for (u, sum) in acked {
        assert_eq!(client.balance(*u).await.unwrap().balance_cents, *sum, "user {u}: acknowledged top-ups lost or doubled");
    }
    let a = client.audit().await.unwrap();
    assert!(a.balanced, "{:?}", a.problems);
    assert_eq!(a.total_topups_cents, acked.values().sum::<u64>());
}

/// `msg` with `user`'s token, as an app forwards it for that user.
fn as_user<T>(client: &Client, user: u64, msg: T) -> tonic::Request<T> {
    let tokens = client.credentials().tokens.as_ref().expect("test credentials mint user tokens");
    let token = tokens.token(user, None).expect("a development token");
    with_token(msg, &token)
}

async fn wait_leader(c: &Cluster, shard: u32, node: u64, within: Duration) -> Duration {
    let start = Instant::now();
    let mut leaders;
    let reached = eventually!(within, {
        leaders = c.leaders().await;
        leaders.get(&shard) == Some(&node)
    });
    assert!(reached, "shard {shard} leadership did not reach node {node} within {within:?}: {leaders:?}");
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_region_is_served_again_within_two_seconds_and_leadership_fails_back_home() {
    lost_region_is_served_again_and_fails_back(Spec { routers: true, ..Spec::default() }).await;
}

/// The 3 x 3 topology (nine nodes, each holding one shard) with WAN latency between regions:
/// while a shard has no leader, nodes that do not host it must not end a call (issue 17).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_three_by_three_with_wan_latency_a_lost_region_is_served_again_within_two_seconds() {
    lost_region_is_served_again_and_fails_back(Spec { routers: true, nodes_per_region: 3, wan_latency_ms: 15, ..Spec::default() }).await;
}

/// In 3 x 3 a node holds one shard. Asked about another shard's user, it answers UNKNOWN_SHARD:
/// that is a routing answer, never the operation's outcome, so a client walking its endpoints
/// must go on to a replica of the right shard (issue 17: the demo once stopped on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_hosts_no_replica_of_the_shard_never_ends_a_call() {
    let c = Cluster::ready(Spec { nodes_per_region: 3, ..Spec::default() }, Duration::from_secs(30)).await;
    let u = c.topology.user_in_shard(2, 700);
    assert!(!c.topology.shard(2).unwrap().replicas.contains(&1), "node 1 holds no replica of shard 2");
    // The cause: node 1 alone can only say it hosts no replica of shard 2.
    let node1_only = Client::new(vec![c.node_addr(1)], Arc::new(c.node_credentials())).with_deadline(Duration::from_millis(800));
    let e = node1_only.open_account(u, "phone").await.unwrap_err();
    assert!(e.detail.message.contains("hosts no replica of shard 2"), "{e}");
    assert!(e.outcome_unknown(), "giving up on a node without the shard is no outcome: {e}");
    // The client that starts at node 1 goes on and gets the outcome from shard 2's leader.
    let client = c.node_client();
    assert_eq!(client.endpoints()[0], c.node_addr(1));
    let w = client.open_account(u, "phone").await.expect("served by shard 2, not refused by node 1");
    assert_eq!(w.shard, 2);
    assert_eq!(client.balance(u).await.unwrap().balance_cents, 0);
}

/// Kills the region of shard 1's home leader (kill -9 of its nodes and router) under a top-up
/// workload through the routers, measures how soon shard 1's users are served again, restarts
/// the region, waits for failback, and checks that every acknowledged top-up is there once.
async fn lost_region_is_served_again_and_fails_back(spec: Spec) {
    let mut c = Cluster::ready(spec, Duration::from_secs(30)).await;
    let client = Arc::new(c.router_client("shanghai").with_deadline(Duration::from_secs(10)));
    let (w, home) = load_with_shard_1_home(&c, &client, true).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Shenzhen is lost: its node (leader of shard 1) and its router, kill -9.
    let shard1_user = c.topology.user_in_shard(1, 900);
    client.open_account(shard1_user, "phone").await.unwrap();
    let killed = Instant::now();
    c.kill_region("shenzhen");
    let rid = new_request_id();
    let recovered = loop {
        match client.top_up(rid.clone(), shard1_user, 1).await {
            Ok(_) => break killed.elapsed(),
            Err(e) if e.outcome_unknown() => continue,
            Err(e) => panic!("{e}"),
        }
    };
    println!("region shenzhen killed: its users served again after {recovered:?}");
    assert!(recovered < Duration::from_millis(2500), "failover took {recovered:?} (target 2 s)");
    // The surviving routers see the region down, and route shard 1 out of it.
    let view = client.status().await.unwrap().router.expect("a router answers with its own view");
    assert!(view.regions.iter().any(|r| r.region == "shenzhen" && !r.up), "router view: {view:?}");
    assert!(view.leaders.iter().any(|l| l.shard == 1 && l.node != home), "router view: {view:?}");

    tokio::time::sleep(Duration::from_secs(2)).await;
    c.start_region("shenzhen");
    let back = wait_leader(&c, 1, home, Duration::from_secs(20)).await;
    println!("region shenzhen restarted: leadership of shard 1 back home after {back:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (mut acked, _) = w.finish().await;
    *acked.entry(shard1_user).or_default() += 1;
    check_money(&client, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_and_undraining_a_region_under_load_fails_no_request() {
    let c = Cluster::ready(Spec { routers: true, ..Spec::default() }, Duration::from_secs(30)).await;
    let client = Arc::new(c.router_client("tianjin").with_deadline(Duration::from_secs(10)));
    let (w, home) = load_with_shard_1_home(&c, &client, false).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let moved = client.drain("shenzhen").await.unwrap();
    println!("drain: {:?}", moved.moved);
    let leaders = c.leaders().await;
    assert!(leaders.values().all(|n| *n != home), "a leader is still in the drained region: {leaders:?}");
    // Failback must not pull leadership into a drained region.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_ne!(c.leaders().await.get(&1), Some(&home));

    let moved = client.undrain("shenzhen").await.unwrap();
    println!("undrain: {:?}", moved.moved);
    wait_leader(&c, 1, home, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (acked, failures) = w.finish().await;
    assert_eq!(failures, 0, "drain and undrain must not fail a client request");
    assert!(acked.values().sum::<u64>() > 0);
    check_money(&client, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_its_in_flight_bound_a_router_answers_resource_exhausted_and_applies_nothing_rejected() {
    use hongbao_proto::v1::{wallet_client::WalletClient, TopUpRequest};
    let c = Cluster::ready(Spec { routers: true, router_max_inflight: Some(4), ..Spec::default() }, Duration::from_secs(30)).await;
    let client = c.router_client("shanghai").with_deadline(Duration::from_secs(10));
    let user = c.topology.user_in_shard(2, 700);
    client.open_account(user, "phone").await.unwrap();
    let addr = c.topology.routers.iter().find(|r| r.region == "shanghai").unwrap().addr.clone();
    // Top-ups are the payment gateway's calls.
    let channel = c.channel_as_role(&addr, Role::PaymentGateway);
    // 200 top-ups at once, raw gRPC (no client retries), far above the bound of 4 per shard.
    let calls = (1..=200u64).map(|amount| {
        let mut w = WalletClient::new(channel.clone());
        async move { (amount, w.top_up(TopUpRequest { request_id: new_request_id(), user, amount_cents: amount }).await) }
    });
    let (mut ok_sum, mut rejected) = (0u64, 0usize);
    for (amount, res) in futures::future::join_all(calls).await {
        match res {
            Ok(_) => ok_sum += amount,
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
                assert_eq!(hongbao_proto::detail_of(&s).code(), hongbao_proto::ErrorCode::Overloaded, "{s:?}");
                rejected += 1;
            }
        }
    }
    println!("{rejected} of 200 rejected with RESOURCE_EXHAUSTED");
    assert!(rejected > 0, "a burst of 200 through a bound of 4 must be refused in part");
    assert!(rejected < 200, "some requests must get through");
    // Rejected requests were never forwarded: the balance is exactly the accepted ones.
    assert_eq!(client.balance(user).await.unwrap().balance_cents, ok_sum);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_coalesces_a_grab_storm_and_each_grab_gets_its_own_outcome() {
    use hongbao_proto::v1::{packets_client::PacketsClient, GrabRequest};
    use hongbao_proto::{detail_of, ErrorCode};
    let c = Cluster::ready(Spec { routers: true, ..Spec::default() }, Duration::from_secs(30)).await;
    let client = c.router_client("shenzhen").with_deadline(Duration::from_secs(10));
    let sender = c.funded_user(&client, 1, 900, 100_000).await;
    // 150 grabbers on every shard (some credits cross shards), for a packet of 100 shares.
    let mut grabbers = vec![];
    let mut u = 1_000;
    while grabbers.len() < 150 {
        u = c.topology.user_in_shard(1 + (grabbers.len() as u32 % 3), u + 1);
        client.open_account(u, TEST_DEVICE).await.unwrap();
        grabbers.push(u);
    }
    let total = 12_345u64;
    let p = client.send_packet(lucky_packet(sender, total, 100)).await.unwrap();
    let leader = c.leaders().await[&hongbao_topology::PacketId(p.packet_id).shard()];
    let leader_metrics = c.topology.node(leader).unwrap().metrics_addr.clone();
    let batches_before = c.metric(&leader_metrics, "hongbao_coalesced_grabs_count", "").await.expect("the leader\'s metrics");
    let entries_before = c.metric(&leader_metrics, "hongbao_batch_requests_count", "").await.expect("the leader\'s metrics");
    let proposed_before = c.metric(&leader_metrics, "hongbao_batch_requests_sum", "").await.expect("the leader\'s metrics");

    // All at once, raw gRPC on one connection: the router holds many grabs for the same node at
    // the same moment, which is when it coalesces them. Five carry a malformed request id. Each
    // grab goes as the app would send it: the app's certificate, the grabber's token.
    let addr = c.topology.routers.iter().find(|r| r.region == "shenzhen").unwrap().addr.clone();
    let channel = c.channel_as_role(&addr, Role::App);
    let requests: Vec<GrabRequest> = grabbers
        .iter()
        .enumerate()
        .map(|(i, g)| GrabRequest {
            request_id: if i % 30 == 7 { vec![1, 2, 3] } else { new_request_id() },
            packet_id: p.packet_id,
            packet_key: p.packet_key,
            grabber: *g,
            password: String::new(),
        })
        .collect();
    let calls = requests.iter().cloned().map(|r| {
        let mut pc = PacketsClient::new(channel.clone());
        let r = as_user(&client, r.grabber, r);
        async move { pc.grab(r).await }
    });
    let results = futures::future::join_all(calls).await;

    let (mut sum, mut indexes, mut exhausted, mut invalid) = (0u64, std::collections::BTreeSet::new(), 0, 0);
    let mut won = vec![];
    for (req, res) in requests.iter().zip(&results) {
        match res {
            Ok(r) => {
                let r = r.get_ref();
                assert_eq!(r.packet_id, p.packet_id);
                assert!(indexes.insert(r.index), "share {} handed out twice", r.index);
                sum += r.amount_cents;
                won.push((req.clone(), *r));
            }
            Err(s) => match detail_of(s).code() {
                ErrorCode::PacketExhausted => exhausted += 1,
                ErrorCode::InvalidArgument => {
                    assert_eq!(req.request_id.len(), 3, "only the malformed ids are invalid: {s:?}");
                    invalid += 1
                }
                other => panic!("grabber {}: unexpected {other:?}: {s:?}", req.grabber),
            },
        }
    }
    assert_eq!(invalid, 5);
    assert_eq!(won.len(), 100, "every share is grabbed once");
    assert_eq!(exhausted, 150 - 5 - 100);
    assert_eq!(sum, total, "the shares add up to the packet");
    let batches = c.metric(&leader_metrics, "hongbao_coalesced_grabs_count", "").await.expect("the leader\'s metrics") - batches_before;
    println!("150 grabs reached the leader in {batches} coalesced calls");
    assert!(batches > 0.0 && batches < 150.0, "grabs through the router went coalesced: {batches} calls for 150 grabs");
    // And on the leader, the proposals went into Raft several to an entry (leader batching).
    let entries = c.metric(&leader_metrics, "hongbao_batch_requests_count", "").await.expect("the leader\'s metrics") - entries_before;
    let proposed = c.metric(&leader_metrics, "hongbao_batch_requests_sum", "").await.expect("the leader\'s metrics") - proposed_before;
    println!("{proposed} proposals in {entries} Raft entries");
    assert!(entries > 0.0 && proposed > entries, "{proposed} proposals in {entries} entries: no batching");

    // Grabs on the now exhausted packet are refused by the leader without a Raft round.
    let fast_before = c.metric(&leader_metrics, "hongbao_grabs_fast_rejected_total", "").await.expect("the leader\'s metrics");
    let mut pc = PacketsClient::new(channel.clone());
    for g in grabbers.iter().filter(|g| !won.iter().any(|(w, _)| w.grabber == **g)).take(5) {
        let late = GrabRequest {
            request_id: new_request_id(),
            packet_id: p.packet_id,
            packet_key: p.packet_key,
            grabber: *g,
            password: String::new(),
        };
        let s = pc.grab(as_user(&client, *g, late)).await.unwrap_err();
        assert_eq!(detail_of(&s).code(), ErrorCode::PacketExhausted, "{s:?}");
    }
    let fast = c.metric(&leader_metrics, "hongbao_grabs_fast_rejected_total", "").await.expect("the leader\'s metrics") - fast_before;
    assert_eq!(fast, 5.0, "late grabs on an exhausted packet are refused before proposing");

    // A re-sent grab (same request id) gets its first answer again, not a second share.
    for (req, first) in won.iter().take(10) {
        let again = pc.grab(as_user(&client, req.grabber, req.clone())).await.unwrap().into_inner();
        assert_eq!((again.amount_cents, again.index), (first.amount_cents, first.index));
    }
    let shown = client.show_packet(p.packet_id).await.unwrap();
    assert_eq!(shown.claims.len(), 100);
    assert_eq!(shown.remaining_cents, 0);
    let a = client.audit().await.unwrap();
    assert!(a.balanced, "{:?}", a.problems);
}

/// Runs the `hongbao` CLI against the test cluster; returns (exit code, stdout, stderr).
fn cli(c: &Cluster, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(hongbao_tests::bin("hongbao"))
        .arg("--topology")
        .arg(&c.topology_path)
        .arg("--security-dir")
        .arg(c.security_dir())
        .args(args)
        .env("HONGBAO_PIN", TEST_PIN)
        .output()
        .expect("run hongbao");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// A CLI transfer that cannot reach any router must not say "failed" (the user would re-send
/// with a new id and might pay twice): it says the outcome is unknown, exits 75 and prints its
/// request id; re-sending that id once the routers are back moves the money exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reports_an_unreachable_transfer_as_unknown_and_resending_its_id_moves_money_once() {
    let mut c = Cluster::ready(Spec { routers: true, ..Spec::default() }, Duration::from_secs(30)).await;
    let app = c.router_client("shenzhen");
    let (from, to) = (c.topology.user_in_shard(1, 300), c.topology.user_in_shard(2, 300));
    c.funded(&app, from, 10_000).await;
    c.funded(&app, to, 0).await;
    let (code, _, err) = cli(&c, &["login", &from.to_string(), "--device", TEST_DEVICE]);
    assert_eq!(code, 0, "{err}");
    let regions: Vec<String> = c.topology.regions.iter().map(|r| r.name.clone()).collect();
    for r in &regions {
        c.kill_router(r);
    }
    let transfer = ["--timeout", "2", "transfer", &from.to_string(), &to.to_string(), "1.00"];
    let (code, _, err) = cli(&c, &transfer);
    assert_eq!(code, 75, "an unknown outcome has its own exit status: {err}");
    assert!(err.contains("outcome unknown") && !err.contains("error:"), "{err}");
    let id = err.split("--request-id ").nth(1).expect("the id to re-send").trim().to_string();
    assert_eq!(id.len(), 32, "{err}");
    let admin = c.node_client();
    assert_eq!(admin.balance(from).await.expect("balance").balance_cents, 10_000, "nothing reached the cluster");

    for r in &regions {
        c.start_router(r);
    }
    c.wait_ready(Duration::from_secs(30)).await;
    let resend: Vec<&str> = ["--request-id", id.as_str()].into_iter().chain(transfer).collect();
    for attempt in 0..2 {
        let (code, out, err) = cli(&c, &resend);
        assert_eq!(code, 0, "attempt {attempt}: {out}{err}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // the cross-shard credit lands
    assert_eq!(admin.balance(from).await.expect("balance").balance_cents, 9_900, "debited once for two re-sends");
    assert_eq!(admin.balance(to).await.expect("balance").balance_cents, 100, "credited once");
}

/// A plain gRPC caller (one call, no retries of its own) through a router sees no error while a
/// shard's leader is killed and a new one elected: the router waits for the election within its
/// deadline instead of giving up after a fixed number of quick attempts (about 0.5 s before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_grpc_call_through_a_router_rides_out_a_leader_election_without_an_error() {
    use hongbao_proto::v1::wallet_client::WalletClient;
    use hongbao_proto::v1::TopUpRequest;
    let mut c = Cluster::ready(Spec { routers: true, ..Spec::default() }, Duration::from_secs(30)).await;
    let app = c.router_client("tianjin");
    let u = c.funded_user(&app, 1, 950, 0).await;
    let addr = c.topology.routers.iter().find(|r| r.region == "tianjin").expect("router").addr.clone();
    // Top-ups come from the payment gateway (its certificate, no user token).
    let ch = c.channel_as_role(&addr, Role::PaymentGateway);
    let leader = c.leaders().await[&1];
    assert_ne!(c.topology.region_of(leader), Some("tianjin"), "the router under test survives");
    c.kill(leader);
    let killed = Instant::now();
    let mut n = 0u64;
    while killed.elapsed() < Duration::from_secs(4) {
        let req = TopUpRequest { request_id: new_request_id(), user: u, amount_cents: 1 };
        let r = WalletClient::new(ch.clone()).top_up(req).await;
        r.unwrap_or_else(|s| panic!("call {n}, {:?} after the kill: {s:?}", killed.elapsed()));
        n += 1;
    }
    assert_ne!(c.leaders().await.get(&1), Some(&leader), "the election happened");
    assert!(n > 0);
    assert_eq!(app.balance(u).await.expect("balance").balance_cents, n, "every call applied once");
}

/// Leaders now, failing the test if any of them is in `region`.
async fn assert_no_leader_in(c: &Cluster, region: &str, when: &str) {
    let leaders = c.leaders().await;
    let inside: Vec<_> = leaders.iter().filter(|(_, n)| c.topology.region_of(**n) == Some(region)).collect();
    assert!(inside.is_empty(), "{when}: leadership in drained region {region}: {inside:?} (all: {leaders:?})");
}

/// A drain is replicated state, not a mark in each node's memory: after kill -9 and restart of
/// every node, leadership still stays out of the drained region (several placement periods),
/// the cluster still reports it drained, and an undrain brings leadership home again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_survives_a_restart_of_every_node_and_undrain_then_fails_back() {
    let mut c = Cluster::ready(Spec::default(), Duration::from_secs(30)).await;
    let client = c.node_client().with_deadline(Duration::from_secs(20));
    let home = c.nodes_in("shenzhen")[0];
    wait_leader(&c, 1, home, Duration::from_secs(15)).await;

    let moved = client.drain("shenzhen").await.unwrap();
    println!("drain: {:?}", moved.moved);
    assert_no_leader_in(&c, "shenzhen", "right after the drain").await;

    let ids: Vec<u64> = c.topology.nodes.iter().map(|n| n.id).collect();
    for id in &ids {
        c.kill(*id);
    }
    for id in &ids {
        c.start_node(*id);
    }
    c.wait_ready(Duration::from_secs(30)).await;
    // Fresh elections may pick a shenzhen replica; the placement loop must move it out.
    let mut leaders;
    let settled = eventually!(Duration::from_secs(15), {
        leaders = c.leaders().await;
        leaders.len() == c.topology.shards.len() && leaders.values().all(|n| c.topology.region_of(*n) != Some("shenzhen"))
    });
    assert!(settled, "leadership not out of drained shenzhen after restart: {leaders:?}");
    // Several placement periods: failback must not pull leadership home into the drained region.
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(6) {
        assert_no_leader_in(&c, "shenzhen", "after every node restarted").await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let st = client.status().await.unwrap();
    assert!(st.regions.iter().any(|r| r.region == "shenzhen" && r.drained), "status forgot the drain: {:?}", st.regions);

    let moved = client.undrain("shenzhen").await.unwrap();
    println!("undrain: {:?}", moved.moved);
    wait_leader(&c, 1, home, Duration::from_secs(15)).await;
    let st = client.status().await.unwrap();
    assert!(st.regions.iter().all(|r| !r.drained), "undrained region still reported drained: {:?}", st.regions);
}
