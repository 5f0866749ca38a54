//! The change stream of a semaphore or a read-write lock: its state first (`state`), then one
//! event per change, each carrying its [`SharedView`] and its `index`. Served by the same stream
//! loop as a lock's ([`super::events`]): from the key's one watcher, so listeners add no store
//! reads.
//!
//! What a change is called is decided here, by pure functions of (the document the listener was
//! last told of, the new document, the time), tested with plain `#[test]`s: [`change`],
//! [`by_time`], [`snapshot`]. Holders are told apart by their fencing tokens (unique per grant
//! across the key, kept on renew), never by their holder tokens. A write may change several
//! things at once (every write drops the holders whose leases ran out, a writer's grant removes
//! its waiting entry), and changes that land between two of the watcher's looks are folded into
//! one event: it is named by the first of these that happened, in this order:
//!
//! 1. `acquired`: a holder was added (a fencing token beyond the last one shown);
//! 2. `released`: a holder released (its token is among the document's lately released);
//! 3. `broken`: the fencing token grew with neither (only a break does that);
//! 4. `renewed`: a holder restarted its lease;
//! 5. `waiting`: a writer's waiting entry was added, renewed or removed;
//! 6. `expired`: a holder whose lease ran out was dropped by a write (the stream usually said so
//!    already, by time);
//! 7. `state`: none of these (the object was changed or deleted by hand): the state as it is.
//!
//! A lease that runs out is not a write: the stream tells it by time when the engine's clock
//! says so (`now.earliest` past the lease's end, as every rule judges expiry), with the same
//! `index`: `expired` for a holder's lease, `waiting` for a waiting writer's entry that lapsed.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::events::{EventKind, LockEvent, LockEvents, Streamed};
use super::history::History;
use super::shared::SharedDocument;
use super::shared_ops::of_kind;
use super::{Engine, LockError, SharedKind, SharedView};
use crate::wire::truncate_to_micros;

/// An event of a semaphore's or read-write lock's stream. Its id is `view.index`.
pub type SharedEvent = LockEvent<SharedView>;
/// A semaphore's or read-write lock's events as they come (see [`LockEvents`]).
pub type SharedEvents = LockEvents<SharedView>;

/// The first event for a listener that last saw `last_id` (`None`: a new listener), or `None`
/// when it already knows the state: it resumes at the current index, and no lease (nor waiting
/// entry) in the document has run out since. One that has is named again, as for a lock: its
/// lapse shares the index of the write before it, so the listener's id cannot say whether it
/// heard it.
pub fn snapshot(
    doc: Option<&SharedDocument>,
    now: DateTime<Utc>,
    last_id: Option<u64>,
) -> Option<EventKind> {
    let known = match (last_id, doc) {
        (None, _) => false,
        (Some(last), None) => last == 0,
        (Some(last), Some(d)) => {
            let ran_out = d.holders.iter().any(|h| !h.is_live(now))
                || d.waiting.iter().any(|w| !w.is_live(now));
            last == d.revision && d.revision != 0 && !ran_out
        }
    };
    (!known).then_some(EventKind::State)
}

/// The event a newly seen document `next` makes for a listener last told of `prev` (see the
/// order in this module's documentation).
pub fn change(prev: Option<&SharedDocument>, next: Option<&SharedDocument>) -> EventKind {
    let Some(next) = next else {
        return EventKind::State; // deleted: s3lock never deletes one
    };
    let shown_fencing = prev.map_or(0, |p| p.fencing_token);
    if next.holders.iter().any(|h| h.fencing_token > shown_fencing) {
        return EventKind::Acquired;
    }
    let newly_released = next
        .released
        .iter()
        .any(|t| prev.is_none_or(|p| !p.released.contains(t)));
    if newly_released {
        return EventKind::Released;
    }
    if next.fencing_token > shown_fencing {
        return EventKind::Broken;
    }
    let Some(prev) = prev else {
        return EventKind::State;
    };
    let before = |fencing: u64| prev.holders.iter().find(|h| h.fencing_token == fencing);
    let renewed = next.holders.iter().any(|h| {
        before(h.fencing_token)
            .is_some_and(|b| lease(b.lock_time, b.expire) != lease(h.lock_time, h.expire))
    });
    if renewed {
        return EventKind::Renewed;
    }
    let entries = |d: &SharedDocument| {
        d.waiting
            .iter()
            .map(|w| (w.id.clone(), lease(w.lock_time, w.expire)))
            .collect::<Vec<_>>()
    };
    if entries(prev) != entries(next) {
        return EventKind::Waiting;
    }
    let dropped = prev.holders.iter().any(|p| {
        !next
            .holders
            .iter()
            .any(|h| h.fencing_token == p.fencing_token)
    });
    if dropped {
        return EventKind::Expired;
    }
    EventKind::State
}

