//! Bounded work per request: one client must not make a replica read the store without end,
//! queue lock decisions behind background reads, probe the store on every readiness check, or
//! pile up requests without limit. Real servers, real sockets; store calls are counted (by a
//! counting store, or at the fault proxy), never timed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, Response};
use s3lock::clock::SystemClock;
use s3lock::lock::{Engine, MAX_POLL};
use s3lock::metrics::Metrics;
use s3lock::startup::Server;
use s3lock::store::s3::S3Store;
use s3lock::store::Store;
use serde_json::json;
use tokio::time::Instant;

use crate::helpers::support::counting::CountingStore;
use crate::helpers::support::proxy::{FaultProxy, Latency};
use crate::helpers::{engine_config, metric_line, problem, support, TestApp};

/// An engine over `store` whose start-up store check counts as passed, watching at most
/// `max_watched_locks` locks.
fn engine(store: Arc<CountingStore>, max_watched_locks: usize) -> Arc<Engine> {
    let mut config = engine_config("default", &[]);
    config.max_watched_locks = max_watched_locks;
    let engine = Engine::new(store, Arc::new(SystemClock), config);
    engine.mark_store_checked();
    Arc::new(engine)
}

/// Serves `engine` taking at most `max_in_flight` lock requests at once; its base URL.
async fn replica(engine: Arc<Engine>, max_in_flight: usize) -> String {
    s3lock::telemetry::init_for_tests();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = Server::new(engine, Duration::from_secs(90)).with_max_in_flight(max_in_flight);
    tokio::spawn(server.serve(listener, std::future::pending()));
    base
}

async fn get(http: &reqwest::Client, url: String) -> Response {
    http.get(url).send().await.expect("the server answers")
}

fn has_retry_after(resp: &Response) -> bool {
    resp.headers().contains_key("retry-after")
}

#[tokio::test]
async fn watches_past_the_cap_are_refused_a_watched_lock_may_still_be_joined_and_reads_stay_bounded(
) {
    const WATCHED: usize = 20;
    let store = Arc::new(CountingStore::default());
    let engine = engine(store.clone(), WATCHED);
    let app = TestApp::spawn_engine(store.clone(), engine.clone(), None).await;

    // As many watch clients as the cap, each on a lock of its own that nobody holds, counting
    // the store's reads over a fixed window from before the first of them.
    let window = Duration::from_secs(3);
    let reads_before = store.gets();
    let started = Instant::now();
    let watches: Vec<_> = (0..WATCHED)
        .map(|i| {
            let (http, base) = (app.http.clone(), app.base.clone());
            tokio::spawn(
                async move { get(&http, format!("{base}/locks/w{i}?index=0&wait=30")).await },
            )
        })
        .collect();
    tokio::time::sleep_until(started + window).await;
    let reads = store.gets() - reads_before;
    assert_eq!(engine.waited_locks(), WATCHED);
    // Watch clients alone: each lock's watcher reads it once at once, then no more often than
    // every half of MAX_POLL (the slow rate, jittered).
    let per_lock = 1 + (window.as_millis() / (MAX_POLL.as_millis() / 2)) as usize;
    assert!(
        reads <= WATCHED * per_lock,
        "{reads} reads in {window:?} for {WATCHED} watched locks (at most {per_lock} each)"
    );

    // One lock more: refused at once, whether watched or waited on.
    let refused = app
        .request(Method::GET, "/locks/one-too-many?index=0&wait=5", None)
        .await;
    assert!(has_retry_after(&refused));
    problem(refused, 503, "too-many-watched-locks").await;
    let held = app
        .acquire("held", json!({"owner": "alice", "ttl": 60}))
        .await;
    assert_eq!(held.status(), 200);
    let refused = app
        .acquire("held", json!({"owner": "bob", "wait": 5}))
        .await;
    assert!(has_retry_after(&refused));
    problem(refused, 503, "too-many-watched-locks").await;

    // A lock already watched may always be joined.
    let joined = app
        .request(Method::GET, "/locks/w0?index=0&wait=1", None)
        .await;
    assert_eq!(joined.status(), 200, "{}", joined.text().await.unwrap());

    let metrics = app
        .request(Method::GET, "/metrics", None)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric_line(&metrics, "s3lock_watched_locks_refused_total"),
        Some(2.0),
        "{metrics}"
    );
    for w in watches {
        w.abort();
    }
}

