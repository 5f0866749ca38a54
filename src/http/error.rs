//! The one table from outcomes to HTTP statuses. Every error answer is `application/problem+json`
//! (RFC 9457) with a stable `type`; details of 5xx answers go to the log, never to the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::lock::LockError;
use crate::wire::format_seed_time;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// `Retry-After` of a `clock-uncertain` answer: a wrong host's samples count for a minute, and
/// retrying every second meanwhile would only add load.
const CLOCK_UNCERTAIN_RETRY_SECS: u64 = 5;
/// `Retry-After` of a `too-many-watched-locks` answer: a watched lock is let go only when the
/// last of its waits and watches ends, which takes seconds; sooner would be refused again.
const TOO_MANY_WATCHED_RETRY_SECS: u64 = 5;

/// An error answer (RFC 9457 problem details). This struct is both what is sent and what the
/// OpenAPI document describes, so the two cannot drift apart.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:s3lock:problem:<kind>`, e.g. `urn:s3lock:problem:lock-held`.
    #[serde(rename = "type")]
    #[schema(example = "urn:s3lock:problem:lock-held")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// `lock-held` only: the holder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// `lock-held`: when the holder's lease ends; `semaphore-full` and `too-many-holders`: when
    /// the first holder's lease ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// `lock-delayed` only: when the lock can be taken, once its lock-delay has passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_at: Option<String>,
    /// `invalid-input` only: the field that was wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug)]
