//! What each change of a semaphore or read-write lock is called, on documents the real rules
//! write (`shared_rules`), at times a test chooses.

use chrono::Duration;

use super::*;
use crate::clock::TimeWindow;
use crate::lock::document::parse_seed_time;
use crate::lock::rules::Verdict;
use crate::lock::shared::{Claim, WaiterId, WAITING_LEASE_SECS};
use crate::lock::shared_rules::{self, token_written, Acquired, SharedAcquire};

fn t0() -> DateTime<Utc> {
    parse_seed_time("2026-11-26T00:00:00+00:00").unwrap()
}

fn secs(s: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(s)
}

fn at(s: i64) -> TimeWindow {
    TimeWindow::exact(secs(s))
}

fn ask<'a>(owner: &'a str, claim: Claim, waiter: Option<&'a WaiterId>) -> SharedAcquire<'a> {
    SharedAcquire {
        owner,
        presented: None,
        ttl: 30,
        claim,
        waiter,
    }
}

const PERMIT: Claim = Claim::Permit { limit: 2 };

/// `owner` granted `claim` over `doc` at `s` seconds, and its holder token.
fn grant(
    doc: Option<&SharedDocument>,
    s: i64,
    owner: &str,
    claim: Claim,
) -> (SharedDocument, String) {
    match shared_rules::acquire(doc, at(s), &ask(owner, claim, None)) {
        Ok(Acquired::Granted { doc: next, .. }) => {
            let token = token_written(&next, doc).unwrap().expose().to_owned();
            (next, token)
        }
        other => panic!("{owner} was not granted: {other:?}"),
    }
}

fn release(doc: &SharedDocument, s: i64, token: &str) -> SharedDocument {
    match shared_rules::release(Some(doc), at(s), token).unwrap() {
        Verdict::Write(next) => next,
        Verdict::Leave => panic!("nothing released"),
    }
}

fn renew(doc: &SharedDocument, s: i64, token: &str) -> SharedDocument {
    shared_rules::renew(Some(doc), at(s), token, 60).unwrap()
}

/// A writer that has to wait behind `doc`'s holders, recorded as `id`.
fn queue(doc: &SharedDocument, s: i64, id: &WaiterId) -> SharedDocument {
    match shared_rules::acquire(Some(doc), at(s), &ask("writer", Claim::Exclusive, Some(id))) {
        Ok(Acquired::Queued { doc, .. }) => doc,
        other => panic!("the writer was not queued: {other:?}"),
    }
}

#[test]
fn a_new_listener_is_sent_the_state_and_one_resuming_at_the_current_index_nothing() {
    let (doc, _) = grant(None, 0, "w1", PERMIT);
    assert_eq!(snapshot(Some(&doc), secs(1), None), Some(EventKind::State));
    assert_eq!(snapshot(None, secs(1), None), Some(EventKind::State));
    assert_eq!(snapshot(Some(&doc), secs(1), Some(doc.revision)), None);
    assert_eq!(snapshot(None, secs(1), Some(0)), None);
    assert_eq!(
        snapshot(Some(&doc), secs(1), Some(doc.revision + 1)),
        Some(EventKind::State),
        "another index: the state now"
    );
}

#[test]
fn a_listener_resuming_after_a_lease_ran_out_is_sent_the_state_again() {
    let (doc, _) = grant(None, 0, "w1", PERMIT);
    let end = doc.holders[0].expires_at();
    assert_eq!(
        snapshot(Some(&doc), end, Some(doc.revision)),
        Some(EventKind::State)
    );
    let (rw, _) = grant(None, 0, "r", Claim::Shared);
    let queued = queue(&rw, 1, &WaiterId::generate());
    let lapsed = queued.waiting[0].expires_at();
    assert!(lapsed < queued.holders[0].expires_at());
    assert_eq!(
        snapshot(Some(&queued), lapsed, Some(queued.revision)),
        Some(EventKind::State),
        "a waiting entry that lapsed"
    );
}

#[test]
fn two_holders_on_a_semaphore_are_acquired_acquired_released_released() {
    let (one, t1) = grant(None, 0, "w1", PERMIT);
    let (two, t2) = grant(Some(&one), 1, "w2", PERMIT);
    let first_gone = release(&two, 2, &t1);
    let both_gone = release(&first_gone, 3, &t2);
    assert_eq!(change(None, Some(&one)), EventKind::Acquired);
    assert_eq!(change(Some(&one), Some(&two)), EventKind::Acquired);
    assert_eq!(change(Some(&two), Some(&first_gone)), EventKind::Released);
    assert_eq!(
        change(Some(&first_gone), Some(&both_gone)),
        EventKind::Released
    );
}

