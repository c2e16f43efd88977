//! hongbao-ledger: the money rules of hongbao as a pure, deterministic state machine.
//!
//! No I/O, no clock, no threads: the same commands applied to the same state give the same
//! bytes on every replica. The node runs it inside openraft's state machine, backed by RocksDB;
//! tests run it on `MemStore`.
//!
//! - `types`: commands (`Command`), results (`Outcome`, `Code`, `Reply`), ids (`UserId`, `ShardId`
//!   and `PacketId` with its layout come from the leaf crate `hongbao-ids`, re-exported here).
//! - `ledger`: `Ledger::apply`, checks in a fixed order, then an apply phase that must succeed.
//! - `split`: the double-average lucky split.
//! - `view`: read-only queries, the relay's outbox, the sweeper's expired packets, the
//!   notifier's challenge notifications, a user's PIN state, the audit.
//! - `store`: the tiny storage trait (`get`, `scan`) and the `WriteSet` a batch produces.
//! - `challenge`: the one-time code of a new-device challenge (HMAC over the operation).
//! - `keys`, `state`: key layout and records.
//! - `testing` (feature `testing`): the in-memory world of shards the tests of this crate and
//!   the node share.
//!
//! Conservation, per shard, asserted after every command and recomputed by `view::audit`:
//! `Σ balances + escrow + outbox pending + fees = top-ups − withdrawals + credits in − credits out`.

// Amounts are written yuan_fen (200_00 is 200.00 yuan): the grouping is the money, not a typo.
#![allow(clippy::inconsistent_digit_grouping)]

pub mod challenge;
pub mod config;
pub mod keys;
pub mod ledger;
pub mod money;
pub mod split;
pub mod state;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod types;
pub mod view;

pub use challenge::challenge_code;
pub use config::LedgerConfig;
pub use ledger::{Ledger, MAX_CLUSTER_MAP_BYTES, MAX_MOVED_REQUESTS, MAX_MOVE_USERS, PHRASE_MAX_TRIES};
pub use money::Cents;
pub use state::{
    Account, ArchivedPacket, Challenge, Claim, Notification, Packet, PacketYear, PairState, PinRecord, SlotState, SlotTable,
    StatementEntry, Totals, UserBundle,
};
pub use store::{MemStore, Store, WriteSet};
pub use types::*;
