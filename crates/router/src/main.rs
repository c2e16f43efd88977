//! `hongbao-router`: a stateless gRPC front for clients. It serves the same public API as the
//! nodes, maps each request to its shard (user → slot → shard; packet id → shard), sends it to
//! the shard's leader, follows NotLeader hints, and fails over to other replicas when a node or a
//! whole region is unreachable, always re-sending the same request (same request id).
//! Prometheus metrics (`metrics.rs`) on the `metrics_addr` of its topology entry, when set.

// Rust-side allocations (protobuf messages, batches, futures) are a visible share of the
// profile under load; mimalloc is cheaper than glibc malloc for them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod coalesce;
mod metrics;
mod route;

use clap::Parser;
use hongbao_proto::v1::{cluster_server::ClusterServer, packets_server::PacketsServer, wallet_server::WalletServer};
use hongbao_topology::Topology;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "hongbao-router", about = "hongbao cross-region router")]
struct Args {
    #[arg(long)]
    topology: PathBuf,
    /// This router's region; its address comes from the topology unless --addr is given.
    #[arg(long)]
    region: String,
    #[arg(long)]
    addr: Option<String>,
    /// Requests in flight per shard through this router; beyond it, RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = route::MAX_INFLIGHT_PER_SHARD)]
    max_inflight_per_shard: usize,
    /// Send each grab to its node in its own call instead of coalescing many per call.
    #[arg(long)]
    no_coalesce: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,h2=warn,tower=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).init();
    let topology = Arc::new(Topology::load(&args.topology).map_err(anyhow::Error::msg)?);
    let entry = topology.routers.iter().find(|r| r.region == args.region);
    let addr = match args.addr {
        Some(a) => a,
        None => entry.map(|r| r.addr.clone()).ok_or_else(|| anyhow::anyhow!("no router for region {} in the topology", args.region))?,
    };
    // Prometheus on the topology's metrics_addr for this router, like a node's; without one the
    // metric calls record nothing.
    if let Some(metrics_addr) = entry.and_then(|r| r.metrics_addr.as_deref()) {
        let metrics_addr: std::net::SocketAddr = metrics_addr.parse()?;
        metrics_exporter_prometheus::PrometheusBuilder::new().with_http_listener(metrics_addr).install()?;
        metrics::describe();
    }
    let router =
        route::Router::new(topology.clone(), args.region.clone(), args.max_inflight_per_shard.clamp(1, 1_000_000), !args.no_coalesce);
    let health = tokio::spawn(route::health_loop(router.clone()));
    tracing::info!(region = %args.region, %addr, metrics_addr = ?entry.and_then(|r| r.metrics_addr.as_deref()), "router started");
    let svc = route::RouterService { router: router.clone() };
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(WalletServer::new(svc.clone()).max_decoding_message_size(route::MAX_REQUEST_BYTES))
        .add_service(PacketsServer::new(svc.clone()).max_decoding_message_size(route::MAX_REQUEST_BYTES))
        .add_service(ClusterServer::new(svc))
        .serve_with_shutdown(addr.parse()?, async {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
        })
        .await?;
    health.abort();
    Ok(())
}
