//! What the server and its clients say to each other: the lock view every answer carries (and
//! the shared view of a semaphore or read-write lock), the election view, the holder token, and
//! the seed module's time format. Both `http` and `client` use these types; the engine builds
//! views from its documents, so the client needs nothing of the engine.

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// The holder's secret proof of holding a lock. Its `Debug` never shows the value, so a log
/// line or an error that prints a document, a view or a request cannot leak it; only
/// [`HolderToken::expose`] does, where the holder is being answered or the store written.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HolderToken(String);

impl HolderToken {
    /// A fresh, unguessable token (122 random bits).
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_exposed(self) -> String {
        self.0
    }

    /// Whether `presented` is this token, compared in constant time so that the time an answer
    /// takes says nothing about how much of a guess was right.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.len() == presented.len() && bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }
}

impl From<String> for HolderToken {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl std::fmt::Debug for HolderToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HolderToken(<redacted>)")
    }
}

/// A lock as shown to clients. `token` is present only in answers to the holder (acquire, renew).
///
/// It derives `ToSchema` because it is the wire format itself: the OpenAPI document describes
/// this very struct rather than a copy that could drift from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LockView {
    pub bucket: String,
    pub key: String,
    /// The holder's name; `null` once released or broken.
    pub owner: Option<String>,
    /// The holder's secret for renew and release. Only in acquire and renew answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub token: Option<HolderToken>,
    /// Grows each time the lock passes to a new holder (and when it is broken).
    pub fencing_token: u64,
    /// The lease length in seconds.
    pub expire: u64,
    /// When the lease was granted or last renewed, on the store's clock.
    #[serde(with = "seed_time")]
    #[schema(value_type = String, format = DateTime)]
    pub lock_time: DateTime<Utc>,
    #[serde(with = "seed_time::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub release_time: Option<DateTime<Utc>>,
    /// When the current holder's lease ends; `null` when nobody holds the lock.
    #[serde(with = "seed_time::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<DateTime<Utc>>,
    /// What is left of the holder's lease, judged conservatively (on the latest possible store
    /// time), so a holder that trusts it never overstays.
    pub ttl_remaining_ms: i64,
    pub locked: bool,
    /// Changes with every write of this lock (its revision; 0 for a lock never written by
    /// s3lock). A watch (`GET /locks/{key}?index=N`) answers once it is no longer `N`.
    pub index: u64,
    /// What the holder published with its lease (any JSON, at most 4096 bytes compact);
    /// `null` when none. Public: anyone who may read the lock sees it.
    #[serde(default)]
    pub value: serde_json::Value,
    /// When the lock can next be taken by someone other than its holder: the lease's end plus
    /// its lock-delay, while the lease runs or the delay after an unreleased lease does;
    /// `null` when the lock is free to take now.
    #[serde(default, with = "seed_time::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub available_at: Option<DateTime<Utc>>,
}

impl LockView {
    /// The holder token, where this answer carries one (to the holder only).
    pub fn holder_token(&self) -> Option<&str> {
        self.token.as_ref().map(HolderToken::expose)
    }
}

/// An election as shown to clients: who leads, with what value, in which term. It is a lock
/// underneath (one document per election): the term is the lock's fencing token, and `token`
/// (the holder token) is what proves leadership, present only in the answers to the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ElectionView {
    pub name: String,
    /// The leader's name while its lease runs; `null` when there is no leader (never elected,
    /// resigned, broken, or the leader's lease ran out).
    pub leader: Option<String>,
    /// What the leader published (its address, say); `null` when there is no leader or it
    /// published nothing. Public, as a lock's value.
    #[serde(default)]
    pub value: serde_json::Value,
    /// Grows each time leadership passes to a new leader: a resource the leader writes to can
    /// refuse a writer whose term is older than one it has seen.
    pub term: u64,
    /// The leader's secret for proclaim, renew and resign. Only in the answers to the leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub token: Option<HolderToken>,
    /// When the leader's lease ends (past, once it ran out); `null` when resigned or broken.
    #[serde(with = "seed_time::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<DateTime<Utc>>,
    /// What is left of the leader's lease, judged conservatively; 0 without a leader.
    pub ttl_remaining_ms: i64,
    /// When a new leader can next be elected: the lease's end plus its lock-delay, while a
    /// leader leads or the delay after a lease that ran out does; `null` when a campaign can win
    /// now.
    #[serde(default, with = "seed_time::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub available_at: Option<DateTime<Utc>>,
    /// Changes with every write of the election: the `id` of its events.
    pub index: u64,
}

impl ElectionView {
    /// The holder token, where this answer carries one (to the leader only).
    pub fn leader_token(&self) -> Option<&str> {
        self.token.as_ref().map(HolderToken::expose)
    }
}

/// Which multi-holder lock a shared document is: a semaphore (at most `limit` holders at once)
/// or a read-write lock (many `shared` holders, or one `exclusive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SharedKind {
    Semaphore,
    Rwlock,
}

/// How a read-write lock is held: by any number of readers at once, or by one writer alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Shared,
    Exclusive,
}

