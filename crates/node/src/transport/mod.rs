//! This node's connections to the others (`peers`, used by every room that calls another node)
//! and the Raft transport between nodes, both halves: `client` sends openraft's messages (and
//! snapshots) to other nodes, `server` hands the ones that arrive to the right shard's Raft.
//! openraft's request/response types travel bincode-encoded in `RaftMessage.payload`.

pub mod client;
pub mod peers;
pub mod server;
