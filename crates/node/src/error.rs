//! The node's own error type: why a request got no outcome from a shard here. The ledger's
//! refusals are outcomes, not errors; proto codes are chosen at the edge (`service::convert`).

use hongbao_ledger::ShardId;
use hongbao_topology::NodeId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// This node hosts no replica of the shard (a routing question, never an outcome).
    UnknownShard,
    /// Another replica leads; `leader` says which, when known.
    NotLeader,
    /// No leader is known, or Raft could not take the request; the outcome is unknown.
    Unavailable,
    /// Too much in flight; retry later with the same request id.
    Overloaded,
    /// Not committed (or not confirmed) in time; the outcome is unknown.
    Timeout,
    /// The request cannot be done as asked (a map rule, an unknown slot or shard): sending it
    /// again changes nothing.
    InvalidArgument,
    /// The ledger refused a command this node proposed for the caller (a slot move's step),
    /// with its own code.
    Ledger(hongbao_ledger::Code),
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError {
    pub kind: ErrorKind,
    pub shard: ShardId,
    pub message: String,
    /// The leader this replica knows of, with its address (NotLeader only).
    pub leader: Option<(NodeId, String)>,
}

impl HostError {
    pub fn new(kind: ErrorKind, shard: ShardId, message: impl Into<String>) -> HostError {
        HostError { kind, shard, message: message.into(), leader: None }
    }
}

/// Shorthands for the errors of the cluster steps (membership, slot moves), which answer an
/// admin's call.
impl HostError {
    pub fn invalid(message: impl Into<String>) -> HostError {
        HostError::new(ErrorKind::InvalidArgument, 0, message)
    }

    pub fn unavailable(shard: ShardId, message: impl Into<String>) -> HostError {
        HostError::new(ErrorKind::Unavailable, shard, message)
    }

    pub fn timeout(shard: ShardId, message: impl Into<String>) -> HostError {
        HostError::new(ErrorKind::Timeout, shard, message)
    }
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for HostError {}
