//! Writes whose answers are lost, parked, refused or never come: read-backs, orphaned grants,
//! outages and unreadable documents.

use super::*;

#[tokio::test]
async fn a_late_release_never_frees_the_lease_its_holder_renewed_meanwhile() {
    let f = fixture();
    let a = f
        .engine
        .acquire(None, "k", owner("alice", 60))
        .await
        .unwrap();
    let token = a.holder_token().unwrap();
    // The release's request is delayed in the network: the holder is told 503.
    f.store.set(Some(Fault::ParkNextWrite));
    assert!(matches!(
        f.engine.release(None, "k", token).await,
        Err(LockError::StoreUnavailable(_))
    ));
    // The holder decides to keep the lock after all, within the same second of store time.
    f.engine.renew(None, "k", token, Some(60)).await.unwrap();
    // The release arrives late, conditioned on the version it was sent against.
    assert!(
        !f.store.land_parked().await,
        "the renew's body differs, so the late release's version no longer matches"
    );
    let status = f.engine.status(None, "k", None).await.unwrap();
    assert!(status.locked, "the renewed lease still holds");
    assert_eq!(status.owner.as_deref(), Some("alice"));
}

#[tokio::test(start_paused = true)]
async fn an_orphaned_grant_that_lands_late_is_freed_and_never_frees_a_later_holder() {
    let f = fixture();
    // alice's grant is delayed in the network: she is told 503 and never learns its token.
    f.store.set(Some(Fault::ParkNextWrite));
    assert!(matches!(
        f.engine.acquire(None, "k", owner("alice", 30)).await,
        Err(LockError::StoreUnavailable(_))
    ));
    assert!(f.store.land_parked().await, "the grant lands late");
    // alice tries again as the 503 told her to. She cannot prove she holds the orphaned grant,
    // so she is refused rather than handed a lease its watcher is about to free.
    assert!(matches!(
        f.engine.acquire(None, "k", owner("alice", 30)).await,
        Err(LockError::Held { .. })
    ));
    // The watcher frees the orphan; then alice gets the lock as a new holder.
    let granted = f
        .engine
        .acquire(None, "k", waiting("alice", 30, 20.0))
        .await
        .unwrap();
    assert_eq!(granted.fencing_token, 2);
    // Long past the watch: the lock is still hers.
    tokio::time::sleep(StdDuration::from_secs(120)).await;
    let stored = LockDocument::from_bytes(&f.stored("k").await.unwrap()).unwrap();
    assert_eq!(stored.token, granted.token);
    assert_eq!(stored.owner.as_deref(), Some("alice"));
}

#[tokio::test(start_paused = true)]
async fn a_grant_that_landed_but_was_answered_with_a_refusal_is_watched_and_freed() {
    let f = fixture();
    f.store.set(Some(Fault::ApplyThenRefuse));
    assert!(matches!(
        f.engine.acquire(None, "k", owner("alice", 30)).await,
        Err(LockError::StoreRefused(_))
    ));
    let landed = LockDocument::from_bytes(&f.stored("k").await.unwrap()).unwrap();
    assert_eq!(landed.owner.as_deref(), Some("alice"), "the write landed");
    tokio::time::sleep(StdDuration::from_secs(10)).await;
    let after = LockDocument::from_bytes(&f.stored("k").await.unwrap()).unwrap();
    assert_eq!(
        after.owner, None,
        "nobody knows its token: it must not stay held"
    );
    assert_eq!(after.token, landed.token);
}

