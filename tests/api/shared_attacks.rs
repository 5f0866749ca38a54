//! Semaphores and read-write locks attacked: lost answers, grants that land unseen, and the
//! writes of other holders in between, on the real S3 server behind the fault proxy.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::support::proxy::{Fault, FaultProxy, Latency};
use crate::helpers::{json_with, problem, support, TestApp};
use crate::semaphores::post;

fn holder_owners(view: &Value) -> Vec<String> {
    view["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["owner"].as_str().unwrap().to_owned())
        .collect()
}

/// The stored holders' owners, read straight from the store.
async fn stored_owners(app: &TestApp, object: &str) -> Vec<String> {
    let body = app.stored(object).await.expect("a stored document");
    let doc: Value = serde_json::from_slice(&body).unwrap();
    holder_owners(&doc)
}

/// A semaphore grant that lands after its caller was told 503 holds nobody's permit. On a
/// multi-holder document, other holders write over it (a renew, a grant, a release) without
/// taking it: it must be freed from whatever document still holds it, not only while the
/// stored body is still the grant byte for byte, or it keeps a permit for its whole lease.
#[tokio::test]
async fn a_semaphore_grant_that_landed_unseen_is_freed_after_another_holder_wrote_over_it() {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let proxy = FaultProxy::start(&support::s3_endpoint()).await;
    let a = TestApp::s3_via(&bucket, &proxy.endpoint, Duration::from_secs(1)).await;
    let b = TestApp::s3(&bucket).await;
    let object = ".semaphores/orphan";
    let bob = json_with(
        post(
            &b,
            "/semaphores/orphan/acquire",
            json!({"owner": "bob", "limit": 2, "ttl": 60}),
        )
        .await,
        200,
    )
    .await;
    // alice's grant is held back past replica a's S3 timeout, then still delivered.
    proxy.set_latency_of("PUT", Latency::Fixed(Duration::from_millis(1500)));
    problem(
        post(
            &a,
            "/semaphores/orphan/acquire",
            json!({"owner": "alice", "limit": 2, "ttl": 3600}),
        )
        .await,
        503,
        "store-unavailable",
    )
    .await;
    // Replica a cannot look at the store until bob has written over alice's late grant.
    proxy.fail_all(Some(Fault::SlowDown));
    for _ in 0..100 {
        if stored_owners(&b, object).await.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        stored_owners(&b, object).await,
        ["bob", "alice"],
        "alice's grant landed after she was told 503"
    );
    json_with(
        post(
            &b,
            "/semaphores/orphan/renew",
            json!({"token": bob["token"], "ttl": 60}),
        )
        .await,
        200,
    )
    .await;
    proxy.heal();
    // Bounded, never timed: the grant nobody learned of goes, and its permit with it.
    for _ in 0..300 {
        if stored_owners(&b, object).await == ["bob"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        stored_owners(&b, object).await,
        ["bob"],
        "alice's unseen grant still holds a permit for an hour"
    );
    let carol = json_with(
        post(
            &b,
            "/semaphores/orphan/acquire",
            json!({"owner": "carol", "limit": 2}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(holder_owners(&carol), ["bob", "carol"]);
}

/// A document written into the bucket by hand past the size bound is refused as unreadable by
/// every route, and never overwritten.
#[tokio::test]
async fn a_hand_written_ten_mib_document_is_refused_by_every_route_and_never_overwritten() {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let app = TestApp::s3(&bucket).await;
    let object = format!("{}.semaphores/big", crate::helpers::PREFIX);
    let mut body =
        br#"{"kind":"semaphore","limit":2,"holders":[],"fencing_token":0,"revision":1,"pad":""#
            .to_vec();
    body.resize(10 * 1024 * 1024, b'x');
    body.extend_from_slice(br#""}"#);
    app.store
        .put_if_absent(&bucket, &object, bytes::Bytes::from(body.clone()))
        .await
        .unwrap();
    for (path, payload) in [
        ("/semaphores/big/acquire", json!({"owner": "a", "limit": 2})),
        ("/semaphores/big/renew", json!({"token": "t"})),
        ("/semaphores/big/release", json!({"token": "t"})),
    ] {
        problem(post(&app, path, payload).await, 409, "lock-unreadable").await;
    }
    problem(
        app.request(reqwest::Method::GET, "/semaphores/big", None)
            .await,
        409,
        "lock-unreadable",
    )
    .await;
    let stored = app.store.get(&bucket, &object).await.unwrap().unwrap().body;
    assert_eq!(stored.len(), body.len(), "never overwritten");
}

/// A writer's grant lands after it was told 503, and the writer asks again on another replica,
/// waiting: its waiting entry is written over the grant it never learned of. That grant must
/// still be freed, or the writer waits behind its own lost grant for the whole lease.
#[tokio::test]
async fn a_writer_retrying_on_another_replica_after_a_lost_grant_is_not_kept_out_by_it() {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let proxy = FaultProxy::start(&support::s3_endpoint()).await;
    let a = TestApp::s3_via(&bucket, &proxy.endpoint, Duration::from_secs(1)).await;
    let b = TestApp::s3(&bucket).await;
    let object = ".rwlocks/lost";
    proxy.set_latency_of("PUT", Latency::Fixed(Duration::from_millis(1500)));
    problem(
        post(
            &a,
            "/rwlocks/lost/acquire",
            json!({"owner": "alice", "mode": "exclusive", "ttl": 3600}),
        )
        .await,
        503,
        "store-unavailable",
    )
    .await;
    proxy.fail_all(Some(Fault::SlowDown));
    for _ in 0..100 {
        if b.stored(object).await.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        stored_owners(&b, object).await,
        ["alice"],
        "the lost grant landed"
    );
    let retry = {
        let b_base = b.base.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{b_base}/rwlocks/lost/acquire"))
                .json(&json!({"owner": "alice", "mode": "exclusive", "ttl": 60, "wait": 20}))
                .send()
                .await
                .unwrap()
        })
    };
    // Once the retry's waiting entry is written over the lost grant, replica a may look.
    for _ in 0..100 {
        let doc: Value = serde_json::from_slice(&b.stored(object).await.unwrap()).unwrap();
        if doc["waiting"].as_array().is_some_and(|w| !w.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.heal();
    let granted = json_with(retry.await.unwrap(), 200).await;
    assert_eq!(holder_owners(&granted), ["alice"]);
    assert_eq!(granted["lease"]["fencing_token"], 2, "a grant of its own");
}
