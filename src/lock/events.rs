//! The change stream of one lock: its state at once, then one event per change, each carrying
//! the lock's view and its `index`.
//!
//! The stream is served by the lock's one watcher in this process ([`super::watchers`]): it
//! follows the state the watcher publishes (from its reads and from this process's own writes),
//! so however many clients follow a lock, they add no store reads. Changes that land between
//! two of the watcher's looks are folded into one event, named by where they ended.
//!
//! One stream loop serves every kind of lock (`Streamed`): the mutex's, whose names are
//! decided here, and the semaphore's and read-write lock's ([`super::shared_events`]).
//!
//! What a change of a mutex is called is decided by pure functions of (the document the
//! listener was last told of, where that left it, the new document, the time) — [`change`],
//! [`by_time`], [`snapshot`] — tested with plain `#[test]`s. A lease that runs out is not a
//! write: the stream tells it when the engine's clock says so (`now.earliest` past the lease's
//! end, as every rule judges expiry), with the same `index` as the held state.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use super::document::LockDocument;
use super::history::History;
use super::watch::FIRST_READ_WAIT;
use super::watchers::Unreadable;
use super::{Engine, LockError, LockView, Served, Target};

/// How long a stream sleeps at most before it looks at the clock again while a lease or a
/// lock-delay runs: the store's time as this replica knows it may move unevenly (its estimate
/// from the store's answers is revised), and a test's clock is moved by hand.
const CLOCK_RECHECK: StdDuration = StdDuration::from_secs(1);
/// Events queued for a client that reads slowly; past it the stream waits, and the changes
/// meanwhile are folded (the watcher keeps the latest state only).
const EVENT_BUFFER: usize = 8;

/// What an event says happened. A lock's stream uses all but `State` and `Waiting`; a
/// semaphore's or read-write lock's uses `State`, `Acquired`, `Released`, `Expired`, `Broken`,
/// `Renewed` and `Waiting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Snapshot of a semaphore or read-write lock: its state, whatever it is (also, as a change,
    /// one no other kind names: the document changed or deleted by hand).
    State,
    /// Snapshot: someone holds the lock.
    Held,
    /// Snapshot, or change: nobody holds the lock and it may be taken now (it never existed, was
    /// released or broken, or the lock-delay after an expiry has ended).
    Free,
    /// Snapshot, or change: the lease ran out without a release; the holder that vanished is
    /// still named. Sent by time, with the same `index` as the held state.
    Expired,
    /// A new holder (the fencing token grew).
    Acquired,
    /// The same holder restarted its lease, its value unchanged.
    Renewed,
    /// The same holder changed its value (a renew that also changes the value is this).
    Value,
    /// The holder released the lock.
    Released,
    /// An admin broke the lock.
    Broken,
    /// A read-write lock's waiting writer was recorded, renewed its entry, or left (withdrawn,
    /// or its entry lapsed: sent by time).
    Waiting,
}

impl EventKind {
    /// The `event:` name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::State => "state",
            Self::Held => "held",
            Self::Free => "free",
            Self::Expired => "expired",
            Self::Acquired => "acquired",
            Self::Renewed => "renewed",
            Self::Value => "value",
            Self::Released => "released",
            Self::Broken => "broken",
            Self::Waiting => "waiting",
        }
    }
}

/// Where the events a listener was sent left the lock: what a snapshot names, and what the
/// next change is judged against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Held,
    /// The lease ran out unreleased: during its lock-delay, or for good when there is none.
    Expired,
    Free,
}

impl Phase {
    fn snapshot(self) -> EventKind {
        match self {
            Phase::Held => EventKind::Held,
            Phase::Expired => EventKind::Expired,
            Phase::Free => EventKind::Free,
        }
    }
}

/// One event of a lock's stream (or, with a [`SharedView`](super::SharedView), of a semaphore's
/// or read-write lock's). Its id is `view.index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockEvent<V = LockView> {
    pub kind: EventKind,
    /// The lock as status shows it when the event is sent (never the holder token).
    pub view: V,
}

/// The same holder's value in both documents.
fn same_value(a: &LockDocument, b: &LockDocument) -> bool {
    a.value == b.value
}

