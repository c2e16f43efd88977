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
//! recorded it unfinished for `RESUME_AFTER`, so its users are not refused for long; a
//! destination whose slot arrived after the flip finishes its own last step.

use crate::host::Host;
use crate::service::convert::detail;
use hongbao_ledger::{view, Code, Command, Outcome, Reply, ShardId, SlotState, SlotTable};
use hongbao_proto::v1::MoveSlotReply;
use hongbao_proto::{status, ErrorCode};
use hongbao_topology::Topology;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Status;

/// Wallets one MoveSlotOut sends (a page; the ledger also stops at `MOVE_PAGE_BYTES`).
pub const PAGE_USERS: u32 = 256;
/// Work one MoveSlot call does before it answers where the move stands (inside the router's
/// membership deadline).
const STEP_BUDGET: Duration = Duration::from_secs(15);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(50);
/// How long a slot may stay half-moved on its source (frozen, or sent but the map not flipped)
/// before the source's leader finishes the move itself. A live `move-slot` takes well under a
/// second per step and re-sends within one, so it is never overtaken; if both drive, every step
/// is idempotent.
pub const RESUME_AFTER: Duration = Duration::from_secs(10);
/// How often a leader looks for moves out of its shard that nobody finished.
const RESUME_CHECK_EVERY: Duration = Duration::from_secs(1);

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
    // The move's record in the map, committed by the meta shard (on its leader: elsewhere
    // NotLeader, and the admin's router re-sends the call there): the shards take the steps
    // below only for a move the map records (`access::forwarded_proposal`).
    crate::membership::change_map(host, |t| t.begin_move(slot, to)).await?;
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
            // The ledger's own code (MOVE_TOO_LARGE: a user remembers too many requests).
            let mut d = hongbao_proto::detail_of(&crate::service::convert::rejected(&o, from));
            d.message = format!("shard {from} cannot send slot {slot}: {}", d.message);
            return Err(status(d));
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

/// A slot move left unfinished, as the map and a shard's ledger show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HalfMoved {
    /// The map records the move and has not flipped it: the meta shard's leader drives it on.
    Out { to: ShardId },
    /// Expected here while the map already routes the slot here: a driver that read the map
    /// just before the flip expected the slot again after the move had finished. Everything from
    /// `from` arrived before the flip (the map names this shard only after `FinishSlotIn` here).
    In { from: ShardId },
}

/// The moves left unfinished that `shard`'s leader finishes: on the meta shard, every move the
/// map records; on any shard, slots expected here that the map routes here already.
fn half_moved(table: &SlotTable, map: &Topology, shard: ShardId) -> Vec<(u32, HalfMoved)> {
    let recorded = map.moves.iter().filter(|_| shard == map.meta_shard()).map(|m| (m.slot, HalfMoved::Out { to: m.to }));
    let arrived =
        table.states.iter().filter(|(slot, _)| map.owner_of_slot(**slot) == Some(shard)).filter_map(|(slot, state)| match state {
            SlotState::Arriving { from } => Some((*slot, HalfMoved::In { from: *from })),
            _ => None,
        });
    recorded.chain(arrived).collect()
}

/// Leader task of every shard: finishes the moves left half-way (see `HalfMoved`) once one has
/// lasted `RESUME_AFTER` (a failed attempt is tried again `RESUME_AFTER` later), so the slot's
/// users are not refused SLOT_MOVING for long after the driver went away.
pub async fn resume(host: Arc<Host>, shard: ShardId, mut stop: watch::Receiver<bool>) {
    // Slot -> (what is unfinished, since when this leader has seen it).
    let mut seen: HashMap<u32, (HalfMoved, Instant)> = HashMap::new();
    while let Some(leads) = crate::tasks::next_turn(&host, shard, RESUME_CHECK_EVERY, &mut stop).await {
        if !leads {
            seen.clear();
            continue;
        }
        let half_moved = half_moved(&view::slot_table(&host.store(shard)), &host.topology(), shard);
        seen.retain(|slot, (what, _)| half_moved.contains(&(*slot, *what)));
        for (slot, what) in half_moved {
            let since = seen.entry(slot).or_insert((what, Instant::now())).1;
            if since.elapsed() < RESUME_AFTER {
                continue;
            }
            tracing::warn!(slot, shard, ?what, unfinished_for = ?since.elapsed(), "finishing a slot move left half-way");
            metrics::counter!(crate::metrics::SLOT_MOVES_RESUMED).increment(1);
            let finished = match what {
                HalfMoved::Out { to } => move_slot(&host, slot, to).await.map(|r| r.done),
                HalfMoved::In { from } => {
                    let o = propose(&host, shard, slot, Command::FinishSlotIn { slot, from, through_seq: 0 }).await;
                    o.map(|o| o.code == Code::Ok)
                }
            };
            match finished {
                Ok(true) => {
                    tracing::info!(slot, shard, ?what, "slot move left half-way finished");
                    seen.remove(&slot);
                }
                Ok(false) => tracing::info!(slot, shard, ?what, "slot move left half-way: still under way"),
                Err(e) => {
                    tracing::warn!(slot, shard, ?what, error = %e.message(), "slot move left half-way: not finished; trying again later");
                    seen.insert(slot, (what, Instant::now()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meta_leader_finishes_recorded_moves_and_a_destination_its_arrived_slots() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local-3x1.toml");
        let map = Topology::load(&path).expect("shipped topology");
        let (on1, on2) = (
            (0..map.slots).find(|s| map.owner_of_slot(*s) == Some(1)).unwrap(),
            (0..map.slots).find(|s| map.owner_of_slot(*s) == Some(2)).unwrap(),
        );
        assert_eq!(map.meta_shard(), 1);
        let moving = map.begin_move(on2, 3).unwrap();
        let mut t = SlotTable { slots: map.slots, ..Default::default() };
        assert_eq!(half_moved(&t, &moving, 1), vec![(on2, HalfMoved::Out { to: 3 })], "the meta leader drives the recorded move");
        assert!(half_moved(&t, &moving, 2).is_empty(), "the source does not: a frozen slot says nothing without the map");
        t.states.insert(on1, SlotState::Leaving { to: 3, after: 7 });
        assert!(half_moved(&t, &map, 1).is_empty(), "a slot frozen with no move recorded is no move to finish");
        let mut t2 = SlotTable { slots: map.slots, ..Default::default() };
        t2.states.insert(on1, SlotState::Arriving { from: 1 });
        assert!(half_moved(&t2, &map, 3).is_empty(), "arriving from a live move: routed elsewhere");
        t2.states.insert(on2, SlotState::Arriving { from: 1 });
        assert_eq!(half_moved(&t2, &map, 2), vec![(on2, HalfMoved::In { from: 1 })], "expected again after the flip");
    }
}
