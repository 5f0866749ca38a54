//! The rules of semaphores and read-write locks, with no I/O: pure functions of (stored
//! [`SharedDocument`], time window, request) to a decision, judged as the mutex's are
//! ([`rules`]): a lease is over at `now.earliest`, a new lease starts at `now.latest`, and no
//! lease that ran out unreleased is called over while the window on the store's clock is wider
//! than allowed ([`rules::clock_trusted_for_takeover`]).
//!
//! Every write drops the holders whose leases ran out, so a crashed holder's permit comes back
//! after its ttl with nobody cleaning up: the next acquire, renew or release of anyone drops it,
//! and an acquire that finds it in the way judges it over by itself.
//!
//! # Read-write locks: writers first
//! A reader is let in only while no writer holds the lock *and none waits*: a writer that has to
//! wait records itself in the document ([`Waiting`], with a lease of
//! [`WAITING_LEASE_SECS`] that its waiting acquire renews), and from then on new readers are
//! refused on every replica. The readers already in finish (or are renewed; a reader that
//! renews forever keeps the writer out, as any holder may), the writer is let in, and readers
//! come back after it. So a steady stream of readers never starves a writer; what readers suffer
//! instead is the converse: while writers keep arriving, each one waiting, readers wait behind
//! all of them and can be held back as long as writers keep coming. A writer that vanishes
//! while waiting holds readers back until its entry lapses, a few seconds.
//!
//! The semaphore has no such order between replicas: any acquire that finds a permit left takes
//! it (waiters queue in arrival order on their own replica only).

use chrono::{DateTime, Utc};

use super::document::HolderToken;
use super::error::LockError;
use super::rules::{self, clock_trusted_for_takeover, Grant, Verdict};
use super::shared::{
    owner_fits, Claim, Holder, SharedDocument, WaiterId, Waiting, MAX_HOLDERS, MAX_LIMIT,
    MAX_WAITING, WAITING_LEASE_SECS,
};
use crate::clock::TimeWindow;
use crate::wire::{Mode, SharedKind};

/// An acquire of a semaphore's permit or of a read-write lock, as the engine checked it.
#[derive(Debug, Clone, Copy)]
pub struct SharedAcquire<'a> {
    pub owner: &'a str,
    /// The caller's holder token, to refresh its own holding.
    pub presented: Option<&'a str>,
    pub ttl: u64,
    pub claim: Claim,
    /// A writer that will wait if refused: the id of its waiting entry, the same on each try.
    /// `None`: it will not wait (or is not a writer), and is recorded nowhere.
    pub waiter: Option<&'a WaiterId>,
}

/// What an acquire decided, when not refused outright.
#[derive(Debug)]
pub enum Acquired {
    /// Write `doc`, which holds the caller's new or refreshed lease.
    Granted { doc: SharedDocument, grant: Grant },
    /// Write `doc` (the caller's waiting entry added or renewed), then answer `refusal` and wait
    /// as for any refusal. Its waiting acquire tries again before the entry lapses.
    Queued {
        doc: SharedDocument,
        refusal: LockError,
    },
}

/// A break that had holders to break.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedBreak {
    pub doc: SharedDocument,
    /// The owners whose live leases were broken, for the log.
    pub holders: Vec<String>,
    pub old_fencing_token: u64,
}

/// Acquire: grants a permit or a mode when it is free, refreshes the caller's own holding when
/// it presents its holder token, and otherwise refuses ([`LockError::SemaphoreFull`] for a
/// semaphore, [`LockError::Held`] for a read-write lock), or for a writer that will wait,
/// records it first ([`Acquired::Queued`]).
pub fn acquire(
    current: Option<&SharedDocument>,
    now: TimeWindow,
    req: &SharedAcquire<'_>,
) -> Result<Acquired, LockError> {
    check_request(req)?;
    let limit = match req.claim {
        Claim::Permit { limit } => Some(limit),
        Claim::Shared | Claim::Exclusive => None,
    };
    let Some(doc) = current else {
        let empty = SharedDocument::empty(req.claim.kind(), limit);
        return grant(empty, None, now, req, false);
    };
    if doc.kind != req.claim.kind() {
        return Err(kind_mismatch(doc.kind));
    }
    let next = pruned(doc, now);
    if let Some(presented) = req.presented {
        let own = next
            .holders
            .iter()
            .position(|h| h.owner == req.owner && h.token.matches(presented));
        if let Some(i) = own.filter(|&i| next.holders[i].is_live(now.earliest)) {
            return refresh(next, i, doc, now, req);
        }
    }
    match req.claim {
        Claim::Permit { limit } => acquire_permit(next, doc, now, req, limit),
        Claim::Shared => acquire_shared(next, doc, now, req),
        Claim::Exclusive => acquire_exclusive(next, doc, now, req),
    }
}

