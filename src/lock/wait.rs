//! Waiting for a held lock: an acquire with `wait` tries, then sleeps until a local release
//! wakes it, the holder's lease ends, or a jittered backoff runs out, and tries again until its
//! deadline.

use std::time::Duration as StdDuration;

use rand::Rng;
use tokio::time::Instant;

use super::{Engine, HolderToken, LockError, LockView, Target};
use crate::metrics as m;

/// A blocked waiter polls the store no faster than this at first, then backs off to
/// [`MAX_POLL`], with full jitter so waiters on many replicas do not poll in step.
pub const FIRST_POLL: StdDuration = StdDuration::from_millis(25);
pub const MAX_POLL: StdDuration = StdDuration::from_secs(1);

impl Engine {
    /// Tries to acquire until granted, refused for a reason other than the lock being held, or
    /// `wait` has passed.
    pub(super) async fn acquire_waiting(
        &self,
        target: &Target,
        owner: &str,
        token: Option<&HolderToken>,
        ttl: u64,
        wait: StdDuration,
    ) -> Result<LockView, LockError> {
        let deadline = Instant::now() + wait;
        let mut poll = self.config.first_poll;
        // Held (and so counted in the waiters gauge) from the first sleep until we return.
        let mut waiting = None;
        loop {
            // Register before trying, so a release between our read and our sleep still wakes us.
            let registration = self.waiters.register(&target.bucket, &target.object);
            let notified = registration.notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let err = match self.try_acquire(target, owner, token, ttl).await {
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
            let nap = jittered
                .min(until_expiry)
                .max(self.config.first_poll)
                .min(left);
            poll = (poll * 2).min(self.config.max_poll);
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }
}
