//! The notification outbox on a node (reached only through a router, for the `notifier` role):
//! pending challenges of a shard, each with its code, and acknowledging them once delivered.
//!
//! The ledger keeps no code anywhere: a code is an HMAC of the challenge and its operation under
//! the replicas' shared key, computed here when the notifier reads it.

use crate::host::Host;
use crate::limits::MAX_POLL;
use crate::service::convert::{invalid, rejected};
use hongbao_ledger::{challenge_code, view, ChallengeKind, Code, Command, Reply, ShardId};
use hongbao_proto::v1::notifier_server::Notifier;
use hongbao_proto::v1::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Ack commands one Ack call proposes at most (each deletes a bounded number of records).
const MAX_ACK_ROUNDS: u64 = 16;

pub struct NotifierService {
    pub host: Arc<Host>,
}

fn operation(kind: ChallengeKind) -> &'static str {
    match kind {
        ChallengeKind::Withdraw => "withdraw",
        ChallengeKind::Transfer => "transfer",
        ChallengeKind::SendPacket => "send_packet",
        ChallengeKind::SetPin => "set_pin",
    }
}

#[tonic::async_trait]
impl Notifier for NotifierService {
    async fn poll(&self, req: Request<PollNotificationsRequest>) -> Result<Response<PollNotificationsReply>, Status> {
        let r = req.into_inner();
        let shard: ShardId = r.shard;
        let _read = self.host.begin_read(shard, false).await?;
        let limit = r.limit.clamp(1, MAX_POLL) as usize;
        let key = &self.host.config.challenge_key;
        let notifications = view::notifications(&self.host.store(shard), r.after_seq, limit)
            .into_iter()
            .map(|n| Notification {
                shard,
                seq: n.seq,
                user: n.user,
                code: challenge_code(key, n.challenge_id, n.user, &n.op),
                device: n.device,
                challenge_id: n.challenge_id,
                expires_at_ms: n.expires_ms,
                operation: operation(n.op.kind).into(),
                amount_cents: n.op.amount.0,
                counterparty: n.op.counterparty,
            })
            .collect();
        Ok(Response::new(PollNotificationsReply { notifications }))
    }

    async fn ack(&self, req: Request<AckNotificationsRequest>) -> Result<Response<AckNotificationsReply>, Status> {
        let r = req.into_inner();
        if r.up_to_seq == 0 {
            return Err(invalid("up_to_seq must name a delivered notification"));
        }
        // One command deletes a bounded number of records; repeat until all are gone.
        for round in 0..MAX_ACK_ROUNDS {
            let id = crate::host::system_id(b'n', r.shard, round, r.up_to_seq);
            let o = self.host.propose(r.shard, id, Command::AckNotifications { up_to_seq: r.up_to_seq }).await?;
            match o.reply {
                _ if o.code != Code::Ok => return Err(rejected(&o, r.shard)),
                Reply::Acked { more: true, .. } => continue,
                _ => return Ok(Response::new(AckNotificationsReply {})),
            }
        }
        Ok(Response::new(AckNotificationsReply {}))
    }
}
