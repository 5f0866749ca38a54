//! The per-process cache of each lock's last known state: what it saves and why it never misleads.

use super::*;

/// The round trips (reads, writes) one engine call cost.
async fn cost<T>(f: &Fixture, call: impl std::future::Future<Output = T>) -> (T, (usize, usize)) {
    let (g0, w0) = f.round_trips();
    let out = call.await;
    let (g1, w1) = f.round_trips();
    (out, (g1 - g0, w1 - w0))
}

#[tokio::test]
async fn warm_acquire_renew_and_release_each_cost_one_conditional_write() {
    let f = fixture();
    let (a, c) = cost(&f, f.engine.acquire(None, "k", owner("alice", 30))).await;
    let a = a.unwrap();
    assert_eq!(c, (1, 1), "a lock never seen costs a read and a write");
    let token = a.holder_token().unwrap();
    let (r, c) = cost(&f, f.engine.renew(None, "k", token, Some(40))).await;
    assert_eq!(r.unwrap().expire, 40);
    assert_eq!(c, (0, 1), "renew");
    let (r, c) = cost(&f, f.engine.release(None, "k", token)).await;
    assert_eq!(r.unwrap().owner, None);
    assert_eq!(c, (0, 1), "release");
    let (b, c) = cost(&f, f.engine.acquire(None, "k", owner("bob", 30))).await;
    let b = b.unwrap();
    assert_eq!(b.fencing_token, 2);
    assert_eq!(c, (0, 1), "acquire of a lock this process released");
    let refresh = holding("bob", b.holder_token(), 30);
    let (again, c) = cost(&f, f.engine.acquire(None, "k", refresh)).await;
    assert_eq!(again.unwrap().fencing_token, 2);
    assert_eq!(c, (0, 1), "the holder's reentrant refresh");
}

#[tokio::test]
async fn with_the_cache_off_every_decision_reads_first() {
    let mut f = fixture();
    f.engine = Engine::new(f.store.clone(), f.clock.clone(), config()).with_cache_capacity(0);
    let a = f
        .engine
        .acquire(None, "k", owner("alice", 30))
        .await
        .unwrap();
    let (r, c) = cost(&f, f.engine.release(None, "k", a.holder_token().unwrap())).await;
    r.unwrap();
    assert_eq!(c, (1, 1));
    assert_eq!(f.engine.cached_locks(), 0);
}

#[tokio::test]
async fn a_stale_cache_never_refuses_an_acquire_of_a_free_lock() {
    let f = fixture();
    let a = f
        .engine
        .acquire(None, "k", owner("alice", 30))
        .await
        .unwrap();
    // alice releases through the other replica: this one still believes she holds the lock.
    f.other_replica()
        .release(None, "k", a.holder_token().unwrap())
        .await
        .unwrap();
    let (b, c) = cost(&f, f.engine.acquire(None, "k", owner("bob", 30))).await;
    assert_eq!(
        b.unwrap().fencing_token,
        2,
        "no false 409 from the stale cache"
    );
    assert_eq!(c, (1, 1), "the cached 'held' was confirmed with one read");
}

#[tokio::test]
async fn a_stale_cache_costs_one_failed_write_and_one_read_before_the_right_answer() {
    let f = fixture();
    let a = f
        .engine
        .acquire(None, "k", owner("alice", 30))
        .await
        .unwrap();
    f.engine
        .release(None, "k", a.holder_token().unwrap())
        .await
        .unwrap();
    // carol takes the lock through the other replica; this one still believes it is free.
    f.other_replica()
        .acquire(None, "k", owner("carol", 30))
        .await
        .unwrap();
    let (b, c) = cost(&f, f.engine.acquire(None, "k", owner("bob", 30))).await;
    assert!(
        matches!(b, Err(LockError::Held { ref owner, .. }) if owner == "carol"),
        "{b:?}"
    );
    // The refused write's read-back is also the fresh read the new decision is made from.
    assert_eq!(c, (1, 1));
    // Now the cache knows carol holds it; a second try confirms with a read and writes nothing.
    let (b, c) = cost(&f, f.engine.acquire(None, "k", owner("bob", 30))).await;
    assert!(matches!(b, Err(LockError::Held { .. })));
    assert_eq!(c, (1, 0));
}

#[tokio::test]
async fn a_stale_cache_never_refuses_the_holders_renew_or_release() {
    let f = fixture();
    let a = f
        .engine
        .acquire(None, "k", owner("alice", 30))
        .await
        .unwrap();
    // Through the other replica alice releases and carol takes the lock: this replica still
    // believes alice holds it with her token.
    let other = f.other_replica();
    other
        .release(None, "k", a.holder_token().unwrap())
        .await
        .unwrap();
    let carol = other.acquire(None, "k", owner("carol", 30)).await.unwrap();
    let carol_token = carol.holder_token().unwrap();
    let renewed = f
        .engine
        .renew(None, "k", carol_token, Some(50))
        .await
        .unwrap();
    assert_eq!(
        renewed.expire, 50,
        "no false not-holder from the stale cache"
    );
    f.engine.release(None, "k", carol_token).await.unwrap();
}

#[tokio::test]
async fn a_repeated_release_is_confirmed_with_a_read_not_answered_from_the_cache() {
    let f = fixture();
    let a = f
        .engine
        .acquire(None, "k", owner("alice", 30))
        .await
        .unwrap();
    let token = a.holder_token().unwrap();
    f.engine.release(None, "k", token).await.unwrap();
    // The lock passes to bob elsewhere; this replica still has alice's release cached.
    f.other_replica()
        .acquire(None, "k", owner("bob", 30))
        .await
        .unwrap();
    let (again, c) = cost(&f, f.engine.release(None, "k", token)).await;
    assert!(matches!(again, Err(LockError::NotHolder(_))), "{again:?}");
    assert_eq!(c, (1, 0));
}

