//! Request handlers: HTTP in, engine calls, HTTP out. Paths are parsed in `path.rs`.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::ApiError;
use super::path::{Action, LockPath};
use super::AppState;
use crate::lock::{AcquireRequest, HolderToken, LockError, LockView, NotReady, RenewRequest};

pub(super) type ApiResult<T> = Result<Json<T>, ApiError>;

/// The body of an acquire; every field is optional, and so is the body itself.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AcquireBody {
    /// The holder's name, 1 to 256 bytes, no control characters. Default: a random one.
    #[schema(min_length = 1, max_length = 256)]
    owner: Option<String>,
    /// Lease length in seconds, 1 to the server's maximum. Default: the server's default.
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "whole_seconds")]
    ttl: Option<i64>,
    /// Seconds to wait while another owner holds the lock, 0 to the server's maximum.
    #[schema(minimum = 0)]
    wait: Option<f64>,
    /// The holder token, to refresh a lease that `owner` already holds. Without it (or with
    /// another) a held lock is refused, to its own owner name too.
    #[schema(value_type = Option<String>)]
    token: Option<HolderToken>,
    /// Any JSON to publish with the lease (at most 4096 bytes compact, nested at most 32
    /// deep), shown to everyone who may read the lock: never a secret. On a refresh, `null`
    /// clears the stored value and leaving it out keeps it; a new holder starts with none.
    #[serde(default, deserialize_with = "present")]
    value: Option<Value>,
    /// Seconds nobody may take the lock after the lease ends, should it end without a release
    /// (the holder crashed with writes in flight), 0 to the server's maximum. Default 0; on a
    /// refresh, leaving it out keeps it.
    #[schema(minimum = 0)]
    #[serde(default, deserialize_with = "whole_seconds")]
    lock_delay: Option<i64>,
}

/// The body of a renew.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RenewBody {
    /// The holder token from the acquire.
    #[schema(value_type = String)]
    token: HolderToken,
    /// New lease length in seconds, counted from now. Default: the server's default.
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "whole_seconds")]
    ttl: Option<i64>,
    /// A new value to publish, as on acquire: `null` clears it, leaving it out keeps it.
    #[serde(default, deserialize_with = "present")]
    value: Option<Value>,
    /// A new lock-delay in seconds, as on acquire; leaving it out keeps it.
    #[schema(minimum = 0)]
    #[serde(default, deserialize_with = "whole_seconds")]
    lock_delay: Option<i64>,
}

/// The body of a release.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReleaseBody {
    /// The holder token from the acquire.
    #[schema(value_type = String)]
    pub(super) token: HolderToken,
}

/// The body of a break; optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BreakBody {
    /// Why the lock is broken, for the server's log (at most 256 bytes).
    #[schema(max_length = 256)]
    reason: Option<String>,
}

impl BreakBody {
    /// Checks the reason and logs it, with the admin who asked.
    pub(super) fn check(&self, key: &str, admin: &str) -> Result<(), ApiError> {
        if let Some(reason) = &self.reason {
            if reason.len() > 256 || reason.chars().any(char::is_control) {
                return Err(ApiError::InvalidInput {
                    field: "reason",
                    reason: "must be at most 256 bytes with no control characters".into(),
                });
            }
            tracing::warn!(key = %key, broken_by = admin, reason, "an admin asked to break a lock");
        }
        Ok(())
    }
}

/// A whole number of seconds. JSON has one number type, and JSON Schema counts `30.0` as an
/// integer, so a client (Python's `json` with a float, say) may send it that way.
pub(super) fn whole_seconds<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<i64>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => n
            .as_i64()
            .or_else(|| {
                // Only below 2^53 is every whole float exact, so only there is it a count.
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            })
            .map(Some)
            .ok_or_else(|| {
                D::Error::custom(format!(
                    "ttl and lock_delay are whole numbers of seconds, not {n}"
                ))
            }),
    }
}

/// A field that is there, `null` included (`Some(Null)`), as opposed to one left out (`None`,
/// by `#[serde(default)]`): for a value, "clear it" and "keep it" differ.
pub(super) fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// The answer of a list: one page of locks, in key order.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct LockList {
    locks: Vec<LockView>,
    /// Where the next page starts: send it back as `cursor` (with the same `prefix`) for the
    /// rest. `null` on the last page. Opaque: its form may change between versions.
    next: Option<String>,
}

/// The answer of `/healthz` and `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Health {
    /// `ok` (alive) or `ready`.
    status: &'static str,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StatusQuery {
    owner: Option<String>,
    /// Watch: answer when the lock's index is no longer this one.
    index: Option<u64>,
    /// Watch: the longest to wait for that, in seconds.
    wait: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    #[serde(default)]
    pub(super) prefix: String,
    /// Entries per page at most.
    pub(super) limit: Option<u64>,
    /// The `next` of the page before.
    pub(super) cursor: Option<String>,
}

pub(super) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `GET /readyz`: 200 while the store answers and the start-up store check has passed, 503
/// `shutting-down` once the replica drains.
pub(super) async fn readyz(State(state): State<AppState>) -> ApiResult<Health> {
    if state.engine.is_draining() {
        return Err(ApiError::ShuttingDown);
    }
    match state.engine.ready().await {
        Ok(()) => Ok(Json(Health { status: "ready" })),
        Err(NotReady::StoreCheckPending) => Err(ApiError::NotReady(
            "the start-up store check has not passed".into(),
        )),
        Err(NotReady::StoreDown(cause)) => {
            tracing::warn!(%cause, "not ready: the store is not answering");
            Err(ApiError::NotReady(
                "the lock store is not answering; see the server log".into(),
            ))
        }
    }
}

