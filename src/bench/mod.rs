//! `s3lock bench`: a load generator for a running s3lock (or, with `--direct-s3`, for the bucket
//! itself), in the manner of `redis-benchmark`: N clients, each a task looping one operation
//! over its keys for a fixed time, latencies in an HDR histogram, then throughput and
//! p50/p90/p99/max as a table or JSON.
//!
//! The keys are locks, or (`--kind`) semaphores or read-write locks taken shared: one driver
//! for all, through the client's [`Hold`](crate::client::hold::Hold).
//!
//! Keys are spread so that clients never share one while there are at least as many keys as
//! clients (client `i` takes keys `i`, `i + N`, `i + 2N`, ...); with fewer keys than clients,
//! client `i` takes key `i mod K` and the clients on a key contend for it (a refused acquire is
//! counted, not timed, and tried again at once).

pub mod args;
pub mod direct;

use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::Barrier;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::client::hold::KeyKind;
use crate::client::{ClientError, LockClient};
use crate::store::s3::{S3Settings, S3Store};
use crate::store::Store;
use crate::wire::HolderToken;
use args::{BenchArgs, BenchOp};

/// Why one timed operation did not succeed.
#[derive(Debug)]
pub enum Fail {
    /// The lock was held by another client (or the semaphore's permits were): contention, not
    /// an error.
    Refused,
    Error(String),
}

impl From<ClientError> for Fail {
    fn from(e: ClientError) -> Self {
        if e.is_refusal() {
            Fail::Refused
        } else {
            Fail::Error(e.to_string())
        }
    }
}

/// How one benchmark client reaches the locks.
enum Driver {
    /// Through a server, taking this kind of hold on each key.
    Service(LockClient, KeyKind),
    Direct(direct::Session),
}

impl Driver {
    async fn acquire(
        &mut self,
        key: &str,
        owner: &str,
        ttl: u64,
        wait: Option<f64>,
    ) -> Result<String, Fail> {
        match self {
            // No wait is a wait of 0: refused at once.
            Driver::Service(c, kind) => Ok(kind
                .on(key)
                .take(c, Some(owner), ttl, wait.unwrap_or(0.0))
                .await?
                .token),
            Driver::Direct(s) => s.acquire(key, owner, ttl, wait).await,
        }
    }

    async fn renew(&mut self, key: &str, token: &str, ttl: u64) -> Result<(), Fail> {
        match self {
            Driver::Service(c, kind) => kind.on(key).renew(c, token, ttl).await.map(drop)?,
            Driver::Direct(s) => s.renew(key, token, ttl).await?,
        }
        Ok(())
    }

    async fn release(&mut self, key: &str, token: &str) -> Result<(), Fail> {
        match self {
            Driver::Service(c, kind) => kind.on(key).give_up(c, token).await?,
            Driver::Direct(s) => s.release(key, token).await?,
        }
        Ok(())
    }

    async fn status(&mut self, key: &str) -> Result<(), Fail> {
        match self {
            Driver::Service(c, kind) => match kind.on(key).shared_kind() {
                None => c.status(key, None).await.map(drop)?,
                Some(kind) => c.shared_status(kind, key).await.map(drop)?,
            },
            Driver::Direct(s) => s.status(key).await?,
        }
        Ok(())
    }
}

