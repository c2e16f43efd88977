//! Raft snapshots of one shard: the file format, building one from a RocksDB snapshot, receiving
//! one, and installing one.
//!
//! File format (version 2), every number big-endian:
//!
//! ```text
//! "HBSNAP\r\n"  version u32  shard u32  meta_len u32  meta (bincode SnapshotMeta)
//! { key_len u32  key  value_len u32  value }*     the shard's ledger data, keys without the
//!                                                 shard prefix, strictly ascending
//! 0xFFFF_FFFF  pair_count u64  sha256             of every byte before the digest
//! ```
//!
//! The file says which shard and which log position it is, and a reader knows where it ends: a
//! cut anywhere (even at a pair boundary), a flipped byte or a trailing byte is an error. A file
//! is verified to its last byte before it touches the shard.
//!
//! Building never holds the state in memory: a RocksDB snapshot is streamed into a temp file, and
//! the meta (last applied, membership) is read from that same RocksDB snapshot, so data and meta
//! are consistent by construction while apply goes on. The file is fsynced, renamed to the
//! shard's current snapshot and the directory fsynced.
//!
//! Receiving: every stream writes its own temp file (`ReceivingFile`), fsyncs it and verifies
//! it, including that the meta inside equals the meta the stream announced; it is deleted when the
//! stream is done, whatever happened.
//!
//! Installing never holds the shard in memory either, and is one atomic step for RocksDB:
//! 1. `stage`: read the file once, verifying it to its last byte, into SST files: first one
//!    holding only a range delete of the shard's data, then the pairs in files of bounded size,
//!    last one holding the new applied state and snapshot meta. Nothing has changed yet; a bad
//!    file fails here;
//! 2. `place`: the file becomes the shard's current snapshot (link or copy, fsync, rename,
//!    directory fsync);
//! 3. `ingest`: all the SSTs in one ingest, which RocksDB applies atomically, later files above
//!    earlier ones (so the range delete hides the old data, not the new).
//!
//! A crash before 3 leaves the old state whole (and, after 2, a newer current snapshot, which
//! openraft installs at startup); after 3, the new state whole. Readers, even of live state,
//! never see the shard half replaced. Builds and installs of a shard take one lock, so a build
//! never renames its file over one being installed.

use crate::codec::{decode, encode};
use crate::raft::types::SmMeta;
use crate::raft::types::{SnapshotMeta, TypeConfig};
use crate::storage::{keys, sync_dir, Db};
use hongbao_ledger::ShardId;
use openraft::storage::Snapshot;
use openraft::RaftSnapshotBuilder;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A snapshot on disk, in the format above.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    pub path: PathBuf,
}

const MAGIC: &[u8; 8] = b"HBSNAP\r\n";
const VERSION: u32 = 2;
/// Where a key length would be: the end of the pairs.
const END_MARKER: u32 = u32::MAX;
/// Bound on one key or value in a snapshot file; anything larger is corruption.
const MAX_SNAPSHOT_FIELD: usize = 16 << 20;
/// Bound on the encoded meta (a membership config): anything larger is corruption.
const MAX_META: usize = 1 << 20;
/// Target size of one SST file staged for an install: the shard goes into RocksDB in pieces of
/// about this much, never more in memory than the SST writer's current block and index.
pub(crate) const SST_TARGET_BYTES: u64 = 64 << 20;

/// Serialises a shard's snapshot builds and installs (see the module doc).
pub(crate) type ShardLock = Arc<Mutex<()>>;

fn lock(l: &Mutex<()>) -> std::sync::MutexGuard<'_, ()> {
    // The lock guards no data, only the files and ranges; a panic while holding it poisons
    // nothing worth refusing over.
    l.lock().unwrap_or_else(|p| p.into_inner())
}

fn corrupt(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// A name no other stream, build or install of this process uses, and that no leftover of an
/// earlier one can be (files are created with `create_new`).
fn unique() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}-{:08x}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed), crate::runtime::random_u64() as u32)
}

/// The shard's current snapshot: the last one built or installed.
pub(crate) fn current_path(dir: &Path, shard: ShardId) -> PathBuf {
    dir.join(format!("shard-{shard}.snap"))
}

