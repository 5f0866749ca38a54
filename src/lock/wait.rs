//! Waiting for a held lock: an acquire with `wait` tries, then queues behind the lock's one
//! watcher in this process ([`super::waiters`]) and tries again when its turn comes (the lock
//! looked free) or at its deadline.

use std::time::Duration as StdDuration;

use tokio::time::Instant;

use super::input::Acquire;
use super::waiters::{Registration, TooManyWatched};
use super::{Engine, LockError, LockView, Target};
use crate::metrics as m;

/// A lock's watcher reads the store no faster than this at first, then backs off to
/// [`MAX_POLL`], with jitter (each pause drawn from half to all of the scheduled one, see
/// [`crate::backoff::Backoff::with_jitter`]) so watchers on many replicas do not poll in step.
pub const FIRST_POLL: StdDuration = StdDuration::from_millis(25);
pub const MAX_POLL: StdDuration = StdDuration::from_secs(1);

impl Engine {
    /// Acquires, waiting up to `req.wait` while the lock is taken ([`Engine::acquire_until`]).
    /// An acquire that had to wait is timed for the metrics, by outcome.
    pub(super) async fn acquire_waiting(
        &self,
        target: &Target,
        req: &Acquire,
    ) -> Result<LockView, LockError> {
        let started = Instant::now();
        let mut waited = false;
        let result = self.acquire_until(target, req, &mut waited).await;
        if waited {
            let outcome = if result.is_ok() { "granted" } else { "refused" };
            self.metrics
                .observe(m::ACQUIRE_WAIT, &[("outcome", outcome)], started.elapsed());
        }
        result
    }

    /// Tries to acquire until granted, refused for a reason other than the lock being held,
    /// `req.wait` has passed, or the replica begins to shut down. Sets `waited` once it waits.
    async fn acquire_until(
        &self,
        target: &Target,
        req: &Acquire,
        waited: &mut bool,
    ) -> Result<LockView, LockError> {
        let deadline = Instant::now() + req.wait;
        // This waiter's place in line for the lock, from its first refusal until it returns.
        let mut registration = None;
        // Held (and so counted in the waiters gauge) from the first wait until we return.
        let mut waiting = None;
        loop {
            let err = match self.try_acquire(target, req).await {
                Ok(view) => {
                    if let Some(r) = registration {
                        Registration::granted(r);
                    }
                    return Ok(view);
                }
                // Waited through like a held lease: the lock-delay after an unreleased one.
                Err(err @ (LockError::Held { .. } | LockError::Delayed { .. })) => err,
                Err(other) => return Err(other),
            };
            if Instant::now() >= deadline {
                self.metrics.count(m::CONFLICTS, &[]);
                return Err(err);
            }
            waiting.get_or_insert_with(|| self.metrics.waiting());
            *waited = true;
            // In line (the lock's one watcher reads it for every waiter here), until it is our
            // turn (the lock looked free), or the deadline for one last try.
            let r = match &mut registration {
                Some(r) => r,
                None => registration.insert(self.line_up(target)?),
            };
            tokio::select! {
                _ = r.turn() => {}
                _ = tokio::time::sleep_until(deadline) => {}
                // The replica is shutting down: a whole answer now, so the client tries another
                // replica, rather than a connection cut when the drain time runs out.
                _ = self.drain_begun() => return Err(LockError::ShuttingDown),
            }
        }
    }

    /// A place in the line of blocked acquirers of the lock, unless this replica may watch no
    /// more locks (then nothing waits: the caller is told at once).
    fn line_up(&self, target: &Target) -> Result<Registration<'_>, LockError> {
        self.waiters
            .register(&target.bucket, &target.object)
            .map_err(|e| self.too_many_watched(e))
    }

    pub(super) fn too_many_watched(&self, e: TooManyWatched) -> LockError {
        self.metrics.count(m::WATCHED_LOCKS_REFUSED, &[]);
        LockError::TooManyWatchedLocks { max: e.max }
    }
}
