//! The views the engine answers with, made from a stored document at a time: what a holder is
//! told (with its holder token) and what everyone else sees (never the token).

use chrono::{DateTime, Utc};

use super::{Engine, LockDocument, LockView, Target};
use crate::clock::TimeWindow;

impl Engine {
    pub(super) fn status_view(
        &self,
        target: &Target,
        doc: Option<&LockDocument>,
        expect_owner: Option<&str>,
    ) -> LockView {
        let now = self.clock.now();
        let Some(doc) = doc else {
            return LockView {
                bucket: target.bucket.clone(),
                key: target.key.to_string(),
                owner: None,
                token: None,
                fencing_token: 0,
                expire: 0,
                lock_time: DateTime::<Utc>::UNIX_EPOCH,
                release_time: None,
                expires_at: None,
                ttl_remaining_ms: 0,
                locked: false,
                index: 0,
                value: serde_json::Value::Null,
                available_at: None,
            };
        };
        let mut view = self.view(target, doc, now, false);
        view.locked = doc.is_locked_for(now.earliest, expect_owner);
        view
    }

    pub(super) fn view(
        &self,
        target: &Target,
        doc: &LockDocument,
        now: TimeWindow,
        holder: bool,
    ) -> LockView {
        let held = doc.holder(now.earliest).is_some();
        let expires_at = doc.owner.as_ref().map(|_| doc.expires_at());
        let ttl_remaining_ms = match expires_at {
            Some(end) if held => (end - now.latest).num_milliseconds().max(0),
            _ => 0,
        };
        LockView {
            bucket: target.bucket.clone(),
            key: target.key.to_string(),
            owner: doc.owner.clone(),
            token: if holder { doc.token.clone() } else { None },
            fencing_token: doc.fencing_token,
            expire: doc.expire,
            lock_time: doc.lock_time,
            release_time: doc.release_time,
            expires_at,
            ttl_remaining_ms,
            locked: held,
            index: doc.revision,
            value: doc.value.clone(),
            available_at: doc.available_at().filter(|at| now.earliest < *at),
        }
    }
}
