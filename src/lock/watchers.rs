//! The lock watchers: one task per watched lock per replica that reads it from the store, for
//! everyone in this process who waits on it or follows it. Names: a [`Watchers`] holds one
//! `LockWatcher` per watched lock; a blocked acquire takes a place in its line (a
//! [`Registration`]); a watch or a change stream follows it (a [`Follower`]). "Watch" alone is
//! the API's blocking query (`lock::watch`), and `watch::` the tokio channel.
//!
//! However many requests wait on a lock in this process (blocked acquires, and clients watching
//! it for a change), one task reads that lock from the store, with backoff and jitter, and
//! publishes what it saw. Blocked acquirers queue in arrival order; when the lock is seen free
//! for what one in line wants ([`LockKind::free_for`]: a mutex free, a permit left, a read-write
//! lock's mode), only the first such one is told to try (no thundering herd), and the next only
//! once that one has left the queue: without the lock, or with it when the lock may still have
//! room (a semaphore's permit left for the next). Every waiter of a mutex or a semaphore wants
//! the same, so that is the first in line; a read-write lock's writer may be told before a
//! reader ahead of it, which a writer recorded in the document holds back (writers first).
//!
//! Generic over the kind of lock ([`LockKind`]); the engine has one `Watchers` per kind, which
//! share one bound on the locks watched at once.
//!
//! The store reads are what a replica's watchers cost, so they are bounded: a lock with blocked
//! acquirers is read soon and then backs off (it may be handed on at any moment), a lock followed
//! by watch clients alone is read at the slow rate from the first, and at most
//! `max_watched_locks` locks are watched at once ([`TooManyWatched`] past it; a lock already
//! watched may always be joined). Watchers read through the store's background handle, behind
//! lock decisions.
//!
//! The watcher also learns without reading: a write by this process publishes its result
//! ([`Watchers::observed`]), so a release hands the lock to a local waiter at once and a watch
//! sees the change with no store read; and a peer replica's hint ([`Watchers::poke`]) makes it
//! read now instead of at its next poll. With peers configured, every lock this process frees
//! is announced to them ([`PeerNotifier`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{watch, Notify};

use super::cache::StateCache;
use super::document::LockDocument;
use super::kind::LockKind;
use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::store::Store;

type Slot = (String, String);

/// Locks one replica watches at most at once, by default. Each costs a watcher task that reads
/// the store every 0.5 to 1 s (jittered) for as long as anyone follows it, so this many is at
/// most about 1,000 reads a second (some 700 on average): a fifth of the 5,500 GETs a second one
/// S3 prefix serves, and inside the background share of the S3 call slots. Lines of waiters form
/// on a few hot locks, and each of those shares one watcher, so honest use stays far below it.
pub const DEFAULT_MAX_WATCHED_LOCKS: usize = 512;

/// Told when this process frees a lock, so that other replicas' waiters look at once. What it
/// sends is a hint to read the store, never the lock's state.
pub trait PeerNotifier: Send + Sync + std::fmt::Debug {
    fn lock_freed(&self, bucket: &str, object: &str);
}

/// What a lock's watcher last knew of it: `Ok(None)` for a lock that does not exist (or was
/// never read yet), `Ok(Some(doc))` for a lock document, and `Err` for a stored object that is
/// not a lock document. Unreadable is a state of its own, never "no lock": a watch client must
/// not be told that a lock nobody can judge is free.
pub type Seen<K = LockDocument> = Result<Option<K>, Unreadable>;

/// This replica already watches as many locks as it may, and the lock asked for is not one of
/// them: nobody may start following it here until another lock's followers have all left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyWatched {
    pub max: usize,
}

/// The stored object is not a lock document: why it does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable(pub String);

/// The waiters and watch clients of one kind of lock (`K`, the mutex's by default).
#[derive(Debug)]
pub struct Watchers<K: LockKind = LockDocument> {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// The engine's cache of lock states: a watcher's read goes there too, so that the waiter
    /// it wakes writes from it (`If-Match`) without reading the lock again.
    cache: Arc<StateCache<K>>,
    first_poll: Duration,
    max_poll: Duration,
    /// The most locks watched at once: every one costs a task reading the store for as long as
    /// it is followed, so without a bound one client following many keys sets the store's read
    /// rate (see [`DEFAULT_MAX_WATCHED_LOCKS`]).
    max_watched: usize,
    /// The locks watched now by this process, of every kind: shared by the engine's `Watchers`
    /// of each kind, so that the bound is on them all. Moved only under `keys`' mutex.
    watched: Arc<AtomicUsize>,
    /// The locks somebody waits on or watches in this process right now. An entry goes when its
    /// last user leaves (counted under this mutex, so joins and leaves never race).
    keys: Mutex<HashMap<Slot, Arc<LockWatcher<K>>>>,
    /// Set once at start when the replica has peers.
    peers: OnceLock<Arc<dyn PeerNotifier>>,
    next_id: AtomicU64,
}

