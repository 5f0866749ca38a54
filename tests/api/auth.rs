//! Auth through the real app: auth tokens, their buckets and prefixes, 401 and 403, and the
//! admin break.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{json_with, problem, TestApp};

pub const CI: &str = "ci-token-0123456789abcdef";
pub const ADMIN: &str = "admin-token-0123456789abcdef";
pub const OTHER: &str = "other-token-0123456789abcdef";
/// Valid on `other-bucket` only.
pub const SCOPED: &str = "scoped-token-0123456789abcdef";

pub fn tokens_file() -> String {
    format!(
        "# test tokens\n{CI} name=ci prefix=jobs/\n{ADMIN} name=ops admin\n{OTHER} name=other\n\
         {SCOPED} name=scoped bucket=other-bucket\n"
    )
}

#[tokio::test]
async fn an_auth_token_works_only_on_the_buckets_its_line_names() {
    let app = TestApp::memory_with_auth(&tokens_file()).await;
    let other = "/buckets/other-bucket/locks";
    // CI names no bucket: the default bucket only, for every route, listing included.
    for (method, path, body) in [
        (
            Method::POST,
            format!("{other}/jobs/x/acquire"),
            Some(json!({})),
        ),
        (Method::GET, format!("{other}/jobs/x"), None),
        (Method::GET, format!("{other}?prefix=jobs/"), None),
    ] {
        let resp = call(&app, method, &path, Some(CI), body).await;
        let p = problem(resp, 403, "forbidden").await;
        assert!(
            p["detail"].as_str().unwrap().contains("other-bucket"),
            "{p}"
        );
    }
    assert!(app.snapshot().await.is_empty(), "nothing was written");
    let resp = call(
        &app,
        Method::POST,
        "/locks/jobs/x/acquire",
        Some(CI),
        Some(json!({})),
    )
    .await;
    json_with(resp, 200).await;
    // SCOPED names other-bucket only: there it works, on the default bucket it does not.
    let resp = call(
        &app,
        Method::POST,
        &format!("{other}/y/acquire"),
        Some(SCOPED),
        Some(json!({})),
    )
    .await;
    assert_eq!(json_with(resp, 200).await["bucket"], "other-bucket");
    let resp = call(&app, Method::GET, "/locks?prefix=", Some(SCOPED), None).await;
    problem(resp, 403, "forbidden").await;
    let resp = call(&app, Method::GET, "/locks/jobs/x", Some(SCOPED), None).await;
    problem(resp, 403, "forbidden").await;
}

pub async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = app.http.request(method, format!("{}{path}", app.base));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn lock_routes_need_a_known_auth_token_and_answer_401_with_a_bearer_challenge() {
    let app = TestApp::memory_with_auth(&tokens_file()).await;
    let none = call(&app, Method::GET, "/locks/jobs/a", None, None).await;
    assert_eq!(
        none.headers()["www-authenticate"],
        r#"Bearer realm="s3lock""#
    );
    problem(none, 401, "unauthorized").await;

    let wrong = call(
        &app,
        Method::POST,
        "/locks/jobs/a/acquire",
        Some("nope-0123456789abcdef"),
        Some(json!({})),
    )
    .await;
    assert_eq!(
        wrong.headers()["www-authenticate"],
        r#"Bearer realm="s3lock", error="invalid_token""#
    );
    problem(wrong, 401, "unauthorized").await;
    // A token's prefix is no way around it: a wrong token that starts like a good one is refused.
    let prefix_of_good = &CI[..CI.len() - 1];
    let r = call(&app, Method::GET, "/locks", Some(prefix_of_good), None).await;
    problem(r, 401, "unauthorized").await;
    // Nothing was written by the refused requests.
    assert!(app.snapshot().await.is_empty());

    // The operational routes stay open.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let r = call(&app, Method::GET, path, None, None).await;
        assert_eq!(r.status(), 200, "{path}");
    }
    let ok = call(
        &app,
        Method::POST,
        "/locks/jobs/a/acquire",
        Some(CI),
        Some(json!({"owner": "alice"})),
    )
    .await;
    json_with(ok, 200).await;
}

