//! Read-write locks through the real app: on the local store and on SeaweedFS S3, over two
//! replicas sharing one bucket where it matters.

use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::helpers::{json_with, problem, TestApp};
use crate::semaphores::{poll_status, post, two_s3_replicas};

async fn acquire(app: &TestApp, key: &str, body: Value) -> Response {
    post(app, &format!("/rwlocks/{key}/acquire"), body).await
}

async fn release(app: &TestApp, key: &str, held: &Value) {
    let token = held["token"].as_str().unwrap();
    let resp = post(
        app,
        &format!("/rwlocks/{key}/release"),
        json!({"token": token}),
    )
    .await;
    json_with(resp, 200).await;
}

async fn readers_share_and_a_waiting_writer_is_granted_when_they_leave(a: &TestApp, b: &TestApp) {
    let key = "db/schema";
    let r1 = json_with(
        acquire(a, key, json!({"owner": "r1", "mode": "shared", "ttl": 60})).await,
        200,
    )
    .await;
    let r2 = json_with(
        acquire(b, key, json!({"owner": "r2", "mode": "shared", "ttl": 60})).await,
        200,
    )
    .await;
    assert_eq!(r2["holders"].as_array().unwrap().len(), 2);
    assert_eq!(r2["lease"]["mode"], "shared");
    let refused = acquire(a, key, json!({"owner": "w", "mode": "exclusive"})).await;
    let p = problem(refused, 409, "lock-held").await;
    assert!(p["detail"].as_str().unwrap().contains("held by r"), "{p}");
    let writer = {
        let url = format!("{}/rwlocks/{key}/acquire", b.base);
        tokio::spawn(async move {
            let body = json!({"owner": "w", "mode": "exclusive", "ttl": 60, "wait": 30});
            reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
        })
    };
    // The waiting writer is recorded in the lock: every replica shows it and refuses new readers.
    let seen = poll_status(a, &format!("/rwlocks/{key}"), |v| {
        !v["waiting"].as_array().unwrap().is_empty()
    })
    .await;
    assert_eq!(seen["waiting"][0]["owner"], "w");
    let p = problem(
        acquire(a, key, json!({"owner": "r3", "mode": "shared"})).await,
        409,
        "lock-held",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("held by w"), "{p}");
    release(a, key, &r1).await;
    release(b, key, &r2).await;
    let granted = json_with(writer.await.unwrap(), 200).await;
    assert_eq!(granted["lease"]["owner"], "w");
    assert_eq!(granted["lease"]["mode"], "exclusive");
    assert!(granted["waiting"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn readers_share_and_a_waiting_writer_is_granted_when_they_leave_on_s3() {
    let (a, b) = two_s3_replicas().await;
    readers_share_and_a_waiting_writer_is_granted_when_they_leave(&a, &b).await;
}

#[tokio::test]
async fn readers_share_and_a_waiting_writer_is_granted_when_they_leave_on_the_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::local(dir.path()).await;
    readers_share_and_a_waiting_writer_is_granted_when_they_leave(&app, &app).await;
}

/// Readers come through replica a in overlapping turns (each acquires while the one before
/// still holds, then the one before leaves), so that without writers first the lock is never
/// free; a writer waits on replica b. Writers first: it is granted, and readers that came
/// after it were refused in its name. A reader-preferring server lets every reader in and the
/// writer's wait runs out (409).
#[tokio::test]
async fn a_writer_is_not_starved_by_a_steady_stream_of_readers_across_two_replicas() {
    let (a, b) = two_s3_replicas().await;
    let key = "hot";
    let mut in_now = vec![
        json_with(
            acquire(&a, key, json!({"owner": "r0", "mode": "shared", "ttl": 60})).await,
            200,
        )
        .await,
    ];
    let writer = {
        let url = format!("{}/rwlocks/{key}/acquire", b.base);
        tokio::spawn(async move {
            let body = json!({"owner": "writer", "mode": "exclusive", "ttl": 60, "wait": 15});
            reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
        })
    };
    let mut refused_for_the_writer = 0;
    for i in 1..=200 {
        if writer.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let body = json!({"owner": format!("r{i}"), "mode": "shared", "ttl": 60});
        let resp = acquire(&a, key, body).await;
        if resp.status() == 200 {
            in_now.push(json_with(resp, 200).await);
        } else {
            let p = problem(resp, 409, "lock-held").await;
            assert!(p["detail"].as_str().unwrap().contains("writer"), "{p}");
            refused_for_the_writer += 1;
        }
        // The reader before the newest leaves (all of them, once readers are refused).
        while in_now.len() > 1 || (refused_for_the_writer > 0 && !in_now.is_empty()) {
            let leaving = in_now.remove(0);
            release(&a, key, &leaving).await;
        }
    }
    let granted = json_with(writer.await.unwrap(), 200).await;
    assert_eq!(granted["lease"]["owner"], "writer");
    assert!(
        refused_for_the_writer > 0,
        "readers after the writer waited for it"
    );
    for reader in &in_now {
        release(&a, key, reader).await;
    }
}

#[tokio::test]
async fn a_writer_that_gives_up_withdraws_its_entry() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::local(dir.path()).await;
    json_with(
        acquire(
            &app,
            "w",
            json!({"owner": "r", "mode": "shared", "ttl": 60}),
        )
        .await,
        200,
    )
    .await;
    problem(
        acquire(
            &app,
            "w",
            json!({"owner": "w", "mode": "exclusive", "wait": 0.5}),
        )
        .await,
        409,
        "lock-held",
    )
    .await;
    let status = json_with(app.request(Method::GET, "/rwlocks/w", None).await, 200).await;
    assert!(status["waiting"].as_array().unwrap().is_empty(), "{status}");
    json_with(
        acquire(&app, "w", json!({"owner": "r2", "mode": "shared"})).await,
        200,
    )
    .await;
}

#[tokio::test]
async fn bad_input_is_400_with_nothing_stored() {
    let app = TestApp::memory().await;
    for (body, kind) in [
        (json!({}), "malformed-body"),
        (json!({"mode": "both"}), "malformed-body"),
        (json!({"mode": "shared", "limit": 2}), "malformed-body"),
        (json!({"mode": "exclusive", "ttl": -5}), "invalid-input"),
        (json!({"mode": "exclusive", "wait": 1e9}), "invalid-input"),
        (
            json!({"mode": "shared", "owner": "a\u{202e}b"}),
            "invalid-input",
        ),
    ] {
        problem(acquire(&app, "bad", body).await, 400, kind).await;
    }
    problem(
        post(&app, "/rwlocks/bad/release", json!({})).await,
        400,
        "malformed-body",
    )
    .await;
    problem(
        app.acquire(".rwlocks/bad", json!({})).await,
        400,
        "invalid-input",
    )
    .await;
    assert!(app.snapshot().await.is_empty(), "nothing was stored");
}
