//! Model files coming in: a version uploaded in one request, or in pieces
//! through an upload session that outlives a broken connection (a
//! resumable upload: start it, send pieces at their offsets, resume from
//! the offset the server has after a cut, commit with the file's SHA-256).
//!
//! Either way the bytes stream to a file as they arrive and never gather
//! in the server's memory; their first bytes are judged at once
//! (`runtime::sniff`: garbage is refused before the rest is read); every
//! request is counted against the limits on uploads (per account, per
//! address, on the node, and the bytes in flight); and the file, once
//! whole, is validated by a fresh upload worker that reads it from the
//! file, in pieces, before it becomes a version.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path as FilePath, PathBuf};
use std::time::Duration;

use axum::Json;
use axum::body::{Body, BodyDataStream};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use domain::Sha256;
use futures_util::StreamExt;
use runtime::sniff::{SNIFF_BYTES_MAX, Sniff, sniff};
use sandbox::LoadFailure;
use serde::{Deserialize, Serialize};
use store::{Account, FinishedBlob, ModelRecord};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, Caller};
use crate::limits::Taken;
use crate::routes::models::{check_taken_down, owned_model, remove_unused_blobs};
use crate::wire::{UploadView, VersionView};

/// A refused upload's body is read and dropped for this long, up to this
/// many bytes, while its answer goes out: a client still sending then
/// reads the answer instead of a reset connection.
const DRAIN_TIME: Duration = Duration::from_secs(2);
const DRAIN_BYTES_MAX: u64 = 8 << 20;

/// Uploads an ONNX file as the model's next version. The body streams to
/// disk while it is hashed, then a fresh upload worker loads it under the
/// model limits; only a model that loads becomes a version.
#[utoipa::path(post, path = "/v1/models/{owner}/{name}/versions", tag = "models",
    security(("api_key" = [])),
    params(("owner" = String, Path), ("name" = String, Path)),
    request_body(content(
        (Vec<u8> = "application/octet-stream"),
        (Vec<u8> = "application/x-tar"),
    ), description = "the .onnx file; or a tar archive of one .onnx file and the files its tensors keep their data in (ONNX external data), locations relative to the .onnx file"),
    responses(
        (status = 201, body = VersionView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 410, description = "the model was deleted or taken down", body = ErrorBody),
        (status = 413, description = "larger than upload_bytes_max (payload_too_large), or more than the owner's models may store, account_storage_bytes_max (storage_quota_exceeded)", body = ErrorBody),
        (status = 422, description = "not a model the runtime can serve (invalid_model): its first bytes begin no ONNX model nor tar archive of one, or the runtime refused it, or loading it needs more memory or time than a worker may have", body = ErrorBody),
        (status = 429, description = "too many uploads from this key or address at once, or its hourly time of upload workers used (rate_limited, with Retry-After)", body = ErrorBody),
        (status = 503, description = "the node receives as many uploads or bytes as it may, no upload worker is available, or the remote store of model files (blob_url) does not answer (unavailable, with Retry-After)", body = ErrorBody),
    ))]
