//! Names from the outside world, checked once at the edge (parse, don't validate).

use std::fmt;

use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::wire::SharedKind;

/// The longest key accepted, in bytes (S3 allows 1024 for the whole object key, prefix included).
pub const MAX_KEY_BYTES: usize = 512;
/// The longest owner name accepted, in bytes.
pub const MAX_OWNER_BYTES: usize = 256;
/// The first segment of the keys of elections' locks (`.elections/{name}`): the lock routes take
/// no key under it, and lists never show one, so an election and a lock never share a document.
pub const ELECTIONS: &str = ".elections";

/// A lock's key: non-empty, at most 512 bytes, `/`-separated segments that are neither empty nor
/// `.` / `..`, no control characters, no format characters, in Unicode NFC. Such a key is safe as
/// an S3 object key and cannot escape the configured prefix, and one name a person types is one
/// lock (see [`check_text`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key is empty")]
    Empty,
    #[error("the key is {0} bytes long; the maximum is {MAX_KEY_BYTES}")]
    TooLong(usize),
    #[error("the key contains a control character")]
    ControlCharacter,
    #[error("the key has an empty path segment (a leading, trailing or doubled '/')")]
    EmptySegment,
    #[error("the key has a '.' or '..' path segment")]
    DotSegment,
    #[error("the key {0}")]
    Text(TextError),
}

/// Why a name is refused although every character in it is printable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// `café` typed as `e` + U+0301 is a different byte string from `café` with U+00E9, so two
    /// clients typing "the same" name would hold two different locks at once.
    #[error("is not in Unicode normalization form C (NFC): compose it first, e.g. U+00E9 rather than 'e' + U+0301")]
    NotNfc,
    /// Invisible characters such as U+202E (right-to-left override) make a name show as
    /// another one in logs, status and list (`a\u{202e}gnp.exe` shows as `aexe.png`).
    #[error("contains the invisible Unicode format character U+{0:04X}")]
    FormatCharacter(u32),
}

/// Refuses names that look like other names: not NFC, or with a format character (category
/// Cf: bidi controls, zero-width joiners and the like).
pub fn check_text(raw: &str) -> Result<(), TextError> {
    if let Some(c) = raw
        .chars()
        .find(|c| c.general_category() == GeneralCategory::Format)
    {
        return Err(TextError::FormatCharacter(u32::from(c)));
    }
    let nfc = match is_nfc_quick(raw.chars()) {
        IsNormalized::Yes => true,
        IsNormalized::No => false,
        IsNormalized::Maybe => raw.nfc().eq(raw.chars()),
    };
    if nfc {
        Ok(())
    } else {
        Err(TextError::NotNfc)
    }
}

impl LockKey {
    pub fn parse(raw: &str) -> Result<Self, KeyError> {
        if raw.is_empty() {
            return Err(KeyError::Empty);
        }
        if raw.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong(raw.len()));
        }
        if raw.chars().any(char::is_control) {
            return Err(KeyError::ControlCharacter);
        }
        check_text(raw).map_err(KeyError::Text)?;
        for segment in raw.split('/') {
            match segment {
                "" => return Err(KeyError::EmptySegment),
                "." | ".." => return Err(KeyError::DotSegment),
                _ => {}
            }
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the key of an election's lock (see [`in_elections`]).
    pub fn is_election(&self) -> bool {
        in_elections(&self.0)
    }

    /// What the key's first segment is reserved for, if it is one of
    /// [`RESERVED_FIRST_SEGMENTS`]: such a key names no mutex.
    pub fn reserved_for(&self) -> Option<&'static str> {
        let first = self.0.split('/').next().unwrap_or_default();
        RESERVED_FIRST_SEGMENTS
            .iter()
            .find(|(segment, _)| *segment == first)
            .map(|(_, what)| *what)
    }
}

/// The first key segments under which the other kinds of lock keep their objects (a semaphore
/// `k` at `{prefix}.semaphores/k`, and so on), with what each is for. A mutex's key may not
/// start with one, so no mutex's object is ever another kind's, and lists of mutexes skip them.
pub const RESERVED_FIRST_SEGMENTS: [(&str, &str); 3] = [
    (SEMAPHORES, "semaphores"),
    (RWLOCKS, "read-write locks"),
    (ELECTIONS, "elections"),
];
/// The first segment of every semaphore's object key (after the prefix).
pub const SEMAPHORES: &str = ".semaphores";
/// The first segment of every read-write lock's object key (after the prefix).
pub const RWLOCKS: &str = ".rwlocks";

/// The first segment under which `kind`'s objects live.
pub fn namespace(kind: SharedKind) -> &'static str {
    match kind {
        SharedKind::Semaphore => SEMAPHORES,
        SharedKind::Rwlock => RWLOCKS,
    }
}

/// Whether an object key (the prefix taken off) is under a reserved first segment.
pub fn is_reserved_object(key: &str) -> bool {
    let first = key.split('/').next().unwrap_or_default();
    RESERVED_FIRST_SEGMENTS.iter().any(|(s, _)| *s == first)
}

