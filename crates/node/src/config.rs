//! Ledger and Raft settings, from the topology file.

use crate::limits::MAX_ENTRIES_PER_APPEND;
use hongbao_ledger::LedgerConfig;
use hongbao_topology::Topology;

/// `challenge_key` is the replicas' shared secret (security folder's `challenge.key`): part of
/// the replicated behaviour, so every replica of a shard must be given the same one.
pub fn ledger_config(t: &Topology, challenge_key: [u8; 32]) -> LedgerConfig {
    let mut c = LedgerConfig { challenge_key, ..LedgerConfig::default() };
    if let Some(ttl) = t.ledger.packet_ttl_ms {
        c.packet_ttl_ms = ttl;
    }
    if let Some(r) = t.ledger.dedup_retention_ms {
        c.dedup_retention_ms = r;
    }
    if let Some(r) = t.ledger.packet_retention_ms {
        c.packet_retention_ms = r;
    }
    c
}

pub fn raft_config(t: &Topology) -> openraft::Config {
    let r = &t.raft;
    openraft::Config {
        cluster_name: "hongbao".into(),
        heartbeat_interval: r.heartbeat_ms,
        election_timeout_min: r.election_timeout_min_ms,
        election_timeout_max: r.election_timeout_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(r.snapshot_every),
        max_in_snapshot_log_to_keep: r.keep_behind_snapshot,
        max_payload_entries: MAX_ENTRIES_PER_APPEND,
        enable_pre_vote: Some(true),
        // A restarted leader must win an election (and commit a blank entry of its new term)
        // before it serves: the committed index and the applied state are written unsynced, so
        // after a power loss it may restart knowing less than was committed, and restoring its
        // leadership without a vote would let it answer reads from that older state (#30).
        // The cost is one election timeout after a leader restarts.
        enable_leader_restore: Some(false),
        ..Default::default()
    }
}