pub async fn upload_version(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    Path((owner, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<VersionView>)> {
    let mut body = Some(body.into_data_stream());
    let answer = receive_version(&state, &caller, address.ip(), &owner, &name, &headers, &mut body).await;
    if answer.is_err() {
        drain(body.take());
    }
    answer
}

async fn receive_version(
    state: &AppState,
    caller: &Account,
    address: IpAddr,
    owner: &str,
    name: &str,
    headers: &HeaderMap,
    body: &mut Option<BodyDataStream>,
) -> ApiResult<(StatusCode, Json<VersionView>)> {
    let model = owned_model(state, owner, name, caller).await?;
    check_taken_down(&model)?;
    let _turn = start_upload(state, caller.id, address)?;
    let content_type = headers.get(header::CONTENT_TYPE);
    let accepted = |value: &HeaderValue| matches!(value.as_bytes(), b"application/octet-stream" | b"application/x-tar");
    if content_type.is_some_and(|value| !accepted(value)) {
        return Err(ApiError::bad_request(
            "send the .onnx file as the body with Content-Type: application/octet-stream, or a tar archive of \
             it and its external data files with Content-Type: application/x-tar",
        ));
    }
    let limit = state.config.upload_bytes_max;
    let declared = content_length(headers);
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large(limit));
    }
    // Checked before and while the file streams in, so an upload past the
    // quota stops early; decided in the transaction that records it.
    let quota = Quota::of(state, caller.id).await?;
    if let Some(error) = declared.and_then(|declared| quota.refuses(declared)) {
        return Err(error);
    }
    let mut writer = state.blobs.writer().await?;
    let mut incoming = Incoming::new(state, declared, Some(Vec::new()))?;
    while let Some(piece) = next_piece(body).await? {
        let size = writer.size_bytes() + piece.len() as u64;
        if size > limit {
            return Err(too_large(limit));
        }
        if let Some(error) = quota.refuses(size) {
            return Err(error);
        }
        incoming.take(&piece, size)?;
        writer.write(&piece).await?;
    }
    if writer.size_bytes() == 0 {
        return Err(ApiError::invalid_model("the file is empty"));
    }
    incoming.judge_whole(writer.size_bytes())?;
    let finished = writer.finish().await?;
    accept_version(state, caller, &model, finished, quota.max).await
}

/// The next piece of a body; a body that broke off is 400.
async fn next_piece(body: &mut Option<BodyDataStream>) -> ApiResult<Option<axum::body::Bytes>> {
    let Some(stream) = body.as_mut() else { return Ok(None) };
    match stream.next().await {
        Some(Ok(piece)) => Ok(Some(piece)),
        Some(Err(error)) => Err(ApiError::upload_interrupted(format!("the upload broke off: {error}"))),
        None => Ok(None),
    }
}

/// Reads and drops what is left of a refused upload's body, briefly, in
/// the background (see [`DRAIN_TIME`]).
fn drain(body: Option<BodyDataStream>) {
    let Some(mut body) = body else { return };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    runtime.spawn(async move {
        let mut read = 0u64;
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            while let Some(Ok(piece)) = body.next().await {
                read += piece.len() as u64;
                if read > DRAIN_BYTES_MAX {
                    break;
                }
            }
        })
        .await;
    });
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
}

fn too_large(limit: u64) -> ApiError {
    ApiError::payload_too_large(format!("the file is larger than the limit upload_bytes_max = {limit} bytes"))
}

/// What an account's models store, against `account_storage_bytes_max`.
struct Quota {
    used: u64,
    max: Option<u64>,
}

impl Quota {
    async fn of(state: &AppState, account: i64) -> ApiResult<Quota> {
        let max = state.storage_quota();
        let used = match max {
            Some(_) => state.store.storage_used(account).await?,
            None => 0,
        };
        Ok(Quota { used, max })
    }

    /// 413 `storage_quota_exceeded` if `adding` more would pass it.
    fn refuses(&self, adding: u64) -> Option<ApiError> {
        let max_bytes = self.max?;
        (self.used.saturating_add(adding) > max_bytes)
            .then(|| quota_error(store::QuotaExceeded { used_bytes: self.used, adding_bytes: adding, max_bytes }))
    }
}

pub(crate) fn quota_error(refused: store::QuotaExceeded) -> ApiError {
    ApiError::storage_quota_exceeded(format!(
        "your models store {} bytes; this upload would add {} and pass the limit account_storage_bytes_max = {} \
         (delete models you no longer need, or ask the operator)",
        refused.used_bytes, refused.adding_bytes, refused.max_bytes
    ))
}

/// Bytes of one request on their way in: counted against
/// `upload_bytes_in_flight_max` (a declared length from the start), and
/// the file's first bytes judged as they come.
struct Incoming {
    in_flight: Taken<()>,
    in_flight_max: u64,
    /// The file's first bytes while they do not yet tell; `None` once they did.
    first_bytes: Option<Vec<u8>>,
    /// The whole file's size, when known.
    total: Option<u64>,
}

