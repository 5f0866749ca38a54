//! Where lock documents live. A store knows objects, bodies and versions; it knows nothing of
//! locks. Every backend offers the same four atomic operations, and every one of them must pass
//! the conformance suite in `tests/store_conformance.rs`:
//!
//! * `get` returns the body with its version (the S3 ETag, or the local equivalent);
//! * `put_if_absent` creates an object only if none exists (`If-None-Match: *`);
//! * `put_if_version` replaces an object only if it still has the version just read (`If-Match`);
//! * `list_page` names the objects under a prefix, one page at a time (`list`, built on it,
//!   names them all).
//!
//! Outcomes are named for what the caller should do next (see [`StoreError`]); each backend maps
//! its own quirks into them and none of those quirks leak past this module.

pub mod check;
pub mod health;
pub mod local;
pub mod memory;
pub mod s3;
pub mod slots;

use async_trait::async_trait;
use bytes::Bytes;

/// The version of one stored body. Opaque: only ever compared for equality by the store itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(pub String);

/// A body together with the version it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub body: Bytes,
    pub version: Version,
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// In lexical order, all after the `start_after` asked for.
    pub keys: Vec<String>,
    /// Whether keys under the prefix may follow the last of these: ask again with it as
    /// `start_after`. Never true with no keys, so following pages always moves forward.
    pub more: bool,
}

/// The page size [`Store::list`] asks for: S3's own largest page.
const LIST_ALL_PAGE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The condition did not hold: the object exists (`put_if_absent`), or it changed or vanished
    /// since it was read (`put_if_version`). Re-read and decide again. A write whose response was
    /// lost and retried can also land here after succeeding, so callers must read back.
    #[error("precondition failed")]
    PreconditionFailed,
    /// The store could not be reached or did not answer in time. For a write the outcome is
    /// unknown: it may have been applied.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The call was never made: this replica had no room for it in time (every call slot was
    /// busy). Nothing reached the store, and nothing will: a write was not applied.
    #[error("store unavailable: {0}")]
    NotSent(String),
    /// The named bucket does not exist in the store.
    #[error("bucket {0} does not exist")]
    NoSuchBucket(String),
    /// Anything else the store said no to (bad credentials, a malformed request). Not retried.
    #[error("store error: {0}")]
    Other(String),
}

#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The object's body and version, or `None` when it does not exist.
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Versioned>, StoreError>;

    /// Creates the object only when absent; returns the new version.
    async fn put_if_absent(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
    ) -> Result<Version, StoreError>;

    /// Replaces the object only when its version is still `expected`; returns the new version.
    async fn put_if_version(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        expected: &Version,
    ) -> Result<Version, StoreError>;

    /// Keys of objects whose key starts with `prefix` and sorts after `start_after` (all of
    /// them when `None`), in lexical (byte) order, at most `max_keys` of them (at least one is
    /// asked for). One call of the store's own listing: a list of thousands of objects costs one
    /// page's worth of work per call, never the whole prefix's.
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> Result<ListPage, StoreError>;

    /// Keys of all objects whose key starts with `prefix`, in lexical order, page after page
    /// (tests and tools; the lock service itself lists one page per request).
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys: Vec<String> = Vec::new();
        loop {
            let page = self
                .list_page(
                    bucket,
                    prefix,
                    keys.last().map(String::as_str),
                    LIST_ALL_PAGE,
                )
                .await?;
            keys.extend(page.keys);
            if !page.more {
                return Ok(keys);
            }
        }
    }

    /// Removes an object unconditionally (start-up probe clean-up and tests; never used by the
    /// lock protocol, which only ever writes conditionally).
    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError>;

    /// This store for background work (a lock's watcher polling, orphan watches, lists): the
    /// same objects, but its calls wait behind lock decisions where the store queues its calls.
    /// `None` for a store without such a queue: background work then uses the store as it is.
    fn background(&self) -> Option<std::sync::Arc<dyn Store>> {
        None
    }
}

/// The version a local backend gives a body: its MD5, hex, as S3 gives a single-part ETag.
/// Tying the version to the body is what makes "every write must change the body" a rule of the
/// lock documents rather than of each backend.
pub(crate) fn content_version(body: &[u8]) -> Version {
    use md5::{Digest, Md5};
    let digest = Md5::digest(body);
    let mut hex = String::with_capacity(32);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    Version(hex)
}
