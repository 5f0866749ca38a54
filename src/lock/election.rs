//! Elections, as locks: one lock per election, under its own key namespace (`.elections/{name}`,
//! which the lock routes refuse and lists skip, see [`ELECTIONS`]), so an election and a lock
//! never share a document. Campaigning is acquiring (waiting if asked), the term is the fencing
//! token, the holder token proves leadership, proclaiming is a renew with a new value, resigning
//! is a release, and observing is the lock's change stream. Nothing here decides anything of its
//! own: every rule, wait and watcher is the lock's.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use serde_json::Value;

use super::events::{EventKind, LockEvent, LockEvents};
use super::key::{LockKey, ELECTIONS, MAX_KEY_BYTES};
use super::{AcquireRequest, Engine, LockError, LockView, RenewRequest};
use crate::wire::ElectionView;

/// The longest election name, in bytes: its lock's key (`.elections/{name}`) is at most a key's
/// length.
pub const MAX_ELECTION_NAME_BYTES: usize = MAX_KEY_BYTES - ELECTIONS.len() - 1;

/// An election's name, parsed like a lock key, at most [`MAX_ELECTION_NAME_BYTES`] long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionName(LockKey);

impl ElectionName {
    pub fn parse(raw: &str) -> Result<Self, LockError> {
        if raw.len() > MAX_ELECTION_NAME_BYTES {
            return Err(LockError::invalid(
                "name",
                format!(
                    "the name is {} bytes long; the maximum is {MAX_ELECTION_NAME_BYTES}",
                    raw.len()
                ),
            ));
        }
        LockKey::parse(raw)
            .map(Self)
            .map_err(|e| LockError::invalid("name", e.to_string().replacen("key", "name", 1)))
    }

    /// The key of the election's lock.
    fn lock_key(&self) -> String {
        format!("{ELECTIONS}/{}", self.0)
    }
}

/// What a candidate asks for when campaigning; every field optional.
#[derive(Debug, Clone, Default)]
pub struct CampaignRequest {
    /// The candidate's name (as a lock's owner; a random one if `None`).
    pub candidate: Option<String>,
    /// What to publish once leading (its address, say).
    pub value: Option<Value>,
    pub ttl: Option<i64>,
    /// Seconds to wait for leadership while another candidate leads.
    pub wait: Option<f64>,
    /// Seconds nobody else may lead after this leader's lease, should it run out unresigned.
    pub lock_delay: Option<i64>,
}

/// One event of an election's change stream: the lock's event kinds (`acquired` is a new
/// leader, `released` a resignation, `expired` a leader whose lease ran out), with the election
/// view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionEvent {
    pub kind: EventKind,
    pub view: ElectionView,
}

/// An election's events as they come (see [`LockEvents`]).
#[derive(Debug)]
pub struct ElectionEvents {
    name: ElectionName,
    events: LockEvents,
}

impl Stream for ElectionEvents {
    type Item = Result<ElectionEvent, LockError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        Pin::new(&mut this.events).poll_next(cx).map(|item| {
            item.map(|event| {
                event.map(|LockEvent { kind, view }| ElectionEvent {
                    kind,
                    view: election_view(&this.name, view),
                })
            })
        })
    }
}

/// The election as its lock shows it. There is a leader while the lock is held; once the lease
/// runs out there is none (`leader` and `value` `null`), even before anyone else is elected.
pub fn election_view(name: &ElectionName, lock: LockView) -> ElectionView {
    let leading = lock.locked;
    ElectionView {
        name: name.0.to_string(),
        leader: lock.owner.filter(|_| leading),
        value: if leading { lock.value } else { Value::Null },
        term: lock.fencing_token,
        token: lock.token,
        expires_at: lock.expires_at,
        ttl_remaining_ms: lock.ttl_remaining_ms,
        available_at: lock.available_at,
        index: lock.index,
    }
}

impl Engine {
    /// Becomes the leader of `name`, waiting up to `wait` seconds while another leads; refused
    /// as an acquire is (`Held`, naming the leader) if it does not within the wait.
    #[tracing::instrument(skip(self, req), fields(candidate = req.candidate.as_deref()))]
    pub async fn campaign(
        &self,
        bucket: Option<&str>,
        name: &str,
        req: CampaignRequest,
    ) -> Result<ElectionView, LockError> {
        let name = ElectionName::parse(name)?;
        let acquire = AcquireRequest {
            owner: req.candidate,
            token: None,
            ttl: req.ttl,
            wait: req.wait,
            value: req.value,
            lock_delay: req.lock_delay,
        };
        let lock = self.acquire(bucket, &name.lock_key(), acquire).await?;
        Ok(election_view(&name, lock))
    }

