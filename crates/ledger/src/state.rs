//! Records the ledger keeps (bincode values under the keys of `keys.rs`).

use crate::money::Cents;
use crate::types::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub user: UserId,
    pub balance: Cents,
    pub frozen: bool,
    pub grade: RiskGrade,
    /// The device the account was opened on (never empty: only OpenAccount opens a wallet).
    pub device: String,
    /// Lifetime withdrawn, for the fee-free quota.
    pub withdrawn: Cents,
    /// China day of `sent_today`.
    pub day: u64,
    pub sent_today: Cents,
    /// Statement entries are numbered `stmt_first .. stmt_next`.
    pub stmt_first: u64,
    pub stmt_next: u64,
    /// The payment PIN's salted slow hash (set once by SetPin; None: no spending yet).
    pub pin: Option<PinRecord>,
    /// Wrong PINs in a row since the last lock or successful spend.
    pub pin_failures: u32,
    /// Spends are refused with PinLocked before this time (0: never locked).
    pub pin_locked_until_ms: u64,
    /// This China year's red packets (發出的紅包 / 收到的紅包): what `year` counted so far. Kept
    /// in the account, which every send and grab writes anyway: no extra write in the storm.
    pub packets_year: PacketYear,
    /// China day of `other_devices_today`.
    pub other_devices_day: u64,
    /// Spent that day, without a challenge, from devices other than `device`: the new-device
    /// challenge compares this running sum (not each payment alone) with its threshold, so ten
    /// payments of 99.99 from a new device do not pass where one of 999.90 would not (#28).
    pub other_devices_today: Cents,
    /// The user's tokens issued before this (Unix seconds) are void (`Command::RevokeTokens`):
    /// a node refuses a request carrying one. Only ever moves forward.
    pub tokens_void_before_s: u64,
}

/// Red packets of one user in one China year: sent (whole packets, their totals) and received
/// (shares grabbed, their amounts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketYear {
    pub year: u32,
    pub sent_count: u64,
    pub sent: Cents,
    pub received_count: u64,
    pub received: Cents,
}

impl PacketYear {
    /// The counters as of `year`: a new year starts at zero.
    pub fn as_of(self, year: u32) -> PacketYear {
        if self.year == year {
            self
        } else {
            PacketYear { year, ..PacketYear::default() }
        }
    }

    /// Counts a packet sent in `year` (saturating: a counter, not money).
    pub fn sent_one(self, year: u32, total: Cents) -> PacketYear {
        let y = self.as_of(year);
        PacketYear { sent_count: y.sent_count.saturating_add(1), sent: Cents(y.sent.0.saturating_add(total.0)), ..y }
    }

    /// Counts a share received in `year`.
    pub fn received_one(self, year: u32, amount: Cents) -> PacketYear {
        let y = self.as_of(year);
        PacketYear { received_count: y.received_count.saturating_add(1), received: Cents(y.received.0.saturating_add(amount.0)), ..y }
    }
}

/// What the ledger keeps of a payment PIN: the leader's hash, never the PIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinRecord {
    pub salt: [u8; 16],
    pub hash: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packet {
    pub id: PacketId,
    /// The grab key (`Command::SendPacket`): a grab or a look must name it.
    pub key: u64,
    pub sender: UserId,
    pub kind: PacketKind,
    pub total: Cents,
    pub count: u32,
    pub remaining: Cents,
    pub remaining_count: u32,
    pub seed: u64,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// Set once the remainder went back to the sender.
    pub refunded: Option<Cents>,
    pub greeting: String,
    /// Password packets: grabbers with a wrong-phrase count (`keys::phrase_tries` rows), so
    /// the archive deletes exactly those.
    pub phrase_missers: u32,
}

impl Packet {
    /// Still holds escrow: neither fully grabbed nor refunded.
    pub fn is_open(&self) -> bool {
        self.remaining_count > 0 && self.refunded.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub grabber: UserId,
    pub amount: Cents,
    pub index: u32,
    pub time_ms: u64,
}

/// A settled packet moved out of hot state after `packet_retention_ms`: the packet and its
/// claims in one record (claims in index order), its grab markers and claim records deleted.
/// Statements still find it by id (`view::packet`), and a late grab is still answered by it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedPacket {
    pub packet: Packet,
    pub claims: Vec<Claim>,
}

impl ArchivedPacket {
    /// What a grab of this settled packet is refused with, in the order `Ledger::grab` checks.
    pub fn refusal(&self, grabber: UserId, now_ms: u64) -> crate::types::Code {
        use crate::types::Code;
        assert!(!self.packet.is_open(), "only settled packets are archived");
        if self.claims.iter().any(|c| c.grabber == grabber) {
            Code::AlreadyGrabbed
        } else if now_ms >= self.packet.expires_ms || self.packet.refunded.is_some() {
            Code::PacketExpired
        } else {
            Code::PacketExhausted
        }
    }
}

