//! Any stored object: parsing a lock document never panics, nor does judging it at any time,
//! and a document that parses survives being written and read back unchanged (so the engine's
//! byte-for-byte read-back comparison is meaningful).
#![no_main]

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use s3lock::lock::LockDocument;

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = LockDocument::from_bytes(data) else {
        return;
    };
    let again = LockDocument::from_bytes(&doc.to_bytes()).expect("our own bytes parse");
    assert_eq!(again, doc);
    assert_eq!(again.to_bytes(), doc.to_bytes());
    for now in [
        DateTime::<Utc>::MIN_UTC,
        DateTime::<Utc>::UNIX_EPOCH,
        doc.lock_time,
        doc.expires_at(),
        DateTime::<Utc>::MAX_UTC,
    ] {
        let _ = doc.holder(now);
        let _ = doc.is_locked_for(now, Some("someone"));
        let _ = doc.is_locked_for(now, doc.owner.as_deref());
        let _ = doc.is_free_at(now);
        let _ = doc.held_for(now);
    }
    let _ = doc.available_at();
    // Taking it over or renewing it never overflows either.
    let _ = doc.renewed(doc.expire, doc.lock_time).expires_at();
    let _ = LockDocument::grant("o", 1, doc.lock_time, doc.fencing_token.saturating_add(1));
});
