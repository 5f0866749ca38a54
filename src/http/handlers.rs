//! Request handlers: HTTP in, engine calls, HTTP out. Paths are parsed in `path.rs`.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::path::LockPath;
use super::AppState;
use crate::lock::{AcquireRequest, LockError, LockView};

type ApiResult<T> = Result<Json<T>, ApiError>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AcquireBody {
    owner: Option<String>,
    ttl: Option<i64>,
    wait: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewBody {
    token: String,
    ttl: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    token: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StatusQuery {
    owner: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    #[serde(default)]
    prefix: String,
}

pub(super) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `POST /locks/{key}/{action}` and `POST /buckets/{bucket}/locks/{key}/{action}`.
pub(super) async fn action(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<LockView> {
    let LockPath {
        bucket,
        key,
        action,
    } = LockPath::parse(uri.path(), true)?;
    let action = action.unwrap_or_default();
    let bucket = bucket.as_deref();
    let engine = &state.engine;
    let result = match action.as_str() {
        "acquire" => {
            let b: AcquireBody = parse_body(&headers, body)?.unwrap_or_default();
            let req = AcquireRequest {
                owner: b.owner,
                ttl: b.ttl,
                wait: b.wait,
            };
            engine.acquire(bucket, &key, req).await
        }
        "renew" => {
            let b: RenewBody = parse_body(&headers, body)?.ok_or_else(token_required)?;
            engine.renew(bucket, &key, &b.token, b.ttl).await
        }
        "release" => {
            let b: ReleaseBody = parse_body(&headers, body)?.ok_or_else(token_required)?;
            engine.release(bucket, &key, &b.token).await
        }
        _ => return Err(ApiError::RouteNotFound),
    };
    result.map(Json).map_err(|e| lock_error(&state, e))
}

/// `GET /locks/{key}` and `GET /buckets/{bucket}/locks/{key}`.
pub(super) async fn status(
    State(state): State<AppState>,
    uri: Uri,
    query: Result<Query<StatusQuery>, QueryRejection>,
) -> ApiResult<LockView> {
    let Query(q) = query.map_err(|e| ApiError::InvalidInput {
        field: "query",
        reason: e.body_text(),
    })?;
    let LockPath { bucket, key, .. } = LockPath::parse(uri.path(), false)?;
    state
        .engine
        .status(bucket.as_deref(), &key, q.owner.as_deref())
        .await
        .map(Json)
        .map_err(|e| lock_error(&state, e))
}

/// `GET /locks?prefix=P`.
pub(super) async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Value> {
    list_locks(state, None, query).await
}

/// `GET /buckets/{bucket}/locks?prefix=P`.
pub(super) async fn list_in_bucket(
    State(state): State<AppState>,
    Path(bucket): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Value> {
    list_locks(state, Some(bucket), query).await
}

async fn list_locks(
    state: AppState,
    bucket: Option<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Value> {
    let Query(q) = query.map_err(|e| ApiError::InvalidInput {
        field: "query",
        reason: e.body_text(),
    })?;
    let locks = state
        .engine
        .list(bucket.as_deref(), &q.prefix)
        .await
        .map_err(|e| lock_error(&state, e))?;
    Ok(Json(json!({ "locks": locks })))
}

fn lock_error(state: &AppState, e: LockError) -> ApiError {
    ApiError::from_lock(e, state.engine.now().earliest)
}

fn token_required() -> ApiError {
    ApiError::MalformedBody("a JSON body with a \"token\" is required".into())
}

/// Parses a JSON body; `None` for an empty one. A body with a content type must say JSON.
fn parse_body<T: DeserializeOwned>(
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
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| ApiError::MalformedBody(e.to_string()))
}
