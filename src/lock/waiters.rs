//! Local hand-off: a release through this process wakes this process's waiters on that lock at
//! once, so a hand-off between two clients of one replica costs no polling delay. Waiters on
//! other replicas still find out by polling with backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

type Slot = (String, String);

#[derive(Debug, Default)]
pub struct Waiters {
    /// One `Notify` per (bucket, object key) that somebody is waiting on. Entries are removed when
    /// the last waiter leaves, so the map holds only locks with waiters right now.
    slots: Mutex<HashMap<Slot, Arc<Notify>>>,
}

/// A waiter's registration; dropping it unregisters.
pub struct Registration<'a> {
    waiters: &'a Waiters,
    slot: Slot,
    pub notify: Arc<Notify>,
}

impl Waiters {
    pub fn register(&self, bucket: &str, key: &str) -> Registration<'_> {
        let slot = (bucket.to_owned(), key.to_owned());
        let notify = self
            .slots()
            .entry(slot.clone())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone();
        Registration {
            waiters: self,
            slot,
            notify,
        }
    }

    /// Wakes every waiter of this lock in this process.
    pub fn wake(&self, bucket: &str, key: &str) {
        // Notify under the map's mutex without cloning the Arc: a clone held outside it would
        // make a concurrently leaving last waiter think others remain, and leak its entry.
        if let Some(notify) = self.slots().get(&(bucket.to_owned(), key.to_owned())) {
            notify.notify_waiters();
        }
    }

    /// How many locks have at least one waiter here.
    pub fn waited_locks(&self) -> usize {
        self.slots().len()
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<Slot, Arc<Notify>>> {
        self.slots.lock().expect("waiters mutex poisoned")
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut slots = self.waiters.slots();
        // Two references left (the map's and ours) means we are the last waiter.
        if Arc::strong_count(&self.notify) <= 2 {
            slots.remove(&self.slot);
        }
    }
}
