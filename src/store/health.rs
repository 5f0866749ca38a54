//! Whether the store is answering, for `GET /readyz`. The engine reports the outcome of every
//! store call here, so under traffic readiness costs no extra store call; only an idle or failing
//! server is probed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::StoreError;

/// How long one successful store call keeps the server ready without a fresh probe.
pub const FRESH_FOR: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct StoreHealth {
    /// Set once the start-up store check has passed (or was skipped by the operator): before it,
    /// the store has not been shown to enforce conditional writes and the server must not be
    /// sent traffic.
    checked: AtomicBool,
    /// When the store last gave a real answer. Cleared by any failure to reach it, so a store that
    /// just went away is probed again at the next `/readyz` instead of being trusted for
    /// [`FRESH_FOR`].
    last_answer: Mutex<Option<Instant>>,
    /// When a store call last failed to reach it: a readiness probe's answer from before then
    /// no longer says the store is there.
    last_failure: Mutex<Option<Instant>>,
}

impl StoreHealth {
    pub fn mark_checked(&self) {
        self.checked.store(true, Ordering::Release);
    }

    pub fn checked(&self) -> bool {
        self.checked.load(Ordering::Acquire)
    }

    /// Notes how one store call ended. A failed precondition is an answer: the store is there.
    pub fn record<T>(&self, outcome: &Result<T, StoreError>) {
        let mut last = self.last_answer.lock().expect("health mutex poisoned");
        match outcome {
            Ok(_) | Err(StoreError::PreconditionFailed) => *last = Some(Instant::now()),
            // Never sent: it says nothing of the store.
            Err(StoreError::NotSent(_)) => {}
            Err(_) => {
                *last = None;
                *self.last_failure.lock().expect("health mutex poisoned") = Some(Instant::now());
            }
        }
    }

    /// Whether a store call has failed to reach the store since `at`.
    pub fn failed_since(&self, at: Instant) -> bool {
        self.last_failure
            .lock()
            .expect("health mutex poisoned")
            .is_some_and(|failed| failed >= at)
    }

    /// The store answered within the last [`FRESH_FOR`].
    pub fn fresh(&self) -> bool {
        self.last_answer
            .lock()
            .expect("health mutex poisoned")
            .is_some_and(|t| t.elapsed() < FRESH_FOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_makes_an_earlier_answer_stale() {
        let h = StoreHealth::default();
        assert!(!h.fresh());
        h.record::<()>(&Err(StoreError::PreconditionFailed));
        assert!(h.fresh());
        h.record::<()>(&Err(StoreError::Unavailable("down".into())));
        assert!(!h.fresh());
        h.record(&Ok(()));
        assert!(h.fresh());
    }
}