fn acquire_permit(
    mut next: SharedDocument,
    doc: &SharedDocument,
    now: TimeWindow,
    req: &SharedAcquire<'_>,
    limit: u32,
) -> Result<Acquired, LockError> {
    let stored = doc.limit.unwrap_or(limit);
    if stored != limit {
        // The holders agreed to the stored limit: it changes only once none remains.
        if doc.live_holders(now.earliest).next().is_some() {
            return Err(LockError::LimitMismatch {
                stored,
                asked: limit,
            });
        }
        if !next.holders.is_empty() {
            return Err(blocked(now, false, || LockError::LimitMismatch {
                stored,
                asked: limit,
            }));
        }
        next.limit = Some(limit);
    }
    let in_way = next.holders.len();
    if in_way >= limit as usize {
        let live = doc.live_holders(now.earliest).count();
        let earliest_end = first_end(&next.holders);
        return Err(blocked(now, live >= limit as usize, || {
            LockError::SemaphoreFull {
                limit,
                expires_at: earliest_end,
            }
        }));
    }
    let takeover = doc.holders.len() >= limit as usize;
    grant(next, Some(doc), now, req, takeover)
}

fn acquire_shared(
    next: SharedDocument,
    doc: &SharedDocument,
    now: TimeWindow,
    req: &SharedAcquire<'_>,
) -> Result<Acquired, LockError> {
    if let Some(writer) = next.holders.iter().find(|h| h.is_exclusive()) {
        return Err(blocked(now, writer.is_live(now.earliest), || {
            held_by(writer)
        }));
    }
    // Writers first: a reader waits behind any writer recorded as waiting.
    if let Some(waiting) = next.waiting.first() {
        return Err(LockError::Held {
            owner: waiting.owner.clone(),
            expires_at: waiting.expires_at(),
        });
    }
    if next.holders.len() >= MAX_HOLDERS {
        let live = doc.live_holders(now.earliest).count();
        let earliest_end = first_end(&next.holders);
        return Err(blocked(now, live >= MAX_HOLDERS, || {
            LockError::TooManyHolders {
                max: MAX_HOLDERS,
                expires_at: earliest_end,
            }
        }));
    }
    let takeover = doc.holders.iter().any(Holder::is_exclusive) || doc.holders.len() >= MAX_HOLDERS;
    grant(next, Some(doc), now, req, takeover)
}

fn acquire_exclusive(
    next: SharedDocument,
    doc: &SharedDocument,
    now: TimeWindow,
    req: &SharedAcquire<'_>,
) -> Result<Acquired, LockError> {
    if next.holders.is_empty() {
        let takeover = !doc.holders.is_empty();
        return grant(next, Some(doc), now, req, takeover);
    }
    // Held until the last lease in the way ends (if none is renewed); named by its holder.
    let last = next
        .holders
        .iter()
        .max_by_key(|h| h.expires_at())
        .expect("holders is not empty");
    let live = doc.live_holders(now.earliest).next().is_some();
    match blocked(now, live, || held_by(last)) {
        refusal @ LockError::Held { .. } => queue(next, doc, now, req, refusal),
        other => Err(other),
    }
}

/// Renew: restarts the lease of the holder of `token` for `ttl` seconds from now, while it runs.
pub fn renew(
    current: Option<&SharedDocument>,
    now: TimeWindow,
    token: &str,
    ttl: u64,
) -> Result<SharedDocument, LockError> {
    let doc = current.ok_or(LockError::NotFound)?;
    let Some(holder) = doc.holder_with(token) else {
        return Err(not_holder(doc, token));
    };
    if !holder.is_live(now.earliest) {
        // Another replica may already have let someone into its place.
        return Err(LockError::NotHolder(
            "the lease has expired; acquire again".into(),
        ));
    }
    let mut next = pruned(doc, now);
    for h in next.holders.iter_mut().filter(|h| h.token.matches(token)) {
        h.lock_time = restamped(h.lock_time, now);
        h.expire = ttl;
    }
    Ok(next.written_over(Some(doc)))
}

/// Release: gives up the holding of `token`. Repeated with a token released lately, it changes
/// nothing and is answered as done.
pub fn release(
    current: Option<&SharedDocument>,
    now: TimeWindow,
    token: &str,
) -> Result<Verdict<SharedDocument>, LockError> {
    let doc = current.ok_or(LockError::NotFound)?;
    let Some(holder) = doc.holder_with(token) else {
        return if doc.was_released(token) {
            Ok(Verdict::Leave)
        } else {
            Err(not_holder(doc, token))
        };
    };
    let token = holder.token.clone();
    let mut next = pruned(doc, now);
    next.holders.retain(|h| h.token != token);
    next.remember_released(token);
    Ok(Verdict::Write(next.written_over(Some(doc))))
}