/// `GET /metrics`, in the Prometheus text format.
pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.engine.metrics().render(),
    )
}

/// `POST /locks/{key}/{action}` and `POST /buckets/{bucket}/locks/{key}/{action}`.
pub(super) async fn action(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<LockView> {
    let LockPath {
        bucket,
        key,
        action,
        ..
    } = LockPath::parse(uri.path(), true)?;
    let action = action.ok_or(ApiError::RouteNotFound)?;
    if !action.is_post() {
        return Err(ApiError::MethodNotAllowed);
    }
    let engine = &state.engine;
    let bucket = bucket.as_deref();
    caller.authorize(bucket, &engine.config().default_bucket, &key)?;
    let result = match action {
        Action::Acquire => {
            let b: AcquireBody = parse_body(&headers, body)?.unwrap_or_default();
            let req = AcquireRequest {
                owner: b.owner,
                token: b.token,
                ttl: b.ttl,
                wait: b.wait,
                value: b.value,
                lock_delay: b.lock_delay,
            };
            engine.acquire(bucket, &key, req).await
        }
        Action::Renew => {
            let b: RenewBody = parse_body(&headers, body)?.ok_or_else(token_required)?;
            let req = RenewRequest {
                ttl: b.ttl,
                value: b.value,
                lock_delay: b.lock_delay,
            };
            engine.renew(bucket, &key, b.token.expose(), req).await
        }
        Action::Release => {
            let b: ReleaseBody = parse_body(&headers, body)?.ok_or_else(token_required)?;
            engine.release(bucket, &key, b.token.expose()).await
        }
        Action::Break => {
            let admin = caller.admin()?;
            let b: BreakBody = parse_body(&headers, body)?.unwrap_or_default();
            b.check(&key, admin)?;
            engine.break_lock(bucket, &key, admin).await
        }
        Action::Events => unreachable!("refused above: the change stream is read by GET"),
    };
    result.map(Json).map_err(|e| lock_error(&state, e))
}

/// `GET` on a lock path: the change stream when it ends in `/events` after a key, else the
/// lock's status (or a watch).
pub(super) async fn read(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match LockPath::parse(uri.path(), true) {
        Ok(LockPath {
            action: Some(Action::Events),
            ..
        }) => super::events::events(state, caller, uri, headers)
            .await
            .into_response(),
        _ => {
            let query = Query::try_from_uri(&uri);
            status(State(state), Extension(caller), uri, query)
                .await
                .into_response()
        }
    }
}

/// `GET /locks/{key}` and `GET /buckets/{bucket}/locks/{key}`.
pub(super) async fn status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    query: Result<Query<StatusQuery>, QueryRejection>,
) -> ApiResult<LockView> {
    let Query(q) = query.map_err(ApiError::bad_query)?;
    let LockPath { bucket, key, .. } = LockPath::parse(uri.path(), false)?;
    caller.authorize(
        bucket.as_deref(),
        &state.engine.config().default_bucket,
        &key,
    )?;
    let engine = &state.engine;
    let view = match (q.index, q.wait) {
        (None, None) => {
            engine
                .status(bucket.as_deref(), &key, q.owner.as_deref())
                .await
        }
        (index, wait) => {
            engine
                .watch(bucket.as_deref(), &key, q.owner.as_deref(), index, wait)
                .await
        }
    };
    view.map(Json).map_err(|e| lock_error(&state, e))
}

/// `GET /locks?prefix=P&limit=N&cursor=C`.
pub(super) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<LockList> {
    list_locks(state, caller, None, query).await
}

/// `GET /buckets/{bucket}/locks?prefix=P&limit=N&cursor=C`.
pub(super) async fn list_in_bucket(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(bucket): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<LockList> {
    list_locks(state, caller, Some(bucket), query).await
}

async fn list_locks(
    state: AppState,
    caller: Caller,
    bucket: Option<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<LockList> {
    let Query(q) = query.map_err(ApiError::bad_query)?;
    caller.authorize_bucket(bucket.as_deref(), &state.engine.config().default_bucket)?;
    let prefix = caller.list_prefix(&q.prefix)?;
    let page = state
        .engine
        .list(bucket.as_deref(), &prefix, q.limit, q.cursor.as_deref())
        .await
        .map_err(|e| lock_error(&state, e))?;
    Ok(Json(LockList {
        locks: page.items,
        next: page.next,
    }))
}

pub(super) fn lock_error(state: &AppState, e: LockError) -> ApiError {
    ApiError::from_lock(e, state.engine.now().earliest)
}

pub(super) fn token_required() -> ApiError {
    ApiError::MalformedBody("a JSON body with a \"token\" is required".into())
}

/// Parses a JSON body; `None` for an empty one or `null`. A body with a content type must say JSON.
pub(super) fn parse_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Option<T>, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge
        } else {
            ApiError::MalformedBody(e.body_text())
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let essence = ct
            .to_str()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(ApiError::UnsupportedMediaType);
        }
    }
    // A JSON `null` body means "no body", as the OpenAPI document's optional bodies allow.
    serde_json::from_slice::<Option<T>>(&body).map_err(|e| ApiError::MalformedBody(e.to_string()))
}