/// Removes what crashed builds, receives and installs of `shard` left in `dir` (temp files and
/// staging directories; never the current snapshot).
pub(crate) fn remove_leftovers(dir: &Path, shard: ShardId) -> io::Result<()> {
    let temp = format!("shard-{shard}.snap.");
    let staging = format!("shard-{shard}.ingest-");
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&temp) {
            std::fs::remove_file(entry.path())?;
        } else if name.starts_with(&staging) {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

/// Deletes a temp file or directory when dropped, unless `keep` was called.
struct Cleanup(Option<PathBuf>);

impl Cleanup {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        }
    }
}

// ---- format ----

/// Writes a snapshot file; the checksum covers every byte written before the digest.
pub(crate) struct SnapshotWriter<W: Write> {
    w: W,
    sha: ring::digest::Context,
    count: u64,
}

impl<W: Write> SnapshotWriter<W> {
    pub(crate) fn new(w: W, shard: ShardId, meta: &SnapshotMeta) -> io::Result<SnapshotWriter<W>> {
        let mut s = SnapshotWriter { w, sha: ring::digest::Context::new(&ring::digest::SHA256), count: 0 };
        let meta = encode(meta);
        s.put(MAGIC)?;
        s.put(&VERSION.to_be_bytes())?;
        s.put(&shard.to_be_bytes())?;
        s.put(&(meta.len() as u32).to_be_bytes())?;
        s.put(&meta)?;
        Ok(s)
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.sha.update(b);
        self.w.write_all(b)
    }

    /// One pair; keys must come in ascending order (readers refuse anything else).
    pub(crate) fn pair(&mut self, k: &[u8], v: &[u8]) -> io::Result<()> {
        for b in [k, v] {
            if b.len() > MAX_SNAPSHOT_FIELD {
                return Err(io::Error::other(format!("snapshot field of {} bytes", b.len())));
            }
            self.put(&(b.len() as u32).to_be_bytes())?;
            self.put(b)?;
        }
        self.count += 1;
        Ok(())
    }

    /// Writes the trailer and hands back the writer (flushed).
    pub(crate) fn finish(mut self) -> io::Result<(W, u64)> {
        self.put(&END_MARKER.to_be_bytes())?;
        self.put(&self.count.to_be_bytes())?;
        let digest = self.sha.clone().finish();
        self.w.write_all(digest.as_ref())?;
        self.w.flush()?;
        Ok((self.w, self.count))
    }
}

/// Reads a snapshot file: the header at `open`, then pairs until the trailer, which is checked
/// (count, checksum, nothing after it) before `next` reports the end.
pub(crate) struct SnapshotReader<R: Read> {
    r: R,
    sha: ring::digest::Context,
    pub shard: ShardId,
    pub meta: SnapshotMeta,
    count: u64,
    prev: Vec<u8>,
}

impl<R: Read> SnapshotReader<R> {
    pub(crate) fn new(r: R) -> io::Result<SnapshotReader<R>> {
        let mut s = SnapshotReader {
            r,
            sha: ring::digest::Context::new(&ring::digest::SHA256),
            shard: 0,
            meta: SnapshotMeta::default(),
            count: 0,
            prev: Vec::new(),
        };
        let mut magic = [0u8; 8];
        s.take(&mut magic).map_err(|_| corrupt("snapshot file too short for its header"))?;
        if &magic != MAGIC {
            return Err(corrupt("not a snapshot file (or one of an older format)"));
        }
        let version = s.u32()?;
        if version != VERSION {
            return Err(corrupt(format!("snapshot file version {version}, this node reads {VERSION}")));
        }
        s.shard = s.u32()?;
        let n = s.u32()? as usize;
        if n > MAX_META {
            return Err(corrupt("snapshot meta too large"));
        }
        let mut meta = vec![0u8; n];
        s.take(&mut meta)?;
        s.meta = decode(&meta)?;
        Ok(s)
    }

