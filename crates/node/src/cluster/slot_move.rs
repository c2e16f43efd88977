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
//! Before step 1 the meta shard records the move in the map (`Topology::begin_move`); the flip
//! drops the record. Steps 1–3 go to the shards' leaders as forwarded proposals, which a leader
//! takes only for the move the map records (`access::forwarded_proposal`): one node's key can
//! neither freeze a slot nor send it anywhere (#28). Map changes are the meta leader's alone, so
//! a `MoveSlot` call is driven there (elsewhere it answers NotLeader and the router re-sends it).
//!
//! Every step is idempotent, so one `MoveSlot` call does a bounded part and says where it
//! stands; the caller calls again until done. A move left half-way (the operator's CLI or the
//! node driving it died) is finished by the meta shard's leader (`resume`) once the map has
//! recorded it unfinished for `leader::slot_moves::RESUME_AFTER`, so its users are not refused for long; a
//! destination whose slot arrived after the flip finishes its own last step.

use crate::error::{ErrorKind, HostError};
use crate::host::{system_id, Host};
use crate::limits::PAGE_USERS;
use hongbao_ledger::{Code, Command, Outcome, Reply, ShardId};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Work one MoveSlot call does before it answers where the move stands (inside the router's
/// membership deadline).
const STEP_BUDGET: Duration = Duration::from_secs(15);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(50);

/// Where one `MoveSlot` call left the move of `slot`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub slot: u32,
    pub from_shard: ShardId,
    pub to_shard: ShardId,
    /// The last phase reached: arriving, sending, delivering, flipped.
    pub phase: &'static str,
    /// Wallets sent by this call.
    pub wallets_sent: u32,
    pub done: bool,
    pub map_version: u64,
}

/// One step of the move, proposed on `shard`'s leader wherever it is.
pub async fn propose(host: &Host, shard: ShardId, slot: u32, cmd: Command) -> Result<Outcome, HostError> {
    let tag = match cmd {
        Command::MoveSlotIn { .. } => b'i',
        Command::MoveSlotOut { .. } => b'o',
        _ => b'f',
    };
    let id = system_id(tag, shard, slot as u64, host.clock.now_ms());
    host.propose_on_leader(shard, id, cmd, CALL_TIMEOUT)
        .await
        .map_err(|e| HostError::unavailable(shard, format!("slot {slot}: {}", e.message)))
}

fn step_done(phase: &str) {
    metrics::counter!(crate::metrics::SLOT_MOVE_STEPS, "phase" => phase.to_string()).increment(1);
}

/// Advances the move of `slot` to shard `to` as far as `STEP_BUDGET` allows.
pub async fn move_slot(host: &Arc<Host>, slot: u32, to: ShardId) -> Result<Progress, HostError> {
    crate::cluster::directory::refresh(host).await;
    let map = host.topology();
    let invalid = |m: String| HostError::new(ErrorKind::InvalidArgument, to, m);
    let from = map.owner_of_slot(slot).ok_or_else(|| invalid(format!("no slot {slot}: the map has {} slots", map.slots)))?;
    if map.shard(to).is_none() {
        return Err(invalid(format!("no shard {to} in the map (version {})", map.version)));
    }
    let mut reply = Progress { slot, from_shard: from, to_shard: to, map_version: map.version, ..Default::default() };
    if from == to {
        reply.phase = "flipped";
        reply.done = true;
        return Ok(reply);
    }
    tracing::info!(slot, from, to, "slot move step");
    // The move's record in the map, committed by the meta shard (on its leader: elsewhere
    // NotLeader, and the admin's router re-sends the call there): the shards take the steps
    // below only for a move the map records (`access::forwarded_proposal`).
    crate::cluster::membership::change_map(host, |t| t.begin_move(slot, to)).await?;
    let deadline = Instant::now() + STEP_BUDGET;
    let slots = map.slots;
    let o = propose(host, to, slot, Command::MoveSlotIn { slot, slots, from }).await?;
    if o.code != Code::Ok {
        return Err(invalid(format!("shard {to} cannot take slot {slot} now ({}): another move is under way", o.code.as_str())));
    }
    reply.phase = "arriving";
    step_done("arriving");
    let through = loop {
        let o = propose(host, from, slot, Command::MoveSlotOut { slot, slots, to, max_users: PAGE_USERS }).await?;
        let Reply::SlotOut { exported, done, through_seq } = o.reply else {
            // The ledger's own code (MOVE_TOO_LARGE: a user remembers too many requests).
            let msg = format!("shard {from} cannot send slot {slot}: {}", o.code.as_str());
            return Err(HostError::new(ErrorKind::Ledger(o.code), from, msg));
        };
        reply.wallets_sent += exported;
        reply.phase = "sending";
        metrics::counter!(crate::metrics::SLOT_MOVE_WALLETS).increment(exported as u64);
        if done {
            break through_seq;
        }
        if Instant::now() >= deadline {
            return Ok(reply);
        }
    };
    step_done("sent");
    reply.phase = "delivering";
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
    let m = crate::cluster::membership::change_map(host, |t| t.move_slot(slot, to)).await?;
    step_done("flipped");
    tracing::info!(slot, from, to, map_version = m.map_version, "slot moved");
    reply.phase = "flipped";
    reply.done = true;
    reply.map_version = m.map_version;
    Ok(reply)
}
