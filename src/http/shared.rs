//! Handlers of the semaphore and read-write lock routes (`/semaphores/{key}...`,
//! `/rwlocks/{key}...`, and their `/buckets/{bucket}/...` forms): the same shapes as the lock
//! routes, answering [`SharedView`]s. Paths are parsed in `path.rs`, errors mapped in `error.rs`.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::ApiError;
use super::handlers::{
    lock_error, parse_body, token_required, whole_seconds, ApiResult, BreakBody, ListQuery,
    ReleaseBody,
};
use super::path::{Action, LockPath, PathKind};
use super::AppState;
use crate::lock::key;
use crate::lock::{HolderToken, Mode, SharedAcquireRequest, SharedKind, SharedView};

/// The body of a semaphore's acquire.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SemaphoreAcquireBody {
    /// How many may hold the semaphore at once, 1 to 256. Every acquire names it; one that names
    /// another limit than the stored one is refused (409 limit-mismatch) while holders remain,
    /// and replaces it once none does.
    #[schema(minimum = 1, maximum = 256)]
    #[serde(deserialize_with = "whole_number")]
    limit: i64,
    /// The holder's name, 1 to 256 bytes, no control characters. Default: a random one.
    #[schema(min_length = 1, max_length = 256)]
    owner: Option<String>,
    /// Lease length in seconds, 1 to the server's maximum. Default: the server's default.
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "whole_seconds")]
    ttl: Option<i64>,
    /// Seconds to wait for a permit, 0 to the server's maximum. Waiters on one replica are
    /// served in arrival order; there is no order across replicas.
    #[schema(minimum = 0)]
    wait: Option<f64>,
    /// The holder token of a permit this owner holds, to refresh it rather than take another.
    #[schema(value_type = Option<String>)]
    token: Option<HolderToken>,
}

/// The body of a read-write lock's acquire.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RwlockAcquireBody {
    /// `shared` (with other readers) or `exclusive` (alone). While an exclusive acquire waits,
    /// no new shared holder is let in (writers first).
    mode: Mode,
    /// The holder's name, 1 to 256 bytes, no control characters. Default: a random one.
    #[schema(min_length = 1, max_length = 256)]
    owner: Option<String>,
    /// Lease length in seconds, 1 to the server's maximum. Default: the server's default.
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "whole_seconds")]
    ttl: Option<i64>,
    /// Seconds to wait for the lock, 0 to the server's maximum.
    #[schema(minimum = 0)]
    wait: Option<f64>,
    /// The holder token of a holding this owner has, to refresh it (in the same mode).
    #[schema(value_type = Option<String>)]
    token: Option<HolderToken>,
}

/// The body of a semaphore's or read-write lock's renew.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SharedRenewBody {
    /// The holder token from the acquire.
    #[schema(value_type = String)]
    token: HolderToken,
    /// New lease length in seconds, counted from now. Default: the server's default.
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "whole_seconds")]
    ttl: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SharedQuery {
    /// Watch: answer when the index is no longer this one.
    index: Option<u64>,
    /// Watch: the longest to wait for that, in seconds.
    wait: Option<f64>,
}

/// A whole number (JSON Schema counts `3.0` as an integer, so a client may send it that way).
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    use serde::de::Error;
    let n = serde_json::Number::deserialize(d)?;
    n.as_i64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        })
        .ok_or_else(|| D::Error::custom(format!("limit is a whole number, not {n}")))
}

/// The name auth tokens' key prefixes are checked against: the key in its kind's namespace, as
/// stored (a token for `jobs/` does not reach the semaphore `jobs/x`; one for `.semaphores/`
/// reaches every semaphore).
pub(super) fn namespaced(kind: SharedKind, key: &str) -> String {
    format!("{}/{key}", key::namespace(kind))
}

/// The kind a path of these routes names (the router sends no other here).
fn shared_kind(kind: PathKind) -> Result<SharedKind, ApiError> {
    match kind {
        PathKind::Shared(kind) => Ok(kind),
        PathKind::Lock => Err(ApiError::RouteNotFound),
    }
}

