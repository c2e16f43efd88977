//! openraft's watch channels (metrics, replication progress, votes), replayable: tokio's
//! `watch` files each waiter under one of eight notifiers chosen by the runtime's random
//! source, so the order in which a change wakes its waiters differs from run to run, and a
//! simulation (hongbao-sim) with the same seed would not run the same. Here every waiter waits
//! on one `Notify`, which wakes them in the order they began to wait.

use openraft::async_runtime::watch::{RecvError, SendError};
use openraft::async_runtime::{Watch, WatchReceiver, WatchSender};
use openraft::{OptionalSend, OptionalSync};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use tokio::sync::Notify;

pub struct NodeWatch;

struct Shared<T> {
    value: RwLock<T>,
    /// Bumped by every change.
    version: AtomicU64,
    senders: AtomicUsize,
    receivers: AtomicUsize,
    closed: AtomicBool,
    changed: Notify,
}

impl<T> Shared<T> {
    fn read(&self) -> RwLockReadGuard<'_, T> {
        self.value.read().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Sender<T>(Arc<Shared<T>>);

pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
    seen: u64,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::SeqCst);
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.closed.store(true, Ordering::SeqCst);
            self.0.changed.notify_waiters();
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        self.shared.receivers.fetch_add(1, Ordering::SeqCst);
        Receiver { shared: self.shared.clone(), seen: self.seen }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.shared.receivers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Watch for NodeWatch {
    type Sender<T: OptionalSend + OptionalSync> = Sender<T>;
    type Receiver<T: OptionalSend + OptionalSync> = Receiver<T>;
    type Ref<'a, T: OptionalSend + 'a> = RwLockReadGuard<'a, T>;

    fn channel<T: OptionalSend + OptionalSync>(init: T) -> (Sender<T>, Receiver<T>) {
        let shared = Arc::new(Shared {
            value: RwLock::new(init),
            version: AtomicU64::new(0),
            senders: AtomicUsize::new(1),
            receivers: AtomicUsize::new(1),
            closed: AtomicBool::new(false),
            changed: Notify::new(),
        });
        (Sender(shared.clone()), Receiver { shared, seen: 0 })
    }
}

impl<T: OptionalSend + OptionalSync> WatchSender<NodeWatch, T> for Sender<T> {
    /// As tokio's: refused (value handed back) when no receiver is left.
    fn send(&self, value: T) -> Result<(), SendError<T>> {
        if self.0.receivers.load(Ordering::SeqCst) == 0 {
            return Err(SendError(value));
        }
        let mut value = Some(value);
        self.send_if_modified(|v| {
            *v = value.take().expect("sent once");
            true
        });
        Ok(())
    }

    fn send_if_modified<F>(&self, modify: F) -> bool
    where
        F: FnOnce(&mut T) -> bool,
    {
        let modified = {
            let mut v = self.0.value.write().unwrap_or_else(|e| e.into_inner());
            let modified = modify(&mut v);
            if modified {
                self.0.version.fetch_add(1, Ordering::SeqCst);
            }
            modified
        };
        if modified {
            self.0.changed.notify_waiters();
        }
        modified
    }

    fn borrow_watched(&self) -> RwLockReadGuard<'_, T> {
        self.0.read()
    }

    fn subscribe(&self) -> Receiver<T> {
        self.0.receivers.fetch_add(1, Ordering::SeqCst);
        Receiver { shared: self.0.clone(), seen: self.0.version.load(Ordering::SeqCst) }
    }
}

impl<T: OptionalSend + OptionalSync> WatchReceiver<NodeWatch, T> for Receiver<T> {
    async fn changed(&mut self) -> Result<(), RecvError> {
        loop {
            // Registered before the check, so a change between the check and the wait is not missed.
            let notified = self.shared.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let now = self.shared.version.load(Ordering::SeqCst);
            if now != self.seen {
                self.seen = now;
                return Ok(());
            }
            if self.shared.closed.load(Ordering::SeqCst) {
                return Err(RecvError(()));
            }
            notified.await;
        }
    }

    fn borrow_watched(&self) -> RwLockReadGuard<'_, T> {
        self.shared.read()
    }

    fn borrow_and_update(&mut self) -> RwLockReadGuard<'_, T> {
        self.seen = self.shared.version.load(Ordering::SeqCst);
        self.shared.read()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_wakes_a_waiter_once_and_a_dropped_sender_ends_the_wait() {
        let (tx, mut rx) = NodeWatch::channel(1u64);
        let mut late = tx.subscribe();
        tx.send(2).unwrap();
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow_and_update(), 2);
        assert!(!tx.send_if_modified(|_| false), "unmodified");
        late.changed().await.unwrap();
        let waiter = tokio::spawn(async move { rx.changed().await });
        tokio::task::yield_now().await;
        drop(tx);
        assert!(waiter.await.unwrap().is_err(), "closed");
        drop(late);
    }

    #[tokio::test]
    async fn send_is_refused_when_no_receiver_is_left() {
        let (tx, rx) = NodeWatch::channel(0u8);
        drop(rx);
        assert!(tx.send(1).is_err());
    }
}