/// A blocked acquirer in line: its registration id, its turn, and what it waits for.
type InLine<K> = (u64, Arc<Turn>, <K as LockKind>::Want);

/// A blocked acquirer's turn to try.
#[derive(Debug, Default)]
struct Turn {
    /// `notify_one` keeps the signal if the waiter is not listening yet, so it is never lost.
    signal: Notify,
    /// Set once a turn was handed to it: leaving without the lock, it has the watcher hand the
    /// turn on (the first in line is always treated so).
    handed: AtomicBool,
}

impl Turn {
    fn hand(&self) {
        self.handed.store(true, Ordering::SeqCst);
        self.signal.notify_one();
    }
}

#[derive(Debug)]
struct LockWatcher<K: LockKind> {
    /// Blocked acquirers in arrival order.
    queue: Mutex<VecDeque<InLine<K>>>,
    /// Waiters and watch clients now; guarded by the map's mutex.
    users: Mutex<usize>,
    /// The latest state known, for watch clients.
    seen: watch::Sender<Seen<K>>,
    /// A reason to read the store now (a peer's hint, a waiter that gave up its turn).
    poke: Notify,
    /// Set when the last user left: the watcher task ends.
    closed: AtomicBool,
    /// States this process wrote and published ([`Watchers::observed`]); a store read begun
    /// before one of them may answer with an older state, and is not published.
    written: AtomicU64,
    /// Set once `seen` holds a state read or written (until then it is only a placeholder).
    known: AtomicBool,
    /// The earliest the store's time may have been when the latest read published as current
    /// began (set after `seen`, so a reader that finds it moved finds that read's state there).
    /// What `seen` holds is known to have held from then on: a change stream says a lease ran
    /// out only once a read begun after its end still found it (another replica may have
    /// renewed it just before the end, which this one has not read yet).
    read_at: watch::Sender<Option<DateTime<Utc>>>,
}

impl<K: LockKind> LockWatcher<K> {
    /// Tells the first waiter in line for whom `doc` (the lock as now known; `None`: no lock)
    /// is free at `now` that it looks free. Whether one was told. Every waiter of a mutex wants
    /// the same, so that is the first in line; a read-write lock's writer that waits behind a
    /// reader in line (held back by a writer recorded in the document, maybe this one) is let
    /// past it.
    fn wake_first_free(&self, doc: Option<&K>, now: chrono::DateTime<chrono::Utc>) -> bool {
        let queue = self.queue.lock().expect("queue mutex poisoned");
        let first = queue
            .iter()
            .find(|(_, _, want)| doc.is_none_or(|d| d.free_for(want, now)));
        match first {
            Some((_, turn, _)) => {
                turn.hand();
                true
            }
            None => false,
        }
    }

    /// Whether `doc` is free at `now` for someone in line (`None`: nobody is in line).
    fn free_for_someone(&self, doc: &K, now: chrono::DateTime<chrono::Utc>) -> Option<bool> {
        let queue = self.queue.lock().expect("queue mutex poisoned");
        (!queue.is_empty()).then(|| queue.iter().any(|(_, _, want)| doc.free_for(want, now)))
    }

    /// Whether the latest state published says the lock is free for `want` at `now` (for a
    /// mutex: nobody holds it, and no lock-delay after an unreleased lease runs). Read under the
    /// channel's lock, which the watcher publishes under before it looks at the queue: a
    /// waiter queued before this check is either told it looks free here, or found by the
    /// watcher.
    fn last_seen_free(&self, want: &K::Want, now: chrono::DateTime<chrono::Utc>) -> bool {
        let seen = self.seen.borrow();
        // An unreadable lock is worth a try too: the waiter's acquire, from a fresh read,
        // answers that it is unreadable rather than waiting out its wait.
        self.known.load(Ordering::SeqCst)
            && seen
                .as_ref()
                .map_or(true, |s| s.as_ref().is_none_or(|d| d.free_for(want, now)))
    }