impl Incoming {
    fn new(state: &AppState, declared: Option<u64>, first_bytes: Option<Vec<u8>>) -> ApiResult<Incoming> {
        let in_flight_max = state.config.upload_bytes_in_flight_max;
        let in_flight = state
            .uploads
            .bytes
            .take_within((), declared.unwrap_or(0), in_flight_max)
            .ok_or_else(|| too_many_bytes(in_flight_max))?;
        Ok(Incoming { in_flight, in_flight_max, first_bytes, total: declared })
    }

    /// Counts `piece`, which brings this request to `received` bytes, and
    /// judges the file's first bytes with it.
    fn take(&mut self, piece: &[u8], received: u64) -> ApiResult<()> {
        let held = self.in_flight.amount();
        if received > held && !self.in_flight.grow(received - held, self.in_flight_max) {
            return Err(too_many_bytes(self.in_flight_max));
        }
        if let Some(prefix) = self.first_bytes.as_mut() {
            let room = SNIFF_BYTES_MAX - prefix.len();
            prefix.extend_from_slice(&piece[..piece.len().min(room)]);
            match sniff(prefix, self.total) {
                Ok(Sniff::Undecided) if prefix.len() < SNIFF_BYTES_MAX => {}
                Ok(_) => self.first_bytes = None,
                Err(reason) => return Err(ApiError::invalid_model(reason.to_string())),
            }
        }
        Ok(())
    }

    /// Judges first bytes that did not tell, now that the file of `size`
    /// bytes is whole.
    fn judge_whole(&self, size: u64) -> ApiResult<()> {
        match &self.first_bytes {
            Some(prefix) => sniff(prefix, Some(size)).map(|_| ()).map_err(|e| ApiError::invalid_model(e.to_string())),
            None => Ok(()),
        }
    }
}

fn too_many_bytes(max: u64) -> ApiError {
    uploads_busy(format!(
        "this node is receiving as many bytes of uploads as it may, upload_bytes_in_flight_max = {max}"
    ))
}

/// A whole file becomes the model's next version: loaded in a fresh upload
/// worker (the time it took spent from the uploader's hourly budget), put
/// in the blob store, and recorded.
async fn accept_version(
    state: &AppState,
    caller: &Account,
    model: &ModelRecord,
    finished: FinishedBlob,
    quota: Option<u64>,
) -> ApiResult<(StatusCode, Json<VersionView>)> {
    let model_file = sandbox::ModelFile::open(finished.path()).await?;
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_millis(state.config.model_load_timeout_ms);
    let loaded = state.market.executor.load(caller.id as u64, finished.sha256, model_file, deadline).await;
    let spent_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
    state.load_time.spend(caller.id, spent_ms, std::time::Instant::now());
    let signature = loaded.map_err(|failure| load_error(state, failure))?;

    let (sha256, size_bytes) = (finished.sha256, finished.size_bytes);
    let new = store::NewVersion {
        blob_sha256: &sha256,
        size_bytes,
        inputs: &signature.inputs,
        outputs: &signature.outputs,
        engine: state.market.executor.engine().as_str(),
    };
    let no_removal = state.blob_removal.read().await;
    finished.commit(&state.blobs).await?;
    let added = state.store.add_version(model.id, &new, quota).await?;
    drop(no_removal);
    let version = match added {
        Ok(version) => version,
        Err(refused) => {
            remove_unused_blobs(state, &[sha256]).await;
            return Err(quota_error(refused));
        }
    };
    state.market.known_models.forget_model(&model.owner, &model.name);
    tracing::info!(model = %format!("{}/{}", model.owner, model.name), version = version.version, %sha256, size_bytes, "version uploaded");
    Ok((StatusCode::CREATED, Json(VersionView::from(&version))))
}

