//! The lock protocol. Every decision is one read and one conditional write against the store:
//! the write only lands if the object is still what was read (`If-Match`) or still absent
//! (`If-None-Match: *`), so a check and its write are one atomic step and two deciders can never
//! both win. Knows nothing of HTTP or of S3; time comes from an injected [`Clock`].
//!
//! Where each part lives:
//! - [`rules`]: what acquire, renew, release and break decide from a document and a time (pure).
//! - [`kind`]: what the decision loop needs of a stored document, whatever kind of lock it is;
//!   [`shared`] and [`shared_rules`]: the semaphore's and read-write lock's one document and
//!   its rules (pure).
//! - `decide`: one read (or the [`cache`]'s hint), one conditional write, doubt settled by
//!   reading back. So a warm acquire, renew or release is one store round trip.
//! - `orphan`: grants whose caller never learned of them, watched and freed if they land.
//! - `list`: one page of locks (or of semaphores, or of read-write locks) under a prefix, read a
//!   few at a time, and its cursor.
//! - `wait`: an acquire waiting for a held lock; [`watchers`] wakes it on a local release.
//! - [`events`]: a lock's change stream (one loop for every kind), served by its watcher; what
//!   each change of a mutex is called; [`shared_events`]: the same names for a semaphore's or
//!   read-write lock's changes.
//! - [`election`]: elections as locks in a namespace of their own.
//! - [`document`]: the stored JSON; [`history`]: the write history every document carries;
//!   [`key`]: keys and owners parsed at the edge; [`terms`]: a lease's value and lock-delay
//!   checked at the edge; [`error`].
//! - `ops`: the [`Engine`]'s operations on a mutex (acquire, renew, release, break, status);
//!   `shared_ops`: the same on semaphores and read-write locks; `watch`: the blocking query,
//!   for every kind; `input`: requests checked against the limits (and each kind's keys given
//!   their own namespace); `views`: what is answered.
//! - this file: the [`Engine`] itself, its configuration, readiness and drain.

pub mod cache;
mod decide;
pub mod document;
pub mod election;
pub mod error;
pub mod events;
pub mod history;
mod input;
pub mod key;
pub mod kind;
mod list;
mod ops;
mod orphan;
pub mod rules;
pub mod shared;
pub mod shared_events;
mod shared_ops;
pub mod shared_rules;
pub mod terms;
mod views;
mod wait;
mod watch;
pub mod watchers;

use std::collections::BTreeSet;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use crate::clock::{Clock, TimeWindow};
use crate::metrics::Metrics;
use crate::store::health::StoreHealth;
use crate::store::{Store, StoreError};
pub use crate::wire::{LockView, Mode, SharedKind, SharedView};
use cache::StateCache;
pub use document::{HolderToken, LockDocument};
pub use election::{CampaignRequest, ElectionEvent, ElectionEvents};
pub use error::LockError;
pub use events::{EventKind, LockEvent, LockEvents};
use input::Target;
pub use input::{AcquireRequest, RenewRequest, SharedAcquireRequest};
pub use key::LockKey;
pub use list::{LockPage, Page, SharedPage, DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT};
use shared::SharedDocument;
pub use shared_events::{SharedEvent, SharedEvents};
pub use wait::{FIRST_POLL, MAX_POLL};
use watchers::Watchers;
pub use watchers::DEFAULT_MAX_WATCHED_LOCKS;

/// The longest a readiness probe waits for the store.
const READY_PROBE_TIMEOUT: StdDuration = StdDuration::from_secs(2);
/// How long a readiness probe's outcome answers every readiness check after it: however often
/// `/readyz` is asked, the store is probed at most this often.
const READY_PROBE_EVERY: StdDuration = StdDuration::from_secs(1);

/// Limits and names the engine enforces. Built and validated by `config`.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub default_bucket: String,
    /// Buckets a request may name; always contains `default_bucket`.
    pub allowed_buckets: BTreeSet<String>,
    /// Prepended to every key to form the object key, e.g. `locks/`.
    pub prefix: String,
    pub default_ttl: u64,
    pub max_ttl: u64,
    /// The longest lock-delay a grant may ask for, in seconds (see `LockDocument::lock_delay`).
    pub max_lock_delay: u64,
    pub max_wait: StdDuration,
    /// A blocked waiter's first and longest sleep between two reads of the store
    /// ([`FIRST_POLL`] and [`MAX_POLL`], unless a test needs waiters that only wake when told).
    pub first_poll: StdDuration,
    pub max_poll: StdDuration,
    /// Locks this replica watches at most at once (each has a watcher task reading the store);
    /// past it, a watch or a wait on a lock that has no watcher yet is refused.
    pub max_watched_locks: usize,
}

