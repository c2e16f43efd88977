//! The node's metric names, in one place, each described once at start-up (Prometheus HELP).
//! Served on the node's `metrics_addr` (`hongbao_telemetry::http`); what each means for an operator, with its
//! labels, is in docs/operations.md, and deploy/grafana/hongbao.json charts them. Per-shard,
//! storage and money gauges are sampled by `gauges`, the process's CPU and memory by
//! `hongbao_telemetry::process`, calls per gRPC method by the `red` layer.

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
/// The cluster map version this node follows (0: the topology file).
pub const MAP_VERSION: &str = "hongbao_cluster_map_version";
/// Membership steps done by this node as a shard's leader, by step (add_learner, promote, remove).
pub const MEMBERSHIP_CHANGES: &str = "hongbao_membership_changes_total";
pub const SLOT_MOVE_STEPS: &str = "hongbao_slot_move_steps_total";
pub const SLOT_MOVE_WALLETS: &str = "hongbao_slot_move_wallets_total";
/// Half-way slot moves a shard leader took up to finish (their driver had gone).
pub const SLOT_MOVES_RESUMED: &str = "hongbao_slot_moves_resumed_total";
/// Checkpoints of the state column family (`storage::checkpoint`), and how long each took.
pub const CHECKPOINTS: &str = "hongbao_checkpoints_total";
pub const CHECKPOINT_SECONDS: &str = "hongbao_checkpoint_seconds";
/// Answers from a leader's own state that first waited for a ReadIndex round: the leader had
/// not yet applied an entry of its term (just elected, or restarted).
pub const FENCED_LOCAL_READS: &str = "hongbao_fenced_local_reads_total";
/// Proposals refused with OVERLOADED (in-flight limit reached).
pub const OVERLOADED: &str = "hongbao_overloaded_total";
/// Requests refused because the user's tokens were revoked past their token's issue time.
pub const TOKENS_REVOKED: &str = "hongbao_tokens_revoked_refusals_total";
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

/// Calls served, by gRPC method and how they ended (`OK`, an ErrorCode or gRPC code name, `CANCELLED`).
pub const RPC_REQUESTS: &str = "hongbao_rpc_requests_total";
/// Time from a call's arrival to its status, by gRPC method (histogram).
pub const RPC_SECONDS: &str = "hongbao_rpc_seconds";

/// 1 on the role this replica has now (leader, follower, candidate, learner, shutdown), else 0.
pub const SHARD_ROLE: &str = "hongbao_shard_role";
/// The node this replica takes for the shard's leader (0: none known).
pub const SHARD_LEADER: &str = "hongbao_shard_leader";
/// The replica's current Raft term.
pub const SHARD_TERM: &str = "hongbao_shard_term";
/// Index of the last entry in this replica's log.
pub const SHARD_LAST_LOG_INDEX: &str = "hongbao_shard_last_log_index";
/// Index of the last entry this replica knows committed.
pub const SHARD_COMMIT_INDEX: &str = "hongbao_shard_commit_index";
/// Index of the last entry applied to this replica's ledger.
pub const SHARD_APPLIED_INDEX: &str = "hongbao_shard_applied_index";
/// Index of the last entry in this replica's current snapshot.
pub const SHARD_SNAPSHOT_INDEX: &str = "hongbao_shard_snapshot_index";
/// Entries kept in this replica's log (last index minus the purged one).
pub const SHARD_LOG_ENTRIES: &str = "hongbao_shard_log_entries";
/// On the leader, entries each follower lacks (last log index minus its matched index); 0 elsewhere.
pub const REPLICATION_LAG: &str = "hongbao_shard_replication_lag";
/// Proposals waiting for their outcome on this replica (of `MAX_INFLIGHT_PER_SHARD`).
pub const PROPOSALS_IN_FLIGHT: &str = "hongbao_shard_proposals_in_flight";
/// Cents held in open packets (escrow), as this replica's applied state says.
pub const ESCROW_CENTS: &str = "hongbao_shard_escrow_cents";
/// Cents debited here and not yet delivered to another shard (outbox: money in flight).
pub const IN_FLIGHT_CENTS: &str = "hongbao_shard_in_flight_cents";
/// Cents in the shard's wallets.
pub const BALANCES_CENTS: &str = "hongbao_shard_balances_cents";
/// Wallets opened on the shard.
pub const ACCOUNTS: &str = "hongbao_shard_accounts";
/// Packets not yet emptied, refunded or archived.
pub const OPEN_PACKETS: &str = "hongbao_shard_open_packets";
/// Challenge notifications written and not yet acked by the notifier.
pub const NOTIFICATIONS_PENDING: &str = "hongbao_shard_notifications_pending";
/// Outbox records waiting for delivery, per source shard and destination.
pub const RELAY_BACKLOG_RECORDS: &str = "hongbao_relay_backlog_records";
/// Snapshot streams sent to a follower, by shard and result (ok, failed).
pub const SNAPSHOTS_SENT: &str = "hongbao_snapshots_sent_total";
/// Snapshot streams received from a leader, by shard and result (ok: installed or stale; failed).
pub const SNAPSHOTS_RECEIVED: &str = "hongbao_snapshots_received_total";
/// Raft messages held back by an injected delay (chaos: proves the delay happened), by target node.
pub const FAULT_DELAYED: &str = "hongbao_fault_delayed_messages_total";
/// Raft messages lost to an injected cut or loss (chaos), by target node.
pub const FAULT_DROPPED: &str = "hongbao_fault_dropped_messages_total";

