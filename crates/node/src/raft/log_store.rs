//! Raft log and vote of one shard, in the node's RocksDB (keys from `storage::keys`).
//!
//! Durability: these records live in the log column family, the only one written through the
//! WAL (`storage`). Every write here but the committed id is a synced WAL write, and openraft is
//! told an append is durable only after that write returns, so an acknowledged entry or a
//! granted vote survives kill -9 and power loss. RocksDB groups concurrent synced writers into one fsync (group commit), which is what
//! lets many shards and many proposals share the cost of a disk flush.

use crate::limits::{MAX_APPEND_BYTES, RECENT_ENTRIES, RECENT_ENTRY_BYTES};
use crate::raft::types::{Entry, LogId, TypeConfig, Vote};
use crate::storage::{keys, Db, Durability};
use hongbao_ledger::ShardId;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::RaftLogReader;
use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

const _: () = assert!(MAX_APPEND_BYTES * 2 <= crate::limits::MAX_RAFT_MESSAGE);

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Db>,
    shard: ShardId,
    /// Shared with this store's readers (clones): the same log.
    recent: Arc<Mutex<Recent>>,
}

/// The shard's most recent entries, decoded, as they were appended and made durable: apply
/// (every replica) and replication (the leader) read committed entries right after they were
/// appended, and serving those from here spares a RocksDB read and a decode of each. Always a
/// run of consecutive indexes that ends at the log's last entry, or empty; a read it cannot
/// answer whole goes to RocksDB. Bounded by `RECENT_ENTRIES` and `RECENT_ENTRY_BYTES`.
#[derive(Default)]
struct Recent {
    /// Each entry with its encoded size.
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Recent {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.log_id.index)
    }

    /// Entries just made durable; a gap (a truncation or purge this missed, a restart) starts
    /// the run afresh.
    fn appended(&mut self, new: Vec<(Entry, usize)>) {
        let Some((first, _)) = new.first() else { return };
        if self.last_index().is_some_and(|l| l + 1 != first.log_id.index) {
            self.entries.clear();
            self.bytes = 0;
        }
        for (e, n) in new {
            self.bytes += n;
            self.entries.push_back((e, n));
        }
        while self.entries.len() > RECENT_ENTRIES || (self.bytes > RECENT_ENTRY_BYTES && self.entries.len() > 1) {
            let (_, n) = self.entries.pop_front().expect("not empty");
            self.bytes -= n;
        }
    }

    /// Entries after `index` are gone from the log.
    fn truncated_after(&mut self, index: Option<u64>) {
        while self.last_index().is_some_and(|l| index.is_none_or(|i| l > i)) {
            let (_, n) = self.entries.pop_back().expect("not empty");
            self.bytes -= n;
        }
    }

    /// Entries up to `index` are gone from the log.
    fn purged_up_to(&mut self, index: u64) {
        while self.first_index().is_some_and(|f| f <= index) {
            let (_, n) = self.entries.pop_front().expect("not empty");
            self.bytes -= n;
        }
    }

    /// Entries `[start, end)`, stopping once `max_bytes` of them are taken (but never before the
    /// first); None unless this holds every entry of the range.
    fn read(&self, start: u64, end: u64, max_bytes: usize) -> Option<Vec<Entry>> {
        let (first, last) = (self.first_index()?, self.last_index()?);
        if start >= end || start < first || end > last + 1 {
            return None;
        }
        let from = usize::try_from(start - first).expect("a recent index fits in usize");
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for (e, n) in self.entries.range(from..) {
            if e.log_id.index >= end {
                break;
            }
            debug_assert_eq!(e.log_id.index, start + out.len() as u64, "recent entries are consecutive");
            bytes += n;
            out.push(e.clone());
            if bytes >= max_bytes {
                break;
            }
        }
        Some(out)
    }
}

impl LogStore {
    pub fn new(db: Arc<Db>, shard: ShardId) -> LogStore {
        LogStore { db, shard, recent: Arc::default() }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().expect("recent entries lock")
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
        Ok(LogStore::new(db, shard))
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
        let end = match range.end_bound() {
            Bound::Included(x) => Some(x.saturating_add(1)),
            Bound::Excluded(x) => Some(*x),
            Bound::Unbounded => None,
        };
        if let Some(found) = end.and_then(|end| self.recent().read(start, end, usize::MAX)) {
            return Ok(found);
        }
        let end_key = match end {
            Some(end) => keys::log(self.shard, end),
            None => keys::log_range(self.shard).1,
        };
        self.read_entries(start, &end_key, usize::MAX)
    }

