use chrono::Duration;

use super::*;
use crate::lock::document::parse_seed_time;
use crate::lock::shared::{MAX_DOCUMENT_BYTES, RELEASED_MEMORY};

fn t0() -> DateTime<Utc> {
    parse_seed_time("2026-11-26T00:00:00+00:00").unwrap()
}

fn at(secs: i64) -> TimeWindow {
    TimeWindow::exact(t0() + Duration::seconds(secs))
}

fn permit(owner: &str, limit: u32) -> SharedAcquire<'_> {
    SharedAcquire {
        owner,
        presented: None,
        ttl: 30,
        claim: Claim::Permit { limit },
        waiter: None,
    }
}

fn reader(owner: &str) -> SharedAcquire<'_> {
    SharedAcquire {
        claim: Claim::Shared,
        ..permit(owner, 1)
    }
}

fn writer<'a>(owner: &'a str, waiter: Option<&'a WaiterId>) -> SharedAcquire<'a> {
    SharedAcquire {
        claim: Claim::Exclusive,
        waiter,
        ..permit(owner, 1)
    }
}

/// The document after a grant; panics on anything else.
fn granted(
    current: Option<&SharedDocument>,
    now: TimeWindow,
    req: &SharedAcquire,
) -> SharedDocument {
    match acquire(current, now, req) {
        Ok(Acquired::Granted { doc, .. }) => doc,
        other => panic!("{} was not granted: {other:?}", req.owner),
    }
}

/// The token of the holding `doc` (written over `before`) gave.
fn token(doc: &SharedDocument, before: Option<&SharedDocument>) -> String {
    token_written(doc, before).unwrap().expose().to_owned()
}

/// A semaphore of `limit` held by `n` holders granted at t0.
fn semaphore(limit: u32, n: usize) -> SharedDocument {
    let mut doc = None;
    for i in 0..n {
        doc = Some(granted(
            doc.as_ref(),
            at(0),
            &permit(&format!("w{i}"), limit),
        ));
    }
    doc.unwrap()
}

// --- semaphores ---

#[test]
fn n_holders_are_granted_and_the_next_is_refused_with_no_permit_left() {
    let doc = semaphore(3, 3);
    assert_eq!(doc.holders.len(), 3);
    let err = acquire(Some(&doc), at(1), &permit("w3", 3)).unwrap_err();
    assert!(
        matches!(err, LockError::SemaphoreFull { limit: 3, expires_at } if expires_at == t0() + Duration::seconds(30)),
        "{err:?}"
    );
}

#[test]
fn a_released_permit_is_granted_again_at_once() {
    let doc = semaphore(2, 1);
    let second = granted(Some(&doc), at(1), &permit("b", 2));
    let Verdict::Write(freed) = release(Some(&second), at(2), &token(&second, Some(&doc))).unwrap()
    else {
        panic!("the release writes")
    };
    assert_eq!(freed.holders.len(), 1);
    granted(Some(&freed), at(2), &permit("c", 2));
}

#[test]
fn an_expired_holders_permit_returns_after_its_ttl_with_nobody_cleaning_up() {
    // w0 crashed at t0 and never comes back: nothing but time passes.
    let doc = semaphore(2, 2);
    assert!(acquire(Some(&doc), at(29), &permit("late", 2)).is_err());
    let Acquired::Granted { doc: next, grant } =
        acquire(Some(&doc), at(30), &permit("late", 2)).unwrap()
    else {
        panic!("granted")
    };
    assert_eq!(grant, Grant::NewHolder { takeover: true });
    let owners: Vec<&str> = next.holders.iter().map(|h| h.owner.as_str()).collect();
    assert_eq!(
        owners,
        ["late"],
        "the expired holders were dropped by the write"
    );
}

#[test]
fn every_write_drops_the_holders_whose_leases_ran_out() {
    let doc = semaphore(3, 2);
    let late = granted(Some(&doc), at(20), &permit("late", 3));
    let t = token(&late, Some(&doc));
    let renewed = renew(Some(&late), at(31), &t, 30).unwrap();
    let owners: Vec<&str> = renewed.holders.iter().map(|h| h.owner.as_str()).collect();
    assert_eq!(owners, ["late"]);
}

