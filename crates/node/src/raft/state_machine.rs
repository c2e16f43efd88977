//! One shard's replicated state machine: the pure ledger, backed by the node's RocksDB.
//!
//! Apply: every entry openraft hands over in one call runs through ONE ledger context, and the
//! ledger's writes plus the new last-applied id and membership go to RocksDB in ONE write batch,
//! so the state on disk always matches some applied prefix of the log.
//!
//! Snapshots (file format, build, install) are in `raft::snapshot`.

use crate::codec::{decode, encode};
use crate::raft::snapshot::{self, ShardLock, SnapshotBuilder, SnapshotFile};
use crate::raft::types::{AppResponse, LogId, SmMeta, SnapshotMeta, StoredMembership, TypeConfig};
use crate::storage::{keys, Db, Durability, ShardStore};
use futures::StreamExt;
use hongbao_ledger::{Ledger, LedgerConfig, ShardId};
use openraft::storage::{EntryResponder, RaftStateMachine, Snapshot};
use openraft::EntryPayload;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct StateMachine {
    db: Arc<Db>,
    shard: ShardId,
    config: Arc<LedgerConfig>,
    /// `config.fingerprint()`, which every applied entry must carry.
    fingerprint: u64,
    dir: PathBuf,
    meta: SmMeta,
    /// Held by snapshot builds and installs of this shard (`raft::snapshot`).
    snapshot_lock: ShardLock,
}

impl StateMachine {
    pub fn open(db: Arc<Db>, shard: ShardId, config: Arc<LedgerConfig>, dir: &Path) -> io::Result<StateMachine> {
        std::fs::create_dir_all(dir)?;
        snapshot::remove_leftovers(dir, shard)?;
        let snapshot_lock = ShardLock::default();
        let meta = match db.get(&keys::sm_meta(shard))? {
            Some(v) => decode(&v)?,
            None => SmMeta::default(),
        };
        let fingerprint = config.fingerprint();
        Ok(StateMachine { db, shard, config, fingerprint, dir: dir.to_path_buf(), meta, snapshot_lock })
    }
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
        let store = ShardStore::live(&self.db, self.shard);
        let mut ledger = Ledger::new(self.shard, &self.config, &store);
        let mut replies = Vec::new();
        let mut meta = self.meta.clone();
        let mut n = 0u64;
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            if let EntryPayload::Normal(ref batch) = entry.payload {
                if batch.1 != self.fingerprint {
                    // Applying it by other rules than its proposer's would make this replica's
                    // money differ from the others'. Nothing of this call is written (the state
                    // stays a prefix of the log) and the error stops this replica's Raft.
                    let msg = format!(
                        "shard {}: entry {} was proposed under ledger config fingerprint {:016x}, this node's is {:016x}: \
                         refusing to apply it (fail-stop); restart this node with the cluster's topology file",
                        self.shard, entry.log_id, batch.1, self.fingerprint
                    );
                    tracing::error!(shard = self.shard, index = entry.log_id.index, "{msg}");
                    return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
                }
            }
            let reply = match entry.payload {
                EntryPayload::Blank => AppResponse::Empty,
                EntryPayload::Normal(ref batch) => AppResponse::Ledger(batch.0.iter().map(|req| ledger.apply(req)).collect()),
                EntryPayload::Membership(ref m) => {
                    meta.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    AppResponse::Empty
                }
            };
            assert!(meta.applied.is_none_or(|a| a.index < entry.log_id.index), "entries apply in log order");
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
        // Without the WAL (the Raft log is the only one): durable at the next checkpoint, with
        // the applied id beside it; after a crash openraft re-applies the log from there.
        self.db.write_off_runtime(b, Durability::Checkpointed).await?;
        if crate::runtime::planted(crate::runtime::Bug::AppliedIndexAheadOfState) {
            self.db.planted_synced_state_put(&keys::sm_meta(self.shard), &encode(&meta))?;
        }
        self.meta = meta;
        for (responder, reply) in replies {
            if let Some(r) = responder {
                r.send(reply);
            }
        }
        metrics::histogram!(crate::metrics::APPLY_BATCH_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::counter!(crate::metrics::APPLIED_ENTRIES).increment(n);
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder::new(self.db.clone(), self.shard, self.dir.clone(), self.snapshot_lock.clone())
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotFile) -> Result<(), io::Error> {
        let db = self.db.clone();
        let shard = self.shard;
        let dir = self.dir.clone();
        let lock = self.snapshot_lock.clone();
        let meta2 = meta.clone();
        let sm_meta =
            crate::runtime::blocking(move || snapshot::install(&db, shard, &meta2, &snapshot, &dir, &lock, snapshot::SST_TARGET_BYTES))
                .await??;
        self.meta = sm_meta;
        metrics::counter!(crate::metrics::SNAPSHOTS_INSTALLED).increment(1);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<crate::raft::types::Snapshot>, io::Error> {
        // The file says what it is (its meta is inside), so file and meta cannot disagree.
        let path = snapshot::current_path(&self.dir, self.shard);
        let read = path.clone();
        let header = crate::runtime::blocking(move || snapshot::read_header(&read)).await?;
        let (shard, meta) = match header {
            Ok(h) => h,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                // Not one this node can send (e.g. an older format): openraft builds a new one
                // when it needs one.
                tracing::warn!(shard = self.shard, error = %e, "current snapshot unreadable; ignored");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if shard != self.shard {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("shard {}'s current snapshot is of shard {shard}", self.shard)));
        }
        Ok(Some(Snapshot { meta, snapshot: SnapshotFile { path } }))
    }
}
