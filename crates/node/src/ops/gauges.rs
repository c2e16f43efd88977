//! Gauges an on-call engineer reads, sampled by one background task every `SAMPLE_EVERY`, never
//! computed on a scrape:
//!
//! - per shard, from the replica's Raft metrics (memory): role, leader, term, last log, commit,
//!   applied and snapshot index, entries kept in the log, on the leader each follower's lag;
//!   proposals in flight;
//! - per shard, from its applied state: the totals record (escrow, money in flight to other
//!   shards, balances, wallets, open packets, pending notifications: running aggregates, no
//!   scan) and, per destination, the outbox records not yet delivered (sent seq minus delivered
//!   seq: two small rows);
//! - RocksDB: sizes per column family, write stalls, the block cache.
//!
//! Each sample runs on the blocking pool (its RocksDB reads may touch the disk). Every replica
//! reports its own applied view; a shard's freshest is its leader's (`max by (shard)`).

use crate::host::Host;
use crate::limits::MAX_INFLIGHT_PER_SHARD;
use crate::metrics as m;
use crate::raft::types::NodeId;
use crate::storage::{Db, COLUMN_FAMILIES};
use hongbao_ledger::ShardId;
use metrics::{Counter, Gauge};
use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the gauges are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Registers every gauge (and the snapshot counters, at 0) and samples them until `stop`.
pub fn spawn(host: Arc<Host>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    let gauges = Arc::new(Gauges::new());
    tokio::spawn(async move {
        loop {
            let (h, g) = (host.clone(), gauges.clone());
            let _ = tokio::task::spawn_blocking(move || g.sample(&h)).await;
            tokio::select! {
                biased; // a fixed order, which a seeded simulation can replay (`runtime`)
                _ = tokio::time::sleep(SAMPLE_EVERY) => {},
                _ = stop.changed() => return,
            }
        }
    })
}

/// What the per-shard gauges were built for: the map's version and the replicas hosted here.
type Built = (u64, Vec<ShardId>);

struct Gauges {
    /// Per hosted shard, rebuilt when the map's version or the replicas hosted here change
    /// (membership is online).
    shards: std::sync::Mutex<(Built, Vec<ShardGauges>)>,
    db: DbGauges,
}

impl Gauges {
    fn new() -> Gauges {
        Gauges { shards: std::sync::Mutex::new(((u64::MAX, vec![]), vec![])), db: DbGauges::new() }
    }

    fn sample(&self, host: &Host) {
        let replicas = host.replica_list();
        let key = (host.topology().version, replicas.iter().map(|r| r.id).collect::<Vec<_>>());
        let mut shards = self.shards.lock().expect("gauges lock");
        if shards.0 != key {
            let map = host.topology();
            let list = replicas
                .iter()
                .map(|r| ShardGauges::new(host, r.id, map.shard(r.id).map(|s| s.replicas.as_slice()).unwrap_or(&[])))
                .collect();
            *shards = (key, list);
        }
        for s in &shards.1 {
            s.sample(host);
        }
        self.db.sample(&host.db);
    }
}

const ROLES: [(ServerState, &str); 5] = [
    (ServerState::Leader, "leader"),
    (ServerState::Follower, "follower"),
    (ServerState::Candidate, "candidate"),
    (ServerState::Learner, "learner"),
    (ServerState::Shutdown, "shutdown"),
];

struct ShardGauges {
    id: ShardId,
    roles: Vec<(ServerState, Gauge)>,
    leader: Gauge,
    term: Gauge,
    last_log: Gauge,
    committed: Gauge,
    applied: Gauge,
    snapshot: Gauge,
    log_entries: Gauge,
    lag: Vec<(NodeId, Gauge)>,
    proposals: Gauge,
    escrow: Gauge,
    in_flight: Gauge,
    balances: Gauge,
    accounts: Gauge,
    open_packets: Gauge,
    notifications: Gauge,
    backlog: Vec<(ShardId, Gauge)>,
}