#[tokio::test]
async fn a_lost_response_on_a_warm_write_is_still_resolved_by_reading_back() {
    let f = fixture();
    let a = f
        .engine
        .acquire(None, "k", owner("alice", 30))
        .await
        .unwrap();
    let token = a.holder_token().unwrap();
    f.store.set(Some(Fault::RetryIntoOwnWrite));
    let (r, c) = cost(&f, f.engine.renew(None, "k", token, Some(45))).await;
    assert_eq!(r.unwrap().expire, 45);
    assert_eq!(c, (1, 1), "one write, one read-back that found it ours");
    // The read-back's version was remembered: the next renew is one write again.
    let (r, c) = cost(&f, f.engine.renew(None, "k", token, Some(46))).await;
    assert_eq!(r.unwrap().expire, 46);
    assert_eq!(c, (0, 1));
    f.store.set(Some(Fault::Down));
    assert!(matches!(
        f.engine.release(None, "k", token).await,
        Err(LockError::StoreUnavailable(_))
    ));
    f.store.set(None);
    assert_eq!(
        f.engine.cached_locks(),
        0,
        "an unknown outcome is forgotten"
    );
    f.engine.release(None, "k", token).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_watch_clients_slow_read_of_a_held_lock_leaves_the_cache_alone() {
    // The watcher fills the cache only to hand a free lock to a waiter. Were it to remember
    // every read, an answer served before a newer state this process read (carol's refused try
    // after alice's renew elsewhere) and arriving after it would put the older state back, and
    // the next warm decision would pay a failed write and a read-back.
    let f = fixture();
    let a = f.alice_holds_k().await;
    let token = a.holder_token().unwrap();
    // A watch client keeps this replica's watcher polling (a blocked waiter would too).
    let _kept = f.engine.watchers.follow(BUCKET, "locks/k").unwrap();
    tokio::time::sleep(StdDuration::from_millis(10)).await;
    let (served, open) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    *f.store.slow_next_read.lock().unwrap() = Some((served.clone(), open.clone()));
    served.notified().await; // the watcher's poll is served: alice, version V1
                             // alice renews through the other replica (V2); carol's try here reads V2 and is refused.
    f.other_replica()
        .renew(None, "k", token, Some(300))
        .await
        .unwrap();
    assert!(matches!(
        f.engine.acquire(None, "k", owner("carol", 30)).await,
        Err(LockError::Held { .. })
    ));
    open.notify_one(); // the watcher's answer (V1) arrives: held, no waiter, not cached
    tokio::time::sleep(StdDuration::from_millis(1)).await;
    let (r, c) = cost(&f, f.engine.renew(None, "k", token, Some(400))).await;
    assert_eq!(r.unwrap().expire, 400);
    assert_eq!(
        c,
        (0, 1),
        "a warm renew after this replica read the newest state"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_watcher_read_that_found_the_lock_free_does_not_overwrite_a_newer_held_state() {
    // bob waits here; alice releases through another replica (no hint) and the watcher's next
    // poll finds the lock free, but its answer is slow. Meanwhile carol takes the lock through
    // the other replica and dave's try here reads that. The watcher's late "free" must not
    // replace dave's newer "held" in the cache: bob, woken, would write from it and fail.
    let f = Arc::new(fixture());
    let other = f.other_replica();
    let a = other.acquire(None, "k", owner("alice", 600)).await.unwrap();
    let bob = f.spawn_acquire(waiting("bob", 30, 30.0));
    // bob is queued and his watcher is between polls.
    tokio::time::sleep(StdDuration::from_secs(10)).await;
    other
        .release(None, "k", a.holder_token().unwrap())
        .await
        .unwrap();
    let (served, open) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    *f.store.slow_next_read.lock().unwrap() = Some((served.clone(), open.clone()));
    served.notified().await; // the watcher's poll is served: free
    other.acquire(None, "k", owner("carol", 600)).await.unwrap();
    assert!(matches!(
        f.engine.acquire(None, "k", owner("dave", 30)).await,
        Err(LockError::Held { .. })
    ));
    let (_, writes) = f.round_trips();
    open.notify_one(); // the watcher's "free" arrives; bob is told to try
    tokio::time::sleep(StdDuration::from_millis(1)).await;
    assert_eq!(
        f.round_trips().1 - writes,
        0,
        "bob decided from carol's grant, not from the watcher's late 'free'"
    );
    bob.abort();
}

#[tokio::test]
async fn a_cached_document_that_cannot_be_replaced_is_read_again_before_refusing() {
    let f = fixture();
    let top = format!(
        r#"{{"expire": 1, "lock_time": "2020-01-01T00:00:00+00:00", "release_time": null, "owner": null, "fencing_token": 7, "revision": {}}}"#,
        u64::MAX
    );
    f.put_raw("k", &top).await;
    assert!(matches!(
        f.engine.acquire(None, "k", owner("alice", 30)).await,
        Err(LockError::Unreadable(_))
    ));
    // Someone outside replaces it with an ordinary free lock: this process's cache still holds
    // the old document, which is no reason to refuse without looking.
    f.store.inner.delete(BUCKET, "locks/k").await.unwrap();
    f.put_raw(
        "k",
        r#"{"expire": 1, "lock_time": "2020-01-01T00:00:00+00:00", "release_time": null, "owner": null, "fencing_token": 7}"#,
    )
    .await;
    let granted = f
        .engine
        .acquire(None, "k", owner("alice", 30))
        .await
        .unwrap();
    assert_eq!(granted.fencing_token, 8);
}