    fn take(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.r.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => corrupt("snapshot file ends early (truncated)"),
            _ => e,
        })?;
        self.sha.update(buf);
        Ok(())
    }

    fn u32(&mut self) -> io::Result<u32> {
        let mut b = [0u8; 4];
        self.take(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn field(&mut self, len: u32, buf: &mut Vec<u8>) -> io::Result<()> {
        let n = len as usize;
        if n > MAX_SNAPSHOT_FIELD {
            return Err(corrupt("snapshot field too large"));
        }
        buf.resize(n, 0);
        self.take(buf)
    }

    /// The next pair into `k` and `v` (reusing their memory), or false at a verified end.
    pub(crate) fn next(&mut self, k: &mut Vec<u8>, v: &mut Vec<u8>) -> io::Result<bool> {
        let len = self.u32()?;
        if len == END_MARKER {
            self.end()?;
            return Ok(false);
        }
        self.field(len, k)?;
        if self.count > 0 && *k <= self.prev {
            return Err(corrupt("snapshot keys out of order"));
        }
        let vlen = self.u32()?;
        self.field(vlen, v)?;
        self.count += 1;
        self.prev.clear();
        self.prev.extend_from_slice(k);
        Ok(true)
    }

    fn end(&mut self) -> io::Result<()> {
        let mut n = [0u8; 8];
        self.take(&mut n)?;
        if u64::from_be_bytes(n) != self.count {
            return Err(corrupt(format!("snapshot trailer counts {} pairs, the file holds {}", u64::from_be_bytes(n), self.count)));
        }
        let want = std::mem::replace(&mut self.sha, ring::digest::Context::new(&ring::digest::SHA256)).finish();
        let mut got = [0u8; 32];
        self.r.read_exact(&mut got).map_err(|_| corrupt("snapshot file ends inside its checksum"))?;
        if got[..] != *want.as_ref() {
            return Err(corrupt("snapshot checksum mismatch"));
        }
        let mut extra = [0u8; 1];
        if self.r.read(&mut extra)? != 0 {
            return Err(corrupt("bytes after the snapshot's trailer"));
        }
        Ok(())
    }

    pub(crate) fn count(&self) -> u64 {
        self.count
    }
}

fn open_file(path: &Path) -> io::Result<SnapshotReader<BufReader<std::fs::File>>> {
    SnapshotReader::new(BufReader::with_capacity(1 << 20, std::fs::File::open(path)?))
}

/// The shard and meta a snapshot file says it is, from its header alone.
pub(crate) fn read_header(path: &Path) -> io::Result<(ShardId, SnapshotMeta)> {
    let r = open_file(path)?;
    Ok((r.shard, r.meta))
}

/// Reads the whole file and checks it; its shard, meta and pair count.
pub(crate) fn verify(path: &Path) -> io::Result<(ShardId, SnapshotMeta, u64)> {
    let mut r = open_file(path)?;
    let (mut k, mut v) = (Vec::new(), Vec::new());
    while r.next(&mut k, &mut v)? {}
    Ok((r.shard, r.meta.clone(), r.count()))
}

// ---- build ----

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<crate::raft::types::Snapshot, io::Error> {
        let db = self.db.clone();
        let shard = self.shard;
        let dir = self.dir.clone();
        let lock = self.lock.clone();
        // Blocking RocksDB iteration and file writes: keep them off the async workers.
        crate::runtime::blocking(move || build_snapshot_file(&db, shard, &dir, &lock)).await?
    }
}

pub struct SnapshotBuilder {
    db: Arc<Db>,
    shard: ShardId,
    dir: PathBuf,
    lock: ShardLock,
}

impl SnapshotBuilder {
    pub(crate) fn new(db: Arc<Db>, shard: ShardId, dir: PathBuf, lock: ShardLock) -> SnapshotBuilder {
        SnapshotBuilder { db, shard, dir, lock }
    }
}

fn build_snapshot_file(db: &Db, shard: ShardId, dir: &Path, lock: &Mutex<()>) -> io::Result<crate::raft::types::Snapshot> {
    let _one_at_a_time = self::lock(lock);
    let snap = db.snapshot();
    let meta: SmMeta = match db.get_in(Some(&snap), &keys::sm_meta(shard))? {
        Some(v) => decode(&v)?,
        None => SmMeta::default(),
    };
    let snapshot_meta = SnapshotMeta { last_log_id: meta.applied, last_membership: meta.membership };
    let tmp = dir.join(format!("shard-{shard}.snap.building-{}", unique()));
    let f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
    let cleanup = Cleanup(Some(tmp.clone()));
    let mut w = SnapshotWriter::new(BufWriter::with_capacity(1 << 20, f), shard, &snapshot_meta)?;
    let (start, end) = keys::data_range(shard);
    let prefix = start.len();
    for item in db.range_in(Some(&snap), &start, &end) {
        let (k, v) = item?;
        w.pair(&k[prefix..], &v)?;
    }
    let (w, count) = w.finish()?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    let path = current_path(dir, shard);
    std::fs::rename(&tmp, &path)?;
    cleanup.keep();
    sync_dir(dir)?;
    let mut b = db.batch();
    b.put(&keys::snapshot_meta(shard), &encode(&snapshot_meta));
    db.write_state(b)?;
    // openraft purges the log behind a snapshot once it has it: first make the state durable up
    // to at least the snapshot's last entry, so a crash never needs a purged entry to re-apply.
    db.checkpoint()?;
    tracing::info!(shard, keys = count, last = ?snapshot_meta.last_log_id, "snapshot built");
    metrics::counter!(crate::metrics::SNAPSHOTS_BUILT).increment(1);
    Ok(Snapshot { meta: snapshot_meta, snapshot: SnapshotFile { path } })
}

