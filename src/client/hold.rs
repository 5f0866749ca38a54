//! What a client holds: a lock, one of a semaphore's permits, a read-write lock in one mode, or
//! the leadership of an election. `run` and `elect` run a command under any of them, and `check`
//! and `bench` take and give them back, all through [`Hold`]: one loop for every kind rather
//! than a copy per kind.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{ClientError, LockClient};
use crate::wire::{ElectionView, HolderToken, LockView, Mode, SharedKind, SharedView};

/// What is held, and under which key or name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// A lock: one holder at a time.
    Lock { key: String },
    /// One of a semaphore's permits; every process must ask with the same `limit`.
    Permit { key: String, limit: u32 },
    /// A read-write lock: shared beside other readers, or exclusive alone.
    ReadWrite { key: String, mode: Mode },
    /// The leadership of an election (a lock underneath).
    Election {
        name: String,
        /// What the leader publishes when it wins.
        value: Option<Value>,
    },
}

/// What `check` and `bench` take on each of their keys: a [`Hold`] without its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Lock,
    Permit { limit: u32 },
    ReadWrite(Mode),
}

impl KeyKind {
    /// This kind of hold on `key`.
    pub fn on(self, key: &str) -> Hold {
        let key = key.to_owned();
        match self {
            KeyKind::Lock => Hold::Lock { key },
            KeyKind::Permit { limit } => Hold::Permit { key, limit },
            KeyKind::ReadWrite(mode) => Hold::ReadWrite { key, mode },
        }
    }
}

/// A grant or renewal, reduced to what its holder works with, whatever the kind. Its `Debug`
/// leaves the token out.
#[derive(Clone)]
pub struct Grant {
    /// The secret for renew and release. Never printed, never given to a command.
    pub token: String,
    /// The holder's name (the leader's, for an election).
    pub holder: String,
    /// This holding's own fencing token (the term, for an election; for a shared kind, not the
    /// key's highest).
    pub fencing_token: u64,
    pub expires_at: Option<DateTime<Utc>>,
    /// What is left of the lease, judged on the latest possible store time: counted from when
    /// the request was sent, a lower bound of the lease's end.
    pub ttl_remaining_ms: i64,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("token", &"<redacted>")
            .field("holder", &self.holder)
            .field("fencing_token", &self.fencing_token)
            .field("expires_at", &self.expires_at)
            .field("ttl_remaining_ms", &self.ttl_remaining_ms)
            .finish()
    }
}

impl From<LockView> for Grant {
    fn from(v: LockView) -> Self {
        Self {
            token: v.token.map(HolderToken::into_exposed).unwrap_or_default(),
            holder: v.owner.unwrap_or_default(),
            fencing_token: v.fencing_token,
            expires_at: v.expires_at,
            ttl_remaining_ms: v.ttl_remaining_ms,
        }
    }
}

impl From<ElectionView> for Grant {
    fn from(v: ElectionView) -> Self {
        Self {
            token: v.token.map(HolderToken::into_exposed).unwrap_or_default(),
            holder: v.leader.unwrap_or_default(),
            fencing_token: v.term,
            expires_at: v.expires_at,
            ttl_remaining_ms: v.ttl_remaining_ms,
        }
    }
}

impl TryFrom<SharedView> for Grant {
    type Error = ClientError;

    /// A grant or renewal of a shared kind: the caller's own `lease` in it.
    fn try_from(v: SharedView) -> Result<Self, ClientError> {
        let lease = v.lease.ok_or_else(|| {
            ClientError::Transport("a grant of a shared lock without the caller's lease".into())
        })?;
        Ok(Self {
            token: v.token.map(HolderToken::into_exposed).unwrap_or_default(),
            holder: lease.owner,
            fencing_token: lease.fencing_token,
            expires_at: Some(lease.expires_at),
            ttl_remaining_ms: lease.ttl_remaining_ms,
        })
    }
}

impl Hold {
    /// The kind of a shared hold; `None` for a lock or an election.
    pub fn shared_kind(&self) -> Option<SharedKind> {
        match self {
            Hold::Permit { .. } => Some(SharedKind::Semaphore),
            Hold::ReadWrite { .. } => Some(SharedKind::Rwlock),
            Hold::Lock { .. } | Hold::Election { .. } => None,
        }
    }

    /// The key (or the election's name).
    pub fn key(&self) -> &str {
        match self {
            Hold::Lock { key } | Hold::Permit { key, .. } | Hold::ReadWrite { key, .. } => key,
            Hold::Election { name, .. } => name,
        }
    }