/// `POST /semaphores/{key}/{action}`, `POST /rwlocks/{key}/{action}`, and their bucket forms.
pub(super) async fn action(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<SharedView> {
    let LockPath {
        bucket,
        kind,
        key,
        action,
    } = LockPath::parse(uri.path(), true)?;
    let kind = shared_kind(kind)?;
    let action = action.ok_or(ApiError::RouteNotFound)?;
    if !action.is_post() {
        return Err(ApiError::MethodNotAllowed);
    }
    let engine = &state.engine;
    let bucket = bucket.as_deref();
    caller.authorize(
        bucket,
        &engine.config().default_bucket,
        &namespaced(kind, &key),
    )?;
    let result = match action {
        Action::Acquire => {
            let req = match kind {
                SharedKind::Semaphore => {
                    let b: SemaphoreAcquireBody =
                        parse_body(&headers, body)?.ok_or_else(|| body_required("\"limit\""))?;
                    SharedAcquireRequest {
                        owner: b.owner,
                        token: b.token,
                        ttl: b.ttl,
                        wait: b.wait,
                        limit: Some(b.limit),
                        mode: None,
                    }
                }
                SharedKind::Rwlock => {
                    let b: RwlockAcquireBody =
                        parse_body(&headers, body)?.ok_or_else(|| body_required("\"mode\""))?;
                    SharedAcquireRequest {
                        owner: b.owner,
                        token: b.token,
                        ttl: b.ttl,
                        wait: b.wait,
                        limit: None,
                        mode: Some(b.mode),
                    }
                }
            };
            engine.shared_acquire(bucket, &key, kind, req).await
        }
        Action::Renew => {
            let b: SharedRenewBody = parse_body(&headers, body)?.ok_or_else(token_required)?;
            engine
                .shared_renew(bucket, &key, kind, b.token.expose(), b.ttl)
                .await
        }
        Action::Release => {
            let b: ReleaseBody = parse_body(&headers, body)?.ok_or_else(token_required)?;
            engine
                .shared_release(bucket, &key, kind, b.token.expose())
                .await
        }
        Action::Break => {
            let admin = caller.admin()?;
            let b: BreakBody = parse_body(&headers, body)?.unwrap_or_default();
            b.check(&key, admin)?;
            engine.shared_break(bucket, &key, kind, admin).await
        }
        Action::Events => unreachable!("refused above: the change stream is read by GET"),
    };
    result.map(Json).map_err(|e| lock_error(&state, e))
}

/// `GET` on a semaphore's or read-write lock's path: the change stream when it ends in `/events`
/// after a key (so the status of a key whose last segment is `events` is asked for with that
/// slash encoded, as for locks), else the status or a watch.
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

/// `GET /semaphores/{key}` (status; with `index` or `wait`, a watch), `GET
/// /semaphores/{key}/watch`, the same for `/rwlocks`, and their bucket forms.
async fn status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    query: Result<Query<SharedQuery>, QueryRejection>,
) -> ApiResult<SharedView> {
    let Query(q) = query.map_err(ApiError::bad_query)?;
    let (
        LockPath {
            bucket, kind, key, ..
        },
        watch,
    ) = LockPath::parse_get(uri.path())?;
    let kind = shared_kind(kind)?;
    let engine = &state.engine;
    let bucket = bucket.as_deref();
    caller.authorize(
        bucket,
        &engine.config().default_bucket,
        &namespaced(kind, &key),
    )?;
    let view = match (watch, q.index, q.wait) {
        (false, None, None) => engine.shared_status(bucket, &key, kind).await,
        (_, index, wait) => engine.shared_watch(bucket, &key, kind, index, wait).await,
    };
    view.map(Json).map_err(|e| lock_error(&state, e))
}

/// The answer of `GET /semaphores`: one page of semaphores, in key order.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SemaphoreList {
    semaphores: Vec<SharedView>,
    /// Where the next page starts: send it back as `cursor` (with the same `prefix`) for the
    /// rest. `null` on the last page. Opaque: its form may change between versions.
    next: Option<String>,
}

/// The answer of `GET /rwlocks`: one page of read-write locks, in key order.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RwlockList {
    rwlocks: Vec<SharedView>,
    /// As a semaphore list's `next`.
    next: Option<String>,
}

/// `GET /semaphores?prefix=P&limit=N&cursor=C` and `GET /buckets/{bucket}/semaphores?...`.
pub(super) async fn list_semaphores(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    bucket: Option<Path<String>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<SemaphoreList> {
    let (semaphores, next) = list(&state, &caller, SharedKind::Semaphore, bucket, query).await?;
    Ok(Json(SemaphoreList { semaphores, next }))
}

/// `GET /rwlocks?prefix=P&limit=N&cursor=C` and `GET /buckets/{bucket}/rwlocks?...`.
pub(super) async fn list_rwlocks(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    bucket: Option<Path<String>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<RwlockList> {
    let (rwlocks, next) = list(&state, &caller, SharedKind::Rwlock, bucket, query).await?;
    Ok(Json(RwlockList { rwlocks, next }))
}

/// One page of `kind`'s list. An auth token's prefix bounds it as it bounds a lock list, checked
/// against the kind's namespace (as every semaphore or read-write lock route checks it).
async fn list(
    state: &AppState,
    caller: &Caller,
    kind: SharedKind,
    bucket: Option<Path<String>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<(Vec<SharedView>, Option<String>), ApiError> {
    let Query(q) = query.map_err(ApiError::bad_query)?;
    let engine = &state.engine;
    let bucket = bucket.map(|Path(b)| b);
    caller.authorize_bucket(bucket.as_deref(), &engine.config().default_bucket)?;
    let within = caller.list_prefix(&namespaced(kind, &q.prefix))?;
    // The caller's prefix or the one asked, whichever is narrower: one starts with the other,
    // and the one asked starts with the namespace, so both do.
    let prefix = within
        .strip_prefix(&namespaced(kind, ""))
        .expect("a list prefix within the kind's namespace");
    let page = engine
        .shared_list(
            bucket.as_deref(),
            kind,
            prefix,
            q.limit,
            q.cursor.as_deref(),
        )
        .await
        .map_err(|e| lock_error(state, e))?;
    Ok((page.items, page.next))
}

fn body_required(field: &str) -> ApiError {
    ApiError::MalformedBody(format!("a JSON body with a {field} is required"))
}
