//! Listing locks (and semaphores, and read-write locks) a page at a time: one page of the
//! store's listing, its documents read a few at a time, and a cursor that says where the next
//! page starts. One pager ([`Engine::page`]) for every kind; each kind names where its objects
//! are and how a document is shown.

use futures_util::{StreamExt, TryStreamExt};

use super::kind::LockKind;
use super::shared::SharedDocument;
use super::shared_ops::of_kind;
use super::{
    key, store_error, Engine, LockError, LockKey, LockView, SharedKind, SharedView, Target,
};

/// Views in a page when the client names no `limit`: a page reads this many documents, which
/// on S3 (10–20 ms a read, [`READS_AT_ONCE`] at a time) takes a fraction of a second.
pub const DEFAULT_LIST_LIMIT: u64 = 100;
/// The largest `limit` a client may ask for: S3's own largest page (one `ListObjectsV2` call),
/// and about 2 s of reads on S3, far inside the request timeout.
pub const MAX_LIST_LIMIT: u64 = 1000;
/// Documents of one page read at once: enough that a page is not a thousand round trips one
/// after another, few enough that lists leave the store's call slots (64 on S3) to lock
/// decisions.
pub const READS_AT_ONCE: usize = 8;
/// The longest object key a cursor may name, in bytes (S3's own limit).
const MAX_CURSOR_KEY_BYTES: usize = 1024;

/// One page of a list, of lock views ([`LockPage`]) or of semaphores' or read-write locks'
/// ([`SharedPage`]).
#[derive(Debug, Clone)]
pub struct Page<V> {
    pub items: Vec<V>,
    /// Where the next page starts; `None` on the last page. Opaque to clients.
    pub next: Option<String>,
}

pub type LockPage = Page<LockView>;
pub type SharedPage = Page<SharedView>;

/// What one list pages through: the objects of one kind of lock, all under one object key
/// prefix (the configured prefix, then the kind's namespace if it has one). Cursors name keys
/// after it.
struct Listing {
    bucket: String,
    /// The object key of every listed key less the key itself.
    root: String,
}

impl Engine {
    /// The locks whose key starts with `prefix` and sorts after `cursor` (from the page before;
    /// `None` for the first), at most `limit` of them (default [`DEFAULT_LIST_LIMIT`]), without
    /// tokens. Objects under the lock prefix that are not lock documents are skipped (and
    /// logged), and so are locks deleted since they were listed and the other kinds' objects
    /// (under [`key::RESERVED_FIRST_SEGMENTS`]): a page may hold fewer locks than `limit` and
    /// still have a next one.
    #[tracing::instrument(skip(self))]
    pub async fn list(
        &self,
        bucket: Option<&str>,
        prefix: &str,
        limit: Option<u64>,
        cursor: Option<&str>,
    ) -> Result<LockPage, LockError> {
        let listing = Listing {
            bucket: self.bucket(bucket)?,
            root: self.config.prefix.clone(),
        };
        // Another kind's object (a semaphore, a read-write lock, an election): not a lock.
        let is_lock = |key: &LockKey| key.reserved_for().is_none();
        self.page(listing, prefix, limit, cursor, is_lock, |target, doc| {
            Ok(self.status_view(target, Some(&doc), None))
        })
        .await
    }

    /// The semaphores (or read-write locks, as `kind` says) whose key starts with `prefix`, a
    /// page at a time exactly as [`Engine::list`] pages locks, without tokens. A document of the
    /// other kind found in this kind's namespace (written there by hand) is skipped as an
    /// unreadable one is.
    #[tracing::instrument(skip(self))]
    pub async fn shared_list(
        &self,
        bucket: Option<&str>,
        kind: SharedKind,
        prefix: &str,
        limit: Option<u64>,
        cursor: Option<&str>,
    ) -> Result<SharedPage, LockError> {
        let listing = Listing {
            bucket: self.bucket(bucket)?,
            root: format!("{}{}/", self.config.prefix, key::namespace(kind)),
        };
        self.page(
            listing,
            prefix,
            limit,
            cursor,
            |_| true,
            |target, doc| {
                let doc: SharedDocument = doc;
                let doc = of_kind(Some(&doc), kind)?;
                Ok(self.shared_view(target, kind, doc, self.clock.now(), None))
            },
        )
        .await
    }

