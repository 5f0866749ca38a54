//! The HTTP API: routes, request parsing, and the middleware stack (request ids, tracing,
//! metrics, auth, a request timeout, a body limit). Handlers translate HTTP into engine calls and
//! engine outcomes into HTTP through the one table in [`error`]: `handlers` those of the lock
//! routes (and health, readiness, metrics), `shared` those of the semaphore and read-write lock
//! routes. [`conn`] accepts and bounds the connections; [`drain`] counts the requests in flight
//! for a shutdown.

pub mod auth;
pub mod conn;
pub mod drain;
mod elections;
pub mod error;
mod events;
mod handlers;
pub mod openapi;
pub mod path;
mod shared;
mod wake;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, State};
use axum::http::{header, HeaderName, Method, Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::auth::AuthTokens;
use crate::lock::Engine;
use crate::metrics::Metrics;
use error::{ApiError, PROBLEM_JSON};
use path::Action;

/// The largest request body accepted: lock requests are a few small fields, and a value of at
/// most 4 KiB of compact JSON (`lock::terms::MAX_VALUE_BYTES`), with room for how a client
/// writes it (indented, or every character escaped, as Python's `json` does past ASCII: up to
/// three times its compact size).
pub const BODY_LIMIT: usize = 16 * 1024;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Debug, Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    /// The OpenAPI document, rendered once for this server's limits.
    pub openapi: Arc<String>,
}

/// The whole application; with `auth`, every lock route needs one of its auth tokens. At most
/// `max_in_flight` lock requests run at once (see [`shed_load`]).
/// `/healthz`, `/readyz`, `/metrics` and `/openapi.json` stay open: probes and scrapers carry no
/// credentials, and none of them shows a key, an owner or a token. With `hints`, peers' wake-up
/// hints are taken on `POST /internal/wake`.
pub fn app(
    engine: Arc<Engine>,
    request_timeout: Duration,
    max_in_flight: usize,
    auth: Option<Arc<AuthTokens>>,
    hints: Option<crate::peers::HintKey>,
) -> Router {
    let metrics = engine.metrics().clone();
    let openapi = Arc::new(openapi::document(engine.config()).to_string());
    let state = AppState { engine, openapi };
    let wake = match hints {
        Some(key) => Router::new()
            .route(crate::peers::WAKE_PATH, post(wake::wake))
            .with_state(wake::WakeState {
                app: state.clone(),
                key,
            }),
        None => Router::new(),
    };
    let locks = Router::new()
        .route("/locks", get(handlers::list))
        .route("/locks/{*rest}", get(handlers::read).post(handlers::action))
        .route(
            "/elections/{*rest}",
            get(elections::get).post(elections::post),
        )
        .route("/buckets/{bucket}/locks", get(handlers::list_in_bucket))
        .route(
            "/buckets/{bucket}/locks/{*rest}",
            get(handlers::read).post(handlers::action),
        )
        .route("/semaphores", get(shared::list_semaphores))
        .route("/rwlocks", get(shared::list_rwlocks))
        .route("/buckets/{bucket}/semaphores", get(shared::list_semaphores))
        .route("/buckets/{bucket}/rwlocks", get(shared::list_rwlocks))
        .route(
            "/semaphores/{*rest}",
            get(shared::read).post(shared::action),
        )
        .route("/rwlocks/{*rest}", get(shared::read).post(shared::action))
        .route(
            "/buckets/{bucket}/semaphores/{*rest}",
            get(shared::read).post(shared::action),
        )
        .route(
            "/buckets/{bucket}/rwlocks/{*rest}",
            get(shared::read).post(shared::action),
        )
        .route_layer(middleware::from_fn_with_state(auth, auth::authenticate))
        .route_layer(middleware::from_fn_with_state(
            InFlight {
                permits: Arc::new(Semaphore::new(max_in_flight)),
                metrics: metrics.clone(),
            },
            shed_load,
        ));
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .route("/openapi.json", get(openapi::serve))
        .merge(locks)
        .merge(wake)
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
                        tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id, caller = tracing::field::Empty)
                    }),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(axum::middleware::from_fn(problem_for_bare_errors))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    request_timeout,
                )),
        )
        .layer(middleware::from_fn_with_state(metrics, count_requests))
}

