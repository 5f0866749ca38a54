//! Hand-off: a release through this process wakes this process's waiters on that lock at
//! once, so a hand-off between two clients of one replica costs no polling delay; with peers
//! configured, the other replicas are told too ([`PeerNotifier`]) and wake theirs. Without
//! peers, waiters on other replicas find out by polling with backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::Notify;

type Slot = (String, String);

/// Told when this process frees a lock, so that other replicas' waiters look at once. What it
/// sends is a hint to read the store, never the lock's state.
pub trait PeerNotifier: Send + Sync + std::fmt::Debug {
    fn lock_freed(&self, bucket: &str, object: &str);
}

#[derive(Debug, Default)]
pub struct Waiters {
    /// One `Notify` per (bucket, object key) that somebody is waiting on. Entries are removed when
    /// the last waiter leaves, so the map holds only locks with waiters right now.
    slots: Mutex<HashMap<Slot, Arc<Notify>>>,
    /// Set once at start when the replica has peers.
    peers: OnceLock<Arc<dyn PeerNotifier>>,
}

/// A waiter's registration; dropping it unregisters.
pub struct Registration<'a> {
    waiters: &'a Waiters,
    slot: Slot,
    /// `None` only while being dropped: the reference is given up under the map's mutex, so
    /// that whoever takes the mutex next counts the references that are really left.
    notify: Option<Arc<Notify>>,
}

impl Registration<'_> {
    pub fn notify(&self) -> &Notify {
        self.notify.as_ref().expect("taken only on drop")
    }
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
            notify: Some(notify),
        }
    }

    pub fn set_peers(&self, peers: Arc<dyn PeerNotifier>) {
        let _ = self.peers.set(peers);
    }

    /// This process freed the lock: wakes its waiters here, and tells the peers.
    pub fn wake(&self, bucket: &str, key: &str) {
        self.wake_local(bucket, key);
        if let Some(peers) = self.peers.get() {
            peers.lock_freed(bucket, key);
        }
    }

    /// Wakes every waiter of this lock in this process (they then read the store).
    pub fn wake_local(&self, bucket: &str, key: &str) {
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
        // Our reference goes first, under the mutex: two waiters leaving at once then see 3 and
        // 2 references rather than both seeing 3 (and neither removing the entry, forever).
        drop(self.notify.take());
        if slots
            .get(&self.slot)
            .is_some_and(|n| Arc::strong_count(n) == 1)
        {
            slots.remove(&self.slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_waiters_of_a_one_off_key_leaving_at_once_leave_no_entry_behind() {
        let waiters = Waiters::default();
        let both_registered = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            for _ in 0..2 {
                let (waiters, both_registered) = (&waiters, &both_registered);
                s.spawn(move || {
                    // Every key is used by these two waiters once and never again, as with
                    // one-off keys: nothing later would clean up an entry they left behind.
                    for i in 0..100_000 {
                        let r = waiters.register("b", &format!("once-{i}"));
                        both_registered.wait();
                        drop(r);
                    }
                });
            }
        });
        assert_eq!(waiters.waited_locks(), 0);
    }
}
