//! The lock protocol. Every decision is one read and one conditional write against the store:
//! the write only lands if the object is still what was read (`If-Match`) or still absent
//! (`If-None-Match: *`), so a check and its write are one atomic step and two deciders can never
//! both win. Knows nothing of HTTP or of S3; time comes from an injected [`Clock`].
//!
//! The read is skipped when this process already knows the lock's state ([`cache`]): the write
//! then carries the cached version, and if that was stale the store refuses it and the engine
//! reads and decides again. So a warm acquire, renew or release is one store round trip.

pub mod cache;
pub mod document;
pub mod error;
pub mod key;
pub mod rules;
pub mod waiters;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::clock::{Clock, TimeWindow};
use crate::metrics::{self as m, Metrics};
use crate::store::health::StoreHealth;
use crate::store::{Store, StoreError, Version, Versioned};
use cache::StateCache;
pub use document::{HolderToken, LockDocument};
pub use error::LockError;
pub use key::LockKey;
use rules::{Grant, Verdict};
use waiters::Waiters;

/// How many times one decision is re-made after losing a write race before giving up with
/// [`LockError::Contended`]. Each loss means another writer made progress, so this bounds only
/// pathological churn.
const MAX_DECISIONS: usize = 16;
/// Read-backs tried after a write whose outcome is unknown.
const READ_BACK_ATTEMPTS: u32 = 3;
/// A blocked waiter polls the store no faster than this at first, then backs off to
/// [`MAX_POLL`], with full jitter so waiters on many replicas do not poll in step.
const FIRST_POLL: StdDuration = StdDuration::from_millis(25);
const MAX_POLL: StdDuration = StdDuration::from_secs(1);
/// How long a grant whose outcome was unknown is watched for landing late. A request delayed in
/// the network arrives within seconds in practice (and S3 refuses a signature older than 15
/// minutes); past this, a late grant stays held until its lease ends.
const ORPHAN_WATCH: StdDuration = StdDuration::from_secs(60);
const MAX_ORPHAN_WATCHERS: usize = 1024;
/// The longest a readiness probe waits for the store.
const READY_PROBE_TIMEOUT: StdDuration = StdDuration::from_secs(2);

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
    pub max_wait: StdDuration,
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
}

/// A lock as shown to clients. `token` is present only in answers to the holder (acquire, renew).
///
/// It derives `ToSchema` because it is the wire format itself: the OpenAPI document describes
/// this very struct rather than a copy that could drift from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LockView {
    pub bucket: String,
    pub key: String,
    /// The holder's name; `null` once released or broken.
    pub owner: Option<String>,
    /// The holder's secret for renew and release. Only in acquire and renew answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub token: Option<HolderToken>,
    /// Grows each time the lock passes to a new holder (and when it is broken).
    pub fencing_token: u64,
    /// The lease length in seconds.
    pub expire: u64,
    /// When the lease was granted or last renewed, on the store's clock.
    #[serde(with = "document::seed_time")]
    #[schema(value_type = String, format = DateTime)]
    pub lock_time: DateTime<Utc>,
    #[serde(with = "document::seed_time::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub release_time: Option<DateTime<Utc>>,
    /// When the current holder's lease ends; `null` when nobody holds the lock.
    #[serde(with = "document::seed_time::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<DateTime<Utc>>,
    /// What is left of the holder's lease, judged conservatively (on the latest possible store
    /// time), so a holder that trusts it never overstays.
    pub ttl_remaining_ms: i64,
    pub locked: bool,
}

impl LockView {
    /// The holder token, where this answer carries one (to the holder only).
    pub fn holder_token(&self) -> Option<&str> {
        self.token.as_ref().map(HolderToken::expose)
    }
}

#[derive(Debug)]
pub struct Engine {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    /// Shared with orphan clean-up tasks, which wake waiters when they free a lock.
    waiters: Arc<Waiters>,
    /// The last known state of each lock this process touched: a hint that lets a decision
    /// skip its read, never a source of truth.
    cache: StateCache,
    metrics: Metrics,
    /// Fed by every store call the engine makes, read by readiness.
    health: StoreHealth,
    /// Orphan clean-up tasks running now (bounded by `MAX_ORPHAN_WATCHERS`).
    orphan_watchers: Arc<AtomicUsize>,
}

