//! Replicas that started empty: they neither vote for a candidate with history nor stand for
//! election until they have caught up with a leader.
//!
//! A voter that lost its disk (or had it wiped) restarts with no vote and no log. Raft's safety
//! rests on a vote never being forgotten: the empty replica could vote again in a term it
//! already voted in, or help elect a candidate that lacks entries the lost disk had helped to
//! commit, and acknowledged payments would be gone. So a replica that starts empty for a shard
//! behaves as a learner: it takes the leader's log (or snapshot) but grants no vote to a
//! candidate that has any history, and does not campaign, until it has applied up to the commit
//! index the first leader it hears from announced. Candidates with an empty log (a brand-new
//! shard's first election) still get its vote, so a fresh cluster starts as before.
//!
//! The bootstrapper of a shard that starts empty asks its peers first: if any of them has the
//! shard's history, it rejoins like this instead of initializing a second, empty history. The
//! replica's watch (`leader::rejoin`) ends the rejoin once it has applied enough.

use hongbao_ledger::ShardId;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct Rejoin {
    /// Shards still catching up, each with the commit index to reach (None: no leader heard).
    shards: Mutex<HashMap<ShardId, Option<u64>>>,
}

impl Rejoin {
    pub fn start(&self, shard: ShardId) {
        tracing::warn!(shard, "replica started empty for a shard with history: no votes, no campaign until caught up");
        self.shards.lock().expect("rejoin lock").insert(shard, None);
    }

    pub fn is_rejoining(&self, shard: ShardId) -> bool {
        self.shards.lock().expect("rejoin lock").contains_key(&shard)
    }

    /// Whether this replica may grant a (pre-)vote to a candidate whose last log index is
    /// `candidate_last` (None: an empty log).
    pub fn may_vote(&self, shard: ShardId, candidate_last: Option<u64>) -> bool {
        candidate_last.is_none_or(|i| i == 0)
            || !self.is_rejoining(shard)
            || crate::runtime::planted(crate::runtime::Bug::EmptyReplicaVotesAtOnce)
    }

    /// An AppendEntries from a leader: the first one sets the index to catch up to.
    pub fn heard_leader(&self, shard: ShardId, leader_commit: Option<u64>) {
        if let Some(target @ None) = self.shards.lock().expect("rejoin lock").get_mut(&shard) {
            *target = Some(leader_commit.unwrap_or(0));
            tracing::info!(
                shard,
                target = leader_commit.unwrap_or(0),
                "rejoining: heard a leader; voting again once applied up to its commit index"
            );
        }
    }

    /// True exactly once: when `applied` first reaches the target.
    pub fn caught_up(&self, shard: ShardId, applied: u64) -> bool {
        let mut s = self.shards.lock().expect("rejoin lock");
        match s.get(&shard) {
            Some(Some(target)) if applied >= *target => {
                tracing::info!(shard, applied, "rejoined: caught up with the leader; voting and standing for election again");
                s.remove(&shard);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_replica_votes_only_for_empty_candidates_until_it_caught_up() {
        let r = Rejoin::default();
        r.start(1);
        assert!(r.may_vote(1, None) && r.may_vote(1, Some(0)), "a brand-new shard's first election");
        assert!(!r.may_vote(1, Some(7)), "a candidate with history gets no vote");
        assert!(r.may_vote(2, Some(7)), "other shards are unaffected");
        assert!(!r.caught_up(1, 100), "no leader heard yet");
        r.heard_leader(1, Some(50));
        r.heard_leader(1, Some(90)); // the first leader's commit index is the target
        assert!(!r.caught_up(1, 49));
        assert!(r.caught_up(1, 50));
        assert!(r.may_vote(1, Some(7)) && !r.caught_up(1, 60));
    }
}
