//! Every mapping between the node's own types (ledger, `HostError`) and the proto contract, in
//! one place: codes, request fields, replies.

use crate::error::{ErrorKind, HostError};
use hongbao_ledger::{Cents, Code, Command, Outcome, PacketKind, Reply, RequestId, ShardId, UserId, Verification};
use hongbao_proto::{status, ErrorCode, ErrorDetail};
use tonic::Status;

/// The proto code of a ledger outcome: the same meaning and the same number.
pub fn ledger_code(code: Code) -> ErrorCode {
    match code {
        Code::Ok => ErrorCode::Ok,
        Code::AmountZero => ErrorCode::AmountZero,
        Code::AmountOverflow => ErrorCode::AmountOverflow,
        Code::InsufficientFunds => ErrorCode::InsufficientFunds,
        Code::UnknownUser => ErrorCode::UnknownUser,
        Code::UserExists => ErrorCode::UserExists,
        Code::UnknownPacket => ErrorCode::UnknownPacket,
        Code::AlreadyGrabbed => ErrorCode::AlreadyGrabbed,
        Code::PacketExhausted => ErrorCode::PacketExhausted,
        Code::PacketExpired => ErrorCode::PacketExpired,
        Code::PacketNotExpired => ErrorCode::PacketNotExpired,
        Code::WrongPassword => ErrorCode::WrongPassword,
        Code::NotRecipient => ErrorCode::NotRecipient,
        Code::TotalTooLarge => ErrorCode::TotalTooLarge,
        Code::CountOutOfRange => ErrorCode::CountOutOfRange,
        Code::ShareTooSmall => ErrorCode::ShareTooSmall,
        Code::AccountFrozen => ErrorCode::AccountFrozen,
        Code::DailyLimitExceeded => ErrorCode::DailyLimitExceeded,
        Code::RiskGradeBlocked => ErrorCode::RiskGradeBlocked,
        Code::ChallengeRequired => ErrorCode::ChallengeRequired,
        Code::ChallengeInvalid => ErrorCode::ChallengeInvalid,
        Code::RequestIdReused => ErrorCode::RequestIdReused,
        Code::SelfTransfer => ErrorCode::SelfTransfer,
        Code::InvalidArgument => ErrorCode::InvalidArgument,
        Code::CreditOutOfOrder => ErrorCode::CreditOutOfOrder,
        Code::WrongShard => ErrorCode::WrongShard,
        Code::PinNotSet => ErrorCode::PinNotSet,
        Code::WrongPin => ErrorCode::WrongPin,
        Code::PinLocked => ErrorCode::PinLocked,
        Code::PinAlreadySet => ErrorCode::PinAlreadySet,
        Code::RequestExpired => ErrorCode::RequestExpired,
        Code::RequestAhead => ErrorCode::RequestAhead,
        Code::ClusterMapStale => ErrorCode::ClusterMapStale,
        Code::SlotMoving => ErrorCode::SlotMoving,
        Code::SlotMoved => ErrorCode::SlotMoved,
        Code::MoveTooLarge => ErrorCode::MoveTooLarge,
        Code::PhraseTriesExhausted => ErrorCode::PhraseTriesExhausted,
    }
}

/// The proto code of a node error.
pub fn host_code(kind: ErrorKind) -> ErrorCode {
    match kind {
        ErrorKind::UnknownShard => ErrorCode::UnknownShard,
        ErrorKind::NotLeader => ErrorCode::NotLeader,
        ErrorKind::Unavailable => ErrorCode::Unavailable,
        ErrorKind::Overloaded => ErrorCode::Overloaded,
        ErrorKind::Timeout => ErrorCode::Timeout,
        ErrorKind::InvalidArgument => ErrorCode::InvalidArgument,
        ErrorKind::Ledger(code) => ledger_code(code),
        ErrorKind::Internal => ErrorCode::Internal,
    }
}

/// A domain error detail.
pub fn detail(code: ErrorCode, message: impl Into<String>, shard: ShardId) -> ErrorDetail {
    ErrorDetail { code: code as i32, message: message.into(), shard, ..Default::default() }
}

impl From<HostError> for ErrorDetail {
    fn from(e: HostError) -> ErrorDetail {
        let mut d = detail(host_code(e.kind), e.message, e.shard);
        if let Some((node, addr)) = e.leader {
            d.leader_hint_node = node;
            d.leader_hint_addr = addr;
        }
        d
    }
}

impl From<HostError> for Status {
    fn from(e: HostError) -> Status {
        status(e.into())
    }
}

pub fn invalid(msg: &str) -> Status {
    status(ErrorDetail { code: ErrorCode::InvalidArgument as i32, message: msg.into(), ..Default::default() })
}

