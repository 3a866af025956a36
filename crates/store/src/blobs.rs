//! The content-addressed blob folder: `blobs/<first two hex digits>/<sha256>`.
//!
//! A file is written under `blobs/tmp/` while it is hashed, fsynced, then
//! renamed into place and its folder fsynced, so a crash never leaves a
//! partial file under a digest's name. Equal content lands on one path:
//! uploading the same model twice stores it once.
//!
//! With an S3-compatible store (`blob_url = "s3://bucket/prefix"`), that
//! store is where every node finds every model: a blob is written there
//! (as `<prefix>/<sha256>`) before its upload is recorded, and the folder
//! is this node's cache of it, filled on first use. What comes back from
//! the store is checked against its digest before it is cached or run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use domain::Sha256;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::Digest;
use tokio::fs::{self, File};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A temporary file unwritten this long is a crashed upload's (uploads
/// stream: one in progress writes more often than this).
const TEMPORARY_IDLE_MAX: std::time::Duration = std::time::Duration::from_secs(3600);

/// Files up to this size go to the remote store in one request; larger ones
/// in parts of this size.
const REMOTE_PART_BYTES: usize = 16 << 20;

/// The blob folder of one data directory, and the remote store behind it.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    remote: Option<Remote>,
}

/// An S3-compatible store every node shares.
#[derive(Debug, Clone)]
struct Remote {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

/// Why a blob store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BlobStoreError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("blob_url must be empty (the blob folder) or s3://BUCKET[/PREFIX], not {0:?}")]
    Url(String),
    #[error("cannot reach the blob store {url}: {message}")]
    Remote { url: String, message: String },
}

/// A blob being written: bytes go to a temporary file and into the hash.
/// Dropped without [`FinishedBlob::commit`], its temporary file is removed.
#[derive(Debug)]
pub struct BlobWriter {
    file: File,
    hasher: sha2::Sha256,
    size_bytes: u64,
    temporary: TemporaryPath,
}

/// A fully written, fsynced blob that is not yet under its digest's name.
#[derive(Debug)]
pub struct FinishedBlob {
    pub sha256: Sha256,
    pub size_bytes: u64,
    temporary: TemporaryPath,
}

/// Removes its file when dropped, unless disarmed by a rename.
#[derive(Debug)]
struct TemporaryPath(Option<PathBuf>);

impl Drop for TemporaryPath {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl BlobStore {
    /// Opens (creating if needed) `root`, and removes temporary files left
    /// by uploads that a crash interrupted: those unwritten for
    /// [`TEMPORARY_IDLE_MAX`]. A younger one may be an upload another node
    /// sharing the folder is receiving now.
    pub async fn open(root: impl Into<PathBuf>) -> std::io::Result<BlobStore> {
        let root = root.into();
        let temporary = root.join("tmp");
        fs::create_dir_all(&temporary).await?;
        let mut entries = fs::read_dir(&temporary).await?;
        while let Some(entry) = entries.next_entry().await? {
            let idle = entry.metadata().await?.modified()?.elapsed().unwrap_or_default();
            if idle >= TEMPORARY_IDLE_MAX {
                let _ = fs::remove_file(entry.path()).await;
            }
        }
        Ok(BlobStore { root, remote: None })
    }

    /// Opens the folder `root` as the cache of the S3-compatible store at
    /// `url` (`s3://BUCKET[/PREFIX]`; an empty `url`: the folder alone).
    /// The store's endpoint, region and credentials come from the standard
    /// `AWS_*` variables (`AWS_ENDPOINT_URL`, `AWS_REGION`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`…), as
    /// for any S3 client, then from `options` (the same names in lower case,
    /// as `aws_endpoint_url`); it is reached once here, so that a wrong
    /// setting stops the start rather than the first upload.
    pub async fn open_with(
        root: impl Into<PathBuf>,
        url: &str,
        options: &[(&str, &str)],
    ) -> Result<BlobStore, BlobStoreError> {
        let mut store = BlobStore::open(root).await?;
        if url.is_empty() {
            return Ok(store);
        }
        let rest = url.strip_prefix("s3://").ok_or_else(|| BlobStoreError::Url(url.to_owned()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(BlobStoreError::Url(url.to_owned()));
        }
        let failed = |message: String| BlobStoreError::Remote { url: url.to_owned(), message };
        // A store that does not answer fails a request within seconds, not
        // the three minutes of retries the client would allow.
        let retry = object_store::RetryConfig {
            max_retries: 3,
            retry_timeout: std::time::Duration::from_secs(15),
            ..object_store::RetryConfig::default()
        };
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(retry);
        for (name, value) in options {
            let key = name.parse::<object_store::aws::AmazonS3ConfigKey>().map_err(|e| failed(e.to_string()))?;
            builder = builder.with_config(key, *value);
        }
        let remote = builder.build().map_err(|e| failed(e.to_string()))?;
        let remote = Remote { store: Arc::new(remote), prefix: prefix.trim_matches('/').to_owned() };
        // A digest nobody has: found nowhere, answered by a reachable store.
        match remote.store.head(&remote.key(&Sha256::digest(b"vitrine: is the blob store there?"))).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => return Err(failed(error.to_string())),
        }
        store.remote = Some(remote);
        Ok(store)
    }

