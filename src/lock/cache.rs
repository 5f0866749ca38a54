//! This process's hint of each lock's last known state: the document and the version (S3 ETag) it
//! last read or wrote, so that the next decision on that lock can go straight to a conditional
//! write (`If-Match: <cached version>`) without reading first: one store round trip instead of
//! two.
//!
//! A hint, never a source of truth. Another replica (or another request in this process) may
//! have written since, so the engine only ever lets a cached state lead to a *write*, which the
//! store checks against the cached version and refuses when it is stale. A refusal (held,
//! not-holder) or a no-op answer is only ever given from a fresh read.
//!
//! Bounded with an LRU (the `lru` crate, already in the dependency tree through the AWS SDK):
//! a lock not touched for a while simply costs one read again.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

use super::kind::LockKind;
use super::LockDocument;
use crate::store::Version;

/// Locks remembered per process by default. An entry is a few hundred bytes (the document, its
/// version and the bucket and object names), so this bounds the cache to a few MiB.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// One lock's last known state (`K`: the kind of lock, the mutex's by default).
#[derive(Debug, Clone)]
pub struct Known<K = LockDocument> {
    pub doc: K,
    /// The version `doc` was stored at. Conditional writes made from this hint carry it as
    /// `If-Match`, which is what makes a stale hint harmless: the store refuses the write.
    pub version: Version,
}

type Slot = (String, String);

/// The states of one kind of lock (the engine holds one per kind: their objects never share a
/// name, as each kind lives under its own part of the prefix).
#[derive(Debug)]
pub struct StateCache<K = LockDocument> {
    /// `None` when caching is off (capacity 0): every decision then reads first. A std mutex:
    /// it is held only for a map operation, never across an await.
    entries: Mutex<Option<LruCache<Slot, Known<K>>>>,
}

impl<K: LockKind> StateCache<K> {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(NonZeroUsize::new(capacity).map(LruCache::new)),
        }
    }

    /// Remembers at most `capacity` locks from now on (0: none), forgetting all it knew.
    pub fn set_capacity(&self, capacity: usize) {
        *self.entries.lock().expect("lock cache mutex poisoned") =
            NonZeroUsize::new(capacity).map(LruCache::new);
    }

    pub fn get(&self, bucket: &str, object: &str) -> Option<Known<K>> {
        self.with(|entries| {
            entries
                .get(&(bucket.to_owned(), object.to_owned()))
                .cloned()
        })?
    }

    /// Records what was just read from or written to the store. Concurrent requests may record
    /// out of order, leaving an older state here: that only costs a failed conditional write and
    /// a read later, never a wrong answer.
    pub fn remember(&self, bucket: &str, object: &str, doc: &K, version: &Version) {
        self.put(bucket, object, doc, version, false);
    }

    /// Like [`StateCache::remember`], but keeps a state of a higher revision already known: for
    /// a read that may have been served before this process learned a newer state. (A lock
    /// deleted and created again, or written by the old module, starts its revisions over: the
    /// higher one kept then is stale, which costs one refused `If-Match` write and a read.)
    pub fn remember_unless_older(&self, bucket: &str, object: &str, doc: &K, version: &Version) {
        self.put(bucket, object, doc, version, true);
    }

    fn put(&self, bucket: &str, object: &str, doc: &K, version: &Version, unless_older: bool) {
        self.with(|entries| {
            let slot = (bucket.to_owned(), object.to_owned());
            let newer_known = unless_older
                && entries
                    .peek(&slot)
                    .is_some_and(|known| known.doc.revision() > doc.revision());
            if !newer_known {
                entries.put(
                    slot,
                    Known {
                        doc: doc.clone(),
                        version: version.clone(),
                    },
                );
            }
        });
    }

    /// Drops what is known of a lock whose state is now unknown (an error) or not a document.
    pub fn forget(&self, bucket: &str, object: &str) {
        self.with(|entries| entries.pop(&(bucket.to_owned(), object.to_owned())));
    }

    /// How many locks are remembered.
    pub fn len(&self) -> usize {
        self.with(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `f` on the entries, if caching is on.
    fn with<R>(&self, f: impl FnOnce(&mut LruCache<Slot, Known<K>>) -> R) -> Option<R> {
        self.entries
            .lock()
            .expect("lock cache mutex poisoned")
            .as_mut()
            .map(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(owner: &str) -> LockDocument {
        LockDocument::grant(owner, 60, chrono::DateTime::UNIX_EPOCH, 1)
    }

    #[test]
    fn the_least_recently_used_lock_is_forgotten_first() {
        let cache = StateCache::<LockDocument>::new(2);
        cache.remember("b", "k1", &doc("a"), &Version("1".into()));
        cache.remember("b", "k2", &doc("a"), &Version("2".into()));
        assert!(
            cache.get("b", "k1").is_some(),
            "touching k1 makes k2 the oldest"
        );
        cache.remember("b", "k3", &doc("a"), &Version("3".into()));
        assert!(cache.get("b", "k2").is_none());
        assert!(cache.get("b", "k1").is_some());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn buckets_are_separate_and_forget_drops_an_entry() {
        let cache = StateCache::<LockDocument>::new(8);
        cache.remember("b1", "k", &doc("a"), &Version("1".into()));
        assert!(cache.get("b2", "k").is_none());
        cache.forget("b1", "k");
        assert!(cache.get("b1", "k").is_none());
    }

    #[test]
    fn capacity_zero_turns_the_cache_off() {
        let cache = StateCache::<LockDocument>::new(0);
        cache.remember("b", "k", &doc("a"), &Version("1".into()));
        assert!(cache.get("b", "k").is_none());
        assert!(cache.is_empty());
    }
}
