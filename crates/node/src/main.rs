//! `hongbao-node`: one region node. Hosts Raft replicas of several ledger shards on one RocksDB
//! and serves Raft transport, the public API and admin on one gRPC port, metrics on another.

// Rust-side allocations (protobuf messages, batches, futures) are a visible share of the
// profile under load; mimalloc is cheaper than glibc malloc for them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use hongbao_node::host::Host;
use hongbao_node::service;
use hongbao_proto::v1::{
    cluster_server::ClusterServer, coalesced_server::CoalescedServer, packets_server::PacketsServer,
    raft_transport_server::RaftTransportServer, wallet_server::WalletServer,
};
use hongbao_topology::Topology;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "hongbao-node", about = "hongbao region node: multi-raft ledger shards on RocksDB")]
struct Args {
    /// Topology file (deploy/*.toml).
    #[arg(long)]
    topology: PathBuf,
    /// This node's id in the topology.
    #[arg(long)]
    node_id: u64,
    /// Where RocksDB and snapshots live.
    #[arg(long)]
    data_dir: PathBuf,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn,h2=warn,tower=warn"));
    if args.log_json {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("hongbao-node").build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let topology = Arc::new(Topology::load(&args.topology).map_err(anyhow::Error::msg)?);
    let me = topology.node(args.node_id).ok_or_else(|| anyhow::anyhow!("node {} not in topology", args.node_id))?.clone();
    let metrics_addr: std::net::SocketAddr = me.metrics_addr.parse()?;
    metrics_exporter_prometheus::PrometheusBuilder::new().with_http_listener(metrics_addr).install()?;
    hongbao_node::metrics::describe();

    let host = Host::start(topology.clone(), args.node_id, &args.data_dir).await?;
    tracing::info!(node = args.node_id, region = %me.region, addr = %me.addr, shards = ?host.replicas.keys().collect::<Vec<_>>(), "node started");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = hongbao_node::tasks::spawn_all(host.clone(), stop_rx.clone());

    let addr: std::net::SocketAddr = me.addr.parse()?;
    let max = hongbao_node::transport::MAX_RAFT_MESSAGE;
    let api_max = service::api::MAX_REQUEST_BYTES;
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .concurrency_limit_per_connection(4096)
        .add_service(
            RaftTransportServer::new(hongbao_node::transport::server::RaftService { host: host.clone() })
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(WalletServer::new(service::api::ApiService { host: host.clone() }).max_decoding_message_size(api_max))
        .add_service(PacketsServer::new(service::api::ApiService { host: host.clone() }).max_decoding_message_size(api_max))
        .add_service(
            CoalescedServer::new(service::api::ApiService { host: host.clone() })
                .max_decoding_message_size(api_max * hongbao_proto::MAX_GRAB_BATCH),
        )
        .add_service(ClusterServer::new(service::cluster::ClusterService { host: host.clone() }))
        .serve_with_shutdown(addr, shutdown_signal());
    server.await?;
    tracing::info!("shutting down: stopping background tasks and raft");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), t).await;
    }
    host.shutdown().await;
    tracing::info!("bye");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
