//! The violation search for semaphores and read-write locks: at most `limit` holds of a
//! semaphore at once (all under the one limit), never a shared hold beside an exclusive one nor
//! two exclusive ones, and fencing tokens that grow with every grant of a key.
//!
//! Each hold is recorded as its client saw it (see [`Grant`]): from its grant's answer arriving
//! to just before its release was sent. The true hold, on the server, began before and ended
//! after, so two recorded holds that overlap overlapped in truth. Fencing order is judged from
//! when each acquire was *sent*: holds of a semaphore overlap, so their answers may arrive in
//! any order, but a grant answered before another acquire was even sent was made first, and
//! must carry the lower token.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::{Grant, Violation};

/// What a hold of a semaphore or a read-write lock was granted as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "claim", rename_all = "snake_case")]
pub enum HoldClaim {
    /// A semaphore's permit, asked for with this limit.
    Permit {
        limit: u32,
    },
    Shared,
    Exclusive,
}

/// One hold of a semaphore or a read-write lock, as its client saw it.
#[derive(Debug, Clone, Serialize)]
pub struct SharedGrant {
    #[serde(flatten)]
    pub grant: Grant,
    pub claim: HoldClaim,
    /// When its acquire was sent: the grant was made after this.
    #[serde(skip)]
    pub sent: Instant,
    pub sent_ms: f64,
}

/// Searches a record of semaphore and read-write lock holds for violations, key by key.
pub fn find_shared_violations(holds: &[SharedGrant]) -> Vec<Violation> {
    let mut by_key: BTreeMap<&str, Vec<&SharedGrant>> = BTreeMap::new();
    for h in holds {
        by_key.entry(&h.grant.key).or_default().push(h);
    }
    let mut violations = Vec::new();
    for list in by_key.values_mut() {
        list.sort_by_key(|h| h.grant.start);
        overlaps(list, &mut violations);
        fencing(list, &mut violations);
    }
    violations
}

/// Sweeps the holds of one key in the order they began, each against those still running then.
fn overlaps(by_start: &[&SharedGrant], violations: &mut Vec<Violation>) {
    let mut running: Vec<&SharedGrant> = Vec::new();
    for &b in by_start {
        // A hold that ended as this one began was over in truth before it was granted.
        running.retain(|a| a.grant.end > b.grant.start);
        for &a in &running {
            if let Some(v) = conflict(a, b) {
                violations.push(v);
            }
        }
        running.push(b);
        let limits = running.iter().filter_map(|h| match h.claim {
            HoldClaim::Permit { limit } => Some(limit),
            _ => None,
        });
        if let Some(limit) = limits.min() {
            if running.len() > limit as usize {
                violations.push(Violation::TooManyHolders {
                    key: b.grant.key.clone(),
                    limit,
                    holds: running.iter().map(|h| h.grant.clone()).collect(),
                });
            }
        }
    }
}

/// What is wrong with `a` and `b` (`b` began while `a` ran) holding at once, if anything.
fn conflict(a: &SharedGrant, b: &SharedGrant) -> Option<Violation> {
    use HoldClaim::*;
    match (a.claim, b.claim) {
        (Permit { limit: la }, Permit { limit: lb }) if la != lb => Some(Violation::LimitChanged {
            first: a.grant.clone(),
            first_limit: la,
            second: b.grant.clone(),
            second_limit: lb,
        }),
        (Exclusive, Exclusive) => Some(Violation::Overlap {
            first: a.grant.clone(),
            second: b.grant.clone(),
        }),
        (Exclusive, Shared) => Some(Violation::SharedWithExclusive {
            exclusive: a.grant.clone(),
            shared: b.grant.clone(),
        }),
        (Shared, Exclusive) => Some(Violation::SharedWithExclusive {
            exclusive: b.grant.clone(),
            shared: a.grant.clone(),
        }),
        _ => None,
    }
}

