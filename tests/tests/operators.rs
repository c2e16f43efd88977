//! What operators and client developers expect of a gRPC service (#15), checked the way their
//! tools see it: `grpc.health.v1.Health` on nodes and routers with a status that follows the
//! cluster (leaders, drain, shutdown), server reflection, and errors whose
//! `grpc-status-details-bin` is a standard `google.rpc.Status`, read here with generic prost
//! types only (not `hongbao_proto::detail_of`).

use hongbao_auth::Role;
use hongbao_client::{new_request_id, PacketRef};
use hongbao_proto::v1;
use hongbao_tests::grpc::with_token;
use hongbao_tests::{eventually, lucky_packet, Cluster, Spec, TEST_DEVICE};
use prost::Message;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const READY: Duration = Duration::from_secs(30);

/// One `Health.Check` of `service` ("" = the whole server).
async fn check(ch: &Channel, service: &str) -> Result<ServingStatus, tonic::Status> {
    let req = HealthCheckRequest { service: service.to_string() };
    let reply = tokio::time::timeout(Duration::from_secs(2), HealthClient::new(ch.clone()).check(req))
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("health check timed out"))??;
    Ok(reply.into_inner().status())
}

/// Polls `service` on `addr` until it reports `want`; panics with the last answer after `within`.
async fn wait_status(c: &Cluster, addr: &str, service: &str, want: ServingStatus, within: Duration) -> Duration {
    let ch = c.channel_as_role(addr, Role::Admin);
    let start = Instant::now();
    let mut got;
    let reached = eventually!(within, {
        got = check(&ch, service).await;
        matches!(&got, Ok(s) if *s == want)
    });
    assert!(reached, "{addr} {service:?}: wanted {want:?} within {within:?}, last {got:?}");
    start.elapsed()
}

