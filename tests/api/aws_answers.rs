//! AWS's answers to refused conditional writes, where SeaweedFS sends `412`: `409
//! ConditionalRequestConflict` to writers that race, and `404 NoSuchKey` to an `If-Match` write
//! of a missing key. The fault proxy reshapes SeaweedFS's answers into AWS's (keeping the
//! store's headers), and every answer must still be the truth: a conflict is never taken for
//! "held" or "not holder", a missing key never for a missing bucket.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::helpers::support::proxy::{AwsAnswers, FaultProxy};
use crate::helpers::{json_with, problem, support, TestApp};

const S3_TIMEOUT: Duration = Duration::from_secs(5);

/// Two replicas over one bucket, each with its own cache, both behind a proxy answering as AWS.
async fn two_replicas_answered_as_aws(shape: AwsAnswers) -> (TestApp, TestApp, FaultProxy, String) {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let proxy = FaultProxy::start(&support::s3_endpoint()).await;
    proxy.aws_answers(Some(shape));
    let a = TestApp::s3_via(&bucket, &proxy.endpoint, S3_TIMEOUT).await;
    let b = TestApp::s3_via(&bucket, &proxy.endpoint, S3_TIMEOUT).await;
    (a, b, proxy, bucket)
}

fn reshaped(proxy: &FaultProxy, code: &str) -> usize {
    proxy.faults_injected().get(code).copied().unwrap_or(0)
}

#[tokio::test]
async fn racing_acquires_answered_409_conflict_have_one_holder_and_the_rest_see_it_held() {
    let (a, b, proxy, _) = two_replicas_answered_as_aws(AwsAnswers::Conflicts).await;
    let answers = join_all((0..8).map(|i| {
        let replica = if i % 2 == 0 { &a } else { &b };
        replica.acquire("k", json!({"owner": format!("owner-{i}"), "ttl": 60}))
    }))
    .await;
    let mut holders = Vec::new();
    let mut refused = Vec::new();
    for answer in answers {
        match answer.status().as_u16() {
            200 => holders.push(answer.json::<Value>().await.unwrap()),
            _ => refused.push(problem(answer, 409, "lock-held").await),
        }
    }
    assert_eq!(holders.len(), 1, "{holders:?}");
    for r in &refused {
        assert_eq!(
            r["owner"], holders[0]["owner"],
            "refused for the true holder"
        );
    }
    assert!(
        reshaped(&proxy, "ConditionalRequestConflict") > 0,
        "the losers were answered 409: {:?}",
        proxy.faults_injected()
    );
}

#[tokio::test]
async fn a_stale_renew_and_release_answered_409_conflict_still_succeed() {
    let (a, b, proxy, _) = two_replicas_answered_as_aws(AwsAnswers::Conflicts).await;
    let g = json_with(
        a.acquire("k", json!({"owner": "alice", "ttl": 30})).await,
        200,
    )
    .await;
    // Through b, the lease changes: a's remembered version is stale, its next write refused.
    json_with(
        b.renew("k", json!({"token": g["token"], "ttl": 60})).await,
        200,
    )
    .await;
    let renewed = json_with(
        a.renew("k", json!({"token": g["token"], "ttl": 90})).await,
        200,
    )
    .await;
    assert_eq!(renewed["expire"], 90);
    assert_eq!(reshaped(&proxy, "ConditionalRequestConflict"), 1);
    json_with(
        b.renew("k", json!({"token": g["token"], "ttl": 60})).await,
        200,
    )
    .await;
    let released = json_with(a.release("k", json!({"token": g["token"]})).await, 200).await;
    assert_eq!(released["owner"], Value::Null);
    // b's renew was stale too (a renewed behind its back), then a's release.
    assert_eq!(reshaped(&proxy, "ConditionalRequestConflict"), 3);
    let stored: Value = serde_json::from_slice(&a.stored("k").await.unwrap()).unwrap();
    assert_eq!(stored["owner"], Value::Null);
}

#[tokio::test]
async fn writes_to_a_deleted_lock_answered_404_no_such_key_find_no_lock_not_a_missing_bucket() {
    let (a, _b, proxy, bucket) = two_replicas_answered_as_aws(AwsAnswers::MissingKey).await;
    let direct = s3lock::store::s3::S3Store::connect(&support::s3_settings()).await;
    for write in ["renew", "release"] {
        let g = json_with(
            a.acquire("k", json!({"owner": "alice", "ttl": 60})).await,
            200,
        )
        .await;
        // The object goes behind the replica's back: its remembered version names nothing.
        s3lock::store::Store::delete(&direct, &bucket, "locks/k")
            .await
            .unwrap();
        let answer = match write {
            "renew" => a.renew("k", json!({"token": g["token"]})).await,
            _ => a.release("k", json!({"token": g["token"]})).await,
        };
        problem(answer, 404, "lock-not-found").await;
    }
    assert_eq!(
        reshaped(&proxy, "NoSuchKey"),
        2,
        "{:?}",
        proxy.faults_injected()
    );
}
