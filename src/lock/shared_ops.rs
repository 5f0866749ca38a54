//! The engine's operations on semaphores and read-write locks: acquire, renew, release, break,
//! status and watch. Each checks its input ([`super::input`]), makes its decision through the
//! one decision loop (`decide`) with a rule from [`super::shared_rules`], and answers with a
//! [`SharedView`], as the mutex's operations (`ops`) do with [`super::rules`].
//!
//! An acquire that may wait queues in this replica's line for the key, in arrival order, behind
//! the key's one watcher (`wait`, [`super::watchers`]). A read-write lock's writer that has to
//! wait is also recorded in the document ([`Acquired::Queued`]), so that no replica lets a new
//! reader in meanwhile: it tries again before that entry's short lease lapses (which renews
//! it), and withdraws it when it gives up.

use std::time::Duration as StdDuration;

use tokio::time::Instant;

use super::decide::Settled;
use super::input::{SharedAcquireInput, SharedAcquireRequest};
use super::rules::{Grant, Verdict};
use super::shared::{Claim, SharedDocument, WaiterId, WAITING_LEASE_SECS};
use super::shared_rules::{self, Acquired, SharedAcquire};
use super::wait::AcquireWait;
use super::{Engine, HolderToken, LockError, Target};
use crate::clock::TimeWindow;
use crate::metrics as m;
use crate::wire::{SharedKind, SharedView};

/// A waiting writer tries again this long after writing its waiting entry: past half the entry's
/// lease, so that the try renews it (the rule rewrites an entry only then), and two seconds
/// before it would lapse.
const RENEW_ENTRY_AFTER: StdDuration = StdDuration::from_millis(WAITING_LEASE_SECS * 1000 * 3 / 5);
/// A waiting writer whose try wrote nothing (its entry was still fresh, or the list was full)
/// tries again this soon, so its entry is renewed in time all the same.
const RETRY_ENTRY_AFTER: StdDuration = StdDuration::from_secs(1);

/// One try of an acquire, when not refused outright.
enum Tried {
    Granted(SharedView),
    /// Refused for now, with the caller's waiting entry written (added or renewed).
    Queued(LockError),
}

/// `doc`, if it is a document of `kind`. The kinds live under separate namespaces, so one of the
/// other kind was written there by hand: it is never overwritten.
pub(super) fn of_kind(
    doc: Option<&SharedDocument>,
    kind: SharedKind,
) -> Result<Option<&SharedDocument>, LockError> {
    match doc {
        Some(d) if d.kind != kind => Err(LockError::Unreadable(format!(
            "the stored document is a {:?}, not a {kind:?}",
            d.kind
        ))),
        other => Ok(other),
    }
}

impl Engine {
    /// Takes a semaphore's permit (`kind` semaphore, with `req.limit`) or a read-write lock in
    /// `req.mode` for `owner` (a random one if none is given), or refreshes the caller's own
    /// holding when it presents its holder token. With `wait`, waits in line on this replica up
    /// to that many seconds.
    #[tracing::instrument(skip(self, req), fields(owner = req.owner.as_deref()))]
    pub async fn shared_acquire(
        &self,
        bucket: Option<&str>,
        key: &str,
        kind: SharedKind,
        req: SharedAcquireRequest,
    ) -> Result<SharedView, LockError> {
        if self.is_draining() {
            return Err(LockError::ShuttingDown);
        }
        let target = self.shared_target(bucket, key, kind)?;
        let req = self.shared_acquire_input(kind, req)?;
        // A writer that will wait is recorded in the document while it waits, under this id.
        let waiter =
            (req.claim == Claim::Exclusive && !req.wait.is_zero()).then(WaiterId::generate);
        let mut wait = AcquireWait::<SharedDocument>::new(self, &target, req.claim, req.wait);
        // The token this acquire may present: the caller's, then that of each grant it writes
        // (see `try_acquire` in ops.rs for why).
        let mut mine = req.token.clone();
        // When this writer's waiting entry is to be renewed; set once it wrote one.
        let mut renew_entry_at: Option<Instant> = None;
        let result = loop {
            let tried = self
                .try_shared_acquire(&target, &req, waiter.as_ref(), &mut mine)
                .await;
            let refusal = match tried {
                Ok(Tried::Granted(view)) => break Ok(view),
                Ok(Tried::Queued(refusal)) => {
                    renew_entry_at = Some(Instant::now() + RENEW_ENTRY_AFTER);
                    refusal
                }
                Err(
                    refusal @ (LockError::SemaphoreFull { .. }
                    | LockError::Held { .. }
                    | LockError::TooManyHolders { .. }),
                ) => {
                    if let Some(at) = renew_entry_at.as_mut().filter(|at| **at <= Instant::now()) {
                        *at = Instant::now() + RETRY_ENTRY_AFTER;
                    }
                    refusal
                }
                Err(other) => break Err(other),
            };
            if let Err(e) = wait.turn(refusal, renew_entry_at).await {
                break Err(e);
            }
        };
        if let (Err(_), Some(id), Some(_)) = (&result, &waiter, renew_entry_at) {
            self.withdraw(&target, id).await;
        }
        // Counted once this acquire has left the line.
        wait.end(result).map(|mut view| {
            let here = self.shared_watchers.in_line(&target.bucket, &target.object);
            view.waiters_here = u32::try_from(here).unwrap_or(u32::MAX);
            view
        })
    }

