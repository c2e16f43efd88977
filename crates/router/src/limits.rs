//! Every bound and deadline of the router in one place, with compile-time checks of how they
//! relate. The node has limits of similar meaning under its own names (`hongbao_node`'s
//! `limits`); where the values differ, the doc comment here says why.

use std::time::Duration;

// ---------------- sizes

/// The public API's one request size limit, in bytes: the same constant the node checks
/// (`hongbao_proto::MAX_REQUEST_BYTES`, 16 KiB). Before #28 the router took 64 KiB and the node
/// refused above 16 KiB, so a request the router accepted could fail later, inside a coalesced
/// batch; one constant for both keeps that from coming back.
pub const MAX_API_REQUEST_BYTES: usize = hongbao_proto::MAX_REQUEST_BYTES;
/// Largest `GrabGateway.Grabs` call: `MAX_GRAB_BATCH` grabs, each at most a single call's size
/// with its token (about 5 MiB).
pub const MAX_GATEWAY_BATCH_BYTES: usize = hongbao_proto::MAX_GRAB_BATCH * (MAX_API_REQUEST_BYTES + hongbao_auth::MAX_TOKEN_BYTES);

// ---------------- load

/// Requests routed to one shard and not yet answered, through this router (the default of
/// `--max-inflight-per-shard`); beyond it, RESOURCE_EXHAUSTED at once instead of an unbounded
/// queue. Half the node's bound on proposals in flight per shard (20,000): a shard's leader
/// takes requests from the routers of every region, so no single router may fill it alone.
pub const MAX_ROUTED_PER_SHARD: usize = 10_000;

/// Requests one user may have in flight through one router at once. Without a share per user,
/// one token sending without waiting for answers could hold all of a shard's
/// `MAX_ROUTED_PER_SHARD` and every other user would get OVERLOADED (#28, item 6). A person's
/// app has a few calls in flight, not dozens.
pub const MAX_INFLIGHT_PER_USER: usize = 32;
const _: () = assert!(MAX_INFLIGHT_PER_USER * 100 <= MAX_ROUTED_PER_SHARD, "one user holds at most 1% of a shard's places");

/// Users tracked by each rate limiter at most.
pub const MAX_LIMITED_USERS: usize = 200_000;

/// Coalesced calls in flight per node. While they are all busy, new grabs queue and go together.
pub const MAX_BATCHES_IN_FLIGHT: usize = 8;
/// Grabs waiting per node; beyond it, OVERLOADED at once.
pub const MAX_QUEUED_PER_NODE: usize = 20_000;
const _: () =
    assert!(hongbao_proto::MAX_GRAB_BATCH * MAX_BATCHES_IN_FLIGHT <= MAX_QUEUED_PER_NODE, "the queue holds every batch in flight");

// ---------------- retries and deadlines

/// A routed request gives up after this long (below the client's per-attempt timeout, 3 s, so
/// the client hears a clear UNAVAILABLE and can try another router with the same request id).
/// An election (400–800 ms of silence, then a vote) fits well inside it: the router waits for
/// the new leader rather than answering an error its caller would only retry.
pub const ROUTE_DEADLINE: Duration = Duration::from_millis(2500);
/// One attempt at one node (and one coalesced call).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);
const _: () = assert!(ATTEMPT_TIMEOUT.as_millis() < ROUTE_DEADLINE.as_millis(), "a second attempt fits in the deadline");
const _: () = assert!(ROUTE_DEADLINE.as_millis() < 3_000, "below the client's per-attempt timeout");
/// Bounds the attempts; the deadline is what ends a wait (backoff reaches it in ~20 attempts).
pub const MAX_ATTEMPTS: usize = 64;
/// NotLeader hints an admin call follows before it tries the next node in turn.
pub const MAX_LEADER_HOPS: usize = 4;
/// Pause before asking again when no node could answer (no leader yet, node gone), doubling.
pub const WAIT_START: Duration = Duration::from_millis(25);
pub const WAIT_MAX: Duration = Duration::from_millis(200);
const _: () = assert!(WAIT_START.as_millis() <= WAIT_MAX.as_millis() && WAIT_MAX.as_millis() < ROUTE_DEADLINE.as_millis());
/// How often the router checks each node's health, and how long one check may take.
pub const HEALTH_EVERY: Duration = Duration::from_millis(150);
pub const HEALTH_TIMEOUT: Duration = Duration::from_millis(400);
/// How often the router asks the nodes for the cluster map, and how long one node may take.
pub const MAP_EVERY: Duration = Duration::from_secs(1);
/// The meta leader answers after a ReadIndex (a round trip to a majority, over WAN links).
pub const MAP_TIMEOUT: Duration = Duration::from_secs(1);
/// One admin call forwarded to one node (`any_node`).
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);
/// A membership step (AddReplica waits for the learner to catch up) may take a node ~60 s
/// before it answers; all nodes tried together get this long.
pub const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(65);
const _: () = assert!(MEMBERSHIP_TIMEOUT.as_secs() > 60, "longer than a node's catch-up wait");
