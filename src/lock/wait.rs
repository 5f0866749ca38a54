//! Waiting for a held lock: an acquire with `wait` tries, then queues behind the lock's one
//! watcher in this process ([`super::watchers`]) and tries again when its turn comes (the lock
//! looked free for what it wants) or at its deadline. One [`AcquireWait`] for every kind of lock:
//! each kind's acquire only says which refusals it waits through.

use std::time::Duration as StdDuration;

use tokio::time::Instant;

use super::input::Acquire;
use super::watchers::{Registration, TooManyWatched};
use super::{Engine, LockDocument, LockError, LockView, Served, Target};
use crate::metrics::{self as m, GaugeGuard};

/// A lock's watcher reads the store no faster than this at first, then backs off to
/// [`MAX_POLL`], with jitter (each pause drawn from half to all of the scheduled one, see
/// [`crate::backoff::Backoff::with_jitter`]) so watchers on many replicas do not poll in step.
pub const FIRST_POLL: StdDuration = StdDuration::from_millis(25);
pub const MAX_POLL: StdDuration = StdDuration::from_secs(1);

/// One acquire's wait for a lock of kind `K`: its deadline, its place in line (from its first
/// refusal until it ends), and how long it waited, for the metrics. The acquire tries, and after
/// each refusal it may wait through asks [`AcquireWait::turn`] when to try again; it ends with
/// [`AcquireWait::end`].
pub(super) struct AcquireWait<'e, K: Served> {
    engine: &'e Engine,
    target: &'e Target,
    /// What this acquire waits for (its turn comes when the lock looks free for it).
    want: K::Want,
    started: Instant,
    deadline: Instant,
    /// This waiter's place in line for the lock, from its first refusal until it ends.
    registration: Option<Registration<'e, K>>,
    /// Held (and so counted in the waiters gauge) from the first wait until it ends; its being
    /// set is what says that the acquire waited.
    gauge: Option<GaugeGuard>,
}

impl<'e, K: Served> AcquireWait<'e, K> {
    pub(super) fn new(
        engine: &'e Engine,
        target: &'e Target,
        want: K::Want,
        wait: StdDuration,
    ) -> Self {
        let started = Instant::now();
        Self {
            engine,
            target,
            want,
            started,
            deadline: started + wait,
            registration: None,
            gauge: None,
        }
    }

    /// After `refusal` (one this kind waits through): completes when it is time to try again:
    /// this waiter's turn came (the lock looked free for it), `also_at` passed (a try the
    /// acquire needs of its own, such as a waiting writer renewing its entry), or the deadline,
    /// for one last try. `Err(refusal)` once the deadline has passed; `ShuttingDown` when the
    /// replica begins to drain; too-many-watched-locks when nothing may wait here.
    pub(super) async fn turn(
        &mut self,
        refusal: LockError,
        also_at: Option<Instant>,
    ) -> Result<(), LockError> {
        let engine = self.engine;
        if Instant::now() >= self.deadline {
            engine.metrics.count(m::CONFLICTS, &[]);
            return Err(refusal);
        }
        self.gauge.get_or_insert_with(|| engine.metrics.waiting());
        // In line (the lock's one watcher reads it for every waiter here), until it is our turn
        // (the lock looked free), or the deadline for one last try.
        let r = match &mut self.registration {
            Some(r) => r,
            None => self.registration.insert(
                K::watchers(engine)
                    .register(&self.target.bucket, &self.target.object, self.want.clone())
                    .map_err(|e| engine.too_many_watched(e))?,
            ),
        };
        let wake_at = also_at.map_or(self.deadline, |at| at.min(self.deadline));
        tokio::select! {
            _ = r.turn() => {}
            _ = tokio::time::sleep_until(wake_at) => {}
            // The replica is shutting down: a whole answer now, so the client tries another
            // replica, rather than a connection cut when the drain time runs out.
            _ = engine.drain_begun() => return Err(LockError::ShuttingDown),
        }
        Ok(())
    }

    /// The acquire ended with `result`: it leaves the line (granted, or passing its turn on),
    /// and an acquire that had to wait is timed for the metrics, by outcome.
    pub(super) fn end<T>(self, result: Result<T, LockError>) -> Result<T, LockError> {
        if let Some(r) = self.registration {
            if result.is_ok() {
                Registration::granted(r);
            }
        }
        if self.gauge.is_some() {
            let outcome = if result.is_ok() { "granted" } else { "refused" };
            self.engine.metrics.observe(
                m::ACQUIRE_WAIT,
                &[("outcome", outcome)],
                self.started.elapsed(),
            );
        }
        result
    }
}

impl Engine {
    /// Acquires the mutex, waiting up to `req.wait` while it is held or kept for its lock-delay.
    pub(super) async fn acquire_waiting(
        &self,
        target: &Target,
        req: &Acquire,
    ) -> Result<LockView, LockError> {
        let mut wait = AcquireWait::<LockDocument>::new(self, target, (), req.wait);
        let result = loop {
            match self.try_acquire(target, req).await {
                // Waited through like a held lease: the lock-delay after an unreleased one.
                Err(refusal @ (LockError::Held { .. } | LockError::Delayed { .. })) => {
                    if let Err(e) = wait.turn(refusal, None).await {
                        break Err(e);
                    }
                }
                other => break other,
            }
        };
        wait.end(result)
    }

    pub(super) fn too_many_watched(&self, e: TooManyWatched) -> LockError {
        self.metrics.count(m::WATCHED_LOCKS_REFUSED, &[]);
        LockError::TooManyWatchedLocks { max: e.max }
    }
}
