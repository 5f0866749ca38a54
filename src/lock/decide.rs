//! One decision on one lock: one read, one conditional write, and any doubt about the write
//! settled by reading back. The rule that decides comes from [`rules`](super::rules) (the
//! mutex's) or [`shared_rules`](super::shared_rules); this file only drives it against the store
//! and the cache, for every kind of lock alike: what it needs of a document is [`LockKind`].
//!
//! The read is skipped when this process already knows the lock's state (the cache): the write
//! then carries the cached version, and if that was stale the store refuses it and the decision
//! is made again from a fresh read.

use std::time::Duration as StdDuration;

use bytes::Bytes;

use super::document::Succession;
use super::kind::LockKind;
use super::orphan::OrphanGuard;
use super::rules::{self, Verdict};
use super::{store_error, Engine, LockError, Served, Target};
use crate::backoff::Backoff;
use crate::clock::TimeWindow;
use crate::store::{StoreError, Version, Versioned};

/// How many times one decision is re-made after losing a write race before giving up with
/// [`LockError::Contended`]. Each loss means another writer made progress, so this bounds only
/// pathological churn.
const MAX_DECISIONS: usize = 16;
/// Read-backs tried after a write whose outcome is unknown.
const READ_BACK_ATTEMPTS: u32 = 3;

/// How a conditional write ended, after resolving any doubt by reading back.
enum WriteOutcome {
    /// Our body is what is stored now.
    Landed,
    /// Our body landed, and later writes replaced it before the read-back (a release lands, its
    /// answer is lost, and a waiter takes the lock): the stored history names our write.
    /// Carries what the read-back found.
    Replaced(Versioned),
    /// Someone else's write came first, or so it seems: `proven` only when the stored history
    /// names another write at our revision; otherwise ours may have landed and been replaced by
    /// more writes than the history keeps. Carries what the read-back found, which is a fresh
    /// read to decide again from (so a lost race costs one read, not two).
    Beaten {
        seen: Option<Versioned>,
        proven: bool,
    },
    /// The store could not say: the write may or may not have landed.
    Unknown(String),
    /// The write was never sent (no call slot in time), and never will be: it did not land.
    NotSent(String),
}

/// The state a decision is made from.
pub(super) struct Basis<K> {
    pub(super) state: Option<(K, Version)>,
    /// Read from the store for this decision. A basis that is only the cache's hint may be
    /// stale: a write may follow from it (the store checks the version), but a refusal or a
    /// no-op answer may not, or a stale hint would refuse a client wrongly.
    fresh: bool,
}

/// How a decision ended.
pub(super) enum Settled<K> {
    /// The rule's document was written and is now the lock's state.
    Stored(K, TimeWindow),
    /// The rule left the lock as it was; the (fresh) document as read.
    AsRead(K, TimeWindow),
}

