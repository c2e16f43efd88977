//! The gRPC contract of hongbao (`proto/hongbao/v1`), generated at build time.
//!
//! `v1` holds the public API (wallet, packets), cluster admin, and the internal Raft transport.

pub mod v1 {
    tonic::include_proto!("hongbao.v1");
}

/// Every `hongbao.v1` file, encoded as a `google.protobuf.FileDescriptorSet` (from the same
/// protox compile as the generated code): what server reflection serves.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hongbao_descriptor.bin"));
/// `google.rpc.Status` and the standard error details (ErrorInfo, RetryInfo, ...) with their
/// imports: served by reflection too, so a generic client (grpcurl) can print every detail an
/// error carries.
pub const GOOGLE_RPC_FILE_DESCRIPTOR_SET: &[u8] = tonic_types::pb::FILE_DESCRIPTOR_SET;

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

/// What a caller (the router, or a client) does with an answer carrying `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryStep {
    /// The outcome of the operation: success or a domain refusal. Never re-sent.
    Final,
    /// Not the leader; the detail's hint says who is (when it is empty: `Elsewhere`).
    FollowHint,
    /// No outcome from this endpoint (no leader yet, timed out, does not host the shard, failed
    /// inside): re-send the same request, with the same request id, elsewhere or later. The
    /// operation may or may not have been applied until an answer says which.
    Elsewhere,
    /// Too much in flight: nothing was applied; the original caller backs off and re-sends
    /// with the same request id (a router passes this back rather than adding load).
    BackOff,
}

/// The one retry policy for every error code, shared by routers and clients. During elections
/// and failovers only `Final` answers may end a call: a node that hosts no replica of the
/// shard, or that lost its leader, says nothing about the operation.
pub fn retry_step(code: ErrorCode) -> RetryStep {
    use ErrorCode as E;
    match code {
        E::NotLeader => RetryStep::FollowHint,
        E::Overloaded | E::RateLimited | E::SlotMoving | E::SlotMoved => RetryStep::BackOff,
        E::Unavailable | E::Timeout | E::UnknownShard | E::Internal => RetryStep::Elsewhere,
        E::Ok
        | E::AmountZero
        | E::AmountOverflow
        | E::InsufficientFunds
        | E::UnknownUser
        | E::UserExists
        | E::UnknownPacket
        | E::AlreadyGrabbed
        | E::PacketExhausted
        | E::PacketExpired
        | E::PacketNotExpired
        | E::WrongPassword
        | E::NotRecipient
        | E::TotalTooLarge
        | E::CountOutOfRange
        | E::ShareTooSmall
        | E::AccountFrozen
        | E::DailyLimitExceeded
        | E::RiskGradeBlocked
        | E::ChallengeRequired
        | E::ChallengeInvalid
        | E::RequestIdReused
        | E::SelfTransfer
        | E::InvalidArgument
        | E::CreditOutOfOrder
        | E::WrongShard
        | E::PinNotSet
        | E::WrongPin
        | E::PinLocked
        | E::PinAlreadySet
        | E::RequestExpired
        | E::RequestAhead
        | E::ClusterMapStale
        | E::MoveTooLarge
        | E::PhraseTriesExhausted
        // The caller's credentials decide these: re-sending the same request changes nothing.
        | E::PermissionDenied
        | E::Unauthenticated => RetryStep::Final,
    }
}

/// Most grabs in one router-to-node `Coalesced.Grabs` call.
pub const MAX_GRAB_BATCH: usize = 256;

/// The one size limit of a request of the public API, checked where it enters (the router) and
/// again at the node, per request and per member of a coalesced grab batch: a request the router
/// took is never refused later for its size, so one caller's large grab cannot fail a batch.
pub const MAX_REQUEST_BYTES: usize = 16 << 10;

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
        E::WrongPassword | E::NotRecipient | E::ChallengeInvalid | E::WrongPin | E::PermissionDenied => tonic::Code::PermissionDenied,
        E::Unauthenticated => tonic::Code::Unauthenticated,
        E::RateLimited => tonic::Code::ResourceExhausted,
        E::PinAlreadySet => tonic::Code::AlreadyExists,
        E::NotLeader | E::Unavailable | E::SlotMoving | E::SlotMoved => tonic::Code::Unavailable,
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
        | E::RequestExpired
        | E::RequestAhead
        | E::ClusterMapStale
        | E::MoveTooLarge
        | E::PhraseTriesExhausted
        | E::PinNotSet
        | E::PinLocked
        | E::CreditOutOfOrder => tonic::Code::FailedPrecondition,
    }
}

/// `Any.type_url` of an [`ErrorDetail`] inside a `google.rpc.Status`.
pub const ERROR_DETAIL_TYPE_URL: &str = "type.googleapis.com/hongbao.v1.ErrorDetail";
/// `google.rpc.ErrorInfo.domain` of every hongbao error.
pub const ERROR_DOMAIN: &str = "hongbao";

