//! Requests per slot, for rebalancing by load (`hongbao cluster rebalance`): each node counts
//! the user requests it served as a shard's leader (writes proposed, reads answered) by the
//! user's slot. Counters only grow; a caller samples twice and divides by the time between.
//! Grabs are counted where their packet lives, not by the grabber: they load the packet's shard.

use hongbao_topology::MAX_SLOTS;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct SlotLoad {
    counts: Vec<AtomicU64>,
}

impl Default for SlotLoad {
    fn default() -> SlotLoad {
        SlotLoad { counts: (0..MAX_SLOTS).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl SlotLoad {
    pub fn hit(&self, slot: u32) {
        if let Some(c) = self.counts.get(slot as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (slot, requests so far) of every slot counted at least once.
    pub fn counts(&self) -> Vec<(u32, u64)> {
        self.counts.iter().enumerate().map(|(s, c)| (s as u32, c.load(Ordering::Relaxed))).filter(|(_, n)| *n > 0).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_count_per_slot_and_out_of_range_slots_are_ignored() {
        let l = SlotLoad::default();
        l.hit(3);
        l.hit(3);
        l.hit(9_999);
        l.hit(MAX_SLOTS);
        assert_eq!(l.counts(), vec![(3, 2), (9_999, 1)]);
    }
}
