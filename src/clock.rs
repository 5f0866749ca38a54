//! Time, injected. The engine never reads a wall clock itself: it asks a [`Clock`] for the
//! store's current time, as a window `[earliest, latest]` that surely contains it.
//!
//! Why a window: replicas judge expiry against the *store's* clock (the S3 server's `Date`
//! header, which has whole-second resolution), so each replica only knows that time within some
//! error. Deciding "has this lease expired?" uses `earliest` (never early), and stamping a new
//! lease uses `latest` (the stored lease then always covers what the holder was told).

use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

/// The store's time as known to this process: the true time lies within `[earliest, latest]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    pub earliest: DateTime<Utc>,
    pub latest: DateTime<Utc>,
}

impl TimeWindow {
    /// A window with no uncertainty, for clocks that *are* the store's clock.
    pub fn exact(t: DateTime<Utc>) -> Self {
        Self {
            earliest: t,
            latest: t,
        }
    }
}

/// A source of the store's current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> TimeWindow;
}

/// The local system clock: right for stores that live in this process (memory, local).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one sanctioned read of the wall clock
    fn now(&self) -> TimeWindow {
        TimeWindow::exact(Utc::now())
    }
}

/// A clock that tests move by hand.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    pub fn advance(&self, by: Duration) {
        *self.now.lock().expect("clock mutex poisoned") += by;
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.now.lock().expect("clock mutex poisoned") = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> TimeWindow {
        TimeWindow::exact(*self.now.lock().expect("clock mutex poisoned"))
    }
}

/// Another clock shifted by a fixed offset: a replica whose idea of time is wrong.
#[derive(Debug)]
pub struct OffsetClock<C> {
    pub inner: C,
    pub offset: Duration,
}

impl<C: Clock> Clock for OffsetClock<C> {
    fn now(&self) -> TimeWindow {
        let w = self.inner.now();
        TimeWindow {
            earliest: w.earliest + self.offset,
            latest: w.latest + self.offset,
        }
    }
}