/// Where one lock lives.
struct Target {
    bucket: String,
    key: LockKey,
    object: String,
}

/// How a conditional write ended, after resolving any doubt by reading back.
enum Written {
    /// Our body is what is stored now.
    Ours,
    /// Someone else's write came first. Carries what the read-back found, which is a fresh read
    /// to decide again from (so a lost race costs one read, not two).
    Lost(Option<Versioned>),
    /// The store could not say: the write may or may not have landed.
    Unknown(String),
}

/// The state a decision is made from.
struct Basis {
    state: Option<(LockDocument, Version)>,
    /// Read from the store for this decision. A basis that is only the cache's hint may be
    /// stale: a write may follow from it (the store checks the version), but a refusal or a
    /// no-op answer may not, or a stale hint would refuse a client wrongly.
    fresh: bool,
}

/// How a decision ended.
enum Decided {
    /// The document was written and is now the lock's state.
    Wrote(LockDocument, TimeWindow),
    /// Nothing was written; the (fresh) document as read.
    Kept(LockDocument, TimeWindow),
}

/// A grant that may land without its caller ever learning its token, and what it takes to free
/// it if it does.
struct OrphanWatch {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    waiters: Arc<Waiters>,
    watchers: Arc<AtomicUsize>,
    bucket: String,
    object: String,
    orphan: LockDocument,
    /// The version the grant was written against (`None`: written as a create).
    written_over: Option<Version>,
}

impl OrphanWatch {
    /// Watches in the background: keeps reading until the store answers (for a minute at most,
    /// or the lease if shorter), and releases the lock only while the stored document is still
    /// byte for byte the orphaned grant.
    fn spawn(self) {
        // Bounded, so an outage that fails many acquires cannot pile up watchers that all poll
        // the store when it comes back.
        if self.watchers.fetch_add(1, Ordering::SeqCst) >= MAX_ORPHAN_WATCHERS {
            self.watchers.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(object = %self.object, "too many unsettled grants to watch; this \
                one, if it landed, stays held until its lease ends");
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.watchers.fetch_sub(1, Ordering::SeqCst);
            return; // shutting down: nothing left to run the watch on
        };
        runtime.spawn(self.watch());
    }

    async fn watch(self) {
        let _count = DecrementOnDrop(self.watchers.clone());
        let ours = self.orphan.to_bytes();
        let give_up = Instant::now() + StdDuration::from_secs(self.orphan.expire).min(ORPHAN_WATCH);
        let mut pause = StdDuration::from_millis(100);
        while Instant::now() < give_up {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(StdDuration::from_secs(5));
            let stored = match self.store.get(&self.bucket, &self.object).await {
                Ok(Some(stored)) if stored.body == ours => stored,
                // Still as it was: the grant may yet land.
                Ok(stored) if stored.as_ref().map(|s| &s.version) == self.written_over.as_ref() => {
                    continue
                }
                Ok(_) => return, // it can no longer land, or was already replaced
                Err(_) => continue,
            };
            let released = self.orphan.released(self.clock.now().latest).to_bytes();
            match self
                .store
                .put_if_version(&self.bucket, &self.object, released, &stored.version)
                .await
            {
                Ok(_) => {
                    tracing::warn!(bucket = %self.bucket, object = %self.object,
                        "released a grant whose caller never learned of it");
                    self.waiters.wake(&self.bucket, &self.object);
                    return;
                }
                // Re-read: either our release landed unseen, or the document changed.
                Err(_) => continue,
            }
        }
    }
}

/// Spawns its watch if dropped while armed: the future doing the write was cancelled.
struct OrphanGuard(Option<OrphanWatch>);

impl OrphanGuard {
    fn disarm(mut self) -> Option<OrphanWatch> {
        self.0.take()
    }
}