pub enum ApiError {
    /// 409 `lock-held`, with `owner`, `expires_at` and `Retry-After`.
    Held {
        owner: String,
        expires_at: DateTime<Utc>,
        retry_after_secs: u64,
    },
    /// 409 `lock-delayed`, with `available_at` and `Retry-After`: the last holder's lease ran
    /// out unreleased and its lock-delay has not passed.
    Delayed {
        available_at: DateTime<Utc>,
        retry_after_secs: u64,
    },
    /// 409 `not-holder`.
    NotHolder(String),
    /// 409 `semaphore-full`, with `expires_at` (the first lease to end) and `Retry-After`.
    SemaphoreFull {
        limit: u32,
        expires_at: DateTime<Utc>,
        retry_after_secs: u64,
    },
    /// 409 `limit-mismatch`: the request's limit is not the semaphore's, while holders remain.
    LimitMismatch { stored: u32, asked: u32 },
    /// 409 `too-many-holders`, with `expires_at` (the first lease to end) and `Retry-After`.
    TooManyHolders {
        max: usize,
        expires_at: DateTime<Utc>,
        retry_after_secs: u64,
    },
    /// 409 `lock-unreadable`: the stored object is not a lock document; nothing was written.
    Unreadable(String),
    /// 409 `write-unconfirmed`: a renew, release or break whose write may have landed, but the
    /// lock has moved on since and it cannot be proven. Released or lost: either way the
    /// caller no longer holds the lock.
    WriteUnconfirmed,
    /// 404 `lock-not-found`.
    LockNotFound,
    /// 400 `invalid-input`, naming the field.
    InvalidInput { field: &'static str, reason: String },
    /// 400 `malformed-body`: not JSON, wrong types, unknown fields.
    MalformedBody(String),
    /// 403 `bucket-not-allowed`.
    BucketNotAllowed(String),
    /// 413 `body-too-large`.
    BodyTooLarge,
    /// 415 `unsupported-media-type`.
    UnsupportedMediaType,
    /// 404 `not-found`: no such route.
    RouteNotFound,
    /// 405 `method-not-allowed`.
    MethodNotAllowed,
    /// 503 `contended`, with `Retry-After`.
    Contended,
    /// 503 `store-unavailable`, with `Retry-After`. Never a grant; but an acquire whose write was
    /// in flight when the store went away may have landed unseen (the server frees it once the
    /// store answers again; nobody holds its token, so nobody can refresh it).
    StoreUnavailable(String),
    /// 502 `store-error`: the store refused (missing bucket, credentials).
    StoreRefused(String),
    /// 503 `clock-uncertain`, with `Retry-After`: the lease has run out, but the store's hosts'
    /// clocks disagree by more than `--max-clock-spread`, so this replica takes over no expired
    /// lease until they agree again. The window's width goes to the log.
    ClockUncertain(String),
    /// 503 `too-many-watched-locks`, with `Retry-After`: a wait or watch on a lock this replica
    /// does not watch yet, while it already watches `--max-watched-locks`.
    TooManyWatchedLocks,
    /// 503 `overloaded`, with `Retry-After`: `--max-in-flight` lock requests were in flight;
    /// answered at once, before anything was read or written.
    Overloaded,
    /// 503 `timeout`: the request ran past the server's request timeout.
    Timeout,
    /// 401 `unauthorized`, with `WWW-Authenticate: Bearer`: no auth token, or an unknown one.
    Unauthorized { presented: bool },
    /// 403 `forbidden`: the auth token may not touch this key, or may not break locks.
    Forbidden(String),
    /// 503 `shutting-down`, with `Retry-After`: the replica is draining before it exits; it takes
    /// no new acquire (a waiting one is answered so), and `/readyz` says so too.
    ShuttingDown,
    /// 503 `not-ready`: the store is not answering, or the start-up store check has not passed.
    /// The text is shown to the client, so it must not carry the store's error details.
    NotReady(String),
}

impl ApiError {
    /// The whole table: status, `type`, title.
    fn describe(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        match self {
            Held { .. } => (
                StatusCode::CONFLICT,
                "lock-held",
                "The lock is held by another owner",
            ),
            Delayed { .. } => (
                StatusCode::CONFLICT,
                "lock-delayed",
                "The lock's last lease ran out unreleased; it is kept for its lock-delay",
            ),
            NotHolder(_) => (
                StatusCode::CONFLICT,
                "not-holder",
                "The token does not hold this lock",
            ),
            SemaphoreFull { .. } => (
                StatusCode::CONFLICT,
                "semaphore-full",
                "No permit of the semaphore is left",
            ),
            LimitMismatch { .. } => (
                StatusCode::CONFLICT,
                "limit-mismatch",
                "The semaphore's limit is another one while holders remain",
            ),
            TooManyHolders { .. } => (
                StatusCode::CONFLICT,
                "too-many-holders",
                "The lock has as many holders as one lock document holds",
            ),
            Unreadable(_) => (
                StatusCode::CONFLICT,
                "lock-unreadable",
                "The stored lock document cannot be read",
            ),
            WriteUnconfirmed => (
                StatusCode::CONFLICT,
                "write-unconfirmed",
                "The write may have landed; the lock has changed since",
            ),
            LockNotFound => (
                StatusCode::NOT_FOUND,
                "lock-not-found",
                "The lock does not exist",
            ),
            InvalidInput { .. } => (StatusCode::BAD_REQUEST, "invalid-input", "Invalid input"),
            MalformedBody(_) => (
                StatusCode::BAD_REQUEST,
                "malformed-body",
                "Malformed request body",
            ),
            BucketNotAllowed(_) => (
                StatusCode::FORBIDDEN,
                "bucket-not-allowed",
                "Bucket not allowed",
            ),
            BodyTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Request body too large",
            ),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            RouteNotFound => (StatusCode::NOT_FOUND, "not-found", "No such route"),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            Contended => (
                StatusCode::SERVICE_UNAVAILABLE,
                "contended",
                "The lock is contended; try again",
            ),
            StoreUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "The lock store is unavailable",
            ),
            StoreRefused(_) => (
                StatusCode::BAD_GATEWAY,
                "store-error",
                "The lock store refused the request",
            ),
            ClockUncertain(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "clock-uncertain",
                "The store's clock is too uncertain to take over an expired lease",
            ),
            TooManyWatchedLocks => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too-many-watched-locks",
                "This server watches as many locks as it may",
            ),
            Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "This server has as many lock requests in flight as it takes",
            ),
            Timeout => (
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "The request timed out",
            ),
            Unauthorized { .. } => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "A valid auth token is required",
            ),
            Forbidden(_) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "The auth token does not allow this",
            ),
            NotReady(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not-ready",
                "The server is not ready",
            ),
            ShuttingDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting-down",
                "The server is shutting down",
            ),
        }
    }

    fn detail(&self) -> String {
        use ApiError::*;
        match self {
            Held {
                owner, expires_at, ..
            } => {
                format!("held by {owner} until {}", format_seed_time(expires_at))
            }
            Delayed { available_at, .. } => format!(
                "the holder's lease ran out without a release; so that writes it may still have \
                 had in flight land first, nobody may take the lock before {}",
                format_seed_time(available_at)
            ),
            SemaphoreFull {
                limit, expires_at, ..
            } => format!(
                "all {limit} permits are held; the first lease ends at {}",
                format_seed_time(expires_at)
            ),
            LimitMismatch { stored, asked } => format!(
                "the semaphore's limit is {stored} and holders remain; this request asked for \
                 {asked}. Every process must agree on the limit; it changes once no holder remains"
            ),
            TooManyHolders {
                max, expires_at, ..
            } => format!(
                "the lock already has {max} holders; the first lease ends at {}",
                format_seed_time(expires_at)
            ),
            NotHolder(d) | Unreadable(d) | MalformedBody(d) | Forbidden(d) | NotReady(d) => {
                d.clone()
            }
            ClockUncertain(_) => "the lease has run out, but the clocks of the lock store's \
                hosts disagree by more than this server allows, so it takes over no expired \
                lease until they agree again; try again later"
                .into(),
            Unauthorized { presented: false } => {
                "send an auth token: Authorization: Bearer <auth token>".into()
            }
            Unauthorized { presented: true } => "the auth token is not known".into(),
            InvalidInput { field, reason } => format!("{field}: {reason}"),
            BucketNotAllowed(b) => format!("bucket {b:?} is not allowed by this server"),
            LockNotFound => "no lock has ever been taken under this key".into(),
            WriteUnconfirmed => {
                "the store's answer was lost and the lock changed before the outcome could be \
                 read back: the write may have landed. Either way this token no longer holds the \
                 lock: a release has nothing left to do; after a renew, stop work and acquire \
                 again; after a break, look at the lock before breaking it again"
                    .into()
            }
            BodyTooLarge => "the request body is larger than this server accepts".into(),
            UnsupportedMediaType => "send the body as application/json".into(),
            RouteNotFound => "see the README for the routes".into(),
            MethodNotAllowed => "this route does not take that method".into(),
            Contended => "writers kept racing on this lock".into(),
            StoreUnavailable(_) => {
                "the lock store could not be reached; try again. If an acquire's write was in \
                 flight it may have landed: the server frees such a grant once the store answers \
                 again, so acquire again with a wait to be handed the lock"
                    .into()
            }
            StoreRefused(_) => "the lock store refused the request; see the server log".into(),
            Timeout => "the request took longer than the server allows".into(),
            TooManyWatchedLocks => "waiting on or watching a lock needs this server to watch \
                it, and it already watches as many locks as it may; locks it watches may still \
                be waited on and watched. Try again later, or on another replica"
                .into(),
            Overloaded => "nothing was read or written; try again after Retry-After, or on \
                another replica"
                .into(),
            ShuttingDown => "this server is shutting down and takes no new acquires; try \
                another replica, or this one once it is back"
                .into(),
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Held {
                retry_after_secs, ..
            }
            | ApiError::Delayed {
                retry_after_secs, ..
            }
            | ApiError::SemaphoreFull {
                retry_after_secs, ..
            }
            | ApiError::TooManyHolders {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            ApiError::Contended
            | ApiError::StoreUnavailable(_)
            | ApiError::Timeout
            | ApiError::Overloaded
            | ApiError::ShuttingDown
            | ApiError::NotReady(_) => Some(1),
            ApiError::TooManyWatchedLocks => Some(TOO_MANY_WATCHED_RETRY_SECS),
            // The window narrows once the disagreeing samples age out (within a minute).
            ApiError::ClockUncertain(_) => Some(CLOCK_UNCERTAIN_RETRY_SECS),
            _ => None,
        }
    }

    /// A query string that does not parse: 400 `invalid-input` on the field `query`.
    pub fn bad_query(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::InvalidInput {
            field: "query",
            reason: e.body_text(),
        }
    }

    pub fn from_lock(e: LockError, now: DateTime<Utc>) -> Self {
        match e {
            LockError::Held { owner, expires_at } => ApiError::Held {
                owner,
                expires_at,
                retry_after_secs: retry_after_secs(expires_at, now),
            },
            LockError::Delayed { available_at } => ApiError::Delayed {
                available_at,
                retry_after_secs: retry_after_secs(available_at, now),
            },
            LockError::SemaphoreFull { limit, expires_at } => ApiError::SemaphoreFull {
                limit,
                expires_at,
                retry_after_secs: retry_after_secs(expires_at, now),
            },
            LockError::LimitMismatch { stored, asked } => ApiError::LimitMismatch { stored, asked },
            LockError::TooManyHolders { max, expires_at } => ApiError::TooManyHolders {
                max,
                expires_at,
                retry_after_secs: retry_after_secs(expires_at, now),
            },
            LockError::NotHolder(d) => ApiError::NotHolder(d),
            LockError::NotFound => ApiError::LockNotFound,
            LockError::Unconfirmed => ApiError::WriteUnconfirmed,
            LockError::InvalidInput { field, reason } => ApiError::InvalidInput { field, reason },
            LockError::BucketNotAllowed(b) => ApiError::BucketNotAllowed(b),
            LockError::Unreadable(d) => ApiError::Unreadable(d),
            LockError::Contended => ApiError::Contended,
            LockError::StoreUnavailable(d) => ApiError::StoreUnavailable(d),
            LockError::StoreRefused(d) => ApiError::StoreRefused(d),
            LockError::TooManyWatchedLocks { .. } => ApiError::TooManyWatchedLocks,
            e @ LockError::ClockUncertain { .. } => ApiError::ClockUncertain(e.to_string()),
            LockError::ShuttingDown => ApiError::ShuttingDown,
        }
    }

    /// Rebuilds a framework-made error response (an empty 405, 408, 413…) as a problem.
    pub fn from_status(status: StatusCode) -> Option<Self> {
        match status {
            StatusCode::METHOD_NOT_ALLOWED => Some(ApiError::MethodNotAllowed),
            StatusCode::PAYLOAD_TOO_LARGE => Some(ApiError::BodyTooLarge),
            StatusCode::REQUEST_TIMEOUT => Some(ApiError::Timeout),
            StatusCode::NOT_FOUND => Some(ApiError::RouteNotFound),
            _ => None,
        }
    }
}