    /// Where the blob is (or would be) in this node's folder.
    pub fn path(&self, sha256: &Sha256) -> PathBuf {
        let hex = sha256.to_hex();
        self.root.join(&hex[..2]).join(hex)
    }

    pub async fn writer(&self) -> std::io::Result<BlobWriter> {
        let name = format!("upload-{}", Sha256::digest(&now_nanos().to_le_bytes()).to_hex());
        let path = self.root.join("tmp").join(&name[..32]);
        let file = File::create_new(&path).await?;
        Ok(BlobWriter { file, hasher: sha2::Sha256::new(), size_bytes: 0, temporary: TemporaryPath(Some(path)) })
    }

    /// A complete file of this folder's file system (a resumable upload's
    /// part file), hashing to `sha256`: moved among the temporary files and
    /// taken as a finished blob, committed as any other (or removed when
    /// dropped).
    pub async fn adopt(&self, path: &Path, sha256: Sha256, size_bytes: u64) -> std::io::Result<FinishedBlob> {
        let name = format!("upload-{}", Sha256::digest(&now_nanos().to_le_bytes()).to_hex());
        let temporary = self.root.join("tmp").join(&name[..32]);
        fs::rename(path, &temporary).await?;
        Ok(FinishedBlob { sha256, size_bytes, temporary: TemporaryPath(Some(temporary)) })
    }

    /// The blob's bytes: from the folder, or (first fetched into it) from
    /// the remote store.
    pub async fn read(&self, sha256: &Sha256) -> std::io::Result<Vec<u8>> {
        match fs::read(self.path(sha256)).await {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && self.remote.is_some() => {
                self.fetch(sha256).await?;
                fs::read(self.path(sha256)).await
            }
            read => read,
        }
    }

    /// Removes a blob's file, if it is there (and its copy in the remote
    /// store); its folder is fsynced so the removal is durable.
    pub async fn remove(&self, sha256: &Sha256) -> std::io::Result<()> {
        if let Some(remote) = &self.remote {
            match remote.store.delete(&remote.key(sha256)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(remote_error(error)),
            }
        }
        let path = self.path(sha256);
        match fs::remove_file(&path).await {
            Ok(()) => sync_folder(path.parent().expect("blob paths have a folder")).await,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// The blob's file in the folder, fetched there first if need be.
    pub async fn open_blob(&self, sha256: &Sha256) -> std::io::Result<File> {
        match File::open(self.path(sha256)).await {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && self.remote.is_some() => {
                self.fetch(sha256).await?;
                File::open(self.path(sha256)).await
            }
            open => open,
        }
    }

    /// Fetches a blob from the remote store into the folder, checked
    /// against its digest (a store that answers other bytes is refused),
    /// in pieces as they arrive: never the whole file in memory.
    async fn fetch(&self, sha256: &Sha256) -> std::io::Result<()> {
        use futures_util::StreamExt;
        let remote = self.remote.as_ref().expect("fetched only with a remote store");
        let mut pieces = match remote.store.get(&remote.key(sha256)).await {
            Ok(found) => found.into_stream(),
            Err(object_store::Error::NotFound { .. }) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("blob {} is in neither the folder nor the remote store", sha256.to_hex()),
                ));
            }
            Err(error) => return Err(remote_error(error)),
        };
        let mut writer = self.writer().await?;
        while let Some(piece) = pieces.next().await {
            writer.write(&piece.map_err(remote_error)?).await?;
        }
        let finished = writer.finish().await?;
        if finished.sha256 != *sha256 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the remote store's copy of blob {} does not match its digest", sha256.to_hex()),
            ));
        }
        finished.commit_here(self).await
    }
}

