//! The ledger's view of one shard's data in the node's RocksDB: ledger keys without the shard
//! prefix, read live or at one point in time.

use crate::storage::{keys, Db};
use hongbao_ledger::ShardId;

pub struct ShardStore<'a> {
    db: &'a Db,
    shard: ShardId,
    /// A RocksDB snapshot to read at; None reads the latest state.
    at: Option<rocksdb::Snapshot<'a>>,
}

impl<'a> ShardStore<'a> {
    /// The shard's latest applied state.
    pub fn live(db: &'a Db, shard: ShardId) -> ShardStore<'a> {
        ShardStore { db, shard, at: None }
    }

    /// The shard at this moment, frozen: every apply batch is one atomic write, so this always
    /// shows the state after some whole applied batch, however long the reader takes.
    pub fn frozen(db: &'a Db, shard: ShardId) -> ShardStore<'a> {
        ShardStore { db, shard, at: Some(db.snapshot()) }
    }
}

impl hongbao_ledger::Store for ShardStore<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        // A read error here would make replicas diverge silently; stop the node instead.
        self.db.get_in(self.at.as_ref(), &keys::data(self.shard, key)).expect("RocksDB read failed")
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let prefix = keys::data(self.shard, &[]).len();
        self.db
            .range_in(self.at.as_ref(), &keys::data(self.shard, start), &keys::data(self.shard, end))
            .take(limit)
            .map(|r| r.map(|(k, v)| (k[prefix..].to_vec(), v.to_vec())))
            .collect::<std::io::Result<_>>()
            .expect("RocksDB scan failed")
    }
}
