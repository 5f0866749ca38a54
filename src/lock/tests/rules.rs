//! The lock rules through the engine: grants, refreshes, renewals, releases, seed documents and
//! fencing tokens.

use super::*;

#[tokio::test]
async fn the_first_grant_has_fencing_token_one_and_a_token() {
    let f = fixture();
    let v = f
        .engine
        .acquire(None, "jobs/etl", owner("alice", 30))
        .await
        .unwrap();
    assert_eq!(v.owner.as_deref(), Some("alice"));
    assert_eq!(v.fencing_token, 1);
    assert!(v.token.is_some());
    assert!(v.locked);
    assert_eq!(v.expires_at, Some(t0() + Duration::seconds(30)));
    assert_eq!(v.ttl_remaining_ms, 30_000);
    let stored = LockDocument::from_bytes(&f.stored("jobs/etl").await.unwrap()).unwrap();
    assert_eq!(stored.token, v.token);
}

#[tokio::test]
async fn an_owner_defaults_to_a_random_name() {
    let f = fixture();
    let a = f
        .engine
        .acquire(None, "k", AcquireRequest::default())
        .await
        .unwrap();
    assert_eq!(a.owner.as_ref().map(String::len), Some(32));
    assert_eq!(a.expire, 60, "the default ttl applies");
}

#[tokio::test]
async fn a_second_owner_is_refused_while_the_lock_is_held() {
    let f = fixture();
    f.engine
        .acquire(None, "k", owner("alice", 30))
        .await
        .unwrap();
    let before = f.stored("k").await;
    match f.engine.acquire(None, "k", owner("bob", 30)).await {
        Err(LockError::Held { owner, expires_at }) => {
            assert_eq!(owner, "alice");
            assert_eq!(expires_at, t0() + Duration::seconds(30));
        }
        other => panic!("expected Held, got {other:?}"),
    }
    assert_eq!(
        f.stored("k").await,
        before,
        "a refused acquire writes nothing"
    );
}

#[tokio::test]
async fn the_same_owner_refreshes_its_lease_keeping_token_and_fencing_token() {
    let f = fixture();
    let first = f
        .engine
        .acquire(None, "k", owner("alice", 30))
        .await
        .unwrap();
    f.clock.advance(Duration::seconds(20));
    let again = f
        .engine
        .acquire(None, "k", holding("alice", first.holder_token(), 30))
        .await
        .unwrap();
    assert_eq!(again.token, first.token);
    assert_eq!(again.fencing_token, first.fencing_token);
    assert_eq!(again.lock_time, t0() + Duration::seconds(20));
}