/// Break, on an admin's word: drops every holder and grows the fencing token (as for the mutex,
/// see `LockDocument::broken`). The broken holders' renew and release are refused. `None`: no
/// live holder, nothing to break. Waiting writers stay recorded.
pub fn break_all(
    current: Option<&SharedDocument>,
    now: TimeWindow,
) -> Result<Option<SharedBreak>, LockError> {
    let doc = current.ok_or(LockError::NotFound)?;
    let holders: Vec<String> = doc
        .live_holders(now.earliest)
        .map(|h| h.owner.clone())
        .collect();
    if holders.is_empty() {
        return Ok(None);
    }
    let mut next = pruned(doc, now);
    next.holders.clear();
    next.fencing_token = rules::fencing_after(doc.fencing_token)?;
    Ok(Some(SharedBreak {
        doc: next.written_over(Some(doc)),
        holders,
        old_fencing_token: doc.fencing_token,
    }))
}

/// A waiting writer gives up (its wait ended without the lock): its entry is removed, so readers
/// need not wait for it to lapse.
pub fn withdraw(
    current: Option<&SharedDocument>,
    now: TimeWindow,
    waiter: &WaiterId,
) -> Verdict<SharedDocument> {
    match current {
        Some(doc) if doc.waiting.iter().any(|w| &w.id == waiter) => {
            let mut next = pruned(doc, now);
            next.waiting.retain(|w| &w.id != waiter);
            Verdict::Write(next.written_over(Some(doc)))
        }
        _ => Verdict::Leave,
    }
}

/// The holder token of the holding a rule just wrote for its caller (`Granted`'s document).
pub fn token_written<'a>(
    written: &'a SharedDocument,
    before: Option<&SharedDocument>,
) -> Option<&'a HolderToken> {
    written.written_holder(before).map(|h| &h.token)
}

fn check_request(req: &SharedAcquire<'_>) -> Result<(), LockError> {
    if !owner_fits(req.owner) {
        return Err(LockError::invalid("owner", "1 to 256 bytes"));
    }
    match req.claim {
        Claim::Permit { limit } if !(1..=MAX_LIMIT).contains(&limit) => Err(LockError::invalid(
            "limit",
            format!("{limit} is not within 1..={MAX_LIMIT}"),
        )),
        _ => Ok(()),
    }
}

fn kind_mismatch(stored: SharedKind) -> LockError {
    match stored {
        SharedKind::Semaphore => LockError::invalid(
            "mode",
            "this key is a semaphore: acquire it with a limit, not a mode",
        ),
        SharedKind::Rwlock => LockError::invalid(
            "limit",
            "this key is a read-write lock: acquire it with a mode, not a limit",
        ),
    }
}

/// `doc` as every write leaves it: holders whose leases ran out dropped (unless the clock is too
/// uncertain to call any lease over: then they are kept, and stay in the way), and waiting
/// entries that lapsed dropped (those only order readers behind writers, so a clock that is off
/// costs fairness, never safety).
fn pruned(doc: &SharedDocument, now: TimeWindow) -> SharedDocument {
    let trusted = clock_trusted_for_takeover(true, now).is_ok();
    let mut next = doc.clone();
    next.holders.retain(|h| !trusted || h.is_live(now.earliest));
    next.waiting.retain(|w| w.is_live(now.earliest));
    next
}

/// The refusal when something is in the way: `refusal` if a live lease is, else (only leases
/// that ran out, kept because the clock is too uncertain to call them over) the clock's.
fn blocked(now: TimeWindow, live_in_way: bool, refusal: impl FnOnce() -> LockError) -> LockError {
    if live_in_way {
        return refusal();
    }
    clock_trusted_for_takeover(true, now)
        .err()
        .unwrap_or_else(refusal)
}

fn held_by(holder: &Holder) -> LockError {
    LockError::Held {
        owner: holder.owner.clone(),
        expires_at: holder.expires_at(),
    }
}

