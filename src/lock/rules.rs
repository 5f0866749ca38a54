//! The lock rules, with no I/O: pure functions of (stored document, time window, request) to a
//! decision. Whoever drives them (the engine's read and conditional write, or `bench
//! --direct-s3`) reads the document, asks a rule what to do, and writes what the rule returns;
//! so the protocol is written once, here, and tested with plain `#[test]`s.
//!
//! Every rule judges expiry at `now.earliest` (a lease is never thought over early) and stamps
//! new leases at `now.latest` (a lease never starts before the store's true time).

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::clock::TimeWindow;

use super::document::{HolderToken, LockDocument};
use super::error::LockError;
use super::kind::LockKind;

/// What a rule wants done with the lock (`D`: the kind of lock's document).
// A verdict lives for one decision and is matched at once; boxing the document would cost an
// allocation on every write to save a few hundred bytes of stack on a refusal.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<D = LockDocument> {
    /// Store this document in place of the one the rule was given.
    Write(D),
    /// Nothing to store: answer with the document as it is (a repeated release, a break of a
    /// lock nobody holds).
    Leave,
}

/// What kind of grant an acquire made, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// The lock passed to a new holder; `takeover` when the previous lease ran out unreleased.
    NewHolder { takeover: bool },
    /// The holder refreshed its own lease.
    Refresh,
}

/// A break that has something to break: the document to write and who held the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub doc: LockDocument,
    /// The holder whose lease is broken, and its fencing token, for the log.
    pub holder: String,
    pub old_fencing_token: u64,
}

/// What a holder asks of its lease when it is granted, refreshed or renewed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseTerms {
    /// The lease's length in seconds.
    pub ttl: u64,
    /// The value to publish: `Some` replaces the stored one (`Some(Null)` clears it), `None`
    /// keeps it (a new holder starts with none). Checked against its bounds at the edge.
    pub value: Option<Value>,
    /// Seconds of lock-delay after the lease, should it run out unreleased: `Some` sets it,
    /// `None` keeps it (a new holder starts with none). Checked against the server's maximum at
    /// the edge.
    pub lock_delay: Option<u64>,
}

impl LeaseTerms {
    /// A lease of `ttl` seconds that sets no value and no lock-delay (keeps those stored).
    pub fn of(ttl: u64) -> Self {
        Self {
            ttl,
            ..Self::default()
        }
    }

    /// `doc` carrying what these terms set, and otherwise what it carries already.
    fn applied_to(&self, doc: LockDocument) -> LockDocument {
        let doc = match &self.value {
            Some(value) => doc.with_value(value.clone()),
            None => doc,
        };
        match self.lock_delay {
            Some(seconds) => doc.with_lock_delay(seconds),
            None => doc,
        }
    }
}

/// Acquire: grants the lock to `owner` when it is free, refreshes the lease when `owner` holds
/// it and presents its holder token, and refuses otherwise: [`LockError::Held`] while a lease
/// runs, [`LockError::Delayed`] while the lock-delay after an unreleased lease runs.
pub fn acquire(
    current: Option<&LockDocument>,
    now: TimeWindow,
    owner: &str,
    presented: Option<&str>,
    terms: &LeaseTerms,
) -> Result<(LockDocument, Grant), LockError> {
    let ttl = terms.ttl;
    let Some(doc) = current else {
        let grant = Grant::NewHolder { takeover: false };
        let doc = terms.applied_to(LockDocument::grant(owner, ttl, now.latest, 1));
        return Ok((doc, grant));
    };
    match doc.holder(now.earliest) {
        // The lease ran out unreleased and its lock-delay still runs: the vanished holder's
        // writes may still be in flight, so nobody takes the lock yet, not even that holder.
        None if !doc.is_free_at(now.earliest) => Err(LockError::Delayed {
            available_at: doc.available_at().unwrap_or(DateTime::<Utc>::MAX_UTC),
        }),
        // A free lock passes to a new holder: the fencing token grows.
        None => {
            let takeover = doc.owner.is_some();
            clock_trusted_for_takeover(takeover, now)?;
            let grant = Grant::NewHolder { takeover };
            let next = doc.granted_over(owner, ttl, now.latest, next_fencing(doc)?);
            Ok((terms.applied_to(next), grant))
        }
        // The seed's reentrant refresh, for the holder only: the same owner name *and* its
        // holder token. Owner names are public (every 409 shows them), so a refresh by name
        // alone would hand the token to anyone who read one. It keeps the token and fencing
        // token, and never shortens the lease: the holder may have been told the longer one.
        Some(holder) if holder == owner && holds(doc, presented) => {
            let left_ms = (doc.expires_at() - now.latest).num_milliseconds().max(0);
            let left = u64::try_from(left_ms).unwrap_or(0).div_ceil(1000);
            let next = doc.renewed(ttl.max(left), now.latest);
            Ok((terms.applied_to(next), Grant::Refresh))
        }
        // Anyone else, this owner name without the token among them, and so also a lock written
        // by the old Python module (it has no token to present): held until it is released or
        // its lease ends.
        Some(holder) => Err(LockError::Held {
            owner: holder.to_owned(),
            expires_at: doc.expires_at(),
        }),
    }
}