impl ShardGauges {
    fn new(host: &Host, id: ShardId, replicas: &[NodeId]) -> ShardGauges {
        let shard = id.to_string();
        let g = |name: &'static str| metrics::gauge!(name, "shard" => shard.clone());
        m::SnapshotStream::register(m::SNAPSHOTS_SENT, id);
        m::SnapshotStream::register(m::SNAPSHOTS_RECEIVED, id);
        ShardGauges {
            id,
            roles: ROLES.iter().map(|(s, role)| (*s, metrics::gauge!(m::SHARD_ROLE, "shard" => shard.clone(), "role" => *role))).collect(),
            leader: g(m::SHARD_LEADER),
            term: g(m::SHARD_TERM),
            last_log: g(m::SHARD_LAST_LOG_INDEX),
            committed: g(m::SHARD_COMMIT_INDEX),
            applied: g(m::SHARD_APPLIED_INDEX),
            snapshot: g(m::SHARD_SNAPSHOT_INDEX),
            log_entries: g(m::SHARD_LOG_ENTRIES),
            lag: replicas
                .iter()
                .filter(|r| **r != host.node_id)
                .map(|r| (*r, metrics::gauge!(m::REPLICATION_LAG, "shard" => shard.clone(), "follower" => r.to_string())))
                .collect(),
            proposals: g(m::PROPOSALS_IN_FLIGHT),
            escrow: g(m::ESCROW_CENTS),
            in_flight: g(m::IN_FLIGHT_CENTS),
            balances: g(m::BALANCES_CENTS),
            accounts: g(m::ACCOUNTS),
            open_packets: g(m::OPEN_PACKETS),
            notifications: g(m::NOTIFICATIONS_PENDING),
            backlog: host
                .topology()
                .shards
                .iter()
                .filter(|s| s.id != id)
                .map(|s| (s.id, metrics::gauge!(m::RELAY_BACKLOG_RECORDS, "shard" => shard.clone(), "dest" => s.id.to_string())))
                .collect(),
        }
    }

    fn sample(&self, host: &Host) {
        let Ok(r) = host.replica(self.id) else { return };
        {
            let rx = r.raft.metrics();
            let rm = rx.borrow_watched();
            for (state, g) in &self.roles {
                g.set(if rm.state == *state { 1.0 } else { 0.0 });
            }
            self.leader.set(rm.current_leader.unwrap_or(0) as f64);
            self.term.set(rm.current_term as f64);
            let last = rm.last_log_index.unwrap_or(0);
            self.last_log.set(last as f64);
            self.committed.set(rm.local_committed.map(|l| l.index).unwrap_or(0) as f64);
            self.applied.set(rm.last_applied.map(|l| l.index).unwrap_or(0) as f64);
            self.snapshot.set(rm.snapshot.map(|l| l.index).unwrap_or(0) as f64);
            // The log starts at index 0: with nothing purged it holds last + 1 entries.
            let kept = match (rm.purged, rm.last_log_index) {
                (Some(p), Some(l)) => l.saturating_sub(p.index),
                (None, Some(l)) => l + 1,
                (_, None) => 0,
            };
            self.log_entries.set(kept as f64);
            let leads = rm.state == ServerState::Leader;
            for (follower, g) in &self.lag {
                let matched = rm.replication.as_ref().filter(|_| leads).and_then(|rep| rep.get(follower));
                let lag = match matched {
                    Some(id) => last.saturating_sub(id.map(|l| l.index).unwrap_or(0)),
                    None => 0,
                };
                g.set(lag as f64);
            }
        }
        self.proposals.set(MAX_INFLIGHT_PER_SHARD.saturating_sub(r.inflight.available_permits()) as f64);

        let store = host.store(self.id);
        let t = hongbao_ledger::view::totals(&store);
        self.escrow.set(t.escrow.0 as f64);
        self.in_flight.set(t.outbox_pending.0 as f64);
        self.balances.set(t.balances.0 as f64);
        self.accounts.set(t.accounts as f64);
        self.open_packets.set(t.open_packets as f64);
        self.notifications.set(t.notifications_pending as f64);
        let sent = hongbao_ledger::view::sent(&store);
        for (dest, g) in &self.backlog {
            let sent_seq = sent.iter().find(|(d, _)| d == dest).map(|(_, p)| p.seq).unwrap_or(0);
            g.set(sent_seq.saturating_sub(hongbao_ledger::view::delivered(&store, *dest)) as f64);
        }
    }
}

struct CfGauges {
    cf: &'static str,
    sst: Gauge,
    live: Gauge,
    memtable: Gauge,
    pending_compaction: Gauge,
    l0_files: Gauge,
    keys: Gauge,
    delays: Counter,
    stops: Counter,
}

struct DbGauges {
    cfs: Vec<CfGauges>,
    write_stopped: Gauge,
    delayed_rate: Gauge,
    block_cache: Gauge,
    background_errors: Counter,
}

