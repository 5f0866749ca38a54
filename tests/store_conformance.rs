//! One suite that every store must pass: memory, local, and S3 on a real server (SeaweedFS).
//! Racing writers included: many tasks doing put-if-absent / put-if-version on one key must
//! produce exactly one winner per round.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use s3lock::store::check::{verify_conditional_writes, CheckError};
use s3lock::store::local::{LocalStore, OpenError};
use s3lock::store::memory::MemoryStore;
use s3lock::store::{ListPage, Store, StoreError, Version, Versioned};

const WRITERS: usize = 16;
const ROUNDS: usize = 5;

struct Subject {
    store: Arc<dyn Store>,
    bucket: String,
    _dir: Option<tempfile::TempDir>,
}

async fn memory() -> Subject {
    Subject {
        store: Arc::new(MemoryStore::new()),
        bucket: "conformance".into(),
        _dir: None,
    }
}

async fn local() -> Subject {
    let dir = tempfile::tempdir().unwrap();
    Subject {
        store: Arc::new(LocalStore::open(dir.path()).unwrap()),
        bucket: "conformance".into(),
        _dir: Some(dir),
    }
}

async fn s3() -> Subject {
    let (store, bucket) = support::s3_with_fresh_bucket().await;
    Subject {
        store: Arc::new(store),
        bucket,
        _dir: None,
    }
}

/// The S3 store behind the fault proxy answering as AWS does where SeaweedFS sends `412`:
/// `409 ConditionalRequestConflict` to refused conditional writes, `404 NoSuchKey` to an
/// `If-Match` write of a missing key. Every case must read them as the failed preconditions
/// they are.
async fn s3_aws_answers() -> Subject {
    let (_, bucket) = support::s3_with_fresh_bucket().await;
    let proxy = support::proxy::FaultProxy::start(&support::s3_endpoint()).await;
    proxy.aws_answers(Some(support::proxy::AwsAnswers::Conflicts));
    let store =
        s3lock::store::s3::S3Store::connect(&support::s3_settings_via(&proxy.endpoint)).await;
    Subject {
        store: Arc::new(store),
        bucket,
        _dir: None,
    }
}

fn body(s: &str) -> Bytes {
    Bytes::from(format!("{{\"v\":\"{s}\"}}"))
}

mod cases {
    use super::*;

    pub async fn a_missing_object_reads_as_none(s: Subject) {
        assert_eq!(s.store.get(&s.bucket, "locks/none").await.unwrap(), None);
    }

    pub async fn put_if_absent_creates_once(s: Subject) {
        let v = s
            .store
            .put_if_absent(&s.bucket, "locks/a", body("1"))
            .await
            .unwrap();
        let again = s.store.put_if_absent(&s.bucket, "locks/a", body("2")).await;
        assert!(
            matches!(again, Err(StoreError::PreconditionFailed)),
            "{again:?}"
        );
        let got = s.store.get(&s.bucket, "locks/a").await.unwrap().unwrap();
        assert_eq!(
            got,
            Versioned {
                body: body("1"),
                version: v
            }
        );
    }

    pub async fn put_if_version_replaces_only_the_version_read(s: Subject) {
        let v1 = s
            .store
            .put_if_absent(&s.bucket, "locks/b", body("1"))
            .await
            .unwrap();
        let v2 = s
            .store
            .put_if_version(&s.bucket, "locks/b", body("2"), &v1)
            .await
            .unwrap();
        assert_ne!(v1, v2, "a new body has a new version");
        let stale = s
            .store
            .put_if_version(&s.bucket, "locks/b", body("3"), &v1)
            .await;
        assert!(
            matches!(stale, Err(StoreError::PreconditionFailed)),
            "{stale:?}"
        );
        let got = s.store.get(&s.bucket, "locks/b").await.unwrap().unwrap();
        assert_eq!(
            got,
            Versioned {
                body: body("2"),
                version: v2
            }
        );
    }

    pub async fn put_if_version_of_a_missing_object_fails_its_precondition(s: Subject) {
        let made_up = Version("\"0123456789abcdef0123456789abcdef\"".into());
        let r = s
            .store
            .put_if_version(&s.bucket, "locks/missing", body("1"), &made_up)
            .await;
        assert!(matches!(r, Err(StoreError::PreconditionFailed)), "{r:?}");
        assert_eq!(s.store.get(&s.bucket, "locks/missing").await.unwrap(), None);
    }

