//! Every bound of the node on sizes and counts in one place, with how they relate checked at
//! compile time: what a request, an entry, a batch or a message may hold, and how much may be
//! in flight. Timeouts and periods live with the code that waits.
//!
//! `MAX_REQUEST_BYTES` is the contract's (`hongbao_proto`), the same at routers and nodes. A
//! shard's proposals in flight here (`MAX_INFLIGHT_PER_SHARD`, 20k) are more than one router
//! sends a shard (its `MAX_ROUTED_PER_SHARD`, 10k): a shard's leader is shared by the routers of
//! every region, and each router bounds only its own share.

use std::time::Duration;

// Proposals: a shard's leader batches requests into entries and replicates them.
/// Proposals in flight per shard before new ones get OVERLOADED instead of queueing without end.
pub const MAX_INFLIGHT_PER_SHARD: usize = 20_000;
/// Most requests in one Raft entry.
pub const MAX_BATCH: usize = 256;
/// An entry closes once its requests' encoded size reaches this, so it stays far below what one
/// AppendEntries may carry (`log_store::MAX_APPEND_BYTES`) whatever the requests' sizes: the
/// last request may overshoot by its own size, which the API bounds (`MAX_REQUEST_BYTES`).
pub const MAX_ENTRY_BYTES: usize = 1 << 20;
/// Entries one shard's leader has proposed and not yet seen applied. While they are in flight,
/// new requests wait in the queue and go out together in the next entry: that is the batching.
pub const MAX_ENTRIES_IN_FLIGHT: usize = 8;
/// A proposal or read that takes longer than this answers TIMEOUT (outcome unknown: retry with
/// the same request id).
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);

// Raft replication and its transport.
/// Replication reads (`limited_get_log_entries`) stop after this many bytes of entries, so one
/// AppendEntries stays far below the transport's message limit (`MAX_RAFT_MESSAGE`) whatever
/// the entries' sizes: a follower far behind is fed in bounded pieces. Reads for apply
/// (`try_get_log_entries`) must return the whole range and are not bounded.
pub const MAX_APPEND_BYTES: usize = 8 << 20;
/// Most entries in one AppendEntries; the log store's replication read also stops at
/// `log_store::MAX_APPEND_BYTES`, which is what bounds one message in bytes.
pub const MAX_ENTRIES_PER_APPEND: u64 = 256;
/// The recent entries a shard's log store keeps decoded in memory (`log_store::Recent`), so that
/// apply and replication read them without RocksDB: at most this many, and about this many bytes
/// of encoded entries (the entry that crosses it stays). A few seconds of a storm's entries.
pub const RECENT_ENTRIES: usize = 1_024;
pub const RECENT_ENTRY_BYTES: usize = 16 << 20;
/// gRPC message limit for Raft traffic (a batch of entries plus framing).
pub const MAX_RAFT_MESSAGE: usize = 64 << 20;
/// Snapshot chunk size: bounded so a chunk never dominates memory or a gRPC frame.
pub const SNAPSHOT_CHUNK: usize = 1 << 20;
/// A snapshot larger than this is refused rather than filling the disk.
pub const MAX_SNAPSHOT_BYTES: u64 = 8 << 30;

const _: () = assert!(RECENT_ENTRY_BYTES >= MAX_APPEND_BYTES, "one replication read fits in the recent entries");

// Reads and the public API.
/// Reads in flight on this node (all shards, linearizable or stale) before new ones get
/// OVERLOADED instead of piling up behind a slow quorum (default of `--max-reads-in-flight`).
pub const MAX_READS_IN_FLIGHT: usize = 4096;
/// Largest accepted API request; strings inside are further bounded by the ledger.
pub const MAX_REQUEST_BYTES: usize = hongbao_proto::MAX_REQUEST_BYTES;
/// Most statement entries one call returns.
pub const MAX_STATEMENT: u32 = 200;
/// Most notifications one poll returns.
pub const MAX_POLL: u32 = 256;
/// Slow PIN hashes running or queued on the blocking pool, per node. Past it a spend is refused
/// at once as OVERLOADED (retry later, same request id) rather than queued without bound: the
/// blocking pool's own queue has no limit, and a hash costs tens of milliseconds of a core.
pub const MAX_HASHES_IN_FLIGHT: usize = 64;

// What a shard's leader does on its own.
/// Credits sent to one destination in one relay batch.
pub const RELAY_BATCH: usize = 256;
/// Bytes of one relay batch: a moving wallet carries its statement and remembered requests,
/// so a batch stops here (at least one entry goes, however large).
pub const RELAY_BATCH_BYTES: usize = 1 << 20;
/// Wallets one MoveSlotOut sends (a page; the ledger also stops at `MOVE_PAGE_BYTES`).
pub const PAGE_USERS: u32 = 256;

// How the bounds relate.
/// An entry stays far below what one AppendEntries carries, so a follower is always fed.
const _: () = assert!(MAX_ENTRY_BYTES * 4 <= MAX_APPEND_BYTES);
/// A full batch of the largest requests fits in one AppendEntries.
const _: () = assert!(MAX_BATCH * MAX_REQUEST_BYTES <= MAX_APPEND_BYTES);
/// One AppendEntries, and one snapshot chunk, fit in a transport message.
const _: () = assert!(MAX_APPEND_BYTES < MAX_RAFT_MESSAGE && SNAPSHOT_CHUNK < MAX_RAFT_MESSAGE);
/// A coalesced grab call of the largest requests fits in a transport message (it is forwarded).
const _: () = assert!(MAX_REQUEST_BYTES * hongbao_proto::MAX_GRAB_BATCH <= MAX_RAFT_MESSAGE);
/// A relay batch goes to its destination as one command: it fits in one entry.
const _: () = assert!(RELAY_BATCH_BYTES <= MAX_ENTRY_BYTES && RELAY_BATCH <= MAX_BATCH * 4);
/// The sweeper's batch (`MAX_BATCH` expiries) goes into one entry; the slow PIN hashes in flight
/// are a small share of the proposals one shard takes.
const _: () = assert!(MAX_HASHES_IN_FLIGHT * 100 <= MAX_INFLIGHT_PER_SHARD);
/// The entries in flight bound a shard's Raft pipeline far below its proposal queue.
const _: () = assert!(MAX_ENTRIES_IN_FLIGHT * MAX_BATCH <= MAX_INFLIGHT_PER_SHARD);
/// The API's default deadline outlasts the longest wait inside a call (`service::API_DEADLINES`).
const _: () = assert!(PROPOSE_TIMEOUT.as_millis() < crate::service::API_DEADLINES.default.as_millis());
/// Reads in flight on a node are bounded like proposals on one shard, not more.
const _: () = assert!(MAX_READS_IN_FLIGHT <= MAX_INFLIGHT_PER_SHARD);
