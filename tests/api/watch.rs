//! Following a lock through the API and the CLI: `GET /locks/{key}?index=N&wait=S` answers at
//! once for an old index, on the next change, or after the wait; `s3lock watch` prints each
//! change.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{json_with, problem, TestApp};

async fn watch(app: &TestApp, key: &str, index: u64, wait: f64) -> reqwest::Response {
    app.http
        .get(format!(
            "{}/locks/{key}?index={index}&wait={wait}",
            app.base
        ))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_watch_answers_on_the_next_change_and_shows_no_token() {
    let app = TestApp::memory().await;
    let a = json_with(app.acquire("k", json!({"owner": "alice"})).await, 200).await;
    let index = a["index"].as_u64().unwrap();
    assert!(index > 0);
    // An old index: at once.
    let now = json_with(watch(&app, "k", index - 1, 30.0).await, 200).await;
    assert_eq!(now["index"], index);
    assert!(now.get("token").is_none(), "{now}");
    // The current one: after the release.
    let waiting = {
        let (http, url) = (
            app.http.clone(),
            format!("{}/locks/k?index={index}&wait=30", app.base),
        );
        tokio::spawn(async move { http.get(url).send().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    json_with(app.release("k", json!({"token": a["token"]})).await, 200).await;
    let changed = json_with(waiting.await.unwrap(), 200).await;
    assert!(changed["index"].as_u64().unwrap() > index);
    assert_eq!(changed["owner"], Value::Null);
    assert_eq!(changed["locked"], false);
    // No change within the wait: the same index.
    let same = changed["index"].as_u64().unwrap();
    let unchanged = json_with(watch(&app, "k", same, 0.3).await, 200).await;
    assert_eq!(unchanged["index"], same);
}

#[tokio::test]
async fn a_watch_with_a_bad_index_or_wait_is_refused() {
    let app = TestApp::memory().await;
    for query in [
        "index=-1",
        "index=x",
        "index=1&wait=-1",
        "index=1&wait=100000",
    ] {
        let resp = app
            .http
            .get(format!("{}/locks/k?{query}", app.base))
            .send()
            .await
            .unwrap();
        problem(resp, 400, "invalid-input").await;
    }
}

type Lines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

async fn next_json(lines: &mut Lines) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("a line")
        .unwrap()
        .expect("not the end");
    serde_json::from_str(&line).unwrap()
}

#[tokio::test]
async fn s3lock_watch_prints_the_state_then_each_change_as_json_lines() {
    let app = TestApp::memory().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_s3lock"))
        .args(["watch", "jobs/etl", "--changes", "2", "--json"])
        .env("S3LOCK_URL", &app.base)
        .env_remove("S3LOCK_AUTH_TOKEN")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = next_json(&mut lines).await;
    assert_eq!(first["locked"], false);
    let a = json_with(
        app.acquire("jobs/etl", json!({"owner": "alice"})).await,
        200,
    )
    .await;
    let second = next_json(&mut lines).await;
    assert_eq!(second["owner"], "alice");
    assert!(second.get("token").is_none(), "{second}");
    json_with(
        app.release("jobs/etl", json!({"token": a["token"]})).await,
        200,
    )
    .await;
    let third = next_json(&mut lines).await;
    assert!(third["index"].as_u64() > second["index"].as_u64());
    assert_eq!(third["locked"], false);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "two changes seen: it stops");
}
