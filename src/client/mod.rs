//! The HTTP client of the lock API, shared by every client-side subcommand (the CLI, `check`,
//! `bench`): locks, elections, and the semaphores and read-write locks (the shared kinds). It
//! speaks only HTTP: nothing here touches a store.

pub mod args;
pub mod check;
pub mod cli;
pub mod elect;
pub mod hold;
pub mod run;

use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::tls::client::ClientTls;
use crate::wire::{ElectionView, LockView, Mode, SharedKind, SharedView};

/// Everything but unreserved characters and `/` is encoded in a key's path: the key's own `/`
/// stay path separators, which the server reads back as part of the key.
const KEY_PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

#[derive(Debug, Clone)]
pub struct LockClient {
    http: reqwest::Client,
    base: String,
    /// The auth token; its `Debug` hides it.
    bearer: Option<SecretString>,
}

/// A refusal or failure, by outcome.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the lock is held by {owner} until {expires_at}")]
    Held {
        owner: String,
        expires_at: String,
        retry_after: Option<Duration>,
    },
    /// `lock-delayed`: the last holder's lease ran out unreleased, and nobody may take the lock
    /// before `available_at` (its lock-delay).
    #[error("the lock's last lease ran out unreleased; it can be taken from {available_at}")]
    Delayed {
        available_at: String,
        retry_after: Option<Duration>,
    },
    /// `semaphore-full`: every permit of the semaphore is held (still, after the wait asked
    /// for); the first of their leases ends at `expires_at`, and a release may free one sooner.
    #[error("no permit of the semaphore is left; the first lease ends at {expires_at}")]
    SemaphoreFull {
        expires_at: String,
        retry_after: Option<Duration>,
    },
    /// `limit-mismatch`: the acquire's `limit` is not the semaphore's, and holders that agreed
    /// to the stored one remain. Every process must ask with the same limit; waiting does not
    /// help while they disagree.
    #[error("{detail}")]
    LimitMismatch { detail: String },
    /// `too-many-holders`: the lock (a read-write lock's readers) already has as many holders
    /// as one document holds; the first of their leases ends at `expires_at`.
    #[error(
        "the lock has as many holders as one document holds; the first lease ends at {expires_at}"
    )]
    TooManyHolders {
        expires_at: String,
        retry_after: Option<Duration>,
    },
    #[error("{detail}")]
    NotHolder { detail: String },
    #[error("the lock does not exist")]
    NotFound,
    /// `write-unconfirmed`: a renew, release or break that may have landed, but the lock has
    /// changed since. After a release: released, or lost — nothing to do. After a renew: the
    /// lease is no longer this holder's.
    #[error("{detail}")]
    WriteUnconfirmed { detail: String },
    /// Any other problem+json answer.
    #[error("{status} {kind}: {detail}")]
    Problem {
        status: u16,
        kind: String,
        detail: String,
    },
    /// The server answered something that is not the API, or the connection broke after the
    /// request went out: it may have been carried out.
    #[error("cannot talk to the lock server: {0}")]
    Transport(String),
    /// No connection could be made (refused, or timed out connecting): nothing was sent, so the
    /// request was certainly not carried out.
    #[error("cannot reach the lock server: {0}")]
    Unreachable(String),
}

impl ClientError {
    /// A refusal that waiting may end: the lock is held (or kept for its lock-delay), or the
    /// semaphore's permits or the document's holder places are all taken. Their holders' leases
    /// end, or they release.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ClientError::Held { .. }
                | ClientError::Delayed { .. }
                | ClientError::SemaphoreFull { .. }
                | ClientError::TooManyHolders { .. }
        )
    }
}

#[derive(Debug, Deserialize)]
struct Problem {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    detail: String,
    owner: Option<String>,
    expires_at: Option<String>,
    available_at: Option<String>,
}

