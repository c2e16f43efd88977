//! Commands, results and ids: what goes into the Raft log and what comes back.

use crate::money::Cents;
use serde::{Deserialize, Serialize};

/// The ids shared with every other layer (and the packet-id layout) live in `hongbao-ids`.
pub use hongbao_ids::{PacketId, ShardId, UserId};

/// A client-chosen id for a mutating request; retries reuse it.
///
/// Its first 48 bits are the Unix time in ms at which the client first sent it (UUIDv7's
/// layout), so every retry carries the same issue time. The ledger accepts an id only within
/// `dedup_retention_ms` of that time, so it may forget an id once the window has passed: a
/// retry that arrives later is refused as `RequestExpired`, never run a second time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub [u8; 16]);

impl RequestId {
    /// Bits of the issue time at the head of the id.
    pub const TIME_BITS: u32 = 48;

    /// An id issued at `issued_ms` (its low 48 bits) whose other ten bytes are `unique`.
    pub fn new(issued_ms: u64, unique: [u8; 10]) -> RequestId {
        let mut id = [0u8; 16];
        id[..6].copy_from_slice(&issued_ms.to_be_bytes()[2..]);
        id[6..].copy_from_slice(&unique);
        RequestId(id)
    }

    /// When the client first sent this request (Unix ms).
    pub fn issued_ms(&self) -> u64 {
        let mut b = [0u8; 8];
        b[2..].copy_from_slice(&self.0[..6]);
        u64::from_be_bytes(b)
    }
}

/// One replicated command, stamped by the Raft leader with its time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: RequestId,
    /// Leader's wall clock in ms; the ledger clamps it to be monotonic.
    pub time_ms: u64,
    pub cmd: Command,
}

impl std::fmt::Display for Request {
    /// Short form for logs: the request id in hex and the command's name.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.id.0[..8] {
            write!(f, "{b:02x}")?;
        }
        let name = format!("{:?}", self.cmd);
        let name = name.split([' ', '{', '(']).next().unwrap_or("");
        write!(f, " {name}@{}", self.time_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub challenge_id: u64,
    pub code: u32,
}

/// The leader's verdict on the payment PIN (支付密碼) the user typed. The ledger never sees
/// the PIN: the leader checks it against the account's salted hash (`view::pin_state`) with a
/// slow hash outside the state machine, and the ledger counts failures and locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PinCheck {
    Verified,
    Wrong,
}

/// Which kind of spend a challenge was issued for (or the first PIN of a wallet holding money).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChallengeKind {
    Withdraw,
    Transfer,
    SendPacket,
    SetPin,
}

impl ChallengeKind {
    /// Stable tag in the challenge code's MAC input: never renumber.
    pub fn tag(self) -> u8 {
        match self {
            ChallengeKind::Withdraw => 1,
            ChallengeKind::Transfer => 2,
            ChallengeKind::SendPacket => 3,
            ChallengeKind::SetPin => 4,
        }
    }
}

/// The operation a challenge (and its code) is bound to: a code read off the known phone for
/// "withdraw 200.00" cannot confirm "transfer 5,000.00 to someone else".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeOp {
    pub kind: ChallengeKind,
    /// Withdrawal or transfer amount, or the packet's total.
    pub amount: Cents,
    /// Transfer: the receiver; exclusive packet: its recipient; otherwise 0.
    pub counterparty: UserId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RiskGrade {
    Normal,
    Elevated,
    /// May receive, but not send or transfer.
    High,
}

