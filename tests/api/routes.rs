//! Each route's answers, over the memory and local stores.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{json_with, problem, TestApp, OTHER_BUCKET};

#[tokio::test]
async fn a_lock_goes_through_acquire_status_renew_and_release() {
    let app = TestApp::memory().await;
    let granted = json_with(
        app.acquire("jobs/nightly-etl", json!({"owner": "alice", "ttl": 30}))
            .await,
        200,
    )
    .await;
    assert_eq!(granted["key"], "jobs/nightly-etl");
    assert_eq!(granted["bucket"], "default");
    assert_eq!(granted["owner"], "alice");
    assert_eq!(granted["fencing_token"], 1);
    assert_eq!(granted["expire"], 30);
    assert_eq!(granted["locked"], true);
    assert!(granted["ttl_remaining_ms"].as_i64().unwrap() > 25_000);
    let token = granted["token"].as_str().unwrap().to_owned();

    let status = json_with(app.status("jobs/nightly-etl").await, 200).await;
    assert_eq!(status["locked"], true);
    assert_eq!(status["owner"], "alice");
    assert!(
        status.get("token").is_none(),
        "status never shows the token: {status}"
    );

    let renewed = json_with(
        app.renew("jobs/nightly-etl", json!({"token": token, "ttl": 120}))
            .await,
        200,
    )
    .await;
    assert_eq!(renewed["expire"], 120);
    assert_eq!(renewed["token"], token.as_str());
    assert_eq!(renewed["fencing_token"], 1);

    let released = json_with(
        app.release("jobs/nightly-etl", json!({"token": token}))
            .await,
        200,
    )
    .await;
    assert_eq!(released["owner"], serde_json::Value::Null);
    assert!(released["release_time"].is_string());
    assert_eq!(released["locked"], false);
    assert!(released.get("token").is_none());

    let after = json_with(app.status("jobs/nightly-etl").await, 200).await;
    assert_eq!(after["locked"], false);
}

#[tokio::test]
async fn an_acquire_with_no_body_takes_the_defaults() {
    let app = TestApp::memory().await;
    let resp = app
        .raw(Method::POST, "/locks/plain/acquire", None, "")
        .await;
    let granted = json_with(resp, 200).await;
    assert_eq!(granted["expire"], 60);
    assert_eq!(
        granted["owner"].as_str().unwrap().len(),
        32,
        "a random owner"
    );
}

#[tokio::test]
async fn a_second_owner_gets_409_with_the_holder_and_retry_after() {
    let app = TestApp::memory().await;
    json_with(
        app.acquire("k", json!({"owner": "alice", "ttl": 30})).await,
        200,
    )
    .await;
    let resp = app.acquire("k", json!({"owner": "bob"})).await;
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let body = problem(resp, 409, "lock-held").await;
    assert_eq!(body["owner"], "alice");
    assert!(body["expires_at"].as_str().unwrap().ends_with("+00:00"));
}

#[tokio::test]
async fn status_with_owner_judges_locked_from_that_owners_view() {
    let app = TestApp::memory().await;
    json_with(app.acquire("k", json!({"owner": "alice"})).await, 200).await;
    let mine = json_with(
        app.request(Method::GET, "/locks/k?owner=alice", None).await,
        200,
    )
    .await;
    assert_eq!(mine["locked"], false);
    let theirs = json_with(
        app.request(Method::GET, "/locks/k?owner=bob", None).await,
        200,
    )
    .await;
    assert_eq!(theirs["locked"], true);
}

#[tokio::test]
async fn a_lock_that_never_existed_is_unlocked_to_status_and_404_to_renew_and_release() {
    let app = TestApp::memory().await;
    let never = json_with(app.status("ghost").await, 200).await;
    assert_eq!(never["locked"], false);
    assert_eq!(never["owner"], serde_json::Value::Null);
    problem(
        app.renew("ghost", json!({"token": "t"})).await,
        404,
        "lock-not-found",
    )
    .await;
    problem(
        app.release("ghost", json!({"token": "t"})).await,
        404,
        "lock-not-found",
    )
    .await;
    assert_eq!(app.stored("ghost").await, None);
}

#[tokio::test]
async fn a_wrong_token_gets_409_and_changes_nothing() {
    let app = TestApp::memory().await;
    json_with(app.acquire("k", json!({"owner": "alice"})).await, 200).await;
    let before = app.stored("k").await;
    problem(
        app.renew("k", json!({"token": "not-it"})).await,
        409,
        "not-holder",
    )
    .await;
    problem(
        app.release("k", json!({"token": "not-it"})).await,
        409,
        "not-holder",
    )
    .await;
    assert_eq!(app.stored("k").await, before);
}

#[tokio::test]
async fn releasing_twice_with_your_own_token_is_idempotent() {
    let app = TestApp::memory().await;
    let g = json_with(app.acquire("k", json!({})).await, 200).await;
    let token = g["token"].clone();
    json_with(app.release("k", json!({"token": token})).await, 200).await;
    let again = json_with(app.release("k", json!({"token": token})).await, 200).await;
    assert_eq!(again["owner"], serde_json::Value::Null);
}

