//! The Raft log's files: what comes back after a reopen, torn tails, corruption, and segments
//! deleted once nothing in them is live.

use super::*;
use crate::raft::types::{Batch, TypeConfig};
use hongbao_ledger::{Command, Request, RequestId};
use openraft::entry::RaftEntry;
use openraft::testing::log_id;

fn entry(term: u64, index: u64, bytes: usize) -> Entry {
    let cmd = Command::OpenAccount { user: index, device: "d".repeat(bytes) };
    let req = Request { id: RequestId::new(0, [index as u8; 10]), time_ms: 0, cmd };
    Entry::new_normal(log_id::<TypeConfig>(term, 1, index), Batch(vec![req], 0))
}

async fn append(log: &RaftLog, shard: ShardId, entries: Vec<Entry>) {
    let (tx, rx) = <TypeConfig as openraft::type_config::TypeConfigExt>::oneshot();
    log.append(shard, entries, IOFlushed::signal(tx)).await.unwrap();
    rx.await.unwrap().unwrap();
}

fn indexes(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.log_id.index).collect()
}

/// Waits until the writer thread of a dropped log has let go of its files.
fn reopen(dir: &Path, cache: usize, segment: u64) -> RaftLog {
    std::thread::sleep(std::time::Duration::from_millis(50));
    RaftLog::open_with(dir, cache, segment).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_votes_and_purge_points_of_every_shard_come_back_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = RaftLog::open_with(dir.path(), 1 << 20, 64 << 20).unwrap();
    append(&log, 1, (1..=20).map(|i| entry(1, i, 10)).collect()).await;
    append(&log, 2, (1..=5).map(|i| entry(1, i, 10)).collect()).await;
    // A conflict: shard 1's entries from 16 on are replaced by a new term's.
    log.truncate_after(1, Some(log_id::<TypeConfig>(1, 1, 15))).await.unwrap();
    append(&log, 1, (16..=18).map(|i| entry(2, i, 10)).collect()).await;
    log.purge(1, log_id::<TypeConfig>(1, 1, 4)).await.unwrap();
    log.save_committed(1, Some(log_id::<TypeConfig>(2, 1, 17)));
    let vote = Vote::new(2, 1);
    log.save_vote(1, &vote).await.unwrap();
    let before = log.entries(1, 0, 100, usize::MAX).unwrap();
    drop(log);

    let log = reopen(dir.path(), 1 << 20, 64 << 20);
    let after = log.entries(1, 0, 100, usize::MAX).unwrap();
    assert_eq!(indexes(&after), (5..=18).collect::<Vec<_>>());
    assert_eq!(after.iter().map(|e| e.log_id).collect::<Vec<_>>(), before.iter().map(|e| e.log_id).collect::<Vec<_>>());
    assert_eq!(after.last().unwrap().log_id, log_id::<TypeConfig>(2, 1, 18), "the new term's entry replaced the old");
    assert_eq!(log.log_state(1), (Some(log_id::<TypeConfig>(1, 1, 4)), Some(log_id::<TypeConfig>(2, 1, 18))));
    assert_eq!(log.committed(1), Some(log_id::<TypeConfig>(2, 1, 17)));
    assert_eq!(log.vote(1), Some(vote));
    assert_eq!(indexes(&log.entries(2, 0, 100, usize::MAX).unwrap()), (1..=5).collect::<Vec<_>>());
    assert_eq!(log.vote(2), None);
    // A purge past the last entry (after a snapshot install) leaves an empty log that starts after it.
    log.purge(2, log_id::<TypeConfig>(3, 1, 40)).await.unwrap();
    assert_eq!(log.log_state(2), (Some(log_id::<TypeConfig>(3, 1, 40)), Some(log_id::<TypeConfig>(3, 1, 40))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_and_every_acknowledged_entry_before_it_survives() {
    let dir = tempfile::tempdir().unwrap();
    let log = RaftLog::open_with(dir.path(), 1 << 20, 64 << 20).unwrap();
    append(&log, 1, (1..=10).map(|i| entry(1, i, 100)).collect()).await;
    drop(log);
    std::thread::sleep(std::time::Duration::from_millis(50));
    // A crash in the middle of a write: half a frame at the end of the last segment.
    let last = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).max().unwrap();
    let good = std::fs::metadata(&last).unwrap().len();
    let mut half = Vec::new();
    frame_into(&mut half, &encode(&Record::Entry(1u32, &entry(1, 11, 100))));
    half.truncate(half.len() / 2);
    std::fs::OpenOptions::new().append(true).open(&last).unwrap().write_all(&half).unwrap();

    let log = reopen(dir.path(), 1 << 20, 64 << 20);
    assert_eq!(indexes(&log.entries(1, 0, 100, usize::MAX).unwrap()), (1..=10).collect::<Vec<_>>());
    assert_eq!(std::fs::metadata(&last).unwrap().len(), good, "the torn frame was cut off");
    // The log goes on, and the cut segment is whole at the next start.
    append(&log, 1, vec![entry(1, 11, 100)]).await;
    drop(log);
    let log = reopen(dir.path(), 1 << 20, 64 << 20);
    assert_eq!(indexes(&log.entries(1, 0, 100, usize::MAX).unwrap()), (1..=11).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_frame_before_the_last_segment_is_corruption_and_the_log_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = RaftLog::open_with(dir.path(), 1 << 20, 64 << 20).unwrap();
    append(&log, 1, (1..=10).map(|i| entry(1, i, 100)).collect()).await;
    drop(log);
    // Every open starts a new segment, so the entries are now before the last one.
    drop(reopen(dir.path(), 1 << 20, 64 << 20));
    let first = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).min().unwrap();
    let mut bytes = std::fs::read(&first).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0xff;
    std::fs::write(&first, bytes).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let err = RaftLog::open_with(dir.path(), 1 << 20, 64 << 20).err().expect("a corrupt log must not open");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_are_deleted_once_purged_and_evicted_entries_are_read_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    // 64 KiB segments, a 16 KiB cache: most entries are only on disk.
    let log = RaftLog::open_with(dir.path(), 16 << 10, 64 << 10).unwrap();
    for i in 1..=400 {
        append(&log, 1, vec![entry(1, i, 1000)]).await;
        if i % 2 == 0 {
            append(&log, 2, vec![entry(1, i / 2, 1000)]).await;
        }
    }
    let many = log.segment_count();
    assert!(many >= 8, "{many} segments");
    assert!(log.cached_bytes() <= 2 * ((16 << 10) + 2000), "cache bounded: {} bytes", log.cached_bytes());
    let all = log.entries(1, 1, 401, usize::MAX).unwrap();
    assert_eq!(indexes(&all), (1..=400).collect::<Vec<_>>());
    assert!(all.iter().all(|e| matches!(&e.payload, openraft::EntryPayload::Normal(b) if b.0.len() == 1)));
    // Both shards purge most of their logs; the next rotation deletes the dead segments.
    log.purge(1, log_id::<TypeConfig>(1, 1, 380)).await.unwrap();
    log.purge(2, log_id::<TypeConfig>(1, 1, 190)).await.unwrap();
    for i in 401..=480 {
        append(&log, 1, vec![entry(1, i, 1000)]).await;
    }
    let few = log.segment_count();
    assert!(few < many / 2, "segments {many} -> {few}");
    assert!(log.disk_bytes() < (few as u64 + 1) * (64 << 10) + 4096, "disk {} bytes in {few} segments", log.disk_bytes());
    drop(log);
    let log = reopen(dir.path(), 16 << 10, 64 << 10);
    assert_eq!(indexes(&log.entries(1, 0, 1000, usize::MAX).unwrap()), (381..=480).collect::<Vec<_>>());
    assert_eq!(indexes(&log.entries(2, 0, 1000, usize::MAX).unwrap()), (191..=200).collect::<Vec<_>>());
}

/// openraft's purge only reports the new purge point (`mark_purged`) until the ledger's state is
/// flushed; until `purge` makes it durable, the entries' segments stay on disk, and a crash in
/// between brings the entries back instead of losing them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reported_purge_keeps_its_entries_on_disk_until_it_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let log = RaftLog::open_with(dir.path(), 16 << 10, 64 << 10).unwrap();
    for i in 1..=200 {
        append(&log, 1, vec![entry(1, i, 1000)]).await;
    }
    log.mark_purged(1, log_id::<TypeConfig>(1, 1, 190));
    assert_eq!(log.log_state(1), (Some(log_id::<TypeConfig>(1, 1, 190)), Some(log_id::<TypeConfig>(1, 1, 200))));
    assert_eq!(indexes(&log.entries(1, 0, 1000, usize::MAX).unwrap()), (191..=200).collect::<Vec<_>>());
    let before = log.segment_count();
    // Rotations while the purge is not durable delete nothing it still needs.
    for i in 201..=300 {
        append(&log, 1, vec![entry(1, i, 1000)]).await;
    }
    assert!(log.segment_count() > before, "segments {before} -> {}", log.segment_count());
    drop(log);
    let log = reopen(dir.path(), 16 << 10, 64 << 10);
    assert_eq!(log.log_state(1).0, None, "the purge was never made durable");
    assert_eq!(indexes(&log.entries(1, 0, 1000, usize::MAX).unwrap()), (1..=300).collect::<Vec<_>>());
    // Made durable: the next rotation deletes the dead segments, and a reopen agrees.
    log.mark_purged(1, log_id::<TypeConfig>(1, 1, 290));
    log.purge(1, log_id::<TypeConfig>(1, 1, 290)).await.unwrap();
    let many = log.segment_count();
    for i in 301..=380 {
        append(&log, 1, vec![entry(1, i, 1000)]).await;
    }
    assert!(log.segment_count() < many, "segments {many} -> {}", log.segment_count());
    drop(log);
    let log = reopen(dir.path(), 16 << 10, 64 << 10);
    assert_eq!(log.log_state(1).0, Some(log_id::<TypeConfig>(1, 1, 290)));
    assert_eq!(indexes(&log.entries(1, 0, 1000, usize::MAX).unwrap()), (291..=380).collect::<Vec<_>>());
}
