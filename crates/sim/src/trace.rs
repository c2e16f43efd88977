//! The run's event trace: every client call and its outcome, every fault, every check, stamped
//! with simulated time. Its SHA-256 names the run: the same seed must give the same hash
//! (`tests/determinism`), and a failing run prints the trace's last events.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Events kept for printing; all of them go into the hash.
const KEEP: usize = 400;

pub struct Trace {
    inner: Mutex<Inner>,
    start: tokio::time::Instant,
}

struct Inner {
    hash: ring::digest::Context,
    events: u64,
    last: VecDeque<String>,
    echo: bool,
}

impl Trace {
    /// `echo`: print every event as it happens (`hongbao-sim --verbose`).
    pub fn new(echo: bool) -> Trace {
        let inner = Inner { hash: ring::digest::Context::new(&ring::digest::SHA256), events: 0, last: VecDeque::new(), echo };
        Trace { inner: Mutex::new(inner), start: tokio::time::Instant::now() }
    }

    /// Simulated ms since the run began.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn note(&self, event: String) {
        let line = format!("{:>9} {event}", self.now_ms());
        let mut i = self.inner.lock().expect("trace lock");
        i.hash.update(line.as_bytes());
        i.hash.update(b"\n");
        i.events += 1;
        if i.echo {
            println!("{line}");
        }
        if i.last.len() == KEEP {
            i.last.pop_front();
        }
        i.last.push_back(line);
    }

    pub fn events(&self) -> u64 {
        self.inner.lock().expect("trace lock").events
    }

    /// The hash of every event so far (hex, 16 bytes).
    pub fn hash(&self) -> String {
        let i = self.inner.lock().expect("trace lock");
        hex::encode(&i.hash.clone().finish().as_ref()[..16])
    }

    /// The last `n` events, oldest first.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let i = self.inner.lock().expect("trace lock");
        i.last.iter().skip(i.last.len().saturating_sub(n)).cloned().collect()
    }
}
