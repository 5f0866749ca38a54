//! Auth, admin break, metrics, readiness and the OpenAPI document, through the real app.

use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as ChronoDuration;
use reqwest::Method;
use s3lock::clock::ManualClock;
use s3lock::lock::Engine;
use s3lock::metrics::Metrics;
use s3lock::store::memory::MemoryStore;
use s3lock::store::s3::{S3Settings, S3Store};
use s3lock::store::Store;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::helpers::{engine_config, json_with, problem, support, TestApp};

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

async fn call(
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

fn metric_line(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
        .map(|l| l[prefix.len()..].trim().parse().unwrap())
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_every_lock_outcome() {
    let clock = Arc::new(ManualClock::new(
        chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .into(),
    ));
    let app = TestApp::spawn(
        Arc::new(MemoryStore::new()),
        clock.clone(),
        engine_config("default", &[]),
    )
    .await;
    let alice = json_with(
        app.acquire("jobs/secret-name", json!({"owner": "alice", "ttl": 5}))
            .await,
        200,
    )
    .await;
    problem(
        app.acquire("jobs/secret-name", json!({"owner": "bob"}))
            .await,
        409,
        "lock-held",
    )
    .await;
    json_with(
        app.renew("jobs/secret-name", json!({"token": alice["token"]}))
            .await,
        200,
    )
    .await;
    problem(
        app.renew("jobs/secret-name", json!({"token": "wrong"}))
            .await,
        409,
        "not-holder",
    )
    .await;
    json_with(
        app.release("jobs/secret-name", json!({"token": alice["token"]}))
            .await,
        200,
    )
    .await;
    // carol takes it, lets the lease run out unreleased, and dave takes it over.
    json_with(
        app.acquire("other", json!({"owner": "carol", "ttl": 5}))
            .await,
        200,
    )
    .await;
    clock.advance(ChronoDuration::seconds(6));
    json_with(app.acquire("other", json!({"owner": "dave"})).await, 200).await;

    let resp = app.request(Method::GET, "/metrics", None).await;
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    for (series, want) in [
        (
            r#"s3lock_http_requests_total{route="/locks/{key}/acquire",method="POST",status="200"}"#,
            3.0,
        ),
        (
            r#"s3lock_http_requests_total{route="/locks/{key}/acquire",method="POST",status="409"}"#,
            1.0,
        ),
        (
            r#"s3lock_http_requests_total{route="/locks/{key}/renew",method="POST",status="409"}"#,
            1.0,
        ),
        (
            r#"s3lock_http_request_duration_seconds_count{route="/locks/{key}/acquire",method="POST"}"#,
            4.0,
        ),
        ("s3lock_grants_total", 3.0),
        ("s3lock_conflicts_total", 1.0),
        ("s3lock_expiry_takeovers_total", 1.0),
        ("s3lock_renewals_total", 1.0),
        (r#"s3lock_renew_failures_total{reason="not_holder"}"#, 1.0),
        ("s3lock_releases_total", 1.0),
    ] {
        assert_eq!(
            metric_line(&text, series),
            Some(want),
            "{series} in:\n{text}"
        );
    }
    assert!(
        !text.contains("secret-name"),
        "a raw key leaked into the metrics:\n{text}"
    );
}

#[tokio::test]
async fn the_waiters_gauge_counts_a_blocked_acquire_while_it_waits() {
    let app = TestApp::memory().await;
    let alice = json_with(app.acquire("k", json!({"owner": "alice"})).await, 200).await;
    let waiting = {
        let (http, base) = (app.http.clone(), app.base.clone());
        tokio::spawn(async move {
            http.post(format!("{base}/locks/k/acquire"))
                .json(&json!({"owner": "bob", "wait": 30}))
                .send()
                .await
                .unwrap()
        })
    };
    // Poll the gauge (bounded) until bob's acquire is seen waiting.
    let mut seen = None;
    for _ in 0..200 {
        let text = app
            .request(Method::GET, "/metrics", None)
            .await
            .text()
            .await
            .unwrap();
        seen = metric_line(&text, "s3lock_waiters");
        if seen == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, Some(1.0));
    json_with(
        app.release("k", json!({"token": alice["token"]})).await,
        200,
    )
    .await;
    json_with(waiting.await.unwrap(), 200).await;
    let text = app
        .request(Method::GET, "/metrics", None)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(metric_line(&text, "s3lock_waiters"), Some(0.0), "{text}");
}

#[tokio::test]
async fn readyz_is_503_until_the_start_up_store_check_has_passed() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = Arc::new(Engine::new(
        store.clone(),
        Arc::new(s3lock::clock::SystemClock),
        engine_config("default", &[]),
    ));
    let app = TestApp::spawn_engine(store, engine.clone(), None).await;
    let r = app.request(Method::GET, "/readyz", None).await;
    assert_eq!(r.headers()["retry-after"], "1");
    problem(r, 503, "not-ready").await;
    json_with(app.request(Method::GET, "/healthz", None).await, 200).await;
    engine.mark_store_checked();
    let ready = json_with(app.request(Method::GET, "/readyz", None).await, 200).await;
    assert_eq!(ready["status"], "ready");
}

/// A TCP relay to the S3 server that a test can cut, to make the store go away and come back.
struct Relay {
    port: u16,
    target: String,
    task: Option<JoinHandle<()>>,
}

impl Relay {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut relay = Self {
            port,
            target,
            task: None,
        };
        relay.serve(listener);
        relay
    }

    fn serve(&mut self, listener: TcpListener) {
        let target = self.target.clone();
        self.task = Some(tokio::spawn(async move {
            // Dropping the set (when this task is aborted) cuts every open connection too.
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        }));
    }

    async fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    async fn restore(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.serve(listener);
    }
}

#[tokio::test]
async fn readyz_follows_the_s3_store_going_away_and_coming_back() {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let target = support::s3_endpoint()
        .trim_start_matches("http://")
        .to_owned();
    let mut relay = Relay::start(target).await;
    let metrics = Metrics::new();
    let store = S3Store::connect(&S3Settings {
        endpoint: Some(format!("http://127.0.0.1:{}", relay.port)),
        path_style: true,
        operation_timeout: Duration::from_secs(3),
    })
    .await
    .with_metrics(metrics.clone());
    let clock = store.clock();
    let store: Arc<dyn Store> = Arc::new(store);
    let engine =
        Engine::new(store.clone(), clock, engine_config(&bucket, &[])).with_metrics(metrics);
    engine.mark_store_checked();
    let app = TestApp::spawn_engine(store, Arc::new(engine), None).await;

    json_with(app.request(Method::GET, "/readyz", None).await, 200).await;
    json_with(app.acquire("k", json!({"owner": "alice"})).await, 200).await;

    relay.cut().await;
    // The first request after the outage fails, and readiness no longer trusts the last answer.
    problem(app.status("k").await, 503, "store-unavailable").await;
    let r = app.request(Method::GET, "/readyz", None).await;
    let p = problem(r, 503, "not-ready").await;
    assert!(
        !p["detail"].as_str().unwrap().contains("127.0.0.1"),
        "no internals leak: {p}"
    );

    relay.restore().await;
    json_with(app.request(Method::GET, "/readyz", None).await, 200).await;

    let text = app
        .request(Method::GET, "/metrics", None)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric_line(&text, r#"s3lock_s3_requests_total{op="put_if_absent"}"#),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric_line(
            &text,
            r#"s3lock_s3_errors_total{op="get",kind="unavailable"}"#
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
}

#[tokio::test]
async fn the_openapi_document_is_3_1_and_names_every_route_and_the_problem_schema() {
    let app = TestApp::memory().await;
    let doc = json_with(app.request(Method::GET, "/openapi.json", None).await, 200).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let mut paths: Vec<_> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    paths.sort();
    let mut want = vec!["/healthz", "/readyz", "/metrics", "/openapi.json"];
    for base in ["", "/buckets/{bucket}"] {
        for p in [
            "/locks",
            "/locks/{key}",
            "/locks/{key}/acquire",
            "/locks/{key}/renew",
            "/locks/{key}/release",
            "/locks/{key}/break",
        ] {
            want.push(Box::leak(format!("{base}{p}").into_boxed_str()));
        }
    }
    want.sort();
    assert_eq!(paths, want);
    let problem = &doc["components"]["schemas"]["Problem"];
    for field in ["type", "title", "status", "detail"] {
        assert!(
            problem["required"]
                .as_array()
                .unwrap()
                .contains(&json!(field)),
            "{problem}"
        );
    }
    // The server's own limits are in the document.
    assert_eq!(
        doc["components"]["schemas"]["AcquireBody"]["properties"]["ttl"]["maximum"],
        3600
    );
    let conflict = &doc["paths"]["/locks/{key}/acquire"]["post"]["responses"]["409"]["content"];
    assert!(
        conflict.get("application/problem+json").is_some(),
        "{conflict}"
    );
}