/// Why the engine should not be sent traffic.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("the start-up store check has not passed")]
    StoreCheckPending,
    /// The store did not answer; the cause may name internal addresses, so it is for the log.
    #[error("the lock store is not answering: {0}")]
    StoreDown(String),
}

#[derive(Debug)]
pub struct Engine {
    /// The store for lock decisions and for answering a client now.
    store: Arc<dyn Store>,
    /// The same store for work nobody is waiting on this moment (the lock watchers' polls,
    /// orphan watches, lists), whose calls queue behind decisions (see [`Store::background`]).
    background: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    /// Shared with orphan clean-up tasks, which wake waiters when they free a lock.
    watchers: Arc<Watchers>,
    /// The last known state of each lock this process touched: a hint that lets a decision
    /// skip its read, never a source of truth.
    ///
    /// Shared with the lock watchers, which put in what they read when they hand a free lock
    /// to a waiter.
    cache: Arc<StateCache>,
    /// The same two for semaphores and read-write locks (one document kind for both); their
    /// watchers count against the same bound as the mutexes'.
    shared_watchers: Arc<Watchers<SharedDocument>>,
    shared_cache: Arc<StateCache<SharedDocument>>,
    metrics: Metrics,
    /// Fed by every store call the engine makes, read by readiness.
    health: StoreHealth,
    /// Orphan clean-up tasks running now (bounded by `MAX_ORPHAN_WATCHERS`).
    orphan_watchers: Arc<AtomicUsize>,
    /// The last readiness probe: when it ended and how. Held across the probe, so that one
    /// probe is in flight at a time and the checks that arrive meanwhile wait for it (at most
    /// [`READY_PROBE_TIMEOUT`]) and share its outcome.
    last_probe: tokio::sync::Mutex<Option<(tokio::time::Instant, Result<(), String>)>>,
    /// Set once this replica is shutting down: from then on it takes no new acquire, and its
    /// blocked waiters and watches are answered at once rather than cut off when it exits. Never
    /// unset. Renews and releases are still served, so holders can let go.
    draining: tokio::sync::watch::Sender<bool>,
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, config: EngineConfig) -> Self {
        let cache = Arc::new(StateCache::new(cache::DEFAULT_CAPACITY));
        let background = store.background().unwrap_or_else(|| store.clone());
        let watchers = Watchers::new(
            background.clone(),
            clock.clone(),
            cache.clone(),
            config.first_poll,
            config.max_poll,
            config.max_watched_locks,
        );
        let shared_cache = Arc::new(StateCache::new(cache::DEFAULT_CAPACITY));
        let shared_watchers = Arc::new(watchers.another_kind(shared_cache.clone()));
        let watchers = Arc::new(watchers);
        Self {
            store,
            background,
            clock,
            config,
            watchers,
            cache,
            shared_watchers,
            shared_cache,
            metrics: Metrics::new(),
            health: StoreHealth::default(),
            orphan_watchers: Arc::default(),
            last_probe: tokio::sync::Mutex::default(),
            draining: tokio::sync::watch::channel(false).0,
        }
    }

    /// Starts this replica's drain: acquires are refused from now on (`ShuttingDown`), and
    /// acquires waiting for a lock and watches are answered now.
    pub fn begin_drain(&self) {
        if !self.draining.send_replace(true) {
            tracing::info!("draining: new acquires are refused, waiters and watches answered");
        }
    }

    /// Whether [`Engine::begin_drain`] has been called.
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Completes once the drain has begun (at once if it has).
    async fn drain_begun(&self) {
        let mut draining = self.draining.subscribe();
        // The sender lives as long as the engine, so this ends only when the drain begins.
        let _ = draining.wait_for(|d| *d).await;
    }

    /// Records into `metrics` (shared with the HTTP layer and the store) instead of a private set.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Notes that the start-up store check passed (or that the operator chose to skip it); until
    /// then the engine is never ready.
    pub fn mark_store_checked(&self) {
        self.health.mark_checked();
    }

    /// Ready to take traffic: the start-up store check passed and the store answered within the
    /// last few seconds, or answers a cheap probe (a read of an object that need not exist) now.
    pub async fn ready(&self) -> Result<(), NotReady> {
        if !self.health.checked() {
            return Err(NotReady::StoreCheckPending);
        }
        if self.health.fresh() {
            return Ok(());
        }
        let mut last = self.last_probe.lock().await;
        if let Some((at, outcome)) = &*last {
            // A probe's answer is shared for a second, unless a store call has failed since.
            if at.elapsed() < READY_PROBE_EVERY && !self.health.failed_since(at.into_std()) {
                return outcome.clone().map_err(NotReady::StoreDown);
            }
        }
        // Another call may have answered while this one waited for the probe.
        if self.health.fresh() {
            return Ok(());
        }
        let probe = format!("{}.s3lock-probe/readyz", self.config.prefix);
        let bucket = &self.config.default_bucket;
        let outcome =
            match tokio::time::timeout(READY_PROBE_TIMEOUT, self.get(bucket, &probe)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => {
                    self.health
                        .record::<()>(&Err(StoreError::Unavailable("probe timed out".into())));
                    Err("the store did not answer in time".into())
                }
            };
        *last = Some((tokio::time::Instant::now(), outcome.clone()));
        outcome.map_err(NotReady::StoreDown)
    }

    /// The same engine remembering at most `capacity` locks' states (0 turns the cache off, so
    /// that every decision reads first).
    pub fn with_cache_capacity(self, capacity: usize) -> Self {
        self.cache.set_capacity(capacity);
        self.shared_cache.set_capacity(capacity);
        self
    }

    /// How many locks' last known states this process remembers (of every kind).
    pub fn cached_locks(&self) -> usize {
        self.cache.len() + self.shared_cache.len()
    }

    /// The store's time as this engine knows it.
    pub fn now(&self) -> TimeWindow {
        self.clock.now()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Tells `peers` of every lock this engine frees (see [`watchers::PeerNotifier`]).
    pub fn with_peers(self, peers: Arc<dyn watchers::PeerNotifier>) -> Self {
        self.watchers.set_peers(peers.clone());
        self.shared_watchers.set_peers(peers);
        self
    }

    /// A peer freed the lock at `object` in `bucket`: waiters here look at the store now. Only
    /// a reason to read; the hint itself decides nothing.
    pub fn peer_hint(&self, bucket: &str, object: &str) {
        // Whatever kind of lock it is: only the waiters of that object have an entry.
        self.watchers.poke(bucket, object);
        self.shared_watchers.poke(bucket, object);
    }

    /// Locks that have a blocked waiter or a watch client in this process right now.
    pub fn waited_locks(&self) -> usize {
        self.watchers.waited_locks() + self.shared_watchers.waited_locks()
    }
}

