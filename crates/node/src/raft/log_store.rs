//! Raft log and vote of one shard, in the node's RocksDB (keys from `storage::keys`).
//!
//! Durability: every write here uses a synced WAL write, and openraft is told an append is
//! durable only after that write returns, so an acknowledged entry or a granted vote survives
//! kill -9. RocksDB groups concurrent synced writers into one fsync (group commit), which is what
//! lets many shards and many proposals share the cost of a disk flush.

use crate::raft::types::{Entry, LogId, TypeConfig, Vote};
use crate::storage::{keys, Db};
use hongbao_ledger::ShardId;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::RaftLogReader;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

/// At most this many entries are read in one call, so a follower far behind is fed in bounded
/// pieces instead of one huge read.
const MAX_READ_ENTRIES: usize = 4096;

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Db>,
    shard: ShardId,
}

impl LogStore {
    pub fn new(db: Arc<Db>, shard: ShardId) -> LogStore {
        LogStore { db, shard }
    }

    fn get_json<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self.db.get(key)? {
            Some(v) => Ok(Some(crate::codec::decode(&v)?)),
            None => Ok(None),
        }
    }

    fn last_log_id(&self) -> io::Result<Option<LogId>> {
        let (start, end) = keys::log_range(self.shard);
        match self.db.last_in_range(&start, &end)? {
            Some((_, v)) => {
                let e: Entry = crate::codec::decode(&v)?;
                Ok(Some(e.log_id))
            }
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(&mut self, range: RB) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end_key = match range.end_bound() {
            Bound::Included(x) => keys::log(self.shard, x.saturating_add(1)),
            Bound::Excluded(x) => keys::log(self.shard, *x),
            Bound::Unbounded => keys::log_range(self.shard).1,
        };
        let rows = self.db.scan(&keys::log(self.shard, start), &end_key, MAX_READ_ENTRIES)?;
        let mut out = Vec::with_capacity(rows.len());
        for (k, v) in rows {
            let e: Entry = crate::codec::decode(&v)?;
            debug_assert_eq!(keys::log_index(&k), e.log_id.index);
            out.push(e);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_json(&keys::vote(self.shard))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged: Option<LogId> = self.get_json(&keys::purged(self.shard))?;
        let last = self.last_log_id()?.or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        // Synced: a vote granted and then forgotten by a crash could elect two leaders in a term.
        let mut b = self.db.batch();
        b.put(&keys::vote(self.shard), &crate::codec::encode(vote));
        self.db.write_synced(b)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not synced: losing it only means re-learning the commit index from the leader.
        let mut b = self.db.batch();
        match committed {
            Some(c) => b.put(&keys::committed(self.shard), &crate::codec::encode(&c)),
            None => b.delete(&keys::committed(self.shard)),
        }
        self.db.write_unsynced(b)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        self.get_json(&keys::committed(self.shard))
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut b = self.db.batch();
        for e in entries {
            b.put(&keys::log(self.shard, e.log_id.index), &crate::codec::encode(&e));
        }
        // One synced write for the whole batch: the entries are durable (and readable) when it
        // returns. Off the async workers: the fsync must not stall the node's other work.
        let res = self.db.write_off_runtime(b, true).await;
        let ok = res.is_ok();
        callback.io_completed(res.map_err(|e| io::Error::new(e.kind(), e.to_string())));
        if ok {
            Ok(())
        } else {
            Err(io::Error::other("log append failed"))
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index + 1).unwrap_or(0);
        let mut b = self.db.batch();
        b.delete_range(&keys::log(self.shard, from), &keys::log_range(self.shard).1);
        self.db.write_synced(b)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Record the purge point first, in the same batch: a crash never leaves a hole that the
        // log state would not explain. Synced, because it also makes durable the applied state
        // written before it (the WAL is ordered), and purged entries can't be replayed any more.
        let mut b = self.db.batch();
        b.put(&keys::purged(self.shard), &crate::codec::encode(&log_id));
        b.delete_range(&keys::log(self.shard, 0), &keys::log(self.shard, log_id.index + 1));
        self.db.write_synced(b)
    }
}
