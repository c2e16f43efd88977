//! The CPU the cluster spent in the measured window, from `/proc`: every `hongbao-node` and
//! `hongbao-router` process of this machine (the bench itself is not counted), user plus system
//! time of all their threads, sampled when measuring starts and when the schedule ends. Divided
//! by the ops answered in the window, it is the cost of one op across the whole cluster (#30's
//! "CPU per grab"). Processes that start or stop inside the window (a region kill) count only if
//! present at both samples. Other clusters running on the machine would be counted too.

use serde::Serialize;
use std::collections::BTreeMap;

/// `/proc/PID/stat` counts in USER_HZ ticks, which Linux fixes at 100 a second for user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds so far of each cluster process: pid -> (command name, seconds).
pub struct Sample(BTreeMap<u32, (String, f64)>);

pub fn sample() -> Sample {
    let mut by_pid = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return Sample(by_pid) };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        if let Some((comm, secs)) = parse_stat(&stat) {
            if comm == "hongbao-node" || comm == "hongbao-router" {
                by_pid.insert(pid, (comm, secs));
            }
        }
    }
    Sample(by_pid)
}

/// The command name and user + system seconds from one `/proc/PID/stat` line:
/// `pid (comm) state ppid ... utime(14) stime(15) ...`, where comm may hold spaces and
/// parentheses (the fields go on after the last ')').
fn parse_stat(line: &str) -> Option<(String, f64)> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let comm = line.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime field 15.
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / TICKS_PER_SECOND))
}

/// What the cluster spent between two samples, and per op.
#[derive(Serialize, Clone, Debug)]
pub struct Usage {
    pub node_processes: usize,
    pub router_processes: usize,
    pub nodes_cpu_s: f64,
    pub routers_cpu_s: f64,
    /// CPU microseconds per answered headline op (hot-packets: per grab).
    pub nodes_us_per_op: f64,
    pub routers_us_per_op: f64,
    pub cluster_us_per_op: f64,
}

pub fn between(a: &Sample, b: &Sample, ops: u64) -> Option<Usage> {
    let (mut nodes, mut routers) = ((0usize, 0.0f64), (0usize, 0.0f64));
    for (pid, (comm, end)) in &b.0 {
        let Some((c, start)) = a.0.get(pid) else { continue };
        if c != comm {
            continue;
        }
        let spent = (end - start).max(0.0);
        let slot = if comm == "hongbao-node" { &mut nodes } else { &mut routers };
        slot.0 += 1;
        slot.1 += spent;
    }
    if ops == 0 || nodes.0 == 0 {
        return None;
    }
    let per = |s: f64| s * 1e6 / ops as f64;
    Some(Usage {
        node_processes: nodes.0,
        router_processes: routers.0,
        nodes_cpu_s: nodes.1,
        routers_cpu_s: routers.1,
        nodes_us_per_op: per(nodes.1),
        routers_us_per_op: per(routers.1),
        cluster_us_per_op: per(nodes.1 + routers.1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_name_and_user_plus_system_seconds_even_with_odd_names() {
        let line = "4242 (hongbao-node) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0 100 0 0";
        assert_eq!(parse_stat(line), Some(("hongbao-node".to_string(), 3.0)));
        let odd = "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 100 100 0 0 20 0 1 0 1 0 0";
        assert_eq!(parse_stat(odd), Some(("a (b) c".to_string(), 2.0)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn usage_counts_only_processes_present_at_both_samples_and_divides_by_ops() {
        let a = Sample(BTreeMap::from([
            (1, ("hongbao-node".into(), 1.0)),
            (2, ("hongbao-router".into(), 1.0)),
            (3, ("hongbao-node".into(), 5.0)),
        ]));
        let b = Sample(BTreeMap::from([
            (1, ("hongbao-node".into(), 3.0)),
            (2, ("hongbao-router".into(), 2.0)),
            (4, ("hongbao-node".into(), 9.0)),
        ]));
        let u = between(&a, &b, 1_000_000).expect("usage");
        assert_eq!((u.node_processes, u.router_processes), (1, 1));
        assert!((u.nodes_us_per_op - 2.0).abs() < 1e-9 && (u.routers_us_per_op - 1.0).abs() < 1e-9);
        assert!((u.cluster_us_per_op - 3.0).abs() < 1e-9);
        assert!(between(&a, &b, 0).is_none());
    }
}
