//! Raft log and vote of one shard, in the node's RocksDB (keys from `storage::keys`).
//!
//! Durability: these records live in the log column family, the only one written through the
//! WAL (`storage`). Every write here but the committed id is a synced WAL write, and openraft is
//! told an append is durable only after that write returns, so an acknowledged entry or a
//! granted vote survives kill -9 and power loss. RocksDB groups concurrent synced writers into one fsync (group commit), which is what
//! lets many shards and many proposals share the cost of a disk flush.

use crate::limits::MAX_APPEND_BYTES;
use crate::raft::types::{Entry, LogId, TypeConfig, Vote};
use crate::storage::{keys, Db, Durability};
use hongbao_ledger::ShardId;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::RaftLogReader;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

const _: () = assert!(MAX_APPEND_BYTES * 2 <= crate::limits::MAX_RAFT_MESSAGE);

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Db>,
    shard: ShardId,
}

impl LogStore {
    pub fn new(db: Arc<Db>, shard: ShardId) -> LogStore {
        LogStore { db, shard }
    }

    /// `new`, after moving this shard's vote, committed and purged ids to the log column family
    /// if an older node left them in the state one (`Db::adopt_legacy_record`).
    pub fn open(db: Arc<Db>, shard: ShardId) -> io::Result<LogStore> {
        let mut moved = false;
        for k in [keys::vote(shard), keys::committed(shard), keys::purged(shard)] {
            moved |= db.adopt_legacy_record(&k)?;
        }
        if moved {
            db.checkpoint()?;
            tracing::info!(shard, "moved the vote, committed and purged ids to the log column family");
        }
        Ok(LogStore { db, shard })
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

impl LogStore {
    /// Entries in `[start, end)` in index order, stopping once `max_bytes` of encoded entries
    /// are read (but never before the first one).
    fn read_entries(&self, start: u64, end_key: &[u8], max_bytes: usize) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut expect = start;
        for item in self.db.range_in(None, &keys::log(self.shard, start), end_key) {
            let (k, v) = item?;
            let e: Entry = crate::codec::decode(&v)?;
            let index = keys::log_index(&k);
            assert_eq!(index, e.log_id.index, "a log entry is stored under its own index");
            // Holes inside the range are corruption, never a short read (openraft's contract).
            if !out.is_empty() && index != expect {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("log hole: expected {expect}, found {index}")));
            }
            expect = index + 1;
            bytes += v.len();
            out.push(e);
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    /// The whole range: openraft's apply path reads committed entries through this, and a
    /// short answer would skip entries on this replica.
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
        self.read_entries(start, &end_key, usize::MAX)
    }

    /// Replication's read: at least one entry, at most about `MAX_APPEND_BYTES`.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, io::Error> {
        self.read_entries(start, &keys::log(self.shard, end), MAX_APPEND_BYTES)
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
        self.db.write_off_runtime(b, Durability::Synced).await
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
        let res = self.db.write_off_runtime(b, Durability::Synced).await;
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
        self.db.write_off_runtime(b, Durability::Synced).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Record the purge point first, in the same batch: a crash never leaves a hole that the
        // log state would not explain. Synced, because it also makes durable the applied state
        // written before it (the WAL is ordered), and purged entries can't be replayed any more.
        let mut b = self.db.batch();
        b.put(&keys::purged(self.shard), &crate::codec::encode(&log_id));
        b.delete_range(&keys::log(self.shard, 0), &keys::log(self.shard, log_id.index + 1));
        self.db.write_off_runtime(b, Durability::Synced).await
    }
}