impl Drop for OrphanGuard {
    fn drop(&mut self) {
        if let Some(watch) = self.0.take() {
            watch.spawn();
        }
    }
}

/// Counts a running task down when it ends, however it ends.
struct DecrementOnDrop(Arc<AtomicUsize>);

impl Drop for DecrementOnDrop {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, config: EngineConfig) -> Self {
        Self {
            store,
            clock,
            config,
            waiters: Arc::default(),
            cache: StateCache::new(cache::DEFAULT_CAPACITY),
            metrics: Metrics::new(),
            health: StoreHealth::default(),
            orphan_watchers: Arc::default(),
        }
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
        let probe = format!("{}.s3lock-probe/readyz", self.config.prefix);
        let bucket = &self.config.default_bucket;
        match tokio::time::timeout(READY_PROBE_TIMEOUT, self.get(bucket, &probe)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(NotReady::StoreDown(e.to_string())),
            Err(_) => {
                self.health
                    .record::<()>(&Err(StoreError::Unavailable("probe timed out".into())));
                Err(NotReady::StoreDown(
                    "the store did not answer in time".into(),
                ))
            }
        }
    }

    /// The same engine remembering at most `capacity` locks' states (0 turns the cache off, so
    /// that every decision reads first).
    pub fn with_cache_capacity(mut self, capacity: usize) -> Self {
        self.cache = StateCache::new(capacity);
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
        let target = self.target(bucket, key)?;
        let owner = match req.owner.as_deref() {
            Some(o) => key::parse_owner(o).map_err(|r| LockError::invalid("owner", r))?,
            None => uuid::Uuid::new_v4().simple().to_string(),
        };
        let ttl = self.ttl(req.ttl)?;
        let wait = self.wait(req.wait)?;
        let deadline = Instant::now() + wait;
        let mut poll = FIRST_POLL;
        // Held (and so counted in the waiters gauge) from the first sleep until we return.
        let mut waiting = None;
        loop {
            // Register before trying, so a release between our read and our sleep still wakes us.
            let registration = self.waiters.register(&target.bucket, &target.object);
            let notified = registration.notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let err = match self
                .try_acquire(&target, &owner, req.token.as_ref(), ttl)
                .await
            {
                Ok(view) => return Ok(view),
                Err(err @ LockError::Held { .. }) => err,
                Err(other) => return Err(other),
            };
            let LockError::Held { expires_at, .. } = &err else {
                unreachable!()
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.metrics.count(m::CONFLICTS, &[]);
                return Err(err);
            }
            waiting.get_or_insert_with(|| self.metrics.waiting());
            // Sleep a jittered backoff, but wake for a local release, at the lease's end, or at
            // the deadline for one last try, whichever comes first.
            let until_expiry = (*expires_at - self.clock.now().earliest)
                .to_std()
                .unwrap_or_default();
            let jittered = rand::rng().random_range(poll / 2..=poll);
            // Never below FIRST_POLL: near the lease's end, clock samples that step back could
            // otherwise make a waiter re-poll at once, round trip after round trip.
            let nap = jittered.min(until_expiry).max(FIRST_POLL).min(left);
            poll = (poll * 2).min(MAX_POLL);
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn try_acquire(
        &self,
        target: &Target,
        owner: &str,
        presented: Option<&HolderToken>,
        ttl: u64,
    ) -> Result<LockView, LockError> {
        // What the last decision was, for the metrics.
        let mut grant = None;
        let decided = self
            .decide(target, |current, now| {
                let presented = presented.map(HolderToken::expose);
                let (doc, kind) = rules::acquire(current, now, owner, presented, ttl)?;
                grant = Some(kind);
                Ok(Verdict::Write(doc))
            })
            .await?;
        match decided {
            Decided::Wrote(doc, now) => {
                if let Some(Grant::NewHolder { takeover }) = grant {
                    self.metrics.count(m::GRANTS, &[]);
                    if takeover {
                        self.metrics.count(m::EXPIRY_TAKEOVERS, &[]);
                    }
                }
                Ok(self.view(target, &doc, now, true))
            }
            Decided::Kept(..) => unreachable!("acquire always writes or refuses"),
        }
    }

    /// Extends the holder's lease by `ttl` seconds from now.
    #[tracing::instrument(skip(self, token))]
    pub async fn renew(
        &self,
        bucket: Option<&str>,
        key: &str,
        token: &str,
        ttl: Option<i64>,
    ) -> Result<LockView, LockError> {
        let result = self.try_renew(bucket, key, token, ttl).await;
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
        ttl: Option<i64>,
    ) -> Result<LockView, LockError> {
        let target = self.target(bucket, key)?;
        let ttl = self.ttl(ttl)?;
        let decided = self
            .decide(&target, |current, now| {
                rules::renew(current, now, token, ttl).map(Verdict::Write)
            })
            .await?;
        match decided {
            Decided::Wrote(doc, now) => Ok(self.view(&target, &doc, now, true)),
            Decided::Kept(..) => unreachable!("renew always writes or refuses"),
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
        let decided = self
            .decide(&target, |current, now| rules::release(current, now, token))
            .await?;
        match decided {
            Decided::Wrote(doc, now) => {
                self.metrics.count(m::RELEASES, &[]);
                self.waiters.wake(&target.bucket, &target.object);
                Ok(self.view(&target, &doc, now, false))
            }
            Decided::Kept(doc, now) => Ok(self.view(&target, &doc, now, false)),
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
        // Who held it and their fencing token, as the decision that wrote last saw them.
        let mut broken_from: Option<(String, u64)> = None;
        let decided = self
            .decide(&target, |current, now| {
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
            Decided::Wrote(doc, now) => {
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
                self.waiters.wake(&target.bucket, &target.object);
                Ok(self.view(&target, &doc, now, false))
            }
            Decided::Kept(doc, now) => Ok(self.view(&target, &doc, now, false)),
        }
    }

    /// Makes one decision on a lock and writes it: from the cached state if this process knows
    /// one, else from a read; again from a fresh read whenever the write lost (the cache was
    /// stale or another writer came first) or the decision was a refusal made from the cache.
    async fn decide<F>(&self, target: &Target, mut decide: F) -> Result<Decided, LockError>
    where
        F: FnMut(Option<&LockDocument>, TimeWindow) -> Result<Verdict, LockError>,
    {
        let mut next = self
            .cache
            .get(&target.bucket, &target.object)
            .map(|known| Basis {
                state: Some((known.doc, known.version)),
                fresh: false,
            });
        for _ in 0..MAX_DECISIONS {
            let basis = match next.take() {
                Some(basis) => basis,
                None => self.read_fresh(target).await?,
            };
            let now = self.clock.now();
            let step = match decide(basis.state.as_ref().map(|(doc, _)| doc), now) {
                Ok(step) => step,
                // Never refuse from a hint: confirm with a read.
                Err(_) if !basis.fresh => continue,
                Err(refusal) => return Err(refusal),
            };
            let (doc, current) = match (step, basis.state) {
                (Verdict::Write(doc), current) => {
                    if let Some((current, _)) = &current {
                        rules::may_replace(current)?;
                    }
                    (doc, current)
                }
                (Verdict::Leave, Some((doc, _))) if basis.fresh => {
                    return Ok(Decided::Kept(doc, now))
                }
                // A no-op answer from a hint could be stale too: confirm with a read.
                (Verdict::Leave, _) => continue,
            };
            let (current_token, expected) = match current {
                Some((current, version)) => (current.token, Some(version)),
                None => (None, None),
            };
            // A new grant whose outcome the caller might never learn (the store's answer is
            // lost, or this request is cancelled mid-write: a client disconnect, the request
            // timeout) is watched and freed if it lands. Renew, release and a refresh keep the
            // holder's own token, which the holder still has.
            let guard = OrphanGuard(
                (doc.owner.is_some() && doc.token != current_token)
                    .then(|| self.orphan_watch(target, doc.clone(), expected.clone())),
            );
            let written = self.write(target, &doc, expected.as_ref()).await;
            let watch = guard.disarm();
            let written = match written {
                Ok(written) => written,
                Err(e) => {
                    // Even a plain refusal may follow a write that landed (an SDK retry of a
                    // write whose first answer was lost, answered 403 or 400): a grant nobody
                    // knows of would stay held until its lease ends, so watch it as well.
                    if let Some(watch) = watch {
                        watch.spawn();
                    }
                    return Err(e);
                }
            };
            match written {
                Written::Ours => {
                    // Judge the new lease on the clock as it is now that the write is known to
                    // have landed: a slow write (retries, a read-back) may have used it up.
                    let after = self.clock.now();
                    if doc.owner.is_some() && after.latest >= doc.expires_at() {
                        next = None;
                        continue;
                    }
                    return Ok(Decided::Wrote(doc, after));
                }
                Written::Lost(seen) => next = Some(self.fresh_basis(target, seen)?),
                Written::Unknown(why) => {
                    if let Some(watch) = watch {
                        watch.spawn();
                    }
                    return Err(LockError::StoreUnavailable(why));
                }
            }
        }
        Err(LockError::Contended)
    }

    fn orphan_watch(
        &self,
        target: &Target,
        orphan: LockDocument,
        written_over: Option<Version>,
    ) -> OrphanWatch {
        OrphanWatch {
            store: self.store.clone(),
            clock: self.clock.clone(),
            waiters: self.waiters.clone(),
            watchers: self.orphan_watchers.clone(),
            bucket: target.bucket.clone(),
            object: target.object.clone(),
            orphan,
            written_over,
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

    /// Every lock whose key starts with `prefix`, without tokens. Objects under the lock prefix
    /// that are not lock documents are skipped (and logged).
    #[tracing::instrument(skip(self))]
    pub async fn list(
        &self,
        bucket: Option<&str>,
        prefix: &str,
    ) -> Result<Vec<LockView>, LockError> {
        let bucket = self.bucket(bucket)?;
        if prefix.chars().any(char::is_control) || prefix.len() > key::MAX_KEY_BYTES {
            return Err(LockError::invalid(
                "prefix",
                "must be at most 512 bytes with no control characters",
            ));
        }
        let full_prefix = format!("{}{prefix}", self.config.prefix);
        let objects = self.store.list(&bucket, &full_prefix).await;
        self.health.record(&objects);
        let objects = objects.map_err(store_error)?;
        let mut views = Vec::with_capacity(objects.len());
        for object in objects {
            let Some(key) = object
                .strip_prefix(&self.config.prefix)
                .and_then(|k| LockKey::parse(k).ok())
            else {
                continue;
            };
            let target = Target {
                bucket: bucket.clone(),
                key,
                object,
            };
            match self.read(&target).await {
                Ok(Some((doc, _))) => views.push(self.status_view(&target, Some(doc), None)),
                Ok(None) => {} // deleted since it was listed
                Err(LockError::Unreadable(why)) => {
                    tracing::warn!(key = %target.key, %why, "skipping an unreadable lock document")
                }
                Err(other) => return Err(other),
            }
        }
        Ok(views)
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
        }
    }

    /// Reads the lock from the store for a decision, and remembers what it found.
    async fn read_fresh(&self, target: &Target) -> Result<Basis, LockError> {
        let seen = self
            .get(&target.bucket, &target.object)
            .await
            .map_err(|e| {
                self.cache.forget(&target.bucket, &target.object);
                store_error(e)
            })?;
        self.fresh_basis(target, seen)
    }

    /// Parses what was just read from the store and remembers it.
    fn fresh_basis(&self, target: &Target, seen: Option<Versioned>) -> Result<Basis, LockError> {
        let Some(found) = seen else {
            self.cache.forget(&target.bucket, &target.object);
            return Ok(Basis {
                state: None,
                fresh: true,
            });
        };
        let doc = LockDocument::from_bytes(&found.body).map_err(|e| {
            self.cache.forget(&target.bucket, &target.object);
            LockError::Unreadable(e.to_string())
        })?;
        self.cache
            .remember(&target.bucket, &target.object, &doc, &found.version);
        Ok(Basis {
            state: Some((doc, found.version)),
            fresh: true,
        })
    }

    /// Reads and parses the lock document with its version, leaving the cache alone (a list of
    /// many locks should not push out the states of the locks this process works with).
    async fn read(&self, target: &Target) -> Result<Option<(LockDocument, Version)>, LockError> {
        let Some(found) = self
            .get(&target.bucket, &target.object)
            .await
            .map_err(store_error)?
        else {
            return Ok(None);
        };
        let doc = LockDocument::from_bytes(&found.body)
            .map_err(|e| LockError::Unreadable(e.to_string()))?;
        Ok(Some((doc, found.version)))
    }

    /// Writes `doc` if the object is still at `expected` (or still absent for `None`).
    ///
    /// A failed precondition or a store error does not prove the write did not land: a response
    /// can be lost after the store applied it, and the SDK's retry of our own successful write
    /// then fails its precondition. So both are resolved by reading back: if the stored body is
    /// ours byte for byte (unique: it carries a fresh token or a microsecond timestamp), we won.
    async fn write(
        &self,
        target: &Target,
        doc: &LockDocument,
        expected: Option<&Version>,
    ) -> Result<Written, LockError> {
        let body = doc.to_bytes();
        let (bucket, object) = (&target.bucket, &target.object);
        let outcome = match expected {
            None => self.store.put_if_absent(bucket, object, body.clone()).await,
            Some(v) => {
                self.store
                    .put_if_version(bucket, object, body.clone(), v)
                    .await
            }
        };
        self.health.record(&outcome);
        let doubt = match outcome {
            Ok(version) => {
                self.cache.remember(bucket, object, doc, &version);
                return Ok(Written::Ours);
            }
            Err(StoreError::PreconditionFailed) => None,
            Err(StoreError::Unavailable(why)) => Some(why),
            Err(other) => {
                self.cache.forget(bucket, object);
                return Err(store_error(other));
            }
        };
        let written = self.read_back(target, doc, &body, expected, doubt).await;
        if matches!(written, Written::Unknown(_)) {
            self.cache.forget(bucket, object);
        }
        Ok(written)
    }

    /// Settles a write that failed its precondition (`doubt` is `None`) or whose answer never
    /// came (`doubt` is the error).
    ///
    /// Our body stored → we won. Otherwise, after a failed precondition the condition is false
    /// for good (a version is never reused, as every body is unique), so no late copy of our
    /// write can land: we lost. But after a timeout, our write may still be on its way: only if
    /// the object has moved past the version we wrote against can we be sure it never lands.
    async fn read_back(
        &self,
        target: &Target,
        doc: &LockDocument,
        ours: &Bytes,
        expected: Option<&Version>,
        doubt: Option<String>,
    ) -> Written {
        let in_flight = doubt.is_some();
        let mut last_error = doubt.unwrap_or_default();
        for attempt in 0..READ_BACK_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(StdDuration::from_millis(100 << attempt)).await;
            }
            match self.get(&target.bucket, &target.object).await {
                Ok(Some(stored)) if stored.body == *ours => {
                    self.cache
                        .remember(&target.bucket, &target.object, doc, &stored.version);
                    return Written::Ours;
                }
                Ok(stored) => {
                    let unchanged = stored.as_ref().map(|s| &s.version) == expected;
                    if in_flight && unchanged {
                        last_error = "the write timed out and has not landed (yet)".into();
                        break;
                    }
                    return Written::Lost(stored);
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        tracing::warn!(key = %target.key, error = %last_error,
            "a lock write's outcome is unknown and the store cannot be read back");
        Written::Unknown(last_error)
    }

    /// A store read, noted for readiness.
    async fn get(&self, bucket: &str, object: &str) -> Result<Option<Versioned>, StoreError> {
        let found = self.store.get(bucket, object).await;
        self.health.record(&found);
        found
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

fn store_error(e: StoreError) -> LockError {
    match e {
        StoreError::Unavailable(why) => LockError::StoreUnavailable(why),
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