    fn has_waiters(&self) -> bool {
        !self.queue.lock().expect("queue mutex poisoned").is_empty()
    }

    /// A state this process wrote: newer than any answer to a read still on its way, but not
    /// always newer than what is published. The answer to the write may come late (a slow
    /// network), after this process's watcher read what another replica wrote over it: then
    /// the write is old news, and publishing it would take watch clients and change streams
    /// back to a state the lock has left.
    fn publish_written(&self, doc: K) {
        self.seen.send_if_modified(|current| {
            self.written.fetch_add(1, Ordering::SeqCst);
            if let Ok(Some(shown)) = current {
                if shown.supersedes(&doc) {
                    return false;
                }
            }
            // The first state known is news even when it equals the placeholder.
            let first = !self.known.swap(true, Ordering::SeqCst);
            let changed = first || current.as_ref().ok() != Some(&Some(doc.clone()));
            *current = Ok(Some(doc));
            changed
        });
    }

    /// What a read begun when `written` was `written_before` found. Not published (false) if
    /// this process wrote since: the read may have been served before that write. Checked under
    /// the channel's lock, which [`LockWatcher::publish_written`] also takes.
    /// A read published records when it `started`: its state is known to hold from then on.
    fn publish_read(&self, doc: Seen<K>, written_before: u64, started: DateTime<Utc>) -> bool {
        let mut current_read = true;
        self.seen.send_if_modified(|current| {
            if self.written.load(Ordering::SeqCst) != written_before {
                current_read = false;
                return false;
            }
            let first = !self.known.swap(true, Ordering::SeqCst);
            let changed = first || *current != doc;
            *current = doc;
            changed
        });
        if current_read {
            // After `seen`: a follower that finds `read_at` moved finds this read's state.
            self.read_at.send_replace(Some(started));
        }
        current_read
    }
}

/// A blocked acquirer's place in line; leaving the line without the lock (dropping this) passes
/// the turn on.
pub struct Registration<'a, K: LockKind = LockDocument> {
    watchers: &'a Watchers<K>,
    slot: Slot,
    watch: Arc<LockWatcher<K>>,
    id: u64,
    turn: Arc<Turn>,
    granted: bool,
}

impl<K: LockKind> Registration<'_, K> {
    /// Completes when it is this waiter's turn to try (the lock looked free).
    pub async fn turn(&self) {
        self.turn.signal.notified().await
    }

    /// This waiter got the lock: it leaves the line, and the next one's turn comes when the lock
    /// is free for it (at once if the state this process just wrote leaves room for it, as a
    /// semaphore's does while permits remain; a mutex is held again, and is not).
    pub fn granted(mut self) {
        self.granted = true;
    }
}

impl<K: LockKind> Drop for Registration<'_, K> {
    fn drop(&mut self) {
        let was_first = {
            let mut queue = self.watch.queue.lock().expect("queue mutex poisoned");
            let was_first = queue.front().is_some_and(|(id, _, _)| *id == self.id);
            queue.retain(|(id, _, _)| *id != self.id);
            was_first
        };
        let handed = was_first || self.turn.handed.load(Ordering::SeqCst);
        if handed && !self.granted {
            // It may have been handed a turn it did not use: let the watcher look again and
            // hand it on.
            self.watch.poke.notify_one();
        } else if handed && self.watch.known.load(Ordering::SeqCst) {
            // What this process just wrote (its grant) may leave room for the next.
            let now = self.watchers.clock.now().earliest;
            let seen = self.watch.seen.borrow().clone();
            if let Ok(Some(doc)) = seen {
                let _ = self.watch.wake_first_free(Some(&doc), now);
            }
        }
        self.watchers.leave(&self.slot);
    }
}

/// A watch client's interest in a lock; dropping it leaves.
pub struct Follower<'a, K: LockKind = LockDocument> {
    watchers: &'a Watchers<K>,
    slot: Slot,
    watch: Arc<LockWatcher<K>>,
    pub seen: watch::Receiver<Seen<K>>,
    /// When the latest read of the lock the watcher published began, on the store's clock at
    /// its earliest: what `seen` holds is known to have held from then on.
    pub read_at: watch::Receiver<Option<DateTime<Utc>>>,
}