/// The lock requests in flight, bounded.
#[derive(Clone)]
struct InFlight {
    /// One permit per lock request in flight, held until its answer is made (a blocked waiter
    /// or a watch holds one for all of its wait, and a change stream for as long as it runs).
    permits: Arc<Semaphore>,
    metrics: Metrics,
}

/// Lock requests past the bound are answered 503 `overloaded` at once rather than queued: a
/// queue of requests that each wait for the store (or for a lock) has no end a client can see,
/// and grows with every retry. Only the lock routes are shed; health, readiness, metrics and the
/// OpenAPI document never are, so probes still tell a busy replica from a dead one.
async fn shed_load(
    State(in_flight): State<InFlight>,
    request: Request<axum::body::Body>,
    next: Next,
) -> Response {
    let Ok(permit) = in_flight.permits.clone().try_acquire_owned() else {
        in_flight.metrics.count(crate::metrics::REQUESTS_SHED, &[]);
        return ApiError::Overloaded.into_response();
    };
    let gauge = in_flight.metrics.lock_request();
    let response = next.run(request).await;
    // A change stream is answered at once and then runs for as long as its client stays,
    // costing a task and its buffers all along: it keeps its place until it ends, as a watch
    // keeps its place for its wait. Else its only bound would be the connections times the
    // streams each may open.
    let streaming = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !streaming {
        return response;
    }
    let (parts, body) = response.into_parts();
    let held = (permit, gauge);
    let body = body.into_data_stream().map(move |chunk| {
        let _ = &held;
        chunk
    });
    Response::from_parts(parts, axum::body::Body::from_stream(body))
}

/// Counts every request by route template (never the raw path: keys would make the label set
/// unbounded, and could be secrets), method and final status, with its latency.
async fn count_requests(
    State(metrics): State<Metrics>,
    matched: Option<MatchedPath>,
    request: Request<axum::body::Body>,
    next: Next,
) -> Response {
    let route = route_label(
        matched.as_ref().map(MatchedPath::as_str),
        request.method(),
        request.uri().path(),
    );
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.http_request(
        &route,
        method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// The route template a request matched, with the lock action spelled out (the router serves
/// every action through one wildcard route).
fn route_label(matched: Option<&str>, method: &Method, path: &str) -> String {
    let Some(matched) = matched else {
        return "unmatched".into();
    };
    let Some(base) = matched.strip_suffix("/{*rest}") else {
        return matched.to_owned();
    };
    if base == "/elections" {
        return match path::ElectionPath::parse(path, method == Method::POST) {
            Ok(path::ElectionPath {
                action: Some(action),
                ..
            }) => format!("/elections/{{name}}/{}", action.as_str()),
            Ok(_) => "/elections/{name}".into(),
            Err(_) => "/elections/{unknown}".into(),
        };
    }
    let base = format!("{base}/{{key}}");
    if method != Method::POST {
        // A GET is a status, unless its path ends in `/events` after a key.
        return match path::LockPath::parse(path, true).map(|p| p.action) {
            Ok(Some(Action::Events)) => format!("{base}/{}", Action::Events.as_str()),
            _ => base,
        };
    }
    match path.rsplit('/').next().and_then(Action::parse) {
        Some(action) => format!("{base}/{}", action.as_str()),
        None => format!("{base}/{{unknown}}"),
    }
}

/// Layers below the handlers (the timeout, the router itself) answer some errors with an empty
/// body; give those the same problem+json shape as every other error.
async fn problem_for_bare_errors(request: Request<axum::body::Body>, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        if let Some(allow) = path::allowed_methods(&path) {
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allow));
        }
    }
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