/// An upload's turn, its three counts held until it ends: refused (429)
/// while the account has `uploads_per_account_concurrent_max` uploads in
/// flight or has used its `model_load_ms_per_account_per_hour`, or the
/// address `uploads_per_address_concurrent_max`; 503 while the node
/// receives `uploads_concurrent_max`.
fn start_upload(state: &AppState, account: i64, address: IpAddr) -> ApiResult<UploadTurn> {
    let config = &state.config;
    if let Err(retry_after_s) = state.load_time.check(account, std::time::Instant::now()) {
        return Err(ApiError::rate_limited(
            format!(
                "this account's uploads used the workers for model_load_ms_per_account_per_hour = {} ms in the \
                 last hour",
                config.model_load_ms_per_account_per_hour
            ),
            retry_after_s,
        ));
    }
    let uploads = &state.uploads;
    let max = config.uploads_per_account_concurrent_max;
    let account = uploads.per_account.take_below(account, 1, u64::from(max)).ok_or_else(|| {
        ApiError::rate_limited(
            format!("this account already has {max} uploads in flight, the limit uploads_per_account_concurrent_max"),
            1,
        )
    })?;
    let max = config.uploads_per_address_concurrent_max;
    let address = uploads.per_address.take_below(address, 1, u64::from(max)).ok_or_else(|| {
        ApiError::rate_limited(
            format!("this address already has {max} uploads in flight, the limit uploads_per_address_concurrent_max"),
            1,
        )
    })?;
    let max = config.uploads_concurrent_max;
    let in_all = uploads.in_all.take_below((), 1, u64::from(max)).ok_or_else(|| {
        uploads_busy(format!("this node is receiving {max} uploads already, the limit uploads_concurrent_max"))
    })?;
    Ok(UploadTurn { _account: account, _address: address, _in_all: in_all })
}

/// An upload's place in the counts of [`start_upload`], given back when dropped.
struct UploadTurn {
    _account: Taken<i64>,
    _address: Taken<IpAddr>,
    _in_all: Taken<()>,
}

/// The node receives as much as it may: 503 with a `Retry-After`.
fn uploads_busy(message: String) -> ApiError {
    ApiError::unavailable(format!("{message}; retry shortly"), 5)
}

/// A refused upload: the model's fault is 422 `invalid_model` with the
/// reason; no worker to validate it is the server's (503).
fn load_error(state: &AppState, failure: LoadFailure) -> ApiError {
    match failure {
        LoadFailure::Refused(message) => ApiError::invalid_model(message),
        LoadFailure::OutOfMemory => ApiError::invalid_model(format!(
            "loading the model needs more memory than a worker may use (worker_memory_bytes_max = {} bytes)",
            state.config.worker_memory_bytes_max
        )),
        LoadFailure::TimedOut => ApiError::invalid_model(format!(
            "loading the model took longer than the limit model_load_timeout_ms = {}",
            state.config.model_load_timeout_ms
        )),
        LoadFailure::Crashed(cause) => {
            ApiError::invalid_model(format!("the runtime crashed loading the model ({cause})"))
        }
        LoadFailure::Unavailable(message) => {
            tracing::error!(%message, "no worker to validate an upload");
            ApiError::unavailable("no model worker is available to validate the upload; try again shortly", 5)
        }
    }
}

// --- resumable uploads ---

/// Upload sessions: files that arrive in pieces, in the blob folder's
/// `uploads/` (shared by nodes that share the folder), each a `<id>.part`
/// file (its length is the session's offset) and a `<id>.json` record.
#[derive(Debug)]
pub struct Sessions {
    folder: PathBuf,
    /// `upload_session_idle_ms`: a session with no piece this long goes.
    idle: Duration,
}

/// A session's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionRecord {
    account_id: i64,
    model_id: i64,
    size_bytes: u64,
    /// Whether the file's first bytes were judged a model's already.
    judged: bool,
}

/// `POST /v1/models/{owner}/{name}/uploads`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartUploadRequest {
    /// The whole file's size, in bytes.
    pub size_bytes: u64,
}

/// `POST …/uploads/{id}/commit`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitUploadRequest {
    /// The whole file's SHA-256, lowercase hex: what the server received is
    /// checked against it.
    pub sha256: String,
}

impl Sessions {
    pub fn new(blob_dir: &FilePath, idle_ms: u64) -> Sessions {
        Sessions { folder: blob_dir.join("uploads"), idle: Duration::from_millis(idle_ms) }
    }

    fn part(&self, id: &str) -> PathBuf {
        self.folder.join(format!("{id}.part"))
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.folder.join(format!("{id}.json"))
    }

    async fn create(&self, record: &SessionRecord) -> std::io::Result<String> {
        tokio::fs::create_dir_all(&self.folder).await?;
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
        let id = hex::encode(bytes);
        tokio::fs::File::create_new(self.part(&id)).await?;
        let json = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        tokio::fs::write(self.record_path(&id), json).await?;
        Ok(id)
    }

