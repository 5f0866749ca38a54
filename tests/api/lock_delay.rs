//! Lock-delay: a lock whose lease ran out unreleased (its holder crashed or stalled) cannot be
//! taken for `lock_delay` seconds more; a release ends it at once; waiters wait through it.
//!
//! Most tests drive the server's clock by hand (a `ManualClock`), so "refused during the delay,
//! granted at its end" is proven on states, with no sleeping and no timing assertion.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use s3lock::clock::ManualClock;
use s3lock::store::memory::MemoryStore;
use serde_json::{json, Value};

use crate::helpers::{engine_config, json_with, problem, TestApp};

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .into()
}

async fn manual_app() -> (TestApp, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(t0()));
    let app = TestApp::spawn(
        Arc::new(MemoryStore::new()),
        clock.clone(),
        engine_config("default", &[]),
    )
    .await;
    (app, clock)
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
        .into()
}

#[tokio::test]
async fn a_crashed_holders_lock_is_refused_as_delayed_until_its_delay_ends_then_granted() {
    let (app, clock) = manual_app().await;
    // alice takes the lock and never releases it (she crashed).
    let alice = json_with(
        app.acquire("job", json!({"owner": "alice", "ttl": 1, "lock_delay": 2}))
            .await,
        200,
    )
    .await;
    let expires_at = time(&alice["expires_at"]);
    assert_eq!(
        time(&alice["available_at"]),
        expires_at + ChronoDuration::seconds(2)
    );
    // While the lease runs: held.
    problem(
        app.acquire("job", json!({"owner": "bob"})).await,
        409,
        "lock-held",
    )
    .await;
    // The lease ran out: not locked, but not to be taken either, until available_at.
    clock.set(expires_at);
    let status = json_with(app.status("job").await, 200).await;
    assert_eq!(status["locked"], false, "{status}");
    assert_eq!(
        status["owner"], "alice",
        "the holder that vanished is shown"
    );
    let available_at = time(&status["available_at"]);
    assert_eq!(available_at, expires_at + ChronoDuration::seconds(2));
    for now in [expires_at, available_at - ChronoDuration::microseconds(1)] {
        clock.set(now);
        let refused = problem(
            app.acquire("job", json!({"owner": "bob"})).await,
            409,
            "lock-delayed",
        )
        .await;
        assert_eq!(time(&refused["available_at"]), available_at, "{refused}");
    }
    // alice may not renew during the delay: her lease is over.
    problem(
        app.renew("job", json!({"token": alice["token"]})).await,
        409,
        "not-holder",
    )
    .await;
    // At available_at the lock is free, and passes on with a higher fencing token.
    clock.set(available_at);
    let status = json_with(app.status("job").await, 200).await;
    assert_eq!(status["available_at"], Value::Null, "{status}");
    let bob = json_with(app.acquire("job", json!({"owner": "bob"})).await, 200).await;
    assert_eq!(bob["fencing_token"], 2);
    assert!(time(&bob["lock_time"]) >= available_at);
}

#[tokio::test]
async fn a_release_ends_the_lock_delay_at_once() {
    let (app, _clock) = manual_app().await;
    let alice = json_with(
        app.acquire("job", json!({"owner": "alice", "ttl": 5, "lock_delay": 60}))
            .await,
        200,
    )
    .await;
    let released = json_with(
        app.release("job", json!({"token": alice["token"]})).await,
        200,
    )
    .await;
    assert_eq!(released["available_at"], Value::Null, "{released}");
    let bob = json_with(app.acquire("job", json!({"owner": "bob"})).await, 200).await;
    assert_eq!(bob["fencing_token"], 2);
    // A grant without lock_delay has none: its expiry frees the lock at once.
    assert_eq!(bob["available_at"], bob["expires_at"], "{bob}");
}

#[tokio::test]
async fn a_waiter_waits_through_the_delay_and_is_granted_at_its_end() {
    let (app, clock) = manual_app().await;
    let alice = json_with(
        app.acquire("job", json!({"owner": "alice", "ttl": 1, "lock_delay": 2}))
            .await,
        200,
    )
    .await;
    let expires_at = time(&alice["expires_at"]);
    let waiter = {
        let (http, base) = (app.http.clone(), app.base.clone());
        tokio::spawn(async move {
            http.post(format!("{base}/locks/job/acquire"))
                .json(&json!({"owner": "bob", "wait": 30}))
                .send()
                .await
                .unwrap()
        })
    };
    // Into the delay, and long enough for the lock's watcher to read it a few times (it reads
    // at least every second): a waiter woken now would be granted at this clock time.
    clock.set(expires_at + ChronoDuration::seconds(1));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let available_at = expires_at + ChronoDuration::seconds(2);
    clock.set(available_at);
    let bob = json_with(waiter.await.unwrap(), 200).await;
    assert_eq!(bob["owner"], "bob");
    assert_eq!(bob["fencing_token"], 2);
    assert_eq!(
        time(&bob["lock_time"]),
        available_at,
        "granted only once the delay had ended"
    );
}

