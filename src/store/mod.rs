//! Where lock documents live. A store knows objects, bodies and versions; it knows nothing of
//! locks. Every backend offers the same four atomic operations, and every one of them must pass
//! the conformance suite in `tests/store_conformance.rs`:
//!
//! * `get` returns the body with its version (the S3 ETag, or the local equivalent);
//! * `put_if_absent` creates an object only if none exists (`If-None-Match: *`);
//! * `put_if_version` replaces an object only if it still has the version just read (`If-Match`);
//! * `list` names the objects under a prefix.
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

    /// Keys of all objects whose key starts with `prefix`, in lexical order.
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StoreError>;

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