#[tokio::test]
async fn an_unreadable_document_is_never_overwritten() {
    let f = fixture();
    for (key, body) in [
        ("junk", "not json"),
        ("shape", r#"{"owner": 3}"#),
        ("arr", "[]"),
    ] {
        f.put_raw(key, body).await;
        assert!(matches!(
            f.engine.acquire(None, key, owner("alice", 30)).await,
            Err(LockError::Unreadable(_))
        ));
        assert!(matches!(
            f.engine.release(None, key, "t").await,
            Err(LockError::Unreadable(_))
        ));
        assert_eq!(f.stored(key).await.unwrap(), Bytes::from(body.to_owned()));
    }
}

#[tokio::test]
async fn a_lost_acquire_response_is_resolved_by_reading_back() {
    let f = fixture();
    f.store.set(Some(Fault::LoseNextWriteResponse));
    let v = f
        .engine
        .acquire(None, "k", owner("alice", 30))
        .await
        .unwrap();
    let stored = LockDocument::from_bytes(&f.stored("k").await.unwrap()).unwrap();
    assert_eq!(
        stored.token, v.token,
        "the caller is told it holds the lock it holds"
    );
}

#[tokio::test]
async fn a_retry_that_fails_its_precondition_on_our_own_write_is_a_success() {
    let f = fixture();
    f.store.set(Some(Fault::RetryIntoOwnWrite));
    let a = f
        .engine
        .acquire(None, "k", owner("alice", 30))
        .await
        .unwrap();
    assert_eq!(a.fencing_token, 1);
    f.store.set(Some(Fault::RetryIntoOwnWrite));
    let r = f
        .engine
        .renew(None, "k", a.holder_token().unwrap(), Some(40))
        .await
        .unwrap();
    assert_eq!(r.expire, 40);
    f.store.set(Some(Fault::LoseNextWriteResponse));
    let released = f
        .engine
        .release(None, "k", a.holder_token().unwrap())
        .await
        .unwrap();
    assert_eq!(released.owner, None);
    let stored = LockDocument::from_bytes(&f.stored("k").await.unwrap()).unwrap();
    assert_eq!(stored.owner, None);
}

#[tokio::test]
async fn a_store_outage_grants_nothing() {
    let f = fixture();
    f.store.set(Some(Fault::Down));
    assert!(matches!(
        f.engine.acquire(None, "k", owner("alice", 30)).await,
        Err(LockError::StoreUnavailable(_))
    ));
    f.store.set(None);
    assert_eq!(f.stored("k").await, None);
}

/// A clock that knows the store's time only within a window of `width`, as the S3 clock does
/// (its `Date` header has whole seconds).
#[derive(Debug)]
struct WideClock(Arc<ManualClock>, Duration);

impl Clock for WideClock {
    fn now(&self) -> TimeWindow {
        let t = self.0.now().earliest;
        TimeWindow::between(t, t + self.1)
    }
}

#[tokio::test]
async fn a_grant_whose_lease_is_used_up_by_a_slow_write_is_refreshed_for_its_own_caller() {
    let f = fixture();
    let engine = Engine::new(
        f.store.clone(),
        Arc::new(WideClock(f.clock.clone(), Duration::milliseconds(1500))),
        config(),
    );
    // The write takes as long as the whole 1 s lease: once it has landed the engine decides
    // again, and must refresh the grant it has just made (whose token only it knows), not
    // refuse its own caller as if someone else held the lock.
    *f.store.slow_next_write.lock().unwrap() = Some((f.clock.clone(), Duration::seconds(1)));
    let v = engine.acquire(None, "k", owner("alice", 1)).await.unwrap();
    assert_eq!(v.owner.as_deref(), Some("alice"));
    let stored = LockDocument::from_bytes(&f.stored("k").await.unwrap()).unwrap();
    assert_eq!(stored.token, v.token, "the caller holds the stored lease");
    assert_eq!(stored.fencing_token, 1, "one grant, refreshed");
    assert_eq!(stored.revision, 2);
}

#[tokio::test(start_paused = true)]
async fn the_lost_refresh_of_a_grant_used_up_by_a_slow_write_is_watched_and_freed() {
    let f = fixture();
    let engine = Engine::new(
        f.store.clone(),
        Arc::new(WideClock(f.clock.clone(), Duration::milliseconds(1500))),
        config(),
    );
    // The grant's write takes its whole 60 s lease, so the engine refreshes it for its caller;
    // that refresh is delayed in the network and the caller is told 503. It never learns the
    // token the refresh carries.
    *f.store.slow_next_write.lock().unwrap() = Some((f.clock.clone(), Duration::seconds(60)));
    *f.store.fault_skips_writes.lock().unwrap() = 1;
    f.store.set(Some(Fault::ParkNextWrite));
    assert!(matches!(
        engine.acquire(None, "k", owner("alice", 60)).await,
        Err(LockError::StoreUnavailable(_))
    ));
    assert!(f.store.land_parked().await, "the refresh lands late");
    let landed = LockDocument::from_bytes(&f.stored("k").await.unwrap()).unwrap();
    assert_eq!(landed.owner.as_deref(), Some("alice"));
    assert!(!landed.is_expired(f.clock.now().earliest), "a fresh lease");
    // Nobody knows its token: it must come free well within the lease, which the store's clock
    // (moved only by hand here) never reaches.
    tokio::time::sleep(StdDuration::from_secs(10)).await;
    let after = LockDocument::from_bytes(&f.stored("k").await.unwrap()).unwrap();
    assert_eq!(after.owner, None, "the orphaned refresh was released");
    assert_eq!(after.token, landed.token);
}

#[tokio::test]
async fn a_release_that_landed_succeeds_though_a_waiter_took_the_lock_before_the_read_back() {
    let f = Arc::new(fixture());
    let a = f.alice_holds_k().await;
    let token = a.holder_token().unwrap().to_owned();
    // The release lands; its answer is lost, and the SDK's retry of it fails its precondition
    // on our own write, but only after bob, on another replica, has taken the freed lock.
    f.store.set(Some(Fault::RetryIntoOwnWrite));
    let (applied, open) = f.store.hold_next_write_answer();
    let release = {
        let f = f.clone();
        tokio::spawn(async move { f.engine.release(None, "k", &token).await })
    };
    applied.notified().await;
    let bob = f
        .other_replica()
        .acquire(None, "k", owner("bob", 60))
        .await
        .unwrap();
    open.notify_one();
    let released = release
        .await
        .unwrap()
        .expect("the release landed: it is a success, not not-holder");
    assert_eq!(released.owner, None);
    assert!(!released.locked);
    let stored = LockDocument::from_bytes(&f.stored("k").await.unwrap()).unwrap();
    assert_eq!(stored.owner.as_deref(), Some("bob"), "bob's grant stands");
    assert_eq!(stored.token, bob.token);
}

#[tokio::test]
async fn a_release_whose_landing_cannot_be_proven_says_so_rather_than_not_holder() {
    let f = Arc::new(fixture());
    let a = f.alice_holds_k().await;
    let token = a.holder_token().unwrap().to_owned();
    f.store.set(Some(Fault::RetryIntoOwnWrite));
    let (applied, open) = f.store.hold_next_write_answer();
    let release = {
        let f = f.clone();
        tokio::spawn(async move { f.engine.release(None, "k", &token).await })
    };
    applied.notified().await;
    // More writes follow the release than a document remembers.
    let bob_replica = f.other_replica();
    let bob = bob_replica
        .acquire(None, "k", owner("bob", 60))
        .await
        .unwrap();
    for _ in 0..document::WRITE_HISTORY {
        bob_replica
            .renew(None, "k", bob.holder_token().unwrap(), Some(60))
            .await
            .unwrap();
    }
    open.notify_one();
    assert!(matches!(
        release.await.unwrap(),
        Err(LockError::Unconfirmed)
    ));
    let stored = LockDocument::from_bytes(&f.stored("k").await.unwrap()).unwrap();
    assert_eq!(stored.owner.as_deref(), Some("bob"));
}

#[tokio::test]
async fn a_release_beaten_by_a_takeover_of_its_expired_lease_is_still_not_holder() {
    let f = fixture();
    let a = f
        .engine
        .acquire(None, "k", owner("alice", 10))
        .await
        .unwrap();
    // alice's lease runs out and bob takes the lock over through another replica; alice's
    // replica still remembers her lease and writes her release against it, and loses.
    f.clock.advance(Duration::seconds(11));
    f.other_replica()
        .acquire(None, "k", owner("bob", 60))
        .await
        .unwrap();
    assert!(matches!(
        f.engine.release(None, "k", a.holder_token().unwrap()).await,
        Err(LockError::NotHolder(_))
    ));
}

#[tokio::test]
async fn a_watch_of_an_unreadable_lock_answers_unreadable_and_never_free() {
    let f = fixture();
    f.put_raw("junk", "not json").await;
    // Any index: the watcher's own read of the lock found no lock document, which is not "free".
    for index in [0, 1] {
        let watched = f
            .engine
            .watch(None, "junk", None, Some(index), Some(5.0))
            .await;
        assert!(
            matches!(watched, Err(LockError::Unreadable(_))),
            "index {index}: {watched:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_watched_lock_whose_document_turns_unreadable_is_answered_unreadable() {
    let f = fixture();
    let a = f.alice_holds_k().await;
    let watching = f.engine.watch(None, "k", None, Some(a.index), Some(30.0));
    let spoil = async {
        tokio::time::sleep(StdDuration::from_millis(100)).await;
        let current = f.store.inner.get(BUCKET, "locks/k").await.unwrap().unwrap();
        f.store
            .inner
            .put_if_version(BUCKET, "locks/k", Bytes::from("garbage"), &current.version)
            .await
            .unwrap();
        // The watcher reads now rather than at the lease's end.
        f.engine.peer_hint(BUCKET, "locks/k");
    };
    let (watched, ()) = tokio::join!(watching, spoil);
    assert!(
        matches!(watched, Err(LockError::Unreadable(_))),
        "{watched:?}"
    );
}
// Review of the write history (review-decide).

/// A lock written unconditionally by the old module, then taken through s3lock again: its
/// revisions start over, so a revision number alone no longer says which write a history
/// entry is.
async fn the_old_module_writes_over(f: &Fixture, key: &str, owner: &str) {
    f.store
        .inner
        .delete(BUCKET, &format!("locks/{key}"))
        .await
        .unwrap();
    f.put_raw(
        key,
        &format!(
            r#"{{"expire": 1, "lock_time": "2020-01-01T00:00:00+00:00", "release_time": null, "owner": "{owner}"}}"#
        ),
    )
    .await;
}

#[tokio::test]
async fn a_release_that_landed_is_not_refused_after_the_old_module_started_the_revisions_over() {
    let f = Arc::new(fixture());
    let a = f.alice_holds_k().await;
    let token = a.holder_token().unwrap().to_owned();
    // The release lands (revision 2); its answer is held back and the SDK's retry fails its
    // precondition on our own write.
    f.store.set(Some(Fault::RetryIntoOwnWrite));
    let (applied, open) = f.store.hold_next_write_answer();
    let release = {
        let f = f.clone();
        tokio::spawn(async move { f.engine.release(None, "k", &token).await })
    };
    applied.notified().await;
    // The old module writes the freed lock unconditionally (no revision, no history), its lease
    // runs out, and bob takes the lock through s3lock and renews once: revision 2 again, with a
    // history of writes that never knew ours.
    the_old_module_writes_over(&f, "k", "legacy").await;
    let bob_replica = f.other_replica();
    let bob = bob_replica
        .acquire(None, "k", owner("bob", 60))
        .await
        .unwrap();
    bob_replica
        .renew(None, "k", bob.holder_token().unwrap(), Some(60))
        .await
        .unwrap();
    let stored = LockDocument::from_bytes(&f.stored("k").await.unwrap()).unwrap();
    assert_eq!(stored.revision, 2, "the revisions started over");
    open.notify_one();
    let answer = release.await.unwrap();
    assert!(
        matches!(answer, Err(LockError::Unconfirmed) | Ok(_)),
        "the release landed: it must not be answered not-holder, got {answer:?}"
    );
}

#[tokio::test]
async fn a_break_whose_landing_cannot_be_proven_does_not_break_the_next_holder() {
    let f = Arc::new(fixture());
    f.alice_holds_k().await;
    // The admin's break lands; its answer is held back and the SDK's retry fails its
    // precondition on our own write.
    f.store.set(Some(Fault::RetryIntoOwnWrite));
    let (applied, open) = f.store.hold_next_write_answer();
    let broken = {
        let f = f.clone();
        tokio::spawn(async move { f.engine.break_lock(None, "k", "admin").await })
    };
    applied.notified().await;
    // bob takes the freed lock and renews it more often than a document remembers.
    let bob_replica = f.other_replica();
    let bob = bob_replica
        .acquire(None, "k", owner("bob", 60))
        .await
        .unwrap();
    for _ in 0..document::WRITE_HISTORY {
        bob_replica
            .renew(None, "k", bob.holder_token().unwrap(), Some(60))
            .await
            .unwrap();
    }
    open.notify_one();
    let answer = broken.await.unwrap();
    let stored = LockDocument::from_bytes(&f.stored("k").await.unwrap()).unwrap();
    assert_eq!(
        stored.owner.as_deref(),
        Some("bob"),
        "nobody asked to break bob's lease (the break answered {answer:?})"
    );
    assert_eq!(stored.token, bob.token);
    assert!(matches!(answer, Err(LockError::Unconfirmed)), "{answer:?}");
}

#[tokio::test]
async fn a_break_that_landed_does_not_break_the_next_holder_after_the_revisions_started_over() {
    let f = Arc::new(fixture());
    f.alice_holds_k().await;
    f.store.set(Some(Fault::RetryIntoOwnWrite));
    let (applied, open) = f.store.hold_next_write_answer();
    let broken = {
        let f = f.clone();
        tokio::spawn(async move { f.engine.break_lock(None, "k", "admin").await })
    };
    applied.notified().await;
    // The lock object is written over by the old module (or deleted and created again): bob
    // then takes it through s3lock at revisions that repeat those of alice's lock.
    the_old_module_writes_over(&f, "k", "legacy").await;
    let bob_replica = f.other_replica();
    let bob = bob_replica
        .acquire(None, "k", owner("bob", 60))
        .await
        .unwrap();
    bob_replica
        .renew(None, "k", bob.holder_token().unwrap(), Some(60))
        .await
        .unwrap();
    open.notify_one();
    let answer = broken.await.unwrap();
    let stored = LockDocument::from_bytes(&f.stored("k").await.unwrap()).unwrap();
    assert_eq!(
        stored.owner.as_deref(),
        Some("bob"),
        "the break landed on alice's lease; bob's must stand (the break answered {answer:?})"
    );
    assert_eq!(stored.token, bob.token);
}

#[tokio::test]
async fn a_renew_that_landed_and_was_broken_before_the_read_back_is_not_answered_as_held() {
    let f = Arc::new(fixture());
    let a = f.alice_holds_k().await;
    let token = a.holder_token().unwrap().to_owned();
    f.store.set(Some(Fault::RetryIntoOwnWrite));
    let (applied, open) = f.store.hold_next_write_answer();
    let renew = {
        let f = f.clone();
        tokio::spawn(async move { f.engine.renew(None, "k", &token, Some(600)).await })
    };
    applied.notified().await;
    // An admin breaks the renewed lease and bob takes the lock, all before alice's read-back.
    let other = f.other_replica();
    other.break_lock(None, "k", "admin").await.unwrap();
    let bob = other.acquire(None, "k", owner("bob", 600)).await.unwrap();
    open.notify_one();
    let answer = renew.await.unwrap();
    // The engine has read bob's grant: telling alice she holds the lock for ten more minutes
    // sends her back to work beside bob, on a lease it knows is gone.
    match &answer {
        Ok(view) => assert!(
            !view.locked && view.ttl_remaining_ms == 0,
            "alice is told she holds the lock bob holds (fencing {} vs {}): {view:?}",
            view.fencing_token,
            bob.fencing_token
        ),
        Err(e) => assert!(matches!(e, LockError::Unconfirmed), "{e:?}"),
    }
}

#[tokio::test]
async fn a_renew_that_landed_and_was_renewed_again_by_its_holder_succeeds() {
    let f = Arc::new(fixture());
    let a = f.alice_holds_k().await;
    let token = a.holder_token().unwrap().to_owned();
    f.store.set(Some(Fault::RetryIntoOwnWrite));
    let (applied, open) = f.store.hold_next_write_answer();
    let renew = {
        let f = f.clone();
        let token = token.clone();
        tokio::spawn(async move { f.engine.renew(None, "k", &token, Some(600)).await })
    };
    applied.notified().await;
    // The holder's next renew, through another replica, lands over the first.
    f.other_replica()
        .renew(None, "k", &token, Some(600))
        .await
        .unwrap();
    open.notify_one();
    let view = renew
        .await
        .unwrap()
        .expect("landed, and the lease is still alice's");
    assert!(view.locked);
}

#[tokio::test]
async fn a_read_back_never_puts_the_watch_state_back_to_an_older_one() {
    // The same race as `a_watch_never_answers_with_a_state_older_than_the_one_it_was_given`
    // (waiting.rs), now through a read-back: what it read was published as if this process had
    // just written it, so a read served before a newer local write, and answered after it, put
    // the lock back to that older state for every watch client.
    let f = Arc::new(fixture());
    // A watcher that reads only when it starts, so that the reads below are the ones gated.
    let quiet = EngineConfig {
        first_poll: StdDuration::from_secs(3600),
        max_poll: StdDuration::from_secs(3600),
        ..config()
    };
    let engine = Arc::new(Engine::new(f.store.clone(), f.clock.clone(), quiet));
    let a = engine
        .acquire(None, "k", owner("alice", 600))
        .await
        .unwrap();
    let _kept = engine.watchers.follow(BUCKET, "locks/k");
    tokio::time::sleep(StdDuration::from_millis(20)).await; // its first read is done
                                                            // alice's release lands; its answer is held back, then the SDK's retry fails on it.
    f.store.set(Some(Fault::RetryIntoOwnWrite));
    let (applied, open) = f.store.hold_next_write_answer();
    let release = {
        let (engine, token) = (engine.clone(), a.holder_token().unwrap().to_owned());
        tokio::spawn(async move { engine.release(None, "k", &token).await })
    };
    applied.notified().await;
    // bob takes the lock and frees it again, elsewhere.
    let other = f.other_replica();
    let bob = other.acquire(None, "k", owner("bob", 60)).await.unwrap();
    other
        .release(None, "k", bob.holder_token().unwrap())
        .await
        .unwrap();
    // The release's read-back is served now (the lock free, bob's release naming alice's), but
    // its answer is slow to come back.
    let (served, answer) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    *f.store.slow_next_read.lock().unwrap() = Some((served.clone(), answer.clone()));
    open.notify_one();
    served.notified().await;
    // Meanwhile carol takes the lock, here: this process publishes her grant.
    let carol = engine
        .acquire(None, "k", owner("carol", 600))
        .await
        .unwrap();
    let client = {
        let (engine, index) = (engine.clone(), carol.index);
        tokio::spawn(async move { engine.watch(None, "k", None, Some(index), Some(2.0)).await })
    };
    tokio::time::sleep(StdDuration::from_millis(20)).await; // the client is watching
    answer.notify_one(); // the read-back's answer arrives
    release.await.unwrap().expect("the release landed");
    let v = client.await.unwrap().unwrap();
    assert!(
        v.index >= carol.index,
        "watching from index {} answered with index {} (owner {:?}, locked {}) while carol holds it",
        carol.index,
        v.index,
        v.owner,
        v.locked
    );
}

#[tokio::test]
async fn a_break_from_a_cache_far_behind_the_lock_still_breaks_it() {
    // The admin's replica last saw the lock long ago; its holder has renewed it elsewhere more
    // often than a document remembers. The break's write from that memory fails its
    // precondition, and the read-back cannot tell whether it landed: that doubt must not stop
    // the break the admin asked for.
    let f = fixture();
    let a = f.alice_holds_k().await;
    let elsewhere = f.other_replica();
    for _ in 0..=document::WRITE_HISTORY {
        elsewhere
            .renew(None, "k", a.holder_token().unwrap(), Some(600))
            .await
            .unwrap();
    }
    let broken = f.engine.break_lock(None, "k", "admin").await;
    assert!(
        matches!(broken, Ok(ref v) if v.owner.is_none()),
        "{broken:?}"
    );
    let stored = LockDocument::from_bytes(&f.stored("k").await.unwrap()).unwrap();
    assert_eq!(stored.owner, None);
    assert_eq!(stored.token, None);
}
