//! The watch operation: a blocking query that answers when a lock's `index` moves on. Served
//! by the lock's one store watcher in this process ([`super::watchers`]), so watching clients add
//! no store reads of their own. The same for every kind of lock ([`Engine::watched`]); the
//! mutex's view of what it finds is made here, the multi-holder kinds' in `shared_ops`.

use std::time::Duration as StdDuration;

use super::kind::LockKind;
use super::watchers;
use super::{Engine, LockDocument, LockError, LockView, Served, Target};

/// How long a watch waits for the first read of the watcher it started, rather than reading the
/// lock itself too.
pub(super) const FIRST_READ_WAIT: StdDuration = StdDuration::from_secs(1);

/// A state's index: its document's revision, 0 for no lock.
fn index_of<K: LockKind>(doc: Option<&K>) -> u64 {
    doc.map_or(0, K::revision)
}

impl Engine {
    /// A blocking query: the lock's view as soon as its `index` is no longer `index` (at once if
    /// it already differs), or when `wait` seconds have passed (default 30). Served by the lock's
    /// one watcher in this process, so watching clients add no store reads of their own.
    #[tracing::instrument(skip(self))]
    pub async fn watch(
        &self,
        bucket: Option<&str>,
        key: &str,
        expect_owner: Option<&str>,
        index: Option<u64>,
        wait: Option<f64>,
    ) -> Result<LockView, LockError> {
        let target = self.target(bucket, key)?;
        let wait = self.watch_wait(wait)?;
        let index = match index {
            Some(index) if !wait.is_zero() => index,
            _ => return self.status(bucket, key, expect_owner).await,
        };
        if let Some(owner) = expect_owner {
            self.owner(owner)?;
        }
        let doc = self.watched::<LockDocument>(&target, index, wait).await?;
        Ok(self.status_view(&target, doc.as_ref(), expect_owner))
    }

    /// A watch's wait as asked (default 30 s, or the longest wait if shorter), checked.
    pub(super) fn watch_wait(&self, wait: Option<f64>) -> Result<StdDuration, LockError> {
        let default_wait = self.config.max_wait.as_secs_f64().min(30.0);
        self.wait(Some(wait.unwrap_or(default_wait)))
    }

    /// The state of the lock at `target` (`None`: no lock) once its index is no longer `index`,
    /// or at the end of `wait`, whichever comes first.
    pub(super) async fn watched<K: Served>(
        &self,
        target: &Target,
        index: u64,
        wait: StdDuration,
    ) -> Result<Option<K>, LockError> {
        let mut watching = K::watchers(self)
            .follow(&target.bucket, &target.object)
            .map_err(|e| self.too_many_watched(e))?;
        // The state the lock's watcher knows, when it knows one at least as new as the client's:
        // clients following a lock add no reads of their own. A watcher this call just started
        // is reading the lock now: its answer serves here too, if it comes soon. Else (the
        // store is slow or down, or the watcher is behind the client) a read, as a status,
        // which also reports a store outage as one.
        let known = match watching.known() {
            Some(doc) => Some(doc),
            None => tokio::time::timeout(wait.min(FIRST_READ_WAIT), watching.first_known())
                .await
                .ok()
                .flatten(),
        };
        let current = match known {
            Some(Ok(doc)) if index_of(doc.as_ref()) >= index => doc,
            Some(Err(watchers::Unreadable(why))) => return Err(LockError::Unreadable(why)),
            _ => self
                .read_fresh::<K>(target)
                .await?
                .state
                .map(|(doc, _)| doc),
        };
        if index_of(current.as_ref()) != index {
            return Ok(current);
        }
        let changed = tokio::time::timeout(wait, async {
            loop {
                let seen = tokio::select! {
                    seen = watching.seen.changed() => seen,
                    // A replica shutting down answers now, as if the wait had run out: the
                    // client asks again, of a replica that stays.
                    _ = self.drain_begun() => return None,
                };
                if seen.is_err() {
                    return None; // the watcher ended: answer with what is known
                }
                let seen = watching.seen.borrow_and_update().clone();
                // The watcher's answer to a read begun before the one that found the state
                // above may come after it: older news is no change.
                if let (Ok(Some(doc)), Some(known)) = (&seen, &current) {
                    if known.supersedes(doc) {
                        continue;
                    }
                }
                // A document that turned unreadable is a change too: answered as the status is.
                if seen
                    .as_ref()
                    .map_or(true, |s| index_of(s.as_ref()) != index)
                {
                    return Some(seen);
                }
            }
        })
        .await;
        match changed {
            Ok(Some(Ok(doc))) => Ok(doc),
            Ok(Some(Err(watchers::Unreadable(why)))) => Err(LockError::Unreadable(why)),
            // Timed out: the same index, judged at this moment (the lease may have run out).
            _ => match watching.seen.borrow().clone() {
                Ok(Some(doc)) if doc.revision() == index => Ok(Some(doc)),
                _ => Ok(current),
            },
        }
    }
}
