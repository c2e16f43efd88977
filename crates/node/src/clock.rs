//! This node's clock for stamping commands: the wall clock (shifted by an injected clock jump),
//! never going backwards on this node even if the wall clock does. The ledger also clamps to
//! the highest time it has applied, across leaders.

use crate::faults::Faults;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Clock {
    faults: Arc<Faults>,
    /// Last time stamped into a proposal.
    last_stamp: AtomicU64,
}

impl Clock {
    pub fn new(faults: Arc<Faults>) -> Clock {
        Clock { faults, last_stamp: AtomicU64::new(0) }
    }

    /// Wall-clock milliseconds, shifted by an injected clock jump.
    pub fn now_ms(&self) -> u64 {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as i64;
        wall.saturating_add(self.faults.clock_offset_ms()).max(0) as u64
    }

    /// Leader-side time stamp for a command: now, never below the previous stamp.
    pub fn stamp(&self) -> u64 {
        let now = self.now_ms();
        let prev = self.last_stamp.fetch_max(now, Ordering::Relaxed);
        now.max(prev)
    }
}
