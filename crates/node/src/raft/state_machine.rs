//! One shard's replicated state machine: the pure ledger, backed by the node's RocksDB.
//!
//! Apply: every entry openraft hands over in one call runs through ONE ledger context, and the
//! ledger's writes plus the new last-applied id and membership go to RocksDB in ONE write batch,
//! so the state on disk always matches some applied prefix of the log.
//!
//! Snapshots never hold the state in memory while building: a RocksDB snapshot is streamed into a
//! file, and the snapshot's meta (last applied, membership) is read from that same RocksDB
//! snapshot, so data and meta are consistent by construction even while apply goes on.

use crate::raft::types::{AppResponse, LogId, SnapshotMeta, StoredMembership, TypeConfig};
use crate::codec::{decode, encode};
use crate::storage::{keys, Db};
use futures::StreamExt;
use hongbao_ledger::{Ledger, LedgerConfig, ShardId};
use openraft::storage::{EntryResponder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A snapshot on disk: length-prefixed (key, value) pairs of the shard's ledger data.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    pub path: PathBuf,
}

/// Bound on one key or value in a snapshot file; anything larger is corruption.
const MAX_SNAPSHOT_FIELD: usize = 16 << 20;

/// Persisted alongside the ledger data in every apply batch.
#[derive(serde::Serialize, serde::Deserialize, Default, Clone)]
struct SmMeta {
    applied: Option<LogId>,
    membership: StoredMembership,
}

pub struct StateMachine {
    db: Arc<Db>,
    shard: ShardId,
    config: Arc<LedgerConfig>,
    dir: PathBuf,
    meta: SmMeta,
}

/// The ledger's view of one shard's data in RocksDB: ledger keys without the shard prefix.
pub struct ShardStore<'a> {
    pub db: &'a Db,
    pub shard: ShardId,
}

impl hongbao_ledger::Store for ShardStore<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        // A read error here would make replicas diverge silently; stop the node instead.
        self.db.get(&keys::data(self.shard, key)).expect("RocksDB read failed")
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let rows = self
            .db
            .scan(&keys::data(self.shard, start), &keys::data(self.shard, end), limit)
            .expect("RocksDB scan failed");
        let prefix = keys::data(self.shard, &[]).len();
        rows.into_iter().map(|(k, v)| (k[prefix..].to_vec(), v)).collect()
    }
}

/// The ledger's view of a shard at one point in time (a RocksDB snapshot): every apply batch is
/// one atomic write, so this always shows the state after some whole applied batch.
pub struct SnapshotStore<'a> {
    pub snap: rocksdb::Snapshot<'a>,
    pub shard: ShardId,
}

impl hongbao_ledger::Store for SnapshotStore<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.snap.get(keys::data(self.shard, key)).expect("RocksDB read failed")
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let from = keys::data(self.shard, start);
        let to = keys::data(self.shard, end);
        let prefix = keys::data(self.shard, &[]).len();
        let mut out = Vec::new();
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_upper_bound(to.clone());
        for item in self.snap.iterator_opt(rocksdb::IteratorMode::From(&from, rocksdb::Direction::Forward), ro) {
            let (k, v) = item.expect("RocksDB scan failed");
            if *k >= *to || out.len() >= limit {
                break;
            }
            out.push((k[prefix..].to_vec(), v.to_vec()));
        }
        out
    }
}

impl StateMachine {
    pub fn open(db: Arc<Db>, shard: ShardId, config: Arc<LedgerConfig>, dir: &Path) -> io::Result<StateMachine> {
        std::fs::create_dir_all(dir)?;
        let meta = match db.get(&keys::sm_meta(shard))? {
            Some(v) => decode(&v)?,
            None => SmMeta::default(),
        };
        Ok(StateMachine { db, shard, config, dir: dir.to_path_buf(), meta })
    }

    fn current_snapshot_path(&self) -> PathBuf {
        self.dir.join(format!("shard-{}.snap", self.shard))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<crate::raft::types::Snapshot, io::Error> {
        let db = self.db.clone();
        let shard = self.shard;
        let dir = self.dir.clone();
        // Blocking RocksDB iteration and file writes: keep them off the async workers.
        tokio::task::spawn_blocking(move || build_snapshot_file(&db, shard, &dir))
            .await
            .map_err(|e| io::Error::other(format!("snapshot task: {e}")))?
    }
}

pub struct SnapshotBuilder {
    db: Arc<Db>,
    shard: ShardId,
    dir: PathBuf,
}

fn build_snapshot_file(db: &Db, shard: ShardId, dir: &Path) -> io::Result<crate::raft::types::Snapshot> {
    let snap = db.snapshot();
    let meta: SmMeta = match snap.get(keys::sm_meta(shard)).map_err(|e| io::Error::other(e.to_string()))? {
        Some(v) => decode(&v)?,
        None => SmMeta::default(),
    };
    let tmp = dir.join(format!("shard-{shard}.snap.building"));
    let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
    let (start, end) = keys::data_range(shard);
    let prefix = start.len();
    let mut count = 0u64;
    for item in snap.iterator(rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward)) {
        let (k, v) = item.map_err(|e| io::Error::other(e.to_string()))?;
        if *k >= *end {
            break;
        }
        write_field(&mut w, &k[prefix..])?;
        write_field(&mut w, &v)?;
        count += 1;
    }
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    let path = dir.join(format!("shard-{shard}.snap"));
    std::fs::rename(&tmp, &path)?;
    let snapshot_meta = SnapshotMeta { last_log_id: meta.applied, last_membership: meta.membership };
    let mut b = db.batch();
    b.put(&keys::snapshot_meta(shard), &encode(&snapshot_meta));
    db.write_synced(b)?;
    tracing::info!(shard, keys = count, last = ?snapshot_meta.last_log_id, "snapshot built");
    metrics::counter!("hongbao_snapshots_built_total").increment(1);
    Ok(Snapshot { meta: snapshot_meta, snapshot: SnapshotFile { path } })
}