#[test]
fn a_holder_restarting_its_lease_is_renewed_and_the_others_are_untouched() {
    let (one, t1) = grant(None, 0, "w1", PERMIT);
    let (two, _) = grant(Some(&one), 1, "w2", PERMIT);
    let renewed = renew(&two, 5, &t1);
    assert_eq!(change(Some(&two), Some(&renewed)), EventKind::Renewed);
    // A refresh by acquire with the holder token is a renew too.
    let refreshed = match shared_rules::acquire(
        Some(&renewed),
        at(6),
        &SharedAcquire {
            presented: Some(&t1),
            ttl: 90,
            ..ask("w1", PERMIT, None)
        },
    ) {
        Ok(Acquired::Granted { doc, .. }) => doc,
        other => panic!("{other:?}"),
    };
    assert_eq!(change(Some(&renewed), Some(&refreshed)), EventKind::Renewed);
}

#[test]
fn a_break_is_broken_and_a_grant_after_one_is_acquired() {
    let (one, _) = grant(None, 0, "w1", PERMIT);
    let (two, _) = grant(Some(&one), 1, "w2", PERMIT);
    let broken = shared_rules::break_all(Some(&two), at(2))
        .unwrap()
        .unwrap()
        .doc;
    assert_eq!(change(Some(&two), Some(&broken)), EventKind::Broken);
    let (again, _) = grant(Some(&broken), 3, "w3", PERMIT);
    assert_eq!(change(Some(&broken), Some(&again)), EventKind::Acquired);
    // Folded: a break, then a grant, between two looks.
    assert_eq!(change(Some(&two), Some(&again)), EventKind::Acquired);
}

#[test]
fn a_writers_waiting_entry_added_renewed_or_withdrawn_is_waiting_and_its_grant_acquired() {
    let (read, reader) = grant(None, 0, "r", Claim::Shared);
    let id = WaiterId::generate();
    let queued = queue(&read, 1, &id);
    assert_eq!(change(Some(&read), Some(&queued)), EventKind::Waiting);
    // Its waiting acquire renews the entry past half its lease.
    let again = queue(&queued, 1 + WAITING_LEASE_SECS as i64 - 1, &id);
    assert_ne!(again, queued, "the entry was renewed");
    assert_eq!(change(Some(&queued), Some(&again)), EventKind::Waiting);
    let withdrawn = match shared_rules::withdraw(Some(&again), at(5), &id) {
        Verdict::Write(doc) => doc,
        Verdict::Leave => panic!("nothing withdrawn"),
    };
    assert_eq!(change(Some(&again), Some(&withdrawn)), EventKind::Waiting);
    // The reader leaves: released; the writer's grant, which removes its entry: acquired.
    let free = release(&again, 2, &reader);
    assert_eq!(change(Some(&again), Some(&free)), EventKind::Released);
    let writer = match shared_rules::acquire(
        Some(&free),
        at(3),
        &ask("writer", Claim::Exclusive, Some(&id)),
    ) {
        Ok(Acquired::Granted { doc, .. }) => doc,
        other => panic!("{other:?}"),
    };
    assert!(writer.waiting.is_empty());
    assert_eq!(change(Some(&free), Some(&writer)), EventKind::Acquired);
}

#[test]
fn changes_folded_between_two_looks_are_named_by_the_first_in_order() {
    let (one, t1) = grant(None, 0, "w1", PERMIT);
    // A release and a grant: acquired.
    let (swapped, t2) = grant(Some(&release(&one, 1, &t1)), 2, "w2", PERMIT);
    assert_eq!(change(Some(&one), Some(&swapped)), EventKind::Acquired);
    // A grant and its release, seen from nothing: released (the fencing token grew, but by a
    // grant that was given back, not by a break).
    let gone = release(&swapped, 3, &t2);
    assert_eq!(change(None, Some(&gone)), EventKind::Released);
    // A renew and a waiting writer's entry: renewed.
    let (read, reader) = grant(None, 0, "r", Claim::Shared);
    let both = queue(&renew(&read, 1, &reader), 2, &WaiterId::generate());
    assert_eq!(change(Some(&read), Some(&both)), EventKind::Renewed);
}

#[test]
fn a_holder_dropped_after_its_lease_ran_out_is_expired_and_a_write_of_nothing_known_is_state() {
    let (one, _) = grant(None, 0, "w1", PERMIT);
    let (two, _) = grant(Some(&one), 10, "w2", PERMIT);
    let mut dropped = two.clone();
    dropped.holders.remove(0);
    let dropped = dropped.written_over(Some(&two));
    assert_eq!(change(Some(&two), Some(&dropped)), EventKind::Expired);
    let same = two.clone().written_over(Some(&two));
    assert_eq!(change(Some(&two), Some(&same)), EventKind::State);
    assert_eq!(
        change(Some(&two), None),
        EventKind::State,
        "deleted by hand"
    );
}

