//! Bad input refused before the store is touched; buckets and listing.

use serde_json::{json, Value};

use super::*;

fn valued(value: Value) -> AcquireRequest {
    AcquireRequest {
        value: Some(value),
        ..owner("a", 30)
    }
}

fn delayed(seconds: i64) -> AcquireRequest {
    AcquireRequest {
        lock_delay: Some(seconds),
        ..owner("a", 30)
    }
}

fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(1), |v, _| json!([v]))
}

#[tokio::test]
async fn bad_input_is_refused_before_the_store_is_touched() {
    let f = fixture();
    let cases: Vec<(Option<&str>, String, AcquireRequest, &str)> = vec![
        (None, "".into(), owner("a", 30), "key"),
        (None, "a//b".into(), owner("a", 30), "key"),
        (None, "a/../b".into(), owner("a", 30), "key"),
        (None, "a\u{1}".into(), owner("a", 30), "key"),
        (None, "k".repeat(513), owner("a", 30), "key"),
        (None, "k".into(), owner("a", 0), "ttl"),
        (None, "k".into(), owner("a", -5), "ttl"),
        (None, "k".into(), owner("a", 3601), "ttl"),
        (None, "k".into(), owner("", 30), "owner"),
        (None, "k".into(), waiting("a", 30, -1.0), "wait"),
        (None, "k".into(), waiting("a", 30, 61.0), "wait"),
        (None, "k".into(), waiting("a", 30, f64::NAN), "wait"),
        (None, "k".into(), valued(json!("x".repeat(4095))), "value"),
        (None, "k".into(), valued(nested(33)), "value"),
        (None, "k".into(), delayed(61), "lock_delay"),
        (None, "k".into(), delayed(-1), "lock_delay"),
    ];
    for (bucket, key, req, field) in cases {
        match f.engine.acquire(bucket, &key, req).await {
            Err(LockError::InvalidInput { field: got, .. }) => assert_eq!(got, field, "{key:?}"),
            other => panic!("{key:?}: expected invalid {field}, got {other:?}"),
        }
    }
    assert!(matches!(
        f.engine
            .acquire(Some("elsewhere"), "k", owner("a", 30))
            .await,
        Err(LockError::BucketNotAllowed(_))
    ));
    assert_eq!(
        f.store.gets.load(Ordering::SeqCst),
        0,
        "no bad request reached the store"
    );
}

#[tokio::test]
async fn another_allowed_bucket_is_a_separate_namespace() {
    let f = fixture();
    f.engine
        .acquire(None, "k", owner("alice", 30))
        .await
        .unwrap();
    let other = f
        .engine
        .acquire(Some("other-bucket"), "k", owner("bob", 30))
        .await
        .unwrap();
    assert_eq!(other.bucket, "other-bucket");
    assert_eq!(other.fencing_token, 1);
}

#[tokio::test]
async fn list_shows_locks_under_a_prefix_without_tokens() {
    let f = fixture();
    for k in ["jobs/a", "jobs/b", "other"] {
        f.engine.acquire(None, k, owner("alice", 30)).await.unwrap();
    }
    f.put_raw("jobs/unreadable", "garbage").await;
    let views = f
        .engine
        .list(None, "jobs/", None, None)
        .await
        .unwrap()
        .items;
    let keys: Vec<_> = views.iter().map(|v| v.key.as_str()).collect();
    assert_eq!(keys, ["jobs/a", "jobs/b"]);
    assert!(views.iter().all(|v| v.token.is_none() && v.locked));
    assert_eq!(
        f.engine
            .list(None, "", None, None)
            .await
            .unwrap()
            .items
            .len(),
        3
    );
}