    pub async fn bodies_round_trip_byte_for_byte(s: Subject) {
        let raw = Bytes::from(
            "{\"owner\":\"Zoë ✓\",\"x\":\"\\n\"}\n  "
                .as_bytes()
                .to_vec(),
        );
        s.store
            .put_if_absent(&s.bucket, "locks/bytes", raw.clone())
            .await
            .unwrap();
        assert_eq!(
            s.store
                .get(&s.bucket, "locks/bytes")
                .await
                .unwrap()
                .unwrap()
                .body,
            raw
        );
    }

    pub async fn list_names_the_objects_under_a_prefix_in_order(s: Subject) {
        for k in ["locks/jobs/b", "locks/jobs/a", "locks/other", "elsewhere/x"] {
            s.store.put_if_absent(&s.bucket, k, body(k)).await.unwrap();
        }
        assert_eq!(
            s.store.list(&s.bucket, "locks/jobs/").await.unwrap(),
            ["locks/jobs/a", "locks/jobs/b"]
        );
        assert_eq!(s.store.list(&s.bucket, "locks/").await.unwrap().len(), 3);
        assert!(s
            .store
            .list(&s.bucket, "nothing/")
            .await
            .unwrap()
            .is_empty());
    }

    pub async fn list_pages_name_each_object_under_a_prefix_once_in_order(s: Subject) {
        let under: Vec<String> = (0..7).map(|i| format!("locks/p/{i}")).collect();
        for k in under
            .iter()
            .map(String::as_str)
            .chain(["locks/p-", "locks/pz", "locks/q"])
        {
            s.store.put_if_absent(&s.bucket, k, body(k)).await.unwrap();
        }
        let mut seen: Vec<String> = Vec::new();
        let mut pages = Vec::new();
        loop {
            let after = seen.last().map(String::as_str);
            let page = s
                .store
                .list_page(&s.bucket, "locks/p/", after, 3)
                .await
                .unwrap();
            assert!(page.keys.len() <= 3, "{page:?}");
            pages.push(page.keys.len());
            seen.extend(page.keys);
            if !page.more {
                break;
            }
        }
        assert_eq!(seen, under);
        assert_eq!(pages, [3, 3, 1]);
        // A start that is no object's key, or sorts before the prefix, starts where it falls.
        let page = s
            .store
            .list_page(&s.bucket, "locks/p/", Some("locks/p/4a"), 2)
            .await
            .unwrap();
        assert_eq!(page.keys, ["locks/p/5", "locks/p/6"]);
        assert!(!page.more, "{page:?}");
        let page = s
            .store
            .list_page(&s.bucket, "locks/p/", Some("locks/a"), 1)
            .await
            .unwrap();
        assert_eq!(page.keys, ["locks/p/0"]);
        assert!(page.more);
        let page = s
            .store
            .list_page(&s.bucket, "nothing/", None, 10)
            .await
            .unwrap();
        assert_eq!(page, ListPage::default());
    }

    pub async fn a_listing_names_what_was_written_and_deleted_since_an_earlier_one(s: Subject) {
        s.store
            .put_if_absent(&s.bucket, "locks/w/a", body("a"))
            .await
            .unwrap();
        assert_eq!(
            s.store.list(&s.bucket, "locks/w/").await.unwrap(),
            ["locks/w/a"]
        );
        let v = s
            .store
            .put_if_absent(&s.bucket, "locks/w/b", body("b"))
            .await
            .unwrap();
        s.store
            .put_if_version(&s.bucket, "locks/w/b", body("b2"), &v)
            .await
            .unwrap();
        s.store.delete(&s.bucket, "locks/w/a").await.unwrap();
        s.store
            .put_if_absent(&s.bucket, "locks/w/c", body("c"))
            .await
            .unwrap();
        let page = s
            .store
            .list_page(&s.bucket, "locks/w/", None, 10)
            .await
            .unwrap();
        assert_eq!(page.keys, ["locks/w/b", "locks/w/c"]);
        assert!(!page.more);
    }

    pub async fn delete_removes_an_object(s: Subject) {
        s.store
            .put_if_absent(&s.bucket, "locks/d", body("1"))
            .await
            .unwrap();
        s.store.delete(&s.bucket, "locks/d").await.unwrap();
        assert_eq!(s.store.get(&s.bucket, "locks/d").await.unwrap(), None);
        s.store
            .put_if_absent(&s.bucket, "locks/d", body("2"))
            .await
            .unwrap();
    }

