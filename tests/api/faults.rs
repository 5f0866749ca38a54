//! One holder under faults: a fault-injecting proxy between s3lock and SeaweedFS loses
//! responses, fails requests, slows down and strips conditional headers, and every answer must
//! still be the truth.

use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::support::proxy::{Fault, FaultProxy, Latency};
use crate::helpers::{json_with, problem, support, TestApp};

const S3_TIMEOUT: Duration = Duration::from_secs(3);

async fn replica_behind_proxy() -> (TestApp, FaultProxy, String) {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let proxy = FaultProxy::start(&support::s3_endpoint()).await;
    let app = TestApp::s3_via(&bucket, &proxy.endpoint, S3_TIMEOUT).await;
    (app, proxy, bucket)
}

fn stored_doc(bytes: Option<bytes::Bytes>) -> Value {
    serde_json::from_slice(&bytes.expect("a stored document")).unwrap()
}

#[tokio::test]
async fn a_lost_acquire_response_still_tells_the_caller_it_holds_the_lock() {
    let (app, proxy, _) = replica_behind_proxy().await;
    proxy.fail_next_of("PUT", 1, Fault::DropResponse);
    let g = json_with(
        app.acquire("k", json!({"owner": "alice", "ttl": 60})).await,
        200,
    )
    .await;
    assert_eq!(proxy.faults_injected()["DropResponse"], 1);
    let stored = stored_doc(app.stored("k").await);
    assert_eq!(
        stored["token"], g["token"],
        "the grant the caller was told of is the stored one"
    );
    problem(
        app.acquire("k", json!({"owner": "bob"})).await,
        409,
        "lock-held",
    )
    .await;
}

#[tokio::test]
async fn lost_responses_on_every_retry_of_a_write_still_resolve_to_the_truth() {
    let (app, proxy, _) = replica_behind_proxy().await;
    // The first PUT lands; its response and those of the SDK's retries are all lost.
    proxy.fail_next_of("PUT", 3, Fault::DropResponse);
    let g = json_with(app.acquire("k", json!({"owner": "alice"})).await, 200).await;
    assert_eq!(stored_doc(app.stored("k").await)["token"], g["token"]);
}

#[tokio::test]
async fn lost_renew_and_release_responses_still_tell_the_truth() {
    let (app, proxy, _) = replica_behind_proxy().await;
    let g = json_with(
        app.acquire("k", json!({"owner": "alice", "ttl": 30})).await,
        200,
    )
    .await;
    proxy.fail_next_of("PUT", 1, Fault::DropResponse);
    let r = json_with(
        app.renew("k", json!({"token": g["token"], "ttl": 90}))
            .await,
        200,
    )
    .await;
    assert_eq!(r["expire"], 90);
    assert_eq!(stored_doc(app.stored("k").await)["expire"], 90);
    proxy.fail_next_of("PUT", 1, Fault::DropResponse);
    json_with(app.release("k", json!({"token": g["token"]})).await, 200).await;
    assert_eq!(stored_doc(app.stored("k").await)["owner"], Value::Null);
    // No phantom: the next owner gets the lock at once, as the next holder.
    let b = json_with(app.acquire("k", json!({"owner": "bob"})).await, 200).await;
    assert_eq!(b["fencing_token"], 2);
    assert_eq!(proxy.faults_injected()["DropResponse"], 2);
}

#[tokio::test]
async fn when_s3_is_unreachable_every_route_answers_503_and_recovers_without_a_restart() {
    let (app, proxy, _) = replica_behind_proxy().await;
    let g = json_with(
        app.acquire("held", json!({"owner": "alice", "ttl": 60}))
            .await,
        200,
    )
    .await;
    for fault in [Fault::SlowDown, Fault::InternalError, Fault::Reset] {
        proxy.fail_all(Some(fault));
        for resp in [
            app.acquire("k", json!({"owner": "bob"})).await,
            app.acquire("held", json!({"owner": "bob"})).await,
            app.renew("held", json!({"token": g["token"]})).await,
            app.release("held", json!({"token": g["token"]})).await,
            app.status("held").await,
            app.request(Method::GET, "/locks", None).await,
        ] {
            assert_eq!(resp.headers()["retry-after"], "1", "{fault:?}");
            problem(resp, 503, "store-unavailable").await;
        }
        proxy.fail_all(None);
        assert_eq!(
            app.stored("k").await,
            None,
            "{fault:?}: nothing was granted"
        );
    }
    assert!(
        proxy.faults_injected().len() == 3,
        "{:?}",
        proxy.faults_injected()
    );
    // The store is back: the same replica serves again, and alice still holds her lock.
    let s = json_with(app.status("held").await, 200).await;
    assert_eq!(s["owner"], "alice");
    json_with(app.release("held", json!({"token": g["token"]})).await, 200).await;
    json_with(app.acquire("k", json!({"owner": "bob"})).await, 200).await;
}

