//! The S3 backend. Every S3 quirk stays in this file:
//!
//! * `412 Precondition Failed` → [`StoreError::PreconditionFailed`];
//! * `409 ConditionalRequestConflict` (a concurrent conditional write on AWS) means "retry", so it
//!   is also a failed precondition: the engine re-reads and decides again, it never reads it as
//!   "held";
//! * `404` to an `If-Match` PUT (AWS, moto, LocalStack, when the key is missing) is a failed
//!   precondition too, not a missing bucket;
//! * timeouts, connection errors, `5xx`, `429`/`SlowDown` → [`StoreError::Unavailable`] (after
//!   the SDK's own bounded retries);
//! * the server's clock is read from the `Date` header of the store's own answers, those with a
//!   request id and not a `5xx` ([`S3Clock`], [`is_store_answer`]);
//! * every call is counted in the metrics, by operation and, when it fails, by kind of error;
//! * at most [`MAX_CONCURRENT_REQUESTS`] calls are in flight, lock decisions first (see
//!   [`slots`](super::slots)); a call that finds no slot within the S3 timeout is never sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::interceptors::{
    BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::slots::{CallSlots, Priority, Slot};
use super::{ListPage, Store, StoreError, Version, Versioned};
use crate::clock::samples::{DateSample, DateSamples};
use crate::clock::{BootTime, Clock, Monotonic, SystemClock, TimeWindow};
use crate::metrics::{self as m, Metrics};

/// How to reach the S3 store. Credentials and region come from the standard AWS chain.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// Overrides the endpoint (`AWS_ENDPOINT_URL` works too, through the standard chain).
    pub endpoint: Option<String>,
    /// Path-style addressing (`http://host/bucket/key`), which most self-hosted stores need.
    pub path_style: bool,
    /// Bounds one S3 call including the SDK's retries; the engine adds its own read-back.
    pub operation_timeout: Duration,
    /// The widest window on the store's clock at which expired leases are still taken over
    /// (see [`S3Clock`]); `None`: no bound.
    pub max_clock_spread: Option<Duration>,
}

/// S3 calls one process makes at once; more wait their turn. The SDK keeps a pooled connection
/// for every request it ever had in flight at once: 1,000 blocked acquirers' first reads opened
/// about 1,000 connections to S3, tens of MiB of buffers kept for good. A lock call takes a few
/// milliseconds, so this many in flight is still thousands of calls a second.
const MAX_CONCURRENT_REQUESTS: usize = 64;
/// Of those, the most that background work (watchers' polls, orphan watches, lists) may hold:
/// the rest, 16 calls at a time or some thousand a second, stay free for lock decisions even
/// while every watcher reads at once against a slow S3.
const MAX_BACKGROUND_REQUESTS: usize = 48;

#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    clock: Arc<S3Clock>,
    metrics: Metrics,
    /// Bounds the calls in flight (and so the SDK's connection pool), see
    /// [`MAX_CONCURRENT_REQUESTS`]; shared by this store's decision and background handles.
    in_flight: Arc<CallSlots>,
    /// The priority of this handle's calls: [`Priority::Decision`], or background for the
    /// handle that [`Store::background`] gives out.
    priority: Priority,
    /// The longest a call waits for a slot: the S3 timeout. Past it the call fails unsent. A
    /// wait without an end would stamp leases late against a slow S3, and a write sent after
    /// its caller gave up could land with nobody knowing its token.
    slot_wait: Duration,
}

