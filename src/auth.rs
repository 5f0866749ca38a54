//! Bearer credentials: the auth tokens file, and who a presented credential belongs to.
//!
//! "Auth token" always means this bearer credential, never a lock's holder `token`.
//!
//! The file has one credential per line, then optional words:
//!
//! ```text
//! # comments and blank lines are ignored
//! 3f1c0d9e8b7a6f5e4d3c2b1a09f8e7d6 name=ci prefix=jobs/
//! 7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a name=etl bucket=etl-locks bucket=shared-locks
//! 9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d name=ops admin bucket=*
//! ```
//!
//! * the credential: at least 16 characters, no whitespace;
//! * `name=NAME`: who it is, in logs (default `line-N`); never the credential itself;
//! * `prefix=P`: it may only touch keys that start with `P` (default: every key);
//! * `bucket=B`: a bucket it may use, repeatable; `bucket=*` for every bucket the server allows.
//!   Without any, only the server's default bucket: a credential is never valid on a bucket
//!   nobody named for it;
//! * `admin`: it may also break locks (`POST /locks/{key}/break`).
//!
//! Only SHA-256 digests of the credentials are kept in memory, and a presented credential is
//! compared with every one of them in constant time, so neither timing nor a debug print of the
//! configuration reveals one.

use std::collections::BTreeSet;
use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The shortest credential accepted: shorter ones are guessable.
pub const MIN_CREDENTIAL_LEN: usize = 16;

/// Who a credential belongs to and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    /// Keys this credential may touch start with this; `None` for every key.
    pub prefix: Option<String>,
    pub buckets: Buckets,
    pub admin: bool,
}

/// The buckets a credential is valid on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Buckets {
    /// None named: the server's default bucket only.
    Default,
    /// These, by name (the default bucket only if it is among them).
    Named(BTreeSet<String>),
    /// `bucket=*`: every bucket the server allows.
    All,
}

impl Principal {
    /// Whether this principal may act on `key`.
    pub fn may_touch(&self, key: &str) -> bool {
        self.prefix.as_deref().is_none_or(|p| key.starts_with(p))
    }

    /// Whether this principal may use `bucket` on a server whose default bucket is `default`.
    pub fn may_use_bucket(&self, bucket: &str, default: &str) -> bool {
        match &self.buckets {
            Buckets::Default => bucket == default,
            Buckets::Named(names) => names.contains(bucket),
            Buckets::All => true,
        }
    }
}

struct Entry {
    digest: [u8; 32],
    principal: Principal,
}

/// The credentials loaded from the auth tokens file.
pub struct AuthTokens {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for AuthTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: the digests are nobody's business either.
        f.debug_list()
            .entries(self.entries.iter().map(|e| &e.principal.name))
            .finish()
    }
}

fn digest(credential: &str) -> [u8; 32] {
    Sha256::digest(credential.as_bytes()).into()
}

