//! The gRPC contract of hongbao (`proto/hongbao/v1`), generated at build time.
//!
//! `v1` holds the public API (wallet, packets), cluster admin, and the internal Raft transport.

pub mod v1 {
    tonic::include_proto!("hongbao.v1");
}

use prost::Message;
pub use v1::{ErrorCode, ErrorDetail};

impl v1::StatusReply {
    /// The status row of the replica that leads `shard`, as this reply reports it.
    pub fn leader_of(&self, shard: u32) -> Option<&v1::ShardStatus> {
        self.nodes.iter().flat_map(|n| n.shards.iter()).find(|s| s.shard == shard && s.role() == v1::ReplicaRole::Leader)
    }
}

impl v1::ReplicaRole {
    /// The short name people read in tables and logs ("leader", "follower", ...).
    pub fn name(self) -> &'static str {
        match self {
            v1::ReplicaRole::Unspecified => "unknown",
            v1::ReplicaRole::Leader => "leader",
            v1::ReplicaRole::Follower => "follower",
            v1::ReplicaRole::Candidate => "candidate",
            v1::ReplicaRole::Learner => "learner",
            v1::ReplicaRole::Shutdown => "shutdown",
        }
    }
}

/// Most grabs in one router-to-node `Coalesced.Grabs` call.
pub const MAX_GRAB_BATCH: usize = 256;

/// The gRPC status code that best matches a domain code, so generic gRPC tooling behaves
/// sensibly (e.g. retries only on UNAVAILABLE) while hongbao clients read the exact code.
pub fn grpc_code_for(code: ErrorCode) -> tonic::Code {
    use ErrorCode as E;
    match code {
        E::Ok => tonic::Code::Ok,
        E::UnknownUser | E::UnknownPacket | E::UnknownShard => tonic::Code::NotFound,
        E::UserExists | E::AlreadyGrabbed => tonic::Code::AlreadyExists,
        E::AmountZero
        | E::AmountOverflow
        | E::TotalTooLarge
        | E::CountOutOfRange
        | E::ShareTooSmall
        | E::InvalidArgument
        | E::SelfTransfer
        | E::WrongShard => tonic::Code::InvalidArgument,
        E::WrongPassword | E::NotRecipient | E::ChallengeInvalid => tonic::Code::PermissionDenied,
        E::NotLeader | E::Unavailable => tonic::Code::Unavailable,
        E::Overloaded => tonic::Code::ResourceExhausted,
        E::Timeout => tonic::Code::DeadlineExceeded,
        E::Internal => tonic::Code::Internal,
        E::InsufficientFunds
        | E::PacketExhausted
        | E::PacketExpired
        | E::PacketNotExpired
        | E::AccountFrozen
        | E::DailyLimitExceeded
        | E::RiskGradeBlocked
        | E::ChallengeRequired
        | E::RequestIdReused
        | E::CreditOutOfOrder => tonic::Code::FailedPrecondition,
    }
}

/// Builds the status for a domain outcome, carrying an [`ErrorDetail`] in the status details.
pub fn status(detail: ErrorDetail) -> tonic::Status {
    let code = grpc_code_for(detail.code());
    let message = format!("{}: {}", detail.code().as_str_name(), detail.message);
    tonic::Status::with_details(code, message, detail.encode_to_vec().into())
}

/// Shorthand for a status with just a code and message.
pub fn error(code: ErrorCode, message: impl Into<String>) -> tonic::Status {
    status(ErrorDetail { code: code as i32, message: message.into(), ..Default::default() })
}

/// Reads the domain detail back from a status. A status without one (e.g. a transport error)
/// maps to UNAVAILABLE or TIMEOUT, the codes whose outcome is unknown and may be retried.
pub fn detail_of(status: &tonic::Status) -> ErrorDetail {
    if let Ok(d) = ErrorDetail::decode(status.details()) {
        if d.code != 0 {
            return d;
        }
    }
    let code = match status.code() {
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => ErrorCode::Timeout,
        tonic::Code::ResourceExhausted => ErrorCode::Overloaded,
        tonic::Code::Unavailable | tonic::Code::Unknown => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    };
    ErrorDetail { code: code as i32, message: status.message().to_string(), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_detail_survives_a_status_round_trip() {
        let s = status(ErrorDetail {
            code: ErrorCode::NotLeader as i32,
            message: "follower".into(),
            shard: 2,
            leader_hint_node: 3,
            leader_hint_addr: "127.0.0.1:7103".into(),
            challenge_id: 0,
        });
        assert_eq!(s.code(), tonic::Code::Unavailable);
        let d = detail_of(&s);
        assert_eq!(d.code(), ErrorCode::NotLeader);
        assert_eq!(d.leader_hint_node, 3);
        assert_eq!(d.leader_hint_addr, "127.0.0.1:7103");
    }

    #[test]
    fn transport_errors_read_as_retryable_unknown_outcomes() {
        let d = detail_of(&tonic::Status::unavailable("connection refused"));
        assert_eq!(d.code(), ErrorCode::Unavailable);
        let d = detail_of(&tonic::Status::deadline_exceeded("slow"));
        assert_eq!(d.code(), ErrorCode::Timeout);
    }
}