impl Engine {
    /// Makes one decision on a lock and writes it: from the cached state if this process knows
    /// one, else from a read; again from a fresh read whenever the write lost (the cache was
    /// stale or another writer came first) or the decision was a refusal made from the cache.
    pub(super) async fn decide<K, F>(
        &self,
        target: &Target,
        mut rule: F,
    ) -> Result<Settled<K>, LockError>
    where
        K: Served,
        F: FnMut(Option<&K>, TimeWindow) -> Result<Verdict<K>, LockError>,
    {
        let mut next = K::cache(self)
            .get(&target.bucket, &target.object)
            .map(|known| Basis {
                state: Some((known.doc, known.version)),
                fresh: false,
            });
        // A write of ours may have landed and been replaced since (see `WriteOutcome::Beaten`):
        // a refusal of the holder is then no longer the truth about this request.
        let mut unproven = false;
        // A grant this call made whose token its caller has not been handed yet (it landed, but
        // its lease was used up by a slow write and the call decided again).
        let mut granted_unseen = false;
        for _ in 0..MAX_DECISIONS {
            let basis = match next.take() {
                Some(basis) => basis,
                None => self.read_fresh(target).await?,
            };
            let now = self.clock.now();
            let current = basis.state.as_ref().map(|(doc, _)| doc);
            let verdict = rule(current, now).and_then(|verdict| match (&verdict, current) {
                (Verdict::Write(_), Some(current)) => rules::may_replace(current).map(|()| verdict),
                _ => Ok(verdict),
            });
            let verdict = match verdict {
                Ok(verdict) => verdict,
                // Never refuse from a hint: confirm with a read.
                Err(_) if !basis.fresh => continue,
                Err(LockError::NotHolder(_) | LockError::NotFound) if unproven => {
                    return Err(LockError::Unconfirmed)
                }
                Err(refusal) => return Err(refusal),
            };
            let (doc, current) = match (verdict, basis.state) {
                (Verdict::Write(doc), current) => (doc, current),
                (Verdict::Leave, Some((doc, _))) if basis.fresh => {
                    return Ok(Settled::AsRead(doc, now))
                }
                // A no-op answer from a hint could be stale too: confirm with a read.
                (Verdict::Leave, _) => continue,
            };
            let (before, expected) = match current {
                Some((current, version)) => (Some(current), Some(version)),
                None => (None, None),
            };
            // A break (the one write that takes holdings without a token) takes the lock from
            // whoever holds it, with no token to check. If an earlier break of this call may
            // have landed, the holder now may have taken the lock after it: breaking again
            // would break a lease no admin asked about.
            if unproven && doc.is_break(before.as_ref()) {
                return Err(LockError::Unconfirmed);
            }
            // A grant whose token the caller might never learn (the store's answer is lost, or
            // this request is cancelled mid-write: a client disconnect, the request timeout) is
            // watched while in flight and freed if it lands unseen.
            let handed_out = doc
                .token_handed_out(before.as_ref(), granted_unseen)
                .cloned();
            let hands_out_token = handed_out.is_some();
            let guard =
                OrphanGuard(handed_out.map(|token| {
                    self.orphan_cleanup(target, doc.clone(), token, expected.clone())
                }));
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
                WriteOutcome::Landed => {
                    // Local waiters and watch clients learn the new state with no read.
                    K::watchers(self).observed(&target.bucket, &target.object, &doc);
                    // Judge the new lease on the clock as it is now that the write is known to
                    // have landed: a slow write (retries, a read-back) may have used it up.
                    let after = self.clock.now();
                    if doc.lease_used_up(before.as_ref(), after) {
                        granted_unseen = hands_out_token;
                        next = None;
                        continue;
                    }
                    return Ok(Settled::Stored(doc, after));
                }
                WriteOutcome::Replaced(seen) => {
                    // What replaced ours was read, not written here: it is not published to
                    // local waiters and watch clients as a write of this process would be
                    // (`Watchers::observed`), since a newer local write may have been published
                    // while the read's answer was on its way. The lock's watcher reads it.
                    let basis: Basis<K> = self.fresh_basis(target, Some(seen))?;
                    // A lease that has already passed on is not answered as held: a grant's
                    // token proves nothing now, and a renewed lease that has since been
                    // released, broken or taken over is no longer its holder's (the engine has
                    // just read so). Decide again from what replaced it; a renew's refusal then
                    // is write-unconfirmed, never not-holder, as its write did land.
                    let passed_on = basis
                        .state
                        .as_ref()
                        .is_some_and(|(current, _)| current.lease_passed_on(&doc, before.as_ref()));
                    if hands_out_token || passed_on {
                        unproven |= !hands_out_token;
                        next = Some(basis);
                        continue;
                    }
                    return Ok(Settled::Stored(doc, self.clock.now()));
                }
                WriteOutcome::Beaten { seen, proven } => {
                    unproven |= !proven;
                    next = Some(self.fresh_basis(target, seen)?);
                }
                WriteOutcome::Unknown(why) => {
                    if let Some(watch) = watch {
                        watch.spawn();
                    }
                    return Err(LockError::StoreUnavailable(why));
                }
                // Nothing to settle or watch: the grant it would have made does not exist.
                WriteOutcome::NotSent(why) => return Err(LockError::StoreUnavailable(why)),
            }
        }
        Err(LockError::Contended)
    }

    /// Reads the lock from the store for a decision, and remembers what it found.
    pub(super) async fn read_fresh<K: Served>(
        &self,
        target: &Target,
    ) -> Result<Basis<K>, LockError> {
        let seen = self
            .get(&target.bucket, &target.object)
            .await
            .map_err(|e| {
                K::cache(self).forget(&target.bucket, &target.object);
                store_error(e)
            })?;
        self.fresh_basis(target, seen)
    }

    /// Parses what was just read from the store and remembers it.
    fn fresh_basis<K: Served>(
        &self,
        target: &Target,
        seen: Option<Versioned>,
    ) -> Result<Basis<K>, LockError> {
        let cache = K::cache(self);
        let Some(found) = seen else {
            cache.forget(&target.bucket, &target.object);
            return Ok(Basis {
                state: None,
                fresh: true,
            });
        };
        let doc = K::from_bytes(&found.body).map_err(|e| {
            cache.forget(&target.bucket, &target.object);
            LockError::Unreadable(e)
        })?;
        cache.remember(&target.bucket, &target.object, &doc, &found.version);
        Ok(Basis {
            state: Some((doc, found.version)),
            fresh: true,
        })
    }

    /// Reads and parses the lock document with its version, leaving the cache alone (a list of
    /// many locks should not push out the states of the locks this process works with). A
    /// background read: a list's reads wait behind lock decisions.
    pub(super) async fn read<K: LockKind>(
        &self,
        target: &Target,
    ) -> Result<Option<(K, Version)>, LockError> {
        let found = self.background.get(&target.bucket, &target.object).await;
        self.health.record(&found);
        let Some(found) = found.map_err(store_error)? else {
            return Ok(None);
        };
        let doc = K::from_bytes(&found.body).map_err(LockError::Unreadable)?;
        Ok(Some((doc, found.version)))
    }

    /// Writes `doc` if the object is still at `expected` (or still absent for `None`).
    ///
    /// A failed precondition or a store error does not prove the write did not land: a response
    /// can be lost after the store applied it, and the SDK's retry of our own successful write
    /// then fails its precondition. So both are resolved by reading back: if the stored body is
    /// ours byte for byte (unique: it carries a fresh token or a microsecond timestamp), we won.
    async fn write<K: Served>(
        &self,
        target: &Target,
        doc: &K,
        expected: Option<&Version>,
    ) -> Result<WriteOutcome, LockError> {
        let cache = K::cache(self);
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
                cache.remember(bucket, object, doc, &version);
                return Ok(WriteOutcome::Landed);
            }
            Err(StoreError::PreconditionFailed) => None,
            Err(StoreError::Unavailable(why)) => Some(why),
            Err(StoreError::NotSent(why)) => return Ok(WriteOutcome::NotSent(why)),
            Err(other) => {
                cache.forget(bucket, object);
                return Err(store_error(other));
            }
        };
        let written = self.read_back(target, doc, &body, expected, doubt).await;
        if matches!(written, WriteOutcome::Unknown(_)) {
            cache.forget(bucket, object);
        }
        Ok(written)
    }

    /// Settles a write that failed its precondition (`doubt` is `None`) or whose answer never
    /// came (`doubt` is the error).
    ///
    /// Our body stored → we won. Another body stored whose history names our write → we won, and
    /// were replaced since. Otherwise, after a failed precondition the condition is false for
    /// good (a version is never reused, as every body is unique), so no late copy of our write
    /// can land: we lost, or (when the history does not reach back far enough) cannot tell. But
    /// after a timeout, our write may still be on its way: only if the object has moved past
    /// the version we wrote against can we be sure it never lands.
    async fn read_back<K: Served>(
        &self,
        target: &Target,
        doc: &K,
        ours: &Bytes,
        expected: Option<&Version>,
        doubt: Option<String>,
    ) -> WriteOutcome {
        let in_flight = doubt.is_some();
        let mut last_error = doubt.unwrap_or_default();
        // 200 ms, then doubling.
        let mut backoff = Backoff::exponential(StdDuration::from_millis(200), 2, StdDuration::MAX);
        for attempt in 0..READ_BACK_ATTEMPTS {
            if attempt > 0 {
                backoff.wait().await;
            }
            match self.get(&target.bucket, &target.object).await {
                Ok(Some(stored)) if stored.body == *ours => {
                    K::cache(self).remember(&target.bucket, &target.object, doc, &stored.version);
                    return WriteOutcome::Landed;
                }
                Ok(stored) => {
                    let unchanged = stored.as_ref().map(|s| &s.version) == expected;
                    if in_flight && unchanged {
                        last_error = "the write timed out and has not landed (yet)".into();
                        break;
                    }
                    // Something else is stored: our write lost, or landed and was replaced. No
                    // object at all (deleted behind our back, which a lock's object never
                    // should be) keeps no history, and answering from its absence is the truth
                    // of the lock now: taken as lost.
                    let Some(stored) = stored else {
                        return WriteOutcome::Beaten {
                            seen: None,
                            proven: true,
                        };
                    };
                    let succession = K::from_bytes(&stored.body)
                        .map_or(Succession::Unknown, |found| found.succession_of(doc));
                    return match succession {
                        Succession::Replaced => WriteOutcome::Replaced(stored),
                        Succession::Lost => WriteOutcome::Beaten {
                            seen: Some(stored),
                            proven: true,
                        },
                        Succession::Unknown => WriteOutcome::Beaten {
                            seen: Some(stored),
                            proven: false,
                        },
                    };
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        tracing::warn!(key = %target.key, error = %last_error,
            "a lock write's outcome is unknown and the store cannot be read back");
        WriteOutcome::Unknown(last_error)
    }

    /// A store read, noted for readiness.
    pub(super) async fn get(
        &self,
        bucket: &str,
        object: &str,
    ) -> Result<Option<Versioned>, StoreError> {
        let found = self.store.get(bucket, object).await;
        self.health.record(&found);
        found
    }
}