/// When a lease that ran out unreleased stops keeping its lock: the end of its lock-delay, or
/// `None` when it has none (the lock is free to take from the lease's end, and the stream's last
/// word on it stays `expired`).
fn delay_end(doc: &LockDocument) -> Option<DateTime<Utc>> {
    (doc.lock_delay > 0).then(|| doc.available_at()).flatten()
}

/// Where `doc` stands at `now` (judged at the earliest the store's time may be).
pub fn phase(doc: Option<&LockDocument>, now: DateTime<Utc>) -> Phase {
    match doc {
        Some(d) if d.owner.is_some() => {
            if !d.is_expired(now) {
                Phase::Held
            } else if delay_end(d).is_some_and(|end| now >= end) {
                Phase::Free
            } else {
                Phase::Expired
            }
        }
        _ => Phase::Free,
    }
}

/// The first event for a listener that last saw `last_id` (`None`: a new listener), or `None`
/// when it already knows the state: it resumes at the current index, and no lease has run out
/// since. A lease that ran out is named again (its `expired` or `free` has the held state's
/// index, so the listener's id cannot say whether it heard it), and so is any state of index 0
/// that is a document (the old module's documents have no revision to tell them apart).
pub fn snapshot(
    doc: Option<&LockDocument>,
    now: DateTime<Utc>,
    last_id: Option<u64>,
) -> Option<EventKind> {
    let phase = phase(doc, now);
    let index = doc.map_or(0, |d| d.revision);
    let known = match (last_id, doc) {
        (None, _) => false,
        (Some(last), None) => last == 0,
        (Some(last), Some(d)) => {
            let ran_out = d.owner.is_some() && phase != Phase::Held;
            last == index && index != 0 && !ran_out
        }
    };
    (!known).then(|| phase.snapshot())
}

/// The event a newly seen document `next` makes for a listener last told of `prev`, which left
/// it at `shown`. A holder is the same one when the owner, holder token and fencing token are
/// all unchanged (the old module's documents have no tokens: its owner then decides); a free
/// lock was broken when it has no token and a fencing token beyond what was shown.
pub fn change(prev: Option<&LockDocument>, shown: Phase, next: Option<&LockDocument>) -> EventKind {
    // The object was deleted (only by hand: s3lock never deletes a lock): nobody holds it.
    let Some(next) = next else {
        return EventKind::Free;
    };
    if next.owner.is_some() {
        let same_holder = prev.filter(|p| {
            p.owner == next.owner && p.token == next.token && p.fencing_token == next.fencing_token
        });
        match same_holder {
            Some(p) if shown == Phase::Held && same_value(p, next) => EventKind::Renewed,
            Some(_) if shown == Phase::Held => EventKind::Value,
            _ => EventKind::Acquired,
        }
    } else if next.token.is_none() && next.fencing_token > prev.map_or(0, |p| p.fencing_token) {
        EventKind::Broken
    } else {
        EventKind::Released
    }
}

/// Whether two looks at a lock found the same write of it. Compared by the write's id, not the
/// whole document: a write this process made is published as it was made (times to the
/// nanosecond), and a later read of the same write finds it as stored (to the microsecond).
/// The old module's documents have no write ids; their stored form decides.
pub(super) fn same_write<K: Streamed>(a: Option<&K>, b: Option<&K>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            let (x, y) = (a.history(), b.history());
            match (x.writes.first(), y.writes.first()) {
                (Some(i), Some(j)) => x.revision == y.revision && i == j,
                _ => a.to_bytes() == b.to_bytes(),
            }
        }
        _ => false,
    }
}

/// Where a listener stands once told of a newly written `doc`: held while it names an owner
/// (if its lease has already run out, [`by_time`] says so next).
fn after_change(doc: Option<&LockDocument>) -> Phase {
    match doc {
        Some(d) if d.owner.is_some() => Phase::Held,
        _ => Phase::Free,
    }
}

/// The event time alone brings a listener told of `doc` and left at `shown`, at `now`: the
/// lease ran out (`expired`), or its lock-delay ended (`free`).
pub fn by_time(doc: Option<&LockDocument>, shown: Phase, now: DateTime<Utc>) -> Option<EventKind> {
    let d = doc.filter(|d| d.owner.is_some())?;
    match shown {
        Phase::Held if d.is_expired(now) => Some(EventKind::Expired),
        Phase::Expired if delay_end(d).is_some_and(|end| now >= end) => Some(EventKind::Free),
        _ => None,
    }
}

