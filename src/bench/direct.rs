//! `bench --direct-s3`: the lock operations made straight against the bucket by the lock engine
//! itself, in this process, with no HTTP hop and no server in between. Comparing its latencies
//! with the service's in the same run, on the same store, measures what the service adds.
//!
//! Each benchmark client has an engine of its own over the shared [`Store`] (so the same SDK
//! settings, retries and timeouts as the server): its cache is that client's knowledge of each
//! lock's last version, so a warm operation is one `PUT If-Match` and a stale or unknown one adds
//! a `GET`, exactly as on a server. There is no second copy of the read / decide / write / settle
//! loop to drift from the engine's: this is the engine's.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use crate::clock::Clock;
use crate::lock::{AcquireRequest, Engine, EngineConfig, HolderToken, LockError};
use crate::store::Store;

use super::Fail;

/// A lock held by another client is contention, counted apart from errors.
fn fail(refusal: LockError) -> Fail {
    match refusal {
        LockError::Held { .. } => Fail::Refused,
        other => Fail::Error(other.to_string()),
    }
}

/// One benchmark client's engine over the bucket.
pub struct Session {
    /// Boxed: an engine is large, and a benchmark holds one per client in an enum.
    engine: Box<Engine>,
}

impl Session {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, bucket: &str, prefix: &str) -> Self {
        let config = EngineConfig {
            default_bucket: bucket.to_owned(),
            allowed_buckets: BTreeSet::from([bucket.to_owned()]),
            prefix: prefix.to_owned(),
            default_ttl: 60,
            // The benchmark's own arguments bound ttl and wait; the engine need not.
            max_ttl: u64::from(u32::MAX),
            max_lock_delay: 0,
            max_wait: StdDuration::from_secs(u64::from(u32::MAX)),
            first_poll: crate::lock::FIRST_POLL,
            max_poll: crate::lock::MAX_POLL,
            max_watched_locks: crate::lock::DEFAULT_MAX_WATCHED_LOCKS,
        };
        Self {
            engine: Box::new(Engine::new(store, clock, config)),
        }
    }

    /// Takes the lock for `owner`, waiting up to `wait` seconds; returns the holder token. Like a
    /// client that holds no token, it never refreshes: a lock already held is refused.
    pub async fn acquire(
        &mut self,
        key: &str,
        owner: &str,
        ttl: u64,
        wait: Option<f64>,
    ) -> Result<String, Fail> {
        let req = AcquireRequest {
            owner: Some(owner.to_owned()),
            ttl: i64::try_from(ttl).ok(),
            wait,
            ..AcquireRequest::default()
        };
        let view = self.engine.acquire(None, key, req).await.map_err(fail)?;
        Ok(view
            .token
            .map(HolderToken::into_exposed)
            .unwrap_or_default())
    }

    pub async fn renew(&mut self, key: &str, token: &str, ttl: u64) -> Result<(), Fail> {
        self.engine
            .renew(None, key, token, i64::try_from(ttl).ok())
            .await
            .map(drop)
            .map_err(fail)
    }

    pub async fn release(&mut self, key: &str, token: &str) -> Result<(), Fail> {
        self.engine
            .release(None, key, token)
            .await
            .map(drop)
            .map_err(fail)
    }

    /// One GET, as the service's status makes.
    pub async fn status(&mut self, key: &str) -> Result<(), Fail> {
        self.engine
            .status(None, key, None)
            .await
            .map(drop)
            .map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::*;
    use crate::clock::ManualClock;
    use crate::lock::document::parse_seed_time;
    use crate::store::memory::MemoryStore;
    use crate::store::{ListPage, StoreError, Version, Versioned};

    /// A memory store that counts reads and writes, to show what one operation costs.
    #[derive(Debug, Default)]
    struct Counted {
        inner: MemoryStore,
        reads: AtomicUsize,
        writes: AtomicUsize,
    }

    #[async_trait]
    impl Store for Counted {
        async fn get(&self, bucket: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.inner.get(bucket, key).await
        }
        async fn put_if_absent(
            &self,
            bucket: &str,
            key: &str,
            body: Bytes,
        ) -> Result<Version, StoreError> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.inner.put_if_absent(bucket, key, body).await
        }
        async fn put_if_version(
            &self,
            bucket: &str,
            key: &str,
            body: Bytes,
            expected: &Version,
        ) -> Result<Version, StoreError> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.inner.put_if_version(bucket, key, body, expected).await
        }
        async fn list_page(
            &self,
            bucket: &str,
            prefix: &str,
            after: Option<&str>,
            max: usize,
        ) -> Result<ListPage, StoreError> {
            self.inner.list_page(bucket, prefix, after, max).await
        }
        async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
            self.inner.delete(bucket, key).await
        }
    }

    fn session(store: Arc<Counted>) -> Session {
        let clock = Arc::new(ManualClock::new(
            parse_seed_time("2026-11-26T00:00:00+00:00").unwrap(),
        ));
        Session::new(store, clock, "default", "locks/")
    }

    #[tokio::test]
    async fn a_warm_cycle_is_one_conditional_write_per_operation_and_no_read() {
        let store = Arc::new(Counted::default());
        let mut s = session(store.clone());
        let token = s.acquire("k", "bench", 30, None).await.unwrap();
        s.release("k", &token).await.unwrap();
        let (reads, writes) = (
            store.reads.load(Ordering::SeqCst),
            store.writes.load(Ordering::SeqCst),
        );
        for _ in 0..3 {
            let token = s.acquire("k", "bench", 30, None).await.unwrap();
            s.renew("k", &token, 30).await.unwrap();
            s.release("k", &token).await.unwrap();
        }
        assert_eq!(
            store.reads.load(Ordering::SeqCst),
            reads,
            "a warm session reads nothing"
        );
        assert_eq!(store.writes.load(Ordering::SeqCst), writes + 9);
    }

    #[tokio::test]
    async fn a_lock_held_by_another_session_is_counted_as_refused_not_as_an_error() {
        let store = Arc::new(Counted::default());
        let mut a = session(store.clone());
        let mut b = session(store.clone());
        a.acquire("k", "a", 30, None).await.unwrap();
        assert!(matches!(
            b.acquire("k", "b", 30, None).await,
            Err(Fail::Refused)
        ));
        assert!(matches!(
            b.release("k", "not-the-token").await,
            Err(Fail::Error(_))
        ));
    }
}
