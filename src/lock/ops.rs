//! The engine's operations on one lock: acquire, renew, release, break and status. Each checks
//! its input ([`super::input`]), makes its decision through the one decision loop (`decide`)
//! with a rule from [`super::rules`], and answers with a view ([`super::views`]).

use super::decide::Settled;
use super::input::{Acquire, AcquireRequest, RenewRequest};
use super::rules::{self, Grant, Verdict};
use super::{Engine, HolderToken, LockDocument, LockError, LockView, Target};
use crate::metrics as m;

impl Engine {
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
        let req = self.acquire_input(req)?;
        self.acquire_waiting(&target, &req).await
    }

    /// One try: granted, refreshed, or refused (the waiting loop in `wait` tries again).
    pub(super) async fn try_acquire(
        &self,
        target: &Target,
        req: &Acquire,
    ) -> Result<LockView, LockError> {
        // What the decisions were, for the metrics: a grant, even if refreshed after it landed.
        let mut grant = None;
        // The token this acquire may present: the caller's, then that of each grant it writes. A
        // grant that lands with its lease already used up (a slow write, a wide clock window) is
        // decided again, and this caller, for whom it was made, refreshes it rather than being
        // refused as if someone else held the lock. A token of a write that never landed matches
        // nothing stored, so carrying it forward gives no one anything.
        let mut mine = req.token.clone();
        // The token of a grant this call wrote, until its caller is told of it.
        let mut granted_here: Option<HolderToken> = None;
        // How long the lease this grant replaced was held, for the metrics (not a refresh's: a
        // grant whose lease a slow write used up is refreshed, and stays one grant).
        let mut ended = None;
        let decided = self
            .decide(target, |current: Option<&LockDocument>, now| {
                let presented = mine.as_ref().map(HolderToken::expose);
                // A grant of this call whose lease a slow write used up was never held by
                // anyone: no writes of its holder can be in flight, so its lock-delay keeps
                // nobody out, least of all the caller it was made for.
                let unheld;
                let current = match current {
                    Some(d) if d.lock_delay > 0 && d.token.is_some() && d.token == granted_here => {
                        unheld = d.clone().with_lock_delay(0);
                        Some(&unheld)
                    }
                    other => other,
                };
                let (doc, kind) = rules::acquire(current, now, &req.owner, presented, &req.terms)?;
                if let Grant::NewHolder { .. } = kind {
                    ended = current.and_then(|d| d.held_for(now.latest));
                    granted_here.clone_from(&doc.token);
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
        self.count_renew(result.as_ref().map(drop));
        result
    }

    /// Counts a renew of any kind of lock: a renewal, or a failure by its reason.
    pub(super) fn count_renew(&self, outcome: Result<(), &LockError>) {
        let reason = match outcome {
            Ok(()) => return self.metrics.count(m::RENEWALS, &[]),
            Err(LockError::NotHolder(_)) => "not_holder",
            Err(LockError::NotFound) => "not_found",
            Err(LockError::InvalidInput { .. } | LockError::BucketNotAllowed(_)) => "invalid",
            Err(LockError::StoreUnavailable(_)) => "store_unavailable",
            Err(_) => "other",
        };
        self.metrics.count(m::RENEW_FAILURES, &[("reason", reason)]);
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
            .decide(&target, |current: Option<&LockDocument>, now| {
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
            .decide(&target, |current: Option<&LockDocument>, now| {
                ended = current.and_then(|d| d.held_for(now.latest));
                rules::release(current, now, token)
            })
            .await?;
        match decided {
            Settled::Stored(doc, now) => {
                self.metrics.count(m::RELEASES, &[]);
                self.metrics.hold_ended(ended);
                self.watchers.freed(&target.bucket, &target.object);
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
            .decide(&target, |current: Option<&LockDocument>, now| {
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
                self.watchers.freed(&target.bucket, &target.object);
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
            self.owner(owner)?;
        }
        // Status always reads the store (it is what a client asks for), and refreshes the hint.
        let doc = self
            .read_fresh::<LockDocument>(&target)
            .await?
            .state
            .map(|(doc, _)| doc);
        Ok(self.status_view(&target, doc.as_ref(), expect_owner))
    }
}