#[tokio::test]
async fn a_slow_store_gives_a_clean_503_and_a_grant_that_landed_late_is_freed() {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let proxy = FaultProxy::start(&support::s3_endpoint()).await;
    let app = TestApp::s3_via(&bucket, &proxy.endpoint, Duration::from_secs(1)).await;
    // Writes are held back longer than the S3 timeout, then still delivered: the PUT of alice's
    // grant lands after s3lock gave up on it.
    proxy.set_latency_of("PUT", Latency::Fixed(Duration::from_millis(1500)));
    problem(
        app.acquire("k", json!({"owner": "alice", "ttl": 3600}))
            .await,
        503,
        "store-unavailable",
    )
    .await;
    proxy.set_latency(Latency::None);
    // Wait (bounded) until the late write has reached the store.
    for _ in 0..100 {
        if app.stored("k").await.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let landed = stored_doc(app.stored("k").await);
    assert_eq!(
        landed["fencing_token"], 1,
        "alice's grant landed after she was told 503"
    );
    // Without clean-up, that unseen grant would block everyone for an hour. bob, waiting at
    // most 20 s, gets the lock.
    let b = json_with(
        app.acquire("k", json!({"owner": "bob", "wait": 20})).await,
        200,
    )
    .await;
    assert_eq!(b["owner"], "bob");
    assert_eq!(
        b["fencing_token"], 2,
        "alice's late grant did land, and was freed"
    );
}

#[tokio::test]
async fn a_request_past_the_servers_request_timeout_gets_a_clean_503_and_no_hidden_grant() {
    let (store, bucket) = support::s3_with_fresh_bucket().await;
    let clock = store.clock();
    let app = TestApp::spawn_with_timeout(
        std::sync::Arc::new(store),
        clock,
        crate::helpers::engine_config(&bucket, &[]),
        Duration::from_secs(1),
    )
    .await;
    json_with(
        app.acquire("k", json!({"owner": "alice", "ttl": 60})).await,
        200,
    )
    .await;
    let before = app.stored("k").await;
    let resp = app.acquire("k", json!({"owner": "bob", "wait": 30})).await;
    assert_eq!(resp.headers()["retry-after"], "1");
    problem(resp, 503, "timeout").await;
    assert_eq!(
        app.stored("k").await,
        before,
        "bob was not granted the lock behind his back"
    );
}

fn s3lock_bin() -> &'static str {
    env!("CARGO_BIN_EXE_s3lock")
}

/// `s3lock serve` on the S3 store at `endpoint`, listening on an ephemeral port, run by
/// `program` with `leading` arguments (the binary itself, or `faketime` in front of it).
fn serve_command(
    program: &str,
    leading: &[&str],
    endpoint: &str,
    bucket: &str,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(leading)
        .args([
            "serve",
            "--store",
            "s3",
            "--listen",
            "127.0.0.1:0",
            "--s3-path-style",
        ])
        .args(["--bucket", bucket, "--s3-endpoint", endpoint])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so the whole tree (faketime runs the server as a child) can
        // be stopped together: see `ProcessGroup`.
        .process_group(0)
        .kill_on_drop(true);
    cmd
}

/// Kills a spawned process's whole group when dropped, also when a test fails midway.
struct ProcessGroup(u32);

impl ProcessGroup {
    fn of(child: &tokio::process::Child) -> Self {
        Self(child.id().expect("the child is running"))
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0)])
            .status();
    }
}