/// Seconds until `expires_at` (a lease's end, a lock-delay's), rounded up and at least 1.
fn retry_after_secs(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    let ms = (expires_at - now).num_milliseconds().max(0);
    u64::try_from(ms).unwrap_or(0).div_ceil(1000).max(1)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, title) = self.describe();
        match &self {
            ApiError::StoreUnavailable(cause) | ApiError::StoreRefused(cause) => {
                tracing::warn!(problem = kind, %cause, "store error")
            }
            // Warned once when the window grew too wide (store/s3.rs), not on every refusal.
            ApiError::ClockUncertain(cause) => {
                tracing::debug!(problem = kind, %cause, "request refused")
            }
            _ => tracing::debug!(problem = kind, detail = %self.detail(), "request refused"),
        }
        let mut body = Problem {
            kind: format!("urn:s3lock:problem:{kind}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: self.detail(),
            owner: None,
            expires_at: None,
            available_at: None,
            field: None,
        };
        match &self {
            ApiError::Held {
                owner, expires_at, ..
            } => {
                body.owner = Some(owner.clone());
                body.expires_at = Some(format_seed_time(expires_at));
            }
            ApiError::Delayed { available_at, .. } => {
                body.available_at = Some(format_seed_time(available_at));
            }
            ApiError::SemaphoreFull { expires_at, .. }
            | ApiError::TooManyHolders { expires_at, .. } => {
                body.expires_at = Some(format_seed_time(expires_at));
            }
            ApiError::InvalidInput { field, .. } => body.field = Some((*field).to_owned()),
            _ => {}
        }
        let text = serde_json::to_string(&body).expect("a problem always serialises");
        let mut response = (status, text).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let ApiError::Unauthorized { presented } = self {
            // RFC 6750: name the scheme; say the token was bad only when one was sent.
            let challenge = if presented {
                r#"Bearer realm="s3lock", error="invalid_token""#
            } else {
                r#"Bearer realm="s3lock""#
            };
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    async fn answer(
        e: LockError,
        now: DateTime<Utc>,
    ) -> (StatusCode, serde_json::Value, Option<u64>) {
        let response = ApiError::from_lock(e, now).into_response();
        let retry = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().parse().unwrap());
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap(), retry)
    }

    #[tokio::test]
    async fn a_full_semaphore_is_409_semaphore_full_with_the_first_lease_end_and_retry_after() {
        let now = DateTime::<Utc>::UNIX_EPOCH;
        let expires_at = now + Duration::milliseconds(2500);
        let (status, body, retry) = answer(
            LockError::SemaphoreFull {
                limit: 3,
                expires_at,
            },
            now,
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["type"], "urn:s3lock:problem:semaphore-full");
        assert_eq!(body["expires_at"], format_seed_time(&expires_at));
        assert_eq!(retry, Some(3));
    }

    #[tokio::test]
    async fn a_limit_mismatch_is_409_limit_mismatch_naming_both_limits() {
        let now = DateTime::<Utc>::UNIX_EPOCH;
        let (status, body, retry) = answer(
            LockError::LimitMismatch {
                stored: 3,
                asked: 5,
            },
            now,
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["type"], "urn:s3lock:problem:limit-mismatch");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains('3') && detail.contains('5'), "{detail}");
        assert_eq!(retry, None);
    }

    #[tokio::test]
    async fn too_many_holders_is_409_with_retry_after() {
        let now = DateTime::<Utc>::UNIX_EPOCH;
        let expires_at = now + Duration::seconds(10);
        let e = LockError::TooManyHolders {
            max: 256,
            expires_at,
        };
        let (status, body, retry) = answer(e, now).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["type"], "urn:s3lock:problem:too-many-holders");
        assert_eq!(retry, Some(10));
    }
}