/// Running aggregates of one shard, updated by every command; the conservation identity is
/// asserted on them after every apply and recomputed from the records by `view::audit`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub balances: Cents,
    pub escrow: Cents,
    pub outbox_pending: Cents,
    pub fees: Cents,
    pub topups: Cents,
    pub withdrawals: Cents,
    pub credits_in: Cents,
    pub credits_out_delivered: Cents,
    pub accounts: u64,
    pub open_packets: u64,
    pub outbox_records: u64,
    /// Highest command time applied: time only moves forward.
    pub last_time_ms: u64,
    pub next_packet_seq: u64,
    /// The last challenge id issued (ids start at 1).
    pub next_challenge: u64,
    /// The seq the next challenge notification gets (0 in a fresh shard stands for 1).
    pub next_notification: u64,
    /// Every notification with seq at or below this was acked and deleted.
    pub notifications_acked: u64,
    /// Notification records written and not yet acked (a stalled notifier shows here; the
    /// challenges are still issued, the user simply waits for the code).
    pub notifications_pending: u64,
    /// No request id is remembered from before this time: until the retention reaches it, the
    /// dedup collection has nothing to do and skips its scan (which would cost every command a
    /// RocksDB seek).
    pub dedup_oldest_ms: u64,
    /// The same bound for the challenge expiry index: no challenge expires before this
    /// (`u64::MAX` while none is live; issuing one lowers it).
    pub challenges_oldest_ms: u64,
    /// The same bound for the archive index: no packet still hot settled before this.
    pub settled_oldest_ms: u64,
    /// Settled packets moved to the archive so far.
    pub archived_packets: u64,
}

impl Totals {
    /// Σ balances + escrow + outbox + fees = top-ups − withdrawals + credits in − credits out,
    /// written without subtraction so it cannot underflow.
    pub fn identity_holds(&self) -> bool {
        let held = self.balances.0 as u128 + self.escrow.0 as u128 + self.outbox_pending.0 as u128 + self.fees.0 as u128;
        held + self.withdrawals.0 as u128 + self.credits_out_delivered.0 as u128 == self.topups.0 as u128 + self.credits_in.0 as u128
    }
}

/// Per shard pair: sequence and cumulative cents (sent to a destination, or received from a source).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairState {
    pub seq: u64,
    pub cents: Cents,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupEntry {
    pub fingerprint: u64,
    pub time_ms: u64,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub user: UserId,
    /// The operation the code confirms; the code itself is never stored (it is recomputed
    /// from the shared `challenge_key`, see `challenge_code`).
    pub op: ChallengeOp,
    pub expires_ms: u64,
    pub used: bool,
    /// Wrong codes (or mismatched operations) tried; at the limit the challenge is dead.
    pub attempts: u32,
}

/// A challenge to push to the user's known device: the notifier reads these in seq order,
/// computes the code with the shared key, pushes it and acks. No code is stored here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub seq: u64,
    pub user: UserId,
    /// The account's known device, where the code goes.
    pub device: String,
    pub challenge_id: u64,
    pub op: ChallengeOp,
    pub expires_ms: u64,
}

/// What moved a balance. `TransferReturned`: a cross-shard transfer came back, `to` has no
/// account on `to_shard`. `GrabReturned`: a share of this user's packet, grabbed from another
/// shard, came back, `grabber` has no account on `grabber_shard`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    TopUp,
    Withdraw { fee: Cents },
    TransferOut { to: UserId, to_shard: ShardId },
    TransferIn { from: UserId, from_shard: ShardId },
    PacketSend { packet: PacketId },
    PacketGrab { packet: PacketId },
    PacketRefund { packet: PacketId },
    TransferReturned { to: UserId, to_shard: ShardId },
    GrabReturned { packet: PacketId, grabber: UserId, grabber_shard: ShardId },
}

impl EntryKind {
    pub fn name(&self) -> &'static str {
        match self {
            EntryKind::TopUp => "topup",
            EntryKind::Withdraw { .. } => "withdraw",
            EntryKind::TransferOut { .. } => "transfer_out",
            EntryKind::TransferIn { .. } => "transfer_in",
            EntryKind::PacketSend { .. } => "packet_send",
            EntryKind::PacketGrab { .. } => "packet_grab",
            EntryKind::PacketRefund { .. } => "packet_refund",
            EntryKind::TransferReturned { .. } => "transfer_returned",
            EntryKind::GrabReturned { .. } => "grab_returned",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementEntry {
    pub time_ms: u64,
    pub kind: EntryKind,
    /// Signed change of the balance in cents.
    pub delta: i64,
    pub balance_after: Cents,
    pub request: RequestId,
}

/// A wallet on its way to another shard (`Origin::Moved`): the account with its balance,
/// daily limit and PIN, its statement (entries `stmt_first..stmt_next`, by seq), and the
/// requests it made that this shard remembers, so a retry on the new shard answers the first
/// outcome. Challenges stay behind (a pending one is asked again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserBundle {
    pub account: Account,
    pub statements: Vec<(u64, StatementEntry)>,
    pub requests: Vec<(RequestId, DedupEntry)>,
}

/// Where one slot stands on this shard while it moves, and after it left. A slot with no
/// state is served here if the map says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlotState {
    /// Frozen, its wallets being sent to `to`; the scan for them has passed `after`.
    Leaving { to: ShardId, after: UserId },
    /// Every wallet it had here went to `to`; money for them is forwarded there.
    Gone { to: ShardId },
    /// Coming from `from`; served here once `FinishSlotIn` says all of it arrived.
    Arriving { from: ShardId },
}

/// The slot states of this shard (one record: read once per batch, a few entries at most).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotTable {
    /// The map's slot count, fixed by the first move (0: no move yet).
    pub slots: u32,
    pub states: std::collections::BTreeMap<u32, SlotState>,
}

impl SlotTable {
    /// The state of `user`'s slot, if any.
    pub fn of(&self, user: UserId) -> Option<SlotState> {
        if self.slots == 0 {
            return None;
        }
        self.states.get(&((user % self.slots as u64) as u32)).copied()
    }
}