#[test]
fn an_expired_permit_is_not_taken_while_the_clock_is_too_uncertain() {
    let doc = semaphore(1, 1);
    let end = t0() + Duration::seconds(30);
    let wide =
        TimeWindow::between(end, end + Duration::seconds(31)).with_max_width(Duration::seconds(10));
    let err = acquire(Some(&doc), wide, &permit("late", 1)).unwrap_err();
    assert!(matches!(err, LockError::ClockUncertain { .. }), "{err:?}");
    // With room left the expired holder is not needed: granted, and kept (not called over).
    let roomy = semaphore(2, 1);
    let next = granted(Some(&roomy), wide, &permit("late", 2));
    assert_eq!(next.holders.len(), 2);
}

#[test]
fn a_limit_mismatch_is_refused_while_holders_live_and_accepted_after_they_expired() {
    let doc = semaphore(3, 1);
    let err = acquire(Some(&doc), at(10), &permit("other", 5)).unwrap_err();
    assert!(
        matches!(
            err,
            LockError::LimitMismatch {
                stored: 3,
                asked: 5
            }
        ),
        "{err:?}"
    );
    let next = granted(Some(&doc), at(30), &permit("other", 5));
    assert_eq!(next.limit, Some(5));
    assert_eq!(next.holders.len(), 1);
}

#[test]
fn a_limit_mismatch_is_refused_even_to_a_holder_refreshing_its_own_permit() {
    let doc = semaphore(3, 1);
    let t = token(&doc, None);
    let req = SharedAcquire {
        presented: Some(&t),
        ..permit("w0", 4)
    };
    assert!(matches!(
        acquire(Some(&doc), at(1), &req),
        Err(LockError::LimitMismatch { .. })
    ));
}

#[test]
fn a_limit_outside_its_bounds_is_invalid_input() {
    for limit in [0, MAX_LIMIT + 1] {
        let err = acquire(None, at(0), &permit("a", limit)).unwrap_err();
        assert!(
            matches!(err, LockError::InvalidInput { field: "limit", .. }),
            "{err:?}"
        );
    }
    granted(None, at(0), &permit("a", MAX_LIMIT));
}

#[test]
fn fencing_grows_per_grant_across_the_key() {
    let mut doc = semaphore(3, 3);
    let tokens: Vec<u64> = doc.holders.iter().map(|h| h.fencing_token).collect();
    assert_eq!(tokens, [1, 2, 3]);
    assert_eq!(doc.fencing_token, 3);
    let first = doc.holders[0].token.expose().to_owned();
    doc = match release(Some(&doc), at(1), &first).unwrap() {
        Verdict::Write(doc) => doc,
        Verdict::Leave => panic!("the release writes"),
    };
    assert_eq!(doc.fencing_token, 3, "a release gives no fencing token");
    let next = granted(Some(&doc), at(2), &permit("w3", 3));
    assert_eq!(next.holders.last().unwrap().fencing_token, 4);
    // Read-write locks alike: readers and writers draw from one sequence.
    let r = granted(None, at(0), &reader("r0"));
    let r = granted(Some(&r), at(0), &reader("r1"));
    let w = granted(Some(&r), at(30), &writer("w", None));
    let tokens: Vec<u64> = [&r.holders[0], &r.holders[1], &w.holders[0]]
        .iter()
        .map(|h| h.fencing_token)
        .collect();
    assert_eq!(tokens, [1, 2, 3]);
}

#[test]
fn a_holder_with_its_token_refreshes_keeping_token_and_fencing_token_and_never_shortening() {
    let doc = semaphore(2, 1);
    let t = token(&doc, None);
    let req = SharedAcquire {
        presented: Some(&t),
        ttl: 10,
        ..permit("w0", 2)
    };
    let Acquired::Granted { doc: next, grant } = acquire(Some(&doc), at(5), &req).unwrap() else {
        panic!("refreshed")
    };
    assert_eq!(grant, Grant::Refresh);
    assert_eq!(next.holders.len(), 1);
    assert_eq!(next.holders[0].token, doc.holders[0].token);
    assert_eq!(next.holders[0].fencing_token, 1);
    assert_eq!(next.holders[0].expires_at(), doc.holders[0].expires_at());
    assert_eq!(next.holders[0].held_since, doc.holders[0].held_since);
    // The owner's name without the token is another holder.
    let other = granted(Some(&doc), at(5), &permit("w0", 2));
    assert_eq!(other.holders.len(), 2);
}