#[tokio::test]
async fn percent_encoded_keys_are_decoded_and_slashes_are_part_of_the_key() {
    let app = TestApp::memory().await;
    let g = json_with(
        app.acquire("caf%C3%A9/a%20b", json!({"owner": "alice"}))
            .await,
        200,
    )
    .await;
    assert_eq!(g["key"], "café/a b");
    // An encoded slash names the same key as a plain one.
    let s = json_with(app.status("caf%C3%A9%2Fa%20b").await, 200).await;
    assert_eq!(s["owner"], "alice");
    // A key whose last segment is an action word is still a key when read.
    let odd = json_with(app.acquire("x/acquire", json!({"owner": "bob"})).await, 200).await;
    assert_eq!(odd["key"], "x/acquire");
    assert_eq!(
        json_with(app.status("x/acquire").await, 200).await["owner"],
        "bob"
    );
}

#[tokio::test]
async fn list_shows_the_locks_under_a_prefix_without_tokens() {
    let app = TestApp::memory().await;
    for k in ["jobs/a", "jobs/b", "other"] {
        json_with(app.acquire(k, json!({"owner": "alice"})).await, 200).await;
    }
    let listed = json_with(
        app.request(Method::GET, "/locks?prefix=jobs/", None).await,
        200,
    )
    .await;
    let locks = listed["locks"].as_array().unwrap();
    let keys: Vec<_> = locks.iter().map(|l| l["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["jobs/a", "jobs/b"]);
    assert!(locks.iter().all(|l| l.get("token").is_none()));
    let all = json_with(app.request(Method::GET, "/locks", None).await, 200).await;
    assert_eq!(all["locks"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn an_allowed_bucket_is_served_under_buckets_and_others_are_403() {
    let app = TestApp::memory().await;
    let path = format!("/buckets/{OTHER_BUCKET}/locks/k/acquire");
    let g = json_with(
        app.request(Method::POST, &path, Some(json!({"owner": "alice"})))
            .await,
        200,
    )
    .await;
    assert_eq!(g["bucket"], OTHER_BUCKET);
    assert!(app.stored_in(OTHER_BUCKET, "k").await.is_some());
    assert_eq!(
        app.stored("k").await,
        None,
        "the default bucket is untouched"
    );
    let status = json_with(
        app.request(
            Method::GET,
            &format!("/buckets/{OTHER_BUCKET}/locks/k"),
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(status["owner"], "alice");
    let listed = json_with(
        app.request(Method::GET, &format!("/buckets/{OTHER_BUCKET}/locks"), None)
            .await,
        200,
    )
    .await;
    assert_eq!(listed["locks"].as_array().unwrap().len(), 1);

    for (method, path) in [
        (Method::POST, "/buckets/secret-bucket/locks/k/acquire"),
        (Method::GET, "/buckets/secret-bucket/locks/k"),
        (Method::GET, "/buckets/secret-bucket/locks"),
    ] {
        problem(
            app.request(method, path, Some(json!({}))).await,
            403,
            "bucket-not-allowed",
        )
        .await;
    }
    assert_eq!(app.stored_in("secret-bucket", "k").await, None);
}

#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let app = TestApp::memory().await;
    let resp = app.status("k").await;
    assert!(resp.headers().get("x-request-id").is_some());
    let resp = app
        .http
        .get(format!("{}/locks/k", app.base))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-me-42");
}

#[tokio::test]
async fn healthz_answers_ok() {
    let app = TestApp::memory().await;
    let body = json_with(app.request(Method::GET, "/healthz", None).await, 200).await;
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn locks_on_the_local_store_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::local(dir.path()).await;
    let g = json_with(
        app.acquire("durable", json!({"owner": "alice", "ttl": 600}))
            .await,
        200,
    )
    .await;
    app.stop().await;

    let again = TestApp::local(dir.path()).await;
    let s = json_with(again.status("durable").await, 200).await;
    assert_eq!(s["owner"], "alice");
    assert_eq!(s["locked"], true);
    problem(
        again.acquire("durable", json!({"owner": "bob"})).await,
        409,
        "lock-held",
    )
    .await;
    json_with(
        again.release("durable", json!({"token": g["token"]})).await,
        200,
    )
    .await;
}

#[tokio::test]
async fn a_release_on_the_local_store_whose_directory_sync_failed_is_never_answered_released() {
    let dir = tempfile::tempdir().unwrap();
    let store = s3lock::store::local::LocalStore::open(dir.path()).unwrap();
    let app = TestApp::spawn(
        std::sync::Arc::new(store.clone()),
        std::sync::Arc::new(s3lock::clock::SystemClock),
        crate::helpers::engine_config("default", &[]),
    )
    .await;
    let g = json_with(
        app.acquire("k", json!({"owner": "alice", "ttl": 600}))
            .await,
        200,
    )
    .await;
    // The disk's fsync starts failing: the release's rename happens, its directory sync fails.
    store.fail_directory_syncs(Some(std::sync::Arc::new(|_: &std::path::Path| true)));
    problem(
        app.release("k", json!({"token": g["token"]})).await,
        503,
        "store-unavailable",
    )
    .await;
    problem(app.status("k").await, 503, "store-unavailable").await;
    // The disk recovers: the release is durable now, and shown as it is.
    store.fail_directory_syncs(None);
    let s = json_with(app.status("k").await, 200).await;
    assert_eq!(s["locked"], false);
}
