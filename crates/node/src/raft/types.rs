//! The openraft type configuration shared by every shard's Raft group on this node.

use serde::{Deserialize, Serialize};

/// What a Raft log entry carries: the ledger requests the leader gathered while earlier entries
/// were in flight (one or many, each stamped with the leader's time), applied in order. One
/// entry for many requests is what makes replication, fsync and apply cheap per request.
///
/// The second field is the proposer's ledger-config fingerprint (`LedgerConfig::fingerprint`):
/// a replica whose own differs refuses to apply the entry (fail-stop) rather than apply it by
/// other rules than the ones it was proposed under.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Batch(pub Vec<hongbao_ledger::Request>, pub u64);

impl std::fmt::Display for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => write!(f, "batch of {}", many.len()),
        }
    }
}

pub type AppData = Batch;

/// What applying an entry answers: one outcome per request of the batch, in order. Blank and
/// membership entries answer `Empty`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AppResponse {
    Ledger(Vec<hongbao_ledger::Outcome>),
    Empty,
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = AppData,
        R = AppResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
);

pub type NodeId = u64;
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type Raft = openraft::Raft<TypeConfig, crate::raft::state_machine::StateMachine>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, crate::raft::snapshot::SnapshotFile>;
