//! Prometheus metrics for `GET /metrics`.
//!
//! Each app owns its own recorder instead of installing the `metrics` crate's process-global
//! one: a global recorder can be installed only once per process, and the API tests run many
//! apps in one process, each of which must count only its own traffic. So the engine, the HTTP
//! layer and the S3 store are handed a cheap clone of one [`Metrics`] and record through it.

use std::sync::Arc;
use std::time::Duration;

use metrics::{Key, KeyName, Label, Level, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

const META: Metadata<'static> = Metadata::new("s3lock", Level::INFO, Some(module_path!()));

/// Latency buckets in seconds: from a local-store answer (sub-millisecond) to a long wait.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Hold-time buckets in seconds: from a lock taken for one quick step to one held all day.
const HOLD_BUCKETS: &[f64] = &[
    0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14_400.0, 86_400.0,
];

/// Wait-time buckets in seconds: from a lock handed over at once to the longest wait allowed
/// (`--max-wait`, at most an hour).
const WAIT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

pub const HTTP_REQUESTS: &str = "s3lock_http_requests_total";
pub const HTTP_DURATION: &str = "s3lock_http_request_duration_seconds";
pub const GRANTS: &str = "s3lock_grants_total";
pub const EXPIRY_TAKEOVERS: &str = "s3lock_expiry_takeovers_total";
pub const CONFLICTS: &str = "s3lock_conflicts_total";
pub const RENEWALS: &str = "s3lock_renewals_total";
pub const RENEW_FAILURES: &str = "s3lock_renew_failures_total";
pub const RELEASES: &str = "s3lock_releases_total";
pub const BREAKS: &str = "s3lock_breaks_total";
pub const WAITERS: &str = "s3lock_waiters";
pub const LOCK_HOLD: &str = "s3lock_lock_hold_seconds";
pub const ACQUIRE_WAIT: &str = "s3lock_acquire_wait_seconds";
pub const S3_REQUESTS: &str = "s3lock_s3_requests_total";
pub const S3_ERRORS: &str = "s3lock_s3_errors_total";
pub const PEER_HINTS: &str = "s3lock_peer_hints_total";
pub const PEER_HINTS_RECEIVED: &str = "s3lock_peer_hints_received_total";
pub const CONNECTIONS_REFUSED: &str = "s3lock_connections_refused_total";
pub const CONNECTIONS_OPEN: &str = "s3lock_connections_open";
pub const WATCHED_LOCKS_REFUSED: &str = "s3lock_watched_locks_refused_total";
pub const REQUESTS_SHED: &str = "s3lock_requests_shed_total";
pub const REQUESTS_IN_FLIGHT: &str = "s3lock_lock_requests_in_flight";
pub const S3_SLOT_TIMEOUTS: &str = "s3lock_s3_slot_timeouts_total";
pub const TLS_HANDSHAKE_FAILURES: &str = "s3lock_tls_handshake_failures_total";
pub const TLS_RELOADS: &str = "s3lock_tls_reloads_total";
pub const STORE_CLOCK_OUTLIERS: &str = "s3lock_store_clock_outliers_total";
pub const STORE_CLOCK_SPREAD: &str = "s3lock_store_clock_spread_seconds";

/// How often histogram samples are folded into their buckets when nobody scrapes `/metrics`.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The recorder keeps every histogram sample until an upkeep folds it into its buckets; without
/// a periodic one, a server nobody scrapes grows by each request's sample (measured at ~38 bytes
/// a request). The task holds only a weak reference, so it ends with the last `Metrics` clone.
fn spawn_upkeep(recorder: std::sync::Weak<PrometheusRecorder>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return; // no runtime (a plain unit test): renders still do their own upkeep
    };
    runtime.spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let Some(recorder) = recorder.upgrade() else {
                return;
            };
            recorder.handle().run_upkeep();
        }
    });
}

