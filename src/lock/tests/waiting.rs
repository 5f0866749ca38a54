//! Acquires that wait for a held lock: giving up, local wake-ups, backing off, the waiter map.

use super::*;

#[tokio::test(start_paused = true)]
async fn a_waiter_gives_up_with_held_when_its_wait_runs_out() {
    let f = fixture();
    f.alice_holds_k().await;
    let req = waiting("bob", 30, 2.0);
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
    let a = f.alice_holds_k().await;
    let waiter = f.spawn_acquire(waiting("bob", 30, 30.0));
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
async fn a_peer_hint_hands_the_lock_over_with_one_read() {
    // alice holds the lock through this replica; bob waits on another one over the same store.
    let f = Arc::new(fixture());
    let other = Arc::new(f.other_replica());
    let a = f.alice_holds_k().await;
    let waiter = {
        let other = other.clone();
        tokio::spawn(async move {
            let req = waiting("bob", 30, 30.0);
            other.acquire(None, "k", req).await
        })
    };
    // Let the waiter back off to its longest poll interval.
    tokio::time::sleep(StdDuration::from_secs(10)).await;
    f.engine
        .release(None, "k", a.holder_token().unwrap())
        .await
        .unwrap();
    let (gets, writes) = f.round_trips();
    let released_at = Instant::now();
    other.peer_hint(BUCKET, "locks/k");
    let granted = waiter.await.unwrap().unwrap();
    assert_eq!(granted.owner.as_deref(), Some("bob"));
    assert_eq!(Instant::now(), released_at, "the hint, not a poll, woke it");
    // The watcher's read is the waiter's basis: it writes its grant from it (If-Match) rather
    // than reading the lock a second time.
    assert_eq!(
        (f.round_trips().0 - gets, f.round_trips().1 - writes),
        (1, 1),
        "(reads, writes) from the hint to the grant"
    );
}

#[tokio::test(start_paused = true)]
async fn a_waiter_backs_off_instead_of_hammering_the_store() {
    let f = fixture();
    f.alice_holds_k().await;
    let before = f.store.gets.load(Ordering::SeqCst);
    let req = waiting("bob", 30, 10.0);
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

#[tokio::test(start_paused = true)]
async fn two_hundred_waiters_on_one_lock_read_the_store_no_more_than_one_does() {
    async fn reads_while_blocked(waiters: usize) -> usize {
        let f = Arc::new(fixture());
        f.alice_holds_k().await;
        let tasks: Vec<_> = (0..waiters)
            .map(|i| f.spawn_acquire(waiting(&format!("w{i}"), 30, 3.0)))
            .collect();
        // Past every waiter's first try, and short of their last one at the deadline.
        tokio::time::sleep(StdDuration::from_millis(100)).await;
        let before = f.store.gets.load(Ordering::SeqCst);
        tokio::time::sleep(StdDuration::from_millis(2800)).await;
        let reads = f.store.gets.load(Ordering::SeqCst) - before;
        for t in tasks {
            assert!(matches!(t.await.unwrap(), Err(LockError::Held { .. })));
        }
        assert_eq!(f.engine.waited_locks(), 0, "the lock's watcher is gone");
        reads
    }
    let one = reads_while_blocked(1).await;
    let many = reads_while_blocked(200).await;
    assert!(one > 0, "the one waiter's lock is watched");
    // The watcher's jitter is random, so two runs may differ by a read or two; a read per waiter
    // would be two hundred times as many.
    assert!(
        many <= one + 2,
        "200 waiters: {many} reads; 1 waiter: {one}"
    );
}

#[tokio::test(start_paused = true)]
async fn waiters_arriving_one_by_one_at_a_held_lock_do_not_reset_its_watcher() {
    // Counts the store reads from 50 ms to 2.9 s while one waiter is blocked on a held lock,
    // and `joining` more join it one every 100 ms (each with a wait that outlasts the count).
    async fn reads_while_joining(joining: usize) -> usize {
        let f = Arc::new(fixture());
        f.alice_holds_k().await;
        let blocked = |name: String| f.spawn_acquire(waiting(&name, 30, 3.5));
        let mut tasks = vec![blocked("first".into())];
        tokio::time::sleep(StdDuration::from_millis(50)).await;
        let (before, end) = (
            f.store.gets.load(Ordering::SeqCst),
            Instant::now() + StdDuration::from_millis(2850),
        );
        for i in 0..joining {
            tokio::time::sleep(StdDuration::from_millis(100)).await;
            tasks.push(blocked(format!("w{i}")));
        }
        tokio::time::sleep_until(end).await;
        let reads = f.store.gets.load(Ordering::SeqCst) - before;
        for t in tasks {
            assert!(matches!(t.await.unwrap(), Err(LockError::Held { .. })));
        }
        reads
    }
    let one = reads_while_joining(0).await;
    let joining = 25;
    let many = reads_while_joining(joining).await;
    // Each newcomer reads the lock once itself (its first try, refused). The watcher already
    // knows the lock held, so a newcomer is no reason for it to read again, nor to start its
    // backoff over (a steady stream of arrivals would otherwise keep it at its fastest poll:
    // 103 reads here). The watcher's jitter alone puts 6 to 9 of its reads in the window.
    eprintln!("{joining} waiters joining: {many} reads; none: {one}");
    assert!(
        many <= one + joining + 3,
        "{joining} waiters joining: {many} reads; none: {one}"
    );
}

#[tokio::test(start_paused = true)]
async fn blocked_acquirers_are_served_in_arrival_order() {
    let f = Arc::new(fixture());
    let alice = f.alice_holds_k().await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for name in ["w1", "w2", "w3", "w4", "w5"] {
        let (f, order) = (f.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let req = waiting(name, 30, 60.0);
            let got = f.engine.acquire(None, "k", req).await.unwrap();
            order.lock().unwrap().push(name);
            f.engine
                .release(None, "k", got.holder_token().unwrap())
                .await
                .unwrap();
        }));
        // Each one is in line before the next arrives.
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    f.engine
        .release(None, "k", alice.holder_token().unwrap())
        .await
        .unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), ["w1", "w2", "w3", "w4", "w5"]);
}

