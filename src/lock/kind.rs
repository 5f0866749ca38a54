//! What the one read / decide / write / settle loop (`decide`), the lock's watcher (`waiters`)
//! and the orphan path (`orphan`) need of a stored document, whatever kind of lock it is: the
//! mutex's [`LockDocument`] or the semaphore's and read-write lock's
//! [`SharedDocument`](super::shared::SharedDocument). Each kind's rules decide what to write;
//! this trait only lets the driver handle what they wrote.
//!
//! `before` is always the document the write replaced (`None`: the write created the object):
//! a multi-holder document tells which holder a write gave or renewed a lease to only by
//! comparing with it.

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::document::{HolderToken, LockDocument, Succession};
use super::rules;
use crate::clock::TimeWindow;

/// A kind of lock, as its stored document.
pub trait LockKind: Clone + PartialEq + std::fmt::Debug + Send + Sync + Sized + 'static {
    /// What a waiter waits for: for a mutex, only that nobody holds it; for the multi-holder
    /// kinds, a permit or a mode ([`Claim`](super::shared::Claim)).
    type Want: Clone + std::fmt::Debug + Send + Sync;

    /// Parses a stored body; `Err` says why it is not this kind's document (it is then never
    /// overwritten: the engine answers `lock-unreadable`).
    fn from_bytes(body: &[u8]) -> Result<Self, String>;

    fn to_bytes(&self) -> Bytes;

    /// Grows by one with every write (the views' `index`).
    fn revision(&self) -> u64;

    /// Whether a write over this document can still get a revision of its own; the driver
    /// writes over no document that cannot.
    fn can_grow(&self) -> bool;

    /// Whether `ours` (written by this process, its answer lost) landed before this stored
    /// document replaced it (see [`History::succession_of`](super::history::History)).
    fn succession_of(&self, ours: &Self) -> Succession;

    /// Whether this document was written after `earlier` (see
    /// [`History::supersedes`](super::history::History::supersedes)): a late answer showing
    /// `earlier` is old news once this one is known.
    fn supersedes(&self, earlier: &Self) -> bool;

    /// The holder token this write (`self`, written over `before`) hands its caller that the
    /// caller does not have yet: a new holder's, or, when `unseen` (this same call made a
    /// grant that landed and has not been answered yet), the token of the holding this write
    /// refreshes. While such a write is in flight its grant is watched, and freed with
    /// [`LockKind::orphan_freed`] if it lands unseen.
    fn token_handed_out(&self, before: Option<&Self>, unseen: bool) -> Option<&HolderToken>;

    /// Whether the lease this write gave or renewed (none for a release, a break, a waiting
    /// entry) had already run out at `now.latest`, when the write was known to have landed: the
    /// decision is then made again rather than answered as a grant.
    fn lease_used_up(&self, before: Option<&Self>, now: TimeWindow) -> bool;

    /// Read back after our write `written` (over `before`) was replaced: whether the lease our
    /// write gave or renewed has passed on since (released, broken, taken over), so the write
    /// may not be answered as holding it. `false` when our write gave no lease.
    fn lease_passed_on(&self, written: &Self, before: Option<&Self>) -> bool;

    /// Whether this write is a break: the one write that takes holdings without a token. After
    /// a break whose outcome is unproven the driver does not break again.
    fn is_break(&self, before: Option<&Self>) -> bool;

    /// Whether a waiter wanting `want` should try now: the lock looks free for it at `now`
    /// (judged at the earliest possible time), or its try would be refused for good (a limit
    /// or kind it does not match), which it should learn at once.
    fn free_for(&self, want: &Self::Want, now: DateTime<Utc>) -> bool;

    /// When a waiter should look again without news: the first moment a live lease (or a
    /// recorded waiting entry) ends. `None` when nothing live is in the way.
    fn look_again_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>>;

    /// This document (an orphaned grant, found stored byte for byte) with the holding of
    /// `token` released at `now`, as the next write over it.
    fn orphan_freed(&self, token: &HolderToken, now: DateTime<Utc>) -> Self;

    /// This document, found stored after others' writes replaced an orphaned grant, freed of
    /// the holding of `token` at `now` as the next write over it, if it still holds it. A
    /// multi-holder document carries its other holders' writes (their renews, grants and
    /// releases) over an orphaned grant without taking its holding, which would otherwise keep
    /// its permit for its whole lease. The mutex's never does: only the holder (who never
    /// learned the token) writes over a grant without taking or freeing the lock.
    fn orphan_freed_later(&self, token: &HolderToken, now: DateTime<Utc>) -> Option<Self>;

    /// The length in seconds of the lease held with `token` here (0 when none is): an orphaned
    /// grant is watched no longer than its lease could keep anyone out.
    fn lease_secs(&self, token: &HolderToken) -> u64;
}