/// RocksDB, per column family (`cf`: default = ledger, votes and meta; raft_log = every shard's log).
pub const ROCKSDB_SST_BYTES: &str = "hongbao_rocksdb_sst_bytes";
pub const ROCKSDB_LIVE_DATA_BYTES: &str = "hongbao_rocksdb_live_data_bytes";
pub const ROCKSDB_MEMTABLE_BYTES: &str = "hongbao_rocksdb_memtable_bytes";
pub const ROCKSDB_PENDING_COMPACTION_BYTES: &str = "hongbao_rocksdb_pending_compaction_bytes";
pub const ROCKSDB_L0_FILES: &str = "hongbao_rocksdb_l0_files";
pub const ROCKSDB_ESTIMATED_KEYS: &str = "hongbao_rocksdb_estimated_keys";
/// Write stalls since the node started, per column family and kind (delay, stop).
pub const ROCKSDB_WRITE_STALLS: &str = "hongbao_rocksdb_write_stalls_total";
/// RocksDB, the whole DB.
pub const ROCKSDB_WRITE_STOPPED: &str = "hongbao_rocksdb_write_stopped";
pub const ROCKSDB_DELAYED_WRITE_RATE: &str = "hongbao_rocksdb_delayed_write_rate_bytes";
pub const ROCKSDB_BLOCK_CACHE_BYTES: &str = "hongbao_rocksdb_block_cache_bytes";
pub const ROCKSDB_BACKGROUND_ERRORS: &str = "hongbao_rocksdb_background_errors_total";

