//! S3 requests per lock operation, counted by the proxy between the replicas and SeaweedFS:
//! real HTTP requests, the SDK's retries included. Warm operations are one conditional write;
//! a lock never seen costs a read more; a stale cache costs a refused write and a read, and
//! never a wrong answer; a blocked waiter polls no faster than its backoff.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::helpers::support::proxy::FaultProxy;
use crate::helpers::{json_with, problem, support, TestApp};

const S3_TIMEOUT: Duration = Duration::from_secs(10);

/// Two replicas over one bucket, each with its own counting proxy.
async fn two_counted_replicas() -> [(TestApp, FaultProxy); 2] {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let proxy = FaultProxy::start(&support::s3_endpoint()).await;
        let app = TestApp::s3_via(&bucket, &proxy.endpoint, S3_TIMEOUT).await;
        replicas.push((app, proxy));
    }
    replicas.try_into().unwrap_or_else(|_| unreachable!())
}

/// (GETs, PUTs, all requests) the proxy saw during `call`.
async fn counted<T>(
    proxy: &FaultProxy,
    call: impl std::future::Future<Output = T>,
) -> (T, (usize, usize, usize)) {
    proxy.reset_counts();
    let out = call.await;
    let counts = (proxy.count("GET"), proxy.count("PUT"), proxy.total());
    (out, counts)
}

#[tokio::test]
async fn warm_acquire_renew_and_release_are_one_s3_request_each() {
    let [(app, proxy), _] = two_counted_replicas().await;
    let (resp, n) = counted(&proxy, app.acquire("k", json!({"owner": "alice"}))).await;
    let grant = json_with(resp, 200).await;
    assert_eq!(
        n,
        (1, 1, 2),
        "cold acquire: one read (404) and one conditional create"
    );

    let (resp, n) = counted(&proxy, app.renew("k", json!({"token": grant["token"]}))).await;
    json_with(resp, 200).await;
    assert_eq!(n, (0, 1, 1), "warm renew");

    let refresh = json!({"owner": "alice", "token": grant["token"]});
    let (resp, n) = counted(&proxy, app.acquire("k", refresh)).await;
    assert_eq!(json_with(resp, 200).await["token"], grant["token"]);
    assert_eq!(n, (0, 1, 1), "the holder's reentrant acquire");

    let (resp, n) = counted(&proxy, app.release("k", json!({"token": grant["token"]}))).await;
    json_with(resp, 200).await;
    assert_eq!(n, (0, 1, 1), "warm release");

    let (resp, n) = counted(&proxy, app.acquire("k", json!({"owner": "bob"}))).await;
    assert_eq!(json_with(resp, 200).await["fencing_token"], 2);
    assert_eq!(n, (0, 1, 1), "warm acquire of a lock this replica released");

    let (resp, n) = counted(&proxy, app.status("k")).await;
    json_with(resp, 200).await;
    assert_eq!(n, (1, 0, 1), "status reads the store");
}

#[tokio::test]
async fn a_lock_another_replica_wrote_costs_at_most_one_request_more_and_never_a_false_409() {
    let [(a, proxy_a), (b, proxy_b)] = two_counted_replicas().await;
    let alice = json_with(a.acquire("k", json!({"owner": "alice"})).await, 200).await;
    json_with(a.release("k", json!({"token": alice["token"]})).await, 200).await;
    // carol takes the lock through replica b: a's cache still says it is free.
    let (resp, n) = counted(&proxy_b, b.acquire("k", json!({"owner": "carol"}))).await;
    let carol = json_with(resp, 200).await;
    assert_eq!(n, (1, 1, 2), "cold on replica b");

    // a writes from its stale cache, S3 refuses (412), and the read-back is the fresh read
    // that decides: held.
    let (resp, n) = counted(&proxy_a, a.acquire("k", json!({"owner": "bob"}))).await;
    problem(resp, 409, "lock-held").await;
    assert_eq!(n, (1, 1, 2), "stale cache: one refused PUT, one GET");

    // Now a's cache says carol holds it; she releases through b. A "held" from the cache is
    // never answered without a read: bob gets the lock.
    json_with(b.release("k", json!({"token": carol["token"]})).await, 200).await;
    let (resp, n) = counted(&proxy_a, a.acquire("k", json!({"owner": "bob"}))).await;
    assert_eq!(json_with(resp, 200).await["fencing_token"], 3);
    assert_eq!(
        n,
        (1, 1, 2),
        "cached 'held' confirmed by one GET, then one PUT"
    );

    // carol's old token is refused on a (not-holder is never decided from the cache either).
    let (resp, n) = counted(&proxy_a, a.release("k", json!({"token": carol["token"]}))).await;
    problem(resp, 409, "not-holder").await;
    assert_eq!(n, (1, 0, 1));
}

#[tokio::test]
async fn renew_and_release_on_a_replica_that_never_saw_the_lock_read_once() {
    let [(a, _), (b, proxy_b)] = two_counted_replicas().await;
    let g = json_with(a.acquire("k", json!({"owner": "alice"})).await, 200).await;
    let (resp, n) = counted(&proxy_b, b.renew("k", json!({"token": g["token"]}))).await;
    json_with(resp, 200).await;
    assert_eq!(n, (1, 1, 2));
    let (resp, n) = counted(&proxy_b, b.release("k", json!({"token": g["token"]}))).await;
    json_with(resp, 200).await;
    assert_eq!(n, (0, 1, 1), "and then it is warm there");
}

#[tokio::test]
async fn a_blocked_waiter_polls_no_faster_than_its_backoff() {
    let [(a, proxy_a), (b, _)] = two_counted_replicas().await;
    json_with(
        b.acquire("k", json!({"owner": "alice", "ttl": 60})).await,
        200,
    )
    .await;
    let wait = 3.0;
    let started = Instant::now();
    let (resp, n) = counted(
        &proxy_a,
        a.acquire("k", json!({"owner": "bob", "wait": wait})),
    )
    .await;
    let waited = started.elapsed();
    problem(resp, 409, "lock-held").await;
    assert!(waited >= Duration::from_secs_f64(wait), "{waited:?}");
    // The lock's watcher reads at once, then naps 25 ms, doubling to 1 s, each nap jittered to
    // [half, full] but never under 25 ms: even at the shortest naps (reads at 0, 25, 50, 100,
    // 200, 400, 800, 1300, 1800, 2300, 2800 ms) 3 s allow the first try, 11 watcher reads and
    // the last try at the deadline. (A newcomer used to make the watcher read once more at
    // once and start its backoff over: up to 14.)
    let (gets, puts, total) = n;
    eprintln!("a waiter blocked for {waited:?} read the lock {gets} times");
    assert_eq!(puts, 0, "a waiter never writes while the lock is held");
    assert_eq!(gets, total);
    assert!(
        (4..=13).contains(&gets),
        "{gets} reads in a {wait} s wait: faster than the backoff allows"
    );
}