    /// The session's record, if it exists and has not gone idle too long
    /// (then it is removed).
    async fn record(&self, id: &str) -> std::io::Result<Option<SessionRecord>> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return Ok(None);
        }
        let Some(idle_since) = self.last_piece(id).await? else { return Ok(None) };
        if idle_since.elapsed().unwrap_or_default() > self.idle {
            self.remove(id).await;
            return Ok(None);
        }
        match tokio::fs::read(self.record_path(id)).await {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// When the session's last piece arrived (its part file's change).
    async fn last_piece(&self, id: &str) -> std::io::Result<Option<std::time::SystemTime>> {
        match tokio::fs::metadata(self.part(id)).await {
            Ok(metadata) => Ok(Some(metadata.modified()?)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn save(&self, id: &str, record: &SessionRecord) -> std::io::Result<()> {
        let json = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        tokio::fs::write(self.record_path(id), json).await
    }

    async fn remove(&self, id: &str) {
        let _ = tokio::fs::remove_file(self.record_path(id)).await;
        let _ = tokio::fs::remove_file(self.part(id)).await;
    }

    /// The records of every session alive, by id.
    async fn all(&self) -> std::io::Result<Vec<(String, SessionRecord)>> {
        let mut sessions = Vec::new();
        let mut entries = match tokio::fs::read_dir(&self.folder).await {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(sessions),
            Err(error) => return Err(error),
        };
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json")
                && let Some(record) = self.record(id).await?
            {
                sessions.push((id.to_owned(), record));
            }
        }
        Ok(sessions)
    }

    /// Removes the sessions idle past `upload_session_idle_ms`, and part
    /// files left without a record; how many went.
    pub async fn sweep(&self) -> std::io::Result<usize> {
        let before = self.count_files().await?;
        let alive = self.all().await?;
        let mut entries = match tokio::fs::read_dir(&self.folder).await {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(error) => return Err(error),
        };
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = name.split('.').next().unwrap_or_default();
            if !alive.iter().any(|(alive, _)| alive == id) {
                let _ = tokio::fs::remove_file(entry.path()).await;
            }
        }
        Ok(before.saturating_sub(self.count_files().await?) / 2)
    }

    async fn count_files(&self) -> std::io::Result<usize> {
        let mut count = 0;
        let mut entries = match tokio::fs::read_dir(&self.folder).await {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(error) => return Err(error),
        };
        while entries.next_entry().await?.is_some() {
            count += 1;
        }
        Ok(count)
    }

    async fn view(&self, id: &str, record: &SessionRecord) -> std::io::Result<UploadView> {
        let offset = tokio::fs::metadata(self.part(id)).await?.len();
        let last = self.last_piece(id).await?.unwrap_or_else(std::time::SystemTime::now);
        let expires = last + self.idle;
        let expires_ms = expires.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        Ok(UploadView {
            id: id.to_owned(),
            offset,
            size_bytes: record.size_bytes,
            expires_at: crate::wire::timestamp(expires_ms),
        })
    }

    /// The session's part file, open for writing and locked: one request
    /// writes a session at a time, on any node sharing the folder (409).
    fn lock_part(&self, id: &str) -> ApiResult<std::fs::File> {
        let file = std::fs::OpenOptions::new().read(true).append(true).open(self.part(id)).map_err(|error| {
            if error.kind() == std::io::ErrorKind::NotFound { session_not_found(id) } else { error.into() }
        })?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(ApiError::conflict(format!("another request is writing upload {id} now; retry when it is done")))
            }
            Err(std::fs::TryLockError::Error(error)) => Err(error.into()),
        }
    }
}

fn session_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no upload {id} on this model (sessions go after upload_session_idle_ms unused)"))
}

/// The session `id` of `model`, started by `caller`; 404 for any other.
async fn session_of(state: &AppState, model: &ModelRecord, caller: &Account, id: &str) -> ApiResult<SessionRecord> {
    match state.upload_sessions.record(id).await? {
        Some(record) if record.model_id == model.id && record.account_id == caller.id => Ok(record),
        _ => Err(session_not_found(id)),
    }
}

