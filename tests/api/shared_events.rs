//! The change streams of semaphores and read-write locks, `GET /semaphores/{key}/events` and
//! `GET /rwlocks/{key}/events`, through the real app: the state first, then each change in
//! order (two holders on a semaphore; a writer's waiting entry), `expired` by time, resuming with
//! `Last-Event-ID`, and many listeners served by the key's one watcher (no store reads of their
//! own).

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use s3lock::clock::SystemClock;
use s3lock::lock::{Engine, SharedKind};
use serde_json::{json, Value};

use crate::auth::call;
use crate::events::app_and_engine;
use crate::helpers::support::counting::CountingStore;
use crate::helpers::{engine_config, json_with, problem, TestApp, PREFIX};
use crate::semaphores::post;
use crate::sse::{send, SseEvent, SseReader};

fn url(app: &TestApp, kind: &str, key: &str) -> String {
    format!("{}/{kind}/{key}/events", app.base)
}

fn owners(view: &Value) -> Vec<&str> {
    view["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["owner"].as_str().unwrap())
        .collect()
}

/// Asserts the event's view is the key's shared view, never with a token, and its id its index.
fn check_view(event: &SseEvent, kind: &str, key: &str) {
    assert_eq!(event.data["key"], key, "{event:?}");
    assert_eq!(event.data["kind"], kind, "{event:?}");
    assert!(event.data.get("token").is_none(), "{event:?}");
    assert!(event.data.get("lease").is_none(), "{event:?}");
    assert_eq!(event.data["index"], event.index(), "{event:?}");
}

async fn acquire(app: &TestApp, key: &str, owner: &str) -> Value {
    let path = format!("/semaphores/{key}/acquire");
    json_with(
        post(app, &path, json!({"owner": owner, "limit": 2, "ttl": 60})).await,
        200,
    )
    .await
}

async fn release(app: &TestApp, kind: &str, key: &str, held: &Value) -> Value {
    let path = format!("/{kind}/{key}/release");
    json_with(post(app, &path, json!({"token": held["token"]})).await, 200).await
}

#[tokio::test]
async fn events_of_two_holders_on_a_semaphore_arrive_in_order() {
    let (app, engine) = app_and_engine().await;
    let key = "jobs/deploy";
    let mut events = SseReader::open(&app.http, &url(&app, "semaphores", key), None).await;
    let state = events.expect("state").await;
    assert_eq!(state.index(), 0, "never acquired");
    check_view(&state, "semaphore", key);

    let w1 = acquire(&app, key, "w1").await;
    let first = events.expect("acquired").await;
    check_view(&first, "semaphore", key);
    assert_eq!(owners(&first.data), ["w1"]);
    assert_eq!(first.data["permits_left"], 1);
    assert_eq!(first.index(), w1["index"].as_u64().unwrap());

    let w2 = acquire(&app, key, "w2").await;
    let second = events.expect("acquired").await;
    assert_eq!(owners(&second.data), ["w1", "w2"]);
    assert_eq!(second.data["permits_left"], 0);
    assert!(second.index() > first.index());

    let renew = json!({"token": w1["token"], "ttl": 120});
    json_with(
        post(&app, &format!("/semaphores/{key}/renew"), renew).await,
        200,
    )
    .await;
    let renewed = events.expect("renewed").await;
    assert_eq!(renewed.data["holders"][0]["expire"], 120);
    assert!(renewed.index() > second.index());

    release(&app, "semaphores", key, &w1).await;
    let released = events.expect("released").await;
    assert_eq!(owners(&released.data), ["w2"]);
    release(&app, "semaphores", key, &w2).await;
    let released = events.expect("released").await;
    check_view(&released, "semaphore", key);
    assert!(owners(&released.data).is_empty());
    assert_eq!(released.data["permits_left"], 2);

    acquire(&app, key, "w3").await;
    events.expect("acquired").await;
    engine
        .shared_break(None, key, SharedKind::Semaphore, "admin")
        .await
        .unwrap();
    let broken = events.expect("broken").await;
    assert!(owners(&broken.data).is_empty());
    assert_eq!(broken.data["fencing_token"], 4, "three grants and a break");
}

#[tokio::test]
async fn a_writers_waiting_entry_shows_in_a_read_write_locks_stream_until_it_is_granted() {
    let app = TestApp::memory().await;
    let key = "catalog";
    let reader = json_with(
        post(
            &app,
            "/rwlocks/catalog/acquire",
            json!({"owner": "reader", "mode": "shared", "ttl": 60}),
        )
        .await,
        200,
    )
    .await;
    let mut events = SseReader::open(&app.http, &url(&app, "rwlocks", key), None).await;
    let state = events.expect("state").await;
    check_view(&state, "rwlock", key);
    assert_eq!(owners(&state.data), ["reader"]);
    assert_eq!(state.data["holders"][0]["mode"], "shared");

    let writer = {
        let app_base = app.base.clone();
        let http = app.http.clone();
        tokio::spawn(async move {
            http.post(format!("{app_base}/rwlocks/catalog/acquire"))
                .json(&json!({"owner": "writer", "mode": "exclusive", "wait": 30}))
                .send()
                .await
                .unwrap()
        })
    };
    let waiting = events.expect("waiting").await;
    check_view(&waiting, "rwlock", key);
    assert_eq!(waiting.data["waiting"][0]["owner"], "writer");
    assert_eq!(owners(&waiting.data), ["reader"]);

    release(&app, "rwlocks", key, &reader).await;
    // The release and the writer's grant may be folded into one event; the writer's waiting
    // acquire may renew its entry meanwhile.
    let granted = loop {
        let event = events.next_event().await.expect("an event");
        check_view(&event, "rwlock", key);
        match event.event.as_str() {
            "acquired" => break event,
            "released" | "waiting" => continue,
            other => panic!("{other}: {event:?}"),
        }
    };
    assert_eq!(owners(&granted.data), ["writer"]);
    assert_eq!(granted.data["holders"][0]["mode"], "exclusive");
    assert_eq!(
        granted.data["waiting"],
        json!([]),
        "its entry went with its grant"
    );
    let writer = json_with(writer.await.unwrap(), 200).await;
    assert_eq!(granted.index(), writer["index"].as_u64().unwrap());
}

#[tokio::test]
async fn expired_arrives_when_a_holders_lease_runs_out_with_the_same_index() {
    let app = TestApp::memory().await;
    let mut events = SseReader::open(&app.http, &url(&app, "semaphores", "short"), None).await;
    events.expect("state").await;
    let held = json_with(
        post(
            &app,
            "/semaphores/short/acquire",
            json!({"owner": "w1", "limit": 3, "ttl": 1}),
        )
        .await,
        200,
    )
    .await;
    let acquired = events.expect("acquired").await;
    // No write happens when the lease runs out: the stream tells it by time.
    let expired = events.expect("expired").await;
    assert_eq!(expired.index(), acquired.index());
    assert!(owners(&expired.data).is_empty(), "{expired:?}");
    assert_eq!(expired.data["permits_left"], 3);
    let status = json_with(
        app.request(Method::GET, "/semaphores/short", None).await,
        200,
    )
    .await;
    assert_eq!(status["index"], held["index"], "nothing was written");
}

#[tokio::test]
async fn a_client_resuming_at_an_old_index_gets_the_state_and_at_the_current_one_nothing() {
    let app = TestApp::memory().await;
    let key = "resume";
    let w1 = acquire(&app, key, "w1").await;
    let old = w1["index"].as_u64().unwrap();
    let w2 = acquire(&app, key, "w2").await;
    let current = w2["index"].as_u64().unwrap();

    let mut behind = SseReader::open(&app.http, &url(&app, "semaphores", key), Some(old)).await;
    let state = behind.expect("state").await;
    assert_eq!(state.index(), current);
    assert_eq!(owners(&state.data), ["w1", "w2"]);

    let mut up_to_date =
        SseReader::open(&app.http, &url(&app, "semaphores", key), Some(current)).await;
    release(&app, "semaphores", key, &w1).await;
    let released = up_to_date.expect("released").await;
    assert!(released.index() > current);
    behind.expect("released").await;
}

#[tokio::test]
async fn twenty_listeners_on_a_semaphore_add_no_store_reads() {
    const LISTENERS: usize = 20;
    let store = Arc::new(CountingStore::default());
    let mut config = engine_config("default", &[]);
    // The watcher reads a key once when it starts, then (with these polls) not again during
    // the test: every read counted below is one somebody else asked for.
    config.first_poll = Duration::from_secs(3600);
    config.max_poll = Duration::from_secs(3600);
    let engine = Engine::new(store.clone(), Arc::new(SystemClock), config);
    engine.mark_store_checked();
    let app = TestApp::spawn_engine(store.clone(), Arc::new(engine), None).await;

    let mut first = SseReader::open(&app.http, &url(&app, "semaphores", "busy"), None).await;
    first.expect("state").await;
    let reads_before = store.gets();
    let mut listeners = vec![first];
    for _ in 1..LISTENERS {
        let mut l = SseReader::open(&app.http, &url(&app, "semaphores", "busy"), None).await;
        l.expect("state").await;
        listeners.push(l);
    }
    assert_eq!(
        store.gets() - reads_before,
        0,
        "{LISTENERS} listeners joined with no read of their own"
    );

    // The same acquire and release on a semaphore nobody follows, for the reads they take.
    let alone = store.gets();
    let held = acquire(&app, "quiet", "w").await;
    release(&app, "semaphores", "quiet", &held).await;
    let reads_alone = store.gets() - alone;

    let followed = store.gets();
    let held = acquire(&app, "busy", "w").await;
    for l in &mut listeners {
        l.expect("acquired").await;
    }
    release(&app, "semaphores", "busy", &held).await;
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
async fn a_key_ending_in_events_is_reached_with_its_slash_encoded_and_post_is_not_allowed() {
    let app = TestApp::memory().await;
    json_with(
        post(
            &app,
            "/semaphores/jobs%2Fevents/acquire",
            json!({"owner": "w", "limit": 1}),
        )
        .await,
        200,
    )
    .await;
    let status = json_with(
        app.request(Method::GET, "/semaphores/jobs%2Fevents", None)
            .await,
        200,
    )
    .await;
    assert_eq!(status["key"], "jobs/events");
    assert_eq!(owners(&status), ["w"]);
    // Unencoded, it is the stream of "jobs".
    let mut events = SseReader::open(&app.http, &url(&app, "semaphores", "jobs"), None).await;
    let state = events.expect("state").await;
    assert_eq!(state.data["key"], "jobs");
    for kind in ["semaphores", "rwlocks"] {
        let resp = app
            .request(Method::POST, &format!("/{kind}/k/events"), Some(json!({})))
            .await;
        assert_eq!(
            resp.headers().get("allow").map(|v| v.to_str().unwrap()),
            Some("GET,HEAD")
        );
        problem(resp, 405, "method-not-allowed").await;
    }
}

#[tokio::test]
async fn another_kinds_document_is_409_before_the_stream_and_a_bucket_form_is_served() {
    let app = TestApp::memory().await;
    json_with(
        post(&app, "/rwlocks/mixed/acquire", json!({"mode": "shared"})).await,
        200,
    )
    .await;
    let rwlock = app
        .store
        .get(&app.bucket, &format!("{PREFIX}.rwlocks/mixed"))
        .await
        .unwrap()
        .unwrap();
    app.store
        .put_if_absent(
            &app.bucket,
            &format!("{PREFIX}.semaphores/mixed"),
            rwlock.body,
        )
        .await
        .unwrap();
    problem(
        send(&app.http, &url(&app, "semaphores", "mixed"), None).await,
        409,
        "lock-unreadable",
    )
    .await;
    let mut there = SseReader::open(
        &app.http,
        &format!("{}/buckets/other-bucket/rwlocks/r/events", app.base),
        None,
    )
    .await;
    let state = there.expect("state").await;
    assert_eq!(state.data["bucket"], "other-bucket");
}

#[tokio::test]
async fn an_auth_tokens_prefix_is_checked_against_the_kinds_namespace_for_a_stream() {
    const SEM_JOBS: &str = "sem-jobs-token-0123456789abcdef";
    let tokens = format!(
        "{}{SEM_JOBS} name=sem prefix=.semaphores/jobs/\n",
        crate::auth::tokens_file()
    );
    let app = &TestApp::memory_with_auth(&tokens).await;
    let open = |token: &'static str, path: &'static str| async move {
        let resp = app
            .http
            .get(format!("{}{path}", app.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        resp
    };
    let mut events = SseReader::new(open(SEM_JOBS, "/semaphores/jobs/x/events").await).await;
    events.expect("state").await;
    problem(
        open(SEM_JOBS, "/semaphores/other/events").await,
        403,
        "forbidden",
    )
    .await;
    problem(
        open(SEM_JOBS, "/rwlocks/jobs/x/events").await,
        403,
        "forbidden",
    )
    .await;
    // A token for the locks under jobs/ does not reach the semaphores there.
    problem(
        open(crate::auth::CI, "/semaphores/jobs/x/events").await,
        403,
        "forbidden",
    )
    .await;
    let resp = call(app, Method::GET, "/semaphores/jobs/x/events", None, None).await;
    problem(resp, 401, "unauthorized").await;
}
