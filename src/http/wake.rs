//! `POST /internal/wake`: a peer replica freed a lock; wake this replica's waiters on it.
//! Mounted only when a peer secret is configured; the hint's HMAC is its authentication (no
//! auth token: replicas hold no client credentials).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

use super::error::ApiError;
use super::AppState;
use crate::metrics as m;
use crate::peers::{self, HintKey};

#[derive(Clone)]
pub(super) struct WakeState {
    pub app: AppState,
    pub key: HintKey,
}

pub(super) async fn wake(
    State(state): State<WakeState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let metrics = state.app.engine.metrics();
    let signature = headers
        .get(peers::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let hint = match state.key.open(&body, signature, peers::wall_clock_ms()) {
        Ok(hint) => hint,
        Err(e) => {
            metrics.count(m::PEER_HINTS_RECEIVED, &[("outcome", "refused")]);
            tracing::debug!(error = %e, "refused a wake-up hint");
            return Err(ApiError::Forbidden(e.to_string()));
        }
    };
    metrics.count(m::PEER_HINTS_RECEIVED, &[("outcome", "accepted")]);
    state.app.engine.peer_hint(&hint.bucket, &hint.object);
    Ok(StatusCode::NO_CONTENT)
}
