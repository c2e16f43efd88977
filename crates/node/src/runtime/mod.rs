//! Where the node's randomness and blocking work come from: the machine's, or a simulation's.
//!
//! A node normally draws from the OS and hands blocking work (RocksDB writes, snapshot files)
//! to tokio's blocking pool. `hongbao-sim` runs whole clusters in one thread under one seed
//! (#31): it calls `enter_simulation` on that thread, after which every draw here (openraft's
//! election timeouts through `NodeRuntime`, injected message loss, file names) comes from the
//! seed, and blocking work runs inline, in a fixed order, instead of racing on other threads.
//! Nothing else changes: the same code paths run in both.

pub mod watch;

use openraft::async_runtime::{Select2, Select3, Select4};
use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};
use rand::{Rng, SeedableRng};
use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::time::Duration;

thread_local! {
    /// The simulation's random stream, when this thread runs one.
    static SIMULATION: RefCell<Option<rand_chacha::ChaCha8Rng>> = const { RefCell::new(None) };
    /// Bugs a simulation planted on this thread (`plant`).
    static PLANTED: RefCell<Vec<Bug>> = const { RefCell::new(Vec::new()) };
}

/// Bugs the suite once had or could have, which a simulation may plant back (`hongbao-sim
/// --bug`) to show that its seeds catch them (#31). Only a simulation's thread ever sees one:
/// `planted` is false everywhere else, so a node on a machine runs none of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// The relay starts each batch one sequence number past the delivered mark: a credit is
    /// marked delivered without ever reaching its destination.
    RelaySkipsASequence,
    /// The applied index is written through the WAL beside Raft's records, ahead of the state
    /// it describes (which waits for the checkpoint): after a crash the replica believes it
    /// applied entries whose effects it lost.
    AppliedIndexAheadOfState,
    /// A replica that restarted with an empty disk votes at once, before it caught up: its
    /// forgotten vote and log can elect a leader missing committed entries.
    EmptyReplicaVotesAtOnce,
}

impl Bug {
    pub const ALL: [Bug; 3] = [Bug::RelaySkipsASequence, Bug::AppliedIndexAheadOfState, Bug::EmptyReplicaVotesAtOnce];

    pub fn name(self) -> &'static str {
        match self {
            Bug::RelaySkipsASequence => "relay-skips-a-sequence",
            Bug::AppliedIndexAheadOfState => "applied-index-ahead-of-state",
            Bug::EmptyReplicaVotesAtOnce => "empty-replica-votes-at-once",
        }
    }
}

/// Plants `bug` on this simulation thread (refused on any other).
pub fn plant(bug: Bug) {
    assert!(simulated(), "bugs are planted only in a simulation");
    PLANTED.with(|p| p.borrow_mut().push(bug));
}

/// Whether this thread runs a simulation that planted `bug`.
pub fn planted(bug: Bug) -> bool {
    simulated() && PLANTED.with(|p| p.borrow().contains(&bug))
}

/// Makes this thread a simulation's: every draw comes from `seed` from now on, and blocking
/// work runs inline. For `hongbao-sim` only (one thread, one seed).
pub fn enter_simulation(seed: u64) {
    SIMULATION.with(|s| *s.borrow_mut() = Some(rand_chacha::ChaCha8Rng::seed_from_u64(seed)));
}

/// Ends `enter_simulation` on this thread.
pub fn leave_simulation() {
    SIMULATION.with(|s| *s.borrow_mut() = None);
    PLANTED.with(|p| p.borrow_mut().clear());
}

/// Whether this thread runs a simulation.
pub fn simulated() -> bool {
    SIMULATION.with(|s| s.borrow().is_some())
}

/// A random u64: the simulation's next draw, or the OS's.
pub fn random_u64() -> u64 {
    SIMULATION.with(|s| match s.borrow_mut().as_mut() {
        Some(rng) => rng.gen(),
        None => rand::random(),
    })
}

/// Runs blocking work (disk I/O) off the async workers, or inline under a simulation, where
/// another thread's timing must not decide what happens first.
pub async fn blocking<F, T>(f: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if simulated() {
        return Ok(f());
    }
    tokio::task::spawn_blocking(f).await.map_err(io::Error::other)
}

/// openraft's runtime for every shard: tokio's, with its random source (election timeouts,
/// heartbeat jitter) taken from `random_u64`, so a simulation's seed decides elections too.
pub struct NodeRuntime(TokioRuntime);

impl std::fmt::Debug for NodeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeRuntime")
    }
}

impl AsyncRuntime for NodeRuntime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = <TokioRuntime as AsyncRuntime>::Instant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = rand010::rngs::SmallRng;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        TokioRuntime::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(duration: Duration, future: F) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(deadline: Self::Instant, future: F) -> Self::Timeout<R, F> {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn select2<A, B>(a: A, b: B) -> impl Future<Output = Select2<A::Output, B::Output>> + OptionalSend
    where
        A: Future + OptionalSend,
        B: Future + OptionalSend,
    {
        TokioRuntime::select2(a, b)
    }

    fn select3<A, B, C>(a: A, b: B, c: C) -> impl Future<Output = Select3<A::Output, B::Output, C::Output>> + OptionalSend
    where
        A: Future + OptionalSend,
        B: Future + OptionalSend,
        C: Future + OptionalSend,
    {
        TokioRuntime::select3(a, b, c)
    }

    fn select4<A, B, C, D>(
        a: A,
        b: B,
        c: C,
        d: D,
    ) -> impl Future<Output = Select4<A::Output, B::Output, C::Output, D::Output>> + OptionalSend
    where
        A: Future + OptionalSend,
        B: Future + OptionalSend,
        C: Future + OptionalSend,
        D: Future + OptionalSend,
    {
        TokioRuntime::select4(a, b, c, d)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        <rand010::rngs::SmallRng as rand010::SeedableRng>::seed_from_u64(random_u64())
    }

    type Mpsc = <TokioRuntime as AsyncRuntime>::Mpsc;
    type Watch = watch::NodeWatch;
    type Oneshot = <TokioRuntime as AsyncRuntime>::Oneshot;
    type Mutex<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::Mutex<T>;

    fn new(threads: usize) -> Self {
        NodeRuntime(TokioRuntime::new(threads))
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.0.block_on(future)
    }

    fn spawn_blocking<F, T>(f: F) -> impl Future<Output = Result<T, io::Error>> + Send
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        blocking(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulation_draws_the_same_numbers_from_the_same_seed_and_others_from_another() {
        let draw = |seed| {
            enter_simulation(seed);
            let v: Vec<u64> = (0..4).map(|_| random_u64()).collect();
            let rt: u64 = rand010::RngExt::random(&mut NodeRuntime::thread_rng());
            leave_simulation();
            (v, rt)
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        assert!(!simulated());
    }
}
