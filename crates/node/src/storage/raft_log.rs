//! The node's Raft log: every shard's entries, votes, commit and purge points, in append-only
//! segment files of their own, apart from the ledger's RocksDB (TiKV's raft-engine idea, small).
//!
//! Why not RocksDB: there every entry was written three or four times (WAL, memtable, flush to
//! a table file, compaction) before a range delete dropped it, and read back through an
//! iterator to be applied and replicated. Here an entry is written once, with one fsync per
//! batch for every shard of the node (group commit), and recent entries are served from memory.
//!
//! On disk: `<dir>/<segment id, 16 hex digits>.log`, each a sequence of frames
//! `len: u32 LE | crc32: u32 LE | record (bincode)`. A segment grows to `SEGMENT_BYTES`, then
//! the writer starts the next one with a checkpoint (every shard's vote, commit and purge
//! points), so a segment older than every live entry can be deleted whole.
//!
//! Recovery replays the segments in order. A torn frame can only be at the end of the last
//! segment (everything before the last fsync is whole): the file is cut there. A bad frame
//! anywhere else is corruption and the node refuses to start.
//!
//! In memory: per shard, the index of every live entry (where its frame is) and the newest
//! entries themselves, up to `CACHE_BYTES_PER_SHARD`; older ones are read from their segment.

use crate::codec::{decode, encode};
use crate::raft::types::{Entry, LogId, TypeConfig, Vote};
use hongbao_ledger::ShardId;
use openraft::storage::IOFlushed;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// A segment is closed and the next one started once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Newest entries kept in memory per shard (apply and replication read them right after the
/// append; only a follower far behind reads from the files).
pub const CACHE_BYTES_PER_SHARD: usize = 16 << 20;
/// Writes waiting for the writer thread; callers wait (asynchronously) beyond it.
const QUEUE_JOBS: usize = 4096;
/// Most jobs the writer takes into one write and one fsync.
const MAX_JOBS_PER_WRITE: usize = 1024;
/// A frame longer than this is corruption (an entry is far smaller: the transport's limit).
const MAX_FRAME: usize = 2 * crate::transport::MAX_RAFT_MESSAGE;
const HEADER: usize = 8;

/// One record of the log. `Entry` must stay variant 0 with the shard then the entry (whose
/// encoding starts with its log id): recovery decodes only that prefix (`EntryHead`).
#[derive(Serialize, Deserialize)]
enum Record<E> {
    Entry(ShardId, E),
    Vote(ShardId, Vote),
    Committed(ShardId, Option<LogId>),
    /// Every entry at or after this index is gone.
    Truncate(ShardId, u64),
    /// Every entry at or before this log id is gone.
    Purge(ShardId, LogId),
}

