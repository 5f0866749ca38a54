//! What a request names and asks for, checked once at the engine's edge: where the lock lives
//! (its bucket, key and object) and an acquire's owner, lease and wait, each within the limits
//! configured. Past this file the engine works only with checked values.

use std::time::Duration as StdDuration;

use super::rules::LeaseTerms;
use super::shared::{Claim, MAX_LIMIT};
use super::{key, Engine, HolderToken, LockError, LockKey};
use crate::wire::{Mode, SharedKind};

/// What a client asked for when acquiring; every field optional.
#[derive(Debug, Clone, Default)]
pub struct AcquireRequest {
    pub owner: Option<String>,
    /// The holder token, presented to refresh a lease this owner already holds. The owner name
    /// alone never refreshes: names are public (a 409 shows them), the token is the proof.
    pub token: Option<HolderToken>,
    pub ttl: Option<i64>,
    pub wait: Option<f64>,
    /// The value to publish with the lease: `Some(Null)` clears it, `None` keeps it (a new
    /// grant has none).
    pub value: Option<serde_json::Value>,
    /// Seconds nobody may take the lock after the lease, should it run out unreleased; `None`
    /// keeps what the lease has (a new grant has none).
    pub lock_delay: Option<i64>,
}

/// What a holder asks for when renewing; every field optional.
#[derive(Debug, Clone, Default)]
pub struct RenewRequest {
    pub ttl: Option<i64>,
    /// As [`AcquireRequest::value`].
    pub value: Option<serde_json::Value>,
    /// As [`AcquireRequest::lock_delay`].
    pub lock_delay: Option<i64>,
}

/// A renew that only restarts the lease, for this many seconds (the default when `None`).
impl From<Option<i64>> for RenewRequest {
    fn from(ttl: Option<i64>) -> Self {
        Self {
            ttl,
            ..Self::default()
        }
    }
}

/// What a client asked for when acquiring a semaphore's permit or a read-write lock; every
/// field optional here, the kind's own checked at the edge ([`Engine::shared_acquire`]).
#[derive(Debug, Clone, Default)]
pub struct SharedAcquireRequest {
    pub owner: Option<String>,
    /// The holder token, presented to refresh a holding this owner already has.
    pub token: Option<HolderToken>,
    pub ttl: Option<i64>,
    pub wait: Option<f64>,
    /// A semaphore's limit: required, `1..=MAX_LIMIT`; never for a read-write lock.
    pub limit: Option<i64>,
    /// A read-write lock's mode: required; never for a semaphore.
    pub mode: Option<Mode>,
}

/// A semaphore's or read-write lock's acquire as checked.
#[derive(Debug, Clone)]
pub(super) struct SharedAcquireInput {
    pub(super) owner: String,
    pub(super) token: Option<HolderToken>,
    /// The lease length, within `1..=max_ttl`.
    pub(super) ttl: u64,
    pub(super) wait: StdDuration,
    /// The permit (with its limit) or the mode asked for.
    pub(super) claim: Claim,
}

/// An acquire as checked: what the waiting loop and the rule are given.
#[derive(Debug, Clone)]
pub(super) struct Acquire {
    /// The caller's name for itself, or a random one.
    pub(super) owner: String,
    /// The holder token the caller presented, to refresh its own lease.
    pub(super) token: Option<HolderToken>,
    /// The lease asked for: its length within `1..=max_ttl`, its value and lock-delay checked.
    pub(super) terms: LeaseTerms,
    /// How long to wait for a held lock; zero tries once.
    pub(super) wait: StdDuration,
}

/// Where one lock lives.
pub(super) struct Target {
    pub(super) bucket: String,
    pub(super) key: LockKey,
    pub(super) object: String,
}

impl Engine {
    /// Checks an acquire's fields against the engine's limits.
    pub(super) fn acquire_input(&self, req: AcquireRequest) -> Result<Acquire, LockError> {
        let owner = self.owner_or_random(req.owner.as_deref())?;
        Ok(Acquire {
            owner,
            token: req.token,
            terms: self.lease_terms(self.ttl(req.ttl)?, req.value, req.lock_delay)?,
            wait: self.wait(req.wait)?,
        })
    }