impl S3Store {
    pub async fn connect(settings: &S3Settings) -> Self {
        let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let clock = Arc::new(S3Clock::new(settings.max_clock_spread, Arc::new(BootTime)));
        let timeout = if settings.operation_timeout.is_zero() {
            Duration::from_secs(10)
        } else {
            settings.operation_timeout
        };
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(settings.path_style)
            .interceptor(DateHeaderInterceptor(clock.clone()))
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(3))
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(2))
                    .operation_attempt_timeout(timeout / 3)
                    .operation_timeout(timeout)
                    .build(),
            );
        if shared.region().is_none() {
            // Self-hosted stores do not care about the region, but the SDK refuses to sign
            // without one.
            builder = builder.region(aws_sdk_s3::config::Region::new("us-east-1"));
        }
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Self {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            clock,
            metrics: Metrics::new(),
            in_flight: CallSlots::new(MAX_CONCURRENT_REQUESTS, MAX_BACKGROUND_REQUESTS),
            priority: Priority::Decision,
            slot_wait: timeout,
        }
    }

    /// A place among the calls in flight for one call at this handle's priority, held until
    /// dropped; fails (counted) if none comes free within the S3 timeout.
    async fn slot(&self) -> Result<Slot, StoreError> {
        self.slot_of(self.priority).await
    }

    async fn slot_of(&self, priority: Priority) -> Result<Slot, StoreError> {
        match self.in_flight.acquire(priority, self.slot_wait).await {
            Some(slot) => Ok(slot),
            None => {
                self.metrics
                    .count(m::S3_SLOT_TIMEOUTS, &[("priority", priority.label())]);
                Err(StoreError::NotSent(format!(
                    "all {MAX_CONCURRENT_REQUESTS} S3 call slots stayed busy for {} s (the S3 \
                     timeout); the call was not sent",
                    self.slot_wait.as_secs_f64()
                )))
            }
        }
    }

    /// Counts S3 calls into `metrics` (the app's, shared with the engine and the HTTP layer).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.clock.set_metrics(metrics.clone());
        self.metrics = metrics;
        self
    }

    /// Counts one call by how it ended, and hands the outcome on.
    fn counted<T>(
        &self,
        op: &'static str,
        outcome: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let kind = match &outcome {
            Ok(_) => None,
            Err(StoreError::PreconditionFailed) => Some("precondition_failed"),
            Err(StoreError::Unavailable(_)) => Some("unavailable"),
            // Not reached: a call that got no slot is not a call (see `slot_of`).
            Err(StoreError::NotSent(_)) => Some("not_sent"),
            Err(StoreError::NoSuchBucket(_)) => Some("no_such_bucket"),
            Err(StoreError::Other(_)) => Some("other"),
        };
        self.metrics.s3_call(op, kind);
        outcome
    }

    /// The store's clock as estimated from response `Date` headers.
    pub fn clock(&self) -> Arc<S3Clock> {
        self.clock.clone()
    }

    /// Creates a bucket (tests and local set-ups); an existing bucket is fine.
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        let outcome = match self.client.create_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e))
                if matches!(
                    e.err().code(),
                    Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(classify(e, bucket, Op::Other)),
        };
        self.counted("create_bucket", outcome)
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        condition: Condition<'_>,
    ) -> Result<Version, StoreError> {
        let mut put = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body));
        let (op, name) = match condition {
            Condition::Absent => {
                put = put.if_none_match("*");
                (Op::PutIfAbsent, "put_if_absent")
            }
            Condition::Version(v) => {
                put = put.if_match(&v.0);
                (Op::PutIfVersion, "put_if_version")
            }
        };
        // The SDK's request futures are several KiB: boxed here, ours stay small, and are not
        // copied whole each time a caller boxes or moves them.
        let outcome = match Box::pin(put.send()).await {
            Ok(out) => out
                .e_tag()
                .map(|t| Version(t.to_owned()))
                .ok_or_else(|| StoreError::Other("PutObject answered without an ETag".into())),
            Err(e) => Err(classify(e, bucket, op)),
        };
        self.counted(name, outcome)
    }
}

enum Condition<'a> {
    Absent,
    Version(&'a Version),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Get,
    PutIfAbsent,
    PutIfVersion,
    Other,
}