#[tokio::test]
async fn a_token_limited_to_a_prefix_gets_403_outside_it_and_lists_only_inside_it() {
    let app = TestApp::memory_with_auth(&tokens_file()).await;
    for key in ["jobs/etl", "other/x"] {
        let r = call(
            &app,
            Method::POST,
            &format!("/locks/{key}/acquire"),
            Some(OTHER),
            Some(json!({"owner": "o"})),
        )
        .await;
        json_with(r, 200).await;
    }
    let inside = call(&app, Method::GET, "/locks/jobs/etl", Some(CI), None).await;
    assert_eq!(json_with(inside, 200).await["owner"], "o");
    for (method, path) in [
        (Method::POST, "/locks/other/x/acquire"),
        (Method::POST, "/locks/other/x/release"),
        (Method::GET, "/locks/other/x"),
        (Method::GET, "/locks?prefix=other/"),
    ] {
        let r = call(&app, method, path, Some(CI), Some(json!({"token": "t"}))).await;
        problem(r, 403, "forbidden").await;
    }
    // A listing wider than the token's prefix is narrowed to it.
    let listed = json_with(call(&app, Method::GET, "/locks", Some(CI), None).await, 200).await;
    let keys: Vec<_> = listed["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["key"].clone())
        .collect();
    assert_eq!(keys, [json!("jobs/etl")]);
    // The other token sees both.
    let all = json_with(
        call(&app, Method::GET, "/locks", Some(OTHER), None).await,
        200,
    )
    .await;
    assert_eq!(all["locks"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn only_an_admin_token_may_break_a_lock_and_without_auth_nobody_may() {
    let app = TestApp::memory_with_auth(&tokens_file()).await;
    json_with(
        call(
            &app,
            Method::POST,
            "/locks/jobs/a/acquire",
            Some(CI),
            Some(json!({"owner": "alice"})),
        )
        .await,
        200,
    )
    .await;
    let before = app.stored("jobs/a").await;
    let r = call(&app, Method::POST, "/locks/jobs/a/break", Some(CI), None).await;
    problem(r, 403, "forbidden").await;
    assert_eq!(
        app.stored("jobs/a").await,
        before,
        "a refused break writes nothing"
    );

    let open = TestApp::memory().await;
    json_with(open.acquire("k", json!({"owner": "alice"})).await, 200).await;
    let before = open.stored("k").await;
    let r = open.request(Method::POST, "/locks/k/break", None).await;
    let p = problem(r, 403, "forbidden").await;
    assert!(p["detail"].as_str().unwrap().contains("no auth"), "{p}");
    assert_eq!(open.stored("k").await, before);
}

#[tokio::test]
async fn an_admin_break_frees_the_lock_refuses_the_old_holder_and_the_next_holder_is_fenced_higher()
{
    let app = TestApp::memory_with_auth(&tokens_file()).await;
    let alice = json_with(
        call(
            &app,
            Method::POST,
            "/locks/jobs/a/acquire",
            Some(CI),
            Some(json!({"owner": "alice", "ttl": 600})),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(alice["fencing_token"], 1);

    let broken = json_with(
        call(
            &app,
            Method::POST,
            "/locks/jobs/a/break",
            Some(ADMIN),
            Some(json!({"reason": "stuck job"})),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(broken["owner"], Value::Null);
    assert_eq!(broken["locked"], false);
    assert!(broken["release_time"].is_string(), "{broken}");
    assert!(broken.get("token").is_none(), "{broken}");
    assert_eq!(
        broken["fencing_token"], 2,
        "a break counts as a change of hands"
    );

    for action in ["renew", "release"] {
        let r = call(
            &app,
            Method::POST,
            &format!("/locks/jobs/a/{action}"),
            Some(CI),
            Some(json!({"token": alice["token"]})),
        )
        .await;
        problem(r, 409, "not-holder").await;
    }
    let bob = json_with(
        call(
            &app,
            Method::POST,
            "/locks/jobs/a/acquire",
            Some(CI),
            Some(json!({"owner": "bob"})),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(bob["fencing_token"], 3);
    assert!(bob["fencing_token"].as_u64() > alice["fencing_token"].as_u64());

    // Breaking a lock nobody holds changes nothing; a lock never taken is 404.
    json_with(
        call(
            &app,
            Method::POST,
            "/locks/jobs/a/release",
            Some(CI),
            Some(json!({"token": bob["token"]})),
        )
        .await,
        200,
    )
    .await;
    let before = app.stored("jobs/a").await;
    let again = json_with(
        call(&app, Method::POST, "/locks/jobs/a/break", Some(ADMIN), None).await,
        200,
    )
    .await;
    assert_eq!(again["fencing_token"], 3);
    assert_eq!(app.stored("jobs/a").await, before);
    let r = call(&app, Method::POST, "/locks/never/break", Some(ADMIN), None).await;
    problem(r, 404, "lock-not-found").await;
}
