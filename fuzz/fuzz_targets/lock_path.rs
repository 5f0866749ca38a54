//! Any request path: parsing never panics, and every key it lets through is one the engine's
//! rules accept only if it is safe (no empty, `.` or `..` segment, no control character, at
//! most 512 bytes), so it can never escape the configured prefix.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3lock::http::path::LockPath;
use s3lock::lock::key::{LockKey, MAX_KEY_BYTES};

fuzz_target!(|data: &[u8]| {
    // The first byte picks a route prefix, so the fuzzer spends its time past the router's
    // fixed text rather than rediscovering it.
    let Some((&route, rest)) = data.split_first() else {
        return;
    };
    let Ok(rest) = std::str::from_utf8(rest) else {
        return;
    };
    let raw = match route % 3 {
        0 => format!("/locks/{rest}"),
        1 => format!("/buckets/{rest}"),
        _ => rest.to_owned(),
    };
    let raw = raw.as_str();
    for with_action in [false, true] {
        let Ok(path) = LockPath::parse(raw, with_action) else {
            continue;
        };
        if let Ok(key) = LockKey::parse(&path.key) {
            let k = key.as_str();
            assert!(!k.is_empty() && k.len() <= MAX_KEY_BYTES);
            assert!(!k.chars().any(char::is_control));
            assert!(k.split('/').all(|s| !s.is_empty() && s != "." && s != ".."));
            // The object key stays under the prefix, however it is normalised.
            let object = format!("locks/{k}");
            assert!(object.starts_with("locks/") && !object.contains("/../"));
        }
    }
});