/// The code's name without its enum prefix (`ALREADY_GRABBED`): `google.rpc.ErrorInfo.reason`.
pub fn reason(code: ErrorCode) -> &'static str {
    let name = code.as_str_name();
    name.strip_prefix("ERROR_CODE_").unwrap_or(name)
}

/// How long a caller told to back off (OVERLOADED, RATE_LIMITED) should wait before re-sending
/// with the same request id: `google.rpc.RetryInfo.retry_delay`. None for every other code.
pub fn retry_delay(code: ErrorCode) -> Option<std::time::Duration> {
    match code {
        // Queues drain in a few commit rounds.
        ErrorCode::Overloaded => Some(std::time::Duration::from_millis(100)),
        // Per-user token buckets refill at tens per second: wait for a few tokens.
        ErrorCode::RateLimited => Some(std::time::Duration::from_millis(250)),
        // A move freezes a slot for about a second; routers and nodes learn a new map within one.
        ErrorCode::SlotMoving | ErrorCode::SlotMoved => Some(std::time::Duration::from_millis(200)),
        _ => None,
    }
}

/// Builds the status for a domain outcome, the gRPC way: `grpc-status-details-bin` holds a
/// `google.rpc.Status` with the call's code and message whose `details` are the [`ErrorDetail`]
/// (an `Any` of [`ERROR_DETAIL_TYPE_URL`]), a `google.rpc.ErrorInfo` (reason = the code's name,
/// domain [`ERROR_DOMAIN`]) and, for codes that ask the caller to back off, a
/// `google.rpc.RetryInfo`. Generic clients (grpcurl, grpc-go's `status.FromError`, Python's
/// `grpc_status`) read code, message, reason and retry delay; hongbao's read the detail
/// ([`detail_of`]).
pub fn status(detail: ErrorDetail) -> tonic::Status {
    let code = grpc_code_for(detail.code());
    let message = format!("{}: {}", detail.code().as_str_name(), detail.message);
    let details = rpc_status(code, &message, &detail).encode_to_vec();
    tonic::Status::with_details(code, message, details.into())
}

/// The `google.rpc.Status` that [`status`] puts in the trailer.
fn rpc_status(code: tonic::Code, message: &str, detail: &ErrorDetail) -> tonic_types::Status {
    use prost_types::Any;
    let domain_code = detail.code();
    let mut metadata = std::collections::HashMap::new();
    if detail.shard != 0 {
        metadata.insert("shard".to_string(), detail.shard.to_string());
    }
    if detail.challenge_id != 0 {
        metadata.insert("challenge_id".to_string(), detail.challenge_id.to_string());
    }
    let info = tonic_types::pb::ErrorInfo { reason: reason(domain_code).to_string(), domain: ERROR_DOMAIN.to_string(), metadata };
    let mut details = vec![
        Any { type_url: ERROR_DETAIL_TYPE_URL.to_string(), value: detail.encode_to_vec() },
        Any { type_url: "type.googleapis.com/google.rpc.ErrorInfo".to_string(), value: info.encode_to_vec() },
    ];
    if let Some(delay) = retry_delay(domain_code) {
        let delay = prost_types::Duration { seconds: delay.as_secs() as i64, nanos: delay.subsec_nanos() as i32 };
        let retry = tonic_types::pb::RetryInfo { retry_delay: Some(delay) };
        details.push(Any { type_url: "type.googleapis.com/google.rpc.RetryInfo".to_string(), value: retry.encode_to_vec() });
    }
    tonic_types::Status { code: code as i32, message: message.to_string(), details }
}

/// PERMISSION_DENIED for a caller whose identity or token may not make this call.
pub fn denied(message: impl Into<String>) -> tonic::Status {
    error(ErrorCode::PermissionDenied, message)
}

/// UNAUTHENTICATED: no usable credentials (the reason names the problem, never the token).
pub fn unauthenticated(message: impl Into<String>) -> tonic::Status {
    error(ErrorCode::Unauthenticated, message)
}

/// Shorthand for a status with just a code and message.
pub fn error(code: ErrorCode, message: impl Into<String>) -> tonic::Status {
    status(ErrorDetail { code: code as i32, message: message.into(), ..Default::default() })
}

