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
