//! `/readyz` through the real app: not ready before the start-up store check, and following an
//! S3 store that goes away and comes back.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use s3lock::lock::Engine;
use s3lock::metrics::Metrics;
use s3lock::store::memory::MemoryStore;
use s3lock::store::s3::{S3Settings, S3Store};
use s3lock::store::Store;
use serde_json::json;

use crate::helpers::support::proxy::Relay;
use crate::helpers::{engine_config, json_with, metric_line, problem, support, TestApp};

#[tokio::test]
async fn readyz_is_503_until_the_start_up_store_check_has_passed() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = Arc::new(Engine::new(
        store.clone(),
        Arc::new(s3lock::clock::SystemClock),
        engine_config("default", &[]),
    ));
    let app = TestApp::spawn_engine(store, engine.clone(), None).await;
    let r = app.request(Method::GET, "/readyz", None).await;
    assert_eq!(r.headers()["retry-after"], "1");
    problem(r, 503, "not-ready").await;
    json_with(app.request(Method::GET, "/healthz", None).await, 200).await;
    engine.mark_store_checked();
    let ready = json_with(app.request(Method::GET, "/readyz", None).await, 200).await;
    assert_eq!(ready["status"], "ready");
}

#[tokio::test]
async fn readyz_follows_the_s3_store_going_away_and_coming_back() {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let target = support::s3_endpoint()
        .trim_start_matches("http://")
        .to_owned();
    let mut relay = Relay::start(target).await;
    let metrics = Metrics::new();
    let store = S3Store::connect(&S3Settings {
        endpoint: Some(format!("http://127.0.0.1:{}", relay.port)),
        path_style: true,
        operation_timeout: Duration::from_secs(3),
        max_clock_spread: None,
    })
    .await
    .with_metrics(metrics.clone());
    let clock = store.clock();
    let store: Arc<dyn Store> = Arc::new(store);
    let engine =
        Engine::new(store.clone(), clock, engine_config(&bucket, &[])).with_metrics(metrics);
    engine.mark_store_checked();
    let app = TestApp::spawn_engine(store, Arc::new(engine), None).await;

    json_with(app.request(Method::GET, "/readyz", None).await, 200).await;
    json_with(app.acquire("k", json!({"owner": "alice"})).await, 200).await;

    relay.cut().await;
    // The first request after the outage fails, and readiness no longer trusts the last answer.
    problem(app.status("k").await, 503, "store-unavailable").await;
    let r = app.request(Method::GET, "/readyz", None).await;
    let p = problem(r, 503, "not-ready").await;
    assert!(
        !p["detail"].as_str().unwrap().contains("127.0.0.1"),
        "no internals leak: {p}"
    );

    relay.restore().await;
    // A probe's outcome answers every check for a second after it: ready again within about that.
    let mut ready = app.request(Method::GET, "/readyz", None).await;
    for _ in 0..40 {
        if ready.status() == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        ready = app.request(Method::GET, "/readyz", None).await;
    }
    json_with(ready, 200).await;

    let text = app
        .request(Method::GET, "/metrics", None)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric_line(&text, r#"s3lock_s3_requests_total{op="put_if_absent"}"#),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric_line(
            &text,
            r#"s3lock_s3_errors_total{op="get",kind="unavailable"}"#
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
}
