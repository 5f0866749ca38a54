//! Attacks on a held lock by someone who does not hold it (issue 8).
//!
//! alice holds `payroll` (in the default bucket and in the other bucket). Every test here is
//! mallory trying to act on it with only what a non-holder can see or make up: owner names,
//! fencing tokens, keys, 409 bodies, status, list, metrics, `Retry-After`, tokens of other locks,
//! path tricks and `Authorization` variants. Each attempt must be refused with its problem type,
//! no refused answer may carry a holder token, and afterwards every stored byte and alice's hold
//! (owner, fencing token, expiry) must be exactly as before.

use std::collections::BTreeSet;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{Method, Response};
use s3lock::clock::{Clock, SystemClock};
use s3lock::peers::{wall_clock_ms, Hint, HintKey, SIGNATURE_HEADER, WAKE_PATH};
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{json_with, TestApp, OTHER_BUCKET, PREFIX};

const KEY: &str = "payroll";

/// alice's application: every key, every allowed bucket.
const ALICE_AUTH: &str = "alice-app-auth-0123456789abcdef";
/// mallory's own auth token: keys under `jobs/` only, default bucket only.
const MALLORY_AUTH: &str = "mallory-auth-0123456789abcdef";
/// Every key, but (no `bucket=` word) the default bucket only.
const PLAIN_AUTH: &str = "plain-auth-0123456789abcdef";
/// Every key, but only in the other bucket.
const ELSEWHERE_AUTH: &str = "elsewhere-auth-0123456789abcdef";
/// An admin on every bucket.
const ADMIN_AUTH: &str = "admin-auth-0123456789abcdef";

fn tokens_file() -> String {
    format!(
        "# the attack tests' auth tokens\n\
         {ALICE_AUTH} name=alice-app bucket=*\n\
         {MALLORY_AUTH} name=mallory prefix=jobs/\n\
         {PLAIN_AUTH} name=plain\n\
         {ELSEWHERE_AUTH} name=elsewhere bucket={OTHER_BUCKET}\n\
         {ADMIN_AUTH} name=ops admin bucket=*\n"
    )
}

/// An answer as the attacker saw it.
struct Answer {
    status: u16,
    content_type: Option<String>,
    text: String,
}

impl Answer {
    async fn of(resp: Response) -> Self {
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = resp.text().await.unwrap();
        Self {
            status,
            content_type,
            text,
        }
    }
}

/// alice holding `payroll` in both buckets, and what the store held right after.
struct Scene {
    app: TestApp,
    /// The auth token alice (and the checks) use on a server with auth.
    auth: Option<&'static str>,
    /// alice's grant in the default bucket.
    alice: Value,
    /// alice's grant of the same key in the other bucket.
    alice_elsewhere: Value,
    before: Vec<(String, String, Bytes)>,
}

impl Scene {
    /// A server without auth.
    async fn open() -> Self {
        Self::held(TestApp::memory().await, None).await
    }

    /// A server that takes peers' wake-up hints signed with `key`.
    async fn with_hints(key: HintKey) -> Self {
        Self::held(TestApp::memory_with_hints(key).await, None).await
    }

    /// A server with auth tokens scoped by prefix and bucket.
    async fn with_auth() -> Self {
        Self::held(
            TestApp::memory_with_auth(&tokens_file()).await,
            Some(ALICE_AUTH),
        )
        .await
    }

    async fn held(app: TestApp, auth: Option<&'static str>) -> Self {
        let grant = |path: String| {
            let req = call(
                &app,
                Method::POST,
                path,
                auth,
                Some(json!({"owner": "alice", "ttl": 600})),
            );
            async move { json_with(req.await, 200).await }
        };
        let alice = grant(format!("/locks/{KEY}/acquire")).await;
        let alice_elsewhere = grant(format!("/buckets/{OTHER_BUCKET}/locks/{KEY}/acquire")).await;
        assert_ne!(alice["token"], alice_elsewhere["token"]);
        let mut scene = Self {
            app,
            auth,
            alice,
            alice_elsewhere,
            before: Vec::new(),
        };
        scene.snap().await;
        scene
    }

    /// Takes the "before" picture again (after a test adds locks of its own).
    async fn snap(&mut self) {
        self.before = everything(&self.app).await;
    }

    fn token(&self) -> &str {
        self.alice["token"].as_str().unwrap()
    }

    fn holder_tokens(&self) -> [&str; 2] {
        [
            self.token(),
            self.alice_elsewhere["token"].as_str().unwrap(),
        ]
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        Answer::of(call(&self.app, method, path.to_owned(), bearer, body).await).await
    }

    /// mallory's POST, with the given auth token (none on an open server).
    async fn post(&self, path: &str, bearer: Option<&str>, body: Value) -> Answer {
        self.send(Method::POST, path, bearer, Some(body)).await
    }

