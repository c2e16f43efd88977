//! The node's one RocksDB: every shard's Raft log, vote and ledger state, in shard-prefixed
//! keys (see `keys`). A thin wrapper that turns RocksDB errors into `io::Error` (what openraft's
//! storage traits speak) and makes the durability of every write explicit (`Durability`).
//!
//! The Raft log is the only write-ahead log. Raft's records (log entries, vote, committed and
//! purged ids) live in the log column family and go through RocksDB's WAL. The ledger state and
//! the applied index (the state column family, RocksDB's default one) never do: each applied
//! batch goes to the memtable alone and becomes durable at the next `checkpoint` (a flush).
//! RocksDB flushes whole write batches, in order, so what is durable is always the state after
//! some whole applied batch, with its own applied index beside it; after a crash openraft
//! re-applies the log from that index. The log is never purged past it: snapshots, after
//! which openraft purges, checkpoint before they are handed over (docs/design.md, "Storage").

pub mod checkpoint;
pub mod keys;
pub mod shard_store;

pub use shard_store::ShardStore;

use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, BlockBasedTablePinningTier, Cache, ColumnFamily, ColumnFamilyDescriptor, Direction,
    IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};
use std::io;
use std::path::Path;

/// One key-value pair as RocksDB hands it out.
pub type Pair = (Box<[u8]>, Box<[u8]>);

pub struct Db {
    db: DB,
    cache: Cache,
    /// The options the DB was opened with: they hold its statistics (when enabled).
    stats: Options,
}

