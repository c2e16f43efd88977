//! The openraft type configuration shared by every shard's Raft group on this node.

use serde::{Deserialize, Serialize};

/// What a Raft log entry carries: one ledger request, stamped with the leader's time.
pub type AppData = hongbao_ledger::Request;

/// What applying an entry answers. Blank and membership entries answer `Empty`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AppResponse {
    Ledger(hongbao_ledger::Outcome),
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
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, crate::raft::state_machine::SnapshotFile>;