impl AuthTokens {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text)
    }

    /// Parses the file's text. Errors name the line, never its credential.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries: Vec<Entry> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let credential = words.next().unwrap_or_default();
            if credential.len() < MIN_CREDENTIAL_LEN {
                return Err(format!(
                    "line {n}: the auth token is shorter than {MIN_CREDENTIAL_LEN} characters"
                ));
            }
            let mut principal = Principal {
                name: format!("line-{n}"),
                prefix: None,
                buckets: Buckets::Default,
                admin: false,
            };
            // A word is never echoed in an error: a second credential pasted on the line, or
            // one pasted where a name belongs, must not reach a log.
            for (w, word) in words.enumerate() {
                let place = w + 2;
                match word.split_once('=') {
                    Some(("name", v)) if !v.is_empty() => principal.name = v.to_owned(),
                    Some(("prefix", v)) if !v.is_empty() => principal.prefix = Some(v.to_owned()),
                    Some(("bucket", "*")) => principal.buckets = Buckets::All,
                    Some(("bucket", v)) => {
                        let v = crate::wire::parse_bucket(v).map_err(|_| {
                            format!(
                                "line {n}: word {place} is not a valid bucket name (bucket=B: 3-63 \
                                 characters a-z, 0-9, '.', '-'; or bucket=*)"
                            )
                        })?;
                        match &mut principal.buckets {
                            Buckets::All => {}
                            Buckets::Named(names) => {
                                names.insert(v);
                            }
                            Buckets::Default => principal.buckets = Buckets::Named([v].into()),
                        }
                    }
                    None if word == "admin" => principal.admin = true,
                    _ => {
                        return Err(format!(
                            "line {n}: word {place} is not one of name=NAME, prefix=P, \
                             bucket=B or admin (the word is not shown: it may be a credential)"
                        ))
                    }
                }
            }
            let d = digest(credential);
            if entries.iter().any(|e| bool::from(e.digest.ct_eq(&d))) {
                return Err(format!("line {n}: the same auth token appears twice"));
            }
            entries.push(Entry {
                digest: d,
                principal,
            });
        }
        if entries.is_empty() {
            return Err(
                "the file has no auth tokens; an empty file would lock everyone out".into(),
            );
        }
        Ok(Self { entries })
    }

    /// The principal `credential` belongs to. Every entry is compared, in constant time.
    pub fn find(&self, credential: &str) -> Option<&Principal> {
        let d = digest(credential);
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.digest.ct_eq(&d)) {
                found = Some(&e.principal);
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# ops\n\
        aaaaaaaaaaaaaaaaaaaa name=ci prefix=jobs/\n\
        \n\
        bbbbbbbbbbbbbbbbbbbb admin name=ops\n\
        cccccccccccccccccccc\n";

    #[test]
    fn each_line_gives_a_credential_with_its_name_prefix_and_role() {
        let t = AuthTokens::parse(FILE).unwrap();
        assert_eq!(t.len(), 3);
        let ci = t.find("aaaaaaaaaaaaaaaaaaaa").unwrap();
        assert_eq!(ci.name, "ci");
        assert_eq!(ci.prefix.as_deref(), Some("jobs/"));
        assert!(!ci.admin);
        assert!(ci.may_touch("jobs/etl") && !ci.may_touch("other"));
        assert!(t.find("bbbbbbbbbbbbbbbbbbbb").unwrap().admin);
        assert_eq!(t.find("cccccccccccccccccccc").unwrap().name, "line-5");
        assert!(t.find("aaaaaaaaaaaaaaaaaaa").is_none());
        assert!(t.find("").is_none());
    }

    #[test]
    fn errors_name_the_line_but_never_show_the_credential() {
        for (text, want) in [
            ("q1w2e3 name=x\n", "line 1"),
            ("dddddddddddddddddddd colour=red\n", "line 1"),
            ("dddddddddddddddddddd\ndddddddddddddddddddd\n", "line 2"),
            ("# nothing\n", "no auth tokens"),
        ] {
            let err = AuthTokens::parse(text).unwrap_err();
            assert!(err.contains(want), "{err}");
            assert!(!err.contains("dddd") && !err.contains("q1w2e3"), "{err}");
        }
    }

    #[test]
    fn a_credential_is_valid_on_the_buckets_its_line_names_and_only_those() {
        let t = AuthTokens::parse(
            "aaaaaaaaaaaaaaaaaaaa name=plain\n\
             bbbbbbbbbbbbbbbbbbbb name=two bucket=etl bucket=shared\n\
             cccccccccccccccccccc name=all bucket=* admin\n",
        )
        .unwrap();
        let may = |cred: &str, bucket: &str| {
            t.find(cred)
                .unwrap()
                .may_use_bucket(bucket, "default-locks")
        };
        assert!(may("aaaaaaaaaaaaaaaaaaaa", "default-locks"));
        assert!(!may("aaaaaaaaaaaaaaaaaaaa", "etl"));
        assert!(may("bbbbbbbbbbbbbbbbbbbb", "etl") && may("bbbbbbbbbbbbbbbbbbbb", "shared"));
        assert!(!may("bbbbbbbbbbbbbbbbbbbb", "default-locks"));
        assert!(may("cccccccccccccccccccc", "etl") && may("cccccccccccccccccccc", "default-locks"));
        let err = AuthTokens::parse("dddddddddddddddddddd bucket=Bad_Name\n").unwrap_err();
        assert!(err.contains("line 1") && !err.contains("dddd"), "{err}");
    }

    #[test]
    fn a_debug_print_shows_names_only() {
        let t = AuthTokens::parse(FILE).unwrap();
        let shown = format!("{t:?}");
        assert_eq!(shown, r#"["ci", "ops", "line-5"]"#);
    }
}