    /// One try: granted, refreshed, refused, or (a writer that will wait) queued.
    async fn try_shared_acquire(
        &self,
        target: &Target,
        req: &SharedAcquireInput,
        waiter: Option<&WaiterId>,
        mine: &mut Option<HolderToken>,
    ) -> Result<Tried, LockError> {
        let kind = req.claim.kind();
        // What the decisions were, for the metrics: a grant, even if refreshed after it landed.
        let mut grant = None;
        // The refusal of a try that wrote the caller's waiting entry.
        let mut queued = None;
        let decided = self
            .decide(target, |current: Option<&SharedDocument>, now| {
                queued = None;
                let current = of_kind(current, kind)?;
                let ask = SharedAcquire {
                    owner: &req.owner,
                    presented: mine.as_ref().map(HolderToken::expose),
                    ttl: req.ttl,
                    claim: req.claim,
                    waiter,
                };
                match shared_rules::acquire(current, now, &ask)? {
                    Acquired::Granted { doc, grant: made } => {
                        grant = match (grant, made) {
                            (Some(first @ Grant::NewHolder { .. }), Grant::Refresh) => Some(first),
                            _ => Some(made),
                        };
                        *mine = shared_rules::token_written(&doc, current).cloned();
                        Ok(Verdict::Write(doc))
                    }
                    Acquired::Queued { doc, refusal } => {
                        queued = Some(refusal);
                        Ok(Verdict::Write(doc))
                    }
                }
            })
            .await?;
        let Settled::Stored(doc, now) = decided else {
            unreachable!("acquire always writes or refuses")
        };
        if let Some(refusal) = queued {
            return Ok(Tried::Queued(refusal));
        }
        if let Some(Grant::NewHolder { takeover }) = grant {
            self.metrics.count(m::GRANTS, &[]);
            if takeover {
                self.metrics.count(m::EXPIRY_TAKEOVERS, &[]);
            }
        }
        Ok(Tried::Granted(self.shared_view(
            target,
            kind,
            Some(&doc),
            now,
            mine.as_ref(),
        )))
    }

    /// A waiting writer gives up: its entry is removed, so readers need not wait for it to
    /// lapse. Best effort: an entry left behind lapses by itself within its short lease.
    async fn withdraw(&self, target: &Target, id: &WaiterId) {
        let withdrawn = self
            .decide(target, |current: Option<&SharedDocument>, now| {
                Ok(shared_rules::withdraw(current, now, id))
            })
            .await;
        if let Err(e) = withdrawn {
            tracing::debug!(key = %target.key, error = %e,
                "a waiting writer's entry was not withdrawn; it lapses by itself");
        }
    }

    /// Restarts the lease of the holder of `token` for `ttl` seconds from now (the default when
    /// `None`), while it runs.
    #[tracing::instrument(skip(self, token))]
    pub async fn shared_renew(
        &self,
        bucket: Option<&str>,
        key: &str,
        kind: SharedKind,
        token: &str,
        ttl: Option<i64>,
    ) -> Result<SharedView, LockError> {
        let result = self.try_shared_renew(bucket, key, kind, token, ttl).await;
        self.count_renew(result.as_ref().map(drop));
        result
    }

    async fn try_shared_renew(
        &self,
        bucket: Option<&str>,
        key: &str,
        kind: SharedKind,
        token: &str,
        ttl: Option<i64>,
    ) -> Result<SharedView, LockError> {
        let target = self.shared_target(bucket, key, kind)?;
        let ttl = self.ttl(ttl)?;
        let decided = self
            .decide(&target, |current: Option<&SharedDocument>, now| {
                shared_rules::renew(of_kind(current, kind)?, now, token, ttl).map(Verdict::Write)
            })
            .await?;
        let Settled::Stored(doc, now) = decided else {
            unreachable!("renew always writes or refuses")
        };
        let caller = HolderToken::from(token.to_owned());
        Ok(self.shared_view(&target, kind, Some(&doc), now, Some(&caller)))
    }

