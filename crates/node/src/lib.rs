//! hongbao-node: a region node hosting Raft replicas of ledger shards.
//!
//! - `storage`: the one RocksDB and its key layout.
//! - `raft`: openraft glue: type config, log store, state machine, network (client side).
//! - `host`: the shards hosted here; propose / read with NotLeader, overload and timeout codes.
//! - `service`: gRPC servers (Raft transport, public API, cluster admin) and background tasks.
//! - `audit`: the cross-shard conservation check.
//! - `faults`: injected transport faults, WAN latency and clock jumps for the chaos suite.

pub mod audit;
pub mod faults;
pub mod host;
pub mod raft;
pub mod service;
pub mod storage;