/// Renew: extends the holder's lease by `ttl` seconds from now, while the lease still runs,
/// setting the value and lock-delay the terms name.
pub fn renew(
    current: Option<&LockDocument>,
    now: TimeWindow,
    token: &str,
    terms: &LeaseTerms,
) -> Result<LockDocument, LockError> {
    let ttl = terms.ttl;
    let doc = current.ok_or(LockError::NotFound)?;
    check_holder(doc, token)?;
    if doc.owner.is_none() {
        return Err(LockError::NotHolder(
            "the lock was released; acquire it again".into(),
        ));
    }
    if doc.is_expired(now.earliest) {
        // Once a lease has run out another replica may already have judged the lock free;
        // renewing then would let the old holder believe it never lost it.
        return Err(LockError::NotHolder(
            "the lease has expired; acquire the lock again".into(),
        ));
    }
    Ok(terms.applied_to(doc.renewed(ttl, now.latest)))
}

/// Release: frees the lock held with `token`; releasing again with the same token changes
/// nothing.
pub fn release(
    current: Option<&LockDocument>,
    now: TimeWindow,
    token: &str,
) -> Result<Verdict, LockError> {
    let doc = current.ok_or(LockError::NotFound)?;
    check_holder(doc, token)?;
    if doc.owner.is_none() {
        return Ok(Verdict::Leave);
    }
    Ok(Verdict::Write(doc.released(now.latest)))
}

/// Break, on an admin's word: frees a held lock (or one in its lock-delay) whoever holds it and grows the fencing token
/// (see [`LockDocument::broken`]). `None`: nobody holds it, nothing to break.
pub fn break_lock(
    current: Option<&LockDocument>,
    now: TimeWindow,
) -> Result<Option<Break>, LockError> {
    let doc = current.ok_or(LockError::NotFound)?;
    // A lock in the lock-delay after its lease is not free either: a break ends the delay.
    let holder = match &doc.owner {
        Some(owner) if !doc.is_free_at(now.earliest) => owner,
        _ => return Ok(None),
    };
    Ok(Some(Break {
        doc: doc.broken(now.latest, next_fencing(doc)?),
        holder: holder.clone(),
        old_fencing_token: doc.fencing_token,
    }))
}

/// Refuses to take over an expired lease while the window is wider than its bound. Expiry
/// judged at `earliest` is safe as long as some recent sample came from a store host with a
/// right clock; a window that wide says the store's hosts disagree beyond what the operator
/// allows, so this replica may be hearing only wrong ones. A lock that was released is free
/// whatever the clocks say, and a holder's own refresh takes nobody's lease.
pub fn clock_trusted_for_takeover(takeover: bool, now: TimeWindow) -> Result<(), LockError> {
    match now.max_width {
        Some(max) if takeover && now.too_wide() => Err(LockError::ClockUncertain {
            width: now.width(),
            max,
        }),
        _ => Ok(()),
    }
}