/// One page of a list, as the server answers it.
#[derive(Debug, Deserialize)]
pub struct LockPage {
    pub locks: Vec<LockView>,
    /// The cursor of the next page; `None` on the last (and from servers that do not page).
    #[serde(default)]
    pub next: Option<String>,
}

impl LockClient {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:8080`), sending `bearer` as an
    /// `Authorization: Bearer` token when given.
    pub fn new(base: &str, bearer: Option<SecretString>) -> Self {
        Self::with_tls(base, bearer, &ClientTls::default())
    }

    /// As [`LockClient::new`], trusting and presenting what `tls` says over https.
    pub fn with_tls(base: &str, bearer: Option<SecretString>, tls: &ClientTls) -> Self {
        let http = tls
            .apply(reqwest::Client::builder().connect_timeout(Duration::from_secs(5)))
            .build()
            .expect("a client of checked TLS files always builds");
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            bearer,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn acquire(
        &self,
        key: &str,
        owner: Option<&str>,
        ttl: Option<u64>,
        wait: Option<f64>,
    ) -> Result<LockView, ClientError> {
        self.acquire_holding(key, owner, None, ttl, wait).await
    }

    /// An acquire that presents `token`, the holder token of a lease `owner` already holds: it
    /// refreshes that lease (the server refuses a refresh by owner name alone).
    pub async fn acquire_holding(
        &self,
        key: &str,
        owner: Option<&str>,
        token: Option<&str>,
        ttl: Option<u64>,
        wait: Option<f64>,
    ) -> Result<LockView, ClientError> {
        let mut body = acquire_body(owner, ttl, wait);
        if let Some(t) = token {
            body.insert("token".into(), json!(t));
        }
        self.post(key, "acquire", Value::Object(body)).await
    }

    pub async fn renew(
        &self,
        key: &str,
        token: &str,
        ttl: Option<u64>,
    ) -> Result<LockView, ClientError> {
        let mut body = json!({ "token": token });
        if let Some(t) = ttl {
            body["ttl"] = json!(t);
        }
        self.post(key, "renew", body).await
    }

    pub async fn release(&self, key: &str, token: &str) -> Result<LockView, ClientError> {
        self.post(key, "release", json!({ "token": token })).await
    }

    /// Breaks the lock whoever holds it (needs an admin auth token).
    pub async fn break_lock(
        &self,
        key: &str,
        reason: Option<&str>,
    ) -> Result<LockView, ClientError> {
        let body = match reason {
            Some(r) => json!({ "reason": r }),
            None => json!({}),
        };
        self.post(key, "break", body).await
    }

    pub async fn status(&self, key: &str, owner: Option<&str>) -> Result<LockView, ClientError> {
        let mut req = self.http.get(self.lock_url(key, None));
        if let Some(o) = owner {
            req = req.query(&[("owner", o)]);
        }
        self.send(req).await
    }

    /// A blocking query: the lock once its `index` is no longer `index`, or after `wait` seconds
    /// (the server's answer then has the same index).
    pub async fn watch(&self, key: &str, index: u64, wait: f64) -> Result<LockView, ClientError> {
        let req = self
            .http
            .get(self.lock_url(key, None))
            .query(&[("index", index.to_string()), ("wait", wait.to_string())]);
        self.send(req).await
    }

    /// Every lock whose key starts with `prefix`, following the server's pages to the last.
    pub async fn list(&self, prefix: &str) -> Result<Vec<LockView>, ClientError> {
        let mut locks = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.list_page(prefix, None, cursor.as_deref()).await?;
            locks.extend(page.locks);
            match page.next {
                // A server that handed back the cursor it was given would never end the loop.
                Some(next) if cursor.as_ref() != Some(&next) => cursor = Some(next),
                _ => return Ok(locks),
            }
        }
    }

    /// One page of the locks under `prefix`: at most `limit` (the server's default when
    /// `None`), starting after `cursor` (the `next` of the page before).
    pub async fn list_page(
        &self,
        prefix: &str,
        limit: Option<u64>,
        cursor: Option<&str>,
    ) -> Result<LockPage, ClientError> {
        let mut req = self
            .http
            .get(format!("{}/locks", self.base))
            .query(&[("prefix", prefix)]);
        if let Some(limit) = limit {
            req = req.query(&[("limit", limit)]);
        }
        if let Some(cursor) = cursor {
            req = req.query(&[("cursor", cursor)]);
        }
        self.send(req).await
    }

    /// Campaigns to lead `name`, waiting up to `wait` seconds while another leads (refused
    /// with [`ClientError::Held`], naming the leader, if it still leads then).
    pub async fn campaign(
        &self,
        name: &str,
        candidate: Option<&str>,
        value: Option<&Value>,
        ttl: Option<u64>,
        wait: Option<f64>,
    ) -> Result<ElectionView, ClientError> {
        let mut body = Map::new();
        if let Some(c) = candidate {
            body.insert("candidate".into(), json!(c));
        }
        if let Some(v) = value {
            body.insert("value".into(), v.clone());
        }
        if let Some(t) = ttl {
            body.insert("ttl".into(), json!(t));
        }
        if let Some(w) = wait {
            body.insert("wait".into(), json!(w));
        }
        self.post_election(name, "campaign", Value::Object(body))
            .await
    }

    /// The leader restarts its lease, keeping its value.
    pub async fn renew_leadership(
        &self,
        name: &str,
        token: &str,
        ttl: Option<u64>,
    ) -> Result<ElectionView, ClientError> {
        let mut body = json!({ "token": token });
        if let Some(t) = ttl {
            body["ttl"] = json!(t);
        }
        self.post_election(name, "renew", body).await
    }

    /// The leader publishes a new value.
    pub async fn proclaim(
        &self,
        name: &str,
        token: &str,
        value: &Value,
    ) -> Result<ElectionView, ClientError> {
        self.post_election(name, "proclaim", json!({ "token": token, "value": value }))
            .await
    }

    pub async fn resign(&self, name: &str, token: &str) -> Result<ElectionView, ClientError> {
        self.post_election(name, "resign", json!({ "token": token }))
            .await
    }

    /// Who leads `name` now.
    pub async fn election(&self, name: &str) -> Result<ElectionView, ClientError> {
        self.send(self.http.get(self.election_url(name, None)))
            .await
    }

    /// Opens `name`'s change stream, resuming after `last_id`; read it with
    /// [`EventStream::next_event`].
    pub async fn observe(
        &self,
        name: &str,
        last_id: Option<u64>,
    ) -> Result<EventStream, ClientError> {
        let mut req = self
            .http
            .get(self.election_url(name, Some("observe")))
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = last_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = self.send_raw(req).await?;
        Ok(EventStream {
            response: resp,
            buffer: Vec::new(),
        })
    }

    fn election_url(&self, name: &str, action: Option<&str>) -> String {
        let name = utf8_percent_encode(name, KEY_PATH);
        match action {
            Some(a) => format!("{}/elections/{name}/{a}", self.base),
            None => format!("{}/elections/{name}", self.base),
        }
    }

    async fn post_election(
        &self,
        name: &str,
        action: &str,
        body: Value,
    ) -> Result<ElectionView, ClientError> {
        let req = self
            .http
            .post(self.election_url(name, Some(action)))
            .json(&body);
        self.send(req).await
    }

    /// Takes one of a semaphore's permits: at most `limit` holders at once, `limit` the same in
    /// every process that uses the key (else [`ClientError::LimitMismatch`]). Waits up to `wait`
    /// seconds for a permit to come free ([`ClientError::SemaphoreFull`] after that). The answer
    /// carries the holder token and the caller's own `lease`.
    pub async fn semaphore_acquire(
        &self,
        key: &str,
        owner: Option<&str>,
        ttl: Option<u64>,
        wait: Option<f64>,
        limit: u32,
    ) -> Result<SharedView, ClientError> {
        let mut body = acquire_body(owner, ttl, wait);
        body.insert("limit".into(), json!(limit));
        self.shared_post(SharedKind::Semaphore, key, "acquire", Value::Object(body))
            .await
    }

    /// Takes a read-write lock in `mode`: shared beside other readers, or exclusive alone.
    /// Refused with [`ClientError::Held`] (naming the holder or the waiting writer in the way)
    /// after `wait` seconds.
    pub async fn rwlock_acquire(
        &self,
        key: &str,
        owner: Option<&str>,
        ttl: Option<u64>,
        wait: Option<f64>,
        mode: Mode,
    ) -> Result<SharedView, ClientError> {
        let mut body = acquire_body(owner, ttl, wait);
        body.insert("mode".into(), json!(mode));
        self.shared_post(SharedKind::Rwlock, key, "acquire", Value::Object(body))
            .await
    }

    /// Restarts the lease of the holding `token` names at `ttl` seconds from now.
    pub async fn shared_renew(
        &self,
        kind: SharedKind,
        key: &str,
        token: &str,
        ttl: Option<u64>,
    ) -> Result<SharedView, ClientError> {
        let mut body = json!({ "token": token });
        if let Some(t) = ttl {
            body["ttl"] = json!(t);
        }
        self.shared_post(kind, key, "renew", body).await
    }

    /// Gives back the holding `token` names (the other holders keep theirs).
    pub async fn shared_release(
        &self,
        kind: SharedKind,
        key: &str,
        token: &str,
    ) -> Result<SharedView, ClientError> {
        self.shared_post(kind, key, "release", json!({ "token": token }))
            .await
    }

    /// Ends every holding of the key (needs an admin auth token).
    pub async fn shared_break(
        &self,
        kind: SharedKind,
        key: &str,
    ) -> Result<SharedView, ClientError> {
        self.shared_post(kind, key, "break", json!({})).await
    }

    /// The semaphore or read-write lock as it is now: its holders (never their tokens), the
    /// permits left, the writers waiting.
    pub async fn shared_status(
        &self,
        kind: SharedKind,
        key: &str,
    ) -> Result<SharedView, ClientError> {
        let req = self.http.get(self.url(collection(kind), key, None));
        self.send(req).await
    }

    fn lock_url(&self, key: &str, action: Option<&str>) -> String {
        self.url("locks", key, action)
    }

    /// `{base}/{collection}/{key}[/{action}]`.
    fn url(&self, collection: &str, key: &str, action: Option<&str>) -> String {
        let key = utf8_percent_encode(key, KEY_PATH);
        match action {
            Some(a) => format!("{}/{collection}/{key}/{a}", self.base),
            None => format!("{}/{collection}/{key}", self.base),
        }
    }

    async fn post(&self, key: &str, action: &str, body: Value) -> Result<LockView, ClientError> {
        let req = self.http.post(self.lock_url(key, Some(action))).json(&body);
        self.send(req).await
    }

    async fn shared_post(
        &self,
        kind: SharedKind,
        key: &str,
        action: &str,
        body: Value,
    ) -> Result<SharedView, ClientError> {
        let url = self.url(collection(kind), key, Some(action));
        self.send(self.http.post(url).json(&body)).await
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = self.send_raw(req).await?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Transport(format!(
                "unexpected answer ({e}): HTTP {status} {}",
                preview(&bytes)
            ))
        })
    }

    /// Sends `req` with the auth token: the response of a 2xx answer, unread, or the error any
    /// other answer stands for.
    async fn send_raw(
        &self,
        mut req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        if let Some(b) = &self.bearer {
            // Marked sensitive, so that the HTTP stack's own debug logs never print it.
            let mut value =
                reqwest::header::HeaderValue::try_from(format!("Bearer {}", b.expose_secret()))
                    .map_err(|_| {
                        ClientError::Transport("the auth token is not a valid header value".into())
                    })?;
            value.set_sensitive(true);
            req = req.header(reqwest::header::AUTHORIZATION, value);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() {
                ClientError::Unreachable(with_causes(&e))
            } else {
                ClientError::Transport(with_causes(&e))
            }
        })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let problem: Problem = serde_json::from_slice(&bytes)
            .map_err(|_| ClientError::Transport(format!("HTTP {status}: {}", preview(&bytes))))?;
        Err(refusal(status, problem, retry_after))
    }
}

/// Where a shared kind's routes live.
fn collection(kind: SharedKind) -> &'static str {
    match kind {
        SharedKind::Semaphore => "semaphores",
        SharedKind::Rwlock => "rwlocks",
    }
}

/// The body every acquire shares (lock, semaphore, read-write lock).
fn acquire_body(owner: Option<&str>, ttl: Option<u64>, wait: Option<f64>) -> Map<String, Value> {
    let mut body = Map::new();
    if let Some(o) = owner {
        body.insert("owner".into(), json!(o));
    }
    if let Some(t) = ttl {
        body.insert("ttl".into(), json!(t));
    }
    if let Some(w) = wait {
        body.insert("wait".into(), json!(w));
    }
    body
}

/// The error a problem+json answer stands for, by its status and the last segment of its type.
fn refusal(status: u16, problem: Problem, retry_after: Option<Duration>) -> ClientError {
    let kind = problem
        .kind
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    match (status, kind.as_str()) {
        (409, "lock-held") => ClientError::Held {
            owner: problem.owner.unwrap_or_default(),
            expires_at: problem.expires_at.unwrap_or_default(),
            retry_after,
        },
        (409, "lock-delayed") => ClientError::Delayed {
            available_at: problem.available_at.unwrap_or_default(),
            retry_after,
        },
        (409, "semaphore-full") => ClientError::SemaphoreFull {
            expires_at: problem.expires_at.unwrap_or_default(),
            retry_after,
        },
        (409, "limit-mismatch") => ClientError::LimitMismatch {
            detail: problem.detail,
        },
        (409, "too-many-holders") => ClientError::TooManyHolders {
            expires_at: problem.expires_at.unwrap_or_default(),
            retry_after,
        },
        (409, "not-holder") => ClientError::NotHolder {
            detail: problem.detail,
        },
        (404, "lock-not-found") => ClientError::NotFound,
        (409, "write-unconfirmed") => ClientError::WriteUnconfirmed {
            detail: problem.detail,
        },
        _ => ClientError::Problem {
            status,
            kind,
            detail: problem.detail,
        },
    }
}

/// A server-sent event stream, read as it comes.
#[derive(Debug)]
pub struct EventStream {
    response: reqwest::Response,
    /// Bytes read but not yet split into events.
    buffer: Vec<u8>,
}

/// One server-sent event: its `event:`, `id:` and `data:` (joined lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEvent {
    pub kind: String,
    pub id: Option<u64>,
    pub data: String,
}

impl EventStream {
    /// The next event (comments such as keep-alives skipped), or `None` once the server ended
    /// the stream. A connection that breaks is a [`ClientError::Transport`].
    pub async fn next_event(&mut self) -> Result<Option<ServerEvent>, ClientError> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse_event(&String::from_utf8_lossy(&frame)) {
                    return Ok(Some(event));
                }
                continue;
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => self.buffer.extend_from_slice(&bytes),
                Ok(None) => return Ok(None),
                Err(e) => return Err(ClientError::Transport(with_causes(&e))),
            }
        }
    }
}

/// One frame of the stream as an event; `None` for a comment-only frame.
fn parse_event(frame: &str) -> Option<ServerEvent> {
    let (mut kind, mut id, mut data) = ("message".to_owned(), None, Vec::new());
    let mut any = false;
    for line in frame
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with(':'))
    {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        any = true;
        match field {
            "event" => kind = value.to_owned(),
            "id" => id = value.parse().ok(),
            "data" => data.push(value),
            _ => {}
        }
    }
    any.then(|| ServerEvent {
        kind,
        id,
        data: data.join("\n"),
    })
}

/// An error with its causes: reqwest's own text names only the URL, while the reason a
/// connection failed (refused, an untrusted certificate) is in its sources.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn preview(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error for a problem answer with this status, body (as the server writes it) and
    /// `Retry-After` seconds.
    fn answered(status: u16, body: &str, retry_after: Option<u64>) -> ClientError {
        let problem: Problem = serde_json::from_str(body).unwrap();
        refusal(status, problem, retry_after.map(Duration::from_secs))
    }

    #[test]
    fn a_full_semaphore_is_named_with_the_first_lease_end_and_the_wait_asked_for() {
        let e = answered(
            409,
            r#"{"type":"urn:s3lock:problem:semaphore-full","title":"No permit of the semaphore is left","status":409,"detail":"all 2 permits are held; the first lease ends at 2026-11-26T05:49:36+00:00","expires_at":"2026-11-26T05:49:36+00:00"}"#,
            Some(7),
        );
        match e {
            ClientError::SemaphoreFull {
                expires_at,
                retry_after,
            } => {
                assert_eq!(expires_at, "2026-11-26T05:49:36+00:00");
                assert_eq!(retry_after, Some(Duration::from_secs(7)));
            }
            other => panic!("expected SemaphoreFull, got {other:?}"),
        }
    }

    #[test]
    fn a_limit_mismatch_is_named_with_the_servers_words() {
        let e = answered(
            409,
            r#"{"type":"urn:s3lock:problem:limit-mismatch","title":"t","status":409,"detail":"the semaphore's limit is 3 and holders remain; this request asked for 4"}"#,
            None,
        );
        assert!(
            matches!(&e, ClientError::LimitMismatch { detail } if detail.contains("limit is 3")),
            "{e:?}"
        );
    }

    #[test]
    fn too_many_holders_is_named_with_the_first_lease_end() {
        let e = answered(
            409,
            r#"{"type":"urn:s3lock:problem:too-many-holders","title":"t","status":409,"detail":"d","expires_at":"2026-11-26T05:49:36+00:00"}"#,
            Some(3),
        );
        assert!(
            matches!(
                &e,
                ClientError::TooManyHolders { expires_at, retry_after: Some(r) }
                    if expires_at == "2026-11-26T05:49:36+00:00" && r.as_secs() == 3
            ),
            "{e:?}"
        );
    }

    #[test]
    fn a_read_write_lock_refusal_is_held_by_the_holder_or_waiting_writer_in_the_way() {
        let e = answered(
            409,
            r#"{"type":"urn:s3lock:problem:lock-held","title":"t","status":409,"detail":"d","owner":"writer-1","expires_at":"2026-11-26T05:49:36+00:00"}"#,
            Some(1),
        );
        assert!(
            matches!(&e, ClientError::Held { owner, .. } if owner == "writer-1"),
            "{e:?}"
        );
    }

    #[test]
    fn a_known_type_under_another_status_stays_a_generic_problem() {
        let e = answered(
            400,
            r#"{"type":"urn:s3lock:problem:semaphore-full","title":"t","status":400,"detail":"d"}"#,
            None,
        );
        assert!(
            matches!(&e, ClientError::Problem { status: 400, kind, .. } if kind == "semaphore-full"),
            "{e:?}"
        );
    }

    #[test]
    fn shared_kinds_have_routes_of_their_own_and_keys_keep_their_slashes() {
        let c = LockClient::new("http://h:1/", None);
        assert_eq!(
            c.url(collection(SharedKind::Semaphore), "a/b c", Some("acquire")),
            "http://h:1/semaphores/a/b%20c/acquire"
        );
        assert_eq!(
            c.url(collection(SharedKind::Rwlock), "k", None),
            "http://h:1/rwlocks/k"
        );
        assert_eq!(c.lock_url("k", Some("renew")), "http://h:1/locks/k/renew");
    }
}
