//! `s3lock check`: a contention checker users can run against their own servers. Many clients
//! hammer a few keys through one or more replicas (acquire, hold briefly, release), every grant is
//! recorded as the clients saw it, and the record is searched for violations of the lock's
//! promises. Any violation means the service (or the store under it) is not safe.

use secrecy::SecretString;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;

use super::{ClientError, LockClient};
use crate::backoff::Backoff;
use crate::tls::client::ClientTls;
use crate::wire::HolderToken;

#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// Base URLs of the replicas; client `i` talks to `urls[i % len]`.
    pub urls: Vec<String>,
    pub bearer: Option<SecretString>,
    pub clients: usize,
    pub keys: usize,
    /// Keys are `{key_prefix}{0..keys}`.
    pub key_prefix: String,
    pub duration: Duration,
    pub ttl: u64,
    /// Seconds each acquire may wait for a held lock.
    pub wait: f64,
    /// Each hold lasts a random time up to this.
    pub max_hold: Duration,
    /// What the clients trust and present over https.
    pub tls: ClientTls,
}

/// One hold as its client saw it: from the grant's answer arriving to just before its release
/// was sent. If the lock is safe, two holds of a key can never overlap: the next grant can only
/// be made after the release, which is sent after `end`.
#[derive(Debug, Clone, Serialize)]
pub struct Grant {
    pub key: String,
    pub client: usize,
    pub fencing_token: u64,
    #[serde(skip)]
    pub start: Instant,
    #[serde(skip)]
    pub end: Instant,
    /// Offsets from the run's start, for reports.
    pub start_ms: f64,
    pub end_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    /// Two clients held one lock at the same time.
    Overlap { first: Grant, second: Grant },
    /// A later grant carried a fencing token not higher than an earlier one.
    FencingOutOfOrder { earlier: Grant, later: Grant },
    /// A holder's release, inside its lease, was refused: someone else had the lock.
    LostRelease {
        key: String,
        client: usize,
        detail: String,
    },
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct CheckReport {
    pub grants: usize,
    /// Acquires answered "held by another" after waiting.
    pub refusals: usize,
    /// Requests that failed for other reasons (store unavailable, transport): not violations,
    /// but a run with many of them proves little.
    pub errors: usize,
    /// Releases answered `write-unconfirmed` (may have landed; the lock changed before it could
    /// be proven): not violations, as the answer claims nothing false, but a run where many
    /// releases cannot be confirmed deserves a look.
    pub unconfirmed_releases: usize,
    pub keys_granted: usize,
    pub violations: Vec<Violation>,
}

/// Runs the check and returns what it found.
pub async fn run(config: CheckConfig) -> CheckReport {
    let origin = Instant::now();
    let stop_at = origin + config.duration;
    let grants: Arc<Mutex<Vec<Grant>>> = Arc::default();
    let tally: Arc<Mutex<CheckReport>> = Arc::default();
    let clients: Vec<_> = (0..config.clients)
        .map(|client| {
            let config = config.clone();
            let (grants, tally) = (grants.clone(), tally.clone());
            let api = LockClient::with_tls(
                &config.urls[client % config.urls.len()],
                config.bearer.clone(),
                &config.tls,
            );
            tokio::spawn(async move {
                let owner = format!("check-client-{client}");
                let mut after_error = Backoff::constant(Duration::from_millis(20));
                while Instant::now() < stop_at {
                    let key = format!(
                        "{}{}",
                        config.key_prefix,
                        rand::rng().random_range(0..config.keys)
                    );
                    // The lease runs from the grant, which comes after the acquire is sent: counted
                    // from here, "inside the lease" is never overestimated.
                    let sent = Instant::now();
                    let granted = match api
                        .acquire(&key, Some(&owner), Some(config.ttl), Some(config.wait))
                        .await
                    {
                        Ok(view) => view,
                        Err(ClientError::Held { .. }) => {
                            tally.lock().unwrap().refusals += 1;
                            continue;
                        }
                        Err(_) => {
                            tally.lock().unwrap().errors += 1;
                            after_error.wait().await;
                            continue;
                        }
                    };
                    let start = Instant::now();
                    let hold = config.max_hold.mul_f64(rand::rng().random::<f64>());
                    tokio::time::sleep(hold).await;
                    let end = Instant::now();
                    let token = granted
                        .token
                        .clone()
                        .map(HolderToken::into_exposed)
                        .unwrap_or_default();
                    release_until_answered(&api, &key, &token, client, &tally, sent, config.ttl)
                        .await;
                    let ms = |t: Instant| t.duration_since(origin).as_secs_f64() * 1000.0;
                    grants.lock().unwrap().push(Grant {
                        key,
                        client,
                        fencing_token: granted.fencing_token,
                        start,
                        end,
                        start_ms: ms(start),
                        end_ms: ms(end),
                    });
                }
            })
        })
        .collect();
    for c in clients {
        let _ = c.await;
    }
    let grants = grants.lock().unwrap().clone();
    let mut report = tally.lock().unwrap().clone();
    report.grants = grants.len();
    report.keys_granted = grants
        .iter()
        .map(|g| g.key.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    report.violations.extend(find_violations(&grants));
    report
}

/// Releases, retrying while the answer proves nothing (store unavailable, transport). A refusal
/// while the lease cannot have run out yet is a lost release.
async fn release_until_answered(
    api: &LockClient,
    key: &str,
    token: &str,
    client: usize,
    tally: &Mutex<CheckReport>,
    sent: Instant,
    ttl: u64,
) {
    let mut after_error = Backoff::constant(Duration::from_millis(50));
    for _ in 0..20 {
        match api.release(key, token).await {
            Ok(_) => return,
            Err(ClientError::WriteUnconfirmed { .. }) => {
                tally.lock().unwrap().unconfirmed_releases += 1;
                return;
            }
            Err(e @ (ClientError::NotHolder { .. } | ClientError::NotFound)) => {
                // Past the lease, losing the lock is the lease doing its job.
                if sent.elapsed() < Duration::from_secs(ttl) {
                    tally
                        .lock()
                        .unwrap()
                        .violations
                        .push(Violation::LostRelease {
                            key: key.to_owned(),
                            client,
                            detail: e.to_string(),
                        });
                }
                return;
            }
            Err(_) => {
                tally.lock().unwrap().errors += 1;
                after_error.wait().await;
            }
        }
    }
}

/// Searches a record of grants for overlapping holds and fencing tokens out of grant order.
pub fn find_violations(grants: &[Grant]) -> Vec<Violation> {
    let mut by_key: BTreeMap<&str, Vec<&Grant>> = BTreeMap::new();
    for g in grants {
        by_key.entry(&g.key).or_default().push(g);
    }
    let mut violations = Vec::new();
    for list in by_key.values_mut() {
        list.sort_by_key(|g| g.start);
        for pair in list.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if b.start < a.end {
                violations.push(Violation::Overlap {
                    first: a.clone(),
                    second: b.clone(),
                });
            }
            if b.fencing_token <= a.fencing_token {
                violations.push(Violation::FencingOutOfOrder {
                    earlier: a.clone(),
                    later: b.clone(),
                });
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(
        key: &str,
        client: usize,
        fencing_token: u64,
        start_ms: u64,
        end_ms: u64,
        origin: Instant,
    ) -> Grant {
        Grant {
            key: key.into(),
            client,
            fencing_token,
            start: origin + Duration::from_millis(start_ms),
            end: origin + Duration::from_millis(end_ms),
            start_ms: start_ms as f64,
            end_ms: end_ms as f64,
        }
    }

    #[test]
    fn back_to_back_holds_with_growing_fencing_tokens_are_clean() {
        let o = Instant::now();
        let grants = [
            grant("a", 1, 1, 0, 10, o),
            grant("a", 2, 2, 10, 20, o),
            grant("b", 1, 1, 5, 30, o),
        ];
        assert!(find_violations(&grants).is_empty());
    }

    #[test]
    fn overlapping_holds_of_one_key_are_reported() {
        let o = Instant::now();
        let v = find_violations(&[grant("a", 2, 2, 5, 20, o), grant("a", 1, 1, 0, 10, o)]);
        assert!(
            matches!(v.as_slice(), [Violation::Overlap { first, second }] if first.client == 1 && second.client == 2),
            "{v:?}"
        );
    }

    #[test]
    fn a_fencing_token_that_does_not_grow_is_reported() {
        let o = Instant::now();
        let v = find_violations(&[grant("a", 1, 5, 0, 10, o), grant("a", 2, 5, 11, 20, o)]);
        assert!(
            matches!(v.as_slice(), [Violation::FencingOutOfOrder { .. }]),
            "{v:?}"
        );
    }
}
