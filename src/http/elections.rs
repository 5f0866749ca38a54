//! `/elections/{name}`: leader election over the lock engine. `POST .../campaign`, `.../proclaim`,
//! `.../renew`, `.../resign`; `GET /elections/{name}` (or `.../leader`) and `GET .../observe` (the
//! change stream). Paths are parsed in `path.rs`; the mapping onto locks is the engine's
//! (`lock::election`).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::ApiError;
use super::events::{last_event_id, stream_response};
use super::handlers::{lock_error, parse_body, present, token_required, whole_seconds};
use super::path::{ElectionAction, ElectionPath};
use super::AppState;
use crate::lock::key::ELECTIONS;
use crate::lock::{CampaignRequest, ElectionEvent, HolderToken};
use crate::wire::ElectionView;

/// The body of a campaign; every field is optional, and so is the body itself.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CampaignBody {
    /// The candidate's name, 1 to 256 bytes (as a lock's owner). Default: a random one.
    #[schema(min_length = 1, max_length = 256)]
    candidate: Option<String>,
    /// What to publish once leading (its address, say): any JSON, at most 4096 bytes compact,
    /// shown to everyone who may read the election.
    #[serde(default, deserialize_with = "present")]
    value: Option<Value>,
    /// The leader's lease in seconds, 1 to the server's maximum; renew (or proclaim) within it.
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "whole_seconds")]
    ttl: Option<i64>,
    /// Seconds to wait for leadership while another candidate leads, 0 to the server's maximum.
    #[schema(minimum = 0)]
    wait: Option<f64>,
    /// Seconds nobody else may lead after this leader's lease, should it run out without a
    /// resignation, 0 to the server's maximum.
    #[schema(minimum = 0)]
    #[serde(default, deserialize_with = "whole_seconds")]
    lock_delay: Option<i64>,
}

/// The body of a proclaim.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ProclaimBody {
    /// The leader's token, from its campaign.
    #[schema(value_type = String)]
    token: HolderToken,
    /// The new value to publish (`null` clears it).
    value: Value,
    /// The lease in seconds, counted from now. Default: the server's default.
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "whole_seconds")]
    ttl: Option<i64>,
}

/// The body of an election's renew.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LeaderRenewBody {
    /// The leader's token, from its campaign.
    #[schema(value_type = String)]
    token: HolderToken,
    /// The lease in seconds, counted from now. Default: the server's default.
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "whole_seconds")]
    ttl: Option<i64>,
}

/// The body of a resign.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ResignBody {
    /// The leader's token, from its campaign.
    #[schema(value_type = String)]
    token: HolderToken,
}

/// The key an auth token's prefix is checked against: elections live at `.elections/{name}`,
/// so a token limited to a prefix reaches the elections that key starts with.
fn auth_key(name: &str) -> String {
    format!("{ELECTIONS}/{name}")
}

/// `POST /elections/{name}/{campaign|proclaim|renew|resign}`.
pub(super) async fn post(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ElectionView>, ApiError> {
    let ElectionPath { name, action } = ElectionPath::parse(uri.path(), true)?;
    let engine = &state.engine;
    let default_bucket = &engine.config().default_bucket;
    caller.authorize(None, default_bucket, &auth_key(&name))?;
    let result = match action.ok_or(ApiError::RouteNotFound)? {
        ElectionAction::Campaign => {
            let b: CampaignBody = parse_body(&headers, body)?.unwrap_or_default();
            let req = CampaignRequest {
                candidate: b.candidate,
                value: b.value,
                ttl: b.ttl,
                wait: b.wait,
                lock_delay: b.lock_delay,
            };
            engine.campaign(None, &name, req).await
        }
        ElectionAction::Proclaim => {
            let b: ProclaimBody = parse_body(&headers, body)?.ok_or_else(token_required)?;
            engine
                .lead_on(None, &name, b.token.expose(), Some(b.value), b.ttl)
                .await
        }
        ElectionAction::Renew => {
            let b: LeaderRenewBody = parse_body(&headers, body)?.ok_or_else(token_required)?;
            engine
                .lead_on(None, &name, b.token.expose(), None, b.ttl)
                .await
        }
        ElectionAction::Resign => {
            let b: ResignBody = parse_body(&headers, body)?.ok_or_else(token_required)?;
            engine.resign(None, &name, b.token.expose()).await
        }
        ElectionAction::Leader | ElectionAction::Observe => {
            unreachable!("a POST path names a POST action")
        }
    };
    result.map(Json).map_err(|e| lock_error(&state, e))
}

/// `GET /elections/{name}`, `GET /elections/{name}/leader` and `GET /elections/{name}/observe`.
pub(super) async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let ElectionPath { name, action } = ElectionPath::parse(uri.path(), false)?;
    let engine = &state.engine;
    caller.authorize(None, &engine.config().default_bucket, &auth_key(&name))?;
    match action {
        Some(ElectionAction::Observe) => {
            let last_id = last_event_id(&uri, &headers)?;
            let stream = engine
                .observe(None, &name, last_id)
                .await
                .map_err(|e| lock_error(&state, e))?;
            Ok(stream_response(stream.map(|item| {
                item.map(|ElectionEvent { kind, view }| (kind, view.index, view))
            })))
        }
        _ => {
            // The view takes no query: a mistyped parameter is said rather than ignored.
            if uri.query().is_some_and(|q| !q.is_empty()) {
                return Err(ApiError::InvalidInput {
                    field: "query",
                    reason: "an election's view takes no query parameters".into(),
                });
            }
            let view = engine
                .election(None, &name)
                .await
                .map_err(|e| lock_error(&state, e))?;
            Ok(Json(view).into_response())
        }
    }
}
