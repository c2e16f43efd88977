//! One shard's view of the node's Raft log (`storage::raft_log`), as openraft's log storage.
//!
//! Durability: appends, votes, truncations and purges are fsynced before openraft hears they
//! are done, so an acknowledged entry or a granted vote survives kill -9. The node's log writer
//! puts every shard's pending writes into one write and one fsync (group commit).

use crate::raft::types::{Entry, LogId, TypeConfig, Vote};
use crate::storage::raft_log::RaftLog;
use crate::storage::Db;
use hongbao_ledger::ShardId;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::RaftLogReader;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

/// Replication reads (`limited_get_log_entries`) stop after this many bytes of entries, so one
/// AppendEntries stays far below the transport's message limit (`MAX_RAFT_MESSAGE`) whatever
/// the entries' sizes: a follower far behind is fed in bounded pieces. Reads for apply
/// (`try_get_log_entries`) must return the whole range and are not bounded.
pub const MAX_APPEND_BYTES: usize = 8 << 20;
const _: () = assert!(MAX_APPEND_BYTES * 2 <= crate::transport::MAX_RAFT_MESSAGE);

#[derive(Clone)]
pub struct LogStore {
    log: Arc<RaftLog>,
    /// The ledger's RocksDB, flushed before a purge (see `purge`).
    db: Arc<Db>,
    shard: ShardId,
}

impl LogStore {
    pub fn new(log: Arc<RaftLog>, db: Arc<Db>, shard: ShardId) -> LogStore {
        LogStore { log, db, shard }
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
            Bound::Included(x) => x.saturating_add(1),
            Bound::Excluded(x) => *x,
            Bound::Unbounded => u64::MAX,
        };
        self.log.entries(self.shard, start, end, usize::MAX)
    }

    /// Replication's read: at least one entry, at most about `MAX_APPEND_BYTES`.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, io::Error> {
        self.log.entries(self.shard, start, end, MAX_APPEND_BYTES)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.log.vote(self.shard))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let (last_purged_log_id, last_log_id) = self.log.log_state(self.shard);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        // Synced: a vote granted and then forgotten by a crash could elect two leaders in a term.
        self.log.save_vote(self.shard, vote).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.log.save_committed(self.shard, committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.log.committed(self.shard))
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        self.log.append(self.shard, entries, callback).await
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        self.log.truncate_after(self.shard, last_log_id).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Applied state is written without RocksDB's WAL (`Durability::Unlogged`): before
        // entries leave the disk, their state must be in table files, or a crash would leave
        // state that no log can rebuild. openraft purges only behind a snapshot, so up to the
        // applied id: a flush of the ledger's memtable covers every purged entry. The flush can
        // take a second, and openraft's core awaits this call (no heartbeats meanwhile), so it
        // runs in the background; until it is done the entries stay on disk.
        self.log.mark_purged(self.shard, log_id);
        let (log, db, shard) = (self.log.clone(), self.db.clone(), self.shard);
        tokio::spawn(async move {
            // One flush at a time, whichever shard asks.
            let _one = log.purge_turn().await;
            let flushed = tokio::task::spawn_blocking(move || db.flush_data()).await;
            let res = match flushed {
                Ok(Ok(())) => log.purge(shard, log_id).await,
                Ok(Err(e)) => Err(e),
                Err(e) => Err(io::Error::other(format!("flush task: {e}"))),
            };
            if let Err(e) = res {
                // The entries stay on disk; the next purge tries again.
                tracing::warn!(shard, upto = %log_id, error = %e, "raft log purge not made durable");
            }
        });
        Ok(())
    }
}