fn write_field(w: &mut impl Write, b: &[u8]) -> io::Result<()> {
    w.write_all(&(b.len() as u32).to_be_bytes())?;
    w.write_all(b)
}

fn read_field(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_SNAPSHOT_FIELD {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "snapshot field too large"));
    }
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf)?;
    Ok(Some(buf))
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.meta.applied, self.meta.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        let started = std::time::Instant::now();
        let store = ShardStore { db: &self.db, shard: self.shard };
        let mut ledger = Ledger::new(self.shard, &self.config, &store);
        let mut replies = Vec::new();
        let mut meta = self.meta.clone();
        let mut n = 0u64;
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let reply = match entry.payload {
                EntryPayload::Blank => AppResponse::Empty,
                EntryPayload::Normal(ref batch) => AppResponse::Ledger(batch.0.iter().map(|req| ledger.apply(req)).collect()),
                EntryPayload::Membership(ref m) => {
                    meta.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    AppResponse::Empty
                }
            };
            assert!(meta.applied.map_or(true, |a| a.index < entry.log_id.index), "entries apply in log order");
            meta.applied = Some(entry.log_id);
            replies.push((responder, reply));
            n += 1;
        }
        let writes = ledger.into_writes();
        let mut b = self.db.batch();
        for (k, v) in writes.iter() {
            match v {
                Some(v) => b.put(&keys::data(self.shard, k), v),
                None => b.delete(&keys::data(self.shard, k)),
            }
        }
        b.put(&keys::sm_meta(self.shard), &encode(&meta));
        // Unsynced: the log entries are already durable; after a crash openraft re-applies
        // from the last applied id that made it to disk.
        self.db.write_off_runtime(b, false).await?;
        self.meta = meta;
        for (responder, reply) in replies {
            if let Some(r) = responder {
                r.send(reply);
            }
        }
        metrics::histogram!("hongbao_apply_batch_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("hongbao_applied_entries_total").increment(n);
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { db: self.db.clone(), shard: self.shard, dir: self.dir.clone() }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotFile) -> Result<(), io::Error> {
        let db = self.db.clone();
        let shard = self.shard;
        let dest = self.current_snapshot_path();
        let meta2 = meta.clone();
        let sm_meta = SmMeta { applied: meta.last_log_id, membership: meta.last_membership.clone() };
        let sm_meta2 = sm_meta.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            // Replace the shard's data in one synced batch: a crash leaves either the old state
            // or the new one, never a mix. (The batch holds the state in memory while
            // installing; fine for the state sizes here, noted in docs/design.md.)
            let mut b = db.batch();
            let (start, end) = keys::data_range(shard);
            b.delete_range(&start, &end);
            let mut r = BufReader::new(std::fs::File::open(&snapshot.path)?);
            while let Some(k) = read_field(&mut r)? {
                let v = read_field(&mut r)?.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "snapshot ends inside a pair"))?;
                b.put(&keys::data(shard, &k), &v);
            }
            b.put(&keys::sm_meta(shard), &encode(&sm_meta2));
            b.put(&keys::snapshot_meta(shard), &encode(&meta2));
            if snapshot.path != dest {
                std::fs::copy(&snapshot.path, &dest)?;
            }
            db.write_synced(b)
        })
        .await
        .map_err(|e| io::Error::other(format!("install task: {e}")))??;
        self.meta = sm_meta;
        tracing::info!(shard, last = ?meta.last_log_id, "snapshot installed");
        metrics::counter!("hongbao_snapshots_installed_total").increment(1);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<crate::raft::types::Snapshot>, io::Error> {
        let meta: Option<SnapshotMeta> = match self.db.get(&keys::snapshot_meta(self.shard))? {
            Some(v) => Some(decode(&v)?),
            None => None,
        };
        let path = self.current_snapshot_path();
        match meta {
            Some(meta) if path.exists() => Ok(Some(Snapshot { meta, snapshot: SnapshotFile { path } })),
            _ => Ok(None),
        }
    }
}
