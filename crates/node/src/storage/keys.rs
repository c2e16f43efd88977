//! Key layout of the one RocksDB a node keeps for all its shards (TiKV-style prefixes).
//!
//! Every key starts with `0x01 shard(u32 BE)`, so one shard's data is one contiguous range that
//! can be scanned, snapshotted or deleted on its own. The byte after the shard names the table:
//!
//! | table | key                         | value                                   |
//! |-------|-----------------------------|-----------------------------------------|
//! | `L`   | `L index(u64 BE)`           | Raft log entry (bincode)                |
//! | `v`   | `v`                         | Raft vote                               |
//! | `c`   | `c`                         | last committed log id                   |
//! | `p`   | `p`                         | last purged log id                      |
//! | `m`   | `m`                         | state machine meta: last applied, membership |
//! | `s`   | `s`                         | meta of the last snapshot built/installed |
//! | `D`   | `D <ledger key>`            | ledger state (the ledger owns its keys)  |
//!
//! Big-endian numbers keep log entries in index order for range scans. Raft's own tables (`L`,
//! `v`, `c`, `p`) live in the log column family, the only one written through the WAL; the
//! state tables (`m`, `s`, `D`) are in the default one, written without it and made durable by
//! checkpoints (see `storage::Db`).

use hongbao_ledger::ShardId;

const SHARD_PREFIX: u8 = 0x01;

pub fn shard_prefix(shard: ShardId) -> [u8; 5] {
    let s = shard.to_be_bytes();
    [SHARD_PREFIX, s[0], s[1], s[2], s[3]]
}

fn key(shard: ShardId, table: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(6 + rest.len());
    k.extend_from_slice(&shard_prefix(shard));
    k.push(table);
    k.extend_from_slice(rest);
    k
}

pub fn log(shard: ShardId, index: u64) -> Vec<u8> {
    key(shard, LOG_TABLE, &index.to_be_bytes())
}

/// Whether a key belongs to a shard's Raft log table (a log key, or the start of a log range):
/// those live in the log's own column family.
pub fn is_log(k: &[u8]) -> bool {
    k.len() >= 6 && k[0] == SHARD_PREFIX && k[5] == LOG_TABLE
}

const LOG_TABLE: u8 = b'L';

/// Whether a key (or the start of a range) belongs to one of Raft's own tables: the log, the
/// vote, the committed and the purged log id. Those live in the log column family.
pub fn in_log_cf(k: &[u8]) -> bool {
    k.len() >= 6 && k[0] == SHARD_PREFIX && matches!(k[5], LOG_TABLE | VOTE_TABLE | COMMITTED_TABLE | PURGED_TABLE | REJOIN_TABLE)
}

const VOTE_TABLE: u8 = b'v';
const COMMITTED_TABLE: u8 = b'c';
const PURGED_TABLE: u8 = b'p';
/// A replica still rejoining after an empty start (`raft::rejoin`): durable, so a crash before it
/// caught up does not give it its vote back.
const REJOIN_TABLE: u8 = b'j';

/// Index of a log key, the inverse of [`log`].
pub fn log_index(k: &[u8]) -> u64 {
    assert_eq!(k.len(), 14, "log key has prefix(5) + table(1) + index(8)");
    u64::from_be_bytes(k[6..14].try_into().expect("8 bytes"))
}

pub fn vote(shard: ShardId) -> Vec<u8> {
    key(shard, VOTE_TABLE, &[])
}
pub fn committed(shard: ShardId) -> Vec<u8> {
    key(shard, COMMITTED_TABLE, &[])
}
pub fn purged(shard: ShardId) -> Vec<u8> {
    key(shard, PURGED_TABLE, &[])
}
pub fn rejoining(shard: ShardId) -> Vec<u8> {
    key(shard, REJOIN_TABLE, &[])
}
pub fn sm_meta(shard: ShardId) -> Vec<u8> {
    key(shard, b'm', &[])
}
pub fn snapshot_meta(shard: ShardId) -> Vec<u8> {
    key(shard, b's', &[])
}
pub fn data(shard: ShardId, ledger_key: &[u8]) -> Vec<u8> {
    key(shard, b'D', ledger_key)
}
/// `[start, end)` of a shard's ledger data.
pub fn data_range(shard: ShardId) -> (Vec<u8>, Vec<u8>) {
    (key(shard, b'D', &[]), key(shard, b'D' + 1, &[]))
}
/// `[start, end)` of a shard's log.
pub fn log_range(shard: ShardId) -> (Vec<u8>, Vec<u8>) {
    (key(shard, LOG_TABLE, &[]), key(shard, LOG_TABLE + 1, &[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_by_index_and_stay_inside_their_shard() {
        assert!(log(1, 9) < log(1, 10));
        assert!(log(1, u64::MAX) < log(2, 0));
        let (a, b) = log_range(1);
        assert!(a <= log(1, 0) && log(1, u64::MAX) < b);
        assert_eq!(log_index(&log(7, 123456)), 123456);
        let (a, b) = data_range(1);
        assert!(a <= data(1, b"\xff\xff") && data(1, b"\xff\xff") < b);
        assert!(vote(1) < a || vote(1) >= b);
    }

    #[test]
    fn raft_records_go_to_the_log_column_family_and_state_records_do_not() {
        for k in [log(3, 0), log_range(3).0, vote(3), committed(3), purged(3)] {
            assert!(in_log_cf(&k), "{k:?}");
        }
        for k in [sm_meta(3), snapshot_meta(3), data(3, b"v"), data(3, b""), data_range(3).1] {
            assert!(!in_log_cf(&k), "{k:?}");
        }
        // A log range's end key names the next table, still inside the log column family's
        // order but never one of Raft's other records.
        let (a, b) = log_range(3);
        for k in [vote(3), committed(3), purged(3)] {
            assert!(k < a || k >= b, "{k:?}");
        }
    }

    #[test]
    fn only_log_keys_and_log_range_starts_are_log_keys() {
        assert!(is_log(&log(3, 0)) && is_log(&log(3, u64::MAX)) && is_log(&log_range(3).0));
        assert!(!is_log(&log_range(3).1), "the end of a log range is the next table");
        for k in [vote(3), committed(3), purged(3), sm_meta(3), snapshot_meta(3), data(3, b"L"), data(3, b"")] {
            assert!(!is_log(&k), "{k:?}");
        }
    }
}