#[test]
fn renew_restarts_only_the_holders_own_lease_while_it_runs() {
    let a = semaphore(2, 1);
    let b = granted(Some(&a), at(10), &permit("b", 2));
    let tb = token(&b, Some(&a));
    let renewed = renew(Some(&b), at(20), &tb, 60).unwrap();
    assert_eq!(renewed.holders[0], b.holders[0], "w0 untouched");
    assert_eq!(
        renewed.holders[1].expires_at(),
        t0() + Duration::seconds(80)
    );
    let err = renew(Some(&b), at(40), &tb, 60).unwrap_err();
    assert!(matches!(err, LockError::NotHolder(_)), "{err:?}");
    let err = renew(Some(&b), at(20), "not-a-token", 60).unwrap_err();
    assert!(matches!(err, LockError::NotHolder(_)), "{err:?}");
    assert!(matches!(
        renew(None, at(0), &tb, 30),
        Err(LockError::NotFound)
    ));
}

#[test]
fn release_twice_is_idempotent() {
    let doc = semaphore(2, 2);
    let t = doc.holders[0].token.expose().to_owned();
    let Verdict::Write(once) = release(Some(&doc), at(1), &t).unwrap() else {
        panic!("the first release writes")
    };
    assert_eq!(once.holders.len(), 1);
    assert_eq!(release(Some(&once), at(2), &t).unwrap(), Verdict::Leave);
    let err = renew(Some(&once), at(2), &t, 30).unwrap_err();
    assert!(matches!(err, LockError::NotHolder(_)));
    let err = release(Some(&once), at(2), "never-held").unwrap_err();
    assert!(matches!(err, LockError::NotHolder(_)));
}

#[test]
fn a_release_is_remembered_for_a_bounded_number_of_later_releases() {
    let mut doc = semaphore(1, 1);
    let first = token(&doc, None);
    for i in 0..RELEASED_MEMORY {
        let t = doc.holders[0].token.expose().to_owned();
        let Verdict::Write(freed) = release(Some(&doc), at(1), &t).unwrap() else {
            panic!("writes")
        };
        assert_eq!(
            release(Some(&freed), at(1), &first).unwrap(),
            Verdict::Leave
        );
        doc = granted(Some(&freed), at(1), &permit(&format!("n{i}"), 1));
    }
    let t = doc.holders[0].token.expose().to_owned();
    let Verdict::Write(freed) = release(Some(&doc), at(1), &t).unwrap() else {
        panic!("writes")
    };
    assert_eq!(freed.released.len(), RELEASED_MEMORY);
    assert!(matches!(
        release(Some(&freed), at(1), &first),
        Err(LockError::NotHolder(_))
    ));
}

#[test]
fn a_break_drops_every_holder_grows_the_fencing_token_and_refuses_their_tokens() {
    let doc = semaphore(3, 2);
    let t = doc.holders[0].token.expose().to_owned();
    let broken = break_all(Some(&doc), at(1)).unwrap().unwrap();
    assert_eq!(broken.holders, ["w0", "w1"]);
    assert_eq!(broken.old_fencing_token, 2);
    assert_eq!(broken.doc.fencing_token, 3);
    assert!(broken.doc.holders.is_empty());
    assert!(matches!(
        release(Some(&broken.doc), at(1), &t),
        Err(LockError::NotHolder(_))
    ));
    assert!(break_all(Some(&broken.doc), at(1)).unwrap().is_none());
    assert!(
        break_all(Some(&doc), at(30)).unwrap().is_none(),
        "all expired"
    );
    let next = granted(Some(&broken.doc), at(2), &permit("n", 3));
    assert_eq!(next.holders[0].fencing_token, 4);
}

