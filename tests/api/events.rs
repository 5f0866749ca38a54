//! A lock's change stream, `GET /locks/{key}/events`, through the real app: the state first,
//! then one event per change in order, `expired` by time, resuming with `Last-Event-ID`, many
//! listeners served by one watcher (no store reads of their own), and the stream's end when the
//! replica drains.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use reqwest::Method;
use s3lock::clock::SystemClock;
use s3lock::lock::Engine;
use s3lock::store::memory::MemoryStore;
use s3lock::store::Store;
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

use crate::helpers::support::counting::CountingStore;
use crate::helpers::{engine_config, json_with, problem, TestApp, PREFIX};
use crate::sse::{send, Frame, SseReader};

/// An app over a memory store, and its engine (to break locks as an admin would).
pub(crate) async fn app_and_engine() -> (TestApp, Arc<Engine>) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = Engine::new(
        store.clone(),
        Arc::new(SystemClock),
        engine_config("default", &[]),
    );
    engine.mark_store_checked();
    let engine = Arc::new(engine);
    (
        TestApp::spawn_engine(store, engine.clone(), None).await,
        engine,
    )
}

fn url(app: &TestApp, key: &str) -> String {
    format!("{}/locks/{key}/events", app.base)
}

/// Asserts the event's view is the lock's, never with a token, and its id its index.
fn check_view(event: &crate::sse::SseEvent, key: &str) {
    assert_eq!(event.data["key"], key, "{event:?}");
    assert!(event.data.get("token").is_none(), "{event:?}");
    assert_eq!(event.data["index"], event.index(), "{event:?}");
}

#[tokio::test]
async fn events_arrive_in_order_for_acquire_renew_release_acquire_and_break() {
    let (app, engine) = app_and_engine().await;
    let mut events = SseReader::open(&app.http, &url(&app, "jobs/etl"), None).await;
    let free = events.expect("free").await;
    assert_eq!(free.index(), 0);
    check_view(&free, "jobs/etl");

    let alice = json_with(
        app.acquire("jobs/etl", json!({"owner": "alice"})).await,
        200,
    )
    .await;
    let acquired = events.expect("acquired").await;
    check_view(&acquired, "jobs/etl");
    assert_eq!(acquired.data["owner"], "alice");
    assert_eq!(acquired.data["fencing_token"], 1);
    assert_eq!(acquired.index(), alice["index"].as_u64().unwrap());

    let token = alice["token"].clone();
    json_with(
        app.renew("jobs/etl", json!({"token": token, "ttl": 120}))
            .await,
        200,
    )
    .await;
    let renewed = events.expect("renewed").await;
    assert_eq!(renewed.data["expire"], 120);
    assert!(renewed.index() > acquired.index());

    json_with(app.release("jobs/etl", json!({"token": token})).await, 200).await;
    let released = events.expect("released").await;
    assert_eq!(released.data["owner"], Value::Null);
    assert_eq!(released.data["locked"], false);
    assert!(released.index() > renewed.index());

    json_with(app.acquire("jobs/etl", json!({"owner": "bob"})).await, 200).await;
    let bob = events.expect("acquired").await;
    assert_eq!(bob.data["owner"], "bob");
    assert_eq!(bob.data["fencing_token"], 2);
    assert!(bob.index() > released.index());

    engine.break_lock(None, "jobs/etl", "admin").await.unwrap();
    let broken = events.expect("broken").await;
    check_view(&broken, "jobs/etl");
    assert_eq!(broken.data["owner"], Value::Null);
    assert_eq!(broken.data["fencing_token"], 3);
    assert!(broken.index() > bob.index());
}

