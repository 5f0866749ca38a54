//! The one retry policy: how long to pause before each retry of a call that failed. Every retry
//! loop of the crate (the read-back of a write in doubt, the orphan watcher, the CLI's renew and
//! release, `s3lock check`, the bench) takes its pauses from a [`Backoff`] instead of doubling
//! its own, and so does the per-lock watcher's poll (`lock/watchers.rs`).
//!
//! Written here rather than taken from a crate: `backon` and `tokio-retry` own the retry loop
//! (they call a closure until it succeeds), while these loops need only the pauses. Each one
//! decides what to do from what its call returned, and the watcher starts its schedule over on
//! a peer's hint and cuts a pause short at a lease's end.

use std::time::Duration;

use rand::{Rng, RngCore};

/// A schedule of pauses: `first`, then each `factor` times the one before, never above `max`;
/// optionally jittered.
pub struct Backoff {
    first: Duration,
    /// The pause the next call to [`Backoff::next_pause`] returns (before jitter).
    next: Duration,
    factor: u32,
    max: Duration,
    /// With jitter, each pause is drawn from [half, all] of the scheduled one, so that many
    /// callers that failed together do not retry together. Injectable, so a test can seed it.
    jitter: Option<Box<dyn RngCore + Send + Sync>>,
}

impl std::fmt::Debug for Backoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backoff")
            .field("next", &self.next)
            .field("factor", &self.factor)
            .field("max", &self.max)
            .field("jitter", &self.jitter.is_some())
            .finish()
    }
}

impl Backoff {
    /// Pauses of `first`, then each `factor` times the one before, at most `max`.
    pub fn exponential(first: Duration, factor: u32, max: Duration) -> Self {
        Self {
            first,
            next: first.min(max),
            factor,
            max,
            jitter: None,
        }
    }

    /// The same pause every time.
    pub fn constant(pause: Duration) -> Self {
        Self::exponential(pause, 1, pause)
    }

    /// Draws each pause from [half, all] of the scheduled one, with `rng`.
    pub fn with_jitter(mut self, rng: impl RngCore + Send + Sync + 'static) -> Self {
        self.jitter = Some(Box::new(rng));
        self
    }

    /// The pause before the next retry; the schedule moves on.
    pub fn next_pause(&mut self) -> Duration {
        self.next_pause_at_most(Duration::MAX)
    }

    /// As [`Backoff::next_pause`], with this one pause cut to `cap` before the jitter (a poller
    /// that knows when the thing it waits for is due); the schedule moves on as usual.
    pub fn next_pause_at_most(&mut self, cap: Duration) -> Duration {
        let scheduled = self.next.min(cap);
        self.next = self.next.saturating_mul(self.factor).min(self.max);
        match &mut self.jitter {
            Some(rng) => rng.random_range(scheduled / 2..=scheduled),
            None => scheduled,
        }
    }

    /// Sleeps the pause before the next retry.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_pause()).await;
    }

    /// Starts the schedule again from the first pause (after a success).
    pub fn reset(&mut self) {
        self.next = self.first.min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn pauses_double_up_to_the_maximum() {
        let mut b = Backoff::exponential(ms(100), 2, ms(500));
        let pauses: Vec<_> = (0..5).map(|_| b.next_pause()).collect();
        assert_eq!(pauses, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
    }

    #[test]
    fn a_capped_pause_is_cut_but_the_schedule_moves_on() {
        let mut b = Backoff::exponential(ms(100), 2, ms(500));
        assert_eq!(b.next_pause_at_most(ms(30)), ms(30));
        assert_eq!(b.next_pause_at_most(ms(1_000)), ms(200));
        assert_eq!(b.next_pause(), ms(400));
    }

    #[test]
    fn a_constant_backoff_pauses_the_same_every_time() {
        let mut b = Backoff::constant(ms(20));
        assert_eq!(
            [b.next_pause(), b.next_pause(), b.next_pause()],
            [ms(20); 3]
        );
    }

    #[test]
    fn reset_starts_again_from_the_first_pause() {
        let mut b = Backoff::exponential(ms(10), 3, Duration::MAX);
        assert_eq!((b.next_pause(), b.next_pause()), (ms(10), ms(30)));
        b.reset();
        assert_eq!(b.next_pause(), ms(10));
    }

    #[test]
    fn a_schedule_without_a_maximum_saturates_instead_of_overflowing() {
        let mut b = Backoff::exponential(Duration::from_secs(u64::MAX / 2), 4, Duration::MAX);
        b.next_pause();
        assert_eq!(b.next_pause(), Duration::MAX);
    }

    #[test]
    fn jittered_pauses_stay_within_half_and_all_of_the_schedule_and_follow_the_seed() {
        let run = |seed| {
            let mut b =
                Backoff::exponential(ms(100), 2, ms(800)).with_jitter(StdRng::seed_from_u64(seed));
            (0..6).map(|_| b.next_pause()).collect::<Vec<_>>()
        };
        let pauses = run(7);
        let schedule = [100, 200, 400, 800, 800, 800].map(ms);
        for (pause, full) in pauses.iter().zip(schedule) {
            assert!(
                *pause >= full / 2 && *pause <= full,
                "{pause:?} of {full:?}"
            );
        }
        assert_eq!(pauses, run(7), "the same seed gives the same pauses");
        assert_ne!(pauses, run(8), "another seed gives others");
    }
}
