//! `hongbao-node`: one region node. Hosts Raft replicas of several ledger shards on one RocksDB
//! and serves Raft transport, the public API and admin on one gRPC port (mutual TLS: every
//! caller shows a certificate from the cluster's CA, and `access` decides what it may call),
//! metrics on another (`hongbao_telemetry::http`: plain HTTP on loopback only, else TLS and a
//! bearer token).

// Rust-side allocations (protobuf messages, batches, futures) are a visible share of the
// profile under load; mimalloc is cheaper than glibc malloc for them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use hongbao_auth::{Identity, SecurityDir};
use hongbao_node::host::Host;
use hongbao_node::leader;
use hongbao_node::service;
use hongbao_node::service::access;
use hongbao_proto::v1::{
    cluster_server::ClusterServer, coalesced_server::CoalescedServer, notifier_server::NotifierServer, packets_server::PacketsServer,
    raft_transport_server::RaftTransportServer, wallet_server::WalletServer,
};
use hongbao_topology::Topology;
use std::path::PathBuf;
use tonic::service::interceptor::InterceptedService;

#[derive(Parser)]
#[command(name = "hongbao-node", about = "hongbao region node: multi-raft ledger shards on RocksDB")]
struct Args {
    /// Topology file (deploy/*.toml).
    #[arg(long, env = "HONGBAO_TOPOLOGY")]
    topology: PathBuf,
    /// This node's id in the topology.
    #[arg(long, env = "HONGBAO_NODE_ID")]
    node_id: u64,
    /// Where RocksDB and snapshots live.
    #[arg(long, env = "HONGBAO_DATA_DIR")]
    data_dir: PathBuf,
    /// The cluster's security folder: ca.crt, certs/node-<id>.{crt,key}, challenge.key
    /// (docs/security.md; `scripts/cluster up` makes a development one).
    #[arg(long, env = "HONGBAO_SECURITY_DIR")]
    security_dir: PathBuf,
    /// The socket the gRPC server binds (default: this node's `addr` in the topology). For a
    /// node whose `addr` is a host name others dial, e.g. `node-1:7101` in a container, which
    /// binds `0.0.0.0:7101`.
    #[arg(long, env = "HONGBAO_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// The socket of the metrics endpoint (default: this node's `metrics_addr`).
    #[arg(long, env = "HONGBAO_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    metrics_http: hongbao_telemetry::http::HttpArgs,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Reads in flight on this node (all shards) before more are refused with OVERLOADED.
    #[arg(long, default_value_t = hongbao_node::limits::MAX_READS_IN_FLIGHT)]
    max_reads_in_flight: usize,
    /// Export the spans of sampled traces over OTLP/gRPC to this collector (http://host:4317);
    /// unset: no export (docs/operations.md, "Tracing").
    #[arg(long, env = hongbao_telemetry::tracing_init::ENDPOINT_ENV)]
    otlp_endpoint: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("hongbao-node").build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let seed = Topology::load(&args.topology).map_err(anyhow::Error::msg)?;
    // A node added online is in no topology file: it learns its place from the other nodes
    // (`cluster::map::at_start`); its region comes with `--region` until then.
    let seed_region = seed.region_of(args.node_id).map(str::to_string);
    // Inside the runtime: an OTLP exporter's channel runs on it.
    let service = hongbao_telemetry::tracing_init::Service {
        name: "hongbao-node",
        instance: format!("node-{}", args.node_id),
        attributes: vec![("hongbao.node_id", args.node_id.to_string()), ("hongbao.region", seed_region.clone().unwrap_or_default())],
    };
    let tracing = hongbao_telemetry::tracing_init::init(
        "info,openraft=warn,h2=warn,tower=warn",
        args.log_json,
        args.otlp_endpoint.as_deref(),
        service,
    )
    .map_err(anyhow::Error::msg)?;

    let security = SecurityDir::new(&args.security_dir);
    let me_id = Identity::Node(args.node_id);
    // A metrics socket the rule refuses, or an unreadable credential, is said before anything
    // opens when the socket is given; else once the map names this node's `metrics_addr`.
    let metrics_options = match args.metrics_listen {
        Some(listen) => Some(args.metrics_http.options(listen, || security.load_identity(&me_id))?),
        None => None,
    };
    let server_tls = security.server_tls(&me_id)?;
    let secrets = hongbao_node::host::NodeSecrets {
        dial: hongbao_node::transport::peers::Dial::Tls(security.client_tls(&me_id)?),
        challenge_key: security.load_challenge_key()?,
    };
    anyhow::ensure!(args.max_reads_in_flight >= 1, "--max-reads-in-flight must be at least 1");
    let host = Host::start(seed, args.node_id, &args.data_dir, secrets, args.max_reads_in_flight).await?;
    let me = host.topology().node(args.node_id).expect("the host's map names this node").clone();
    let metrics_options = match metrics_options {
        Some(o) => o,
        None => {
            let addr = me.metrics_addr.parse().map_err(|e| bind_error("metrics_addr", &me.metrics_addr, e))?;
            args.metrics_http.options(addr, || security.load_identity(&me_id))?
        }
    };
    let endpoint = hongbao_telemetry::http::Endpoint::bind(metrics_options).await?;
    tokio::spawn(endpoint.serve(hongbao_node::metrics::install()?, None));
    metrics::gauge!(hongbao_node::metrics::MAP_VERSION).set(host.topology().version as f64);
    let shards: Vec<u32> = host.replica_list().iter().map(|r| r.id).collect();
    tracing::info!(node = args.node_id, region = %me.region, addr = %me.addr, ?shards, map_version = host.topology().version, "node started");