#[test]
fn a_lease_that_runs_out_is_expired_by_time_once_per_end_and_not_before() {
    let (one, _) = grant(None, 0, "w1", PERMIT);
    let (two, _) = grant(Some(&one), 10, "w2", PERMIT);
    let (first_end, second_end) = (secs(30), secs(40));
    assert_eq!(next_due(Some(&two), secs(1)), Some(first_end));
    let just_before = first_end - Duration::microseconds(1);
    assert_eq!(by_time(Some(&two), secs(1), just_before), None);
    assert_eq!(
        by_time(Some(&two), secs(1), first_end),
        Some(EventKind::Expired)
    );
    // Told at the first end: the next is the second.
    assert_eq!(by_time(Some(&two), first_end, secs(35)), None);
    assert_eq!(next_due(Some(&two), first_end), Some(second_end));
    assert_eq!(
        by_time(Some(&two), first_end, second_end),
        Some(EventKind::Expired)
    );
    assert_eq!(next_due(Some(&two), second_end), None);
    assert_eq!(by_time(Some(&two), second_end, secs(3600)), None);
    // Both ends passed before one look: one event.
    assert_eq!(
        by_time(Some(&two), secs(1), secs(50)),
        Some(EventKind::Expired)
    );
    assert_eq!(by_time(None, secs(1), secs(50)), None);
}

#[test]
fn a_waiting_entry_that_lapses_is_waiting_by_time() {
    let (read, _) = grant(None, 0, "r", Claim::Shared);
    let queued = queue(&read, 1, &WaiterId::generate());
    let lapse = queued.waiting[0].expires_at();
    assert_eq!(next_due(Some(&queued), secs(1)), Some(lapse));
    assert_eq!(
        by_time(Some(&queued), secs(1), lapse),
        Some(EventKind::Waiting)
    );
    assert_eq!(by_time(Some(&queued), lapse, secs(29)), None);
    assert_eq!(
        by_time(Some(&queued), lapse, secs(30)),
        Some(EventKind::Expired),
        "then the reader's lease"
    );
}

#[test]
fn a_write_read_back_as_stored_is_the_same_write() {
    let precise =
        parse_seed_time("2026-11-26T00:00:00.123456+00:00").unwrap() + Duration::nanoseconds(789);
    let written =
        match shared_rules::acquire(None, TimeWindow::exact(precise), &ask("w", PERMIT, None)) {
            Ok(Acquired::Granted { doc, .. }) => doc,
            other => panic!("{other:?}"),
        };
    let read = SharedDocument::from_bytes(&written.to_bytes()).unwrap();
    assert_ne!(written, read, "the stored form drops the nanoseconds");
    assert!(crate::lock::events::same_write(Some(&written), Some(&read)));
    let again = written.clone().written_over(Some(&written));
    assert!(!crate::lock::events::same_write(
        Some(&written),
        Some(&again)
    ));
    assert!(!crate::lock::events::same_write(None, Some(&written)));
}

#[test]
fn a_document_read_back_and_the_next_written_from_memory_compare_as_stored() {
    // The watcher may have read the reader's grant from the store (times to the microsecond)
    // while the writer's queueing was decided from this process's memory of it (to the
    // nanosecond): the reader's lease is unchanged all the same.
    let precise =
        parse_seed_time("2026-11-26T00:00:00.123456+00:00").unwrap() + Duration::nanoseconds(789);
    let written = match shared_rules::acquire(
        None,
        TimeWindow::exact(precise),
        &ask("r", Claim::Shared, None),
    ) {
        Ok(Acquired::Granted { doc, .. }) => doc,
        other => panic!("{other:?}"),
    };
    let read = SharedDocument::from_bytes(&written.to_bytes()).unwrap();
    let id = WaiterId::generate();
    let queued = queue(&written, 1, &id);
    assert_eq!(change(Some(&read), Some(&queued)), EventKind::Waiting);
    let stored = SharedDocument::from_bytes(&queued.to_bytes()).unwrap();
    let again = queue(&queued, 1 + WAITING_LEASE_SECS as i64 - 1, &id);
    assert_eq!(change(Some(&stored), Some(&again)), EventKind::Waiting);
    let same = queued.clone().written_over(Some(&queued));
    assert_eq!(change(Some(&stored), Some(&same)), EventKind::State);
}