/// Whether a new document may be written over `current` at all: every write needs a revision
/// of its own (see `LockDocument::revision`), so one at the top of its range is never replaced.
pub fn may_replace<K: LockKind>(current: &K) -> Result<(), LockError> {
    if current.can_grow() {
        Ok(())
    } else {
        Err(LockError::Unreadable(
            "the lock's revision cannot grow any further".into(),
        ))
    }
}

/// The next holder's fencing token. It must grow, so a stored token at the top of the range (a
/// corrupt or hostile document) refuses the grant rather than wrapping around to 0.
pub fn next_fencing(doc: &LockDocument) -> Result<u64, LockError> {
    fencing_after(doc.fencing_token)
}

/// The fencing token after `current`, for any kind of lock (see [`next_fencing`]).
pub fn fencing_after(current: u64) -> Result<u64, LockError> {
    current
        .checked_add(1)
        .ok_or_else(|| LockError::Unreadable("the fencing token cannot grow any further".into()))
}

/// Whether writing `next` hands its caller a holder token the caller does not have yet: a new
/// grant (a token other than the one stored), or the refresh of a grant this same call made but
/// has not answered yet (`granted_unseen`). Such a write is watched while in flight, and its
/// lease freed if it lands unseen (a lost answer, a cancelled request), or it would stay held
/// with nobody to release it. Renew, release and a holder's own refresh keep a token the holder
/// already has.
pub fn hands_out_token(
    next: &LockDocument,
    current_token: Option<&HolderToken>,
    granted_unseen: bool,
) -> bool {
    next.owner.is_some() && (next.token.as_ref() != current_token || granted_unseen)
}

/// Whether a lease just written had already run out by the time its write was known to land
/// (judged at `now.latest`: the holder must be able to use it): a slow write (retries, a
/// read-back) used it up, so the decision is made again rather than answered as a grant.
pub fn lease_used_up(written: &LockDocument, now: TimeWindow) -> bool {
    written.owner.is_some() && now.latest >= written.expires_at()
}

/// Whether `current` (read back after our write was replaced) is still the lease we wrote: the
/// same holder token, and held. A lease released, broken or passed on since is not.
pub fn still_held(current: &LockDocument, written: &LockDocument) -> bool {
    current.owner.is_some() && current.token == written.token
}

/// Whether `doc` is what a break writes: the one write with neither owner nor holder token.
pub fn is_break(doc: &LockDocument) -> bool {
    doc.owner.is_none() && doc.token.is_none()
}

/// Whether `presented` is this document's holder token.
pub fn holds(doc: &LockDocument, presented: Option<&str>) -> bool {
    match (&doc.token, presented) {
        (Some(token), Some(presented)) => token.matches(presented),
        _ => false,
    }
}

/// Refuses unless `token` is this document's holder token.
pub fn check_holder(doc: &LockDocument, token: &str) -> Result<(), LockError> {
    if holds(doc, Some(token)) {
        Ok(())
    } else {
        Err(LockError::NotHolder(
            "the token does not hold this lock (it never did, or the lock has passed to another holder)"
                .into(),
        ))
    }
}

