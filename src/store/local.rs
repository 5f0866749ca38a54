//! The embedded default store: lock documents as files in a data directory, durable across
//! restarts. It gives the same guarantees as the S3 store, within one process:
//!
//! * one process per data directory, enforced with an exclusive lock on `DATA_DIR/LOCK`, because
//!   the conditional writes below are only atomic among threads that share this process's locks;
//! * a write is a temp file + fsync + rename + fsync of the directory, so a crash leaves either
//!   the old document or the new one, never a torn one;
//! * every directory a write depends on is synced before the write is answered: the object's
//!   own directory after each rename, and once per process its parents up to the data
//!   directory (an earlier process may have created them and crashed before syncing them);
//! * a rename whose directory sync failed is not durable: the write answers
//!   [`StoreError::Unavailable`], and the directory is remembered as unsynced. Reads, writes and
//!   lists under it answer `Unavailable` too until a sync of it succeeds, so that no read (the
//!   engine's read-back of that very write included) takes a state a crash could undo for one
//!   that landed;
//! * an object lives at `buckets/<bucket>/<h[0..2]>/<h>` where `h` is the SHA-256 of its key:
//!   keys may be up to 512 bytes with `/` in them, which no file name could hold. The file starts
//!   with the key and a newline (keys never contain control characters), then the body.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{content_version, ListPage, Store, StoreError, Version, Versioned};

const SHARDS: usize = 64;

#[derive(Debug, Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    /// Held (locked) for as long as this store lives; dropping it lets another process open the
    /// directory.
    _dir_lock: File,
    /// Check-and-write of one object happens under the shard lock of its key hash, so two writers
    /// of the same key are serialised while writers of different keys mostly are not. Reads of
    /// an object take it too, so that a read never sees a rename before its directory sync has
    /// either succeeded or been recorded in `unsynced`.
    shards: Vec<Mutex<()>>,
    /// Directories this process has synced since it opened the store, whose entries are
    /// therefore durable. A write syncs the parents of its object's directory only when they
    /// are not in here yet, or when it created a directory under them (a new entry).
    synced: Mutex<HashSet<PathBuf>>,
    /// Directories whose sync failed after an entry in them changed: what they hold may not
    /// survive a crash, so nothing under them is served until a sync of them succeeds.
    unsynced: Mutex<HashSet<PathBuf>>,
    /// Test-only fault injection: directory syncs it accepts fail (see
    /// [`LocalStore::fail_directory_syncs`]).
    failing_syncs: Mutex<Option<SyncFaults>>,
    /// The keys of each bucket listed since the store opened, sorted. Objects are filed by the
    /// hash of their key, so without this every page of a listing would read the first line of
    /// every file in the bucket. Loaded by the bucket's first listing, under this mutex, and kept
    /// in step by each write and delete after it has changed the files (also under this mutex):
    /// whichever order a write and the loading scan meet in, the key ends up right. Only this
    /// process writes the directory (it holds its lock), so nothing else can change it.
    keys: Mutex<HashMap<String, BTreeSet<String>>>,
}

/// Which directory syncs fail, for tests of a disk whose `fsync` fails.
type SyncFaults = Arc<dyn Fn(&Path) -> bool + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("data directory {dir} is in use by another s3lock process (lock file {lock})")]
    InUse { dir: String, lock: String },
    #[error("cannot open data directory {dir}: {source}")]
    Io { dir: String, source: io::Error },
}

