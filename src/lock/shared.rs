//! The stored document of a semaphore or a read-write lock: one JSON object per key holding
//! every holder, each with its own holder token, lease and fencing token. One document, so that
//! one conditional write decides who holds what (two grants can never both land over the same
//! version), exactly as for the mutex.
//!
//! ```json
//! {"kind": "semaphore", "limit": 3,
//!  "holders": [{"owner": "w1", "token": "…", "lock_time": "2026-11-26T02:24:19.844224+00:00",
//!               "expire": 30, "fencing_token": 7, "held_since": "2026-11-26T02:20:00+00:00"}],
//!  "fencing_token": 7, "revision": 12, "writes": ["…"]}
//! ```
//!
//! A read-write lock has no `limit`; each holder has a `mode` (`shared` or `exclusive`), and a
//! writer that waits is recorded in `waiting` with a short lease of its own
//! ([`WAITING_LEASE_SECS`]): while one is listed no new reader is let in (see
//! [`shared_rules`](super::shared_rules)).
//!
//! # Bounds
//! A semaphore's `limit` is at most [`MAX_LIMIT`]; a document holds at most [`MAX_HOLDERS`]
//! holders and [`MAX_WAITING`] waiting writers, so (owner names being at most 256 bytes) its
//! body stays under [`MAX_DOCUMENT_BYTES`]; a stored body past any bound is refused as
//! unreadable rather than parsed. Every holder renews by writing this one object: at a ttl of
//! 30 s renewed every 10 s, 256 holders write it about 26 times a second, well past the ~1
//! write a second per object that some stores (R2, GCS) take; the figures per store are in
//! BENCHMARKS.md.

use std::collections::HashMap;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::document::{seed_time, HolderToken, Succession};
use super::history::{self, History, WriteId};
use super::key::MAX_OWNER_BYTES;
use super::kind::LockKind;
use crate::clock::TimeWindow;
use crate::wire::{HolderView, Mode, SharedKind, SharedView, WaitingView};

/// The largest `limit` a semaphore may have: as many holders as one document holds.
pub const MAX_LIMIT: u32 = 256;
/// The most holders one document holds (a read-write lock's readers included).
pub const MAX_HOLDERS: usize = MAX_LIMIT as usize;
/// The most waiting writers a read-write lock records. One is enough to hold new readers back;
/// a writer that finds the list full waits unrecorded, behind those listed.
pub const MAX_WAITING: usize = 32;
/// Released holder tokens remembered, newest first, so that a release repeated (its first
/// answer lost) is answered as done rather than refused: past this many later releases, a
/// repeat is refused as not-holder, as the mutex refuses one after the lock passed on.
pub const RELEASED_MEMORY: usize = 16;
/// The largest stored body parsed. A holder entry is at most about 800 bytes (an owner of 256
/// bytes, every one escaped, and the largest numbers), a waiting entry about 700: a full
/// document is under 230 KiB (a test builds one).
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// A waiting writer's entry lapses this long after it was written unless renewed: a few of a
/// watcher's polls ([`MAX_POLL`](super::MAX_POLL) is 1 s), so a writer that vanished holds
/// readers back for at most this long.
pub const WAITING_LEASE_SECS: u64 = 5;

/// One semaphore or read-write lock as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedDocument {
    pub kind: SharedKind,
    /// A semaphore's limit (`1..=MAX_LIMIT`); absent for a read-write lock. Replaced only by an
    /// acquire made when no live holder remains, so no holder ever sees it change under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The holders, in grant order. Entries whose lease ran out stay until the next write drops
    /// them (every write does, unless the store's clock is too uncertain to call them over).
    pub holders: Vec<Holder>,
    /// A read-write lock's writers waiting for it (all `exclusive`), each with a short lease.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<Waiting>,
    /// Holder tokens released lately, newest first, at most [`RELEASED_MEMORY`]: a release
    /// repeated with one of them changes nothing and is answered as done. A token whose lease
    /// ran out and was dropped, or was broken, is not here: its release is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released: Vec<HolderToken>,
    /// The highest fencing token given under this key: each grant (and each break) takes the
    /// next one, so every holder's is unique and a later grant's is higher.
    pub fencing_token: u64,
    /// Grows by one with every write (see `LockDocument::revision` for why).
    pub revision: u64,
    /// This write's id and those before it (see [`History`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writes: Vec<WriteId>,
}