/// Turns an SDK error into the outcome the engine acts on.
fn classify<E>(
    err: SdkError<E, aws_smithy_runtime_api::http::Response>,
    bucket: &str,
    op: Op,
) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code().unwrap_or_default();
            match (status, code) {
                (_, "NoSuchBucket") => StoreError::NoSuchBucket(bucket.to_owned()),
                (412, _) => StoreError::PreconditionFailed,
                (409, "ConditionalRequestConflict") => StoreError::PreconditionFailed,
                (404, _) if op == Op::PutIfVersion => StoreError::PreconditionFailed,
                (s, _) if s >= 500 || s == 429 || matches!(code, "SlowDown" | "RequestTimeout") => {
                    StoreError::Unavailable(format!("S3 answered {s} {code}"))
                }
                (s, _) => StoreError::Other(format!(
                    "S3 answered {s} {code}: {}",
                    service.err().message().unwrap_or_default()
                )),
            }
        }
        SdkError::TimeoutError(_) => StoreError::Unavailable("S3 did not answer in time".into()),
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StoreError::Unavailable(format!(
                "S3 could not be reached: {}",
                aws_smithy_types::error::display::DisplayErrorContext(&err)
            ))
        }
        _ => StoreError::Other(format!(
            "S3 request failed: {}",
            aws_smithy_types::error::display::DisplayErrorContext(&err)
        )),
    }
}

#[async_trait]
impl Store for S3Store {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        let _slot = self.slot().await?;
        let outcome = self.get_object(bucket, key).await;
        self.counted("get", outcome)
    }

    async fn put_if_absent(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
    ) -> Result<Version, StoreError> {
        let _slot = self.slot().await?;
        self.put(bucket, key, body, Condition::Absent).await
    }

    async fn put_if_version(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        expected: &Version,
    ) -> Result<Version, StoreError> {
        let _slot = self.slot().await?;
        self.put(bucket, key, body, Condition::Version(expected))
            .await
    }

    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> Result<ListPage, StoreError> {
        // A list is never part of a lock decision, whichever handle it is made on.
        let _slot = self.slot_of(Priority::Background).await?;
        // One ListObjectsV2 call: S3 answers at most 1,000 keys a call whatever is asked.
        let max_keys = i32::try_from(max_keys.clamp(1, 1000)).expect("at most 1,000");
        let mut list = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .max_keys(max_keys);
        if let Some(after) = start_after {
            list = list.start_after(after);
        }
        let page = self.counted(
            "list",
            Box::pin(list.send())
                .await
                .map_err(|e| classify(e, bucket, Op::Other)),
        )?;
        let mut keys: Vec<String> = page
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect();
        keys.sort();
        let more = !keys.is_empty() && page.is_truncated().unwrap_or(false);
        Ok(ListPage { keys, more })
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let _slot = self.slot().await?;
        let outcome = self
            .client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(e, bucket, Op::Other));
        self.counted("delete", outcome)
    }

    fn background(&self) -> Option<Arc<dyn Store>> {
        Some(Arc::new(Self {
            priority: Priority::Background,
            ..self.clone()
        }))
    }
}

impl S3Store {
    async fn get_object(&self, bucket: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        // Boxed for the reason given in `put`.
        let out = match Box::pin(self.client.get_object().bucket(bucket).key(key).send()).await {
            Ok(out) => out,
            Err(SdkError::ServiceError(e)) if e.err().is_no_such_key() => return Ok(None),
            Err(e) => return Err(classify(e, bucket, Op::Get)),
        };
        let version = out
            .e_tag()
            .map(|t| Version(t.to_owned()))
            .ok_or_else(|| StoreError::Other("GetObject answered without an ETag".into()))?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Unavailable(format!("reading an S3 object body failed: {e}")))?
            .into_bytes();
        Ok(Some(Versioned { body, version }))
    }
}

/// The S3 server's clock, estimated from the `Date` headers of its recent answers by
/// [`DateSamples`] (which says why a window of them, and why its lowest lower bound), carried
/// forward by a monotonic source that counts time suspended.
#[derive(Debug)]
pub struct S3Clock {
    state: Mutex<ClockState>,
    monotonic: Arc<dyn Monotonic>,
}

#[derive(Debug)]
struct ClockState {
    samples: DateSamples,
    metrics: Metrics,
    /// Whether the last window handed out was wider than the bound: the warning is logged when
    /// this changes, not on every request it refuses.
    too_wide: bool,
}

