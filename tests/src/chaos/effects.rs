//! The fault log of a run and the effects the faults were seen to have (or missed: a missed
//! effect fails the run).

use super::workload::Shared;
use std::time::Duration;

/// What the faults were seen to do, and what they should have done but did not.
#[derive(Default)]
pub(crate) struct Effects {
    pub(crate) proved: Vec<String>,
    pub(crate) missed: Vec<String>,
    /// Counters across cycles: fault cycles begun, snapshot installs seen, snapshot files
    /// corrupted, nodes replaced, slot moves whose driver was killed half-way.
    pub(crate) cycles: usize,
    pub(crate) installs: f64,
    pub(crate) corrupted: usize,
    pub(crate) replaced: usize,
    pub(crate) killed_mid_move: usize,
}

/// The run's fault log: what was done, and when (since the workload started), and the effects.
pub(crate) struct Log<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) entries: &'a mut Vec<(Duration, String)>,
    pub(crate) effects: &'a mut Effects,
}

impl Log<'_> {
    pub(crate) fn note(&mut self, what: impl Into<String>) {
        self.entries.push((self.shared.start.elapsed(), what.into()));
    }

    /// The fault had the effect it was meant to have.
    pub(crate) fn proved(&mut self, what: impl Into<String>) {
        let what = what.into();
        self.note(format!("effect: {what}"));
        self.effects.proved.push(what);
    }

    /// It did not: the run fails.
    pub(crate) fn missed(&mut self, what: impl Into<String>) {
        let what = what.into();
        self.note(format!("EFFECT MISSING: {what}"));
        self.effects.missed.push(what);
    }

    pub(crate) fn check(&mut self, r: Result<String, String>) {
        match r {
            Ok(p) => self.proved(p),
            Err(m) => self.missed(m),
        }
    }
}
