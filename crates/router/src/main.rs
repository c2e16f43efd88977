//! `hongbao-router`: a stateless gRPC front for clients. It serves the same public API as the
//! nodes, maps each request to its shard (user → slot → shard; packet id → shard), sends it to
//! the shard's leader, follows NotLeader hints, and fails over to other replicas when a node or a
//! whole region is unreachable, always re-sending the same request (same request id).
//! Prometheus metrics (`metrics.rs`) and the status page (`status_page.rs`) on the
//! `metrics_addr` of its topology entry, when set (`hongbao_telemetry::http`: plain HTTP on
//! loopback only, else TLS and a bearer token).
//!
//! Security (`gate.rs`, docs/security.md): callers are services with a client certificate from
//! the cluster's CA; calls for an end user carry the user's token, verified here. SIGHUP re-reads
//! the trusted token keys (rotation without a restart).

// Rust-side allocations (protobuf messages, batches, futures) are a visible share of the
// profile under load; mimalloc is cheaper than glibc malloc for them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod coalesce;
mod gate;
mod health;
mod limits;
mod metrics;
mod route;
mod status_page;
mod trace;

use clap::Parser;
use hongbao_auth::{DevKey, Identity, SecurityDir, TokenKeys};
use hongbao_proto::v1::{
    cluster_server::ClusterServer, grab_gateway_server::GrabGatewayServer, notifier_server::NotifierServer, packets_server::PacketsServer,
    wallet_server::WalletServer,
};
use hongbao_topology::Topology;
use std::path::PathBuf;
use std::sync::Arc;
use tonic::service::interceptor::InterceptedService;