impl LocalStore {
    /// Opens (creating if needed) a data directory and takes its process lock.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, OpenError> {
        let root = root.as_ref().to_path_buf();
        let dir = root.display().to_string();
        let io_err = |source| OpenError::Io {
            dir: dir.clone(),
            source,
        };
        fs::create_dir_all(root.join("buckets")).map_err(io_err)?;
        let lock_path = root.join("LOCK");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err)?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(OpenError::InUse {
                    dir: dir.clone(),
                    lock: lock_path.display().to_string(),
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(e)),
        }
        let store = Self {
            inner: Arc::new(Inner {
                root,
                _dir_lock: lock_file,
                shards: (0..SHARDS).map(|_| Mutex::new(())).collect(),
                synced: Mutex::default(),
                unsynced: Mutex::default(),
                failing_syncs: Mutex::default(),
                keys: Mutex::default(),
            }),
        };
        store.remove_stale_temp_files().map_err(io_err)?;
        Ok(store)
    }

    /// A crash between writing a temp file and renaming it leaves the temp file behind; it was
    /// never the document, so it is safe to delete once we hold the directory lock.
    fn remove_stale_temp_files(&self) -> io::Result<()> {
        for bucket in read_dir_or_empty(&self.inner.root.join("buckets"))? {
            for shard in read_dir_or_empty(&bucket)? {
                for file in read_dir_or_empty(&shard)? {
                    if is_temp(&file) {
                        fs::remove_file(&file)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Test-only fault injection: from now on, every directory sync of a path that `fails`
    /// accepts fails with an I/O error, as on a failing disk; `None` heals. Not for production
    /// use: it exists so that tests, integration tests included, can reach the store's handling
    /// of a failed sync.
    #[doc(hidden)]
    pub fn fail_directory_syncs(&self, fails: Option<SyncFaults>) {
        *self
            .inner
            .failing_syncs
            .lock()
            .expect("sync faults mutex poisoned") = fails;
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Unavailable(format!("local store task failed: {e}")))?
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Makes a directory's entries durable (or fails as the injected faults say).
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let failing = self
            .failing_syncs
            .lock()
            .expect("sync faults mutex poisoned")
            .clone();
        if failing.is_some_and(|fails| fails(dir)) {
            return Err(io::Error::other("injected directory sync failure"));
        }
        File::open(dir)?.sync_all()
    }

    /// The directories an object in `dir` depends on: `dir` and its parents up to the root.
    fn chain<'p>(&self, dir: &'p Path) -> impl Iterator<Item = &'p Path> + use<'p, '_> {
        dir.ancestors()
            .take_while(move |d| d.starts_with(&self.root))
    }

    /// Syncs the parents of `dir` up to the root that this process has not synced yet (all of
    /// them when `dir` was just created, since each gained an entry), so that the entry of every
    /// directory on the way to the object is durable before the object is written.
    fn sync_parents(&self, dir: &Path, created: bool) -> Result<(), StoreError> {
        for parent in self.chain(dir).skip(1) {
            let known = self
                .synced
                .lock()
                .expect("synced mutex poisoned")
                .contains(parent);
            if known && !created {
                continue;
            }
            self.sync_dir(parent).map_err(io_unavailable)?;
            self.synced
                .lock()
                .expect("synced mutex poisoned")
                .insert(parent.to_path_buf());
        }
        Ok(())
    }

    /// Refuses to serve what lies under (or above) `dir` while a directory there is unsynced;
    /// a sync that succeeds now makes its state durable, and it is served again.
    fn require_synced(&self, dir: &Path) -> Result<(), StoreError> {
        let mut unsynced = self.unsynced.lock().expect("unsynced mutex poisoned");
        if unsynced.is_empty() {
            return Ok(());
        }
        let pending: Vec<PathBuf> = unsynced
            .iter()
            .filter(|d| dir.starts_with(d) || d.starts_with(dir))
            .cloned()
            .collect();
        for d in pending {
            match self.sync_dir(&d) {
                Ok(()) => {
                    unsynced.remove(&d);
                }
                Err(e) => {
                    return Err(StoreError::Unavailable(format!(
                        "local store: {} could not be synced, so what it holds may not survive \
                         a crash: {e}",
                        d.display()
                    )))
                }
            }
        }
        Ok(())
    }

    fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.join("buckets").join(bucket)
    }

    fn object_path(&self, bucket: &str, key: &str) -> (PathBuf, usize) {
        let hash = Sha256::digest(key.as_bytes());
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        let shard = usize::from(hash[0]) % SHARDS;
        (self.bucket_dir(bucket).join(&hex[..2]).join(&hex), shard)
    }

    fn read(&self, path: &Path) -> Result<Option<(String, Bytes)>, StoreError> {
        let mut raw = Vec::new();
        match File::open(path) {
            Ok(mut f) => f.read_to_end(&mut raw).map_err(io_unavailable)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_unavailable(e)),
        };
        let newline = raw
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| StoreError::Other(format!("{} has no key line", path.display())))?;
        let key = String::from_utf8(raw[..newline].to_vec()).map_err(|_| {
            StoreError::Other(format!("{} has a key that is not UTF-8", path.display()))
        })?;
        let body = Bytes::copy_from_slice(&raw[newline + 1..]);
        Ok(Some((key, body)))
    }

    fn get(&self, bucket: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        let (path, shard) = self.object_path(bucket, key);
        let _guard = self.shards[shard].lock().expect("shard mutex poisoned");
        self.require_synced(path.parent().expect("object path has a parent"))?;
        Ok(self.read(&path)?.map(|(_, body)| Versioned {
            version: content_version(&body),
            body,
        }))
    }

    /// Writes `body` for `key` when `condition` accepts the current version (`None` = absent).
    fn put_if(
        &self,
        bucket: &str,
        key: &str,
        body: &[u8],
        condition: impl FnOnce(Option<&Version>) -> bool,
    ) -> Result<Version, StoreError> {
        let (path, shard) = self.object_path(bucket, key);
        let _guard = self.shards[shard].lock().expect("shard mutex poisoned");
        let dir = path.parent().expect("object path has a parent");
        self.require_synced(dir)?;
        let current = self.read(&path)?.map(|(_, b)| content_version(&b));
        if !condition(current.as_ref()) {
            return Err(StoreError::PreconditionFailed);
        }
        let created = !dir.exists();
        if created {
            fs::create_dir_all(dir).map_err(io_unavailable)?;
        }
        // A crash must not lose the directories on the way to the document either (a lost
        // first grant would start its fencing token again at 1).
        self.sync_parents(dir, created)?;
        let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(key.as_bytes())?;
            f.write_all(b"\n")?;
            f.write_all(body)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io_unavailable(e));
        }
        if let Some(listed) = self.keys().get_mut(bucket) {
            listed.insert(key.to_owned());
        }
        // The rename is only durable once the directory entry is. Until then the new document
        // is visible but could be undone by a crash: it must not be read as landed.
        if let Err(e) = self.sync_dir(dir) {
            self.unsynced
                .lock()
                .expect("unsynced mutex poisoned")
                .insert(dir.to_path_buf());
            return Err(io_unavailable(e));
        }
        self.synced
            .lock()
            .expect("synced mutex poisoned")
            .insert(dir.to_path_buf());
        Ok(content_version(body))
    }

    fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> Result<ListPage, StoreError> {
        use std::ops::Bound;
        self.require_synced(&self.bucket_dir(bucket))?;
        let mut all = self.keys();
        if !all.contains_key(bucket) {
            let scanned = self.scan_keys(bucket)?;
            all.insert(bucket.to_owned(), scanned);
        }
        let listed = &all[bucket];
        let lower = match start_after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Included(prefix),
        };
        let mut under = listed
            .range::<str, _>((lower, Bound::Unbounded))
            .skip_while(|k| !k.starts_with(prefix) && k.as_str() < prefix)
            .take_while(|k| k.starts_with(prefix));
        let keys: Vec<String> = under.by_ref().take(max_keys.max(1)).cloned().collect();
        let more = !keys.is_empty() && under.next().is_some();
        Ok(ListPage { keys, more })
    }

    /// Every key in the bucket, from each file's first line.
    fn scan_keys(&self, bucket: &str) -> Result<BTreeSet<String>, StoreError> {
        let mut keys = BTreeSet::new();
        for shard in read_dir_or_empty(&self.bucket_dir(bucket)).map_err(io_unavailable)? {
            for file in read_dir_or_empty(&shard).map_err(io_unavailable)? {
                if is_temp(&file) {
                    continue;
                }
                if let Some((key, _)) = self.read(&file)? {
                    keys.insert(key);
                }
            }
        }
        Ok(keys)
    }

    fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let (path, shard) = self.object_path(bucket, key);
        let _guard = self.shards[shard].lock().expect("shard mutex poisoned");
        self.require_synced(path.parent().expect("object path has a parent"))?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_unavailable(e)),
        }
        if let Some(listed) = self.keys().get_mut(bucket) {
            listed.remove(key);
        }
        Ok(())
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeSet<String>>> {
        self.keys.lock().expect("keys mutex poisoned")
    }
}