    /// Checks a semaphore's or read-write lock's acquire: the fields every acquire has, and the
    /// limit (a semaphore's) or the mode (a read-write lock's), each refused on the other kind.
    pub(super) fn shared_acquire_input(
        &self,
        kind: SharedKind,
        req: SharedAcquireRequest,
    ) -> Result<SharedAcquireInput, LockError> {
        let owner = self.owner_or_random(req.owner.as_deref())?;
        let claim = match (kind, req.limit, req.mode) {
            (SharedKind::Semaphore, _, Some(_)) => {
                return Err(LockError::invalid(
                    "mode",
                    "a semaphore has no mode: acquire it with a limit",
                ))
            }
            (SharedKind::Semaphore, None, None) => {
                return Err(LockError::invalid(
                    "limit",
                    format!("a semaphore's acquire names its limit, 1 to {MAX_LIMIT}"),
                ))
            }
            (SharedKind::Semaphore, Some(limit), None) => match u32::try_from(limit) {
                Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => Claim::Permit { limit },
                _ => {
                    return Err(LockError::invalid(
                        "limit",
                        format!(
                            "{limit} is out of range: a semaphore has 1 to {MAX_LIMIT} permits"
                        ),
                    ))
                }
            },
            (SharedKind::Rwlock, Some(_), _) => {
                return Err(LockError::invalid(
                    "limit",
                    "a read-write lock has no limit: acquire it with a mode",
                ))
            }
            (SharedKind::Rwlock, None, None) => {
                return Err(LockError::invalid(
                    "mode",
                    "a read-write lock's acquire names its mode, \"shared\" or \"exclusive\"",
                ))
            }
            (SharedKind::Rwlock, None, Some(Mode::Shared)) => Claim::Shared,
            (SharedKind::Rwlock, None, Some(Mode::Exclusive)) => Claim::Exclusive,
        };
        Ok(SharedAcquireInput {
            owner,
            token: req.token,
            ttl: self.ttl(req.ttl)?,
            wait: self.wait(req.wait)?,
            claim,
        })
    }

    /// The owner a client named, checked, or a random one for a client that named none.
    fn owner_or_random(&self, owner: Option<&str>) -> Result<String, LockError> {
        match owner {
            Some(o) => self.owner(o),
            None => Ok(uuid::Uuid::new_v4().simple().to_string()),
        }
    }

    /// An owner name as a client gave it, checked.
    pub(super) fn owner(&self, owner: &str) -> Result<String, LockError> {
        key::parse_owner(owner).map_err(|r| LockError::invalid("owner", r))
    }

    /// Where the mutex `key` lives. A key under another kind's namespace is refused.
    pub(super) fn target(&self, bucket: Option<&str>, key: &str) -> Result<Target, LockError> {
        let bucket = self.bucket(bucket)?;
        let key = LockKey::parse(key).map_err(|e| LockError::invalid("key", e.to_string()))?;
        // An election's lock is a lock (the election routes map onto it; the lock routes refuse
        // its namespace at the HTTP edge); the other namespaces hold other kinds' documents.
        if let Some(what) = key.reserved_for().filter(|_| !key.is_election()) {
            let first = key.as_str().split('/').next().unwrap_or_default();
            return Err(LockError::invalid(
                "key",
                format!("{first:?} is reserved for {what}: a lock's key may not start with it"),
            ));
        }
        let object = format!("{}{}", self.config.prefix, key);
        Ok(Target {
            bucket,
            key,
            object,
        })
    }

    /// Where the semaphore or read-write lock `key` lives: under its kind's namespace.
    pub(super) fn shared_target(
        &self,
        bucket: Option<&str>,
        key: &str,
        kind: SharedKind,
    ) -> Result<Target, LockError> {
        let bucket = self.bucket(bucket)?;
        let key = LockKey::parse(key).map_err(|e| LockError::invalid("key", e.to_string()))?;
        let object = format!("{}{}/{key}", self.config.prefix, key::namespace(kind));
        Ok(Target {
            bucket,
            key,
            object,
        })
    }

    pub(super) fn bucket(&self, bucket: Option<&str>) -> Result<String, LockError> {
        match bucket {
            None => Ok(self.config.default_bucket.clone()),
            Some(b) if self.config.allowed_buckets.contains(b) => Ok(b.to_owned()),
            Some(b) => Err(LockError::BucketNotAllowed(b.to_owned())),
        }
    }

    pub(super) fn ttl(&self, ttl: Option<i64>) -> Result<u64, LockError> {
        let max = self.config.max_ttl;
        match ttl {
            None => Ok(self.config.default_ttl),
            Some(t) if t >= 1 && t.unsigned_abs() <= max => Ok(t.unsigned_abs()),
            Some(t) => Err(LockError::invalid(
                "ttl",
                format!("{t} is out of range: a lease lasts 1 to {max} seconds"),
            )),
        }
    }

    pub(super) fn wait(&self, wait: Option<f64>) -> Result<StdDuration, LockError> {
        let max = self.config.max_wait;
        match wait {
            None => Ok(StdDuration::ZERO),
            Some(w) if w.is_finite() && w >= 0.0 && w <= max.as_secs_f64() => {
                Ok(StdDuration::from_secs_f64(w))
            }
            Some(w) => Err(LockError::invalid(
                "wait",
                format!(
                    "{w} is out of range: wait 0 to {} seconds",
                    max.as_secs_f64()
                ),
            )),
        }
    }
}