    pub async fn racing_creators_have_exactly_one_winner_per_round(s: Subject) {
        for round in 0..ROUNDS {
            let key = format!("locks/race-create-{round}");
            let results = join_all((0..WRITERS).map(|w| {
                let (store, bucket, key) = (s.store.clone(), s.bucket.clone(), key.clone());
                tokio::spawn(async move {
                    store
                        .put_if_absent(&bucket, &key, body(&format!("writer-{w}")))
                        .await
                })
            }))
            .await;
            let winners: Vec<usize> = results
                .into_iter()
                .enumerate()
                .filter_map(|(w, r)| match r.unwrap() {
                    Ok(_) => Some(w),
                    Err(StoreError::PreconditionFailed) => None,
                    Err(e) => panic!("writer {w}: {e}"),
                })
                .collect();
            assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
            let stored = s.store.get(&s.bucket, &key).await.unwrap().unwrap();
            assert_eq!(stored.body, body(&format!("writer-{}", winners[0])));
        }
    }

    pub async fn racing_updaters_have_exactly_one_winner_per_round(s: Subject) {
        let key = "locks/race-update";
        let mut version = s
            .store
            .put_if_absent(&s.bucket, key, body("start"))
            .await
            .unwrap();
        for round in 0..ROUNDS {
            let results = join_all((0..WRITERS).map(|w| {
                let (store, bucket, version) = (s.store.clone(), s.bucket.clone(), version.clone());
                tokio::spawn(async move {
                    let b = body(&format!("round-{round}-writer-{w}"));
                    store.put_if_version(&bucket, key, b, &version).await
                })
            }))
            .await;
            let mut winners = Vec::new();
            for (w, r) in results.into_iter().enumerate() {
                match r.unwrap() {
                    Ok(v) => winners.push((w, v)),
                    Err(StoreError::PreconditionFailed) => {}
                    Err(e) => panic!("writer {w}: {e}"),
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: {} winners", winners.len());
            let (w, v) = winners.pop().unwrap();
            let stored = s.store.get(&s.bucket, key).await.unwrap().unwrap();
            assert_eq!(stored.body, body(&format!("round-{round}-writer-{w}")));
            assert_eq!(stored.version, v);
            version = v;
        }
    }

    pub async fn the_start_up_store_check_passes(s: Subject) {
        verify_conditional_writes(s.store.as_ref(), &s.bucket, "locks/")
            .await
            .unwrap();
        assert!(
            s.store.list(&s.bucket, "locks/").await.unwrap().is_empty(),
            "the check removes its probe objects"
        );
    }

    pub async fn start_up_checks_of_replicas_starting_together_both_pass(s: Subject) {
        // Each run probes objects of its own: two replicas starting at once never collide.
        let (a, b) = tokio::join!(
            verify_conditional_writes(s.store.as_ref(), &s.bucket, "locks/"),
            verify_conditional_writes(s.store.as_ref(), &s.bucket, "locks/"),
        );
        a.unwrap();
        b.unwrap();
    }
}

macro_rules! conformance_suite {
    ($store:ident) => {
        mod $store {
            use super::*;

            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $name() {
                        cases::$name(super::$store().await).await;
                    }
                };
            }

            case!(a_missing_object_reads_as_none);
            case!(put_if_absent_creates_once);
            case!(put_if_version_replaces_only_the_version_read);
            case!(put_if_version_of_a_missing_object_fails_its_precondition);
            case!(bodies_round_trip_byte_for_byte);
            case!(list_names_the_objects_under_a_prefix_in_order);
            case!(list_pages_name_each_object_under_a_prefix_once_in_order);
            case!(a_listing_names_what_was_written_and_deleted_since_an_earlier_one);
            case!(delete_removes_an_object);
            case!(racing_creators_have_exactly_one_winner_per_round);
            case!(racing_updaters_have_exactly_one_winner_per_round);
            case!(the_start_up_store_check_passes);
            case!(start_up_checks_of_replicas_starting_together_both_pass);
        }
    };
}

conformance_suite!(memory);
conformance_suite!(local);
conformance_suite!(s3);
conformance_suite!(s3_aws_answers);

