//! The embedded default store: lock documents as files in a data directory, durable across
//! restarts. It gives the same guarantees as the S3 store, within one process:
//!
//! * one process per data directory, enforced with an exclusive lock on `DATA_DIR/LOCK`, because
//!   the conditional writes below are only atomic among threads that share this process's locks;
//! * a write is a temp file + fsync + rename + fsync of the directory, so a crash leaves either
//!   the old document or the new one, never a torn one;
//! * an object lives at `buckets/<bucket>/<h[0..2]>/<h>` where `h` is the SHA-256 of its key:
//!   keys may be up to 512 bytes with `/` in them, which no file name could hold. The file starts
//!   with the key and a newline (keys never contain control characters), then the body.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{content_version, Store, StoreError, Version, Versioned};

const SHARDS: usize = 64;

#[derive(Debug, Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    /// Held (locked) for as long as this store lives; dropping it lets another process open the
    /// directory.
    _dir_lock: File,
    /// Check-and-write of one object happens under the shard lock of its key hash, so two writers
    /// of the same key are serialised while writers of different keys mostly are not.
    shards: Vec<Mutex<()>>,
}

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

impl Inner {
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
        let (path, _) = self.object_path(bucket, key);
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
        let current = self.read(&path)?.map(|(_, b)| content_version(&b));
        if !condition(current.as_ref()) {
            return Err(StoreError::PreconditionFailed);
        }
        let dir = path.parent().expect("object path has a parent");
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(io_unavailable)?;
            // A new directory's own entry must be durable too, or a crash could lose the first
            // grant of a lock (and its fencing token would start again at 1).
            for created in [dir.parent(), dir.parent().and_then(Path::parent)]
                .into_iter()
                .flatten()
            {
                File::open(created)
                    .and_then(|d| d.sync_all())
                    .map_err(io_unavailable)?;
            }
        }
        let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(key.as_bytes())?;
            f.write_all(b"\n")?;
            f.write_all(body)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            // The rename is only durable once the directory entry is.
            File::open(dir)?.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io_unavailable(e));
        }
        Ok(content_version(body))
    }

    fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        for shard in read_dir_or_empty(&self.bucket_dir(bucket)).map_err(io_unavailable)? {
            for file in read_dir_or_empty(&shard).map_err(io_unavailable)? {
                if is_temp(&file) {
                    continue;
                }
                if let Some((key, _)) = self.read(&file)? {
                    if key.starts_with(prefix) {
                        keys.push(key);
                    }
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let (path, shard) = self.object_path(bucket, key);
        let _guard = self.shards[shard].lock().expect("shard mutex poisoned");
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_unavailable(e)),
        }
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

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        let (bucket, prefix) = (bucket.to_owned(), prefix.to_owned());
        self.blocking(move |s| s.list(&bucket, &prefix)).await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        self.blocking(move |s| s.delete(&bucket, &key)).await
    }
}
