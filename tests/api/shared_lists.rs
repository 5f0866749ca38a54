//! Lists of semaphores and read-write locks, `GET /semaphores?prefix=&limit=&cursor=` and `GET
//! /rwlocks?...` (and their bucket forms): pages as the lock list's, each kind under its own
//! namespace, never a token, and an auth token's prefix checked against the namespace.

use reqwest::Method;
use serde_json::{json, Value};

use crate::auth::call;
use crate::helpers::{json_with, problem, TestApp};
use crate::semaphores::post;

/// Follows `GET {path}?prefix=...` page after page (`limit` per page when given); the pages.
async fn pages(app: &TestApp, path: &str, prefix: &str, limit: Option<u64>) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{path}?prefix={prefix}");
        if let Some(limit) = limit {
            url.push_str(&format!("&limit={limit}"));
        }
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = json_with(app.request(Method::GET, &url, None).await, 200).await;
        let next = page["next"].as_str().map(str::to_owned);
        pages.push(page);
        match next {
            Some(next) => {
                assert_ne!(cursor.as_ref(), Some(&next), "the cursor must move forward");
                cursor = Some(next);
            }
            None => return pages,
        }
    }
}

/// The keys of every view in `pages` under `field`, in order.
fn keys(pages: &[Value], field: &str) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| p[field].as_array().expect(field).clone())
        .map(|v| v["key"].as_str().unwrap().to_owned())
        .collect()
}

fn assert_no_token(pages: &[Value], field: &str) {
    for view in pages.iter().flat_map(|p| p[field].as_array().unwrap()) {
        assert!(view.get("token").is_none(), "{view}");
        assert!(view.get("lease").is_none(), "{view}");
        assert!(!view.to_string().contains("\"token\""), "{view}");
    }
}

#[tokio::test]
async fn a_list_of_semaphores_shows_three_keys_in_pages_without_tokens() {
    let app = TestApp::memory().await;
    let mut tokens = Vec::new();
    for key in ["jobs/a", "jobs/b", "jobs/c"] {
        let held = json_with(
            post(
                &app,
                &format!("/semaphores/{key}/acquire"),
                json!({"owner": "w", "limit": 2}),
            )
            .await,
            200,
        )
        .await;
        tokens.push(held["token"].as_str().unwrap().to_owned());
    }
    // Other kinds and other prefixes are not listed.
    json_with(app.acquire("jobs/lock", json!({"owner": "m"})).await, 200).await;
    json_with(
        post(&app, "/rwlocks/jobs/r/acquire", json!({"mode": "shared"})).await,
        200,
    )
    .await;
    json_with(
        post(&app, "/semaphores/other/acquire", json!({"limit": 1})).await,
        200,
    )
    .await;

    let all = pages(&app, "/semaphores", "jobs/", None).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(keys(&all, "semaphores"), ["jobs/a", "jobs/b", "jobs/c"]);
    let first = &all[0]["semaphores"][0];
    assert_eq!(first["kind"], "semaphore");
    assert_eq!(first["limit"], 2);
    assert_eq!(first["permits_left"], 1);
    assert_eq!(first["holders"][0]["owner"], "w");
    assert_no_token(&all, "semaphores");
    let body = all[0].to_string();
    for token in &tokens {
        assert!(!body.contains(token.as_str()), "a holder token in the list");
    }

    // One per page: three pages (the last may come with no next), every key once, in order.
    let one_by_one = pages(&app, "/semaphores", "jobs/", Some(1)).await;
    assert!(one_by_one.len() >= 3, "{one_by_one:?}");
    assert_eq!(
        keys(&one_by_one, "semaphores"),
        ["jobs/a", "jobs/b", "jobs/c"]
    );
    assert_no_token(&one_by_one, "semaphores");

    // Without a prefix, every semaphore.
    let every = pages(&app, "/semaphores", "", None).await;
    assert_eq!(
        keys(&every, "semaphores"),
        ["jobs/a", "jobs/b", "jobs/c", "other"]
    );
}