/// When [`by_time`] will next have something to say, if ever.
fn next_due(doc: Option<&LockDocument>, shown: Phase) -> Option<DateTime<Utc>> {
    let d = doc.filter(|d| d.owner.is_some())?;
    match shown {
        Phase::Held => Some(d.expires_at()),
        Phase::Expired => delay_end(d),
        Phase::Free => None,
    }
}

/// A lock's events as they come; ends when the replica drains, or after an `Err` (the stored
/// document turned unreadable). Dropping it leaves the lock's watcher.
#[derive(Debug)]
pub struct LockEvents<V = LockView> {
    events: mpsc::Receiver<Result<LockEvent<V>, LockError>>,
}

impl<V> futures_util::Stream for LockEvents<V> {
    type Item = Result<LockEvent<V>, LockError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

/// What the one stream loop needs of a kind of lock: where the events sent so far left a
/// listener, and what each change, each lapse of time and each resume is called (pure
/// functions: the mutex's in this file, the semaphore's and read-write lock's in
/// `shared_events`).
pub(super) trait Streamed: Served {
    /// Where the events sent so far left a listener: what the next change, and the next lapse
    /// of time, are judged against.
    type Shown: Copy + Send + 'static;

    fn history(&self) -> History<'_>;

    /// The first event for a listener that last saw `last_id` (`None`: it knows the state), and
    /// where the state `doc` leaves it at `now`.
    fn first(
        doc: Option<&Self>,
        now: DateTime<Utc>,
        last_id: Option<u64>,
    ) -> (Option<EventKind>, Self::Shown);

    /// The event a newly seen `next` makes for a listener told of `prev` and left at `shown`,
    /// and where it leaves it at `now`.
    fn changed(
        prev: Option<&Self>,
        shown: Self::Shown,
        next: Option<&Self>,
        now: DateTime<Utc>,
    ) -> (EventKind, Self::Shown);

    /// The event time alone brings at `now` (a lease that ran out), and where it leaves the
    /// listener.
    fn lapsed(
        doc: Option<&Self>,
        shown: Self::Shown,
        now: DateTime<Utc>,
    ) -> Option<(EventKind, Self::Shown)>;

    /// When [`Streamed::lapsed`] may next have something to say, if ever.
    fn due(doc: Option<&Self>, shown: Self::Shown) -> Option<DateTime<Utc>>;
}

/// The mutex: a listener stands where its lock's [`Phase`] was last shown to be.
impl Streamed for LockDocument {
    type Shown = Phase;

    fn history(&self) -> History<'_> {
        LockDocument::history(self)
    }

    fn first(
        doc: Option<&Self>,
        now: DateTime<Utc>,
        last_id: Option<u64>,
    ) -> (Option<EventKind>, Phase) {
        (snapshot(doc, now, last_id), phase(doc, now))
    }

    fn changed(
        prev: Option<&Self>,
        shown: Phase,
        next: Option<&Self>,
        _now: DateTime<Utc>,
    ) -> (EventKind, Phase) {
        (change(prev, shown, next), after_change(next))
    }

    fn lapsed(doc: Option<&Self>, shown: Phase, now: DateTime<Utc>) -> Option<(EventKind, Phase)> {
        by_time(doc, shown, now).map(|kind| match kind {
            EventKind::Expired => (kind, Phase::Expired),
            _ => (kind, Phase::Free),
        })
    }

    fn due(doc: Option<&Self>, shown: Phase) -> Option<DateTime<Utc>> {
        next_due(doc, shown)
    }
}

/// How a stream shows a state of the lock at `target` (`None`: no document): the view of its
/// kind, or an error that ends the stream (a document this kind's routes cannot show).
type ViewOf<K, V> =
    dyn Fn(&Engine, &Target, Option<&K>) -> Result<V, LockError> + Send + Sync + 'static;

impl Engine {
    /// Follows a lock: its state at once (unless `last_id` says the client knows it), then each
    /// change. Refused before anything is sent when the replica drains, may watch no more
    /// locks, cannot read the lock, or finds it unreadable.
    #[tracing::instrument(skip(self))]
    pub async fn events(
        self: &Arc<Self>,
        bucket: Option<&str>,
        key: &str,
        last_id: Option<u64>,
    ) -> Result<LockEvents, LockError> {
        let target = self.target(bucket, key)?;
        self.stream::<LockDocument, _, _>(target, last_id, |engine, target, doc| {
            Ok(engine.status_view(target, doc, None))
        })
        .await
    }

