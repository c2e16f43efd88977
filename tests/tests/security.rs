//! Only the owner moves the money: real processes, real mutual TLS, real tokens (docs/security.md).
//! Every refusal is checked to have moved nothing: balances and the audit are compared before
//! and after.

use hongbao_auth::{DevSigner, Identity, Role, SecurityDir};
use hongbao_client::credentials::TokenSource;
use hongbao_client::{new_request_id, Client, Credentials, PacketRef};
use hongbao_proto::v1::fault_injection_client::FaultInjectionClient;
use hongbao_proto::v1::raft_transport_client::RaftTransportClient;
use hongbao_proto::v1::wallet_client::WalletClient;
use hongbao_proto::v1::*;
use hongbao_proto::ErrorCode;
use hongbao_tests::grpc::{channel, with_token};
use hongbao_tests::{bin, lucky_packet, Cluster, Spec, TEST_DEVICE, TEST_PIN};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// The money, as the admin sees it: every listed balance and the audit's totals.
async fn money(c: &Cluster, users: &[u64]) -> (Vec<u64>, u64, u64, bool) {
    let admin = c.node_client();
    let mut balances = vec![];
    for u in users {
        balances.push(admin.balance(*u).await.map(|b| b.balance_cents).unwrap_or(0));
    }
    let a = admin.audit().await.expect("audit");
    (balances, a.total_balances_cents, a.total_topups_cents, a.balanced)
}

/// Not one cent moved since `before` (the same balances and totals), and the audit balances.
async fn nothing_moved(c: &Cluster, users: &[u64], before: &(Vec<u64>, u64, u64, bool)) {
    let after = money(c, users).await;
    assert_eq!(&after, before, "not one cent moved");
    assert!(after.3, "the audit balances");
}

/// Starts a cluster as `spec` says, waits up to 30 s for it to be ready, and connects a client
/// to the Shenzhen router (the test's app).
async fn started(spec: Spec) -> (Cluster, Client) {
    let c = Cluster::start(spec);
    c.wait_ready(Duration::from_secs(30)).await;
    let app = c.router_client("shenzhen");
    (c, app)
}

/// A transfer of `cents` from `from` to `to` with `pin`, under a fresh request id.
fn pays(from: u64, to: u64, cents: u64, pin: &str) -> TransferRequest {
    TransferRequest {
        request_id: new_request_id(),
        from_user: from,
        to_user: to,
        amount_cents: cents,
        pin: pin.into(),
        ..Default::default()
    }
}

/// The harness's lucky packet of 1 000 cents in 2 shares from `sender` with the test PIN, under a
/// fresh request id, but naming no device.
fn lucky_packet_from_no_device(sender: u64) -> SendPacketRequest {
    SendPacketRequest { device: String::new(), ..lucky_packet(sender, 1_000, 2) }
}

/// `N` users of `shard`: the first at or after `start`, each next one the first after the one
/// before it.
fn users_in_shard<const N: usize>(c: &Cluster, shard: u32, start: u64) -> [u64; N] {
    let mut users = [0; N];
    let mut next = start;
    for u in users.iter_mut() {
        *u = c.topology.user_in_shard(shard, next);
        next = *u + 1;
    }
    users
}

/// Funds each `(user, cents)` in turn through `app` (`Cluster::funded`: the wallet opened on
/// TEST_DEVICE, the test PIN set, and the cents topped up).
async fn fund(c: &Cluster, app: &Client, users: &[(u64, u64)]) {
    for &(user, cents) in users {
        c.funded(app, user, cents).await;
    }
}

/// Opens a wallet on TEST_DEVICE for each of `users` in turn through `app` (no PIN, no cents).
async fn open(app: &Client, users: &[u64]) {
    for &user in users {
        app.open_account(user, TEST_DEVICE).await.expect("open");
    }
}

/// A 3 × 3 cluster with routers, ready, and one user per shard funded with 10 000 cents.
struct Funded3x3 {
    c: Cluster,
    /// The Shenzhen router's client, which opened and funded the users.
    app: Client,
    /// One user per shard, in the topology's shard order.
    users: Vec<u64>,
    /// `money(&c, &users)` once every user is funded.
    before: (Vec<u64>, u64, u64, bool),
}

/// Starts a 3 × 3 cluster with routers, waits up to 60 s for it, funds with 10 000 cents, through
/// the Shenzhen router, one user per shard (the first at or after `start` in that shard), and
/// takes the money before anything else happens.
async fn funded_3x3(start: u64) -> Funded3x3 {
    let c = Cluster::start(Spec { routers: true, nodes_per_region: 3, ..Spec::default() });
    c.wait_ready(Duration::from_secs(60)).await;
    let app = c.router_client("shenzhen");
    let users: Vec<u64> = c.topology.shards.iter().map(|s| c.topology.user_in_shard(s.id, start)).collect();
    for u in &users {
        c.funded(&app, *u, 10_000).await;
    }
    let before = money(&c, &users).await;
    Funded3x3 { c, app, users, before }
}

/// A client with only the admin's credentials over every router, and the cluster map it reads.
async fn admin_and_map(c: &Cluster) -> (Client, ClusterMap) {
    let admin = router_client_with(c, c.credentials().only(Role::Admin));
    let map = admin.get_map().await.expect("map");
    (admin, map)
}

/// Reads the map through `admin`, asserts its version is still `version`, and returns it parsed.
async fn map_unchanged(admin: &Client, version: u64) -> hongbao_topology::Topology {
    let map = admin.get_map().await.expect("map");
    assert_eq!(map.version, version, "the map did not change");
    hongbao_topology::Topology::parse(&map.toml).expect("map")
}

fn code<T: std::fmt::Debug>(r: Result<T, hongbao_client::ClientError>) -> ErrorCode {
    r.expect_err("the call must be refused").code()
}

/// Calls the router of `c.topology.routers[i]` refused for their credentials, for `reason`
/// (`hongbao_router_denied_total`).
async fn router_denied(c: &Cluster, i: usize, reason: &str) -> f64 {
    let addr = c.topology.routers[i].metrics_addr.as_deref().expect("the router serves metrics");
    let body = c.scraper().metrics(addr).await.expect("the router's metrics");
    let series = format!("reason=\"{reason}\"");
    body.lines()
        .filter(|l| l.starts_with("hongbao_router_denied_total{") && l.contains(&series))
        .map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
        .sum()
}

/// Always hands out one fixed token, whoever the call acts for.
struct Fixed(String);
impl TokenSource for Fixed {
    fn token(&self, _user: u64, _device: Option<&str>) -> Result<String, String> {
        Ok(self.0.clone())
    }
}

fn router_client_with(c: &Cluster, creds: Credentials) -> Client {
    let routers = c.topology.routers.iter().map(|r| r.addr.clone()).collect();
    Client::new(routers, Arc::new(creds)).with_deadline(Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_or_with_one_from_another_ca_is_refused_at_the_handshake() {
    let c = Cluster::start(Spec { routers: true, ..Spec::default() });
    c.wait_ready(Duration::from_secs(30)).await;
    let ca = Certificate::from_pem(std::fs::read(SecurityDir::new(c.security_dir()).ca_cert()).expect("ca.crt"));
    let foreign_dir = c.dir.path().join("foreign");
    let foreign = hongbao_auth::generate_foreign_identity(&foreign_dir, &Identity::Service(Role::Admin)).expect("foreign CA");
    let foreign_tls = foreign.client_tls(&Identity::Service(Role::Admin)).expect("foreign identity").ca_certificate(ca.clone());
    let targets = [c.topology.routers[0].addr.clone(), c.node_addr(1)];
    for addr in &targets {
        // TLS to the right CA, but no client certificate.
        let no_cert = channel(addr, ClientTlsConfig::new().ca_certificate(ca.clone()));
        let r = WalletClient::new(no_cert).balance(BalanceRequest { user: 7, allow_stale: true, token_issued_s: 0 }).await;
        refused_at_handshake(addr, "no client certificate", r.expect_err("a client without a certificate gets no answer"));
        // A certificate from another CA, even one naming the admin.
        let r = WalletClient::new(channel(addr, foreign_tls.clone()))
            .balance(BalanceRequest { user: 7, allow_stale: true, token_issued_s: 0 })
            .await;
        refused_at_handshake(addr, "a certificate of another CA", r.expect_err("a certificate of another CA gets no answer"));
        // Cleartext.
        let plain = Endpoint::from_shared(format!("http://{addr}")).expect("addr").connect_timeout(Duration::from_secs(2)).connect_lazy();
        let r = WalletClient::new(plain).balance(BalanceRequest { user: 7, allow_stale: true, token_issued_s: 0 }).await;
        refused_at_handshake(addr, "cleartext", r.expect_err("cleartext gets no answer"));
    }
    // The same call with a certificate of the cluster's CA is answered (so the refusals above
    // were the certificates, not a dead server): UNKNOWN_USER from the ledger.
    let admin = c.node_client();
    assert_eq!(code(admin.balance(7).await), ErrorCode::UnknownUser);
}

/// A call refused before any handler ran: the status is the client's own account of a broken
/// connection (its source a `tonic::transport::Error`; the code depends on when the TLS 1.3
/// server's refusal of the certificate reaches the client: UNAVAILABLE, UNKNOWN or CANCELLED;
/// INTERNAL for cleartext, which the TLS server answers with an HTTP/2 GOAWAY), never a status a
/// server sent, which has no such source and carries error details.
fn refused_at_handshake(addr: &str, what: &str, s: tonic::Status) {
    let transport = std::error::Error::source(&s).is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some());
    assert!(transport, "{addr}, {what}: the connection failed, no server answered: {s:?}");
    assert!(
        matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::Internal),
        "{addr}, {what}: a transport failure's code: {s:?}"
    );
    assert!(s.details().is_empty(), "{addr}, {what}: refused by the server's code, not at the handshake: {s:?}");
}