    /// The leader (proven by `token`) restarts its lease, publishing `value` when given (a
    /// proclaim) or keeping its value (a renew).
    #[tracing::instrument(skip(self, token, value))]
    pub async fn lead_on(
        &self,
        bucket: Option<&str>,
        name: &str,
        token: &str,
        value: Option<Value>,
        ttl: Option<i64>,
    ) -> Result<ElectionView, LockError> {
        let name = ElectionName::parse(name)?;
        let renew = RenewRequest {
            ttl,
            value,
            lock_delay: None,
        };
        let lock = self.renew(bucket, &name.lock_key(), token, renew).await?;
        Ok(election_view(&name, lock))
    }

    /// The leader (proven by `token`) steps down: there is no leader until the next campaign
    /// wins, which may be at once. Resigning again is a no-op.
    #[tracing::instrument(skip(self, token))]
    pub async fn resign(
        &self,
        bucket: Option<&str>,
        name: &str,
        token: &str,
    ) -> Result<ElectionView, LockError> {
        let name = ElectionName::parse(name)?;
        let lock = self.release(bucket, &name.lock_key(), token).await?;
        Ok(election_view(&name, lock))
    }

    /// Who leads `name` now (read from the store). An election never held has no leader.
    #[tracing::instrument(skip(self))]
    pub async fn election(
        &self,
        bucket: Option<&str>,
        name: &str,
    ) -> Result<ElectionView, LockError> {
        let name = ElectionName::parse(name)?;
        let lock = self.status(bucket, &name.lock_key(), None).await?;
        Ok(election_view(&name, lock))
    }

    /// Follows `name`: who leads now, then every change, "no leader" included (see
    /// [`Engine::events`]).
    #[tracing::instrument(skip(self))]
    pub async fn observe(
        self: &Arc<Self>,
        bucket: Option<&str>,
        name: &str,
        last_id: Option<u64>,
    ) -> Result<ElectionEvents, LockError> {
        let name = ElectionName::parse(name)?;
        let events = self.events(bucket, &name.lock_key(), last_id).await?;
        Ok(ElectionEvents { name, events })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn lock(owner: Option<&str>, locked: bool) -> LockView {
        LockView {
            bucket: "b".into(),
            key: ".elections/e".into(),
            owner: owner.map(str::to_owned),
            token: None,
            fencing_token: 4,
            expire: 30,
            lock_time: DateTime::UNIX_EPOCH,
            release_time: None,
            expires_at: None,
            ttl_remaining_ms: 0,
            locked,
            index: 9,
            value: serde_json::json!("10.0.0.1:80"),
            available_at: None,
        }
    }

    #[test]
    fn an_election_is_named_like_a_lock_key_and_lives_under_its_own_namespace() {
        let name = ElectionName::parse("jobs/scheduler").unwrap();
        assert_eq!(name.lock_key(), ".elections/jobs/scheduler");
        let longest = "n".repeat(MAX_ELECTION_NAME_BYTES);
        let name = ElectionName::parse(&longest).unwrap();
        assert_eq!(name.lock_key().len(), MAX_KEY_BYTES);
        assert!(ElectionName::parse(&format!("{longest}n")).is_err());
        let err = ElectionName::parse("a//b").unwrap_err();
        assert!(
            matches!(err, LockError::InvalidInput { field: "name", ref reason } if reason.starts_with("the name")),
            "{err:?}"
        );
    }

    #[test]
    fn the_leader_is_the_holder_while_its_lease_runs_and_nobody_after() {
        let name = ElectionName::parse("e").unwrap();
        let leading = election_view(&name, lock(Some("alice"), true));
        assert_eq!(leading.leader.as_deref(), Some("alice"));
        assert_eq!(leading.value, serde_json::json!("10.0.0.1:80"));
        assert_eq!((leading.term, leading.index), (4, 9));
        assert_eq!(leading.name, "e");
        let ran_out = election_view(&name, lock(Some("alice"), false));
        assert_eq!(ran_out.leader, None);
        assert_eq!(ran_out.value, Value::Null);
        assert_eq!(ran_out.term, 4, "the term of the last leader");
    }
}
