//! Storage-level tests on a real RocksDB: what the node's options do once the data has grown.

use super::*;
use hongbao_ledger::keys as lk;
use hongbao_ledger::{PacketId, RequestId};
use rand::{Rng, SeedableRng};
use rocksdb::statistics::Ticker;

const SHARD: u32 = 3;

/// Writes what `grabs` hot-packet grabs leave behind in the ledger's column family, in the
/// ledger's real key shapes: the request id and its expiry index, the grabbed marker and the
/// claim; plus the Raft log entries that carried them (purged as the node does).
fn fill_like_a_grab_storm(db: &Db, grabs: u64, rng: &mut impl Rng) {
    const GRABS_PER_BATCH: u64 = 2_000;
    const GRABS_PER_ENTRY: u64 = 200;
    let mut log_index = 0u64;
    let mut done = 0u64;
    while done < grabs {
        let (mut b, mut log) = (db.batch(), db.batch());
        for g in done..(done + GRABS_PER_BATCH).min(grabs) {
            let packet = PacketId::new(SHARD, g / 100);
            let user = 10_000_000 + rng.gen_range(0..5_000_000u64);
            let id = RequestId(rng.gen());
            let time_ms = 1_800_000_000_000 + g / 10;
            b.put(&keys::data(SHARD, &lk::dedup(user, &id)), &[7u8; 40]);
            b.put(&keys::data(SHARD, &lk::dedup_expiry(time_ms, user, &id)), &[]);
            b.put(&keys::data(SHARD, &lk::grabbed(packet, user)), &((g % 100) as u32).to_be_bytes());
            b.put(&keys::data(SHARD, &lk::claim(packet, (g % 100) as u32)), &[9u8; 32]);
            if g % GRABS_PER_ENTRY == 0 {
                log_index += 1;
                log.put(&keys::log(SHARD, log_index), &vec![5u8; 8_000]);
            }
        }
        // The node purges the log behind its snapshots; here, every 500 entries.
        if log_index.is_multiple_of(500) && log_index > 0 {
            log.delete_range(&keys::log(SHARD, 0), &keys::log(SHARD, log_index.saturating_sub(100)));
        }
        db.write_unsynced(log).unwrap();
        db.write_state(b).unwrap();
        done = (done + GRABS_PER_BATCH).min(grabs);
    }
}

fn sst_files(db: &Db) -> u64 {
    (0..7).map(|l| db.data_property(&format!("rocksdb.num-files-at-level{l}")).unwrap_or(0)).sum()
}

/// Point reads of request ids never seen: each is answered by the filters, and the filters must
/// stay in memory. Before the fix every lookup re-read and checksummed a whole multi-megabyte
/// filter block (larger than a cache shard), so filter-block cache misses grew with the reads.
#[test]
fn absent_key_lookups_do_not_reread_filter_blocks_after_the_data_has_grown() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with_statistics(dir.path(), true).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(18);
    fill_like_a_grab_storm(&db, 2_000_000, &mut rng);
    db.compact_all();
    let files = sst_files(&db);
    assert!(files >= 1, "the data is in SST files, not only the memtable");

    let lookups = |n: u64, rng: &mut rand_chacha::ChaCha8Rng| {
        for _ in 0..n {
            let id = RequestId(rng.gen());
            let user = 10_000_000 + rng.gen_range(0..5_000_000u64);
            assert_eq!(db.get(&keys::data(SHARD, &lk::dedup(user, &id))).unwrap(), None);
        }
    };
    const READS: u64 = 100_000;
    // First pass: the filter partitions come into the cache once.
    let miss0 = db.ticker(Ticker::BlockCacheFilterMiss);
    let useful0 = db.ticker(Ticker::BloomFilterUseful);
    lookups(READS, &mut rng);
    let first_misses = db.ticker(Ticker::BlockCacheFilterMiss) - miss0;
    // Second pass: nothing of the filters is read from the files again.
    let miss1 = db.ticker(Ticker::BlockCacheFilterMiss);
    lookups(READS, &mut rng);
    let second_misses = db.ticker(Ticker::BlockCacheFilterMiss) - miss1;
    let useful = db.ticker(Ticker::BloomFilterUseful) - useful0;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "files {files} ({:.0} MiB of SST), filter misses: first pass {first_misses}, second pass {second_misses}, \
         filter said no {useful} times in {} reads; block cache {:.1} MiB ({:.1} MiB pinned)",
        mib(db.data_property("rocksdb.total-sst-files-size").unwrap_or(0)),
        2 * READS,
        mib(db.block_cache_bytes() as u64),
        mib(db.block_cache_pinned_bytes() as u64),
    );
    // The cause: the lookups were answered by the filters (at least once per read).
    assert!(useful >= 2 * READS * 98 / 100, "filters answered {useful} of {} absent lookups", 2 * READS);
    // The effect: filter reads from disk stay near the number of filter partitions, not reads.
    assert!(first_misses < READS / 10, "{first_misses} filter block misses in {READS} lookups");
    assert!(second_misses <= files, "{second_misses} filter block misses in {READS} warm lookups ({files} files)");
}

