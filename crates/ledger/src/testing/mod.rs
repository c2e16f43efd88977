//! Test pieces for the ledger and its callers, behind the `testing` feature: one in-memory
//! world of shards (`World`) that the ledger's tests and the node's audit tests share, and the
//! few commands every such test writes. Pure like the ledger: memory only, no clock, no I/O.
//! Kept in `src/testing/` as TigerBeetle keeps its simulator pieces.

mod world;

pub use world::World;

use crate::{Cents, Command, PacketKind, UserId};

/// Every test packet's grab key (a leader draws a random one).
pub const KEY: u64 = 0x6b65_7921;

/// The worlds' first moment: 2027-01-15, an ordinary day.
pub const T0: u64 = 1_800_000_000_000;

/// What a leader would put in `SetPin`: a salt and a slow hash of the PIN (here fixed bytes).
pub fn set_pin(user: UserId) -> Command {
    Command::SetPin { user, salt: [user as u8; 16], hash: [0x5a; 32], verification: None }
}

/// A lucky packet of `total` cents in `count` shares.
pub fn lucky(total: u64, count: u32) -> PacketKind {
    PacketKind::Lucky { total: Cents(total), count }
}
