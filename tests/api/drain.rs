//! A replica told to shut down drains: it takes no new acquire (503 `shutting-down`), says so on
//! `/readyz`, answers its blocked waiters whole, still serves renews and releases, finishes what
//! is in flight, and then exits. In process with its shutdown future, and as a real process sent
//! SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::Method;
use s3lock::clock::SystemClock;
use s3lock::lock::Engine;
use s3lock::startup::Server;
use s3lock::store::memory::MemoryStore;
use s3lock::store::{ListPage, Store, StoreError, Version, Versioned};
use serde_json::{json, Value};
use tokio::sync::{oneshot, Semaphore};

use crate::helpers::{engine_config, json_with, problem, PREFIX};

/// A memory store whose reads of one object wait until the test lets them go: a request that
/// reads it stays in flight for as long as the test likes.
#[derive(Debug)]
struct GatedStore {
    inner: MemoryStore,
    gated: String,
    /// Closed (no permits) until the test adds one per read to let through.
    gate: Semaphore,
    /// A permit added each time a read arrives at the gate.
    arrived: Semaphore,
}

#[async_trait]
impl Store for GatedStore {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        if key == self.gated {
            self.arrived.add_permits(1);
            self.gate.acquire().await.unwrap().forget();
        }
        self.inner.get(bucket, key).await
    }
    async fn put_if_absent(&self, b: &str, k: &str, body: Bytes) -> Result<Version, StoreError> {
        self.inner.put_if_absent(b, k, body).await
    }
    async fn put_if_version(
        &self,
        b: &str,
        k: &str,
        body: Bytes,
        expected: &Version,
    ) -> Result<Version, StoreError> {
        self.inner.put_if_version(b, k, body, expected).await
    }
    async fn list_page(
        &self,
        b: &str,
        p: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<ListPage, StoreError> {
        self.inner.list_page(b, p, after, max).await
    }
    async fn delete(&self, b: &str, k: &str) -> Result<(), StoreError> {
        self.inner.delete(b, k).await
    }
}

async fn post(http: &reqwest::Client, base: &str, path: &str, body: Value) -> reqwest::Response {
    http.post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .expect("the server answers")
}

/// Asserts a whole 503 `shutting-down` answer with `Retry-After`.
async fn shutting_down(resp: reqwest::Response) {
    assert!(
        resp.headers().get("retry-after").is_some(),
        "{:?}",
        resp.headers()
    );
    problem(resp, 503, "shutting-down").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_replica_answers_its_waiter_refuses_acquires_serves_releases_and_exits_when_done(
) {
    s3lock::telemetry::init_for_tests();
    let store = Arc::new(GatedStore {
        inner: MemoryStore::new(),
        gated: format!("{PREFIX}slow"),
        gate: Semaphore::new(0),
        arrived: Semaphore::new(0),
    });
    let engine = Engine::new(
        store.clone(),
        Arc::new(SystemClock),
        engine_config("default", &[]),
    )
    .with_cache_capacity(0);
    engine.mark_store_checked();
    let engine = Arc::new(engine);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(Server::new(engine.clone(), Duration::from_secs(90)).serve(
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let http = reqwest::Client::new();

    // alice holds "held", carol holds "mine"; bob waits for "held".
    let alice = json_with(
        post(
            &http,
            &base,
            "/locks/held/acquire",
            json!({"owner": "alice"}),
        )
        .await,
        200,
    )
    .await;
    let carol = json_with(
        post(
            &http,
            &base,
            "/locks/mine/acquire",
            json!({"owner": "carol"}),
        )
        .await,
        200,
    )
    .await;
    let bob = tokio::spawn({
        let (http, base) = (http.clone(), base.clone());
        async move {
            let body = json!({"owner": "bob", "wait": 50});
            post(&http, &base, "/locks/held/acquire", body).await
        }
    });
    while engine.waited_locks() < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A status read of "slow" stays in flight until the gate opens.
    let slow = tokio::spawn({
        let (http, base) = (http.clone(), base.clone());
        async move { http.get(format!("{base}/locks/slow")).send().await.unwrap() }
    });
    store.arrived.acquire().await.unwrap().forget();

    stop.send(()).unwrap();

    // bob is answered whole, and told to come back (elsewhere).
    shutting_down(bob.await.unwrap()).await;
    // While the slow read is in flight the replica still answers: no new acquire, not ready...
    shutting_down(post(&http, &base, "/locks/new/acquire", json!({})).await).await;
    shutting_down(http.get(format!("{base}/readyz")).send().await.unwrap()).await;
    // ...but holders renew and release.
    let renewed = post(
        &http,
        &base,
        "/locks/held/renew",
        json!({"token": alice["token"]}),
    )
    .await;
    assert_eq!(json_with(renewed, 200).await["owner"], "alice");
    let released = post(
        &http,
        &base,
        "/locks/mine/release",
        json!({"token": carol["token"]}),
    )
    .await;
    assert_eq!(json_with(released, 200).await["owner"], Value::Null);
    assert!(!server.is_finished(), "a request is still in flight");

    // The slow read finishes, whole, and then the server is done.
    store.gate.add_permits(1);
    let slow = json_with(slow.await.unwrap(), 200).await;
    assert_eq!(slow["key"], "slow");
    tokio::time::timeout(Duration::from_secs(60), server)
        .await
        .expect("the server exits once nothing is in flight")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_server_sent_sigterm_answers_its_blocked_waiter_whole_and_exits() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use tokio::io::AsyncBufReadExt;

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
    // Keep reading its log, so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let base = format!("http://{address}");
    let http = reqwest::Client::new();
    json_with(
        post(&http, &base, "/locks/k/acquire", json!({"owner": "alice"})).await,
        200,
    )
    .await;
    let bob = tokio::spawn({
        let (http, base) = (http.clone(), base.clone());
        async move {
            post(
                &http,
                &base,
                "/locks/k/acquire",
                json!({"owner": "bob", "wait": 50}),
            )
            .await
        }
    });
    loop {
        let metrics = http
            .request(Method::GET, format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if crate::helpers::metric_line(&metrics, "s3lock_waiters") == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let pid = Pid::from_raw(i32::try_from(server.id().unwrap()).unwrap());
    kill(pid, Signal::SIGTERM).unwrap();

    shutting_down(bob.await.unwrap()).await;
    let status = tokio::time::timeout(Duration::from_secs(60), server.wait())
        .await
        .expect("the server exits after its drain")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
