//! Elections through the real app: campaign, leader, proclaim, renew, resign and observe; an
//! election is a lock of its own namespace, never one of the locks; and leadership passing
//! between two replicas over one S3 bucket, with a growing term, while an observer sees the
//! leader, then "no leader", then the next one.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use s3lock::clock::{Clock, SystemClock};
use s3lock::lock::{Engine, LockDocument};
use s3lock::store::memory::MemoryStore;
use s3lock::store::Store;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::cli::{cli, code, process_state, read_pid};
use crate::helpers::{engine_config, json_with, problem, support, TestApp, PREFIX};
use crate::sse::SseReader;

async fn post(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    app.request(Method::POST, path, Some(body)).await
}

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.request(Method::GET, path, None).await
}

#[tokio::test]
async fn a_campaign_leads_others_see_the_leader_proclaim_renew_and_resign() {
    let app = TestApp::memory().await;
    let alice = json_with(
        post(
            &app,
            "/elections/jobs/scheduler/campaign",
            json!({"candidate": "alice", "value": {"addr": "10.0.0.1:80"}, "ttl": 30}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(alice["name"], "jobs/scheduler");
    assert_eq!(alice["leader"], "alice");
    assert_eq!(alice["term"], 1);
    assert_eq!(alice["value"], json!({"addr": "10.0.0.1:80"}));
    let token = alice["token"]
        .as_str()
        .expect("the leader's token")
        .to_owned();

    for path in [
        "/elections/jobs/scheduler",
        "/elections/jobs/scheduler/leader",
    ] {
        let seen = json_with(get(&app, path).await, 200).await;
        assert_eq!(seen["leader"], "alice", "{seen}");
        assert_eq!(seen["value"], json!({"addr": "10.0.0.1:80"}));
        assert!(seen.get("token").is_none(), "{seen}");
    }

    let bob = post(
        &app,
        "/elections/jobs/scheduler/campaign",
        json!({"candidate": "bob"}),
    )
    .await;
    let refused = problem(bob, 409, "lock-held").await;
    assert_eq!(refused["owner"], "alice", "the refusal names the leader");

    let proclaimed = json_with(
        post(
            &app,
            "/elections/jobs/scheduler/proclaim",
            json!({"token": token, "value": "10.0.0.2:80"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(proclaimed["value"], "10.0.0.2:80");
    assert_eq!(proclaimed["term"], 1, "the same term");
    let renewed = json_with(
        post(
            &app,
            "/elections/jobs/scheduler/renew",
            json!({"token": token, "ttl": 60}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(renewed["value"], "10.0.0.2:80", "a renew keeps the value");
    let wrong = post(
        &app,
        "/elections/jobs/scheduler/proclaim",
        json!({"token": "not-the-token", "value": 1}),
    )
    .await;
    problem(wrong, 409, "not-holder").await;

    let resigned = json_with(
        post(
            &app,
            "/elections/jobs/scheduler/resign",
            json!({"token": token}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(resigned["leader"], Value::Null);
    assert_eq!(resigned["value"], Value::Null);
    let bob = json_with(
        post(
            &app,
            "/elections/jobs/scheduler/campaign",
            json!({"candidate": "bob"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        (bob["leader"].as_str(), bob["term"].as_u64()),
        (Some("bob"), Some(2))
    );
}

#[tokio::test]
async fn an_election_never_held_has_no_leader_and_cannot_be_renewed() {
    let app = TestApp::memory().await;
    let view = json_with(get(&app, "/elections/nobody").await, 200).await;
    assert_eq!(view["leader"], Value::Null);
    assert_eq!(
        (view["term"].as_u64(), view["index"].as_u64()),
        (Some(0), Some(0))
    );
    let renew = post(&app, "/elections/nobody/renew", json!({"token": "t"})).await;
    problem(renew, 404, "lock-not-found").await;
    let bad = post(&app, "/elections/a//b/campaign", json!({})).await;
    let body = problem(bad, 400, "invalid-input").await;
    assert!(
        body["detail"].as_str().unwrap().starts_with("name:"),
        "{body}"
    );
    let observe_by_post = post(&app, "/elections/a/observe", json!({})).await;
    assert_eq!(
        observe_by_post
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap()),
        Some("GET,HEAD")
    );
    problem(observe_by_post, 405, "method-not-allowed").await;
}

#[tokio::test]
async fn an_election_is_no_lock_never_listed_and_its_namespace_is_refused_to_lock_routes() {
    let app = TestApp::memory().await;
    json_with(
        post(&app, "/elections/x/campaign", json!({"candidate": "alice"})).await,
        200,
    )
    .await;
    // The lock "x" is another thing entirely.
    let lock = json_with(app.acquire("x", json!({"owner": "bob"})).await, 200).await;
    assert_eq!(lock["fencing_token"], 1);
    let list = json_with(get(&app, "/locks").await, 200).await;
    let keys: Vec<_> = list["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["x"]);
    let hidden = json_with(get(&app, "/locks?prefix=.elections").await, 200).await;
    assert_eq!(hidden["locks"], json!([]));
    for path in ["/locks/.elections/x", "/locks/%2Eelections%2Fx"] {
        let refused = get(&app, path).await;
        let body = problem(refused, 400, "invalid-input").await;
        assert_eq!(body["field"], "key");
    }
    let refused = app
        .acquire(".elections/x", json!({"owner": "mallory"}))
        .await;
    problem(refused, 400, "invalid-input").await;
    let still = json_with(get(&app, "/elections/x").await, 200).await;
    assert_eq!(still["leader"], "alice");
}

#[tokio::test]
async fn a_waiting_campaign_wins_as_soon_as_the_leader_resigns() {
    let app = TestApp::memory().await;
    let alice = json_with(
        post(&app, "/elections/e/campaign", json!({"candidate": "alice"})).await,
        200,
    )
    .await;
    let bob = {
        let (http, url) = (
            app.http.clone(),
            format!("{}/elections/e/campaign", app.base),
        );
        tokio::spawn(async move {
            http.post(url)
                .json(&json!({"candidate": "bob", "wait": 30}))
                .send()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    json_with(
        post(
            &app,
            "/elections/e/resign",
            json!({"token": alice["token"]}),
        )
        .await,
        200,
    )
    .await;
    let bob = json_with(bob.await.unwrap(), 200).await;
    assert_eq!(bob["leader"], "bob");
    assert_eq!(bob["term"], 2);
}

/// The observer's next event: its kind and its election view.
async fn next_leader(observer: &mut SseReader) -> (String, Value) {
    let event = observer.next_event().await.expect("an event, not the end");
    (event.event.clone(), event.data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_passes_between_two_replicas_with_a_growing_term_and_observers_see_the_gap() {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let a = TestApp::s3(&bucket).await;
    let b = TestApp::s3(&bucket).await;
    let mut observer = SseReader::open(
        &b.http,
        &format!("{}/elections/leader/observe", b.base),
        None,
    )
    .await;
    let (kind, first) = next_leader(&mut observer).await;
    assert_eq!((kind.as_str(), &first["leader"]), ("free", &Value::Null));

    // alice leads through replica a, with a lock-delay: once her lease runs out unrenewed,
    // nobody may lead for a second (what she still had in flight lands first).
    let alice = json_with(
        post(
            &a,
            "/elections/leader/campaign",
            json!({"candidate": "alice", "value": "a:80", "ttl": 2, "lock_delay": 1}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(alice["term"], 1);
    let (kind, seen) = next_leader(&mut observer).await;
    assert_eq!(
        (kind.as_str(), &seen["leader"]),
        ("acquired", &json!("alice"))
    );
    assert_eq!(seen["value"], "a:80");

    // bob campaigns through replica b and waits; alice stops renewing.
    let bob = {
        let (http, url) = (
            b.http.clone(),
            format!("{}/elections/leader/campaign", b.base),
        );
        tokio::spawn(async move {
            http.post(url)
                .json(&json!({"candidate": "bob", "value": "b:80", "ttl": 30, "wait": 30}))
                .send()
                .await
                .unwrap()
        })
    };
    // The gap: her lease ran out, and there is no leader.
    let (kind, gap) = next_leader(&mut observer).await;
    assert_eq!(kind, "expired", "{gap}");
    assert_eq!(gap["leader"], Value::Null);
    assert_eq!(gap["value"], Value::Null);
    assert_eq!(gap["term"], 1);
    // Then bob, in a new term (a `free` may come first, when the delay ends before his grant).
    let (mut kind, mut seen) = next_leader(&mut observer).await;
    if kind == "free" {
        assert_eq!(seen["leader"], Value::Null);
        (kind, seen) = next_leader(&mut observer).await;
    }
    assert_eq!(
        (kind.as_str(), &seen["leader"]),
        ("acquired", &json!("bob"))
    );
    assert_eq!(seen["term"], 2);
    assert_eq!(seen["value"], "b:80");
    let bob = json_with(bob.await.unwrap(), 200).await;
    assert_eq!(bob["term"], 2);
    // alice's token leads no more.
    let late = post(
        &a,
        "/elections/leader/proclaim",
        json!({"token": alice["token"], "value": "a:81"}),
    )
    .await;
    problem(late, 409, "not-holder").await;

    // bob resigns; carol, waiting through replica a, takes over in term 3.
    let carol = {
        let (http, url) = (
            a.http.clone(),
            format!("{}/elections/leader/campaign", a.base),
        );
        tokio::spawn(async move {
            http.post(url)
                .json(&json!({"candidate": "carol", "wait": 30}))
                .send()
                .await
                .unwrap()
        })
    };
    json_with(
        post(
            &b,
            "/elections/leader/resign",
            json!({"token": bob["token"]}),
        )
        .await,
        200,
    )
    .await;
    let (kind, gap) = next_leader(&mut observer).await;
    assert_eq!((kind.as_str(), &gap["leader"]), ("released", &Value::Null));
    let (kind, seen) = next_leader(&mut observer).await;
    assert_eq!(
        (kind.as_str(), &seen["leader"]),
        ("acquired", &json!("carol"))
    );
    assert_eq!(seen["term"], 3);
    json_with(carol.await.unwrap(), 200).await;
}

// The CLI: `s3lock elect NAME -- CMD` and `s3lock elect NAME --observe`.

#[tokio::test]
async fn elect_runs_the_command_while_leading_and_resigns_when_it_exits() {
    let app = TestApp::memory().await;
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    let script = format!(
        "echo \"$S3LOCK_ELECTION $S3LOCK_LEADER $S3LOCK_TERM $S3LOCK_FENCING_TOKEN\" > {}; exit 7",
        seen.display()
    );
    let out = cli(
        &app.base,
        &[
            "elect",
            "jobs/compactor",
            "--candidate",
            "alice",
            "--value",
            "{\"addr\": \"10.0.0.1:80\"}",
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[],
    )
    .await;
    assert_eq!(code(&out), 7, "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap().trim(),
        "jobs/compactor alice 1 1"
    );
    let after = json_with(get(&app, "/elections/jobs/compactor").await, 200).await;
    assert_eq!(
        after["leader"],
        Value::Null,
        "resigned when the command exited"
    );

    // Another leads: refused at once (exit 3), the command never started.
    let bob = json_with(
        post(
            &app,
            "/elections/jobs/compactor/campaign",
            json!({"candidate": "bob"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(bob["term"], 2);
    let out = cli(
        &app.base,
        &["elect", "jobs/compactor", "--", "sh", "-c", &script],
        &[],
    )
    .await;
    assert_eq!(code(&out), 3, "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("held by bob"),
        "{out:?}"
    );
}

#[tokio::test]
async fn elect_stops_its_command_before_the_leaders_lease_can_end() {
    let app = TestApp::memory().await;
    let store = app.store.clone();
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    // The command ignores SIGTERM (and so do its children), so only SIGKILL stops it.
    let script = format!(
        "trap '' TERM; echo $$ > {}; while :; do sleep 0.05; done",
        pid_file.display()
    );
    let runner = {
        let base = app.base.clone();
        tokio::spawn(async move {
            cli(
                &base,
                &[
                    "elect",
                    "jobs/long",
                    // Room for a loaded machine between the last renewal and the lease's end.
                    "--ttl",
                    "6",
                    "--kill-grace",
                    "0.5",
                    "--",
                    "sh",
                    "-c",
                    &script,
                ],
                &[],
            )
            .await
        })
    };
    let pid = read_pid(&pid_file).await;
    // Renewal made impossible: the server goes away, so every renewal fails.
    app.stop().await;
    let mut died_at = None;
    for _ in 0..2_000 {
        if matches!(process_state(pid), None | Some('Z')) {
            died_at = Some(SystemClock.now().latest);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let died_at = died_at.expect("the command was never stopped");
    let out = runner.await.unwrap();
    assert_eq!(code(&out), 6, "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SIGKILL"),
        "{out:?}"
    );
    // The leader's lease as the store last recorded it (its last successful renewal).
    let stored = store
        .get("default", &format!("{PREFIX}.elections/jobs/long"))
        .await
        .unwrap()
        .unwrap();
    let expires_at = LockDocument::from_bytes(&stored.body).unwrap().expires_at();
    assert!(
        died_at < expires_at,
        "the command died at {died_at}, after the leader's lease ended at {expires_at}"
    );
}

#[tokio::test]
async fn elect_stops_its_command_at_once_when_the_election_is_broken() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = Engine::new(
        store.clone(),
        Arc::new(SystemClock),
        engine_config("default", &[]),
    );
    engine.mark_store_checked();
    let engine = Arc::new(engine);
    let app = TestApp::spawn_engine(store, engine.clone(), None).await;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 600", pid_file.display());
    let runner = {
        let base = app.base.clone();
        tokio::spawn(async move {
            cli(
                &base,
                &["elect", "e", "--ttl", "3", "--", "sh", "-c", &script],
                &[],
            )
            .await
        })
    };
    read_pid(&pid_file).await;
    // An admin's word, on the election's lock itself (no HTTP route breaks an election).
    let broken = engine
        .break_lock(None, ".elections/e", "admin")
        .await
        .unwrap();
    assert_eq!(broken.owner, None);
    let out = runner.await.unwrap();
    assert_eq!(code(&out), 6, "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("was lost"),
        "{out:?}"
    );
}

type Lines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

async fn next_line(lines: &mut Lines) -> String {
    tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("a line in time")
        .unwrap()
        .expect("not the end")
}

#[tokio::test]
async fn elect_observe_prints_each_leader_and_each_no_leader() {
    let app = TestApp::memory().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_s3lock"))
        .args(["elect", "e", "--observe"])
        .env("S3LOCK_URL", &app.base)
        .env_remove("S3LOCK_AUTH_TOKEN")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(next_line(&mut lines).await, "no leader");
    let alice = json_with(
        post(
            &app,
            "/elections/e/campaign",
            json!({"candidate": "alice", "value": "a:80"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        next_line(&mut lines).await,
        "leader alice (term 1) value a:80"
    );
    json_with(
        post(
            &app,
            "/elections/e/proclaim",
            json!({"token": alice["token"], "value": "a:81"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        next_line(&mut lines).await,
        "leader alice (term 1) proclaimed a:81"
    );
    json_with(
        post(
            &app,
            "/elections/e/resign",
            json!({"token": alice["token"]}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(next_line(&mut lines).await, "no leader: alice resigned");
    json_with(
        post(
            &app,
            "/elections/e/campaign",
            json!({"candidate": "bob", "ttl": 1}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(next_line(&mut lines).await, "leader bob (term 2)");
    assert_eq!(
        next_line(&mut lines).await,
        "no leader: bob's lease ran out"
    );
}