/// The mutex: every method is the existing rule in [`rules`] or [`LockDocument`]'s own.
impl LockKind for LockDocument {
    type Want = ();

    fn from_bytes(body: &[u8]) -> Result<Self, String> {
        LockDocument::from_bytes(body).map_err(|e| e.to_string())
    }

    fn to_bytes(&self) -> Bytes {
        LockDocument::to_bytes(self)
    }

    fn revision(&self) -> u64 {
        self.revision
    }

    fn can_grow(&self) -> bool {
        LockDocument::can_grow(self)
    }

    fn succession_of(&self, ours: &Self) -> Succession {
        LockDocument::succession_of(self, ours)
    }

    fn supersedes(&self, earlier: &Self) -> bool {
        LockDocument::supersedes(self, earlier)
    }

    fn token_handed_out(&self, before: Option<&Self>, unseen: bool) -> Option<&HolderToken> {
        let current = before.and_then(|b| b.token.as_ref());
        if rules::hands_out_token(self, current, unseen) {
            self.token.as_ref()
        } else {
            None
        }
    }

    fn lease_used_up(&self, _before: Option<&Self>, now: TimeWindow) -> bool {
        rules::lease_used_up(self, now)
    }

    fn lease_passed_on(&self, written: &Self, _before: Option<&Self>) -> bool {
        written.owner.is_some() && !rules::still_held(self, written)
    }

    fn is_break(&self, _before: Option<&Self>) -> bool {
        rules::is_break(self)
    }

    fn free_for(&self, _want: &(), now: DateTime<Utc>) -> bool {
        self.is_free_at(now)
    }

