//! The HTTP API: routes, request parsing, and the middleware stack (request ids, tracing, a
//! request timeout, a body limit). Handlers translate HTTP into engine calls and engine outcomes
//! into HTTP through the one table in [`error`].

pub mod error;
mod handlers;
pub mod path;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::lock::Engine;
use error::{ApiError, PROBLEM_JSON};

/// The largest request body accepted: lock requests are a few small fields.
pub const BODY_LIMIT: usize = 4 * 1024;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Debug, Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
}

/// The whole application, ready to serve or to call with `oneshot` in tests.
pub fn router(engine: Arc<Engine>, request_timeout: Duration) -> Router {
    let state = AppState { engine };
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/locks", get(handlers::list))
        .route("/locks/{*rest}", get(handlers::status).post(handlers::action))
        .route("/buckets/{bucket}/locks", get(handlers::list_in_bucket))
        .route(
            "/buckets/{bucket}/locks/{*rest}",
            get(handlers::status).post(handlers::action),
        )
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                        let id = req
                            .headers()
                            .get(&REQUEST_ID)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-");
                        tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                    }),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(axum::middleware::map_response(problem_for_bare_errors))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    request_timeout,
                )),
        )
}

/// Layers below the handlers (the timeout, the router itself) answer some errors with an empty
/// body; give those the same problem+json shape as every other error.
async fn problem_for_bare_errors(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    if !status.is_client_error() && !status.is_server_error() || is_problem {
        return response;
    }
    match ApiError::from_status(status) {
        Some(problem) => {
            let allow = response.headers().get(header::ALLOW).cloned();
            let mut fresh = problem.into_response();
            if let Some(allow) = allow {
                fresh.headers_mut().insert(header::ALLOW, allow);
            }
            fresh
        }
        None => response,
    }
}
