//! The crate's layers point only downwards: each top-level module may name (`crate::x`) only
//! the modules listed for it here. The server (http, lock, store, startup, config) never names
//! the client or the bench; clock, metrics, wire and telemetry name nothing of the crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module and the modules it may import.
const ALLOWED: &[(&str, &[&str])] = &[
    ("wire", &[]),
    ("backoff", &[]),
    ("clock", &[]),
    ("metrics", &[]),
    ("telemetry", &[]),
    ("tls", &["metrics"]),
    ("auth", &["wire"]),
    ("store", &["backoff", "clock", "metrics"]),
    ("lock", &["backoff", "clock", "metrics", "store", "wire"]),
    ("peers", &["clock", "lock", "metrics", "tls"]),
    (
        "http",
        &[
            "auth", "clock", "lock", "metrics", "peers", "store", "tls", "wire",
        ],
    ),
    ("client", &["backoff", "telemetry", "tls", "wire"]),
    (
        "bench",
        &[
            "backoff", "client", "clock", "lock", "metrics", "store", "tls", "wire",
        ],
    ),
    ("config", &["auth", "lock", "peers", "store", "tls", "wire"]),
    (
        "startup",
        &[
            "auth",
            "clock",
            "config",
            "http",
            "lock",
            "metrics",
            "peers",
            "store",
            "telemetry",
            "tls",
        ],
    ),
    ("cli", &["bench", "client", "config", "telemetry"]),
];

/// Every `crate::x` a file names, in code or in doc links.
fn named_modules(source: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in source.match_indices("crate::") {
        let before = source[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `s3lock_crate::`, not ours
        }
        let name: String = source[i + "crate::".len()..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_imports_one_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = top.trim_end_matches(".rs");
        if module == "lib" || module == "main" {
            continue; // the crate root and the binary wire everything together
        }
        let Some(may) = allowed.get(module) else {
            wrong.push(format!("{module}: a top-level module missing from ALLOWED"));
            continue;
        };
        let source = std::fs::read_to_string(&file).unwrap();
        for named in named_modules(&source) {
            if named != module && !may.contains(&named.as_str()) {
                wrong.push(format!("{} names crate::{named}", relative.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports pointing the wrong way:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_sees_an_import_that_points_up() {
    let found =
        named_modules("use crate::config::X;\n/// see [`crate::lock::Engine`]\nfoo_crate::bar");
    assert_eq!(found, BTreeSet::from(["config".into(), "lock".into()]));
}
