//! An in-process store for fast unit tests. Not durable; one process only.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::{content_version, ListPage, Store, StoreError, Version, Versioned};

#[derive(Debug, Default)]
pub struct MemoryStore {
    /// (bucket, key) → object. A std mutex is enough: no await happens while it is held, and
    /// holding it across check and write is what makes the conditional puts atomic.
    objects: Mutex<BTreeMap<(String, String), Versioned>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Versioned>> {
        self.objects.lock().expect("memory store mutex poisoned")
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(self
            .objects()
            .get(&(bucket.to_owned(), key.to_owned()))
            .cloned())
    }

    async fn put_if_absent(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
    ) -> Result<Version, StoreError> {
        let mut objects = self.objects();
        let slot = (bucket.to_owned(), key.to_owned());
        if objects.contains_key(&slot) {
            return Err(StoreError::PreconditionFailed);
        }
        let version = content_version(&body);
        objects.insert(
            slot,
            Versioned {
                body,
                version: version.clone(),
            },
        );
        Ok(version)
    }

    async fn put_if_version(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        expected: &Version,
    ) -> Result<Version, StoreError> {
        let mut objects = self.objects();
        match objects.get_mut(&(bucket.to_owned(), key.to_owned())) {
            Some(current) if current.version == *expected => {
                let version = content_version(&body);
                *current = Versioned {
                    body,
                    version: version.clone(),
                };
                Ok(version)
            }
            _ => Err(StoreError::PreconditionFailed),
        }
    }

    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> Result<ListPage, StoreError> {
        use std::ops::Bound;
        let objects = self.objects();
        let from = (bucket.to_owned(), start_after.unwrap_or(prefix).to_owned());
        let lower = match start_after {
            Some(_) => Bound::Excluded(from),
            None => Bound::Included(from),
        };
        let mut under = objects
            .range((lower, Bound::Unbounded))
            .map(|((b, k), _)| (b, k))
            .take_while(|(b, _)| *b == bucket)
            .filter(|(_, k)| k.starts_with(prefix))
            .map(|(_, k)| k.clone());
        let keys: Vec<String> = under.by_ref().take(max_keys.max(1)).collect();
        let more = !keys.is_empty() && under.next().is_some();
        Ok(ListPage { keys, more })
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.objects().remove(&(bucket.to_owned(), key.to_owned()));
        Ok(())
    }
}
