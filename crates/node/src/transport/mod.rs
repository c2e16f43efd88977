//! The Raft transport between nodes, both halves: `client` sends openraft's messages (and
//! snapshots) to other nodes, `server` hands the ones that arrive to the right shard's Raft.
//! openraft's request/response types travel bincode-encoded in `RaftMessage.payload`.

pub mod client;
pub mod server;

/// gRPC message limit for Raft traffic (a batch of entries plus framing).
pub const MAX_RAFT_MESSAGE: usize = 64 << 20;