#[tokio::test]
async fn a_lock_delay_out_of_range_is_refused_and_nothing_is_stored() {
    let app = TestApp::memory().await; // the tests' maximum is 60 s
    for bad in [json!(61), json!(-1), json!(1.5)] {
        let resp = app
            .acquire("job", json!({"owner": "alice", "lock_delay": bad}))
            .await;
        let body = json_with(resp, 400).await;
        assert!(
            body["type"] == "urn:s3lock:problem:invalid-input" && body["field"] == "lock_delay"
                || body["type"] == "urn:s3lock:problem:malformed-body",
            "{bad}: {body}"
        );
    }
    let over = problem(
        app.acquire("job", json!({"owner": "alice", "lock_delay": 61}))
            .await,
        400,
        "invalid-input",
    )
    .await;
    assert_eq!(over["field"], "lock_delay");
    assert!(app.snapshot().await.is_empty(), "nothing was stored");
    let max = json_with(
        app.acquire("job", json!({"owner": "alice", "lock_delay": 60}))
            .await,
        200,
    )
    .await;
    assert_eq!(max["owner"], "alice");
}

#[tokio::test]
async fn on_s3_a_crashed_holders_lock_is_never_granted_before_its_delay_ends() {
    // Real time on the store's clock: bob asks again and again; every answer must agree with
    // the server's own view of when the lock can next be taken.
    let (_store, bucket) = crate::helpers::support::s3_with_fresh_bucket().await;
    let app = TestApp::s3(&bucket).await;
    let alice = json_with(
        app.acquire("job", json!({"owner": "alice", "ttl": 1, "lock_delay": 2}))
            .await,
        200,
    )
    .await;
    let available_at = time(&alice["available_at"]);
    assert_eq!(
        available_at,
        time(&alice["expires_at"]) + ChronoDuration::seconds(2)
    );
    let mut kinds = Vec::new();
    let bob = loop {
        assert!(kinds.len() < 300, "never granted: {kinds:?}");
        let resp = app.acquire("job", json!({"owner": "bob"})).await;
        if resp.status() == 200 {
            break json_with(resp, 200).await;
        }
        let body = json_with(resp, 409).await;
        let kind = body["type"].as_str().unwrap().to_owned();
        if kind.ends_with("lock-delayed") {
            assert_eq!(time(&body["available_at"]), available_at, "{body}");
        } else {
            assert!(kind.ends_with("lock-held"), "{body}");
        }
        kinds.push(kind);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // In order: held, then delayed, never held again after a delayed.
    let first_delayed = kinds.iter().position(|k| k.ends_with("lock-delayed"));
    if let Some(i) = first_delayed {
        assert!(
            kinds[i..].iter().all(|k| k.ends_with("lock-delayed")),
            "{kinds:?}"
        );
    }
    assert_eq!(bob["fencing_token"], 2);
    assert!(
        time(&bob["lock_time"]) >= available_at,
        "granted at {} before the delay ended at {available_at}",
        bob["lock_time"]
    );
}

#[tokio::test]
async fn the_rust_client_names_a_lock_delay_and_the_cli_counts_it_as_held() {
    use s3lock::client::{cli::exit_code, ClientError, LockClient};
    let (app, clock) = manual_app().await;
    let alice = json_with(
        app.acquire("job", json!({"owner": "alice", "ttl": 1, "lock_delay": 2}))
            .await,
        200,
    )
    .await;
    clock.set(time(&alice["expires_at"]));
    let client = LockClient::new(&app.base, None);
    let err = client
        .acquire("job", Some("bob"), None, None)
        .await
        .unwrap_err();
    match &err {
        ClientError::Delayed {
            available_at,
            retry_after,
        } => {
            assert_eq!(available_at, alice["available_at"].as_str().unwrap());
            assert_eq!(*retry_after, Some(Duration::from_secs(2)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(exit_code(&err), s3lock::client::cli::exit::HELD);
}