pub fn request_id(b: &[u8]) -> Result<RequestId, Status> {
    let arr: [u8; 16] = b.try_into().map_err(|_| invalid("request_id must be exactly 16 bytes"))?;
    if arr == [0u8; 16] {
        return Err(invalid("request_id must not be all zeros"));
    }
    Ok(RequestId(arr))
}

/// Strings are bounded at the boundary, before anything reaches the Raft log.
pub fn bounded<'a>(field: &str, s: &'a str, max: usize) -> Result<&'a str, Status> {
    if s.len() > max {
        return Err(invalid(&format!("{field} is {} bytes; at most {max}", s.len())));
    }
    Ok(s)
}

pub fn verification(v: &Option<hongbao_proto::v1::Verification>) -> Option<Verification> {
    v.as_ref().map(|v| Verification { challenge_id: v.challenge_id, code: v.code })
}

/// A rejected outcome as a status with its domain code (and challenge id, if any), its message
/// saying what happened in words, with the users, packet and amounts of `about`.
pub fn refused(o: &Outcome, shard: ShardId, about: &About) -> Status {
    let mut d = detail(ledger_code(o.code), explain(o.code, about), shard);
    if let Reply::Challenge { challenge_id } = o.reply {
        d.challenge_id = challenge_id;
        d.message = format!("{}: verify on the account's known device, then re-send with challenge {challenge_id}", d.message);
    }
    status(d)
}

/// A rejected outcome with nothing known of its command (a system command's refusal).
pub fn rejected(o: &Outcome, shard: ShardId) -> Status {
    refused(o, shard, &About::default())
}

/// Who and what a refusal is about, for its message (0: not known or not involved).
#[derive(Debug, Clone, Copy, Default)]
pub struct About {
    pub user: UserId,
    pub to: UserId,
    pub packet: u64,
    pub amount: Cents,
    pub count: u32,
}

impl About {
    pub fn user(user: UserId) -> About {
        About { user, ..About::default() }
    }

    pub fn of(cmd: &Command) -> About {
        match cmd {
            Command::OpenAccount { user, .. }
            | Command::SetRisk { user, .. }
            | Command::RevokeTokens { user, .. }
            | Command::SetPin { user, .. } => About::user(*user),
            Command::TopUp { user, amount } | Command::Withdraw { user, amount, .. } => {
                About { user: *user, amount: *amount, ..About::default() }
            }
            Command::Transfer { from, to, amount, .. } => About { user: *from, to: *to, amount: *amount, ..About::default() },
            Command::SendPacket { sender, kind, .. } => {
                let (amount, count, to) = match kind {
                    PacketKind::Lucky { total, count } | PacketKind::Password { total, count, .. } => (*total, *count, 0),
                    PacketKind::Fixed { per_share, count } => (Cents(per_share.0.saturating_mul(*count as u64)), *count, 0),
                    PacketKind::Exclusive { amount, recipient, .. } => (*amount, 1, *recipient),
                };
                About { user: *sender, to, amount, count, ..About::default() }
            }
            Command::Grab { packet, grabber, .. } => About { user: *grabber, packet: packet.0, ..About::default() },
            Command::ExpirePacket { packet } => About { packet: packet.0, ..About::default() },
            Command::Credit { .. }
            | Command::MarkDelivered { .. }
            | Command::AckNotifications { .. }
            | Command::SetDrained { .. }
            | Command::ConfigCheck { .. }
            | Command::SetClusterMap { .. }
            | Command::MoveSlotIn { .. }
            | Command::MoveSlotOut { .. }
            | Command::FinishSlotIn { .. } => About::default(),
        }
    }
}

fn yuan(c: Cents) -> String {
    format!("¥{}.{:02}", c.0 / 100, c.0 % 100)
}