/// Raft messages with a payload that is not even decodable: a refusal must come before decoding.
fn junk(shard: u32, from_node: u64) -> RaftMessage {
    RaftMessage { shard, from_node, payload: vec![0xde, 0xad, 0xbe, 0xef], sent_ms: 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_process_cannot_append_vote_install_a_snapshot_or_deliver_a_credit_and_node_2_cannot_speak_as_node_3() {
    // 3 regions x 3 nodes: node k of each region replicates shard k, so some nodes are no
    // replica of a shard.
    let Funded3x3 { c, app: _app, users, before } = funded_3x3(100).await;
    let shard = c.topology.shards[0].clone();
    let member = shard.replicas[0];
    let other_member = shard.replicas[1];
    let outsider = c.topology.nodes.iter().map(|n| n.id).find(|n| !shard.replicas.contains(n)).expect("a node without shard 1");
    let target = c.node_addr(member);

    // A rogue process: a node identity from another CA is refused at the handshake.
    let foreign = hongbao_auth::generate_foreign_identity(&c.dir.path().join("rogue"), &Identity::Node(other_member)).expect("rogue CA");
    let ca = Certificate::from_pem(std::fs::read(SecurityDir::new(c.security_dir()).ca_cert()).expect("ca.crt"));
    let rogue = channel(&target, foreign.client_tls(&Identity::Node(other_member)).expect("rogue tls").ca_certificate(ca));
    let s = RaftTransportClient::new(rogue).append(junk(shard.id, other_member)).await.expect_err("rogue append");
    refused_at_handshake(&target, "a node certificate of another CA", s);

    // A service certificate of the cluster (even admin) is no node.
    let admin = c.channel_as(&target, &Identity::Service(Role::Admin));
    for s in [
        RaftTransportClient::new(admin.clone()).append(junk(shard.id, other_member)).await.expect_err("admin append"),
        RaftTransportClient::new(admin.clone()).vote(junk(shard.id, other_member)).await.expect_err("admin vote"),
        RaftTransportClient::new(admin.clone()).propose(junk(shard.id, other_member)).await.expect_err("admin propose"),
    ] {
        assert_eq!(hongbao_proto::detail_of(&s).code(), ErrorCode::PermissionDenied, "{s:?}");
    }
    // A node that is no replica of the shard may not append, vote or send a snapshot for it.
    let out = c.channel_as(&target, &Identity::Node(outsider));
    for s in [
        RaftTransportClient::new(out.clone()).append(junk(shard.id, outsider)).await.expect_err("outsider append"),
        RaftTransportClient::new(out.clone()).vote(junk(shard.id, outsider)).await.expect_err("outsider vote"),
        RaftTransportClient::new(out.clone()).pre_vote(junk(shard.id, outsider)).await.expect_err("outsider pre-vote"),
    ] {
        assert_eq!(hongbao_proto::detail_of(&s).code(), ErrorCode::PermissionDenied, "{s:?}");
    }
    let chunk = SnapshotChunk { shard: shard.id, from_node: outsider, vote: vec![1], meta: vec![1], data: vec![0; 64], done: true };
    let s = RaftTransportClient::new(out.clone()).install_snapshot(tokio_stream::iter(vec![chunk])).await.expect_err("outsider snapshot");
    assert_eq!(hongbao_proto::detail_of(&s).code(), ErrorCode::PermissionDenied, "{s:?}");
    // A forged credit: the outsider replicates shard 2 or 3, never shard 1... so a credit into
    // shard 1 claiming to come from a shard it does not replicate is refused, and so is any
    // other forwarded command (a forged MarkDelivered, a top-up).
    let not_its_source = c.topology.shards.iter().find(|s| s.id != shard.id && !s.replicas.contains(&outsider)).expect("a shard").id;
    let credit = hongbao_ledger::Request {
        id: hongbao_ledger::RequestId([0xaa; 16]),
        time_ms: 0,
        cmd: hongbao_ledger::Command::Credit {
            source: not_its_source,
            entries: vec![hongbao_ledger::CreditEntry {
                seq: 1,
                user: users[0],
                amount: hongbao_ledger::Cents(1_000_000),
                origin: hongbao_ledger::Origin::Transfer { from: 1 },
                bundle: None,
            }],
        },
    };
    let forged_topup = hongbao_ledger::Request {
        id: hongbao_ledger::RequestId([0xab; 16]),
        time_ms: 0,
        cmd: hongbao_ledger::Command::TopUp { user: users[0], amount: hongbao_ledger::Cents(1_000_000) },
    };
    for req in [credit, forged_topup] {
        let m = RaftMessage { shard: shard.id, from_node: outsider, payload: bincode::serialize(&req).expect("encode"), sent_ms: 0 };
        let s = RaftTransportClient::new(out.clone()).propose(m).await.expect_err("forged proposal");
        assert_eq!(hongbao_proto::detail_of(&s).code(), ErrorCode::PermissionDenied, "{:?}: {s:?}", req.cmd);
    }
    // Node 2's certificate cannot speak as node 3: a member whose message names another sender.
    let m2 = c.channel_as(&target, &Identity::Node(other_member));
    let s = RaftTransportClient::new(m2.clone()).append(junk(shard.id, shard.replicas[2])).await.expect_err("impersonation");
    assert_eq!(hongbao_proto::detail_of(&s).code(), ErrorCode::PermissionDenied, "{s:?}");
    // ... while speaking as itself it reaches Raft (the junk payload is what is refused), which
    // shows the refusals above were the identity checks.
    let s = RaftTransportClient::new(m2).append(junk(shard.id, other_member)).await.expect_err("junk payload");
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "a member's message passes the identity check: {s:?}");

    assert_eq!(money(&c, &users).await, before, "not one cent moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_a_cannot_act_as_user_b_and_bad_tokens_are_unauthenticated_and_nothing_moves() {
    let (c, app) = started(Spec { routers: true, ..Spec::default() }).await;
    let (a, b) = (c.topology.user_in_shard(1, 10), c.topology.user_in_shard(2, 10));
    fund(&c, &app, &[(a, 50_000), (b, 50_000)]).await;
    let p = app.send_packet(lucky_packet(b, 1_000, 2)).await.expect("b sends a packet");
    let before = money(&c, &[a, b]).await;

    let sec = SecurityDir::new(c.security_dir());
    let signer = DevSigner::load(&sec).expect("dev signer");
    let a_token = signer.mint(a, hongbao_tests::TEST_DEVICE, 600);
    let as_a = router_client_with(&c, Credentials::load(&c.security_dir()).expect("creds").with_tokens(Arc::new(Fixed(a_token))));
    // A's valid token, acting as B: refused, every way money could leave B.
    let transfer = pays(b, a, 10_000, TEST_PIN);
    assert_eq!(code(as_a.transfer(transfer).await), ErrorCode::PermissionDenied);
    let withdraw =
        WithdrawRequest { request_id: new_request_id(), user: b, amount_cents: 10_000, pin: TEST_PIN.into(), ..Default::default() };
    assert_eq!(code(as_a.withdraw(withdraw).await), ErrorCode::PermissionDenied);
    let send = SendPacketRequest {
        request_id: new_request_id(),
        sender: b,
        kind: PacketKind::Exclusive as i32,
        total_cents: 10_000,
        recipient: a,
        pin: TEST_PIN.into(),
        ..Default::default()
    };
    assert_eq!(code(as_a.send_packet(send).await), ErrorCode::PermissionDenied);
    assert_eq!(code(as_a.grab(new_request_id(), PacketRef::from(&p), b, "").await), ErrorCode::PermissionDenied);
    assert_eq!(code(as_a.balance(b).await), ErrorCode::PermissionDenied, "nor read B's wallet");
    assert_eq!(code(as_a.set_pin(new_request_id(), b, "000000").await), ErrorCode::PermissionDenied);
    // The same client may act as A (the refusals were about B).
    assert!(as_a.balance(a).await.is_ok());

    // Forged, expired and wrong-key tokens: UNAUTHENTICATED.
    let mut header_payload = signer.mint(b, "x", 600);
    header_payload.truncate(header_payload.rfind('.').expect("jwt") + 1);
    let forged = format!("{header_payload}{}", "A".repeat(86));
    let expired = signer.mint_at(b, hongbao_tests::TEST_DEVICE, 1_000_000_000, 600);
    let other = SecurityDir::new(c.dir.path().join("other-login"));
    hongbao_auth::ensure_dev_pki(&other, &c.topology).expect("another dev folder");
    let wrong_key = DevSigner::load(&other).expect("other signer").mint(b, hongbao_tests::TEST_DEVICE, 600);
    for (name, token) in [("forged", forged), ("expired", expired), ("wrong key", wrong_key), ("garbage", "not-a-jwt".into())] {
        let cl = router_client_with(&c, Credentials::load(&c.security_dir()).expect("creds").with_tokens(Arc::new(Fixed(token))));
        let transfer = pays(b, a, 10_000, TEST_PIN);
        assert_eq!(code(cl.transfer(transfer).await), ErrorCode::Unauthenticated, "{name} token");
        assert_eq!(code(cl.grab(new_request_id(), PacketRef::from(&p), b, "").await), ErrorCode::Unauthenticated, "{name} token");
    }
    // No token at all: a raw grab as the app role without an authorization header (the client
    // library would refuse to send it), refused by the router's token check.
    let router = c.channel_as(&c.topology.routers[0].addr, &Identity::Service(Role::App));
    let denied_before = router_denied(&c, 0, "token").await;
    let g =
        GrabRequest { request_id: new_request_id(), packet_id: p.packet_id, packet_key: p.packet_key, grabber: b, password: String::new() };
    let s = hongbao_proto::v1::packets_client::PacketsClient::new(router).grab(g).await.expect_err("a grab without a token");
    assert_eq!((s.code(), hongbao_proto::detail_of(&s).code()), (tonic::Code::Unauthenticated, ErrorCode::Unauthenticated), "{s:?}");
    assert!(s.message().contains("no bearer token"), "the router says why: {s:?}");
    assert_eq!(router_denied(&c, 0, "token").await, denied_before + 1.0, "the router counted the refusal");

    assert_eq!(money(&c, &[a, b]).await, before, "not one cent moved");
    let view = c.node_client().show_packet(p.packet_id).await.expect("packet");
    assert!(view.claims.is_empty(), "nobody grabbed B's packet as B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_role_cannot_top_up_freeze_drain_or_audit_and_admin_can() {
    let c = Cluster::start(Spec { routers: true, ..Spec::default() });
    c.wait_ready(Duration::from_secs(30)).await;
    let all = c.router_client("shenzhen");
    let u = c.topology.user_in_shard(1, 20);
    c.funded(&all, u, 10_000).await;
    let before = money(&c, &[u]).await;
    let app = router_client_with(&c, c.credentials().only(Role::App));
    assert_eq!(code(app.top_up(new_request_id(), u, 1_000_000).await), ErrorCode::PermissionDenied, "app mints money");
    assert_eq!(code(app.set_risk(u, true, "high").await), ErrorCode::PermissionDenied, "app freezes");
    assert_eq!(code(app.drain("shenzhen").await), ErrorCode::PermissionDenied, "app drains");
    assert_eq!(code(app.audit().await), ErrorCode::PermissionDenied, "app audits");
    assert_eq!(code(app.status().await), ErrorCode::PermissionDenied, "app reads cluster status");
    assert_eq!(code(app.poll_notifications(1, 0, 10).await), ErrorCode::PermissionDenied, "app reads challenge codes");
    // Nor straight at a node: nodes serve their API to routers and admin only.
    let app_at_node = Client::new(vec![c.node_addr(1)], Arc::new(c.credentials().only(Role::App))).with_deadline(Duration::from_secs(3));
    assert_eq!(code(app_at_node.balance(u).await), ErrorCode::PermissionDenied, "app at a node");
    assert_eq!(money(&c, &[u]).await, before, "not one cent moved");
    let b = c.node_client().balance(u).await.expect("balance");
    assert!(!b.frozen, "the account was not frozen");

    let admin = router_client_with(&c, c.credentials().only(Role::Admin));
    assert!(admin.audit().await.expect("admin audits").balanced);
    assert!(admin.status().await.is_ok(), "admin reads status");
    assert!(admin.drain("tianjin").await.is_ok(), "admin drains");
    assert!(admin.undrain("tianjin").await.is_ok(), "admin undrains");
    assert!(admin.set_risk(u, true, "normal").await.expect("admin freezes").frozen);
    assert_eq!(code(admin.top_up(new_request_id(), u, 100).await), ErrorCode::PermissionDenied, "top-ups are the gateway's alone");
    let gateway = router_client_with(&c, c.credentials().only(Role::PaymentGateway));
    assert!(gateway.top_up(new_request_id(), u, 100).await.is_ok(), "the payment gateway tops up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_wrong_pins_lock_spending_across_a_leader_change_and_the_right_pin_then_waits_for_the_lock() {
    let (c, app) = started(Spec { routers: true, ..Spec::default() }).await;
    let [u, v, w] = users_in_shard(&c, 1, 30);
    fund(&c, &app, &[(u, 50_000), (v, 0)]).await;
    let transfer = |pin: &str| pays(u, v, 1_000, pin);
    // The PIN is set once.
    assert_eq!(code(app.set_pin(new_request_id(), u, "111111").await), ErrorCode::PinAlreadySet);
    let before = money(&c, &[u, v]).await;
    for i in 1..=4 {
        assert_eq!(code(app.transfer(transfer("999999")).await), ErrorCode::WrongPin, "wrong PIN #{i}");
    }
    assert_eq!(code(app.transfer(transfer("999999")).await), ErrorCode::PinLocked, "the fifth wrong PIN locks");
    assert_eq!(code(app.transfer(transfer(TEST_PIN)).await), ErrorCode::PinLocked, "the right PIN waits for the lock");

    // Move the shard's leader: the lock is replicated state, not the old leader's memory.
    let old = c.leaders().await[&1];
    let to = c.topology.shard(1).expect("shard 1").replicas.iter().copied().find(|n| *n != old).expect("another replica");
    c.node_client().transfer_leader(1, to).await.expect("leader transfer");
    assert_eq!(c.leaders().await[&1], to, "the leader moved");
    assert_eq!(code(app.transfer(transfer(TEST_PIN)).await), ErrorCode::PinLocked, "still locked on the new leader");
    let send = lucky_packet_from_no_device(u);
    assert_eq!(code(app.send_packet(send).await), ErrorCode::PinLocked, "sending is locked too");
    let withdraw =
        WithdrawRequest { request_id: new_request_id(), user: u, amount_cents: 1_000, pin: TEST_PIN.into(), ..Default::default() };
    assert_eq!(code(app.withdraw(withdraw).await), ErrorCode::PinLocked, "withdrawing is locked too");
    assert_eq!(money(&c, &[u, v]).await, before, "not one cent moved");
    // Another user of the same shard spends as usual: the lock is per user.
    c.funded(&app, w, 5_000).await;
    let other = pays(w, v, 1_000, TEST_PIN);
    assert!(app.transfer(other).await.is_ok());
}

/// #28, item 1: a spend refused before the PIN check, re-sent under its request id with one PIN
/// guess after another, must answer its first refusal to every guess: before the fix the right
/// PIN alone answered REQUEST_ID_REUSED, wrong guesses were never counted, and the account never
/// locked. Fresh wrong guesses still lock after five, and nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_refused_request_id_with_pin_guesses_tells_nothing_and_fresh_wrong_guesses_still_lock() {
    let (c, app) = started(Spec { routers: true, ..Spec::default() }).await;
    let [u, v] = users_in_shard(&c, 1, 40);
    fund(&c, &app, &[(u, 50_000), (v, 0)]).await;
    let before = money(&c, &[u, v]).await;
    let to_self = |id: &Vec<u8>, pin: &str| TransferRequest { request_id: id.clone(), ..pays(u, u, 1_000, pin) };
    let zero = |id: &Vec<u8>, pin: &str| WithdrawRequest {
        request_id: id.clone(),
        user: u,
        amount_cents: 0,
        pin: pin.into(),
        ..Default::default()
    };
    let no_shares = |id: &Vec<u8>, pin: &str| SendPacketRequest {
        request_id: id.clone(),
        sender: u,
        kind: PacketKind::Lucky as i32,
        total_cents: 1_000,
        count: 0,
        pin: pin.into(),
        ..Default::default()
    };
    let guesses = ["123456", "111111", "654321", "999999", "888888", TEST_PIN];
    // A transfer to oneself, a withdrawal of nothing, a packet of no shares: each refused by the
    // ledger (a rule's code, so the call reached it), then replayed with every guess.
    let id = new_request_id();
    let first = code(app.transfer(to_self(&id, "000000")).await);
    assert_eq!(first, ErrorCode::SelfTransfer, "refused by the ledger's rule");
    for pin in guesses {
        assert_eq!(code(app.transfer(to_self(&id, pin)).await), first, "replayed transfer with a guess");
    }
    let id = new_request_id();
    let first = code(app.withdraw(zero(&id, "000000")).await);
    assert_ne!(first, ErrorCode::RequestIdReused);
    for pin in guesses {
        assert_eq!(code(app.withdraw(zero(&id, pin)).await), first, "replayed withdrawal with a guess");
    }
    let id = new_request_id();
    let first = code(app.send_packet(no_shares(&id, "000000")).await);
    assert_ne!(first, ErrorCode::RequestIdReused);
    for pin in guesses {
        assert_eq!(code(app.send_packet(no_shares(&id, pin)).await), first, "replayed packet with a guess");
    }
    // Guessing on fresh ids is counted: the fifth wrong one locks, and then the right PIN waits.
    let pay = |pin: &str| pays(u, v, 1_000, pin);
    for i in 1..=4 {
        assert_eq!(code(app.transfer(pay("999999")).await), ErrorCode::WrongPin, "wrong PIN #{i}");
    }
    assert_eq!(code(app.transfer(pay("999999")).await), ErrorCode::PinLocked, "the fifth wrong PIN locks");
    assert_eq!(code(app.transfer(pay(TEST_PIN)).await), ErrorCode::PinLocked, "the right PIN waits for the lock");
    nothing_moved(&c, &[u, v], &before).await;
}

/// #28, item 2: the admin certificate straight at a node used to mint money (a top-up of any
/// amount), read live challenge codes, set a PIN on a wallet without one and pay from any
/// device. Nodes serve their public API to routers only now: each call reaches the node and is
/// refused there as the admin identity's, and not one cent moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_certificate_at_a_node_cannot_mint_read_codes_set_a_pin_or_pay_and_nothing_moves() {
    let (c, app) = started(Spec { routers: true, ..Spec::default() }).await;
    let [u, v, no_pin] = users_in_shard(&c, 1, 50);
    fund(&c, &app, &[(u, 20_000), (v, 0)]).await;
    app.open_account(no_pin, TEST_DEVICE).await.expect("a wallet without a PIN");
    let before = money(&c, &[u, v, no_pin]).await;
    let refused_at_node = |what: &str, r: Result<(), hongbao_client::ClientError>| {
        let e = r.expect_err(what);
        assert_eq!(e.code(), ErrorCode::PermissionDenied, "{what}: {e}");
        assert!(e.detail.message.contains("may not call the public API service of a node"), "{what}: refused by the node's rule: {e}");
    };
    for n in c.topology.nodes.iter().map(|n| n.id) {
        let admin_at_node =
            Client::new(vec![c.node_addr(n)], Arc::new(c.credentials().only(Role::Admin))).with_deadline(Duration::from_secs(3));
        refused_at_node("mint", admin_at_node.top_up(new_request_id(), u, 5_000_000).await.map(|_| ()));
        refused_at_node("read codes", admin_at_node.poll_notifications(1, 0, 10).await.map(|_| ()));
        refused_at_node("set a PIN", admin_at_node.set_pin(new_request_id(), no_pin, "135790").await.map(|_| ()));
        let pay = TransferRequest { device: "attacker-laptop".into(), ..pays(u, v, 15_000, TEST_PIN) };
        refused_at_node("pay from any device", admin_at_node.transfer(pay).await.map(|_| ()));
    }
    nothing_moved(&c, &[u, v, no_pin], &before).await;
    // The wallet still has no PIN: its owner's first SetPin is accepted.
    app.set_pin(new_request_id(), no_pin, TEST_PIN).await.expect("the owner sets the first PIN");
}

/// A lucky packet of `count` shares of `total` cents sent by `sender` (funded), for grab tests.
async fn packet(app: &Client, sender: u64, total: u64, count: u32) -> PacketRef {
    let p = app.send_packet(lucky_packet(sender, total, count)).await.expect("a packet");
    PacketRef::from(&p)
}

/// #28, item 5: the router took grabs up to 64 KiB and the node refused a whole coalesced batch
/// holding one over 16 KiB, so one oversized grab failed up to 255 other users' grabs. Now one
/// limit is checked at the router, and grabs sent together with oversized ones all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_grab_is_refused_at_the_router_and_fails_no_other_users_grab() {
    let (c, app) = started(Spec { routers: true, ..Spec::default() }).await;
    let sender = c.topology.user_in_shard(1, 60);
    c.funded(&app, sender, 100_000).await;
    let grabbers: Vec<u64> = (0..24).map(|i| 5_000 + i).collect();
    for g in &grabbers {
        app.open_account(*g, TEST_DEVICE).await.expect("open");
    }
    let attacker = 4_999;
    app.open_account(attacker, TEST_DEVICE).await.expect("open");
    let before = money(&c, &[sender]).await;
    let big = "x".repeat(20 << 10);
    let mut total = 0;
    for round in 0..3 {
        let id = packet(&app, sender, 8 * 1_000, 8).await;
        let round_grabbers = &grabbers[round * 8..round * 8 + 8];
        let honest = futures::future::join_all(round_grabbers.iter().map(|g| app.grab(new_request_id(), id, *g, "")));
        let oversized = futures::future::join_all((0..4).map(|_| app.grab(new_request_id(), id, attacker, &big)));
        let (honest, oversized) = tokio::join!(honest, oversized);
        for r in oversized {
            let e = r.expect_err("an oversized grab is refused");
            assert!(e.detail.message.contains("too large") || e.detail.message.contains("length"), "refused for its size: {e}");
        }
        for (g, r) in round_grabbers.iter().zip(honest) {
            let r = r.unwrap_or_else(|e| panic!("round {round}: the grab of user {g} failed beside an oversized one: {e}"));
            total += r.amount_cents;
        }
    }
    assert_eq!(total, 3 * 8 * 1_000, "every share was grabbed by an honest grabber");
    let after = money(&c, &[sender]).await;
    assert!(after.3, "the audit balances");
    assert_eq!(after.0[0], before.0[0] - total, "the sender paid exactly the grabbed shares");
    assert_eq!(app.balance(attacker).await.expect("balance").balance_cents, 0, "the oversized grabs took nothing");
}

/// #28, item 5, at the node: a coalesced batch with one member over the limit answers that
/// member alone with INVALID_ARGUMENT and serves the others (it used to refuse the batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coalesced_batch_refuses_only_its_oversized_member_and_serves_the_others() {
    use hongbao_proto::v1::coalesced_client::CoalescedClient;
    let (c, app) = started(Spec { routers: true, ..Spec::default() }).await;
    let sender = c.topology.user_in_shard(1, 70);
    c.funded(&app, sender, 100_000).await;
    let (g1, g2, g3) = (6_001, 6_002, 6_003);
    for g in [g1, g2, g3] {
        app.open_account(g, TEST_DEVICE).await.expect("open");
    }
    let id = packet(&app, sender, 3_000, 3).await;
    let leader = c.leaders().await[&1];
    let grab =
        |g: u64, password: String| GrabRequest { request_id: new_request_id(), packet_id: id.id, packet_key: id.key, grabber: g, password };
    let batch = GrabBatchRequest { grabs: vec![grab(g1, String::new()), grab(g2, "y".repeat(17 << 10)), grab(g3, String::new())] };
    let router = c.channel_as(&c.node_addr(leader), &c.harness_identity());
    let reply = CoalescedClient::new(router).grabs(batch).await.expect("the batch is answered").into_inner();
    assert_eq!(reply.results.len(), 3);
    let oversized = reply.results[1].error.as_ref().expect("the oversized member is refused");
    assert_eq!(oversized.code(), ErrorCode::InvalidArgument, "{oversized:?}");
    assert!(oversized.message.contains("at most"), "refused for its size: {oversized:?}");
    let got: u64 = [0, 2].iter().map(|i| reply.results[*i].reply.as_ref().expect("the others are served").amount_cents).sum();
    assert!(got > 0 && got < 3_000);
    assert!(money(&c, &[sender]).await.3, "the audit balances");
}

