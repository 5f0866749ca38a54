//! The engine's tests, on the memory store with a clock the tests move: the fixture and the
//! faulty store here, the tests by subject in the files below.

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
use crate::store::{ListPage, Version, Versioned};
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
        max_lock_delay: 60,
        max_wait: StdDuration::from_secs(60),
        first_poll: FIRST_POLL,
        max_poll: MAX_POLL,
        max_watched_locks: DEFAULT_MAX_WATCHED_LOCKS,
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
        ..AcquireRequest::default()
    }
}

/// An acquire by `name` that waits up to `wait` seconds while the lock is held.
fn waiting(name: &str, ttl: i64, wait: f64) -> AcquireRequest {
    AcquireRequest {
        wait: Some(wait),
        ..owner(name, ttl)
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
    /// A write so slow that the store's clock moves this far while it travels (once).
    slow_next_write: Mutex<Option<(Arc<ManualClock>, Duration)>>,
    /// The next read is served at once but its answer held back until the test opens the gate
    /// (a response slow on the wire): (told when the read has been served, opens it).
    slow_next_read: Mutex<Option<(Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>)>>,
    /// The same for the next write: applied at once, its answer held back until the gate opens
    /// (while other writers go on).
    slow_next_write_answer: Mutex<Option<(Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>)>>,
    /// Writes that pass untouched before the fault set with [`FaultyStore::set`] applies.
    fault_skips_writes: Mutex<usize>,
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

    /// Holds the answer of the next write back: returns (told once the write is applied, opens
    /// the gate).
    fn hold_next_write_answer(&self) -> (Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>) {
        let gate = (
            Arc::new(tokio::sync::Notify::new()),
            Arc::new(tokio::sync::Notify::new()),
        );
        *self.slow_next_write_answer.lock().unwrap() = Some(gate.clone());
        gate
    }

    async fn answer_gate(&self) {
        let gate = self.slow_next_write_answer.lock().unwrap().take();
        if let Some((served, open)) = gate {
            served.notify_one();
            open.notified().await;
        }
    }

    fn take_write_fault(&self) -> Option<Fault> {
        {
            let mut skips = self.fault_skips_writes.lock().unwrap();
            if *skips > 0 {
                *skips -= 1;
                return None;
            }
        }
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

    /// The clock moves on while a write travels, as on a slow or retried write.
    fn slow_write(&self) {
        if let Some((clock, by)) = self.slow_next_write.lock().unwrap().take() {
            clock.advance(by);
        }
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
        let found = self.inner.get(bucket, key).await;
        let gate = self.slow_next_read.lock().unwrap().take();
        if let Some((served, open)) = gate {
            served.notify_one();
            open.notified().await;
        }
        found
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
        let written = self.inner.put_if_absent(bucket, key, body).await;
        self.slow_write();
        self.answer_gate().await;
        Self::after_write(fault, written)
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
        let written = self.inner.put_if_version(bucket, key, body, expected).await;
        self.slow_write();
        self.answer_gate().await;
        Self::after_write(fault, written)
    }
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> Result<ListPage, StoreError> {
        self.inner
            .list_page(bucket, prefix, start_after, max_keys)
            .await
    }
    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.inner.delete(bucket, key).await
    }
}

impl Fixture {
    /// alice acquires lock "k" with a 600 s lease, through this fixture's engine.
    async fn alice_holds_k(&self) -> LockView {
        self.engine
            .acquire(None, "k", owner("alice", 600))
            .await
            .unwrap()
    }

    /// `req` on lock "k", on a task of its own (an acquire that waits).
    fn spawn_acquire(
        self: &Arc<Self>,
        req: AcquireRequest,
    ) -> tokio::task::JoinHandle<Result<LockView, LockError>> {
        let f = self.clone();
        tokio::spawn(async move { f.engine.acquire(None, "k", req).await })
    }

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

mod cache;
mod faults;
mod input;
mod lock_delay;
mod metrics;
mod readiness;
mod rules;
mod shared;
mod waiting;
