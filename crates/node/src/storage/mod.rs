//! The node's one RocksDB: every shard's Raft log, vote and ledger state, in shard-prefixed
//! keys (see `keys`). A thin wrapper that turns RocksDB errors into `io::Error` (what openraft's
//! storage traits speak) and makes the sync choice explicit at every write.

pub mod keys;

use rocksdb::{BlockBasedOptions, Cache, Direction, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions, DB};
use std::io;
use std::path::Path;

pub struct Db {
    db: DB,
}

pub fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    bincode::serialize(v).expect("in-memory values always serialize")
}

pub fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> io::Result<T> {
    bincode::deserialize(b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("corrupt value: {e}")))
}

fn io_err(e: rocksdb::Error) -> io::Error {
    io::Error::other(e.to_string())
}

impl Db {
    pub fn open(path: &Path) -> io::Result<Db> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        // Several shards append concurrently: let their synced writes share one WAL fsync.
        opts.set_enable_pipelined_write(true);
        opts.increase_parallelism(2);
        opts.set_max_background_jobs(2);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Flushes write L0 and its first compactions L1: leave those two uncompressed, so a flush
        // costs less CPU (the raft log, most of the volume, is purged before it sinks deeper).
        use rocksdb::DBCompressionType::{Lz4, None as Plain};
        opts.set_compression_per_level(&[Plain, Plain, Lz4, Lz4, Lz4, Lz4, Lz4]);
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
        opts.set_write_buffer_size(64 << 20);
        // Most ledger reads are point lookups that miss (a request id never seen, a grabber who
        // has not grabbed this packet yet): bloom filters, in the tables and in the memtable,
        // answer those without searching every level.
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        table.set_block_cache(&Cache::new_lru_cache(256 << 20));
        table.set_cache_index_and_filter_blocks(true);
        opts.set_block_based_table_factory(&table);
        opts.set_memtable_whole_key_filtering(true);
        opts.set_memtable_prefix_bloom_ratio(0.1);
        let db = DB::open(&opts, path).map_err(io_err)?;
        Ok(Db { db })
    }

    pub fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        self.db.get(key).map_err(io_err)
    }

    /// Up to `limit` pairs in `[start, end)`, ascending.
    pub fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        // The upper bound stops RocksDB itself at `end`, instead of walking on over the
        // tombstones of deleted keys beyond it.
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(end.to_vec());
        for item in self.db.iterator_opt(IteratorMode::From(start, Direction::Forward), ro) {
            let (k, v) = item.map_err(io_err)?;
            if &*k >= end || out.len() >= limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// The last pair in `[start, end)`.
    pub fn last_in_range(&self, start: &[u8], end: &[u8]) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        let mut it = self.db.iterator(IteratorMode::From(end, Direction::Reverse));
        while let Some(item) = it.next() {
            let (k, v) = item.map_err(io_err)?;
            if &*k >= end {
                continue; // `From(end, Reverse)` may start at `end` itself.
            }
            if &*k < start {
                return Ok(None);
            }
            return Ok(Some((k.to_vec(), v.to_vec())));
        }
        Ok(None)
    }

    pub fn batch(&self) -> Batch {
        Batch { wb: WriteBatch::default() }
    }

    /// Durable when it returns: the WAL is fsynced (and with it every earlier write).
    pub fn write_synced(&self, b: Batch) -> io::Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(b.wb, &wo).map_err(io_err)
    }

    /// In the WAL but not yet fsynced: used where a loss is repaired by replaying the Raft log.
    pub fn write_unsynced(&self, b: Batch) -> io::Result<()> {
        self.db.write(b.wb).map_err(io_err)
    }

    /// `write_synced` / `write_unsynced` on the blocking pool. A synced write waits for an fsync,
    /// and an unsynced one can wait in the same RocksDB write group for another's fsync; on the
    /// async workers that would stall every other request of the node meanwhile.
    pub async fn write_off_runtime(self: &std::sync::Arc<Self>, b: Batch, sync: bool) -> io::Result<()> {
        let db = self.clone();
        tokio::task::spawn_blocking(move || if sync { db.write_synced(b) } else { db.write_unsynced(b) })
            .await
            .map_err(|e| io::Error::other(format!("write task: {e}")))?
    }

    /// A consistent point-in-time view (for snapshots and reads that must not tear).
    pub fn snapshot(&self) -> rocksdb::Snapshot<'_> {
        self.db.snapshot()
    }

    pub fn raw(&self) -> &DB {
        &self.db
    }
}

pub struct Batch {
    wb: WriteBatch,
}

impl Batch {
    pub fn put(&mut self, k: &[u8], v: &[u8]) {
        self.wb.put(k, v);
    }
    pub fn delete(&mut self, k: &[u8]) {
        self.wb.delete(k);
    }
    pub fn delete_range(&mut self, from: &[u8], to: &[u8]) {
        self.wb.delete_range(from, to);
    }
    pub fn len(&self) -> usize {
        self.wb.len()
    }
    pub fn is_empty(&self) -> bool {
        self.wb.is_empty()
    }
}
