//! `s3lock check`, the binary users run, against two replicas: clean on a store that enforces
//! conditional writes, and catching double grants on one that ignores them.

use std::process::Stdio;
use std::time::Duration;

use crate::helpers::support::proxy::{Fault, FaultProxy};
use crate::helpers::{support, TestApp};

pub(crate) async fn run_check(urls: &[String], extra: &[&str]) -> (i32, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_s3lock"));
    cmd.arg("check");
    // Defaults, each unless the test names its own.
    for (flag, value) in [("--clients", "16"), ("--keys", "1"), ("--duration", "3s")] {
        if !extra.contains(&flag) {
            cmd.args([flag, value]);
        }
    }
    for u in urls {
        cmd.args(["--url", u]);
    }
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        cmd.args(extra).stdin(Stdio::null()).output(),
    )
    .await
    .expect("check stops by itself")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), stdout)
}

pub(crate) async fn two_replicas(endpoint: &str) -> [TestApp; 2] {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    [
        TestApp::s3_via(&bucket, endpoint, Duration::from_secs(3)).await,
        TestApp::s3_via(&bucket, endpoint, Duration::from_secs(3)).await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_passes_two_replicas_on_seaweedfs() {
    let replicas = two_replicas(&support::s3_endpoint()).await;
    let urls: Vec<_> = replicas.iter().map(|r| r.base.clone()).collect();
    let (code, stdout) = run_check(&urls, &["--json"]).await;
    assert_eq!(code, 0, "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(report["grants"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["violations"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_catches_double_grants_on_a_store_that_ignores_conditional_writes() {
    // What the start-up store check exists to refuse: here the replicas are built without it.
    let proxy = FaultProxy::start(&support::s3_endpoint()).await;
    proxy.strip_conditions(true);
    let replicas = two_replicas(&proxy.endpoint).await;
    let urls: Vec<_> = replicas.iter().map(|r| r.base.clone()).collect();
    let (code, stdout) = run_check(&urls, &["--max-hold", "20ms"]).await;
    eprintln!("{}", stdout.lines().next().unwrap_or_default());
    assert_eq!(code, 1, "no violation found on an unsafe store: {stdout}");
    assert!(stdout.contains("VIOLATION"), "{stdout}");
}

#[tokio::test]
async fn check_exits_2_when_nothing_could_be_checked() {
    let url = support::closed_url();
    let (code, _) = run_check(&[url], &["--duration", "300ms"]).await;
    assert_eq!(code, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_finds_no_release_refused_when_store_answers_are_lost_after_the_write_landed() {
    // Writes land and their answers are lost (the SDK's retry then meets its own write); while
    // the answer is awaited, waiters take the freed lock. No release may be told `not-holder`.
    let proxy = FaultProxy::start(&support::s3_endpoint()).await;
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let replica = TestApp::s3_via(&bucket, &proxy.endpoint, Duration::from_secs(3)).await;
    proxy.fail_randomly(0.05, Fault::DropResponse);
    let (code, stdout) = run_check(
        std::slice::from_ref(&replica.base),
        &["--clients", "8", "--duration", "6s", "--json"],
    )
    .await;
    proxy.heal();
    let report: serde_json::Value = serde_json::from_str(&stdout).expect(&stdout);
    eprintln!(
        "grants {} errors {} unconfirmed {} faults {:?}",
        report["grants"],
        report["errors"],
        report["unconfirmed_releases"],
        proxy.faults_injected()
    );
    assert!(proxy.faults_injected()["DropResponse"] > 0);
    assert_eq!(report["violations"], serde_json::json!([]), "{report}");
    assert_eq!(code, 0, "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_finds_no_violation_while_a_load_balancer_answers_with_a_clock_30_s_ahead() {
    // One replica direct, one behind a load balancer that answers half its store calls itself,
    // 503 with a Date 30 s ahead. Leases of 5 s: a replica that believed that Date would take
    // over every lease the moment it was granted.
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let proxy = FaultProxy::start(&support::s3_endpoint()).await;
    proxy.fail_randomly(
        0.5,
        Fault::OwnAnswer {
            status: 503,
            date_offset_secs: 30,
        },
    );
    let replicas = [
        TestApp::s3_via(&bucket, &support::s3_endpoint(), Duration::from_secs(3)).await,
        TestApp::s3_via(&bucket, &proxy.endpoint, Duration::from_secs(3)).await,
    ];
    let urls: Vec<_> = replicas.iter().map(|r| r.base.clone()).collect();
    let (code, stdout) = run_check(&urls, &["--ttl", "5", "--max-hold", "200ms", "--json"]).await;
    assert!(proxy.faults_injected()["OwnAnswer"] > 0, "the proxy lied");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        report["violations"].as_array().unwrap().len(),
        0,
        "{report}"
    );
    assert!(report["grants"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(code, 0, "{stdout}");
}
