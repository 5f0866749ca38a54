//! The hold-time histogram, on the engine with the clock moved by hand: a hold is measured from
//! its grant (across renews) to its release, its break, or the end of a lease that ran out.

use super::*;

fn hold_seconds(f: &Fixture) -> (Option<f64>, Option<f64>) {
    let text = f.engine.metrics().render();
    let line = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    (
        line("s3lock_lock_hold_seconds_count"),
        line("s3lock_lock_hold_seconds_sum"),
    )
}

#[tokio::test]
async fn a_hold_is_measured_from_its_grant_to_its_release_break_or_lease_end() {
    let f = fixture();
    let alice = f
        .engine
        .acquire(None, "k", owner("alice", 10))
        .await
        .unwrap();
    f.clock.set(t0() + Duration::seconds(5));
    f.engine
        .renew(None, "k", alice.holder_token().unwrap(), Some(10))
        .await
        .unwrap();
    assert_eq!(hold_seconds(&f), (None, None), "a renew ends no hold");
    // alice vanished: her lease ended at t0 + 15, and bob takes the lock over at t0 + 20.
    f.clock.set(t0() + Duration::seconds(20));
    let bob = f.engine.acquire(None, "k", owner("bob", 10)).await.unwrap();
    assert_eq!(hold_seconds(&f), (Some(1.0), Some(15.0)));
    f.clock.set(t0() + Duration::seconds(23));
    f.engine
        .release(None, "k", bob.holder_token().unwrap())
        .await
        .unwrap();
    assert_eq!(hold_seconds(&f), (Some(2.0), Some(18.0)));
    f.engine
        .acquire(None, "k", owner("carol", 60))
        .await
        .unwrap();
    f.clock.set(t0() + Duration::seconds(30));
    f.engine.break_lock(None, "k", "admin").await.unwrap();
    assert_eq!(hold_seconds(&f), (Some(3.0), Some(25.0)));
}

#[tokio::test]
async fn the_hold_of_a_seed_lock_is_not_measured_as_its_grant_time_is_unknown() {
    let f = fixture();
    f.put_raw(
        "k",
        r#"{"expire": 10, "lock_time": "2026-11-26T00:00:00+00:00", "release_time": null, "owner": "old"}"#,
    )
    .await;
    f.clock.set(t0() + Duration::seconds(10));
    f.engine.acquire(None, "k", owner("bob", 10)).await.unwrap();
    assert_eq!(hold_seconds(&f), (None, None));
}
