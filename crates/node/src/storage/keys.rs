//! Key layout of the one RocksDB a node keeps for all its shards (TiKV-style prefixes).
//!
//! Every key starts with `0x01 shard(u32 BE)`, so one shard's data is one contiguous range that
//! can be scanned, snapshotted or deleted on its own. The byte after the shard names the table:
//!
//! | table | key                         | value                                   |
//! |-------|-----------------------------|-----------------------------------------|
//! | `m`   | `m`                         | state machine meta: last applied, membership |
//! | `s`   | `s`                         | meta of the last snapshot built/installed |
//! | `D`   | `D <ledger key>`            | ledger state (the ledger owns its keys)  |
//!
//! The Raft log (entries, votes, commit and purge points) is not here: it has files of its own
//! (`storage::raft_log`).

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
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_keys_stay_inside_their_shard_and_meta_is_outside_the_data_range() {
        let (a, b) = data_range(1);
        assert!(a <= data(1, b"") && data(1, b"\xff\xff") < b);
        assert!(data_range(1).1 <= data_range(2).0);
        for k in [sm_meta(1), snapshot_meta(1)] {
            assert!(k < a || k >= b, "{k:?}");
        }
    }
}