fn is_temp(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(".tmp-"))
}

fn read_dir_or_empty(dir: &Path) -> io::Result<Vec<PathBuf>> {
    match fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.map(|e| e.path())).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn io_unavailable(e: io::Error) -> StoreError {
    StoreError::Unavailable(format!("local store I/O error: {e}"))
}

#[async_trait]
impl Store for LocalStore {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        self.blocking(move |s| s.get(&bucket, &key)).await
    }

    async fn put_if_absent(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
    ) -> Result<Version, StoreError> {
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        self.blocking(move |s| s.put_if(&bucket, &key, &body, |current| current.is_none()))
            .await
    }

    async fn put_if_version(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        expected: &Version,
    ) -> Result<Version, StoreError> {
        let (bucket, key, expected) = (bucket.to_owned(), key.to_owned(), expected.clone());
        self.blocking(move |s| s.put_if(&bucket, &key, &body, |current| current == Some(&expected)))
            .await
    }

    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> Result<ListPage, StoreError> {
        let (bucket, prefix) = (bucket.to_owned(), prefix.to_owned());
        let start_after = start_after.map(str::to_owned);
        self.blocking(move |s| s.list_page(&bucket, &prefix, start_after.as_deref(), max_keys))
            .await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        self.blocking(move |s| s.delete(&bucket, &key)).await
    }
}