#[tokio::test]
async fn serve_refuses_to_start_on_a_store_that_ignores_conditional_writes() {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let proxy = FaultProxy::start(&support::s3_endpoint()).await;
    proxy.strip_conditions(true);
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        serve_command(s3lock_bin(), &[], &proxy.endpoint, &bucket).output(),
    )
    .await
    .expect("serve gave up by itself")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started: {stderr}");
    assert!(
        stderr.contains("refusing to start") && stderr.contains("If-None-Match"),
        "{stderr}"
    );

    // The same store with its conditions intact passes the check and serves.
    proxy.strip_conditions(false);
    let mut child = serve_command(s3lock_bin(), &[], &proxy.endpoint, &bucket)
        .spawn()
        .unwrap();
    let _group = ProcessGroup::of(&child);
    let address = wait_for_serving(&mut child).await;
    let resp = reqwest::get(format!("http://{address}/healthz"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_sigterm_while_the_replica_starts_is_a_drain_not_a_kill() {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let proxy = FaultProxy::start(&support::s3_endpoint()).await;
    // The start-up store check's first write is held: the replica is starting, not serving.
    let held = proxy.hold_next_request_of("PUT");
    let mut child = serve_command(s3lock_bin(), &[], &proxy.endpoint, &bucket)
        .spawn()
        .unwrap();
    let _group = ProcessGroup::of(&child);
    held.answered().await;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    held.release();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the replica exits")
        .unwrap();
    assert!(
        status.success(),
        "{status:?}: SIGTERM took its default action instead of a drain"
    );
}

/// Reads the server's log until it says where it serves.
async fn wait_for_serving(child: &mut tokio::process::Child) -> String {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let find = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("address=").nth(1) {
                if line.contains("s3lock is serving") {
                    return rest.split_whitespace().next().unwrap().to_owned();
                }
            }
        }
        panic!("the server exited before serving");
    };
    tokio::time::timeout(Duration::from_secs(60), find)
        .await
        .expect("serving in time")
}

#[tokio::test]
async fn a_holder_killed_with_sigkill_leaves_the_lock_to_the_next_holder_after_its_ttl() {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let app = TestApp::s3(&bucket).await;
    let dir = tempfile::tempdir().unwrap();
    let granted = dir.path().join("granted.json");
    // The holder: a shell job that takes the lock with curl, then works "forever".
    let script = r#"curl -sf -H 'content-type: application/json' -d '{"owner":"doomed","ttl":2}' \
        "$URL/locks/job/acquire" > "$OUT.tmp" && mv "$OUT.tmp" "$OUT" && exec sleep 600"#;
    let mut holder = tokio::process::Command::new("sh")
        .args(["-c", script])
        .env("URL", &app.base)
        .env("OUT", &granted)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if granted.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held: Value =
        serde_json::from_slice(&std::fs::read(&granted).expect("the holder got the lock")).unwrap();
    assert_eq!(held["owner"], "doomed");
    holder.start_kill().unwrap(); // SIGKILL: no release is ever sent
    holder.wait().await.unwrap();
    problem(
        app.acquire("job", json!({"owner": "next"})).await,
        409,
        "lock-held",
    )
    .await;
    let next = json_with(
        app.acquire("job", json!({"owner": "next", "wait": 15}))
            .await,
        200,
    )
    .await;
    assert!(next["fencing_token"].as_u64() > held["fencing_token"].as_u64());
}

