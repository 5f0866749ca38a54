//! What a request names and asks for, checked once at the engine's edge: where the lock lives
//! (its bucket, key and object) and an acquire's owner, lease and wait, each within the limits
//! configured. Past this file the engine works only with checked values.

use std::time::Duration as StdDuration;

use super::rules::LeaseTerms;
use super::{key, Engine, HolderToken, LockError, LockKey};

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
        let owner = match req.owner.as_deref() {
            Some(o) => self.owner(o)?,
            None => uuid::Uuid::new_v4().simple().to_string(),
        };
        Ok(Acquire {
            owner,
            token: req.token,
            terms: self.lease_terms(self.ttl(req.ttl)?, req.value, req.lock_delay)?,
            wait: self.wait(req.wait)?,
        })
    }

    /// An owner name as a client gave it, checked.
    pub(super) fn owner(&self, owner: &str) -> Result<String, LockError> {
        key::parse_owner(owner).map_err(|r| LockError::invalid("owner", r))
    }

    pub(super) fn target(&self, bucket: Option<&str>, key: &str) -> Result<Target, LockError> {
        let bucket = self.bucket(bucket)?;
        let key = LockKey::parse(key).map_err(|e| LockError::invalid("key", e.to_string()))?;
        let object = format!("{}{}", self.config.prefix, key);
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
