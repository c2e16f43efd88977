//! Live slot moves (`hongbao cluster move-slot 42 --to-shard 1`): a slot's users, with their
//! wallets, statements, daily limits and remembered requests, go from the shard that owns the
//! slot to another, while both serve everyone else. The order keeps money safe:
//!
//! 1. `MoveSlotIn` on the destination: it expects the slot (its users' commands there are
//!    refused SLOT_MOVING until step 3).
//! 2. `MoveSlotOut` on the source, page by page: the slot is frozen there (SLOT_MOVING), and
//!    each page of wallets leaves through the pair's outbox, in sequence with the credits the
//!    relay carries; money arriving later for a moved wallet is forwarded after it.
//! 3. `FinishSlotIn` on the destination, once it applied the source's outbox up to the last
//!    page (the ledger checks): it serves the slot.
//! 4. The map flips (`Topology::move_slot`): routers and nodes send the slot's users to the
//!    destination; the source answers stragglers SLOT_MOVED, which clients retry.
//!
//! Every step is idempotent, so one `MoveSlot` call does a bounded part and says where it
//! stands; the caller calls again until done (a move left half-way keeps the slot frozen until
//! the same move is asked again).

use crate::host::Host;
use crate::service::convert::detail;
use hongbao_ledger::{Code, Command, Outcome, Reply, ShardId};
use hongbao_proto::v1::MoveSlotReply;
use hongbao_proto::{status, ErrorCode};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tonic::Status;

/// Wallets one MoveSlotOut sends (a page; the ledger also stops at `MOVE_PAGE_BYTES`).
pub const PAGE_USERS: u32 = 256;
/// Work one MoveSlot call does before it answers where the move stands (inside the router's
/// membership deadline).
const STEP_BUDGET: Duration = Duration::from_secs(15);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(50);

fn unavailable(shard: ShardId, msg: impl Into<String>) -> Status {
    status(detail(ErrorCode::Unavailable, msg, shard))
}

/// One step of the move, proposed on `shard`'s leader wherever it is.
async fn propose(host: &Host, shard: ShardId, slot: u32, cmd: Command) -> Result<Outcome, Status> {
    let tag = match cmd {
        Command::MoveSlotIn { .. } => b'i',
        Command::MoveSlotOut { .. } => b'o',
        _ => b'f',
    };
    let id = crate::tasks::system_id(tag, shard, slot as u64, host.clock.now_ms());
    host.propose_on_leader(shard, id, cmd, CALL_TIMEOUT).await.map_err(|e| unavailable(shard, format!("slot {slot}: {e}")))
}

fn step_done(phase: &str) {
    metrics::counter!(crate::metrics::SLOT_MOVE_STEPS, "phase" => phase.to_string()).increment(1);
}

/// Advances the move of `slot` to shard `to` as far as `STEP_BUDGET` allows.
pub async fn move_slot(host: &Arc<Host>, slot: u32, to: ShardId) -> Result<MoveSlotReply, Status> {
    crate::directory::refresh(host).await;
    let map = host.topology();
    let invalid = |m: String| status(detail(ErrorCode::InvalidArgument, m, to));
    let from = map.owner_of_slot(slot).ok_or_else(|| invalid(format!("no slot {slot}: the map has {} slots", map.slots)))?;
    if map.shard(to).is_none() {
        return Err(invalid(format!("no shard {to} in the map (version {})", map.version)));
    }
    let mut reply = MoveSlotReply { slot, from_shard: from, to_shard: to, map_version: map.version, ..Default::default() };
    if from == to {
        reply.phase = "flipped".into();
        reply.done = true;
        return Ok(reply);
    }
    tracing::info!(slot, from, to, "slot move step");
    let deadline = Instant::now() + STEP_BUDGET;
    let slots = map.slots;
    let o = propose(host, to, slot, Command::MoveSlotIn { slot, slots, from }).await?;
    if o.code != Code::Ok {
        return Err(invalid(format!("shard {to} cannot take slot {slot} now ({}): another move is under way", o.code.as_str())));
    }
    reply.phase = "arriving".into();
    step_done("arriving");
    let through = loop {
        let o = propose(host, from, slot, Command::MoveSlotOut { slot, slots, to, max_users: PAGE_USERS }).await?;
        let Reply::SlotOut { exported, done, through_seq } = o.reply else {
            return Err(invalid(format!("shard {from} cannot send slot {slot} ({})", o.code.as_str())));
        };
        reply.wallets_sent += exported;
        reply.phase = "sending".into();
        metrics::counter!(crate::metrics::SLOT_MOVE_WALLETS).increment(exported as u64);
        if done {
            break through_seq;
        }
        if Instant::now() >= deadline {
            return Ok(reply);
        }
    };
    step_done("sent");
    reply.phase = "delivering".into();
    loop {
        let o = propose(host, to, slot, Command::FinishSlotIn { slot, from, through_seq: through }).await?;
        match o.code {
            Code::Ok => break,
            Code::SlotMoving if Instant::now() < deadline => tokio::time::sleep(POLL).await,
            Code::SlotMoving => return Ok(reply),
            other => return Err(invalid(format!("shard {to} cannot finish slot {slot} ({})", other.as_str()))),
        }
    }
    step_done("delivered");
    let m = crate::membership::change_map(host, |t| t.move_slot(slot, to)).await?;
    step_done("flipped");
    tracing::info!(slot, from, to, map_version = m.map_version, "slot moved");
    reply.phase = "flipped".into();
    reply.done = true;
    reply.map_version = m.map_version;
    Ok(reply)
}
