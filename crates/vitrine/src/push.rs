//! `vitrine model push`: a model to the server, with a progress bar on a
//! terminal. A file under [`PIECES_FROM`] goes in one request. A larger one
//! (or any, with `--piece-bytes`) goes in pieces through a resumable
//! upload: a piece that fails is sent again from the offset the server
//! has, a few times; and if the upload still breaks off, running the same
//! command again resumes it (the upload's id is kept in `uploads.json`
//! beside the client configuration, by model and the file's
//! SHA-256), so a creator with gigabytes on a poor link never starts over.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use domain::ModelRef;
use server::wire::{UploadView, VersionView};

use crate::client::{Client, Refused};

/// Files from this size go in pieces.
pub const PIECES_FROM: u64 = 64 << 20;

/// The size of a piece, unless `--piece-bytes` says.
pub const PIECE_BYTES: u64 = 16 << 20;

/// Tries of a piece that fails, and the pause before the first retry
/// (doubled at each).
const PIECE_TRIES: u32 = 4;
const FIRST_PAUSE: Duration = Duration::from_millis(250);

/// How a file is pushed.
#[derive(Debug)]
pub struct PushOptions {
    /// Pieces of this size (0: one request), else by the file's size.
    pub piece_bytes: Option<u64>,
    /// Where resumable uploads are remembered.
    pub state_file: PathBuf,
}

/// Pushes `file` (an `.onnx` file, a folder, or a `.tar`) as `model`'s next
/// version; the server's version.
pub async fn push(
    client: &Client,
    model: &ModelRef,
    file: &Path,
    options: &PushOptions,
) -> anyhow::Result<VersionView> {
    let packed;
    let (file, content_type) = if file.is_dir() {
        packed = pack_folder(file)?;
        (packed.path().to_path_buf(), "application/x-tar")
    } else if file.extension().is_some_and(|e| e == "tar") {
        (file.to_path_buf(), "application/x-tar")
    } else {
        (file.to_path_buf(), "application/octet-stream")
    };
    let size = std::fs::metadata(&file).with_context(|| format!("cannot open {}", file.display()))?.len();
    let piece_bytes = options.piece_bytes.unwrap_or(if size >= PIECES_FROM { PIECE_BYTES } else { 0 });
    if piece_bytes == 0 {
        return in_one_request(client, model, &file, size, content_type).await;
    }
    in_pieces(client, model, &file, size, piece_bytes, &options.state_file).await
}

fn progress_bar(size: u64) -> indicatif::ProgressBar {
    let progress = indicatif::ProgressBar::with_draw_target(Some(size), indicatif::ProgressDrawTarget::stderr());
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    progress
}

async fn in_one_request(
    client: &Client,
    model: &ModelRef,
    file: &Path,
    size: u64,
    content_type: &str,
) -> anyhow::Result<VersionView> {
    let handle = tokio::fs::File::open(file).await.with_context(|| format!("cannot open {}", file.display()))?;
    let progress = progress_bar(size);
    let counter = progress.clone();
    let stream = tokio_util::io::ReaderStream::new(handle).inspect(move |chunk| {
        if let Ok(bytes) = chunk {
            counter.inc(bytes.len() as u64);
        }
    });
    let path = format!("/v1/models/{}/{}/versions", model.owner, model.name);
    let request = client
        .request(Method::POST, &path)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .header(reqwest::header::CONTENT_LENGTH, size)
        .body(reqwest::Body::wrap_stream(stream));
    let result = client.send_as(request).await;
    progress.finish_and_clear();
    result
}

/// The folder's files (symbolic links refused) as a tar archive in a
/// temporary file, paths relative to the folder.
fn pack_folder(folder: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    let archive = tempfile::NamedTempFile::new().context("cannot create a temporary file to pack the folder")?;
    let mut builder = tar::Builder::new(archive.as_file());
    builder.follow_symlinks(false);
    builder
        .append_dir_all(".", folder)
        .with_context(|| format!("cannot pack the folder {} into an archive", folder.display()))?;
    builder.into_inner().context("cannot finish the archive")?;
    Ok(archive)
}