    /// Gives up the holding of `token`. Releasing again with the same token is a no-op.
    #[tracing::instrument(skip(self, token))]
    pub async fn shared_release(
        &self,
        bucket: Option<&str>,
        key: &str,
        kind: SharedKind,
        token: &str,
    ) -> Result<SharedView, LockError> {
        let target = self.shared_target(bucket, key, kind)?;
        let decided = self
            .decide(&target, |current: Option<&SharedDocument>, now| {
                shared_rules::release(of_kind(current, kind)?, now, token)
            })
            .await?;
        let (doc, now) = match decided {
            Settled::Stored(doc, now) => {
                self.metrics.count(m::RELEASES, &[]);
                self.shared_watchers.freed(&target.bucket, &target.object);
                (doc, now)
            }
            Settled::AsRead(doc, now) => (doc, now),
        };
        Ok(self.shared_view(&target, kind, Some(&doc), now, None))
    }

    /// Breaks every holding on an admin's word: the holders' tokens stop working and the fencing
    /// token grows. `by` names the admin, for the log. A key nobody holds is left as it is.
    #[tracing::instrument(skip(self))]
    pub async fn shared_break(
        &self,
        bucket: Option<&str>,
        key: &str,
        kind: SharedKind,
        by: &str,
    ) -> Result<SharedView, LockError> {
        let target = self.shared_target(bucket, key, kind)?;
        // From a fresh read, never from memory, as for the mutex's break (see `break_lock`).
        self.shared_cache.forget(&target.bucket, &target.object);
        let mut broken_from: Option<(Vec<String>, u64)> = None;
        let decided = self
            .decide(&target, |current: Option<&SharedDocument>, now| {
                Ok(
                    match shared_rules::break_all(of_kind(current, kind)?, now)? {
                        Some(broken) => {
                            broken_from = Some((broken.holders, broken.old_fencing_token));
                            Verdict::Write(broken.doc)
                        }
                        None => Verdict::Leave,
                    },
                )
            })
            .await?;
        let (doc, now) = match decided {
            Settled::Stored(doc, now) => {
                let (holders, old_fencing_token) = broken_from.unwrap_or_default();
                tracing::warn!(
                    bucket = %target.bucket,
                    key = %target.key,
                    ?kind,
                    broken_by = by,
                    holders = ?holders,
                    old_fencing_token,
                    fencing_token = doc.fencing_token,
                    "holders broken by an admin"
                );
                self.metrics.count(m::BREAKS, &[]);
                self.shared_watchers.freed(&target.bucket, &target.object);
                (doc, now)
            }
            Settled::AsRead(doc, now) => (doc, now),
        };
        Ok(self.shared_view(&target, kind, Some(&doc), now, None))
    }

    /// The stored view: live holders without tokens, permits left, waiting writers, and the
    /// acquires waiting on this replica. A key never acquired shows no holder.
    #[tracing::instrument(skip(self))]
    pub async fn shared_status(
        &self,
        bucket: Option<&str>,
        key: &str,
        kind: SharedKind,
    ) -> Result<SharedView, LockError> {
        let target = self.shared_target(bucket, key, kind)?;
        let doc = self
            .read_fresh::<SharedDocument>(&target)
            .await?
            .state
            .map(|(doc, _)| doc);
        let doc = of_kind(doc.as_ref(), kind)?;
        Ok(self.shared_view(&target, kind, doc, self.clock.now(), None))
    }

    /// A blocking query, as [`Engine::watch`] for a mutex: the view once the `index` is no longer
    /// `index`, or when `wait` seconds have passed (default 30).
    #[tracing::instrument(skip(self))]
    pub async fn shared_watch(
        &self,
        bucket: Option<&str>,
        key: &str,
        kind: SharedKind,
        index: Option<u64>,
        wait: Option<f64>,
    ) -> Result<SharedView, LockError> {
        let target = self.shared_target(bucket, key, kind)?;
        let wait = self.watch_wait(wait)?;
        let index = match index {
            Some(index) if !wait.is_zero() => index,
            _ => return self.shared_status(bucket, key, kind).await,
        };
        let doc = self.watched::<SharedDocument>(&target, index, wait).await?;
        let doc = of_kind(doc.as_ref(), kind)?;
        Ok(self.shared_view(&target, kind, doc, self.clock.now(), None))
    }

    /// The view of `doc` (`None`: never acquired) at `now`; with `caller`, that holder's own
    /// token and lease.
    pub(super) fn shared_view(
        &self,
        target: &Target,
        kind: SharedKind,
        doc: Option<&SharedDocument>,
        now: TimeWindow,
        caller: Option<&HolderToken>,
    ) -> SharedView {
        let key = target.key.as_str();
        let mut view = match doc {
            Some(doc) => doc.view(&target.bucket, key, now, caller),
            None => SharedDocument::view_of_none(&target.bucket, key, kind),
        };
        let here = self.shared_watchers.in_line(&target.bucket, &target.object);
        view.waiters_here = u32::try_from(here).unwrap_or(u32::MAX);
        view
    }
}