impl S3Clock {
    /// A clock whose windows refuse takeovers when wider than `max_spread` (`None`: never).
    pub fn new(max_spread: Option<Duration>, monotonic: Arc<dyn Monotonic>) -> Self {
        Self {
            state: Mutex::new(ClockState {
                samples: DateSamples::new(max_spread),
                metrics: Metrics::new(),
                too_wide: false,
            }),
            monotonic,
        }
    }

    fn set_metrics(&self, metrics: Metrics) {
        self.state.lock().expect("clock mutex poisoned").metrics = metrics;
    }

    /// Takes the `Date` of one of the store's own answers.
    pub fn record(&self, sample: DateSample) {
        let mut state = self.state.lock().expect("clock mutex poisoned");
        if state.samples.record(sample) {
            state.metrics.count(m::STORE_CLOCK_OUTLIERS, &[]);
            tracing::debug!(date = %sample.date, "a store answer's Date disagrees with recent ones");
        }
    }

    /// This process's monotonic time, on the source this clock carries samples forward with.
    pub fn monotonic_now(&self) -> Duration {
        self.monotonic.now()
    }

    /// Whether any answer of the store has carried a usable `Date` header. Until one has, this
    /// clock is only this machine's, and a replica must not judge leases on it.
    pub fn has_store_time(&self) -> bool {
        !self
            .state
            .lock()
            .expect("clock mutex poisoned")
            .samples
            .is_empty()
    }
}

impl Clock for S3Clock {
    fn now(&self) -> TimeWindow {
        let mut state = self.state.lock().expect("clock mutex poisoned");
        let Some(window) = state.samples.window(self.monotonic.now()) else {
            // Nothing heard from S3 yet (every decision reads first, so this is only reached by
            // a view made before any request): fall back to our own clock, widened.
            let local = SystemClock.now().earliest;
            return TimeWindow::between(
                local - chrono::Duration::seconds(1),
                local + chrono::Duration::seconds(1),
            );
        };
        let width = window.width();
        state.metrics.set_gauge(
            m::STORE_CLOCK_SPREAD,
            width.num_milliseconds() as f64 / 1000.0,
        );
        let too_wide = window.too_wide();
        if too_wide != state.too_wide {
            state.too_wide = too_wide;
            let (width_ms, max_ms) = (
                width.num_milliseconds(),
                window.max_width.unwrap_or_default().num_milliseconds(),
            );
            if too_wide {
                tracing::warn!(
                    width_ms,
                    max_ms,
                    "the store's clock is known only within a window wider than \
                     --max-clock-spread: the Dates of its answers disagree (a store host with a \
                     wrong clock, or a step of the store's clock). Expired leases are not taken \
                     over until it narrows"
                );
            } else {
                tracing::info!(
                    width_ms,
                    max_ms,
                    "the store's clock is known closely again: expired leases are taken over"
                );
            }
        }
        window
    }
}

/// Whether an HTTP answer is the store's own, so that its `Date` is the store's clock.
///
/// Only the store's answers carry a request id: SeaweedFS sends `X-Amz-Request-Id` on every
/// answer (404 and 412 included), AWS sends `x-amz-request-id` and `x-amz-id-2`, and moto's
/// server `x-amzn-requestid`. A load balancer, gateway or proxy answering by itself (a 502,
/// 503 or 504 while a backend restarts) sends none, and its `Date` is its own clock's, which
/// nobody keeps in step with the store's. A `5xx` is never taken either, even with an id: it
/// says the store is not well, perhaps a front host whose backend is away, and the next good
/// answer is a sample anyway. Retried attempts are judged one by one, each on its own answer.
fn is_store_answer(response: &aws_smithy_runtime_api::http::Response) -> bool {
    let headers = response.headers();
    let has_request_id = ["x-amz-request-id", "x-amz-id-2", "x-amzn-requestid"]
        .iter()
        .any(|name| headers.get(*name).is_some_and(|v| !v.is_empty()));
    has_request_id && !response.status().is_server_error()
}

#[derive(Debug, Clone, Copy)]
struct SentAt(Duration);

impl Storable for SentAt {
    type Storer = StoreReplace<Self>;
}

#[derive(Debug)]
struct DateHeaderInterceptor(Arc<S3Clock>);

