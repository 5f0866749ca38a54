//! `bench --direct-s3`: the raw S3 requests a lock operation needs, made straight against the
//! bucket through the same [`Store`] the server uses (so the same SDK settings, retries and
//! timeouts), with no HTTP hop and no server in between. Comparing its latencies with the
//! service's in the same run, on the same store, measures what the service adds.
//!
//! It makes the same conditional writes as the engine, from the same kind of per-client
//! knowledge of each lock's last version: a warm operation is one `PUT If-Match`, a stale or
//! unknown one adds a `GET`. It skips what only a server needs: the read-back after a lost
//! response (a benchmark on loopback loses none) and the local hand-off to waiters.

use std::collections::HashMap;
use std::sync::Arc;

use crate::clock::Clock;
use crate::lock::{HolderToken, LockDocument};
use crate::store::{Store, StoreError, Version};

use super::Fail;

/// Gives up on one operation after this many lost races, like the engine.
const MAX_DECISIONS: usize = 16;

/// One benchmark client's connection to the bucket and what it knows of each lock.
pub struct Session {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    bucket: String,
    prefix: String,
    /// The last document and version this client read or wrote per object: the same hint the
    /// server's cache keeps, so warm operations skip their read here too.
    known: HashMap<String, (LockDocument, Version)>,
}

/// What a decision wants done.
enum Step {
    Write(LockDocument),
    Done,
    Refuse(Fail),
}

impl Session {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, bucket: &str, prefix: &str) -> Self {
        Self {
            store,
            clock,
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            known: HashMap::new(),
        }
    }

    /// Takes the lock for `owner`; returns the token.
    pub async fn acquire(&mut self, key: &str, owner: &str, ttl: u64) -> Result<String, Fail> {
        let doc = self
            .decide(key, |state, now| match state {
                None => Step::Write(LockDocument::grant(owner, ttl, now.latest, 1)),
                Some(doc) => match doc.holder(now.earliest) {
                    None => match doc.fencing_token.checked_add(1) {
                        Some(next) => Step::Write(doc.granted_over(owner, ttl, now.latest, next)),
                        None => Step::Refuse(Fail::Error("the fencing token cannot grow".into())),
                    },
                    // A refresh needs the holder token, which this acquire does not present.
                    Some(_) => Step::Refuse(Fail::Refused),
                },
            })
            .await?;
        Ok(doc.token.map(HolderToken::into_exposed).unwrap_or_default())
    }

    pub async fn renew(&mut self, key: &str, token: &str, ttl: u64) -> Result<(), Fail> {
        self.decide(key, |state, now| match state {
            Some(doc)
                if doc.token.as_ref().is_some_and(|t| t.matches(token)) && doc.owner.is_some() =>
            {
                Step::Write(doc.renewed(ttl, now.latest))
            }
            _ => Step::Refuse(Fail::Error("not the holder".into())),
        })
        .await
        .map(drop)
    }

    pub async fn release(&mut self, key: &str, token: &str) -> Result<(), Fail> {
        self.decide(key, |state, now| match state {
            Some(doc) if doc.token.as_ref().is_some_and(|t| t.matches(token)) => match doc.owner {
                Some(_) => Step::Write(doc.released(now.latest)),
                None => Step::Done,
            },
            _ => Step::Refuse(Fail::Error("not the holder".into())),
        })
        .await
        .map(drop)
    }

    /// One GET, as the service's status makes.
    pub async fn status(&mut self, key: &str) -> Result<(), Fail> {
        let object = format!("{}{key}", self.prefix);
        self.read(&object).await.map(drop)
    }

    /// Decides from what this client knows (then writes with `If-Match`), or from a fresh read
    /// when it knows nothing, its write lost, or the decision would be a refusal or a no-op.
    async fn decide<F>(&mut self, key: &str, mut decide: F) -> Result<LockDocument, Fail>
    where
        F: FnMut(Option<&LockDocument>, crate::clock::TimeWindow) -> Step,
    {
        let object = format!("{}{key}", self.prefix);
        let mut hint = self.known.get(&object).cloned();
        for _ in 0..MAX_DECISIONS {
            let (state, fresh) = match hint.take() {
                Some(known) => (Some(known), false),
                None => (self.read(&object).await?, true),
            };
            let next = match decide(state.as_ref().map(|(d, _)| d), self.clock.now()) {
                Step::Write(next) => next,
                Step::Done if fresh => {
                    return state
                        .map(|(d, _)| d)
                        .ok_or_else(|| Fail::Error("the lock does not exist".into()))
                }
                Step::Refuse(fail) if fresh => return Err(fail),
                Step::Done | Step::Refuse(_) => continue,
            };
            let body = next.to_bytes();
            let written = match &state {
                None => self.store.put_if_absent(&self.bucket, &object, body).await,
                Some((_, version)) => {
                    self.store
                        .put_if_version(&self.bucket, &object, body, version)
                        .await
                }
            };
            match written {
                Ok(version) => {
                    self.known.insert(object, (next.clone(), version));
                    return Ok(next);
                }
                Err(StoreError::PreconditionFailed) => {
                    self.known.remove(&object);
                }
                Err(other) => {
                    self.known.remove(&object);
                    return Err(Fail::Error(other.to_string()));
                }
            }
        }
        Err(Fail::Error("contended: 16 decisions in a row lost".into()))
    }

    async fn read(&mut self, object: &str) -> Result<Option<(LockDocument, Version)>, Fail> {
        let found = self
            .store
            .get(&self.bucket, object)
            .await
            .map_err(|e| Fail::Error(e.to_string()))?;
        let Some(found) = found else {
            self.known.remove(object);
            return Ok(None);
        };
        let doc = LockDocument::from_bytes(&found.body)
            .map_err(|e| Fail::Error(format!("{object} is not a lock document: {e}")))?;
        self.known
            .insert(object.to_owned(), (doc.clone(), found.version.clone()));
        Ok(Some((doc, found.version)))
    }
}
