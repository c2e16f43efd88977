//! Waiting for a condition: `eventually!` in async tests, `until` where the caller is not async.
//! One poll interval for every wait, so that a test's bound is the only timing it states.

use std::time::{Duration, Instant};

/// How often a condition is evaluated again.
pub const EVERY: Duration = Duration::from_millis(200);

/// Evaluates `$cond` (it may await) every `poll::EVERY` until it holds or `$within` passes;
/// whether it held. `$cond` may assign to variables declared before, so that the caller can
/// report what it saw last:
///
/// ```ignore
/// let mut seen = 0;
/// assert!(eventually!(Duration::from_secs(5), { seen = count().await; seen >= 3 }), "saw {seen}");
/// ```
#[macro_export]
macro_rules! eventually {
    ($within:expr, $cond:expr) => {{
        let end = ::std::time::Instant::now() + $within;
        loop {
            if $cond {
                break true;
            }
            if ::std::time::Instant::now() > end {
                break false;
            }
            $crate::poll::pause().await;
        }
    }};
}

/// One poll interval (for `eventually!`).
pub async fn pause() {
    tokio::time::sleep(EVERY).await;
}

/// `eventually!` for code that is not async: evaluates `cond` every `EVERY` (sleeping the
/// thread) until it holds or `within` passes; whether it held.
pub fn until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(EVERY);
    }
}
