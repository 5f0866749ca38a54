//! Spawns the real app on a port-0 listener and gives each route one typed helper.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, Response};
use s3lock::auth::AuthTokens;
use s3lock::clock::{Clock, SystemClock};
use s3lock::lock::{Engine, EngineConfig};
use s3lock::peers::HintKey;
use s3lock::startup::Server;
use s3lock::store::local::LocalStore;
use s3lock::store::memory::MemoryStore;
use s3lock::store::s3::S3Store;
use s3lock::store::Store;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[path = "../support/mod.rs"]
pub mod support;

pub const PREFIX: &str = "locks/";
pub const OTHER_BUCKET: &str = "other-bucket";

pub fn engine_config(bucket: &str, also_allowed: &[&str]) -> EngineConfig {
    let mut allowed = BTreeSet::from([bucket.to_owned()]);
    allowed.extend(also_allowed.iter().map(|b| b.to_string()));
    EngineConfig {
        default_bucket: bucket.to_owned(),
        allowed_buckets: allowed,
        prefix: PREFIX.into(),
        default_ttl: 60,
        max_ttl: 3600,
        max_lock_delay: 60,
        max_wait: Duration::from_secs(60),
        first_poll: s3lock::lock::FIRST_POLL,
        max_poll: s3lock::lock::MAX_POLL,
        max_watched_locks: s3lock::lock::DEFAULT_MAX_WATCHED_LOCKS,
    }
}