#[derive(Parser)]
#[command(name = "hongbao-router", about = "hongbao cross-region router")]
struct Args {
    #[arg(long, env = "HONGBAO_TOPOLOGY")]
    topology: PathBuf,
    /// This router's region; its address comes from the topology unless --addr is given.
    #[arg(long, env = "HONGBAO_REGION")]
    region: String,
    /// The socket the gRPC server binds (default: this router's `addr` in the topology), e.g.
    /// `0.0.0.0:7001` in a container whose topology entry names it by host name.
    #[arg(long, env = "HONGBAO_LISTEN")]
    addr: Option<String>,
    /// The socket of the metrics and status page endpoint (default: its `metrics_addr`).
    #[arg(long, env = "HONGBAO_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    metrics_http: hongbao_telemetry::http::HttpArgs,
    /// Requests in flight per shard through this router; beyond it, RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = limits::MAX_ROUTED_PER_SHARD)]
    max_inflight_per_shard: usize,
    /// Send each grab to its node in its own call instead of coalescing many per call.
    #[arg(long)]
    no_coalesce: bool,
    /// The cluster's security folder: ca.crt, certs/router-<region>.{crt,key}, token-keys/
    /// (docs/security.md; `scripts/cluster up` makes a development one).
    #[arg(long, env = "HONGBAO_SECURITY_DIR")]
    security_dir: PathBuf,
    /// Per-user reads (balance, statement, show) per second; bursts of twice that.
    #[arg(long, default_value_t = 50.0)]
    user_reads_per_s: f64,
    /// Per-user payments (send, transfer, withdraw, set PIN) per second; bursts of twice that.
    #[arg(long, default_value_t = 20.0)]
    user_spends_per_s: f64,
    /// Per-user grabs per second; bursts of twice that. Opening an account counts as a payment.
    #[arg(long, default_value_t = 50.0)]
    user_grabs_per_s: f64,
    /// Export the spans of sampled traces over OTLP/gRPC to this collector (http://host:4317);
    /// unset: no export (docs/operations.md, "Tracing").
    #[arg(long, env = hongbao_telemetry::tracing_init::ENDPOINT_ENV)]
    otlp_endpoint: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let service = hongbao_telemetry::tracing_init::Service {
        name: "hongbao-router",
        instance: format!("router-{}", args.region),
        attributes: vec![("hongbao.region", args.region.clone())],
    };
    let tracing = hongbao_telemetry::tracing_init::init("info,h2=warn,tower=warn", false, args.otlp_endpoint.as_deref(), service)
        .map_err(anyhow::Error::msg)?;
    let topology = Arc::new(Topology::load(&args.topology).map_err(anyhow::Error::msg)?);
    let entry = topology.routers.iter().find(|r| r.region == args.region);
    let addr = match args.addr {
        Some(a) => a,
        None => entry.map(|r| r.addr.clone()).ok_or_else(|| anyhow::anyhow!("no router for region {} in the topology", args.region))?,
    };
    let security = SecurityDir::new(&args.security_dir);
    let me = Identity::Router(args.region.clone());
    // Prometheus and the status page on the topology's metrics_addr for this router, like a
    // node's metrics; without one the metric calls record nothing.
    let mut http = None;
    if let Some(metrics_addr) = entry.and_then(|r| r.metrics_addr.as_deref()) {
        let metrics_addr: std::net::SocketAddr = match args.metrics_listen {
            Some(a) => a,
            None => metrics_addr.parse().map_err(|e| {
                anyhow::anyhow!("metrics_addr {metrics_addr:?} is not an IP:port to bind ({e}); give the socket with --metrics-listen")
            })?,
        };
        let options = args.metrics_http.options(metrics_addr, || security.load_identity(&me))?;
        let endpoint = hongbao_telemetry::http::Endpoint::bind(options).await?;
        let handle = metrics::builder()?.install_recorder()?;
        metrics::describe();
        hongbao_telemetry::process::spawn();
        http = Some((endpoint, handle));
    }
    // Tokens of the development key only in a development cluster (docs/security.md).
    let keys = TokenKeys::load_dir(&security.token_keys(), DevKey::for_cluster(topology.development))?;
    anyhow::ensure!(!keys.is_empty(), "no trusted token keys in {}", security.token_keys().display());
    let limits = gate::Limits {
        reads_per_s: args.user_reads_per_s.max(0.1),
        spends_per_s: args.user_spends_per_s.max(0.1),
        grabs_per_s: args.user_grabs_per_s.max(0.1),
    };
    let gate = Arc::new(gate::Gate::new(keys, security.token_keys(), limits));
    tokio::spawn(reload_on_sighup(gate.clone()));
    let router = route::Router::new(
        topology.clone(),
        args.region.clone(),
        args.max_inflight_per_shard.clamp(1, 1_000_000),
        !args.no_coalesce,
        security.client_tls(&me)?,
    );
    let health = tokio::spawn(route::health_loop(router.clone()));
    // The cluster map changes online (#16): follow the nodes' replicated one.
    let map = tokio::spawn(route::map_loop(router.clone()));
    if let Some((endpoint, handle)) = http {
        let page = status_page::Pages(status_page::Page::start(router.clone()));
        tokio::spawn(endpoint.serve(handle, Some(Arc::new(page))));
    }
    tracing::info!(region = %args.region, %addr, metrics_addr = ?entry.and_then(|r| r.metrics_addr.as_deref()), "router started");
    // grpc.health.v1 (kept current by a task of its own) and reflection, for operators' tools.
    let (grpc_health, reflection, reflection_alpha) = health::start(router.clone()).await?;
    let svc = route::RouterService { router: router.clone(), gate };
    let max = limits::MAX_API_REQUEST_BYTES;
    tonic::transport::Server::builder()
        .tls_config(security.server_tls(&me)?)?
        .tcp_nodelay(true)
        // Every call counted and timed by method and outcome code (hongbao_router_rpc_*).
        .layer(metrics::red())
        .add_service(InterceptedService::new(WalletServer::new(svc.clone()).max_decoding_message_size(max), gate::services_only))
        .add_service(InterceptedService::new(PacketsServer::new(svc.clone()).max_decoding_message_size(max), gate::services_only))
        // A batch carries up to MAX_GRAB_BATCH grabs, each of a single call's size with its token.
        .add_service(InterceptedService::new(
            GrabGatewayServer::new(svc.clone()).max_decoding_message_size(limits::MAX_GATEWAY_BATCH_BYTES),
            gate::services_only,
        ))
        .add_service(InterceptedService::new(NotifierServer::new(svc.clone()).max_decoding_message_size(max), gate::services_only))
        .add_service(InterceptedService::new(ClusterServer::new(svc).max_decoding_message_size(max), gate::services_only))
        .add_service(grpc_health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .serve_with_shutdown(addr.parse()?, async {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
        })
        .await?;
    health.abort();
    map.abort();
    tracing.shutdown().await;
    Ok(())
}

/// SIGHUP: re-read the trusted token keys (add a new signing key before using it; remove the
/// old one once its tokens have expired). A bad folder keeps the keys in force.
async fn reload_on_sighup(gate: Arc<gate::Gate>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
    while hup.recv().await.is_some() {
        match gate.reload() {
            Ok(n) => tracing::info!(keys = n, "token keys reloaded"),
            Err(e) => tracing::error!("token keys not reloaded, the old ones stay in force: {e:#}"),
        }
    }
}
