//! `s3lock check`: a contention checker users can run against their own servers. Many clients
//! hammer a few keys through one or more replicas (acquire, hold briefly, release), every grant is
//! recorded as the clients saw it, and the record is searched for violations of the lock's
//! promises. Any violation means the service (or the store under it) is not safe.
//!
//! The keys are locks, semaphores or read-write locks ([`CheckKind`]); the clients' loop is the
//! same for all three (it takes and gives back a [`Hold`]), and only the search differs: the
//! mutex's below, the shared kinds' in [`shared`].

use secrecy::SecretString;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;

use super::hold::{Hold, KeyKind};
use super::{ClientError, LockClient};
use crate::backoff::Backoff;
use crate::tls::client::ClientTls;
use crate::wire::Mode;

pub mod shared;
pub use shared::{find_shared_violations, HoldClaim, SharedGrant};

/// What the clients contend for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    Lock,
    /// Semaphores of `limit` permits: every client asks with this limit.
    Semaphore {
        limit: u32,
    },
    /// Read-write locks: one acquire in [`EXCLUSIVE_ONE_IN`] is exclusive, the others shared.
    Rwlock,
}

/// How often a read-write lock's acquire is a writer's: readers are the many, and a writer now
/// and then both meets readers still holding and, waiting, stops new ones.
pub const EXCLUSIVE_ONE_IN: u32 = 4;