/// The log and Raft's records live in their own column family, the ledger data in the default
/// one, and the log range helpers see only log keys.
#[test]
fn log_and_data_keys_round_trip_through_their_own_column_families() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let mut b = db.batch();
    for i in 1..=10 {
        b.put(&keys::log(SHARD, i), &i.to_be_bytes());
    }
    b.put(&keys::vote(SHARD), b"vote");
    db.write_synced(b).unwrap();
    let mut state = db.batch();
    state.put(&keys::data(SHARD, b"a1"), b"v");
    db.write_state(state).unwrap();
    let (start, end) = keys::log_range(SHARD);
    assert_eq!(db.scan(&start, &end, 100).unwrap().len(), 10);
    assert_eq!(db.last_in_range(&start, &end).unwrap().unwrap().0, keys::log(SHARD, 10));
    assert_eq!(db.get(&keys::vote(SHARD)).unwrap().as_deref(), Some(&b"vote"[..]));
    let (ds, de) = keys::data_range(SHARD);
    assert_eq!(db.scan(&ds, &de, 100).unwrap().len(), 1);
    // Purge 1..=7 by a range delete, as the log store does.
    let mut b = db.batch();
    b.delete_range(&keys::log(SHARD, 0), &keys::log(SHARD, 8));
    db.write_synced(b).unwrap();
    let rows = db.scan(&start, &end, 100).unwrap();
    assert_eq!(rows.iter().map(|(k, _)| keys::log_index(k)).collect::<Vec<_>>(), vec![8, 9, 10]);
    assert_eq!(db.get(&keys::data(SHARD, b"a1")).unwrap().as_deref(), Some(&b"v"[..]));
    // Reopen after a checkpoint: both column families come back.
    db.checkpoint().unwrap();
    drop(db);
    let db = Db::open(dir.path()).unwrap();
    assert_eq!(db.last_in_range(&start, &end).unwrap().unwrap().0, keys::log(SHARD, 10));
    assert_eq!(db.get(&keys::data(SHARD, b"a1")).unwrap().as_deref(), Some(&b"v"[..]));
}

/// What a kill -9 leaves on disk, read by a new `Db`: a copy of the directory's files as they
/// are now (written, not necessarily flushed from memtables), opened elsewhere.
fn crashed_copy(from: &Path, to: &Path) -> Db {
    std::fs::create_dir_all(to).unwrap();
    for f in std::fs::read_dir(from).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
    }
    Db::open(to).unwrap()
}

fn state_batch<'a>(db: &'a Db, applied: u8, value: &[u8]) -> Batch<'a> {
    let mut b = db.batch();
    b.put(&keys::data(SHARD, b"k"), value);
    b.put(&keys::data(SHARD, &[b'n', applied]), b"one key per batch");
    b.put(&keys::sm_meta(SHARD), &[applied]);
    b
}

