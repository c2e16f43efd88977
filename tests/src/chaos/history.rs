//! The history of a chaos run: every operation a client invoked, with its request id and how it
//! ended: ok, a definite failure, or unknown (timeout / unavailable after the client's own
//! retries). Unknown outcomes are resolved after the run by re-sending the same request id.

use hongbao_proto::ErrorCode;
use std::time::Duration;

/// One client operation. A grab's `phrase`: it carries the maximum-size password (big-entries:
/// every grab does, so password packets can be grabbed; other packets ignore it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    TopUp { user: u64, amount: u64 },
    Withdraw { user: u64, amount: u64 },
    Transfer { from: u64, to: u64, amount: u64 },
    Send { sender: u64, total: u64, count: u32, size: Size },
    Grab { packet: u64, key: u64, grabber: u64, phrase: bool },
}

/// How big a send's strings are (big-entries mixes the larger ones in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// A short greeting, a lucky packet.
    Normal,
    /// A password packet with greeting and phrase exactly at the API's string limit.
    Max,
    /// A greeting one byte over the string limit: must be refused with INVALID_ARGUMENT.
    Over,
    /// A 20 KiB greeting, over the nodes' 16 KiB message limit: must be refused with
    /// INVALID_ARGUMENT.
    Huge,
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::TopUp { .. } => "top-up",
            Op::Withdraw { .. } => "withdraw",
            Op::Transfer { .. } => "transfer",
            Op::Send { .. } => "send",
            Op::Grab { .. } => "grab",
        }
    }
}

/// What an acknowledged operation told the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    Wallet { fee: u64 },
    Sent { packet: u64, key: u64 },
    Grabbed { amount: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok(Ack),
    Fail(ErrorCode),
    Unknown(ErrorCode),
}

#[derive(Debug, Clone)]
pub struct Event {
    pub request_id: Vec<u8>,
    pub op: Op,
    /// The shard that serves the operation (the one whose unavailability it measures).
    pub shard: u32,
    pub invoked: Duration,
    pub completed: Duration,
    pub outcome: Outcome,
    /// The outcome came from re-sending the request id after the run.
    pub resolved: bool,
}

impl Event {
    pub fn ack(&self) -> Option<Ack> {
        match self.outcome {
            Outcome::Ok(a) => Some(a),
            _ => None,
        }
    }
}