fn first_end(holders: &[Holder]) -> DateTime<Utc> {
    holders
        .iter()
        .map(Holder::expires_at)
        .min()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn not_holder(doc: &SharedDocument, token: &str) -> LockError {
    let why = if doc.was_released(token) {
        "the holding was released; acquire again"
    } else {
        "the token holds nothing here (it never did, its lease ran out and was dropped, or it was \
         broken)"
    };
    LockError::NotHolder(why.into())
}

/// A new holder in `next`, with the next fencing token, written over `before`; a writer's own
/// waiting entry goes.
fn grant(
    mut next: SharedDocument,
    before: Option<&SharedDocument>,
    now: TimeWindow,
    req: &SharedAcquire<'_>,
    takeover: bool,
) -> Result<Acquired, LockError> {
    let fencing_token = rules::fencing_after(next.fencing_token)?;
    next.fencing_token = fencing_token;
    next.holders.push(Holder {
        owner: req.owner.to_owned(),
        token: HolderToken::generate(),
        mode: req.claim.mode(),
        lock_time: now.latest,
        expire: req.ttl,
        fencing_token,
        held_since: now.latest,
    });
    if let Some(id) = req.waiter {
        next.waiting.retain(|w| &w.id != id);
    }
    Ok(Acquired::Granted {
        doc: next.written_over(before),
        grant: Grant::NewHolder { takeover },
    })
}

/// The caller's own live holding `i`, refreshed: token and fencing token kept, and (as for the
/// mutex) the lease never shortened, since the holder may have been told the longer one.
fn refresh(
    mut next: SharedDocument,
    i: usize,
    before: &SharedDocument,
    now: TimeWindow,
    req: &SharedAcquire<'_>,
) -> Result<Acquired, LockError> {
    match req.claim {
        Claim::Permit { limit } if before.limit != Some(limit) => {
            return Err(LockError::LimitMismatch {
                stored: before.limit.unwrap_or(limit),
                asked: limit,
            })
        }
        Claim::Shared | Claim::Exclusive if next.holders[i].mode != req.claim.mode() => {
            return Err(LockError::invalid(
                "mode",
                "this token holds the lock in the other mode; release it to change modes",
            ))
        }
        _ => {}
    }
    let holder = &mut next.holders[i];
    let left_ms = (holder.expires_at() - now.latest).num_milliseconds().max(0);
    let left = u64::try_from(left_ms).unwrap_or(0).div_ceil(1000);
    holder.lock_time = restamped(holder.lock_time, now);
    holder.expire = req.ttl.max(left);
    if let Some(id) = req.waiter {
        next.waiting.retain(|w| &w.id != id);
    }
    Ok(Acquired::Granted {
        doc: next.written_over(Some(before)),
        grant: Grant::Refresh,
    })
}

/// The `lock_time` a renew or refresh stamps on a holding stamped `before`: `now.latest`, or
/// a microsecond past `before` when the store's time as known here has not moved past it (its
/// `latest` never steps back, so it may stand still for a while). Every renew thus changes its
/// holder's entry, which is how the driver tells which holding a write renewed
/// ([`SharedDocument::written_holder`]): a renew that changed nothing, landed, and was broken
/// since would otherwise be answered as renewed. A stamp a microsecond late only makes the
/// stored lease longer, and the holder is told the stored one.
fn restamped(before: DateTime<Utc>, now: TimeWindow) -> DateTime<Utc> {
    let just_after = before
        .checked_add_signed(chrono::Duration::microseconds(1))
        .unwrap_or(before);
    now.latest.max(just_after)
}

/// A writer refused for now: records it as waiting (or renews its entry), unless it will not
/// wait, its entry is still fresh (more than half its lease left: no write for every poll), or
/// the list is full (it then waits unrecorded; the writers listed hold readers back already).
fn queue(
    mut next: SharedDocument,
    before: &SharedDocument,
    now: TimeWindow,
    req: &SharedAcquire<'_>,
    refusal: LockError,
) -> Result<Acquired, LockError> {
    let Some(id) = req.waiter else {
        return Err(refusal);
    };
    let lease_ms = i64::try_from(WAITING_LEASE_SECS * 1000).unwrap_or(i64::MAX);
    let full = next.waiting.len() >= MAX_WAITING;
    match next.waiting.iter_mut().find(|w| &w.id == id) {
        Some(w) if (w.expires_at() - now.latest).num_milliseconds() * 2 > lease_ms => {
            return Err(refusal)
        }
        Some(w) => {
            w.lock_time = now.latest;
            w.expire = WAITING_LEASE_SECS;
        }
        None if full => return Err(refusal),
        None => next.waiting.push(Waiting {
            id: id.clone(),
            owner: req.owner.to_owned(),
            mode: Mode::Exclusive,
            lock_time: now.latest,
            expire: WAITING_LEASE_SECS,
        }),
    }
    Ok(Acquired::Queued {
        doc: next.written_over(Some(before)),
        refusal,
    })
}

#[cfg(test)]
mod tests;
