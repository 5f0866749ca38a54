//! Change streams and lock-delay under the faults of a real network: answers that come late, a
//! watcher's read that comes back after a newer one, a store that cannot be read at a lease's
//! end, and a replica's bound on what a client may hold open. Two replicas on one SeaweedFS
//! bucket, one of them behind the fault proxy. Every stream must only ever move forward, and
//! say only what is true.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::support::proxy::FaultProxy;
use crate::helpers::{json_with, support, TestApp};
use crate::sse::{SseEvent, SseReader};

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