/// #30: the client-to-router grab batch (`GrabGateway.Grabs`). Each entry is its own user's by
/// its own token: a batch mixing honest grabs with one made as another user, one with a forged
/// token, one with no token and one with no grab is answered entry by entry, and only the honest
/// entries take money. A caller whose certificate is not `app` is refused the whole call, and so
/// is a batch over 256 entries. Sending the batch again replays the honest answers and moves
/// nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grab_batch_pays_only_entries_with_their_own_users_token_and_only_the_app_role_may_send_one() {
    use hongbao_proto::v1::grab_gateway_client::GrabGatewayClient;
    let (c, app) = started(Spec { routers: true, ..Spec::default() }).await;
    let sender = c.topology.user_in_shard(1, 80);
    c.funded(&app, sender, 100_000).await;
    let (g1, g2, victim) = (7_001, 7_002, 7_003);
    for g in [g1, g2, victim] {
        app.open_account(g, TEST_DEVICE).await.expect("open");
    }
    let id = packet(&app, sender, 3_000, 3).await;
    let before = money(&c, &[sender, g1, g2, victim]).await;
    let signer = DevSigner::load(&SecurityDir::new(c.security_dir())).expect("dev signer");
    let token = |u: u64| signer.mint(u, TEST_DEVICE, 600);
    let mut forged = token(victim);
    forged.truncate(forged.rfind('.').expect("jwt") + 1);
    forged.push_str(&"A".repeat(86));
    let grab =
        |g: u64| GrabRequest { request_id: new_request_id(), packet_id: id.id, packet_key: id.key, grabber: g, password: String::new() };
    let batch = UserGrabBatchRequest {
        grabs: vec![
            UserGrab { grab: Some(grab(g1)), token: token(g1) },
            UserGrab { grab: Some(grab(victim)), token: token(g2) },
            UserGrab { grab: Some(grab(victim)), token: forged },
            UserGrab { grab: Some(grab(victim)), token: String::new() },
            UserGrab { grab: None, token: token(g2) },
            UserGrab { grab: Some(grab(g2)), token: token(g2) },
        ],
    };
    let router = &c.topology.routers[0].addr;

    // Other roles may not send a batch at all: refused whole, nothing applied.
    for role in [Role::PaymentGateway, Role::Risk, Role::Admin, Role::Notifier] {
        let s = GrabGatewayClient::new(c.channel_as_role(router, role)).grabs(batch.clone()).await.expect_err("not the app role");
        assert_eq!(hongbao_proto::detail_of(&s).code(), ErrorCode::PermissionDenied, "{role:?}: {s:?}");
    }
    let too_many = UserGrabBatchRequest { grabs: vec![batch.grabs[0].clone(); hongbao_proto::MAX_GRAB_BATCH + 1] };
    let s = GrabGatewayClient::new(c.channel_as_role(router, Role::App)).grabs(too_many).await.expect_err("too many");
    assert_eq!(hongbao_proto::detail_of(&s).code(), ErrorCode::InvalidArgument, "{s:?}");
    assert_eq!(money(&c, &[sender, g1, g2, victim]).await, before, "refused calls moved not one cent");

    let codes =
        |r: &GrabBatchReply| -> Vec<ErrorCode> { r.results.iter().map(|x| x.error.as_ref().map_or(ErrorCode::Ok, |e| e.code())).collect() };
    let expected = vec![
        ErrorCode::Ok,
        ErrorCode::PermissionDenied,
        ErrorCode::Unauthenticated,
        ErrorCode::Unauthenticated,
        ErrorCode::InvalidArgument,
        ErrorCode::Ok,
    ];
    let first = GrabGatewayClient::new(c.channel_as_role(router, Role::App)).grabs(batch.clone()).await.expect("answered").into_inner();
    assert_eq!(codes(&first), expected, "{first:?}");
    let again = GrabGatewayClient::new(c.channel_as_role(router, Role::App)).grabs(batch).await.expect("answered").into_inner();
    assert_eq!(codes(&again), expected, "{again:?}");
    let amounts = |r: &GrabBatchReply| [0, 5].map(|i| r.results[i].reply.as_ref().expect("an honest grab is paid").amount_cents);
    assert_eq!(amounts(&again), amounts(&first), "the re-sent batch replays the first answers");

    let [a1, a2] = amounts(&first);
    let after = money(&c, &[sender, g1, g2, victim]).await;
    assert!(after.3, "the audit balances");
    assert_eq!(after.0, vec![before.0[0], a1, a2, 0], "g1 and g2 got their shares once; the victim's wallet took nothing");
    let view = c.node_client().show_packet(id.id).await.expect("packet");
    let mut claimed: Vec<u64> = view.claims.iter().map(|x| x.grabber).collect();
    claimed.sort();
    assert_eq!(claimed, vec![g1, g2], "only the honest entries claimed a share");
}

