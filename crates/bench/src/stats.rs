//! Latency and throughput aggregation: one HdrHistogram per op kind for the whole run, plus one
//! small histogram per second of the headline ops for the time series. Pure (no I/O), so it is
//! unit-tested.

use crate::limits::{MAX_LATENCY_US, MAX_SECONDS};
use hdrhistogram::Histogram;
use hongbao_proto::ErrorCode;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Send,
    Grab,
    Balance,
    Transfer,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Send => "send",
            Kind::Grab => "grab",
            Kind::Balance => "balance",
            Kind::Transfer => "transfer",
        }
    }
}

/// How one op ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// A definite, correct answer that is not a success: a grab of a packet that is already
    /// empty, or a second grab by the same user. Served work, so it counts as an op.
    Expected(ErrorCode),
    Error(ErrorCode),
}

/// `ERROR_CODE_PACKET_EXHAUSTED` -> `PACKET_EXHAUSTED`.
pub fn code_name(code: ErrorCode) -> String {
    code.as_str_name().trim_start_matches("ERROR_CODE_").to_string()
}

fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, sigfig).expect("valid histogram bounds")
}

struct KindStats {
    hist: Histogram<u64>,
    ok: u64,
    expected: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
}

impl KindStats {
    fn new() -> KindStats {
        KindStats { hist: histogram(3), ok: 0, expected: BTreeMap::new(), errors: BTreeMap::new() }
    }
}

struct Second {
    ops: u64,
    errors: u64,
    // Two significant digits: per-second percentiles need no more, and it keeps each second
    // at a few KiB.
    hist: Histogram<u64>,
}

