//! Acquires that wait for a held lock: giving up, local wake-ups, backing off, the waiter map.

use super::*;

#[tokio::test(start_paused = true)]
async fn a_waiter_gives_up_with_held_when_its_wait_runs_out() {
    let f = fixture();
    f.engine
        .acquire(None, "k", owner("alice", 600))
        .await
        .unwrap();
    let req = AcquireRequest {
        wait: Some(2.0),
        ..owner("bob", 30)
    };
    let started = Instant::now();
    assert!(matches!(
        f.engine.acquire(None, "k", req).await,
        Err(LockError::Held { .. })
    ));
    assert!(
        started.elapsed() >= StdDuration::from_secs(2),
        "it waited the whole time"
    );
    assert_eq!(f.engine.waited_locks(), 0, "the waiter unregistered");
}

#[tokio::test(start_paused = true)]
async fn a_local_release_wakes_a_waiter_without_polling() {
    let f = Arc::new(fixture());
    let a = f
        .engine
        .acquire(None, "k", owner("alice", 600))
        .await
        .unwrap();
    let waiter = {
        let f = f.clone();
        tokio::spawn(async move {
            f.engine
                .acquire(
                    None,
                    "k",
                    AcquireRequest {
                        wait: Some(30.0),
                        ..owner("bob", 30)
                    },
                )
                .await
        })
    };
    // Let the waiter back off to its longest poll interval.
    tokio::time::sleep(StdDuration::from_secs(10)).await;
    let gets_before_release = f.store.gets.load(Ordering::SeqCst);
    let released_at = Instant::now();
    f.engine
        .release(None, "k", a.holder_token().unwrap())
        .await
        .unwrap();
    let granted = waiter.await.unwrap().unwrap();
    assert_eq!(granted.owner.as_deref(), Some("bob"));
    assert_eq!(granted.fencing_token, 2);
    // With time paused, only the wake-up (not a timer) can have run the waiter this soon.
    assert_eq!(Instant::now(), released_at, "no timer had to fire");
    // The release wrote from this process's cached state, and the woken waiter wrote over the
    // release it knows of: neither had to read.
    assert_eq!(f.store.gets.load(Ordering::SeqCst) - gets_before_release, 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_backs_off_instead_of_hammering_the_store() {
    let f = fixture();
    f.engine
        .acquire(None, "k", owner("alice", 600))
        .await
        .unwrap();
    let before = f.store.gets.load(Ordering::SeqCst);
    let req = AcquireRequest {
        wait: Some(10.0),
        ..owner("bob", 30)
    };
    assert!(f.engine.acquire(None, "k", req).await.is_err());
    let reads = f.store.gets.load(Ordering::SeqCst) - before;
    // 25 ms doubling to 1 s with jitter in [half, full]: at most ~5 + 10/0.5 reads in 10 s.
    assert!((5..=30).contains(&reads), "{reads} reads in a 10 s wait");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_keys_with_two_acquirers_each_leave_no_waiter_entry_behind() {
    let f = Arc::new(fixture());
    let mut tasks = Vec::new();
    for k in 0..2_000 {
        for who in ["a", "b"] {
            let f = f.clone();
            tasks.push(tokio::spawn(async move {
                let key = format!("stress/{k}");
                let _ = f.engine.acquire(None, &key, owner(who, 30)).await;
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(f.engine.waited_locks(), 0);
}