/// One holder of a semaphore's permit or of a read-write lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub owner: String,
    /// The holder's secret proof, unique per grant, kept on renew; never shown by a view.
    pub token: HolderToken,
    /// How a read-write lock is held; absent for a semaphore's permit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// When the lease was granted or last renewed (the store's clock, at its latest).
    #[serde(with = "seed_time")]
    pub lock_time: DateTime<Utc>,
    /// The lease length in seconds from `lock_time`.
    pub expire: u64,
    /// This holder's fencing token, given at its grant and kept on renew.
    pub fencing_token: u64,
    /// When this holder was granted; kept on renew.
    #[serde(with = "seed_time")]
    pub held_since: DateTime<Utc>,
}

/// A writer waiting for a read-write lock, recorded so that readers on every replica let it in
/// first. Its own short lease ([`WAITING_LEASE_SECS`]) is renewed while it waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// Chosen by the waiting acquire and kept across its tries, so it renews (and, once
    /// granted, removes) its own entry.
    pub id: WaiterId,
    pub owner: String,
    /// Always `exclusive`: only writers are recorded.
    pub mode: Mode,
    #[serde(with = "seed_time")]
    pub lock_time: DateTime<Utc>,
    pub expire: u64,
}

/// The id of one waiting acquire: 64 random bits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WaiterId(String);

impl WaiterId {
    pub fn generate() -> Self {
        Self(format!("{:016x}", rand::random::<u64>()))
    }
}

/// What an acquire (or a waiter) asks of a multi-holder lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// A semaphore's permit, every process agreeing that there are `limit` of them.
    Permit { limit: u32 },
    /// A read-write lock, with other readers.
    Shared,
    /// A read-write lock, alone.
    Exclusive,
}

impl Claim {
    pub fn kind(self) -> SharedKind {
        match self {
            Claim::Permit { .. } => SharedKind::Semaphore,
            Claim::Shared | Claim::Exclusive => SharedKind::Rwlock,
        }
    }

    /// The mode a holder entry records for this claim.
    pub fn mode(self) -> Option<Mode> {
        match self {
            Claim::Permit { .. } => None,
            Claim::Shared => Some(Mode::Shared),
            Claim::Exclusive => Some(Mode::Exclusive),
        }
    }
}

fn lease_end(lock_time: DateTime<Utc>, expire: u64) -> DateTime<Utc> {
    // Past chrono's range (a hand-written document) a lease simply never ends.
    i64::try_from(expire)
        .ok()
        .and_then(Duration::try_seconds)
        .and_then(|d| lock_time.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl Holder {
    pub fn expires_at(&self) -> DateTime<Utc> {
        lease_end(self.lock_time, self.expire)
    }

    /// Whether the lease still runs at `now` (the boundary counts as over, as for the mutex).
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at()
    }

    pub fn is_exclusive(&self) -> bool {
        self.mode == Some(Mode::Exclusive)
    }

    fn view(&self, now: TimeWindow) -> HolderView {
        let expires_at = self.expires_at();
        HolderView {
            owner: self.owner.clone(),
            mode: self.mode,
            fencing_token: self.fencing_token,
            expire: self.expire,
            lock_time: self.lock_time,
            expires_at,
            ttl_remaining_ms: (expires_at - now.latest).num_milliseconds().max(0),
            held_since: self.held_since,
        }
    }
}

impl Waiting {
    pub fn expires_at(&self) -> DateTime<Utc> {
        lease_end(self.lock_time, self.expire)
    }

    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at()
    }
}

impl SharedDocument {
    /// An empty document of `kind`, as the base of a lock's first write.
    pub fn empty(kind: SharedKind, limit: Option<u32>) -> Self {
        Self {
            kind,
            limit,
            holders: Vec::new(),
            waiting: Vec::new(),
            released: Vec::new(),
            fencing_token: 0,
            revision: 0,
            writes: Vec::new(),
        }
    }

