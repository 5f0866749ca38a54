//! The protocol's rules, on the memory store with a clock the tests move.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};

use super::*;
use crate::clock::ManualClock;
use crate::store::memory::MemoryStore;
use crate::store::{Version, Versioned};
use tokio::time::Instant;

const BUCKET: &str = "default";

fn t0() -> DateTime<Utc> {
    document::parse_seed_time("2026-11-26T00:00:00+00:00").unwrap()
}

fn config() -> EngineConfig {
    EngineConfig {
        default_bucket: BUCKET.into(),
        allowed_buckets: BTreeSet::from([BUCKET.into(), "other-bucket".into()]),
        prefix: "locks/".into(),
        default_ttl: 60,
        max_ttl: 3600,
        max_wait: StdDuration::from_secs(60),
    }
}

struct Fixture {
    engine: Engine,
    store: Arc<FaultyStore>,
    clock: Arc<ManualClock>,
}

fn fixture() -> Fixture {
    let store = Arc::new(FaultyStore::default());
    let clock = Arc::new(ManualClock::new(t0()));
    Fixture {
        engine: Engine::new(store.clone(), clock.clone(), config()),
        store,
        clock,
    }
}

fn owner(name: &str, ttl: i64) -> AcquireRequest {
    AcquireRequest {
        owner: Some(name.into()),
        token: None,
        ttl: Some(ttl),
        wait: None,
    }
}

/// An acquire by `name` presenting the holder token of the lease it holds (a refresh).
fn holding(name: &str, token: Option<&str>, ttl: i64) -> AcquireRequest {
    AcquireRequest {
        token: token.map(|t| HolderToken::from(t.to_owned())),
        ..owner(name, ttl)
    }
}

impl Fixture {
    async fn stored(&self, key: &str) -> Option<Bytes> {
        self.store
            .inner
            .get(BUCKET, &format!("locks/{key}"))
            .await
            .unwrap()
            .map(|v| v.body)
    }

    async fn put_raw(&self, key: &str, body: &str) {
        self.store
            .inner
            .put_if_absent(
                BUCKET,
                &format!("locks/{key}"),
                Bytes::from(body.to_owned()),
            )
            .await
            .unwrap();
    }
}

/// A memory store that can be told to misbehave the way real networks do.
#[derive(Debug, Default)]
struct FaultyStore {
    inner: MemoryStore,
    fault: Mutex<Option<Fault>>,
    /// A write held back by [`Fault::ParkNextWrite`], to be landed later by the test.
    parked: Mutex<Option<Parked>>,
    gets: AtomicUsize,
    /// Conditional writes tried (both kinds), to count round trips.
    writes: AtomicUsize,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Apply the next write, then report the store unreachable (the response was lost).
    LoseNextWriteResponse,
    /// Apply the next write, then report a failed precondition (the SDK retried our own
    /// successful write and the retry found the object changed — by us).
    RetryIntoOwnWrite,
    /// Every call fails as unreachable.
    Down,
    /// Hold the next write back and report it timed out; [`FaultyStore::land_parked`] delivers
    /// it later, with its condition, as a request delayed in the network would arrive.
    ParkNextWrite,
    /// Apply the next write, then answer with a plain refusal (what an SDK retry of a landed
    /// write can get back: a 403 or 400 rather than a failed precondition).
    ApplyThenRefuse,
}

#[derive(Debug)]
struct Parked {
    bucket: String,
    key: String,
    body: Bytes,
    /// `None`: a create (`If-None-Match: *`).
    expected: Option<Version>,
}

impl FaultyStore {
    fn set(&self, fault: Option<Fault>) {
        *self.fault.lock().unwrap() = fault;
    }

    fn take_write_fault(&self) -> Option<Fault> {
        let mut f = self.fault.lock().unwrap();
        match *f {
            Some(Fault::Down) => Some(Fault::Down),
            other => {
                *f = None;
                other
            }
        }
    }

    /// Delivers the parked write now; whether it landed.
    async fn land_parked(&self) -> bool {
        let p = self.parked.lock().unwrap().take().expect("a parked write");
        let landed = match &p.expected {
            None => self.inner.put_if_absent(&p.bucket, &p.key, p.body).await,
            Some(v) => {
                self.inner
                    .put_if_version(&p.bucket, &p.key, p.body, v)
                    .await
            }
        };
        landed.is_ok()
    }

    fn park(&self, bucket: &str, key: &str, body: Bytes, expected: Option<&Version>) -> StoreError {
        *self.parked.lock().unwrap() = Some(Parked {
            bucket: bucket.into(),
            key: key.into(),
            body,
            expected: expected.cloned(),
        });
        StoreError::Unavailable("timed out".into())
    }

    fn down(&self) -> bool {
        matches!(*self.fault.lock().unwrap(), Some(Fault::Down))
    }

