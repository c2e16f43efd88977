//! The chaos schedules by name: which fault each cycle injects, and what cluster it needs
//! (small snapshots, containers, network namespaces).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    KillLeader,
    KillRegion,
    PartitionRegion,
    IsolateLeader,
    PauseNode,
    SlowLinks,
    RollingRestart,
    ClockJump,
    DiskLoss,
    SnapshotStorm,
    ClockLeap,
    BigEntries,
    CorruptSnapshot,
    NetnsPartition,
    Reshape,
    MoveSlots,
}

impl Schedule {
    pub const ALL: [Schedule; 16] = [
        Schedule::KillLeader,
        Schedule::KillRegion,
        Schedule::PartitionRegion,
        Schedule::IsolateLeader,
        Schedule::PauseNode,
        Schedule::SlowLinks,
        Schedule::RollingRestart,
        Schedule::ClockJump,
        Schedule::DiskLoss,
        Schedule::SnapshotStorm,
        Schedule::ClockLeap,
        Schedule::BigEntries,
        Schedule::CorruptSnapshot,
        Schedule::NetnsPartition,
        Schedule::Reshape,
        Schedule::MoveSlots,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Schedule::KillLeader => "kill-leader",
            Schedule::KillRegion => "kill-region",
            Schedule::PartitionRegion => "partition-region",
            Schedule::IsolateLeader => "isolate-leader",
            Schedule::PauseNode => "pause-node",
            Schedule::SlowLinks => "slow-links",
            Schedule::RollingRestart => "rolling-restart",
            Schedule::ClockJump => "clock-jump",
            Schedule::DiskLoss => "disk-loss",
            Schedule::SnapshotStorm => "snapshot-storm",
            Schedule::ClockLeap => "clock-leap",
            Schedule::BigEntries => "big-entries",
            Schedule::CorruptSnapshot => "corrupt-snapshot",
            Schedule::NetnsPartition => "netns-partition",
            Schedule::Reshape => "reshape",
            Schedule::MoveSlots => "move-slots",
        }
    }

    pub fn parse(s: &str) -> Option<Schedule> {
        Schedule::ALL.into_iter().find(|x| x.name() == s)
    }

    /// Schedules that need replicas to fall behind the leaders' purged logs: their clusters
    /// snapshot every SMALL_SNAPSHOT_EVERY entries.
    pub(crate) fn small_snapshots(self) -> bool {
        matches!(self, Schedule::DiskLoss | Schedule::SnapshotStorm | Schedule::CorruptSnapshot)
    }

    /// Schedules that run on a cluster of containers too (`Options::containers`): their faults
    /// are docker's (kill, start) or the network's (disconnect a region from its links).
    pub fn runs_in_containers(self) -> bool {
        matches!(self, Schedule::KillLeader | Schedule::KillRegion | Schedule::PartitionRegion)
    }

    /// Schedules whose nodes each run in their own network namespace (root and `ip netns`).
    pub fn needs_netns(self) -> bool {
        self == Schedule::NetnsPartition
    }
}

/// Snapshot interval and log kept behind it for the snapshot schedules: a follower cut off for
/// a few seconds under the workload falls behind the purged log and needs a snapshot.
pub(crate) const SMALL_SNAPSHOT_EVERY: u64 = 100;
pub(crate) const SMALL_KEEP_BEHIND: u64 = 20;