#[tokio::test]
async fn a_write_that_waits_too_long_for_an_s3_call_slot_gets_503_and_is_never_sent() {
    let proxy = FaultProxy::start(&support::s3_endpoint()).await;
    // Straight to S3, for the test's own look at the bucket.
    let (direct, bucket) = support::s3_with_fresh_bucket().await;
    let mut settings = support::s3_settings_via(&proxy.endpoint);
    settings.operation_timeout = Duration::from_secs(2);
    let metrics = Metrics::new();
    let store = S3Store::connect(&settings)
        .await
        .with_metrics(metrics.clone());
    let clock = store.clock();
    let store: Arc<dyn Store> = Arc::new(store);
    let engine =
        Engine::new(store.clone(), clock, engine_config(&bucket, &[])).with_metrics(metrics);
    engine.mark_store_checked();
    let app = TestApp::spawn_engine(store, Arc::new(engine), None).await;
    // Every write takes longer than the S3 timeout, so each holds its call slot for as long as
    // its call may take, and the many writes behind them wait for one.
    let delay = Duration::from_secs(4);
    proxy.set_latency_of("PUT", Latency::Fixed(delay));
    const ACQUIRES: usize = 400;
    let answers = futures_util::future::join_all((0..ACQUIRES).map(|i| {
        let app = &app;
        async move {
            app.acquire(&format!("slot-{i}"), json!({"owner": "o"}))
                .await
        }
    }))
    .await;
    let mut refused = 0;
    for answer in answers {
        // A write whose answer was lost may still be found landed by its read-back: a grant.
        if answer.status() == 200 {
            continue;
        }
        let retry_after = has_retry_after(&answer);
        let body = problem(answer, 503, "store-unavailable").await;
        assert!(retry_after, "{body}");
        refused += 1;
    }
    assert!(refused > 0);
    let metrics = app
        .request(Method::GET, "/metrics", None)
        .await
        .text()
        .await
        .unwrap();
    // Writes made: the calls that had a slot (a call that got none is not counted as one).
    let sent = metric_line(&metrics, r#"s3lock_s3_requests_total{op="put_if_absent"}"#)
        .unwrap_or(0.0) as usize;
    let slot_timeouts = metric_line(
        &metrics,
        r#"s3lock_s3_slot_timeouts_total{priority="decision"}"#,
    );
    // Whatever was sent reaches the store within the proxy's delay (and a call may fail before
    // anything is sent: a connect timeout). A while later, nothing more has arrived.
    tokio::time::sleep(delay + Duration::from_secs(2)).await;
    let written = direct.list(&bucket, "locks/slot-").await.unwrap().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = direct.list(&bucket, "locks/slot-").await.unwrap().len();
    assert!(
        written < ACQUIRES,
        "all {ACQUIRES} writes were sent in the end, however long they waited for a slot"
    );
    assert!(written <= sent, "{written} written, {sent} sent: {metrics}");
    assert_eq!(
        later, written,
        "writes arrived after every caller was answered"
    );
    assert!(slot_timeouts >= Some(1.0), "{metrics}");
}

#[tokio::test]
async fn a_flood_of_readiness_checks_probes_the_store_about_once_a_second_one_probe_at_a_time() {
    let store = Arc::new(CountingStore {
        failing_reads: Some(Duration::from_millis(300)),
        ..CountingStore::default()
    });
    let base = replica(engine(store.clone(), 16), 64).await;
    let http = reqwest::Client::new();
    let window = Duration::from_secs(3);
    let end = Instant::now() + window;
    let callers: Vec<_> = (0..50)
        .map(|_| {
            let (http, base) = (http.clone(), base.clone());
            tokio::spawn(async move {
                let mut answered = 0;
                while Instant::now() < end {
                    let resp = get(&http, format!("{base}/readyz")).await;
                    assert_eq!(resp.status(), 503);
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    let mut answered = 0;
    for c in callers {
        answered += c.await.unwrap();
    }
    let probes = store.gets();
    // One probe a second, and one more in flight as the window closes.
    let bound = window.as_secs() as usize + 2;
    assert!(
        probes <= bound,
        "{probes} store reads for {answered} readiness checks in {window:?}"
    );
    assert!(answered > probes, "{answered} checks, {probes} probes");
    assert_eq!(store.most_in_flight.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn lock_requests_past_the_in_flight_bound_get_503_overloaded_while_health_still_answers() {
    let store = Arc::new(CountingStore::default());
    let base = replica(engine(store, 16), 4).await;
    let http = reqwest::Client::new();
    let held = http
        .post(format!("{base}/locks/busy/acquire"))
        .json(&json!({"owner": "alice", "ttl": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), 200);
    // Four blocked waiters fill the bound.
    let waiters: Vec<_> = (0..4)
        .map(|i| {
            let (http, base) = (http.clone(), base.clone());
            tokio::spawn(async move {
                http.post(format!("{base}/locks/busy/acquire"))
                    .json(&json!({"owner": format!("bob{i}"), "wait": 30}))
                    .send()
                    .await
            })
        })
        .collect();
    let mut waiting = 0.0;
    for _ in 0..200 {
        let metrics = get(&http, format!("{base}/metrics"))
            .await
            .text()
            .await
            .unwrap();
        waiting = metric_line(&metrics, "s3lock_waiters").unwrap_or(0.0);
        if waiting == 4.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(waiting, 4.0);

    let shed = get(&http, format!("{base}/locks/busy")).await;
    assert!(has_retry_after(&shed));
    problem(shed, 503, "overloaded").await;
    let shed = http
        .post(format!("{base}/locks/other/acquire"))
        .json(&json!({"owner": "carol"}))
        .send()
        .await
        .unwrap();
    problem(shed, 503, "overloaded").await;

    assert_eq!(get(&http, format!("{base}/healthz")).await.status(), 200);
    assert_eq!(get(&http, format!("{base}/readyz")).await.status(), 200);
    let metrics = get(&http, format!("{base}/metrics")).await;
    assert_eq!(metrics.status(), 200);
    let metrics = metrics.text().await.unwrap();
    assert_eq!(
        metric_line(&metrics, "s3lock_requests_shed_total"),
        Some(2.0),
        "{metrics}"
    );
    for w in waiters {
        w.abort();
    }
}