impl Remote {
    fn key(&self, sha256: &Sha256) -> object_store::path::Path {
        let name = sha256.to_hex();
        if self.prefix.is_empty() {
            object_store::path::Path::from(name)
        } else {
            object_store::path::Path::from(format!("{}/{name}", self.prefix))
        }
    }

    /// Writes the file at `path` as the blob `sha256`, unless it is there.
    async fn upload(&self, sha256: &Sha256, path: &Path, size_bytes: u64) -> std::io::Result<()> {
        let key = self.key(sha256);
        match self.store.head(&key).await {
            Ok(_) => return Ok(()),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => return Err(remote_error(error)),
        }
        if size_bytes <= REMOTE_PART_BYTES as u64 {
            let bytes = fs::read(path).await?;
            self.store.put(&key, PutPayload::from(bytes)).await.map_err(remote_error)?;
            return Ok(());
        }
        let upload = self.store.put_multipart(&key).await.map_err(remote_error)?;
        let mut parts = WriteMultipart::new_with_chunk_size(upload, REMOTE_PART_BYTES);
        let mut file = File::open(path).await?;
        let mut chunk = vec![0; 1 << 20];
        loop {
            let read = file.read(&mut chunk).await?;
            if read == 0 {
                break;
            }
            parts.wait_for_capacity(4).await.map_err(remote_error)?;
            parts.write(&chunk[..read]);
        }
        parts.finish().await.map_err(remote_error)?;
        Ok(())
    }
}

/// A fault of the remote blob store, not of the blob (the server answers
/// 503 for it): carried inside the `std::io::Error`s of the blob store's
/// methods, and found there by [`RemoteStoreFailed::caused`].
#[derive(Debug, thiserror::Error)]
#[error("the remote blob store failed: {0}")]
pub struct RemoteStoreFailed(object_store::Error);

impl RemoteStoreFailed {
    /// Whether the remote store's failure caused `error`.
    pub fn caused(error: &std::io::Error) -> bool {
        error.get_ref().is_some_and(|inner| inner.is::<RemoteStoreFailed>())
    }
}

fn remote_error(error: object_store::Error) -> std::io::Error {
    std::io::Error::other(RemoteStoreFailed(error))
}

impl BlobWriter {
    pub async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.hasher.update(chunk);
        self.size_bytes += chunk.len() as u64;
        self.file.write_all(chunk).await
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Flushes and fsyncs the temporary file and returns its digest.
    pub async fn finish(mut self) -> std::io::Result<FinishedBlob> {
        self.file.flush().await?;
        self.file.sync_all().await?;
        let sha256 = Sha256::from_bytes(self.hasher.finalize().into());
        Ok(FinishedBlob { sha256, size_bytes: self.size_bytes, temporary: self.temporary })
    }
}

impl FinishedBlob {
    /// The bytes written, read back (from the page cache, usually).
    pub async fn read(&self) -> std::io::Result<Vec<u8>> {
        fs::read(self.path()).await
    }

    /// Where it is until it is committed.
    pub fn path(&self) -> &std::path::Path {
        self.temporary.0.as_ref().expect("armed until commit")
    }

    /// Puts the blob in the remote store, if there is one, then moves the
    /// file under its digest's name. If that name exists already the
    /// content is the same, so the temporary file is simply dropped.
    pub async fn commit(self, store: &BlobStore) -> std::io::Result<()> {
        if let Some(remote) = &store.remote {
            let path = self.temporary.0.as_ref().expect("armed until commit");
            remote.upload(&self.sha256, path, self.size_bytes).await?;
        }
        self.commit_here(store).await
    }

    /// Moves the file under its digest's name in the folder only.
    async fn commit_here(mut self, store: &BlobStore) -> std::io::Result<()> {
        let target = store.path(&self.sha256);
        if fs::try_exists(&target).await? {
            return Ok(());
        }
        let folder = target.parent().expect("blob paths have a folder").to_path_buf();
        fs::create_dir_all(&folder).await?;
        let temporary = self.temporary.0.take().expect("armed until commit");
        fs::rename(&temporary, &target).await?;
        sync_folder(&folder).await
    }
}

