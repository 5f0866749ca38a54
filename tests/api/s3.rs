//! The API over a real S3 server, and over an S3 endpoint that is not there.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use s3lock::store::s3::{S3Settings, S3Store};
use serde_json::json;

use crate::helpers::{engine_config, json_with, problem, support, TestApp};

#[tokio::test]
async fn a_lock_round_trip_works_on_s3() {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let app = TestApp::s3(&bucket).await;
    let g = json_with(
        app.acquire("jobs/etl", json!({"owner": "alice", "ttl": 30}))
            .await,
        200,
    )
    .await;
    assert_eq!(g["fencing_token"], 1);
    problem(
        app.acquire("jobs/etl", json!({"owner": "bob"})).await,
        409,
        "lock-held",
    )
    .await;
    let listed = json_with(
        app.request(Method::GET, "/locks?prefix=jobs/", None).await,
        200,
    )
    .await;
    assert_eq!(listed["locks"][0]["owner"], "alice");
    json_with(
        app.renew("jobs/etl", json!({"token": g["token"], "ttl": 40}))
            .await,
        200,
    )
    .await;
    json_with(
        app.release("jobs/etl", json!({"token": g["token"]})).await,
        200,
    )
    .await;
    let b = json_with(app.acquire("jobs/etl", json!({"owner": "bob"})).await, 200).await;
    assert_eq!(b["fencing_token"], 2);
    // The stored document keeps the seed's fields, in its order and time format.
    let stored = String::from_utf8(app.stored("jobs/etl").await.unwrap().to_vec()).unwrap();
    assert!(
        stored.starts_with(r#"{"expire":60,"lock_time":""#),
        "{stored}"
    );
    assert!(
        stored.contains(r#""owner":"bob""#) && stored.contains(r#""fencing_token":2"#),
        "{stored}"
    );
}

#[tokio::test]
async fn an_expired_lock_is_taken_over_with_a_higher_fencing_token_and_the_old_holder_gets_409() {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let app = TestApp::s3(&bucket).await;
    let old = json_with(
        app.acquire("lease", json!({"owner": "alice", "ttl": 1}))
            .await,
        200,
    )
    .await;
    // bob waits; the lease runs out on the store's clock and bob takes over.
    let new = json_with(
        app.acquire("lease", json!({"owner": "bob", "ttl": 30, "wait": 10}))
            .await,
        200,
    )
    .await;
    assert_eq!(new["owner"], "bob");
    assert!(new["fencing_token"].as_u64() > old["fencing_token"].as_u64());
    let before = app.stored("lease").await;
    problem(
        app.renew("lease", json!({"token": old["token"]})).await,
        409,
        "not-holder",
    )
    .await;
    problem(
        app.release("lease", json!({"token": old["token"]})).await,
        409,
        "not-holder",
    )
    .await;
    assert_eq!(
        app.stored("lease").await,
        before,
        "the new holder's lock is untouched"
    );
}

#[tokio::test]
async fn a_lock_is_never_judged_expired_before_its_lease_ends_on_the_store_clock() {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let app = TestApp::s3(&bucket).await;
    let held = json_with(
        app.acquire("k", json!({"owner": "alice", "ttl": 2})).await,
        200,
    )
    .await;
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(held["expires_at"].as_str().unwrap()).unwrap();
    let taken = json_with(
        app.acquire("k", json!({"owner": "bob", "wait": 10})).await,
        200,
    )
    .await;
    // bob's lease was stamped on the store's clock after alice's had ended.
    let bob_start =
        chrono::DateTime::parse_from_rfc3339(taken["lock_time"].as_str().unwrap()).unwrap();
    assert!(bob_start >= expires_at, "{bob_start} < {expires_at}");
}

#[tokio::test]
async fn a_store_outage_answers_503_with_retry_after_and_grants_nothing() {
    // Nothing listens there: every S3 call fails to connect.
    let store = S3Store::connect(&S3Settings {
        endpoint: Some(support::closed_url()),
        path_style: true,
        operation_timeout: Duration::from_secs(3),
        max_clock_spread: None,
    })
    .await;
    let clock = store.clock();
    let app = TestApp::spawn(Arc::new(store), clock, engine_config("down-bucket", &[])).await;
    for resp in [
        app.acquire("k", json!({"owner": "alice"})).await,
        app.renew("k", json!({"token": "t"})).await,
        app.release("k", json!({"token": "t"})).await,
        app.status("k").await,
        app.request(Method::GET, "/locks", None).await,
    ] {
        assert_eq!(resp.headers()["retry-after"], "1");
        let p = problem(resp, 503, "store-unavailable").await;
        assert!(
            !p["detail"].as_str().unwrap().contains("127.0.0.1"),
            "no internals leak: {p}"
        );
    }
}

#[tokio::test]
async fn corrupt_and_seed_documents_in_the_bucket_are_never_overwritten_unread() {
    let (store, bucket) = support::s3_with_fresh_bucket().await;
    let app = TestApp::s3(&bucket).await;
    let put = |key: &str, body: &str| {
        let (store, bucket) = (store.clone(), bucket.clone());
        let (key, body) = (format!("locks/{key}"), bytes::Bytes::from(body.to_owned()));
        async move {
            use s3lock::store::Store;
            store.put_if_absent(&bucket, &key, body).await.unwrap();
        }
    };
    let corrupt = [
        ("not-json", "<html>not a lock</html>"),
        ("wrong-shape", r#"{"owner": ["alice"], "expire": "soon"}"#),
        (
            "truncated",
            r#"{"expire": 60, "lock_time": "2026-11-26T02:2"#,
        ),
        (
            "bad-time",
            r#"{"expire": 60, "lock_time": "yesterday", "release_time": null, "owner": "x"}"#,
        ),
        (
            "negative-expire",
            r#"{"expire": -1, "lock_time": "2026-11-26T02:24:19+00:00", "release_time": null, "owner": "x"}"#,
        ),
    ];
    for (key, body) in corrupt {
        put(key, body).await;
        problem(
            app.acquire(key, json!({"owner": "alice"})).await,
            409,
            "lock-unreadable",
        )
        .await;
        problem(
            app.renew(key, json!({"token": "t"})).await,
            409,
            "lock-unreadable",
        )
        .await;
        problem(
            app.release(key, json!({"token": "t"})).await,
            409,
            "lock-unreadable",
        )
        .await;
        problem(app.status(key).await, 409, "lock-unreadable").await;
        // A watch answers as the status does: never "free" for a document nobody can judge.
        for index in [0, 1] {
            let watched = app
                .http
                .get(format!("{}/locks/{key}?index={index}&wait=2", app.base))
                .send()
                .await
                .unwrap();
            problem(watched, 409, "lock-unreadable").await;
        }
        assert_eq!(
            app.stored(key).await.unwrap(),
            body.as_bytes(),
            "{key} was overwritten"
        );
    }
    // A document the old Python module wrote, held far into the future, is respected.
    let seed = r#"{"expire": 900, "lock_time": "2099-01-01T00:00:00.123456+00:00", "release_time": null, "owner": "bob"}"#;
    put("seed", seed).await;
    let held = problem(
        app.acquire("seed", json!({"owner": "alice"})).await,
        409,
        "lock-held",
    )
    .await;
    assert_eq!(held["owner"], "bob");
    assert_eq!(held["expires_at"], "2099-01-01T00:15:00.123456+00:00");
    assert_eq!(
        json_with(app.status("seed").await, 200).await["locked"],
        true
    );
    assert_eq!(app.stored("seed").await.unwrap(), seed.as_bytes());
    // An expired seed lock may be taken over, by the rules.
    put("old-seed", r#"{"expire": 60, "lock_time": "2020-01-01T00:00:00+00:00", "release_time": null, "owner": "bob"}"#).await;
    let taken = json_with(
        app.acquire("old-seed", json!({"owner": "alice"})).await,
        200,
    )
    .await;
    assert_eq!(taken["fencing_token"], 1);
    // The list skips what it cannot read, and shows the rest.
    let listed = json_with(app.request(Method::GET, "/locks", None).await, 200).await;
    let keys: Vec<_> = listed["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["old-seed", "seed"]);
}
