//! Time, injected. The engine never reads a wall clock itself: it asks a [`Clock`] for the
//! store's current time, as a window `[earliest, latest]` that surely contains it.
//!
//! Why a window: replicas judge expiry against the *store's* clock (the S3 server's `Date`
//! header, which has whole-second resolution), so each replica only knows that time within some
//! error. Deciding "has this lease expired?" uses `earliest` (never early), and stamping a new
//! lease uses `latest` (the stored lease then always covers what the holder was told).

pub mod samples;

use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

/// The store's time as known to this process: the true time lies within `[earliest, latest]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    pub earliest: DateTime<Utc>,
    pub latest: DateTime<Utc>,
    /// The widest this window may be and still take over expired leases; `None`: any width.
    /// A wider window means the store's clocks disagree beyond what the operator allows, so
    /// one of them is wrong and nobody can tell which (see [`TimeWindow::too_wide`]).
    pub max_width: Option<Duration>,
}

impl TimeWindow {
    /// A window with no uncertainty, for clocks that *are* the store's clock.
    pub fn exact(t: DateTime<Utc>) -> Self {
        Self::between(t, t)
    }

    /// The window `[earliest, latest]`, with no bound on its width.
    pub fn between(earliest: DateTime<Utc>, latest: DateTime<Utc>) -> Self {
        Self {
            earliest,
            latest,
            max_width: None,
        }
    }

    pub fn with_max_width(self, max_width: Duration) -> Self {
        Self {
            max_width: Some(max_width),
            ..self
        }
    }

    pub fn width(&self) -> Duration {
        self.latest - self.earliest
    }

    /// Whether this window is wider than its bound. Judging expiry at `earliest` stays safe
    /// however wide the window is, but a wide one says the store's hosts disagree: one whose
    /// clock is ahead may be the only one heard once the others' samples age out.
    pub fn too_wide(&self) -> bool {
        self.max_width.is_some_and(|max| self.width() > max)
    }
}

/// This process's monotonic time since an arbitrary origin, counting any time the machine was
/// suspended. A source that stops while suspended would carry the store's time forward too
/// slowly, and stamp leases too early after a resume.
pub trait Monotonic: Send + Sync + std::fmt::Debug {
    fn now(&self) -> std::time::Duration;
}

/// `CLOCK_BOOTTIME`: monotonic, and counting suspend (std's `Instant` is `CLOCK_MONOTONIC` on
/// Linux, which does not).
#[derive(Debug, Default, Clone, Copy)]
pub struct BootTime;

impl Monotonic for BootTime {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn now(&self) -> std::time::Duration {
        let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
            .expect("CLOCK_BOOTTIME is always readable on Linux");
        std::time::Duration::new(
            u64::try_from(t.tv_sec()).unwrap_or(0),
            u32::try_from(t.tv_nsec()).unwrap_or(0),
        )
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn now(&self) -> std::time::Duration {
        static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        ORIGIN.get_or_init(std::time::Instant::now).elapsed()
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
            ..w
        }
    }
}
