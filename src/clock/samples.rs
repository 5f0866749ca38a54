//! The store's clock estimated from the `Date` of its answers, with no I/O: samples go in with
//! the monotonic times of their request and answer, windows come out for a monotonic time. The
//! S3 store feeds it (and decides which answers are samples at all); tests feed it by hand.
//!
//! Each sample bounds the store's time: its `Date` has whole seconds and was stamped between the
//! request's send and the answer's receipt, so at receipt the store's time was at least `Date`,
//! and at send it was below `Date + 1 s`. Carried forward by this process's monotonic time, every
//! honest sample's interval contains the store's true time, so honest intervals always overlap.
//!
//! A store is many hosts (gateways, nodes behind a load balancer), and one of them may have a
//! wrong clock, or the store's clock may step. So no one sample is trusted to move the window
//! forward: expiry is judged at the *lowest* lower bound among the recent samples (a sample
//! ahead of the others cannot raise it), and leases are stamped at the *highest* upper bound (a
//! sample behind cannot shorten a lease). A wrong host, ahead or behind, or a step either way,
//! can then only widen the window: takeovers come later, never earlier, and a window wider than
//! the configured bound refuses takeovers of expired leases altogether (see
//! [`TimeWindow::too_wide`]). A sample whose interval misses another recent one by more than
//! [`TOLERANCE`] cannot be honest: the caller counts it.
//!
//! Samples age out after [`HORIZON`], measured from the newest sample (an idle replica keeps
//! its last ones), so a wrong host that stops answering stops widening the window, and a
//! store clock that stepped is followed once every sample from before the step is gone.

use std::collections::VecDeque;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};

use super::TimeWindow;

/// How long a sample counts. Long enough that a wrong host answering a few calls in a row
/// cannot push the honest samples out, short enough that a replica stops refusing takeovers
/// soon after the wrong host goes quiet.
pub const HORIZON: StdDuration = StdDuration::from_secs(60);

/// Samples are kept merged per slot of arrival time: memory stays bounded (`HORIZON / SLOT`
/// slots) however many calls a second the replica makes.
const SLOT: StdDuration = StdDuration::from_secs(1);

/// How far two samples' intervals may miss each other before one is called an outlier: the
/// monotonic clock's drift over [`HORIZON`] (well under 100 ppm) and the odd millisecond of
/// rounding, with room to spare.
pub const TOLERANCE: Duration = Duration::milliseconds(50);

/// One answer's `Date`, with the monotonic times of its request's send and its receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateSample {
    pub date: DateTime<Utc>,
    pub sent: StdDuration,
    pub received: StdDuration,
}