/// The head of an encoded `Record::Entry`: variant (0), shard, log id.
#[derive(Deserialize)]
struct EntryHead(#[allow(dead_code)] u32, ShardId, LogId);

#[derive(Clone, Copy, Debug)]
struct Loc {
    segment: u64,
    offset: u64,
    len: u32,
}

struct Slot {
    log_id: LogId,
    /// Where the frame is; None until the writer has written it.
    loc: Option<Loc>,
    /// The entry itself while it is among the newest (always, until it has a `loc`).
    cached: Option<Entry>,
    bytes: usize,
}

#[derive(Default)]
struct ShardLog {
    slots: BTreeMap<u64, Slot>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    /// `committed` changed since the writer last wrote it.
    committed_unwritten: bool,
    /// Durable purge point: the `Purge` record is written.
    purged: Option<LogId>,
    /// Purge point openraft was told of (`mark_purged`); its entries are gone from memory, and
    /// from disk once the purge is durable.
    purge_reported: Option<LogId>,
    /// While a purge is reported but not durable: the oldest segment holding an entry it
    /// dropped from memory. Those segments stay until the purge is durable.
    purge_floor: Option<u64>,
    cached_bytes: usize,
    /// Every slot below this index has no cached entry.
    cache_from: u64,
}

impl ShardLog {
    fn remove_from(&mut self, from: u64) {
        for (_, s) in self.slots.split_off(&from) {
            if s.cached.is_some() {
                self.cached_bytes -= s.bytes;
            }
        }
        // Entries appended from here on are cached; eviction must find them.
        self.cache_from = self.cache_from.min(from);
    }

    fn purge_to(&mut self, log_id: LogId) {
        let keep = self.slots.split_off(&(log_id.index + 1));
        for s in std::mem::replace(&mut self.slots, keep).into_values() {
            if s.cached.is_some() {
                self.cached_bytes -= s.bytes;
            }
        }
        self.cache_from = self.cache_from.max(log_id.index + 1);
        if self.purged.is_none_or(|p| p.index < log_id.index) {
            self.purged = Some(log_id);
        }
    }

    /// Drops cached entries, oldest first, until the cache fits `budget` (only entries already
    /// written: until then the cache is their only copy).
    fn evict(&mut self, budget: usize) {
        while self.cached_bytes > budget {
            let Some((&index, slot)) = self.slots.range_mut(self.cache_from..).next() else { break };
            if slot.loc.is_none() {
                break;
            }
            if slot.cached.take().is_some() {
                self.cached_bytes -= slot.bytes;
            }
            self.cache_from = index + 1;
        }
    }
}

struct State {
    shards: HashMap<ShardId, ShardLog>,
    /// Every segment on disk, open for reading.
    segments: BTreeMap<u64, Arc<File>>,
    /// Set by the first failed write or fsync: nothing is written after it (a failed fsync
    /// must never be retried as if the data were safe).
    broken: Option<String>,
}

enum Done {
    Flushed(IOFlushed<TypeConfig>),
    Waiter(oneshot::Sender<io::Result<()>>),
}

struct Job {
    frames: Vec<u8>,
    /// Entries in `frames`: shard, log id, offset in `frames`, frame length.
    entries: Vec<(ShardId, LogId, usize, usize)>,
    done: Done,
}

struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    cache_budget: usize,
    segment_bytes: u64,
}

/// The node's Raft log, shared by every shard's `LogStore`.
pub struct RaftLog {
    shared: Arc<Shared>,
    jobs: mpsc::Sender<Job>,
    /// Held by the one purge being made durable (`purge_turn`).
    purging: tokio::sync::Mutex<()>,
}

