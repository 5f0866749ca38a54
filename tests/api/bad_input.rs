//! Every malformed request gets a clear 4xx problem and leaves every stored byte as it was.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{json_with, problem, TestApp};

struct Case {
    what: &'static str,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: String,
    status: u16,
    kind: &'static str,
}

fn case(
    what: &'static str,
    method: Method,
    path: &str,
    body: &str,
    status: u16,
    kind: &'static str,
) -> Case {
    Case {
        what,
        method,
        path: path.to_owned(),
        content_type: Some("application/json"),
        body: body.to_owned(),
        status,
        kind,
    }
}

fn cases(token: &str) -> Vec<Case> {
    use Method as M;
    let long_key = "k".repeat(513);
    let renew_other = format!(r#"{{"token": "{token}"}}"#);
    let mut all = vec![
        case(
            "empty key",
            M::POST,
            "/locks//acquire",
            "{}",
            400,
            "invalid-input",
        ),
        case(
            "key too long",
            M::POST,
            &format!("/locks/{long_key}/acquire"),
            "{}",
            400,
            "invalid-input",
        ),
        case(
            "control character",
            M::POST,
            "/locks/a%01b/acquire",
            "{}",
            400,
            "invalid-input",
        ),
        case(
            "NUL in key",
            M::POST,
            "/locks/a%00b/acquire",
            "{}",
            400,
            "invalid-input",
        ),
        case(
            "empty segment",
            M::POST,
            "/locks/a//victim/acquire",
            "{}",
            400,
            "invalid-input",
        ),
        case(
            "encoded double slash",
            M::POST,
            "/locks/a%2F%2Fvictim/acquire",
            "{}",
            400,
            "invalid-input",
        ),
        case(
            "trailing slash",
            M::POST,
            "/locks/victim//acquire",
            "{}",
            400,
            "invalid-input",
        ),
        case(
            "not UTF-8",
            M::POST,
            "/locks/%FF/acquire",
            "{}",
            400,
            "invalid-input",
        ),
        case(
            "malformed JSON",
            M::POST,
            "/locks/victim/acquire",
            "{\"owner\":",
            400,
            "malformed-body",
        ),
        case(
            "JSON that is not an object",
            M::POST,
            "/locks/victim/acquire",
            "[1,2]",
            400,
            "malformed-body",
        ),
        case(
            "unknown field",
            M::POST,
            "/locks/victim/acquire",
            r#"{"owner":"x","force":true}"#,
            400,
            "malformed-body",
        ),
        case(
            "ttl as a string",
            M::POST,
            "/locks/victim/acquire",
            r#"{"ttl":"60"}"#,
            400,
            "malformed-body",
        ),
        case(
            "ttl fractional",
            M::POST,
            "/locks/victim/acquire",
            r#"{"ttl":1.5}"#,
            400,
            "malformed-body",
        ),
        case(
            "ttl zero",
            M::POST,
            "/locks/victim/acquire",
            r#"{"ttl":0}"#,
            400,
            "invalid-input",
        ),
        case(
            "ttl negative",
            M::POST,
            "/locks/victim/acquire",
            r#"{"ttl":-5}"#,
            400,
            "invalid-input",
        ),
        case(
            "ttl over the maximum",
            M::POST,
            "/locks/victim/acquire",
            r#"{"ttl":3601}"#,
            400,
            "invalid-input",
        ),
        case(
            "ttl huge",
            M::POST,
            "/locks/victim/acquire",
            r#"{"ttl":1e300}"#,
            400,
            "malformed-body",
        ),
        case(
            "wait negative",
            M::POST,
            "/locks/victim/acquire",
            r#"{"wait":-1}"#,
            400,
            "invalid-input",
        ),
        case(
            "wait over the maximum",
            M::POST,
            "/locks/victim/acquire",
            r#"{"wait":61}"#,
            400,
            "invalid-input",
        ),
        case(
            "wait huge",
            M::POST,
            "/locks/victim/acquire",
            r#"{"wait":1e300}"#,
            400,
            "invalid-input",
        ),
        case(
            "wait as a string",
            M::POST,
            "/locks/victim/acquire",
            r#"{"wait":"5"}"#,
            400,
            "malformed-body",
        ),
        case(
            "token a number",
            M::POST,
            "/locks/victim/release",
            r#"{"token":12345}"#,
            400,
            "malformed-body",
        ),
        case(
            "owner empty",
            M::POST,
            "/locks/victim/acquire",
            r#"{"owner":""}"#,
            400,
            "invalid-input",
        ),
        case(
            "owner with a newline",
            M::POST,
            "/locks/victim/acquire",
            r#"{"owner":"a\nb"}"#,
            400,
            "invalid-input",
        ),
        case(
            "owner a number",
            M::POST,
            "/locks/victim/acquire",
            r#"{"owner":7}"#,
            400,
            "malformed-body",
        ),
        case(
            "renew without a body",
            M::POST,
            "/locks/victim/renew",
            "",
            400,
            "malformed-body",
        ),
        case(
            "renew without a token",
            M::POST,
            "/locks/victim/renew",
            r#"{"ttl":5}"#,
            400,
            "malformed-body",
        ),
        case(
            "renew ttl zero",
            M::POST,
            "/locks/victim/renew",
            &renew_other.replace('}', r#","ttl":0}"#),
            400,
            "invalid-input",
        ),
        case(
            "release without a token",
            M::POST,
            "/locks/victim/release",
            "{}",
            400,
            "malformed-body",
        ),
        case(
            "release with a wrong token",
            M::POST,
            "/locks/victim/release",
            r#"{"token":"nope"}"#,
            409,
            "not-holder",
        ),
        case(
            "renew with another key's token",
            M::POST,
            "/locks/victim/renew",
            r#"{"token":"OTHER"}"#,
            409,
            "not-holder",
        ),
        case(
            "unknown action",
            M::POST,
            "/locks/victim/explode",
            "{}",
            404,
            "not-found",
        ),
        case(
            "no action",
            M::POST,
            "/locks/victim",
            "{}",
            404,
            "not-found",
        ),
        case(
            "unknown route",
            M::GET,
            "/nothing-here",
            "",
            404,
            "not-found",
        ),
        case(
            "PUT on a lock",
            M::PUT,
            "/locks/victim",
            "{}",
            405,
            "method-not-allowed",
        ),
        case(
            "DELETE on a lock",
            M::DELETE,
            "/locks/victim",
            "",
            405,
            "method-not-allowed",
        ),
        case(
            "POST on the list",
            M::POST,
            "/locks",
            "{}",
            405,
            "method-not-allowed",
        ),
        case(
            "unknown query parameter",
            M::GET,
            "/locks/victim?force=1",
            "",
            400,
            "invalid-input",
        ),
        case(
            "list prefix with a control character",
            M::GET,
            "/locks?prefix=%01",
            "",
            400,
            "invalid-input",
        ),
        case(
            "bucket not allowed",
            M::POST,
            "/buckets/elsewhere/locks/victim/acquire",
            "{}",
            403,
            "bucket-not-allowed",
        ),
        case(
            "body over the limit",
            M::POST,
            "/locks/victim/acquire",
            &format!(r#"{{"owner":"{}"}}"#, "o".repeat(s3lock::http::BODY_LIMIT)),
            413,
            "body-too-large",
        ),
    ];
    all.push(Case {
        content_type: Some("text/plain"),
        ..case(
            "text/plain body",
            M::POST,
            "/locks/victim/acquire",
            r#"{"owner":"x"}"#,
            415,
            "unsupported-media-type",
        )
    });
    all.push(Case {
        content_type: Some("application/x-www-form-urlencoded"),
        ..case(
            "form body",
            M::POST,
            "/locks/victim/acquire",
            "owner=x",
            415,
            "unsupported-media-type",
        )
    });
    all
}

#[tokio::test]
async fn every_malformed_request_gets_a_4xx_problem_and_changes_nothing_stored() {
    let app = TestApp::memory().await;
    // Something to protect: a held lock, and another key whose token a case will try to misuse.
    json_with(
        app.acquire("victim", json!({"owner": "alice", "ttl": 600}))
            .await,
        200,
    )
    .await;
    let other = json_with(
        app.acquire("other", json!({"owner": "carol", "ttl": 600}))
            .await,
        200,
    )
    .await;
    let other_token = other["token"].as_str().unwrap().to_owned();
    let before = app.snapshot().await;
    assert_eq!(before.len(), 2);

    let all = cases(&other_token);
    let count = all.len();
    for c in all {
        let body = c.body.replace("OTHER", &other_token);
        let resp = app
            .raw(c.method.clone(), &c.path, c.content_type, body)
            .await;
        let got = resp.status().as_u16();
        assert!((400..500).contains(&got), "{}: got {got}", c.what);
        assert_eq!(got, c.status, "{}", c.what);
        let p = problem(resp, c.status, c.kind).await;
        assert!(
            p["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{}: {p}",
            c.what
        );
        assert_eq!(app.snapshot().await, before, "{} changed the store", c.what);
    }
    assert!(count >= 38, "the matrix shrank to {count} cases");
}

/// Sends a request line exactly as written: HTTP clients normalise `.`/`..` segments (also
/// `%2E%2E`) away before sending, but a raw client (`curl --path-as-is`) does not.
async fn send_path_as_is(app: &TestApp, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

#[tokio::test]
async fn dot_segments_sent_as_is_are_refused_and_change_nothing() {
    let app = TestApp::memory().await;
    json_with(app.acquire("victim", json!({"owner": "alice"})).await, 200).await;
    let before = app.snapshot().await;
    for path in [
        "/locks/victim/../acquire",
        "/locks/victim/%2E%2E/acquire",
        "/locks/./victim/acquire",
        "/locks/../locks/victim/acquire",
        "/locks/%2e/acquire",
    ] {
        let (status, content_type, body) = send_path_as_is(&app, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(content_type, "application/problem+json", "{path}");
        assert!(
            body.contains("urn:s3lock:problem:invalid-input"),
            "{path}: {body}"
        );
        assert_eq!(app.snapshot().await, before, "{path} changed the store");
    }
}

#[tokio::test]
async fn a_405_says_which_methods_the_route_takes() {
    let app = TestApp::memory().await;
    let resp = app.raw(Method::PUT, "/locks/k/acquire", None, "").await;
    let allow = resp.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    problem(resp, 405, "method-not-allowed").await;
    // With no action at the end, POST means nothing (404), so it is not offered.
    let resp = app.raw(Method::PUT, "/locks/k", None, "").await;
    assert_eq!(resp.headers()["allow"], "GET,HEAD");
    problem(resp, 405, "method-not-allowed").await;
}