/// The holder token of a document a rule produced, as the holder is to be told it.
pub fn token_of(doc: &LockDocument) -> Option<&str> {
    doc.token.as_ref().map(HolderToken::expose)
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, Utc};

    use serde_json::{json, Value};

    use super::*;
    use crate::lock::document::parse_seed_time;

    fn t0() -> DateTime<Utc> {
        parse_seed_time("2026-11-26T00:00:00+00:00").unwrap()
    }

    fn at(t: DateTime<Utc>) -> TimeWindow {
        TimeWindow::exact(t)
    }

    /// A lock written by the old Python module: no token, no revision, fencing token 0.
    fn seed(owner: &str, expire: u64) -> LockDocument {
        let body = format!(
            r#"{{"expire": {expire}, "lock_time": "2026-11-26T00:00:00+00:00", "release_time": null, "owner": "{owner}"}}"#
        );
        LockDocument::from_bytes(body.as_bytes()).unwrap()
    }

    fn terms(ttl: u64) -> LeaseTerms {
        LeaseTerms::of(ttl)
    }

    /// alice's grant at t0 for `ttl` seconds, with a lock-delay of `delay` after it.
    fn granted_with_delay(ttl: u64, delay: u64) -> LockDocument {
        let asked = LeaseTerms {
            lock_delay: Some(delay),
            ..terms(ttl)
        };
        acquire(None, at(t0()), "alice", None, &asked).unwrap().0
    }

    fn granted(owner: &str, ttl: u64) -> LockDocument {
        acquire(None, at(t0()), owner, None, &terms(ttl)).unwrap().0
    }

    #[test]
    fn the_first_grant_has_fencing_token_one_and_a_token() {
        let (doc, grant) = acquire(None, at(t0()), "alice", None, &terms(30)).unwrap();
        assert_eq!(grant, Grant::NewHolder { takeover: false });
        assert_eq!(doc.fencing_token, 1);
        assert_eq!(doc.owner.as_deref(), Some("alice"));
        assert!(doc.token.is_some());
    }

    #[test]
    fn another_owner_is_refused_while_the_lease_runs() {
        let doc = granted("alice", 30);
        let err = acquire(Some(&doc), at(t0()), "bob", None, &terms(30)).unwrap_err();
        assert!(matches!(err, LockError::Held { owner, .. } if owner == "alice"));
    }

    #[test]
    fn the_holders_name_without_its_token_is_refused_like_anyone_else() {
        let doc = granted("alice", 30);
        let err = acquire(Some(&doc), at(t0()), "alice", None, &terms(30)).unwrap_err();
        assert!(matches!(err, LockError::Held { .. }));
        let err = acquire(Some(&doc), at(t0()), "alice", Some("guess"), &terms(30)).unwrap_err();
        assert!(matches!(err, LockError::Held { .. }));
    }

    #[test]
    fn the_holder_with_its_token_refreshes_keeping_token_and_fencing_token() {
        let doc = granted("alice", 30);
        let later = t0() + Duration::seconds(10);
        let (next, grant) =
            acquire(Some(&doc), at(later), "alice", token_of(&doc), &terms(60)).unwrap();
        assert_eq!(grant, Grant::Refresh);
        assert_eq!(next.token, doc.token);
        assert_eq!(next.fencing_token, doc.fencing_token);
        assert_eq!(next.expires_at(), later + Duration::seconds(60));
    }

    #[test]
    fn a_refresh_with_a_shorter_ttl_never_shortens_the_lease() {
        let doc = granted("alice", 100);
        let (next, _) = acquire(Some(&doc), at(t0()), "alice", token_of(&doc), &terms(10)).unwrap();
        assert_eq!(next.expires_at(), doc.expires_at());
    }

    #[test]
    fn a_lease_that_ran_out_is_taken_over_with_a_higher_fencing_token() {
        let doc = granted("alice", 30);
        let end = doc.expires_at();
        let (next, grant) = acquire(Some(&doc), at(end), "bob", None, &terms(30)).unwrap();
        assert_eq!(grant, Grant::NewHolder { takeover: true });
        assert_eq!(next.fencing_token, 2);
        assert_ne!(next.token, doc.token);
    }

    #[test]
    fn expiry_is_judged_at_the_earliest_possible_time() {
        let doc = granted("alice", 30);
        let end = doc.expires_at();
        let window =
            TimeWindow::between(end - Duration::milliseconds(1), end + Duration::seconds(1));
        assert!(acquire(Some(&doc), window, "bob", None, &terms(30)).is_err());
    }

    #[test]
    fn an_expired_lease_is_not_taken_over_while_the_window_is_too_wide() {
        let doc = granted("alice", 30);
        let end = doc.expires_at();
        let wide = TimeWindow::between(end, end + Duration::seconds(31))
            .with_max_width(Duration::seconds(10));
        let err = acquire(Some(&doc), wide, "bob", None, &terms(30)).unwrap_err();
        assert!(matches!(err, LockError::ClockUncertain { .. }), "{err:?}");
        let narrow = TimeWindow::between(end, end + Duration::seconds(2))
            .with_max_width(Duration::seconds(10));
        assert!(acquire(Some(&doc), narrow, "bob", None, &terms(30)).is_ok());
    }

    #[test]
    fn a_released_lock_is_granted_however_wide_the_window() {
        let released = granted("alice", 30).released(t0());
        let wide = TimeWindow::between(t0(), t0() + Duration::seconds(31))
            .with_max_width(Duration::seconds(10));
        let (next, grant) = acquire(Some(&released), wide, "bob", None, &terms(30)).unwrap();
        assert_eq!(grant, Grant::NewHolder { takeover: false });
        assert_eq!(next.expires_at(), wide.latest + Duration::seconds(30));
    }

    #[test]
    fn a_seed_lock_is_held_even_against_its_own_owner_name_until_it_expires() {
        let doc = seed("alice", 60);
        let err = acquire(Some(&doc), at(t0()), "alice", None, &terms(30)).unwrap_err();
        assert!(matches!(err, LockError::Held { .. }));
        let (next, _) = acquire(
            Some(&doc),
            at(t0() + Duration::seconds(60)),
            "alice",
            None,
            &terms(30),
        )
        .unwrap();
        assert_eq!(next.fencing_token, 1);
    }

    #[test]
    fn a_fencing_token_at_the_top_of_its_range_refuses_the_grant_and_the_break() {
        let mut doc = granted("alice", 30);
        doc.fencing_token = u64::MAX;
        let later = at(doc.expires_at());
        let err = acquire(Some(&doc), later, "bob", None, &terms(30)).unwrap_err();
        assert!(matches!(err, LockError::Unreadable(_)));
        let err = break_lock(Some(&doc), at(t0())).unwrap_err();
        assert!(matches!(err, LockError::Unreadable(_)));
    }

    #[test]
    fn renew_extends_the_lease_from_now_for_the_holder_only() {
        let doc = granted("alice", 30);
        let later = t0() + Duration::seconds(20);
        let next = renew(Some(&doc), at(later), token_of(&doc).unwrap(), &terms(30)).unwrap();
        assert_eq!(next.expires_at(), later + Duration::seconds(30));
        let err = renew(Some(&doc), at(later), "not-the-token", &terms(30)).unwrap_err();
        assert!(matches!(err, LockError::NotHolder(_)));
    }

    #[test]
    fn renew_is_refused_once_the_lease_ran_out_or_the_lock_was_released() {
        let doc = granted("alice", 30);
        let token = token_of(&doc).unwrap();
        let err = renew(Some(&doc), at(doc.expires_at()), token, &terms(30)).unwrap_err();
        assert!(matches!(err, LockError::NotHolder(_)));
        let released = doc.released(t0());
        let err = renew(Some(&released), at(t0()), token, &terms(30)).unwrap_err();
        assert!(matches!(err, LockError::NotHolder(_)));
    }

    #[test]
    fn renew_and_release_of_a_missing_lock_are_not_found() {
        assert!(matches!(
            renew(None, at(t0()), "t", &terms(30)),
            Err(LockError::NotFound)
        ));
        assert!(matches!(
            release(None, at(t0()), "t"),
            Err(LockError::NotFound)
        ));
        assert!(matches!(
            break_lock(None, at(t0())),
            Err(LockError::NotFound)
        ));
    }

    #[test]
    fn release_frees_the_lock_once_then_leaves_it_as_it_is() {
        let doc = granted("alice", 30);
        let token = token_of(&doc).unwrap().to_owned();
        let Verdict::Write(released) = release(Some(&doc), at(t0()), &token).unwrap() else {
            panic!("the first release writes");
        };
        assert_eq!(released.owner, None);
        assert_eq!(
            release(Some(&released), at(t0()), &token).unwrap(),
            Verdict::Leave
        );
        let err = release(Some(&doc), at(t0()), "not-the-token").unwrap_err();
        assert!(matches!(err, LockError::NotHolder(_)));
    }

    #[test]
    fn a_break_frees_a_held_lock_and_grows_the_fencing_token() {
        let doc = granted("alice", 30);
        let broken = break_lock(Some(&doc), at(t0())).unwrap().unwrap();
        assert_eq!(broken.holder, "alice");
        assert_eq!(broken.old_fencing_token, 1);
        assert_eq!(broken.doc.fencing_token, 2);
        assert_eq!(broken.doc.owner, None);
        assert!(break_lock(Some(&broken.doc), at(t0())).unwrap().is_none());
    }

    #[test]
    fn the_holder_check_needs_the_token_itself() {
        let doc = granted("alice", 30);
        assert!(holds(&doc, token_of(&doc)));
        assert!(!holds(&doc, None));
        assert!(!holds(&doc, Some("alice")));
        assert!(!holds(&seed("alice", 60), Some("")));
        assert!(check_holder(&doc, "alice").is_err());
    }

    #[test]
    fn a_revision_at_the_top_of_its_range_is_never_replaced() {
        let mut doc = granted("alice", 30);
        assert!(may_replace(&doc).is_ok());
        doc.revision = u64::MAX;
        assert!(matches!(may_replace(&doc), Err(LockError::Unreadable(_))));
    }

    #[test]
    fn a_new_grant_hands_out_a_token_and_a_renew_or_release_does_not() {
        let doc = granted("alice", 30);
        assert!(hands_out_token(&doc, None, false));
        let renewed = renew(Some(&doc), at(t0()), token_of(&doc).unwrap(), &terms(30)).unwrap();
        assert!(!hands_out_token(&renewed, doc.token.as_ref(), false));
        assert!(hands_out_token(&renewed, doc.token.as_ref(), true));
        let released = doc.released(t0());
        assert!(!hands_out_token(&released, doc.token.as_ref(), true));
    }

    #[test]
    fn a_lease_is_used_up_once_the_latest_possible_time_reaches_its_end() {
        let doc = granted("alice", 30);
        let end = doc.expires_at();
        assert!(!lease_used_up(&doc, at(end - Duration::milliseconds(1))));
        let window = TimeWindow::between(end - Duration::seconds(1), end);
        assert!(lease_used_up(&doc, window));
        assert!(!lease_used_up(&doc.released(t0()), at(end)));
    }

    #[test]
    fn a_lease_replaced_by_a_release_or_another_grant_is_no_longer_held() {
        let doc = granted("alice", 30);
        let renewed = doc.renewed(30, t0());
        assert!(still_held(&renewed, &doc));
        assert!(!still_held(&doc.released(t0()), &doc));
        let other = doc.granted_over("bob", 30, t0(), 2);
        assert!(!still_held(&other, &doc));
        assert!(is_break(&doc.broken(t0(), 2)));
        assert!(!is_break(&doc.released(t0())));
    }

    #[test]
    fn a_grant_stores_the_value_and_lock_delay_asked_for_and_no_more() {
        let asked = LeaseTerms {
            value: Some(json!({"addr": "a:1"})),
            lock_delay: Some(5),
            ..terms(30)
        };
        let (doc, _) = acquire(None, at(t0()), "alice", None, &asked).unwrap();
        assert_eq!(doc.value, json!({"addr": "a:1"}));
        assert_eq!(doc.lock_delay, 5);
        assert_eq!(doc.held_since, Some(t0()));
        let released = doc.released(t0());
        let (next, _) = acquire(Some(&released), at(t0()), "bob", None, &terms(30)).unwrap();
        assert_eq!((next.value, next.lock_delay), (Value::Null, 0));
    }

    #[test]
    fn a_renew_or_refresh_replaces_the_value_when_given_and_keeps_it_otherwise() {
        let asked = LeaseTerms {
            value: Some(json!("first")),
            lock_delay: Some(5),
            ..terms(30)
        };
        let (doc, _) = acquire(None, at(t0()), "alice", None, &asked).unwrap();
        let token = token_of(&doc).unwrap().to_owned();
        let kept = renew(Some(&doc), at(t0()), &token, &terms(30)).unwrap();
        assert_eq!((&kept.value, kept.lock_delay), (&json!("first"), 5));
        let changed = LeaseTerms {
            value: Some(json!({"n": 2})),
            lock_delay: Some(0),
            ..terms(30)
        };
        let replaced = renew(Some(&kept), at(t0()), &token, &changed).unwrap();
        assert_eq!(
            (&replaced.value, replaced.lock_delay),
            (&json!({"n": 2}), 0)
        );
        let cleared = LeaseTerms {
            value: Some(Value::Null),
            ..terms(30)
        };
        let (refreshed, grant) =
            acquire(Some(&replaced), at(t0()), "alice", Some(&token), &cleared).unwrap();
        assert_eq!(grant, Grant::Refresh);
        assert_eq!(refreshed.value, Value::Null);
        assert_eq!(
            refreshed.held_since,
            Some(t0()),
            "a refresh is the same hold"
        );
    }

    #[test]
    fn an_unreleased_lease_is_kept_for_its_lock_delay_and_not_after() {
        let doc = granted_with_delay(10, 5);
        let end = doc.expires_at();
        let available_at = end + Duration::seconds(5);
        for now in [end, available_at - Duration::microseconds(1)] {
            let err = acquire(Some(&doc), at(now), "bob", None, &terms(30)).unwrap_err();
            assert!(
                matches!(err, LockError::Delayed { available_at: a } if a == available_at),
                "{now}: {err:?}"
            );
        }
        let (next, grant) = acquire(Some(&doc), at(available_at), "bob", None, &terms(30)).unwrap();
        assert_eq!(grant, Grant::NewHolder { takeover: true });
        assert_eq!(next.fencing_token, 2);
    }

    #[test]
    fn the_lock_delay_is_judged_at_the_earliest_possible_time() {
        let doc = granted_with_delay(10, 5);
        let available_at = doc.expires_at() + Duration::seconds(5);
        let window = TimeWindow::between(
            available_at - Duration::milliseconds(1),
            available_at + Duration::seconds(1),
        );
        let err = acquire(Some(&doc), window, "bob", None, &terms(30)).unwrap_err();
        assert!(matches!(err, LockError::Delayed { .. }), "{err:?}");
    }

    #[test]
    fn the_vanished_holder_itself_can_neither_renew_nor_refresh_during_the_delay() {
        let doc = granted_with_delay(10, 5);
        let token = token_of(&doc).unwrap();
        let during = at(doc.expires_at() + Duration::seconds(1));
        let err = renew(Some(&doc), during, token, &terms(30)).unwrap_err();
        assert!(matches!(err, LockError::NotHolder(_)), "{err:?}");
        let err = acquire(Some(&doc), during, "alice", Some(token), &terms(30)).unwrap_err();
        assert!(matches!(err, LockError::Delayed { .. }), "{err:?}");
    }

    #[test]
    fn a_release_ends_the_lock_delay_at_once() {
        let doc = granted_with_delay(10, 60);
        let Verdict::Write(released) =
            release(Some(&doc), at(t0()), token_of(&doc).unwrap()).unwrap()
        else {
            panic!("the release writes");
        };
        let (next, grant) = acquire(Some(&released), at(t0()), "bob", None, &terms(30)).unwrap();
        assert_eq!(grant, Grant::NewHolder { takeover: false });
        assert_eq!(next.owner.as_deref(), Some("bob"));
    }

    #[test]
    fn a_break_ends_the_lock_delay_too() {
        let doc = granted_with_delay(10, 60);
        let during = at(doc.expires_at() + Duration::seconds(1));
        let broken = break_lock(Some(&doc), during)
            .unwrap()
            .expect("in its delay: broken");
        assert_eq!(broken.holder, "alice");
        let (next, _) = acquire(Some(&broken.doc), during, "bob", None, &terms(30)).unwrap();
        assert_eq!(next.fencing_token, 3);
        // After the delay nothing is left to break.
        let after = at(doc.expires_at() + Duration::seconds(60));
        assert!(break_lock(Some(&doc), after).unwrap().is_none());
    }
}