/// The file's SHA-256, lowercase hex.
fn sha256_of(file: &Path) -> anyhow::Result<String> {
    use sha2::Digest;
    let mut reader = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut piece = vec![0u8; 1 << 20];
    loop {
        let read = reader.read(&mut piece)?;
        if read == 0 {
            break;
        }
        hasher.update(&piece[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Resumable uploads begun and not finished, by "owner/name sha256".
fn load_state(path: &Path) -> BTreeMap<String, String> {
    std::fs::read(path).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default()
}

fn save_state(path: &Path, state: &BTreeMap<String, String>) -> anyhow::Result<()> {
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder).with_context(|| format!("cannot create {}", folder.display()))?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(state)?).with_context(|| format!("cannot write {}", path.display()))
}

async fn in_pieces(
    client: &Client,
    model: &ModelRef,
    file: &Path,
    size: u64,
    piece_bytes: u64,
    state_file: &Path,
) -> anyhow::Result<VersionView> {
    let sha256 = sha256_of(file)?;
    let uploads = format!("/v1/models/{}/{}/uploads", model.owner, model.name);
    // By model and content, not by address: the same server may be reached
    // by another one (a proxy, a node of the same market) the next time.
    let key = format!("{model} {sha256}");
    let mut state = load_state(state_file);
    // An upload of this file begun before, if the server still has it.
    let mut session = None;
    if let Some(id) = state.get(&key) {
        let found = client.send_as::<UploadView>(client.request(Method::GET, &format!("{uploads}/{id}"))).await;
        if let Ok(found) = found
            && found.size_bytes == size
        {
            session = Some((id.clone(), found.offset));
        }
    }
    let (id, mut offset) = match session {
        Some((id, offset)) => {
            eprintln!("resuming the upload at byte {offset} of {size}");
            (id, offset)
        }
        None => {
            let started: UploadView =
                client.send_as(client.request(Method::POST, &uploads).json(&json!({"size_bytes": size}))).await?;
            let id = started.id;
            state.insert(key.clone(), id.clone());
            save_state(state_file, &state)?;
            (id, 0)
        }
    };
    let session = format!("{uploads}/{id}");
    let progress = progress_bar(size);
    progress.set_position(offset);
    let mut reader = tokio::fs::File::open(file).await.with_context(|| format!("cannot open {}", file.display()))?;
    while offset < size {
        let length = piece_bytes.min(size - offset);
        let mut piece = vec![0u8; usize::try_from(length)?];
        reader.seek(std::io::SeekFrom::Start(offset)).await?;
        reader.read_exact(&mut piece).await?;
        offset = send_piece(client, &session, offset, piece, size).await?;
        progress.set_position(offset);
    }
    progress.finish_and_clear();
    let committed =
        client.send_as(client.request(Method::POST, &format!("{session}/commit")).json(&json!({"sha256": sha256})));
    let version = committed.await;
    // Committed, or refused for good (the session is gone either way).
    state.remove(&key);
    save_state(state_file, &state)?;
    version
}

/// Sends one piece from `offset`; the session's new offset. A piece that
/// fails is tried again from the offset the server has, after a pause.
async fn send_piece(client: &Client, session: &str, offset: u64, piece: Vec<u8>, size: u64) -> anyhow::Result<u64> {
    let mut pause = FIRST_PAUSE;
    let mut last_error = None;
    for _ in 0..PIECE_TRIES {
        // Where the server stands: the piece may have arrived in part.
        let stands = if last_error.is_some() {
            match client.send_as::<UploadView>(client.request(Method::GET, session)).await {
                Ok(found) => found.offset,
                Err(error) => {
                    last_error = Some(error);
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    continue;
                }
            }
        } else {
            offset
        };
        let end = offset + piece.len() as u64;
        if stands >= end {
            return Ok(stands);
        }
        let Some(rest) = stands.checked_sub(offset).and_then(|skip| piece.get(usize::try_from(skip).ok()?..)) else {
            bail!("the server's upload stands at byte {stands}, before this piece at {offset}");
        };
        let request = client
            .request(Method::PATCH, session)
            .header("upload-offset", stands)
            .header(reqwest::header::CONTENT_TYPE, "application/offset+octet-stream")
            .body(rest.to_vec());
        match client.send(request).await {
            Ok(answer) => {
                let answer: UploadView = answer.json().await.context("the server's answer is not an upload session")?;
                return Ok(answer.offset);
            }
            Err(error) if error.downcast_ref::<Refused>().is_some_and(Refused::is_for_good) => return Err(error),
            Err(error) => last_error = Some(error),
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
    let error = last_error.map(|e| format!("{e:#}")).unwrap_or_default();
    bail!("the upload broke off at byte {offset} of {size} ({error}); run the same command again to resume it")
}