#[tokio::test]
async fn a_lock_that_was_never_taken_is_shown_free_with_id_0_and_a_held_one_held() {
    let app = TestApp::memory().await;
    let mut events = SseReader::open(&app.http, &url(&app, "never"), None).await;
    let free = events.expect("free").await;
    assert_eq!(free.id.as_deref(), Some("0"));
    assert_eq!(free.data["locked"], false);

    let a = json_with(app.acquire("held", json!({"owner": "alice"})).await, 200).await;
    let mut events = SseReader::open(&app.http, &url(&app, "held"), None).await;
    let held = events.expect("held").await;
    assert_eq!(held.data["owner"], "alice");
    assert_eq!(held.data["locked"], true);
    assert_eq!(held.index(), a["index"].as_u64().unwrap());
}

#[tokio::test]
async fn expired_arrives_when_a_lease_runs_out_with_the_held_index() {
    let app = TestApp::memory().await;
    let mut events = SseReader::open(&app.http, &url(&app, "short"), None).await;
    events.expect("free").await;
    json_with(
        app.acquire("short", json!({"owner": "alice", "ttl": 1}))
            .await,
        200,
    )
    .await;
    let acquired = events.expect("acquired").await;
    // No write happens when the lease runs out: the stream tells it by time.
    let expired = events.expect("expired").await;
    assert_eq!(expired.index(), acquired.index());
    assert_eq!(expired.data["locked"], false);
    assert_eq!(expired.data["owner"], "alice", "the holder that vanished");
    let status = json_with(app.status("short").await, 200).await;
    assert_eq!(status["index"], acquired.index(), "nothing was written");
}

#[tokio::test]
async fn a_new_value_is_a_value_event_and_the_end_of_a_lock_delay_is_free() {
    let app = TestApp::memory().await;
    let mut events = SseReader::open(&app.http, &url(&app, "leader"), None).await;
    events.expect("free").await;
    let a = json_with(
        app.acquire(
            "leader",
            json!({"owner": "alice", "ttl": 30, "lock_delay": 1}),
        )
        .await,
        200,
    )
    .await;
    events.expect("acquired").await;
    let token = a["token"].clone();
    json_with(
        app.renew(
            "leader",
            json!({"token": token, "value": {"addr": "10.0.0.1:80"}}),
        )
        .await,
        200,
    )
    .await;
    let value = events.expect("value").await;
    assert_eq!(value.data["value"], json!({"addr": "10.0.0.1:80"}));
    json_with(
        app.renew("leader", json!({"token": token, "ttl": 1})).await,
        200,
    )
    .await;
    let renewed = events.expect("renewed").await;
    assert_eq!(
        renewed.data["value"],
        json!({"addr": "10.0.0.1:80"}),
        "kept"
    );
    let expired = events.expect("expired").await;
    assert_eq!(expired.index(), renewed.index());
    assert!(expired.data["available_at"].is_string(), "{expired:?}");
    let free = events.expect("free").await;
    assert_eq!(free.index(), renewed.index());
    assert_eq!(free.data["available_at"], Value::Null);
}