/// Fencing tokens of one key: each grant's is its own, and a grant answered before another's
/// acquire was sent has the lower one.
fn fencing(by_start: &[&SharedGrant], violations: &mut Vec<Violation>) {
    let mut by_token: Vec<&SharedGrant> = by_start.to_vec();
    by_token.sort_by_key(|h| (h.grant.fencing_token, h.grant.start));
    for pair in by_token.windows(2) {
        if pair[0].grant.fencing_token == pair[1].grant.fencing_token {
            violations.push(Violation::FencingOutOfOrder {
                earlier: pair[0].grant.clone(),
                later: pair[1].grant.clone(),
            });
        }
    }
    let mut by_sent: Vec<&SharedGrant> = by_start.to_vec();
    by_sent.sort_by_key(|h| h.sent);
    // The hold with the highest token among those answered before the current one was sent.
    let mut highest: Option<&SharedGrant> = None;
    let mut answered = by_start.iter().peekable();
    for &b in &by_sent {
        while let Some(&a) = answered.next_if(|a| a.grant.start < b.sent) {
            if highest.is_none_or(|h| a.grant.fencing_token > h.grant.fencing_token) {
                highest = Some(a);
            }
        }
        // Equal tokens are reported above, once.
        if let Some(a) = highest.filter(|a| a.grant.fencing_token > b.grant.fencing_token) {
            violations.push(Violation::FencingOutOfOrder {
                earlier: a.grant.clone(),
                later: b.grant.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A hold of `key` by `client`: its acquire sent at `sent_ms`, answered at `start_ms`,
    /// released at `end_ms` (milliseconds after `o`).
    fn hold(
        key: &str,
        client: usize,
        claim: HoldClaim,
        fencing_token: u64,
        (sent_ms, start_ms, end_ms): (u64, u64, u64),
        o: Instant,
    ) -> SharedGrant {
        let ms = |m| o + Duration::from_millis(m);
        SharedGrant {
            grant: Grant {
                key: key.into(),
                client,
                fencing_token,
                unreleased: false,
                start: ms(start_ms),
                end: ms(end_ms),
                start_ms: start_ms as f64,
                end_ms: end_ms as f64,
            },
            claim,
            sent: ms(sent_ms),
            sent_ms: sent_ms as f64,
        }
    }

    const THREE: HoldClaim = HoldClaim::Permit { limit: 3 };

    fn kinds(v: &[Violation]) -> Vec<&'static str> {
        v.iter()
            .map(|v| match v {
                Violation::Overlap { .. } => "overlap",
                Violation::FencingOutOfOrder { .. } => "fencing",
                Violation::LostRelease { .. } => "lost-release",
                Violation::TooManyHolders { .. } => "too-many",
                Violation::LimitChanged { .. } => "limit",
                Violation::SharedWithExclusive { .. } => "shared-with-exclusive",
            })
            .collect()
    }

    #[test]
    fn as_many_holds_as_the_limit_at_once_and_back_to_back_holds_are_clean() {
        let o = Instant::now();
        let holds = [
            hold("s", 1, THREE, 1, (0, 1, 100), o),
            hold("s", 2, THREE, 2, (0, 2, 100), o),
            hold("s", 3, THREE, 3, (0, 3, 50), o),
            // Begins as the third ends: three at once, never four.
            hold("s", 4, THREE, 4, (40, 50, 100), o),
            hold("other", 1, THREE, 1, (0, 10, 60), o),
        ];
        let v = find_shared_violations(&holds);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn one_hold_more_than_the_limit_at_once_is_reported() {
        let o = Instant::now();
        let holds = [
            hold("s", 1, THREE, 1, (0, 1, 100), o),
            hold("s", 2, THREE, 2, (0, 2, 100), o),
            hold("s", 3, THREE, 3, (0, 3, 100), o),
            hold("s", 4, THREE, 4, (40, 50, 60), o),
        ];
        let v = find_shared_violations(&holds);
        assert_eq!(kinds(&v), ["too-many"]);
        let Violation::TooManyHolders { limit, holds, .. } = &v[0] else {
            unreachable!()
        };
        assert_eq!((*limit, holds.len()), (3, 4));
    }

    #[test]
    fn an_unreleased_hold_counts_until_its_lease_could_end() {
        let o = Instant::now();
        let one = HoldClaim::Permit { limit: 1 };
        let mut crashed = hold("s", 1, one, 1, (0, 1, 10), o);
        crashed.grant.end = o + Duration::from_millis(1000);
        crashed.grant.unreleased = true;
        let holds = [crashed, hold("s", 2, one, 2, (400, 500, 600), o)];
        assert_eq!(kinds(&find_shared_violations(&holds)), ["too-many"]);
    }

    #[test]
    fn overlapping_holds_granted_under_different_limits_are_reported() {
        let o = Instant::now();
        let holds = [
            hold("s", 1, THREE, 1, (0, 1, 100), o),
            hold("s", 2, HoldClaim::Permit { limit: 5 }, 2, (0, 2, 100), o),
            // After both ended, a new limit is fine.
            hold(
                "s",
                3,
                HoldClaim::Permit { limit: 5 },
                3,
                (100, 101, 200),
                o,
            ),
        ];
        assert_eq!(kinds(&find_shared_violations(&holds)), ["limit"]);
    }

    #[test]
    fn readers_overlapping_one_another_and_writers_one_after_another_are_clean() {
        let o = Instant::now();
        let holds = [
            hold("rw", 1, HoldClaim::Shared, 1, (0, 1, 100), o),
            hold("rw", 2, HoldClaim::Shared, 2, (0, 2, 100), o),
            hold("rw", 3, HoldClaim::Exclusive, 3, (50, 100, 150), o),
            hold("rw", 4, HoldClaim::Exclusive, 4, (60, 150, 200), o),
            hold("rw", 5, HoldClaim::Shared, 5, (120, 200, 300), o),
        ];
        let v = find_shared_violations(&holds);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn a_reader_beside_a_writer_is_reported_whichever_came_first() {
        let o = Instant::now();
        let writer_first = [
            hold("rw", 1, HoldClaim::Exclusive, 1, (0, 1, 100), o),
            hold("rw", 2, HoldClaim::Shared, 2, (10, 50, 150), o),
        ];
        let reader_first = [
            hold("rw", 1, HoldClaim::Shared, 1, (0, 1, 100), o),
            hold("rw", 2, HoldClaim::Exclusive, 2, (10, 50, 150), o),
        ];
        for holds in [writer_first, reader_first] {
            let v = find_shared_violations(&holds);
            assert_eq!(kinds(&v), ["shared-with-exclusive"]);
            let Violation::SharedWithExclusive { exclusive, shared } = &v[0] else {
                unreachable!()
            };
            assert_ne!(exclusive.client, shared.client);
        }
    }

    #[test]
    fn two_writers_at_once_are_reported() {
        let o = Instant::now();
        let holds = [
            hold("rw", 1, HoldClaim::Exclusive, 1, (0, 1, 100), o),
            hold("rw", 2, HoldClaim::Exclusive, 2, (10, 99, 150), o),
        ];
        assert_eq!(kinds(&find_shared_violations(&holds)), ["overlap"]);
    }

    #[test]
    fn a_fencing_token_given_twice_on_a_key_is_reported() {
        let o = Instant::now();
        let holds = [
            hold("s", 1, THREE, 7, (0, 1, 100), o),
            hold("s", 2, THREE, 7, (0, 2, 100), o),
            hold("t", 1, THREE, 7, (0, 2, 100), o),
        ];
        assert_eq!(kinds(&find_shared_violations(&holds)), ["fencing"]);
    }

    #[test]
    fn a_grant_asked_for_after_another_was_answered_with_a_lower_token_is_reported() {
        let o = Instant::now();
        let holds = [
            hold("s", 1, THREE, 5, (0, 10, 100), o),
            hold("s", 2, THREE, 4, (20, 30, 100), o),
        ];
        let v = find_shared_violations(&holds);
        assert_eq!(kinds(&v), ["fencing"]);
        let Violation::FencingOutOfOrder { earlier, later } = &v[0] else {
            unreachable!()
        };
        assert_eq!((earlier.client, later.client), (1, 2));
    }

    #[test]
    fn concurrent_grants_answered_out_of_token_order_are_clean() {
        // Both asked at 0; the grant with token 2 was answered first. Either order is possible.
        let o = Instant::now();
        let holds = [
            hold("s", 1, THREE, 1, (0, 20, 100), o),
            hold("s", 2, THREE, 2, (0, 10, 100), o),
        ];
        let v = find_shared_violations(&holds);
        assert!(v.is_empty(), "{v:?}");
    }
}