    /// A request with these exact `Authorization` header values (several, or an empty one).
    async fn with_authorization(&self, path: &str, values: &[HeaderValue], body: Value) -> Answer {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(AUTHORIZATION, v.clone());
        }
        let resp = self
            .app
            .http
            .post(format!("{}{path}", self.app.base))
            .headers(headers)
            .json(&body)
            .send()
            .await
            .unwrap();
        Answer::of(resp).await
    }

    /// A request written byte for byte on a fresh connection, so that `..` and `%2E%2E` reach
    /// the server as sent (an HTTP client library would resolve them first).
    async fn raw(&self, method: &str, target: &str, bearer: Option<&str>, body: &str) -> Answer {
        let host = self.app.base.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
        let auth = bearer
            .map(|b| format!("Authorization: Bearer {b}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        let got = String::from_utf8(got).unwrap();
        let (head, body) = got.split_once("\r\n\r\n").expect("an HTTP answer");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let header = |name: &str| {
            head.lines().skip(1).find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let chunked =
            header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        Answer {
            status,
            content_type: header("content-type"),
            text: if chunked {
                dechunk(body)
            } else {
                body.to_owned()
            },
        }
    }

    /// Asserts a refusal: this status and problem type, and no holder token or auth token of
    /// alice's anywhere in the answer. Returns the problem.
    #[track_caller]
    fn refused(&self, got: &Answer, status: u16, kind: &str) -> Value {
        assert_eq!(got.status, status, "{}", got.text);
        assert_eq!(
            got.content_type.as_deref(),
            Some("application/problem+json"),
            "{}",
            got.text
        );
        let problem: Value = serde_json::from_str(&got.text).unwrap();
        assert_eq!(
            problem["type"],
            format!("urn:s3lock:problem:{kind}"),
            "{problem}"
        );
        assert!(
            problem.get("token").is_none(),
            "a refusal carries a token: {problem}"
        );
        for secret in self
            .holder_tokens()
            .into_iter()
            .chain([ALICE_AUTH, ADMIN_AUTH])
        {
            assert!(
                !got.text.contains(secret),
                "a refused answer shows a secret: {}",
                got.text
            );
        }
        problem
    }

    /// Asserts that every stored byte, in both buckets, is as it was, and that alice still
    /// holds `payroll` with the same fencing token until the same time.
    /// A renew and a release of the lock with `token` are both refused: not the holder's.
    async fn not_the_holders(&self, token: impl serde::Serialize) {
        for path in [renew_path(), release_path()] {
            let r = self.post(&path, None, json!({ "token": token })).await;
            self.refused(&r, 409, "not-holder");
        }
    }

    async fn unchanged(&self) {
        assert_eq!(
            everything(&self.app).await,
            self.before,
            "a refused attempt changed the store"
        );
        for (path, grant) in [
            (format!("/locks/{KEY}"), &self.alice),
            (
                format!("/buckets/{OTHER_BUCKET}/locks/{KEY}"),
                &self.alice_elsewhere,
            ),
        ] {
            let resp = call(&self.app, Method::GET, path, self.auth, None).await;
            let now = json_with(resp, 200).await;
            assert_eq!(now["owner"], "alice", "{now}");
            assert_eq!(now["locked"], true, "{now}");
            assert_eq!(now["fencing_token"], grant["fencing_token"], "{now}");
            assert_eq!(now["expires_at"], grant["expires_at"], "{now}");
            assert!(
                now.get("token").is_none(),
                "a status shows the token: {now}"
            );
        }
    }
}

async fn call(
    app: &TestApp,
    method: Method,
    path: String,
    bearer: Option<&str>,
    body: Option<Value>,
) -> Response {
    let mut req = app.http.request(method, format!("{}{path}", app.base));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.expect("the server answers")
}

/// Every object of both buckets, with its bytes.
async fn everything(app: &TestApp) -> Vec<(String, String, Bytes)> {
    let mut all = Vec::new();
    for bucket in [app.bucket.as_str(), OTHER_BUCKET] {
        for key in app.store.list(bucket, "").await.unwrap() {
            let body = app.store.get(bucket, &key).await.unwrap().unwrap().body;
            all.push((bucket.to_owned(), key, body));
        }
    }
    all
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// Every string and number in a JSON value, as text.
fn leaves(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::String(s) => {
            out.insert(s.clone());
        }
        Value::Number(n) => {
            out.insert(n.to_string());
        }
        Value::Array(a) => a.iter().for_each(|x| leaves(x, out)),
        Value::Object(o) => o.values().for_each(|x| leaves(x, out)),
        Value::Bool(_) | Value::Null => {}
    }
}

fn acquire_path() -> String {
    format!("/locks/{KEY}/acquire")
}

fn renew_path() -> String {
    format!("/locks/{KEY}/renew")
}

fn release_path() -> String {
    format!("/locks/{KEY}/release")
}

// ---- Owner names: public, so never a credential ---------------------------------------------

#[tokio::test]
async fn the_owner_name_read_from_a_409_neither_takes_over_nor_releases_the_lock() {
    let scene = Scene::open().await;
    // 2. mallory is refused, and the 409 tells her who holds it.
    let seen = scene
        .post(&acquire_path(), None, json!({"owner": "mallory"}))
        .await;
    let held = scene.refused(&seen, 409, "lock-held");
    assert_eq!(held["owner"], "alice");
    // 3. mallory acquires as alice: refused as anyone else is, with no token.
    let posing = scene
        .post(&acquire_path(), None, json!({"owner": "alice"}))
        .await;
    let p = scene.refused(&posing, 409, "lock-held");
    assert_eq!(p["owner"], "alice");
    // 4. mallory cannot release it with anything she has.
    for guess in ["alice", "1", held["expires_at"].as_str().unwrap()] {
        let r = scene
            .post(&release_path(), None, json!({"token": guess}))
            .await;
        scene.refused(&r, 409, "not-holder");
    }
    scene.unchanged().await;
}

#[tokio::test]
async fn the_holder_refreshes_with_its_token_and_keeps_its_token_and_fencing_token() {
    let scene = Scene::open().await;
    let again = json_with(
        call(
            &scene.app,
            Method::POST,
            acquire_path(),
            None,
            Some(json!({"owner": "alice", "token": scene.token(), "ttl": 900})),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(again["owner"], "alice");
    assert_eq!(again["token"], scene.alice["token"]);
    assert_eq!(again["fencing_token"], scene.alice["fencing_token"]);
    assert_eq!(again["expire"], 900);
    let stored = scene.app.stored(KEY).await.unwrap();
    let doc = s3lock::lock::LockDocument::from_bytes(&stored).unwrap();
    assert_eq!(doc.token.as_ref().map(|t| t.expose()), Some(scene.token()));
    assert_eq!(
        Some(doc.fencing_token),
        scene.alice["fencing_token"].as_u64()
    );
    assert_eq!(doc.expire, 900, "a refresh writes the new lease");
    // The refreshed token still renews and releases.
    json_with(
        scene.app.renew(KEY, json!({"token": scene.token()})).await,
        200,
    )
    .await;
    json_with(
        scene
            .app
            .release(KEY, json!({"token": scene.token()}))
            .await,
        200,
    )
    .await;
}

#[tokio::test]
async fn the_holders_owner_name_with_a_wrong_null_or_empty_token_is_refused_without_a_token() {
    let scene = Scene::open().await;
    for token in [
        json!(uuid::Uuid::new_v4().to_string()),
        json!(null),
        json!(""),
        json!(scene.token().to_uppercase()),
    ] {
        let r = scene
            .post(
                &acquire_path(),
                None,
                json!({"owner": "alice", "token": token}),
            )
            .await;
        scene.refused(&r, 409, "lock-held");
    }
    scene.unchanged().await;
}

#[tokio::test]
async fn waiting_under_the_holders_owner_name_ends_in_409_without_a_token() {
    let scene = Scene::open().await;
    let r = scene
        .post(&acquire_path(), None, json!({"owner": "alice", "wait": 1}))
        .await;
    scene.refused(&r, 409, "lock-held");
    scene.unchanged().await;
}

#[tokio::test]
async fn look_alike_owner_names_are_refused_and_get_no_token() {
    let scene = Scene::open().await;
    // Other owners (different bytes that may look alike): 409.
    for owner in [
        "Alice",
        "ALICE",
        "alice ",
        " alice",
        "ａｌｉｃｅ",
        "\u{430}lice",
    ] {
        let r = scene
            .post(&acquire_path(), None, json!({"owner": owner}))
            .await;
        scene.refused(&r, 409, "lock-held");
    }
    // Invisible characters and a decomposed form: refused as input.
    for owner in ["alice\u{200b}", "\u{feff}alice", "alic\u{65}\u{301}"] {
        let r = scene
            .post(&acquire_path(), None, json!({"owner": owner}))
            .await;
        let p = scene.refused(&r, 400, "invalid-input");
        assert_eq!(p["field"], "owner", "{p}");
    }
    scene.unchanged().await;
}

#[tokio::test]
async fn a_release_or_renew_naming_the_owner_instead_of_a_token_is_malformed() {
    let scene = Scene::open().await;
    for (path, body) in [
        (release_path(), json!({"owner": "alice"})),
        (release_path(), json!({"owner": "alice", "token": "x"})),
        (renew_path(), json!({"owner": "alice"})),
        (
            renew_path(),
            json!({"owner": "alice", "token": "x", "ttl": 60}),
        ),
    ] {
        let r = scene.post(&path, None, body).await;
        scene.refused(&r, 400, "malformed-body");
    }
    scene.unchanged().await;
}

#[tokio::test]
async fn a_lock_written_by_the_old_module_is_not_taken_over_by_its_owner_name() {
    let mut scene = Scene::open().await;
    let lock_time = s3lock::lock::document::format_seed_time(&SystemClock.now().latest);
    let seed = format!(
        r#"{{"expire": 900, "lock_time": "{lock_time}", "release_time": null, "owner": "bob"}}"#
    );
    scene
        .app
        .store
        .put_if_absent(
            "default",
            &format!("{PREFIX}legacy"),
            Bytes::from(seed.clone()),
        )
        .await
        .unwrap();
    scene.snap().await;
    for body in [
        json!({"owner": "bob"}),
        json!({"owner": "bob", "ttl": 1}),
        json!({"owner": "bob", "token": "bob"}),
        json!({"owner": "bob", "token": uuid::Uuid::new_v4().to_string()}),
        json!({"owner": "mallory"}),
    ] {
        let r = scene.post("/locks/legacy/acquire", None, body).await;
        let p = scene.refused(&r, 409, "lock-held");
        assert_eq!(p["owner"], "bob", "{p}");
    }
    for action in ["renew", "release"] {
        let r = scene
            .post(
                &format!("/locks/legacy/{action}"),
                None,
                json!({"token": "bob"}),
            )
            .await;
        scene.refused(&r, 409, "not-holder");
    }
    assert_eq!(scene.app.stored("legacy").await.unwrap(), seed.as_bytes());
    scene.unchanged().await;
}

// ---- What a non-holder can read is never the holder token -----------------------------------

#[tokio::test]
async fn the_fencing_token_is_not_a_holder_token() {
    let scene = Scene::open().await;
    let fence = scene.alice["fencing_token"].to_string();
    for (path, body, status, kind) in [
        (renew_path(), json!({"token": fence}), 409, "not-holder"),
        (release_path(), json!({"token": fence}), 409, "not-holder"),
        (
            acquire_path(),
            json!({"owner": "alice", "token": fence}),
            409,
            "lock-held",
        ),
    ] {
        let r = scene.post(&path, None, body).await;
        scene.refused(&r, status, kind);
    }
    scene.unchanged().await;
}

#[tokio::test]
async fn nothing_a_non_holder_can_read_works_as_the_holder_token() {
    let scene = Scene::open().await;
    let mut seen = BTreeSet::new();
    // The 409s (as another owner, and as alice), with their Retry-After and request ids.
    for owner in ["mallory", "alice"] {
        let resp = call(
            &scene.app,
            Method::POST,
            acquire_path(),
            None,
            Some(json!({"owner": owner})),
        )
        .await;
        for h in ["retry-after", "x-request-id"] {
            if let Some(v) = resp.headers().get(h) {
                seen.insert(v.to_str().unwrap().to_owned());
            }
        }
        let answer = Answer::of(resp).await;
        leaves(&scene.refused(&answer, 409, "lock-held"), &mut seen);
    }
    // Status (also as alice's `is_locked`), a watch, the listings, in both buckets.
    for path in [
        format!("/locks/{KEY}"),
        format!("/locks/{KEY}?owner=alice"),
        // A watch answers at once when the index it was given is not the lock's.
        format!("/locks/{KEY}?index=0&wait=1"),
        "/locks".to_owned(),
        format!("/locks?prefix={KEY}"),
        format!("/buckets/{OTHER_BUCKET}/locks/{KEY}"),
        format!("/buckets/{OTHER_BUCKET}/locks"),
    ] {
        let view = json_with(call(&scene.app, Method::GET, path, None, None).await, 200).await;
        leaves(&view, &mut seen);
    }
    // The metrics, word by word.
    let metrics = call(&scene.app, Method::GET, "/metrics".into(), None, None)
        .await
        .text()
        .await
        .unwrap();
    for word in metrics.split(|c: char| c.is_whitespace() || "{}=,\"".contains(c)) {
        seen.insert(word.to_owned());
    }
    seen.remove("");
    for secret in scene.holder_tokens() {
        assert!(
            !seen.contains(secret),
            "a non-holder can read the holder token"
        );
        assert!(
            !metrics.contains(secret),
            "the metrics show the holder token"
        );
    }
    assert!(seen.len() > 20, "too little was collected: {seen:?}");
    for guess in &seen {
        scene.not_the_holders(guess).await;
        let r = scene
            .post(
                &acquire_path(),
                None,
                json!({"owner": "alice", "token": guess}),
            )
            .await;
        scene.refused(&r, 409, "lock-held");
    }
    scene.unchanged().await;
}

// ---- Tokens of other locks --------------------------------------------------------------------

#[tokio::test]
async fn a_holder_token_of_another_key_does_not_act_on_this_one() {
    let mut scene = Scene::open().await;
    let own = json_with(
        scene
            .app
            .acquire("payroll-2", json!({"owner": "mallory"}))
            .await,
        200,
    )
    .await;
    scene.snap().await;
    let token = own["token"].clone();
    scene.not_the_holders(&token).await;
    for owner in ["alice", "mallory"] {
        let r = scene
            .post(
                &acquire_path(),
                None,
                json!({"owner": owner, "token": token}),
            )
            .await;
        scene.refused(&r, 409, "lock-held");
    }
    scene.unchanged().await;
}

#[tokio::test]
async fn a_holder_token_of_the_same_key_in_another_bucket_does_not_act_on_this_one() {
    let mut scene = Scene::open().await;
    // mallory holds `payroll-x` in the other bucket. alice's token of one bucket's `payroll` is
    // also tried on the other's: a token proves one grant, of one key in one bucket.
    let own = json_with(
        call(
            &scene.app,
            Method::POST,
            format!("/buckets/{OTHER_BUCKET}/locks/payroll-x/acquire"),
            None,
            Some(json!({"owner": "mallory"})),
        )
        .await,
        200,
    )
    .await;
    scene.snap().await;
    let here = format!("/locks/{KEY}");
    let there = format!("/buckets/{OTHER_BUCKET}/locks/{KEY}");
    for (base, token) in [
        (&here, &scene.alice_elsewhere["token"]),
        (&there, &scene.alice["token"]),
        (&here, &own["token"]),
        (&there, &own["token"]),
    ] {
        for action in ["renew", "release"] {
            let r = scene
                .post(&format!("{base}/{action}"), None, json!({"token": token}))
                .await;
            scene.refused(&r, 409, "not-holder");
        }
        let r = scene
            .post(
                &format!("{base}/acquire"),
                None,
                json!({"owner": "alice", "token": token}),
            )
            .await;
        scene.refused(&r, 409, "lock-held");
    }
    scene.unchanged().await;
}

// ---- Path tricks --------------------------------------------------------------------------------

#[tokio::test]
async fn an_encoded_dot_dot_in_the_key_is_refused_and_reaches_no_other_lock() {
    let scene = Scene::open().await;
    for key in [
        "x%2F..%2Fpayroll",
        "jobs%2F..%2F..%2Fpayroll",
        "%2E%2E%2Fpayroll",
        "payroll%2F.",
    ] {
        for (action, body) in [
            ("acquire", json!({"owner": "alice"})),
            ("renew", json!({"token": "x"})),
            ("release", json!({"token": "x"})),
        ] {
            let r = scene
                .post(&format!("/locks/{key}/{action}"), None, body)
                .await;
            let p = scene.refused(&r, 400, "invalid-input");
            assert_eq!(p["field"], "key", "{p}");
        }
    }
    scene.unchanged().await;
}

#[tokio::test]
async fn a_raw_dot_dot_segment_in_the_key_is_refused() {
    let scene = Scene::open().await;
    let body = r#"{"owner":"alice"}"#;
    for target in [
        "/locks/x/../payroll/acquire",
        "/locks/x/%2E%2E/payroll/acquire",
        "/locks/./payroll/acquire",
        "/locks/payroll/./acquire",
    ] {
        let r = scene.raw("POST", target, None, body).await;
        scene.refused(&r, 400, "invalid-input");
    }
    let r = scene
        .raw(
            "POST",
            "/locks/x/../payroll/release",
            None,
            r#"{"token":"x"}"#,
        )
        .await;
    scene.refused(&r, 400, "invalid-input");
    scene.unchanged().await;
}

#[tokio::test]
async fn a_double_encoded_slash_names_another_key_never_this_one() {
    let scene = Scene::open().await;
    // `%252F` decodes once, to a key that holds a literal "%2F": a lock never taken.
    for target in [
        "x%252F..%252Fpayroll",
        "%252E%252E%252Fpayroll",
        "payroll%2500",
    ] {
        for action in ["renew", "release"] {
            let r = scene
                .post(
                    &format!("/locks/{target}/{action}"),
                    None,
                    json!({"token": "x"}),
                )
                .await;
            scene.refused(&r, 404, "lock-not-found");
        }
    }
    scene.unchanged().await;
}

#[tokio::test]
async fn dot_dot_under_buckets_never_reaches_the_default_bucket() {
    let scene = Scene::open().await;
    let body = r#"{"token":"x"}"#;
    for (target, status, kind) in [
        (
            "/buckets/other-bucket/../locks/payroll/release",
            404,
            "not-found",
        ),
        (
            "/buckets/../locks/payroll/release",
            403,
            "bucket-not-allowed",
        ),
        (
            "/buckets/%2E%2E/locks/payroll/release",
            403,
            "bucket-not-allowed",
        ),
        (
            "/buckets/..%2Fdefault/locks/payroll/release",
            403,
            "bucket-not-allowed",
        ),
        (
            "/buckets/other-bucket%2F..%2Fdefault/locks/payroll/release",
            403,
            "bucket-not-allowed",
        ),
        (
            "/buckets/other-bucket/locks/..%2F..%2Fdefault%2Flocks%2Fpayroll/release",
            400,
            "invalid-input",
        ),
    ] {
        let r = scene.raw("POST", target, None, body).await;
        scene.refused(&r, status, kind);
    }
    scene.unchanged().await;
}

// ---- Auth tokens: scope by prefix and bucket, and the Authorization header ----------------------

#[tokio::test]
async fn with_auth_a_token_valid_on_the_key_still_cannot_act_as_the_holder() {
    let scene = Scene::with_auth().await;
    let r = scene
        .post(&acquire_path(), Some(PLAIN_AUTH), json!({"owner": "alice"}))
        .await;
    scene.refused(&r, 409, "lock-held");
    for action in ["renew", "release"] {
        let r = scene
            .post(
                &format!("/locks/{KEY}/{action}"),
                Some(PLAIN_AUTH),
                json!({"token": "alice"}),
            )
            .await;
        scene.refused(&r, 409, "not-holder");
    }
    scene.unchanged().await;
}

#[tokio::test]
async fn a_token_without_a_bucket_word_is_forbidden_on_another_bucket_listing_included() {
    let scene = Scene::with_auth().await;
    let b = format!("/buckets/{OTHER_BUCKET}/locks");
    for (method, path, body) in [
        (
            Method::POST,
            format!("{b}/{KEY}/acquire"),
            Some(json!({"owner": "alice"})),
        ),
        (
            Method::POST,
            format!("{b}/{KEY}/renew"),
            Some(json!({"token": "x"})),
        ),
        (
            Method::POST,
            format!("{b}/{KEY}/release"),
            Some(json!({"token": "x"})),
        ),
        (Method::GET, format!("{b}/{KEY}"), None),
        (Method::GET, b.clone(), None),
        (Method::GET, format!("{b}?prefix={KEY}"), None),
    ] {
        for bearer in [PLAIN_AUTH, MALLORY_AUTH] {
            let r = scene
                .send(method.clone(), &path, Some(bearer), body.clone())
                .await;
            scene.refused(&r, 403, "forbidden");
        }
    }
    scene.unchanged().await;
}

#[tokio::test]
async fn a_token_for_another_bucket_is_forbidden_on_the_default_bucket_listing_included() {
    let scene = Scene::with_auth().await;
    for (method, path, body) in [
        (
            Method::POST,
            acquire_path(),
            Some(json!({"owner": "alice"})),
        ),
        (Method::POST, release_path(), Some(json!({"token": "x"}))),
        (Method::GET, format!("/locks/{KEY}"), None),
        (Method::GET, "/locks".to_owned(), None),
        (Method::GET, format!("/locks?prefix={KEY}"), None),
        (Method::GET, "/buckets/default/locks".to_owned(), None),
        (
            Method::POST,
            format!("/buckets/default/locks/{KEY}/release"),
            Some(json!({"token": "x"})),
        ),
    ] {
        let r = scene.send(method, &path, Some(ELSEWHERE_AUTH), body).await;
        scene.refused(&r, 403, "forbidden");
    }
    scene.unchanged().await;
}

#[tokio::test]
async fn a_token_scoped_to_a_prefix_cannot_climb_out_of_it_by_path_tricks() {
    let scene = Scene::with_auth().await;
    let body = json!({"owner": "alice"});
    let r = scene
        .post(
            "/locks/jobs%2F..%2Fpayroll/acquire",
            Some(MALLORY_AUTH),
            body.clone(),
        )
        .await;
    scene.refused(&r, 400, "invalid-input");
    let r = scene
        .post(
            "/locks/jobs%252F..%252Fpayroll/acquire",
            Some(MALLORY_AUTH),
            body.clone(),
        )
        .await;
    scene.refused(&r, 403, "forbidden");
    let r = scene
        .raw(
            "POST",
            "/locks/jobs/../payroll/acquire",
            Some(MALLORY_AUTH),
            &body.to_string(),
        )
        .await;
    scene.refused(&r, 400, "invalid-input");
    let r = scene.post(&acquire_path(), Some(MALLORY_AUTH), body).await;
    scene.refused(&r, 403, "forbidden");
    scene.unchanged().await;
}

#[tokio::test]
async fn any_case_of_the_bearer_scheme_keeps_the_auth_tokens_scope() {
    let scene = Scene::with_auth().await;
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let v = HeaderValue::from_str(&format!("{scheme} {MALLORY_AUTH}")).unwrap();
        let r = scene
            .with_authorization(&acquire_path(), &[v], json!({"owner": "alice"}))
            .await;
        scene.refused(&r, 403, "forbidden");
    }
    scene.unchanged().await;
}

#[tokio::test]
async fn extra_spaces_around_the_auth_token_keep_its_scope() {
    let scene = Scene::with_auth().await;
    for value in [
        format!("Bearer   {MALLORY_AUTH}"),
        format!("Bearer {MALLORY_AUTH}   "),
        format!("   Bearer {MALLORY_AUTH}"),
    ] {
        let v = HeaderValue::from_str(&value).unwrap();
        let r = scene
            .with_authorization(&acquire_path(), &[v], json!({"owner": "alice"}))
            .await;
        scene.refused(&r, 403, "forbidden");
    }
    scene.unchanged().await;
}

#[tokio::test]
async fn two_authorization_headers_never_add_up_to_more_than_one_token() {
    let scene = Scene::with_auth().await;
    let bearer = |t: &str| HeaderValue::from_str(&format!("Bearer {t}")).unwrap();
    // Neither of mallory's tokens may touch the default bucket's payroll; together neither may.
    for pair in [
        [bearer(MALLORY_AUTH), bearer(ELSEWHERE_AUTH)],
        [bearer(ELSEWHERE_AUTH), bearer(MALLORY_AUTH)],
    ] {
        let r = scene
            .with_authorization(&acquire_path(), &pair, json!({"owner": "alice"}))
            .await;
        scene.refused(&r, 403, "forbidden");
    }
    // A good token after a bad one does not rescue the request.
    let r = scene
        .with_authorization(
            &acquire_path(),
            &[bearer("nobody-0123456789abcdef"), bearer(PLAIN_AUTH)],
            json!({"owner": "alice"}),
        )
        .await;
    scene.refused(&r, 401, "unauthorized");
    scene.unchanged().await;
}

#[tokio::test]
async fn an_empty_schemeless_basic_or_garbled_authorization_is_401() {
    let scene = Scene::with_auth().await;
    let values = [
        HeaderValue::from_static(""),
        HeaderValue::from_static("Bearer"),
        HeaderValue::from_static("Bearer "),
        HeaderValue::from_str(PLAIN_AUTH).unwrap(),
        HeaderValue::from_str(&format!("Token {PLAIN_AUTH}")).unwrap(),
        // Basic with mallory's credential as the password, and as the user name.
        HeaderValue::from_static("Basic bWFsbG9yeTptYWxsb3J5LWF1dGgtMDEyMzQ1Njc4OWFiY2RlZg=="),
        HeaderValue::from_str(&format!("Basic {PLAIN_AUTH}")).unwrap(),
        HeaderValue::from_str(&format!("Bearer\t{PLAIN_AUTH}")).unwrap(),
        HeaderValue::from_str(&format!("Bearer {PLAIN_AUTH}x")).unwrap(),
        HeaderValue::from_str(&format!("Bearer {}", &PLAIN_AUTH[1..])).unwrap(),
        HeaderValue::from_str(&format!("Bearer {PLAIN_AUTH} {PLAIN_AUTH}")).unwrap(),
        HeaderValue::from_str(&format!("Bearer {PLAIN_AUTH},Bearer {ADMIN_AUTH}")).unwrap(),
        HeaderValue::from_bytes(format!("Bearer {PLAIN_AUTH}\u{e9}").as_bytes()).unwrap(),
    ];
    for v in values {
        let r = scene
            .with_authorization(
                &acquire_path(),
                std::slice::from_ref(&v),
                json!({"owner": "alice"}),
            )
            .await;
        assert_eq!(r.status, 401, "{v:?}: {}", r.text);
        scene.refused(&r, 401, "unauthorized");
    }
    scene.unchanged().await;
}

#[tokio::test]
async fn a_holder_token_is_never_an_auth_token_nor_the_other_way_round() {
    let mut scene = Scene::with_auth().await;
    let own = json_with(
        call(
            &scene.app,
            Method::POST,
            "/locks/jobs/mine/acquire".into(),
            Some(MALLORY_AUTH),
            Some(json!({"owner": "mallory"})),
        )
        .await,
        200,
    )
    .await;
    scene.snap().await;
    let holder_token = own["token"].as_str().unwrap();
    let r = scene
        .post(
            &acquire_path(),
            Some(holder_token),
            json!({"owner": "alice"}),
        )
        .await;
    scene.refused(&r, 401, "unauthorized");
    for auth in [PLAIN_AUTH, MALLORY_AUTH] {
        let r = scene
            .post(&release_path(), Some(PLAIN_AUTH), json!({"token": auth}))
            .await;
        scene.refused(&r, 409, "not-holder");
    }
    scene.unchanged().await;
}

#[tokio::test]
async fn a_token_that_is_not_an_admin_cannot_break_the_lock() {
    let scene = Scene::with_auth().await;
    for bearer in [ALICE_AUTH, PLAIN_AUTH] {
        let r = scene
            .post(
                &format!("/locks/{KEY}/break"),
                Some(bearer),
                json!({"reason": "mine now"}),
            )
            .await;
        scene.refused(&r, 403, "forbidden");
    }
    let r = scene
        .post(
            &format!("/locks/{KEY}/break"),
            Some(MALLORY_AUTH),
            json!({}),
        )
        .await;
    scene.refused(&r, 403, "forbidden");
    let r = scene
        .post(
            &format!("/locks/{KEY}/break"),
            Some(ELSEWHERE_AUTH),
            json!({}),
        )
        .await;
    scene.refused(&r, 403, "forbidden");
    scene.unchanged().await;
}

// ---- Unicode: one name, one lock; no spoofed owners -----------------------------------------

#[tokio::test]
async fn a_key_in_nfd_is_refused_so_the_nfc_lock_cannot_be_held_twice() {
    let mut scene = Scene::open().await;
    let nfc = json_with(
        scene
            .app
            .acquire("jobs/caf%C3%A9", json!({"owner": "alice"}))
            .await,
        200,
    )
    .await;
    assert_eq!(nfc["key"], "jobs/caf\u{e9}");
    scene.snap().await;
    let r = scene
        .post(
            "/locks/jobs/cafe%CC%81/acquire",
            None,
            json!({"owner": "mallory"}),
        )
        .await;
    let p = scene.refused(&r, 400, "invalid-input");
    assert_eq!(p["field"], "key", "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("NFC"),
        "say why: {p}"
    );
    for action in ["renew", "release"] {
        let r = scene
            .post(
                &format!("/locks/jobs/cafe%CC%81/{action}"),
                None,
                json!({"token": "x"}),
            )
            .await;
        scene.refused(&r, 400, "invalid-input");
    }
    let r = scene
        .send(Method::GET, "/locks/jobs/cafe%CC%81", None, None)
        .await;
    scene.refused(&r, 400, "invalid-input");
    scene.unchanged().await;
}

#[tokio::test]
async fn an_owner_in_nfd_is_refused_saying_why() {
    let scene = Scene::open().await;
    let r = scene
        .post(
            "/locks/jobs/menu/acquire",
            None,
            json!({"owner": "cafe\u{301}"}),
        )
        .await;
    let p = scene.refused(&r, 400, "invalid-input");
    assert_eq!(p["field"], "owner", "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("NFC"),
        "say why: {p}"
    );
    let ok = json_with(
        scene
            .app
            .acquire("jobs/menu", json!({"owner": "caf\u{e9}"}))
            .await,
        200,
    )
    .await;
    assert_eq!(ok["owner"], "caf\u{e9}");
}

#[tokio::test]
async fn owners_and_keys_with_bidi_controls_or_other_format_characters_are_refused() {
    let scene = Scene::open().await;
    // "a\u{202e}gnp.exe" shows as "aexe.png" in a log or a terminal.
    for owner in [
        "a\u{202e}gnp.exe",
        "alice\u{2066}",
        "al\u{200d}ice",
        "\u{061c}alice",
    ] {
        let r = scene
            .post("/locks/jobs/spoof/acquire", None, json!({"owner": owner}))
            .await;
        let p = scene.refused(&r, 400, "invalid-input");
        assert_eq!(p["field"], "owner", "{p}");
        assert!(
            p["detail"].as_str().unwrap().contains("format"),
            "say why: {p}"
        );
    }
    for key in [
        "jobs/a%E2%80%AEgnp.exe",
        "pay%E2%80%8Broll",
        "%EF%BB%BFpayroll",
    ] {
        let r = scene
            .post(
                &format!("/locks/{key}/acquire"),
                None,
                json!({"owner": "mallory"}),
            )
            .await;
        let p = scene.refused(&r, 400, "invalid-input");
        assert_eq!(p["field"], "key", "{p}");
    }
    scene.unchanged().await;
}

// ---- Wake-up hints between replicas ------------------------------------------------------------

#[tokio::test]
async fn a_wake_up_hint_forged_or_even_validly_signed_frees_nothing() {
    // Without a peer secret there is no hint route at all.
    let open = Scene::open().await;
    let r = open.raw("POST", WAKE_PATH, None, "{}").await;
    open.refused(&r, 404, "not-found");

    let key = HintKey::new(SecretString::from("attack-peer-secret-0123456789"));
    let scene = Scene::with_hints(key.clone()).await;
    let hint = |object: &str, sent_at_ms: i64| {
        serde_json::to_vec(&Hint {
            bucket: "default".into(),
            object: object.to_owned(),
            sent_at_ms,
        })
        .unwrap()
    };
    let send = |body: Vec<u8>, signature: String| {
        let req = scene
            .app
            .http
            .post(format!("{}{WAKE_PATH}", scene.app.base))
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send();
        async move { Answer::of(req.await.unwrap()).await }
    };
    // mallory waits for the lock under alice's name while the hints arrive.
    let waiting = {
        let (http, base) = (scene.app.http.clone(), scene.app.base.clone());
        tokio::spawn(async move {
            let resp = http
                .post(format!("{base}{}", acquire_path()))
                .json(&json!({"owner": "alice", "wait": 2}))
                .send()
                .await
                .unwrap();
            Answer::of(resp).await
        })
    };
    let object = format!("{PREFIX}{KEY}");
    let now = wall_clock_ms();
    let wrong = HintKey::new(SecretString::from("not-the-peer-secret-0123"));
    for (body, signature) in [
        (hint(&object, now), String::new()),
        (hint(&object, now), wrong.sign(&hint(&object, now))),
        (hint(&object, now), key.sign(&hint(&object, now - 1))),
        (
            hint(&object, now - 3_600_000),
            key.sign(&hint(&object, now - 3_600_000)),
        ),
        (b"{}".to_vec(), key.sign(b"{}")),
    ] {
        let r = send(body, signature).await;
        scene.refused(&r, 403, "forbidden");
    }
    // A hint signed with the real secret (a peer, or anyone who stole the secret) is only ever
    // a reason to read the lock again: alice still holds it.
    for object in [object.clone(), format!("{PREFIX}../{KEY}"), "locks/".into()] {
        let body = hint(&object, wall_clock_ms());
        let r = send(body.clone(), key.sign(&body)).await;
        assert_eq!(r.status, 204, "{}", r.text);
    }
    let r = waiting.await.unwrap();
    scene.refused(&r, 409, "lock-held");
    scene.unchanged().await;
}
