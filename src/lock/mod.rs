//! The lock protocol. Every decision is one read and one conditional write against the store:
//! the write only lands if the object is still what was read (`If-Match`) or still absent
//! (`If-None-Match: *`), so a check and its write are one atomic step and two deciders can never
//! both win. Knows nothing of HTTP or of S3; time comes from an injected [`Clock`].
//!
//! Where each part lives:
//! - [`rules`]: what acquire, renew, release and break decide from a document and a time (pure).
//! - `decide`: one read (or the [`cache`]'s hint), one conditional write, doubt settled by
//!   reading back. So a warm acquire, renew or release is one store round trip.
//! - `orphan`: grants whose caller never learned of them, watched and freed if they land.
//! - `list`: one page of locks under a prefix, read a few at a time, and its cursor.
//! - `wait`: an acquire waiting for a held lock; [`waiters`] wakes it on a local release.
//! - [`document`]: the stored JSON; [`key`]: keys and owners parsed at the edge; [`terms`]: a
//!   lease's value and lock-delay checked at the edge; [`error`].
//! - this file: the [`Engine`]'s public operations, input limits and the views it answers with.

pub mod cache;
mod decide;
pub mod document;
pub mod error;
pub mod key;
mod list;
mod orphan;
pub mod rules;
pub mod terms;
mod wait;
pub mod waiters;

use std::collections::BTreeSet;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Utc};

use crate::clock::{Clock, TimeWindow};
use crate::metrics::{self as m, Metrics};
use crate::store::health::StoreHealth;
use crate::store::{Store, StoreError};
pub use crate::wire::LockView;
use cache::StateCache;
use decide::Settled;
pub use document::{HolderToken, LockDocument};
pub use error::LockError;
pub use key::LockKey;
pub use list::{LockPage, DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT};
use rules::{Grant, LeaseTerms, Verdict};
pub use wait::{FIRST_POLL, MAX_POLL};
use waiters::Waiters;
pub use waiters::DEFAULT_MAX_WATCHED_LOCKS;

/// The longest a readiness probe waits for the store.
const READY_PROBE_TIMEOUT: StdDuration = StdDuration::from_secs(2);
/// How long a readiness probe's outcome answers every readiness check after it: however often
/// `/readyz` is asked, the store is probed at most this often.
const READY_PROBE_EVERY: StdDuration = StdDuration::from_secs(1);
/// How long a watch waits for the first read of the watcher it started, rather than reading the
/// lock itself too.
const FIRST_READ_WAIT: StdDuration = StdDuration::from_secs(1);

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

/// What a client asked for when acquiring; every field optional.
#[derive(Debug, Clone, Default)]
pub struct AcquireRequest {
    pub owner: Option<String>,
    /// The holder token, presented to refresh a lease this owner already holds. The owner name
    /// alone never refreshes: names are public (a 409 shows them), the token is the proof.
    pub token: Option<HolderToken>,
    pub ttl: Option<i64>,
    pub wait: Option<f64>,
    /// The value to publish with the lease: `Some(Null)` clears it, `None` keeps it (a new
    /// grant has none).
    pub value: Option<serde_json::Value>,
    /// Seconds nobody may take the lock after the lease, should it run out unreleased; `None`
    /// keeps what the lease has (a new grant has none).
    pub lock_delay: Option<i64>,
}

/// What a holder asks for when renewing; every field optional.
#[derive(Debug, Clone, Default)]
pub struct RenewRequest {
    pub ttl: Option<i64>,
    /// As [`AcquireRequest::value`].
    pub value: Option<serde_json::Value>,
    /// As [`AcquireRequest::lock_delay`].
    pub lock_delay: Option<i64>,
}

