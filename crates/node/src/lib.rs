//! hongbao-node: a region node hosting Raft replicas of ledger shards. One file per concern;
//! the map is in docs/design.md ("Node").
//!
//! - `host`, `replica`: the replicas hosted here; propose / read with explicit `error`s.
//! - `directory`, `membership`, `slot_move`: the replicated cluster map this node follows, and
//!   its online changes (nodes, replicas, shards, slots).
//! - `raft`, `storage`, `codec`: openraft glue on the node's one RocksDB.
//! - `transport`, `peers`: the Raft transport between nodes and the connections it uses.
//! - `sweeper`, `relay`, `placement` (spawned by `tasks`): what each shard's leader does alone.
//! - `service`: the gRPC API and admin servers, and every proto mapping (`service::convert`).
//! - `access`, `pin`: who may call what (identity from the TLS certificate); the payment PIN.
//! - `health`: grpc.health.v1 status and server reflection, for operators' tools.
//! - `audit`, `config`, `clock`, `faults`, `metrics`, `gauges` (sampled for Prometheus).

pub mod access;
pub mod audit;
pub mod clock;
pub mod codec;
pub mod config;
pub mod directory;
pub mod error;
pub mod faults;
pub mod gauges;
pub mod health;
pub mod host;
pub mod membership;
pub mod metrics;
pub mod peers;
pub mod pin;
pub mod placement;
pub mod raft;
pub mod rejoin;
pub mod relay;
pub mod replica;
pub mod service;
pub mod slot_load;
pub mod slot_move;
pub mod storage;
pub mod sweeper;
pub mod tasks;
pub mod transport;