fn io_err(e: rocksdb::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// Options every column family shares: compression and write buffers.
fn cf_base(db_opts: &Options) -> Options {
    let mut o = db_opts.clone();
    // Flushes write L0 and its first compactions L1: leave those two uncompressed, so a flush
    // costs less CPU (the raft log, most of the volume, is purged before it sinks deeper).
    use rocksdb::DBCompressionType::{Lz4, None as Plain};
    o.set_compression_type(Lz4);
    o.set_compression_per_level(&[Plain, Plain, Lz4, Lz4, Lz4, Lz4, Lz4]);
    o.set_write_buffer_size(64 << 20);
    o
}

/// The ledger's column family. Most ledger reads are point lookups that miss (a request id never
/// seen, a grabber who has not grabbed this packet yet), so they live on bloom filters, and those
/// filters must stay in memory at any data size:
/// - filters and indexes are partitioned (`METADATA_BLOCK_BYTES` each, a two-level index), so no
///   cached block is bigger than a cache shard; one full filter per file is megabytes for a
///   100 MB file, larger than an LRU shard, and was re-read and checksummed on every lookup;
/// - their top levels are pinned, and the partitions are cached at high priority (they are
///   evicted only after data blocks), with L0's pinned as well since L0 is searched file by file.
///
/// Memory: about 1.25 bytes per key of filter (10 bits) plus the index (a few bytes per 4 KiB
/// data block); see docs/design.md for the numbers per GB.
fn data_cf_options(db_opts: &Options, cache: &Cache) -> Options {
    let mut o = cf_base(db_opts);
    let mut t = BlockBasedOptions::default();
    t.set_block_cache(cache);
    t.set_bloom_filter(10.0, false);
    t.set_optimize_filters_for_memory(true);
    t.set_partition_filters(true);
    t.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
    t.set_metadata_block_size(METADATA_BLOCK_BYTES as usize);
    t.set_cache_index_and_filter_blocks(true);
    t.set_cache_index_and_filter_blocks_with_high_priority(true);
    t.set_pin_top_level_index_and_filter(true);
    t.set_top_level_index_pinning_tier(BlockBasedTablePinningTier::All);
    t.set_partition_pinning_tier(BlockBasedTablePinningTier::FlushAndSimilar);
    t.set_unpartitioned_pinning_tier(BlockBasedTablePinningTier::FlushAndSimilar);
    o.set_block_based_table_factory(&t);
    o.set_memtable_whole_key_filtering(true);
    o.set_memtable_prefix_bloom_ratio(0.1);
    o
}

/// The Raft log's column family: read by index ranges (replication, replay) and the last key,
/// never by a lookup that misses, so no filter; its index blocks go through the shared cache.
fn log_cf_options(db_opts: &Options, cache: &Cache) -> Options {
    let mut o = cf_base(db_opts);
    let mut t = BlockBasedOptions::default();
    t.set_block_cache(cache);
    t.set_cache_index_and_filter_blocks(true);
    t.set_cache_index_and_filter_blocks_with_high_priority(true);
    t.set_pin_l0_filter_and_index_blocks_in_cache(true);
    o.set_block_based_table_factory(&t);
    o
}

/// Column family of every shard's Raft log (keys `keys::log`). The log is most of what is
/// written and is purged by range deletes; kept apart, it never sits in the ledger's files, so
/// a ledger lookup searches fewer, smaller files and no log tombstones. Everything else (votes,
/// meta, ledger data) is in the default column family.
const LOG_CF: &str = "raft_log";

/// The column families by name, for their properties (`Db::cf_property_int`; metrics).
pub const COLUMN_FAMILIES: [&str; 2] = [rocksdb::DEFAULT_COLUMN_FAMILY_NAME, LOG_CF];

/// Block cache shared by both column families (data blocks, index and filter partitions).
const BLOCK_CACHE_BYTES: usize = 256 << 20;
/// 2^4 = 16 cache shards of 16 MiB. Every block the tables below put in the cache is small (data
/// blocks of 4 KiB, index and filter partitions of `METADATA_BLOCK_BYTES`), so each fits a shard
/// many times over; a block larger than its shard would be dropped as soon as it was read.
const BLOCK_CACHE_SHARD_BITS: i32 = 4;
/// Target size of one filter or index partition.
const METADATA_BLOCK_BYTES: u64 = 4096;

impl Db {
    /// Opens (or creates) the node's RocksDB. `HONGBAO_ROCKSDB_STATS=1` turns on RocksDB's
    /// statistics (a few % of CPU), for profiling.
    pub fn open(path: &Path) -> io::Result<Db> {
        Db::open_with_statistics(path, std::env::var_os("HONGBAO_ROCKSDB_STATS").is_some())
    }

    pub fn open_with_statistics(path: &Path, statistics: bool) -> io::Result<Db> {
        Db::open_inner(path, statistics, false)
    }

    /// `open`, but closing this `Db` drops the memtables' WAL-less state instead of flushing it:
    /// what a crash does (`raft/crash_tests.rs`, hongbao-sim).
    pub fn open_losing_memtables_on_close(path: &Path) -> io::Result<Db> {
        Db::open_inner(path, false, true)
    }

    fn open_inner(path: &Path, statistics: bool, lose_memtables_on_close: bool) -> io::Result<Db> {
        let mut opts = Options::default();
        if lose_memtables_on_close {
            opts = opts.get_options_from_string("avoid_flush_during_shutdown=true").map_err(io_err)?;
        }
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Several shards append concurrently: let their synced writes share one WAL fsync.
        opts.set_enable_pipelined_write(true);
        opts.increase_parallelism(2);
        opts.set_max_background_jobs(2);
        // Flushes and compactions run at low CPU priority: on a busy box they take the idle
        // cycles instead of stalling request handling (every replica flushes at about the same
        // moment, since they all apply the same writes).
        let mut env = rocksdb::Env::new().map_err(io_err)?;
        env.lower_thread_pool_cpu_priority();
        env.lower_high_priority_thread_pool_cpu_priority();
        opts.set_env(&env);
        // A flush or compaction writes tens of MB; written in one go and then fsynced, it queues
        // the Raft log's small fsyncs behind it (a p99 spike at every flush). Syncing it a MB at a
        // time, at a bounded rate, keeps those fsyncs short.
        opts.set_bytes_per_sync(1 << 20);
        opts.set_ratelimiter(64 << 20, 100_000, 10);
        if statistics {
            opts.enable_statistics();
        }
        let mut cache_opts = rocksdb::LruCacheOptions::default();
        cache_opts.set_capacity(BLOCK_CACHE_BYTES);
        cache_opts.set_num_shard_bits(BLOCK_CACHE_SHARD_BITS);
        let cache = Cache::new_lru_cache_opts(&cache_opts);

        let data = data_cf_options(&opts, &cache);
        let log = log_cf_options(&opts, &cache);
        let cfs = vec![ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, data), ColumnFamilyDescriptor::new(LOG_CF, log)];
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(io_err)?;
        Ok(Db { db, cache, stats: opts })
    }

    fn log_cf(&self) -> &ColumnFamily {
        self.db.cf_handle(LOG_CF).expect("the log column family is created at open")
    }

    /// The column family a key lives in: Raft's records in the log's, the state in the default.
    fn cf_of(&self, key: &[u8]) -> &ColumnFamily {
        if keys::in_log_cf(key) {
            self.log_cf()
        } else {
            self.db.cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME).expect("default column family")
        }
    }

    pub fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        self.get_in(None, key)
    }

    /// `get` as of `at` (a point-in-time view), or of now.
    pub fn get_in(&self, at: Option<&rocksdb::Snapshot<'_>>, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let mut ro = ReadOptions::default();
        if let Some(snap) = at {
            ro.set_snapshot(snap);
        }
        self.db.get_cf_opt(self.cf_of(key), key, &ro).map_err(io_err)
    }

    /// Up to `limit` pairs in `[start, end)`, ascending.
    pub fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.range_in(None, start, end).take(limit).map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec()))).collect()
    }

    /// Every pair in `[start, end)`, ascending, as of `at` or of now; streamed, never collected.
    /// Both bounds name the same column family (a whole range of one table; `end` may be the
    /// first key after it).
    pub fn range_in<'a>(
        &'a self,
        at: Option<&rocksdb::Snapshot<'_>>,
        start: &[u8],
        end: &[u8],
    ) -> impl Iterator<Item = io::Result<Pair>> + 'a {
        // The upper bound stops RocksDB itself at `end`, instead of walking on over the
        // tombstones of deleted keys beyond it.
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(end.to_vec());
        if let Some(snap) = at {
            ro.set_snapshot(snap);
        }
        let end = end.to_vec();
        self.db
            .iterator_cf_opt(self.cf_of(start), ro, IteratorMode::From(start, Direction::Forward))
            .map(|item| item.map_err(io_err))
            .take_while(move |item| item.as_ref().map_or(true, |(k, _)| **k < *end))
    }

    /// The last pair in `[start, end)`.
    pub fn last_in_range(&self, start: &[u8], end: &[u8]) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        // The lower bound stops a reverse walk at `start` (not over a purged log's tombstones).
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(start.to_vec());
        ro.set_iterate_upper_bound(end.to_vec());
        let mut it = self.db.iterator_cf_opt(self.cf_of(start), ro, IteratorMode::End);
        match it.next() {
            Some(item) => {
                let (k, v) = item.map_err(io_err)?;
                assert!(&*k >= start && &*k < end, "iterator bounds hold");
                Ok(Some((k.to_vec(), v.to_vec())))
            }
            None => Ok(None),
        }
    }

    pub fn batch(&self) -> Batch<'_> {
        Batch { wb: WriteBatch::default(), db: self, log_ops: 0, state_ops: 0 }
    }

    /// Writes a batch as `how` says. A batch is all Raft records (through the WAL) or all state
    /// (without it), never both: a state write in the WAL would come back after a crash without
    /// the earlier state it was applied on top of.
    fn write(&self, b: Batch<'_>, how: Durability) -> io::Result<()> {
        self.write_parts(b.wb, b.log_ops, b.state_ops, how)
    }

    fn write_parts(&self, wb: WriteBatch, log_ops: usize, state_ops: usize, how: Durability) -> io::Result<()> {
        let mut wo = WriteOptions::default();
        match how {
            Durability::Synced | Durability::Unsynced => {
                assert_eq!(state_ops, 0, "state keys never go through the WAL");
                wo.set_sync(how == Durability::Synced);
            }
            Durability::Checkpointed => {
                assert_eq!(log_ops, 0, "Raft records always go through the WAL");
                wo.disable_wal(true);
            }
        }
        self.db.write_opt(wb, &wo).map_err(io_err)
    }

    /// Raft records, durable when it returns: the WAL is fsynced (and with it every earlier write).
    pub fn write_synced(&self, b: Batch<'_>) -> io::Result<()> {
        self.write(b, Durability::Synced)
    }

    /// Raft records in the WAL but not yet fsynced: where a loss is re-learned from the leader.
    pub fn write_unsynced(&self, b: Batch<'_>) -> io::Result<()> {
        self.write(b, Durability::Unsynced)
    }

    /// State, without the WAL: durable at the next `checkpoint`.
    pub fn write_state(&self, b: Batch<'_>) -> io::Result<()> {
        self.write(b, Durability::Checkpointed)
    }

    /// `Bug::AppliedIndexAheadOfState`, planted by a simulation only: one state key written
    /// through the WAL, synced, which is exactly what `write_parts` refuses.
    pub(crate) fn planted_synced_state_put(&self, k: &[u8], v: &[u8]) -> io::Result<()> {
        assert!(crate::runtime::planted(crate::runtime::Bug::AppliedIndexAheadOfState));
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.put_cf_opt(self.cf_of(k), k, v, &wo).map_err(io_err)
    }

    /// `write` on the blocking pool. A synced write waits for an fsync, and any other can wait in
    /// the same RocksDB write group for one; on the async workers that would stall every other
    /// request of the node meanwhile.
    pub async fn write_off_runtime(self: &std::sync::Arc<Self>, b: Batch<'_>, how: Durability) -> io::Result<()> {
        let db = self.clone();
        let (wb, log_ops, state_ops) = (b.wb, b.log_ops, b.state_ops);
        crate::runtime::blocking(move || db.write_parts(wb, log_ops, state_ops, how)).await?
    }

    /// Moves `key` (one of Raft's records) from the state column family, where nodes before the
    /// Raft log became the only WAL kept it, into the log's: written there synced first, then
    /// dropped from the state (durable at the next checkpoint; a copy a crash leaves meanwhile
    /// is dropped the next time). Whether there was one to move.
    pub fn adopt_legacy_record(&self, key: &[u8]) -> io::Result<bool> {
        assert!(keys::in_log_cf(key), "only Raft's records move to the log column family");
        let state = self.db.cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME).expect("default column family");
        let Some(old) = self.db.get_cf(state, key).map_err(io_err)? else { return Ok(false) };
        if self.db.get_cf(self.log_cf(), key).map_err(io_err)?.is_none() {
            let mut wb = WriteBatch::default();
            wb.put_cf(self.log_cf(), key, &old);
            self.write_parts(wb, 1, 0, Durability::Synced)?;
        }
        let mut wb = WriteBatch::default();
        wb.delete_cf(state, key);
        self.write_parts(wb, 0, 1, Durability::Checkpointed)?;
        Ok(true)
    }

    /// Makes every state write made so far durable: flushes the state column family's memtables
    /// (whole batches, in order) and waits for the flush. The checkpoint of `docs/design.md`.
    pub fn checkpoint(&self) -> io::Result<()> {
        let cf = self.db.cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME).expect("default column family");
        let mut o = rocksdb::FlushOptions::default();
        o.set_wait(true);
        self.db.flush_cf_opt(cf, &o).map_err(io_err)
    }

    /// A consistent point-in-time view (for snapshots and reads that must not tear). Reads through
    /// it see the default column family: ledger data and meta, not the Raft log.
    pub fn snapshot(&self) -> rocksdb::Snapshot<'_> {
        self.db.snapshot()
    }

    /// A RocksDB statistics counter; 0 unless the node runs with `HONGBAO_ROCKSDB_STATS` set.
    pub fn ticker(&self, t: rocksdb::statistics::Ticker) -> u64 {
        self.stats.get_ticker_count(t)
    }

    /// Bytes the block cache holds now (data blocks, index and filter partitions).
    pub fn block_cache_bytes(&self) -> usize {
        self.cache.get_usage()
    }

    /// Bytes of the block cache pinned (top-level index and filter partitions, L0's).
    pub fn block_cache_pinned_bytes(&self) -> usize {
        self.cache.get_pinned_usage()
    }

    /// A RocksDB integer property of the ledger column family (e.g. `rocksdb.num-files-at-level0`).
    pub fn data_property(&self, name: &str) -> Option<u64> {
        self.db.property_int_value(name).ok().flatten()
    }

    /// A RocksDB integer property of one of `COLUMN_FAMILIES` (e.g. `rocksdb.total-sst-files-size`).
    pub fn cf_property_int(&self, cf: &str, name: &str) -> Option<u64> {
        self.db.property_int_value_cf(self.db.cf_handle(cf)?, name).ok().flatten()
    }

    /// A RocksDB text property of one of `COLUMN_FAMILIES` (e.g. `rocksdb.cf-write-stall-stats`).
    pub fn cf_property(&self, cf: &str, name: &str) -> Option<String> {
        self.db.property_value_cf(self.db.cf_handle(cf)?, name).ok().flatten()
    }

    /// Options for writing SST files of the ledger's column family outside the DB (snapshot
    /// installs): the same table format, filters and compression as the column family's own.
    pub fn data_table_options(&self) -> Options {
        data_cf_options(&self.stats, &self.cache)
    }

    /// Ingests SST files (written with `data_table_options`, keys of the default column family)
    /// in one atomic step: all of them become visible together, above every earlier write, and
    /// where they overlap a later file's keys lie above an earlier one's. The files are moved into
    /// the DB, not copied, when they are on its file system.
    pub fn ingest_data(&self, files: &[std::path::PathBuf]) -> io::Result<()> {
        let mut o = rocksdb::IngestExternalFileOptions::default();
        o.set_move_files(true);
        let cf = self.db.cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME).expect("default column family");
        self.db.ingest_external_file_cf_opts(cf, &o, files.to_vec()).map_err(io_err)
    }

    /// Compacts everything, both column families (tests and tools; not on the request path).
    pub fn compact_all(&self) {
        self.db.compact_range(None::<&[u8]>, None::<&[u8]>);
        self.db.compact_range_cf(self.log_cf(), None::<&[u8]>, None::<&[u8]>);
    }
}

