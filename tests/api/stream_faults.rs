//! Change streams and lock-delay under the faults of a real network: answers that come late, a
//! watcher's read that comes back after a newer one, a store that cannot be read at a lease's
//! end, and a replica's bound on what a client may hold open. Two replicas on one SeaweedFS
//! bucket, one of them behind the fault proxy. Every stream must only ever move forward, and
//! say only what is true.

use std::sync::Arc;
use std::time::Duration;

use s3lock::clock::SystemClock;
use s3lock::lock::Engine;
use s3lock::startup::Server;
use s3lock::store::memory::MemoryStore;
use serde_json::{json, Value};

use crate::helpers::support::proxy::{Fault, FaultProxy};
use crate::helpers::{engine_config, json_with, problem, support, TestApp};
use crate::sse::{send, SseEvent, SseReader};

/// Replica `a` behind a fault proxy and replica `b` straight on the store, sharing a bucket.
async fn two_replicas() -> (TestApp, FaultProxy, TestApp) {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let proxy = FaultProxy::start(&support::s3_endpoint()).await;
    let a = TestApp::s3_via(&bucket, &proxy.endpoint, Duration::from_secs(30)).await;
    let b = TestApp::s3(&bucket).await;
    (a, proxy, b)
}

fn url(app: &TestApp, key: &str) -> String {
    format!("{}/locks/{key}/events", app.base)
}

fn index(view: &Value) -> u64 {
    view["index"].as_u64().expect("an index")
}