#[tokio::test(start_paused = true)]
async fn a_watch_answers_at_once_when_the_index_it_saw_is_old() {
    let f = fixture();
    let a = f
        .engine
        .acquire(None, "k", owner("alice", 60))
        .await
        .unwrap();
    let started = Instant::now();
    let v = f
        .engine
        .watch(None, "k", None, Some(a.index - 1), Some(30.0))
        .await
        .unwrap();
    assert_eq!(v.index, a.index);
    assert_eq!(Instant::now(), started, "no waiting");
    assert_eq!(v.token, None, "a watch never shows the holder token");
}

#[tokio::test(start_paused = true)]
async fn a_watch_answers_when_the_lock_changes_and_times_out_otherwise() {
    let f = Arc::new(fixture());
    let a = f
        .engine
        .acquire(None, "k", owner("alice", 60))
        .await
        .unwrap();
    // No change within the wait: the same index, after the wait.
    let started = Instant::now();
    let same = f
        .engine
        .watch(None, "k", None, Some(a.index), Some(2.0))
        .await
        .unwrap();
    assert_eq!(same.index, a.index);
    assert!(Instant::now() - started >= StdDuration::from_secs(2));
    // A change (the release) ends the watch with the new state.
    let watcher = {
        let (f, index) = (f.clone(), a.index);
        tokio::spawn(async move {
            f.engine
                .watch(None, "k", None, Some(index), Some(30.0))
                .await
        })
    };
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    f.engine
        .release(None, "k", a.holder_token().unwrap())
        .await
        .unwrap();
    let changed = watcher.await.unwrap().unwrap();
    assert!(changed.index > a.index);
    assert_eq!(changed.owner, None);
    assert!(!changed.locked);
}

#[tokio::test(start_paused = true)]
async fn fifty_watch_clients_read_the_store_no_more_than_one_does() {
    async fn reads_while_watching(clients: usize) -> usize {
        let f = Arc::new(fixture());
        let a = f.alice_holds_k().await;
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (f, index) = (f.clone(), a.index);
                tokio::spawn(async move {
                    f.engine
                        .watch(None, "k", None, Some(index), Some(3.0))
                        .await
                })
            })
            .collect();
        // Past every client's first read (each reads the lock once, as a status does).
        tokio::time::sleep(StdDuration::from_millis(100)).await;
        let before = f.store.gets.load(Ordering::SeqCst);
        tokio::time::sleep(StdDuration::from_millis(2800)).await;
        let reads = f.store.gets.load(Ordering::SeqCst) - before;
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().index, a.index);
        }
        reads
    }
    let one = reads_while_watching(1).await;
    let many = reads_while_watching(50).await;
    assert!(one > 0);
    // The watcher's jitter is random, so two runs may differ by a read or two; a read per client
    // would be fifty times as many.
    assert!(
        many <= one + 2,
        "50 watchers: {many} reads; 1 watcher: {one}"
    );
}

#[tokio::test(start_paused = true)]
async fn watching_a_free_lock_backs_off_as_watching_a_held_one_does() {
    // Review of issue 10: the watcher went back to its first poll (25 ms) after every read that
    // found the lock free, so one watch client on a free lock cost ~40 store reads a second for
    // as long as it watched, instead of backing off to one a second as on a held lock.
    let f = fixture();
    let a = f.alice_holds_k().await;
    let freed = f
        .engine
        .release(None, "k", a.holder_token().unwrap())
        .await
        .unwrap();
    let before = f.store.gets.load(Ordering::SeqCst);
    let v = f
        .engine
        .watch(None, "k", None, Some(freed.index), Some(10.0))
        .await
        .unwrap();
    assert_eq!(v.index, freed.index, "nothing changed");
    let reads = f.store.gets.load(Ordering::SeqCst) - before;
    // The same bound as a waiter on a held lock: 25 ms doubling to 1 s, jitter in [half, full].
    assert!(
        reads <= 30,
        "{reads} reads while watching a free lock for 10 s"
    );
}

