//! Lists come in pages: one page of the store's listing per request and at most `limit`
//! documents read for it, a few at a time, with a cursor to the next; the CLI follows the pages.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::{stream, StreamExt};
use reqwest::Method;
use s3lock::clock::SystemClock;
use s3lock::lock::{AcquireRequest, Engine};
use s3lock::store::memory::MemoryStore;
use s3lock::store::Store;
use serde_json::Value;

use crate::cli::{cli, code, stdout_json};
use crate::helpers::support::counting::CountingStore;
use crate::helpers::{engine_config, json_with, problem, support, TestApp};

/// Takes `n` locks `jobs/00000`... through `engine`, a few at a time.
async fn hold_locks(engine: &Engine, n: usize) {
    stream::iter(0..n)
        .for_each_concurrent(16, |i| async move {
            let req = AcquireRequest {
                owner: Some(format!("owner-{i}")),
                ttl: Some(600),
                ..AcquireRequest::default()
            };
            engine
                .acquire(None, &format!("jobs/{i:05}"), req)
                .await
                .unwrap();
        })
        .await;
}

/// Follows `GET {path}` page after page (`limit` per page when given), calling `each_page`
/// after each; every key seen, in order.
async fn follow_pages(
    app: &TestApp,
    path: &str,
    limit: Option<u64>,
    mut each_page: impl FnMut(&Value),
) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{path}?prefix=jobs/");
        if let Some(limit) = limit {
            url.push_str(&format!("&limit={limit}"));
        }
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = json_with(app.request(Method::GET, &url, None).await, 200).await;
        each_page(&page);
        keys.extend(
            page["locks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["key"].as_str().unwrap().to_owned()),
        );
        match page["next"].as_str() {
            Some(next) => {
                assert_ne!(
                    cursor.as_deref(),
                    Some(next),
                    "the cursor must move forward"
                );
                cursor = Some(next.to_owned());
            }
            None => return keys,
        }
    }
}

/// Asserts that `keys` are `jobs/00000`... `jobs/{n-1}`, each once, in order (without printing
/// thousands of keys when they are not).
fn assert_each_once(keys: &[String], n: usize) {
    let distinct: BTreeSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), keys.len(), "a lock was listed twice");
    assert_eq!(keys.len(), n, "locks listed");
    let expected: Vec<String> = (0..n).map(|i| format!("jobs/{i:05}")).collect();
    assert!(
        keys == expected,
        "the locks listed are not jobs/00000.. in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_of_3000_locks_comes_in_pages_that_each_read_at_most_their_limit() {
    let store = Arc::new(CountingStore::default());
    let engine = Engine::new(
        store.clone(),
        Arc::new(SystemClock),
        engine_config("default", &[]),
    );
    engine.mark_store_checked();
    let engine = Arc::new(engine);
    hold_locks(&engine, 3000).await;
    let app = TestApp::spawn_engine(store.clone(), engine, None).await;
    store.take_counts();
    store.most_in_flight.store(0, Ordering::SeqCst);

    let mut pages = 0;
    let keys = follow_pages(&app, "/locks", None, |page| {
        pages += 1;
        let (gets, listings) = store.take_counts();
        let locks = page["locks"].as_array().unwrap().len();
        assert!(
            locks <= 100,
            "the default page holds at most 100 locks, not {locks}"
        );
        assert!(gets <= 100, "page {pages} read {gets} documents");
        assert_eq!(
            listings, 1,
            "page {pages} listed the store {listings} times"
        );
        for view in page["locks"].as_array().unwrap() {
            assert!(view.get("token").is_none(), "{view}");
        }
    })
    .await;
    assert_each_once(&keys, 3000);
    assert_eq!(pages, 30);
    let most = store.most_in_flight.load(Ordering::SeqCst);
    assert!(
        (2..=8).contains(&most),
        "{most} reads at once: a page reads a few at a time, not one after another"
    );

    // With a limit of its own: pages of that size, and still every lock once.
    let keys = follow_pages(&app, "/locks", Some(1000), |page| {
        let (gets, listings) = store.take_counts();
        assert!(page["locks"].as_array().unwrap().len() <= 1000);
        assert!(
            gets <= 1000 && listings == 1,
            "{gets} reads, {listings} listings"
        );
    })
    .await;
    assert_each_once(&keys, 3000);
}

#[tokio::test]
async fn a_list_on_s3_asks_the_store_for_one_page_and_at_most_limit_objects_per_request() {
    let (direct, bucket) = support::s3_with_fresh_bucket().await;
    let seeder = Engine::new(
        Arc::new(direct.clone()),
        direct.clock(),
        engine_config(&bucket, &[]),
    );
    hold_locks(&seeder, 250).await;
    let proxy = support::proxy::FaultProxy::start(&support::s3_endpoint()).await;
    let app = TestApp::s3_via(&bucket, &proxy.endpoint, std::time::Duration::from_secs(10)).await;
    proxy.reset_counts();
    let mut pages = 0;
    let keys = follow_pages(&app, "/locks", Some(100), |_| {
        pages += 1;
        // One ListObjectsV2 (a GET) and at most 100 GetObject.
        let requests = proxy.total();
        assert!(requests <= 101, "page {pages}: {requests} requests to S3");
        proxy.reset_counts();
    })
    .await;
    assert_each_once(&keys, 250);
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn a_bad_cursor_or_limit_is_invalid_input_naming_the_field() {
    let app = TestApp::memory().await;
    for (query, field) in [
        ("cursor=zz", "cursor"),
        ("cursor=abc", "cursor"),
        ("cursor=6A", "cursor"),
        ("cursor=%2B6", "cursor"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
    ] {
        let resp = app
            .request(Method::GET, &format!("/locks?{query}"), None)
            .await;
        let body = problem(resp, 400, "invalid-input").await;
        assert_eq!(body["field"], field, "{query}: {body}");
    }
}

#[tokio::test]
async fn the_cli_list_follows_the_pages_to_every_lock() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = Engine::new(
        store.clone(),
        Arc::new(SystemClock),
        engine_config("default", &[]),
    );
    engine.mark_store_checked();
    let engine = Arc::new(engine);
    hold_locks(&engine, 3000).await;
    let app = TestApp::spawn_engine(store, engine, None).await;
    let out = cli(&app.base, &["list", "--prefix", "jobs/", "--json"], &[]).await;
    assert_eq!(code(&out), 0, "{out:?}");
    let keys: Vec<String> = stdout_json(&out)["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["key"].as_str().unwrap().to_owned())
        .collect();
    assert_each_once(&keys, 3000);
    // Without --json, a line per lock.
    let out = cli(&app.base, &["list", "--prefix", "jobs/"], &[]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3000);
}
