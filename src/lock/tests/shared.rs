//! Semaphores and read-write locks through the engine: the one decision loop, the waiting line
//! and the orphan path driving `shared_rules`, on the memory store with a clock the tests move.

use super::*;
use crate::lock::shared::SharedDocument;
use crate::wire::{Mode, SharedKind, SharedView};

const SEM: SharedKind = SharedKind::Semaphore;
const RW: SharedKind = SharedKind::Rwlock;

/// A permit of semaphore "s" of `limit` for `name`, with a lease of `ttl` seconds.
fn permit(name: &str, limit: i64, ttl: i64) -> SharedAcquireRequest {
    SharedAcquireRequest {
        owner: Some(name.into()),
        ttl: Some(ttl),
        limit: Some(limit),
        ..SharedAcquireRequest::default()
    }
}

fn waiting_for(req: SharedAcquireRequest, wait: f64) -> SharedAcquireRequest {
    SharedAcquireRequest {
        wait: Some(wait),
        ..req
    }
}

fn rw(name: &str, mode: Mode, ttl: i64) -> SharedAcquireRequest {
    SharedAcquireRequest {
        owner: Some(name.into()),
        ttl: Some(ttl),
        mode: Some(mode),
        ..SharedAcquireRequest::default()
    }
}

impl Fixture {
    async fn sem(&self, req: SharedAcquireRequest) -> Result<SharedView, LockError> {
        self.engine.shared_acquire(None, "s", SEM, req).await
    }

    async fn sem_status(&self) -> SharedView {
        self.engine.shared_status(None, "s", SEM).await.unwrap()
    }

    async fn rw_status(&self) -> SharedView {
        self.engine.shared_status(None, "r", RW).await.unwrap()
    }

    /// `req` on semaphore "s" (or, with a mode, read-write lock "r"), on a task of its own.
    fn spawn_shared(
        self: &Arc<Self>,
        req: SharedAcquireRequest,
    ) -> tokio::task::JoinHandle<Result<SharedView, LockError>> {
        let f = self.clone();
        let (key, kind) = if req.mode.is_some() {
            ("r", RW)
        } else {
            ("s", SEM)
        };
        tokio::spawn(async move { f.engine.shared_acquire(None, key, kind, req).await })
    }
}

fn token(view: &SharedView) -> &str {
    view.holder_token()
        .expect("an acquire's answer carries the holder token")
}

/// Lets spawned acquires make their first try and join the line.
async fn settle() {
    tokio::time::sleep(StdDuration::from_millis(10)).await;
}

// --- semaphores ---

