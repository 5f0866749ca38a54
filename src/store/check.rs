//! The start-up store check: before serving, prove on throw-away probe objects that the store
//! really enforces conditional writes, one at a time and under a concurrent race. Some
//! S3-compatible servers accept `If-None-Match` / `If-Match` and ignore them (Garage), or check
//! them without a lock so that racing writers all win (s3s-fs); a lock service on such a store
//! would grant one lock to many holders, so it must refuse to start.

use bytes::Bytes;
use futures_util::future::join_all;

use super::{Store, StoreError};

/// Writers in each probe race, and rounds of the create race.
const RACERS: usize = 8;
const ROUNDS: usize = 3;

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
    let result = probe(store, bucket, &single, &race).await;
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
    single: &str,
    race: &str,
) -> Result<(), CheckError> {
    let body = |s: &str| Bytes::from(format!("{{\"probe\":\"{s}\"}}"));

    let first = store.put_if_absent(bucket, single, body("first")).await?;
    match store.put_if_absent(bucket, single, body("second")).await {
        Err(StoreError::PreconditionFailed) => {}
        Ok(_) => return Err(CheckError::IgnoresIfNoneMatch),
        Err(e) => return Err(e.into()),
    }
    store
        .put_if_version(bucket, single, body("third"), &first)
        .await?;
    match store
        .put_if_version(bucket, single, body("stale"), &first)
        .await
    {
        Err(StoreError::PreconditionFailed) => {}
        Ok(_) => return Err(CheckError::IgnoresIfMatch),
        Err(e) => return Err(e.into()),
    }

    // Several rounds: a store that checks without a lock can still show one winner by luck.
    for round in 0..ROUNDS {
        let key = format!("{race}-{round}");
        let creates = join_all(
            (0..RACERS).map(|i| store.put_if_absent(bucket, &key, body(&format!("create-{i}")))),
        )
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
    store.put_if_absent(bucket, race, body("start")).await?;
    let current = store
        .get(bucket, race)
        .await?
        .ok_or_else(|| StoreError::Other("the probe object vanished".into()))?;
    let updates = join_all((0..RACERS).map(|i| {
        store.put_if_version(bucket, race, body(&format!("update-{i}")), &current.version)
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

fn count_winners<T>(results: Vec<Result<T, StoreError>>) -> Result<usize, CheckError> {
    let mut winners = 0;
    for r in results {
        match r {
            Ok(_) => winners += 1,
            Err(StoreError::PreconditionFailed) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(winners)
}
