//! Lock-delay on the engine, with the clock moved by hand: a crashed holder's lock is kept for
//! its delay and not after; waiters wait through it without being woken; a break ends it.

use super::*;

/// alice takes "k" for 10 s with a lock-delay of `delay` s after it, and never lets go.
async fn alice_crashes_holding_k(f: &Fixture, delay: i64) -> LockView {
    let req = AcquireRequest {
        lock_delay: Some(delay),
        ..owner("alice", 10)
    };
    f.engine.acquire(None, "k", req).await.unwrap()
}

#[tokio::test]
async fn a_crashed_holders_lock_is_kept_for_its_delay_and_not_after() {
    let f = fixture();
    let alice = alice_crashes_holding_k(&f, 5).await;
    let (end, available_at) = (t0() + Duration::seconds(10), t0() + Duration::seconds(15));
    assert_eq!(alice.available_at, Some(available_at));
    f.clock.set(end);
    for now in [end, available_at - Duration::microseconds(1)] {
        f.clock.set(now);
        match f.engine.acquire(None, "k", owner("bob", 30)).await {
            Err(LockError::Delayed { available_at: a }) => assert_eq!(a, available_at),
            other => panic!("at {now}: {other:?}"),
        }
        let status = f.engine.status(None, "k", None).await.unwrap();
        assert!(!status.locked);
        assert_eq!(status.owner.as_deref(), Some("alice"));
        assert_eq!(status.available_at, Some(available_at));
    }
    f.clock.set(available_at);
    assert_eq!(
        f.engine.status(None, "k", None).await.unwrap().available_at,
        None
    );
    let bob = f.engine.acquire(None, "k", owner("bob", 30)).await.unwrap();
    assert_eq!(bob.fencing_token, 2);
    assert_eq!(bob.available_at, Some(available_at + Duration::seconds(30)));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_is_not_woken_during_the_delay_and_is_granted_at_its_end() {
    let f = Arc::new(fixture());
    alice_crashes_holding_k(&f, 5).await;
    f.clock.set(t0() + Duration::seconds(10)); // the lease ran out: the delay runs
    let waiter = f.spawn_acquire(waiting("bob", 30, 30.0));
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    let before = f.store.gets.load(Ordering::SeqCst);
    tokio::time::sleep(StdDuration::from_secs(10)).await;
    let reads = f.store.gets.load(Ordering::SeqCst) - before;
    // The lock's watcher reads it about once a second while it is not free (it backs off as
    // for a held lease); a waiter woken on every read would read and be refused each time,
    // and the watcher would poll at its fastest, 25 ms apart: hundreds of reads.
    assert!(reads <= 25, "{reads} reads in 10 s of lock-delay");
    assert!(!waiter.is_finished(), "nobody is granted during the delay");
    let available_at = t0() + Duration::seconds(15);
    f.clock.set(available_at);
    let bob = waiter.await.unwrap().unwrap();
    assert_eq!(bob.owner.as_deref(), Some("bob"));
    assert_eq!(bob.lock_time, available_at);
}

#[tokio::test]
async fn a_break_ends_the_delay_and_a_renew_during_it_is_refused() {
    let f = fixture();
    let alice = alice_crashes_holding_k(&f, 60).await;
    f.clock.set(t0() + Duration::seconds(11));
    assert!(matches!(
        f.engine
            .renew(None, "k", alice.holder_token().unwrap(), Some(30))
            .await,
        Err(LockError::NotHolder(_))
    ));
    let broken = f.engine.break_lock(None, "k", "admin").await.unwrap();
    assert_eq!(broken.owner, None);
    assert_eq!(broken.available_at, None);
    let bob = f.engine.acquire(None, "k", owner("bob", 30)).await.unwrap();
    assert_eq!(bob.fencing_token, 3, "the break grew it, and bob's grant");
}
