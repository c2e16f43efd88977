//! openraft's storage conformance suite against the real RocksDB log store and state machine.

use crate::raft::log_store::LogStore;
use crate::raft::state_machine::StateMachine;
use crate::raft::types::TypeConfig;
use crate::storage::Db;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;
use std::sync::Arc;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Arc::new(Db::open(&dir.path().join("db")).expect("open rocksdb"));
        // Shard 7 on purpose: keys of other shards must not leak into this one's ranges.
        let log = LogStore::new(db.clone(), 7);
        let sm = StateMachine::open(db, 7, Arc::new(hongbao_ledger::LedgerConfig::default()), &dir.path().join("snap")).expect("open sm");
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes_on_the_rocksdb_store() {
    Suite::test_all(RocksBuilder).await.expect("storage conformance");
}
