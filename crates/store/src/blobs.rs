//! The content-addressed blob folder: `blobs/<first two hex digits>/<sha256>`.
//!
//! A file is written under `blobs/tmp/` while it is hashed, fsynced, then
//! renamed into place and its folder fsynced, so a crash never leaves a
//! partial file under a digest's name. Equal content lands on one path:
//! uploading the same model twice stores it once.

use std::path::{Path, PathBuf};

use domain::Sha256;
use sha2::Digest;
use tokio::fs::{self, File};
use tokio::io::AsyncWriteExt;

/// The blob folder of one data directory.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
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
    /// by uploads that a crash interrupted.
    pub async fn open(root: impl Into<PathBuf>) -> std::io::Result<BlobStore> {
        let root = root.into();
        let temporary = root.join("tmp");
        if fs::try_exists(&temporary).await? {
            fs::remove_dir_all(&temporary).await?;
        }
        fs::create_dir_all(&temporary).await?;
        Ok(BlobStore { root })
    }

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

    pub async fn read(&self, sha256: &Sha256) -> std::io::Result<Vec<u8>> {
        fs::read(self.path(sha256)).await
    }

    /// Removes a blob's file, if it is there; its folder is fsynced so the
    /// removal is durable.
    pub async fn remove(&self, sha256: &Sha256) -> std::io::Result<()> {
        let path = self.path(sha256);
        match fs::remove_file(&path).await {
            Ok(()) => sync_folder(path.parent().expect("blob paths have a folder")).await,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(error),
        }
    }

    pub async fn open_blob(&self, sha256: &Sha256) -> std::io::Result<File> {
        File::open(self.path(sha256)).await
    }
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
        fs::read(self.temporary.0.as_ref().expect("armed until commit")).await
    }

    /// Moves the file under its digest's name. If that name exists already
    /// the content is the same, so the temporary file is simply dropped.
    pub async fn commit(mut self, store: &BlobStore) -> std::io::Result<()> {
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
}
