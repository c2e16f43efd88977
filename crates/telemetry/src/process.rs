//! The process's own resources, in the names every Prometheus client library uses, read from
//! `/proc/self` by a background task (Linux; elsewhere nothing is exported):
//!
//! | metric | type | meaning |
//! | --- | --- | --- |
//! | `process_cpu_seconds_total` | gauge (only grows) | user + system CPU time |
//! | `process_resident_memory_bytes` | gauge | resident set size |
//! | `process_virtual_memory_bytes` | gauge | virtual memory size |
//! | `process_threads` | gauge | OS threads |
//! | `process_open_fds` / `process_max_fds` | gauge | open file descriptors / their soft limit |
//! | `process_start_time_seconds` | gauge | start time, Unix seconds |
//!
//! CPU seconds are a gauge because the `metrics` crate's counters hold integers; `rate()` reads
//! it the same.

use std::time::Duration;

pub const CPU_SECONDS: &str = "process_cpu_seconds_total";
pub const RESIDENT_BYTES: &str = "process_resident_memory_bytes";
pub const VIRTUAL_BYTES: &str = "process_virtual_memory_bytes";
pub const THREADS: &str = "process_threads";
pub const OPEN_FDS: &str = "process_open_fds";
pub const MAX_FDS: &str = "process_max_fds";
pub const START_TIME: &str = "process_start_time_seconds";

/// How often the task samples `/proc/self`.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// Clock ticks per second of `/proc/<pid>/stat`'s times (USER_HZ: 100 on every Linux port).
const TICKS_PER_SECOND: f64 = 100.0;

/// Registers the descriptions.
pub fn describe() {
    metrics::describe_gauge!(CPU_SECONDS, "User and system CPU time of the process, seconds (only grows: use rate())");
    metrics::describe_gauge!(RESIDENT_BYTES, "Resident memory of the process, bytes");
    metrics::describe_gauge!(VIRTUAL_BYTES, "Virtual memory of the process, bytes");
    metrics::describe_gauge!(THREADS, "OS threads of the process");
    metrics::describe_gauge!(OPEN_FDS, "Open file descriptors of the process");
    metrics::describe_gauge!(MAX_FDS, "Soft limit on the process's open file descriptors");
    metrics::describe_gauge!(START_TIME, "Start time of the process, seconds since the Unix epoch");
}

/// One reading of `/proc/self`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub threads: u64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
    /// Clock ticks after boot when the process started.
    pub start_ticks: u64,
}

/// Reads `/proc/self` (None off Linux or if it is unreadable).
pub fn sample() -> Option<Sample> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let mut s = parse_stat(&stat)?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    s.resident_bytes = status_kib(&status, "VmRSS:").map(|k| k * 1024).unwrap_or(0);
    s.open_fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(0);
    s.max_fds = std::fs::read_to_string("/proc/self/limits").ok().as_deref().and_then(max_open_files);
    Some(s)
}

/// `/proc/<pid>/stat`: the fields after the command name (which may hold spaces and parens).
fn parse_stat(stat: &str) -> Option<Sample> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): field N is f[N - 3].
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Sample {
        cpu_seconds: (num(14)? + num(15)?) as f64 / TICKS_PER_SECOND,
        threads: num(20)?,
        start_ticks: num(22)?,
        virtual_bytes: num(23)?,
        ..Sample::default()
    })
}

/// A `kB` line of `/proc/<pid>/status`.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix(key))?.split_whitespace().next()?.parse().ok()
}

/// The soft limit of "Max open files" in `/proc/<pid>/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    limits.lines().find_map(|l| l.strip_prefix("Max open files"))?.split_whitespace().next()?.parse().ok()
}

/// The boot time, Unix seconds (`btime` of `/proc/stat`).
fn boot_time() -> Option<u64> {
    std::fs::read_to_string("/proc/stat").ok()?.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()
}

/// Describes the metrics and spawns the sampling task (every `SAMPLE_EVERY`) on the current
/// tokio runtime. Reading `/proc/self` takes microseconds, so it runs on the async worker.
pub fn spawn() -> tokio::task::JoinHandle<()> {
    describe();
    let cpu = metrics::gauge!(CPU_SECONDS);
    let resident = metrics::gauge!(RESIDENT_BYTES);
    let virt = metrics::gauge!(VIRTUAL_BYTES);
    let threads = metrics::gauge!(THREADS);
    let open_fds = metrics::gauge!(OPEN_FDS);
    let max_fds = metrics::gauge!(MAX_FDS);
    let start = metrics::gauge!(START_TIME);
    let boot = boot_time();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let Some(s) = sample() else { return };
            cpu.set(s.cpu_seconds);
            resident.set(s.resident_bytes as f64);
            virt.set(s.virtual_bytes as f64);
            threads.set(s.threads as f64);
            open_fds.set(s.open_fds as f64);
            if let Some(m) = s.max_fds {
                max_fds.set(m as f64);
            }
            if let Some(b) = boot {
                start.set(b as f64 + s.start_ticks as f64 / TICKS_PER_SECOND);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        let stat = "4242 (hongbao (node) x) S 1 4242 4242 0 -1 4194560 5000 0 0 0 250 75 0 0 20 0 17 0 123456 987654321 2048 \
                    18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
        let s = parse_stat(stat).unwrap();
        assert_eq!(s.cpu_seconds, 3.25);
        assert_eq!(s.threads, 17);
        assert_eq!(s.start_ticks, 123456);
        assert_eq!(s.virtual_bytes, 987654321);
        assert_eq!(status_kib("Name:\tx\nVmRSS:\t  51200 kB\nThreads: 3\n", "VmRSS:"), Some(51200));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 1048576              files\n";
        assert_eq!(max_open_files(limits), Some(1024));
    }

    #[test]
    fn this_process_is_sampled() {
        let s = sample().expect("/proc/self on Linux");
        assert!(s.resident_bytes > 0 && s.virtual_bytes >= s.resident_bytes, "{s:?}");
        assert!(s.threads >= 1 && s.open_fds >= 3, "{s:?}");
        assert!(boot_time().unwrap() > 1_500_000_000);
    }
}