#[tokio::test]
async fn the_local_store_keeps_its_objects_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let v = {
        let store = LocalStore::open(dir.path()).unwrap();
        store
            .put_if_absent("b1", "locks/keep/me", body("1"))
            .await
            .unwrap()
    };
    let reopened = LocalStore::open(dir.path()).unwrap();
    let got = reopened.get("b1", "locks/keep/me").await.unwrap().unwrap();
    assert_eq!(
        got,
        Versioned {
            body: body("1"),
            version: v
        }
    );
    assert_eq!(reopened.list("b1", "").await.unwrap(), ["locks/keep/me"]);
}

#[tokio::test]
async fn a_second_local_store_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = LocalStore::open(dir.path()).unwrap();
    let second = LocalStore::open(dir.path());
    assert!(matches!(second, Err(OpenError::InUse { .. })), "{second:?}");
}

/// Every file under `dir` whose name starts with `.tmp-`.
fn temp_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(temp_files(&path));
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(".tmp-"))
        {
            found.push(path);
        }
    }
    found
}

#[tokio::test]
async fn the_local_store_removes_at_start_the_temp_files_a_crash_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = LocalStore::open(dir.path()).unwrap();
        store
            .put_if_absent("b1", "locks/kept", body("1"))
            .await
            .unwrap();
    }
    // A crash between writing a temp file and renaming it over the document leaves the temp
    // file beside the document (under `kill -9` during writes, or a power cut).
    let document = std::fs::read_dir(dir.path().join("buckets/b1"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(document.join(".tmp-0123abcd"), "locks/kept\ntorn").unwrap();
    std::fs::create_dir_all(dir.path().join("buckets/b2/ff")).unwrap();
    std::fs::write(dir.path().join("buckets/b2/ff/.tmp-4567ef"), "").unwrap();
    assert_eq!(temp_files(dir.path()).len(), 2);

    let reopened = LocalStore::open(dir.path()).unwrap();
    assert_eq!(temp_files(dir.path()), Vec::<std::path::PathBuf>::new());
    let kept = reopened.get("b1", "locks/kept").await.unwrap().unwrap();
    assert_eq!(kept.body, body("1"));
    assert_eq!(reopened.list("b1", "").await.unwrap(), ["locks/kept"]);
}

#[tokio::test]
async fn the_local_store_accepts_keys_longer_than_a_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let key = format!("locks/{}/{}", "a".repeat(300), "b".repeat(200));
    store.put_if_absent("b1", &key, body("1")).await.unwrap();
    assert_eq!(store.list("b1", "locks/").await.unwrap(), [key]);
}

/// A store that accepts conditional headers and ignores them, as Garage does.
#[derive(Debug, Default)]
struct IgnoresConditions(MemoryStore);

#[async_trait::async_trait]
impl Store for IgnoresConditions {
    async fn get(&self, b: &str, k: &str) -> Result<Option<Versioned>, StoreError> {
        self.0.get(b, k).await
    }
    async fn put_if_absent(&self, b: &str, k: &str, body: Bytes) -> Result<Version, StoreError> {
        self.0.delete(b, k).await?;
        self.0.put_if_absent(b, k, body).await
    }
    async fn put_if_version(
        &self,
        b: &str,
        k: &str,
        body: Bytes,
        _: &Version,
    ) -> Result<Version, StoreError> {
        self.put_if_absent(b, k, body).await
    }
    async fn list_page(
        &self,
        b: &str,
        p: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<ListPage, StoreError> {
        self.0.list_page(b, p, after, max).await
    }
    async fn delete(&self, b: &str, k: &str) -> Result<(), StoreError> {
        self.0.delete(b, k).await
    }
}

#[tokio::test]
async fn the_store_check_refuses_a_store_that_ignores_conditional_writes() {
    let err = verify_conditional_writes(&IgnoresConditions::default(), "b1", "locks/")
        .await
        .unwrap_err();
    assert!(matches!(err, CheckError::IgnoresIfNoneMatch), "{err}");
    assert!(err.to_string().contains("If-None-Match"));
}

#[tokio::test]
async fn a_local_write_whose_directory_sync_failed_is_not_read_as_landed_until_a_sync_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let v1 = store
        .put_if_absent("b1", "locks/k", body("1"))
        .await
        .unwrap();
    store.fail_directory_syncs(Some(Arc::new(|_: &std::path::Path| true)));
    let written = store.put_if_version("b1", "locks/k", body("2"), &v1).await;
    assert!(
        matches!(written, Err(StoreError::Unavailable(_))),
        "{written:?}"
    );
    // The rename happened, but a crash could undo it: no read may take it for landed.
    let read = store.get("b1", "locks/k").await;
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
    let listed = store.list("b1", "locks/").await;
    assert!(
        matches!(listed, Err(StoreError::Unavailable(_))),
        "{listed:?}"
    );
    let again = store.put_if_version("b1", "locks/k", body("3"), &v1).await;
    assert!(
        matches!(again, Err(StoreError::Unavailable(_))),
        "{again:?}"
    );

