//! The start-up store check: before serving, prove on throw-away probe objects that the store
//! really enforces conditional writes, one at a time and under a concurrent race. Some
//! S3-compatible servers accept `If-None-Match` / `If-Match` and ignore them (Garage), or check
//! them without a lock so that racing writers all win (s3s-fs); a lock service on such a store
//! would grant one lock to many holders, so it must refuse to start.
//!
//! The probe's writes meet the same lost answers as the engine's (an SDK retry of a write that
//! landed fails its own precondition), so each is settled the way the engine settles its own:
//! by reading back, our body stored meaning it landed. Every probe body is unique, and every
//! run writes under a key of its own (a random run id), so replicas starting together never
//! touch each other's probes.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;

use super::{Store, StoreError, Version};
use crate::backoff::Backoff;

/// Writers in each probe race, and rounds of the create race.
const RACERS: usize = 8;
const ROUNDS: usize = 3;
/// Read-backs tried after a probe write whose answer never came.
const READ_BACK_ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(
        "the store ignores If-None-Match: a conditional create of an existing object succeeded"
    )]
    IgnoresIfNoneMatch,
    #[error("the store ignores If-Match: a write with a stale ETag succeeded")]
    IgnoresIfMatch,
    #[error("the store's conditional writes are not atomic: {winners} of {RACERS} racing {kind} writers won (must be exactly 1)")]
    NotAtomic { kind: &'static str, winners: usize },
    #[error("the store check could not run: {0}")]
    Store(#[from] StoreError),
}

/// Runs the check under `prefix` in `bucket`, and removes its probe objects afterwards.
pub async fn verify_conditional_writes(
    store: &dyn Store,
    bucket: &str,
    prefix: &str,
) -> Result<(), CheckError> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let single = format!("{prefix}.s3lock-probe/{run}/single");
    let race = format!("{prefix}.s3lock-probe/{run}/race");
    let result = probe(store, bucket, &run, &single, &race).await;
    for key in [&single, &race] {
        if let Err(e) = store.delete(bucket, key).await {
            tracing::warn!(key, error = %e, "could not remove a store-check probe object");
        }
    }
    result
}

async fn probe(
    store: &dyn Store,
    bucket: &str,
    run: &str,
    single: &str,
    race: &str,
) -> Result<(), CheckError> {
    // Unique per run and per write, so a read-back recognises exactly this write.
    let body = |s: &str| Bytes::from(format!("{{\"probe\":\"{run}/{s}\"}}"));
    let landed = |outcome: Probe| match outcome {
        Probe::Landed(version) => Ok(version),
        // Only this run writes this key: a refusal here means the store is broken, not busy.
        Probe::Refused => Err(CheckError::Store(StoreError::PreconditionFailed)),
    };

    let first = landed(put(store, bucket, single, body("first"), None).await?)?;
    if let Probe::Landed(_) = put(store, bucket, single, body("second"), None).await? {
        return Err(CheckError::IgnoresIfNoneMatch);
    }
    landed(put(store, bucket, single, body("third"), Some(&first)).await?)?;
    if let Probe::Landed(_) = put(store, bucket, single, body("stale"), Some(&first)).await? {
        return Err(CheckError::IgnoresIfMatch);
    }

    // Several rounds: a store that checks without a lock can still show one winner by luck.
    for round in 0..ROUNDS {
        let key = format!("{race}-{round}");
        let creates = join_all((0..RACERS).map(|i| {
            put(
                store,
                bucket,
                &key,
                body(&format!("create-{round}-{i}")),
                None,
            )
        }))
        .await;
        let winners = count_winners(creates)?;
        let _ = store.delete(bucket, &key).await;
        if winners != 1 {
            return Err(CheckError::NotAtomic {
                kind: "If-None-Match",
                winners,
            });
        }
    }
    let start = landed(put(store, bucket, race, body("start"), None).await?)?;
    let updates = join_all((0..RACERS).map(|i| {
        put(
            store,
            bucket,
            race,
            body(&format!("update-{i}")),
            Some(&start),
        )
    }))
    .await;
    let winners = count_winners(updates)?;
    if winners != 1 {
        return Err(CheckError::NotAtomic {
            kind: "If-Match",
            winners,
        });
    }
    Ok(())
}

/// How a probe write ended, any doubt settled.
enum Probe {
    /// Our body is what is stored, at this version.
    Landed(Version),
    /// The store refused it: the condition did not hold, and never will for this write.
    Refused,
}

/// A conditional probe write (`If-None-Match: *` without `expected`, else `If-Match`), settled
/// as the engine settles its own: a failed precondition or a lost answer is followed by a
/// read-back, and our (unique) body stored means the write landed. After a lost answer the write
/// may still be on its way, so a refusal is only sure once the object has moved past the state
/// the write was conditioned on; otherwise the check cannot run.
async fn put(
    store: &dyn Store,
    bucket: &str,
    key: &str,
    body: Bytes,
    expected: Option<&Version>,
) -> Result<Probe, CheckError> {
    let outcome = match expected {
        None => store.put_if_absent(bucket, key, body.clone()).await,
        Some(v) => store.put_if_version(bucket, key, body.clone(), v).await,
    };
    let mut doubt = match outcome {
        Ok(version) => return Ok(Probe::Landed(version)),
        Err(StoreError::PreconditionFailed) => None,
        Err(StoreError::Unavailable(why)) => Some(why),
        Err(e) => return Err(e.into()),
    };
    let in_flight = doubt.is_some();
    let mut backoff = Backoff::exponential(Duration::from_millis(200), 2, Duration::MAX);
    for attempt in 0..READ_BACK_ATTEMPTS {
        if attempt > 0 {
            backoff.wait().await;
        }
        match store.get(bucket, key).await {
            Ok(Some(stored)) if stored.body == body => return Ok(Probe::Landed(stored.version)),
            Ok(stored) => {
                let unchanged = stored.as_ref().map(|s| &s.version) == expected;
                if in_flight && unchanged {
                    doubt =
                        Some("a probe write's answer was lost and it has not landed (yet)".into());
                    break;
                }
                return Ok(Probe::Refused);
            }
            Err(e) => doubt = Some(e.to_string()),
        }
    }
    Err(StoreError::Unavailable(doubt.unwrap_or_default()).into())
}

/// The racers that won, each counted once: a racer's outcome is settled to one answer.
fn count_winners(results: Vec<Result<Probe, CheckError>>) -> Result<usize, CheckError> {
    let mut winners = 0;
    for r in results {
        if let Probe::Landed(_) = r? {
            winners += 1;
        }
    }
    Ok(winners)
}