impl DateSample {
    /// The store's time at this process's monotonic origin, as this sample bounds it. Kept at
    /// the origin, bounds of samples taken at different moments compare directly.
    fn bounds(&self) -> Bounds {
        Bounds {
            lo: self.date - chrono_of(self.received),
            hi: self.date + Duration::seconds(1) - chrono_of(self.sent.min(self.received)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bounds {
    lo: DateTime<Utc>,
    hi: DateTime<Utc>,
}

/// The samples that arrived within one [`SLOT`], merged.
#[derive(Debug, Clone, Copy)]
struct Slot {
    index: u64,
    /// The lowest lower bound and the highest upper bound: the window's ends.
    lo_min: DateTime<Utc>,
    hi_max: DateTime<Utc>,
    /// The highest lower bound and the lowest upper bound: what a new sample must overlap.
    lo_max: DateTime<Utc>,
    hi_min: DateTime<Utc>,
}

impl Slot {
    fn new(index: u64, b: Bounds) -> Self {
        Self {
            index,
            lo_min: b.lo,
            hi_max: b.hi,
            lo_max: b.lo,
            hi_min: b.hi,
        }
    }

    fn merge(&mut self, b: Bounds) {
        self.lo_min = self.lo_min.min(b.lo);
        self.hi_max = self.hi_max.max(b.hi);
        self.lo_max = self.lo_max.max(b.lo);
        self.hi_min = self.hi_min.min(b.hi);
    }
}

/// The recent samples of the store's clock, and the window of its time they allow.
#[derive(Debug, Clone)]
pub struct DateSamples {
    /// Oldest first.
    slots: VecDeque<Slot>,
    /// A window wider than this refuses takeovers of expired leases; `None`: no bound.
    max_width: Option<Duration>,
    /// The highest `latest` handed out. A window may narrow from above when a sample ahead ages
    /// out; stamps never step back all the same, so each write's `lock_time` is at least the
    /// previous one's (raising an upper bound keeps it an upper bound).
    latest_floor: Option<DateTime<Utc>>,
}

impl DateSamples {
    pub fn new(max_width: Option<StdDuration>) -> Self {
        Self {
            slots: VecDeque::new(),
            max_width: max_width.map(chrono_of),
            latest_floor: None,
        }
    }

    /// Whether any sample has been recorded.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Takes one sample; `true` when it disagrees with a recent one by more than its own
    /// uncertainty explains (one of the two came from a wrong clock, or the store's clock stepped).
    pub fn record(&mut self, sample: DateSample) -> bool {
        let b = sample.bounds();
        let outlier = self
            .slots
            .iter()
            .any(|s| b.lo - s.hi_min > TOLERANCE || s.lo_max - b.hi > TOLERANCE);
        let index = slot_of(sample.received);
        // Answers arrive nearly in order; a late one joins its own slot, wherever that is.
        match self.slots.iter().rposition(|s| s.index <= index) {
            Some(i) if self.slots[i].index == index => self.slots[i].merge(b),
            Some(i) => self.slots.insert(i + 1, Slot::new(index, b)),
            None => self.slots.push_front(Slot::new(index, b)),
        }
        let newest = self.slots.back().map_or(index, |s| s.index);
        let keep = HORIZON.as_secs() / SLOT.as_secs();
        while self
            .slots
            .front()
            .is_some_and(|s| s.index.saturating_add(keep) < newest)
        {
            self.slots.pop_front();
        }
        outlier
    }

    /// The store's time at monotonic time `now`, or `None` before the first sample.
    pub fn window(&mut self, now: StdDuration) -> Option<TimeWindow> {
        let lo = self.slots.iter().map(|s| s.lo_min).min()?;
        let hi = self.slots.iter().map(|s| s.hi_max).max()?;
        let since = chrono_of(now);
        let earliest = lo + since;
        let mut latest = hi + since;
        if let Some(floor) = self.latest_floor {
            latest = latest.max(floor);
        }
        self.latest_floor = Some(latest);
        let window = TimeWindow::between(earliest, latest);
        Some(match self.max_width {
            Some(max) => window.with_max_width(max),
            None => window,
        })
    }
}

fn slot_of(t: StdDuration) -> u64 {
    t.as_secs() / SLOT.as_secs()
}

fn chrono_of(d: StdDuration) -> Duration {
    Duration::from_std(d).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_WIDTH: Option<StdDuration> = Some(StdDuration::from_secs(10));

    /// The store's true time when this process's monotonic clock read 0.
    fn origin() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-03T12:00:00.400Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn secs(s: f64) -> StdDuration {
        StdDuration::from_secs_f64(s)
    }

    /// What the store's true time is at monotonic time `t`.
    fn truth(t: StdDuration) -> DateTime<Utc> {
        origin() + chrono_of(t)
    }

    /// An answer sent at `t` that took 20 ms, stamped by a host whose clock is `off` seconds
    /// from the store's true time, in whole seconds as `Date` has them.
    fn answer(t: f64, off: i64) -> DateSample {
        let (sent, received) = (secs(t), secs(t + 0.02));
        let stamped = truth(secs(t + 0.01)) + Duration::seconds(off);
        let date = DateTime::from_timestamp(stamped.timestamp(), 0).unwrap();
        DateSample {
            date,
            sent,
            received,
        }
    }

    fn covers_truth(w: TimeWindow, t: StdDuration) -> bool {
        w.earliest <= truth(t) && truth(t) <= w.latest
    }

    /// Honest samples, one every half second from `from` to `to`; how many were outliers.
    fn honest(samples: &mut DateSamples, from: f64, to: f64) -> usize {
        let mut outliers = 0;
        let mut t = from;
        while t < to {
            outliers += usize::from(samples.record(answer(t, 0)));
            t += 0.5;
        }
        outliers
    }

    #[test]
    fn there_is_no_window_before_the_first_sample() {
        assert_eq!(DateSamples::new(MAX_WIDTH).window(secs(1.0)), None);
    }

    #[test]
    fn honest_samples_give_a_narrow_window_around_the_store_time() {
        let mut s = DateSamples::new(MAX_WIDTH);
        assert_eq!(
            honest(&mut s, 0.0, 10.0),
            0,
            "honest samples always overlap"
        );
        let w = s.window(secs(10.0)).unwrap();
        assert!(covers_truth(w, secs(10.0)), "{w:?}");
        assert!(
            w.latest - w.earliest < Duration::milliseconds(2100),
            "{w:?}"
        );
        assert!(!w.too_wide());
    }

    #[test]
    fn a_host_ahead_never_moves_earliest_forward_and_is_counted() {
        let mut s = DateSamples::new(MAX_WIDTH);
        honest(&mut s, 0.0, 5.0);
        let before = s.window(secs(5.0)).unwrap();
        assert!(
            s.record(answer(5.0, 30)),
            "a sample 30 s ahead is an outlier"
        );
        let w = s.window(secs(5.0)).unwrap();
        assert_eq!(
            w.earliest, before.earliest,
            "the liar cannot raise earliest"
        );
        assert!(covers_truth(w, secs(5.0)));
        assert!(w.latest >= truth(secs(5.0)) + Duration::seconds(30));
        assert!(w.too_wide(), "{w:?}");
    }

    #[test]
    fn a_host_behind_never_shortens_a_stamp_and_only_delays_expiry() {
        let mut s = DateSamples::new(MAX_WIDTH);
        honest(&mut s, 0.0, 5.0);
        let before = s.window(secs(5.0)).unwrap();
        assert!(
            s.record(answer(5.0, -30)),
            "a sample 30 s behind is an outlier"
        );
        let w = s.window(secs(5.0)).unwrap();
        assert!(w.latest >= before.latest, "the liar cannot lower latest");
        assert!(w.earliest <= truth(secs(5.0)) - Duration::seconds(29));
        assert!(w.too_wide());
    }

    #[test]
    fn hosts_that_lie_on_half_the_answers_never_raise_earliest_past_the_truth() {
        let mut s = DateSamples::new(MAX_WIDTH);
        honest(&mut s, 0.0, 1.0);
        for i in 20..400 {
            let t = f64::from(i) * 0.05;
            s.record(answer(t, if i % 2 == 0 { 30 } else { 0 }));
            let w = s.window(secs(t + 0.02)).unwrap();
            assert!(w.earliest <= truth(secs(t + 0.02)), "at {t}: {w:?}");
        }
    }

    #[test]
    fn a_store_clock_stepping_forward_is_not_followed_until_the_old_samples_age_out() {
        let mut s = DateSamples::new(MAX_WIDTH);
        honest(&mut s, 0.0, 5.0);
        // From now on the store's every answer is 20 s ahead of before.
        assert!(s.record(answer(5.0, 20)));
        let w = s.window(secs(6.0)).unwrap();
        assert!(
            covers_truth(w, secs(6.0)),
            "expiry still judged on the old clock"
        );
        assert!(w.too_wide());
        let mut t = 5.5;
        while t < 5.0 + HORIZON.as_secs_f64() + 2.0 {
            s.record(answer(t, 20));
            let w = s.window(secs(t)).unwrap();
            if t < 5.0 + HORIZON.as_secs_f64() - 1.0 {
                assert!(
                    w.earliest <= truth(secs(t)),
                    "earliest moved forward while the old samples were recent, at {t}"
                );
            }
            t += 0.5;
        }
        let w = s.window(secs(t)).unwrap();
        assert!(
            w.earliest > truth(secs(t)),
            "the new clock is followed in the end"
        );
        assert!(!w.too_wide(), "and the window narrows again: {w:?}");
    }

    #[test]
    fn a_store_clock_stepping_back_is_followed_at_once_for_expiry_but_never_for_stamps() {
        let mut s = DateSamples::new(MAX_WIDTH);
        honest(&mut s, 0.0, 5.0);
        let before = s.window(secs(5.0)).unwrap();
        assert!(s.record(answer(5.0, -20)));
        let w = s.window(secs(5.5)).unwrap();
        assert!(w.earliest <= truth(secs(5.5)) - Duration::seconds(19));
        assert!(w.latest >= before.latest + Duration::milliseconds(500));
    }

    #[test]
    fn samples_of_a_host_behind_age_out_and_the_window_narrows() {
        let mut s = DateSamples::new(MAX_WIDTH);
        honest(&mut s, 0.0, 2.0);
        assert!(s.record(answer(2.0, -30)));
        assert!(s.window(secs(2.0)).unwrap().too_wide());
        let end = 2.5 + HORIZON.as_secs_f64() + 2.0;
        honest(&mut s, 2.5, end);
        let w = s.window(secs(end)).unwrap();
        assert!(!w.too_wide(), "{w:?}");
        assert!(covers_truth(w, secs(end)));
    }

    #[test]
    fn an_idle_replica_keeps_its_last_samples() {
        let mut s = DateSamples::new(MAX_WIDTH);
        honest(&mut s, 0.0, 2.0);
        let later = secs(2.0 + 10.0 * HORIZON.as_secs_f64());
        let w = s.window(later).unwrap();
        assert!(covers_truth(w, later), "{w:?}");
    }

    #[test]
    fn a_suspended_process_whose_monotonic_clock_counted_the_suspend_still_covers_the_store_time() {
        // The monotonic source counts time suspended (CLOCK_BOOTTIME): the window moves on by
        // the suspend, and the first answer after it agrees with the samples before.
        let mut s = DateSamples::new(MAX_WIDTH);
        honest(&mut s, 0.0, 2.0);
        let woke = secs(2.0 + 300.0);
        assert!(covers_truth(s.window(woke).unwrap(), woke));
        assert!(!s.record(answer(302.0, 0)));
        assert!(!s.window(secs(302.1)).unwrap().too_wide());
    }

    #[test]
    fn a_monotonic_clock_that_stopped_during_a_suspend_is_caught_by_the_next_answer() {
        // A source that did not count the 300 s suspended (CLOCK_MONOTONIC): by it only 0.5 s
        // passed, while the store's answer says 300.5 s did. That answer is an outlier and the
        // window grows too wide to take over expired leases, rather than judging them late.
        let mut s = DateSamples::new(MAX_WIDTH);
        honest(&mut s, 0.0, 2.0);
        assert!(s.record(answer(2.0, 300)));
        let w = s.window(secs(2.1)).unwrap();
        assert!(w.too_wide(), "{w:?}");
        assert!(w.latest >= truth(secs(2.1)) + Duration::seconds(300));
    }

    #[test]
    fn stamps_never_step_back_when_a_host_ahead_ages_out() {
        let mut s = DateSamples::new(MAX_WIDTH);
        honest(&mut s, 0.0, 2.0);
        s.record(answer(2.0, 30));
        let ahead = s.window(secs(2.0)).unwrap().latest;
        let end = 2.5 + HORIZON.as_secs_f64() + 2.0;
        honest(&mut s, 2.5, end);
        assert!(s.window(secs(end)).unwrap().latest >= ahead);
    }

    #[test]
    fn an_answer_that_arrives_late_joins_its_own_slot() {
        let mut s = DateSamples::new(MAX_WIDTH);
        honest(&mut s, 0.0, 3.0);
        assert!(!s.record(answer(0.2, 0)));
        assert!(!s.record(answer(3.5, 0)));
        let indexes: Vec<u64> = s.slots.iter().map(|x| x.index).collect();
        assert_eq!(indexes, [0, 1, 2, 3]);
    }
}