fn frame_into(out: &mut Vec<u8>, payload: &[u8]) -> usize {
    assert!(payload.len() <= MAX_FRAME, "a log record of {} bytes", payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    HEADER + payload.len()
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.log"))
}

fn corrupt(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl RaftLog {
    /// Opens (or creates) the log in `dir`, replays it, and starts its writer thread.
    pub fn open(dir: &Path) -> io::Result<RaftLog> {
        RaftLog::open_with(dir, CACHE_BYTES_PER_SHARD, SEGMENT_BYTES)
    }

    /// `open` with another cache budget (per shard) and segment size (tests).
    pub fn open_with(dir: &Path, cache_budget: usize, segment_bytes: u64) -> io::Result<RaftLog> {
        std::fs::create_dir_all(dir)?;
        let mut ids: Vec<u64> = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let name = e?.file_name();
            let name = name.to_string_lossy();
            if let Some(hex) = name.strip_suffix(".log") {
                ids.push(u64::from_str_radix(hex, 16).map_err(|_| corrupt(format!("unexpected file {name} in {}", dir.display())))?);
            }
        }
        ids.sort_unstable();
        let mut state = State { shards: HashMap::new(), segments: BTreeMap::new(), broken: None };
        for (i, &id) in ids.iter().enumerate() {
            replay_segment(dir, id, i + 1 == ids.len(), &mut state)?;
        }
        // Always a fresh segment to write: never append after a tail that was cut.
        let next = ids.last().map_or(1, |l| l + 1);
        let segment = Segment::create(dir, next)?;
        state.segments.insert(next, segment.reader.clone());
        let shared = Arc::new(Shared { dir: dir.to_path_buf(), state: Mutex::new(state), cache_budget, segment_bytes });
        let mut writer = Writer { shared: shared.clone(), segment };
        writer.checkpoint()?;
        let (tx, rx) = mpsc::channel(QUEUE_JOBS);
        std::thread::Builder::new().name("raft-log".into()).spawn(move || writer.run(rx))?;
        Ok(RaftLog { shared, jobs: tx, purging: tokio::sync::Mutex::new(()) })
    }

    fn with_shard<T>(&self, shard: ShardId, f: impl FnOnce(&mut ShardLog) -> T) -> T {
        let mut st = self.shared.state.lock().expect("raft log state");
        f(st.shards.entry(shard).or_default())
    }

    async fn submit(&self, job: Job) -> io::Result<()> {
        self.jobs.send(job).await.map_err(|_| io::Error::other("raft log writer stopped"))
    }

    async fn write_and_wait(&self, frames: Vec<u8>) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.submit(Job { frames, entries: vec![], done: Done::Waiter(tx) }).await?;
        rx.await.map_err(|_| io::Error::other("raft log writer stopped"))?
    }

    /// Appends entries: readable when this returns, durable when `callback` is called.
    pub async fn append(
        &self,
        shard: ShardId,
        entries: impl IntoIterator<Item = Entry>,
        callback: IOFlushed<TypeConfig>,
    ) -> io::Result<()> {
        let mut frames = Vec::new();
        let mut written = Vec::new();
        let mut slots = Vec::new();
        for e in entries {
            let start = frames.len();
            let len = frame_into(&mut frames, &encode(&Record::Entry(shard, &e)));
            written.push((shard, e.log_id, start, len));
            slots.push(Slot { log_id: e.log_id, loc: None, bytes: len, cached: Some(e) });
        }
        self.with_shard(shard, |s| {
            for slot in slots {
                let index = slot.log_id.index;
                // A new entry replaces any at or after its index (as recovery does).
                s.remove_from(index);
                if let Some((&last, _)) = s.slots.last_key_value() {
                    assert_eq!(last + 1, index, "shard {shard}: log appends are contiguous");
                }
                s.cached_bytes += slot.bytes;
                s.slots.insert(index, slot);
            }
        });
        self.submit(Job { frames, entries: written, done: Done::Flushed(callback) }).await
    }

    /// Removes every entry after `last` (all of them if None); durable when it returns.
    pub async fn truncate_after(&self, shard: ShardId, last: Option<LogId>) -> io::Result<()> {
        let from = last.map_or(0, |l| l.index + 1);
        self.with_shard(shard, |s| s.remove_from(from));
        let mut frames = Vec::new();
        frame_into(&mut frames, &encode(&Record::<Entry>::Truncate(shard, from)));
        self.write_and_wait(frames).await
    }

    /// Tells the log that openraft purged up to `log_id`: the entries leave memory and
    /// `log_state` reports the new purge point, but they stay on disk until `purge` (the caller
    /// first makes their applied state durable). A crash meanwhile only brings them back.
    pub fn mark_purged(&self, shard: ShardId, log_id: LogId) {
        self.with_shard(shard, |s| {
            if s.purge_reported.is_some_and(|r| r.index >= log_id.index) {
                return;
            }
            let first_seg = s.slots.range(..=log_id.index).next().map(|(_, slot)| slot.loc.map(|l| l.segment));
            if let Some(seg) = first_seg {
                // An entry not written yet is in the current segment or later: no floor needed
                // beyond what the live entries hold.
                if let Some(seg) = seg {
                    s.purge_floor = Some(s.purge_floor.map_or(seg, |f| f.min(seg)));
                }
            }
            let keep = s.slots.split_off(&(log_id.index + 1));
            for slot in std::mem::replace(&mut s.slots, keep).into_values() {
                if slot.cached.is_some() {
                    s.cached_bytes -= slot.bytes;
                }
            }
            s.cache_from = s.cache_from.max(log_id.index + 1);
            s.purge_reported = Some(log_id);
        });
    }

    /// Purges wait for their turn: one flush of the ledger at a time.
    pub async fn purge_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.purging.lock().await
    }

    /// Removes every entry up to `log_id`, durably when it returns.
    pub async fn purge(&self, shard: ShardId, log_id: LogId) -> io::Result<()> {
        self.with_shard(shard, |s| {
            s.purge_to(log_id);
            if s.purge_reported.is_none_or(|r| r.index <= log_id.index) {
                s.purge_reported = None;
                s.purge_floor = None;
            }
        });
        let mut frames = Vec::new();
        frame_into(&mut frames, &encode(&Record::<Entry>::Purge(shard, log_id)));
        self.write_and_wait(frames).await
    }

    pub async fn save_vote(&self, shard: ShardId, vote: &Vote) -> io::Result<()> {
        self.with_shard(shard, |s| s.vote = Some(vote.clone()));
        let mut frames = Vec::new();
        frame_into(&mut frames, &encode(&Record::<Entry>::Vote(shard, vote.clone())));
        self.write_and_wait(frames).await
    }

    /// Not written at once: the writer adds it to its next write (losing it only means
    /// re-learning the commit index from the leader), so the commit index, which moves with
    /// every entry, costs no write and no wake-up of its own.
    pub fn save_committed(&self, shard: ShardId, committed: Option<LogId>) {
        self.with_shard(shard, |s| {
            s.committed = committed;
            s.committed_unwritten = true;
        });
    }

    pub fn vote(&self, shard: ShardId) -> Option<Vote> {
        self.with_shard(shard, |s| s.vote.clone())
    }

    pub fn committed(&self, shard: ShardId) -> Option<LogId> {
        self.with_shard(shard, |s| s.committed)
    }

    /// (last purged, last) log ids.
    pub fn log_state(&self, shard: ShardId) -> (Option<LogId>, Option<LogId>) {
        self.with_shard(shard, |s| {
            let purged = match (s.purged, s.purge_reported) {
                (Some(p), Some(r)) => Some(if r.index > p.index { r } else { p }),
                (p, r) => p.or(r),
            };
            (purged, s.slots.last_key_value().map(|(_, slot)| slot.log_id).or(purged))
        })
    }

    /// Entries in `[start, end)` in index order, stopping once `max_bytes` are read (but never
    /// before the first). A hole inside the range is corruption, never a short read.
    pub fn entries(&self, shard: ShardId, start: u64, end: u64, max_bytes: usize) -> io::Result<Vec<Entry>> {
        enum Got {
            Cached(Entry),
            OnDisk(LogId, Loc, Arc<File>),
        }
        let mut got = Vec::new();
        if start >= end {
            return Ok(vec![]);
        }
        {
            let st = self.shared.state.lock().expect("raft log state");
            let Some(s) = st.shards.get(&shard) else { return Ok(vec![]) };
            let mut bytes = 0usize;
            let mut expect = start;
            for (&index, slot) in s.slots.range(start..end) {
                if !got.is_empty() && index != expect {
                    return Err(corrupt(format!("shard {shard}: log hole: expected {expect}, found {index}")));
                }
                expect = index + 1;
                got.push(match (&slot.cached, slot.loc) {
                    (Some(e), _) => Got::Cached(e.clone()),
                    (None, Some(loc)) => {
                        let file = st.segments.get(&loc.segment).ok_or_else(|| corrupt(format!("segment {} is gone", loc.segment)))?;
                        Got::OnDisk(slot.log_id, loc, file.clone())
                    }
                    (None, None) => unreachable!("an entry is cached until it is written"),
                });
                bytes += slot.bytes;
                if bytes >= max_bytes {
                    break;
                }
            }
        }
        got.into_iter()
            .map(|g| match g {
                Got::Cached(e) => Ok(e),
                Got::OnDisk(log_id, loc, file) => {
                    let mut buf = vec![0u8; loc.len as usize];
                    file.read_exact_at(&mut buf, loc.offset)?;
                    let payload = check_frame(&buf).ok_or_else(|| corrupt(format!("shard {shard}: bad frame of entry {log_id}")))?;
                    match decode::<Record<Entry>>(payload)? {
                        Record::Entry(s, e) if s == shard && e.log_id == log_id => Ok(e),
                        _ => Err(corrupt(format!("shard {shard}: the frame of entry {log_id} holds something else"))),
                    }
                }
            })
            .collect()
    }

    /// Bytes of every segment on disk.
    pub fn disk_bytes(&self) -> u64 {
        let st = self.shared.state.lock().expect("raft log state");
        st.segments.values().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum()
    }

    /// Entries held in memory, all shards (bytes of their frames).
    pub fn cached_bytes(&self) -> usize {
        let st = self.shared.state.lock().expect("raft log state");
        st.shards.values().map(|s| s.cached_bytes).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.shared.state.lock().expect("raft log state").segments.len()
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}