    /// One page of `listing`: the keys under it that start with `prefix`, sort after `cursor`
    /// and pass `keep`, each document read (at most `limit`, [`READS_AT_ONCE`] at a time) and
    /// shown by `view`. Unreadable documents (and those `view` finds unreadable) are skipped
    /// and logged; documents deleted since they were listed are skipped.
    async fn page<K: LockKind, V>(
        &self,
        listing: Listing,
        prefix: &str,
        limit: Option<u64>,
        cursor: Option<&str>,
        keep: impl Fn(&LockKey) -> bool,
        view: impl Fn(&Target, K) -> Result<V, LockError>,
    ) -> Result<Page<V>, LockError> {
        if prefix.chars().any(char::is_control) || prefix.len() > key::MAX_KEY_BYTES {
            return Err(LockError::invalid(
                "prefix",
                "must be at most 512 bytes with no control characters",
            ));
        }
        let limit = match limit {
            None => DEFAULT_LIST_LIMIT,
            Some(n) if (1..=MAX_LIST_LIMIT).contains(&n) => n,
            Some(n) => {
                return Err(LockError::invalid(
                    "limit",
                    format!("{n} is out of range: a page holds 1 to {MAX_LIST_LIMIT} entries"),
                ))
            }
        };
        let Listing { bucket, root } = listing;
        let after = cursor.map(decode_cursor).transpose()?;
        let full_prefix = format!("{root}{prefix}");
        let start_after = after.map(|k| format!("{root}{k}"));
        let limit = usize::try_from(limit).expect("at most MAX_LIST_LIMIT");
        let page = self
            .store
            .list_page(&bucket, &full_prefix, start_after.as_deref(), limit)
            .await;
        self.health.record(&page);
        let page = page.map_err(store_error)?;
        // The last object listed, document or not, so that a page of skipped objects still
        // moves the next one forward.
        let next = match page.keys.last() {
            Some(last) if page.more => Some(encode_cursor(
                last.strip_prefix(root.as_str()).unwrap_or(last),
            )),
            _ => None,
        };
        let targets = page.keys.into_iter().filter_map(|object| {
            let key = LockKey::parse(object.strip_prefix(root.as_str())?).ok()?;
            keep(&key).then(|| Target {
                bucket: bucket.clone(),
                key,
                object,
            })
        });
        let view = &view;
        let items: Vec<V> = futures_util::stream::iter(targets)
            .map(|target| async move {
                let read = self.read::<K>(&target).await;
                match read.and_then(|found| found.map(|(doc, _)| view(&target, doc)).transpose()) {
                    Ok(view) => Ok(view), // `None`: deleted since it was listed
                    Err(LockError::Unreadable(why)) => {
                        tracing::warn!(key = %target.key, %why, "skipping an unreadable document");
                        Ok(None)
                    }
                    Err(other) => Err(other),
                }
            })
            .buffered(READS_AT_ONCE)
            .try_filter_map(|view| async move { Ok(view) })
            .try_collect()
            .await?;
        Ok(Page { items, next })
    }
}

/// A cursor: the key (after the lock prefix) of the last object a page listed, as lowercase hex
/// of its UTF-8, so that any key travels in a query string as it is, and so that clients treat
/// it as opaque.
fn encode_cursor(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The position a cursor names. Any cursor of this form names one (the next page starts after
/// it in key order, under the list's prefix), so none that the OpenAPI document allows is
/// refused; anything else is invalid input.
fn decode_cursor(cursor: &str) -> Result<String, LockError> {
    let bad = || {
        LockError::invalid(
            "cursor",
            "not a cursor this server hands out: pass the `next` of the page before, unchanged",
        )
    };
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(bad()),
    };
    let raw = cursor.as_bytes();
    if raw.is_empty() || !raw.len().is_multiple_of(2) || raw.len() > 2 * MAX_CURSOR_KEY_BYTES {
        return Err(bad());
    }
    let bytes = raw
        .chunks(2)
        .map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect::<Result<Vec<u8>, LockError>>()?;
    // Only this server's own cursors are meant to come back, and those are UTF-8; a made-up
    // one still names a position.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_decodes_to_the_key_it_was_made_from() {
        let key = "jobs/ü näme/ok";
        assert_eq!(decode_cursor(&encode_cursor(key)).unwrap(), key);
    }

    #[test]
    fn a_cursor_that_is_not_lowercase_hex_pairs_is_invalid_input_naming_the_cursor() {
        let too_long = "61".repeat(MAX_CURSOR_KEY_BYTES + 1);
        for bad in ["zz", "abc", "", "+f", "6A", " 61", too_long.as_str()] {
            match decode_cursor(bad) {
                Err(LockError::InvalidInput { field, .. }) => assert_eq!(field, "cursor", "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
