//! The node's metric names, in one place, each described once at start-up (Prometheus HELP).

/// Calls refused because the caller's certificate may not make them, by service.
pub const ACCESS_DENIED: &str = "hongbao_access_denied_total";
/// Wrong payment PINs typed (verdicts of this node as leader).
pub const WRONG_PINS: &str = "hongbao_wrong_pins_total";
/// Leaps of the wall clock noticed when stamping (the node stops stamping until peers agree).
pub const CLOCK_LEAPS: &str = "hongbao_clock_leaps_total";
/// Proposals refused because this node's clock is not trusted.
pub const CLOCK_REFUSED: &str = "hongbao_clock_refused_total";
/// Raft entries applied to the ledger, all shards.
pub const APPLIED_ENTRIES: &str = "hongbao_applied_entries_total";
/// Time to apply one batch of entries and write it to RocksDB.
pub const APPLY_BATCH_SECONDS: &str = "hongbao_apply_batch_seconds";
/// Requests carried by one Raft entry (leader batching).
pub const BATCH_REQUESTS: &str = "hongbao_batch_requests";
/// Grabs in one router-to-node Coalesced.Grabs call.
pub const COALESCED_GRABS: &str = "hongbao_coalesced_grabs";
/// Time from proposal to applied outcome on the leader.
pub const COMMIT_SECONDS: &str = "hongbao_commit_seconds";
/// Grabs proposed and applied.
pub const GRABS: &str = "hongbao_grabs_total";
/// Grabs refused on the leader without a Raft round (outcome already final).
pub const GRABS_FAST_REJECTED: &str = "hongbao_grabs_fast_rejected_total";
/// Leader transfers completed from this node (failback, drain, admin).
pub const LEADER_TRANSFERS: &str = "hongbao_leader_transfers_total";
/// Proposals refused with OVERLOADED (in-flight limit reached).
pub const OVERLOADED: &str = "hongbao_overloaded_total";
/// Expired packets refunded by the sweeper.
pub const PACKETS_EXPIRED: &str = "hongbao_packets_expired_total";
/// Ledger commands proposed on this node.
pub const PROPOSALS: &str = "hongbao_proposals_total";
/// Outbox credits waiting for delivery, per source shard.
pub const RELAY_BACKLOG: &str = "hongbao_relay_backlog";
/// Credit batches delivered to another shard and marked delivered.
pub const RELAY_DELIVERED: &str = "hongbao_relay_delivered_total";
/// Raft snapshots built.
pub const SNAPSHOTS_BUILT: &str = "hongbao_snapshots_built_total";
/// Raft snapshots installed from a leader.
pub const SNAPSHOTS_INSTALLED: &str = "hongbao_snapshots_installed_total";

/// Registers every metric's description with the installed recorder.
pub fn describe() {
    metrics::describe_counter!(ACCESS_DENIED, "Calls refused because the caller's certificate may not make them, by service");
    metrics::describe_counter!(WRONG_PINS, "Wrong payment PINs typed (verdicts of this node as leader)");
    metrics::describe_counter!(CLOCK_LEAPS, "Leaps of the wall clock noticed when stamping (the node stops stamping until peers agree)");
    metrics::describe_counter!(CLOCK_REFUSED, "Proposals refused because this node's clock is not trusted");
    metrics::describe_counter!(APPLIED_ENTRIES, "Raft entries applied to the ledger, all shards");
    metrics::describe_histogram!(APPLY_BATCH_SECONDS, "Time to apply one batch of entries and write it to RocksDB");
    metrics::describe_histogram!(BATCH_REQUESTS, "Requests carried by one Raft entry (leader batching)");
    metrics::describe_histogram!(COALESCED_GRABS, "Grabs in one router-to-node Coalesced.Grabs call");
    metrics::describe_histogram!(COMMIT_SECONDS, "Time from proposal to applied outcome on the leader");
    metrics::describe_counter!(GRABS, "Grabs proposed and applied");
    metrics::describe_counter!(GRABS_FAST_REJECTED, "Grabs refused on the leader without a Raft round (outcome already final)");
    metrics::describe_counter!(LEADER_TRANSFERS, "Leader transfers completed from this node (failback, drain, admin)");
    metrics::describe_counter!(OVERLOADED, "Proposals refused with OVERLOADED (in-flight limit reached)");
    metrics::describe_counter!(PACKETS_EXPIRED, "Expired packets refunded by the sweeper");
    metrics::describe_counter!(PROPOSALS, "Ledger commands proposed on this node");
    metrics::describe_gauge!(RELAY_BACKLOG, "Outbox credits waiting for delivery, per source shard");
    metrics::describe_counter!(RELAY_DELIVERED, "Credit batches delivered to another shard and marked delivered");
    metrics::describe_counter!(SNAPSHOTS_BUILT, "Raft snapshots built");
    metrics::describe_counter!(SNAPSHOTS_INSTALLED, "Raft snapshots installed from a leader");
}