/// Reads the domain detail back from a status. A status without one (e.g. a transport error)
/// maps to UNAVAILABLE or TIMEOUT, the codes whose outcome is unknown and may be retried.
pub fn detail_of(status: &tonic::Status) -> ErrorDetail {
    if let Some(d) = carried_detail(status.details()) {
        return d;
    }
    let code = match status.code() {
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => ErrorCode::Timeout,
        tonic::Code::ResourceExhausted => ErrorCode::Overloaded,
        tonic::Code::Unavailable | tonic::Code::Unknown => ErrorCode::Unavailable,
        tonic::Code::Unauthenticated => ErrorCode::Unauthenticated,
        tonic::Code::PermissionDenied => ErrorCode::PermissionDenied,
        // Refused while decoding (a message over the size limit, a malformed one): it was never
        // applied, so the answer is certain, and re-sending the same bytes cannot change it.
        tonic::Code::OutOfRange | tonic::Code::InvalidArgument => ErrorCode::InvalidArgument,
        // Any other gRPC code (UNIMPLEMENTED from a build without the service, say): keep its
        // name in the message, or the caller could not tell them apart.
        other => {
            let message = match status.message() {
                "" => format!("gRPC status {other:?}"),
                m => format!("gRPC status {other:?}: {m}"),
            };
            return ErrorDetail { code: ErrorCode::Internal as i32, message, ..Default::default() };
        }
    };
    ErrorDetail { code: code as i32, message: status.message().to_string(), ..Default::default() }
}

/// The [`ErrorDetail`] inside a `grpc-status-details-bin` (a `google.rpc.Status`), if any.
fn carried_detail(bytes: &[u8]) -> Option<ErrorDetail> {
    if bytes.is_empty() {
        return None;
    }
    let rpc = tonic_types::Status::decode(bytes).ok()?;
    let any = rpc.details.iter().find(|a| a.type_url == ERROR_DETAIL_TYPE_URL)?;
    ErrorDetail::decode(any.value.as_slice()).ok().filter(|d| d.code != 0)
}

