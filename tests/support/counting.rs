//! A memory store that counts its reads and listings: how tests show that some work adds no store reads, or
//! a bounded number of them (counted, never timed).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use s3lock::store::memory::MemoryStore;
use s3lock::store::{ListPage, Store, StoreError, Version, Versioned};

/// A memory store that counts its reads and the most of them in flight at once. With
/// `failing_reads`, every read takes that long and then fails, as a store that went away.
#[derive(Debug, Default)]
pub struct CountingStore {
    pub inner: MemoryStore,
    pub failing_reads: Option<Duration>,
    pub gets: AtomicUsize,
    pub listings: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub most_in_flight: AtomicUsize,
}

impl CountingStore {
    /// Reads so far.
    pub fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }

    /// (reads, listings) since the last call, which starts the count again.
    pub fn take_counts(&self) -> (usize, usize) {
        (
            self.gets.swap(0, Ordering::SeqCst),
            self.listings.swap(0, Ordering::SeqCst),
        )
    }
}

#[async_trait]
impl Store for CountingStore {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        // A yield, so that reads run together (a list's page) really overlap here.
        tokio::task::yield_now().await;
        let found = match self.failing_reads {
            Some(pause) => {
                tokio::time::sleep(pause).await;
                Err(StoreError::Unavailable("the test's store is down".into()))
            }
            None => self.inner.get(bucket, key).await,
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        found
    }
    async fn put_if_absent(&self, b: &str, k: &str, body: Bytes) -> Result<Version, StoreError> {
        self.inner.put_if_absent(b, k, body).await
    }
    async fn put_if_version(
        &self,
        b: &str,
        k: &str,
        body: Bytes,
        expected: &Version,
    ) -> Result<Version, StoreError> {
        self.inner.put_if_version(b, k, body, expected).await
    }
    async fn list_page(
        &self,
        b: &str,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> Result<ListPage, StoreError> {
        self.listings.fetch_add(1, Ordering::SeqCst);
        self.inner.list_page(b, prefix, start_after, max_keys).await
    }
    async fn delete(&self, b: &str, k: &str) -> Result<(), StoreError> {
        self.inner.delete(b, k).await
    }
}
