//! The router's metric names, in one place, each described once at start-up (Prometheus HELP).
//! Served on the router's `metrics_addr` from the topology, like a node's.

/// Calls refused at the router for their credentials, by reason (role, token, other_user, ...).
pub const DENIED: &str = "hongbao_router_denied_total";
/// Calls refused by a per-user rate limit, by kind (read, spend).
pub const RATE_LIMITED: &str = "hongbao_router_rate_limited_total";
/// Grabs in one router-to-node Coalesced.Grabs call.
pub const COALESCED_GRABS: &str = "hongbao_router_coalesced_grabs";
/// Requests given up after the route deadline or the last attempt (the client hears UNAVAILABLE).
pub const GAVE_UP: &str = "hongbao_router_gave_up_total";
/// Times the node this router sends a shard to changed (hint, health poll or failover).
pub const LEADER_CHANGES: &str = "hongbao_router_leader_changes_total";
/// Requests refused with OVERLOADED: a shard's in-flight limit or a node's grab queue was full.
pub const OVERLOADED: &str = "hongbao_router_overloaded_total";

/// Registers every metric's description with the installed recorder.
pub fn describe() {
    metrics::describe_counter!(DENIED, "Calls refused at the router for their credentials, by reason");
    metrics::describe_counter!(RATE_LIMITED, "Calls refused by a per-user rate limit, by kind");
    metrics::describe_histogram!(COALESCED_GRABS, "Grabs in one router-to-node Coalesced.Grabs call");
    metrics::describe_counter!(GAVE_UP, "Requests given up after the route deadline or the last attempt");
    metrics::describe_counter!(LEADER_CHANGES, "Times the node this router sends a shard to changed");
    metrics::describe_counter!(OVERLOADED, "Requests refused with OVERLOADED (shard in-flight limit or node grab queue full)");
}
