//! hongbao-node: a region node hosting Raft replicas of ledger shards. Each folder is a room
//! with one job; the map is in docs/design.md ("Node").
//!
//! - `host`, `replica`: the replicas hosted here; propose / read, with explicit `error`s.
//! - `raft`, `storage`, `codec`: openraft glue on the node's one RocksDB (and the vote rule of a
//!   replica that rejoins empty, `raft::rejoin`).
//! - `transport`: the node's connections to the other nodes (`peers`: Raft messages, status
//!   probes, map fetches, config checks) and the Raft transport's two halves.
//! - `cluster`: the cluster map this node follows and its online changes: membership, slot
//!   moves, drains and leadership placement policy, per-slot load.
//! - `leader`: what a shard's leader does on its own (sweeper, relay, placement, finishing slot
//!   moves) and a rejoining replica's watch, started from one list by `main`.
//! - `service`: the gRPC services, who may call what (`access`), health, the payment PIN; the
//!   only room that builds proto replies (`service::convert`).
//! - `ops`: the money audit and the gauges sampled for Prometheus.
//! - `config`, `clock`, `faults`, `metrics`, `limits`: used by every room.
//! - `runtime`: where randomness and blocking work come from (the machine's, or `hongbao-sim`'s).

pub mod clock;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod error;
pub mod faults;
pub mod host;
pub mod leader;
pub mod limits;
pub mod metrics;
pub mod ops;
pub mod raft;
pub mod replica;
pub mod runtime;
pub mod service;
pub mod storage;
pub mod transport;
