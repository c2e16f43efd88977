//! Snapshot file, receive and install tests on a real RocksDB: a damaged file never installs,
//! an install leaves exactly the snapshot's keys, does not hold the shard in memory, and a crash
//! at any step of one leaves the old state or the new one, whole.

use super::*;
use crate::raft::state_machine::StateMachine;
use openraft::storage::RaftStateMachine;
use std::sync::Arc;

const SHARD: ShardId = 7;

struct Node {
    _dir: tempfile::TempDir,
    db: Arc<Db>,
    sm: StateMachine,
    snap_dir: PathBuf,
}

fn node() -> Node {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Arc::new(Db::open(&dir.path().join("db")).expect("open rocksdb"));
    let snap_dir = dir.path().join("snapshots");
    let sm = StateMachine::open(db.clone(), SHARD, Arc::new(hongbao_ledger::LedgerConfig::default()), &snap_dir).expect("open sm");
    Node { _dir: dir, db, sm, snap_dir }
}

fn log_id(index: u64) -> crate::raft::types::LogId {
    openraft::testing::log_id::<TypeConfig>(1, 1, index)
}

/// Writes `n` ledger keys (`tag` in every value) and marks them applied up to `applied`, the way
/// an apply batch would; plus a key of another shard that no install of `SHARD` may touch.
fn seed(db: &Db, n: u64, tag: &str, applied: u64, value_len: usize) {
    let mut done = 0;
    while done < n {
        let mut b = db.batch();
        for i in done..(done + 10_000).min(n) {
            let mut v = format!("{tag}-{i}-").into_bytes();
            v.resize(value_len.max(v.len()), b'.');
            b.put(&keys::data(SHARD, &key_of(i)), &v);
        }
        db.write_state(b).unwrap();
        done = (done + 10_000).min(n);
    }
    let mut b = db.batch();
    b.put(&keys::sm_meta(SHARD), &encode(&SmMeta { applied: Some(log_id(applied)), membership: Default::default() }));
    b.put(&keys::data(SHARD + 1, b"neighbour"), b"untouched");
    db.write_state(b).unwrap();
    db.checkpoint().unwrap();
}

fn key_of(i: u64) -> Vec<u8> {
    format!("k{i:09}").into_bytes()
}

fn shard_data(db: &Db, shard: ShardId) -> Vec<(Vec<u8>, Vec<u8>)> {
    let (start, end) = keys::data_range(shard);
    db.scan(&start, &end, usize::MAX).unwrap()
}

async fn build(n: &mut Node) -> crate::raft::types::Snapshot {
    n.sm.get_snapshot_builder().await.build_snapshot().await.expect("build")
}

/// A source node with `keys` keys applied up to 10, its snapshot built.
async fn source(keys: u64) -> (Node, crate::raft::types::Snapshot) {
    let a = node();
    seed(&a.db, keys, "new", 10, 0);
    let mut a = reopen(a);
    let snap = build(&mut a).await;
    (a, snap)
}

/// A target node with other data, applied up to 5.
fn target() -> Node {
    let b = node();
    seed(&b.db, 30, "old", 5, 0);
    reopen(b)
}

/// The node's state machine opened afresh (as after a restart), on the same RocksDB and dir.
fn reopen(n: Node) -> Node {
    let sm = StateMachine::open(n.db.clone(), SHARD, Arc::new(Default::default()), &n.snap_dir).unwrap();
    Node { sm, ..n }
}