/// Reads events until one with id `until`, failing on any id lower than one already seen.
/// Returns the events read, the last one included.
async fn read_forward_until(events: &mut SseReader, mut highest: u64, until: u64) -> Vec<SseEvent> {
    let mut seen = Vec::new();
    loop {
        let event = events.next_event().await.expect("an event, not the end");
        let id = event.index();
        assert!(
            id >= highest,
            "the stream went back from id {highest} to {id}: {seen:?} then {event:?}"
        );
        highest = id;
        seen.push(event);
        if id == until {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_answered_late_never_takes_a_stream_back_to_an_older_state() {
    let (a, proxy, b) = two_replicas().await;
    let mut events = SseReader::open(&a.http, &url(&a, "k"), None).await;
    events.expect("free").await;
    let alice = json_with(a.acquire("k", json!({"owner": "alice"})).await, 200).await;
    let acquired = events.expect("acquired").await;

    // alice's release lands on the store, and its answer to replica a is slow.
    let held = proxy.hold_next_answer_of("PUT");
    let release = tokio::spawn({
        let (http, to) = (a.http.clone(), format!("{}/locks/k/release", a.base));
        let token = alice["token"].clone();
        async move { http.post(to).json(&json!({"token": token})).send().await }
    });
    held.answered().await;
    // Meanwhile bob takes the lock through replica b, and a's watcher reads it.
    let bob = json_with(b.acquire("k", json!({"owner": "bob"})).await, 200).await;
    let seen = read_forward_until(&mut events, acquired.index(), index(&bob)).await;
    assert_eq!(seen.last().unwrap().data["owner"], "bob", "{seen:?}");

    // The release's answer arrives at last: what a knows now is older than what it has shown.
    held.release();
    json_with(release.await.unwrap().unwrap(), 200).await;
    let renewed = json_with(b.renew("k", json!({"token": bob["token"]})).await, 200).await;
    let seen = read_forward_until(&mut events, index(&bob), index(&renewed)).await;
    assert_eq!(
        seen.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
        ["renewed"],
        "bob, shown holding, renewed; nothing older in between: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watchers_first_read_answered_late_never_takes_a_stream_or_a_watch_back_to_an_older_state(
) {
    let (a, proxy, b) = two_replicas().await;
    let alice = json_with(b.acquire("k", json!({"owner": "alice"})).await, 200).await;
    // The stream's watcher reads the lock first; its answer is slow to come back.
    let held = proxy.hold_next_answer_of("GET");
    let opened = tokio::spawn({
        let (http, to) = (a.http.clone(), url(&a, "k"));
        async move { send(&http, &to, None).await }
    });
    held.answered().await;
    // alice renews before the stream, tired of waiting for its watcher, reads the lock itself.
    let renewed = json_with(b.renew("k", json!({"token": alice["token"]})).await, 200).await;
    let mut events = SseReader::new(opened.await.unwrap()).await;
    let first = events.expect("held").await;
    assert!(
        first.index() >= index(&renewed),
        "the renew came before the stream's own read: {first:?}"
    );
    // A watch client that knows the renew waits for the next change (its own read finds it,
    // as the watcher has not answered yet).
    let watch = tokio::spawn({
        let (http, to) = (
            a.http.clone(),
            format!("{}/locks/k?index={}&wait=30", a.base, index(&renewed)),
        );
        async move { http.get(to).send().await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await; // its own read done: waited, not measured

    // The watcher's read comes back now, with the state before the renew.
    held.release();
    let again = json_with(b.renew("k", json!({"token": alice["token"]})).await, 200).await;
    let seen = read_forward_until(&mut events, first.index(), index(&again)).await;
    assert_eq!(
        seen.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
        ["renewed"],
        "{seen:?}"
    );
    let watched = json_with(watch.await.unwrap().unwrap(), 200).await;
    assert_eq!(index(&watched), index(&again), "{watched}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_renewed_on_another_replica_is_never_shown_expired_by_one_that_could_not_read_it() {
    let (a, proxy, b) = two_replicas().await;
    let mut events = SseReader::open(&a.http, &url(&a, "k"), None).await;
    events.expect("free").await;
    let alice = json_with(
        b.acquire("k", json!({"owner": "alice", "ttl": 2})).await,
        200,
    )
    .await;
    let acquired = events.expect("acquired").await;
    assert_eq!(acquired.index(), index(&alice));

    // Replica a cannot read the store for a while; alice renews well within her lease.
    proxy.fail_all(Some(Fault::SlowDown));
    let renewed = json_with(
        b.renew("k", json!({"token": alice["token"], "ttl": 60}))
            .await,
        200,
    )
    .await;
    // Past the end of the lease replica a last read (waited for, not measured).
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.heal();
    let next = events.next_event().await.expect("an event, not the end");
    assert_eq!(
        (next.event.as_str(), next.index()),
        ("renewed", index(&renewed)),
        "alice never lost the lock: {next:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_whose_lease_a_slow_write_used_up_is_not_kept_from_its_caller_by_its_lock_delay() {
    let (a, proxy, b) = two_replicas().await;
    // The grant is slow on its way to the store: by the time it lands, its one-second lease
    // has run out, even at the earliest the store's time may be (its `Date`s are whole seconds).
    let held = proxy.hold_next_request_of("PUT");
    let acquire = tokio::spawn({
        let (http, to) = (a.http.clone(), format!("{}/locks/k/acquire", a.base));
        async move {
            http.post(to)
                .json(&json!({"owner": "alice", "ttl": 1, "lock_delay": 60}))
                .send()
                .await
        }
    });
    held.answered().await;
    tokio::time::sleep(Duration::from_secs(4)).await; // waited for, not measured
    held.release();
    // Nobody ever held that lease, so nothing of theirs is in flight: its caller, for whom it
    // was made, is answered with a lease it can use, not kept out by its lock-delay.
    let alice = json_with(acquire.await.unwrap().unwrap(), 200).await;
    assert_eq!(alice["owner"], "alice");
    assert_eq!(alice["locked"], true, "{alice}");
    let status = json_with(b.status("k").await, 200).await;
    assert_eq!(status["owner"], "alice");
    assert_eq!(status["fencing_token"], alice["fencing_token"]);
}

#[tokio::test]
async fn open_change_streams_count_as_lock_requests_in_flight() {
    s3lock::telemetry::init_for_tests();
    let engine = Engine::new(
        Arc::new(MemoryStore::new()),
        Arc::new(SystemClock),
        engine_config("default", &[]),
    );
    engine.mark_store_checked();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = Server::new(Arc::new(engine), Duration::from_secs(90)).with_max_in_flight(2);
    tokio::spawn(server.serve(listener, std::future::pending()));
    let http = reqwest::Client::new();

    let mut one = SseReader::open(&http, &format!("{base}/locks/k/events"), None).await;
    one.expect("free").await;
    let mut two = SseReader::open(&http, &format!("{base}/locks/k/events"), None).await;
    two.expect("free").await;
    // Two streams fill the bound, as two watches would: a third request is shed.
    let shed = send(&http, &format!("{base}/locks/k/events"), None).await;
    // (A stream's body never ends: its status is looked at before anything is read.)
    assert_eq!(shed.status(), 503, "a third stream was let in");
    problem(shed, 503, "overloaded").await;
    let shed = http
        .post(format!("{base}/locks/other/acquire"))
        .json(&json!({"owner": "carol"}))
        .send()
        .await
        .unwrap();
    problem(shed, 503, "overloaded").await;
    // A stream that ends gives its place back (once the server notices the client left).
    drop(one);
    let mut answered = None;
    for _ in 0..600 {
        let resp = http
            .post(format!("{base}/locks/k/acquire"))
            .json(&json!({"owner": "carol"}))
            .send()
            .await
            .unwrap();
        if resp.status() != 503 {
            answered = Some(resp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    json_with(answered.expect("a place came free"), 200).await;
    two.expect("acquired").await;
}