#[tokio::test]
async fn n_holders_are_granted_and_the_next_is_refused_with_no_permit_left() {
    let f = fixture();
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        let granted = f.sem(permit(name, 3, 30)).await.unwrap();
        let lease = granted.lease.as_ref().unwrap();
        assert_eq!(lease.owner, name);
        assert_eq!(lease.fencing_token, i as u64 + 1, "fencing grows per grant");
        assert_eq!(granted.permits_left, Some(2 - i as u32));
    }
    match f.sem(permit("d", 3, 30)).await {
        Err(LockError::SemaphoreFull { limit: 3, .. }) => {}
        other => panic!("expected semaphore-full, got {other:?}"),
    }
    let status = f.sem_status().await;
    let owners: Vec<_> = status.holders.iter().map(|h| h.owner.as_str()).collect();
    assert_eq!(owners, ["a", "b", "c"]);
    assert_eq!((status.limit, status.permits_left), (Some(3), Some(0)));
    assert!(
        status.token.is_none() && status.lease.is_none(),
        "status shows no token"
    );
    // Its own namespace: the semaphore is no lock, and the lock "s" is untouched.
    assert!(f.stored("s").await.is_none());
    assert!(f.stored(".semaphores/s").await.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_waiter_for_a_full_semaphore_is_granted_at_once_when_a_holder_releases() {
    let f = Arc::new(fixture());
    let a = f.sem(permit("a", 2, 600)).await.unwrap();
    f.sem(permit("b", 2, 600)).await.unwrap();
    let c = f.spawn_shared(waiting_for(permit("c", 2, 30), 30.0));
    // Let the waiter back off to its longest poll interval.
    tokio::time::sleep(StdDuration::from_secs(10)).await;
    assert_eq!(
        f.sem_status().await.waiters_here,
        1,
        "c waits on this replica"
    );
    let released_at = Instant::now();
    f.engine
        .shared_release(None, "s", SEM, token(&a))
        .await
        .unwrap();
    let c = c.await.unwrap().unwrap();
    assert_eq!(c.waiters_here, 0, "c is no longer waiting");
    assert_eq!(c.lease.unwrap().owner, "c");
    assert_eq!(
        Instant::now(),
        released_at,
        "the release, not a timer, woke it"
    );
    assert_eq!(f.sem_status().await.waiters_here, 0);
}

#[tokio::test(start_paused = true)]
async fn waiters_on_one_replica_are_served_in_arrival_order() {
    let f = Arc::new(fixture());
    let mut holder = f.sem(permit("first", 1, 600)).await.unwrap();
    let mut line = Vec::new();
    for name in ["w1", "w2", "w3"] {
        line.push((
            name,
            f.spawn_shared(waiting_for(permit(name, 1, 600), 60.0)),
        ));
        settle().await;
    }
    assert_eq!(f.sem_status().await.waiters_here, 3);
    for (name, waiter) in line {
        f.engine
            .shared_release(None, "s", SEM, token(&holder))
            .await
            .unwrap();
        holder = waiter.await.unwrap().unwrap();
        assert_eq!(holder.lease.as_ref().unwrap().owner, name);
    }
}

#[tokio::test(start_paused = true)]
async fn a_waiter_granted_a_permit_hands_the_turn_on_while_permits_remain() {
    let f = Arc::new(fixture());
    f.sem(permit("a", 2, 600)).await.unwrap();
    f.sem(permit("b", 2, 600)).await.unwrap();
    let c = f.spawn_shared(waiting_for(permit("c", 2, 30), 30.0));
    settle().await;
    let d = f.spawn_shared(waiting_for(permit("d", 2, 30), 30.0));
    tokio::time::sleep(StdDuration::from_secs(10)).await;
    // Both permits come back in one write: the first in line is woken, and once granted it
    // wakes the next, as a permit is still left.
    let broken_at = Instant::now();
    f.engine
        .shared_break(None, "s", SEM, "admin")
        .await
        .unwrap();
    assert_eq!(c.await.unwrap().unwrap().lease.unwrap().owner, "c");
    assert_eq!(d.await.unwrap().unwrap().lease.unwrap().owner, "d");
    assert_eq!(Instant::now(), broken_at, "no poll was needed");
}

#[tokio::test]
async fn a_crashed_holders_permit_comes_back_after_its_ttl() {
    let f = fixture();
    // a takes the one permit and crashes: it never renews or releases.
    f.sem(permit("a", 1, 30)).await.unwrap();
    assert!(matches!(
        f.sem(permit("b", 1, 30)).await,
        Err(LockError::SemaphoreFull { .. })
    ));
    f.clock.advance(Duration::seconds(30));
    let b = f.sem(permit("b", 1, 30)).await.unwrap();
    assert_eq!(b.lease.unwrap().fencing_token, 2);
    let status = f.sem_status().await;
    let owners: Vec<_> = status.holders.iter().map(|h| h.owner.as_str()).collect();
    assert_eq!(owners, ["b"], "the crashed holder was dropped by the write");
}

#[tokio::test(start_paused = true)]
async fn a_waiter_is_granted_a_crashed_holders_permit_once_its_ttl_has_run_out() {
    let f = Arc::new(fixture());
    f.sem(permit("a", 1, 30)).await.unwrap();
    let b = f.spawn_shared(waiting_for(permit("b", 1, 30), 60.0));
    settle().await;
    // Nothing is released; only the store's time passes.
    f.clock.advance(Duration::seconds(31));
    let b = b.await.unwrap().unwrap();
    assert_eq!(b.lease.unwrap().owner, "b");
}

#[tokio::test]
async fn a_limit_mismatch_is_refused_while_holders_remain() {
    let f = fixture();
    let a = f.sem(permit("a", 3, 30)).await.unwrap();
    match f.sem(permit("b", 2, 30)).await {
        Err(LockError::LimitMismatch {
            stored: 3,
            asked: 2,
        }) => {}
        other => panic!("expected limit-mismatch, got {other:?}"),
    }
    // Once nobody holds it, the next acquire's limit is the semaphore's.
    f.engine
        .shared_release(None, "s", SEM, token(&a))
        .await
        .unwrap();
    let b = f.sem(permit("b", 2, 30)).await.unwrap();
    assert_eq!((b.limit, b.permits_left), (Some(2), Some(1)));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_with_another_limit_is_told_at_once_rather_than_waiting() {
    let f = fixture();
    f.sem(permit("a", 1, 600)).await.unwrap();
    let started = Instant::now();
    assert!(matches!(
        f.sem(waiting_for(permit("b", 2, 30), 30.0)).await,
        Err(LockError::LimitMismatch { .. })
    ));
    assert_eq!(
        Instant::now(),
        started,
        "a refusal for good is not waited through"
    );
}

#[tokio::test]
async fn renew_extends_only_the_holders_own_lease_and_release_is_idempotent() {
    let f = fixture();
    let a = f.sem(permit("a", 2, 30)).await.unwrap();
    let b = f.sem(permit("b", 2, 30)).await.unwrap();
    f.clock.advance(Duration::seconds(20));
    let renewed = f
        .engine
        .shared_renew(None, "s", SEM, token(&a), Some(60))
        .await
        .unwrap();
    assert_eq!(renewed.holder_token(), Some(token(&a)));
    assert_eq!(renewed.lease.as_ref().unwrap().expire, 60);
    f.clock.advance(Duration::seconds(15));
    // b's lease ran out (35 s > 30 s); a's renewed one still runs.
    let owners: Vec<_> = f
        .sem_status()
        .await
        .holders
        .into_iter()
        .map(|h| h.owner)
        .collect();
    assert_eq!(owners, ["a"]);
    assert!(matches!(
        f.engine.shared_renew(None, "s", SEM, token(&b), None).await,
        Err(LockError::NotHolder(_))
    ));
    for _ in 0..2 {
        let released = f
            .engine
            .shared_release(None, "s", SEM, token(&a))
            .await
            .unwrap();
        assert!(released.holders.is_empty() && released.token.is_none());
    }
    assert!(matches!(
        f.engine.shared_renew(None, "s", SEM, token(&a), None).await,
        Err(LockError::NotHolder(_))
    ));
}

#[tokio::test]
async fn bad_input_is_refused_with_nothing_stored() {
    let f = fixture();
    let invalid = |r: Result<SharedView, LockError>| match r {
        Err(LockError::InvalidInput { field, .. }) => field,
        other => panic!("expected invalid input, got {other:?}"),
    };
    let no_limit = SharedAcquireRequest {
        limit: None,
        ..permit("a", 1, 30)
    };
    assert_eq!(invalid(f.sem(no_limit).await), "limit");
    assert_eq!(invalid(f.sem(permit("a", 0, 30)).await), "limit");
    assert_eq!(invalid(f.sem(permit("a", 257, 30)).await), "limit");
    assert_eq!(invalid(f.sem(permit("a", i64::MAX, 30)).await), "limit");
    assert_eq!(invalid(f.sem(permit("a", 2, 0)).await), "ttl");
    let with_mode = SharedAcquireRequest {
        mode: Some(Mode::Shared),
        ..permit("a", 1, 30)
    };
    assert_eq!(invalid(f.sem(with_mode).await), "mode");
    let rw_with_limit = SharedAcquireRequest {
        limit: Some(2),
        ..rw("a", Mode::Shared, 30)
    };
    let rw_acquire = |req| f.engine.shared_acquire(None, "r", RW, req);
    assert_eq!(invalid(rw_acquire(rw_with_limit).await), "limit");
    let no_mode = SharedAcquireRequest {
        mode: None,
        ..rw("a", Mode::Shared, 30)
    };
    assert_eq!(invalid(rw_acquire(no_mode).await), "mode");
    let bad_key = f
        .engine
        .shared_acquire(None, "a//b", SEM, permit("a", 1, 30));
    assert_eq!(invalid(bad_key.await), "key");
    assert!(f.store.inner.list(BUCKET, "").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_lock_key_in_another_kinds_namespace_is_refused() {
    let f = fixture();
    f.sem(permit("a", 1, 30)).await.unwrap();
    // An election's lock is a lock the election routes take through the engine; the lock routes
    // refuse its namespace at the HTTP edge (`tests/api/elections.rs`).
    for key in [".semaphores/s", ".rwlocks/r", ".semaphores"] {
        match f.engine.acquire(None, key, owner("alice", 30)).await {
            Err(LockError::InvalidInput { field: "key", .. }) => {}
            other => panic!("{key}: expected invalid key, got {other:?}"),
        }
        assert!(matches!(
            f.engine.status(None, key, None).await,
            Err(LockError::InvalidInput { field: "key", .. })
        ));
    }
    // The semaphore's object is not listed as a lock.
    f.alice_holds_k().await;
    let page = f.engine.list(None, "", None, None).await.unwrap();
    let keys: Vec<_> = page.items.iter().map(|l| l.key.as_str()).collect();
    assert_eq!(keys, ["k"]);
}

#[tokio::test(start_paused = true)]
async fn a_lost_semaphore_grant_is_freed_by_the_orphan_path() {
    let f = fixture();
    // a's grant is delayed in the network: it is told 503 and never learns its token.
    f.store.set(Some(Fault::ParkNextWrite));
    assert!(matches!(
        f.sem(permit("a", 1, 30)).await,
        Err(LockError::StoreUnavailable(_))
    ));
    assert!(f.store.land_parked().await, "the grant lands late");
    let landed = SharedDocument::from_bytes(&f.stored(".semaphores/s").await.unwrap()).unwrap();
    assert_eq!(
        landed.holders.len(),
        1,
        "the permit is taken by nobody who knows it"
    );
    // The orphan watcher frees it: the permit comes back long before the lease would end.
    tokio::time::sleep(StdDuration::from_secs(5)).await;
    let status = f.sem_status().await;
    assert!(status.holders.is_empty());
    assert_eq!(status.permits_left, Some(1));
    let b = f.sem(permit("b", 1, 30)).await.unwrap();
    assert_eq!(b.lease.unwrap().fencing_token, 2);
}

// --- read-write locks ---

#[tokio::test]
async fn readers_share_and_a_writer_is_alone() {
    let f = fixture();
    let rw_acquire = |req| f.engine.shared_acquire(None, "r", RW, req);
    let r1 = rw_acquire(rw("r1", Mode::Shared, 30)).await.unwrap();
    rw_acquire(rw("r2", Mode::Shared, 30)).await.unwrap();
    assert!(matches!(
        rw_acquire(rw("w", Mode::Exclusive, 30)).await,
        Err(LockError::Held { .. })
    ));
    assert!(
        f.rw_status().await.waiting.is_empty(),
        "a writer that will not wait is not recorded"
    );
    f.engine
        .shared_release(None, "r", RW, token(&r1))
        .await
        .unwrap();
    let status = f.rw_status().await;
    let r2 = status.holders.iter().find(|h| h.owner == "r2").unwrap();
    assert_eq!(r2.mode, Some(Mode::Shared));
    assert_eq!(status.limit, None);
    assert_eq!(status.permits_left, None);
}

/// Readers on one replica arrive every second and each stays two seconds, so one always holds
/// the lock; a writer waits on another replica. Writers first: once the writer is recorded as
/// waiting, new readers are refused, the readers in finish, and the writer gets the lock. A
/// reader-preferring rule lets every reader in and the writer waits out its whole wait.
#[tokio::test(start_paused = true)]
async fn a_writer_on_another_replica_is_not_starved_by_a_steady_stream_of_readers() {
    let f = Arc::new(fixture());
    let other = Arc::new(f.other_replica());
    let rw_acquire = |name: String| {
        let f = f.clone();
        async move {
            f.engine
                .shared_acquire(None, "r", RW, rw(&name, Mode::Shared, 30))
                .await
        }
    };
    let mut in_now = vec![rw_acquire("r0".into()).await.unwrap()];
    let writer = {
        let other = other.clone();
        tokio::spawn(async move {
            let req = waiting_for(rw("writer", Mode::Exclusive, 30), 20.0);
            other.shared_acquire(None, "r", RW, req).await
        })
    };
    let mut refused = 0;
    for i in 1..=15 {
        tokio::time::sleep(StdDuration::from_secs(1)).await;
        f.clock.advance(Duration::seconds(1));
        if writer.is_finished() {
            break;
        }
        // A new reader arrives while the one before still holds...
        match rw_acquire(format!("r{i}")).await {
            Ok(view) => in_now.push(view),
            Err(LockError::Held { owner, .. }) => {
                assert_eq!(owner, "writer", "a reader waits behind the waiting writer");
                refused += 1;
            }
            Err(other) => panic!("{other:?}"),
        }
        // ...and the one that came two turns ago leaves.
        if in_now.len() > 1 || (refused > 0 && !in_now.is_empty()) {
            let leaving = in_now.remove(0);
            f.engine
                .shared_release(None, "r", RW, token(&leaving))
                .await
                .unwrap();
        }
    }
    let granted = tokio::time::timeout(StdDuration::from_secs(30), writer)
        .await
        .expect("the writer's wait ends")
        .unwrap()
        .expect("the writer gets the lock while readers keep coming");
    let lease = granted.lease.unwrap();
    assert_eq!(
        (lease.owner.as_str(), lease.mode),
        ("writer", Some(Mode::Exclusive))
    );
    assert!(
        refused > 0,
        "readers that came after the writer waited for it"
    );
    assert!(
        granted.waiting.is_empty(),
        "the granted writer's entry is gone"
    );
}

#[tokio::test(start_paused = true)]
async fn a_writer_waiting_on_this_replica_is_granted_when_the_last_reader_leaves() {
    let f = Arc::new(fixture());
    let rw_acquire = |req| f.engine.shared_acquire(None, "r", RW, req);
    let r1 = rw_acquire(rw("r1", Mode::Shared, 600)).await.unwrap();
    let w = f.spawn_shared(waiting_for(rw("w", Mode::Exclusive, 30), 30.0));
    tokio::time::sleep(StdDuration::from_secs(10)).await;
    let status = f.rw_status().await;
    assert_eq!(
        status.waiting.len(),
        1,
        "the waiting writer is recorded: {status:?}"
    );
    assert_eq!(status.waiters_here, 1);
    let released_at = Instant::now();
    f.engine
        .shared_release(None, "r", RW, token(&r1))
        .await
        .unwrap();
    let w = w.await.unwrap().unwrap();
    assert_eq!(w.lease.unwrap().owner, "w");
    assert_eq!(Instant::now(), released_at, "the release woke it");
}

#[tokio::test(start_paused = true)]
async fn a_waiting_writer_renews_its_entry_while_it_waits() {
    let f = Arc::new(fixture());
    f.engine
        .shared_acquire(None, "r", RW, rw("r1", Mode::Shared, 600))
        .await
        .unwrap();
    let _w = f.spawn_shared(waiting_for(rw("w", Mode::Exclusive, 30), 60.0));
    settle().await;
    // Store time and the waiter's time pass together, well past the entry's 5 s lease.
    for _ in 0..20 {
        tokio::time::sleep(StdDuration::from_secs(1)).await;
        f.clock.advance(Duration::seconds(1));
    }
    let status = f.rw_status().await;
    assert_eq!(
        status.waiting.len(),
        1,
        "still recorded after 20 s: {status:?}"
    );
    assert!(matches!(
        f.engine
            .shared_acquire(None, "r", RW, rw("r2", Mode::Shared, 30))
            .await,
        Err(LockError::Held { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_writer_that_gives_up_withdraws_its_entry_and_readers_come_back() {
    let f = fixture();
    let rw_acquire = |req| f.engine.shared_acquire(None, "r", RW, req);
    rw_acquire(rw("r1", Mode::Shared, 600)).await.unwrap();
    assert!(matches!(
        rw_acquire(waiting_for(rw("w", Mode::Exclusive, 30), 2.0)).await,
        Err(LockError::Held { .. })
    ));
    assert!(f.rw_status().await.waiting.is_empty(), "withdrawn");
    // No store time passed: only the withdrawal lets the next reader in.
    rw_acquire(rw("r2", Mode::Shared, 30)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_vanished_writers_entry_lapses_after_its_short_lease() {
    let f = Arc::new(fixture());
    f.engine
        .shared_acquire(None, "r", RW, rw("r1", Mode::Shared, 600))
        .await
        .unwrap();
    let w = f.spawn_shared(waiting_for(rw("w", Mode::Exclusive, 30), 60.0));
    settle().await;
    // The writer's client goes away mid-wait: nothing withdraws its entry.
    w.abort();
    let _ = w.await;
    let reader = || {
        f.engine
            .shared_acquire(None, "r", RW, rw("r2", Mode::Shared, 30))
    };
    assert!(matches!(reader().await, Err(LockError::Held { .. })));
    f.clock.advance(Duration::seconds(5));
    reader()
        .await
        .expect("the entry lapsed: readers are let in again");
}

#[tokio::test(start_paused = true)]
async fn a_recorded_writer_is_let_past_a_reader_ahead_of_it_in_this_replicas_line() {
    let f = Arc::new(fixture());
    let w0 = f
        .engine
        .shared_acquire(None, "r", RW, rw("w0", Mode::Exclusive, 600))
        .await
        .unwrap();
    let reader = f.spawn_shared(waiting_for(rw("reader", Mode::Shared, 30), 60.0));
    settle().await;
    let writer = f.spawn_shared(waiting_for(rw("writer", Mode::Exclusive, 30), 60.0));
    settle().await;
    assert_eq!(f.rw_status().await.waiters_here, 2);
    // The reader came first, but the writer recorded in the document holds readers back: the
    // lock is free for the writer alone, and it is the one told.
    let released_at = Instant::now();
    f.engine
        .shared_release(None, "r", RW, token(&w0))
        .await
        .unwrap();
    let writer = writer.await.unwrap().unwrap();
    assert_eq!(writer.lease.as_ref().unwrap().owner, "writer");
    assert_eq!(Instant::now(), released_at, "the release woke the writer");
    assert!(!reader.is_finished());
    f.engine
        .shared_release(None, "r", RW, token(&writer))
        .await
        .unwrap();
    assert_eq!(
        reader.await.unwrap().unwrap().lease.unwrap().owner,
        "reader"
    );
}

#[tokio::test]
async fn a_semaphores_failed_renew_is_counted_by_its_reason_as_a_locks_is() {
    let f = fixture();
    let held = f.sem(permit("alice", 2, 30)).await.unwrap();
    f.engine
        .shared_renew(None, "s", SEM, held.holder_token().unwrap(), Some(30))
        .await
        .unwrap();
    f.engine
        .shared_renew(None, "s", SEM, "not-the-token", Some(30))
        .await
        .unwrap_err();
    let text = f.engine.metrics().render();
    let line = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix)?.trim().parse::<f64>().ok())
    };
    assert_eq!(line("s3lock_renewals_total"), Some(1.0), "{text}");
    assert_eq!(
        line(r#"s3lock_renew_failures_total{reason="not_holder"}"#),
        Some(1.0),
        "{text}"
    );
}