/// What one client measured.
struct Tally {
    /// Microseconds per successful operation.
    latency: Histogram<u64>,
    refused: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds"),
            refused: 0,
            errors: 0,
            first_error: None,
        }
    }

    fn record(&mut self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        self.latency.saturating_record(micros);
    }

    fn fail(&mut self, fail: Fail) {
        match fail {
            Fail::Refused => self.refused += 1,
            Fail::Error(why) => {
                self.errors += 1;
                self.first_error.get_or_insert(why);
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latency
            .add(&other.latency)
            .expect("histograms of equal bounds merge");
        self.refused += other.refused;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// The keys client `i` of `clients` works on, out of `keys`.
pub fn keys_of(i: usize, clients: usize, keys: usize, prefix: &str) -> Vec<String> {
    if clients <= keys {
        (i..keys)
            .step_by(clients)
            .map(|k| format!("{prefix}{k}"))
            .collect()
    } else {
        vec![format!("{prefix}{}", i % keys)]
    }
}

/// Runs the benchmark the arguments describe and prints its report.
pub async fn run(mut args: BenchArgs) -> Result<(), String> {
    args.check()?;
    args.client_tls = args.tls.load().map_err(|e| e.to_string())?;
    let drivers = drivers(&args).await?;
    let run = Arc::new(args);
    let clients = run.clients;
    let barrier = Arc::new(Barrier::new(clients + 1));
    let done = Arc::new(Barrier::new(clients));
    let mut tasks = Vec::with_capacity(clients);
    for (i, driver) in drivers.into_iter().enumerate() {
        let (run, barrier, done) = (run.clone(), barrier.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            client(i, driver, &run, &barrier, &done).await
        }));
    }
    // Every client has warmed up and set up: the clock starts for all of them at once.
    barrier.wait().await;
    let started = Instant::now();
    let mut total = Tally::new();
    for t in tasks {
        total.merge(
            t.await
                .map_err(|e| format!("a benchmark client failed: {e}"))??,
        );
    }
    let elapsed = started.elapsed();
    report(&run, &total, elapsed);
    Ok(())
}

async fn drivers(args: &BenchArgs) -> Result<Vec<Driver>, String> {
    if args.direct_s3 {
        let bucket = args
            .bucket
            .clone()
            .ok_or("--direct-s3 needs --bucket (or S3LOCK_BUCKET)")?;
        let store = S3Store::connect(&S3Settings {
            endpoint: args.s3_endpoint.clone(),
            path_style: args.s3_path_style,
            operation_timeout: Duration::from_secs(args.s3_timeout),
            max_clock_spread: None,
        })
        .await;
        let clock = store.clock();
        let store: Arc<dyn Store> = Arc::new(store);
        return Ok((0..args.clients)
            .map(|_| {
                Driver::Direct(direct::Session::new(
                    store.clone(),
                    clock.clone(),
                    &bucket,
                    &args.prefix,
                ))
            })
            .collect());
    }
    // One HTTP client (one connection pool) per server; client i talks to server i mod n.
    let servers: Vec<LockClient> = args
        .url
        .iter()
        .map(|u| LockClient::with_tls(u, args.auth_token.clone(), &args.client_tls))
        .collect();
    let kind = args.key_kind();
    Ok((0..args.clients)
        .map(|i| Driver::Service(servers[i % servers.len()].clone(), kind))
        .collect())
}

/// One benchmark client: warm-up and set-up, then the timed loop until the duration is over,
/// then tidying up. Every client must reach `done`, so this never returns early on its own.
async fn client(
    i: usize,
    mut driver: Driver,
    run: &BenchArgs,
    barrier: &Barrier,
    done: &Barrier,
) -> Result<Tally, String> {
    let keys = keys_of(i, run.clients, run.keys, &run.key_prefix);
    let owner = format!("bench-{}-{i}", std::process::id());
    let hold = Duration::from_millis(run.hold);
    let mut tally = Tally::new();
    // Held for the whole run by `renew`; a `wait` client's key is held by `blocker`.
    let mut tokens = Vec::new();
    let blocker = format!("bench-{}-blocker", std::process::id());
    // A failed set-up still goes through both barriers (the others wait for every client), but
    // skips the timed loop and fails the run at the end.
    let mut setup_error = None;
    match run.op {
        BenchOp::Renew => {
            for key in &keys {
                match driver.acquire(key, &owner, run.ttl, None).await {
                    Ok(token) => tokens.push(token),
                    Err(e) => {
                        setup_error = Some(format!("renew set-up: acquiring {key}: {e:?}"));
                        break;
                    }
                }
            }
        }
        // Several clients may share a key: the first client on each takes it for the blocker.
        BenchOp::Wait if i < run.keys => {
            let ttl = run.duration.as_secs() + 60;
            match driver.acquire(&keys[0], &blocker, ttl, None).await {
                Ok(token) => tokens.push(token),
                Err(e) => setup_error = Some(format!("wait set-up: acquiring {}: {e:?}", keys[0])),
            }
        }
        BenchOp::Cycle | BenchOp::Acquire | BenchOp::Status if run.warmup => {
            // Touch every key once, untimed, so the timed loop measures warm operations.
            for key in &keys {
                let _ = one(&mut driver, run, key, &owner, Duration::ZERO).await;
            }
        }
        _ => {}
    }
    barrier.wait().await;
    let deadline = Instant::now() + run.duration;
    match run.op {
        _ if setup_error.is_some() => {}
        BenchOp::Wait => {
            // One acquire per client that blocks until the duration is over.
            let started = Instant::now();
            let wait = run.duration.as_secs_f64();
            match driver.acquire(&keys[0], &owner, run.ttl, Some(wait)).await {
                Ok(_) => tally.fail(Fail::Error("a blocked waiter was granted".into())),
                Err(fail) => {
                    tally.record(started.elapsed());
                    tally.fail(fail)
                }
            }
        }
        BenchOp::Handoff => handoff(i, run, &mut tally, deadline).await,
        _ => {
            let mut next = 0;
            // Do not spin on a failing server.
            let mut after_error = Backoff::constant(Duration::from_millis(10));
            while Instant::now() < deadline {
                let j = next % keys.len();
                next += 1;
                let key = &keys[j];
                // Only `renew` holds its keys, token j for key j.
                let token = tokens.get(j).map(String::as_str);
                match one_timed(&mut driver, run, key, &owner, hold, token).await {
                    Ok(took) => tally.record(took),
                    Err(fail) => {
                        if matches!(fail, Fail::Error(_)) {
                            after_error.wait().await;
                        }
                        tally.fail(fail)
                    }
                }
            }
        }
    }
    // Tidy up, untimed, once every client is done (a blocked waiter must not be handed a lock
    // that set-up took for the blocker): release what set-up took.
    done.wait().await;
    match run.op {
        BenchOp::Renew => {
            for (key, token) in keys.iter().zip(&tokens) {
                let _ = driver.release(key, token).await;
            }
        }
        BenchOp::Wait => {
            if let Some(token) = tokens.first() {
                let _ = driver.release(&keys[0], token).await;
            }
        }
        _ => {}
    }
    match setup_error {
        Some(e) => Err(e),
        None => Ok(tally),
    }
}

/// One operation of the loop, untimed (warm-up).
async fn one(
    driver: &mut Driver,
    run: &BenchArgs,
    key: &str,
    owner: &str,
    hold: Duration,
) -> Result<Duration, Fail> {
    one_timed(driver, run, key, owner, hold, None).await
}

/// One operation; returns the time it took, not counting `--hold`.
async fn one_timed(
    driver: &mut Driver,
    run: &BenchArgs,
    key: &str,
    owner: &str,
    hold: Duration,
    token: Option<&str>,
) -> Result<Duration, Fail> {
    let started = Instant::now();
    match run.op {
        BenchOp::Cycle => {
            let token = driver.acquire(key, owner, run.ttl, run.wait).await?;
            let acquired = started.elapsed();
            tokio::time::sleep(hold).await;
            let releasing = Instant::now();
            driver.release(key, &token).await?;
            Ok(acquired + releasing.elapsed())
        }
        BenchOp::Acquire => {
            let token = driver.acquire(key, owner, run.ttl, run.wait).await?;
            let took = started.elapsed();
            tokio::time::sleep(hold).await;
            driver.release(key, &token).await?;
            Ok(took)
        }
        BenchOp::Renew => {
            let token = token.ok_or_else(|| Fail::Error("no lock held to renew".into()))?;
            driver.renew(key, token, run.ttl).await?;
            Ok(started.elapsed())
        }
        BenchOp::Status => {
            driver.status(key).await?;
            Ok(started.elapsed())
        }
        BenchOp::Handoff | BenchOp::Wait => unreachable!("not a loop operation"),
    }
}

/// Hand-off latency: clients pair up on one key; the holder holds it for `--hold`, while the
/// waiter is blocked on `wait`; the time from the holder's release answer to the waiter's grant
/// answer is recorded. Even clients hold and odd clients wait, on the next server with
/// `--cross-replica`. Only the even client of a pair runs the loop.
async fn handoff(i: usize, run: &BenchArgs, tally: &mut Tally, deadline: Instant) {
    if i % 2 == 1 {
        return;
    }
    let pair = i / 2;
    let n = run.url.len();
    let holder_url = &run.url[i % n];
    let waiter_url = &run.url[(i + usize::from(run.cross_replica)) % n];
    let holder = LockClient::with_tls(holder_url, run.auth_token.clone(), &run.client_tls);
    let waiter = LockClient::with_tls(waiter_url, run.auth_token.clone(), &run.client_tls);
    let key = format!("{}{pair}", run.key_prefix);
    let hold = Duration::from_millis(run.hold.max(1));
    let pid = std::process::id();
    let (h_owner, w_owner) = (
        format!("bench-{pid}-h{pair}"),
        format!("bench-{pid}-w{pair}"),
    );
    let mut after_error = Backoff::constant(Duration::from_millis(10));
    while Instant::now() < deadline {
        let token = match holder
            .acquire(&key, Some(&h_owner), Some(run.ttl), Some(5.0))
            .await
        {
            Ok(v) => v.token.map(HolderToken::into_exposed).unwrap_or_default(),
            Err(e) => {
                tally.fail(e.into());
                after_error.wait().await;
                continue;
            }
        };
        let waiting = {
            let (waiter, key, w_owner, ttl) =
                (waiter.clone(), key.clone(), w_owner.clone(), run.ttl);
            tokio::spawn(async move {
                let granted = waiter
                    .acquire(&key, Some(&w_owner), Some(ttl), Some(30.0))
                    .await;
                (Instant::now(), granted)
            })
        };
        // Long enough for the waiter to be blocked before the release.
        tokio::time::sleep(hold).await;
        let released = holder.release(&key, &token).await;
        let released_at = Instant::now();
        let (granted_at, granted) = waiting.await.expect("the waiter task does not panic");
        match (released, granted) {
            (Ok(_), Ok(view)) => {
                tally.record(granted_at.saturating_duration_since(released_at));
                let _ = waiter
                    .release(
                        &key,
                        view.token
                            .as_ref()
                            .map(HolderToken::expose)
                            .unwrap_or_default(),
                    )
                    .await;
            }
            (Err(e), _) | (_, Err(e)) => tally.fail(e.into()),
        }
    }
}

fn report(run: &BenchArgs, total: &Tally, elapsed: Duration) {
    let h = &total.latency;
    let ok = h.len();
    let ms = |micros: u64| micros as f64 / 1000.0;
    let throughput = ok as f64 / elapsed.as_secs_f64();
    let mode = if run.direct_s3 {
        "direct-s3"
    } else {
        "service"
    };
    if run.json {
        let out = json!({
            "op": run.op.name(),
            "kind": run.kind.name(),
            "limit": run.limit,
            "mode": mode,
            "clients": run.clients,
            "keys": run.keys,
            "hold_ms": run.hold,
            "servers": if run.direct_s3 { 0 } else { run.url.len() },
            "cross_replica": run.cross_replica,
            "elapsed_s": elapsed.as_secs_f64(),
            "ok": ok,
            "refused": total.refused,
            "errors": total.errors,
            "first_error": total.first_error,
            "throughput_per_s": throughput,
            "latency_ms": {
                "p50": ms(h.value_at_quantile(0.50)),
                "p90": ms(h.value_at_quantile(0.90)),
                "p99": ms(h.value_at_quantile(0.99)),
                "max": ms(h.max()),
                "mean": h.mean() / 1000.0,
            },
        });
        println!("{out}");
        return;
    }
    let target = if run.direct_s3 {
        format!("bucket {} directly", run.bucket.as_deref().unwrap_or("?"))
    } else {
        run.url.join(", ")
    };
    println!(
        "s3lock bench: {} of {} via {mode} ({target}), {} clients, {} keys, hold {} ms",
        run.op.name(),
        match run.key_kind() {
            KeyKind::Lock => "locks".to_owned(),
            KeyKind::Permit { limit } => format!("semaphores (limit {limit})"),
            KeyKind::ReadWrite(_) => "read-write locks (shared)".to_owned(),
        },
        run.clients,
        run.keys,
        run.hold
    );
    println!("  elapsed      {:>10.2} s", elapsed.as_secs_f64());
    println!("  ok           {ok:>10}   ({throughput:.1}/s)");
    println!(
        "  refused      {:>10}   (held by another client)",
        total.refused
    );
    println!("  errors       {:>10}", total.errors);
    if let Some(e) = &total.first_error {
        println!("  first error  {e}");
    }
    println!("  latency (ms)       p50        p90        p99        max");
    println!(
        "               {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.90)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max())
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_never_share_a_key_while_there_are_enough_keys() {
        let all: Vec<String> = (0..3).flat_map(|i| keys_of(i, 3, 10, "k/")).collect();
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 10, "every key used exactly once: {all:?}");
        assert_eq!(keys_of(1, 3, 10, "k/"), ["k/1", "k/4", "k/7"]);
    }

    #[test]
    fn with_fewer_keys_than_clients_they_contend() {
        assert_eq!(keys_of(5, 16, 1, "k/"), ["k/0"]);
        assert_eq!(keys_of(5, 16, 4, "k/"), ["k/1"]);
    }
}
