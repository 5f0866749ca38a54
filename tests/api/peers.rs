//! Wake-up hints between replicas over one bucket on the real S3 server: a waiter on one replica
//! is handed a lock freed on another without waiting for a poll; a dead peer costs nothing; a
//! hint without the secret is refused.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use s3lock::lock::Engine;
use s3lock::metrics::Metrics;
use s3lock::peers::{Hint, HintKey, Peers, SIGNATURE_HEADER, WAKE_PATH};
use s3lock::startup::Server;
use s3lock::store::s3::S3Store;
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::helpers::{engine_config, json_with, support};

const SECRET: &str = "peer-secret-for-tests-0123";

/// A replica on `bucket` whose waiters never poll within a test (their first sleep is longer
/// than any wait): only a wake-up can hand them a lock early. Sends hints to `peers`.
async fn replica(bucket: &str, peers: &[String]) -> (String, Arc<Engine>) {
    s3lock::telemetry::init_for_tests();
    let store = S3Store::connect(&support::s3_settings()).await;
    let clock = store.clock();
    let mut config = engine_config(bucket, &[]);
    config.first_poll = Duration::from_secs(600);
    config.max_poll = Duration::from_secs(600);
    let metrics = Metrics::new();
    let key = HintKey::new(SecretString::from(SECRET));
    let mut engine = Engine::new(Arc::new(store), clock, config).with_metrics(metrics.clone());
    if !peers.is_empty() {
        engine = engine.with_peers(Arc::new(
            Peers::new(peers, key.clone(), &Default::default(), metrics).unwrap(),
        ));
    }
    engine.mark_store_checked();
    let engine = Arc::new(engine);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = Server::new(engine.clone(), Duration::from_secs(90)).with_hints(Some(key));
    tokio::spawn(server.serve(listener, std::future::pending()));
    (base, engine)
}

async fn post(url: String, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn metric(engine: &Engine, line_start: &str) -> u64 {
    engine
        .metrics()
        .render()
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse::<f64>().unwrap() as u64)
}

#[tokio::test]
async fn a_waiter_on_another_replica_is_handed_the_lock_by_a_hint_without_a_poll() {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let (b, b_engine) = replica(&bucket, &[]).await;
    let b_addr = b.trim_start_matches("http://").to_owned();
    let (a, _) = replica(&bucket, &[b_addr]).await;
    let alice = json_with(
        post(format!("{a}/locks/k/acquire"), json!({"owner": "alice"})).await,
        200,
    )
    .await;
    // bob waits on B. His waiter's first sleep outlasts his whole wait: without a wake-up he
    // could only try again at his deadline, 60 s from now.
    let bob = tokio::spawn(post(
        format!("{b}/locks/k/acquire"),
        json!({"owner": "bob", "wait": 60}),
    ));
    while b_engine.waited_locks() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    json_with(
        post(
            format!("{a}/locks/k/release"),
            json!({"token": alice["token"]}),
        )
        .await,
        200,
    )
    .await;
    // Far inside bob's deadline: only the hint can have woken him.
    let bob = tokio::time::timeout(Duration::from_secs(30), bob)
        .await
        .expect("bob was woken by the hint, not by his deadline")
        .unwrap();
    let bob = json_with(bob, 200).await;
    assert_eq!(bob["owner"], "bob");
    assert!(bob["fencing_token"].as_u64() > alice["fencing_token"].as_u64());
    assert_eq!(
        metric(
            &b_engine,
            "s3lock_peer_hints_received_total{outcome=\"accepted\"}"
        ),
        1
    );
}

#[tokio::test]
async fn dead_and_silent_peers_never_fail_a_release_and_are_counted() {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    // One peer refuses connections; the other accepts them and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let dead = support::closed_url()
        .trim_start_matches("http://")
        .to_owned();
    let (a, a_engine) = replica(&bucket, &[dead, silent_addr]).await;
    for i in 0..5 {
        let key = format!("k{i}");
        let g = json_with(
            post(format!("{a}/locks/{key}/acquire"), json!({})).await,
            200,
        )
        .await;
        json_with(
            post(
                format!("{a}/locks/{key}/release"),
                json!({"token": g["token"]}),
            )
            .await,
            200,
        )
        .await;
    }
    // The hints go out in the background; each ends as failed (refused, or timed out).
    let failed = "s3lock_peer_hints_total{outcome=\"failed\"}";
    // Bounded, so a hint that is never counted fails the test instead of hanging it.
    tokio::time::timeout(Duration::from_secs(30), async {
        while metric(&a_engine, failed) < 10 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("every hint to a dead or silent peer ends counted as failed");
    assert_eq!(
        metric(&a_engine, "s3lock_peer_hints_total{outcome=\"sent\"}"),
        0
    );
    held.abort();
}

#[tokio::test]
async fn a_hint_without_the_secret_or_replayed_late_is_refused() {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let (b, b_engine) = replica(&bucket, &[]).await;
    let http = reqwest::Client::new();
    let send = |body: Vec<u8>, signature: String| {
        http.post(format!("{b}{WAKE_PATH}"))
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
    };
    let hint = |sent_at_ms| {
        serde_json::to_vec(&Hint {
            bucket: bucket.clone(),
            object: "locks/k".into(),
            sent_at_ms,
        })
        .unwrap()
    };
    let now = s3lock::peers::wall_clock_ms();
    let right = HintKey::new(SecretString::from(SECRET));
    let wrong = HintKey::new(SecretString::from("not-the-peer-secret-0123"));
    for (body, signature, why) in [
        (hint(now), wrong.sign(&hint(now)), "another secret"),
        (hint(now), String::new(), "no signature"),
        (
            hint(now),
            right.sign(&hint(now - 1)),
            "a signature of another body",
        ),
        (
            hint(now - 3_600_000),
            right.sign(&hint(now - 3_600_000)),
            "an hour old",
        ),
    ] {
        let resp = send(body, signature).await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{why}");
    }
    assert_eq!(
        metric(
            &b_engine,
            "s3lock_peer_hints_received_total{outcome=\"refused\"}"
        ),
        4
    );
    let resp = send(hint(now), right.sign(&hint(now))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
}
