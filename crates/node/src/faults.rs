//! Fault injection for the chaos suite, inside the process (no iptables, no tc, no privileges),
//! in the manner of TiKV's transport_simulate filters.
//!
//! - Every node-to-node message leaving this node (Raft, relay, status fan-out) passes the
//!   filter: it is dropped when its target is cut off, dropped at random at `drop_percent`, and
//!   delayed by the simulated WAN latency between the two regions (from the topology's links)
//!   plus any injected extra delay, once each way.
//! - Raft messages arriving from a cut-off node are refused too, so cutting on one side is enough
//!   for a two-way partition.
//! - A clock offset shifts this node's wall clock: what its leaders stamp into commands and what
//!   its Raft messages tell peers (`clock` must notice and refuse to stamp or lead).
//!
//! Switched at run time by the admin RPC `SetFaults`; a node starts with no injected faults.

use hongbao_topology::NodeId;
use hongbao_topology::Topology;
use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;
use std::time::Duration;

/// Injected extra delay is capped so a typo cannot stall the cluster for hours.
pub const MAX_DELAY_MS: u32 = 10_000;
/// A clock jump larger than this (either way) is refused: a week, beyond the 24 h request-id
/// retention on purpose (the clock-leap schedule proves a leader two days fast forgets none).
pub const MAX_CLOCK_OFFSET_MS: i64 = 7 * 24 * 3600 * 1000;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    /// Nodes this node cannot reach or hear from.
    pub cut_off: BTreeSet<NodeId>,
    /// Extra one-way delay on messages to `delay_to` (every peer when empty).
    pub delay_ms: u32,
    pub delay_to: BTreeSet<NodeId>,
    /// Share of outgoing messages lost at random, in percent.
    pub drop_percent: u32,
    /// Added to the wall clock when this node stamps commands.
    pub clock_offset_ms: i64,
}

/// A rule out of its bounds, in words (the injection is refused whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleOutOfBounds(pub String);

impl std::fmt::Display for RuleOutOfBounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Rules {
    pub fn validate(&self) -> Result<(), RuleOutOfBounds> {
        let out = |m: String| Err(RuleOutOfBounds(m));
        if self.delay_ms > MAX_DELAY_MS {
            return out(format!("delay_ms {} above the limit {MAX_DELAY_MS}", self.delay_ms));
        }
        if self.drop_percent > 100 {
            return out(format!("drop_percent {} above 100", self.drop_percent));
        }
        if self.clock_offset_ms.abs() > MAX_CLOCK_OFFSET_MS {
            return out(format!("clock_offset_ms {} beyond ±{MAX_CLOCK_OFFSET_MS}", self.clock_offset_ms));
        }
        Ok(())
    }
}

pub struct Faults {
    /// Simulated one-way WAN latency to each other node (0 within a region).
    wan: HashMap<NodeId, Duration>,
    rules: RwLock<Rules>,
}

impl Faults {
    pub fn new(topology: &Topology, self_id: NodeId) -> Faults {
        let mine = topology.region_of(self_id).unwrap_or_default().to_string();
        let wan = topology.nodes.iter().map(|n| (n.id, Duration::from_millis(topology.link_latency_ms(&mine, &n.region)))).collect();
        Faults { wan, rules: RwLock::new(Rules::default()) }
    }

    pub fn set(&self, rules: Rules) -> Result<(), RuleOutOfBounds> {
        rules.validate()?;
        let mut r = self.rules.write().expect("faults lock");
        if *r != rules {
            tracing::warn!(?rules, "injected faults changed");
        }
        *r = rules;
        Ok(())
    }

    pub fn rules(&self) -> Rules {
        self.rules.read().expect("faults lock").clone()
    }

    pub fn is_cut_off(&self, node: NodeId) -> bool {
        self.rules.read().expect("faults lock").cut_off.contains(&node)
    }

    /// One-way delay of a message to `node`: WAN latency plus injected delay.
    pub fn delay_to(&self, node: NodeId) -> Duration {
        let wan = self.wan.get(&node).copied().unwrap_or_default();
        let r = self.rules.read().expect("faults lock");
        if r.delay_ms > 0 && (r.delay_to.is_empty() || r.delay_to.contains(&node)) {
            metrics::counter!(crate::metrics::FAULT_DELAYED, "to" => node.to_string()).increment(1);
            wan + Duration::from_millis(r.delay_ms as u64)
        } else {
            wan
        }
    }

    /// Whether this message is lost (cut off, or unlucky under random loss).
    pub fn drops(&self, node: NodeId) -> bool {
        let r = self.rules.read().expect("faults lock");
        let dropped = r.cut_off.contains(&node) || (r.drop_percent > 0 && ((crate::runtime::random_u64() % 100) as u32) < r.drop_percent);
        if dropped {
            metrics::counter!(crate::metrics::FAULT_DROPPED, "to" => node.to_string()).increment(1);
        }
        dropped
    }

    pub fn clock_offset_ms(&self) -> i64 {
        self.rules.read().expect("faults lock").clock_offset_ms
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn topo() -> Topology {
        Topology::parse(
            r#"
slots = 10
regions = [{ name = "a" }, { name = "b" }]
nodes = [
  { id = 1, region = "a", addr = "127.0.0.1:1", metrics_addr = "127.0.0.1:2" },
  { id = 2, region = "b", addr = "127.0.0.1:3", metrics_addr = "127.0.0.1:4" },
]
links = [{ a = "a", b = "b", latency_ms = 30 }]
[[shards]]
id = 1
home = "a"
replicas = [1, 2]
slots = [[0, 10]]
"#,
        )
        .unwrap()
    }

    #[test]
    fn wan_latency_comes_from_topology_links_and_injected_delay_adds_to_it() {
        let f = Faults::new(&topo(), 1);
        assert_eq!(f.delay_to(1), Duration::ZERO);
        assert_eq!(f.delay_to(2), Duration::from_millis(30));
        f.set(Rules { delay_ms: 20, delay_to: [2].into(), ..Rules::default() }).unwrap();
        assert_eq!(f.delay_to(2), Duration::from_millis(50));
        assert_eq!(f.delay_to(1), Duration::ZERO);
    }

    #[test]
    fn cut_off_nodes_lose_every_message_and_limits_are_enforced() {
        let f = Faults::new(&topo(), 1);
        f.set(Rules { cut_off: [2].into(), ..Rules::default() }).unwrap();
        assert!(f.drops(2) && f.is_cut_off(2) && !f.drops(1));
        assert!(f.set(Rules { drop_percent: 101, ..Rules::default() }).is_err());
        assert!(f.set(Rules { delay_ms: MAX_DELAY_MS + 1, ..Rules::default() }).is_err());
        assert!(f.set(Rules { clock_offset_ms: -MAX_CLOCK_OFFSET_MS - 1, ..Rules::default() }).is_err());
        // A refused change leaves the previous rules in place.
        assert!(f.is_cut_off(2));
        f.set(Rules::default()).unwrap();
        assert!(!f.drops(2));
    }
}
