//! openraft glue: the type config (`types`), the log store and state machine on the node's
//! RocksDB, snapshots as SST files, and the vote rule of a replica that starts empty (`rejoin`).

#[cfg(test)]
mod crash_tests;
pub mod log_store;
pub mod rejoin;
pub mod snapshot;
pub mod state_machine;
#[cfg(test)]
mod suite_test;
pub mod types;

/// One shard's Raft group as this node runs it.
pub type Raft = openraft::Raft<types::TypeConfig, state_machine::StateMachine>;
