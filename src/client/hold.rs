//! What a client holds: a lock, one of a semaphore's permits, or a read-write lock in one mode.
//! `run`, `check` and `bench` take, renew and give back all three through [`Hold`], so each of
//! them has one loop for every kind rather than a copy per kind.

use chrono::{DateTime, Utc};

use super::{ClientError, LockClient};
use crate::wire::{HolderToken, LockView, Mode, SharedKind, SharedView};

/// What is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// A lock: one holder at a time.
    Lock,
    /// One of a semaphore's permits; every process must ask with the same `limit`.
    Permit { limit: u32 },
    /// A read-write lock: shared beside other readers, or exclusive alone.
    ReadWrite(Mode),
}

/// A grant or renewal, reduced to what its holder works with, whatever the kind.
#[derive(Debug, Clone)]
pub struct Holding {
    pub owner: String,
    /// This holding's own fencing token (for a shared kind, not the key's highest).
    pub fencing_token: u64,
    /// The secret for renew and release; its `Debug` hides it.
    pub token: HolderToken,
    /// What is left of the lease, judged on the latest possible store time: counted from when
    /// the request was sent, a lower bound of the lease's end.
    pub ttl_remaining_ms: i64,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Hold {
    /// The kind of a shared hold; `None` for a lock.
    pub fn shared_kind(self) -> Option<SharedKind> {
        match self {
            Hold::Lock => None,
            Hold::Permit { .. } => Some(SharedKind::Semaphore),
            Hold::ReadWrite(_) => Some(SharedKind::Rwlock),
        }
    }

    /// What is held, in words: "lock", "semaphore (limit 3)", "read-write lock (shared)".
    pub fn describe(self) -> String {
        match self {
            Hold::Lock => "lock".into(),
            Hold::Permit { limit } => format!("semaphore (limit {limit})"),
            Hold::ReadWrite(Mode::Shared) => "read-write lock (shared)".into(),
            Hold::ReadWrite(Mode::Exclusive) => "read-write lock (exclusive)".into(),
        }
    }

    /// Takes it, waiting up to `wait` seconds on the server.
    pub async fn acquire(
        self,
        client: &LockClient,
        key: &str,
        owner: Option<&str>,
        ttl: Option<u64>,
        wait: Option<f64>,
    ) -> Result<Holding, ClientError> {
        match self {
            Hold::Lock => from_lock(client.acquire(key, owner, ttl, wait).await?, None),
            Hold::Permit { limit } => from_shared(
                client
                    .semaphore_acquire(key, owner, ttl, wait, limit)
                    .await?,
                None,
            ),
            Hold::ReadWrite(mode) => from_shared(
                client.rwlock_acquire(key, owner, ttl, wait, mode).await?,
                None,
            ),
        }
    }

    /// Restarts the lease of the holding `token` names at `ttl` seconds from now.
    pub async fn renew(
        self,
        client: &LockClient,
        key: &str,
        token: &str,
        ttl: Option<u64>,
    ) -> Result<Holding, ClientError> {
        match self.shared_kind() {
            None => from_lock(client.renew(key, token, ttl).await?, Some(token)),
            Some(kind) => from_shared(
                client.shared_renew(kind, key, token, ttl).await?,
                Some(token),
            ),
        }
    }

    /// Gives back the holding `token` names.
    pub async fn release(
        self,
        client: &LockClient,
        key: &str,
        token: &str,
    ) -> Result<(), ClientError> {
        match self.shared_kind() {
            None => client.release(key, token).await.map(drop),
            Some(kind) => client.shared_release(kind, key, token).await.map(drop),
        }
    }
}

/// Why an acquire of `key` was refused, as a sentence, when waiting may end it (see
/// [`ClientError::is_refusal`]); `None` for every other error.
pub fn in_the_way(key: &str, e: &ClientError) -> Option<String> {
    match e {
        ClientError::Held {
            owner, expires_at, ..
        } => Some(format!("{key} is held by {owner} until {expires_at}")),
        ClientError::Delayed { available_at, .. } => Some(format!(
            "{key}'s last lease ran out unreleased; it is kept until {available_at} (its \
             lock-delay)"
        )),
        ClientError::SemaphoreFull { expires_at, .. } => Some(format!(
            "{key} has no permit left; the first of its leases ends at {expires_at}"
        )),
        ClientError::TooManyHolders { expires_at, .. } => Some(format!(
            "{key} has as many holders as one document holds; the first of their leases ends \
             at {expires_at}"
        )),
        _ => None,
    }
}

/// A grant carries its holder token; a renewal may leave it out (then `presented` is kept).
fn token_of(
    token: Option<HolderToken>,
    presented: Option<&str>,
) -> Result<HolderToken, ClientError> {
    token
        .or_else(|| presented.map(|t| HolderToken::from(t.to_owned())))
        .ok_or_else(|| ClientError::Transport("a grant without a holder token".into()))
}

fn from_lock(view: LockView, presented: Option<&str>) -> Result<Holding, ClientError> {
    Ok(Holding {
        owner: view.owner.unwrap_or_default(),
        fencing_token: view.fencing_token,
        token: token_of(view.token, presented)?,
        ttl_remaining_ms: view.ttl_remaining_ms,
        expires_at: view.expires_at,
    })
}

fn from_shared(view: SharedView, presented: Option<&str>) -> Result<Holding, ClientError> {
    let lease = view.lease.ok_or_else(|| {
        ClientError::Transport("a grant of a shared lock without the caller's lease".into())
    })?;
    Ok(Holding {
        owner: lease.owner,
        fencing_token: lease.fencing_token,
        token: token_of(view.token, presented)?,
        ttl_remaining_ms: lease.ttl_remaining_ms,
        expires_at: Some(lease.expires_at),
    })
}
