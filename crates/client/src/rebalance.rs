//! Rebalancing by load (`hongbao cluster rebalance`): from the requests each slot served over a
//! sampling window, proposes slot moves that bring the busiest and the idlest shard closer,
//! one slot at a time, until they are within a tolerance of the mean (or nothing helps).

use hongbao_topology::{ShardId, Topology};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// One proposed move and the load it carries (requests per second).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Move {
    pub slot: u32,
    pub from_shard: ShardId,
    pub to_shard: ShardId,
    pub rate: f64,
}

/// Requests per second of every shard: the sum over the slots it owns (0 for a shard without).
pub fn shard_loads(map: &Topology, rates: &BTreeMap<u32, f64>) -> BTreeMap<ShardId, f64> {
    let mut load: BTreeMap<ShardId, f64> = map.shards.iter().map(|s| (s.id, 0.0)).collect();
    for (slot, rate) in rates {
        if let Some(owner) = map.owner_of_slot(*slot) {
            *load.entry(owner).or_default() += rate;
        }
    }
    load
}

/// Moves, at most `max_moves`, each taking from the busiest shard the slot whose rate is the
/// nearest to half the gap to the idlest (which narrows the gap most), never a slot twice.
/// Stops once the gap is within `tolerance` (a fraction of the mean shard load).
pub fn plan(map: &Topology, rates: &BTreeMap<u32, f64>, max_moves: usize, tolerance: f64) -> Vec<Move> {
    let mut load = shard_loads(map, rates);
    let mut owner: BTreeMap<u32, ShardId> = (0..map.slots).filter_map(|s| Some((s, map.owner_of_slot(s)?))).collect();
    let mean = load.values().sum::<f64>() / load.len().max(1) as f64;
    let mut moved = BTreeSet::new();
    let mut out = Vec::new();
    while out.len() < max_moves && mean > 0.0 {
        let (hi, hi_load) = load.iter().max_by(|a, b| a.1.total_cmp(b.1)).map(|(s, l)| (*s, *l)).expect("a shard");
        let (lo, lo_load) = load.iter().min_by(|a, b| a.1.total_cmp(b.1)).map(|(s, l)| (*s, *l)).expect("a shard");
        let gap = hi_load - lo_load;
        if gap <= tolerance * mean {
            break;
        }
        // Moving a slot of rate r leaves a gap of |gap - 2r|: smaller only for 0 < r < gap.
        let best = owner
            .iter()
            .filter(|(slot, o)| **o == hi && !moved.contains(*slot))
            .filter_map(|(slot, _)| rates.get(slot).map(|r| (*slot, *r)))
            .filter(|(_, r)| *r > 0.0 && *r < gap)
            .min_by(|a, b| (a.1 - gap / 2.0).abs().total_cmp(&(b.1 - gap / 2.0).abs()));
        let Some((slot, rate)) = best else { break };
        *load.get_mut(&hi).expect("hi") -= rate;
        *load.get_mut(&lo).expect("lo") += rate;
        owner.insert(slot, lo);
        moved.insert(slot);
        out.push(Move { slot, from_shard: hi, to_shard: lo, rate });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> Topology {
        let path = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")).join("../../deploy/local-3x1.toml");
        Topology::load(&path).expect("shipped topology")
    }

    #[test]
    fn hot_slots_move_from_the_busiest_shard_to_the_idlest_until_the_gap_is_small() {
        let t = map();
        // Every slot of shard 1 busy, the rest idle.
        let rates: BTreeMap<u32, f64> = (0..t.slots).filter(|s| t.owner_of_slot(*s) == Some(1)).map(|s| (s, 10.0)).collect();
        let moves = plan(&t, &rates, 100, 0.2);
        assert!(!moves.is_empty());
        assert!(moves.iter().all(|m| m.from_shard == 1 && m.to_shard != 1), "{moves:?}");
        let mut after = t.clone();
        for m in &moves {
            after = after.move_slot(m.slot, m.to_shard).unwrap();
        }
        let load = shard_loads(&after, &rates);
        let (max, min) = (load.values().cloned().fold(f64::MIN, f64::max), load.values().cloned().fold(f64::MAX, f64::min));
        let mean = load.values().sum::<f64>() / 3.0;
        assert!(max - min <= 0.2 * mean + 10.0, "balanced within a slot: {load:?}");
        let slots: BTreeSet<u32> = moves.iter().map(|m| m.slot).collect();
        assert_eq!(slots.len(), moves.len(), "no slot moves twice");
    }

    #[test]
    fn a_new_shard_without_slots_takes_load_and_an_even_cluster_moves_nothing() {
        let t = map().add_shard(4, "tianjin", &[1, 2, 3]).unwrap();
        let rates: BTreeMap<u32, f64> = (0..t.slots).map(|s| (s, 1.0)).collect();
        let moves = plan(&t, &rates, 3, 0.2);
        assert_eq!(moves.len(), 3, "{moves:?}");
        assert!(moves.iter().all(|m| m.to_shard == 4), "{moves:?}");
        assert!(plan(&map(), &rates, 3, 0.5).is_empty(), "an even load needs no move");
        assert!(plan(&map(), &BTreeMap::new(), 3, 0.2).is_empty(), "no load, no move");
        assert_eq!(plan(&t, &rates, 0, 0.2), vec![], "max-moves 0");
    }
}