// ---- receive ----

/// One incoming snapshot stream's own temp file. Deleted when dropped: an install keeps its own
/// link to the file, and a failed or abandoned stream leaves nothing behind.
pub struct ReceivingFile {
    path: PathBuf,
    file: Option<std::fs::File>,
    bytes: u64,
    _cleanup: Cleanup,
}

impl ReceivingFile {
    pub fn create(dir: &Path, shard: ShardId) -> io::Result<ReceivingFile> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("shard-{shard}.snap.recv-{}", unique()));
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
        Ok(ReceivingFile { _cleanup: Cleanup(Some(path.clone())), path, file: Some(file), bytes: 0 })
    }

    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let f = self.file.as_mut().ok_or_else(|| io::Error::other("snapshot file already finished"))?;
        f.write_all(data)?;
        self.bytes += data.len() as u64;
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Fsyncs and verifies the whole file: a complete, intact snapshot of `shard` at `meta` (what
    /// the stream announced). Blocking.
    pub fn finish(&mut self, shard: ShardId, meta: &SnapshotMeta) -> io::Result<SnapshotFile> {
        if let Some(f) = self.file.take() {
            f.sync_all()?;
        }
        let (in_shard, in_meta, _) = verify(&self.path)?;
        if in_shard != shard {
            return Err(corrupt(format!("received a snapshot of shard {in_shard} for shard {shard}")));
        }
        if in_meta != *meta {
            return Err(corrupt(format!("received snapshot holds {in_meta:?}, the stream announced {meta:?}")));
        }
        // The install gets a link of its own: openraft may run it after the stream's handler
        // has returned and deleted this file (seen on a learner's first snapshot). `install`
        // removes the link once the snapshot is placed; one never installed is a leftover.
        let dir = self.path.parent().ok_or_else(|| io::Error::other("snapshot file has no folder"))?;
        let link = dir.join(format!("shard-{shard}.snap.install-{}", unique()));
        if std::fs::hard_link(&self.path, &link).is_err() {
            std::fs::copy(&self.path, &link)?;
        }
        Ok(SnapshotFile { path: link })
    }
}

// ---- install ----

/// A verified snapshot file turned into SST files for the shard's data range, ready to ingest.
/// The staging directory goes when this is dropped (ingest moves the files out of it).
pub(crate) struct Staged {
    pub meta: SnapshotMeta,
    pub sm_meta: SmMeta,
    pub files: Vec<PathBuf>,
    pub pairs: u64,
    _cleanup: Cleanup,
}

