//! Any auth tokens file: parsing never panics; a file that parses gives exactly one principal per
//! credential line, found by its credential and by nothing shorter; and neither an error nor a
//! debug print ever shows a credential of the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3lock::auth::{AuthTokens, MIN_CREDENTIAL_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The credential of each line that has one, as the file's format defines it: the first
    // word of a line that is neither blank nor a comment.
    let credentials: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    // A credential that also appears elsewhere in the file (as a name, say) may be shown as
    // that; only the ones that appear once are checked.
    let secrets: Vec<&str> = credentials
        .iter()
        .copied()
        .filter(|c| c.len() >= MIN_CREDENTIAL_LEN && text.matches(c).count() == 1)
        .collect();

    match AuthTokens::parse(text) {
        Err(err) => {
            assert!(
                err.starts_with("line ") || err.contains("no auth tokens"),
                "{err}"
            );
            for c in &secrets {
                assert!(!err.contains(c), "the error shows a credential: {err}");
            }
        }
        Ok(tokens) => {
            assert_eq!(tokens.len(), credentials.len());
            assert!(!tokens.is_empty());
            let shown = format!("{tokens:?}");
            for c in &credentials {
                assert!(c.len() >= MIN_CREDENTIAL_LEN);
                let principal = tokens
                    .find(c)
                    .expect("every credential line is a principal");
                assert!(!principal.name.is_empty());
                // Never found by a part of itself, nor with a byte added.
                let (last, _) = c.char_indices().last().unwrap();
                let shorter = &c[..last];
                assert!(tokens.find(shorter).is_none() || credentials.contains(&shorter));
                let longer = format!("{c}\u{0}");
                assert!(tokens.find(&longer).is_none());
                // A prefix scope is never empty (an empty one would be "every key" in disguise).
                if let Some(p) = &principal.prefix {
                    assert!(!p.is_empty());
                    assert!(principal.may_touch(p) && !principal.may_touch(""));
                }
            }
            for c in &secrets {
                assert!(
                    !shown.contains(c),
                    "a debug print shows a credential: {shown}"
                );
            }
        }
    }
});
