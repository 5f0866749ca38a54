//! Two replicas over one SeaweedFS bucket, many clients hammering the same keys: no two holds of
//! a key ever overlap, and fencing tokens strictly increase in grant order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::helpers::{support, TestApp};

const CLIENTS: usize = 16;
const RUN_FOR: Duration = Duration::from_secs(4);

/// One hold as the client saw it: from the grant's answer to just before its release was sent.
#[derive(Debug, Clone)]
struct Hold {
    client: usize,
    fencing_token: u64,
    start: Instant,
    end: Instant,
}

async fn hammer(keys: usize) -> (BTreeMap<String, Vec<Hold>>, usize) {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let replicas = Arc::new([TestApp::s3(&bucket).await, TestApp::s3(&bucket).await]);
    let holds: Arc<Mutex<BTreeMap<String, Vec<Hold>>>> = Arc::default();
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop_at = Instant::now() + RUN_FOR;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (replicas, holds, refused) = (replicas.clone(), holds.clone(), refused.clone());
            tokio::spawn(async move {
                let app = &replicas[client % 2];
                while Instant::now() < stop_at {
                    let key = format!("hot/{}", rand::rng().random_range(0..keys));
                    let body = json!({"owner": format!("client-{client}"), "ttl": 30, "wait": 0.5});
                    let resp = app.acquire(&key, body).await;
                    match resp.status().as_u16() {
                        200 => {}
                        409 => {
                            refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            continue;
                        }
                        other => panic!("acquire answered {other}: {}", resp.text().await.unwrap()),
                    }
                    let start = Instant::now();
                    let grant: Value = resp.json().await.unwrap();
                    let hold_ms = rand::rng().random_range(0..5);
                    tokio::time::sleep(Duration::from_millis(hold_ms)).await;
                    let end = Instant::now();
                    let released = app.release(&key, json!({"token": grant["token"]})).await;
                    assert_eq!(released.status(), 200, "{}", released.text().await.unwrap());
                    holds.lock().await.entry(key).or_default().push(Hold {
                        client,
                        fencing_token: grant["fencing_token"].as_u64().unwrap(),
                        start,
                        end,
                    });
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    let holds = holds.lock().await.clone();
    (holds, refused.load(std::sync::atomic::Ordering::Relaxed))
}

fn assert_one_holder_at_a_time(holds: &BTreeMap<String, Vec<Hold>>) -> usize {
    let mut total = 0;
    for (key, list) in holds {
        let mut list = list.clone();
        list.sort_by_key(|h| h.start);
        for pair in list.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(
                a.end <= b.start,
                "{key}: client {} held from {:?} to {:?} but client {} was granted at {:?}",
                a.client,
                a.start,
                a.end,
                b.client,
                b.start
            );
            assert!(
                a.fencing_token < b.fencing_token,
                "{key}: fencing token {} was granted after {}",
                b.fencing_token,
                a.fencing_token
            );
        }
        total += list.len();
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_clients_on_two_replicas_never_share_one_lock() {
    let (holds, refused) = hammer(1).await;
    let grants = assert_one_holder_at_a_time(&holds);
    eprintln!("one key: {grants} grants, {refused} refusals after waiting");
    assert!(
        grants >= 10,
        "only {grants} grants: the test did not exercise the lock"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_clients_on_two_replicas_never_share_any_of_a_hundred_locks() {
    let (holds, refused) = hammer(100).await;
    let grants = assert_one_holder_at_a_time(&holds);
    eprintln!(
        "100 keys: {grants} grants over {} keys, {refused} refusals",
        holds.len()
    );
    assert!(grants >= 50, "only {grants} grants");
}