    /// Replication's read: at least one entry, at most about `MAX_APPEND_BYTES`.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, io::Error> {
        if let Some(found) = self.recent().read(start, end, MAX_APPEND_BYTES) {
            return Ok(found);
        }
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
        let mut recent = Vec::new();
        for e in entries {
            let bytes = crate::codec::encode(&e);
            b.put(&keys::log(self.shard, e.log_id.index), &bytes);
            recent.push((e, bytes.len()));
        }
        // One synced write for the whole batch: the entries are durable (and readable) when it
        // returns. Off the async workers: the fsync must not stall the node's other work.
        let res = self.db.write_off_runtime(b, Durability::Synced).await;
        let ok = res.is_ok();
        if ok {
            // Before openraft hears of it, so that applying them finds them here.
            self.recent().appended(recent);
        }
        callback.io_completed(res.map_err(|e| io::Error::new(e.kind(), e.to_string())));
        if ok {
            Ok(())
        } else {
            Err(io::Error::other("log append failed"))
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index + 1).unwrap_or(0);
        // Out of memory first: no read may find an entry the log is losing.
        self.recent().truncated_after(last_log_id.map(|l| l.index));
        let mut b = self.db.batch();
        b.delete_range(&keys::log(self.shard, from), &keys::log_range(self.shard).1);
        self.db.write_off_runtime(b, Durability::Synced).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Record the purge point first, in the same batch: a crash never leaves a hole that the
        // log state would not explain. Synced: purged entries can't be replayed any more. The
        // state they built is durable already: openraft purges only behind a snapshot, and the
        // snapshot builder checkpoints before handing one over (`storage`).
        self.recent().purged_up_to(log_id.index);
        let mut b = self.db.batch();
        b.put(&keys::purged(self.shard), &crate::codec::encode(&log_id));
        b.delete_range(&keys::log(self.shard, 0), &keys::log(self.shard, log_id.index + 1));
        self.db.write_off_runtime(b, Durability::Synced).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::Batch;
    use openraft::entry::RaftEntry;
    use openraft::testing::log_id;

    fn entry(index: u64) -> (Entry, usize) {
        (Entry::new_normal(log_id::<crate::raft::types::TypeConfig>(1, 1, index), Batch(vec![], 0)), 100)
    }

    fn indexes(v: &[Entry]) -> Vec<u64> {
        v.iter().map(|e| e.log_id.index).collect()
    }

    /// The recent entries answer only ranges they hold whole; appends after a gap, truncations
    /// and purges keep them one consecutive run ending at the log's last entry.
    #[test]
    fn recent_entries_answer_only_whole_ranges_and_follow_truncations_and_purges() {
        let mut r = Recent::default();
        r.appended((5..=9).map(entry).collect());
        assert_eq!(indexes(&r.read(6, 9, usize::MAX).expect("held")), vec![6, 7, 8]);
        assert!(r.read(4, 7, usize::MAX).is_none(), "4 is not held");
        assert!(r.read(8, 11, usize::MAX).is_none(), "10 is not held");
        assert_eq!(indexes(&r.read(5, 10, 250).expect("held")), vec![5, 6, 7], "stops once 250 bytes are taken");
        r.truncated_after(Some(7));
        assert_eq!(r.last_index(), Some(7));
        r.appended(vec![entry(8)]);
        assert_eq!(indexes(&r.read(5, 9, usize::MAX).expect("held")), vec![5, 6, 7, 8]);
        r.appended(vec![entry(20)]);
        assert_eq!((r.first_index(), r.last_index()), (Some(20), Some(20)), "a gap starts afresh");
        r.purged_up_to(20);
        assert!(r.read(20, 21, usize::MAX).is_none() && r.bytes == 0);
        r.appended((1..=(RECENT_ENTRIES as u64 + 10)).map(entry).collect());
        assert_eq!(r.entries.len(), RECENT_ENTRIES, "bounded");
        assert_eq!(r.first_index(), Some(11));
    }
}
