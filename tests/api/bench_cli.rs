//! `s3lock bench`, the binary users run: every operation completes against two replicas on
//! SeaweedFS and reports JSON, `--direct-s3` makes the same cycle straight on the bucket, and
//! combinations it cannot measure are refused. Only that it works is asserted, never a timing.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{support, TestApp};

async fn run_bench(args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_s3lock"))
            .arg("bench")
            .args(args)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("bench stops by itself")
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) async fn bench_json(args: &[&str]) -> Value {
    let (code, stdout, stderr) = run_bench(args).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["ok"].as_u64().unwrap() > 0, "{report}");
    for q in ["p50", "p90", "p99", "max"] {
        assert!(report["latency_ms"][q].as_f64().unwrap() > 0.0, "{report}");
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_bench_operation_runs_against_two_replicas_and_direct_on_the_bucket() {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let replicas = [TestApp::s3(&bucket).await, TestApp::s3(&bucket).await];
    let urls = format!("{},{}", replicas[0].base, replicas[1].base);
    for op in ["cycle", "acquire", "renew", "status"] {
        let prefix = format!("bench-{op}/");
        let report = bench_json(&[
            "--url",
            &urls,
            "--clients",
            "4",
            "--keys",
            "8",
            "--duration",
            "300ms",
            "--op",
            op,
            "--key-prefix",
            &prefix,
            "--json",
        ])
        .await;
        assert_eq!(report["op"], op);
        assert_eq!(report["refused"], 0, "no two clients share a key: {report}");
    }
    let report = bench_json(&[
        "--url",
        &urls,
        "--clients",
        "2",
        "--duration",
        "500ms",
        "--op",
        "handoff",
        "--hold",
        "50",
        "--cross-replica",
        "--json",
    ])
    .await;
    assert_eq!(report["cross_replica"], true);
    let report = bench_json(&[
        "--url",
        &urls,
        "--clients",
        "8",
        "--keys",
        "2",
        "--duration",
        "1s",
        "--op",
        "wait",
        "--key-prefix",
        "bench-wait/",
        "--json",
    ])
    .await;
    assert_eq!(
        report["refused"], 8,
        "every waiter waited and was refused: {report}"
    );
    let report = bench_json(&[
        "--direct-s3",
        "--bucket",
        &bucket,
        "--s3-endpoint",
        &support::s3_endpoint(),
        "--s3-path-style",
        "--clients",
        "4",
        "--keys",
        "8",
        "--duration",
        "300ms",
        "--json",
    ])
    .await;
    assert_eq!(report["mode"], "direct-s3");
    // The blocker's locks were released once the waiters were done.
    let status: Value = replicas[0]
        .status("bench-wait/0")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["locked"], false, "{status}");
}

#[tokio::test]
async fn bench_refuses_what_it_cannot_measure() {
    let (code, _, stderr) = run_bench(&["--direct-s3", "--bucket", "b", "--op", "handoff"]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("need the service"), "{stderr}");
}