/// The contract of the Raft log as the only WAL: after a crash the state is exactly that of the
/// last checkpoint (whole batches with their applied index, never a part of one and never a
/// later batch without an earlier one), and every Raft record written through the WAL is there.
#[test]
fn a_crash_keeps_the_last_checkpoints_state_whole_and_every_raft_record() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("db")).unwrap();
    db.write_state(state_batch(&db, 1, b"first")).unwrap();
    db.write_state(state_batch(&db, 2, b"second")).unwrap();
    db.checkpoint().unwrap();
    db.write_state(state_batch(&db, 3, b"third")).unwrap();
    let mut raft = db.batch();
    raft.put(&keys::log(SHARD, 3), b"entry 3");
    raft.put(&keys::vote(SHARD), b"vote");
    db.write_synced(raft).unwrap();
    let mut committed = db.batch();
    committed.put(&keys::committed(SHARD), b"3");
    db.write_unsynced(committed).unwrap();
    assert_eq!(db.get(&keys::sm_meta(SHARD)).unwrap().as_deref(), Some(&[3u8][..]), "the live state has batch 3");

    let after = crashed_copy(&dir.path().join("db"), &dir.path().join("after-crash"));
    assert_eq!(after.get(&keys::sm_meta(SHARD)).unwrap().as_deref(), Some(&[2u8][..]), "applied index of the checkpoint");
    assert_eq!(after.get(&keys::data(SHARD, b"k")).unwrap().as_deref(), Some(&b"second"[..]));
    assert!(after.get(&keys::data(SHARD, b"n\x02")).unwrap().is_some() && after.get(&keys::data(SHARD, b"n\x03")).unwrap().is_none());
    assert_eq!(after.get(&keys::log(SHARD, 3)).unwrap().as_deref(), Some(&b"entry 3"[..]), "a synced log entry survives");
    assert_eq!(after.get(&keys::vote(SHARD)).unwrap().as_deref(), Some(&b"vote"[..]));
    assert_eq!(after.get(&keys::committed(SHARD)).unwrap().as_deref(), Some(&b"3"[..]), "written, if not synced");
}

/// A batch of both kinds is refused before anything is written: a state write through the WAL
/// would come back after a crash on top of a state that lacks what it was applied after.
#[test]
#[should_panic(expected = "state keys never go through the WAL")]
fn a_state_key_in_a_wal_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let mut b = db.batch();
    b.put(&keys::log(SHARD, 1), b"entry");
    b.put(&keys::data(SHARD, b"k"), b"v");
    let _ = db.write_synced(b);
}

#[test]
#[should_panic(expected = "Raft records always go through the WAL")]
fn a_raft_record_in_a_state_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let mut b = db.batch();
    b.put(&keys::vote(SHARD), b"vote");
    let _ = db.write_state(b);
}

/// A node from before the Raft log became the only WAL kept its vote, committed and purged ids
/// in the state column family: they move to the log's, once, and nothing is lost on the way.
#[test]
fn a_vote_kept_in_the_state_column_family_by_an_older_node_moves_to_the_log_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let state = db.db.cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME).unwrap();
    db.db.put_cf(state, keys::vote(SHARD), b"old vote").unwrap();
    db.db.put_cf(state, keys::purged(SHARD), b"old purged").unwrap();
    assert_eq!(db.get(&keys::vote(SHARD)).unwrap(), None, "reads of Raft's records go to the log column family");
    assert!(db.adopt_legacy_record(&keys::vote(SHARD)).unwrap());
    assert!(db.adopt_legacy_record(&keys::purged(SHARD)).unwrap());
    assert!(!db.adopt_legacy_record(&keys::committed(SHARD)).unwrap(), "none to move");
    assert!(!db.adopt_legacy_record(&keys::vote(SHARD)).unwrap(), "moved once");
    db.checkpoint().unwrap();
    drop(db);
    let db = Db::open(dir.path()).unwrap();
    assert_eq!(db.get(&keys::vote(SHARD)).unwrap().as_deref(), Some(&b"old vote"[..]));
    assert_eq!(db.get(&keys::purged(SHARD)).unwrap().as_deref(), Some(&b"old purged"[..]));
    let state = db.db.cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME).unwrap();
    assert_eq!(db.db.get_cf(state, keys::vote(SHARD)).unwrap(), None, "the old copy is gone");
}