/// Registers every metric's description with the installed recorder.
pub fn describe() {
    metrics::describe_counter!(ACCESS_DENIED, "Calls refused because the caller's certificate may not make them, by service");
    metrics::describe_counter!(TOKENS_REVOKED, "Requests refused because the user's tokens were revoked past the token's issue time");
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
    metrics::describe_gauge!(MAP_VERSION, "The cluster map version this node follows (0: the topology file)");
    metrics::describe_counter!(MEMBERSHIP_CHANGES, "Membership steps done by this node as a shard's leader, by step");
    metrics::describe_counter!(SLOT_MOVE_STEPS, "Slot-move steps this node drove (arriving, sent, delivered, flipped)");
    metrics::describe_counter!(SLOT_MOVE_WALLETS, "Wallets sent by the slot moves this node drove");
    metrics::describe_counter!(SLOT_MOVES_RESUMED, "Attempts of this node's shard leaders to finish slot moves left half-way");
    metrics::describe_counter!(CHECKPOINTS, "Checkpoints of the ledger state (flushes of the state column family)");
    metrics::describe_histogram!(CHECKPOINT_SECONDS, "Time one checkpoint took");
    metrics::describe_counter!(
        FENCED_LOCAL_READS,
        "Answers from a leader's own state that first waited for a ReadIndex round (no entry of its term applied yet)"
    );
    metrics::describe_counter!(OVERLOADED, "Proposals refused with OVERLOADED (in-flight limit reached)");
    metrics::describe_counter!(PACKETS_EXPIRED, "Expired packets refunded by the sweeper");
    metrics::describe_counter!(PROPOSALS, "Ledger commands proposed on this node");
    metrics::describe_gauge!(RELAY_BACKLOG, "Outbox credits waiting for delivery, per source shard");
    metrics::describe_counter!(RELAY_DELIVERED, "Credit batches delivered to another shard and marked delivered");
    metrics::describe_counter!(SNAPSHOTS_BUILT, "Raft snapshots built");
    metrics::describe_counter!(SNAPSHOTS_INSTALLED, "Raft snapshots installed from a leader");
    metrics::describe_counter!(
        RPC_REQUESTS,
        "Calls served, by gRPC method and how they ended (OK, an ErrorCode or gRPC code name, CANCELLED)"
    );
    metrics::describe_histogram!(RPC_SECONDS, "Time from a call's arrival to its status, by gRPC method");
    metrics::describe_gauge!(SHARD_ROLE, "1 on the role this replica has now (leader, follower, candidate, learner, shutdown)");
    metrics::describe_gauge!(SHARD_LEADER, "The node this replica takes for the shard's leader (0: none known)");
    metrics::describe_gauge!(SHARD_TERM, "The replica's current Raft term");
    metrics::describe_gauge!(SHARD_LAST_LOG_INDEX, "Index of the last entry in this replica's log");
    metrics::describe_gauge!(SHARD_COMMIT_INDEX, "Index of the last entry this replica knows committed");
    metrics::describe_gauge!(SHARD_APPLIED_INDEX, "Index of the last entry applied to this replica's ledger");
    metrics::describe_gauge!(SHARD_SNAPSHOT_INDEX, "Index of the last entry in this replica's current snapshot");
    metrics::describe_gauge!(SHARD_LOG_ENTRIES, "Entries kept in this replica's Raft log");
    metrics::describe_gauge!(REPLICATION_LAG, "On the leader: entries each follower lacks; 0 on other replicas");
    metrics::describe_gauge!(PROPOSALS_IN_FLIGHT, "Proposals waiting for their outcome on this replica");
    metrics::describe_gauge!(ESCROW_CENTS, "Cents held in open packets (this replica's applied state)");
    metrics::describe_gauge!(IN_FLIGHT_CENTS, "Cents debited on this shard, not yet delivered to their destination shard");
    metrics::describe_gauge!(BALANCES_CENTS, "Cents in the shard's wallets");
    metrics::describe_gauge!(ACCOUNTS, "Wallets opened on the shard");
    metrics::describe_gauge!(OPEN_PACKETS, "Packets not yet emptied, refunded or archived");
    metrics::describe_gauge!(NOTIFICATIONS_PENDING, "Challenge notifications not yet acked by the notifier");
    metrics::describe_gauge!(RELAY_BACKLOG_RECORDS, "Outbox records waiting for delivery, per source shard and destination");
    metrics::describe_counter!(SNAPSHOTS_SENT, "Snapshot streams sent to a follower, by shard and result");
    metrics::describe_counter!(SNAPSHOTS_RECEIVED, "Snapshot streams received from a leader, by shard and result");
    metrics::describe_counter!(FAULT_DELAYED, "Raft messages held back by an injected delay (chaos), by target node");
    metrics::describe_counter!(FAULT_DROPPED, "Raft messages lost to an injected cut or loss (chaos), by target node");
    metrics::describe_gauge!(ROCKSDB_SST_BYTES, "RocksDB: bytes of SST files, per column family");
    metrics::describe_gauge!(ROCKSDB_LIVE_DATA_BYTES, "RocksDB: estimated live data, bytes, per column family");
    metrics::describe_gauge!(ROCKSDB_MEMTABLE_BYTES, "RocksDB: bytes in memtables, per column family");
    metrics::describe_gauge!(ROCKSDB_PENDING_COMPACTION_BYTES, "RocksDB: estimated bytes compaction has to rewrite, per column family");
    metrics::describe_gauge!(ROCKSDB_L0_FILES, "RocksDB: files at level 0, per column family");
    metrics::describe_gauge!(ROCKSDB_ESTIMATED_KEYS, "RocksDB: estimated keys, per column family");
    metrics::describe_counter!(ROCKSDB_WRITE_STALLS, "RocksDB: write stalls since start, per column family and kind (delay, stop)");
    metrics::describe_gauge!(ROCKSDB_WRITE_STOPPED, "RocksDB: 1 while writes are stopped");
    metrics::describe_gauge!(ROCKSDB_DELAYED_WRITE_RATE, "RocksDB: the rate writes are slowed to while delayed, bytes/s (0: not delayed)");
    metrics::describe_gauge!(ROCKSDB_BLOCK_CACHE_BYTES, "RocksDB: bytes in the block cache");
    metrics::describe_counter!(ROCKSDB_BACKGROUND_ERRORS, "RocksDB: background (flush, compaction) errors since start");
}

