//! The Prometheus metrics of the real app: requests by route template, lock outcomes, waiters.

use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as ChronoDuration;
use reqwest::Method;
use s3lock::clock::ManualClock;
use s3lock::store::memory::MemoryStore;
use serde_json::json;

use crate::helpers::{engine_config, json_with, metric_line, problem, TestApp};

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_every_lock_outcome() {
    let clock = Arc::new(ManualClock::new(
        chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .into(),
    ));
    let app = TestApp::spawn(
        Arc::new(MemoryStore::new()),
        clock.clone(),
        engine_config("default", &[]),
    )
    .await;
    let alice = json_with(
        app.acquire("jobs/secret-name", json!({"owner": "alice", "ttl": 5}))
            .await,
        200,
    )
    .await;
    problem(
        app.acquire("jobs/secret-name", json!({"owner": "bob"}))
            .await,
        409,
        "lock-held",
    )
    .await;
    json_with(
        app.renew("jobs/secret-name", json!({"token": alice["token"]}))
            .await,
        200,
    )
    .await;
    problem(
        app.renew("jobs/secret-name", json!({"token": "wrong"}))
            .await,
        409,
        "not-holder",
    )
    .await;
    json_with(
        app.release("jobs/secret-name", json!({"token": alice["token"]}))
            .await,
        200,
    )
    .await;
    // carol takes it, lets the lease run out unreleased, and dave takes it over.
    json_with(
        app.acquire("other", json!({"owner": "carol", "ttl": 5}))
            .await,
        200,
    )
    .await;
    clock.advance(ChronoDuration::seconds(6));
    json_with(app.acquire("other", json!({"owner": "dave"})).await, 200).await;

    let resp = app.request(Method::GET, "/metrics", None).await;
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    for (series, want) in [
        (
            r#"s3lock_http_requests_total{route="/locks/{key}/acquire",method="POST",status="200"}"#,
            3.0,
        ),
        (
            r#"s3lock_http_requests_total{route="/locks/{key}/acquire",method="POST",status="409"}"#,
            1.0,
        ),
        (
            r#"s3lock_http_requests_total{route="/locks/{key}/renew",method="POST",status="409"}"#,
            1.0,
        ),
        (
            r#"s3lock_http_request_duration_seconds_count{route="/locks/{key}/acquire",method="POST"}"#,
            4.0,
        ),
        ("s3lock_grants_total", 3.0),
        ("s3lock_conflicts_total", 1.0),
        ("s3lock_expiry_takeovers_total", 1.0),
        ("s3lock_renewals_total", 1.0),
        (r#"s3lock_renew_failures_total{reason="not_holder"}"#, 1.0),
        ("s3lock_releases_total", 1.0),
    ] {
        assert_eq!(
            metric_line(&text, series),
            Some(want),
            "{series} in:\n{text}"
        );
    }
    assert!(
        !text.contains("secret-name"),
        "a raw key leaked into the metrics:\n{text}"
    );
}

#[tokio::test]
async fn the_waiters_gauge_counts_a_blocked_acquire_while_it_waits() {
    let app = TestApp::memory().await;
    let alice = json_with(app.acquire("k", json!({"owner": "alice"})).await, 200).await;
    let waiting = {
        let (http, base) = (app.http.clone(), app.base.clone());
        tokio::spawn(async move {
            http.post(format!("{base}/locks/k/acquire"))
                .json(&json!({"owner": "bob", "wait": 30}))
                .send()
                .await
                .unwrap()
        })
    };
    // Poll the gauge (bounded) until bob's acquire is seen waiting.
    let mut seen = None;
    for _ in 0..200 {
        let text = app
            .request(Method::GET, "/metrics", None)
            .await
            .text()
            .await
            .unwrap();
        seen = metric_line(&text, "s3lock_waiters");
        if seen == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, Some(1.0));
    json_with(
        app.release("k", json!({"token": alice["token"]})).await,
        200,
    )
    .await;
    json_with(waiting.await.unwrap(), 200).await;
    let text = app
        .request(Method::GET, "/metrics", None)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(metric_line(&text, "s3lock_waiters"), Some(0.0), "{text}");
}

#[tokio::test]
async fn hold_and_wait_histograms_count_ended_holds_and_acquires_that_waited() {
    let app = TestApp::memory().await;
    // A hold that ends in a release.
    let alice = json_with(app.acquire("k", json!({"owner": "alice"})).await, 200).await;
    json_with(
        app.release("k", json!({"token": alice["token"]})).await,
        200,
    )
    .await;
    // A contended wait that is granted: bob waits for carol's release.
    let carol = json_with(app.acquire("k", json!({"owner": "carol"})).await, 200).await;
    let waiting = {
        let (http, base) = (app.http.clone(), app.base.clone());
        tokio::spawn(async move {
            http.post(format!("{base}/locks/k/acquire"))
                .json(&json!({"owner": "bob", "wait": 30}))
                .send()
                .await
                .unwrap()
        })
    };
    // Until bob is seen waiting (bounded), then carol lets go.
    for _ in 0..200 {
        let text = app
            .request(Method::GET, "/metrics", None)
            .await
            .text()
            .await
            .unwrap();
        if metric_line(&text, "s3lock_waiters") == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    json_with(
        app.release("k", json!({"token": carol["token"]})).await,
        200,
    )
    .await;
    json_with(waiting.await.unwrap(), 200).await;
    // A wait that runs out: dave is refused after waiting.
    problem(
        app.acquire("k", json!({"owner": "dave", "wait": 0.2}))
            .await,
        409,
        "lock-held",
    )
    .await;
    // An acquire that did not ask to wait is not a wait.
    problem(
        app.acquire("k", json!({"owner": "erin"})).await,
        409,
        "lock-held",
    )
    .await;

    let text = app
        .request(Method::GET, "/metrics", None)
        .await
        .text()
        .await
        .unwrap();
    for (series, want) in [
        ("s3lock_lock_hold_seconds_count", 2.0),
        (
            r#"s3lock_acquire_wait_seconds_count{outcome="granted"}"#,
            1.0,
        ),
        (
            r#"s3lock_acquire_wait_seconds_count{outcome="refused"}"#,
            1.0,
        ),
    ] {
        assert_eq!(
            metric_line(&text, series),
            Some(want),
            "{series} in:\n{text}"
        );
    }
    assert!(
        text.contains("s3lock_lock_hold_seconds_bucket{le="),
        "{text}"
    );
    assert!(
        text.contains(r#"s3lock_acquire_wait_seconds_bucket{outcome="granted",le="#),
        "{text}"
    );
}