/// Asserts that a node's call was refused (`what` names the call that must fail) with
/// PERMISSION_DENIED and a message containing `rule`, the leader's rule.
fn refused_by_the_leader<T: std::fmt::Debug>(r: Result<T, tonic::Status>, what: &str, rule: &str) {
    let s = r.expect_err(what);
    assert_eq!(hongbao_proto::detail_of(&s).code(), ErrorCode::PermissionDenied, "{s:?}");
    assert!(s.message().contains(rule), "refused by the leader's rule: {s:?}");
}

/// #28, item 3 (leadership and replicas): one node's key asked a shard's leader for a leader
/// transfer to itself and was obeyed, and could make itself a voter of any shard. On 3 × 3 a
/// node outside shard 1 and a node inside it each try, at shard 1's leader: every call reaches
/// the leader and is refused as a node's, the leader and the map stay, and nothing moves. The
/// admin's transfer through a router (re-sent to the leader by the router) still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_nodes_key_cannot_choose_a_shards_leader_or_add_or_remove_its_replicas_on_3x3() {
    use hongbao_proto::v1::cluster_client::ClusterClient;
    let Funded3x3 { c, app: _app, users, before } = funded_3x3(300).await;
    let (admin, map_before) = admin_and_map(&c).await;
    let map_before = map_before.version;
    let shard = c.topology.shards[0].clone();
    let leader = c.leaders().await[&shard.id];
    let member = *shard.replicas.iter().find(|n| **n != leader).expect("another replica");
    let outsider = c.topology.nodes.iter().map(|n| n.id).find(|n| !shard.replicas.contains(n)).expect("a node without shard 1");
    let at_leader = |id: u64| ClusterClient::new(c.channel_as(&c.node_addr(leader), &Identity::Node(id)));
    for attacker in [member, outsider] {
        let r = at_leader(attacker).transfer_leader(TransferLeaderRequest { shard: shard.id, to_node: member }).await;
        refused_by_the_leader(r, "a node chooses a leader", "only an admin may choose a leader");
        let r = at_leader(attacker).add_replica(ReplicaChangeRequest { shard: shard.id, node: outsider }).await;
        refused_by_the_leader(r, "a node adds a replica", "may not add a replica");
        let r = at_leader(attacker).remove_replica(ReplicaChangeRequest { shard: shard.id, node: member }).await;
        refused_by_the_leader(r, "a node removes a replica", "may not remove a replica");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(c.leaders().await[&shard.id], leader, "the leader stayed");
    let t = map_unchanged(&admin, map_before).await;
    assert_eq!(t.shard(shard.id).expect("shard 1").replicas, shard.replicas, "shard 1's replicas stayed");
    nothing_moved(&c, &users, &before).await;
    // The admin's own transfer, through a router that re-sends it to the leader, still works.
    admin.transfer_leader(shard.id, member).await.expect("the admin moves the leader");
    assert_eq!(c.leaders().await[&shard.id], member, "the leader moved for the admin");
}

/// #28, items 4 and 6 (floods): one token used to grab without limit (a bot counting through
/// packet ids, each grab a Raft entry and a request-id row) and re-open its account without
/// limit. Now grabs and account opening are limited per user at the router: a flood of 300
/// grabs of packets that do not exist and 100 opens meets RATE_LIMITED (from the router: the
/// shard's log grows by far fewer entries than calls), while another user grabs as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_grabs_and_opens_from_one_token_is_rate_limited_and_others_still_grab() {
    use hongbao_proto::v1::packets_client::PacketsClient;
    let (c, app) = started(Spec { routers: true, ..Spec::default() }).await;
    let [bot, honest, sender] = users_in_shard(&c, 1, 80);
    fund(&c, &app, &[(bot, 0), (honest, 0), (sender, 10_000)]).await;
    let before = money(&c, &[bot, honest, sender]).await;
    let token = DevSigner::load(&SecurityDir::new(c.security_dir())).expect("signer").mint(bot, hongbao_tests::TEST_DEVICE, 600);
    let router = c.channel_as(&c.topology.routers[0].addr, &Identity::Service(Role::App));
    let status = c.node_client().status().await.expect("status");
    let applied = |st: &StatusReply| st.leader_of(1).map(|s| s.applied).unwrap_or(0);
    let shard1 = (1u64 << 48) | 0xffff; // shard 1's id space, far past any packet sent here
                                        // All at once, as a bot would: the bucket holds a burst of 100.
    let grabs = (0..300u64).map(|i| {
        let g = GrabRequest { request_id: new_request_id(), packet_id: shard1 + i, packet_key: 0, grabber: bot, password: String::new() };
        let mut p = PacketsClient::new(router.clone());
        let req = with_token(g, &token);
        async move { p.grab(req).await }
    });
    let is_limited = |s: &tonic::Status| hongbao_proto::detail_of(s).code() == ErrorCode::RateLimited;
    let limited = futures::future::join_all(grabs).await.iter().filter(|r| r.as_ref().err().is_some_and(is_limited)).count();
    assert!(limited >= 150, "a flood of grabs by one token is limited: {limited} of 300 refused RATE_LIMITED");
    let opens = (0..100).map(|_| {
        let o = OpenAccountRequest { request_id: new_request_id(), user: bot, device: String::new() };
        let mut w = WalletClient::new(router.clone());
        let req = with_token(o, &token);
        async move { w.open_account(req).await }
    });
    let opens_limited = futures::future::join_all(opens).await.iter().filter(|r| r.as_ref().err().is_some_and(is_limited)).count();
    assert!(opens_limited >= 40, "a flood of account opens by one token is limited: {opens_limited} of 100");
    let after = c.node_client().status().await.expect("status");
    let grew = applied(&after) - applied(&status);
    assert!(grew < 250, "the log grew by {grew} entries for 400 calls: the refused ones never reached it");
    // Another user grabs at once, unaffected.
    let p = packet(&app, sender, 1_000, 1).await;
    let got = app.grab(new_request_id(), p, honest, "").await.expect("another user grabs");
    assert_eq!(got.amount_cents, 1_000);
    let now = money(&c, &[bot, honest, sender]).await;
    assert!(now.3, "the audit balances");
    assert_eq!(now.0[0], before.0[0], "the bot got nothing");
}

/// Serves nothing but health at `addr` with `id`'s certificate for `secs`, and counts the HTTP
/// requests that get past the TLS handshake (Raft messages the nodes send to that address).
async fn rogue_at(c: &Cluster, addr: &str, id: &Identity, secs: u64) -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let tls = SecurityDir::new(c.security_dir()).server_tls(id).expect("server tls");
    let (_, health) = tonic_health::server::health_reporter();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .tls_config(tls)
        .expect("tls")
        .trace_fn(move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
            tracing::Span::none()
        })
        .add_service(health)
        .serve_with_shutdown(addr.parse().expect("addr"), async {
            let _ = stopped.await;
        });
    let task = tokio::spawn(server);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let _ = stop.send(());
    let _ = task.await;
    calls.load(Ordering::Relaxed)
}

