//! Semaphores through the real app: on the local store and on SeaweedFS S3, over two replicas
//! sharing one bucket where it matters.

use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::auth::{call, ADMIN};
use crate::helpers::{json_with, problem, support, TestApp};

pub async fn post(app: &TestApp, path: &str, body: Value) -> Response {
    app.request(Method::POST, path, Some(body)).await
}

async fn acquire(app: &TestApp, key: &str, body: Value) -> Response {
    post(app, &format!("/semaphores/{key}/acquire"), body).await
}

async fn status(app: &TestApp, key: &str) -> Value {
    let resp = app
        .request(Method::GET, &format!("/semaphores/{key}"), None)
        .await;
    json_with(resp, 200).await
}

/// Two replicas over one fresh bucket of the real S3 server.
pub async fn two_s3_replicas() -> (TestApp, TestApp) {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    (TestApp::s3(&bucket).await, TestApp::s3(&bucket).await)
}

/// Asks `until` of the status every 100 ms, for at most a minute (no timing is asserted: the
/// bound only keeps a broken server from hanging the suite).
pub async fn poll_status(app: &TestApp, path: &str, until: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..600 {
        let view = json_with(app.request(Method::GET, path, None).await, 200).await;
        if until(&view) {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never reached the state looked for");
}

fn owners(view: &Value) -> Vec<String> {
    view["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["owner"].as_str().unwrap().to_owned())
        .collect()
}

/// N holders on two replicas, the N+1st refused, and one that waits granted when one releases.
async fn n_holders_and_the_next_refused_or_queued(a: &TestApp, b: &TestApp) {
    let key = "jobs/deploy";
    let first = json_with(
        acquire(a, key, json!({"owner": "w1", "limit": 2, "ttl": 60})).await,
        200,
    )
    .await;
    assert_eq!(first["lease"]["owner"], "w1");
    assert_eq!(first["permits_left"], 1);
    let second = json_with(
        acquire(b, key, json!({"owner": "w2", "limit": 2, "ttl": 60})).await,
        200,
    )
    .await;
    assert_ne!(first["token"], second["token"]);
    assert!(second["lease"]["fencing_token"].as_u64() > first["lease"]["fencing_token"].as_u64());
    let full = acquire(a, key, json!({"owner": "w3", "limit": 2})).await;
    assert!(full.headers().contains_key("retry-after"));
    let p = problem(full, 409, "semaphore-full").await;
    assert!(
        p["detail"].as_str().unwrap().contains("all 2 permits"),
        "{p}"
    );
    // w3 waits on replica b; the status there shows it, and shows no token.
    let waiter = {
        let url = format!("{}/semaphores/{key}/acquire", b.base);
        tokio::spawn(async move {
            let body = json!({"owner": "w3", "limit": 2, "ttl": 60, "wait": 30});
            reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
        })
    };
    let seen = poll_status(b, &format!("/semaphores/{key}"), |v| v["waiters_here"] == 1).await;
    assert_eq!(owners(&seen), ["w1", "w2"]);
    assert_eq!(
        (seen["limit"].clone(), seen["permits_left"].clone()),
        (json!(2), json!(0))
    );
    assert!(seen.get("token").is_none() && seen["holders"][0].get("token").is_none());
    // w1 releases on replica a: w3 is granted.
    let token = first["token"].as_str().unwrap();
    let released = json_with(
        post(
            a,
            &format!("/semaphores/{key}/release"),
            json!({"token": token}),
        )
        .await,
        200,
    )
    .await;
    assert!(released.get("token").is_none());
    let granted = json_with(waiter.await.unwrap(), 200).await;
    assert_eq!(granted["lease"]["owner"], "w3");
    assert_eq!(owners(&status(a, key).await), ["w2", "w3"]);
}

#[tokio::test]
async fn n_holders_over_two_replicas_and_the_next_refused_or_queued_on_s3() {
    let (a, b) = two_s3_replicas().await;
    n_holders_and_the_next_refused_or_queued(&a, &b).await;
}

#[tokio::test]
async fn n_holders_and_the_next_refused_or_queued_on_the_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::local(dir.path()).await;
    n_holders_and_the_next_refused_or_queued(&app, &app).await;
}

/// A holder that crashes (never renews or releases) holds its permit until its lease ends, and
/// no longer: nobody cleans up.
async fn a_crashed_holders_permit_comes_back(a: &TestApp, b: &TestApp) {
    let key = "crash";
    json_with(
        acquire(a, key, json!({"owner": "crashes", "limit": 1, "ttl": 2})).await,
        200,
    )
    .await;
    problem(
        acquire(b, key, json!({"owner": "next", "limit": 1})).await,
        409,
        "semaphore-full",
    )
    .await;
    poll_status(b, &format!("/semaphores/{key}"), |v| v["permits_left"] == 1).await;
    let next = json_with(
        acquire(b, key, json!({"owner": "next", "limit": 1})).await,
        200,
    )
    .await;
    assert_eq!(
        owners(&next),
        ["next"],
        "the crashed holder was dropped by the write"
    );
}

#[tokio::test]
async fn a_crashed_holders_permit_comes_back_after_its_ttl_on_s3() {
    let (a, b) = two_s3_replicas().await;
    a_crashed_holders_permit_comes_back(&a, &b).await;
}

#[tokio::test]
async fn a_crashed_holders_permit_comes_back_after_its_ttl_on_the_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::local(dir.path()).await;
    a_crashed_holders_permit_comes_back(&app, &app).await;
}

#[tokio::test]
async fn a_limit_mismatch_is_refused_while_holders_remain_on_s3() {
    let (a, b) = &two_s3_replicas().await;
    let held = json_with(
        acquire(a, "m", json!({"owner": "a", "limit": 3})).await,
        200,
    )
    .await;
    let p = problem(
        acquire(b, "m", json!({"owner": "b", "limit": 2, "wait": 5})).await,
        409,
        "limit-mismatch",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("limit is 3"), "{p}");
    let token = held["token"].as_str().unwrap();
    json_with(
        post(a, "/semaphores/m/release", json!({"token": token})).await,
        200,
    )
    .await;
    let now_two = json_with(
        acquire(b, "m", json!({"owner": "b", "limit": 2})).await,
        200,
    )
    .await;
    assert_eq!(now_two["limit"], 2);
}

#[tokio::test]
async fn renew_release_break_and_watch_answer_shared_views() {
    let app = TestApp::memory_with_auth(&crate::auth::tokens_file()).await;
    let app = &app;
    let send = |method, path: String, body| async move {
        call(app, method, &path, Some(ADMIN), body).await
    };
    let held = json_with(
        send(
            Method::POST,
            "/semaphores/s/acquire".into(),
            Some(json!({"limit": 2, "ttl": 30})),
        )
        .await,
        200,
    )
    .await;
    let token = held["token"].as_str().unwrap().to_owned();
    let renewed = json_with(
        send(
            Method::POST,
            "/semaphores/s/renew".into(),
            Some(json!({"token": token, "ttl": 90})),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(renewed["lease"]["expire"], 90);
    assert_eq!(renewed["token"], held["token"]);
    // A watch at the current index waits; at an older one it answers at once.
    let index = renewed["index"].as_u64().unwrap();
    let watched = json_with(
        send(
            Method::GET,
            format!("/semaphores/s/watch?index={}&wait=5", index - 1),
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(watched["index"], index);
    let broken = json_with(
        send(
            Method::POST,
            "/semaphores/s/break".into(),
            Some(json!({"reason": "test"})),
        )
        .await,
        200,
    )
    .await;
    assert!(broken["holders"].as_array().unwrap().is_empty());
    problem(
        send(
            Method::POST,
            "/semaphores/s/release".into(),
            Some(json!({"token": token})),
        )
        .await,
        409,
        "not-holder",
    )
    .await;
    problem(
        send(
            Method::POST,
            "/semaphores/never/renew".into(),
            Some(json!({"token": "x"})),
        )
        .await,
        404,
        "lock-not-found",
    )
    .await;
}

#[tokio::test]
async fn bad_input_is_400_with_nothing_stored() {
    let app = TestApp::memory().await;
    for (body, kind, field) in [
        (json!({"owner": "a"}), "malformed-body", ""),
        (json!({"limit": 0}), "invalid-input", "limit"),
        (json!({"limit": 257}), "invalid-input", "limit"),
        (json!({"limit": -1}), "invalid-input", "limit"),
        (json!({"limit": 2.5}), "malformed-body", ""),
        (json!({"limit": "2"}), "malformed-body", ""),
        (json!({"limit": 2, "mode": "shared"}), "malformed-body", ""),
        (json!({"limit": 2, "value": 1}), "malformed-body", ""),
        (json!({"limit": 2, "ttl": 0}), "invalid-input", "ttl"),
        (json!({"limit": 2, "wait": -1}), "invalid-input", "wait"),
        (json!({"limit": 2, "owner": ""}), "invalid-input", "owner"),
    ] {
        let p = problem(acquire(&app, "bad", body.clone()).await, 400, kind).await;
        if !field.is_empty() {
            assert!(
                p["detail"].as_str().unwrap().starts_with(field),
                "{body}: {p}"
            );
        }
    }
    let no_body = app
        .request(Method::POST, "/semaphores/bad/acquire", None)
        .await;
    problem(no_body, 400, "malformed-body").await;
    problem(
        acquire(&app, "a//b", json!({"limit": 1})).await,
        400,
        "invalid-input",
    )
    .await;
    problem(
        post(&app, "/semaphores/bad/renew", json!({"ttl": 5})).await,
        400,
        "malformed-body",
    )
    .await;
    assert!(app.snapshot().await.is_empty(), "nothing was stored");
}

#[tokio::test]
async fn a_lock_key_in_the_semaphores_namespace_is_refused_and_lists_skip_it() {
    let app = TestApp::memory().await;
    json_with(acquire(&app, "x", json!({"limit": 1})).await, 200).await;
    let p = problem(
        app.acquire(".semaphores/x", json!({})).await,
        400,
        "invalid-input",
    )
    .await;
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("reserved for semaphores"),
        "{p}"
    );
    problem(app.status(".rwlocks/x").await, 400, "invalid-input").await;
    json_with(app.acquire("x", json!({})).await, 200).await;
    let list = json_with(app.request(Method::GET, "/locks", None).await, 200).await;
    let keys: Vec<_> = list["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["x"], "the semaphore x is not a lock");
}

#[tokio::test]
async fn an_auth_tokens_prefix_is_checked_against_the_semaphores_namespace() {
    const SEM_JOBS: &str = "sem-jobs-token-0123456789abcdef";
    let tokens = format!(
        "{}{SEM_JOBS} name=sem prefix=.semaphores/jobs/\n",
        crate::auth::tokens_file()
    );
    let app = &TestApp::memory_with_auth(&tokens).await;
    let acquire_as = |token, key: &str| {
        let path = format!("/semaphores/{key}/acquire");
        async move {
            call(
                app,
                Method::POST,
                &path,
                Some(token),
                Some(json!({"limit": 1})),
            )
            .await
        }
    };
    json_with(acquire_as(SEM_JOBS, "jobs/x").await, 200).await;
    problem(acquire_as(SEM_JOBS, "other").await, 403, "forbidden").await;
    // A token for the locks under jobs/ does not reach the semaphores there.
    problem(
        acquire_as(crate::auth::CI, "jobs/y").await,
        403,
        "forbidden",
    )
    .await;
    // Breaking needs an admin token.
    let resp = call(
        app,
        Method::POST,
        "/semaphores/jobs/x/break",
        Some(SEM_JOBS),
        None,
    )
    .await;
    problem(resp, 403, "forbidden").await;
}
