//! `--kill-region`: kill every node of a region during the run and start it again, through
//! `scripts/cluster`, marking both moments on the plot.

use crate::svg::Event;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs `scripts/cluster ARGS`. Err only when it could not be run at all; a non-zero exit is
/// returned as a warning, since the kill itself may well have happened (the plot shows it).
fn run_script(script: &Path, args: &[&str]) -> anyhow::Result<Option<String>> {
    let st = std::process::Command::new(script).args(args).status().with_context(|| format!("running {}", script.display()))?;
    Ok((!st.success()).then(|| format!("{} {} exited with {st}", script.display(), args.join(" "))))
}

/// Kills the region at `kill_at` and starts it again at `restart_at` (seconds after warm-up).
/// The restart is attempted whatever the kill did, so a run never leaves a region down.
/// Returns the warnings (non-zero exits).
pub async fn kill_and_restart(
    script: PathBuf,
    region: String,
    measure_start: Instant,
    kill_at: u64,
    restart_at: u64,
    events: Arc<Mutex<Vec<Event>>>,
) -> anyhow::Result<Vec<String>> {
    let mut warnings = Vec::new();
    let mut failed = None;
    for (at, cmd) in [(kill_at, "kill-region"), (restart_at, "start-region")] {
        tokio::time::sleep_until((measure_start + Duration::from_secs(at)).into()).await;
        let t = measure_start.elapsed().as_secs_f64();
        println!("[{t:6.1}s] scripts/cluster {cmd} {region}");
        let (s, r) = (script.clone(), region.clone());
        match tokio::task::spawn_blocking(move || run_script(&s, &[cmd, &r])).await? {
            Ok(warning) => {
                events.lock().expect("events lock").push(Event { t, label: format!("{cmd} {region}") });
                warnings.extend(warning);
            }
            Err(e) => failed = Some(e),
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(warnings),
    }
}