/// A lease as stored, to compare two documents by: one may be a write this process made (its
/// times to the nanosecond), the other read from the store (to the microsecond).
fn lease(lock_time: DateTime<Utc>, expire: u64) -> (DateTime<Utc>, u64) {
    (truncate_to_micros(lock_time), expire)
}

/// The event due by time alone for a listener last sent a view judged at `shown_at`: `expired`
/// when a holder's lease has ended since (`shown_at` < end ≤ `now`), else `waiting` when a
/// waiting writer's entry has lapsed since; `None` when neither.
pub fn by_time(
    doc: Option<&SharedDocument>,
    shown_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<EventKind> {
    let doc = doc?;
    let ended = |end: DateTime<Utc>| shown_at < end && end <= now;
    if doc.holders.iter().any(|h| ended(h.expires_at())) {
        Some(EventKind::Expired)
    } else if doc.waiting.iter().any(|w| ended(w.expires_at())) {
        Some(EventKind::Waiting)
    } else {
        None
    }
}

/// When [`by_time`] next has something to say for a listener last sent a view judged at
/// `shown_at`: the first lease or waiting entry to end after it.
pub fn next_due(doc: Option<&SharedDocument>, shown_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let doc = doc?;
    let holders = doc.holders.iter().map(|h| h.expires_at());
    let waiting = doc.waiting.iter().map(|w| w.expires_at());
    holders.chain(waiting).filter(|end| *end > shown_at).min()
}

/// A listener of a semaphore or read-write lock stands where its last view was judged: every
/// lease that ended by then is out of the views it was sent.
impl Streamed for SharedDocument {
    type Shown = DateTime<Utc>;

    fn history(&self) -> History<'_> {
        SharedDocument::history(self)
    }

    fn first(
        doc: Option<&Self>,
        now: DateTime<Utc>,
        last_id: Option<u64>,
    ) -> (Option<EventKind>, Self::Shown) {
        (snapshot(doc, now, last_id), now)
    }

    fn changed(
        prev: Option<&Self>,
        _shown: Self::Shown,
        next: Option<&Self>,
        now: DateTime<Utc>,
    ) -> (EventKind, Self::Shown) {
        (change(prev, next), now)
    }

    fn lapsed(
        doc: Option<&Self>,
        shown: Self::Shown,
        now: DateTime<Utc>,
    ) -> Option<(EventKind, Self::Shown)> {
        by_time(doc, shown, now).map(|kind| (kind, now))
    }

    fn due(doc: Option<&Self>, shown: Self::Shown) -> Option<DateTime<Utc>> {
        next_due(doc, shown)
    }
}

impl Engine {
    /// Follows a semaphore or read-write lock, as [`Engine::events`] follows a lock: its state
    /// at once (unless `last_id` says the client knows it), then each change. Refused before
    /// anything is sent when the replica drains, may watch no more locks, cannot read the key,
    /// or finds a document it cannot read (or one of the other kind).
    #[tracing::instrument(skip(self))]
    pub async fn shared_events(
        self: &Arc<Self>,
        bucket: Option<&str>,
        key: &str,
        kind: SharedKind,
        last_id: Option<u64>,
    ) -> Result<SharedEvents, LockError> {
        let target = self.shared_target(bucket, key, kind)?;
        self.stream::<SharedDocument, _, _>(target, last_id, move |engine, target, doc| {
            let doc = of_kind(doc, kind)?;
            Ok(engine.shared_view(target, kind, doc, engine.clock.now(), None))
        })
        .await
    }
}

#[cfg(test)]
mod tests;