/// A renew that only restarts the lease, for this many seconds (the default when `None`).
impl From<Option<i64>> for RenewRequest {
    fn from(ttl: Option<i64>) -> Self {
        Self {
            ttl,
            ..Self::default()
        }
    }
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
    waiters: Arc<Waiters>,
    /// The last known state of each lock this process touched: a hint that lets a decision
    /// skip its read, never a source of truth.
    ///
    /// Shared with the lock watchers, which put in what they read when they hand a free lock
    /// to a waiter.
    cache: Arc<StateCache>,
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

/// Where one lock lives.
struct Target {
    bucket: String,
    key: LockKey,
    object: String,
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, config: EngineConfig) -> Self {
        let cache = Arc::new(StateCache::new(cache::DEFAULT_CAPACITY));
        let background = store.background().unwrap_or_else(|| store.clone());
        let waiters = Arc::new(Waiters::new(
            background.clone(),
            clock.clone(),
            cache.clone(),
            config.first_poll,
            config.max_poll,
            config.max_watched_locks,
        ));
        Self {
            store,
            background,
            clock,
            config,
            waiters,
            cache,
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
            if at.elapsed() < READY_PROBE_EVERY {
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
        self
    }

    /// How many locks' last known states this process remembers.
    pub fn cached_locks(&self) -> usize {
        self.cache.len()
    }

    /// The store's time as this engine knows it.
    pub fn now(&self) -> TimeWindow {
        self.clock.now()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Tells `peers` of every lock this engine frees (see [`waiters::PeerNotifier`]).
    pub fn with_peers(self, peers: Arc<dyn waiters::PeerNotifier>) -> Self {
        self.waiters.set_peers(peers);
        self
    }

    /// A peer freed the lock at `object` in `bucket`: waiters here look at the store now. Only
    /// a reason to read; the hint itself decides nothing.
    pub fn peer_hint(&self, bucket: &str, object: &str) {
        self.waiters.poke(bucket, object);
    }

    /// Locks that have a blocked waiter in this process right now.
    pub fn waited_locks(&self) -> usize {
        self.waiters.waited_locks()
    }

    /// Takes the lock for `owner` (a random one if none is given), or refreshes the lease if
    /// `owner` already holds it and presents its holder token. With `wait`, keeps trying until
    /// that many seconds have passed.
    #[tracing::instrument(skip(self, req), fields(owner = req.owner.as_deref()))]
    pub async fn acquire(
        &self,
        bucket: Option<&str>,
        key: &str,
        req: AcquireRequest,
    ) -> Result<LockView, LockError> {
        if self.is_draining() {
            return Err(LockError::ShuttingDown);
        }
        let target = self.target(bucket, key)?;
        let owner = match req.owner.as_deref() {
            Some(o) => key::parse_owner(o).map_err(|r| LockError::invalid("owner", r))?,
            None => uuid::Uuid::new_v4().simple().to_string(),
        };
        let terms = self.lease_terms(self.ttl(req.ttl)?, req.value, req.lock_delay)?;
        let wait = self.wait(req.wait)?;
        self.acquire_waiting(&target, &owner, req.token.as_ref(), &terms, wait)
            .await
    }

    async fn try_acquire(
        &self,
        target: &Target,
        owner: &str,
        presented: Option<&HolderToken>,
        terms: &LeaseTerms,
    ) -> Result<LockView, LockError> {
        // What the decisions were, for the metrics: a grant, even if refreshed after it landed.
        let mut grant = None;
        // The token this acquire may present: the caller's, then that of each grant it writes. A
        // grant that lands with its lease already used up (a slow write, a wide clock window) is
        // decided again, and this caller, for whom it was made, refreshes it rather than being
        // refused as if someone else held the lock. A token of a write that never landed matches
        // nothing stored, so carrying it forward gives no one anything.
        let mut mine = presented.cloned();
        // How long the lease this grant replaced was held, for the metrics (not a refresh's: a
        // grant whose lease a slow write used up is refreshed, and stays one grant).
        let mut ended = None;
        let decided = self
            .decide(target, |current, now| {
                let presented = mine.as_ref().map(HolderToken::expose);
                let (doc, kind) = rules::acquire(current, now, owner, presented, terms)?;
                if let Grant::NewHolder { .. } = kind {
                    ended = current.and_then(|d| d.held_for(now.latest));
                }
                grant = match (grant, kind) {
                    (Some(first @ Grant::NewHolder { .. }), Grant::Refresh) => Some(first),
                    _ => Some(kind),
                };
                mine.clone_from(&doc.token);
                Ok(Verdict::Write(doc))
            })
            .await?;
        match decided {
            Settled::Stored(doc, now) => {
                if let Some(Grant::NewHolder { takeover }) = grant {
                    self.metrics.count(m::GRANTS, &[]);
                    if takeover {
                        self.metrics.count(m::EXPIRY_TAKEOVERS, &[]);
                        self.metrics.hold_ended(ended);
                    }
                }
                Ok(self.view(target, &doc, now, true))
            }
            Settled::AsRead(..) => unreachable!("acquire always writes or refuses"),
        }
    }

    /// Extends the holder's lease by `ttl` seconds from now, setting the value and lock-delay
    /// the request names (a plain `Option<i64>` is a request with a ttl alone).
    #[tracing::instrument(skip(self, token, req))]
    pub async fn renew(
        &self,
        bucket: Option<&str>,
        key: &str,
        token: &str,
        req: impl Into<RenewRequest>,
    ) -> Result<LockView, LockError> {
        let result = self.try_renew(bucket, key, token, req.into()).await;
        match &result {
            Ok(_) => self.metrics.count(m::RENEWALS, &[]),
            Err(e) => {
                let reason = match e {
                    LockError::NotHolder(_) => "not_holder",
                    LockError::NotFound => "not_found",
                    LockError::InvalidInput { .. } | LockError::BucketNotAllowed(_) => "invalid",
                    LockError::StoreUnavailable(_) => "store_unavailable",
                    _ => "other",
                };
                self.metrics.count(m::RENEW_FAILURES, &[("reason", reason)]);
            }
        }
        result
    }

    async fn try_renew(
        &self,
        bucket: Option<&str>,
        key: &str,
        token: &str,
        req: RenewRequest,
    ) -> Result<LockView, LockError> {
        let target = self.target(bucket, key)?;
        let terms = self.lease_terms(self.ttl(req.ttl)?, req.value, req.lock_delay)?;
        let decided = self
            .decide(&target, |current, now| {
                rules::renew(current, now, token, &terms).map(Verdict::Write)
            })
            .await?;
        match decided {
            Settled::Stored(doc, now) => Ok(self.view(&target, &doc, now, true)),
            Settled::AsRead(..) => unreachable!("renew always writes or refuses"),
        }
    }

    /// Releases the lock held with `token`. Releasing again with the same token is a no-op.
    #[tracing::instrument(skip(self, token))]
    pub async fn release(
        &self,
        bucket: Option<&str>,
        key: &str,
        token: &str,
    ) -> Result<LockView, LockError> {
        let target = self.target(bucket, key)?;
        let mut ended = None;
        let decided = self
            .decide(&target, |current, now| {
                ended = current.and_then(|d| d.held_for(now.latest));
                rules::release(current, now, token)
            })
            .await?;
        match decided {
            Settled::Stored(doc, now) => {
                self.metrics.count(m::RELEASES, &[]);
                self.metrics.hold_ended(ended);
                self.waiters.freed(&target.bucket, &target.object);
                Ok(self.view(&target, &doc, now, false))
            }
            Settled::AsRead(doc, now) => Ok(self.view(&target, &doc, now, false)),
        }
    }

    /// Breaks a held lock on an admin's word, whoever holds it: the lock is left free, the old
    /// holder's token stops working (its renew and release are refused), and the fencing token
    /// grows (see [`LockDocument::broken`]). `by` names the admin, for the log. A lock nobody holds
    /// is left as it is and shown.
    #[tracing::instrument(skip(self))]
    pub async fn break_lock(
        &self,
        bucket: Option<&str>,
        key: &str,
        by: &str,
    ) -> Result<LockView, LockError> {
        let target = self.target(bucket, key)?;
        // A break decides from a fresh read, never from this process's memory of the lock: a
        // write from a memory far behind the lock fails, and its read-back cannot tell whether
        // it landed, which would leave the break unconfirmed rather than made (a break that
        // may have landed is never made again over whoever holds the lock now). Breaks are
        // rare; the read is cheap.
        self.cache.forget(&target.bucket, &target.object);
        // Who held it and their fencing token, as the decision that wrote last saw them.
        let mut broken_from: Option<(String, u64)> = None;
        let mut ended = None;
        let decided = self
            .decide(&target, |current, now| {
                ended = current.and_then(|d| d.held_for(now.latest));
                Ok(match rules::break_lock(current, now)? {
                    Some(broken) => {
                        broken_from = Some((broken.holder, broken.old_fencing_token));
                        Verdict::Write(broken.doc)
                    }
                    None => Verdict::Leave,
                })
            })
            .await?;
        match decided {
            Settled::Stored(doc, now) => {
                let (holder, old_fencing_token) = broken_from.unwrap_or_default();
                tracing::warn!(
                    bucket = %target.bucket,
                    key = %target.key,
                    broken_by = by,
                    holder = %holder,
                    old_fencing_token,
                    fencing_token = doc.fencing_token,
                    "lock broken by an admin"
                );
                self.metrics.count(m::BREAKS, &[]);
                self.metrics.hold_ended(ended);
                self.waiters.freed(&target.bucket, &target.object);
                Ok(self.view(&target, &doc, now, false))
            }
            Settled::AsRead(doc, now) => Ok(self.view(&target, &doc, now, false)),
        }
    }

    /// The stored view of a lock, `locked` as seen by `expect_owner`. A lock that never existed
    /// is shown unlocked. Never shows the token.
    #[tracing::instrument(skip(self))]
    pub async fn status(
        &self,
        bucket: Option<&str>,
        key: &str,
        expect_owner: Option<&str>,
    ) -> Result<LockView, LockError> {
        let target = self.target(bucket, key)?;
        if let Some(owner) = expect_owner {
            key::parse_owner(owner).map_err(|r| LockError::invalid("owner", r))?;
        }
        // Status always reads the store (it is what a client asks for), and refreshes the hint.
        let doc = self.read_fresh(&target).await?.state.map(|(doc, _)| doc);
        Ok(self.status_view(&target, doc, expect_owner))
    }

    /// A blocking query: the lock's view as soon as its `index` is no longer `index` (at once if
    /// it already differs), or when `wait` seconds have passed (default 30). Served by the lock's
    /// one watcher in this process, so watching clients add no store reads of their own.
    #[tracing::instrument(skip(self))]
    pub async fn watch(
        &self,
        bucket: Option<&str>,
        key: &str,
        expect_owner: Option<&str>,
        index: Option<u64>,
        wait: Option<f64>,
    ) -> Result<LockView, LockError> {
        let target = self.target(bucket, key)?;
        let default_wait = self.config.max_wait.as_secs_f64().min(30.0);
        let wait = self.wait(Some(wait.unwrap_or(default_wait)))?;
        let index = match index {
            Some(index) if !wait.is_zero() => index,
            _ => return self.status(bucket, key, expect_owner).await,
        };
        if let Some(owner) = expect_owner {
            key::parse_owner(owner).map_err(|r| LockError::invalid("owner", r))?;
        }
        let mut watching = self
            .waiters
            .watch(&target.bucket, &target.object)
            .map_err(|e| self.too_many_watched(e))?;
        // The state the lock's watcher knows, when it knows one at least as new as the client's:
        // clients following a lock add no reads of their own. A watcher this call just started
        // is reading the lock now: its answer serves here too, if it comes soon. Else (the
        // store is slow or down, or the watcher is behind the client) a read, as a status,
        // which also reports a store outage as one.
        let known = match watching.known() {
            Some(doc) => Some(doc),
            None => tokio::time::timeout(wait.min(FIRST_READ_WAIT), watching.first_known())
                .await
                .ok()
                .flatten(),
        };
        let current = match known {
            Some(Ok(doc)) if doc.as_ref().map_or(0, |d| d.revision) >= index => {
                self.status_view(&target, doc, expect_owner)
            }
            Some(Err(waiters::Unreadable(why))) => return Err(LockError::Unreadable(why)),
            _ => self.status(bucket, key, expect_owner).await?,
        };
        if current.index != index {
            return Ok(current);
        }
        let changed = tokio::time::timeout(wait, async {
            loop {
                let seen = tokio::select! {
                    seen = watching.seen.changed() => seen,
                    // A replica shutting down answers now, as if the wait had run out: the
                    // client asks again, of a replica that stays.
                    _ = self.drain_begun() => return None,
                };
                if seen.is_err() {
                    return None; // the watcher ended: answer with what is known
                }
                let seen = watching.seen.borrow_and_update().clone();
                // A document that turned unreadable is a change too: answered as the status is.
                if seen
                    .as_ref()
                    .map_or(true, |s| s.as_ref().map_or(0, |d| d.revision) != index)
                {
                    return Some(seen);
                }
            }
        })
        .await;
        match changed {
            Ok(Some(Ok(doc))) => Ok(self.status_view(&target, doc, expect_owner)),
            Ok(Some(Err(waiters::Unreadable(why)))) => Err(LockError::Unreadable(why)),
            // Timed out: the same index, judged at this moment (the lease may have run out).
            _ => match watching.seen.borrow().clone() {
                Ok(Some(doc)) if doc.revision == index => {
                    Ok(self.status_view(&target, Some(doc), expect_owner))
                }
                _ => Ok(current),
            },
        }
    }

    fn status_view(
        &self,
        target: &Target,
        doc: Option<LockDocument>,
        expect_owner: Option<&str>,
    ) -> LockView {
        let now = self.clock.now();
        let Some(doc) = doc else {
            return LockView {
                bucket: target.bucket.clone(),
                key: target.key.to_string(),
                owner: None,
                token: None,
                fencing_token: 0,
                expire: 0,
                lock_time: DateTime::<Utc>::UNIX_EPOCH,
                release_time: None,
                expires_at: None,
                ttl_remaining_ms: 0,
                locked: false,
                index: 0,
                value: serde_json::Value::Null,
                available_at: None,
            };
        };
        let mut view = self.view(target, &doc, now, false);
        view.locked = doc.is_locked_for(now.earliest, expect_owner);
        view
    }

    fn view(&self, target: &Target, doc: &LockDocument, now: TimeWindow, holder: bool) -> LockView {
        let held = doc.holder(now.earliest).is_some();
        let expires_at = doc.owner.as_ref().map(|_| doc.expires_at());
        let ttl_remaining_ms = match expires_at {
            Some(end) if held => (end - now.latest).num_milliseconds().max(0),
            _ => 0,
        };
        LockView {
            bucket: target.bucket.clone(),
            key: target.key.to_string(),
            owner: doc.owner.clone(),
            token: if holder { doc.token.clone() } else { None },
            fencing_token: doc.fencing_token,
            expire: doc.expire,
            lock_time: doc.lock_time,
            release_time: doc.release_time,
            expires_at,
            ttl_remaining_ms,
            locked: held,
            index: doc.revision,
            value: doc.value.clone(),
            available_at: doc.available_at().filter(|at| now.earliest < *at),
        }
    }

    fn target(&self, bucket: Option<&str>, key: &str) -> Result<Target, LockError> {
        let bucket = self.bucket(bucket)?;
        let key = LockKey::parse(key).map_err(|e| LockError::invalid("key", e.to_string()))?;
        let object = format!("{}{}", self.config.prefix, key);
        Ok(Target {
            bucket,
            key,
            object,
        })
    }

    fn bucket(&self, bucket: Option<&str>) -> Result<String, LockError> {
        match bucket {
            None => Ok(self.config.default_bucket.clone()),
            Some(b) if self.config.allowed_buckets.contains(b) => Ok(b.to_owned()),
            Some(b) => Err(LockError::BucketNotAllowed(b.to_owned())),
        }
    }

    fn ttl(&self, ttl: Option<i64>) -> Result<u64, LockError> {
        let max = self.config.max_ttl;
        match ttl {
            None => Ok(self.config.default_ttl),
            Some(t) if t >= 1 && t.unsigned_abs() <= max => Ok(t.unsigned_abs()),
            Some(t) => Err(LockError::invalid(
                "ttl",
                format!("{t} is out of range: a lease lasts 1 to {max} seconds"),
            )),
        }
    }

    fn wait(&self, wait: Option<f64>) -> Result<StdDuration, LockError> {
        let max = self.config.max_wait;
        match wait {
            None => Ok(StdDuration::ZERO),
            Some(w) if w.is_finite() && w >= 0.0 && w <= max.as_secs_f64() => {
                Ok(StdDuration::from_secs_f64(w))
            }
            Some(w) => Err(LockError::invalid(
                "wait",
                format!(
                    "{w} is out of range: wait 0 to {} seconds",
                    max.as_secs_f64()
                ),
            )),
        }
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