    fn after_write(
        fault: Option<Fault>,
        r: Result<Version, StoreError>,
    ) -> Result<Version, StoreError> {
        match (fault, r) {
            (Some(Fault::LoseNextWriteResponse), Ok(_)) => {
                Err(StoreError::Unavailable("response lost".into()))
            }
            (Some(Fault::RetryIntoOwnWrite), Ok(_)) => Err(StoreError::PreconditionFailed),
            (Some(Fault::ApplyThenRefuse), Ok(_)) => Err(StoreError::Other(
                "AccessDenied on a retried request".into(),
            )),
            (_, r) => r,
        }
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        if self.down() {
            return Err(StoreError::Unavailable("down".into()));
        }
        self.inner.get(bucket, key).await
    }
    async fn put_if_absent(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
    ) -> Result<Version, StoreError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        let fault = self.take_write_fault();
        match fault {
            Some(Fault::Down) => return Err(StoreError::Unavailable("down".into())),
            Some(Fault::ParkNextWrite) => return Err(self.park(bucket, key, body, None)),
            _ => {}
        }
        Self::after_write(fault, self.inner.put_if_absent(bucket, key, body).await)
    }
    async fn put_if_version(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        expected: &Version,
    ) -> Result<Version, StoreError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        let fault = self.take_write_fault();
        match fault {
            Some(Fault::Down) => return Err(StoreError::Unavailable("down".into())),
            Some(Fault::ParkNextWrite) => return Err(self.park(bucket, key, body, Some(expected))),
            _ => {}
        }
        Self::after_write(
            fault,
            self.inner.put_if_version(bucket, key, body, expected).await,
        )
    }
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(bucket, prefix).await
    }
    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.inner.delete(bucket, key).await
    }
}

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
        .acquire(
            None,
            "k",
            AcquireRequest {
                wait: Some(20.0),
                ..owner("alice", 30)
            },
        )
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

#[tokio::test]
async fn bad_input_is_refused_before_the_store_is_touched() {
    let f = fixture();
    let cases: Vec<(Option<&str>, String, AcquireRequest, &str)> = vec![
        (None, "".into(), owner("a", 30), "key"),
        (None, "a//b".into(), owner("a", 30), "key"),
        (None, "a/../b".into(), owner("a", 30), "key"),
        (None, "a\u{1}".into(), owner("a", 30), "key"),
        (None, "k".repeat(513), owner("a", 30), "key"),
        (None, "k".into(), owner("a", 0), "ttl"),
        (None, "k".into(), owner("a", -5), "ttl"),
        (None, "k".into(), owner("a", 3601), "ttl"),
        (None, "k".into(), owner("", 30), "owner"),
        (
            None,
            "k".into(),
            AcquireRequest {
                wait: Some(-1.0),
                ..owner("a", 30)
            },
            "wait",
        ),
        (
            None,
            "k".into(),
            AcquireRequest {
                wait: Some(61.0),
                ..owner("a", 30)
            },
            "wait",
        ),
        (
            None,
            "k".into(),
            AcquireRequest {
                wait: Some(f64::NAN),
                ..owner("a", 30)
            },
            "wait",
        ),
    ];
    for (bucket, key, req, field) in cases {
        match f.engine.acquire(bucket, &key, req).await {
            Err(LockError::InvalidInput { field: got, .. }) => assert_eq!(got, field, "{key:?}"),
            other => panic!("{key:?}: expected invalid {field}, got {other:?}"),
        }
    }
    assert!(matches!(
        f.engine
            .acquire(Some("elsewhere"), "k", owner("a", 30))
            .await,
        Err(LockError::BucketNotAllowed(_))
    ));
    assert_eq!(
        f.store.gets.load(Ordering::SeqCst),
        0,
        "no bad request reached the store"
    );
}

#[tokio::test]
async fn another_allowed_bucket_is_a_separate_namespace() {
    let f = fixture();
    f.engine
        .acquire(None, "k", owner("alice", 30))
        .await
        .unwrap();
    let other = f
        .engine
        .acquire(Some("other-bucket"), "k", owner("bob", 30))
        .await
        .unwrap();
    assert_eq!(other.bucket, "other-bucket");
    assert_eq!(other.fencing_token, 1);
}

#[tokio::test]
async fn list_shows_locks_under_a_prefix_without_tokens() {
    let f = fixture();
    for k in ["jobs/a", "jobs/b", "other"] {
        f.engine.acquire(None, k, owner("alice", 30)).await.unwrap();
    }
    f.put_raw("jobs/unreadable", "garbage").await;
    let views = f.engine.list(None, "jobs/").await.unwrap();
    let keys: Vec<_> = views.iter().map(|v| v.key.as_str()).collect();
    assert_eq!(keys, ["jobs/a", "jobs/b"]);
    assert!(views.iter().all(|v| v.token.is_none() && v.locked));
    assert_eq!(f.engine.list(None, "").await.unwrap().len(), 3);
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

impl Fixture {
    /// Reads and writes the store has seen so far.
    fn round_trips(&self) -> (usize, usize) {
        (
            self.store.gets.load(Ordering::SeqCst),
            self.store.writes.load(Ordering::SeqCst),
        )
    }

    /// Another replica over the same store and clock, with a cache of its own.
    fn other_replica(&self) -> Engine {
        Engine::new(self.store.clone(), self.clock.clone(), config())
    }
}

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
    let long = f
        .engine
        .acquire(None, "k", owner("alice", 600))
        .await
        .unwrap();
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