const NODE_API: [&str; 4] = [
    v1::wallet_server::SERVICE_NAME,
    v1::packets_server::SERVICE_NAME,
    v1::coalesced_server::SERVICE_NAME,
    v1::notifier_server::SERVICE_NAME,
];
const ROUTER_API: [&str; 3] = [v1::wallet_server::SERVICE_NAME, v1::packets_server::SERVICE_NAME, v1::notifier_server::SERVICE_NAME];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_and_router_of_a_running_cluster_reports_serving_per_service() {
    let c = Cluster::start(Spec { routers: true, ..Spec::default() });
    c.wait_ready(READY).await;
    let serving = ServingStatus::Serving;
    for n in &c.topology.nodes {
        wait_status(&c, &n.addr, "", serving, Duration::from_secs(10)).await;
        let ch = c.channel_as_role(&n.addr, Role::Admin);
        for s in NODE_API.iter().chain(&[v1::raft_transport_server::SERVICE_NAME, v1::cluster_server::SERVICE_NAME]) {
            assert_eq!(check(&ch, s).await.expect("a registered service"), serving, "node {} {s}", n.id);
        }
        let unknown = check(&ch, "hongbao.v1.NoSuchService").await.expect_err("not registered");
        assert_eq!(unknown.code(), tonic::Code::NotFound, "the protocol's answer for an unknown service");
    }
    for r in &c.topology.routers {
        wait_status(&c, &r.addr, "", serving, Duration::from_secs(10)).await;
        // Any service certificate may ask (a load balancer's probe has one of its own).
        let ch = c.channel_as_role(&r.addr, Role::App);
        for s in ROUTER_API.iter().chain(&[v1::cluster_server::SERVICE_NAME]) {
            assert_eq!(check(&ch, s).await.expect("a registered service"), serving, "router {} {s}", r.region);
        }
        let not_here = check(&ch, v1::raft_transport_server::SERVICE_NAME).await.expect_err("routers serve no Raft");
        assert_eq!(not_here.code(), tonic::Code::NotFound);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_not_serving_while_its_region_is_drained_and_serving_again_after_undrain() {
    let c = Cluster::start(Spec::default());
    c.wait_ready(READY).await;
    let drained = c.topology.node(1).expect("node 1").clone();
    let other = c.topology.node(2).expect("node 2").addr.clone();
    wait_status(&c, &drained.addr, "", ServingStatus::Serving, Duration::from_secs(10)).await;
    wait_status(&c, &other, "", ServingStatus::Serving, Duration::from_secs(10)).await;

    let admin = c.node_client();
    admin.drain(&drained.region).await.expect("drain");
    let took = wait_status(&c, &drained.addr, "", ServingStatus::NotServing, Duration::from_secs(3)).await;
    println!("node {} NOT_SERVING {took:?} after its region's drain", drained.id);
    let ch = c.channel_as_role(&drained.addr, Role::Admin);
    for s in NODE_API {
        assert_eq!(check(&ch, s).await.expect("registered"), ServingStatus::NotServing, "{s} while drained");
    }
    // Replication and admin go on in a drained region (the undrain below goes through it).
    for s in [v1::raft_transport_server::SERVICE_NAME, v1::cluster_server::SERVICE_NAME] {
        assert_eq!(check(&ch, s).await.expect("registered"), ServingStatus::Serving, "{s} while drained");
    }
    assert_eq!(
        check(&c.channel_as_role(&other, Role::Admin), "").await.expect("registered"),
        ServingStatus::Serving,
        "other regions serve on"
    );

    admin.undrain(&drained.region).await.expect("undrain");
    let took = wait_status(&c, &drained.addr, "", ServingStatus::Serving, Duration::from_secs(3)).await;
    println!("node {} SERVING again {took:?} after the undrain", drained.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_majority_the_survivor_and_every_router_turn_not_serving_and_recover_with_it() {
    let mut c = Cluster::start(Spec { routers: true, ..Spec::default() });
    c.wait_ready(READY).await;
    let survivor = c.node_addr(1);
    let router = c.topology.routers[0].addr.clone();
    wait_status(&c, &survivor, "", ServingStatus::Serving, Duration::from_secs(10)).await;
    wait_status(&c, &router, "", ServingStatus::Serving, Duration::from_secs(10)).await;

    // Every shard has its replicas on nodes 1, 2, 3: two gone, no shard has a leader any more,
    // whichever node led it (a leader cut off from its followers keeps claiming the shard).
    c.kill(2);
    c.kill(3);
    let took = wait_status(&c, &survivor, "", ServingStatus::NotServing, Duration::from_secs(6)).await;
    println!("survivor NOT_SERVING {took:?} after losing its majority");
    wait_status(&c, &router, "", ServingStatus::NotServing, Duration::from_secs(6)).await;
    let ch = c.channel_as_role(&survivor, Role::Admin);
    assert_eq!(check(&ch, v1::wallet_server::SERVICE_NAME).await.expect("registered"), ServingStatus::NotServing);
    assert_eq!(check(&ch, v1::raft_transport_server::SERVICE_NAME).await.expect("registered"), ServingStatus::Serving, "elections need it");
    // The router's admin service still reaches a node.
    let rch = c.channel_as_role(&router, Role::Admin);
    assert_eq!(check(&rch, v1::cluster_server::SERVICE_NAME).await.expect("registered"), ServingStatus::Serving);

    c.start_node(2);
    c.start_node(3);
    let took = wait_status(&c, &survivor, "", ServingStatus::Serving, Duration::from_secs(20)).await;
    println!("survivor SERVING again {took:?} after the restarts");
    wait_status(&c, &router, "", ServingStatus::Serving, Duration::from_secs(10)).await;
}

/// SIGTERM: a Watch stream sees NOT_SERVING, then ends, and the node exits (no open Watch holds
/// its graceful shutdown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_asked_to_stop_reports_not_serving_to_its_watchers_first() {
    let mut c = Cluster::start(Spec::default());
    c.wait_ready(READY).await;
    let addr = c.node_addr(3);
    wait_status(&c, &addr, "", ServingStatus::Serving, Duration::from_secs(10)).await;
    let ch = c.channel_as_role(&addr, Role::Admin);
    let mut watch = HealthClient::new(ch).watch(HealthCheckRequest { service: String::new() }).await.expect("watch").into_inner();
    let first = watch.message().await.expect("a status").expect("the current status");
    assert_eq!(first.status(), ServingStatus::Serving);

    c.signal(3, "TERM");
    let mut seen = vec![];
    let start = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), watch.message()).await {
            Ok(Ok(Some(m))) => seen.push(m.status()),
            Ok(Ok(None)) | Ok(Err(_)) => break,
            Err(_) => panic!("the Watch stream neither changed nor ended within 10 s of SIGTERM: {seen:?}"),
        }
    }
    assert_eq!(seen, vec![ServingStatus::NotServing], "one change, then the stream ended ({:?})", start.elapsed());
    // The node exits on its own (`stop` waits up to 10 s for that, then kills it).
    let stopping = Instant::now();
    c.stop(3);
    assert!(stopping.elapsed() < Duration::from_secs(8), "the node took {:?} to exit after SIGTERM", stopping.elapsed() + start.elapsed());
}

