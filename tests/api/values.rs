//! A value on every lock: set by the holder at acquire and renew, shown to everyone by status,
//! list and watch, cleared by a release, bounded in size and depth; the old module's documents
//! read as no value.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{json_with, problem, support, TestApp};

/// The value a leader might publish: where to reach it.
fn leader_value() -> Value {
    json!({"addr": "10.0.0.7:8080", "term": 3, "tags": ["blue", null, 1.5]})
}

async fn listed(app: &TestApp, key: &str) -> Value {
    let page = json_with(app.request(Method::GET, "/locks", None).await, 200).await;
    page["locks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["key"] == key)
        .cloned()
        .unwrap_or_else(|| panic!("{key} is not listed: {page}"))
}

#[tokio::test]
async fn a_value_set_at_acquire_is_shown_to_everyone_by_status_list_and_watch() {
    let app = TestApp::memory().await;
    let alice = json_with(
        app.acquire("svc", json!({"owner": "alice", "value": leader_value()}))
            .await,
        200,
    )
    .await;
    assert_eq!(alice["value"], leader_value(), "{alice}");
    // Another client, with no token, sees it everywhere.
    let status = json_with(app.status("svc").await, 200).await;
    assert_eq!(status["value"], leader_value(), "{status}");
    assert!(status.get("token").is_none());
    assert_eq!(listed(&app, "svc").await["value"], leader_value());
    let index = alice["index"].as_u64().unwrap();
    let watched = json_with(
        app.request(
            Method::GET,
            &format!("/locks/svc?index={}&wait=5", index - 1),
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(watched["value"], leader_value(), "{watched}");
    // A lock with no value shows null, never leaves the field out.
    json_with(app.acquire("plain", json!({"owner": "bob"})).await, 200).await;
    let plain = json_with(app.status("plain").await, 200).await;
    assert_eq!(plain.get("value"), Some(&Value::Null), "{plain}");
    let never = json_with(app.status("never-taken").await, 200).await;
    assert_eq!(never.get("value"), Some(&Value::Null), "{never}");
}

#[tokio::test]
async fn a_renew_with_a_value_replaces_it_and_one_without_keeps_it() {
    let app = TestApp::memory().await;
    let alice = json_with(
        app.acquire("svc", json!({"owner": "alice", "value": "first"}))
            .await,
        200,
    )
    .await;
    let token = alice["token"].clone();
    let renewed = json_with(
        app.renew("svc", json!({"token": token, "value": {"n": 2}}))
            .await,
        200,
    )
    .await;
    assert_eq!(renewed["value"], json!({"n": 2}));
    assert_eq!(
        json_with(app.status("svc").await, 200).await["value"],
        json!({"n": 2})
    );
    let kept = json_with(
        app.renew("svc", json!({"token": token, "ttl": 30})).await,
        200,
    )
    .await;
    assert_eq!(
        kept["value"],
        json!({"n": 2}),
        "a renew without a value keeps it"
    );
    // The holder's refresh through acquire: without a value it keeps it, with one it replaces.
    let refreshed = json_with(
        app.acquire("svc", json!({"owner": "alice", "token": token}))
            .await,
        200,
    )
    .await;
    assert_eq!(refreshed["value"], json!({"n": 2}));
    let refreshed = json_with(
        app.acquire(
            "svc",
            json!({"owner": "alice", "token": token, "value": [3]}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(refreshed["value"], json!([3]));
    // An explicit null clears it, and the document no longer carries the field.
    let cleared = json_with(
        app.renew("svc", json!({"token": token, "value": null}))
            .await,
        200,
    )
    .await;
    assert_eq!(cleared["value"], Value::Null);
    let stored: Value = serde_json::from_slice(&app.stored("svc").await.unwrap()).unwrap();
    assert!(stored.get("value").is_none(), "{stored}");
}

#[tokio::test]
async fn a_release_clears_the_value_and_the_next_holder_starts_with_none() {
    let app = TestApp::memory().await;
    let alice = json_with(
        app.acquire("svc", json!({"owner": "alice", "value": leader_value()}))
            .await,
        200,
    )
    .await;
    let stored: Value = serde_json::from_slice(&app.stored("svc").await.unwrap()).unwrap();
    assert_eq!(stored["value"], leader_value(), "stored in the document");
    let released = json_with(
        app.release("svc", json!({"token": alice["token"]})).await,
        200,
    )
    .await;
    assert_eq!(released["value"], Value::Null, "{released}");
    assert_eq!(
        json_with(app.status("svc").await, 200).await["value"],
        Value::Null
    );
    let stored: Value = serde_json::from_slice(&app.stored("svc").await.unwrap()).unwrap();
    assert!(stored.get("value").is_none(), "{stored}");
    let bob = json_with(app.acquire("svc", json!({"owner": "bob"})).await, 200).await;
    assert_eq!(bob["value"], Value::Null);
}

#[tokio::test]
async fn an_oversize_or_too_deep_value_is_refused_and_nothing_is_stored() {
    let app = TestApp::memory().await;
    // 4096 bytes of compact JSON is the bound: a string of 4094 characters plus its quotes.
    let at_bound = "x".repeat(4094);
    let over = "x".repeat(4095);
    let mut deep = json!(1);
    for _ in 0..33 {
        deep = json!([deep]);
    }
    let mut deepest_allowed = json!(1);
    for _ in 0..32 {
        deepest_allowed = json!([deepest_allowed]);
    }
    for (what, value) in [("oversize", json!(over)), ("too deep", deep)] {
        let refused = problem(
            app.acquire("svc", json!({"owner": "alice", "value": value}))
                .await,
            400,
            "invalid-input",
        )
        .await;
        assert_eq!(refused["field"], "value", "{what}: {refused}");
    }
    assert!(app.snapshot().await.is_empty(), "nothing was stored");
    // At the bounds it is taken; a renew past them is refused and changes nothing.
    let alice = json_with(
        app.acquire("svc", json!({"owner": "alice", "value": at_bound}))
            .await,
        200,
    )
    .await;
    json_with(
        app.renew(
            "svc",
            json!({"token": alice["token"], "value": deepest_allowed}),
        )
        .await,
        200,
    )
    .await;
    let before = app.stored("svc").await.unwrap();
    let refused = problem(
        app.renew("svc", json!({"token": alice["token"], "value": over}))
            .await,
        400,
        "invalid-input",
    )
    .await;
    assert_eq!(refused["field"], "value");
    assert_eq!(
        app.stored("svc").await.unwrap(),
        before,
        "nothing was written"
    );
    // A value in a body escaped beyond recognition (every character as \uXXXX) still fits the
    // body limit and is judged by its compact size.
    let escaped = format!(
        r#"{{"token": {}, "value": "{}"}}"#,
        alice["token"],
        "\\u00e9".repeat(2000)
    );
    let resp = app
        .raw(
            Method::POST,
            "/locks/svc/renew",
            Some("application/json"),
            escaped,
        )
        .await;
    json_with(resp, 200).await;
}

#[tokio::test]
async fn a_document_written_by_the_seed_module_reads_as_no_value() {
    let (store, bucket) = support::s3_with_fresh_bucket().await;
    let app = TestApp::s3(&bucket).await;
    let seed = r#"{"expire": 900, "lock_time": "2099-01-01T00:00:00+00:00", "release_time": null, "owner": "bob"}"#;
    {
        use s3lock::store::Store;
        store
            .put_if_absent(&bucket, "locks/seed", bytes::Bytes::from(seed))
            .await
            .unwrap();
    }
    let status = json_with(app.status("seed").await, 200).await;
    assert_eq!(status["locked"], true, "{status}");
    assert_eq!(status.get("value"), Some(&Value::Null), "{status}");
    assert_eq!(listed(&app, "seed").await["value"], Value::Null);
    assert_eq!(app.stored("seed").await.unwrap(), seed.as_bytes());
}