    // Once a sync of the directory succeeds, the write is durable and is what is read.
    store.fail_directory_syncs(None);
    let got = store.get("b1", "locks/k").await.unwrap().unwrap();
    assert_eq!(got.body, body("2"));
    assert_eq!(store.list("b1", "locks/").await.unwrap(), ["locks/k"]);
}

#[tokio::test]
async fn a_local_write_syncs_every_directory_above_it_even_ones_an_earlier_process_created() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let v1 = {
        let earlier = LocalStore::open(&root).unwrap();
        earlier
            .put_if_absent("b1", "locks/k", body("1"))
            .await
            .unwrap()
    };
    // An earlier process created these directories; this one cannot know it synced them.
    for parent in [root.join("buckets/b1"), root.join("buckets"), root.clone()] {
        let store = LocalStore::open(&root).unwrap();
        let failing = parent.clone();
        store.fail_directory_syncs(Some(Arc::new(move |d: &std::path::Path| d == failing)));
        let written = store.put_if_version("b1", "locks/k", body("2"), &v1).await;
        assert!(
            matches!(written, Err(StoreError::Unavailable(_))),
            "{} was not synced: {written:?}",
            parent.display()
        );
    }
    let store = LocalStore::open(&root).unwrap();
    assert_eq!(
        store.get("b1", "locks/k").await.unwrap().unwrap().body,
        body("1"),
        "a write refused before it was made leaves the document as it was"
    );
    store
        .put_if_version("b1", "locks/k", body("2"), &v1)
        .await
        .unwrap();
}

/// A store whose every write that lands is answered as if its answer had been lost: with a
/// failed precondition (the SDK's retry met the write itself) or as unreachable.
#[derive(Debug, Default)]
struct LosesAnswers {
    inner: MemoryStore,
    as_unavailable: bool,
}

impl LosesAnswers {
    fn lost<T>(&self, landed: Result<T, StoreError>) -> Result<T, StoreError> {
        match landed {
            Ok(_) if self.as_unavailable => Err(StoreError::Unavailable("answer lost".into())),
            Ok(_) => Err(StoreError::PreconditionFailed),
            refused => refused,
        }
    }
}

#[async_trait::async_trait]
impl Store for LosesAnswers {
    async fn get(&self, b: &str, k: &str) -> Result<Option<Versioned>, StoreError> {
        self.inner.get(b, k).await
    }
    async fn put_if_absent(&self, b: &str, k: &str, body: Bytes) -> Result<Version, StoreError> {
        self.lost(self.inner.put_if_absent(b, k, body).await)
    }
    async fn put_if_version(
        &self,
        b: &str,
        k: &str,
        body: Bytes,
        expected: &Version,
    ) -> Result<Version, StoreError> {
        self.lost(self.inner.put_if_version(b, k, body, expected).await)
    }
    async fn list_page(
        &self,
        b: &str,
        p: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<ListPage, StoreError> {
        self.inner.list_page(b, p, after, max).await
    }
    async fn delete(&self, b: &str, k: &str) -> Result<(), StoreError> {
        self.inner.delete(b, k).await
    }
}

#[tokio::test]
async fn the_store_check_passes_when_every_write_that_lands_is_answered_as_lost() {
    // Each racer's outcome is settled by reading back: the one whose body is stored won, and
    // is counted once; the others lost.
    for as_unavailable in [false, true] {
        let store = LosesAnswers {
            as_unavailable,
            ..LosesAnswers::default()
        };
        verify_conditional_writes(&store, "b1", "locks/")
            .await
            .unwrap_or_else(|e| panic!("answered as unavailable: {as_unavailable}: {e}"));
    }
}
