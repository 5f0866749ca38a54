//! What a lock operation can end in, named by outcome. The HTTP layer maps each to a status in
//! one table (`http/error.rs`); nothing here knows about HTTP.

use chrono::{DateTime, Duration, Utc};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another owner holds the lock and its lease has not run out.
    #[error("the lock is held by {owner} until {expires_at}")]
    Held {
        owner: String,
        expires_at: DateTime<Utc>,
    },
    /// The lock's last holder let its lease run out without releasing it, and the lock-delay
    /// it asked for has not passed: nobody may take the lock before `available_at`, so that
    /// writes the vanished holder still had in flight land first.
    #[error("the lock's lease ran out unreleased; it can be taken from {available_at}")]
    Delayed { available_at: DateTime<Utc> },
    /// A semaphore whose `limit` permits are all held by live leases; the first of them ends at
    /// `expires_at` (a permit may come back sooner, at a release).
    #[error("no permit left: all {limit} permits are held, the first lease ends at {expires_at}")]
    SemaphoreFull {
        limit: u32,
        expires_at: DateTime<Utc>,
    },
    /// The request's `limit` is not the semaphore's, and holders that agreed to the stored one
    /// still hold it: granting would break the promise made to them. Once none remains, the
    /// next acquire's limit replaces the stored one.
    #[error(
        "the semaphore's limit is {stored} while holders remain; this request asked for {asked}"
    )]
    LimitMismatch { stored: u32, asked: u32 },
    /// A multi-holder lock (a read-write lock's readers) already has as many holders as one
    /// document may hold (`max`); the first of their leases ends at `expires_at`.
    #[error("the lock already has {max} holders, as many as one document holds")]
    TooManyHolders {
        max: usize,
        expires_at: DateTime<Utc>,
    },
    /// The token given is not the current holder's (never was, was released and re-granted, or
    /// its lease ran out).
    #[error("{0}")]
    NotHolder(String),
    /// The lock has never existed.
    #[error("the lock does not exist")]
    NotFound,
    /// The request itself is wrong; nothing was read or written.
    #[error("{field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },
    /// The bucket is not in the configured allow-list.
    #[error("bucket {0:?} is not allowed by this server's configuration")]
    BucketNotAllowed(String),
    /// The stored object is not a lock document; it is never overwritten.
    #[error("the stored lock document cannot be read: {0}")]
    Unreadable(String),
    /// Writers kept racing on this lock and no decision could be made; try again.
    #[error("the lock is contended; try again")]
    Contended,
    /// The store could not be reached, or gave an answer that proves nothing. The caller was not
    /// granted anything; a grant in flight may still land, and is then freed by the orphan
    /// watcher (its token was never handed out, so no one can refresh it).
    #[error("the lock store is unavailable: {0}")]
    StoreUnavailable(String),
    /// A renew, release or break whose write may have landed, but which the lock has moved past
    /// since (other writes followed before its outcome could be read back, more than a document
    /// remembers): whether it was applied cannot be proven. The lock is no longer in the state it
    /// wrote either way: a released lock stays released or passed on; a renewed lease is gone.
    #[error("the write may have landed, but the lock has changed since and it cannot be proven")]
    Unconfirmed,
    /// The lease has run out, but this replica knows the store's time only within a window
    /// wider than allowed (the store's hosts' clocks disagree), so it takes over no expired
    /// lease until the window narrows.
    #[error(
        "the store's clock is known here only within {} ms, more than the {} ms allowed: its \
         hosts' clocks disagree",
        width.num_milliseconds(),
        max.num_milliseconds()
    )]
    ClockUncertain { width: Duration, max: Duration },
    /// This replica already watches as many locks as it may (`max`), and a wait or watch asked
    /// for one more; nothing was read or written for it. Locks already watched may be joined.
    #[error("this replica already watches {max} locks, as many as it may")]
    TooManyWatchedLocks { max: usize },
    /// This replica is shutting down and takes no new acquire (an acquire that was waiting is
    /// answered this way too); another replica, or this one once restarted, will take it.
    #[error("this server is shutting down")]
    ShuttingDown,
    /// The store refused for a reason a retry will not fix (missing bucket, credentials).
    #[error("the lock store refused the request: {0}")]
    StoreRefused(String),
}

impl LockError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            field,
            reason: reason.into(),
        }
    }
}