/// What a ledger refusal means, in words a user understands (the code's name stays in the
/// status and the detail's code).
pub fn explain(code: Code, a: &About) -> String {
    let (u, p, amount) = (a.user, a.packet, yuan(a.amount));
    match code {
        Code::Ok => "ok".into(),
        Code::AmountZero => "an amount of ¥0.00 (or a share of nothing) moves no money".into(),
        Code::AmountOverflow => format!("{amount} is above the most one operation may move, or would overflow a balance"),
        Code::InsufficientFunds => format!("user {u} has less than {amount} (with any fee) in the wallet"),
        Code::UnknownUser => format!("no wallet for user {u}: open an account first"),
        Code::UserExists => format!("user {u} already has a wallet"),
        Code::UnknownPacket => format!("there is no packet {p}"),
        Code::AlreadyGrabbed => format!("user {u} already grabbed packet {p}"),
        Code::PacketExhausted => format!("every share of packet {p} is taken"),
        Code::PacketExpired => format!("packet {p} has expired; what was left went back to its sender"),
        Code::PacketNotExpired => format!("packet {p} has not expired yet"),
        Code::WrongPassword => format!("wrong password for packet {p}"),
        Code::NotRecipient => format!("packet {p} is for someone else, not user {u}"),
        Code::TotalTooLarge => format!("a packet of {amount} is above today's limit for one packet"),
        Code::CountOutOfRange => format!("{} shares is outside what one packet may have", a.count),
        Code::ShareTooSmall => format!("{amount} in {} shares leaves a share under ¥0.01", a.count),
        Code::AccountFrozen => format!("user {u}'s wallet is frozen: it may not send, transfer or withdraw"),
        Code::DailyLimitExceeded => format!("sending {amount} would take user {u} over today's limit"),
        Code::RiskGradeBlocked => format!("user {u}'s risk grade does not allow sending"),
        Code::ChallengeRequired => format!("{amount} from a new device needs a code from user {u}'s known device"),
        Code::ChallengeInvalid => format!("the verification does not match a live challenge of user {u}"),
        Code::RequestIdReused => format!("user {u} already used this request id for a different request"),
        Code::SelfTransfer => format!("user {u} cannot pay themselves"),
        Code::InvalidArgument => "the request is malformed".into(),
        Code::CreditOutOfOrder => "a relay batch skipped sequence numbers".into(),
        Code::WrongShard => "the request reached a shard that does not own it".into(),
        Code::PinNotSet => format!("user {u} has no payment PIN yet: set one first"),
        Code::WrongPin => format!("wrong payment PIN for user {u} (counted: too many lock spending)"),
        Code::PinLocked => format!("too many wrong PINs: user {u}'s spending is locked for now"),
        Code::PinAlreadySet => format!("user {u} already has a payment PIN"),
        Code::RequestExpired => "this request id was issued over a day ago: the cluster no longer remembers what it did, and \
            this attempt did nothing; check the statement before sending anew"
            .into(),
        Code::RequestAhead => "this request id's time is ahead of the cluster's clock: check the client's clock".into(),
        Code::ClusterMapStale => "the cluster map changed meanwhile: read it again and redo the change".into(),
        Code::SlotMoving => format!("user {u}'s wallet is moving to another shard: nothing was done; retry in a moment"),
        Code::SlotMoved => format!("user {u}'s wallet moved to another shard: nothing was done here; retry"),
        Code::MoveTooLarge => format!(
            "a user in the slot remembers more than {} requests, more than one move carries: the slot stays until older ones expire",
            hongbao_ledger::MAX_MOVED_REQUESTS
        ),
        Code::PhraseTriesExhausted => {
            format!("user {u} sent {} wrong phrases for packet {p}: it is closed to them", hongbao_ledger::PHRASE_MAX_TRIES)
        }
    }
}

pub fn kind_of(k: &PacketKind) -> hongbao_proto::v1::PacketKind {
    match k {
        PacketKind::Lucky { .. } => hongbao_proto::v1::PacketKind::Lucky,
        PacketKind::Fixed { .. } => hongbao_proto::v1::PacketKind::Fixed,
        PacketKind::Exclusive { .. } => hongbao_proto::v1::PacketKind::Exclusive,
        PacketKind::Password { .. } => hongbao_proto::v1::PacketKind::Password,
    }
}

pub fn claim(c: &hongbao_ledger::Claim) -> hongbao_proto::v1::Claim {
    hongbao_proto::v1::Claim { grabber: c.grabber, amount_cents: c.amount.0, index: c.index, time_ms: c.time_ms }
}

pub fn statement_entry(seq: u64, e: &hongbao_ledger::StatementEntry) -> hongbao_proto::v1::StatementEntry {
    use hongbao_ledger::state::EntryKind as K;
    let (cp_user, packet, cp_shard) = match &e.kind {
        K::TransferOut { to, to_shard } => (*to, 0, *to_shard),
        K::TransferIn { from, from_shard } => (*from, 0, *from_shard),
        K::PacketSend { packet } | K::PacketGrab { packet } | K::PacketRefund { packet } => (0, packet.0, packet.shard()),
        K::TransferReturned { to, to_shard } => (*to, 0, *to_shard),
        // The grabber with no wallet, on its shard; the packet is the sender's own.
        K::GrabReturned { packet, grabber, grabber_shard } => (*grabber, packet.0, *grabber_shard),
        K::TopUp | K::Withdraw { .. } => (0, 0, 0),
    };
    hongbao_proto::v1::StatementEntry {
        time_ms: e.time_ms,
        kind: e.kind.name().into(),
        delta_cents: e.delta,
        balance_after_cents: e.balance_after.0,
        counterparty_user: cp_user,
        packet_id: packet,
        counterparty_shard: cp_shard,
        request_id: e.request.0.to_vec(),
        seq,
    }
}