/// Makes a rename in `folder` durable.
async fn sync_folder(folder: &Path) -> std::io::Result<()> {
    File::open(folder).await?.sync_all().await
}

fn now_nanos() -> u128 {
    // Uniqueness, not secrecy: a nanosecond clock plus a counter.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as u128;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    nanos ^ (count << 100)
}

/// A bucket of its own on the tests' S3-compatible server
/// (`VITRINE_TEST_S3`, an endpoint such as `http://127.0.0.1:55999`, that
/// `scripts/s3` starts): `None` where none is set, except under `CI`, where
/// its absence fails the test.
#[derive(Debug, Clone)]
pub struct TestBucket {
    pub endpoint: String,
    /// `s3://BUCKET/models`.
    pub url: String,
}

impl TestBucket {
    pub async fn create(label: &str) -> Option<TestBucket> {
        let Ok(endpoint) = std::env::var("VITRINE_TEST_S3") else {
            assert!(std::env::var_os("CI").is_none(), "VITRINE_TEST_S3 must name an S3 server under CI (scripts/s3)");
            return None;
        };
        let bucket = format!("vitrine-{label}-{}", &Sha256::digest(&now_nanos().to_le_bytes()).to_hex()[..12]);
        let created = reqwest::Client::new().put(format!("{endpoint}/{bucket}")).send().await;
        let status = created.map(|answer| answer.status()).unwrap_or_else(|e| panic!("{endpoint}: {e}"));
        assert!(status.is_success(), "creating bucket {bucket} at {endpoint}: {status}");
        Some(TestBucket { endpoint, url: format!("s3://{bucket}/models") })
    }

    /// The store's settings, as `AWS_*` variables for a server process.
    pub fn env(&self) -> Vec<(String, String)> {
        self.options().into_iter().map(|(name, value)| (name.to_uppercase(), value.to_owned())).collect()
    }

    /// The same, as [`BlobStore::open_with`]'s options.
    pub fn options(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("aws_endpoint_url", self.endpoint.as_str()),
            ("aws_allow_http", "true"),
            ("aws_region", "us-east-1"),
            ("aws_access_key_id", "vitrine-test"),
            ("aws_secret_access_key", "vitrine-test"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_content_is_stored_once_and_dropped_writers_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("blobs")).await.unwrap();
        for _ in 0..2 {
            let mut writer = store.writer().await.unwrap();
            writer.write(b"hello ").await.unwrap();
            writer.write(b"world").await.unwrap();
            let finished = writer.finish().await.unwrap();
            assert_eq!(finished.sha256, Sha256::digest(b"hello world"));
            assert_eq!(finished.read().await.unwrap(), b"hello world");
            finished.commit(&store).await.unwrap();
        }
        let mut abandoned = store.writer().await.unwrap();
        abandoned.write(b"partial").await.unwrap();
        drop(abandoned);
        assert_eq!(std::fs::read_dir(dir.path().join("blobs/tmp")).unwrap().count(), 0);
        assert_eq!(store.read(&Sha256::digest(b"hello world")).await.unwrap(), b"hello world");
    }

    #[tokio::test]
    async fn opening_removes_what_crashed_uploads_left_not_what_another_node_writes_now() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("blobs");
        let store = BlobStore::open(&root).await.unwrap();
        let mut receiving = store.writer().await.unwrap();
        receiving.write(b"an upload in progress on another node").await.unwrap();
        let crashed = root.join("tmp/upload-crashed");
        std::fs::write(&crashed, b"left by a crash").unwrap();
        let long_ago = std::time::SystemTime::now() - TEMPORARY_IDLE_MAX - std::time::Duration::from_secs(1);
        std::fs::File::options().write(true).open(&crashed).unwrap().set_modified(long_ago).unwrap();
        // Another node starts on the same folder.
        BlobStore::open(&root).await.unwrap();
        assert!(!crashed.exists(), "a crashed upload's file is left");
        receiving.write(b", still going").await.unwrap();
        let finished = receiving.finish().await.unwrap();
        finished.commit(&store).await.unwrap();
        assert_eq!(
            store.read(&Sha256::digest(b"an upload in progress on another node, still going")).await.unwrap().len(),
            50
        );
    }
}
