//! `bench --direct-s3`: the raw S3 requests a lock operation needs, made straight against the
//! bucket through the same [`Store`] the server uses (so the same SDK settings, retries and
//! timeouts), with no HTTP hop and no server in between. Comparing its latencies with the
//! service's in the same run, on the same store, measures what the service adds.
//!
//! It makes the same conditional writes as the engine, from the same kind of per-client
//! knowledge of each lock's last version: a warm operation is one `PUT If-Match`, a stale or
//! unknown one adds a `GET`. It decides with the engine's own rules ([`rules`]), so the two
//! never disagree on what a document allows. It skips what only a server needs: the read-back
//! after a lost response (a benchmark on loopback loses none) and the local hand-off to waiters.

use std::collections::HashMap;
use std::sync::Arc;

use crate::clock::Clock;
use crate::lock::rules::{self, LeaseTerms, Verdict};
use crate::lock::{HolderToken, LockDocument, LockError};
use crate::store::{Store, StoreError, Version};

use super::Fail;

/// Gives up on one operation after this many lost races, like the engine.
const MAX_DECISIONS: usize = 16;

/// A lock held by another client is contention, counted apart from errors.
fn fail(refusal: LockError) -> Fail {
    match refusal {
        LockError::Held { .. } => Fail::Refused,
        other => Fail::Error(other.to_string()),
    }
}

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

    /// Takes the lock for `owner`; returns the token. Like a client that holds no token, it
    /// never refreshes: a lock already held is refused.
    pub async fn acquire(&mut self, key: &str, owner: &str, ttl: u64) -> Result<String, Fail> {
        let doc = self
            .decide(key, |state, now| {
                rules::acquire(state, now, owner, None, &LeaseTerms::of(ttl))
                    .map(|(doc, _)| Verdict::Write(doc))
            })
            .await?;
        Ok(doc.token.map(HolderToken::into_exposed).unwrap_or_default())
    }

    pub async fn renew(&mut self, key: &str, token: &str, ttl: u64) -> Result<(), Fail> {
        self.decide(key, |state, now| {
            rules::renew(state, now, token, &LeaseTerms::of(ttl)).map(Verdict::Write)
        })
        .await
        .map(drop)
    }

    pub async fn release(&mut self, key: &str, token: &str) -> Result<(), Fail> {
        self.decide(key, |state, now| rules::release(state, now, token))
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
        F: FnMut(Option<&LockDocument>, crate::clock::TimeWindow) -> Result<Verdict, LockError>,
    {
        let object = format!("{}{key}", self.prefix);
        let mut hint = self.known.get(&object).cloned();
        for _ in 0..MAX_DECISIONS {
            let (state, fresh) = match hint.take() {
                Some(known) => (Some(known), false),
                None => (self.read(&object).await?, true),
            };
            let next = match decide(state.as_ref().map(|(d, _)| d), self.clock.now()) {
                Ok(Verdict::Write(next)) => next,
                Ok(Verdict::Leave) if fresh => {
                    return state
                        .map(|(d, _)| d)
                        .ok_or_else(|| Fail::Error("the lock does not exist".into()))
                }
                Err(refusal) if fresh => return Err(fail(refusal)),
                Ok(Verdict::Leave) | Err(_) => continue,
            };
            if let Some((current, _)) = &state {
                rules::may_replace(current).map_err(fail)?;
            }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration as StdDuration;

    use bytes::Bytes;
    use chrono::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::lock::document::parse_seed_time;
    use crate::lock::{AcquireRequest, Engine, EngineConfig};
    use crate::store::memory::MemoryStore;

    const BUCKET: &str = "default";
    const PREFIX: &str = "locks/";

    /// The engine and a direct-S3 session, each on its own store, with one clock.
    struct Both {
        engine: Engine,
        engine_store: Arc<MemoryStore>,
        session: Session,
        session_store: Arc<MemoryStore>,
        clock: Arc<ManualClock>,
    }

    fn both() -> Both {
        let clock = Arc::new(ManualClock::new(
            parse_seed_time("2026-11-26T00:00:00+00:00").unwrap(),
        ));
        let config = EngineConfig {
            default_bucket: BUCKET.into(),
            allowed_buckets: BTreeSet::from([BUCKET.into()]),
            prefix: PREFIX.into(),
            default_ttl: 60,
            max_ttl: 3600,
            max_lock_delay: 60,
            max_wait: StdDuration::from_secs(60),
            first_poll: crate::lock::FIRST_POLL,
            max_poll: crate::lock::MAX_POLL,
            max_watched_locks: crate::lock::DEFAULT_MAX_WATCHED_LOCKS,
        };
        let engine_store = Arc::new(MemoryStore::new());
        let session_store = Arc::new(MemoryStore::new());
        Both {
            engine: Engine::new(engine_store.clone(), clock.clone(), config),
            session: Session::new(session_store.clone(), clock.clone(), BUCKET, PREFIX),
            engine_store,
            session_store,
            clock,
        }
    }

    impl Both {
        /// Stores the same body under `key` in both stores.
        async fn seed(&self, key: &str, body: &str) {
            for store in [&self.engine_store, &self.session_store] {
                store
                    .put_if_absent(
                        BUCKET,
                        &format!("{PREFIX}{key}"),
                        Bytes::from(body.to_owned()),
                    )
                    .await
                    .unwrap();
            }
        }

        async fn stored(&self, store: &MemoryStore, key: &str) -> LockDocument {
            let found = store.get(BUCKET, &format!("{PREFIX}{key}")).await.unwrap();
            LockDocument::from_bytes(&found.unwrap().body).unwrap()
        }

        /// Acquires `key` for `owner` through both, and says whether each was granted.
        async fn acquire(
            &mut self,
            key: &str,
            owner: &str,
        ) -> (Result<(), String>, Result<(), String>) {
            let req = AcquireRequest {
                owner: Some(owner.into()),
                token: None,
                ttl: Some(30),
                ..AcquireRequest::default()
            };
            let by_engine =
                self.engine
                    .acquire(None, key, req)
                    .await
                    .map(drop)
                    .map_err(|e| match e {
                        LockError::Held { .. } => "held".to_owned(),
                        other => other.to_string(),
                    });
            let direct = self
                .session
                .acquire(key, owner, 30)
                .await
                .map(drop)
                .map_err(|e| match e {
                    Fail::Refused => "held".to_owned(),
                    Fail::Error(why) => why,
                });
            (by_engine, direct)
        }
    }

    /// A lock written by the old Python module: no token, no revision, no fencing token.
    const SEED: &str = r#"{"expire": 60, "lock_time": "2026-11-26T00:00:00+00:00", "release_time": null, "owner": "alice"}"#;

    #[tokio::test]
    async fn bench_direct_and_the_engine_agree_on_a_seed_document() {
        let mut both = both();
        both.seed("seeded", SEED).await;
        // Held, even against its own owner's name: a seed holder has no token to present.
        for owner in ["bob", "alice"] {
            let (by_engine, direct) = both.acquire("seeded", owner).await;
            assert_eq!(by_engine, Err("held".to_owned()), "engine, {owner}");
            assert_eq!(direct, by_engine, "bench direct, {owner}");
        }
        // Taken over once its lease has run out, each with fencing token 1.
        both.clock.advance(Duration::seconds(60));
        let (by_engine, direct) = both.acquire("seeded", "bob").await;
        assert_eq!(by_engine, Ok(()));
        assert_eq!(direct, Ok(()));
        let engine_doc = both.stored(&both.engine_store, "seeded").await;
        let direct_doc = both.stored(&both.session_store, "seeded").await;
        assert_eq!(engine_doc.owner.as_deref(), Some("bob"));
        assert_eq!(engine_doc.fencing_token, 1);
        assert_eq!(direct_doc.owner, engine_doc.owner);
        assert_eq!(direct_doc.fencing_token, engine_doc.fencing_token);
        assert_eq!(direct_doc.revision, engine_doc.revision);
        assert_eq!(direct_doc.lock_time, engine_doc.lock_time);
    }

    #[tokio::test]
    async fn bench_direct_and_the_engine_agree_on_a_fencing_token_at_u64_max() {
        let mut both = both();
        let body = format!(
            r#"{{"expire": 30, "lock_time": "2026-11-26T00:00:00+00:00", "release_time": null, "owner": "alice", "token": "t", "fencing_token": {}, "revision": 7}}"#,
            u64::MAX
        );
        both.seed("top", &body).await;
        both.clock.advance(Duration::seconds(30));
        let (by_engine, direct) = both.acquire("top", "bob").await;
        let refusal = by_engine.expect_err("the engine must refuse to wrap the fencing token");
        assert!(refusal.contains("fencing token cannot grow"), "{refusal}");
        assert_eq!(direct, Err(refusal));
        for store in [&both.engine_store, &both.session_store] {
            let doc = both.stored(store, "top").await;
            assert_eq!(doc.fencing_token, u64::MAX);
            assert_eq!(doc.owner.as_deref(), Some("alice"));
        }
    }
}