#[test]
fn a_request_of_the_other_kind_is_invalid_input_and_writes_nothing() {
    let sem = semaphore(2, 1);
    let err = acquire(Some(&sem), at(0), &reader("r")).unwrap_err();
    assert!(matches!(err, LockError::InvalidInput { field: "mode", .. }));
    let rw = granted(None, at(0), &reader("r"));
    let err = acquire(Some(&rw), at(0), &permit("p", 2)).unwrap_err();
    assert!(matches!(
        err,
        LockError::InvalidInput { field: "limit", .. }
    ));
}

// --- read-write locks ---

#[test]
fn readers_share_and_a_writer_is_alone() {
    let r = granted(None, at(0), &reader("r0"));
    let r = granted(Some(&r), at(1), &reader("r1"));
    assert_eq!(r.holders.len(), 2);
    let err = acquire(Some(&r), at(2), &writer("w", None)).unwrap_err();
    assert!(
        matches!(&err, LockError::Held { owner, .. } if owner == "r1"),
        "held until the last reader's lease ends: {err:?}"
    );
    let w = granted(None, at(0), &writer("w", None));
    assert!(matches!(
        acquire(Some(&w), at(1), &reader("r")),
        Err(LockError::Held { .. })
    ));
    assert!(matches!(
        acquire(Some(&w), at(1), &writer("w2", None)),
        Err(LockError::Held { .. })
    ));
}

#[test]
fn a_writer_that_will_wait_is_recorded_and_its_grant_removes_its_entry() {
    let id = WaiterId::generate();
    let r = granted(None, at(0), &reader("r0"));
    let Err(refusal) = acquire(Some(&r), at(1), &writer("w", None)) else {
        panic!("refused")
    };
    assert!(
        matches!(refusal, LockError::Held { .. }),
        "no wait, no entry"
    );
    let Acquired::Queued { doc, refusal } =
        acquire(Some(&r), at(1), &writer("w", Some(&id))).unwrap()
    else {
        panic!("queued")
    };
    assert!(matches!(refusal, LockError::Held { .. }));
    assert_eq!(doc.waiting.len(), 1);
    assert_eq!(doc.waiting[0].mode, Mode::Exclusive);
    let rt = doc.holders[0].token.expose().to_owned();
    let Verdict::Write(free) = release(Some(&doc), at(2), &rt).unwrap() else {
        panic!("writes")
    };
    let w = granted(Some(&free), at(2), &writer("w", Some(&id)));
    assert!(w.waiting.is_empty(), "its own entry went with the grant");
    assert_eq!(w.holders[0].mode, Some(Mode::Exclusive));
}

#[test]
fn a_waiting_entry_is_not_rewritten_while_fresh_but_renewed_before_it_lapses() {
    let id = WaiterId::generate();
    let r = granted(None, at(0), &reader("r0"));
    let Acquired::Queued { doc, .. } = acquire(Some(&r), at(1), &writer("w", Some(&id))).unwrap()
    else {
        panic!("queued")
    };
    // Polled a second later: nothing to write, refused as before.
    assert!(matches!(
        acquire(Some(&doc), at(2), &writer("w", Some(&id))),
        Err(LockError::Held { .. })
    ));
    // Past half its lease: renewed.
    let Acquired::Queued { doc: renewed, .. } =
        acquire(Some(&doc), at(4), &writer("w", Some(&id))).unwrap()
    else {
        panic!("renewed")
    };
    assert_eq!(renewed.waiting.len(), 1);
    assert_eq!(
        renewed.waiting[0].expires_at(),
        t0() + Duration::seconds(4 + WAITING_LEASE_SECS as i64)
    );
}