/// One app's metrics. Cloning shares the same counters.
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), LATENCY_BUCKETS)
            .expect("the latency buckets are not empty")
            .set_buckets_for_metric(Matcher::Full(LOCK_HOLD.into()), HOLD_BUCKETS)
            .expect("the hold buckets are not empty")
            .set_buckets_for_metric(Matcher::Full(ACQUIRE_WAIT.into()), WAIT_BUCKETS)
            .expect("the wait buckets are not empty")
            .build_recorder();
        let help: &[(&str, &str)] = &[
            (
                HTTP_REQUESTS,
                "HTTP requests by route template, method and status",
            ),
            (
                GRANTS,
                "locks granted to a new holder (expiry takeovers included)",
            ),
            (
                EXPIRY_TAKEOVERS,
                "grants of a lock whose previous lease had run out unreleased",
            ),
            (
                CONFLICTS,
                "acquires refused because another owner held the lock",
            ),
            (RENEWALS, "successful renewals"),
            (RENEW_FAILURES, "renewals refused or failed, by reason"),
            (RELEASES, "locks released by their holder"),
            (BREAKS, "locks broken by an admin"),
            (S3_REQUESTS, "S3 calls made, by operation"),
            (
                S3_ERRORS,
                "S3 calls that failed, by operation and kind of error",
            ),
            (
                PEER_HINTS,
                "wake-up hints sent to peers, by outcome (sent, refused, failed, unresolved, dropped)",
            ),
            (
                CONNECTIONS_REFUSED,
                "client connections closed at once because S3LOCK_MAX_CONNECTIONS were open",
            ),
            (
                WATCHED_LOCKS_REFUSED,
                "waits and watches refused 503 too-many-watched-locks because \
                 S3LOCK_MAX_WATCHED_LOCKS locks were watched",
            ),
            (
                REQUESTS_SHED,
                "lock requests refused 503 overloaded because S3LOCK_MAX_IN_FLIGHT were in flight",
            ),
            (
                S3_SLOT_TIMEOUTS,
                "S3 calls never sent because no call slot came free within S3LOCK_S3_TIMEOUT, \
                 by priority (decision, background)",
            ),
            (
                TLS_HANDSHAKE_FAILURES,
                "TLS connections closed before their handshake completed, by reason (timeout: \
                 not done within --header-timeout; refused: not TLS, no or an untrusted client \
                 certificate, no common protocol)",
            ),
            (
                TLS_RELOADS,
                "changes of the TLS files seen, by outcome (reloaded; failed: the previous \
                 certificate stays)",
            ),
            (
                PEER_HINTS_RECEIVED,
                "wake-up hints received from peers, by outcome (accepted, refused)",
            ),
            (
                STORE_CLOCK_OUTLIERS,
                "store answers whose Date disagreed with another recent one by more than its \
                 uncertainty (a store host with a wrong clock, or a step of the store's clock)",
            ),
        ];
        for (name, text) in help {
            recorder.describe_counter(KeyName::from_const_str(name), None, (*text).into());
        }
        recorder.describe_gauge(
            KeyName::from_const_str(WAITERS),
            None,
            "acquires blocked waiting for a lock in this process now".into(),
        );
        recorder.describe_gauge(
            KeyName::from_const_str(REQUESTS_IN_FLIGHT),
            None,
            "lock requests in flight now (waits and watches included)".into(),
        );
        recorder.describe_gauge(
            KeyName::from_const_str(CONNECTIONS_OPEN),
            None,
            "client connections open now".into(),
        );
        recorder.describe_gauge(
            KeyName::from_const_str(STORE_CLOCK_SPREAD),
            Some(Unit::Seconds),
            "width of this replica's window on the store's clock (about 2 s when the store's \
             hosts agree); above --max-clock-spread, expired leases are not taken over"
                .into(),
        );
        recorder.describe_histogram(
            KeyName::from_const_str(HTTP_DURATION),
            Some(Unit::Seconds),
            "HTTP request latency by route template and method".into(),
        );
        recorder.describe_histogram(
            KeyName::from_const_str(LOCK_HOLD),
            Some(Unit::Seconds),
            "how long locks were held, from the grant (renews included) to the release, the \
             break, or the end of a lease that ran out and was taken over"
                .into(),
        );
        recorder.describe_histogram(
            KeyName::from_const_str(ACQUIRE_WAIT),
            Some(Unit::Seconds),
            "how long acquires that had to wait for a lock waited, by outcome (granted, \
             refused)"
                .into(),
        );
        let recorder = Arc::new(recorder);
        spawn_upkeep(Arc::downgrade(&recorder));
        Self { recorder }
    }

    /// The Prometheus text exposition of everything recorded so far.
    pub fn render(&self) -> String {
        let handle = self.recorder.handle();
        handle.run_upkeep();
        handle.render()
    }

    pub fn count(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        self.recorder
            .register_counter(&key(name, labels), &META)
            .increment(1);
    }

    pub fn http_request(&self, route: &str, method: &str, status: u16, took: Duration) {
        let status = status.to_string();
        self.count(
            HTTP_REQUESTS,
            &[("route", route), ("method", method), ("status", &status)],
        );
        self.recorder
            .register_histogram(
                &key(HTTP_DURATION, &[("route", route), ("method", method)]),
                &META,
            )
            .record(took.as_secs_f64());
    }

    /// One sample of a histogram, in seconds.
    pub fn observe(&self, name: &'static str, labels: &[(&'static str, &str)], took: Duration) {
        self.recorder
            .register_histogram(&key(name, labels), &META)
            .record(took.as_secs_f64());
    }

    /// A hold of a lock ended (a release, a break, a lease that ran out taken over) after
    /// `held`, if the lock's document knew when it was granted.
    pub fn hold_ended(&self, held: Option<Duration>) {
        if let Some(held) = held {
            self.observe(LOCK_HOLD, &[], held);
        }
    }

    /// One S3 call and how it ended: `None` for success, else the kind of error.
    pub fn s3_call(&self, op: &'static str, error: Option<&'static str>) {
        self.count(S3_REQUESTS, &[("op", op)]);
        if let Some(kind) = error {
            self.count(S3_ERRORS, &[("op", op), ("kind", kind)]);
        }
    }

    pub fn set_gauge(&self, name: &'static str, value: f64) {
        self.recorder
            .register_gauge(&Key::from_static_name(name), &META)
            .set(value);
    }

    /// Counts a blocked waiter until the returned guard is dropped.
    pub fn waiting(&self) -> GaugeGuard {
        self.gauge_guard(WAITERS)
    }

    /// Counts a lock request in flight until the returned guard is dropped.
    pub fn lock_request(&self) -> GaugeGuard {
        self.gauge_guard(REQUESTS_IN_FLIGHT)
    }

    /// Counts an open client connection until the returned guard is dropped.
    pub fn connection_open(&self) -> GaugeGuard {
        self.gauge_guard(CONNECTIONS_OPEN)
    }

    fn gauge_guard(&self, name: &'static str) -> GaugeGuard {
        let gauge = self
            .recorder
            .register_gauge(&Key::from_static_name(name), &META);
        gauge.increment(1.0);
        GaugeGuard(gauge)
    }
}

/// Decrements a gauge when what it counts ends (a waiting acquire, a connection), however it
/// ends.
pub struct GaugeGuard(metrics::Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(*k, SharedString::from(v.to_string())))
        .collect();
    Key::from_parts(name, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_apps_count_separately() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.count(GRANTS, &[]);
        a.count(GRANTS, &[]);
        b.count(GRANTS, &[]);
        assert!(
            a.render().contains("s3lock_grants_total 2"),
            "{}",
            a.render()
        );
        assert!(
            b.render().contains("s3lock_grants_total 1"),
            "{}",
            b.render()
        );
    }

    #[test]
    fn the_waiters_gauge_falls_when_the_guard_drops() {
        let m = Metrics::new();
        let g = m.waiting();
        assert!(m.render().contains("s3lock_waiters 1"), "{}", m.render());
        drop(g);
        assert!(m.render().contains("s3lock_waiters 0"), "{}", m.render());
    }
}