impl Intercept for DateHeaderInterceptor {
    fn name(&self) -> &'static str {
        "s3lock-date-header-clock"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state()
            .store_put(SentAt(self.0.monotonic_now()));
        Ok(())
    }

    fn read_after_transmit(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let received = self.0.monotonic_now();
        let response = context.response();
        if !is_store_answer(response) {
            return Ok(());
        }
        let Some(date) = response
            .headers()
            .get("date")
            .and_then(|d| httpdate::parse_http_date(d).ok())
        else {
            return Ok(());
        };
        // Without the send time the window's width is unknown: skip the sample rather than
        // guess a narrow one.
        let Some(sent) = cfg.load::<SentAt>() else {
            return Ok(());
        };
        self.0.record(DateSample {
            date: DateTime::<Utc>::from(date),
            sent: sent.0,
            received,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;

    fn answer(status: u16, request_id: Option<(&'static str, &'static str)>) -> Response {
        let mut r = Response::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
        r.headers_mut()
            .insert("date", "Thu, 03 Dec 2026 12:00:00 GMT");
        if let Some((name, value)) = request_id {
            r.headers_mut().insert(name, value);
        }
        r
    }

    #[test]
    fn only_the_stores_own_answers_below_500_are_samples() {
        for id in [
            ("x-amz-request-id", "18EDC121484195A7"),
            ("X-Amz-Request-Id", "18EDC121484195A7"),
            ("x-amz-id-2", "9Gjjt1m+cjU4OPvX9O9"),
            ("x-amzn-requestid", "oJNMQbflQCk9QxTq"),
        ] {
            for status in [200, 204, 404, 409, 412] {
                assert!(
                    is_store_answer(&answer(status, Some(id))),
                    "{id:?} {status}"
                );
            }
            assert!(!is_store_answer(&answer(503, Some(id))), "{id:?} 503");
        }
        for status in [200, 404, 412, 502, 503, 504] {
            assert!(
                !is_store_answer(&answer(status, None)),
                "{status} without an id"
            );
        }
        assert!(!is_store_answer(&answer(
            200,
            Some(("x-amz-request-id", ""))
        )));
    }

    /// A monotonic source a test moves by hand, as a suspend would.
    #[derive(Debug, Default)]
    struct HandMonotonic(Mutex<Duration>);

    impl Monotonic for HandMonotonic {
        fn now(&self) -> Duration {
            *self.0.lock().unwrap()
        }
    }

    fn date(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_disagreeing_sample_is_counted_and_the_spread_shown_and_a_suspend_is_carried_across() {
        let source = Arc::new(HandMonotonic::default());
        let clock = S3Clock::new(Some(Duration::from_secs(10)), source.clone());
        let metrics = Metrics::new();
        clock.set_metrics(metrics.clone());
        let sample = |at: f64, d: &str| DateSample {
            date: date(d),
            sent: Duration::from_secs_f64(at),
            received: Duration::from_secs_f64(at + 0.01),
        };
        clock.record(sample(1.0, "2026-12-03T12:00:01Z"));
        // The machine sleeps for 100 s: CLOCK_BOOTTIME counts it, and the store's next answer
        // agrees with the window carried across.
        *source.0.lock().unwrap() = Duration::from_secs(101);
        let w = clock.now();
        assert!(
            w.earliest <= date("2026-12-03T12:01:41Z") && !w.too_wide(),
            "{w:?}"
        );
        clock.record(sample(101.0, "2026-12-03T12:01:41Z"));
        assert!(!metrics
            .render()
            .contains("s3lock_store_clock_outliers_total"));
        // A host 30 s ahead.
        clock.record(sample(101.5, "2026-12-03T12:02:11Z"));
        let w = clock.now();
        assert!(w.too_wide(), "{w:?}");
        let text = metrics.render();
        assert!(
            text.contains("s3lock_store_clock_outliers_total 1"),
            "{text}"
        );
        let spread = text
            .lines()
            .find_map(|l| l.strip_prefix("s3lock_store_clock_spread_seconds "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap();
        assert!(spread > 30.0, "{text}");
    }
}
