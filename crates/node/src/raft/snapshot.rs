//! Raft snapshots of one shard: the file format, building one from a RocksDB snapshot, and
//! installing one.
//!
//! A snapshot file is length-prefixed (key, value) pairs of the shard's ledger data (keys
//! without the shard prefix). Building never holds the state in memory: a RocksDB snapshot is
//! streamed into the file, and the snapshot's meta (last applied, membership) is read from that
//! same RocksDB snapshot, so data and meta are consistent by construction while apply goes on.

use crate::codec::{decode, encode};
use crate::raft::state_machine::SmMeta;
use crate::raft::types::{SnapshotMeta, TypeConfig};
use crate::storage::{keys, Db};
use hongbao_ledger::ShardId;
use openraft::storage::Snapshot;
use openraft::RaftSnapshotBuilder;
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

impl SnapshotBuilder {
    pub fn new(db: Arc<Db>, shard: ShardId, dir: PathBuf) -> SnapshotBuilder {
        SnapshotBuilder { db, shard, dir }
    }
}

fn build_snapshot_file(db: &Db, shard: ShardId, dir: &Path) -> io::Result<crate::raft::types::Snapshot> {
    let snap = db.snapshot();
    let meta: SmMeta = match db.get_in(Some(&snap), &keys::sm_meta(shard))? {
        Some(v) => decode(&v)?,
        None => SmMeta::default(),
    };
    let tmp = dir.join(format!("shard-{shard}.snap.building"));
    let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
    let (start, end) = keys::data_range(shard);
    let prefix = start.len();
    let mut count = 0u64;
    for item in db.range_in(Some(&snap), &start, &end) {
        let (k, v) = item?;
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
    metrics::counter!(crate::metrics::SNAPSHOTS_BUILT).increment(1);
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

/// Replaces the shard's data with the snapshot's, in one synced batch: a crash leaves either the
/// old state or the new one, never a mix. (The batch holds the state in memory while installing;
/// fine for the state sizes here, noted in docs/design.md.) Keeps the file as the shard's current
/// snapshot at `dest`.
pub(crate) fn install(
    db: &Db,
    shard: ShardId,
    meta: &SnapshotMeta,
    sm_meta: &SmMeta,
    snapshot: &SnapshotFile,
    dest: &Path,
) -> io::Result<()> {
    let mut b = db.batch();
    let (start, end) = keys::data_range(shard);
    b.delete_range(&start, &end);
    let mut r = BufReader::new(std::fs::File::open(&snapshot.path)?);
    while let Some(k) = read_field(&mut r)? {
        let v = read_field(&mut r)?.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "snapshot ends inside a pair"))?;
        b.put(&keys::data(shard, &k), &v);
    }
    b.put(&keys::sm_meta(shard), &encode(sm_meta));
    b.put(&keys::snapshot_meta(shard), &encode(meta));
    if snapshot.path != dest {
        std::fs::copy(&snapshot.path, dest)?;
    }
    db.write_synced(b)
}
