//! Readiness follows the store: a probe's answer is shared for a second, but never over a failure
//! seen after it.

use super::*;

#[tokio::test]
async fn a_store_failure_after_a_probe_makes_the_engine_unready_at_once() {
    let f = fixture();
    f.engine.mark_store_checked();
    // Nothing has been asked of the store yet: this probes it, and the answer is kept a second.
    f.engine.ready().await.expect("the store answers its probe");
    f.store.set(Some(Fault::Down));
    f.engine
        .status(None, "k", None)
        .await
        .expect_err("the store is down");
    // Within the probe's second: the failure is newer than the probe, so it is not trusted.
    assert!(
        f.engine.ready().await.is_err(),
        "a probe's answer outlived a failure seen after it"
    );
    // Back: the next store call that answers makes it ready again, with no wait for a probe.
    f.store.set(None);
    f.engine
        .status(None, "k", None)
        .await
        .expect("the store is back");
    f.engine
        .ready()
        .await
        .expect("ready once the store answers");
}