#[tokio::test]
async fn a_client_resuming_at_an_old_index_gets_the_state_at_once_and_at_the_current_one_nothing() {
    let app = TestApp::memory().await;
    let a = json_with(app.acquire("k", json!({"owner": "alice"})).await, 200).await;
    let first = a["index"].as_u64().unwrap();
    json_with(app.renew("k", json!({"token": a["token"]})).await, 200).await;
    let b = json_with(app.renew("k", json!({"token": a["token"]})).await, 200).await;
    let current = b["index"].as_u64().unwrap();
    assert!(current > first);

    // From the first index: the two renews it missed are folded into one snapshot.
    let mut behind = SseReader::open(&app.http, &url(&app, "k"), Some(first)).await;
    let now = behind.expect("held").await;
    assert_eq!(now.index(), current);
    // The same with the query parameter, for clients that cannot set headers.
    let mut by_query = SseReader::new(
        send(
            &app.http,
            &format!("{}?last_event_id={first}", url(&app, "k")),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(by_query.expect("held").await.index(), current);

    // From the current index: no snapshot; the next event is the next change.
    let mut current_reader = SseReader::open(&app.http, &url(&app, "k"), Some(current)).await;
    json_with(app.release("k", json!({"token": a["token"]})).await, 200).await;
    let released = current_reader.expect("released").await;
    assert!(released.index() > current);
    behind.expect("released").await;
}

#[tokio::test]
async fn a_client_resuming_at_the_index_of_a_lease_that_ran_out_is_told_it_expired() {
    let app = TestApp::memory().await;
    let a = json_with(
        app.acquire("gone", json!({"owner": "alice", "ttl": 1}))
            .await,
        200,
    )
    .await;
    let index = a["index"].as_u64().unwrap();
    // Wait for the lease to run out, as a listener sees it.
    let mut live = SseReader::open(&app.http, &url(&app, "gone"), Some(index)).await;
    live.expect("expired").await;
    let mut resumed = SseReader::open(&app.http, &url(&app, "gone"), Some(index)).await;
    assert_eq!(resumed.expect("expired").await.index(), index);
}

#[tokio::test]
async fn a_hundred_listeners_on_one_lock_add_no_store_reads() {
    const LISTENERS: usize = 100;
    let store = Arc::new(CountingStore::default());
    let mut config = engine_config("default", &[]);
    // The watcher reads a lock once when it starts, then (with these polls) not again during
    // the test: every read counted below is one somebody else asked for.
    config.first_poll = Duration::from_secs(3600);
    config.max_poll = Duration::from_secs(3600);
    let engine = Engine::new(store.clone(), Arc::new(SystemClock), config);
    engine.mark_store_checked();
    let app = TestApp::spawn_engine(store.clone(), Arc::new(engine), None).await;

    let mut first = SseReader::open(&app.http, &url(&app, "busy"), None).await;
    first.expect("free").await;
    let reads_before = store.gets();
    let mut listeners = vec![first];
    for _ in 1..LISTENERS {
        let mut l = SseReader::open(&app.http, &url(&app, "busy"), None).await;
        l.expect("free").await;
        listeners.push(l);
    }
    assert_eq!(
        store.gets() - reads_before,
        0,
        "{LISTENERS} listeners joined with no read of their own"
    );

    // The same acquire and release on a lock nobody follows, for the reads they take alone.
    let alone = store.gets();
    let a = json_with(app.acquire("quiet", json!({"owner": "a"})).await, 200).await;
    json_with(
        app.release("quiet", json!({"token": a["token"]})).await,
        200,
    )
    .await;
    let reads_alone = store.gets() - alone;

    let followed = store.gets();
    let a = json_with(app.acquire("busy", json!({"owner": "a"})).await, 200).await;
    for l in &mut listeners {
        l.expect("acquired").await;
    }
    json_with(app.release("busy", json!({"token": a["token"]})).await, 200).await;
    for l in &mut listeners {
        l.expect("released").await;
    }
    assert_eq!(
        store.gets() - followed,
        reads_alone,
        "{LISTENERS} listeners were told of two changes with no read of their own"
    );
}

#[tokio::test]
async fn past_the_cap_of_watched_locks_a_stream_is_refused_before_it_starts() {
    let store = Arc::new(CountingStore::default());
    let mut config = engine_config("default", &[]);
    config.max_watched_locks = 1;
    let engine = Engine::new(store.clone(), Arc::new(SystemClock), config);
    engine.mark_store_checked();
    let app = TestApp::spawn_engine(store, Arc::new(engine), None).await;
    let mut one = SseReader::open(&app.http, &url(&app, "one"), None).await;
    one.expect("free").await;
    let refused = send(&app.http, &url(&app, "two"), None).await;
    assert!(refused.headers().contains_key("retry-after"));
    problem(refused, 503, "too-many-watched-locks").await;
    // The lock already watched may be joined.
    let mut again = SseReader::open(&app.http, &url(&app, "one"), None).await;
    again.expect("free").await;
}

#[tokio::test]
async fn an_unreadable_lock_is_409_before_the_stream_and_ends_it_with_unreadable_after() {
    let app = TestApp::memory().await;
    let object = format!("{PREFIX}bad");
    app.store
        .put_if_absent(&app.bucket, &object, "not a lock".into())
        .await
        .unwrap();
    problem(
        send(&app.http, &url(&app, "bad"), None).await,
        409,
        "lock-unreadable",
    )
    .await;

    json_with(app.acquire("turns", json!({"owner": "alice"})).await, 200).await;
    let mut events = SseReader::open(&app.http, &url(&app, "turns"), None).await;
    events.expect("held").await;
    let object = format!("{PREFIX}turns");
    let stored = app.store.get(&app.bucket, &object).await.unwrap().unwrap();
    app.store
        .put_if_version(&app.bucket, &object, "garbage".into(), &stored.version)
        .await
        .unwrap();
    let unreadable = events.expect("unreadable").await;
    assert_eq!(
        unreadable.data["type"], "urn:s3lock:problem:lock-unreadable",
        "{unreadable:?}"
    );
    assert!(unreadable.id.is_none());
    assert!(
        events.ends().await,
        "the stream ends after an unreadable document"
    );
}

#[tokio::test]
async fn a_bad_last_event_id_is_refused_and_post_is_not_allowed() {
    let app = TestApp::memory().await;
    let bad = app
        .http
        .get(url(&app, "k"))
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    let body = problem(bad, 400, "invalid-input").await;
    assert_eq!(body["field"], "Last-Event-ID");
    let bad = send(
        &app.http,
        &format!("{}?last_event_id=-1", url(&app, "k")),
        None,
    )
    .await;
    problem(bad, 400, "invalid-input").await;
    let post = app
        .request(Method::POST, "/locks/k/events", Some(json!({})))
        .await;
    assert_eq!(
        post.headers().get("allow").map(|v| v.to_str().unwrap()),
        Some("GET,HEAD")
    );
    problem(post, 405, "method-not-allowed").await;
}

#[tokio::test]
async fn a_key_ending_in_events_is_still_shown_with_its_last_slash_encoded() {
    let app = TestApp::memory().await;
    json_with(
        app.acquire("jobs%2Fevents", json!({"owner": "alice"}))
            .await,
        200,
    )
    .await;
    let status = json_with(app.status("jobs%2Fevents").await, 200).await;
    assert_eq!(status["key"], "jobs/events");
    assert_eq!(status["owner"], "alice");
}

#[tokio::test]
async fn a_quiet_stream_sends_keep_alive_comments() {
    let app = TestApp::memory().await;
    let mut events = SseReader::open(&app.http, &url(&app, "quiet"), None).await;
    events.expect("free").await;
    // The next frame comes after 15 s of silence (the reader waits up to 30).
    assert_eq!(
        events.next_frame().await,
        Some(Frame::Comment("keep-alive".into()))
    );
}

#[tokio::test]
async fn a_draining_replica_ends_its_streams() {
    let app = TestApp::memory().await;
    let mut events = SseReader::open(&app.http, &url(&app, "k"), None).await;
    events.expect("free").await;
    let stopped = tokio::spawn(app.stop());
    assert!(events.ends().await, "the stream ends with the drain");
    stopped.await.unwrap();
}

#[tokio::test]
async fn sigterm_ends_a_stream_and_the_server_exits() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_s3lock"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "info")
        .env("S3LOCK_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let address = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("a log line in time")
            .unwrap()
            .expect("the server logs where it serves");
        let line: Value = serde_json::from_str(&line).unwrap();
        if line["message"] == "s3lock is serving" {
            break line["address"].as_str().unwrap().to_owned();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let http = reqwest::Client::new();
    let mut events =
        SseReader::open(&http, &format!("http://{address}/locks/k/events"), None).await;
    events.expect("free").await;

    let pid = Pid::from_raw(i32::try_from(server.id().unwrap()).unwrap());
    kill(pid, Signal::SIGTERM).unwrap();
    assert!(events.ends().await, "the stream ends with the drain");
    let status = tokio::time::timeout(Duration::from_secs(60), server.wait())
        .await
        .expect("the server exits after its drain")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