#[test]
fn a_steady_stream_of_readers_does_not_starve_a_waiting_writer() {
    // Readers overlap one another without a gap, each arriving while the one before holds. A
    // reader-preferring rule lets every one in, and the writer never finds the lock free.
    let id = WaiterId::generate();
    let mut doc = granted(None, at(0), &reader("r0"));
    let mut readers = vec![token(&doc, None)];
    let mut writer_granted_at = None;
    for second in 1..120_i64 {
        let now = at(second);
        // The writer tries (or renews its entry) every second, as its waiting acquire would.
        match acquire(Some(&doc), now, &writer("w", Some(&id))) {
            Ok(Acquired::Granted { doc: next, .. }) => {
                doc = next;
                writer_granted_at = Some(second);
                break;
            }
            Ok(Acquired::Queued { doc: next, .. }) => doc = next,
            Err(LockError::Held { .. }) => {}
            Err(other) => panic!("{other:?}"),
        }
        // A new reader arrives every second...
        let owner = format!("r{second}");
        match acquire(Some(&doc), now, &reader(&owner)) {
            Ok(Acquired::Granted { doc: next, .. }) => {
                readers.push(token(&next, Some(&doc)));
                doc = next;
            }
            Err(LockError::Held { .. }) => {}
            other => panic!("{other:?}"),
        }
        // ...and each reader leaves 5 s after it came.
        if second >= 5 && !readers.is_empty() {
            let t = readers.remove(0);
            if let Verdict::Write(next) = release(Some(&doc), now, &t).unwrap() {
                doc = next;
            }
        }
    }
    let at = writer_granted_at.expect("the writer was let in");
    assert!(
        at <= 6,
        "the writer waited only for the readers already in: {at}"
    );
    assert_eq!(doc.holders.len(), 1, "{:?}", doc.holders);
    assert!(doc.holders[0].is_exclusive());
}

#[test]
fn a_reader_is_refused_while_a_writers_waiting_entry_is_live() {
    let id = WaiterId::generate();
    let r = granted(None, at(0), &reader("r0"));
    let Acquired::Queued { doc, .. } = acquire(Some(&r), at(1), &writer("w", Some(&id))).unwrap()
    else {
        panic!("queued")
    };
    let err = acquire(Some(&doc), at(2), &reader("r1")).unwrap_err();
    assert!(
        matches!(&err, LockError::Held { owner, .. } if owner == "w"),
        "{err:?}"
    );
    // The reader already in still renews: writers wait for holders, they do not take from them.
    let rt = doc.holders[0].token.expose().to_owned();
    assert!(renew(Some(&doc), at(2), &rt, 30).is_ok());
}

#[test]
fn a_vanished_writers_waiting_entry_stops_blocking_readers_after_its_short_lease() {
    let id = WaiterId::generate();
    let r = granted(None, at(0), &reader("r0"));
    let Acquired::Queued { doc, .. } = acquire(Some(&r), at(1), &writer("w", Some(&id))).unwrap()
    else {
        panic!("queued")
    };
    let lapses = 1 + WAITING_LEASE_SECS as i64;
    assert!(acquire(Some(&doc), at(lapses - 1), &reader("r1")).is_err());
    let next = granted(Some(&doc), at(lapses), &reader("r1"));
    assert!(next.waiting.is_empty(), "the lapsed entry was dropped");
    assert_eq!(next.holders.len(), 2);
}

#[test]
fn a_writer_that_gives_up_withdraws_its_entry() {
    let id = WaiterId::generate();
    let r = granted(None, at(0), &reader("r0"));
    let Acquired::Queued { doc, .. } = acquire(Some(&r), at(1), &writer("w", Some(&id))).unwrap()
    else {
        panic!("queued")
    };
    let Verdict::Write(gone) = withdraw(Some(&doc), at(2), &id) else {
        panic!("writes")
    };
    assert!(gone.waiting.is_empty());
    assert_eq!(withdraw(Some(&gone), at(2), &id), Verdict::Leave);
    granted(Some(&gone), at(2), &reader("r1"));
}

#[test]
fn a_holder_cannot_change_its_mode_by_refreshing() {
    let r = granted(None, at(0), &reader("me"));
    let t = token(&r, None);
    let req = SharedAcquire {
        presented: Some(&t),
        ..writer("me", None)
    };
    let err = acquire(Some(&r), at(1), &req).unwrap_err();
    assert!(matches!(err, LockError::InvalidInput { field: "mode", .. }));
}

