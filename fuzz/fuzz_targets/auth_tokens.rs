//! Any auth tokens file: parsing never panics; a file that parses gives exactly one principal per
//! credential line, found by its credential and by nothing shorter, with the name, prefix,
//! buckets and role its words say (checked against a plain reading of the format below); an
//! error never quotes the file, and a debug print shows the names only.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use s3lock::auth::{AuthTokens, Buckets, Principal, MIN_CREDENTIAL_LEN};

/// What a line that parsed grants, read word by word as the README describes the format: the
/// last `name=` and `prefix=` win, `bucket=` adds a bucket, `bucket=*` means every bucket, and no
/// `bucket=` means the default bucket only.
fn expected(n: usize, words: &[&str]) -> Principal {
    let mut p = Principal {
        name: format!("line-{n}"),
        prefix: None,
        buckets: Buckets::Default,
        admin: false,
    };
    let (mut named, mut all) = (BTreeSet::new(), false);
    for word in words {
        match word.split_once('=') {
            Some(("name", v)) => p.name = v.to_owned(),
            Some(("prefix", v)) => p.prefix = Some(v.to_owned()),
            Some(("bucket", "*")) => all = true,
            Some(("bucket", v)) => {
                named.insert(v.to_owned());
            }
            _ => {
                assert_eq!(*word, "admin", "a file with {word:?} parsed");
                p.admin = true;
            }
        }
    }
    if all {
        p.buckets = Buckets::All;
    } else if !named.is_empty() {
        p.buckets = Buckets::Named(named);
    }
    p
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The credential of each line that has one, as the file's format defines it: the first
    // word of a line that is neither blank nor a comment.
    let lines: Vec<(usize, Vec<&str>)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(n, l)| (n, l.split_whitespace().collect()))
        .collect();
    let credentials: Vec<&str> = lines.iter().map(|(_, words)| words[0]).collect();

    match AuthTokens::parse(text) {
        Err(err) => {
            assert!(
                err.starts_with("line ") || err.contains("no auth tokens"),
                "{err}"
            );
            // It names the line and the word's place, never a word: any word may be a
            // credential (pasted on the wrong line, or where a bucket name belongs). The
            // message's own text has no run of 16 non-blank characters, so a word that long
            // found in it was quoted from the file.
            for w in text.split_whitespace() {
                if w.len() >= MIN_CREDENTIAL_LEN {
                    assert!(!err.contains(w), "the error quotes the file: {err}");
                }
            }
        }
        Ok(tokens) => {
            assert_eq!(tokens.len(), credentials.len());
            assert!(!tokens.is_empty());
            let shown = format!("{tokens:?}");
            for (n, words) in &lines {
                let c = words[0];
                assert!(c.len() >= MIN_CREDENTIAL_LEN);
                let principal = tokens
                    .find(c)
                    .expect("every credential line is a principal");
                assert!(!principal.name.is_empty());
                assert_eq!(*principal, expected(*n, &words[1..]), "line {n}");
                // Never found by a part of itself, nor with a byte added.
                let (last, _) = c.char_indices().last().unwrap();
                let shorter = &c[..last];
                assert!(tokens.find(shorter).is_none() || credentials.contains(&shorter));
                let longer = format!("{c}\u{0}");
                assert!(tokens.find(&longer).is_none() || credentials.contains(&longer.as_str()));
                // A prefix scope is never empty (an empty one would be "every key" in disguise).
                if let Some(p) = &principal.prefix {
                    assert!(!p.is_empty());
                    assert!(principal.may_touch(p) && !principal.may_touch(""));
                }
            }
            // A debug print is the list of names, in file order, and nothing else.
            let names: Vec<String> = lines
                .iter()
                .map(|(_, words)| tokens.find(words[0]).unwrap().name.clone())
                .collect();
            assert_eq!(shown, format!("{names:?}"));
        }
    }
});
