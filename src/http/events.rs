//! `GET /locks/{key}/events` (and an election's `observe`): a change stream as server-sent
//! events (`text/event-stream`).
//! Each event is `event: <kind>`, `id: <index>`, `data: <the lock's view, one line of JSON>`; a
//! comment `: keep-alive` goes out whenever nothing else has for [`KEEP_ALIVE`]. What the kinds
//! mean and when they come is the engine's (`lock::events`); this file only frames them.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::Query;
use axum::http::{HeaderMap, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::Caller;
use super::error::ApiError;
use super::path::{LockPath, PathKind};
use super::shared::namespaced;
use super::AppState;
use crate::lock::{EventKind, LockError, LockEvent};

/// How long a stream may be silent before a keep-alive comment: proxies and load balancers
/// commonly close a connection idle for 30 to 60 seconds.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The header an `EventSource` sends when it reconnects: the `id` of the last event it got.
const LAST_EVENT_ID: &str = "last-event-id";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    /// As the `Last-Event-ID` header, for clients that cannot set headers; the header wins.
    last_event_id: Option<u64>,
}

/// `GET /locks/{key}/events`, `GET /semaphores/{key}/events`, `GET /rwlocks/{key}/events`, and
/// their `/buckets/{bucket}/...` forms. The views are each kind's own (a lock view, a shared
/// view); the framing is one.
pub(super) async fn events(
    state: AppState,
    caller: Caller,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let last_id = last_event_id(&uri, &headers)?;
    let LockPath {
        bucket, kind, key, ..
    } = LockPath::parse(uri.path(), true)?;
    let engine = &state.engine;
    let refused = |e| ApiError::from_lock(e, engine.now().earliest);
    let default_bucket = &engine.config().default_bucket;
    let bucket = bucket.as_deref();
    match kind {
        PathKind::Lock => {
            caller.authorize(bucket, default_bucket, &key)?;
            let stream = engine
                .events(bucket, &key, last_id)
                .await
                .map_err(refused)?;
            Ok(stream_response(stream.map(|item| {
                item.map(|LockEvent { kind, view }| (kind, view.index, view))
            })))
        }
        PathKind::Shared(kind) => {
            caller.authorize(bucket, default_bucket, &namespaced(kind, &key))?;
            let stream = engine
                .shared_events(bucket, &key, kind, last_id)
                .await
                .map_err(refused)?;
            Ok(stream_response(stream.map(|item| {
                item.map(|LockEvent { kind, view }| (kind, view.index, view))
            })))
        }
    }
}

/// The id of the last event a client saw: its `Last-Event-ID` header (what an `EventSource`
/// sends when it reconnects), else the `last_event_id` query parameter.
pub(super) fn last_event_id(uri: &Uri, headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Query(q) = Query::<EventsQuery>::try_from_uri(uri).map_err(ApiError::bad_query)?;
    match headers.get(LAST_EVENT_ID) {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| ApiError::InvalidInput {
                field: "Last-Event-ID",
                reason: "must be the id of an event of this stream (a whole number)".into(),
            }),
        None => Ok(q.last_event_id),
    }
}

/// A stream of (kind, id, view) as server-sent events, with keep-alive comments.
pub(super) fn stream_response<V: Serialize>(
    stream: impl Stream<Item = Result<(EventKind, u64, V), LockError>> + Send + 'static,
) -> Response {
    let frames = stream.map(|item| Ok::<_, Infallible>(frame(item)));
    Sse::new(frames)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response()
}

/// One event on the wire. A document that turned unreadable ends the stream with an
/// `unreadable` event (no `id`: it is no state of the lock), its data shaped as the 409 problem.
fn frame<V: Serialize>(item: Result<(EventKind, u64, V), LockError>) -> Event {
    match item {
        Ok((kind, id, view)) => Event::default()
            .event(kind.as_str())
            .id(id.to_string())
            .json_data(&view)
            .expect("a view always serialises"),
        Err(e) => {
            let detail = match e {
                LockError::Unreadable(why) => why,
                other => other.to_string(),
            };
            Event::default()
                .event("unreadable")
                .json_data(json!({
                    "type": "urn:s3lock:problem:lock-unreadable",
                    "title": "The stored lock document cannot be read",
                    "detail": detail,
                }))
                .expect("a problem always serialises")
        }
    }
}
