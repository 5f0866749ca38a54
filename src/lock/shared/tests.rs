use super::*;
use crate::lock::document::parse_seed_time;
use crate::lock::rules::Verdict;
use crate::lock::shared_rules::{self, Acquired, SharedAcquire};

fn t0() -> DateTime<Utc> {
    parse_seed_time("2026-11-26T00:00:00+00:00").unwrap()
}

fn at(secs: i64) -> TimeWindow {
    TimeWindow::exact(t0() + Duration::seconds(secs))
}

fn acquire(
    current: Option<&SharedDocument>,
    now: TimeWindow,
    owner: &str,
    claim: Claim,
    presented: Option<&str>,
) -> Result<Acquired, crate::lock::LockError> {
    let req = SharedAcquire {
        owner,
        presented,
        ttl: 30,
        claim,
        waiter: None,
    };
    shared_rules::acquire(current, now, &req)
}

fn granted(current: Option<&SharedDocument>, owner: &str, claim: Claim) -> SharedDocument {
    match acquire(current, at(0), owner, claim, None) {
        Ok(Acquired::Granted { doc, .. }) => doc,
        other => panic!("{other:?}"),
    }
}

const PERMIT: Claim = Claim::Permit { limit: 3 };

// --- the stored document ---

#[test]
fn a_document_round_trips_in_the_seed_time_format() {
    let doc = granted(None, "a", PERMIT);
    let text = String::from_utf8(doc.to_bytes().to_vec()).unwrap();
    assert!(text.starts_with(r#"{"kind":"semaphore","limit":3,"holders":[{"owner":"a""#));
    assert!(
        text.contains(r#""lock_time":"2026-11-26T00:00:00+00:00""#),
        "{text}"
    );
    assert!(!text.contains("\"mode\""), "a permit has no mode: {text}");
    assert_eq!(SharedDocument::from_bytes(text.as_bytes()).unwrap(), doc);
}

#[test]
fn documents_the_rules_never_write_are_refused_rather_than_guessed_at() {
    let holder = |mode: &str| {
        format!(
            r#"{{"owner":"a","token":"t","lock_time":"2026-11-26T00:00:00+00:00","expire":30,"fencing_token":1,"held_since":"2026-11-26T00:00:00+00:00"{mode}}}"#
        )
    };
    let (plain, shared, exclusive) = (
        holder(""),
        holder(r#","mode":"shared""#),
        holder(r#","mode":"exclusive""#),
    );
    let refused = [
        r#"{"kind":"semaphore","holders":[],"fencing_token":0,"revision":1}"#.to_owned(),
        r#"{"kind":"semaphore","limit":0,"holders":[],"fencing_token":0,"revision":1}"#.to_owned(),
        format!(r#"{{"kind":"semaphore","limit":1,"holders":[{plain},{plain}],"fencing_token":1,"revision":1}}"#),
        format!(r#"{{"kind":"semaphore","limit":2,"holders":[{shared}],"fencing_token":1,"revision":1}}"#),
        r#"{"kind":"rwlock","limit":2,"holders":[],"fencing_token":0,"revision":1}"#.to_owned(),
        format!(r#"{{"kind":"rwlock","holders":[{plain}],"fencing_token":1,"revision":1}}"#),
        format!(r#"{{"kind":"rwlock","holders":[{exclusive},{shared}],"fencing_token":1,"revision":1}}"#),
        format!(r#"{{"kind":"rwlock","holders":[{shared}],"fencing_token":0,"revision":1}}"#),
        r#"{"kind":"mutex","holders":[],"fencing_token":0,"revision":1}"#.to_owned(),
        r#"{"expire": 900, "lock_time": "2026-11-26T02:24:19.844224+00:00", "release_time": null, "owner": "bob"}"#.to_owned(),
    ];
    for body in refused {
        assert!(
            SharedDocument::from_bytes(body.as_bytes()).is_err(),
            "{body}"
        );
    }
    let fine = format!(
        r#"{{"kind":"rwlock","holders":[{shared},{shared}],"fencing_token":1,"revision":1}}"#
    );
    assert!(SharedDocument::from_bytes(fine.as_bytes()).is_ok());
}

#[test]
fn a_body_past_the_size_bound_is_refused_before_it_is_parsed() {
    let body = vec![b' '; MAX_DOCUMENT_BYTES + 1];
    let err = SharedDocument::from_bytes(&body).unwrap_err();
    assert!(err.contains("bytes"), "{err}");
}

// --- views ---

#[test]
fn a_view_shows_live_holders_and_permits_left_and_never_a_token() {
    let a = granted(None, "a", PERMIT);
    let Ok(Acquired::Granted { doc: b, .. }) = acquire(Some(&a), at(20), "b", PERMIT, None) else {
        panic!()
    };
    let view = b.view("bkt", "k", at(25), None);
    assert_eq!(view.kind, SharedKind::Semaphore);
    assert_eq!((view.limit, view.permits_left), (Some(3), Some(1)));
    assert_eq!(view.fencing_token, 2);
    assert_eq!(view.index, b.revision);
    assert_eq!(view.holders.len(), 2);
    assert_eq!(view.holders[0].ttl_remaining_ms, 5000);
    assert_eq!((view.token.clone(), view.lease.clone()), (None, None));
    let text = serde_json::to_string(&view).unwrap();
    for h in &b.holders {
        assert!(!text.contains(h.token.expose()), "{text}");
    }
    // a's lease ran out at 30 s: it is not shown, and its permit counts as left.
    let later = b.view("bkt", "k", at(31), None);
    let owners: Vec<&str> = later.holders.iter().map(|h| h.owner.as_str()).collect();
    assert_eq!(owners, ["b"]);
    assert_eq!(later.permits_left, Some(2));
}

#[test]
fn a_holders_own_view_carries_its_token_and_its_lease_only() {
    let a = granted(None, "a", PERMIT);
    let Ok(Acquired::Granted { doc: b, .. }) = acquire(Some(&a), at(1), "b", PERMIT, None) else {
        panic!()
    };
    let mine = &b.holders[1].token;
    let view = b.view("bkt", "k", at(1), Some(mine));
    assert_eq!(view.holder_token(), Some(mine.expose()));
    let lease = view.lease.unwrap();
    assert_eq!((lease.owner.as_str(), lease.fencing_token), ("b", 2));
    let text = serde_json::to_string(&b.view("bkt", "k", at(1), Some(mine))).unwrap();
    assert!(!text.contains(b.holders[0].token.expose()), "{text}");
}

#[test]
fn a_read_write_locks_view_shows_modes_and_waiting_writers_and_no_permits() {
    let r = granted(None, "r", Claim::Shared);
    let id = WaiterId::generate();
    let req = SharedAcquire {
        owner: "w",
        presented: None,
        ttl: 30,
        claim: Claim::Exclusive,
        waiter: Some(&id),
    };
    let Ok(Acquired::Queued { doc, .. }) = shared_rules::acquire(Some(&r), at(1), &req) else {
        panic!()
    };
    let view = doc.view("bkt", "k", at(2), None);
    assert_eq!(view.kind, SharedKind::Rwlock);
    assert_eq!((view.limit, view.permits_left), (None, None));
    assert_eq!(view.holders[0].mode, Some(Mode::Shared));
    assert_eq!(view.waiting.len(), 1);
    assert_eq!(view.waiting[0].owner, "w");
    let text = serde_json::to_string(&view).unwrap();
    let id = serde_json::to_string(&id).unwrap();
    assert!(
        !text.contains(id.trim_matches('"')),
        "a waiter's id is not shown: {text}"
    );
    let none = SharedDocument::view_of_none("bkt", "k", SharedKind::Semaphore);
    assert_eq!((none.index, none.holders.len(), none.limit), (0, 0, None));
}

// --- the seam ---

#[test]
fn a_new_grant_hands_out_its_token_and_a_renew_or_release_does_not() {
    let a = granted(None, "a", PERMIT);
    assert_eq!(a.token_handed_out(None, false), Some(&a.holders[0].token));
    let Ok(Acquired::Granted { doc: b, .. }) = acquire(Some(&a), at(1), "b", PERMIT, None) else {
        panic!()
    };
    assert_eq!(
        b.token_handed_out(Some(&a), false),
        Some(&b.holders[1].token)
    );
    let tb = b.holders[1].token.expose().to_owned();
    let renewed = shared_rules::renew(Some(&b), at(2), &tb, 30).unwrap();
    assert_eq!(renewed.token_handed_out(Some(&b), false), None);
    // This call's own grant, landed unseen and refreshed: its token is still to be handed out.
    assert_eq!(
        renewed.token_handed_out(Some(&b), true),
        Some(&b.holders[1].token)
    );
    let Verdict::Write(released) = shared_rules::release(Some(&b), at(2), &tb).unwrap() else {
        panic!()
    };
    assert_eq!(released.token_handed_out(Some(&b), true), None);
}

#[test]
fn the_lease_a_write_gave_is_judged_used_up_and_passed_on_by_itself_alone() {
    let a = granted(None, "a", PERMIT);
    let Ok(Acquired::Granted { doc: b, .. }) = acquire(Some(&a), at(20), "b", PERMIT, None) else {
        panic!()
    };
    // a's lease ends at 30 s, b's (the one written) at 50 s.
    assert!(!b.lease_used_up(Some(&a), at(30)));
    assert!(b.lease_used_up(Some(&a), at(50)));
    let ta = a.holders[0].token.expose().to_owned();
    let Verdict::Write(a_gone) = shared_rules::release(Some(&b), at(21), &ta).unwrap() else {
        panic!()
    };
    assert!(
        !a_gone.lease_used_up(Some(&b), at(99)),
        "a release gives no lease"
    );
    assert!(!a_gone.lease_passed_on(&b, Some(&a)), "b still holds");
    let broken = shared_rules::break_all(Some(&b), at(21))
        .unwrap()
        .unwrap()
        .doc;
    assert!(broken.lease_passed_on(&b, Some(&a)));
    assert!(broken.is_break(Some(&b)));
    assert!(!a_gone.is_break(Some(&b)));
    assert!(!b.is_break(Some(&a)));
}

#[test]
fn a_waiter_is_woken_when_its_claim_is_free_or_would_be_refused_for_good() {
    let full = granted(
        Some(&granted(None, "a", Claim::Permit { limit: 2 })),
        "b",
        Claim::Permit { limit: 2 },
    );
    let two = Claim::Permit { limit: 2 };
    assert!(!full.free_for(&two, t0()));
    assert!(full.free_for(&two, t0() + Duration::seconds(30)));
    assert!(
        full.free_for(&Claim::Permit { limit: 3 }, t0()),
        "to learn of the mismatch"
    );
    assert!(full.free_for(&Claim::Shared, t0()), "to learn of the kind");
    let r = granted(None, "r", Claim::Shared);
    assert!(r.free_for(&Claim::Shared, t0()));
    assert!(!r.free_for(&Claim::Exclusive, t0()));
    let w = granted(None, "w", Claim::Exclusive);
    assert!(!w.free_for(&Claim::Shared, t0()));
    assert!(!w.free_for(&Claim::Exclusive, t0()));
    assert!(w.free_for(&Claim::Shared, t0() + Duration::seconds(30)));
    assert_eq!(w.look_again_at(t0()), Some(t0() + Duration::seconds(30)));
    assert_eq!(w.look_again_at(t0() + Duration::seconds(30)), None);
}

#[test]
fn a_waiting_writer_keeps_readers_waiting_and_tells_them_when_to_look_again() {
    let r = granted(None, "r", Claim::Shared);
    let id = WaiterId::generate();
    let req = SharedAcquire {
        owner: "w",
        presented: None,
        ttl: 30,
        claim: Claim::Exclusive,
        waiter: Some(&id),
    };
    let Ok(Acquired::Queued { doc, .. }) = shared_rules::acquire(Some(&r), at(1), &req) else {
        panic!()
    };
    let lapse = t0() + Duration::seconds(1 + WAITING_LEASE_SECS as i64);
    assert!(!doc.free_for(&Claim::Shared, t0() + Duration::seconds(2)));
    assert_eq!(doc.look_again_at(t0() + Duration::seconds(2)), Some(lapse));
    assert!(doc.free_for(&Claim::Shared, lapse));
}

#[test]
fn an_orphaned_grant_is_freed_alone_and_its_release_answered_as_done() {
    let a = granted(None, "a", PERMIT);
    let Ok(Acquired::Granted { doc: orphan, .. }) = acquire(Some(&a), at(1), "b", PERMIT, None)
    else {
        panic!()
    };
    let token = orphan.token_handed_out(Some(&a), false).unwrap().clone();
    let freed = orphan.orphan_freed(&token, t0());
    let owners: Vec<&str> = freed.holders.iter().map(|h| h.owner.as_str()).collect();
    assert_eq!(owners, ["a"]);
    assert_eq!(freed.revision, orphan.revision + 1);
    assert_eq!(
        LockKind::succession_of(&freed, &orphan),
        Succession::Replaced
    );
    assert_eq!(
        shared_rules::release(Some(&freed), at(2), token.expose()).unwrap(),
        Verdict::Leave
    );
}

#[test]
fn the_trait_parses_and_writes_as_the_document_does() {
    let doc = granted(None, "a", Claim::Shared);
    let body = LockKind::to_bytes(&doc);
    assert_eq!(
        <SharedDocument as LockKind>::from_bytes(&body).unwrap(),
        doc
    );
    assert_eq!(LockKind::revision(&doc), 1);
    let mut top = doc.clone();
    top.revision = u64::MAX;
    assert!(LockKind::can_grow(&doc) && !LockKind::can_grow(&top));
}

#[test]
fn a_renew_or_refresh_at_the_very_instant_of_the_lease_it_renews_is_still_told_apart() {
    // The store's time as a replica knows it may stand still for a while (its `latest` never
    // steps back after a sample ahead ages out): a renew then stamps the same lock_time with
    // the same ttl. The driver must still see which holding the write renewed, or a renew that
    // landed and was broken since (read back after its lost answer) is answered as renewed.
    let a = granted(None, "a", PERMIT);
    let ta = a.holders[0].token.expose().to_owned();
    let renewed = shared_rules::renew(Some(&a), at(0), &ta, 30).unwrap();
    let broken = shared_rules::break_all(Some(&renewed), at(0))
        .unwrap()
        .unwrap()
        .doc;
    assert!(
        broken.lease_passed_on(&renewed, Some(&a)),
        "a renew broken since is not answered as held"
    );
    let Ok(Acquired::Granted { doc: refreshed, .. }) =
        acquire(Some(&a), at(0), "a", PERMIT, Some(&ta))
    else {
        panic!("refreshed")
    };
    assert_eq!(refreshed.holders[0].token, a.holders[0].token);
    let broken = shared_rules::break_all(Some(&refreshed), at(0))
        .unwrap()
        .unwrap()
        .doc;
    assert!(broken.lease_passed_on(&refreshed, Some(&a)));
    // This call's own unseen grant, refreshed at the same instant, still hands out its token.
    assert_eq!(
        refreshed.token_handed_out(Some(&a), true),
        Some(&a.holders[0].token)
    );
}

#[test]
fn an_orphaned_grant_is_freed_from_a_later_document_that_still_holds_it_and_only_then() {
    let a = granted(None, "a", PERMIT);
    let Ok(Acquired::Granted { doc: orphan, .. }) = acquire(Some(&a), at(1), "b", PERMIT, None)
    else {
        panic!()
    };
    let token = orphan.token_handed_out(Some(&a), false).unwrap().clone();
    // a renews over the orphaned grant: b's holding is carried along, and freed from there.
    let ta = a.holders[0].token.expose().to_owned();
    let later = shared_rules::renew(Some(&orphan), at(2), &ta, 30).unwrap();
    let freed = later.orphan_freed_later(&token, t0()).expect("still held");
    let owners: Vec<&str> = freed.holders.iter().map(|h| h.owner.as_str()).collect();
    assert_eq!(owners, ["a"]);
    assert_eq!(
        LockKind::succession_of(&freed, &later),
        Succession::Replaced
    );
    // Broken since: nothing of the grant is left to free.
    let broken = shared_rules::break_all(Some(&later), at(3))
        .unwrap()
        .unwrap()
        .doc;
    assert_eq!(broken.orphan_freed_later(&token, t0()), None);
    assert_eq!(a.orphan_freed_later(&token, t0()), None);
}
