//! What a run leaves behind: the table on stdout, `result.json` (derived with serde) and
//! `plot.svg`, and the verdict.

use crate::stats::Summary;
use crate::svg::{self, Event};
use hongbao_client::ClientError;
use hongbao_proto::v1::AuditReply;
use serde::Serialize;
use std::path::Path;

/// `result.json`. Written through `serde_json::Value`, so its keys come out sorted at every level,
/// as they always have.
#[derive(Serialize)]
pub struct RunResult<'a> {
    pub scenario: &'static str,
    pub started_unix_s: u64,
    pub config: Config,
    pub summary: &'a Summary,
    pub events: &'a [Event],
    pub checks: Checks,
    pub audit: Audit,
    /// The cluster's CPU in the measured window (`cpu`), when it could be read.
    pub cpu: Option<crate::cpu::Usage>,
    pub warnings: &'a [String],
    pub failures: &'a [String],
    pub passed: bool,
}

/// The run's settings, as given or defaulted.
#[derive(Serialize)]
pub struct Config {
    /// "open" (fixed rate) or "closed".
    pub mode: &'static str,
    pub rate_ops_per_s: Option<f64>,
    pub concurrency: usize,
    pub rounds_in_flight: usize,
    /// hot-packets only.
    pub group_size: Option<usize>,
    pub warmup_s: u64,
    pub duration_s: u64,
    pub routers: Vec<String>,
    pub topology: String,
    pub kill_region: Option<String>,
    pub kill_at_s: Option<u64>,
    pub restart_at_s: Option<u64>,
    /// Grabs sent in `GrabGateway.Grabs` batches (`--batch-grabs`), not one call each.
    pub batch_grabs: bool,
}

/// Acknowledged grabs checked against the packets.
#[derive(Serialize)]
pub struct Checks {
    pub packets: usize,
    pub acknowledged_grabs: usize,
    pub packets_shown: usize,
    pub problems: Vec<String>,
}

/// The cluster audit at the end: its totals (the shape `hongbao cluster audit --json` prints,
/// without the shards), or why it could not be read.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Audit {
    Totals(hongbao_client::audit::Totals),
    Failed { error: String },
}

impl Audit {
    pub fn of(r: &Result<AuditReply, ClientError>) -> Audit {
        match r {
            Ok(a) => Audit::Totals(a.into()),
            Err(e) => Audit::Failed { error: e.to_string() },
        }
    }
}

/// Writes `result.json` and `plot.svg` into `out`.
pub fn write(out: &Path, title: &str, result: &RunResult) -> anyhow::Result<()> {
    let json = serde_json::to_value(result)?;
    std::fs::write(out.join("result.json"), serde_json::to_string_pretty(&json)? + "\n")?;
    std::fs::write(out.join("plot.svg"), svg::plot(title, &result.summary.series, result.events))?;
    println!("wrote {0}/result.json and {0}/plot.svg", out.display());
    Ok(())
}

/// Prints the warnings and the verdict; the process exit code (0 passed, 1 failed).
pub fn verdict(warnings: &[String], failures: &[String]) -> i32 {
    for w in warnings {
        println!("WARNING: {w}");
    }
    if failures.is_empty() {
        println!("PASSED");
        0
    } else {
        for f in failures {
            println!("FAILED: {f}");
        }
        1
    }
}

pub fn print_table(title: &str, s: &Summary) {
    println!("\n== {title}");
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "op", "answered", "ops/s", "p50 ms", "p99 ms", "p999 ms", "max ms", "ok", "expected", "errors"
    );
    for k in &s.kinds {
        let l = &k.latency;
        println!(
            "{:<10} {:>9} {:>9.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9} {:>8} {:>8}",
            k.kind,
            l.ops,
            l.ops_per_s,
            l.p50_ms,
            l.p99_ms,
            l.p999_ms,
            l.max_ms,
            k.ok,
            k.expected.values().sum::<u64>(),
            k.errors.values().sum::<u64>()
        );
    }
    let h = &s.headline;
    println!(
        "headline ({}): {:.0} ops/s over {:.0} s; latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        s.headline_kinds.join("+"),
        h.ops_per_s,
        s.measured_secs,
        h.p50_ms,
        h.p99_ms,
        h.p999_ms,
        h.max_ms
    );
    for k in &s.kinds {
        for (c, n) in &k.expected {
            println!("  expected {:<9} {c}: {n}", k.kind);
        }
        for (c, n) in &k.errors {
            println!("  error    {:<9} {c}: {n}", k.kind);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape scripts and tests/tests/bench.rs read: same keys as the hand-built JSON had.
    #[test]
    fn the_audit_serializes_as_totals_or_an_error() {
        let ok = serde_json::to_value(Audit::of(&Ok(AuditReply { balanced: true, total_topups_cents: 5, ..Default::default() }))).unwrap();
        assert_eq!(ok["balanced"], true);
        assert_eq!(ok["total_topups_cents"], 5);
        assert_eq!(ok.as_object().unwrap().len(), 8);
        let e = ClientError { detail: hongbao_proto::ErrorDetail { code: hongbao_proto::ErrorCode::Timeout as i32, ..Default::default() } };
        let failed = serde_json::to_value(Audit::of(&Err(e))).unwrap();
        assert_eq!(failed.as_object().unwrap().keys().collect::<Vec<_>>(), ["error"]);
    }
}
