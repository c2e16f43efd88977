//! hongbao-node: a region node hosting Raft replicas of ledger shards.
//!
//! - `storage`: the one RocksDB and its key layout; `codec`: the binary encoding of what is stored and sent.
//! - `raft`: openraft glue: type config, log store, state machine.
//! - `transport`: the Raft transport between nodes, client and server halves; `peers`: the
//!   node-wide connections to other nodes.
//! - `host`: the shards hosted here; propose / read with NotLeader, overload and timeout codes.
//! - `service`: gRPC servers (Raft transport, public API, cluster admin) and background tasks.
//! - `audit`: the cross-shard conservation check.
//! - `faults`: injected transport faults, WAN latency and clock jumps for the chaos suite.

pub mod audit;
pub mod clock;
pub mod codec;
pub mod config;
pub mod error;
pub mod faults;
pub mod host;
pub mod metrics;
pub mod peers;
pub mod placement;
pub mod raft;
pub mod relay;
pub mod replica;
pub mod service;
pub mod storage;
pub mod sweeper;
pub mod tasks;
pub mod transport;