/// Collects every finished op of the measured window.
pub struct Recorder {
    measure_start: Instant,
    headline: Vec<Kind>,
    kinds: BTreeMap<Kind, KindStats>,
    overall: Histogram<u64>,
    seconds: Vec<Second>,
    /// Ops that started during warm-up (not recorded).
    pub warmup_ops: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencySummary {
    /// Ops answered (ok + expected); errors are counted apart and have no latency here.
    pub ops: u64,
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct KindSummary {
    pub kind: &'static str,
    pub ok: u64,
    pub expected: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub latency: LatencySummary,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SecondPoint {
    /// Seconds since the end of warm-up; the point covers [t, t+1).
    pub t: u64,
    pub ops: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The op kinds the headline numbers count (hot-packets: grabs; evening-mix: all).
    pub headline_kinds: Vec<&'static str>,
    pub measured_secs: f64,
    pub headline: LatencySummary,
    pub errors: BTreeMap<String, u64>,
    pub expected: BTreeMap<String, u64>,
    pub kinds: Vec<KindSummary>,
    pub series: Vec<SecondPoint>,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn latency(h: &Histogram<u64>, secs: f64) -> LatencySummary {
    let ops = h.len();
    if ops == 0 {
        return LatencySummary { ops: 0, ops_per_s: 0.0, p50_ms: 0.0, p99_ms: 0.0, p999_ms: 0.0, max_ms: 0.0, mean_ms: 0.0 };
    }
    LatencySummary {
        ops,
        ops_per_s: if secs > 0.0 { ops as f64 / secs } else { 0.0 },
        p50_ms: ms(h.value_at_quantile(0.50)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
        mean_ms: h.mean() / 1000.0,
    }
}

fn add(map: &mut BTreeMap<String, u64>, code: ErrorCode) {
    *map.entry(code_name(code)).or_insert(0) += 1;
}

impl Recorder {
    pub fn new(measure_start: Instant, headline: Vec<Kind>) -> Recorder {
        Recorder { measure_start, headline, kinds: BTreeMap::new(), overall: histogram(3), seconds: Vec::new(), warmup_ops: 0 }
    }

    /// One finished op. `intended` is when the op should have started (open loop: its slot in
    /// the schedule, so a late start counts as latency); `done` is when its answer arrived.
    pub fn record(&mut self, kind: Kind, outcome: Outcome, intended: Instant, done: Instant) {
        if intended < self.measure_start {
            self.warmup_ops += 1;
            return;
        }
        let lat = done.saturating_duration_since(intended);
        let us = (lat.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        let stats = self.kinds.entry(kind).or_insert_with(KindStats::new);
        let answered = match outcome {
            Outcome::Ok => {
                stats.ok += 1;
                true
            }
            Outcome::Expected(c) => {
                add(&mut stats.expected, c);
                true
            }
            Outcome::Error(c) => {
                add(&mut stats.errors, c);
                false
            }
        };
        if answered {
            stats.hist.saturating_record(us);
        }
        if !self.headline.contains(&kind) {
            return;
        }
        if answered {
            self.overall.saturating_record(us);
        }
        let sec = done.saturating_duration_since(self.measure_start).as_secs() as usize;
        if sec >= MAX_SECONDS {
            return;
        }
        while self.seconds.len() <= sec {
            self.seconds.push(Second { ops: 0, errors: 0, hist: histogram(2) });
        }
        let s = &mut self.seconds[sec];
        if answered {
            s.ops += 1;
            s.hist.saturating_record(us);
        } else {
            s.errors += 1;
        }
    }

    /// Headline ops answered in second `sec` and their p99 (ms), for progress lines.
    pub fn second(&self, sec: usize) -> Option<(u64, u64, f64)> {
        self.seconds.get(sec).map(|s| (s.ops, s.errors, ms(s.hist.value_at_quantile(0.99))))
    }

    /// `measured` is the length of the measured window (for ops/s).
    pub fn summary(&self, measured: Duration) -> Summary {
        let secs = measured.as_secs_f64();
        let mut errors = BTreeMap::new();
        let mut expected = BTreeMap::new();
        let mut kinds = Vec::new();
        for (kind, s) in &self.kinds {
            if self.headline.contains(kind) {
                for (c, n) in &s.errors {
                    *errors.entry(c.clone()).or_insert(0) += n;
                }
                for (c, n) in &s.expected {
                    *expected.entry(c.clone()).or_insert(0) += n;
                }
            }
            kinds.push(KindSummary {
                kind: kind.name(),
                ok: s.ok,
                expected: s.expected.clone(),
                errors: s.errors.clone(),
                latency: latency(&s.hist, secs),
            });
        }
        // The series covers the scheduled window only: ops answered after it (the last ones in
        // flight) would make a partial last second look like a collapse. They are still in
        // the histograms above.
        let series = self
            .seconds
            .iter()
            .take(measured.as_secs_f64().ceil() as usize)
            .enumerate()
            .map(|(t, s)| SecondPoint {
                t: t as u64,
                ops: s.ops,
                errors: s.errors,
                p50_ms: if s.ops == 0 { 0.0 } else { ms(s.hist.value_at_quantile(0.50)) },
                p99_ms: if s.ops == 0 { 0.0 } else { ms(s.hist.value_at_quantile(0.99)) },
            })
            .collect();
        Summary {
            headline_kinds: self.headline.iter().map(|k| k.name()).collect(),
            measured_secs: secs,
            headline: latency(&self.overall, secs),
            errors,
            expected,
            kinds,
            series,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_kinds_seconds_and_outcomes() {
        let t0 = Instant::now();
        let start = t0 + Duration::from_secs(1);
        let mut r = Recorder::new(start, vec![Kind::Grab]);
        // Warm-up op: ignored.
        r.record(Kind::Grab, Outcome::Ok, t0, t0 + Duration::from_millis(5));
        // Second 0: 99 grabs of 1 ms and one of 100 ms; second 2: one exhausted grab of 3 ms.
        for i in 0..99 {
            let at = start + Duration::from_millis(i);
            r.record(Kind::Grab, Outcome::Ok, at, at + Duration::from_millis(1));
        }
        r.record(Kind::Grab, Outcome::Ok, start, start + Duration::from_millis(100));
        let at = start + Duration::from_millis(2500);
        r.record(Kind::Grab, Outcome::Expected(ErrorCode::PacketExhausted), at, at + Duration::from_millis(3));
        r.record(Kind::Grab, Outcome::Error(ErrorCode::Timeout), at, at + Duration::from_secs(5));
        // A send is not a headline op here: in its kind's stats, not in the headline.
        r.record(Kind::Send, Outcome::Ok, start, start + Duration::from_millis(7));

        let s = r.summary(Duration::from_secs(10));
        assert_eq!(r.warmup_ops, 1);
        assert_eq!(s.headline.ops, 101);
        assert!((s.headline.ops_per_s - 10.1).abs() < 1e-9);
        assert!((s.headline.p50_ms - 1.0).abs() < 0.01, "{}", s.headline.p50_ms);
        assert!((s.headline.max_ms - 100.0).abs() < 0.1, "{}", s.headline.max_ms);
        assert_eq!(s.errors.get("TIMEOUT"), Some(&1));
        assert_eq!(s.expected.get("PACKET_EXHAUSTED"), Some(&1));
        // Seconds 0, 1 (empty) and 7 (the timeout answered at 2.5 + 5 s).
        assert_eq!(s.series.len(), 8);
        assert_eq!(s.series[0].ops, 100);
        assert_eq!(s.series[1], SecondPoint { t: 1, ops: 0, errors: 0, p50_ms: 0.0, p99_ms: 0.0 });
        assert_eq!(s.series[2].ops, 1);
        assert_eq!(s.series[7].errors, 1);
        let send = s.kinds.iter().find(|k| k.kind == "send").unwrap();
        assert_eq!(send.ok, 1);
        assert_eq!(s.kinds.len(), 2);
        // A 3 s window: the series stops there, the late timeout stays in the counts.
        let s = r.summary(Duration::from_secs(3));
        assert_eq!(s.series.len(), 3);
        assert_eq!(s.errors.get("TIMEOUT"), Some(&1));
    }

    #[test]
    fn empty_recorder_summarizes_to_zeros() {
        let r = Recorder::new(Instant::now(), vec![Kind::Grab]);
        let s = r.summary(Duration::from_secs(0));
        assert_eq!(s.headline.ops, 0);
        assert_eq!(s.headline.ops_per_s, 0.0);
        assert!(s.series.is_empty());
    }
}