/// Starts a resumable upload of a file of `size_bytes`: its pieces then go
/// to `PATCH …/uploads/{id}` with `Upload-Offset`, and it becomes a
/// version at `POST …/uploads/{id}/commit`. A session counts against the
/// owner's storage from its start, and goes after `upload_session_idle_ms`
/// without a piece.
#[utoipa::path(post, path = "/v1/models/{owner}/{name}/uploads", tag = "models",
    security(("api_key" = [])),
    params(("owner" = String, Path), ("name" = String, Path)),
    request_body = StartUploadRequest,
    responses(
        (status = 201, body = UploadView, headers(("Location" = String, description = "the session's URL"))),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 410, description = "the model was deleted or taken down", body = ErrorBody),
        (status = 413, description = "larger than upload_bytes_max (payload_too_large), or more than the owner's models and open uploads may store (storage_quota_exceeded)", body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 429, description = "the account has upload_sessions_per_account_max sessions open (rate_limited)", body = ErrorBody),
    ))]
pub async fn start_upload_session(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, name)): Path<(String, String)>,
    ApiJson(request): ApiJson<StartUploadRequest>,
) -> ApiResult<impl IntoResponse> {
    let model = owned_model(&state, &owner, &name, &caller).await?;
    check_taken_down(&model)?;
    let limit = state.config.upload_bytes_max;
    if request.size_bytes == 0 {
        return Err(ApiError::invalid_model("the file is empty"));
    }
    if request.size_bytes > limit {
        return Err(too_large(limit));
    }
    let open: Vec<SessionRecord> = state
        .upload_sessions
        .all()
        .await?
        .into_iter()
        .map(|(_, record)| record)
        .filter(|record| record.account_id == caller.id)
        .collect();
    let max = state.config.upload_sessions_per_account_max;
    if max > 0 && open.len() as u64 >= u64::from(max) {
        return Err(ApiError::rate_limited(
            format!(
                "this account has {} uploads open, the limit upload_sessions_per_account_max: finish or delete \
                 one, or let it go idle",
                open.len()
            ),
            60,
        ));
    }
    // Open sessions count as stored: the quota holds for what they will add.
    let quota = Quota::of(&state, caller.id).await?;
    let pending: u64 = open.iter().map(|record| record.size_bytes).sum();
    if let Some(error) = quota.refuses(pending.saturating_add(request.size_bytes)) {
        return Err(error);
    }
    let record =
        SessionRecord { account_id: caller.id, model_id: model.id, size_bytes: request.size_bytes, judged: false };
    let id = state.upload_sessions.create(&record).await?;
    let view = state.upload_sessions.view(&id, &record).await?;
    let location = format!("/v1/models/{}/{}/uploads/{id}", model.owner, model.name);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(view)))
}

/// Where an upload session stands: the offset to send the next piece from.
#[utoipa::path(get, path = "/v1/models/{owner}/{name}/uploads/{id}", tag = "models",
    security(("api_key" = [])),
    params(("owner" = String, Path), ("name" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = UploadView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
pub async fn get_upload_session(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, name, id)): Path<(String, String, String)>,
) -> ApiResult<Json<UploadView>> {
    let model = owned_model(&state, &owner, &name, &caller).await?;
    let record = session_of(&state, &model, &caller, &id).await?;
    Ok(Json(state.upload_sessions.view(&id, &record).await?))
}