/// A semaphore or a read-write lock as shown to clients: its live holders (never their holder
/// tokens) and, for a semaphore, the permits left. `token` and `lease` are present only in
/// answers to a holder about its own holding (acquire, renew).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SharedView {
    pub bucket: String,
    pub key: String,
    pub kind: SharedKind,
    /// A semaphore's limit: the most holders at once. `null` for a read-write lock, and for a
    /// semaphore never acquired.
    pub limit: Option<u32>,
    /// A semaphore's permits an acquire could take now (`limit` less the live holders); `null`
    /// for a read-write lock, and for a semaphore never acquired.
    pub permits_left: Option<u32>,
    /// The holders whose leases run (judged at the earliest possible store time), in grant order.
    pub holders: Vec<HolderView>,
    /// A read-write lock's writers waiting for it, as recorded in the document (on any replica):
    /// no new reader is let in while one is listed. Each entry lapses after a few seconds unless
    /// its waiter is still there to renew it.
    pub waiting: Vec<WaitingView>,
    /// The caller's secret for renew and release. Only in acquire and renew answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub token: Option<HolderToken>,
    /// The caller's own holding (its fencing token and lease). Only in acquire and renew answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<HolderView>,
    /// The highest fencing token granted under this key: it grows with every grant (and every
    /// break), so each holder's is unique and later grants carry higher ones.
    pub fencing_token: u64,
    /// Changes with every write (the document's revision; 0 for one never written).
    pub index: u64,
    /// Acquires blocked waiting for this lock on the replica that answered (each replica
    /// serves its own waiters in arrival order; there is no queue across replicas).
    #[serde(default)]
    pub waiters_here: u32,
}

impl SharedView {
    /// The holder token, where this answer carries one (to the holder only).
    pub fn holder_token(&self) -> Option<&str> {
        self.token.as_ref().map(HolderToken::expose)
    }
}

/// One holder of a semaphore or a read-write lock, without its holder token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HolderView {
    pub owner: String,
    /// How a read-write lock is held; `null` for a semaphore's permit.
    pub mode: Option<Mode>,
    /// This holder's fencing token, given at its grant and kept on renew.
    pub fencing_token: u64,
    /// The lease length in seconds.
    pub expire: u64,
    /// When the lease was granted or last renewed, on the store's clock.
    #[serde(with = "seed_time")]
    #[schema(value_type = String, format = DateTime)]
    pub lock_time: DateTime<Utc>,
    #[serde(with = "seed_time")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: DateTime<Utc>,
    /// What is left of the lease, judged on the latest possible store time.
    pub ttl_remaining_ms: i64,
    /// When this holder was granted (kept on renew).
    #[serde(with = "seed_time")]
    #[schema(value_type = String, format = DateTime)]
    pub held_since: DateTime<Utc>,
}

/// A writer waiting for a read-write lock, as recorded in its document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WaitingView {
    pub owner: String,
    pub mode: Mode,
    /// When the entry lapses unless its waiter renews it.
    #[serde(with = "seed_time")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: DateTime<Utc>,
}

/// Python's `datetime.isoformat()` of an aware UTC time, as the seed module writes it:
/// `2026-11-26T02:24:19.844224+00:00`, without the fraction when microseconds are zero.
pub fn format_seed_time(t: &DateTime<Utc>) -> String {
    // RFC 3339 with an offset rather than `Z` is that form. (Not `format("%Y-...")`: it parses
    // its format string on every call, a measurable share of a lock operation's CPU.)
    let digits = if t.nanosecond() / 1_000 == 0 {
        SecondsFormat::Secs
    } else {
        SecondsFormat::Micros
    };
    t.to_rfc3339_opts(digits, false)
}

/// Reads any RFC 3339 time (the seed's format among them), truncated to microseconds so that a
/// time survives a round trip through the document unchanged.
pub fn parse_seed_time(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    let t = DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc);
    Ok(truncate_to_micros(t))
}

pub fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .expect("a truncated nanosecond is always valid")
}

pub mod seed_time {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_seed_time(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_seed_time(&s).map_err(serde::de::Error::custom)
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&super::super::format_seed_time(t)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| super::super::parse_seed_time(&s).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

/// Checks an S3 bucket name by the S3 rules that matter for safety here: 3–63 characters of
/// lowercase letters, digits, `.` and `-`, starting and ending with a letter or digit. The local
/// store uses the name as a directory, so this is also what keeps it inside its data directory.
pub fn parse_bucket(raw: &str) -> Result<String, String> {
    let ok_len = (3..=63).contains(&raw.len());
    let ok_chars = raw
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let ok_ends = raw
        .bytes()
        .next()
        .zip(raw.bytes().last())
        .is_some_and(|(a, z)| a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric());
    if ok_len && ok_chars && ok_ends && !raw.contains("..") {
        Ok(raw.to_owned())
    } else {
        Err(format!(
            "{raw:?} is not a valid bucket name (3-63 characters: a-z, 0-9, '.', '-')"
        ))
    }
}