/// A memory store and an engine over it, the default bucket plus [`OTHER_BUCKET`], whose
/// start-up store check counts as passed (as the binary's does once it has).
fn memory_engine() -> (Arc<dyn Store>, Arc<Engine>) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = Engine::new(
        store.clone(),
        Arc::new(SystemClock),
        engine_config("default", &[OTHER_BUCKET]),
    );
    engine.mark_store_checked();
    (store, Arc::new(engine))
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub bucket: String,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl TestApp {
    pub async fn spawn(store: Arc<dyn Store>, clock: Arc<dyn Clock>, config: EngineConfig) -> Self {
        Self::spawn_with_timeout(store, clock, config, Duration::from_secs(90)).await
    }

    /// As `spawn`, with the server's request timeout set.
    pub async fn spawn_with_timeout(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
        request_timeout: Duration,
    ) -> Self {
        let engine = Engine::new(store.clone(), clock, config);
        // As the binary does once its start-up store check has passed.
        engine.mark_store_checked();
        Self::serve(store, Arc::new(engine), None, request_timeout).await
    }

    /// Serves `engine` (over `store`) with the given auth tokens, if any.
    pub async fn spawn_engine(
        store: Arc<dyn Store>,
        engine: Arc<Engine>,
        auth: Option<Arc<AuthTokens>>,
    ) -> Self {
        Self::serve(store, engine, auth, Duration::from_secs(90)).await
    }

    async fn serve(
        store: Arc<dyn Store>,
        engine: Arc<Engine>,
        auth: Option<Arc<AuthTokens>>,
        request_timeout: Duration,
    ) -> Self {
        Self::serve_with_hints(store, engine, auth, None, request_timeout).await
    }

    /// A memory-store app that also takes peers' wake-up hints signed with `key`.
    pub async fn memory_with_hints(key: HintKey) -> Self {
        let (store, engine) = memory_engine();
        let timeout = Duration::from_secs(90);
        Self::serve_with_hints(store, engine, None, Some(key), timeout).await
    }

    async fn serve_with_hints(
        store: Arc<dyn Store>,
        engine: Arc<Engine>,
        auth: Option<Arc<AuthTokens>>,
        hints: Option<HintKey>,
        request_timeout: Duration,
    ) -> Self {
        s3lock::telemetry::init_for_tests();
        let bucket = engine.config().default_bucket.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let server = Server::new(engine, request_timeout)
            .with_auth(auth)
            .with_hints(hints);
        let server = tokio::spawn(async move {
            server
                .serve(listener, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Self {
            base,
            http: reqwest::Client::new(),
            store,
            bucket,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// A memory-store app whose lock routes need one of the auth tokens in `tokens_file`.
    pub async fn memory_with_auth(tokens_file: &str) -> Self {
        let (store, engine) = memory_engine();
        let tokens = AuthTokens::parse(tokens_file).unwrap();
        Self::spawn_engine(store, engine, Some(Arc::new(tokens))).await
    }

    pub async fn memory() -> Self {
        Self::spawn(
            Arc::new(MemoryStore::new()),
            Arc::new(SystemClock),
            engine_config("default", &[OTHER_BUCKET]),
        )
        .await
    }

    pub async fn local(dir: &std::path::Path) -> Self {
        Self::spawn(
            Arc::new(LocalStore::open(dir).unwrap()),
            Arc::new(SystemClock),
            engine_config("default", &[]),
        )
        .await
    }

    /// A replica on the real S3 server, judging time on the store's clock.
    pub async fn s3(bucket: &str) -> Self {
        let store = S3Store::connect(&support::s3_settings()).await;
        let clock = store.clock();
        Self::spawn(Arc::new(store), clock, engine_config(bucket, &[])).await
    }

    /// A replica whose S3 traffic goes through `endpoint` (a fault proxy), with this S3 timeout.
    pub async fn s3_via(bucket: &str, endpoint: &str, s3_timeout: Duration) -> Self {
        let mut settings = support::s3_settings_via(endpoint);
        settings.operation_timeout = s3_timeout;
        let store = S3Store::connect(&settings).await;
        let clock = store.clock();
        Self::spawn(Arc::new(store), clock, engine_config(bucket, &[])).await
    }

    /// Stops the server and waits until its port is closed and its store released.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }

    pub async fn request(&self, method: Method, path: &str, json: Option<Value>) -> Response {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = json {
            req = req.json(&body);
        }
        req.send().await.expect("the server answers")
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.send().await.expect("the server answers")
    }

    pub async fn acquire(&self, key: &str, body: Value) -> Response {
        self.request(Method::POST, &format!("/locks/{key}/acquire"), Some(body))
            .await
    }

    pub async fn renew(&self, key: &str, body: Value) -> Response {
        self.request(Method::POST, &format!("/locks/{key}/renew"), Some(body))
            .await
    }

    pub async fn release(&self, key: &str, body: Value) -> Response {
        self.request(Method::POST, &format!("/locks/{key}/release"), Some(body))
            .await
    }

    pub async fn status(&self, key: &str) -> Response {
        self.request(Method::GET, &format!("/locks/{key}"), None)
            .await
    }

    /// The stored bytes of a lock, read straight from the store.
    pub async fn stored(&self, key: &str) -> Option<Bytes> {
        self.stored_in(&self.bucket.clone(), key).await
    }

    pub async fn stored_in(&self, bucket: &str, key: &str) -> Option<Bytes> {
        self.store
            .get(bucket, &format!("{PREFIX}{key}"))
            .await
            .unwrap()
            .map(|v| v.body)
    }

    /// Every object the store holds in the default bucket, with its bytes.
    pub async fn snapshot(&self) -> Vec<(String, Bytes)> {
        let mut all = Vec::new();
        for key in self.store.list(&self.bucket, "").await.unwrap() {
            let body = self
                .store
                .get(&self.bucket, &key)
                .await
                .unwrap()
                .unwrap()
                .body;
            all.push((key, body));
        }
        all
    }
}

/// Reads a JSON body, asserting the status first (with the body in the message if it differs).
pub async fn json_with(resp: Response, status: u16) -> Value {
    let got = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts a problem+json answer of the given status and type; returns it.
pub async fn problem(resp: Response, status: u16, kind: &str) -> Value {
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    if ct.as_deref() != Some("application/problem+json") {
        let got = resp.status();
        let text = resp.text().await.unwrap_or_default();
        panic!("expected a {status} {kind} problem, got {got} ({ct:?}): {text}");
    }
    let body = json_with(resp, status).await;
    assert_eq!(body["type"], format!("urn:s3lock:problem:{kind}"), "{body}");
    assert_eq!(body["status"], status, "{body}");
    body
}

/// The value of the metric line that starts with `prefix` (labels included), if there is one.
pub fn metric_line(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
        .map(|l| l[prefix.len()..].trim().parse().unwrap())
}
