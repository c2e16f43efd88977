//! hongbao-ids: the identifiers every layer shares, and the one definition of the packet-id
//! layout. A leaf crate (serde only), so the ledger can use it without depending on any other
//! hongbao crate, and router and client can use it without seeing the ledger.

use serde::{Deserialize, Serialize};

/// A wallet owner. Placement: `user % slots` names a slot, the topology's slot table its shard.
pub type UserId = u64;
/// A ledger shard (one Raft group). Fits in the high bits of a packet id: see [`PacketId::MAX_SHARD`].
pub type ShardId = u32;
/// A region node (one `hongbao-node` process) in the topology.
pub type NodeId = u64;

/// A packet id carries the shard that owns the packet in its high 16 bits, so a router finds
/// the packet without a lookup; the low 48 bits are a per-shard sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PacketId(pub u64);

impl PacketId {
    /// Bits of the per-shard sequence (the low bits).
    pub const SEQ_BITS: u32 = 48;
    /// Bits of the shard id (the high bits).
    pub const SHARD_BITS: u32 = u64::BITS - Self::SEQ_BITS;
    /// The largest shard id a packet id can carry.
    pub const MAX_SHARD: ShardId = (1 << Self::SHARD_BITS) - 1;
    /// The largest per-shard sequence a packet id can carry.
    pub const MAX_SEQ: u64 = (1 << Self::SEQ_BITS) - 1;

    /// Panics if `shard` or `seq` does not fit its bits (the topology rejects larger shard ids,
    /// the ledger stops issuing packets before the sequence runs out).
    pub fn new(shard: ShardId, seq: u64) -> PacketId {
        assert!(shard <= Self::MAX_SHARD, "shard id fits 16 bits");
        assert!(seq <= Self::MAX_SEQ, "packet sequence fits 48 bits");
        PacketId(((shard as u64) << Self::SEQ_BITS) | seq)
    }

    /// The shard that owns the packet.
    pub fn shard(self) -> ShardId {
        (self.0 >> Self::SEQ_BITS) as ShardId
    }

    /// The packet's sequence number within its shard.
    pub fn seq(self) -> u64 {
        self.0 & Self::MAX_SEQ
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shard_sits_in_the_high_16_bits_and_the_sequence_in_the_low_48() {
        assert_eq!(PacketId::SHARD_BITS, 16);
        assert_eq!(PacketId::MAX_SHARD, u16::MAX as u32);
        let p = PacketId::new(3, 12_345);
        assert_eq!(p.0, (3u64 << 48) | 12_345);
        assert_eq!((p.shard(), p.seq()), (3, 12_345));
        assert_eq!(PacketId((7u64 << 48) | 1).shard(), 7);
    }

    #[test]
    fn the_extremes_round_trip() {
        for (shard, seq) in [(0, 0), (1, 1), (PacketId::MAX_SHARD, PacketId::MAX_SEQ), (PacketId::MAX_SHARD, 0), (0, PacketId::MAX_SEQ)] {
            let p = PacketId::new(shard, seq);
            assert_eq!((p.shard(), p.seq()), (shard, seq));
        }
        assert_eq!(PacketId::new(PacketId::MAX_SHARD, PacketId::MAX_SEQ).0, u64::MAX);
    }

    #[test]
    fn ids_order_by_shard_then_sequence() {
        assert!(PacketId::new(1, PacketId::MAX_SEQ) < PacketId::new(2, 0));
        assert!(PacketId::new(2, 5) < PacketId::new(2, 6));
    }

    #[test]
    #[should_panic(expected = "shard id fits 16 bits")]
    fn a_shard_beyond_16_bits_is_refused() {
        PacketId::new(PacketId::MAX_SHARD + 1, 0);
    }

    #[test]
    #[should_panic(expected = "packet sequence fits 48 bits")]
    fn a_sequence_beyond_48_bits_is_refused() {
        PacketId::new(1, PacketId::MAX_SEQ + 1);
    }
}