    /// The change stream of the lock (of any kind) at `target`, each state shown by `view`.
    pub(super) async fn stream<K, V, F>(
        self: &Arc<Self>,
        target: Target,
        last_id: Option<u64>,
        view: F,
    ) -> Result<LockEvents<V>, LockError>
    where
        K: Streamed,
        V: Send + 'static,
        F: Fn(&Engine, &Target, Option<&K>) -> Result<V, LockError> + Send + Sync + 'static,
    {
        if self.is_draining() {
            return Err(LockError::ShuttingDown);
        }
        let (started, start) = oneshot::channel();
        let (sender, events) = mpsc::channel(EVENT_BUFFER);
        // The stream outlives this request's future: a task of its own follows the watcher,
        // and ends when the client drops the stream or the replica drains.
        let engine = self.clone();
        tokio::spawn(async move {
            engine
                .follow::<K, V>(target, last_id, &view, started, sender)
                .await
        });
        start.await.unwrap_or(Err(LockError::ShuttingDown))?;
        Ok(LockEvents { events })
    }

    async fn follow<K: Streamed, V>(
        &self,
        target: Target,
        last_id: Option<u64>,
        view: &ViewOf<K, V>,
        started: oneshot::Sender<Result<(), LockError>>,
        sender: mpsc::Sender<Result<LockEvent<V>, LockError>>,
    ) {
        let mut watching = match K::watchers(self).follow(&target.bucket, &target.object) {
            Ok(w) => w,
            Err(e) => {
                let _ = started.send(Err(self.too_many_watched(e)));
                return;
            }
        };
        // As a watch does: the state the watcher knows, or its first read if that comes soon,
        // else a read of our own (which also reports a store outage as one).
        let known = match watching.known() {
            Some(seen) => Some(seen),
            None => tokio::time::timeout(FIRST_READ_WAIT, watching.first_known())
                .await
                .ok()
                .flatten(),
        };
        // From when the state the listener is told of is known to hold (see `judged` below).
        let mut confirmed = *watching.read_at.borrow();
        let first = match known {
            Some(Ok(doc)) => Ok(doc),
            Some(Err(Unreadable(why))) => Err(LockError::Unreadable(why)),
            None => {
                confirmed = Some(self.clock.now().earliest);
                self.read_fresh::<K>(&target)
                    .await
                    .map(|basis| basis.state.map(|(doc, _)| doc))
            }
        };
        // What time alone brings (a lease that ran out, a lock-delay that ended) is judged at the
        // store's time as the clock says, but never past the start of the latest read that found
        // the state: another replica may have renewed or released the lock a moment before, and
        // what this replica knows is up to a poll old. So `expired` is said only once a read
        // begun after the lease's end still finds it (the watcher reads then anyway).
        let judged = |now: DateTime<Utc>, confirmed: Option<DateTime<Utc>>| {
            now.min(confirmed.unwrap_or(DateTime::<Utc>::MIN_UTC))
        };
        let emit = |kind: EventKind, doc: &Option<K>| {
            view(self, &target, doc.as_ref()).map(|view| LockEvent { kind, view })
        };
        let now = judged(self.clock.now().earliest, confirmed);
        let first = first.and_then(|doc| {
            let (kind, shown) = K::first(doc.as_ref(), now, last_id);
            // A state this stream cannot show is refused before the stream starts, whether or
            // not the listener is to be sent it.
            let view = view(self, &target, doc.as_ref())?;
            Ok((doc, kind.map(|kind| LockEvent { kind, view }), shown))
        });
        let (mut current, first, mut shown) = match first {
            Ok(first) => first,
            Err(e) => {
                let _ = started.send(Err(e));
                return;
            }
        };
        if started.send(Ok(())).is_err() {
            return; // the client left before the stream began
        }
        // The next item to send; an error is the stream's last.
        let mut next = first.map(Ok);
        loop {
            if let Some(item) = next.take() {
                let last = item.is_err();
                tokio::select! {
                    sent = sender.send(item) => if sent.is_err() || last { return },
                    _ = self.drain_begun() => return,
                }
            }
            let now = self.clock.now().earliest;
            confirmed = confirmed.max(*watching.read_at.borrow());
            // A state already published comes first: the read that found it moved `read_at`.
            let news = watching.seen.has_changed().unwrap_or(false);
            if let Some((kind, after)) =
                K::lapsed(current.as_ref(), shown, judged(now, confirmed)).filter(|_| !news)
            {
                shown = after;
                next = Some(emit(kind, &current));
                continue;
            }
            let due = K::due(current.as_ref(), shown);
            // Due by the clock, not yet found so by a read begun after it: the watcher's next.
            let unconfirmed = due.is_some_and(|due| due <= now);
            let pause = due
                .filter(|due| *due > now)
                .map(|due| (due - now).to_std().unwrap_or_default().min(CLOCK_RECHECK));
            tokio::select! {
                biased;
                // A replica shutting down ends its streams; clients resume on one that stays.
                _ = self.drain_begun() => return,
                _ = sender.closed() => return,
                seen = watching.seen.changed() => {
                    if seen.is_err() {
                        return;
                    }
                    let seen = watching.seen.borrow_and_update().clone();
                    match seen {
                        Err(Unreadable(why)) => next = Some(Err(LockError::Unreadable(why))),
                        Ok(doc) if same_write(doc.as_ref(), current.as_ref()) => {}
                        // Older than what the listener was told: the answer to a read begun
                        // before the one that found `current` (this stream's own first read
                        // comes before the watcher's when the watcher is slow).
                        Ok(Some(doc))
                            if current.as_ref().is_some_and(|c| c.supersedes(&doc)) => {}
                        Ok(doc) => {
                            let now = self.clock.now().earliest;
                            let (kind, after) =
                                K::changed(current.as_ref(), shown, doc.as_ref(), now);
                            shown = after;
                            current = doc;
                            next = Some(emit(kind, &current));
                        }
                    }
                }
                read = watching.read_at.changed(), if unconfirmed => {
                    if read.is_err() {
                        return;
                    }
                }
                _ = sleep_for(pause) => {}
            }
        }
    }
}