    pub fn history(&self) -> History<'_> {
        History {
            revision: self.revision,
            writes: &self.writes,
        }
    }

    /// This document as the next write over `previous` (see [`History::next`]).
    pub fn written_over(mut self, previous: Option<&Self>) -> Self {
        (self.revision, self.writes) = match previous {
            Some(previous) => previous.history().next(),
            None => history::first(),
        };
        self
    }

    /// Whether a write over this document can still get a revision of its own.
    pub fn can_grow(&self) -> bool {
        self.revision < u64::MAX
    }

    /// The holders whose leases run at `now`.
    pub fn live_holders(&self, now: DateTime<Utc>) -> impl Iterator<Item = &Holder> {
        self.holders.iter().filter(move |h| h.is_live(now))
    }

    /// The waiting writers whose entries run at `now`.
    pub fn live_waiting(&self, now: DateTime<Utc>) -> impl Iterator<Item = &Waiting> {
        self.waiting.iter().filter(move |w| w.is_live(now))
    }

    /// The holder whose token is `presented`, compared in constant time.
    pub fn holder_with(&self, presented: &str) -> Option<&Holder> {
        self.holders.iter().find(|h| h.token.matches(presented))
    }

    /// Whether `presented` was released lately (see [`SharedDocument::released`]).
    pub fn was_released(&self, presented: &str) -> bool {
        self.released.iter().any(|t| t.matches(presented))
    }

    /// The holder entry this write (`self`, over `before`) gave or renewed: one whose token is
    /// new, or whose lease changed. Every rule gives or renews at most one.
    pub fn written_holder(&self, before: Option<&Self>) -> Option<&Holder> {
        let before: HashMap<&str, &Holder> = before
            .map(|b| b.holders.iter().map(|h| (h.token.expose(), h)).collect())
            .unwrap_or_default();
        self.holders
            .iter()
            .find(|h| match before.get(h.token.expose()) {
                None => true,
                Some(old) => (old.lock_time, old.expire) != (h.lock_time, h.expire),
            })
    }

    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("a shared document always serialises"))
    }

    /// Parses a stored body and checks what every document the rules write keeps true: the
    /// bounds, a limit for a semaphore alone, a mode for a read-write lock's holders alone, and
    /// never a writer beside another holder. Anything else was written by hand, and is refused
    /// (never overwritten) rather than guessed at.
    pub fn from_bytes(body: &[u8]) -> Result<Self, String> {
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(format!(
                "the document is {} bytes, more than the {MAX_DOCUMENT_BYTES} one may have",
                body.len()
            ));
        }
        let doc: Self = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        doc.check().map(|()| doc)
    }

    fn check(&self) -> Result<(), String> {
        if self.holders.len() > MAX_HOLDERS || self.waiting.len() > MAX_WAITING {
            return Err(format!(
                "more than {MAX_HOLDERS} holders or {MAX_WAITING} waiting writers"
            ));
        }
        if self.released.len() > RELEASED_MEMORY {
            return Err(format!("more than {RELEASED_MEMORY} released tokens"));
        }
        if self
            .holders
            .iter()
            .any(|h| h.fencing_token > self.fencing_token)
        {
            return Err("a holder's fencing token is above the document's".into());
        }
        match (self.kind, self.limit) {
            (SharedKind::Semaphore, Some(limit)) if (1..=MAX_LIMIT).contains(&limit) => {
                if self.holders.iter().any(|h| h.mode.is_some()) || !self.waiting.is_empty() {
                    return Err("a semaphore's holders have no mode, and none waits".into());
                }
                if self.holders.len() > limit as usize {
                    return Err(format!("more holders than the limit of {limit}"));
                }
                Ok(())
            }
            (SharedKind::Semaphore, _) => {
                Err(format!("a semaphore needs a limit of 1..={MAX_LIMIT}"))
            }
            (SharedKind::Rwlock, Some(_)) => Err("a read-write lock has no limit".into()),
            (SharedKind::Rwlock, None) => {
                if self.holders.iter().any(|h| h.mode.is_none()) {
                    return Err("a read-write lock's holders each have a mode".into());
                }
                if self.holders.iter().any(Holder::is_exclusive) && self.holders.len() > 1 {
                    return Err("an exclusive holder beside another holder".into());
                }
                if self.waiting.iter().any(|w| w.mode != Mode::Exclusive) {
                    return Err("only writers wait in the document".into());
                }
                Ok(())
            }
        }
    }

    /// The public view of this document at `now`: its live holders (never a token), a
    /// semaphore's permits left, the waiting writers. With `caller`, the answer to that holder
    /// about its own holding (acquire, renew): its token and its lease.
    pub fn view(
        &self,
        bucket: &str,
        key: &str,
        now: TimeWindow,
        caller: Option<&HolderToken>,
    ) -> SharedView {
        let holders: Vec<HolderView> = self
            .live_holders(now.earliest)
            .map(|h| h.view(now))
            .collect();
        let permits_left = self.limit.map(|limit| {
            let held = u32::try_from(holders.len()).unwrap_or(u32::MAX);
            limit.saturating_sub(held)
        });
        let lease = caller.and_then(|t| self.holder_with(t.expose()));
        SharedView {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            kind: self.kind,
            limit: self.limit,
            permits_left,
            holders,
            waiting: self
                .live_waiting(now.earliest)
                .map(|w| WaitingView {
                    owner: w.owner.clone(),
                    mode: w.mode,
                    expires_at: w.expires_at(),
                })
                .collect(),
            token: lease.map(|h| h.token.clone()),
            lease: lease.map(|h| h.view(now)),
            fencing_token: self.fencing_token,
            index: self.revision,
            waiters_here: 0,
        }
    }

    /// The view of a key with no document yet: no holder, nothing known of a limit.
    pub fn view_of_none(bucket: &str, key: &str, kind: SharedKind) -> SharedView {
        SharedView {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            kind,
            limit: None,
            permits_left: None,
            holders: Vec::new(),
            waiting: Vec::new(),
            token: None,
            lease: None,
            fencing_token: 0,
            index: 0,
            waiters_here: 0,
        }
    }
}