/// Sends the piece of the file that starts at `Upload-Offset`, which must
/// be the session's offset (409 with the offset otherwise). A piece that
/// breaks off is kept up to its last byte received: resume from the
/// session's offset.
#[utoipa::path(patch, path = "/v1/models/{owner}/{name}/uploads/{id}", tag = "models",
    security(("api_key" = [])),
    params(("owner" = String, Path), ("name" = String, Path), ("id" = String, Path),
        ("Upload-Offset" = u64, Header, description = "where this piece starts in the file: the session's offset")),
    request_body(content((Vec<u8> = "application/offset+octet-stream"), (Vec<u8> = "application/octet-stream")),
        description = "bytes of the file from Upload-Offset on"),
    responses(
        (status = 200, body = UploadView),
        (status = 400, description = "no Upload-Offset (invalid_request), or the body broke off (upload_interrupted; what arrived is kept)", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Upload-Offset is not the session's offset, or another request is writing the session (conflict)", body = ErrorBody),
        (status = 410, body = ErrorBody),
        (status = 413, description = "past the size the session was started with (payload_too_large)", body = ErrorBody),
        (status = 422, description = "the file's first bytes begin no ONNX model nor tar archive of one (invalid_model; the session goes)", body = ErrorBody),
        (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn append_to_upload(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    Path((owner, name, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<UploadView>> {
    let mut body = Some(body.into_data_stream());
    let answer = receive_piece(&state, &caller, address.ip(), (&owner, &name, &id), &headers, &mut body).await;
    if answer.is_err() {
        drain(body.take());
    }
    answer
}

async fn receive_piece(
    state: &AppState,
    caller: &Account,
    address: IpAddr,
    (owner, name, id): (&str, &str, &str),
    headers: &HeaderMap,
    body: &mut Option<BodyDataStream>,
) -> ApiResult<Json<UploadView>> {
    let model = owned_model(state, owner, name, caller).await?;
    check_taken_down(&model)?;
    let mut record = session_of(state, &model, caller, id).await?;
    let _turn = start_upload(state, caller.id, address)?;
    let offset: u64 = headers
        .get("upload-offset")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| ApiError::bad_request("send the piece's start in the file as the header Upload-Offset"))?;
    let sessions = &state.upload_sessions;
    let file = sessions.lock_part(id)?;
    let has = file.metadata()?.len();
    if offset != has {
        return Err(ApiError::conflict(format!(
            "upload {id} has {has} bytes: send the piece that starts at Upload-Offset {has}"
        )));
    }
    let mut file = tokio::fs::File::from_std(file);
    let declared = content_length(headers);
    if declared.is_some_and(|length| has.saturating_add(length) > record.size_bytes) {
        return Err(past_size(record.size_bytes));
    }
    // The first bytes, until they tell: those the session has, then these.
    let first_bytes = if record.judged {
        None
    } else {
        let mut prefix = Vec::new();
        file.seek(std::io::SeekFrom::Start(0)).await?;
        (&mut file).take(SNIFF_BYTES_MAX as u64).read_to_end(&mut prefix).await?;
        Some(prefix)
    };
    let mut incoming = Incoming::new(state, declared, first_bytes)?;
    incoming.total = Some(record.size_bytes);
    // Received in a task of its own: if the client hangs up, this request
    // is dropped, but what arrived is still written and kept.
    let stream = body.take();
    let size = record.size_bytes;
    let receiving = tokio::spawn(async move {
        let mut stream = stream;
        let mut received = 0u64;
        let outcome: ApiResult<()> = async {
            while let Some(piece) = next_piece(&mut stream).await? {
                if has + received + piece.len() as u64 > size {
                    return Err(past_size(size));
                }
                incoming.take(&piece, received + piece.len() as u64)?;
                file.write_all(&piece).await?;
                received += piece.len() as u64;
            }
            Ok(())
        }
        .await;
        let synced = file.sync_data().await;
        (stream, incoming, received, outcome.and(synced.map_err(Into::into)))
    });
    let (stream, mut incoming, received, outcome) = receiving.await.map_err(ApiError::internal)?;
    *body = stream;
    if let Err(error) = outcome {
        if error.code == "invalid_model" {
            sessions.remove(id).await;
        }
        return Err(error);
    }
    let now_has = has + received;
    if incoming.first_bytes.is_some() && now_has == record.size_bytes {
        if let Err(error) = incoming.judge_whole(now_has) {
            sessions.remove(id).await;
            return Err(error);
        }
        incoming.first_bytes = None;
    }
    if incoming.first_bytes.is_none() && !record.judged {
        record.judged = true;
        sessions.save(id, &record).await?;
    }
    Ok(Json(sessions.view(id, &record).await?))
}

fn past_size(size: u64) -> ApiError {
    ApiError::payload_too_large(format!("the upload was started for a file of {size} bytes; this goes past it"))
}

/// Makes a complete upload the model's next version, once its bytes hash to
/// `sha256`; the session goes either way, unless the file is incomplete
/// (409) or its digest differs (422: resend the pieces that differ from a
/// fresh session).
#[utoipa::path(post, path = "/v1/models/{owner}/{name}/uploads/{id}/commit", tag = "models",
    security(("api_key" = [])),
    params(("owner" = String, Path), ("name" = String, Path), ("id" = String, Path)),
    request_body = CommitUploadRequest,
    responses(
        (status = 201, body = VersionView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the file is not whole yet, or another request is writing it (conflict)", body = ErrorBody),
        (status = 410, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 422, description = "the bytes received do not hash to sha256 (invalid_request), or the model is refused (invalid_model)", body = ErrorBody),
        (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn commit_upload(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    Path((owner, name, id)): Path<(String, String, String)>,
    ApiJson(request): ApiJson<CommitUploadRequest>,
) -> ApiResult<(StatusCode, Json<VersionView>)> {
    let expected: Sha256 = request
        .sha256
        .parse()
        .map_err(|_| ApiError::invalid_request("sha256 must be 64 lowercase hexadecimal digits"))?;
    let model = owned_model(&state, &owner, &name, &caller).await?;
    check_taken_down(&model)?;
    let record = session_of(&state, &model, &caller, &id).await?;
    let _turn = start_upload(&state, caller.id, address.ip())?;
    let sessions = &state.upload_sessions;
    let file = sessions.lock_part(&id)?;
    let has = file.metadata()?.len();
    if has != record.size_bytes {
        return Err(ApiError::conflict(format!(
            "upload {id} has {has} of its {} bytes: send the rest from Upload-Offset {has} first",
            record.size_bytes
        )));
    }
    let found = hash_file(file.try_clone()?).await?;
    if found != expected {
        sessions.remove(&id).await;
        return Err(ApiError::invalid_request(format!(
            "the {has} bytes received hash to {}, not {}: start the upload again",
            found.to_hex(),
            expected.to_hex()
        )));
    }
    if !record.judged {
        let mut prefix = Vec::new();
        let mut reader = tokio::fs::File::from_std(file.try_clone()?);
        (&mut reader).take(SNIFF_BYTES_MAX as u64).read_to_end(&mut prefix).await?;
        if let Err(reason) = sniff(&prefix, Some(has)) {
            sessions.remove(&id).await;
            return Err(ApiError::invalid_model(reason.to_string()));
        }
    }
    let quota = Quota::of(&state, caller.id).await?;
    let finished = state.blobs.adopt(&sessions.part(&id), expected, has).await?;
    drop(file);
    sessions.remove(&id).await;
    accept_version(&state, &caller, &model, finished, quota.max).await
}

/// A file's SHA-256, read from its start on a blocking thread.
async fn hash_file(mut file: std::fs::File) -> ApiResult<Sha256> {
    tokio::task::spawn_blocking(move || {
        use sha2::Digest;
        use std::io::{Read, Seek};
        file.seek(std::io::SeekFrom::Start(0))?;
        let mut hasher = sha2::Sha256::new();
        let mut piece = vec![0u8; 1 << 20];
        loop {
            let read = file.read(&mut piece)?;
            if read == 0 {
                break;
            }
            hasher.update(&piece[..read]);
        }
        Ok::<_, std::io::Error>(Sha256::from_bytes(hasher.finalize().into()))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(Into::into)
}

/// Gives up an upload session; its bytes go.
#[utoipa::path(delete, path = "/v1/models/{owner}/{name}/uploads/{id}", tag = "models",
    security(("api_key" = [])),
    params(("owner" = String, Path), ("name" = String, Path), ("id" = String, Path)),
    responses((status = 204, description = "gone"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 410, body = ErrorBody)))]
pub async fn delete_upload_session(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, name, id)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let model = owned_model(&state, &owner, &name, &caller).await?;
    session_of(&state, &model, &caller, &id).await?;
    let file = state.upload_sessions.lock_part(&id)?;
    state.upload_sessions.remove(&id).await;
    drop(file);
    Ok(StatusCode::NO_CONTENT)
}
