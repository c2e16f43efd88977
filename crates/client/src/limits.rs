//! Every bound and deadline of the client library and the `hongbao` CLI in one place, with
//! compile-time checks of how they relate (and to the router's, which this crate cannot name:
//! those values are written out and the router's `limits.rs` says the same).

use std::time::Duration;

// ---------------- retries of one call

/// Bounds on retrying: a call gives up at its deadline or after this many attempts.
pub const MAX_ATTEMPTS: u32 = 64;
/// The pause between attempts starts here and doubles up to `BACKOFF_MAX`.
pub const BACKOFF_START: Duration = Duration::from_millis(20);
pub const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// One attempt may take at most this long, so a stuck node does not eat the whole deadline.
/// Above the router's deadline for a routed request (2.5 s), so the router's clear answer
/// arrives rather than a timeout of our own.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
const _: () = assert!(BACKOFF_START.as_millis() <= BACKOFF_MAX.as_millis() && BACKOFF_MAX.as_millis() < ATTEMPT_TIMEOUT.as_millis());
const _: () = assert!(ATTEMPT_TIMEOUT.as_millis() > 2_500, "above the router's route deadline");
/// Pause before each re-send in `settle`, so an answer that comes back at once (e.g. a
/// NotLeader bounced between two nodes) does not turn into a busy loop.
pub const RESEND_PAUSE: Duration = Duration::from_millis(100);

// ---------------- membership and slot moves

/// One attempt of a membership step (#16): a node works on a step up to ~60 s (adding a replica
/// waits for the learner to catch up) and a router gives it 65 s; a little more here, so the
/// answer that the step is still under way arrives rather than a timeout of our own.
pub const MEMBERSHIP_ATTEMPT: Duration = Duration::from_secs(70);
const _: () = assert!(MEMBERSHIP_ATTEMPT.as_secs() > 65, "above the router's membership timeout");
/// Re-sends of one step at most, each after `STEP_PAUSE`.
pub const MAX_STEP_RESENDS: u32 = 20;
pub const STEP_PAUSE: Duration = Duration::from_secs(1);
/// Calls of one slot move at most (each does up to about 15 s of it).
pub const MAX_MOVE_CALLS: u32 = 40;

// ---------------- development tokens

/// Lifetime of a development token, and how long before its end a new one is minted.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(3600);
pub const DEV_TOKEN_RENEW: Duration = Duration::from_secs(600);
const _: () = assert!(DEV_TOKEN_RENEW.as_secs() < DEV_TOKEN_TTL.as_secs(), "a token is renewed before it ends");
/// Users whose development tokens are kept at most (then the memory starts over).
pub const MAX_DEV_TOKENS: usize = 1_000_000;

// ---------------- grab batches (`grab_batch`)

/// `GrabGateway.Grabs` calls one batcher keeps in flight; grabs that arrive meanwhile wait and
/// leave together in the next.
pub const MAX_BATCHES_IN_FLIGHT: usize = 8;
/// Grabs waiting in one batcher at most; one more is refused at once with OVERLOADED (and
/// re-sent after a pause, like a router's OVERLOADED).
pub const MAX_QUEUED_GRABS: usize = 16_384;
const _: () = assert!(MAX_BATCHES_IN_FLIGHT * 256 <= MAX_QUEUED_GRABS, "the queue holds every batch in flight (256: MAX_GRAB_BATCH)");
