//! What one chaos run reports: the faults and their effects, the operations and how they
//! ended, the unavailability windows, and the checker's violations.

use super::UNAVAILABLE_GAP;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

#[derive(Default)]
pub struct Report {
    pub schedule: String,
    pub ran_for: Duration,
    pub faults: Vec<(Duration, String)>,
    pub ops: usize,
    pub ok: usize,
    pub failures: BTreeMap<String, usize>,
    pub unknown: usize,
    pub resolved_ok: usize,
    /// (shard, start, length) of every gap with nothing served.
    pub windows: Vec<(u32, Duration, Duration)>,
    pub audits_during: usize,
    /// What the faults were seen to do (each schedule proves its fault took hold).
    pub effects: Vec<String>,
    pub violations: Vec<String>,
    pub logs: String,
}

impl Report {
    pub fn longest_window(&self) -> Duration {
        self.windows.iter().map(|w| w.2).max().unwrap_or_default()
    }

    pub fn p99_recovery(&self) -> Duration {
        let mut l: Vec<Duration> = self.windows.iter().map(|w| w.2).collect();
        l.sort();
        if l.is_empty() {
            return Duration::ZERO;
        }
        l[((l.len() * 99).div_ceil(100)).saturating_sub(1)]
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "schedule       {} ({:.1} s of faults)", self.schedule, self.ran_for.as_secs_f64())?;
        for (t, what) in &self.faults {
            writeln!(f, "  {:>7.2} s  {what}", t.as_secs_f64())?;
        }
        writeln!(
            f,
            "operations     {} ({} ok, {} failed, {} unknown at first, {} of them applied when re-sent)",
            self.ops,
            self.ok,
            self.failures.values().sum::<usize>(),
            self.unknown,
            self.resolved_ok
        )?;
        for (k, n) in &self.failures {
            writeln!(f, "  {n:>6}  {k}")?;
        }
        writeln!(
            f,
            "unavailability {} windows over {} ms; longest {} ms, p99 time to recover {} ms",
            self.windows.len(),
            UNAVAILABLE_GAP.as_millis(),
            self.longest_window().as_millis(),
            self.p99_recovery().as_millis()
        )?;
        for (s, start, len) in &self.windows {
            writeln!(f, "  shard {s}: from {:.2} s for {} ms", start.as_secs_f64(), len.as_millis())?;
        }
        writeln!(f, "effects        {} seen", self.effects.len())?;
        for e in &self.effects {
            writeln!(f, "  {e}")?;
        }
        writeln!(f, "audits         {} answered during the run", self.audits_during)?;
        if self.violations.is_empty() {
            writeln!(f, "checker        OK: money conserved, every acknowledged operation applied exactly once")
        } else {
            writeln!(f, "checker        {} VIOLATIONS", self.violations.len())?;
            for v in &self.violations {
                writeln!(f, "  - {v}")?;
            }
            writeln!(f, "logs kept in   {}", self.logs)
        }
    }
}
