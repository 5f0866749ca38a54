//! Grants whose caller never learned of them: a write whose answer was lost, or a request
//! cancelled mid-write, may still land. Such a grant is watched and, if it lands, freed, so the
//! lock is not held for a whole lease by nobody.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use tokio::time::Instant;

use super::document::HolderToken;
use super::kind::LockKind;
use super::watchers::Watchers;
use super::{Engine, Served, Target};
use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::store::{Store, Version};

/// How long a grant whose outcome was unknown is watched for landing late. A request delayed in
/// the network arrives within seconds in practice (and S3 refuses a signature older than 15
/// minutes); past this, a late grant stays held until its lease ends.
const ORPHAN_WATCH: StdDuration = StdDuration::from_secs(60);
const MAX_ORPHAN_WATCHERS: usize = 1024;

/// A grant that may land without its caller ever learning its token, and what it takes to free
/// it if it does (`K`: the kind of lock).
pub(super) struct OrphanWatch<K: LockKind> {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// The lock's watchers on this replica, told when the grant is freed.
    lock_watchers: Arc<Watchers<K>>,
    /// Orphan clean-ups running now, shared by all (bounded by `MAX_ORPHAN_WATCHERS`).
    running: Arc<AtomicUsize>,
    bucket: String,
    object: String,
    orphan: K,
    /// The holder token the grant hands out: the holding freed if the grant lands unseen.
    token: HolderToken,
    /// The version the grant was written against (`None`: written as a create).
    written_over: Option<Version>,
}

impl<K: LockKind> OrphanWatch<K> {
    /// Watches in the background: keeps reading until the store answers (for a minute at most,
    /// or the lease if shorter), and releases the lock only while the stored document is still
    /// byte for byte the orphaned grant, or (a multi-holder lock) a later one that still holds
    /// its holding.
    pub(super) fn spawn(self) {
        // Bounded, so an outage that fails many acquires cannot pile up watchers that all poll
        // the store when it comes back.
        if self.running.fetch_add(1, Ordering::SeqCst) >= MAX_ORPHAN_WATCHERS {
            self.running.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(object = %self.object, "too many unsettled grants to watch; this \
                one, if it landed, stays held until its lease ends");
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.running.fetch_sub(1, Ordering::SeqCst);
            return; // shutting down: nothing left to run the watch on
        };
        runtime.spawn(self.watch());
    }

    async fn watch(self) {
        let _count = DecrementOnDrop(self.running.clone());
        let ours = self.orphan.to_bytes();
        let lease = StdDuration::from_secs(self.orphan.lease_secs(&self.token));
        let give_up = Instant::now() + lease.min(ORPHAN_WATCH);
        let mut backoff =
            Backoff::exponential(StdDuration::from_millis(100), 2, StdDuration::from_secs(5));
        while Instant::now() < give_up {
            backoff.wait().await;
            let stored = match self.store.get(&self.bucket, &self.object).await {
                Ok(stored) => stored,
                Err(_) => continue,
            };
            // Still as it was: the grant may yet land.
            if stored.as_ref().map(|s| &s.version) == self.written_over.as_ref() {
                continue;
            }
            let Some(stored) = stored else {
                return; // deleted: nothing is held
            };
            let now = self.clock.now().latest;
            let released = if stored.body == ours {
                self.orphan.orphan_freed(&self.token, now)
            } else {
                // Replaced: by a later document that still holds the grant (others' writes
                // over it, see `LockKind::orphan_freed_later`), or one that no longer does (it
                // can no longer land, or was already freed, broken or taken).
                match K::from_bytes(&stored.body)
                    .ok()
                    .and_then(|later| later.orphan_freed_later(&self.token, now))
                {
                    Some(released) => released,
                    None => return,
                }
            };
            match self
                .store
                .put_if_version(
                    &self.bucket,
                    &self.object,
                    released.to_bytes(),
                    &stored.version,
                )
                .await
            {
                Ok(_) => {
                    tracing::warn!(bucket = %self.bucket, object = %self.object,
                        "released a grant whose caller never learned of it");
                    self.lock_watchers
                        .observed(&self.bucket, &self.object, &released);
                    self.lock_watchers.freed(&self.bucket, &self.object);
                    return;
                }
                // Re-read: either our release landed unseen, or the document changed.
                Err(_) => continue,
            }
        }
    }
}

/// Spawns its watch if dropped while armed: the future doing the write was cancelled.
pub(super) struct OrphanGuard<K: LockKind>(pub(super) Option<OrphanWatch<K>>);

impl<K: LockKind> OrphanGuard<K> {
    pub(super) fn disarm(mut self) -> Option<OrphanWatch<K>> {
        self.0.take()
    }
}

impl<K: LockKind> Drop for OrphanGuard<K> {
    fn drop(&mut self) {
        if let Some(watch) = self.0.take() {
            watch.spawn();
        }
    }
}

/// Counts a running task down when it ends, however it ends.
struct DecrementOnDrop(Arc<AtomicUsize>);

impl Drop for DecrementOnDrop {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Engine {
    /// A watch of `orphan`, a grant of `token` about to be written over `written_over`.
    pub(super) fn orphan_cleanup<K: Served>(
        &self,
        target: &Target,
        orphan: K,
        token: HolderToken,
        written_over: Option<Version>,
    ) -> OrphanWatch<K> {
        OrphanWatch {
            store: self.background.clone(),
            clock: self.clock.clone(),
            lock_watchers: K::watchers(self).clone(),
            running: self.orphan_watchers.clone(),
            bucket: target.bucket.clone(),
            object: target.object.clone(),
            orphan,
            token,
            written_over,
        }
    }
}