impl fmt::Display for LockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `key`'s first segment is [`ELECTIONS`]: the namespace of elections' locks.
pub fn in_elections(key: &str) -> bool {
    key.split('/').next() == Some(ELECTIONS)
}

/// Checks an owner name: 1 to 256 bytes, no control or format characters, in NFC.
pub fn parse_owner(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("owner must not be empty".into());
    }
    if raw.len() > MAX_OWNER_BYTES {
        return Err(format!(
            "owner is {} bytes long; the maximum is {MAX_OWNER_BYTES}",
            raw.len()
        ));
    }
    if raw.chars().any(char::is_control) {
        return Err("owner contains a control character".into());
    }
    check_text(raw).map_err(|e| format!("owner {e}"))?;
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse_bucket;

    #[test]
    fn a_key_whose_first_segment_is_another_kinds_namespace_is_reserved() {
        let reserved = |k: &str| LockKey::parse(k).unwrap().reserved_for();
        assert_eq!(reserved(".semaphores/x"), Some("semaphores"));
        assert_eq!(reserved(".rwlocks"), Some("read-write locks"));
        assert_eq!(reserved(".elections/a/b"), Some("elections"));
        assert_eq!(reserved("jobs/.semaphores/x"), None);
        assert_eq!(reserved(".semaphoresx/y"), None);
        assert!(is_reserved_object(".rwlocks/k"));
        assert!(!is_reserved_object("rwlocks/k"));
    }

    #[test]
    fn a_key_with_slashes_is_accepted() {
        assert_eq!(
            LockKey::parse("jobs/nightly-etl").unwrap().as_str(),
            "jobs/nightly-etl"
        );
        assert!(LockKey::parse("my-task.json").is_ok());
        assert!(LockKey::parse(".hidden/x").is_ok());
    }

    #[test]
    fn only_a_first_segment_of_exactly_elections_is_an_elections_key() {
        assert!(LockKey::parse(".elections/leader").unwrap().is_election());
        assert!(LockKey::parse(".elections").unwrap().is_election());
        for other in [
            ".elections2/x",
            "x/.elections/y",
            "elections/x",
            ".hidden/x",
        ] {
            assert!(!LockKey::parse(other).unwrap().is_election(), "{other}");
        }
    }

    #[test]
    fn bad_keys_are_rejected_with_the_reason() {
        assert_eq!(LockKey::parse(""), Err(KeyError::Empty));
        assert_eq!(
            LockKey::parse(&"k".repeat(513)),
            Err(KeyError::TooLong(513))
        );
        assert!(LockKey::parse(&"k".repeat(512)).is_ok());
        assert_eq!(LockKey::parse("a\nb"), Err(KeyError::ControlCharacter));
        assert_eq!(LockKey::parse("a\0b"), Err(KeyError::ControlCharacter));
        assert_eq!(LockKey::parse("a//b"), Err(KeyError::EmptySegment));
        assert_eq!(LockKey::parse("/a"), Err(KeyError::EmptySegment));
        assert_eq!(LockKey::parse("a/"), Err(KeyError::EmptySegment));
        assert_eq!(LockKey::parse("a/../b"), Err(KeyError::DotSegment));
        assert_eq!(LockKey::parse("."), Err(KeyError::DotSegment));
    }

    #[test]
    fn one_name_typed_two_ways_is_refused_in_its_decomposed_form() {
        assert!(LockKey::parse("jobs/caf\u{e9}").is_ok());
        assert_eq!(
            LockKey::parse("jobs/cafe\u{301}"),
            Err(KeyError::Text(TextError::NotNfc))
        );
        assert!(parse_owner("caf\u{e9}").is_ok());
        let err = parse_owner("cafe\u{301}").unwrap_err();
        assert!(err.contains("NFC"), "{err}");
    }

    #[test]
    fn invisible_format_characters_are_refused_in_keys_and_owners() {
        assert_eq!(
            LockKey::parse("a\u{202e}gnp.exe"),
            Err(KeyError::Text(TextError::FormatCharacter(0x202e)))
        );
        for bad in [
            "a\u{202e}gnp.exe",
            "zero\u{200b}width",
            "bom\u{feff}",
            "\u{2066}x",
        ] {
            let err = parse_owner(bad).unwrap_err();
            assert!(err.contains("format character"), "{bad:?}: {err}");
        }
        // Printable non-ASCII stays welcome.
        assert!(parse_owner("Zoë-日本-🔒").is_ok());
        assert!(LockKey::parse("jobs/日本/🔒").is_ok());
    }

    #[test]
    fn owners_and_buckets_are_checked() {
        assert!(parse_owner("alice").is_ok());
        assert!(parse_owner("").is_err());
        assert!(parse_owner("a\u{7f}").is_err());
        assert!(parse_owner(&"o".repeat(257)).is_err());
        assert!(parse_bucket("my-bucket.1").is_ok());
        for bad in ["ab", "My-Bucket", "-abc", "abc-", "a..b", "../etc", "a/b"] {
            assert!(parse_bucket(bad).is_err(), "{bad}");
        }
    }
}