/// The payload of a whole frame with a good checksum; None otherwise.
fn check_frame(buf: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(buf.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(buf.get(4..8)?.try_into().ok()?);
    if len == 0 || len > MAX_FRAME {
        return None;
    }
    let payload = buf.get(HEADER..HEADER + len)?;
    (crc32fast::hash(payload) == crc).then_some(payload)
}

/// Replays one segment into `state`. The last segment may end in a torn frame (a crash during
/// a write that was never acknowledged): it is cut off the file.
fn replay_segment(dir: &Path, id: u64, last: bool, state: &mut State) -> io::Result<()> {
    let path = segment_path(dir, id);
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&path)?;
    let size = file.metadata()?.len();
    let mut r = io::BufReader::with_capacity(1 << 20, &file);
    let mut offset = 0u64;
    let mut header = [0u8; HEADER];
    let mut payload = Vec::new();
    let torn = loop {
        if offset == size {
            break None;
        }
        if size - offset < HEADER as u64 {
            break Some("a short header");
        }
        r.read_exact(&mut header)?;
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        if len == 0 || len > MAX_FRAME || size - offset - (HEADER as u64) < len as u64 {
            break Some("a bad length");
        }
        payload.resize(len, 0);
        r.read_exact(&mut payload)?;
        if crc32fast::hash(&payload) != crc {
            break Some("a bad checksum");
        }
        let loc = Loc { segment: id, offset, len: (HEADER + len) as u32 };
        apply_record(&payload, loc, state).map_err(|e| corrupt(format!("{}: frame at {offset}: {e}", path.display())))?;
        offset += (HEADER + len) as u64;
    };
    if let Some(why) = torn {
        if !last {
            return Err(corrupt(format!("{}: {why} at offset {offset} of {size}, before the last segment: corrupt log", path.display())));
        }
        tracing::warn!(segment = %path.display(), offset, size, why, "raft log: cutting a torn tail (a write the crash interrupted)");
        file.set_len(offset)?;
        file.sync_all()?;
    }
    drop(r);
    state.segments.insert(id, Arc::new(file));
    Ok(())
}