    fn look_again_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.available_at().filter(|at| now < *at)
    }

    fn orphan_freed(&self, _token: &HolderToken, now: DateTime<Utc>) -> Self {
        self.released(now)
    }

    fn orphan_freed_later(&self, _token: &HolderToken, _now: DateTime<Utc>) -> Option<Self> {
        None
    }

    fn lease_secs(&self, _token: &HolderToken) -> u64 {
        self.expire
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::lock::document::parse_seed_time;

    fn t0() -> DateTime<Utc> {
        parse_seed_time("2026-11-26T00:00:00+00:00").unwrap()
    }

    /// Documents of every shape the mutex's rules write, and one of the seed module's.
    fn documents() -> Vec<(&'static str, LockDocument)> {
        let held = LockDocument::grant("alice", 30, t0(), 1);
        let seed = LockDocument::from_bytes(
            br#"{"expire": 60, "lock_time": "2026-11-26T00:00:00+00:00", "release_time": null, "owner": "old"}"#,
        )
        .unwrap();
        vec![
            ("held", held.clone()),
            ("renewed", held.renewed(60, t0() + Duration::seconds(10))),
            ("released", held.released(t0())),
            ("broken", held.broken(t0(), 2)),
            (
                "taken over",
                held.granted_over("bob", 30, t0() + Duration::seconds(30), 2),
            ),
            ("seed", seed),
            ("in its lock-delay", held.clone().with_lock_delay(20)),
        ]
    }

    fn times() -> Vec<DateTime<Utc>> {
        [0, 29, 30, 45, 60, 90]
            .into_iter()
            .map(|s| t0() + Duration::seconds(s))
            .collect()
    }

    #[test]
    fn the_mutex_parses_and_writes_exactly_as_before() {
        for (name, doc) in documents() {
            let body = LockKind::to_bytes(&doc);
            assert_eq!(body, doc.to_bytes(), "{name}");
            assert_eq!(<LockDocument as LockKind>::from_bytes(&body).unwrap(), doc);
            assert_eq!(LockKind::revision(&doc), doc.revision);
            assert_eq!(LockKind::can_grow(&doc), doc.can_grow());
        }
        assert!(<LockDocument as LockKind>::from_bytes(b"{}").is_err());
    }

    #[test]
    fn the_mutex_tells_a_handed_out_token_as_its_rule_does() {
        for (name, before) in documents() {
            // Every document the rules write with an owner carries a token; the seed module's
            // (owner, no token) is read, never written.
            for (next_name, next) in documents().into_iter().filter(|(n, _)| *n != "seed") {
                for unseen in [false, true] {
                    let rule = rules::hands_out_token(&next, before.token.as_ref(), unseen);
                    let kind = next.token_handed_out(Some(&before), unseen);
                    assert_eq!(kind.is_some(), rule, "{next_name} over {name}, {unseen}");
                    if let Some(token) = kind {
                        assert_eq!(Some(token), next.token.as_ref());
                    }
                }
            }
            let rule = rules::hands_out_token(&before, None, false);
            assert_eq!(before.token_handed_out(None, false).is_some(), rule);
        }
    }

    #[test]
    fn the_mutex_judges_used_up_leases_passed_on_leases_and_breaks_as_its_rules_do() {
        for (name, written) in documents() {
            for t in times() {
                let now = TimeWindow::between(t - Duration::seconds(1), t);
                assert_eq!(
                    written.lease_used_up(None, now),
                    rules::lease_used_up(&written, now),
                    "{name} at {t}"
                );
            }
            for (read_name, read) in documents() {
                assert_eq!(
                    read.lease_passed_on(&written, None),
                    written.owner.is_some() && !rules::still_held(&read, &written),
                    "{read_name} read after {name}"
                );
            }
            assert_eq!(written.is_break(None), rules::is_break(&written), "{name}");
        }
    }

    #[test]
    fn the_mutex_is_free_for_a_waiter_when_nobody_holds_it_and_no_lock_delay_runs() {
        for (name, doc) in documents() {
            for t in times() {
                assert_eq!(doc.free_for(&(), t), doc.is_free_at(t), "{name}");
                let again = doc.look_again_at(t);
                match doc.available_at() {
                    Some(at) if t < at => assert_eq!(again, Some(at), "{name}"),
                    _ => assert_eq!(again, None, "{name}"),
                }
            }
        }
    }

    #[test]
    fn the_mutex_frees_an_orphan_as_a_release_and_proves_succession_as_before() {
        let held = LockDocument::grant("alice", 30, t0(), 1);
        let token = held.token.clone().unwrap();
        let freed = held.orphan_freed(&token, t0());
        assert_eq!(freed.owner, None);
        assert_eq!(freed.token, held.token);
        assert_eq!(freed.revision, held.revision + 1);
        for (name, stored) in documents() {
            for (ours_name, ours) in documents() {
                assert_eq!(
                    LockKind::succession_of(&stored, &ours),
                    stored.succession_of(&ours),
                    "{ours_name} under {name}"
                );
            }
        }
        assert_eq!(LockKind::succession_of(&freed, &held), Succession::Replaced);
        // Anything written over a mutex's grant by others took or freed the lock.
        for (name, later) in documents() {
            assert_eq!(later.orphan_freed_later(&token, t0()), None, "{name}");
        }
    }
}