#[tokio::test]
async fn each_new_holder_gets_a_higher_fencing_token() {
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
    let b = f.engine.acquire(None, "k", owner("bob", 30)).await.unwrap();
    assert_eq!(b.fencing_token, 2);
    f.clock.advance(Duration::seconds(30));
    let c = f
        .engine
        .acquire(None, "k", owner("carol", 30))
        .await
        .unwrap();
    assert_eq!(c.fencing_token, 3, "an expiry takeover is a new holder too");
    let renewed = f
        .engine
        .renew(None, "k", c.holder_token().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(renewed.fencing_token, 3, "a renew is not a new holder");
}

#[tokio::test]
async fn the_expiry_boundary_counts_as_expired() {
    let f = fixture();
    f.engine
        .acquire(None, "k", owner("alice", 30))
        .await
        .unwrap();
    f.clock
        .advance(Duration::seconds(30) - Duration::microseconds(1));
    assert!(matches!(
        f.engine.acquire(None, "k", owner("bob", 30)).await,
        Err(LockError::Held { .. })
    ));
    f.clock.advance(Duration::microseconds(1));
    assert_eq!(
        f.engine
            .acquire(None, "k", owner("bob", 30))
            .await
            .unwrap()
            .fencing_token,
        2
    );
}

#[tokio::test]
async fn after_an_expiry_takeover_the_old_holder_can_neither_renew_nor_release() {
    let f = fixture();
    let old = f
        .engine
        .acquire(None, "k", owner("alice", 5))
        .await
        .unwrap();
    f.clock.advance(Duration::seconds(6));
    let new = f.engine.acquire(None, "k", owner("bob", 30)).await.unwrap();
    let before = f.stored("k").await;
    let old_token = old.holder_token().unwrap();
    assert!(matches!(
        f.engine.renew(None, "k", old_token, None).await,
        Err(LockError::NotHolder(_))
    ));
    assert!(matches!(
        f.engine.release(None, "k", old_token).await,
        Err(LockError::NotHolder(_))
    ));
    assert_eq!(
        f.stored("k").await,
        before,
        "the new holder's lock is untouched"
    );
    assert!(new.fencing_token > old.fencing_token);
}

#[tokio::test]
async fn a_lease_that_ran_out_cannot_be_renewed_even_if_nobody_took_it() {
    let f = fixture();
    let a = f
        .engine
        .acquire(None, "k", owner("alice", 5))
        .await
        .unwrap();
    f.clock.advance(Duration::seconds(5));
    assert!(matches!(
        f.engine
            .renew(None, "k", a.holder_token().unwrap(), None)
            .await,
        Err(LockError::NotHolder(_))
    ));
}

#[tokio::test]
async fn renew_extends_the_lease_from_now() {
    let f = fixture();
    let a = f
        .engine
        .acquire(None, "k", owner("alice", 10))
        .await
        .unwrap();
    f.clock.advance(Duration::seconds(8));
    let r = f
        .engine
        .renew(None, "k", a.holder_token().unwrap(), Some(20))
        .await
        .unwrap();
    assert_eq!(r.expires_at, Some(t0() + Duration::seconds(28)));
    assert_eq!(r.token, a.token, "the holder keeps its token");
    f.clock.advance(Duration::seconds(10));
    assert!(matches!(
        f.engine.acquire(None, "k", owner("bob", 30)).await,
        Err(LockError::Held { .. })
    ));
}

#[tokio::test]
async fn release_frees_the_lock_and_is_idempotent_for_its_holder() {
    let f = fixture();
    let a = f
        .engine
        .acquire(None, "k", owner("alice", 30))
        .await
        .unwrap();
    let token = a.holder_token().unwrap();
    let r = f.engine.release(None, "k", token).await.unwrap();
    assert_eq!(r.owner, None);
    assert_eq!(r.release_time, Some(t0()));
    assert_eq!(r.fencing_token, 1, "release keeps the fencing token");
    assert!(r.token.is_none() && !r.locked);
    let after_first = f.stored("k").await;
    let again = f.engine.release(None, "k", token).await.unwrap();
    assert_eq!(again.owner, None);
    assert_eq!(
        f.stored("k").await,
        after_first,
        "a second release writes nothing"
    );
    assert!(matches!(
        f.engine.renew(None, "k", token, None).await,
        Err(LockError::NotHolder(_))
    ));
}

#[tokio::test]
async fn a_stale_token_cannot_release_the_new_holders_lock() {
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
    f.engine.acquire(None, "k", owner("bob", 30)).await.unwrap();
    let before = f.stored("k").await;
    assert!(matches!(
        f.engine.release(None, "k", a.holder_token().unwrap()).await,
        Err(LockError::NotHolder(_))
    ));
    assert!(matches!(
        f.engine.release(None, "k", "made-up").await,
        Err(LockError::NotHolder(_))
    ));
    assert_eq!(f.stored("k").await, before);
}

#[tokio::test]
async fn renew_and_release_of_a_lock_that_never_existed_are_not_found() {
    let f = fixture();
    assert!(matches!(
        f.engine.renew(None, "k", "t", None).await,
        Err(LockError::NotFound)
    ));
    assert!(matches!(
        f.engine.release(None, "k", "t").await,
        Err(LockError::NotFound)
    ));
    assert_eq!(f.stored("k").await, None);
}

#[tokio::test]
async fn status_follows_the_seed_is_locked_rule_and_never_shows_the_token() {
    let f = fixture();
    let never = f.engine.status(None, "k", None).await.unwrap();
    assert!(!never.locked && never.owner.is_none() && never.fencing_token == 0);
    f.engine
        .acquire(None, "k", owner("alice", 30))
        .await
        .unwrap();
    let seen_by_anyone = f.engine.status(None, "k", None).await.unwrap();
    assert!(seen_by_anyone.locked);
    assert!(seen_by_anyone.token.is_none());
    assert!(
        f.engine
            .status(None, "k", Some("bob"))
            .await
            .unwrap()
            .locked
    );
    assert!(
        !f.engine
            .status(None, "k", Some("alice"))
            .await
            .unwrap()
            .locked
    );
    f.clock.advance(Duration::seconds(30));
    assert!(
        !f.engine
            .status(None, "k", Some("bob"))
            .await
            .unwrap()
            .locked
    );
}

#[tokio::test]
async fn a_seed_lock_is_respected_until_it_expires_then_taken_over() {
    let f = fixture();
    f.put_raw(
        "seed",
        r#"{"expire": 60, "lock_time": "2026-11-26T00:00:00+00:00", "release_time": null, "owner": "bob"}"#,
    )
    .await;
    assert!(matches!(
        f.engine.acquire(None, "seed", owner("alice", 30)).await,
        Err(LockError::Held { ref owner, .. }) if owner == "bob"
    ));
    assert!(f.engine.status(None, "seed", None).await.unwrap().locked);
    f.clock.advance(Duration::seconds(60));
    let taken = f
        .engine
        .acquire(None, "seed", owner("alice", 30))
        .await
        .unwrap();
    assert_eq!(taken.fencing_token, 1);
}

#[tokio::test]
async fn a_seed_lock_is_not_taken_over_by_its_own_owner_name_until_it_expires() {
    let f = fixture();
    let seed = r#"{"expire": 60, "lock_time": "2026-11-26T00:00:00+00:00", "release_time": null, "owner": "bob"}"#;
    f.put_raw("seed", seed).await;
    // The name is public (a 409 shows it): naming it proves nothing.
    assert!(matches!(
        f.engine.acquire(None, "seed", owner("bob", 30)).await,
        Err(LockError::Held { ref owner, .. }) if owner == "bob"
    ));
    assert_eq!(f.stored("seed").await.unwrap(), seed.as_bytes());
    f.clock.advance(Duration::seconds(60));
    let v = f
        .engine
        .acquire(None, "seed", owner("bob", 30))
        .await
        .unwrap();
    assert!(v.token.is_some());
    assert_eq!(v.fencing_token, 1);
}

#[tokio::test]
async fn an_acquire_naming_the_holder_without_its_token_is_refused_and_learns_no_token() {
    let f = fixture();
    let alice = f
        .engine
        .acquire(None, "payroll", owner("alice", 60))
        .await
        .unwrap();
    let before = f.stored("payroll").await.unwrap();
    // mallory read "alice" from a 409 and names her, with no token or with a guessed one.
    for token in [None, Some("not-the-token"), Some("")] {
        match f
            .engine
            .acquire(None, "payroll", holding("alice", token, 60))
            .await
        {
            Err(LockError::Held { owner, .. }) => assert_eq!(owner, "alice"),
            other => panic!("mallory as alice with {token:?}: {other:?}"),
        }
        assert_eq!(f.stored("payroll").await.unwrap(), before);
    }
    // alice's token of another lock is no proof either.
    let other = f
        .engine
        .acquire(None, "other", owner("alice", 60))
        .await
        .unwrap();
    assert!(matches!(
        f.engine
            .acquire(None, "payroll", holding("alice", other.holder_token(), 60))
            .await,
        Err(LockError::Held { .. })
    ));
    // alice herself, with her token, refreshes and keeps token and fencing token.
    let again = f
        .engine
        .acquire(None, "payroll", holding("alice", alice.holder_token(), 60))
        .await
        .unwrap();
    assert_eq!(again.token, alice.token);
    assert_eq!(again.fencing_token, alice.fencing_token);
}

#[tokio::test]
async fn the_holder_token_is_no_refresh_for_another_owner_name() {
    let f = fixture();
    let alice = f
        .engine
        .acquire(None, "k", owner("alice", 60))
        .await
        .unwrap();
    assert!(matches!(
        f.engine
            .acquire(None, "k", holding("bob", alice.holder_token(), 60))
            .await,
        Err(LockError::Held { .. })
    ));
}

#[tokio::test]
async fn every_write_of_a_lock_stores_a_body_never_stored_before() {
    let f = fixture();
    // The clock held still: every write would stamp the same lock_time.
    let mut seen = std::collections::HashSet::new();
    let a = f
        .engine
        .acquire(None, "k", owner("alice", 60))
        .await
        .unwrap();
    assert!(seen.insert(f.stored("k").await.unwrap()));
    let token = a.holder_token().unwrap();
    for _ in 0..3 {
        f.engine.renew(None, "k", token, Some(60)).await.unwrap();
        assert!(seen.insert(f.stored("k").await.unwrap()), "a renew");
        f.engine
            .acquire(None, "k", holding("alice", Some(token), 60))
            .await
            .unwrap();
        assert!(seen.insert(f.stored("k").await.unwrap()), "a refresh");
    }
    f.engine.release(None, "k", token).await.unwrap();
    assert!(seen.insert(f.stored("k").await.unwrap()), "a release");
    let doc = LockDocument::from_bytes(&f.stored("k").await.unwrap()).unwrap();
    assert_eq!(doc.revision, 8, "one revision per write");
}

#[tokio::test]
async fn racing_acquirers_get_exactly_one_grant() {
    let f = Arc::new(fixture());
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let f = f.clone();
            tokio::spawn(async move {
                f.engine
                    .acquire(None, "race", owner(&format!("o{i}"), 30))
                    .await
            })
        })
        .collect();
    let mut granted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => granted += 1,
            Err(LockError::Held { .. }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(granted, 1);
}

#[tokio::test]
async fn a_fencing_token_at_the_top_of_its_range_never_wraps_to_zero() {
    let f = fixture();
    f.put_raw(
        "top",
        &format!(
            r#"{{"expire": 1, "lock_time": "2020-01-01T00:00:00+00:00", "release_time": null, "owner": null, "fencing_token": {}}}"#,
            u64::MAX
        ),
    )
    .await;
    assert!(matches!(
        f.engine.acquire(None, "top", owner("alice", 30)).await,
        Err(LockError::Unreadable(_))
    ));
}

#[tokio::test]
async fn a_reentrant_refresh_with_a_shorter_ttl_never_shortens_the_lease() {
    let f = fixture();
    let long = f.alice_holds_k().await;
    f.clock.advance(Duration::seconds(100));
    let short = f
        .engine
        .acquire(None, "k", holding("alice", long.holder_token(), 60))
        .await
        .unwrap();
    assert_eq!(short.token, long.token);
    assert_eq!(
        short.lock_time,
        t0() + Duration::seconds(100),
        "lock_time is refreshed"
    );
    assert_eq!(
        short.expires_at, long.expires_at,
        "the lease still ends when it did"
    );
}