fn apply_record(payload: &[u8], loc: Loc, state: &mut State) -> io::Result<()> {
    if payload.get(0..4) == Some(&0u32.to_le_bytes()[..]) {
        let EntryHead(_, shard, log_id) = decode(payload)?;
        let s = state.shards.entry(shard).or_default();
        if s.purged.is_some_and(|p| log_id.index <= p.index) {
            return Ok(());
        }
        s.remove_from(log_id.index);
        s.slots.insert(log_id.index, Slot { log_id, loc: Some(loc), cached: None, bytes: loc.len as usize });
        s.cache_from = s.cache_from.max(log_id.index + 1);
        return Ok(());
    }
    match decode::<Record<Entry>>(payload)? {
        Record::Entry(..) => unreachable!("entries are variant 0"),
        Record::Vote(shard, v) => state.shards.entry(shard).or_default().vote = Some(v),
        Record::Committed(shard, c) => state.shards.entry(shard).or_default().committed = c,
        Record::Truncate(shard, from) => state.shards.entry(shard).or_default().remove_from(from),
        Record::Purge(shard, log_id) => state.shards.entry(shard).or_default().purge_to(log_id),
    }
    Ok(())
}

struct Segment {
    id: u64,
    file: File,
    reader: Arc<File>,
    len: u64,
}

impl Segment {
    fn create(dir: &Path, id: u64) -> io::Result<Segment> {
        let path = segment_path(dir, id);
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
        let reader = Arc::new(File::open(&path)?);
        // The new file's name must survive a crash before anything in it is acknowledged.
        super::sync_dir(dir)?;
        Ok(Segment { id, file, reader, len: 0 })
    }
}

