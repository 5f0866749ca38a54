//! The stored lock document: the seed module's four fields, in its order and time format, plus
//! what safety needs (the holder token, the fencing token and the revision).

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::history;
pub use super::history::{History, Succession, WriteId, WRITE_HISTORY};
pub use crate::wire::{
    format_seed_time, parse_seed_time, seed_time, truncate_to_micros, HolderToken,
};

/// One lock as stored. Documents written by the seed module have no `token` and no
/// `fencing_token`; they still parse, and their owner holds them until `lock_time + expire`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockDocument {
    /// The holder's lease length in seconds, counted from `lock_time` on the store's clock.
    pub expire: u64,
    /// When the lease was granted or last renewed (the store's clock, stamped at its latest
    /// possible value so the stored lease always covers what the holder was told).
    #[serde(with = "seed_time")]
    pub lock_time: DateTime<Utc>,
    #[serde(with = "seed_time::option")]
    pub release_time: Option<DateTime<Utc>>,
    /// The holder's chosen name; `null` once released.
    pub owner: Option<String>,
    /// The holder's secret proof of holding. Unique per grant, kept on renew and on release (so a
    /// second release by the same holder is recognised and answered idempotently), and never shown
    /// by status or list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<HolderToken>,
    /// Grows by one each time the lock passes to a new holder and never otherwise, so a resource
    /// guarded by the lock can refuse a writer whose fencing token is older than one it has seen.
    #[serde(default)]
    pub fencing_token: u64,
    /// Grows by one with every write of this lock, so no body is ever written twice and no
    /// version (an ETag is the MD5 of the body) ever comes back. Without it a renew within the
    /// same second of store time wrote the very bytes of an earlier write, and a late write
    /// conditioned on that earlier version (a release whose answer was lost, an orphaned grant's
    /// clean-up) matched again and undid the renew. Seed documents have none (0).
    #[serde(default)]
    pub revision: u64,
    /// What the holder published with its lease (any JSON, bounded at the edge: see
    /// `lock::terms`), shown to everyone who may read the lock. `Null` is no value: it is then
    /// left out of the document, and so the old module's documents read as none. Kept by a
    /// renew or refresh that names none; cleared when the lock is released or broken, so a
    /// value always describes the holder that set it.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub value: Value,
    /// Seconds after the lease's end during which nobody may take a lock its holder never
    /// released (see [`LockDocument::available_at`]): the holder may have crashed with writes
    /// still in flight to what the lock guards, and they must land (or fail) before a new
    /// holder starts. A release or a break ends it (both clear the owner); 0 when none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lock_delay: u64,
    /// When the current holder was granted the lock (kept across its renews), so that the time
    /// a lock was held is known when the hold ends, for the hold-time metric. `None` once
    /// released or broken, and in documents written before it existed or by the old module.
    #[serde(
        default,
        with = "seed_time::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub held_since: Option<DateTime<Utc>>,
    /// Who wrote this document and the documents it replaced: a random id for this write first,
    /// then the ids of the writes before it, newest first, at most [`WRITE_HISTORY`] in all
    /// (see [`History`]).
    /// A writer whose answer was lost reads the lock back to learn whether its write landed; if
    /// other writes have followed since (a release lands, then a waiter takes the lock), the
    /// stored document is no longer its own, and only this history can prove that its write was
    /// applied and then replaced, rather than beaten. Seed documents have none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writes: Vec<WriteId>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl LockDocument {
    /// A fresh grant to `owner`, the first write of a lock that does not exist yet.
    pub fn grant(owner: &str, ttl: u64, now: DateTime<Utc>, fencing_token: u64) -> Self {
        let (revision, writes) = history::first();
        Self {
            expire: ttl,
            lock_time: now,
            release_time: None,
            owner: Some(owner.to_owned()),
            token: Some(HolderToken::generate()),
            fencing_token,
            revision,
            value: Value::Null,
            lock_delay: 0,
            held_since: Some(now),
            writes,
        }
    }

    /// The same document publishing `value` (`Null`: none).
    pub fn with_value(self, value: Value) -> Self {
        Self { value, ..self }
    }

    /// The same document with a lock-delay of `seconds` after its lease.
    pub fn with_lock_delay(self, seconds: u64) -> Self {
        Self {
            lock_delay: seconds,
            ..self
        }
    }

    /// A fresh grant to `owner` written over this document.
    pub fn granted_over(
        &self,
        owner: &str,
        ttl: u64,
        now: DateTime<Utc>,
        fencing_token: u64,
    ) -> Self {
        Self::grant(owner, ttl, now, fencing_token).written_over(self)
    }

    /// The same holder's lease, restarted at `now` for `ttl` seconds.
    pub fn renewed(&self, ttl: u64, now: DateTime<Utc>) -> Self {
        Self {
            expire: ttl,
            lock_time: now,
            ..self.clone()
        }
        .written_over(self)
    }

    /// Released at `now`: no owner, no value, no lock-delay; the token and fencing token kept.
    pub fn released(&self, now: DateTime<Utc>) -> Self {
        Self {
            owner: None,
            release_time: Some(now),
            ..self.clone()
        }
        .without_holder()
        .written_over(self)
    }

    /// What describes a holder goes with it: its value, its lock-delay, when it was granted.
    fn without_holder(self) -> Self {
        Self {
            value: Value::Null,
            lock_delay: 0,
            held_since: None,
            ..self
        }
    }

    /// This document as the next write over `previous` (see [`History::next`]).
    fn written_over(mut self, previous: &Self) -> Self {
        (self.revision, self.writes) = previous.history().next();
        self
    }

    /// This document's revision and write ids.
    pub fn history(&self) -> History<'_> {
        History {
            revision: self.revision,
            writes: &self.writes,
        }
    }

    /// Whether `ours` (a document this process wrote, whose answer it did not get) landed before
    /// this stored document replaced it (see [`History::succession_of`]).
    pub fn succession_of(&self, ours: &Self) -> Succession {
        self.history().succession_of(ours.history())
    }

    /// Whether this document was written after `earlier`, over it or over what replaced it: its
    /// history names `earlier`'s write, and it is not that write. Two looks at a lock that end
    /// in the wrong order (an answer that came late) are told apart by this, never by revision
    /// alone, which starts over when the old module writes a lock or it is deleted by hand.
    pub fn supersedes(&self, earlier: &Self) -> bool {
        self.history().supersedes(earlier.history())
    }

    /// Broken by an admin at `now`: no owner, and no token, so the old holder's renew and
    /// release are refused (a plain release keeps the token to stay idempotent; a break must not).
    /// The fencing token grows (the caller passes the next one), as at any change of hands: whoever repairs the protected resource
    /// under the break's fencing token is already ahead of the stale holder, and the next holder
    /// is ahead of both.
    pub fn broken(&self, now: DateTime<Utc>, fencing_token: u64) -> Self {
        Self {
            owner: None,
            token: None,
            release_time: Some(now),
            fencing_token,
            ..self.clone()
        }
        .without_holder()
        .written_over(self)
    }

    /// Whether a write over this document can still get a revision of its own.
    pub fn can_grow(&self) -> bool {
        self.revision < u64::MAX
    }

    pub fn expires_at(&self) -> DateTime<Utc> {
        // A seed document may carry any integer; past chrono's range the lease simply never ends.
        i64::try_from(self.expire)
            .ok()
            .and_then(Duration::try_seconds)
            .and_then(|d| self.lock_time.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The seed's rule: the lease has run out once `now - lock_time >= expire` (the boundary
    /// counts as expired).
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires_at()
    }

    /// When someone other than the holder may next take the lock: the end of the lease plus
    /// its lock-delay, while an owner is set. `None` once released or broken (free now).
    /// Whether that moment has come is judged, like every expiry, at the earliest time the
    /// store's clock may show ([`LockDocument::is_free_at`]).
    pub fn available_at(&self) -> Option<DateTime<Utc>> {
        self.owner.as_ref()?;
        let end = self.expires_at();
        Some(
            i64::try_from(self.lock_delay)
                .ok()
                .and_then(Duration::try_seconds)
                .and_then(|d| end.checked_add_signed(d))
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        )
    }

    /// Whether a new holder may take the lock at `now`: nobody holds it, and no lock-delay
    /// after an unreleased lease is still running. The one test of "free" that every reader of
    /// a lock uses (the rules, its watcher, a waiter's wake-up).
    pub fn is_free_at(&self, now: DateTime<Utc>) -> bool {
        self.available_at().is_none_or(|t| now >= t)
    }

    /// How long the current holder held the lock, if it let go at `ended` (a release, a
    /// break) or when its lease ran out, whichever came first. `None` when the grant time is
    /// unknown (a document of the old module or from before `held_since`).
    pub fn held_for(&self, ended: DateTime<Utc>) -> Option<std::time::Duration> {
        let since = self.held_since?;
        let end = ended.min(self.expires_at());
        Some((end - since).to_std().unwrap_or_default())
    }

    /// The owner who holds the lock at `now`, if anyone does.
    pub fn holder(&self, now: DateTime<Utc>) -> Option<&str> {
        match &self.owner {
            Some(owner) if !self.is_expired(now) => Some(owner),
            _ => None,
        }
    }

    /// The seed's `is_locked(utc_now, expect_owner)`: locked from `expect_owner`'s point of view.
    pub fn is_locked_for(&self, now: DateTime<Utc>, expect_owner: Option<&str>) -> bool {
        match self.holder(now) {
            None => false,
            Some(owner) => Some(owner) != expect_owner,
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("a lock document always serialises"))
    }

    pub fn from_bytes(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: &str) -> DateTime<Utc> {
        parse_seed_time(s).unwrap()
    }

    #[test]
    fn a_seed_document_parses_with_no_token_and_fencing_token_zero() {
        let doc = LockDocument::from_bytes(
            br#"{"expire": 900, "lock_time": "2026-11-26T02:24:19.844224+00:00", "release_time": null, "owner": "bob"}"#,
        )
        .unwrap();
        assert_eq!(doc.owner.as_deref(), Some("bob"));
        assert_eq!(doc.token, None);
        assert_eq!(doc.fencing_token, 0);
        assert_eq!(doc.expires_at(), at("2026-11-26T02:39:19.844224+00:00"));
    }

    #[test]
    fn a_seed_document_has_no_value_no_lock_delay_and_no_grant_time() {
        let doc = LockDocument::from_bytes(
            br#"{"expire": 900, "lock_time": "2026-11-26T02:24:19.844224+00:00", "release_time": null, "owner": "bob"}"#,
        )
        .unwrap();
        assert_eq!(doc.value, Value::Null);
        assert_eq!(doc.lock_delay, 0);
        assert_eq!(doc.held_since, None);
        assert_eq!(doc.available_at(), Some(doc.expires_at()));
        assert_eq!(doc.held_for(doc.expires_at()), None);
    }

    #[test]
    fn no_value_no_lock_delay_and_no_grant_time_are_left_out_of_the_document() {
        let t0 = at("2026-01-01T00:00:00+00:00");
        let released = LockDocument::grant("alice", 60, t0, 1)
            .with_value(serde_json::json!({"addr": "a:1"}))
            .with_lock_delay(5)
            .released(t0);
        let text = String::from_utf8(released.to_bytes().to_vec()).unwrap();
        for field in ["\"value\"", "lock_delay", "held_since"] {
            assert!(!text.contains(field), "{field} in {text}");
        }
        let held = LockDocument::grant("alice", 60, t0, 1)
            .with_value(serde_json::json!({"addr": "a:1"}))
            .with_lock_delay(5);
        let text = String::from_utf8(held.to_bytes().to_vec()).unwrap();
        assert!(text.contains(r#""value":{"addr":"a:1"}"#), "{text}");
        assert!(text.contains(r#""lock_delay":5"#), "{text}");
        assert!(
            text.contains(r#""held_since":"2026-01-01T00:00:00+00:00""#),
            "{text}"
        );
        assert_eq!(LockDocument::from_bytes(text.as_bytes()).unwrap(), held);
    }

    #[test]
    fn a_renew_keeps_the_value_delay_and_grant_time_and_a_release_or_break_drops_them() {
        let t0 = at("2026-01-01T00:00:00+00:00");
        let held = LockDocument::grant("alice", 60, t0, 1)
            .with_value(serde_json::json!([1, 2]))
            .with_lock_delay(5);
        let renewed = held.renewed(60, t0 + Duration::seconds(30));
        assert_eq!(
            (&renewed.value, renewed.lock_delay, renewed.held_since),
            (&held.value, 5, Some(t0))
        );
        for gone in [renewed.released(t0), renewed.broken(t0, 2)] {
            assert_eq!(
                (gone.value, gone.lock_delay, gone.held_since),
                (Value::Null, 0, None)
            );
        }
        let next = renewed.granted_over("bob", 60, t0 + Duration::seconds(99), 2);
        assert_eq!(next.value, Value::Null, "a new holder starts with no value");
        assert_eq!(next.held_since, Some(t0 + Duration::seconds(99)));
    }

    #[test]
    fn a_lock_is_free_once_released_or_at_its_lease_end_plus_its_delay() {
        let t0 = at("2026-01-01T00:00:00+00:00");
        let held = LockDocument::grant("alice", 10, t0, 1).with_lock_delay(5);
        let end = t0 + Duration::seconds(10);
        assert_eq!(held.available_at(), Some(end + Duration::seconds(5)));
        assert!(!held.is_free_at(end), "expired, but in its delay");
        assert!(held.holder(end).is_none());
        assert!(!held.is_free_at(end + Duration::microseconds(4_999_999)));
        assert!(held.is_free_at(end + Duration::seconds(5)));
        let released = held.released(t0);
        assert_eq!(released.available_at(), None);
        assert!(released.is_free_at(t0));
        let no_delay = LockDocument::grant("alice", 10, t0, 1);
        assert!(no_delay.is_free_at(end) && !no_delay.is_free_at(end - Duration::microseconds(1)));
        let forever = held.with_lock_delay(u64::MAX);
        assert_eq!(forever.available_at(), Some(DateTime::<Utc>::MAX_UTC));
    }

    #[test]
    fn a_hold_is_measured_from_the_grant_across_renews() {
        let t0 = at("2026-01-01T00:00:00+00:00");
        let held = LockDocument::grant("alice", 10, t0, 1).renewed(10, t0 + Duration::seconds(8));
        assert_eq!(
            held.held_for(t0 + Duration::seconds(12)),
            Some(std::time::Duration::from_secs(12))
        );
        assert_eq!(
            held.held_for(t0 + Duration::seconds(60)),
            Some(std::time::Duration::from_secs(18)),
            "a lease that ran out ended the hold when it did"
        );
        assert_eq!(
            held.held_for(t0 - Duration::seconds(1)),
            Some(std::time::Duration::ZERO),
            "a clock that stepped back measures no hold, never a negative one"
        );
    }

    #[test]
    fn times_are_written_in_the_seed_format_with_and_without_microseconds() {
        let whole = Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(format_seed_time(&whole), "1970-01-01T00:00:00+00:00");
        let t = at("2026-11-26T02:24:19.844224+00:00");
        assert_eq!(format_seed_time(&t), "2026-11-26T02:24:19.844224+00:00");
    }

    #[test]
    fn a_document_serialises_fields_in_the_seed_order_then_ours() {
        let doc = LockDocument::grant("alice", 60, at("2026-11-26T02:24:19.5+00:00"), 7);
        let text = String::from_utf8(doc.to_bytes().to_vec()).unwrap();
        let order = [
            "expire",
            "lock_time",
            "release_time",
            "owner",
            "token",
            "fencing_token",
        ];
        let positions: Vec<usize> = order.iter().map(|f| text.find(f).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(
            text.contains(r#""lock_time":"2026-11-26T02:24:19.500000+00:00""#),
            "{text}"
        );
        assert_eq!(LockDocument::from_bytes(text.as_bytes()).unwrap(), doc);
    }

    #[test]
    fn the_expiry_boundary_counts_as_expired() {
        let doc = LockDocument::grant("alice", 60, at("2026-01-01T00:00:00+00:00"), 1);
        assert!(!doc.is_expired(at("2026-01-01T00:00:59.999999+00:00")));
        assert!(doc.is_expired(at("2026-01-01T00:01:00+00:00")));
    }

    #[test]
    fn is_locked_follows_the_seed_rules() {
        let t0 = at("2026-01-01T00:00:00+00:00");
        let doc = LockDocument::grant("alice", 60, t0, 1);
        let during = t0 + Duration::seconds(30);
        assert!(doc.is_locked_for(during, None));
        assert!(doc.is_locked_for(during, Some("bob")));
        assert!(!doc.is_locked_for(during, Some("alice")));
        assert!(!doc.is_locked_for(t0 + Duration::seconds(60), Some("bob")));
        assert!(!doc.released(during).is_locked_for(during, Some("bob")));
    }

    #[test]
    fn a_huge_expire_does_not_overflow() {
        let doc = LockDocument {
            expire: u64::MAX,
            ..LockDocument::grant("a", 1, at("2026-01-01T00:00:00+00:00"), 1)
        };
        assert!(!doc.is_expired(at("2999-01-01T00:00:00+00:00")));
    }

    #[test]
    fn a_document_remembers_its_own_write_and_the_ones_before_it_up_to_the_bound() {
        let t0 = at("2026-01-01T00:00:00+00:00");
        let mut doc = LockDocument::grant("alice", 60, t0, 1);
        let first = doc.clone();
        for _ in 0..WRITE_HISTORY {
            let next = doc.renewed(60, t0);
            assert_eq!(next.writes[1..], doc.writes[..next.writes.len() - 1]);
            assert_ne!(next.writes[0], doc.writes[0]);
            doc = next;
        }
        assert_eq!(doc.writes.len(), WRITE_HISTORY);
        assert!(
            !doc.writes.contains(&first.writes[0]),
            "the oldest fell out"
        );
    }

    #[test]
    fn a_later_document_tells_whether_a_write_landed_was_lost_or_cannot_be_told() {
        let t0 = at("2026-01-01T00:00:00+00:00");
        let held = LockDocument::grant("alice", 60, t0, 1);
        let release = held.released(t0);
        let bob_after_release = release.granted_over("bob", 60, t0, 2);
        assert_eq!(
            bob_after_release.succession_of(&release),
            Succession::Replaced
        );
        let bob_instead = held.granted_over("bob", 60, t0, 2);
        assert_eq!(bob_instead.succession_of(&release), Succession::Lost);
        let renewed = bob_instead.renewed(60, t0);
        assert_eq!(renewed.succession_of(&release), Succession::Lost);
        let mut far = bob_after_release.clone();
        for _ in 0..WRITE_HISTORY {
            far = far.renewed(60, t0);
        }
        assert_eq!(far.succession_of(&release), Succession::Unknown);
        let seed = LockDocument::from_bytes(
            br#"{"expire": 9, "lock_time": "2026-01-01T00:00:00+00:00", "release_time": null, "owner": "old"}"#,
        )
        .unwrap();
        assert_eq!(seed.succession_of(&release), Succession::Unknown);
    }

    #[test]
    fn a_history_that_started_over_does_not_prove_a_write_lost() {
        // alice's release lands at revision 2; the object is then written by the old module
        // (no revision, no history) or deleted, and bob's grant and renew reach revision 2
        // again. Another id at "our" revision proves nothing: it belongs to another chain.
        let t0 = at("2026-01-01T00:00:00+00:00");
        let held = LockDocument::grant("alice", 60, t0, 1);
        let release = held.released(t0);
        let seed = LockDocument::from_bytes(
            br#"{"expire": 1, "lock_time": "2020-01-01T00:00:00+00:00", "release_time": null, "owner": "old"}"#,
        )
        .unwrap();
        let bob = seed.granted_over("bob", 60, t0, 1).renewed(60, t0);
        assert_eq!(bob.revision, release.revision);
        assert_eq!(bob.succession_of(&release), Succession::Unknown);
        let recreated = LockDocument::grant("bob", 60, t0, 1).renewed(60, t0);
        assert_eq!(recreated.succession_of(&release), Succession::Unknown);
    }

    #[test]
    fn a_hostile_revision_at_the_top_of_its_range_tells_nothing_and_does_not_panic() {
        let t0 = at("2026-01-01T00:00:00+00:00");
        let ours = LockDocument::grant("alice", 60, t0, 1);
        let mut hostile = ours.renewed(60, t0);
        hostile.writes = vec![WriteId("x".into()), WriteId("y".into())];
        hostile.revision = u64::MAX;
        assert_eq!(hostile.succession_of(&ours), Succession::Unknown);
        let renewed = ours.renewed(60, t0);
        assert_eq!(hostile.succession_of(&renewed), Succession::Unknown);
    }

    #[test]
    fn a_history_is_carried_forward_only_up_to_an_id_that_is_not_ours() {
        let t0 = at("2026-01-01T00:00:00+00:00");
        let mut doc = LockDocument::grant("alice", 60, t0, 1).renewed(60, t0);
        doc.writes.insert(1, WriteId("x".repeat(10_000)));
        let next = doc.renewed(60, t0);
        assert_eq!(
            next.writes.len(),
            2,
            "the new id and the one before the garbage"
        );
        assert_eq!(next.writes[1], doc.writes[0]);
    }

    #[test]
    fn a_document_supersedes_the_writes_it_replaced_and_not_itself_or_later_ones() {
        let t0 = at("2026-01-01T00:00:00+00:00");
        let granted = LockDocument::grant("alice", 60, t0, 1);
        let released = granted.released(t0);
        let bob = released.granted_over("bob", 60, t0, 2);
        assert!(bob.supersedes(&granted));
        assert!(bob.supersedes(&released));
        assert!(!bob.supersedes(&bob));
        assert!(!released.supersedes(&bob));
        let read_back = LockDocument::from_bytes(&bob.to_bytes()).unwrap();
        assert!(!read_back.supersedes(&bob), "the same write, as stored");
        let recreated = LockDocument::grant("carol", 60, t0, 1);
        assert!(!recreated.supersedes(&bob), "no history in common");
    }
}