/// #28, item 3 (outbound identity): every node certificate also names its host, so a process
/// with any node's key could sit at another node's address and receive its Raft traffic. On 3 ×
/// 1, node 2 is stopped and a server takes its address: with node 2's own certificate the other
/// nodes' messages reach it (so traffic does go there), with node 3's they are refused at the
/// handshake and not one request reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_another_nodes_key_at_a_nodes_address_receives_no_message() {
    let (mut c, app) = started(Spec { routers: true, ..Spec::default() }).await;
    let u = c.topology.user_in_shard(1, 90);
    c.funded(&app, u, 10_000).await;
    let before = money(&c, &[u]).await;
    let addr = c.node_addr(2);
    c.kill(2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let genuine = rogue_at(&c, &addr, &Identity::Node(2), 3).await;
    assert!(genuine > 0, "with node 2's own certificate the cluster's messages arrive ({genuine} requests)");
    let posing = rogue_at(&c, &addr, &Identity::Node(3), 4).await;
    assert_eq!(posing, 0, "with node 3's certificate at node 2's address no request gets through");
    nothing_moved(&c, &[u], &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_call_with_the_users_own_credentials_reveals_a_challenge_code_and_guesses_fail_after_the_attempt_limit() {
    let (c, app) = started(Spec { routers: true, ..Spec::default() }).await;
    let (u, v) = (c.topology.user_in_shard(1, 40), c.topology.user_in_shard(2, 40));
    // u's wallet is opened on TEST_DEVICE.
    fund(&c, &app, &[(u, 100_000), (v, 0)]).await;
    let before = money(&c, &[u, v]).await;
    // The user signs in on a new phone and pays 150.00: a challenge.
    let new_phone = |amount: u64, verification: Option<Verification>| TransferRequest {
        request_id: new_request_id(),
        from_user: u,
        to_user: v,
        amount_cents: amount,
        device: "new-phone".into(),
        pin: TEST_PIN.into(),
        verification,
        token_issued_s: 0,
    };
    let err = app.transfer(new_phone(15_000, None)).await.expect_err("a new device pays 150.00");
    assert_eq!(err.code(), ErrorCode::ChallengeRequired);
    let challenge = err.detail.challenge_id;
    assert_ne!(challenge, 0);
    // The notifier (and only it) reads the code, to push it to the known device.
    let notes = c.router_client("shenzhen").poll_notifications(1, 0, 256).await.expect("notifier polls");
    let n = notes.notifications.iter().find(|n| n.challenge_id == challenge).expect("a notification for the challenge");
    assert_eq!((n.user, n.device.as_str(), n.amount_cents, n.counterparty), (u, hongbao_tests::TEST_DEVICE, 15_000, v));
    let the_code = n.code;
    let shown = format!("{the_code:06}");
    assert!(!format!("{:?}", err.detail).contains(&shown), "the refusal carries no code");
    // Everything the user's own credentials may call, none shows the code.
    let b = app.balance(u).await.expect("balance");
    let st = app.statement(u, 50).await.expect("statement");
    assert!(!format!("{b:?}{st:?}").contains(&shown), "no read of the user's shows the code");
    let user_only = router_client_with(&c, c.credentials().only(Role::App));
    assert_eq!(code(user_only.poll_notifications(1, 0, 256).await), ErrorCode::PermissionDenied, "the notifier outbox is closed to apps");

    // Three wrong guesses kill the challenge: then even the right code fails.
    for guess in 1..=3u32 {
        let wrong = (the_code + guess) % 1_000_000;
        let r = app.transfer(new_phone(15_000, Some(Verification { challenge_id: challenge, code: wrong }))).await;
        assert_eq!(code(r), ErrorCode::ChallengeInvalid, "guess {guess}");
    }
    let r = app.transfer(new_phone(15_000, Some(Verification { challenge_id: challenge, code: the_code }))).await;
    assert_eq!(code(r), ErrorCode::ChallengeInvalid, "a challenge with three wrong guesses is dead");
    assert_eq!(money(&c, &[u, v]).await, before, "not one cent moved");

    // A fresh challenge answered with its code goes through; the code is bound to the operation.
    let err = app.transfer(new_phone(20_000, None)).await.expect_err("a new challenge");
    assert_eq!(err.code(), ErrorCode::ChallengeRequired, "{err}");
    let fresh = err.detail.challenge_id;
    let code_of = |notes: &PollNotificationsReply| notes.notifications.iter().find(|n| n.challenge_id == fresh).map(|n| n.code);
    let mut right;
    hongbao_tests::eventually!(Duration::from_secs(3), {
        right = code_of(&c.router_client("shenzhen").poll_notifications(1, 0, 256).await.expect("poll"));
        right.is_some()
    });
    let right = right.expect("the fresh challenge's notification");
    let r = app.transfer(new_phone(19_999, Some(Verification { challenge_id: fresh, code: right }))).await;
    assert_eq!(code(r), ErrorCode::ChallengeInvalid, "the code is for 200.00, not 199.99");
    app.transfer(new_phone(20_000, Some(Verification { challenge_id: fresh, code: right })))
        .await
        .expect("the right code for the right payment");
    assert_eq!(app.balance(u).await.expect("balance").balance_cents, 100_000 - 20_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_scoped_by_user_so_one_user_cannot_take_anothers_id() {
    let (c, app) = started(Spec { routers: true, ..Spec::default() }).await;
    let [a, b] = users_in_shard(&c, 1, 50);
    fund(&c, &app, &[(a, 0), (b, 0)]).await;
    let id = new_request_id();
    assert_eq!(app.top_up(id.clone(), a, 1_000).await.expect("a's top-up").balance_cents, 1_000);
    // B's request with A's id is B's own: applied, not answered with A's outcome or REUSED.
    assert_eq!(app.top_up(id.clone(), b, 2_000).await.expect("b's top-up with the same id").balance_cents, 2_000);
    // And A's retry still replays A's outcome, once.
    assert_eq!(app.top_up(id, a, 1_000).await.expect("a's retry").balance_cents, 1_000);
    assert_eq!(c.node_client().balance(a).await.expect("a").balance_cents, 1_000, "the retry moved nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_build_has_no_fault_injection_rpc() {
    let default_node = bin("default-build/hongbao-node");
    let c = Cluster::start(Spec { node_binary: Some(default_node), ..Spec::default() });
    c.wait_ready(Duration::from_secs(30)).await;
    let admin = c.channel_as(&c.node_addr(1), &Identity::Service(Role::Admin));
    let s =
        FaultInjectionClient::new(admin).set_faults(Faults { cut_off: vec![2, 3], ..Default::default() }).await.expect_err("no such RPC");
    assert_eq!(s.code(), tonic::Code::Unimplemented, "{s:?}");
    // The test build beside it has the service (so the check above tells the builds apart).
    let t = Cluster::start(Spec::default());
    t.wait_ready(Duration::from_secs(30)).await;
    let admin = t.channel_as(&t.node_addr(1), &Identity::Service(Role::Admin));
    FaultInjectionClient::new(admin).set_faults(Faults::default()).await.expect("the test build injects faults");
}

/// `shard`'s (leader, term, last log index, applied index), as its leader reports them, once the
/// leader sits in the shard's home region and has applied its whole log. An idle shard appends
/// nothing by itself: no request comes, the sweeper and the relay have nothing to propose, and
/// the only entry a shard adds on its own is the blank one of a new leader's term, which the
/// failback after start makes (hence the wait for the home leader). So "no entry was added" is
/// this position unchanged, exactly.
async fn log_position(c: &Cluster, shard: u32) -> (u64, u64, u64, u64) {
    let (mut last, mut settled) = (None, None);
    hongbao_tests::eventually!(Duration::from_secs(10), {
        let st = c.node_client().status().await.expect("status");
        if let Some(s) = st.leader_of(shard) {
            last = Some(format!("{s:?}"));
            if s.region == s.home_region && s.applied == s.last_log_index {
                settled = Some((s.node, s.term, s.last_log_index, s.applied));
            }
        }
        settled.is_some()
    });
    settled.unwrap_or_else(|| panic!("shard {shard} had no settled leader in its home region within 10 s: {last:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_at_the_boundary_refuse_floods_of_reads_and_oversized_strings_before_the_log() {
    let (c, app) = started(Spec { routers: true, ..Spec::default() }).await;
    let u = c.topology.user_in_shard(1, 60);
    c.funded(&app, u, 10_000).await;
    let token = DevSigner::load(&SecurityDir::new(c.security_dir())).expect("signer").mint(u, hongbao_tests::TEST_DEVICE, 600);
    let router = c.channel_as(&c.topology.routers[0].addr, &Identity::Service(Role::App));
    // Reads: 50/s with bursts of 100 per user; 300 at once must meet the limit.
    let mut limited = 0;
    for _ in 0..300 {
        if let Err(s) = WalletClient::new(router.clone())
            .balance(with_token(BalanceRequest { user: u, allow_stale: true, token_issued_s: 0 }, &token))
            .await
        {
            assert_eq!(hongbao_proto::detail_of(&s).code(), ErrorCode::RateLimited, "{s:?}");
            limited += 1;
        }
    }
    assert!(limited >= 100, "a flood of reads by one user is limited: {limited} of 300 refused");
    // Another user is not affected by the first one's flood.
    let other = c.topology.user_in_shard(1, u + 1);
    c.funded(&app, other, 0).await;
    assert!(app.balance(other).await.is_ok());

    // Strings past the ledger's limit never reach the log: refused before proposing.
    let before = log_position(&c, 1).await;
    let send = SendPacketRequest { greeting: "恭".repeat(100), ..lucky_packet_from_no_device(u) };
    assert_eq!(code(app.send_packet(send).await), ErrorCode::InvalidArgument, "a 300-byte greeting");
    assert_eq!(log_position(&c, 1).await, before, "not one entry was appended for it");
    assert_eq!(app.balance(u).await.expect("balance").balance_cents, 10_000, "not one cent moved");

    // A grab's password is bounded at the boundary too (the ledger never looked at its size).
    let send = SendPacketRequest { kind: PacketKind::Password as i32, phrase: "open sesame".into(), ..lucky_packet_from_no_device(u) };
    let packet = PacketRef::from(&app.send_packet(send).await.expect("a packet"));
    let before = log_position(&c, 1).await;
    let grab = app.grab(new_request_id(), packet, other, &"x".repeat(10_000)).await;
    assert_eq!(code(grab), ErrorCode::InvalidArgument, "a 10,000-byte password");
    assert_eq!(log_position(&c, 1).await, before, "not one entry was appended for the grab");
    assert_eq!(app.balance(other).await.expect("balance").balance_cents, 0, "not one cent moved to the grabber");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_token_key_is_trusted_after_a_sighup_without_a_restart() {
    let (c, app) = started(Spec { routers: true, regions: vec!["shenzhen"], ..Spec::default() }).await;
    let u = c.topology.user_in_shard(1, 70);
    c.funded(&app, u, 1_000).await;
    // A login service's new key: refused until the routers are told of it.
    let other = SecurityDir::new(c.dir.path().join("new-login"));
    hongbao_auth::ensure_dev_pki(&other, &c.topology).expect("a new key");
    let pem = std::fs::read(other.dev_signing_key()).expect("new private key");
    let signer = DevSigner::from_pem(&pem, "rotated").expect("signer");
    let token = signer.mint(u, hongbao_tests::TEST_DEVICE, 600);
    let router = c.channel_as(&c.topology.routers[0].addr, &Identity::Service(Role::App));
    let read = || {
        let mut w = WalletClient::new(router.clone());
        let r = with_token(BalanceRequest { user: u, allow_stale: true, token_issued_s: 0 }, &token);
        async move { w.balance(r).await }
    };
    let s = read().await.expect_err("an unknown key");
    assert_eq!(hongbao_proto::detail_of(&s).code(), ErrorCode::Unauthenticated);
    let keys = SecurityDir::new(c.security_dir()).token_keys();
    std::fs::copy(other.token_keys().join("dev.pub.pem"), keys.join("rotated.pub.pem")).expect("install the new public key");
    c.signal_router("shenzhen", "HUP");
    let ok = hongbao_tests::eventually!(Duration::from_secs(5), read().await.is_ok());
    assert!(ok, "after SIGHUP the router trusts the new key");
    // The old key still works (both trusted during the rotation), and the router never restarted.
    assert!(app.balance(u).await.is_ok());
}

/// Every file under `root` with its bytes: "nothing changed" is these being equal.
fn files_under(root: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read folder") {
            let p = e.expect("folder entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).expect("read file"));
            }
        }
    }
    out
}

/// `hongbao --topology TOPOLOGY --security-dir DIR dev-ca`: (exit code, stdout, stderr).
fn dev_ca(topology: &std::path::Path, dir: &std::path::Path) -> (i32, String, String) {
    let out = std::process::Command::new(bin("hongbao"))
        .arg("--topology")
        .arg(topology)
        .arg("--security-dir")
        .arg(dir)
        .arg("dev-ca")
        .env_remove("HONGBAO_HOME")
        .env_remove("HONGBAO_SECURITY_DIR")
        .output()
        .expect("run hongbao dev-ca");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn dev_ca_refuses_a_folder_it_did_not_create_and_adds_nothing_to_it_while_it_keeps_filling_its_own() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let topology = hongbao_tests::repo_root().join("deploy/local-3x1.toml");
    // Its own folder: created, marked, and filled again on a second run.
    let dev = SecurityDir::new(tmp.path().join("dev"));
    let (code, out, err) = dev_ca(&topology, &dev.root);
    assert_eq!(code, 0, "{out}{err}");
    assert!(dev.dev_ca_marker().is_file() && dev.dev_signing_key().is_file(), "a new folder is dev-ca's");
    assert_eq!(dev_ca(&topology, &dev.root).0, 0, "its own folder again");

    // A production folder: the CA's certificate, node and router certificates, the challenge key
    // and the login service's public key; no CA key, no signing key, no marker.
    let prod = SecurityDir::new(tmp.path().join("prod"));
    std::fs::create_dir_all(prod.certs_dir()).expect("certs");
    std::fs::create_dir_all(prod.token_keys()).expect("token-keys");
    std::fs::copy(dev.ca_cert(), prod.ca_cert()).expect("ca.crt");
    for id in [Identity::Node(1), Identity::Router("shenzhen".into())] {
        std::fs::copy(dev.cert(&id), prod.cert(&id)).expect("cert");
        std::fs::copy(dev.key(&id), prod.key(&id)).expect("key");
    }
    std::fs::copy(dev.challenge_key(), prod.challenge_key()).expect("challenge.key");
    std::fs::copy(dev.token_keys().join("dev.pub.pem"), prod.token_keys().join("login-2026.pub.pem")).expect("login key");
    let before = files_under(&prod.root);
    let (code, out, err) = dev_ca(&topology, &prod.root);
    assert_eq!(code, 1, "refused: {out}{err}");
    assert!(
        err.contains(&prod.root.display().to_string()) && err.contains("did not create this folder"),
        "names the folder and why: {err}"
    );
    assert!(err.contains("nothing here was changed"), "{err}");
    assert_eq!(files_under(&prod.root), before, "not one file added or changed");
    for p in [prod.dev_signing_key(), prod.token_keys().join("dev.pub.pem"), prod.ca_key(), prod.dev_ca_marker()] {
        assert!(!p.exists(), "{} was added", p.display());
    }

    // A folder an earlier dev-ca made (no marker yet): recognised by its dev CA and dev key,
    // marked, and its files kept, so an old `.cluster/security` keeps working.
    std::fs::remove_file(dev.dev_ca_marker()).expect("unmark");
    let before = files_under(&dev.root);
    let (code, out, err) = dev_ca(&topology, &dev.root);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("earlier `hongbao dev-ca`") && dev.dev_ca_marker().is_file(), "{err}");
    let mut after = files_under(&dev.root);
    after.remove(&dev.dev_ca_marker());
    assert_eq!(after, before, "its CA and keys are kept");
}

/// Tokens of a login service's key (not the development key), for every user.
struct LoginService(DevSigner);
impl TokenSource for LoginService {
    fn token(&self, user: u64, device: Option<&str>) -> Result<String, String> {
        Ok(self.0.mint(user, device.unwrap_or(hongbao_tests::TEST_DEVICE), 600))
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_of_a_non_development_topology_refuses_dev_key_tokens_and_tokens_not_yet_valid_and_not_one_cent_moves() {
    let c = Cluster::start(Spec { routers: true, regions: vec!["shenzhen"], development: false, ..Spec::default() });
    c.wait_ready(Duration::from_secs(30)).await;
    assert!(!c.topology.development, "a production topology");
    let sec = SecurityDir::new(c.security_dir());
    let router_log = || std::fs::read_to_string(c.dir.path().join("router-shenzhen.log")).unwrap_or_default();
    // The harness's folder trusts dev.pub.pem: the router says at start that it refuses it.
    let warned = hongbao_tests::eventually!(
        Duration::from_secs(10),
        router_log().contains("dev.pub.pem is the development token key, but this is not a development cluster")
    );
    assert!(warned, "a start-up warning names the dev key:\n{}", router_log());

    // The login service's own key, installed and trusted after a SIGHUP.
    let login = SecurityDir::new(c.dir.path().join("login-service"));
    hongbao_auth::ensure_dev_pki(&login, &c.topology).expect("a key pair");
    let login_pem = std::fs::read(login.dev_signing_key()).expect("the login service's private key");
    let login_signer = || DevSigner::from_pem(&login_pem, "login-2026").expect("signer");
    std::fs::copy(login.token_keys().join("dev.pub.pem"), sec.token_keys().join("login-2026.pub.pem")).expect("install the key");
    c.signal_router("shenzhen", "HUP");
    let creds = || Credentials::load(&c.security_dir()).expect("certificates");
    let app = router_client_with(&c, creds().with_tokens(Arc::new(LoginService(login_signer()))));
    let (u, v) = (c.topology.user_in_shard(1, 80), c.topology.user_in_shard(1, 81));
    // UNKNOWN_USER once the token is accepted (the account is not open yet).
    let trusted = hongbao_tests::eventually!(
        Duration::from_secs(5),
        app.balance(u).await.map_err(|e| e.code()).err() == Some(ErrorCode::UnknownUser)
    );
    assert!(trusted, "the login service's key is trusted after SIGHUP");
    fund(&c, &app, &[(u, 50_000), (v, 0)]).await;
    let before = money(&c, &[u, v]).await;
    assert!(before.3, "the audit balances before");

    // A token of the development key for u, valid in every other way (the dev key trusts it).
    let dev_token = DevSigner::load(&sec).expect("the folder's dev key").mint(u, hongbao_tests::TEST_DEVICE, 600);
    let dev_keys = hongbao_auth::TokenKeys::load_dir(&sec.token_keys(), hongbao_auth::DevKey::Accepted).expect("keys");
    assert!(dev_keys.verify(&dev_token, now_s()).is_ok(), "a good token but for the cluster's rule");
    // A token of the login key whose nbf lies ten minutes ahead.
    let now = now_s();
    let later = login_signer().sign(&hongbao_auth::Claims {
        sub: u.to_string(),
        dev: hongbao_tests::TEST_DEVICE.into(),
        iat: now,
        exp: now + 1200,
        nbf: Some(now + 600),
        iss: hongbao_auth::ISSUER.into(),
        aud: hongbao_auth::AUDIENCE.into(),
    });
    let router = c.channel_as(&c.topology.routers[0].addr, &Identity::Service(Role::App));
    for (token, why) in [(&dev_token, "signed with the development key"), (&later, "token not yet valid")] {
        let transfer = pays(u, v, 10_000, TEST_PIN);
        let s = WalletClient::new(router.clone()).transfer(with_token(transfer, token)).await.expect_err("refused");
        assert_eq!((s.code(), hongbao_proto::detail_of(&s).code()), (tonic::Code::Unauthenticated, ErrorCode::Unauthenticated), "{s:?}");
        assert!(s.message().contains(why) && !s.message().contains(token.as_str()), "says why, never the token: {}", s.message());
        let withdraw =
            WithdrawRequest { request_id: new_request_id(), user: u, amount_cents: 10_000, pin: TEST_PIN.into(), ..Default::default() };
        let s = WalletClient::new(router.clone()).withdraw(with_token(withdraw, token)).await.expect_err("refused");
        assert_eq!(hongbao_proto::detail_of(&s).code(), ErrorCode::Unauthenticated, "{s:?}");
        let s = WalletClient::new(router.clone())
            .balance(with_token(BalanceRequest { user: u, allow_stale: true, token_issued_s: 0 }, token))
            .await;
        assert_eq!(hongbao_proto::detail_of(&s.expect_err("refused")).code(), ErrorCode::Unauthenticated, "nor read the wallet");
    }
    // The refusals were the router's token check (it logged them), and the same calls with the
    // login key's token go through (the route and the PIN were fine).
    assert!(router_log().contains("which this cluster refuses"), "the router logged the reason:\n{}", router_log());
    assert!(!router_log().contains(&dev_token), "the token is never logged");
    assert_eq!(money(&c, &[u, v]).await, before, "not one cent moved, and the audit still balances");
    assert!(app.balance(u).await.is_ok(), "u's own login token reads the wallet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notifier_writes_live_codes_to_a_file_only_its_owner_can_read_and_tightens_an_older_one() {
    use std::os::unix::fs::PermissionsExt;
    let (c, app) = started(Spec { routers: true, regions: vec!["shenzhen"], ..Spec::default() }).await;
    let (u, v) = (c.topology.user_in_shard(1, 90), c.topology.user_in_shard(1, 91));
    fund(&c, &app, &[(u, 100_000), (v, 0)]).await;
    let before = money(&c, &[u, v]).await;
    // A file an earlier notifier left, readable by everyone.
    let log = c.dir.path().join("notifications.log");
    std::fs::write(&log, "an older line\n").expect("old file");
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).expect("0644");
    // A payment of 150.00 from a new phone: a challenge, its code for the known device.
    let transfer = TransferRequest {
        request_id: new_request_id(),
        from_user: u,
        to_user: v,
        amount_cents: 15_000,
        device: "new-phone".into(),
        pin: TEST_PIN.into(),
        verification: None,
        token_issued_s: 0,
    };
    let err = app.transfer(transfer).await.expect_err("a challenge");
    assert_eq!(err.code(), ErrorCode::ChallengeRequired);
    let challenge = err.detail.challenge_id;
    let path = log.display().to_string();
    let out = c.cli(&["notifier", "--once", "--out", &path]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("notifications.log").permissions().mode() & 0o777;
    assert_eq!(mode(&log), 0o600, "tightened: it holds live codes");
    assert!(out.stderr.contains("made it 0600"), "{}", out.stderr);
    let text = std::fs::read_to_string(&log).expect("read");
    assert!(
        text.starts_with("an older line\n") && text.contains(&format!("challenge={challenge} code=")),
        "the code was delivered: {text}"
    );
    // A new file is created 0600 from the start.
    std::fs::remove_file(&log).expect("remove");
    let out = c.cli(&["notifier", "--once", "--out", &path]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(mode(&log), 0o600, "created private");
    assert_eq!(money(&c, &[u, v]).await, before, "the challenged payment moved nothing; the audit balances");
}

/// #28, item 4: packet ids count up (`(shard << 48) | seq`), so any signed-in user could grab or
/// look at every open packet in the cluster. Now a packet is reached only with its random
/// 64-bit key, which the sender gets and posts to the chat. On 3 × 3 a signed-in stranger who
/// knows the id, and counts through the ids around it, without the key: every grab and look is
/// answered UNKNOWN_PACKET (claiming the risk role's inspect flag too), the shard's log grows
/// by no entry for them, and not one cent moves. Risk and admin still look without the key, and
/// the chat member with the key grabs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_is_reached_only_with_its_key_and_counting_ids_adds_no_log_entry_on_3x3() {
    use hongbao_proto::v1::packets_client::PacketsClient;
    let (c, app) = started(Spec { nodes_per_region: 3, routers: true, ..Spec::default() }).await;
    let sender = c.topology.user_in_shard(1, 90);
    let member = c.topology.user_in_shard(2, 91);
    let stranger = c.topology.user_in_shard(3, 92);
    c.funded(&app, sender, 10_000).await;
    open(&app, &[member, stranger]).await;
    let p = packet(&app, sender, 1_000, 2).await;
    assert_ne!(p.key, 0, "a packet has a key");
    let shard = hongbao_topology::PacketId(p.id).shard();
    let before = money(&c, &[sender, member, stranger]).await;
    let log_before = log_position(&c, shard).await;

    // The stranger's raw calls, as the app sends them: the app's certificate, the stranger's token.
    let token = DevSigner::load(&SecurityDir::new(c.security_dir())).expect("signer").mint(stranger, TEST_DEVICE, 600);
    let router = c.channel_as(&c.topology.routers[0].addr, &Identity::Service(Role::App));
    let first = p.id - hongbao_topology::PacketId(p.id).seq(); // seq 0: never issued
    let mut refused = 0;
    for (id, key) in (first..first + 40).map(|id| (id, 0)).chain([(p.id, p.key ^ 1), (p.id, p.key.rotate_left(7))]) {
        let g = GrabRequest { request_id: new_request_id(), packet_id: id, packet_key: key, grabber: stranger, password: String::new() };
        let s = PacketsClient::new(router.clone()).grab(with_token(g, &token)).await.expect_err("no grab without the key");
        assert_eq!(hongbao_proto::detail_of(&s).code(), ErrorCode::UnknownPacket, "packet {id}: {s:?}");
        refused += 1;
    }
    for inspect in [false, true] {
        let show = ShowPacketRequest { packet_id: p.id, packet_key: 0, allow_stale: false, inspect };
        let s = PacketsClient::new(router.clone()).show(with_token(show, &token)).await.expect_err("no look without the key");
        assert_eq!(hongbao_proto::detail_of(&s).code(), ErrorCode::UnknownPacket, "inspect {inspect}: {s:?}");
    }
    assert_eq!(log_position(&c, shard).await, log_before, "{refused} refused grabs appended not one entry to the shard's log");
    nothing_moved(&c, &[sender, member, stranger], &before).await;

    // Risk and admin look by id alone; the member looks and grabs with the key.
    let risk = c.channel_as(&c.topology.routers[1].addr, &Identity::Service(Role::Risk));
    let show = ShowPacketRequest { packet_id: p.id, packet_key: 0, allow_stale: false, inspect: false };
    let seen = PacketsClient::new(risk).show(show).await.expect("risk looks by id alone").into_inner();
    assert_eq!((seen.sender, seen.remaining_count), (sender, 2));
    let admin = c.router_client("shanghai");
    assert_eq!(admin.show_packet(p.id).await.expect("admin looks by id").remaining_count, 2);
    assert_eq!(app.show_packet_as(Some(member), p).await.expect("the member looks with the key").remaining_count, 2);
    let got = app.grab(new_request_id(), p, member, "").await.expect("the member grabs with the key");
    assert!(got.amount_cents > 0);
    let after = money(&c, &[sender, member, stranger]).await;
    assert!(after.3, "the audit balances");
    assert_eq!(after.0[2], 0, "the stranger got nothing");
}

/// #28, items 4 and 9 (password packets): a password packet allowed unlimited phrase guesses,
/// and its phrase sat in clear in the Raft log and the state. Now one grabber's fifth wrong
/// phrase closes the packet to them (even the right phrase is then refused, so the answer stops
/// telling right from wrong), another grabber is not affected, and the phrase is in no file of
/// any node (its log, its RocksDB, its log lines) while the packet's greeting, sent in the same
/// request, is found there: the search looks where the phrase would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_wrong_phrases_close_a_password_packet_to_one_grabber_and_the_phrase_is_in_no_nodes_files() {
    let (mut c, app) = started(Spec { routers: true, ..Spec::default() }).await;
    let sender = c.topology.user_in_shard(1, 95);
    let guesser = c.topology.user_in_shard(2, 96);
    let member = c.topology.user_in_shard(3, 97);
    c.funded(&app, sender, 10_000).await;
    open(&app, &[guesser, member]).await;
    let phrase = format!("sesame-{:x}", rand::random::<u64>());
    let greeting = format!("greeting-{:x}", rand::random::<u64>());
    let sent = app
        .send_packet(SendPacketRequest {
            request_id: new_request_id(),
            sender,
            kind: PacketKind::Password as i32,
            total_cents: 2_000,
            count: 2,
            phrase: phrase.clone(),
            greeting: greeting.clone(),
            device: TEST_DEVICE.into(),
            pin: TEST_PIN.into(),
            ..Default::default()
        })
        .await
        .expect("a password packet");
    let p = PacketRef::from(&sent);
    let before = money(&c, &[sender, guesser, member]).await;
    for i in 0..5 {
        let wrong = app.grab(new_request_id(), p, guesser, &format!("guess-{i}")).await;
        assert_eq!(code(wrong), ErrorCode::WrongPassword, "guess {i}");
    }
    for phrase in [phrase.as_str(), "guess-6"] {
        assert_eq!(code(app.grab(new_request_id(), p, guesser, phrase).await), ErrorCode::PhraseTriesExhausted);
    }
    nothing_moved(&c, &[sender, guesser, member], &before).await;
    assert_eq!(code(app.grab(new_request_id(), p, member, "sesame").await), ErrorCode::WrongPassword);
    let got = app.grab(new_request_id(), p, member, &phrase).await.expect("another grabber, the right phrase");
    let after = money(&c, &[sender, guesser, member]).await;
    assert!(after.3, "the audit balances");
    assert_eq!(after.0[1], 0, "the guesser got nothing");

    // Killed, not stopped: a stop flushes RocksDB's memtables into compressed tables, while
    // after kill -9 the write-ahead logs still hold every write as it was made.
    let ids: Vec<u64> = c.topology.nodes.iter().map(|n| n.id).collect();
    for id in &ids {
        c.kill(*id);
    }
    let (needle, control) = (phrase.as_bytes(), greeting.as_bytes());
    let mut control_found = false;
    for id in ids {
        for (path, bytes) in files_under(&c.node_dir(id)) {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle), "the phrase is in {}", path.display());
            control_found |= bytes.windows(control.len()).any(|w| w == control);
        }
        assert!(!c.node_log(id).contains(&phrase), "the phrase is in node {id}'s log lines");
    }
    assert!(control_found, "the greeting sent beside the phrase is in some node's files (where the phrase would be)");
    assert!(got.amount_cents > 0);
}

/// #28, item 6 (fairness): one token that sends without waiting for answers could hold every
/// in-flight place a router gives a shard, and every other user got OVERLOADED. Now one user
/// holds at most `MAX_INFLIGHT_PER_USER` (32) of them. With the router's bound at 40 and shard
/// 1's commits slowed (its leader's messages delayed 250 ms), a bot's 60 grabs at once: 32 wait in
/// flight, the rest are refused RATE_LIMITED for being in flight (not for the rate), and a grab
/// by another user sent meanwhile is served. The bot's grabs of one packet take one share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_holds_at_most_32_of_a_routers_in_flight_places_and_another_user_is_still_served() {
    use hongbao_proto::v1::packets_client::PacketsClient;
    let (c, app) = started(Spec { routers: true, router_max_inflight: Some(40), ..Spec::default() }).await;
    let bot = c.topology.user_in_shard(2, 110);
    let honest = c.topology.user_in_shard(3, 111);
    let sender = c.topology.user_in_shard(1, 112);
    fund(&c, &app, &[(bot, 0), (honest, 0), (sender, 10_000)]).await;
    let p = packet(&app, sender, 1_000, 10).await;
    let leader = c.leaders().await[&1];
    // 250 ms: commits wait that long, and heartbeats still come within the election timeout.
    c.set_faults(leader, Faults { delay_ms: 250, ..Faults::default() }).await.expect("slow shard 1's commits");

    let router = c.channel_as(&c.topology.routers[0].addr, &Identity::Service(Role::App));
    let signer = DevSigner::load(&SecurityDir::new(c.security_dir())).expect("signer");
    let grab = |user: u64| {
        let token = signer.mint(user, TEST_DEVICE, 600);
        let g = GrabRequest { request_id: new_request_id(), packet_id: p.id, packet_key: p.key, grabber: user, password: String::new() };
        let mut pc = PacketsClient::new(router.clone());
        async move { pc.grab(with_token(g, &token)).await }
    };
    let flood = futures::future::join_all((0..60).map(|_| grab(bot)));
    let late = async {
        tokio::time::sleep(Duration::from_millis(80)).await; // the bot's grabs are in flight
        grab(honest).await
    };
    let (flood, late) = tokio::join!(flood, late);
    c.set_faults(leader, Faults::default()).await.expect("heal");
    let in_flight_refusals = flood
        .iter()
        .filter_map(|r| r.as_ref().err())
        .filter(|s| hongbao_proto::detail_of(s).code() == ErrorCode::RateLimited && s.message().contains("in flight"))
        .count();
    assert!(in_flight_refusals >= 60 - 32, "{in_flight_refusals} of the bot's 60 grabs refused for being in flight");
    let late = late.expect("another user's grab is served while the bot's are in flight").into_inner();
    assert!(late.amount_cents > 0);
    let bot_shares = flood.iter().filter(|r| r.is_ok()).count();
    assert!(bot_shares <= 1, "one user takes one share of a packet: {bot_shares}");
    // Exactly the claimed shares reach the grabbers' shards (by the relay), nothing else moved.
    let view = c.node_client().show_packet(p.id).await.expect("the packet");
    let claimed: u64 = view.claims.iter().map(|cl| cl.amount_cents).sum();
    assert_eq!(view.claims.len(), 1 + bot_shares, "{view:?}");
    let mut after;
    let arrived = hongbao_tests::eventually!(Duration::from_secs(10), {
        after = money(&c, &[bot, honest, sender]).await;
        after.3 && after.0[0] + after.0[1] == claimed
    });
    assert!(arrived, "the shares never arrived: {after:?}");
    assert_eq!((after.0[1], after.0[2]), (late.amount_cents, 9_000), "the sender paid the packet, once");
}

/// #28, item 9: a token alone set the first PIN of a wallet that already held money, so a stolen
/// session chose the PIN that spends it. Now the first PIN of a funded wallet needs the code sent
/// to its known device: the token alone is refused CHALLENGE_REQUIRED and no PIN is set (a
/// transfer with the PIN the thief chose finds PIN_NOT_SET), the notifier sees the challenge for
/// the known device, and the code sets the PIN. Not one cent moved meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_pin_of_a_funded_wallet_needs_the_code_sent_to_its_known_device() {
    let (c, app) = started(Spec { routers: true, ..Spec::default() }).await;
    let [owner, thief_to] = users_in_shard(&c, 1, 120);
    app.open_account(owner, TEST_DEVICE).await.expect("open");
    c.funded(&app, thief_to, 0).await;
    app.top_up(new_request_id(), owner, 30_000).await.expect("a wallet holding money, without a PIN");
    let before = money(&c, &[owner, thief_to]).await;

    let err = app.set_pin(new_request_id(), owner, "246802").await.expect_err("a token alone");
    assert_eq!(err.code(), ErrorCode::ChallengeRequired, "{err}");
    let challenge = err.detail.challenge_id;
    let pay = TransferRequest {
        request_id: new_request_id(),
        from_user: owner,
        to_user: thief_to,
        amount_cents: 30_000,
        device: TEST_DEVICE.into(),
        pin: "246802".into(),
        ..Default::default()
    };
    assert_eq!(code(app.transfer(pay).await), ErrorCode::PinNotSet, "the PIN the token tried to set is not set");
    nothing_moved(&c, &[owner, thief_to], &before).await;

    let notifier = c.router_client("shenzhen");
    let mut note;
    hongbao_tests::eventually!(Duration::from_secs(3), {
        let notes = notifier.poll_notifications(1, 0, 256).await.expect("notifier polls");
        note = notes.notifications.into_iter().find(|n| n.challenge_id == challenge);
        note.is_some()
    });
    let note = note.expect("a notification for the challenge");
    assert_eq!((note.user, note.device.as_str(), note.operation.as_str()), (owner, TEST_DEVICE, "set_pin"));
    let wrong = Verification { challenge_id: challenge, code: (note.code + 1) % 1_000_000 };
    assert_eq!(code(app.set_pin_verified(new_request_id(), owner, TEST_PIN, Some(wrong)).await), ErrorCode::ChallengeInvalid);
    let right = Verification { challenge_id: challenge, code: note.code };
    app.set_pin_verified(new_request_id(), owner, TEST_PIN, Some(right)).await.expect("the code from the known device sets the PIN");
    nothing_moved(&c, &[owner, thief_to], &before).await;
    let pay = TransferRequest { device: TEST_DEVICE.into(), ..pays(owner, thief_to, 1_00, TEST_PIN) };
    app.transfer(pay).await.expect("the owner pays with the PIN they set");
}

/// A forwarded proposal of `cmd` on `shard`, sent to node `at` with node `from`'s own key and
/// name: what one node's key can send any node. Returns the refusal.
async fn forged_proposal(c: &Cluster, at: u64, from: u64, shard: u32, cmd: hongbao_ledger::Command) -> tonic::Status {
    let req = hongbao_ledger::Request { id: hongbao_ledger::RequestId([0xa5; 16]), time_ms: 0, cmd };
    let m = RaftMessage { shard, from_node: from, payload: bincode::serialize(&req).expect("encode"), sent_ms: 0 };
    let ch = c.channel_as(&c.node_addr(at), &Identity::Node(from));
    RaftTransportClient::new(ch).propose(m).await.expect_err("a forged proposal must be refused")
}

/// #28, item 3 (slot moves): any node's key could forward a slot move's steps to any shard's
/// leader; one forged `MoveSlotOut` froze a slot, and 10 s later the source leader's finisher
/// moved it wherever the forgery said. On 3 × 3, node 3 (a replica of shard 3, which would gain
/// the slot) forges each step of a move of a shard-2 slot to shard 3 at the leaders of shards 2
/// and 3: each is refused PERMISSION_DENIED by the slot-move rule (the map records no such
/// move). After the finisher's wait the slot still serves (an account opens in it), the wallet
/// is still shard 2's, the map is unchanged and not one cent moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_key_cannot_forge_a_slot_moves_steps_so_the_slot_neither_freezes_nor_moves_on_3x3() {
    use hongbao_ledger::Command;
    let Funded3x3 { c, app, users, before } = funded_3x3(400).await;
    let (admin, map_before) = admin_and_map(&c).await;
    let map_before = map_before.version;
    let victim = users[1];
    let slot = c.topology.slot_of(victim);
    assert_eq!(c.topology.owner_of_slot(slot), Some(2), "the victim's slot is shard 2's");
    let leaders = c.leaders().await;
    let attacker = 3;
    assert!(c.topology.shard(3).unwrap().replicas.contains(&attacker) && !c.topology.shard(2).unwrap().replicas.contains(&attacker));
    let slots = c.topology.slots;
    for (at, shard, cmd) in [
        (leaders[&2], 2, Command::MoveSlotOut { slot, slots, to: 3, max_users: 256 }),
        (leaders[&3], 3, Command::MoveSlotIn { slot, slots, from: 2 }),
        (leaders[&3], 3, Command::FinishSlotIn { slot, from: 2, through_seq: 0 }),
    ] {
        let s = forged_proposal(&c, at, attacker, shard, cmd.clone()).await;
        assert_eq!(hongbao_proto::detail_of(&s).code(), ErrorCode::PermissionDenied, "{cmd:?}: {s:?}");
        assert!(s.message().contains("records no such move"), "refused by the slot-move rule at the shard's leader: {s:?}");
    }
    // A frozen slot was finished by the source's leader after RESUME_AFTER (10 s).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let newcomer = victim + slots as u64 * 7;
    assert_eq!(c.topology.slot_of(newcomer), slot);
    app.open_account(newcomer, TEST_DEVICE).await.expect("the slot is not frozen: an account opens in it");
    let b = app.balance(victim).await.expect("balance");
    assert_eq!((b.shard, b.balance_cents), (2, 10_000), "the wallet is still shard 2's, whole");
    let t = map_unchanged(&admin, map_before).await;
    assert_eq!((t.owner_of_slot(slot), t.moving(slot)), (Some(2), None), "the slot is shard 2's and moves nowhere");
    nothing_moved(&c, &users, &before).await;
}

/// #28, item 3 (drain marks and maps): any node's key could forward `SetDrained` to any shard's
/// leader and `SetClusterMap` to the meta shard's. On 3 × 3, node 3 (no meta replica) and a
/// follower of the meta shard forge a drain of Shanghai at every shard's leader and a next map
/// version that gives every slot to shard 3 at the meta leader: each is refused
/// PERMISSION_DENIED by the proposal rule. No region is drained, every leader stays, the map is
/// unchanged and not one cent moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_key_cannot_forward_a_drain_mark_or_a_cluster_map_and_nothing_changes_on_3x3() {
    use hongbao_ledger::Command;
    let Funded3x3 { c, app, users, before } = funded_3x3(500).await;
    let (admin, map_before) = admin_and_map(&c).await;
    let leaders = c.leaders().await;
    let meta = c.topology.meta_shard();
    let meta_follower = *c.topology.shard(meta).unwrap().replicas.iter().find(|n| **n != leaders[&meta]).expect("a meta follower");
    assert!(!c.topology.shard(meta).unwrap().replicas.contains(&3), "node 3 holds no meta replica");
    let mut forged_map = hongbao_topology::Topology::parse(&map_before.toml).expect("map");
    forged_map.version += 1;
    for s in forged_map.shards.iter_mut() {
        s.slots = if s.id == 3 { vec![[0, forged_map.slots]] } else { vec![] };
    }
    let forged_map = hongbao_topology::Topology::parse(&forged_map.to_toml()).expect("the forged map is a valid map");
    for attacker in [3, meta_follower] {
        for s in &c.topology.shards {
            let drain = Command::SetDrained { region: "shanghai".into(), drained: true };
            let r = forged_proposal(&c, leaders[&s.id], attacker, s.id, drain).await;
            assert_eq!(hongbao_proto::detail_of(&r).code(), ErrorCode::PermissionDenied, "{r:?}");
            assert!(r.message().contains("may not propose SetDrained"), "refused by the proposal rule: {r:?}");
        }
        let map = Command::SetClusterMap { version: forged_map.version, map: forged_map.to_toml().into_bytes() };
        let r = forged_proposal(&c, leaders[&meta], attacker, meta, map).await;
        assert_eq!(hongbao_proto::detail_of(&r).code(), ErrorCode::PermissionDenied, "{r:?}");
        assert!(r.message().contains("may not propose SetClusterMap"), "refused by the proposal rule: {r:?}");
    }
    // Placement acts on a drain within a second or two.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st = admin.status().await.expect("status");
    assert!(st.regions.iter().all(|r| !r.drained), "no region is drained: {:?}", st.regions);
    assert_eq!(c.leaders().await, leaders, "every leader stayed");
    let map = admin.get_map().await.expect("map");
    assert_eq!((map.version, &map.toml), (map_before.version, &map_before.toml), "the map did not change");
    for (u, s) in users.iter().zip(&c.topology.shards) {
        assert_eq!(app.balance(*u).await.expect("balance").shard, s.id, "user {u} is still served by shard {}", s.id);
    }
    nothing_moved(&c, &users, &before).await;
}

/// A Cluster service that answers `GetMap` with one map (counting the calls) and nothing else.
struct RogueMap {
    map: ClusterMap,
    asked: Arc<std::sync::atomic::AtomicUsize>,
}

type Res<T> = Result<tonic::Response<T>, tonic::Status>;
fn nope<T>() -> Res<T> {
    Err(tonic::Status::unimplemented("rogue"))
}

#[tonic::async_trait]
impl hongbao_proto::v1::cluster_server::Cluster for RogueMap {
    async fn get_map(&self, _: tonic::Request<GetMapRequest>) -> Res<ClusterMap> {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(tonic::Response::new(self.map.clone()))
    }
    async fn status(&self, _: tonic::Request<StatusRequest>) -> Res<StatusReply> {
        nope()
    }
    async fn audit(&self, _: tonic::Request<AuditRequest>) -> Res<AuditReply> {
        nope()
    }
    async fn shard_totals_of(&self, _: tonic::Request<ShardTotalsRequest>) -> Res<ShardTotals> {
        nope()
    }
    async fn transfer_leader(&self, _: tonic::Request<TransferLeaderRequest>) -> Res<TransferLeaderReply> {
        nope()
    }
    async fn drain(&self, _: tonic::Request<DrainRequest>) -> Res<DrainReply> {
        nope()
    }
    async fn undrain(&self, _: tonic::Request<DrainRequest>) -> Res<DrainReply> {
        nope()
    }
    async fn add_node(&self, _: tonic::Request<AddNodeRequest>) -> Res<MembershipReply> {
        nope()
    }
    async fn remove_node(&self, _: tonic::Request<RemoveNodeRequest>) -> Res<MembershipReply> {
        nope()
    }
    async fn add_replica(&self, _: tonic::Request<ReplicaChangeRequest>) -> Res<MembershipReply> {
        nope()
    }
    async fn remove_replica(&self, _: tonic::Request<ReplicaChangeRequest>) -> Res<MembershipReply> {
        nope()
    }
    async fn add_shard(&self, _: tonic::Request<AddShardRequest>) -> Res<MembershipReply> {
        nope()
    }
    async fn move_slot(&self, _: tonic::Request<MoveSlotRequest>) -> Res<MoveSlotReply> {
        nope()
    }
    async fn slot_load(&self, _: tonic::Request<SlotLoadRequest>) -> Res<SlotLoadReply> {
        nope()
    }
}

/// #28, item 3 (maps by version): nodes and routers installed the highest-versioned map any node
/// answered, so a process with one node's key at that node's address could hand them a map of
/// its own. On 3 × 3, node 3 (no meta replica) is replaced by a rogue server with node 3's key
/// that answers `GetMap` with a valid map at version 10⁹ giving every slot to shard 3. Node 2
/// and the Shenzhen router restart (both read the map at start) and run for several map rounds:
/// node 2 follows the real map version, the router still sends every user to the shard holding
/// the wallet, no node or router even asks the rogue for a map (it is no meta replica), and not
/// one cent moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_node_answering_map_fetches_with_a_huge_version_is_installed_by_no_node_or_router_on_3x3() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let Funded3x3 { mut c, app: _app, users, before } = funded_3x3(600).await;
    let (_admin, real) = admin_and_map(&c).await;
    let real = real.version;
    assert!(!c.topology.shard(c.topology.meta_shard()).unwrap().replicas.contains(&3), "node 3 holds no meta replica");

    let mut forged = c.topology.clone();
    forged.version = 1_000_000_000;
    for s in forged.shards.iter_mut() {
        s.slots = if s.id == 3 { vec![[0, forged.slots]] } else { vec![] };
    }
    let forged = hongbao_topology::Topology::parse(&forged.to_toml()).expect("the forged map is a valid map");
    let asked = Arc::new(AtomicUsize::new(0));
    let rogue = RogueMap { map: ClusterMap { version: forged.version, toml: forged.to_toml() }, asked: asked.clone() };
    let addr = c.node_addr(3);
    c.kill(3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tls = SecurityDir::new(c.security_dir()).server_tls(&Identity::Node(3)).expect("node 3's server tls");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .tls_config(tls)
        .expect("tls")
        .add_service(hongbao_proto::v1::cluster_server::ClusterServer::new(rogue))
        .serve_with_shutdown(addr.parse().expect("addr"), async {
            let _ = stopped.await;
        });
    let task = tokio::spawn(server);
    // Both read the map at start, and then every round.
    c.kill(2);
    c.start_node(2);
    c.kill_router("shenzhen");
    c.start_router("shenzhen");
    tokio::time::sleep(Duration::from_secs(8)).await;

    let shenzhen = Client::new(vec![c.topology.routers[0].addr.clone()], Arc::new(c.credentials())).with_deadline(Duration::from_secs(5));
    assert_eq!(c.topology.routers[0].region, "shenzhen");
    for (u, s) in users.iter().zip(&c.topology.shards) {
        let b = shenzhen.balance(*u).await.unwrap_or_else(|e| panic!("balance of {u} through the restarted router: {e}"));
        assert_eq!((b.shard, b.balance_cents), (s.id, 10_000), "the router sends user {u} to shard {}, whole", s.id);
    }
    let version = c.node_metric(2, "hongbao_cluster_map_version").await.expect("node 2's metrics");
    assert_eq!(version as u64, real, "node 2 follows the real map version, not the rogue's");
    assert_eq!(asked.load(Ordering::Relaxed), 0, "no node or router asked the rogue (no meta replica) for a map");
    let _ = stop.send(());
    let _ = task.await;
    nothing_moved(&c, &users, &before).await;
}

/// #28, item 9 (revocation): a user's token stayed good until it expired, so a stolen session
/// could not be ended. Now risk or admin revokes every token the user was issued until now: the
/// old token is refused UNAUTHENTICATED by the nodes of the user's shard for reads and payments
/// (through any router), a token issued afterwards works, and not one cent moved with the old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_for_reads_and_payments_and_a_new_one_works() {
    let (c, app) = started(Spec { routers: true, ..Spec::default() }).await;
    let [u, v] = users_in_shard(&c, 2, 130);
    fund(&c, &app, &[(u, 50_000), (v, 0)]).await;
    let signer = DevSigner::load(&SecurityDir::new(c.security_dir())).expect("signer");
    let stolen = signer.mint(u, TEST_DEVICE, 3600);
    let balance = |router: usize, token: String| {
        let ch = c.channel_as(&c.topology.routers[router].addr, &Identity::Service(Role::App));
        async move {
            let req = BalanceRequest { user: u, allow_stale: false, token_issued_s: 0 };
            WalletClient::new(ch).balance(with_token(req, &token)).await
        }
    };
    let pay = |token: String| {
        let ch = c.channel_as(&c.topology.routers[1].addr, &Identity::Service(Role::App));
        async move {
            let t = TransferRequest { device: TEST_DEVICE.into(), ..pays(u, v, 10_000, TEST_PIN) };
            WalletClient::new(ch).transfer(with_token(t, &token)).await
        }
    };
    balance(0, stolen.clone()).await.expect("the token works before the revocation");
    tokio::time::sleep(Duration::from_millis(1_100)).await; // token times are whole seconds
    let risk = c.router_client("shanghai");
    risk.revoke_tokens(u).await.expect("risk revokes the user's tokens");
    let before = money(&c, &[u, v]).await;
    let revoked = |s: &tonic::Status| hongbao_proto::detail_of(s).code() == ErrorCode::Unauthenticated && s.message().contains("revoked");
    for router in 0..3 {
        let s = balance(router, stolen.clone()).await.expect_err("a revoked token reads nothing");
        assert!(revoked(&s), "router {router}: {s:?}");
    }
    let s = pay(stolen.clone()).await.expect_err("a revoked token pays nothing");
    assert!(revoked(&s), "{s:?}");
    nothing_moved(&c, &[u, v], &before).await;
    // The app's own sign-in, as routers and nodes see it: a token issued after the revocation.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let fresh = signer.mint(u, TEST_DEVICE, 3600);
    assert_eq!(balance(2, fresh.clone()).await.expect("a new token reads").into_inner().balance_cents, 50_000);
    pay(fresh).await.expect("a new token pays");
    assert_eq!(money(&c, &[u, v]).await.0, vec![40_000, 10_000]);
}