struct Writer {
    shared: Arc<Shared>,
    segment: Segment,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = vec![first];
            while jobs.len() < MAX_JOBS_PER_WRITE {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            let res = self.write(&jobs);
            if let Err(e) = &res {
                tracing::error!(error = %e, "raft log write failed: no more writes on this node");
                self.shared.state.lock().expect("raft log state").broken.get_or_insert(e.to_string());
            }
            for job in jobs {
                let r = match &res {
                    Ok(()) => Ok(()),
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                };
                match job.done {
                    Done::Flushed(cb) => cb.io_completed(r),
                    Done::Waiter(tx) => {
                        let _ = tx.send(r);
                    }
                }
            }
            if res.is_ok() && self.segment.len >= self.shared.segment_bytes {
                if let Err(e) = self.rotate() {
                    tracing::error!(error = %e, "raft log: starting a new segment failed: no more writes on this node");
                    self.shared.state.lock().expect("raft log state").broken.get_or_insert(e.to_string());
                }
            }
        }
    }

    /// Writes every job's frames (and commit points not yet written) in one write, fsyncs once,
    /// then tells the shards where their entries are.
    fn write(&mut self, jobs: &[Job]) -> io::Result<()> {
        if let Some(b) = &self.shared.state.lock().expect("raft log state").broken {
            return Err(io::Error::other(format!("raft log is broken since an earlier failure: {b}")));
        }
        let base = self.segment.len;
        let mut buf = Vec::with_capacity(jobs.iter().map(|j| j.frames.len()).sum());
        let mut placed = Vec::new();
        for j in jobs {
            for &(shard, log_id, off, len) in &j.entries {
                placed.push((shard, log_id, Loc { segment: self.segment.id, offset: base + (buf.len() + off) as u64, len: len as u32 }));
            }
            buf.extend_from_slice(&j.frames);
        }
        for (&shard, s) in self.shared.state.lock().expect("raft log state").shards.iter_mut() {
            if std::mem::take(&mut s.committed_unwritten) {
                frame_into(&mut buf, &encode(&Record::<Entry>::Committed(shard, s.committed)));
            }
        }
        self.segment.file.write_all(&buf)?;
        self.segment.len += buf.len() as u64;
        // Every job is an append, a vote, a truncation or a purge: all must be durable.
        let started = std::time::Instant::now();
        self.segment.file.sync_data()?;
        metrics::histogram!(crate::metrics::RAFT_LOG_FSYNC_SECONDS).record(started.elapsed().as_secs_f64());
        let mut st = self.shared.state.lock().expect("raft log state");
        let mut touched = Vec::new();
        for (shard, log_id, loc) in placed {
            let s = st.shards.entry(shard).or_default();
            // Truncated (or replaced) meanwhile: that entry is not the slot's any more.
            if let Some(slot) = s.slots.get_mut(&log_id.index).filter(|slot| slot.log_id == log_id && slot.loc.is_none()) {
                slot.loc = Some(loc);
            }
            if touched.last() != Some(&shard) {
                touched.push(shard);
            }
        }
        let budget = self.shared.cache_budget;
        for shard in touched {
            if let Some(s) = st.shards.get_mut(&shard) {
                s.evict(budget);
            }
        }
        Ok(())
    }

    /// The first frames of a segment: every shard's vote, commit and purge points, so that no
    /// older segment is needed for them.
    fn checkpoint(&mut self) -> io::Result<()> {
        let mut frames = Vec::new();
        {
            let st = self.shared.state.lock().expect("raft log state");
            for (&shard, s) in &st.shards {
                if let Some(v) = &s.vote {
                    frame_into(&mut frames, &encode(&Record::<Entry>::Vote(shard, v.clone())));
                }
                frame_into(&mut frames, &encode(&Record::<Entry>::Committed(shard, s.committed)));
                if let Some(p) = s.purged {
                    frame_into(&mut frames, &encode(&Record::<Entry>::Purge(shard, p)));
                }
            }
        }
        self.segment.file.write_all(&frames)?;
        self.segment.len += frames.len() as u64;
        self.segment.file.sync_data()
    }

    /// Starts the next segment and deletes every segment that holds no live entry any more.
    fn rotate(&mut self) -> io::Result<()> {
        let next = Segment::create(&self.shared.dir, self.segment.id + 1)?;
        self.shared.state.lock().expect("raft log state").segments.insert(next.id, next.reader.clone());
        self.segment = next;
        self.checkpoint()?;
        let dead: Vec<u64> = {
            let mut st = self.shared.state.lock().expect("raft log state");
            // Live entries are in index order and so in segment order: a shard needs the
            // segments from its first live entry's on.
            let needed = st
                .shards
                .values()
                .flat_map(|s| [s.slots.values().next().map(|slot| slot.loc.map_or(self.segment.id, |l| l.segment)), s.purge_floor])
                .flatten()
                .min()
                .unwrap_or(self.segment.id)
                .min(self.segment.id);
            let dead: Vec<u64> = st.segments.range(..needed).map(|(&id, _)| id).collect();
            for id in &dead {
                st.segments.remove(id);
            }
            dead
        };
        for id in dead {
            std::fs::remove_file(segment_path(&self.shared.dir, id))?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "raft_log_tests.rs"]
mod tests;