#[tokio::test]
async fn a_replica_whose_clock_runs_30_s_ahead_never_takes_a_lock_over_early() {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let honest = TestApp::s3(&bucket).await;
    let mut child = serve_command(
        "faketime",
        &["-f", "+30s", s3lock_bin()],
        &support::s3_endpoint(),
        &bucket,
    )
    .spawn()
    .expect("faketime (Debian package faketime) is needed; scripts/test installs it");
    let _group = ProcessGroup::of(&child);
    let skewed_url = format!("http://{}", wait_for_serving(&mut child).await);
    let http = reqwest::Client::new();
    // Proof the skew is real: the skewed replica stamps its answers' Date 30 s ahead.
    let date = |resp: &reqwest::Response| {
        httpdate::parse_http_date(resp.headers()["date"].to_str().unwrap()).unwrap()
    };
    let skewed_health = http
        .get(format!("{skewed_url}/healthz"))
        .send()
        .await
        .unwrap();
    let honest_health = http
        .get(format!("{}/healthz", honest.base))
        .send()
        .await
        .unwrap();
    let ahead = date(&skewed_health)
        .duration_since(date(&honest_health))
        .unwrap_or_default();
    assert!(
        ahead >= Duration::from_secs(28),
        "the replica's clock is only {ahead:?} ahead"
    );

    let held = json_with(
        honest
            .acquire("k", json!({"owner": "alice", "ttl": 5}))
            .await,
        200,
    )
    .await;
    let acquire = |wait: u64| {
        http.post(format!("{skewed_url}/locks/k/acquire"))
            .json(&json!({"owner": "bob", "wait": wait}))
            .send()
    };
    // On its own clock alice's 5 s lease ended 25 s ago; on the store's it has just begun.
    problem(acquire(0).await.unwrap(), 409, "lock-held").await;
    let taken = json_with(acquire(20).await.unwrap(), 200).await;
    let held_until =
        chrono::DateTime::parse_from_rfc3339(held["expires_at"].as_str().unwrap()).unwrap();
    let taken_at =
        chrono::DateTime::parse_from_rfc3339(taken["lock_time"].as_str().unwrap()).unwrap();
    assert!(
        taken_at >= held_until,
        "taken over at {taken_at}, before the lease ended at {held_until}"
    );
    assert!(
        taken_at < held_until + chrono::Duration::seconds(20),
        "stamped on the store's clock, not 30 s ahead: {taken_at}"
    );
}