/// Fsyncs a directory, so a rename or a new file in it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// How a write reaches the disk (`Db::write`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Durability {
    /// Raft records through the WAL, fsynced before the write returns.
    Synced,
    /// Raft records through the WAL, not yet fsynced.
    Unsynced,
    /// State without the WAL: durable at the next checkpoint.
    Checkpointed,
}

/// One atomic write. Each operation goes to its key's column family, and counts which kind it is
/// (`Db::write` refuses a batch of both).
pub struct Batch<'a> {
    wb: WriteBatch,
    db: &'a Db,
    log_ops: usize,
    state_ops: usize,
}

impl Batch<'_> {
    fn count(&mut self, k: &[u8]) {
        if keys::in_log_cf(k) {
            self.log_ops += 1;
        } else {
            self.state_ops += 1;
        }
    }
    pub fn put(&mut self, k: &[u8], v: &[u8]) {
        self.count(k);
        self.wb.put_cf(self.db.cf_of(k), k, v);
    }
    pub fn delete(&mut self, k: &[u8]) {
        self.count(k);
        self.wb.delete_cf(self.db.cf_of(k), k);
    }
    /// `[from, to)`, within one column family (`to` may be the first key after a table).
    pub fn delete_range(&mut self, from: &[u8], to: &[u8]) {
        self.count(from);
        self.wb.delete_range_cf(self.db.cf_of(from), from, to);
    }
    pub fn len(&self) -> usize {
        self.wb.len()
    }
    pub fn is_empty(&self) -> bool {
        self.wb.is_empty()
    }
}

#[cfg(test)]
mod tests;