/// Lists the services a server reflects, over reflection v1 (what current grpcurl speaks).
async fn list_services(ch: Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let req = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
    let mut replies =
        ServerReflectionClient::new(ch).server_reflection_info(tokio_stream::iter([req])).await.expect("reflection").into_inner();
    let reply = replies.message().await.expect("a reply").expect("one reply");
    match reply.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => l.service.into_iter().map(|s| s.name).collect(),
        other => panic!("not a service list: {other:?}"),
    }
}

/// The file descriptor defining `symbol`, over reflection v1alpha (older grpcurl).
async fn file_of_symbol_v1alpha(ch: Channel, symbol: &str) -> prost_types::FileDescriptorProto {
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    let req = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())) };
    let mut replies =
        ServerReflectionClient::new(ch).server_reflection_info(tokio_stream::iter([req])).await.expect("reflection").into_inner();
    let reply = replies.message().await.expect("a reply").expect("one reply");
    match reply.message_response {
        Some(MessageResponse::FileDescriptorResponse(f)) => {
            prost_types::FileDescriptorProto::decode(f.file_descriptor_proto[0].as_slice()).expect("a file descriptor")
        }
        other => panic!("no descriptor for {symbol}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_exactly_the_services_each_process_serves() {
    let c = Cluster::start(Spec { routers: true, ..Spec::default() });
    c.wait_ready(READY).await;
    let common = ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", v1::cluster_server::SERVICE_NAME];
    for n in &c.topology.nodes {
        let listed = list_services(c.channel_as_role(&n.addr, Role::Admin)).await;
        for s in NODE_API.iter().chain(&common).chain(&[v1::raft_transport_server::SERVICE_NAME]) {
            assert!(listed.iter().any(|l| l == s), "node {} does not list {s}: {listed:?}", n.id);
        }
    }
    for r in &c.topology.routers {
        let listed = list_services(c.channel_as_role(&r.addr, Role::App)).await;
        for s in ROUTER_API.iter().chain(&common) {
            assert!(listed.iter().any(|l| l == s), "router {} does not list {s}: {listed:?}", r.region);
        }
        for s in [v1::raft_transport_server::SERVICE_NAME, v1::coalesced_server::SERVICE_NAME, "hongbao.v1.FaultInjection"] {
            assert!(!listed.iter().any(|l| l == s), "router {} lists {s}, which it does not serve: {listed:?}", r.region);
        }
    }
    // What `grpcurl describe hongbao.v1.Packets` needs: the file with the service and its methods.
    let file = file_of_symbol_v1alpha(c.channel_as_role(&c.topology.routers[0].addr, Role::App), v1::packets_server::SERVICE_NAME).await;
    assert_eq!(file.name(), "hongbao/v1/api.proto");
    let packets = file.service.iter().find(|s| s.name() == "Packets").expect("the Packets service");
    assert!(packets.method.iter().any(|m| m.name() == "Grab"), "{packets:?}");
    // And the types inside an error's details, so grpcurl can print them.
    let node = c.channel_as_role(&c.node_addr(1), Role::Admin);
    let file = file_of_symbol_v1alpha(node.clone(), "google.rpc.ErrorInfo").await;
    assert!(file.message_type.iter().any(|m| m.name() == "RetryInfo"), "{:?}", file.name());
    let file = file_of_symbol_v1alpha(node, "hongbao.v1.ErrorDetail").await;
    assert_eq!(file.name(), "hongbao/v1/api.proto");
}

/// `google.rpc.Status`, `google.rpc.ErrorInfo` and `google.protobuf.Any` as any generic gRPC
/// client has them (grpc-go's `status.FromError`, Python's `grpc_status`): declared here from
/// the standard protos, nothing of hongbao's.
mod google_rpc {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<prost_types::Any>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ErrorInfo {
        #[prost(string, tag = "1")]
        pub reason: String,
        #[prost(string, tag = "2")]
        pub domain: String,
        #[prost(map = "string, string", tag = "3")]
        pub metadata: std::collections::HashMap<String, String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        pub retry_delay: Option<prost_types::Duration>,
    }
}

/// Reads a failed call's trailer as a generic client does and asserts it says `grpc`, with the
/// ErrorDetail `code` and the ErrorInfo `reason`; returns the rpc status.
fn generic_read(s: &tonic::Status, grpc: tonic::Code, code: v1::ErrorCode, reason: &str) -> google_rpc::Status {
    assert_eq!(s.code(), grpc, "{s:?}");
    let rpc = google_rpc::Status::decode(s.details()).unwrap_or_else(|e| panic!("trailer is no google.rpc.Status ({e}): {s:?}"));
    assert_eq!(rpc.code, s.code() as i32, "the trailer's code is the call's: {s:?}");
    assert_eq!(rpc.message, s.message(), "the trailer's message is the call's");
    let any = |url: &str| rpc.details.iter().find(|a| a.type_url == url).map(|a| a.value.clone());
    let detail = any("type.googleapis.com/hongbao.v1.ErrorDetail").unwrap_or_else(|| panic!("no ErrorDetail Any in {rpc:?}"));
    let detail = v1::ErrorDetail::decode(detail.as_slice()).expect("an ErrorDetail");
    let info = any("type.googleapis.com/google.rpc.ErrorInfo").unwrap_or_else(|| panic!("no ErrorInfo in {rpc:?}"));
    let info = google_rpc::ErrorInfo::decode(info.as_slice()).expect("an ErrorInfo");
    assert_eq!(info.domain, "hongbao");
    assert_eq!((detail.code(), info.reason.as_str()), (code, reason), "{s:?}");
    rpc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generic_grpc_client_reads_code_detail_and_reason_of_failed_calls_through_a_router() {
    use v1::packets_client::PacketsClient;
    use v1::wallet_client::WalletClient;
    let c = Cluster::start(Spec { routers: true, ..Spec::default() });
    c.wait_ready(READY).await;
    let app = c.router_client("shenzhen");
    let sender = c.topology.user_in_shard(1, 100);
    let grabber = c.topology.user_in_shard(2, 200);
    c.funded(&app, sender, 1_000).await;
    app.open_account(grabber, TEST_DEVICE).await.expect("open");
    let router = c.topology.routers[0].addr.clone();

    // A zero top-up: the node's refusal, forwarded by the router as it came.
    let gw = c.channel_as_role(&router, Role::PaymentGateway);
    let s = WalletClient::new(gw.clone())
        .top_up(v1::TopUpRequest { request_id: new_request_id(), user: sender, amount_cents: 0 })
        .await
        .expect_err("a zero top-up is refused");
    generic_read(&s, tonic::Code::InvalidArgument, v1::ErrorCode::AmountZero, "AMOUNT_ZERO");

    // An unknown user: NOT_FOUND, not DEADLINE_EXCEEDED.
    let nobody = c.topology.user_in_shard(3, 900);
    let s = WalletClient::new(gw)
        .top_up(v1::TopUpRequest { request_id: new_request_id(), user: nobody, amount_cents: 100 })
        .await
        .expect_err("no such wallet");
    generic_read(&s, tonic::Code::NotFound, v1::ErrorCode::UnknownUser, "UNKNOWN_USER");

    // A second grab of one packet: ALREADY_EXISTS (the router answers it from a coalesced batch).
    let send = lucky_packet(sender, 100, 3);
    let packet = PacketRef::from(&app.send_packet(send).await.expect("send"));
    app.grab(new_request_id(), packet, grabber, "").await.expect("first grab");
    let token = c.credentials().tokens.expect("dev tokens").token(grabber, None).expect("a token");
    let s = PacketsClient::new(c.channel_as_role(&router, Role::App))
        .grab(with_token(
            v1::GrabRequest {
                request_id: new_request_id(),
                packet_id: packet.id,
                packet_key: packet.key,
                grabber,
                password: String::new(),
            },
            &token,
        ))
        .await
        .expect_err("a second grab is refused");
    let rpc = generic_read(&s, tonic::Code::AlreadyExists, v1::ErrorCode::AlreadyGrabbed, "ALREADY_GRABBED");
    assert!(!rpc.details.iter().any(|a| a.type_url.ends_with("google.rpc.RetryInfo")), "a final answer asks for no retry");
    // And hongbao's own reader agrees.
    assert_eq!(hongbao_proto::detail_of(&s).code(), v1::ErrorCode::AlreadyGrabbed);

    // A flood of one user's reads meets the router's limit: RESOURCE_EXHAUSTED with a RetryInfo.
    let reader = c.channel_as_role(&router, Role::App);
    let mut limited = None;
    for _ in 0..300 {
        let r = WalletClient::new(reader.clone())
            .balance(with_token(v1::BalanceRequest { user: grabber, allow_stale: true, token_issued_s: 0 }, &token))
            .await;
        if let Err(s) = r {
            limited = Some(s);
            break;
        }
    }
    let s = limited.expect("300 reads at once meet the per-user limit");
    let rpc = generic_read(&s, tonic::Code::ResourceExhausted, v1::ErrorCode::RateLimited, "RATE_LIMITED");
    let retry = rpc.details.iter().find(|a| a.type_url == "type.googleapis.com/google.rpc.RetryInfo").expect("a RetryInfo");
    let delay = google_rpc::RetryInfo::decode(retry.value.as_slice()).expect("RetryInfo").retry_delay.expect("a delay");
    assert!(delay.seconds > 0 || delay.nanos > 0, "{delay:?}");
}