#[test]
fn an_expired_writer_is_not_called_over_while_the_clock_is_too_uncertain() {
    let w = granted(None, at(0), &writer("w", None));
    let end = t0() + Duration::seconds(30);
    let wide =
        TimeWindow::between(end, end + Duration::seconds(31)).with_max_width(Duration::seconds(10));
    for req in [reader("r"), writer("w2", None)] {
        let err = acquire(Some(&w), wide, &req).unwrap_err();
        assert!(matches!(err, LockError::ClockUncertain { .. }), "{err:?}");
    }
    let Acquired::Granted { grant, .. } = acquire(Some(&w), at(30), &reader("r")).unwrap() else {
        panic!("granted")
    };
    assert_eq!(grant, Grant::NewHolder { takeover: true });
}

// --- bounds ---

#[test]
fn a_full_document_of_the_longest_owner_names_stays_within_the_size_bound() {
    // 256 bytes, each of the quotes escaped in JSON.
    let long = |i: usize| format!("{i:04}{}", "\"".repeat(252));
    let mut doc = None;
    for i in 0..MAX_LIMIT as usize {
        doc = Some(granted(doc.as_ref(), at(0), &permit(&long(i), MAX_LIMIT)));
    }
    let sem = doc.unwrap();
    assert_eq!(sem.holders.len(), MAX_HOLDERS);
    let body = sem.to_bytes();
    assert!(body.len() < MAX_DOCUMENT_BYTES, "{}", body.len());
    assert_eq!(SharedDocument::from_bytes(&body).unwrap(), sem);
    // A read-write lock with as many readers and every waiting writer is within it too.
    let mut rw = None;
    for i in 0..MAX_HOLDERS {
        rw = Some(granted(rw.as_ref(), at(0), &reader(&long(i))));
    }
    let mut rw = rw.unwrap();
    let err = acquire(Some(&rw), at(0), &reader("one-more")).unwrap_err();
    assert!(
        matches!(
            err,
            LockError::TooManyHolders {
                max: MAX_HOLDERS,
                ..
            }
        ),
        "{err:?}"
    );
    for i in 0..MAX_WAITING + 1 {
        let id = WaiterId::generate();
        let owner = long(1000 + i);
        match acquire(Some(&rw), at(0), &writer(&owner, Some(&id))) {
            Ok(Acquired::Queued { doc, .. }) => rw = doc,
            Err(LockError::Held { .. }) => assert_eq!(i, MAX_WAITING, "only past the bound"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(rw.waiting.len(), MAX_WAITING);
    for _ in 0..RELEASED_MEMORY {
        rw.remember_released(HolderToken::generate());
    }
    let body = rw.to_bytes();
    assert!(body.len() < MAX_DOCUMENT_BYTES, "{}", body.len());
    assert!(SharedDocument::from_bytes(&body).is_ok());
}

#[test]
fn an_owner_name_past_its_bound_is_invalid_input() {
    let long = "o".repeat(257);
    let err = acquire(None, at(0), &permit(&long, 1)).unwrap_err();
    assert!(matches!(
        err,
        LockError::InvalidInput { field: "owner", .. }
    ));
}

#[test]
fn a_fencing_token_at_the_top_of_its_range_refuses_the_grant_and_the_break() {
    let mut doc = semaphore(2, 1);
    doc.fencing_token = u64::MAX;
    let err = acquire(Some(&doc), at(1), &permit("b", 2)).unwrap_err();
    assert!(matches!(err, LockError::Unreadable(_)));
    let err = break_all(Some(&doc), at(1)).unwrap_err();
    assert!(matches!(err, LockError::Unreadable(_)));
}

#[test]
fn every_write_is_a_new_revision_carrying_the_history_before_it() {
    let a = semaphore(2, 1);
    let b = granted(Some(&a), at(1), &permit("b", 2));
    assert_eq!((a.revision, b.revision), (1, 2));
    assert_eq!(b.writes[1], a.writes[0]);
    assert_eq!(
        b.history().succession_of(a.history()),
        crate::lock::history::Succession::Replaced
    );
}
