//! The router's metric names, in one place, each described once at start-up (Prometheus HELP).
//! Served on the router's `metrics_addr` from the topology, like a node's (`hongbao_telemetry::http`); calls per gRPC method
//! by the `red` layer, the process's CPU and memory by `hongbao_telemetry::process`
//! (docs/operations.md lists them all).

/// Calls refused at the router for their credentials, by reason (role, token, other_user, ...).
pub const DENIED: &str = "hongbao_router_denied_total";
/// Calls refused by a per-user rate limit, by kind (read, spend).
pub const RATE_LIMITED: &str = "hongbao_router_rate_limited_total";
/// Grabs in one router-to-node Coalesced.Grabs call.
pub const COALESCED_GRABS: &str = "hongbao_router_coalesced_grabs";
/// Grabs in one client-to-router GrabGateway.Grabs call.
pub const GATEWAY_BATCH_GRABS: &str = "hongbao_router_gateway_batch_grabs";
/// Requests given up after the route deadline or the last attempt (the client hears UNAVAILABLE).
pub const GAVE_UP: &str = "hongbao_router_gave_up_total";
/// Times the node this router sends a shard to changed (hint, health poll or failover).
pub const LEADER_CHANGES: &str = "hongbao_router_leader_changes_total";
/// Requests refused with OVERLOADED: a shard's in-flight limit or a node's grab queue was full.
pub const OVERLOADED: &str = "hongbao_router_overloaded_total";
/// The version of the cluster map this router routes by (0: the topology file; #16).
pub const MAP_VERSION: &str = "hongbao_router_map_version";
/// Audits the status page's background task ran (every 10 s while the page is watched, never
/// one per page load).
pub const STATUS_AUDITS: &str = "hongbao_router_status_audits_total";
/// Calls served, by gRPC method and how they ended (`OK`, an ErrorCode or gRPC code name, `CANCELLED`).
pub const RPC_REQUESTS: &str = "hongbao_router_rpc_requests_total";
/// Time from a call's arrival to its status, by gRPC method (histogram): what clients see.
pub const RPC_SECONDS: &str = "hongbao_router_rpc_seconds";

/// Registers every metric's description with the installed recorder.
pub fn describe() {
    metrics::describe_counter!(DENIED, "Calls refused at the router for their credentials, by reason");
    metrics::describe_counter!(RATE_LIMITED, "Calls refused by a per-user rate limit, by kind");
    metrics::describe_histogram!(COALESCED_GRABS, "Grabs in one router-to-node Coalesced.Grabs call");
    metrics::describe_histogram!(GATEWAY_BATCH_GRABS, "Grabs in one client-to-router GrabGateway.Grabs call");
    metrics::describe_counter!(GAVE_UP, "Requests given up after the route deadline or the last attempt");
    metrics::describe_counter!(LEADER_CHANGES, "Times the node this router sends a shard to changed");
    metrics::describe_counter!(OVERLOADED, "Requests refused with OVERLOADED (shard in-flight limit or node grab queue full)");
    metrics::describe_gauge!(MAP_VERSION, "The version of the cluster map this router routes by (0: the topology file)");
    metrics::describe_counter!(STATUS_AUDITS, "Audits run by the status page's background task (never one per page load)");
    metrics::describe_counter!(
        RPC_REQUESTS,
        "Calls served, by gRPC method and how they ended (OK, an ErrorCode or gRPC code name, CANCELLED)"
    );
    metrics::describe_histogram!(RPC_SECONDS, "Time from a call's arrival to its status, by gRPC method");
    hongbao_telemetry::process::describe();
}

/// The recorder's settings: the RPC latency rendered as a histogram (buckets), so p99 can be
/// computed across routers; every other histogram a summary.
pub fn builder() -> anyhow::Result<metrics_exporter_prometheus::PrometheusBuilder> {
    Ok(hongbao_telemetry::builder(&[RPC_SECONDS])?)
}

/// The layer that counts and times every call of the router's gRPC server, by method.
pub fn red() -> hongbao_telemetry::RedLayer {
    hongbao_telemetry::RedLayer::new(RPC_REQUESTS, RPC_SECONDS)
}