impl RiskGrade {
    pub fn as_str(self) -> &'static str {
        match self {
            RiskGrade::Normal => "normal",
            RiskGrade::Elevated => "elevated",
            RiskGrade::High => "high",
        }
    }
    pub fn parse(s: &str) -> Option<RiskGrade> {
        match s {
            "normal" | "" => Some(RiskGrade::Normal),
            "elevated" => Some(RiskGrade::Elevated),
            "high" => Some(RiskGrade::High),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PacketKind {
    /// `total` split at grab time by the double-average rule.
    Lucky { total: Cents, count: u32 },
    /// `count` shares of `per_share`.
    Fixed { per_share: Cents, count: u32 },
    /// One named recipient takes it all.
    Exclusive { amount: Cents, recipient: UserId, recipient_shard: ShardId },
    /// Lucky split; the grabber must send the phrase. Only its hash salted with the packet's
    /// key (`phrase_hash`) is ever in a command or in state: never the phrase.
    Password { total: Cents, count: u32, phrase_hash: [u8; 32] },
}

/// A password packet's phrase as commands and state hold it: salted with the packet's key (so
/// one table of common phrases does not open every packet) and hashed, never in clear.
pub fn phrase_hash(key: u64, phrase: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"hongbao/packet-phrase/v1\0");
    h.update(key.to_be_bytes());
    h.update(phrase.as_bytes());
    h.finalize().into()
}

/// Why money arrives from another shard.
///
/// Money is never credited to a user without an account: the destination sends it back to the
/// source in its own outbox, the entry's `user` unchanged (the would-be receiver) and the origin
/// turned into its `*Returned` twin, and the source credits whoever paid: `TransferReturned`
/// the transfer's sender `from`; `GrabReturned` the packet's sender, which only the source knows
/// (the packet lives there: `packet.shard()` is the source). A return is never returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    Transfer {
        from: UserId,
    },
    Grab {
        packet: PacketId,
    },
    TransferReturned {
        from: UserId,
    },
    GrabReturned {
        packet: PacketId,
    },
    /// A user's wallet moving with its slot (`Command::MoveSlotOut`): `user` is the wallet,
    /// `amount` its balance (zero allowed), and the entry's `bundle` the rest of it. Applied in
    /// sequence with the pair's credits, so whatever the source forwards for that user after
    /// the bundle lands after it.
    Moved,
    /// A packet's expiry refund for its sender `user`, whose wallet moved off the packet's shard.
    Refund {
        packet: PacketId,
    },
    /// A returned grab share for the packet's sender `user`, whose wallet moved off the packet's
    /// shard (the forwarded twin of `GrabReturned`, which names the grabber).
    ShareReturned {
        packet: PacketId,
        grabber: UserId,
        grabber_shard: ShardId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditEntry {
    /// Per (source, destination) sequence number, contiguous from 1.
    pub seq: u64,
    pub user: UserId,
    pub amount: Cents,
    pub origin: Origin,
    /// `Origin::Moved` only: the wallet's records.
    pub bundle: Option<Box<crate::state::UserBundle>>,
}

impl CreditEntry {
    /// Bytes this entry takes in a relay batch (its encoding).
    pub fn encoded_len(&self) -> usize {
        bincode::serialized_size(self).map(|n| n as usize).unwrap_or(usize::MAX)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    OpenAccount {
        user: UserId,
        device: String,
    },
    TopUp {
        user: UserId,
        amount: Cents,
    },
    Withdraw {
        user: UserId,
        amount: Cents,
        device: String,
        verification: Option<Verification>,
        pin: PinCheck,
    },
    /// `to_shard` is computed by the node from the slot table.
    Transfer {
        from: UserId,
        to: UserId,
        to_shard: ShardId,
        amount: Cents,
        device: String,
        verification: Option<Verification>,
        pin: PinCheck,
    },
    /// `key` is the packet's grab key, drawn at random (non-zero) by the leader: a grab or a
    /// look at the packet must name it, so packet ids cannot be counted through.
    SendPacket {
        sender: UserId,
        kind: PacketKind,
        device: String,
        verification: Option<Verification>,
        greeting: String,
        pin: PinCheck,
        key: u64,
    },
    /// `key` as the grabber was given it with the packet; `phrase` is `phrase_hash(key, ..)` of
    /// the phrase the grabber sent (password packets).
    Grab {
        packet: PacketId,
        key: u64,
        grabber: UserId,
        grabber_shard: ShardId,
        phrase: Option<[u8; 32]>,
    },
    /// Money from another shard's outbox (the relay); idempotent by sequence number.
    Credit {
        source: ShardId,
        entries: Vec<CreditEntry>,
    },
    /// The destination has applied everything up to `up_to_seq`; drop those outbox records.
    MarkDelivered {
        dest: ShardId,
        up_to_seq: u64,
    },
    /// Refund what is left of an expired packet to its sender (the sweeper).
    ExpirePacket {
        packet: PacketId,
    },
    /// Admin: freeze / unfreeze, set the risk grade.
    SetRisk {
        user: UserId,
        frozen: bool,
        grade: RiskGrade,
    },
    /// Risk or admin: the user's tokens issued before `before_s` (Unix seconds) are void, at
    /// every node of the user's shard (a stolen session ends before its token expires).
    RevokeTokens {
        user: UserId,
        before_s: u64,
    },
    /// Sets the payment PIN, once. Carries only the leader's slow salted hash of it. On a
    /// wallet that holds money, only with the code sent to its known device (`verification`).
    SetPin {
        user: UserId,
        salt: [u8; 16],
        hash: [u8; 32],
        verification: Option<Verification>,
    },
    /// The notifier has pushed every challenge notification up to `up_to_seq`; drop them.
    AckNotifications {
        up_to_seq: u64,
    },
    /// Admin, proposed on every shard: leadership stays out of a drained region (placement
    /// reads the mark from applied state, so a restarted node still knows). Last variant: the
    /// variant indexes before it are in existing logs.
    SetDrained {
        region: String,
        drained: bool,
    },
    /// Never proposed: a new leader asks its peers, through the nodes' Propose door, whether
    /// their ledger config has this fingerprint (`LedgerConfig::fingerprint`); the peer answers
    /// at the door and proposes nothing. Applied anyway, it is refused as InvalidArgument.
    ConfigCheck {
        fingerprint: u64,
    },
    /// Admin, proposed on the meta shard (`Topology::meta_shard`): the cluster map's next
    /// version, as the topology file's TOML. Applied only if `version` is the stored one plus
    /// one (compare-and-set: two admins' changes never overwrite each other); the same version
    /// with the same map again is a no-op (a re-send). The ledger stores the bytes and reads
    /// nothing in them: the node validated the map before proposing it.
    SetClusterMap {
        version: u64,
        map: Vec<u8>,
    },
    /// Slot move, on the destination, first: the slot is arriving from `from`. Its users'
    /// commands are refused as SlotMoving (retryable) until `FinishSlotIn`. `slots`: the map's
    /// slot count (`user % slots` names a user's slot).
    MoveSlotIn {
        slot: u32,
        slots: u32,
        from: ShardId,
    },
    /// Slot move, on the source: freezes the slot (its users' commands are refused as
    /// SlotMoving) and sends up to `max_users` of its wallets to `to`, each as an outbox entry
    /// (`Origin::Moved`) with its statements and remembered requests. Re-sent until the reply
    /// says done; then the slot is gone (SlotMoved) and money for its users is forwarded.
    MoveSlotOut {
        slot: u32,
        slots: u32,
        to: ShardId,
        max_users: u32,
    },
    /// Slot move, on the destination, last: once everything `from` sent up to `through_seq`
    /// (the reply of the source's last MoveSlotOut) is applied here, the slot is served here.
    /// Before that: SlotMoving, nothing changed.
    FinishSlotIn {
        slot: u32,
        from: ShardId,
        through_seq: u64,
    },
}

impl Command {
    /// System commands are idempotent by their own state (sequence numbers, packet state) and
    /// are re-sent by the relay, sweeper and notifier; they skip the request-id table.
    pub fn is_system(&self) -> bool {
        matches!(
            self,
            Command::Credit { .. }
                | Command::MarkDelivered { .. }
                | Command::ExpirePacket { .. }
                | Command::AckNotifications { .. }
                | Command::SetDrained { .. }
                | Command::ConfigCheck { .. }
                | Command::SetClusterMap { .. }
                | Command::MoveSlotIn { .. }
                | Command::MoveSlotOut { .. }
                | Command::FinishSlotIn { .. }
        )
    }

    /// The command as its request id remembers it: what the client asked, without what the
    /// leader adds. Its fingerprint names the request, so a replay of an id answers the first
    /// outcome or REQUEST_ID_REUSED by this form alone.
    /// - Shard hints the node adds from its map (a receiver's or grabber's shard) are zeroed: a
    ///   retry routed by a newer map (the receiver's slot moved meanwhile) is the same request.
    /// - The leader's PIN verdict is left out (always `Verified` here), and so is a new PIN's
    ///   hash: if they were in, replaying one id with PIN guesses would tell the right PIN (it
    ///   alone changes the form, answering REQUEST_ID_REUSED) without the ledger ever counting a
    ///   wrong try. Nothing about a PIN may be learnt except through a counted try.
    pub fn for_fingerprint(&self) -> std::borrow::Cow<'_, Command> {
        use std::borrow::Cow;
        let plain = match self {
            Command::Transfer { to_shard, pin, .. } => *to_shard == 0 && *pin == PinCheck::Verified,
            Command::Grab { grabber_shard, .. } => *grabber_shard == 0,
            Command::SendPacket { kind, pin, key, .. } => {
                *pin == PinCheck::Verified
                    && *key == 0
                    && !matches!(kind, PacketKind::Exclusive { recipient_shard, .. } if *recipient_shard != 0)
                    && !matches!(kind, PacketKind::Password { phrase_hash, .. } if *phrase_hash != [0; 32])
            }
            Command::Withdraw { pin, .. } => *pin == PinCheck::Verified,
            Command::SetPin { hash, .. } => *hash == [0; 32],
            _ => true,
        };
        if plain {
            return Cow::Borrowed(self);
        }
        let mut c = self.clone();
        match &mut c {
            Command::Transfer { to_shard, pin, .. } => {
                *to_shard = 0;
                *pin = PinCheck::Verified;
            }
            Command::Grab { grabber_shard, .. } => *grabber_shard = 0,
            Command::SendPacket { kind, pin, key, .. } => {
                *pin = PinCheck::Verified;
                // Drawn anew by whichever leader proposes the re-send; the phrase's hash is
                // salted with it. A replay answers the first packet, key and all.
                *key = 0;
                match kind {
                    PacketKind::Exclusive { recipient_shard, .. } => *recipient_shard = 0,
                    PacketKind::Password { phrase_hash, .. } => *phrase_hash = [0; 32],
                    _ => {}
                }
            }
            Command::Withdraw { pin, .. } => *pin = PinCheck::Verified,
            Command::SetPin { hash, .. } => *hash = [0; 32],
            _ => {}
        }
        Cow::Owned(c)
    }

    /// The user whose wallet this command needs on this shard (the commands a frozen or moved
    /// slot refuses). A grab runs on the packet's shard, so it has none.
    pub fn home_user(&self) -> Option<UserId> {
        match self {
            Command::OpenAccount { user, .. }
            | Command::TopUp { user, .. }
            | Command::Withdraw { user, .. }
            | Command::SetRisk { user, .. }
            | Command::RevokeTokens { user, .. }
            | Command::SetPin { user, .. } => Some(*user),
            Command::Transfer { from, .. } => Some(*from),
            Command::SendPacket { sender, .. } => Some(*sender),
            // Listed, not `_`: a new command must say whose wallet it needs.
            Command::Grab { .. }
            | Command::Credit { .. }
            | Command::MarkDelivered { .. }
            | Command::ExpirePacket { .. }
            | Command::AckNotifications { .. }
            | Command::SetDrained { .. }
            | Command::ConfigCheck { .. }
            | Command::SetClusterMap { .. }
            | Command::MoveSlotIn { .. }
            | Command::MoveSlotOut { .. }
            | Command::FinishSlotIn { .. } => None,
        }
    }

    /// The user a command acts for: request ids are scoped by it, so two users can never
    /// collide on an id nor read each other's remembered outcome. None for system commands.
    pub fn actor(&self) -> Option<UserId> {
        match self {
            Command::Grab { grabber, .. } => Some(*grabber),
            _ => self.home_user(),
        }
    }
}

/// One explicit code per outcome (numbers are stable and mirrored in proto `ErrorCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u32)]
pub enum Code {
    Ok = 0,
    /// An amount (or share, or per-share value) of zero.
    AmountZero = 1,
    /// An amount above the per-operation maximum, or a sum that would overflow.
    AmountOverflow = 2,
    /// Balance lower than amount (+ fee).
    InsufficientFunds = 3,
    /// No such account on this shard.
    UnknownUser = 4,
    /// OpenAccount for an existing account.
    UserExists = 5,
    /// No such packet.
    UnknownPacket = 6,
    /// This user already grabbed this packet.
    AlreadyGrabbed = 7,
    /// Every share is taken.
    PacketExhausted = 8,
    /// The packet expired (and is or will be refunded).
    PacketExpired = 9,
    /// ExpirePacket before the packet's expiry time.
    PacketNotExpired = 10,
    /// Password packet grabbed with the wrong phrase.
    WrongPassword = 11,
    /// Exclusive packet grabbed by someone other than its recipient.
    NotRecipient = 12,
    /// Packet total above the day's limit.
    TotalTooLarge = 13,
    /// Share count outside 1..=max.
    CountOutOfRange = 14,
    /// A share would be below the minimum (1 cent).
    ShareTooSmall = 15,
    /// The account is frozen: it may not send, transfer or withdraw.
    AccountFrozen = 16,
    /// The user's sends today would exceed the daily limit of their risk grade.
    DailyLimitExceeded = 17,
    /// The user's risk grade forbids sending.
    RiskGradeBlocked = 18,
    /// New device above the threshold: re-send with a verification (reply carries the id).
    ChallengeRequired = 19,
    /// The verification does not match a live challenge of this user.
    ChallengeInvalid = 20,
    /// The request id was used before with a different payload.
    RequestIdReused = 21,
    /// Transfer to oneself, or an exclusive packet to oneself.
    SelfTransfer = 22,
    /// Malformed input: empty or too-long strings, user 0, bad batch.
    InvalidArgument = 23,
    /// A credit batch that skips sequence numbers.
    CreditOutOfOrder = 24,
    /// A packet id or user that this shard does not own.
    WrongShard = 25,
    /// A spend before the user set a payment PIN.
    PinNotSet = 26,
    /// The payment PIN was wrong (the failure is counted).
    WrongPin = 27,
    /// Too many wrong PINs: spending is locked until `pin_locked_until_ms`.
    PinLocked = 28,
    /// SetPin on an account that already has one.
    PinAlreadySet = 29,
    /// The request id was issued longer ago than the request window (`dedup_retention_ms`):
    /// whatever an earlier attempt did may be forgotten, so this attempt did nothing. Look the
    /// earlier attempt up in the statement before paying again.
    RequestExpired = 30,
    /// The request id's issue time is further ahead of ledger time than `request_ahead_ms`:
    /// the client's clock is wrong. Nothing was done.
    RequestAhead = 31,
    /// A cluster-map change whose version is not the stored one plus one: it was built on an
    /// older map (another change came first). Read the map again and redo the change.
    ClusterMapStale = 32,
    /// The user's slot is moving between shards: nothing was done; retry shortly (the move
    /// freezes a slot for about a second).
    SlotMoving = 33,
    /// The user's slot moved to another shard: nothing was done here; retry, routed by the
    /// newer map (routers and nodes learn it within a second).
    SlotMoved = 34,
    /// A slot move's page met a user remembering more requests than one move carries
    /// (`MAX_MOVED_REQUESTS`): nothing of that page was sent. Move the slot once older requests
    /// have expired (24 h), or wait: the source's leader tries again.
    MoveTooLarge = 35,
    /// Five wrong phrases from this user for this password packet: no more tries.
    PhraseTriesExhausted = 36,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::AmountZero => "AMOUNT_ZERO",
            Code::AmountOverflow => "AMOUNT_OVERFLOW",
            Code::InsufficientFunds => "INSUFFICIENT_FUNDS",
            Code::UnknownUser => "UNKNOWN_USER",
            Code::UserExists => "USER_EXISTS",
            Code::UnknownPacket => "UNKNOWN_PACKET",
            Code::AlreadyGrabbed => "ALREADY_GRABBED",
            Code::PacketExhausted => "PACKET_EXHAUSTED",
            Code::PacketExpired => "PACKET_EXPIRED",
            Code::PacketNotExpired => "PACKET_NOT_EXPIRED",
            Code::WrongPassword => "WRONG_PASSWORD",
            Code::NotRecipient => "NOT_RECIPIENT",
            Code::TotalTooLarge => "TOTAL_TOO_LARGE",
            Code::CountOutOfRange => "COUNT_OUT_OF_RANGE",
            Code::ShareTooSmall => "SHARE_TOO_SMALL",
            Code::AccountFrozen => "ACCOUNT_FROZEN",
            Code::DailyLimitExceeded => "DAILY_LIMIT_EXCEEDED",
            Code::RiskGradeBlocked => "RISK_GRADE_BLOCKED",
            Code::ChallengeRequired => "CHALLENGE_REQUIRED",
            Code::ChallengeInvalid => "CHALLENGE_INVALID",
            Code::RequestIdReused => "REQUEST_ID_REUSED",
            Code::SelfTransfer => "SELF_TRANSFER",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::CreditOutOfOrder => "CREDIT_OUT_OF_ORDER",
            Code::WrongShard => "WRONG_SHARD",
            Code::PinNotSet => "PIN_NOT_SET",
            Code::WrongPin => "WRONG_PIN",
            Code::PinLocked => "PIN_LOCKED",
            Code::PinAlreadySet => "PIN_ALREADY_SET",
            Code::RequestExpired => "REQUEST_EXPIRED",
            Code::RequestAhead => "REQUEST_AHEAD",
            Code::ClusterMapStale => "CLUSTER_MAP_STALE",
            Code::SlotMoving => "SLOT_MOVING",
            Code::SlotMoved => "SLOT_MOVED",
            Code::MoveTooLarge => "MOVE_TOO_LARGE",
            Code::PhraseTriesExhausted => "PHRASE_TRIES_EXHAUSTED",
        }
    }

    /// A refusal that did nothing because of where the request was sent: it is not remembered
    /// under its request id, so the re-send (here later, or on the new shard) runs it.
    pub fn is_misrouted(self) -> bool {
        matches!(self, Code::SlotMoving | Code::SlotMoved)
    }
}

