//! Finishing slot moves left half-way (`cluster::slot_move`), on each shard's leader: a move the
//! map records unfinished (the meta shard's leader drives it on), or a slot expected here that
//! the map already routes here. So a slot's users are not refused SLOT_MOVING for long after the
//! operator's CLI or the node driving the move went away.

use crate::cluster::slot_move::{move_slot, propose};
use crate::host::Host;
use hongbao_ledger::{view, Code, Command, ShardId, SlotState, SlotTable};
use hongbao_topology::Topology;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a slot may stay half-moved on its source (frozen, or sent but the map not flipped)
/// before the source's leader finishes the move itself. A live `move-slot` takes well under a
/// second per step and re-sends within one, so it is never overtaken; if both drive, every step
/// is idempotent.
pub const RESUME_AFTER: Duration = Duration::from_secs(10);
/// How often a leader looks for moves out of its shard that nobody finished.
const RESUME_CHECK_EVERY: Duration = Duration::from_secs(1);

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
    while let Some(leads) = super::next_turn(&host, shard, RESUME_CHECK_EVERY, &mut stop).await {
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
                    tracing::warn!(slot, shard, ?what, error = %e.message, "slot move left half-way: not finished; trying again later");
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