impl DbGauges {
    fn new() -> DbGauges {
        let cfs = COLUMN_FAMILIES
            .iter()
            .map(|cf| {
                let g = |name: &'static str| metrics::gauge!(name, "cf" => *cf);
                let stalls = |kind: &'static str| metrics::counter!(m::ROCKSDB_WRITE_STALLS, "cf" => *cf, "kind" => kind);
                CfGauges {
                    cf,
                    sst: g(m::ROCKSDB_SST_BYTES),
                    live: g(m::ROCKSDB_LIVE_DATA_BYTES),
                    memtable: g(m::ROCKSDB_MEMTABLE_BYTES),
                    pending_compaction: g(m::ROCKSDB_PENDING_COMPACTION_BYTES),
                    l0_files: g(m::ROCKSDB_L0_FILES),
                    keys: g(m::ROCKSDB_ESTIMATED_KEYS),
                    delays: stalls("delay"),
                    stops: stalls("stop"),
                }
            })
            .collect();
        DbGauges {
            cfs,
            write_stopped: metrics::gauge!(m::ROCKSDB_WRITE_STOPPED),
            delayed_rate: metrics::gauge!(m::ROCKSDB_DELAYED_WRITE_RATE),
            block_cache: metrics::gauge!(m::ROCKSDB_BLOCK_CACHE_BYTES),
            background_errors: metrics::counter!(m::ROCKSDB_BACKGROUND_ERRORS),
        }
    }

    fn sample(&self, db: &Db) {
        for c in &self.cfs {
            let int = |name: &str, g: &Gauge| {
                if let Some(v) = db.cf_property_int(c.cf, name) {
                    g.set(v as f64);
                }
            };
            int("rocksdb.total-sst-files-size", &c.sst);
            int("rocksdb.estimate-live-data-size", &c.live);
            int("rocksdb.cur-size-all-mem-tables", &c.memtable);
            int("rocksdb.estimate-pending-compaction-bytes", &c.pending_compaction);
            int("rocksdb.num-files-at-level0", &c.l0_files);
            int("rocksdb.estimate-num-keys", &c.keys);
            let stalls = db.cf_property(c.cf, "rocksdb.cf-write-stall-stats").unwrap_or_default();
            c.delays.absolute(stall_count(&stalls, "total-delays").unwrap_or(0));
            c.stops.absolute(stall_count(&stalls, "total-stops").unwrap_or(0));
        }
        let db_int = |name: &str| db.cf_property_int(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, name);
        self.write_stopped.set(db_int("rocksdb.is-write-stopped").unwrap_or(0) as f64);
        self.delayed_rate.set(db_int("rocksdb.actual-delayed-write-rate").unwrap_or(0) as f64);
        self.block_cache.set(db.block_cache_bytes() as f64);
        self.background_errors.absolute(db_int("rocksdb.background-errors").unwrap_or(0));
    }
}

/// A count from RocksDB's write-stall text (`Write Stall (count): key: n, key: n, ...\n`).
fn stall_count(text: &str, key: &str) -> Option<u64> {
    text.split([',', '\n']).find_map(|part| {
        let (k, v) = part.rsplit_once(": ")?;
        let k = k.rsplit(": ").next()?.trim();
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_counts_are_read_from_rocksdbs_text() {
        let text = "Write Stall (count): cf-l0-file-count-limit-delays-with-ongoing-compaction: 1, l0-file-count-limit-delays: 2, \
                    l0-file-count-limit-stops: 0, total-delays: 7, total-stops: 3\n";
        assert_eq!(stall_count(text, "total-delays"), Some(7));
        assert_eq!(stall_count(text, "total-stops"), Some(3));
        assert_eq!(stall_count(text, "cf-l0-file-count-limit-delays-with-ongoing-compaction"), Some(1));
        assert_eq!(stall_count("", "total-stops"), None);
    }

    /// Every property the sampler reads exists in this RocksDB, for both column families.
    #[test]
    fn every_sampled_rocksdb_property_exists() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_with_statistics(dir.path(), false).unwrap();
        for cf in COLUMN_FAMILIES {
            for p in [
                "rocksdb.total-sst-files-size",
                "rocksdb.estimate-live-data-size",
                "rocksdb.cur-size-all-mem-tables",
                "rocksdb.estimate-pending-compaction-bytes",
                "rocksdb.num-files-at-level0",
                "rocksdb.estimate-num-keys",
                "rocksdb.is-write-stopped",
                "rocksdb.actual-delayed-write-rate",
                "rocksdb.background-errors",
            ] {
                assert!(db.cf_property_int(cf, p).is_some(), "{cf}: {p}");
            }
            let stalls = db.cf_property(cf, "rocksdb.cf-write-stall-stats").expect("write stall stats");
            assert_eq!(stall_count(&stalls, "total-stops"), Some(0), "{stalls}");
            assert_eq!(stall_count(&stalls, "total-delays"), Some(0), "{stalls}");
        }
        assert_eq!(db.cf_property_int("no-such-family", "rocksdb.num-files-at-level0"), None);
    }
}