/// Installs the Prometheus recorder (the RPC and commit latencies as histograms), describes
/// every metric and starts sampling the process's CPU and memory. Call once, on the runtime;
/// the handle goes to the metrics endpoint (`hongbao_telemetry::http`), which renders it.
pub fn install() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    let handle = hongbao_telemetry::builder(&[RPC_SECONDS, COMMIT_SECONDS])?.install_recorder()?;
    describe();
    // Counters without labels exist from the start (at 0), so a rate over them, or an alert on
    // one, does not wait for the first event.
    for name in [
        WRONG_PINS,
        CLOCK_LEAPS,
        CLOCK_REFUSED,
        APPLIED_ENTRIES,
        GRABS,
        GRABS_FAST_REJECTED,
        LEADER_TRANSFERS,
        FENCED_LOCAL_READS,
        CHECKPOINTS,
        OVERLOADED,
        PACKETS_EXPIRED,
        PROPOSALS,
        RELAY_DELIVERED,
        SNAPSHOTS_BUILT,
        SNAPSHOTS_INSTALLED,
    ] {
        metrics::counter!(name).increment(0);
    }
    hongbao_telemetry::process::spawn();
    Ok(handle)
}

/// The layer that counts and times every call of the node's gRPC server, by method.
pub fn red() -> hongbao_telemetry::RedLayer {
    hongbao_telemetry::RedLayer::new(RPC_REQUESTS, RPC_SECONDS)
}

/// One snapshot stream of a shard, counted in `name` (`SNAPSHOTS_SENT`, `SNAPSHOTS_RECEIVED`)
/// when dropped: `ok` if `ok()` was called, else `failed` (refused, cut, cancelled).
pub struct SnapshotStream {
    name: &'static str,
    shard: u32,
    ok: bool,
}

impl SnapshotStream {
    pub fn new(name: &'static str, shard: u32) -> SnapshotStream {
        SnapshotStream { name, shard, ok: false }
    }

    /// The stream did its job: counted as `ok`.
    pub fn ok(mut self) {
        self.ok = true;
    }

    /// Registers both series of a shard at 0, so dashboards and rates see them from the start.
    pub fn register(name: &'static str, shard: u32) {
        for result in ["ok", "failed"] {
            metrics::counter!(name, "shard" => shard.to_string(), "result" => result).increment(0);
        }
    }
}

impl Drop for SnapshotStream {
    fn drop(&mut self) {
        let result = if self.ok { "ok" } else { "failed" };
        metrics::counter!(self.name, "shard" => self.shard.to_string(), "result" => result).increment(1);
    }
}