/// What a command answers; stored for idempotent replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub code: Code,
    pub reply: Reply,
}

impl Outcome {
    pub fn err(code: Code) -> Outcome {
        assert_ne!(code, Code::Ok);
        Outcome { code, reply: Reply::None }
    }
    pub fn ok(reply: Reply) -> Outcome {
        Outcome { code: Code::Ok, reply }
    }
    pub fn is_ok(&self) -> bool {
        self.code == Code::Ok
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    None,
    Wallet {
        user: UserId,
        balance: Cents,
        fee: Cents,
        credit_in_flight: bool,
    },
    Sent {
        packet: PacketId,
        key: u64,
        expires_ms: u64,
        balance: Cents,
    },
    Grabbed {
        packet: PacketId,
        amount: Cents,
        index: u32,
        remaining_count: u32,
        remaining: Cents,
        credit_in_flight: bool,
    },
    Challenge {
        challenge_id: u64,
    },
    Credited {
        applied: u32,
        skipped: u32,
    },
    Delivered {
        records: u32,
        amount: Cents,
    },
    Expired {
        refunded: Cents,
    },
    Risk {
        user: UserId,
        frozen: bool,
        grade: RiskGrade,
    },
    /// Notifications dropped by AckNotifications; `more`: some at or below `up_to_seq` are
    /// left (the per-command bound), ack again.
    Acked {
        records: u32,
        more: bool,
    },
    /// SetDrained applied: the region's mark on this shard now.
    Drained {
        region: String,
        drained: bool,
    },
    /// SetClusterMap applied (or already applied): the stored map's version.
    ClusterMap {
        version: u64,
    },
    /// MoveSlotIn / FinishSlotIn applied (or already).
    SlotIn {
        slot: u32,
    },
    /// MoveSlotOut: wallets sent by this command; `done` once none of the slot's is left here,
    /// with `through_seq` the destination must have applied before it serves the slot.
    SlotOut {
        exported: u32,
        done: bool,
        through_seq: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The node stores these types with bincode: the shared ids must keep their encoding.
    #[test]
    fn shared_ids_keep_their_bincode_encoding() {
        let p = PacketId::new(3, 12_345);
        assert_eq!(bincode::serialize(&p).unwrap(), ((3u64 << 48) | 12_345).to_le_bytes());
        let cmd = Command::Grab { packet: p, key: 9, grabber: 7, grabber_shard: 2, phrase: None };
        let mut want = 5u32.to_le_bytes().to_vec(); // variant index of Grab
        want.extend(p.0.to_le_bytes());
        want.extend(9u64.to_le_bytes());
        want.extend(7u64.to_le_bytes());
        want.extend(2u32.to_le_bytes());
        want.push(0); // None
        assert_eq!(bincode::serialize(&cmd).unwrap(), want);
        assert_eq!(bincode::deserialize::<Command>(&want).unwrap(), cmd);
    }
}