/// (trace id, flags) of a W3C `traceparent` (version 00, or a later one read as 00); None for
/// anything else, which starts a new trace as the W3C rules say. Client, router and node all
/// read the header with this one function.
pub fn parse_traceparent(v: &str) -> Option<(String, u8)> {
    let mut parts = v.trim().splitn(5, '-');
    let (version, id, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let ok = is_lower_hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && is_trace_id(id)
        && is_lower_hex(parent, 16)
        && parent.bytes().any(|b| b != b'0')
        && is_lower_hex(flags, 2);
    ok.then(|| (id.to_string(), u8::from_str_radix(flags, 16).unwrap_or(0)))
}

/// A W3C trace id: 32 lowercase hex digits, not all zero.
pub fn is_trace_id(s: &str) -> bool {
    is_lower_hex(s, 32) && s.bytes().any(|b| b != b'0')
}

fn is_lower_hex(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
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

    /// The trailer is a `google.rpc.Status` any gRPC library reads: the call's code and message,
    /// the detail as an `Any`, ErrorInfo with the code's name, RetryInfo only when backing off.
    #[test]
    fn the_status_details_are_a_google_rpc_status() {
        use tonic_types::StatusExt;
        let s = status(ErrorDetail { code: ErrorCode::AlreadyGrabbed as i32, message: "again".into(), shard: 4, ..Default::default() });
        assert_eq!(s.code(), tonic::Code::AlreadyExists);
        let rpc = tonic_types::Status::decode(s.details()).expect("a google.rpc.Status");
        assert_eq!(rpc.code, tonic::Code::AlreadyExists as i32);
        assert_eq!(rpc.message, s.message());
        assert_eq!(rpc.details[0].type_url, "type.googleapis.com/hongbao.v1.ErrorDetail");
        let d = ErrorDetail::decode(rpc.details[0].value.as_slice()).expect("the detail");
        assert_eq!((d.code(), d.shard, d.message.as_str()), (ErrorCode::AlreadyGrabbed, 4, "again"));
        let info = s.get_details_error_info().expect("ErrorInfo");
        assert_eq!((info.reason.as_str(), info.domain.as_str()), ("ALREADY_GRABBED", "hongbao"));
        assert_eq!(info.metadata.get("shard").map(String::as_str), Some("4"));
        assert!(s.get_details_retry_info().is_none(), "a final answer asks for no retry");

        for (code, grpc) in
            [(ErrorCode::Overloaded, tonic::Code::ResourceExhausted), (ErrorCode::RateLimited, tonic::Code::ResourceExhausted)]
        {
            let s = error(code, "busy");
            assert_eq!(s.code(), grpc);
            let delay = s.get_details_retry_info().and_then(|r| r.retry_delay).expect("RetryInfo with a delay");
            assert_eq!(Some(delay), retry_delay(code));
            assert_eq!(s.get_details_error_info().map(|i| i.reason), Some(reason(code).to_string()));
            assert_eq!(detail_of(&s).code(), code);
        }
    }

    /// Reflection serves this: every hongbao service is in it.
    #[test]
    fn the_descriptor_set_holds_every_service() {
        let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("an encoded FileDescriptorSet");
        let services: Vec<String> =
            fds.file.iter().flat_map(|f| f.service.iter().map(move |s| format!("{}.{}", f.package(), s.name()))).collect();
        for name in [
            v1::wallet_server::SERVICE_NAME,
            v1::packets_server::SERVICE_NAME,
            v1::coalesced_server::SERVICE_NAME,
            v1::notifier_server::SERVICE_NAME,
            v1::cluster_server::SERVICE_NAME,
            v1::raft_transport_server::SERVICE_NAME,
        ] {
            assert!(services.iter().any(|s| s == name), "{name} not in {services:?}");
        }
    }

    /// Every code's reason is its bare name, as ErrorInfo wants (UPPER_SNAKE_CASE, no prefix).
    #[test]
    fn reasons_are_the_code_names() {
        assert_eq!(reason(ErrorCode::NotLeader), "NOT_LEADER");
        for i in 0..200 {
            let Ok(code) = ErrorCode::try_from(i) else { continue };
            let r = reason(code);
            assert!(!r.starts_with("ERROR_CODE") && r.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{r}");
        }
    }

    /// A google.rpc.Status from elsewhere (no hongbao detail inside) reads by its gRPC code,
    /// like a status without details; garbage in the trailer too.
    #[test]
    fn a_foreign_status_detail_reads_by_its_grpc_code() {
        let foreign = tonic_types::Status { code: tonic::Code::Unavailable as i32, message: "lb".into(), details: vec![] };
        let s = tonic::Status::with_details(tonic::Code::Unavailable, "lb", foreign.encode_to_vec().into());
        assert_eq!(detail_of(&s).code(), ErrorCode::Unavailable);
        let s = tonic::Status::with_details(tonic::Code::NotFound, "x", vec![0xff, 0xff, 0xff].into());
        assert_eq!(detail_of(&s).code(), ErrorCode::Internal);
        assert_eq!(detail_of(&s).message, "gRPC status NotFound: x", "the gRPC code is kept in words");
        // A server without the service answers UNIMPLEMENTED with no message.
        let s = tonic::Status::new(tonic::Code::Unimplemented, "");
        assert_eq!(detail_of(&s).message, "gRPC status Unimplemented");
    }

    /// Walks every code: cluster codes (what elections, failovers and routing produce) are never
    /// final; every ledger code is (it is what the ledger decided), but the two a slot move
    /// answers with, which say where the request went, not what it did.
    #[test]
    fn only_ledger_outcomes_end_a_call_and_every_cluster_code_is_retried() {
        for i in 0..200 {
            let Ok(code) = ErrorCode::try_from(i) else { continue };
            let step = retry_step(code);
            if matches!(code, ErrorCode::SlotMoving | ErrorCode::SlotMoved) {
                assert_eq!(step, RetryStep::BackOff, "{code:?}: nothing was done; re-send after a moment");
                assert!(retry_delay(code).is_some());
            } else if i < 100 || matches!(code, ErrorCode::PermissionDenied | ErrorCode::Unauthenticated) {
                assert_eq!(step, RetryStep::Final, "{code:?} is a ledger outcome or a refusal of the caller");
            } else {
                assert_ne!(step, RetryStep::Final, "{code:?} says nothing about the operation");
            }
        }
        assert_eq!(retry_step(ErrorCode::UnknownShard), RetryStep::Elsewhere, "issue 17: a node without the shard is no answer");
        // A transport failure without a detail reads as a retryable code too.
        for s in
            [tonic::Status::unavailable("x"), tonic::Status::unknown("reset"), tonic::Status::cancelled("x"), tonic::Status::internal("h2")]
        {
            assert_ne!(retry_step(detail_of(&s).code()), RetryStep::Final, "{s:?}");
        }
    }

    /// A message refused while decoding (over the size limit) was never applied: a certain
    /// failure, not an unknown outcome to re-send until the deadline (the chaos suite's 20 KiB
    /// requests ended "unknown" before).
    #[test]
    fn a_message_refused_while_decoding_is_a_final_invalid_argument() {
        for s in [tonic::Status::out_of_range("decoded message length too large"), tonic::Status::invalid_argument("bad")] {
            let d = detail_of(&s);
            assert_eq!(d.code(), ErrorCode::InvalidArgument, "{s:?}");
            assert_eq!(retry_step(d.code()), RetryStep::Final);
        }
    }

    #[test]
    fn transport_errors_read_as_retryable_unknown_outcomes() {
        let d = detail_of(&tonic::Status::unavailable("connection refused"));
        assert_eq!(d.code(), ErrorCode::Unavailable);
        let d = detail_of(&tonic::Status::deadline_exceeded("slow"));
        assert_eq!(d.code(), ErrorCode::Timeout);
    }
}