/// Step 1: reads `path` once, verifying it to its last byte, into SST files (see the module
/// doc) of at most about `sst_bytes` of pairs each. Changes nothing in the database; an error
/// leaves no files.
pub(crate) fn stage(db: &Db, shard: ShardId, path: &Path, dir: &Path, sst_bytes: u64) -> io::Result<Staged> {
    let mut r = open_file(path)?;
    if r.shard != shard {
        return Err(corrupt(format!("snapshot of shard {} offered to shard {shard}", r.shard)));
    }
    let staging = dir.join(format!("shard-{shard}.ingest-{}", unique()));
    std::fs::create_dir(&staging)?;
    let cleanup = Cleanup(Some(staging.clone()));
    let opts = db.data_table_options();
    let sst_err = |e: rocksdb::Error| io::Error::other(format!("staging snapshot SST: {e}"));
    let mut files = Vec::new();
    let new_sst = |files: &mut Vec<PathBuf>| -> io::Result<rocksdb::SstFileWriter<'_>> {
        let p = staging.join(format!("{:06}.sst", files.len()));
        let w = rocksdb::SstFileWriter::create(&opts);
        w.open(&p).map_err(sst_err)?;
        files.push(p);
        Ok(w)
    };
    // A range delete does not hide point keys of its own file, nor of files after it in the
    // same ingest: alone and first, it clears exactly the old data.
    let (start, end) = keys::data_range(shard);
    let mut clear = new_sst(&mut files)?;
    clear.delete_range(&start, &end).map_err(sst_err)?;
    clear.finish().map_err(sst_err)?;
    let mut writer: Option<rocksdb::SstFileWriter<'_>> = None;
    let mut in_file = 0u64;
    let (mut k, mut v) = (Vec::new(), Vec::new());
    let mut key = start.clone();
    let prefix = key.len();
    while r.next(&mut k, &mut v)? {
        let w = match writer.as_mut() {
            Some(w) => w,
            None => {
                in_file = 0;
                writer.insert(new_sst(&mut files)?)
            }
        };
        key.truncate(prefix);
        key.extend_from_slice(&k);
        w.put(&key, &v).map_err(sst_err)?;
        in_file += (key.len() + v.len()) as u64;
        if in_file >= sst_bytes {
            writer.take().expect("open").finish().map_err(sst_err)?;
        }
    }
    if let Some(mut w) = writer.take() {
        w.finish().map_err(sst_err)?;
    }
    // Verified to the end: the applied state and meta go in last, in the same ingest.
    let meta = r.meta.clone();
    let sm_meta = SmMeta { applied: meta.last_log_id, membership: meta.last_membership.clone() };
    let mut last = new_sst(&mut files)?;
    debug_assert!(keys::sm_meta(shard) < keys::snapshot_meta(shard), "SST keys go in ascending order");
    last.put(keys::sm_meta(shard), encode(&sm_meta)).map_err(sst_err)?;
    last.put(keys::snapshot_meta(shard), encode(&meta)).map_err(sst_err)?;
    last.finish().map_err(sst_err)?;
    Ok(Staged { meta, sm_meta, files, pairs: r.count(), _cleanup: cleanup })
}

/// Step 2: makes `src` the shard's current snapshot, durably. `src` itself stays (a hard link,
/// or a copy across file systems).
pub(crate) fn place(src: &Path, dir: &Path, shard: ShardId) -> io::Result<()> {
    let dest = current_path(dir, shard);
    if src == dest {
        return Ok(());
    }
    let tmp = dir.join(format!("shard-{shard}.snap.placing-{}", unique()));
    let cleanup = Cleanup(Some(tmp.clone()));
    if std::fs::hard_link(src, &tmp).is_err() {
        std::fs::copy(src, &tmp)?;
    }
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &dest)?;
    cleanup.keep();
    sync_dir(dir)
}

/// Step 3: the staged SSTs into RocksDB in one atomic ingest: the old data, applied state and
/// meta give way to the snapshot's all at once.
pub(crate) fn ingest(db: &Db, staged: &Staged) -> io::Result<()> {
    db.ingest_data(&staged.files)
}

/// Replaces the shard's data with the snapshot's (steps 1 to 3 of the module doc) and keeps the
/// file as the shard's current snapshot. A file that is not a complete, intact snapshot of this
/// shard at `meta` is refused before anything changes.
pub(crate) fn install(
    db: &Db,
    shard: ShardId,
    meta: &SnapshotMeta,
    snapshot: &SnapshotFile,
    dir: &Path,
    lock: &Mutex<()>,
    sst_bytes: u64,
) -> io::Result<SmMeta> {
    let _one_at_a_time = self::lock(lock);
    let staged = stage(db, shard, &snapshot.path, dir, sst_bytes)?;
    if staged.meta != *meta {
        return Err(corrupt(format!("snapshot file holds {:?}, asked to install {meta:?}", staged.meta)));
    }
    place(&snapshot.path, dir, shard)?;
    let install_link = format!("shard-{shard}.snap.install-");
    if snapshot.path.parent() == Some(dir) && snapshot.path.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&install_link)) {
        // A received file's own link (`ReceivingFile::finish`): placed, it is not needed.
        let _ = std::fs::remove_file(&snapshot.path);
    }
    ingest(db, &staged)?;
    tracing::info!(shard, keys = staged.pairs, ssts = staged.files.len(), last = ?meta.last_log_id, "snapshot installed");
    Ok(staged.sm_meta.clone())
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