/// A membership step's result as its answer.
pub fn membership_reply(
    r: Result<crate::cluster::membership::Done, HostError>,
) -> Result<tonic::Response<hongbao_proto::v1::MembershipReply>, Status> {
    let d = r?;
    Ok(tonic::Response::new(hongbao_proto::v1::MembershipReply { map_version: d.map_version, done: d.done }))
}

/// Where a slot move stands, as the MoveSlot answer.
pub fn slot_move_reply(
    r: Result<crate::cluster::slot_move::Progress, HostError>,
) -> Result<tonic::Response<hongbao_proto::v1::MoveSlotReply>, Status> {
    let p = r?;
    Ok(tonic::Response::new(hongbao_proto::v1::MoveSlotReply {
        slot: p.slot,
        from_shard: p.from_shard,
        to_shard: p.to_shard,
        phase: p.phase.to_string(),
        wallets_sent: p.wallets_sent,
        done: p.done,
        map_version: p.map_version,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_is_explained_in_words_naming_who_and_what() {
        let grab = Command::Grab { packet: hongbao_ledger::PacketId(2814), key: 1, grabber: 1002, grabber_shard: 1, phrase: None };
        assert_eq!(explain(Code::AlreadyGrabbed, &About::of(&grab)), "user 1002 already grabbed packet 2814");
        let send = Command::SendPacket {
            sender: 7,
            kind: PacketKind::Fixed { per_share: Cents(1_50), count: 4 },
            device: String::new(),
            verification: None,
            greeting: String::new(),
            pin: hongbao_ledger::PinCheck::Verified,
            key: 1,
        };
        assert_eq!(explain(Code::InsufficientFunds, &About::of(&send)), "user 7 has less than ¥6.00 (with any fee) in the wallet");
        for code in ALL.iter().skip(1) {
            let m = explain(*code, &About::of(&send));
            assert!(!m.contains(code.as_str()) && m.len() > 15, "{code:?}: {m}");
        }
    }

    /// Every ledger code, in number order (the exhaustive match in `ledger_code` makes a new code
    /// a compile error there; this list makes it a test failure here until it is added).
    const ALL: [Code; 37] = [
        Code::Ok,
        Code::AmountZero,
        Code::AmountOverflow,
        Code::InsufficientFunds,
        Code::UnknownUser,
        Code::UserExists,
        Code::UnknownPacket,
        Code::AlreadyGrabbed,
        Code::PacketExhausted,
        Code::PacketExpired,
        Code::PacketNotExpired,
        Code::WrongPassword,
        Code::NotRecipient,
        Code::TotalTooLarge,
        Code::CountOutOfRange,
        Code::ShareTooSmall,
        Code::AccountFrozen,
        Code::DailyLimitExceeded,
        Code::RiskGradeBlocked,
        Code::ChallengeRequired,
        Code::ChallengeInvalid,
        Code::RequestIdReused,
        Code::SelfTransfer,
        Code::InvalidArgument,
        Code::CreditOutOfOrder,
        Code::WrongShard,
        Code::PinNotSet,
        Code::WrongPin,
        Code::PinLocked,
        Code::PinAlreadySet,
        Code::RequestExpired,
        Code::RequestAhead,
        Code::ClusterMapStale,
        Code::SlotMoving,
        Code::SlotMoved,
        Code::MoveTooLarge,
        Code::PhraseTriesExhausted,
    ];

    #[test]
    fn every_ledger_code_maps_to_the_proto_code_of_the_same_number_and_name() {
        for (i, c) in ALL.iter().enumerate() {
            let p = ledger_code(*c);
            assert_eq!(*c as u32, i as u32, "{c:?} is listed in number order");
            assert_eq!(p as i32, *c as u32 as i32, "{c:?} and {p:?} share a number");
            assert_eq!(p.as_str_name(), format!("ERROR_CODE_{}", c.as_str()), "{c:?} and {p:?} share a name");
        }
        // No proto code in the ledger's range is left without a ledger code.
        let ledger_range = (0..100).filter(|i| ErrorCode::try_from(*i).is_ok()).count();
        assert_eq!(ledger_range, ALL.len());
    }

    #[test]
    fn a_not_leader_error_keeps_its_leader_hint_in_the_detail() {
        let e = HostError { kind: ErrorKind::NotLeader, shard: 2, message: "m".into(), leader: Some((3, "127.0.0.1:7103".into())) };
        let d = ErrorDetail::from(e);
        assert_eq!(d.code(), ErrorCode::NotLeader);
        assert_eq!((d.leader_hint_node, d.leader_hint_addr.as_str(), d.shard), (3, "127.0.0.1:7103", 2));
    }
}
