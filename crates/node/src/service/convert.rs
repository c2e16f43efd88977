//! Every mapping between the node's own types (ledger, `HostError`) and the proto contract, in
//! one place: codes, request fields, replies.

use crate::error::{ErrorKind, HostError};
use hongbao_ledger::{Code, Outcome, PacketKind, Reply, RequestId, ShardId, Verification};
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

/// A rejected outcome as a status with its domain code (and challenge id, if any).
pub fn rejected(o: &Outcome, shard: ShardId) -> Status {
    let mut d = detail(ledger_code(o.code), o.code.as_str(), shard);
    if let Reply::Challenge { challenge_id } = o.reply {
        d.challenge_id = challenge_id;
        d.message = format!("{}: verify on the account's known device, then re-send with challenge {challenge_id}", o.code.as_str());
    }
    status(d)
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

pub fn statement_entry(e: &hongbao_ledger::StatementEntry) -> hongbao_proto::v1::StatementEntry {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every ledger code, in number order (the exhaustive match in `ledger_code` makes a new code
    /// a compile error there; this list makes it a test failure here until it is added).
    const ALL: [Code; 32] = [
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