impl CheckKind {
    /// What the next acquire asks for.
    fn next_kind(self, rng: &mut impl Rng) -> KeyKind {
        match self {
            CheckKind::Lock => KeyKind::Lock,
            CheckKind::Semaphore { limit } => KeyKind::Permit { limit },
            CheckKind::Rwlock if rng.random_range(0..EXCLUSIVE_ONE_IN) == 0 => {
                KeyKind::ReadWrite(Mode::Exclusive)
            }
            CheckKind::Rwlock => KeyKind::ReadWrite(Mode::Shared),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// Locks, semaphores or read-write locks.
    pub kind: CheckKind,
    /// Base URLs of the replicas; client `i` starts on `urls[i % len]` (see [`Replicas`]).
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
/// be made after the release, which is sent after `end`. A hold whose release reached no server
/// (every attempt found its replica down) was never released: it lasts until its lease could
/// end at the earliest, `ttl` after its acquire was sent, and `end` is then that moment.
#[derive(Debug, Clone, Serialize)]
pub struct Grant {
    pub key: String,
    pub client: usize,
    pub fencing_token: u64,
    /// No release of this hold reached a server before its lease could end.
    pub unreleased: bool,
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
    /// More holds of one semaphore at once than its limit: `holds` are those overlapping the
    /// moment the last of them began.
    TooManyHolders {
        key: String,
        limit: u32,
        holds: Vec<Grant>,
    },
    /// Two holds of one semaphore overlapped that were granted under different limits (the
    /// limit may change only while nobody holds it).
    LimitChanged {
        first: Grant,
        first_limit: u32,
        second: Grant,
        second_limit: u32,
    },
    /// A shared hold of a read-write lock overlapped an exclusive one.
    SharedWithExclusive { exclusive: Grant, shared: Grant },
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct CheckReport {
    pub grants: usize,
    /// Acquires answered "held by another" (or "no permit left") after waiting.
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

/// One hold as recorded, before the search: the mutex's and the shared kinds' differ only in
/// what the search makes of `kind` and `sent`.
struct Record {
    grant: Grant,
    kind: KeyKind,
    sent: Instant,
}

/// Runs the check and returns what it found.
pub async fn run(config: CheckConfig) -> CheckReport {
    let origin = Instant::now();
    let stop_at = origin + config.duration;
    let records: Arc<Mutex<Vec<Record>>> = Arc::default();
    let tally: Arc<Mutex<CheckReport>> = Arc::default();
    let clients: Vec<_> = (0..config.clients)
        .map(|client| {
            let config = config.clone();
            let (records, tally) = (records.clone(), tally.clone());
            let mut replicas =
                Replicas::new(&config.urls, config.bearer.clone(), &config.tls, client);
            tokio::spawn(async move {
                let owner = format!("check-client-{client}");
                let mut after_error = Backoff::constant(Duration::from_millis(20));
                while Instant::now() < stop_at {
                    let key = format!(
                        "{}{}",
                        config.key_prefix,
                        rand::rng().random_range(0..config.keys)
                    );
                    let kind = config.kind.next_kind(&mut rand::rng());
                    let hold = kind.on(&key);
                    // The lease runs from the grant, which comes after the acquire is sent: counted
                    // from here, "inside the lease" is never overestimated.
                    let sent = Instant::now();
                    let granted = match hold
                        .take(replicas.current(), Some(&owner), config.ttl, config.wait)
                        .await
                    {
                        Ok(grant) => grant,
                        Err(e) if e.is_refusal() => {
                            tally.lock().unwrap().refusals += 1;
                            continue;
                        }
                        // A grant whose answer was lost is held by nobody the checker knows until
                        // its lease runs out: it delays others, it cannot make two holders.
                        Err(e) => {
                            tally.lock().unwrap().errors += 1;
                            replicas.move_on_after(&e);
                            after_error.wait().await;
                            continue;
                        }
                    };
                    let start = Instant::now();
                    let pause = config.max_hold.mul_f64(rand::rng().random::<f64>());
                    tokio::time::sleep(pause).await;
                    let end = Instant::now();
                    let ttl = Duration::from_secs(config.ttl);
                    let reached = release_until_answered(
                        &mut replicas,
                        &hold,
                        &granted.token,
                        client,
                        &tally,
                        sent + ttl,
                    )
                    .await;
                    let (end, unreleased) = held_until(end, sent, ttl, reached);
                    let ms = |t: Instant| t.duration_since(origin).as_secs_f64() * 1000.0;
                    records.lock().unwrap().push(Record {
                        grant: Grant {
                            key,
                            client,
                            fencing_token: granted.fencing_token,
                            unreleased,
                            start,
                            end,
                            start_ms: ms(start),
                            end_ms: ms(end),
                        },
                        kind,
                        sent,
                    });
                }
            })
        })
        .collect();
    for c in clients {
        let _ = c.await;
    }
    let records = std::mem::take(&mut *records.lock().unwrap());
    let mut report = tally.lock().unwrap().clone();
    report.grants = records.len();
    report.keys_granted = records
        .iter()
        .map(|r| r.grant.key.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let violations = match config.kind {
        CheckKind::Lock => {
            let grants: Vec<Grant> = records.into_iter().map(|r| r.grant).collect();
            find_violations(&grants)
        }
        CheckKind::Semaphore { .. } | CheckKind::Rwlock => {
            let holds: Vec<SharedGrant> = records
                .into_iter()
                .map(|r| shared_grant(r, origin))
                .collect();
            find_shared_violations(&holds)
        }
    };
    report.violations.extend(violations);
    report
}

/// A shared kind's hold, as the shared search takes it.
fn shared_grant(r: Record, origin: Instant) -> SharedGrant {
    let claim = match r.kind {
        KeyKind::Permit { limit } => HoldClaim::Permit { limit },
        KeyKind::ReadWrite(Mode::Shared) => HoldClaim::Shared,
        // A lock is never recorded under a shared kind; were it, it would be held alone.
        KeyKind::ReadWrite(Mode::Exclusive) | KeyKind::Lock => HoldClaim::Exclusive,
    };
    SharedGrant {
        grant: r.grant,
        claim,
        sent: r.sent,
        sent_ms: r.sent.duration_since(origin).as_secs_f64() * 1000.0,
    }
}

/// One client's way to the replicas. Client `i` has replica `i % n` as its own and moves to the
/// next whenever a request gets no answer (its replica refused the connection, or the connection
/// broke mid-request): the clients of a replica that was killed carry on through the others at
/// once. A client goes back to its own replica [`BACK_HOME_AFTER`] after it left, so the clients
/// stay spread over the replicas once a killed one is up again.
struct Replicas {
    clients: Vec<LockClient>,
    home: usize,
    current: usize,
    /// When this client left its own replica; `None` while it is there.
    left_home: Option<Instant>,
}

/// Longer than a replica takes to restart, short against a run.
const BACK_HOME_AFTER: Duration = Duration::from_secs(3);

impl Replicas {
    fn new(urls: &[String], bearer: Option<SecretString>, tls: &ClientTls, client: usize) -> Self {
        let home = client % urls.len();
        Self {
            clients: urls
                .iter()
                .map(|u| LockClient::with_tls(u, bearer.clone(), tls))
                .collect(),
            home,
            current: home,
            left_home: None,
        }
    }

    fn current(&mut self) -> &LockClient {
        if self
            .left_home
            .is_some_and(|at| at.elapsed() >= BACK_HOME_AFTER)
        {
            (self.current, self.left_home) = (self.home, None);
        }
        &self.clients[self.current]
    }

    fn move_on_after(&mut self, e: &ClientError) {
        if matches!(e, ClientError::Unreachable(_) | ClientError::Transport(_)) {
            self.current = (self.current + 1) % self.clients.len();
            self.left_home = (self.current != self.home).then(Instant::now);
        }
    }
}

/// Releases, retrying while the answer proves nothing (store unavailable, transport), and
/// returns when the first attempt that may have reached a server was sent (`None`: none did).
/// A refusal while the lease cannot have run out yet (before `lease_end`, the earliest it could
/// end) is a lost release, unless an earlier attempt may have landed: the lock may then have
/// passed on since, and the refusal proves nothing.
async fn release_until_answered(
    replicas: &mut Replicas,
    hold: &Hold,
    token: &str,
    client: usize,
    tally: &Mutex<CheckReport>,
    lease_end: Instant,
) -> Option<Instant> {
    let mut after_error = Backoff::constant(Duration::from_millis(50));
    let mut reached = None;
    for _ in 0..20 {
        let earlier_reached = reached.is_some();
        let attempt = Instant::now();
        let result = hold.give_up(replicas.current(), token).await;
        if !matches!(result, Err(ClientError::Unreachable(_))) {
            reached.get_or_insert(attempt);
        }
        match result {
            Ok(_) => return reached,
            Err(ClientError::WriteUnconfirmed { .. }) => {
                tally.lock().unwrap().unconfirmed_releases += 1;
                return reached;
            }
            Err(e @ (ClientError::NotHolder { .. } | ClientError::NotFound)) => {
                let mut tally = tally.lock().unwrap();
                // Past the lease, losing the lock is the lease doing its job.
                if earlier_reached {
                    tally.errors += 1;
                } else if Instant::now() < lease_end {
                    tally.violations.push(Violation::LostRelease {
                        key: hold.key().to_owned(),
                        client,
                        detail: e.to_string(),
                    });
                }
                return reached;
            }
            Err(e) => {
                tally.lock().unwrap().errors += 1;
                replicas.move_on_after(&e);
                after_error.wait().await;
            }
        }
    }
    reached
}

/// When a hold ended, for overlap purposes, and whether it ended unreleased: at `end` when a
/// release may have reached a server from then on; when none did before the lease could end
/// (`ttl` after the acquire was `sent`), the lock stayed held until then.
fn held_until(
    end: Instant,
    sent: Instant,
    ttl: Duration,
    release_reached: Option<Instant>,
) -> (Instant, bool) {
    let lease_end = sent + ttl;
    match release_reached {
        Some(at) if at <= lease_end => (end, false),
        _ => (lease_end.max(end), true),
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
        // Compared with the earlier hold that lasts longest, not only the one just before: an
        // unreleased hold may outlast several grants after it.
        let mut longest = list[0];
        for pair in list.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if a.end > longest.end {
                longest = a;
            }
            if b.start < longest.end {
                violations.push(Violation::Overlap {
                    first: longest.clone(),
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

    pub(super) fn grant(
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
            unreleased: false,
            start: origin + Duration::from_millis(start_ms),
            end: origin + Duration::from_millis(end_ms),
            start_ms: start_ms as f64,
            end_ms: end_ms as f64,
        }
    }

    #[test]
    fn a_read_write_check_asks_for_both_modes_mostly_shared_and_the_others_one_hold_each() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(18);
        let kinds: Vec<KeyKind> = (0..400)
            .map(|_| CheckKind::Rwlock.next_kind(&mut rng))
            .collect();
        let exclusive = kinds
            .iter()
            .filter(|k| **k == KeyKind::ReadWrite(Mode::Exclusive))
            .count();
        let shared = kinds
            .iter()
            .filter(|k| **k == KeyKind::ReadWrite(Mode::Shared))
            .count();
        assert_eq!(exclusive + shared, 400);
        assert!(
            exclusive > 0 && shared > 2 * exclusive,
            "{exclusive} writers"
        );
        let limit = 3;
        assert_eq!(
            CheckKind::Semaphore { limit }.next_kind(&mut rng),
            KeyKind::Permit { limit }
        );
        assert_eq!(CheckKind::Lock.next_kind(&mut rng), KeyKind::Lock);
    }

    #[test]
    fn a_shared_kinds_record_keeps_its_claim_and_when_its_acquire_was_sent() {
        let o = Instant::now();
        let record = |kind| Record {
            grant: grant("s", 1, 1, 10, 20, o),
            kind,
            sent: o + Duration::from_millis(4),
        };
        let permit = shared_grant(record(KeyKind::Permit { limit: 2 }), o);
        assert_eq!(permit.claim, HoldClaim::Permit { limit: 2 });
        assert_eq!(permit.sent_ms, 4.0);
        let reader = shared_grant(record(KeyKind::ReadWrite(Mode::Shared)), o);
        assert_eq!(reader.claim, HoldClaim::Shared);
        let writer = shared_grant(record(KeyKind::ReadWrite(Mode::Exclusive)), o);
        assert_eq!(writer.claim, HoldClaim::Exclusive);
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

#[cfg(test)]
mod release_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A lock server that takes each request and answers it with the next of `answers`: `None`
    /// closes the connection after reading the request (the answer is lost), `Some` sends it.
    async fn scripted_server(answers: Vec<Option<&'static str>>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            for answer in answers {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let _ = stream.read(&mut buf).await;
                if let Some(body) = answer {
                    let response = format!(
                        "HTTP/1.1 409 Conflict\r\ncontent-type: application/problem+json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                }
            }
        });
        url
    }

    const NOT_HOLDER: &str = r#"{"type":"urn:s3lock:problem:not-holder","title":"t","status":409,"detail":"the token does not hold this lock"}"#;

    #[tokio::test]
    async fn a_refusal_after_a_release_whose_answer_was_lost_is_an_error_not_a_lost_release() {
        // The first release may have landed (its answer was lost), and the lock passed on since:
        // the refusal of the retry proves nothing.
        let url = scripted_server(vec![None, Some(NOT_HOLDER)]).await;
        let tally = Mutex::new(CheckReport::default());
        let mut replicas = Replicas::new(&[url], None, &ClientTls::default(), 0);
        let ttl = Duration::from_secs(30);
        release_until_answered(
            &mut replicas,
            &Hold::Lock { key: "k".into() },
            "t",
            0,
            &tally,
            Instant::now() + ttl,
        )
        .await;
        let tally = tally.into_inner().unwrap();
        assert!(tally.violations.is_empty(), "{:?}", tally.violations);
        assert_eq!(tally.errors, 2);
    }

    #[tokio::test]
    async fn a_refusal_of_a_first_release_inside_the_lease_is_a_lost_release() {
        let url = scripted_server(vec![Some(NOT_HOLDER)]).await;
        let tally = Mutex::new(CheckReport::default());
        let mut replicas = Replicas::new(&[url], None, &ClientTls::default(), 0);
        let ttl = Duration::from_secs(30);
        release_until_answered(
            &mut replicas,
            &Hold::Lock { key: "k".into() },
            "t",
            0,
            &tally,
            Instant::now() + ttl,
        )
        .await;
        let tally = tally.into_inner().unwrap();
        assert!(
            matches!(tally.violations.as_slice(), [Violation::LostRelease { .. }]),
            "{:?}",
            tally.violations
        );
    }

    #[tokio::test]
    async fn a_release_that_finds_its_replica_down_is_sent_to_the_next_one() {
        let down = closed_url();
        let up = scripted_server(vec![Some(NOT_HOLDER)]).await;
        let tally = Mutex::new(CheckReport::default());
        let mut replicas = Replicas::new(&[down, up], None, &ClientTls::default(), 0);
        let ttl = Duration::from_secs(30);
        let reached = release_until_answered(
            &mut replicas,
            &Hold::Lock { key: "k".into() },
            "t",
            0,
            &tally,
            Instant::now() + ttl,
        )
        .await;
        let tally = tally.into_inner().unwrap();
        assert!(reached.is_some());
        assert_eq!(tally.errors, 1);
        // Nothing was sent to the replica that was down: the refusal is the first answer.
        assert!(
            matches!(tally.violations.as_slice(), [Violation::LostRelease { .. }]),
            "{:?}",
            tally.violations
        );
    }

    fn closed_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        url
    }

    #[test]
    fn a_hold_whose_release_reached_no_server_lasts_until_its_lease_could_end() {
        let sent = Instant::now();
        let end = sent + Duration::from_millis(10);
        let ttl = Duration::from_secs(10);
        assert_eq!(held_until(end, sent, ttl, None), (sent + ttl, true));
        assert_eq!(
            held_until(end, sent, ttl, Some(sent + Duration::from_secs(11))),
            (sent + ttl, true)
        );
        assert_eq!(held_until(end, sent, ttl, Some(end)), (end, false));
    }

    #[test]
    fn a_grant_inside_an_unreleased_hold_is_an_overlap_even_after_other_grants() {
        let o = Instant::now();
        let ms = |m| o + Duration::from_millis(m);
        let (end, unreleased) = held_until(ms(5), o, Duration::from_secs(1), None);
        let mut first = super::tests::grant("a", 1, 1, 0, 5, o);
        (first.end, first.unreleased) = (end, unreleased);
        let v = find_violations(&[
            first,
            super::tests::grant("a", 2, 2, 100, 110, o),
            super::tests::grant("a", 3, 3, 200, 210, o),
        ]);
        let overlapped: Vec<usize> = v
            .iter()
            .filter_map(|v| match v {
                Violation::Overlap { first, second } if first.client == 1 => Some(second.client),
                _ => None,
            })
            .collect();
        assert_eq!(overlapped, [2, 3], "{v:?}");
    }

    #[test]
    fn a_client_that_left_its_replica_goes_back_to_it_after_a_while() {
        let urls = [
            "http://127.0.0.1:1".to_owned(),
            "http://127.0.0.1:2".to_owned(),
        ];
        let mut replicas = Replicas::new(&urls, None, &ClientTls::default(), 2);
        assert_eq!(replicas.current().base(), urls[0]);
        replicas.move_on_after(&ClientError::Held {
            owner: "o".into(),
            expires_at: String::new(),
            retry_after: None,
        });
        assert_eq!(replicas.current().base(), urls[0], "an answer is no reason");
        replicas.move_on_after(&ClientError::Unreachable("refused".into()));
        assert_eq!(replicas.current().base(), urls[1]);
        replicas.left_home = Instant::now().checked_sub(BACK_HOME_AFTER);
        assert_eq!(replicas.current().base(), urls[0]);
    }
}