/// Installs `bytes` as a snapshot file on `b` and asserts it is refused and changes nothing.
async fn assert_refused(b: &mut Node, meta: &SnapshotMeta, bytes: &[u8], what: &str) {
    let before = shard_data(&b.db, SHARD);
    let applied = b.sm.applied_state().await.unwrap();
    let path = b.snap_dir.join("damaged.snap");
    std::fs::write(&path, bytes).unwrap();
    let res = b.sm.install_snapshot(meta, SnapshotFile { path }).await;
    assert!(res.is_err(), "{what}: a damaged snapshot installed");
    assert_eq!(shard_data(&b.db, SHARD), before, "{what}: the shard's data changed");
    assert_eq!(b.sm.applied_state().await.unwrap(), applied, "{what}: applied state changed");
    let reopened = StateMachine::open(b.db.clone(), SHARD, Arc::new(Default::default()), &b.snap_dir).unwrap();
    let mut reopened = reopened;
    assert_eq!(reopened.applied_state().await.unwrap(), applied, "{what}: applied state on disk changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_file_cut_anywhere_is_refused_and_the_shard_is_unchanged() {
    let (_a, snap) = source(20).await;
    let whole = std::fs::read(&snap.snapshot.path).unwrap();
    let mut b = target();
    // Every cut, including exactly at each pair boundary (which used to read as a clean end).
    for cut in 0..whole.len() {
        assert_refused(&mut b, &snap.meta, &whole[..cut], &format!("cut at {cut} of {}", whole.len())).await;
    }
    // Trailing bytes after a complete file are as wrong as missing ones.
    let mut longer = whole.clone();
    longer.extend_from_slice(&[0, 0, 0, 0]);
    assert_refused(&mut b, &snap.meta, &longer, "4 bytes appended").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_file_with_any_byte_flipped_is_refused_and_the_shard_is_unchanged() {
    let (_a, snap) = source(20).await;
    let whole = std::fs::read(&snap.snapshot.path).unwrap();
    let mut b = target();
    for at in 0..whole.len() {
        let mut bad = whole.clone();
        bad[at] ^= 0x01;
        assert_refused(&mut b, &snap.meta, &bad, &format!("bit flipped in byte {at} of {}", whole.len())).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installing_200k_keys_leaves_exactly_the_snapshots_keys_and_meta() {
    let (a, snap) = source(200_000).await;
    let mut b = target();
    // Old keys beyond the snapshot's, that must go.
    let mut extra = b.db.batch();
    extra.put(&keys::data(SHARD, b"zzz-only-on-the-target"), b"stale");
    b.db.write_state(extra).unwrap();
    b.sm.install_snapshot(&snap.meta, snap.snapshot.clone()).await.expect("install");
    let want = shard_data(&a.db, SHARD);
    assert_eq!(want.len(), 200_000);
    let got = shard_data(&b.db, SHARD);
    assert!(got == want, "installed data differs: {} keys, want {}", got.len(), want.len());
    assert_eq!(b.sm.applied_state().await.unwrap().0, Some(log_id(10)));
    assert_eq!(b.db.get(&keys::data(SHARD + 1, b"neighbour")).unwrap().as_deref(), Some(&b"untouched"[..]));
    // Reopened, the state machine reports the same, and its current snapshot is the one installed.
    let mut again = StateMachine::open(b.db.clone(), SHARD, Arc::new(Default::default()), &b.snap_dir).unwrap();
    assert_eq!(again.applied_state().await.unwrap().0, Some(log_id(10)));
    let cur = again.get_current_snapshot().await.unwrap().expect("current snapshot");
    assert_eq!(cur.meta, snap.meta);
    assert_eq!(std::fs::read(&cur.snapshot.path).unwrap(), std::fs::read(&snap.snapshot.path).unwrap());
}

/// Peak resident memory (VmHWM) and current (VmRSS) of this process, in bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

const MEMORY_CHILD: &str = "HONGBAO_SNAPSHOT_MEMORY_CHILD";

/// Runs `installing_a_large_snapshot_does_not_hold_it_in_memory_child` alone in a fresh process
/// (other tests' memory would blur its peak).
#[test]
fn installing_a_large_snapshot_does_not_hold_it_in_memory() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "raft::snapshot::tests::installing_a_large_snapshot_does_not_hold_it_in_memory_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(MEMORY_CHILD, "1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "child failed:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by installing_a_large_snapshot_does_not_hold_it_in_memory in its own process"]
async fn installing_a_large_snapshot_does_not_hold_it_in_memory_child() {
    if std::env::var_os(MEMORY_CHILD).is_none() {
        return;
    }
    const KEYS: u64 = 160_000;
    const VALUE: usize = 1_000;
    let a = node();
    seed(&a.db, KEYS, "big", 10, VALUE);
    let mut a = reopen(a);
    let snap = build(&mut a).await;
    let size = std::fs::metadata(&snap.snapshot.path).unwrap().len();
    assert!(size > 150 << 20, "snapshot of {size} bytes");
    drop(a.sm);
    let mut b = target();
    // Peak from here on: reset it to the current resident size (Linux: clear_refs 5).
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let (_, before) = rss();
    b.sm.install_snapshot(&snap.meta, snap.snapshot.clone()).await.expect("install");
    let (peak, _) = rss();
    let grew = peak.saturating_sub(before);
    println!("snapshot {} MiB, peak resident grew by {} MiB during install", size >> 20, grew >> 20);
    assert!(grew < size / 4, "install held {} MiB for a {} MiB snapshot", grew >> 20, size >> 20);
    let (start, end) = keys::data_range(SHARD);
    assert_eq!(b.db.range_in(None, &start, &end).count() as u64, KEYS);
}

/// What a stream for `meta` would carry: `bytes` in chunks of `chunk`.
fn chunks(bytes: &[u8], chunk: usize) -> Vec<&[u8]> {
    bytes.chunks(chunk).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_receive_streams_for_a_shard_never_share_a_file() {
    // Two leaders stream different snapshots of the shard at the same time, chunks interleaved.
    let (a1, s1) = source(3_000).await;
    let a2 = node();
    seed(&a2.db, 5_000, "newer", 12, 0);
    let mut a2 = reopen(a2);
    let s2 = build(&mut a2).await;
    let (f1, f2) = (std::fs::read(&s1.snapshot.path).unwrap(), std::fs::read(&s2.snapshot.path).unwrap());
    let b = target();
    let mut r1 = ReceivingFile::create(&b.snap_dir, SHARD).unwrap();
    let mut r2 = ReceivingFile::create(&b.snap_dir, SHARD).unwrap();
    let (c1, c2) = (chunks(&f1, 4096), chunks(&f2, 4096));
    for i in 0..c1.len().max(c2.len()) {
        if let Some(c) = c1.get(i) {
            r1.write(c).unwrap();
        }
        if let Some(c) = c2.get(i) {
            r2.write(c).unwrap();
        }
    }
    let got1 = r1.finish(SHARD, &s1.meta).expect("first stream verifies");
    let got2 = r2.finish(SHARD, &s2.meta).expect("second stream verifies");
    assert_ne!(got1.path, got2.path);
    // Each installs all of its keys.
    let mut b = b;
    b.sm.install_snapshot(&s1.meta, got1).await.unwrap();
    assert!(shard_data(&b.db, SHARD) == shard_data(&a1.db, SHARD));
    b.sm.install_snapshot(&s2.meta, got2).await.unwrap();
    assert!(shard_data(&b.db, SHARD) == shard_data(&a2.db, SHARD));
    assert_eq!(b.sm.applied_state().await.unwrap().0, Some(log_id(12)));
    // The streams' files go with them; the installed snapshot stays.
    drop((r1, r2));
    let names: Vec<String> =
        std::fs::read_dir(&b.snap_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec![format!("shard-{SHARD}.snap")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_received_file_is_refused_unless_complete_and_the_snapshot_the_stream_announced() {
    let (_a, s1) = source(100).await;
    let whole = std::fs::read(&s1.snapshot.path).unwrap();
    let b = target();
    // Cut short: refused, and the file is gone once the stream is.
    let mut r = ReceivingFile::create(&b.snap_dir, SHARD).unwrap();
    r.write(&whole[..whole.len() - 40]).unwrap();
    assert!(r.finish(SHARD, &s1.meta).is_err());
    drop(r);
    // Complete, but not what the stream's first chunk said (another log position).
    let mut other = s1.meta.clone();
    other.last_log_id = Some(log_id(11));
    let mut r = ReceivingFile::create(&b.snap_dir, SHARD).unwrap();
    r.write(&whole).unwrap();
    assert!(r.finish(SHARD, &other).is_err());
    // Another shard's.
    assert!(r.finish(SHARD + 1, &s1.meta).is_err());
    let got = r.finish(SHARD, &s1.meta).expect("verifies");
    drop(r);
    // What is left is the install's own link, never installed here: a leftover the next open
    // removes.
    let names: Vec<String> =
        std::fs::read_dir(&b.snap_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec![got.path.file_name().unwrap().to_string_lossy().into_owned()], "received files are deleted with their stream");
    assert!(names[0].starts_with(&format!("shard-{SHARD}.snap.install-")));
    remove_leftovers(&b.snap_dir, SHARD).unwrap();
    assert_eq!(std::fs::read_dir(&b.snap_dir).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_in_small_sst_pieces_replaces_the_data_range_exactly() {
    // 200k keys in SSTs of ~1 MiB: many ingested files, over old data both in SST files (compacted
    // to the bottom level) and in the memtable.
    let (a, snap) = source(200_000).await;
    let b = target();
    b.db.compact_all();
    let mut more = b.db.batch();
    more.put(&keys::data(SHARD, &key_of(7)), b"in the memtable");
    more.put(&keys::data(SHARD, b"zzz-memtable-only"), b"stale");
    b.db.write_state(more).unwrap();
    let lock = ShardLock::default();
    let sm = install(&b.db, SHARD, &snap.meta, &snap.snapshot, &b.snap_dir, &lock, 1 << 20).unwrap();
    assert_eq!(sm.applied, Some(log_id(10)));
    assert!(shard_data(&b.db, SHARD) == shard_data(&a.db, SHARD));
    assert_eq!(b.db.get(&keys::data(SHARD + 1, b"neighbour")).unwrap().as_deref(), Some(&b"untouched"[..]));
    let staged = stage(&b.db, SHARD, &snap.snapshot.path, &b.snap_dir, 1 << 20).unwrap();
    assert!(staged.files.len() > 5, "{} SST files", staged.files.len());
    assert_eq!(staged.pairs, 200_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_of_an_install_leaves_the_old_state_or_the_new_one_whole() {
    let (a, snap) = source(5_000).await;
    let old = shard_data(&target().db, SHARD);
    // Run the first `steps` steps, then "crash" (reopen on the same RocksDB and directory).
    for steps in 1..=3 {
        let b = target();
        let staged = stage(&b.db, SHARD, &snap.snapshot.path, &b.snap_dir, 64 << 10).unwrap();
        if steps >= 2 {
            place(&snap.snapshot.path, &b.snap_dir, SHARD).unwrap();
        }
        if steps >= 3 {
            ingest(&b.db, &staged).unwrap();
        }
        drop(staged);
        let mut b = reopen(b);
        let applied = b.sm.applied_state().await.unwrap().0;
        let data = shard_data(&b.db, SHARD);
        if steps < 3 {
            assert_eq!(applied, Some(log_id(5)), "after {steps} steps");
            assert!(data == old, "after {steps} steps: old data, whole");
        } else {
            assert_eq!(applied, Some(log_id(10)), "after {steps} steps");
            assert!(data == shard_data(&a.db, SHARD), "after {steps} steps: new data, whole");
            assert_eq!(b.sm.get_current_snapshot().await.unwrap().unwrap().meta, snap.meta);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_current_snapshot_left_by_a_crash_installs_onto_itself_at_startup() {
    // openraft installs a current snapshot newer than the applied state at startup; that path
    // (installing the current file onto itself) must work.
    let (a, snap) = source(2_000).await;
    let b = target();
    place(&snap.snapshot.path, &b.snap_dir, SHARD).unwrap();
    let mut b = reopen(b);
    assert_eq!(b.sm.applied_state().await.unwrap().0, Some(log_id(5)));
    let cur = b.sm.get_current_snapshot().await.unwrap().expect("current snapshot");
    assert_eq!(cur.meta, snap.meta);
    b.sm.install_snapshot(&cur.meta, cur.snapshot).await.unwrap();
    assert!(shard_data(&b.db, SHARD) == shard_data(&a.db, SHARD));
    assert_eq!(b.sm.applied_state().await.unwrap().0, Some(log_id(10)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_removes_what_crashed_receives_builds_and_installs_left_behind() {
    let b = target();
    let leftovers = [
        format!("shard-{SHARD}.snap.recv-1-2-3"),
        format!("shard-{SHARD}.snap.building-1-2-3"),
        format!("shard-{SHARD}.snap.placing-1-2-3"),
    ];
    for name in &leftovers {
        std::fs::write(b.snap_dir.join(name), b"partial").unwrap();
    }
    std::fs::create_dir(b.snap_dir.join(format!("shard-{SHARD}.ingest-1-2-3"))).unwrap();
    std::fs::write(b.snap_dir.join(format!("shard-{}.snap.recv-1", SHARD + 1)), b"other shard's").unwrap();
    let b = reopen(b);
    let names: Vec<String> =
        std::fs::read_dir(&b.snap_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec![format!("shard-{}.snap.recv-1", SHARD + 1)]);
}

/// openraft may run a received snapshot's install after the stream's handler returned and
/// deleted the stream's file (a new learner's first snapshot did): the install reads its own
/// link, and removes it once the snapshot is placed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_received_snapshot_installs_after_the_streams_own_file_is_gone() {
    let (a, s1) = source(100).await;
    let whole = std::fs::read(&s1.snapshot.path).unwrap();
    let mut b = target();
    let mut r = ReceivingFile::create(&b.snap_dir, SHARD).unwrap();
    r.write(&whole).unwrap();
    let got = r.finish(SHARD, &s1.meta).expect("the stream verifies");
    drop(r);
    b.sm.install_snapshot(&s1.meta, got).await.expect("installs from its own link");
    assert!(shard_data(&b.db, SHARD) == shard_data(&a.db, SHARD));
    let names: Vec<String> =
        std::fs::read_dir(&b.snap_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec![format!("shard-{SHARD}.snap")], "only the current snapshot is left");
}
