//! Two replicas over one SeaweedFS bucket, 16 clients hammering the same keys through them
//! (acquire with a short wait, hold briefly, release), every grant recorded by `s3lock check`'s
//! checker: no two holds of a key ever overlap, fencing tokens strictly increase in grant order,
//! and no holder's release is ever refused inside its lease.

use std::time::Duration;

use s3lock::client::check::{self, CheckConfig, CheckKind, CheckReport};

use crate::helpers::support::proxy::{Fault, FaultProxy, Latency};
use crate::helpers::{support, TestApp};

/// Runs the checker against two fresh replicas, each reaching S3 through its own proxy, with
/// random latency and occasional `503 SlowDown`s when `faulty`.
pub async fn hammer(keys: usize, faulty: bool) -> CheckReport {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let mut replicas = Vec::new();
    let mut proxies = Vec::new();
    for _ in 0..2 {
        let proxy = FaultProxy::start(&support::s3_endpoint()).await;
        if faulty {
            proxy.set_latency(Latency::UpTo(Duration::from_millis(15)));
            proxy.fail_randomly(0.03, Fault::SlowDown);
        }
        replicas.push(TestApp::s3_via(&bucket, &proxy.endpoint, Duration::from_secs(3)).await);
        proxies.push(proxy);
    }
    let report = check::run(CheckConfig {
        kind: CheckKind::Lock,
        urls: replicas.iter().map(|r| r.base.clone()).collect(),
        bearer: None,
        clients: 16,
        keys,
        key_prefix: "hot/".into(),
        duration: Duration::from_secs(4),
        // Long enough that no lease runs out under a loaded CI machine's stalls: a lease that
        // ends mid-hold is the lease working, not a violation, and would only blur the check.
        ttl: 30,
        wait: 1.0,
        max_hold: Duration::from_millis(5),
        tls: Default::default(),
    })
    .await;
    let injected: usize = proxies
        .iter()
        .flat_map(|p| p.faults_injected().into_values())
        .sum();
    eprintln!("keys={keys} faulty={faulty}: {report:?}; {injected} faults injected");
    if faulty {
        assert!(injected > 0, "no fault was injected");
    }
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_clients_on_two_replicas_never_share_one_lock() {
    let report = hammer(1, false).await;
    assert!(
        report.grants >= 10,
        "only {} grants: the lock was not exercised",
        report.grants
    );
    assert_eq!(report.errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_clients_on_two_replicas_never_share_any_of_a_hundred_locks() {
    let report = hammer(100, false).await;
    // Enough grants to have exercised many keys; not a throughput floor (how many fit in 4 s is
    // the machine's speed, and a loaded CI machine managed 16 where a quiet one makes 100+).
    assert!(report.grants >= 10, "only {} grants", report.grants);
    assert!(
        report.keys_granted >= 5,
        "only {} keys were granted",
        report.keys_granted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contention_with_random_latency_and_503s_still_has_one_holder_at_a_time() {
    let report = hammer(3, true).await;
    assert!(report.grants >= 10, "only {} grants", report.grants);
}
