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

mod log_reads {
    use crate::codec::encode;
    use crate::limits::MAX_APPEND_BYTES;
    use crate::raft::log_store::LogStore;
    use crate::raft::types::{Batch, Entry, TypeConfig};
    use crate::storage::{keys, Db};
    use hongbao_ledger::{Command, Request, RequestId};
    use openraft::entry::RaftEntry;
    use openraft::testing::log_id;
    use openraft::RaftLogReader;
    use std::sync::Arc;

    const SHARD: u32 = 7;

    fn store_entries(db: &Db, entries: impl IntoIterator<Item = Entry>) {
        let mut b = db.batch();
        for e in entries {
            b.put(&keys::log(SHARD, e.log_id.index), &encode(&e));
        }
        db.write_synced(b).unwrap();
    }

    /// One entry carrying one request with a `bytes`-long device string.
    fn big_entry(index: u64, bytes: usize) -> Entry {
        let cmd = Command::OpenAccount { user: index, device: "d".repeat(bytes) };
        let req = Request { id: RequestId::new(0, [index as u8; 10]), time_ms: 0, cmd };
        Entry::new_normal(log_id::<TypeConfig>(1, 1, index), Batch(vec![req], 0))
    }

    /// openraft applies committed entries through `try_get_log_entries`: a capped read (4,096
    /// entries before the fix) would silently skip the rest of a long apply range.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_apply_range_is_read_whole_not_capped() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("db")).unwrap());
        store_entries(&db, (1..=10_000).map(|i| openraft::testing::blank_ent::<TypeConfig>(1, 1, i)));
        let mut log = LogStore::new(db, SHARD);
        let got = log.try_get_log_entries(1..=10_000).await.unwrap();
        assert_eq!(got.len(), 10_000);
        assert!(got.iter().enumerate().all(|(i, e)| e.log_id.index == i as u64 + 1));
    }

    /// Replication reads are bounded by bytes, not by count: large entries never add up to an
    /// AppendEntries over the transport limit, and a read is never empty.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replication_reads_are_bounded_in_bytes_and_never_empty() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("db")).unwrap());
        store_entries(&db, (1..=64).map(|i| big_entry(i, 1 << 20)));
        let mut log = LogStore::new(db, SHARD);
        let got = log.limited_get_log_entries(1, 65).await.unwrap();
        let bytes: usize = got.iter().map(|e| encode(e).len()).sum();
        assert!(!got.is_empty() && got.len() < 64, "stopped early: {} entries", got.len());
        assert!(bytes <= MAX_APPEND_BYTES + (1 << 20) + 1024, "{bytes} bytes read");
        assert!(got.iter().enumerate().all(|(i, e)| e.log_id.index == i as u64 + 1));
        // One entry larger than the budget still comes back alone.
        let one = log.limited_get_log_entries(64, 65).await.unwrap();
        assert_eq!(one.len(), 1);
    }
}