impl<K: LockKind> Follower<'_, K> {
    /// The state the lock's watcher knows now, if it has read or written one yet (marked as
    /// seen by this client).
    pub fn known(&mut self) -> Option<Seen<K>> {
        let seen = self.seen.borrow_and_update().clone();
        self.watch.known.load(Ordering::SeqCst).then_some(seen)
    }

    /// The first state the lock's watcher knows: at once if it has one, else its first read's
    /// (or this process's first write's). `None` if the watcher ended first.
    pub async fn first_known(&mut self) -> Option<Seen<K>> {
        loop {
            if let Some(seen) = self.known() {
                return Some(seen);
            }
            self.seen.changed().await.ok()?;
        }
    }
}

impl<K: LockKind> Drop for Follower<'_, K> {
    fn drop(&mut self) {
        self.watchers.leave(&self.slot);
    }
}

impl<K: LockKind> Watchers<K> {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        cache: Arc<StateCache<K>>,
        first_poll: Duration,
        max_poll: Duration,
        max_watched: usize,
    ) -> Self {
        Self {
            store,
            clock,
            cache,
            first_poll,
            max_poll,
            max_watched,
            watched: Arc::default(),
            keys: Mutex::default(),
            peers: OnceLock::new(),
            next_id: AtomicU64::new(0),
        }
    }

    /// Watchers of another kind of lock (over `cache`) with the same store, clock, polls and
    /// bound as these, counting the locks they watch against the same bound.
    pub fn another_kind<J: LockKind>(&self, cache: Arc<StateCache<J>>) -> Watchers<J> {
        Watchers {
            watched: self.watched.clone(),
            ..Watchers::new(
                self.store.clone(),
                self.clock.clone(),
                cache,
                self.first_poll,
                self.max_poll,
                self.max_watched,
            )
        }
    }

    pub fn set_peers(&self, peers: Arc<dyn PeerNotifier>) {
        let _ = self.peers.set(peers);
    }

    /// Joins the line of blocked acquirers of a lock, waiting for it to be free for `want`
    /// (starting its watcher if it has none, and the replica may watch one more lock).
    pub fn register(
        &self,
        bucket: &str,
        object: &str,
        want: K::Want,
    ) -> Result<Registration<'_, K>, TooManyWatched> {
        let slot = (bucket.to_owned(), object.to_owned());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let turn = Arc::new(Turn::default());
        let looks_free =
            |watch: &LockWatcher<K>| watch.last_seen_free(&want, self.clock.now().earliest);
        let watch = self.join(&slot, Some((id, turn.clone(), want.clone())))?;
        // The watcher may have seen the lock free before we queued: have it look again. Not
        // when the latest it knows is held (or it knows nothing yet): its next read, which
        // publishes before it looks at the queue, will find us queued. Poking then would cost
        // a read per newcomer and start its backoff over.
        if looks_free(&watch) {
            watch.poke.notify_one();
        }
        Ok(Registration {
            watchers: self,
            slot,
            watch,
            id,
            turn,
            granted: false,
        })
    }

    /// Follows a lock's state as this process's watcher sees it (starting one if the replica
    /// may watch one more lock).
    pub fn follow(&self, bucket: &str, object: &str) -> Result<Follower<'_, K>, TooManyWatched> {
        let slot = (bucket.to_owned(), object.to_owned());
        let watch = self.join(&slot, None)?;
        Ok(Follower {
            watchers: self,
            slot,
            seen: watch.seen.subscribe(),
            read_at: watch.read_at.subscribe(),
            watch,
        })
    }

    /// This process wrote `doc` as the lock's state: watch clients see it, and if it frees the
    /// lock for the first local waiter, that one is told at once (no read: the state is known).
    pub fn observed(&self, bucket: &str, object: &str, doc: &K) {
        let slot = (bucket.to_owned(), object.to_owned());
        let Some(watch) = self.keys().get(&slot).cloned() else {
            return;
        };
        watch.publish_written(doc.clone());
        let _ = watch.wake_first_free(Some(doc), self.clock.now().earliest);
    }

    /// This process freed the lock: the peers are told (its own waiters learn it from
    /// [`Watchers::observed`], as of every write).
    pub fn freed(&self, bucket: &str, object: &str) {
        if let Some(peers) = self.peers.get() {
            peers.lock_freed(bucket, object);
        }
    }

    /// A reason to read the lock now (a peer's hint). Nothing happens if nobody here waits.
    pub fn poke(&self, bucket: &str, object: &str) {
        if let Some(watch) = self.keys().get(&(bucket.to_owned(), object.to_owned())) {
            watch.poke.notify_one();
        }
    }

    /// How many blocked acquirers wait in line for this lock in this process now.
    pub fn in_line(&self, bucket: &str, object: &str) -> usize {
        let watch = self
            .keys()
            .get(&(bucket.to_owned(), object.to_owned()))
            .cloned();
        watch.map_or(0, |w| w.queue.lock().expect("queue mutex poisoned").len())
    }

    /// How many locks have a waiter or a watch client here (and so a watcher task).
    pub fn waited_locks(&self) -> usize {
        self.keys().len()
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<Slot, Arc<LockWatcher<K>>>> {
        self.keys.lock().expect("waiters mutex poisoned")
    }

    /// Joins a lock's followers, as a blocked acquirer when `waiter` is its place in line.
    /// A lock already watched may always be joined; a new one only below the cap. The waiter is
    /// in line before a new watcher starts, so that the watcher's first pause is a waiter's.
    fn join(
        &self,
        slot: &Slot,
        waiter: Option<InLine<K>>,
    ) -> Result<Arc<LockWatcher<K>>, TooManyWatched> {
        let mut keys = self.keys();
        if let Some(watch) = keys.get(slot) {
            *watch.users.lock().expect("users mutex poisoned") += 1;
            if let Some(waiter) = waiter {
                watch
                    .queue
                    .lock()
                    .expect("queue mutex poisoned")
                    .push_back(waiter);
            }
            return Ok(watch.clone());
        }
        let below_cap = |n: usize| (n < self.max_watched).then_some(n + 1);
        if self
            .watched
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, below_cap)
            .is_err()
        {
            return Err(TooManyWatched {
                max: self.max_watched,
            });
        }
        let watch = Arc::new(LockWatcher {
            queue: Mutex::new(waiter.into_iter().collect()),
            users: Mutex::new(1),
            seen: watch::Sender::new(Ok(None)),
            poke: Notify::new(),
            closed: AtomicBool::new(false),
            written: AtomicU64::new(0),
            known: AtomicBool::new(false),
            read_at: watch::Sender::new(None),
        });
        keys.insert(slot.clone(), watch.clone());
        drop(keys);
        self.spawn_watcher(slot.clone(), watch.clone());
        Ok(watch)
    }

    fn leave(&self, slot: &Slot) {
        let mut keys = self.keys();
        let Some(watch) = keys.get(slot) else {
            return;
        };
        let mut users = watch.users.lock().expect("users mutex poisoned");
        *users -= 1;
        if *users == 0 {
            drop(users);
            let watch = keys.remove(slot).expect("present above");
            self.watched.fetch_sub(1, Ordering::SeqCst);
            watch.closed.store(true, Ordering::SeqCst);
            watch.poke.notify_one();
        }
    }

    fn spawn_watcher(&self, slot: Slot, watch: Arc<LockWatcher<K>>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // shutting down
        };
        let (store, clock, cache) = (self.store.clone(), self.clock.clone(), self.cache.clone());
        let (first_poll, max_poll) = (self.first_poll, self.max_poll);
        runtime.spawn(async move {
            let (bucket, object) = slot;
            // Jittered, so that watchers on many replicas do not poll in step.
            let mut poll = Backoff::exponential(first_poll, 2, max_poll)
                .with_jitter(StdRng::from_rng(&mut rand::rng()));
            // A lock followed by watch clients alone is read at the slow rate from the first:
            // nobody is in line to be handed it quickly, and a client that watches many keys
            // would otherwise set off a burst of quick reads on each.
            let mut slow =
                Backoff::constant(max_poll).with_jitter(StdRng::from_rng(&mut rand::rng()));
            while !watch.closed.load(Ordering::SeqCst) {
                // This pause is the schedule's, unless something below makes it shorter.
                let mut cap = max_poll;
                let written_before = watch.written.load(Ordering::SeqCst);
                let started = clock.now().earliest;
                match store.get(&bucket, &object).await {
                    Ok(found) => {
                        let parsed = found.map(|f| {
                            K::from_bytes(&f.body)
                                .map(|d| (d, f.version))
                                .map_err(Unreadable)
                        });
                        let seen = match &parsed {
                            None => Ok(None),
                            Some(Ok((d, _))) => Ok(Some(d.clone())),
                            Some(Err(unreadable)) => Err(unreadable.clone()),
                        };
                        let read = parsed.and_then(Result::ok);
                        let now = clock.now();
                        let doc = read.as_ref().map(|(d, _)| d);
                        // Free for someone in line (for nobody in line: free for anyone); else
                        // when whatever is in the way (a lease, a lock-delay, a waiting writer's
                        // entry) ends: nobody waiting here may take it before then.
                        let free = doc.is_none_or(|d| {
                            watch
                                .free_for_someone(d, now.earliest)
                                .unwrap_or_else(|| d.look_again_at(now.earliest).is_none())
                        });
                        let taken_until = doc
                            .filter(|_| !free)
                            .and_then(|d| d.look_again_at(now.earliest));
                        if !watch.publish_read(seen, written_before, started) {
                            // This process wrote the lock while the read was on its way: what
                            // it found may be older than what was published. Look again soon.
                            cap = first_poll;
                        } else if free {
                            // Free: the first waiter, if any, is told. Only then is a quick look
                            // again worth it (it may lose the lock to another acquirer); watch
                            // clients alone wait for a change with the usual backoff.
                            // The cache learns what was read first, so that the waiter writes
                            // its grant from it (`If-Match`) without reading the lock again.
                            // Only for a waiter: locks followed by watch clients alone would
                            // push the working locks out of it.
                            if watch.has_waiters() {
                                match &read {
                                    Some((d, version)) => {
                                        cache.remember_unless_older(&bucket, &object, d, version)
                                    }
                                    None => cache.forget(&bucket, &object),
                                }
                            }
                            if watch.wake_first_free(doc, now.earliest) {
                                poll.reset();
                            }
                        } else if let Some(end) = taken_until {
                            // Look again when what is in the way ends, if that comes before
                            // the poll.
                            cap = (end - now.earliest).to_std().unwrap_or_default();
                        }
                    }
                    Err(e) => tracing::debug!(%object, error = %e, "a lock watcher's read failed"),
                }
                // Never below the first poll: near a lease's end, clock samples that step back
                // could otherwise make a watcher re-read at once, round trip after round trip.
                let schedule = if watch.has_waiters() {
                    &mut poll
                } else {
                    &mut slow
                };
                let pause = schedule.next_pause_at_most(cap).max(first_poll);
                tokio::select! {
                    _ = watch.poke.notified() => poll.reset(),
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::store::memory::MemoryStore;

    fn waiters() -> Watchers<LockDocument> {
        Watchers::new(
            Arc::new(MemoryStore::new()),
            Arc::new(SystemClock),
            Arc::new(StateCache::new(10)),
            Duration::from_millis(25),
            Duration::from_secs(1),
            3,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_read_of_a_lock_that_does_not_exist_is_news_to_watch_clients() {
        // Its state, "no lock", equals the channel's placeholder: it must be announced anyway.
        let waiters = waiters();
        let mut watching = waiters.follow("b", "absent").unwrap();
        let first = tokio::time::timeout(Duration::from_millis(100), watching.first_known()).await;
        assert_eq!(first, Ok(Some(Ok(None))));
    }

    #[tokio::test]
    async fn past_the_cap_a_new_lock_is_refused_while_a_watched_one_is_joined() {
        let waiters = waiters(); // at most 3 locks
        let held: Vec<_> = (0..3)
            .map(|i| waiters.follow("b", &format!("k{i}")).unwrap())
            .collect();
        assert_eq!(
            waiters.follow("b", "k3").err(),
            Some(TooManyWatched { max: 3 })
        );
        assert!(waiters.register("b", "k3", ()).is_err());
        let joined = waiters
            .register("b", "k0", ())
            .expect("k0 is watched already");
        let also = waiters.follow("b", "k1").expect("k1 is watched already");
        assert_eq!(waiters.waited_locks(), 3);
        drop((joined, also));
        drop(held);
        assert!(
            waiters.follow("b", "k3").is_ok(),
            "the cap counts locks watched now"
        );
    }

    #[test]
    fn two_waiters_of_a_one_off_key_leaving_at_once_leave_no_entry_behind() {
        let waiters = Arc::new(waiters());
        let both_registered = Arc::new(std::sync::Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (waiters, both_registered) = (waiters.clone(), both_registered.clone());
                std::thread::spawn(move || {
                    // Every key is used by these two waiters once and never again, as with
                    // one-off keys: nothing later would clean up an entry they left behind.
                    for i in 0..20_000 {
                        let r = waiters.register("b", &format!("once-{i}"), ()).unwrap();
                        both_registered.wait();
                        drop(r);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(waiters.waited_locks(), 0);
    }
}