#[tokio::test(start_paused = true)]
async fn a_watch_never_answers_with_a_state_older_than_the_one_it_was_given() {
    // Review of issue 10: the watcher published whatever its read returned, even when this
    // process had since written (and published) a newer state. A watcher's read that was
    // served before a local release and answered after it put the lock back to "held" for every
    // watch client: one watching from the release's index was answered at once with the older
    // index and the old holder, as if the release had been undone.
    let f = Arc::new(fixture());
    let a = f.alice_holds_k().await;
    // Something keeps the lock's watcher running (a waiter or another watch client).
    let _kept = f.engine.watchers.follow(BUCKET, "locks/k").unwrap();
    tokio::time::sleep(StdDuration::from_millis(10)).await; // its first read is done
                                                            // Its next poll is served (alice holds the lock) but the answer is slow to come back.
    let (served, open) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    *f.store.slow_next_read.lock().unwrap() = Some((served.clone(), open.clone()));
    served.notified().await;
    // Meanwhile alice releases, here.
    let freed = f
        .engine
        .release(None, "k", a.holder_token().unwrap())
        .await
        .unwrap();
    assert!(freed.index > a.index);
    let client = {
        let (f, index) = (f.clone(), freed.index);
        tokio::spawn(async move {
            f.engine
                .watch(None, "k", None, Some(index), Some(5.0))
                .await
        })
    };
    tokio::time::sleep(StdDuration::from_millis(10)).await; // the client is watching
    open.notify_one(); // the old read's answer arrives
    let v = client.await.unwrap().unwrap();
    assert!(
        v.index >= freed.index,
        "watching from index {} answered with index {} (owner {:?})",
        freed.index,
        v.index,
        v.owner
    );
    assert_eq!(v.owner, None, "the lock was released");
}

#[tokio::test(start_paused = true)]
async fn watch_clients_following_a_lock_read_the_store_no_more_than_one_does() {
    // Review of issue 10: a watch client follows a lock by watching again from the index each
    // answer gave it. Every watch began with a store read of its own (a status), so each change
    // of the lock cost one read per client: the watcher's reads are shared, these are not.
    async fn reads_while_following(clients: usize) -> usize {
        let f = Arc::new(fixture());
        let first = f.alice_holds_k().await;
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (f, mut index) = (f.clone(), first.index);
                tokio::spawn(async move {
                    let mut seen = 0;
                    while seen < 10 {
                        let v = f
                            .engine
                            .watch(None, "k", None, Some(index), Some(30.0))
                            .await
                            .unwrap();
                        if v.index != index {
                            seen += 1;
                        }
                        index = v.index;
                    }
                })
            })
            .collect();
        // Past every client's first watch (each may read the lock once, as a status does).
        tokio::time::sleep(StdDuration::from_millis(100)).await;
        let before = f.store.gets.load(Ordering::SeqCst);
        // Ten changes, all made by this process (so its watcher learns them with no read).
        let mut token = first.holder_token().unwrap().to_owned();
        for i in 0..10 {
            if i % 2 == 0 {
                f.engine.release(None, "k", &token).await.unwrap();
            } else {
                token = f.alice_holds_k().await.holder_token().unwrap().to_owned();
            }
            tokio::time::sleep(StdDuration::from_millis(100)).await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        f.store.gets.load(Ordering::SeqCst) - before
    }
    let one = reads_while_following(1).await;
    let many = reads_while_following(50).await;
    // The watcher's jitter is random, so two runs may differ by a few reads; a read per client
    // and change would be about 500 more.
    assert!(
        many <= one + 5,
        "50 clients following: {many} reads; 1 client: {one}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_watch_that_starts_the_lock_watcher_reads_the_lock_once() {
    // The watch call starts the watcher, whose first read is the call's answer too. The first
    // read's answer is slow, so that anything else that would read meanwhile does.
    let f = Arc::new(fixture());
    let a = f.alice_holds_k().await;
    let (gets, _) = f.round_trips();
    let (served, open) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    *f.store.slow_next_read.lock().unwrap() = Some((served.clone(), open.clone()));
    let watch = {
        let f = f.clone();
        tokio::spawn(async move { f.engine.watch(None, "k", None, Some(0), Some(30.0)).await })
    };
    served.notified().await;
    tokio::time::sleep(StdDuration::from_millis(1)).await;
    open.notify_one();
    let v = watch.await.unwrap().unwrap();
    assert_eq!(
        v.index, a.index,
        "answered at once: the client's index is old"
    );
    assert_eq!(f.round_trips().0 - gets, 1);
}