/// A kind of lock the engine serves: where its state cache and its waiters are. The one
/// decision loop (`decide`), the waiting line (`wait`) and the orphan path (`orphan`) are
/// generic over it.
trait Served: kind::LockKind {
    fn cache(engine: &Engine) -> &Arc<StateCache<Self>>;
    fn watchers(engine: &Engine) -> &Arc<Watchers<Self>>;
}

impl Served for LockDocument {
    fn cache(engine: &Engine) -> &Arc<StateCache<Self>> {
        &engine.cache
    }

    fn watchers(engine: &Engine) -> &Arc<Watchers<Self>> {
        &engine.watchers
    }
}

impl Served for SharedDocument {
    fn cache(engine: &Engine) -> &Arc<StateCache<Self>> {
        &engine.shared_cache
    }

    fn watchers(engine: &Engine) -> &Arc<Watchers<Self>> {
        &engine.shared_watchers
    }
}

pub(crate) fn store_error(e: StoreError) -> LockError {
    match e {
        StoreError::Unavailable(why) | StoreError::NotSent(why) => LockError::StoreUnavailable(why),
        // A failed precondition on a read or a list is not something a store should say; treat
        // it as the store misbehaving rather than as an answer.
        StoreError::PreconditionFailed => {
            LockError::StoreUnavailable("unexpected precondition failure".into())
        }
        StoreError::NoSuchBucket(b) => {
            LockError::StoreRefused(format!("bucket {b} does not exist"))
        }
        StoreError::Other(why) => LockError::StoreRefused(why),
    }
}

#[cfg(test)]
mod tests;