    /// The command's name in messages.
    pub fn tool(&self) -> &'static str {
        match self {
            Hold::Election { .. } => "s3lock elect",
            _ => "s3lock run",
        }
    }

    /// What is held, in messages.
    pub fn what(&self) -> String {
        match self {
            Hold::Lock { key } => key.clone(),
            Hold::Permit { key, limit } => format!("the semaphore {key} (limit {limit})"),
            Hold::ReadWrite { key, mode } => {
                let mode = match mode {
                    Mode::Shared => "shared",
                    Mode::Exclusive => "exclusive",
                };
                format!("the read-write lock {key} ({mode})")
            }
            Hold::Election { name, .. } => format!("the election {name}"),
        }
    }

    /// Takes it, waiting up to `wait` seconds on the server.
    pub async fn take(
        &self,
        client: &LockClient,
        owner: Option<&str>,
        ttl: u64,
        wait: f64,
    ) -> Result<Grant, ClientError> {
        let (ttl, wait) = (Some(ttl), Some(wait));
        match self {
            Hold::Lock { key } => client.acquire(key, owner, ttl, wait).await.map(Grant::from),
            Hold::Permit { key, limit } => client
                .semaphore_acquire(key, owner, ttl, wait, *limit)
                .await?
                .try_into(),
            Hold::ReadWrite { key, mode } => client
                .rwlock_acquire(key, owner, ttl, wait, *mode)
                .await?
                .try_into(),
            Hold::Election { name, value } => client
                .campaign(name, owner, value.as_ref(), ttl, wait)
                .await
                .map(Grant::from),
        }
    }

    /// Restarts the lease of the holding `token` names at `ttl` seconds from now.
    pub async fn renew(
        &self,
        client: &LockClient,
        token: &str,
        ttl: u64,
    ) -> Result<Grant, ClientError> {
        match self {
            Hold::Lock { key } => client.renew(key, token, Some(ttl)).await.map(Grant::from),
            Hold::Permit { key, .. } | Hold::ReadWrite { key, .. } => {
                let kind = self.shared_kind().expect("a shared kind");
                client
                    .shared_renew(kind, key, token, Some(ttl))
                    .await?
                    .try_into()
            }
            Hold::Election { name, .. } => client
                .renew_leadership(name, token, Some(ttl))
                .await
                .map(Grant::from),
        }
    }

    /// Gives back the holding `token` names (resigns, for an election).
    pub async fn give_up(&self, client: &LockClient, token: &str) -> Result<(), ClientError> {
        match self {
            Hold::Lock { key } => client.release(key, token).await.map(drop),
            Hold::Permit { key, .. } | Hold::ReadWrite { key, .. } => {
                let kind = self.shared_kind().expect("a shared kind");
                client.shared_release(kind, key, token).await.map(drop)
            }
            Hold::Election { name, .. } => client.resign(name, token).await.map(drop),
        }
    }

    /// What a command is told in its environment (never the holder token).
    pub fn env(&self, grant: &Grant) -> Vec<(&'static str, String)> {
        let fencing = grant.fencing_token.to_string();
        match self {
            Hold::Lock { key } | Hold::Permit { key, .. } | Hold::ReadWrite { key, .. } => vec![
                ("S3LOCK_KEY", key.clone()),
                ("S3LOCK_OWNER", grant.holder.clone()),
                ("S3LOCK_FENCING_TOKEN", fencing),
            ],
            Hold::Election { name, .. } => vec![
                ("S3LOCK_ELECTION", name.clone()),
                ("S3LOCK_LEADER", grant.holder.clone()),
                ("S3LOCK_TERM", fencing.clone()),
                ("S3LOCK_FENCING_TOKEN", fencing),
            ],
        }
    }
}

/// Why an acquire of `what` was refused, as a sentence, when waiting may end it (see
/// [`ClientError::is_refusal`]); `None` for every other error.
pub fn in_the_way(what: &str, e: &ClientError) -> Option<String> {
    match e {
        ClientError::Held {
            owner, expires_at, ..
        } => Some(format!("{what} is held by {owner} until {expires_at}")),
        ClientError::Delayed { available_at, .. } => Some(format!(
            "{what}'s last lease ran out unreleased; it is kept until {available_at} (its \
             lock-delay)"
        )),
        ClientError::SemaphoreFull { expires_at, .. } => Some(format!(
            "{what} has no permit left; the first of its leases ends at {expires_at}"
        )),
        ClientError::TooManyHolders { expires_at, .. } => Some(format!(
            "{what} has as many holders as one document holds; the first of their leases ends \
             at {expires_at}"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grants_debug_never_shows_its_holder_token() {
        let grant = Grant {
            token: "s3cr3t-holder-token".into(),
            holder: "w1".into(),
            fencing_token: 7,
            expires_at: None,
            ttl_remaining_ms: 1,
        };
        let shown = format!("{grant:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("w1") && shown.contains('7'), "{shown}");
    }
}