#[tokio::test]
async fn a_list_of_read_write_locks_shows_holders_and_their_modes_without_tokens() {
    let app = TestApp::memory().await;
    for key in ["jobs/x", "jobs/y", "jobs/z"] {
        json_with(
            post(
                &app,
                &format!("/rwlocks/{key}/acquire"),
                json!({"owner": "r", "mode": "shared"}),
            )
            .await,
            200,
        )
        .await;
    }
    json_with(
        post(&app, "/semaphores/jobs/s/acquire", json!({"limit": 1})).await,
        200,
    )
    .await;
    let all = pages(&app, "/rwlocks", "jobs/", Some(2)).await;
    assert_eq!(keys(&all, "rwlocks"), ["jobs/x", "jobs/y", "jobs/z"]);
    let first = &all[0]["rwlocks"][0];
    assert_eq!(first["kind"], "rwlock");
    assert_eq!(first["holders"][0]["mode"], "shared");
    assert_eq!(first["limit"], Value::Null);
    assert_no_token(&all, "rwlocks");
}

#[tokio::test]
async fn a_list_in_a_bucket_lists_that_bucket_and_bad_paging_is_invalid_input() {
    let app = TestApp::memory().await;
    json_with(
        post(
            &app,
            "/buckets/other-bucket/semaphores/jobs/a/acquire",
            json!({"limit": 1}),
        )
        .await,
        200,
    )
    .await;
    json_with(
        post(&app, "/semaphores/jobs/b/acquire", json!({"limit": 1})).await,
        200,
    )
    .await;
    let there = pages(&app, "/buckets/other-bucket/semaphores", "", None).await;
    assert_eq!(keys(&there, "semaphores"), ["jobs/a"]);
    assert_eq!(there[0]["semaphores"][0]["bucket"], "other-bucket");
    let here = pages(&app, "/semaphores", "", None).await;
    assert_eq!(keys(&here, "semaphores"), ["jobs/b"]);
    assert!(
        pages(&app, "/buckets/other-bucket/rwlocks", "", None).await[0]["rwlocks"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    problem(
        app.request(Method::GET, "/buckets/nope/semaphores", None)
            .await,
        403,
        "bucket-not-allowed",
    )
    .await;
    for (query, field) in [
        ("cursor=zz", "cursor"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
    ] {
        for base in ["/semaphores", "/rwlocks"] {
            let resp = app
                .request(Method::GET, &format!("{base}?{query}"), None)
                .await;
            let body = problem(resp, 400, "invalid-input").await;
            assert_eq!(body["field"], field, "{base}?{query}: {body}");
        }
    }
}

#[tokio::test]
async fn an_auth_tokens_prefix_bounds_the_list_within_the_kinds_namespace() {
    const SEM_JOBS: &str = "sem-jobs-token-0123456789abcdef";
    let tokens = format!(
        "{}{SEM_JOBS} name=sem prefix=.semaphores/jobs/\n",
        crate::auth::tokens_file()
    );
    let app = &TestApp::memory_with_auth(&tokens).await;
    for key in ["jobs/a", "jobs/b", "other"] {
        let path = format!("/semaphores/{key}/acquire");
        let resp = call(
            app,
            Method::POST,
            &path,
            Some(crate::auth::ADMIN),
            Some(json!({"limit": 1})),
        )
        .await;
        json_with(resp, 200).await;
    }
    let list = |token: &'static str, query: &'static str| async move {
        call(
            app,
            Method::GET,
            &format!("/semaphores{query}"),
            Some(token),
            None,
        )
        .await
    };
    // A wider prefix is narrowed to the token's own.
    let page = json_with(list(SEM_JOBS, "").await, 200).await;
    assert_eq!(keys(&[page], "semaphores"), ["jobs/a", "jobs/b"]);
    let page = json_with(list(SEM_JOBS, "?prefix=jobs/b").await, 200).await;
    assert_eq!(keys(&[page], "semaphores"), ["jobs/b"]);
    problem(list(SEM_JOBS, "?prefix=other").await, 403, "forbidden").await;
    // A token for the locks under jobs/ lists no semaphore, and reaches none of them.
    problem(list(crate::auth::CI, "").await, 403, "forbidden").await;
    problem(
        list(crate::auth::CI, "?prefix=jobs/").await,
        403,
        "forbidden",
    )
    .await;
    // Read-write locks are another namespace: the semaphores' token does not reach them.
    let resp = call(app, Method::GET, "/rwlocks", Some(SEM_JOBS), None).await;
    problem(resp, 403, "forbidden").await;
    // A token without a prefix lists them all.
    let page = json_with(list(crate::auth::OTHER, "").await, 200).await;
    assert_eq!(keys(&[page], "semaphores"), ["jobs/a", "jobs/b", "other"]);
}