/// The owner names the rules accept: those [`key::parse_owner`](super::key::parse_owner) lets
/// through at the edge. Checked again here, as [`MAX_DOCUMENT_BYTES`] relies on it.
pub(super) fn owner_fits(owner: &str) -> bool {
    !owner.is_empty() && owner.len() <= MAX_OWNER_BYTES
}

/// The semaphore and the read-write lock, for the one decision loop.
impl LockKind for SharedDocument {
    type Want = Claim;

    fn from_bytes(body: &[u8]) -> Result<Self, String> {
        SharedDocument::from_bytes(body)
    }

    fn to_bytes(&self) -> Bytes {
        SharedDocument::to_bytes(self)
    }

    fn revision(&self) -> u64 {
        self.revision
    }

    fn can_grow(&self) -> bool {
        SharedDocument::can_grow(self)
    }

    fn succession_of(&self, ours: &Self) -> Succession {
        self.history().succession_of(ours.history())
    }

    fn supersedes(&self, earlier: &Self) -> bool {
        self.history().supersedes(earlier.history())
    }

    fn token_handed_out(&self, before: Option<&Self>, unseen: bool) -> Option<&HolderToken> {
        let written = self.written_holder(before)?;
        let new = before.is_none_or(|b| !b.holders.iter().any(|h| h.token == written.token));
        (new || unseen).then_some(&written.token)
    }

    fn lease_used_up(&self, before: Option<&Self>, now: TimeWindow) -> bool {
        self.written_holder(before)
            .is_some_and(|h| now.latest >= h.expires_at())
    }

    fn lease_passed_on(&self, written: &Self, before: Option<&Self>) -> bool {
        written
            .written_holder(before)
            .is_some_and(|ours| !self.holders.iter().any(|h| h.token == ours.token))
    }

    fn is_break(&self, before: Option<&Self>) -> bool {
        // The one write that grows the fencing token without a new holder.
        self.holders.is_empty() && before.is_some_and(|b| self.fencing_token > b.fencing_token)
    }

    fn free_for(&self, want: &Claim, now: DateTime<Utc>) -> bool {
        if want.kind() != self.kind {
            return true; // its try is refused for good: it should learn so now
        }
        let live = self.live_holders(now).count();
        match *want {
            Claim::Permit { limit } => {
                let stored = self.limit.unwrap_or(limit);
                limit != stored || live < stored as usize
            }
            Claim::Shared => {
                live < MAX_HOLDERS
                    && !self.live_holders(now).any(Holder::is_exclusive)
                    && self.live_waiting(now).next().is_none()
            }
            Claim::Exclusive => live == 0,
        }
    }

    fn look_again_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let holders = self.live_holders(now).map(Holder::expires_at);
        let waiting = self.live_waiting(now).map(Waiting::expires_at);
        holders.chain(waiting).min()
    }

    fn orphan_freed(&self, token: &HolderToken, _now: DateTime<Utc>) -> Self {
        let mut next = self.clone();
        next.holders.retain(|h| &h.token != token);
        next.remember_released(token.clone());
        next.written_over(Some(self))
    }

    fn orphan_freed_later(&self, token: &HolderToken, now: DateTime<Utc>) -> Option<Self> {
        self.holder_with(token.expose())
            .is_some()
            .then(|| self.orphan_freed(token, now))
    }

    fn lease_secs(&self, token: &HolderToken) -> u64 {
        self.holder_with(token.expose()).map_or(0, |h| h.expire)
    }
}

impl SharedDocument {
    /// Remembers `token` as released, newest first, within [`RELEASED_MEMORY`].
    pub(super) fn remember_released(&mut self, token: HolderToken) {
        self.released.insert(0, token);
        self.released.truncate(RELEASED_MEMORY);
    }
}

#[cfg(test)]
mod tests;