    let stop_rx = host.stop_signal();
    let tasks = vec![
        hongbao_node::ops::gauges::spawn(host.clone(), stop_rx.clone()),
        hongbao_node::storage::checkpoint::spawn(host.db.clone(), args.node_id, host.clock.clone(), stop_rx.clone()),
        tokio::spawn(hongbao_node::cluster::directory::follow(host.clone(), stop_rx.clone())),
        // Every shard leader's own work, for each replica hosted here (`leader`).
        tokio::spawn(leader::supervise(host.clone(), &leader::Task::ALL, stop_rx.clone())),
    ];

    let addr: std::net::SocketAddr = match args.listen {
        Some(a) => a,
        None => me.addr.parse().map_err(|e| bind_error("addr", &me.addr, e))?,
    };
    let max = hongbao_node::limits::MAX_RAFT_MESSAGE;
    let api_max = hongbao_node::limits::MAX_REQUEST_BYTES;
    let api = service::api::ApiService::new(host.clone());
    let mut server = tonic::transport::Server::builder()
        .tls_config(server_tls)?
        .tcp_nodelay(true)
        .concurrency_limit_per_connection(4096)
        // Every call counted and timed by method and outcome code (hongbao_rpc_*).
        .layer(hongbao_node::metrics::red());
    // Every unary call ends by its deadline (`service::Deadline`), per service: the caller's
    // grpc-timeout within the service's cap, else its default. Snapshot streams are exempt and
    // bound each message instead (`transport::server`).
    use service::{Deadline, ADMIN_DEADLINES, API_DEADLINES, RAFT_DEADLINES, RAFT_STREAMS};
    let routes = server
        .add_service(
            Deadline::new(
                InterceptedService::new(
                    RaftTransportServer::new(hongbao_node::transport::server::RaftService { host: host.clone() })
                        .max_decoding_message_size(max)
                        .max_encoding_message_size(max),
                    access::raft_transport,
                ),
                RAFT_DEADLINES,
            )
            .streams(RAFT_STREAMS),
        )
        .add_service(Deadline::new(
            InterceptedService::new(WalletServer::new(api.clone()).max_decoding_message_size(api_max), access::public_api),
            API_DEADLINES,
        ))
        .add_service(Deadline::new(
            InterceptedService::new(PacketsServer::new(api.clone()).max_decoding_message_size(api_max), access::public_api),
            API_DEADLINES,
        ))
        .add_service(Deadline::new(
            InterceptedService::new(
                CoalescedServer::new(api).max_decoding_message_size(api_max * hongbao_proto::MAX_GRAB_BATCH),
                access::public_api,
            ),
            API_DEADLINES,
        ))
        .add_service(Deadline::new(
            InterceptedService::new(
                NotifierServer::new(service::notifier::NotifierService { host: host.clone() }).max_decoding_message_size(api_max),
                access::public_api,
            ),
            API_DEADLINES,
        ))
        .add_service(Deadline::new(
            InterceptedService::new(
                ClusterServer::new(service::cluster::ClusterService { host: host.clone() }).max_decoding_message_size(api_max),
                access::cluster_admin,
            ),
            ADMIN_DEADLINES,
        ));
    #[cfg(feature = "fault-injection")]
    let routes = {
        use hongbao_proto::v1::fault_injection_server::FaultInjectionServer;
        tracing::warn!("built with fault injection: the admin identity can cut links and shift the clock (test builds only)");
        routes.add_service(Deadline::new(
            InterceptedService::new(FaultInjectionServer::new(service::faults::FaultService { host: host.clone() }), access::admin_only),
            ADMIN_DEADLINES,
        ))
    };
    // grpc.health.v1 (kept current by a task of its own) and reflection, for operators' tools:
    // any caller with a certificate of the cluster's CA (`health`).
    let (health, reflection, reflection_alpha) = hongbao_node::service::health::start(host.clone()).await?;
    let routes = routes.add_service(health).add_service(reflection).add_service(reflection_alpha);
    let server = routes.serve_with_shutdown(addr, shutdown_signal());
    server.await?;
    tracing::info!("shutting down: stopping background tasks and raft");
    host.stop_tasks();
    for t in tasks {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), t).await;
    }
    host.shutdown().await;
    // A clean stop leaves nothing for the next start to re-apply.
    if let Err(e) = host.db.checkpoint() {
        tracing::error!(error = %e, "final checkpoint failed; the next start re-applies the log");
    }
    tracing.shutdown().await;
    tracing::info!("bye");
    Ok(())
}

/// A topology address that is not a socket address (a host name) cannot be bound: say which
/// flag gives the socket instead.
fn bind_error(field: &str, value: &str, e: std::net::AddrParseError) -> anyhow::Error {
    let flag = if field == "addr" { "--listen" } else { "--metrics-listen" };
    anyhow::anyhow!("this node's {field} {value:?} is not an IP:port to bind ({e}); give the socket with {flag} (e.g. 0.0.0.0:PORT)")
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