/// Sleeps for `pause`, or forever when there is nothing to wait for.
async fn sleep_for(pause: Option<StdDuration>) {
    match pause {
        Some(pause) => tokio::time::sleep(pause).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse_seed_time;
    use chrono::Duration;

    fn t0() -> DateTime<Utc> {
        parse_seed_time("2026-11-26T00:00:00+00:00").unwrap()
    }

    fn held(owner: &str, ttl: u64) -> LockDocument {
        LockDocument::grant(owner, ttl, t0(), 1)
    }

    fn seed(owner: &str) -> LockDocument {
        let body = format!(
            r#"{{"expire": 60, "lock_time": "2026-11-26T00:00:00+00:00", "release_time": null, "owner": "{owner}"}}"#
        );
        LockDocument::from_bytes(body.as_bytes()).unwrap()
    }

    #[test]
    fn a_new_listener_is_told_held_or_free_and_free_for_a_lock_that_does_not_exist() {
        let doc = held("alice", 30);
        assert_eq!(snapshot(Some(&doc), t0(), None), Some(EventKind::Held));
        assert_eq!(snapshot(None, t0(), None), Some(EventKind::Free));
        let released = doc.released(t0());
        assert_eq!(snapshot(Some(&released), t0(), None), Some(EventKind::Free));
    }

    #[test]
    fn a_lease_that_ran_out_unreleased_is_shown_expired() {
        let doc = held("alice", 30);
        let end = doc.expires_at();
        assert_eq!(snapshot(Some(&doc), end, None), Some(EventKind::Expired));
        assert_eq!(
            phase(Some(&doc), end - Duration::milliseconds(1)),
            Phase::Held
        );
    }

    #[test]
    fn a_listener_resuming_at_the_current_index_is_sent_no_snapshot() {
        let doc = held("alice", 30);
        let index = doc.revision;
        assert_eq!(snapshot(Some(&doc), t0(), Some(index)), None);
        assert_eq!(snapshot(None, t0(), Some(0)), None);
        let released = doc.released(t0());
        assert_eq!(
            snapshot(Some(&released), t0(), Some(released.revision)),
            None
        );
    }

    #[test]
    fn a_listener_resuming_at_another_index_is_sent_the_state_now() {
        let doc = held("alice", 30).renewed(30, t0());
        assert_eq!(snapshot(Some(&doc), t0(), Some(1)), Some(EventKind::Held));
        assert_eq!(snapshot(Some(&doc), t0(), Some(99)), Some(EventKind::Held));
        assert_eq!(snapshot(None, t0(), Some(3)), Some(EventKind::Free));
    }

    #[test]
    fn a_listener_resuming_at_the_index_of_a_lease_that_ran_out_is_told_it_expired() {
        let doc = held("alice", 30);
        let end = doc.expires_at();
        assert_eq!(
            snapshot(Some(&doc), end, Some(doc.revision)),
            Some(EventKind::Expired)
        );
    }

    #[test]
    fn an_old_module_document_is_always_shown_to_a_resuming_listener() {
        assert_eq!(
            snapshot(Some(&seed("bob")), t0(), Some(0)),
            Some(EventKind::Held)
        );
    }

    #[test]
    fn a_grant_after_a_free_lock_is_acquired() {
        let doc = held("alice", 30);
        assert_eq!(change(None, Phase::Free, Some(&doc)), EventKind::Acquired);
        let released = doc.released(t0());
        let bob = released.granted_over("bob", 30, t0(), 2);
        assert_eq!(
            change(Some(&released), Phase::Free, Some(&bob)),
            EventKind::Acquired
        );
    }

    #[test]
    fn the_same_holder_restarting_its_lease_is_renewed() {
        let doc = held("alice", 30);
        let renewed = doc.renewed(60, t0() + Duration::seconds(5));
        assert_eq!(
            change(Some(&doc), Phase::Held, Some(&renewed)),
            EventKind::Renewed
        );
    }

    #[test]
    fn a_new_holder_straight_after_another_is_acquired() {
        // A takeover of an expired lease the listener was still shown held, or a release and a
        // grant folded into one look.
        let doc = held("alice", 30);
        let bob = doc.granted_over("bob", 30, doc.expires_at(), 2);
        assert_eq!(
            change(Some(&doc), Phase::Held, Some(&bob)),
            EventKind::Acquired
        );
        assert_eq!(
            change(Some(&doc), Phase::Expired, Some(&bob)),
            EventKind::Acquired
        );
        // The same owner name taking the lock again is a new holder too: a new token.
        let again = doc.released(t0()).granted_over("alice", 30, t0(), 2);
        assert_eq!(
            change(Some(&doc), Phase::Held, Some(&again)),
            EventKind::Acquired
        );
    }

    #[test]
    fn the_same_holder_changing_its_value_is_value_with_or_without_a_new_lease() {
        let doc = held("alice", 30);
        let mut valued = doc.renewed(30, t0());
        valued.value = serde_json::json!({"addr": "10.0.0.1:80"});
        assert_eq!(
            change(Some(&doc), Phase::Held, Some(&valued)),
            EventKind::Value
        );
        let renewed = valued.renewed(60, t0() + Duration::seconds(5));
        assert_eq!(
            change(Some(&valued), Phase::Held, Some(&renewed)),
            EventKind::Renewed,
            "the value kept: a renew"
        );
    }

    fn delayed(delay: u64) -> LockDocument {
        let mut doc = held("alice", 30);
        doc.lock_delay = delay;
        doc
    }

    #[test]
    fn a_lease_that_ran_out_is_expired_during_its_lock_delay_then_free_by_time() {
        let doc = delayed(10);
        let end = doc.expires_at();
        let delay_over = end + Duration::seconds(10);
        assert_eq!(
            by_time(Some(&doc), Phase::Held, end),
            Some(EventKind::Expired)
        );
        assert_eq!(next_due(Some(&doc), Phase::Expired), Some(delay_over));
        assert_eq!(
            by_time(
                Some(&doc),
                Phase::Expired,
                delay_over - Duration::microseconds(1)
            ),
            None
        );
        assert_eq!(
            by_time(Some(&doc), Phase::Expired, delay_over),
            Some(EventKind::Free)
        );
        assert_eq!(snapshot(Some(&doc), end, None), Some(EventKind::Expired));
        assert_eq!(
            snapshot(Some(&doc), delay_over, None),
            Some(EventKind::Free)
        );
        assert_eq!(
            snapshot(Some(&doc), delay_over, Some(doc.revision)),
            Some(EventKind::Free),
            "told again: its id cannot say whether it heard"
        );
    }

    #[test]
    fn without_a_lock_delay_no_free_follows_an_expiry() {
        let doc = delayed(0);
        let later = doc.expires_at() + Duration::days(1);
        assert_eq!(by_time(Some(&doc), Phase::Expired, later), None);
        assert_eq!(snapshot(Some(&doc), later, None), Some(EventKind::Expired));
    }

    #[test]
    fn a_release_is_released_and_a_break_is_broken() {
        let doc = held("alice", 30);
        assert_eq!(
            change(Some(&doc), Phase::Held, Some(&doc.released(t0()))),
            EventKind::Released
        );
        assert_eq!(
            change(Some(&doc), Phase::Held, Some(&doc.broken(t0(), 2))),
            EventKind::Broken
        );
        // The old module's release has no token either, but its fencing token does not grow.
        let seed = seed("bob");
        let mut released = seed.clone();
        released.owner = None;
        assert_eq!(
            change(Some(&seed), Phase::Held, Some(&released)),
            EventKind::Released
        );
        assert_eq!(
            change(Some(&seed), Phase::Held, Some(&seed.broken(t0(), 1))),
            EventKind::Broken
        );
    }

    #[test]
    fn a_release_after_the_lease_ran_out_is_released() {
        let doc = held("alice", 30);
        let later = doc.released(doc.expires_at());
        assert_eq!(
            change(Some(&doc), Phase::Expired, Some(&later)),
            EventKind::Released
        );
    }

    #[test]
    fn a_deleted_lock_is_free() {
        let doc = held("alice", 30);
        assert_eq!(change(Some(&doc), Phase::Held, None), EventKind::Free);
    }

    #[test]
    fn a_write_read_back_as_stored_is_the_same_write() {
        let precise = parse_seed_time("2026-11-26T00:00:00.123456+00:00").unwrap()
            + Duration::nanoseconds(789);
        let written = LockDocument::grant("alice", 30, precise, 1);
        let read = LockDocument::from_bytes(&written.to_bytes()).unwrap();
        assert_ne!(written, read, "the stored form drops the nanoseconds");
        assert!(same_write(Some(&written), Some(&read)));
        let renewed = written.renewed(30, precise);
        assert!(!same_write(Some(&written), Some(&renewed)));
        assert!(!same_write(None, Some(&written)));
        let (old, old_again) = (seed("bob"), seed("bob"));
        assert!(same_write(Some(&old), Some(&old_again)));
        assert!(!same_write(Some(&old), Some(&seed("carol"))));
    }

    #[test]
    fn a_held_lease_expires_by_time_at_its_end_and_not_before() {
        let doc = held("alice", 30);
        let end = doc.expires_at();
        let before = end - Duration::microseconds(1);
        assert_eq!(by_time(Some(&doc), Phase::Held, before), None);
        assert_eq!(
            by_time(Some(&doc), Phase::Held, end),
            Some(EventKind::Expired)
        );
        assert_eq!(next_due(Some(&doc), Phase::Held), Some(end));
        // Once told, nothing more comes by time (no lock-delay).
        assert_eq!(by_time(Some(&doc), Phase::Expired, end), None);
        assert_eq!(next_due(Some(&doc), Phase::Expired), None);
    }

    #[test]
    fn a_free_lock_brings_nothing_by_time() {
        let doc = held("alice", 30).released(t0());
        let much_later = t0() + Duration::days(1);
        assert_eq!(by_time(Some(&doc), Phase::Free, much_later), None);
        assert_eq!(by_time(None, Phase::Free, much_later), None);
        assert_eq!(next_due(Some(&doc), Phase::Free), None);
    }

    #[test]
    fn a_grant_already_over_when_seen_is_acquired_then_expired() {
        let doc = held("alice", 30);
        let late = doc.expires_at() + Duration::seconds(1);
        let kind = change(None, Phase::Free, Some(&doc));
        assert_eq!(kind, EventKind::Acquired);
        let shown = after_change(Some(&doc));
        assert_eq!(by_time(Some(&doc), shown, late), Some(EventKind::Expired));
    }
}