/// A replica started on an S3 store reached at `endpoint`, as `s3lock serve` would start it.
async fn start_serving_via(endpoint: &str, bucket: &str) -> Result<(), String> {
    use clap::Parser;
    let cli = s3lock::cli::Cli::try_parse_from([
        "s3lock",
        "serve",
        "--store",
        "s3",
        "--bucket",
        bucket,
        "--s3-endpoint",
        endpoint,
        "--s3-path-style",
    ])
    .unwrap();
    let s3lock::cli::Command::Serve(args) = cli.command else {
        unreachable!()
    };
    let config = args.validate().unwrap();
    s3lock::startup::open_store(&config, s3lock::metrics::Metrics::new())
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_replica_refuses_to_start_when_the_store_sends_no_date_header() {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let proxy = FaultProxy::start(&support::s3_endpoint()).await;
    proxy.strip_date(true);
    let err = start_serving_via(&proxy.endpoint, &bucket)
        .await
        .expect_err("no Date header: no store clock");
    assert!(err.contains("no Date header"), "{err}");
    assert!(proxy.total() > 0, "the store was asked");
    // The same store with its Date headers let through is fine.
    proxy.strip_date(false);
    start_serving_via(&proxy.endpoint, &bucket).await.unwrap();
}

/// Replica a talks to SeaweedFS directly; replica b through a load balancer whose clock is 30 s
/// ahead and which, for a while, answers about half of b's store calls itself: `503` with its
/// own `Date`. Nothing b hears from it may move b's judgement of expiry forward.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_load_balancer_answering_with_a_clock_30_s_ahead_never_gets_a_held_lock_granted() {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let a = TestApp::s3(&bucket).await;
    let proxy = FaultProxy::start(&support::s3_endpoint()).await;
    let b = std::sync::Arc::new(TestApp::s3_via(&bucket, &proxy.endpoint, S3_TIMEOUT).await);
    let alice_sent = tokio::time::Instant::now();
    let held = json_with(
        a.acquire("k", json!({"owner": "alice", "ttl": 20})).await,
        200,
    )
    .await;

    proxy.fail_randomly(
        0.5,
        Fault::OwnAnswer {
            status: 503,
            date_offset_secs: 30,
        },
    );
    // b serves ordinary traffic on other locks meanwhile, so it hears the load balancer often.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic: Vec<_> = (0..4)
        .map(|i| {
            let (b, stop) = (b.clone(), stop.clone());
            tokio::spawn(async move {
                let key = format!("other-{i}");
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let resp = b.acquire(&key, json!({"owner": "carol", "ttl": 5})).await;
                    if resp.status() == 200 {
                        let token = resp.json::<Value>().await.unwrap()["token"].clone();
                        b.release(&key, json!({ "token": token })).await;
                    }
                }
            })
        })
        .collect();
    // 4 s of bob's acquires through b, well inside alice's 20 s lease. A grant counts as early
    // when its answer came less than 20 s after alice's request was sent: her lease surely ran
    // until then, however slow this machine is.
    let lying = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut answers = std::collections::BTreeMap::<u16, usize>::new();
    let mut early = 0;
    while tokio::time::Instant::now() < lying {
        let resp = b.acquire("k", json!({"owner": "bob", "ttl": 60})).await;
        *answers.entry(resp.status().as_u16()).or_default() += 1;
        if resp.status() == 200 && alice_sent.elapsed() < Duration::from_secs(20) {
            early += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in traffic {
        t.await.unwrap();
    }
    proxy.heal();
    assert!(proxy.faults_injected()["OwnAnswer"] > 0, "the proxy lied");
    assert_eq!(early, 0, "bob was granted a held lock: {answers:?}");
    assert!(answers.get(&409).is_some_and(|n| *n > 0), "{answers:?}");
    // Nor does anything b heard then linger: alice still holds the lock.
    problem(
        b.acquire("k", json!({"owner": "bob"})).await,
        409,
        "lock-held",
    )
    .await;
    assert_eq!(
        stored_doc(a.stored("k").await)["token"],
        held["token"],
        "alice's lease is the stored one"
    );
}

/// One of the store's own hosts has a clock 30 s ahead: its answers carry a request id like the
/// others', so they are samples. They may only delay b's takeovers: b never grants a held lock,
/// and once the lease is over it refuses to take it over while its window is that wide.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_host_with_a_clock_30_s_ahead_delays_takeovers_and_never_hastens_one() {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let a = TestApp::s3(&bucket).await;
    let proxy = FaultProxy::start(&support::s3_endpoint()).await;
    let b = TestApp::s3_via(&bucket, &proxy.endpoint, S3_TIMEOUT).await;
    // b hears the honest hosts first, as a replica running before one host's clock went wrong.
    b.status("k").await;
    json_with(
        a.acquire("k", json!({"owner": "alice", "ttl": 3})).await,
        200,
    )
    .await;
    proxy.fail_randomly(
        0.5,
        Fault::WrongClock {
            date_offset_secs: 30,
        },
    );
    let bob = || b.acquire("k", json!({"owner": "bob", "ttl": 60}));
    for _ in 0..10 {
        let resp = bob().await;
        assert_ne!(resp.status(), 200, "bob was granted alice's running lease");
    }
    // The lease ends on the store's clock: a, which hears only honest hosts, says so.
    let mut free = false;
    for _ in 0..100 {
        let status = json_with(a.status("k").await, 200).await;
        if status["locked"] == json!(false) {
            free = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(free, "alice's 3 s lease never ended on a");
    // b may judge it ended a little later than a does; until then it says "held".
    let mut resp = bob().await;
    for _ in 0..50 {
        if resp.status() != 409 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        resp = bob().await;
    }
    assert!(proxy.faults_injected()["WrongClock"] > 0, "the host lied");
    assert!(resp.headers().contains_key("retry-after"));
    let p = problem(resp, 503, "clock-uncertain").await;
    assert!(!p["detail"].as_str().unwrap().is_empty());
    assert_eq!(
        stored_doc(a.stored("k").await)["owner"],
        "alice",
        "the expired lease was left for a replica that knows the time"
    );
}

#[tokio::test]
async fn a_replica_starts_when_the_answer_to_one_of_its_store_check_writes_is_lost() {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let proxy = FaultProxy::start(&support::s3_endpoint()).await;
    // The check's PUTs, in order: 1 create, 2 a second create (refused), 3 an If-Match update,
    // 4 a stale one (refused), 5..=28 three rounds of 8 racing creates, 29 the update race's
    // start, 30..=37 its 8 racing updates. Each lost answer is to a write that reached the
    // store: the SDK retries it, and the retry meets the first attempt's result. A lost racer
    // may be the winner or a loser: either way the race must count one winner.
    for nth in [1, 3, 9, 33] {
        proxy.reset_counts();
        proxy.fail_nth_of("PUT", nth, 1, Fault::DropResponse);
        start_serving_via(&proxy.endpoint, &bucket)
            .await
            .unwrap_or_else(|e| panic!("the answer to PUT {nth} was lost: {e}"));
        assert_eq!(
            proxy.faults_injected().get("DropResponse"),
            Some(&1),
            "PUT {nth}"
        );
    }
}
