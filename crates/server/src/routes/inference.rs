//! Running a model: the paid-inference path (charging arrives with the ledger).

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::Visibility;
use domain::{Amount, Sha256};
use ledger::ChargeParties;
use runtime::{InputError, Signature, Tensor};
use sandbox::{Failure, RunFailure};
use store::{Account, BatchItem, Charge, IdempotencyAnswer, IdempotencyStart, ModelRecord, UsageEvent, Version};
use tlog::ReceiptLeaf;

use crate::AppState;
use crate::answers::AnswerFor;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Caller, InferBody};
use crate::log::{log_model_label, receipt_json};
use crate::quarantine::Verdict;
use crate::routes::models::callable_model;
use crate::routes::money::item_error;
use crate::wire::{InferRequest, InferResponse, TensorOut};

/// Idempotency keys are the client's; bounded like every such field.
const IDEMPOTENCY_KEY_CHARS_MAX: usize = 255;
/// `X-App` tags likewise.
const APP_TAG_CHARS_MAX: usize = 64;

/// Runs the model's latest version.
#[utoipa::path(post, path = "/v1/models/{owner}/{name}/infer", tag = "inference",
    security(("api_key" = [])),
    params(("owner" = String, Path), ("name" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "retries with the same key are charged once"),
        ("X-App" = Option<String>, Header, description = "the calling application, for attribution")),
    request_body(content(
        (InferRequest = "application/json"),
        (Vec<u8> = "application/octet-stream"),
    ), description = "the inputs: JSON, or with Content-Type: application/octet-stream a safetensors file of them"),
    responses(
        (status = 200, content(
            (InferResponse = "application/json"),
            (Vec<u8> = "application/octet-stream"),
        ), description = "the outputs; with Accept: application/octet-stream, a safetensors file of them whose __metadata__ holds model, version, price, latency_ms and receipt (JSON)"),
        (status = 401, body = ErrorBody),
        (status = 402, description = "the balance cannot cover the price", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "a call with this Idempotency-Key is still running, or was answered but its answer was not kept for replays (idempotency_answer_bytes_max)", body = ErrorBody),
        (status = 410, description = "the model was deleted or taken down, or the version (every version, for the latest) is yanked", body = ErrorBody),
        (status = 413, description = "more elements than tensor_elements_max", body = ErrorBody),
        (status = 429, description = "too many calls from this key at once or per minute, or too many bytes of its answers not yet read (rate_limited, with Retry-After)", body = ErrorBody),
        (status = 422, description = "inputs that do not fit the model (invalid_input), an Idempotency-Key reused for another request (invalid_request), more memory than worker_memory_bytes_max (model_out_of_memory), or outputs larger than output_elements_max (output_too_large)", body = ErrorBody),
        (status = 502, description = "the worker running the model died (model_crashed); nothing was charged", body = ErrorBody),
        (status = 503, description = "the version is quarantined (model_quarantined), no worker is available, too many answers wait for their clients, or this node cannot read the model's file (unavailable)", body = ErrorBody),
        (status = 504, description = "ran past inference_timeout_ms; its worker was stopped", body = ErrorBody),
    ))]
pub async fn infer_latest(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: InferBody,
) -> ApiResult<Response> {
    let started = Instant::now();
    let model = callable_model(&state, &owner, &name, &caller).await?;
    let Some(latest) = model.latest_version else {
        if state.store.versions(model.id).await?.is_empty() {
            return Err(ApiError::not_found(format!("model '{owner}/{name}' has no versions yet")));
        }
        return Err(ApiError::gone(format!("every version of '{owner}/{name}' is yanked by its owner")));
    };
    infer(&state, &caller, &model, latest, &headers, body, started).await.map(|answer| answer_for(answer, &caller))
}

/// Runs one version of the model.
#[utoipa::path(post, path = "/v1/models/{owner}/{name}/versions/{version}/infer", tag = "inference",
    security(("api_key" = [])),
    params(("owner" = String, Path), ("name" = String, Path), ("version" = i64, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "retries with the same key are charged once"),
        ("X-App" = Option<String>, Header, description = "the calling application, for attribution")),
    request_body(content(
        (InferRequest = "application/json"),
        (Vec<u8> = "application/octet-stream"),
    ), description = "the inputs: JSON, or with Content-Type: application/octet-stream a safetensors file of them"),
    responses(
        (status = 200, content(
            (InferResponse = "application/json"),
            (Vec<u8> = "application/octet-stream"),
        ), description = "the outputs; with Accept: application/octet-stream, a safetensors file of them whose __metadata__ holds model, version, price, latency_ms and receipt (JSON)"),
        (status = 401, body = ErrorBody),
        (status = 402, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
        (status = 410, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody),
        (status = 502, body = ErrorBody),
        (status = 503, body = ErrorBody),
        (status = 504, body = ErrorBody),
    ))]
pub async fn infer_version(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, name, version)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: InferBody,
) -> ApiResult<Response> {
    let started = Instant::now();
    let model = callable_model(&state, &owner, &name, &caller).await?;
    let version = version.parse::<i64>().map_err(|_| ApiError::not_found(format!("version '{version}' not found")))?;
    infer(&state, &caller, &model, version, &headers, body, started).await.map(|answer| answer_for(answer, &caller))
}

/// The answer counts against its caller's unsent answers until it is read
/// (`answers.rs`).
fn answer_for(answer: Response, caller: &Account) -> Response {
    AnswerFor::mark(caller.id, answer)
}

/// The paid inference path. With an Idempotency-Key, a retry of a finished
/// call gets the first answer again and pays nothing more.
async fn infer(
    state: &AppState,
    caller: &Account,
    model: &ModelRecord,
    version: i64,
    headers: &HeaderMap,
    body: InferBody,
    started: Instant,
) -> ApiResult<Response> {
    // Held until the call is answered, whichever way.
    let _permit = state.start_call(caller.id)?;
    // A caller whose clients leave answers unread starts nothing more.
    state.unsent_answers.admit_caller(caller.id)?;
    let key = idempotency_key(headers)?;
    let call = Call {
        caller,
        model,
        version,
        app: app_tag(headers)?,
        at_ms: dev_time(state, headers)?,
        started,
        idempotency_key_sha256: key.as_ref().map(|k| Sha256::digest(k.as_bytes())),
        cpu_us: AtomicU64::new(0),
        blob_sha256: OnceLock::new(),
        input_sha256: OnceLock::new(),
        recorded: AtomicBool::new(false),
    };
    let format = AnswerFormat::accepted(headers);
    let Some(key) = key else {
        return record_call(state, &call, body, None, format).await;
    };
    let fingerprint = idempotency_fingerprint(&call, &body)?;
    let window_ms = state.config.idempotency_window_ms as i64;
    if let Some(answer) = idempotency_answer(state, caller, &key, &fingerprint, window_ms, format).await? {
        return answer;
    }
    let Some(_claim) = state.idempotency_claims.claim(caller.id, &key) else {
        return Err(ApiError::conflict("a call with this Idempotency-Key is still running; retry when it is done"));
    };
    let remember = Some((key.as_str(), fingerprint));
    let result = record_call(state, &call, body, remember, format).await;
    if result.is_err() {
        // Another node sharing the database may have answered the key while
        // this call ran (its charge was then refused): that answer stands.
        if let Some(answer) = idempotency_answer(state, caller, &key, &fingerprint, window_ms, format).await? {
            return answer;
        }
    }
    result
}

/// How the caller wants its answer: JSON, or with `Accept:
/// application/octet-stream` the binary tensor body (`tensor_body.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AnswerFormat {
    Json,
    Binary,
}

impl AnswerFormat {
    fn accepted(headers: &HeaderMap) -> AnswerFormat {
        let accepts = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok());
        let binary = accepts
            .flat_map(|v| v.split(','))
            .any(|media| media.split(';').next().unwrap_or_default().trim() == crate::tensor_body::MEDIA_TYPE);
        if binary { AnswerFormat::Binary } else { AnswerFormat::Json }
    }
}

/// What a binary answer carries beside its outputs, as strings.
fn binary_metadata(
    model: &str,
    version: i64,
    price: &str,
    latency_ms: f64,
    receipt: Option<&serde_json::Value>,
) -> BTreeMap<&'static str, String> {
    let mut metadata = BTreeMap::from([
        ("model", model.to_owned()),
        ("version", version.to_string()),
        ("price", price.to_owned()),
        ("latency_ms", latency_ms.to_string()),
    ]);
    if let Some(receipt) = receipt {
        metadata.insert("receipt", receipt.to_string());
    }
    metadata
}

fn binary_response(body: Vec<u8>) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, crate::tensor_body::MEDIA_TYPE)], body).into_response()
}

/// A stored answer (JSON, its receipt spliced in) in the format asked for:
/// a binary replay reads the outputs back from the JSON.
fn replay(format: AnswerFormat, answer: String) -> ApiResult<Response> {
    if format == AnswerFormat::Json {
        return Ok(json_response(answer));
    }
    #[derive(serde::Deserialize)]
    struct Stored {
        model: String,
        outputs: BTreeMap<String, crate::wire::TensorIn>,
        version: i64,
        price: String,
        latency_ms: f64,
        receipt: Option<serde_json::Value>,
    }
    let stored: Stored = serde_json::from_str(&answer).map_err(ApiError::internal)?;
    let outputs = stored
        .outputs
        .into_iter()
        .map(|(name, tensor)| tensor.into_tensor(&name).map(|t| (name, t)))
        .collect::<ApiResult<Vec<(String, Tensor)>>>()?;
    let metadata =
        binary_metadata(&stored.model, stored.version, &stored.price, stored.latency_ms, stored.receipt.as_ref());
    let parts = outputs.iter().map(|(name, t)| (name.as_str(), t.shape.as_slice(), &t.data));
    Ok(binary_response(crate::tensor_body::encode(parts, &metadata)))
}

/// The answer an Idempotency-Key already has: the first call's (with its
/// receipt rebuilt from the log), or a refusal when the key stood for
/// another request. `None` for a key without an answer.
async fn idempotency_answer(
    state: &AppState,
    caller: &Account,
    key: &str,
    fingerprint: &Sha256,
    window_ms: i64,
    format: AnswerFormat,
) -> ApiResult<Option<ApiResult<Response>>> {
    match state.store.idempotency_lookup(caller.id, key, fingerprint, window_ms).await? {
        IdempotencyStart::Replay(body, log_index) => {
            let receipt = match log_index {
                Some(index) => {
                    let entry = state.store.log_entries(index, index + 1).await?.pop();
                    let entry = entry.ok_or_else(|| ApiError::internal(format!("leaf {index} is missing")))?;
                    Some(receipt_json(index, &entry.leaf, &entry.signature)?)
                }
                None => None,
            };
            Ok(Some(replay(format, with_receipt(&body, receipt)?)))
        }
        IdempotencyStart::NotKept(log_index) => {
            let receipt = match log_index {
                Some(index) => format!(" (its receipt is log entry {index}, GET /v1/receipts/{index})"),
                None => String::new(),
            };
            Ok(Some(Err(ApiError::conflict(format!(
                "the call with this Idempotency-Key was answered and charged once{receipt}, but its answer was not \
                 kept for replays: larger than idempotency_answer_bytes_max = {} bytes, or past this key's \
                 idempotency_answer_bytes_per_key = {}; send the request with a new key to run it again",
                state.config.idempotency_answer_bytes_max, state.config.idempotency_answer_bytes_per_key
            )))))
        }
        IdempotencyStart::Mismatch => {
            Ok(Some(Err(ApiError::invalid_request("this Idempotency-Key was used for a different request"))))
        }
        IdempotencyStart::Started => Ok(None),
    }
}

/// What an Idempotency-Key stands for: the model, the version the call
/// resolved to, the app tag, and the inputs in a canonical JSON form (inputs
/// by name, each tensor's fields in one order, its data re-serialised), so
/// the same request sent with other key order or whitespace is the same; a
/// binary body stands for its tensors (name, dtype, shape, the digest of
/// their bytes), whatever the order of its header.
fn idempotency_fingerprint(call: &Call<'_>, body: &InferBody) -> ApiResult<Sha256> {
    let mut canonical = format!("{}/{}@{}\napp={}\n", call.model.owner, call.model.name, call.version, call.app);
    let request = match body {
        InferBody::Json(request) => request,
        InferBody::Binary(inputs) => {
            canonical.push_str("binary\n");
            for (name, tensor) in inputs {
                let mut bytes = vec![];
                tensor.write_le(&mut bytes);
                let entry = serde_json::to_string(&(name, tensor.dtype().as_str(), &tensor.shape))
                    .map_err(ApiError::internal)?;
                canonical.push_str(&format!("{entry}\n{}\n", Sha256::digest(&bytes)));
            }
            return Ok(Sha256::digest(canonical.as_bytes()));
        }
    };
    for (name, tensor) in &request.inputs {
        // Data that is not JSON is refused later, when the inputs are read;
        // until then its text stands for it.
        let data = serde_json::from_str::<serde_json::Value>(tensor.data.get())
            .map(|value| value.to_string())
            .unwrap_or_else(|_| tensor.data.get().to_owned());
        let entry = serde_json::to_string(&(name, &tensor.dtype, &tensor.shape)).map_err(ApiError::internal)?;
        canonical.push_str(&format!("{entry}\n{data}\n"));
    }
    Ok(Sha256::digest(canonical.as_bytes()))
}

fn json_response(body: String) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// One inference call: who called what, when.
struct Call<'a> {
    caller: &'a Account,
    model: &'a ModelRecord,
    version: i64,
    app: String,
    /// Back-dating on development servers (`X-Vitrine-Time`), for demo traffic.
    at_ms: Option<i64>,
    started: Instant,
    idempotency_key_sha256: Option<Sha256>,
    /// CPU time the model used, once it ran (or failed running).
    cpu_us: AtomicU64,
    /// The version's file, once the version is known.
    blob_sha256: OnceLock<Sha256>,
    /// The inputs' digest, once they are read.
    input_sha256: OnceLock<Sha256>,
    /// The call's record (its leaf and usage event) is on its way to the
    /// sequencer, or the call is owed none: an abandoned call is recorded
    /// only while this is false (`RecordIfAbandoned`).
    recorded: AtomicBool,
}

impl Call<'_> {
    fn usage(&self, state: &AppState, price: u64, creator_share: u64, status: &str) -> UsageEvent {
        UsageEvent {
            created_at_ms: self.at_ms.unwrap_or_else(store::now_ms),
            model_id: self.model.id,
            version: self.version,
            owner_id: self.model.owner_id,
            task: self.model.task.as_str().to_owned(),
            public: self.model.visibility == Visibility::Public,
            caller: *tlog::caller_pseudonym(&tlog::caller_secret(&state.log_keys.pseudonym, self.caller.id)).as_bytes(),
            app: self.app.clone(),
            node: state.log_keys.node.name().to_owned(),
            price,
            creator_share,
            latency_us: self.started.elapsed().as_micros() as u64,
            cpu_us: self.cpu_us.load(Ordering::Relaxed),
            status: status.to_owned(),
        }
    }

    /// The call's log leaf, signed by this node: what it cost (all zero
    /// for a free or failed call), the digests of what went in and came
    /// out (zeros where there were none), and the error of a failed call.
    fn leaf(
        &self,
        state: &AppState,
        usage: &UsageEvent,
        shares: [u64; 3],
        output_sha256: Option<Sha256>,
        error: &str,
    ) -> ApiResult<(Vec<u8>, Vec<u8>)> {
        let zeros = Sha256::from_bytes([0; 32]);
        let leaf = ReceiptLeaf {
            format: tlog::leaf::LEAF_FORMAT_VERSION,
            created_at_ms: usage.created_at_ms,
            model: log_model_label(&state.log_keys, &self.model.owner, self.model.name.as_str(), self.model.visibility),
            version: u32::try_from(self.version).map_err(ApiError::internal)?,
            blob_sha256: self.blob_sha256.get().copied().unwrap_or(zeros),
            caller: Sha256::from_bytes(usage.caller),
            app: self.app.clone(),
            node: state.log_keys.node.name().to_owned(),
            task: usage.task.clone(),
            price: usage.price,
            creator_share: shares[0],
            node_share: shares[1],
            treasury_share: shares[2],
            input_sha256: self.input_sha256.get().copied().unwrap_or(zeros),
            output_sha256: output_sha256.unwrap_or(zeros),
            idempotency_key_sha256: self.idempotency_key_sha256,
            error: error.to_owned(),
        };
        let leaf = leaf.encode().map_err(ApiError::internal)?;
        let signature = state.log_keys.sign_receipt(&leaf);
        Ok((leaf, signature))
    }
}

/// Runs and records one call: charged and logged when it succeeds, logged
/// with its error code when it fails, and logged as `client_closed` when its
/// client goes away first (axum then drops this future mid-way).
async fn record_call(
    state: &AppState,
    call: &Call<'_>,
    body: InferBody,
    remember: Option<(&str, Sha256)>,
    format: AnswerFormat,
) -> ApiResult<Response> {
    let _abandoned = RecordIfAbandoned { state, call };
    let result = record_failure(state, call, charge_and_run(state, call, body, remember, format).await).await;
    // Recorded by now, or owed no record (a version that does not exist).
    call.recorded.store(true, Ordering::Relaxed);
    result
}

/// The error code of a call whose client went away before its answer.
pub const CLIENT_CLOSED: &str = "client_closed";

/// Records a call whose future is dropped before it was recorded (its
/// client closed the connection): its leaf and usage event, with the error
/// `client_closed`, the CPU time it used if its model ran, and the digest
/// of its inputs if they were read, so that every call is a leaf. Nothing
/// was charged: its reservation is dropped with it.
struct RecordIfAbandoned<'a> {
    state: &'a AppState,
    call: &'a Call<'a>,
}

impl Drop for RecordIfAbandoned<'_> {
    fn drop(&mut self) {
        if self.call.recorded.swap(true, Ordering::Relaxed) {
            return;
        }
        let item = match failure_item(self.state, self.call, CLIENT_CLOSED) {
            Ok(item) => item,
            Err(error) => return tracing::warn!(%error.message, "recording an abandoned call failed"),
        };
        // A future dropped outside a runtime (the server's own shutdown)
        // has nobody to record it for.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let sequencer = self.state.sequencer.clone();
        runtime.spawn(async move {
            match sequencer.submit(item).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::warn!(?error, "recording an abandoned call failed"),
                Err(error) => tracing::warn!(%error, "recording an abandoned call failed"),
            }
        });
    }
}

/// A failed call is usage too: it is recorded with its error code (a call to
/// a version that does not exist, or is yanked, is not a call to the model).
async fn record_failure<T>(state: &AppState, call: &Call<'_>, result: ApiResult<T>) -> ApiResult<T> {
    if let Err(error) = &result
        && !matches!(error.code, "not_found" | "gone")
    {
        let recorded = log_failure(state, call, error.code).await;
        if let Err(failure) = recorded {
            tracing::warn!(%failure.message, "logging a failed call failed");
        }
    }
    result
}

async fn log_failure(state: &AppState, call: &Call<'_>, code: &str) -> ApiResult<()> {
    let item = failure_item(state, call, code)?;
    call.recorded.store(true, Ordering::Relaxed);
    state.sequencer.submit(item).await?.map_err(item_error)?;
    Ok(())
}

/// A failed call's record: price 0, its error code.
fn failure_item(state: &AppState, call: &Call<'_>, code: &str) -> ApiResult<BatchItem> {
    let usage = call.usage(state, 0, 0, code);
    let (leaf, signature) = call.leaf(state, &usage, [0; 3], None, code)?;
    Ok(BatchItem::RecordOnly { leaf, signature, usage, answer: None, at_ms: call.at_ms })
}

/// `X-Vitrine-Time` (Unix milliseconds) back-dates a call's records on a
/// development server, so demo traffic can span weeks; elsewhere it is refused.
fn dev_time(state: &AppState, headers: &HeaderMap) -> ApiResult<Option<i64>> {
    let Some(value) = headers.get("x-vitrine-time") else { return Ok(None) };
    if !state.config.dev {
        return Err(ApiError::bad_request("X-Vitrine-Time is accepted only by development servers (serve --dev)"));
    }
    let at = value.to_str().ok().and_then(|v| v.parse::<i64>().ok()).filter(|&at| at > 0 && at <= store::now_ms());
    at.map(Some)
        .ok_or_else(|| ApiError::bad_request("X-Vitrine-Time is a Unix time in milliseconds, not in the future"))
}

/// The answer, serialised once, ends with `"receipt":null}` (the receipt is
/// `InferResponse`'s last field) and is kept so for replays; the receipt,
/// rebuilt from the log, is spliced in there. So a replay is byte for byte
/// the first answer, and no answer is parsed again.
fn with_receipt(stored: &str, receipt: Option<serde_json::Value>) -> ApiResult<String> {
    let Some(receipt) = receipt else { return Ok(stored.to_owned()) };
    let head = stored
        .strip_suffix("\"receipt\":null}")
        .ok_or_else(|| ApiError::internal("a stored answer does not end with its receipt"))?;
    let receipt = serde_json::to_string(&receipt).map_err(ApiError::internal)?;
    Ok(format!("{head}\"receipt\":{receipt}}}"))
}

/// `X-App`: which application made the call, for attribution. Free text
/// from the caller, so bounded and plain.
fn app_tag(headers: &HeaderMap) -> ApiResult<String> {
    let Some(value) = headers.get("x-app") else { return Ok(String::new()) };
    let tag = value.to_str().unwrap_or_default();
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/');
    if tag.is_empty() || tag.len() > APP_TAG_CHARS_MAX || !tag.chars().all(plain) {
        return Err(ApiError::bad_request(format!(
            "X-App must be 1 to {APP_TAG_CHARS_MAX} characters: letters, digits, '.', '_', '-', ':' and '/'"
        )));
    }
    Ok(tag.to_owned())
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let key = value.to_str().ok().map(str::trim).filter(|k| !k.is_empty() && k.len() <= IDEMPOTENCY_KEY_CHARS_MAX);
    match key {
        Some(key) => Ok(Some(key.to_owned())),
        None => Err(ApiError::bad_request(format!(
            "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_CHARS_MAX} visible ASCII characters"
        ))),
    }
}

/// Checks the inputs, reserves the price in memory (402 before the model
/// runs), runs the model, then writes the call in one batch: the split
/// transfers, the signed receipt leaf, the usage event and the answer of its
/// Idempotency-Key (with the request's fingerprint), if any. Returns the
/// answer's JSON once that is durable; a failed call writes no charge.
async fn charge_and_run(
    state: &AppState,
    call: &Call<'_>,
    body: InferBody,
    idempotency_key: Option<(&str, Sha256)>,
    format: AnswerFormat,
) -> ApiResult<Response> {
    let (caller, model, version, started) = (call.caller, call.model, call.version, call.started);
    let version: Version = state
        .known_models
        .version(&state.store, model.id, version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("'{}/{}' has no version {version}", model.owner, model.name)))?;
    let _ = call.blob_sha256.set(version.blob_sha256);
    if let Some(yank) = &version.yank {
        let why = if yank.reason.is_empty() { String::new() } else { format!(": {}", yank.reason) };
        return Err(ApiError::gone(format!(
            "version {} of '{}/{}' was yanked by its owner on {}{why}",
            version.version,
            model.owner,
            model.name,
            crate::wire::timestamp(yank.since_ms)
        )));
    }
    if let Some(quarantine) = &version.quarantine {
        return Err(ApiError::model_quarantined(format!(
            "version {} of '{}/{}' is quarantined since {} until the operator lifts it: {}",
            version.version,
            model.owner,
            model.name,
            crate::wire::timestamp(quarantine.since_ms),
            quarantine.reason
        )));
    }
    let inputs = match body {
        InferBody::Json(request) => request
            .inputs
            .into_iter()
            .map(|(name, tensor)| tensor.into_tensor(&name).map(|t| (name, t)))
            .collect::<ApiResult<BTreeMap<String, Tensor>>>()?,
        InferBody::Binary(inputs) => inputs,
    };
    // The log's digest of the inputs: of the tensors, however they came.
    let _ = call.input_sha256.set(crate::log::tensors_sha256(inputs.iter().map(|(n, t)| (n.as_str(), t)))?);
    let signature = Signature { inputs: version.inputs.clone(), outputs: version.outputs.clone() };
    let inputs = signature.check_inputs(inputs, state.config.tensor_elements_max).map_err(input_error)?;

    // The price is the one read when the call started; a later change
    // applies to later calls. Who pays whom is the ledger's rule.
    let shares = state.fee_split.split(model.price_per_inference);
    let pays_self = model.owner_id == caller.id;
    let parties = ChargeParties {
        caller: caller.id,
        creator: model.owner_id,
        node: state.system.node,
        treasury: state.system.treasury,
    };
    let reference = format!("{}/{}@{}", model.owner, model.name, version.version);
    let transfers = ledger::charge_transfers(parties, shares, &reference);
    let charged = Amount::from_minor_units(ledger::charged(&transfers)).map_err(ApiError::internal)?;
    // Reserved (in memory, or from this node's grant on a shared market; 402
    // here, before the model runs), charged below in one batch, released
    // when this call is over, whatever its end.
    let reservation = if charged > Amount::ZERO {
        Some(state.reservations.reserve(&state.store, &state.sequencer, caller.id, charged.minor_units()).await?)
    } else {
        None
    };

    // A batch formed while the model runs may wait a little for this call.
    let coming = state.sequencer.coming();
    let outputs = run_model(state, call, &version, inputs).await?;
    let output_sha256 = crate::log::tensors_sha256(outputs.iter().map(|(n, t)| (n.as_str(), t)))?;
    let outputs: BTreeMap<String, TensorOut> =
        outputs.into_iter().map(|(name, tensor)| (name, TensorOut::from(tensor))).collect();
    let response = InferResponse {
        model: format!("{}/{}", model.owner, model.name),
        outputs,
        version: version.version,
        price: charged.to_string(),
        latency_ms: (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
        receipt: None,
    };
    // Kept for replays without the receipt, which is rebuilt from the log.
    let stored = serde_json::to_string(&response).map_err(ApiError::internal)?;
    let remember = idempotency_key.map(|(key, request)| IdempotencyAnswer {
        account_id: caller.id,
        key: key.to_owned(),
        request,
        response: keeps_answer(state, caller.id, &stored).then(|| stored.clone()),
    });
    let creator_share = if pays_self { 0 } else { shares.creator.minor_units() };
    let usage = call.usage(state, charged.minor_units(), creator_share, "ok");
    if transfers.is_empty() {
        // A free call moves no money: its leaf and usage event are its whole
        // record (and its answer, as the API says, has no receipt).
        let (leaf, signature) = call.leaf(state, &usage, [0; 3], Some(output_sha256), "")?;
        let item = BatchItem::RecordOnly { leaf, signature, usage, answer: remember, at_ms: call.at_ms };
        drop(coming);
        call.recorded.store(true, Ordering::Relaxed);
        let outcome = state.sequencer.submit(item).await?.map_err(item_error)?;
        return answer(format, &stored, &response, None, outcome.log_index);
    }
    let node_shares = [creator_share, shares.node.minor_units(), shares.treasury.minor_units()];
    let (leaf, signature) = call.leaf(state, &usage, node_shares, Some(output_sha256), "")?;
    // One batch, one durable commit: the charge, the receipt leaf, the usage
    // event and the idempotency answer. A charge the durable balance cannot
    // cover (changed behind this node's back) fails here, charging nothing.
    let item = BatchItem::Charge(Charge {
        transfers,
        model_id: model.id,
        leaf: leaf.clone(),
        signature: signature.clone(),
        usage,
        answer: remember,
        at_ms: call.at_ms,
        grant: reservation.as_ref().and_then(|r| r.grant()),
        release: reservation.as_ref().and_then(|r| r.id()),
    });
    drop(coming);
    call.recorded.store(true, Ordering::Relaxed);
    let outcome = state.sequencer.submit(item).await?.map_err(item_error)?;
    if let Some(reservation) = reservation {
        reservation.charged(outcome.grant_left);
    }
    let index = outcome.log_index.ok_or_else(|| ApiError::internal("a paid call was not logged"))?;
    answer(format, &stored, &response, Some(receipt_json(index, &leaf, &signature)?), Some(index))
}

/// Whether an answer is kept for replays of its Idempotency-Key: at most
/// `idempotency_answer_bytes_max` bytes, within the key's
/// `idempotency_answer_bytes_per_key`. Kept answers fill the database's disk
/// for a whole window, and a stranger chooses both their size and their
/// number.
fn keeps_answer(state: &AppState, account: i64, answer: &str) -> bool {
    let bytes = answer.len() as u64;
    bytes <= state.config.idempotency_answer_bytes_max
        && u32::try_from(bytes)
            .is_ok_and(|bytes| state.idempotency_bytes.take_many(account, bytes, Instant::now()).is_ok())
}

/// Where a call's leaf is in the log (free calls have no receipt to say it).
pub const LOG_INDEX_HEADER: &str = "x-vitrine-log-index";

/// The call's answer in the format asked for: the stored JSON with the
/// receipt spliced in, or the outputs' bytes with the rest as metadata; the
/// call's log index in a header.
fn answer(
    format: AnswerFormat,
    stored: &str,
    response: &InferResponse,
    receipt: Option<serde_json::Value>,
    log_index: Option<u64>,
) -> ApiResult<Response> {
    let mut answer = answer_body(format, stored, response, receipt)?;
    if let Some(index) = log_index {
        answer.headers_mut().insert(LOG_INDEX_HEADER, index.into());
    }
    Ok(answer)
}

fn answer_body(
    format: AnswerFormat,
    stored: &str,
    response: &InferResponse,
    receipt: Option<serde_json::Value>,
) -> ApiResult<Response> {
    match format {
        AnswerFormat::Json => Ok(json_response(with_receipt(stored, receipt)?)),
        AnswerFormat::Binary => {
            let metadata = binary_metadata(
                &response.model,
                response.version,
                &response.price,
                response.latency_ms,
                receipt.as_ref(),
            );
            let parts = response.outputs.iter().map(|(name, tensor)| {
                let (shape, elements) = tensor.parts();
                (name.as_str(), shape, elements)
            });
            Ok(binary_response(crate::tensor_body::encode(parts, &metadata)))
        }
    }
}

/// Runs the model in a worker within `inference_timeout_ms` of the call's
/// start, waiting for a worker included. Past the deadline the worker is
/// killed and the caller gets 504. A crash or an exhausted memory bound is a
/// strike against the version, towards its quarantine.
async fn run_model(
    state: &AppState,
    call: &Call<'_>,
    version: &Version,
    inputs: Vec<Tensor>,
) -> ApiResult<Vec<(String, Tensor)>> {
    state.model_runs.fetch_add(1, Ordering::Relaxed);
    let timeout = Duration::from_millis(state.config.inference_timeout_ms);
    let deadline = tokio::time::Instant::from_std(call.started + timeout);
    let digest = version.blob_sha256;
    let tenant = call.caller.id as u64;
    let model_file = || async { sandbox::ModelFile::of(state.blobs.open_blob(&digest).await?).await };
    match state.batcher.run(&state.executor, tenant, version, inputs, deadline, model_file).await {
        Ok(ran) => {
            call.cpu_us.store(ran.cpu_us, Ordering::Relaxed);
            state.strikes.succeeded(call.model.id, version.version);
            Ok(ran.outputs)
        }
        Err(RunFailure { failure, cpu_us }) => {
            call.cpu_us.store(cpu_us, Ordering::Relaxed);
            if failure.is_strike() {
                strike(state, call, version.version, &failure).await;
            }
            Err(run_failure_error(state, version, failure))
        }
    }
}

/// Counts a crash against the version; quarantines it when enough callers
/// struck it and its failures outnumber its successes (`quarantine.rs`).
async fn strike(state: &AppState, call: &Call<'_>, version: i64, failure: &Failure) {
    let model = call.model;
    let label = format!("{}/{}@{version}", model.owner, model.name);
    tracing::warn!(model = %label, %failure, "a call crashed its worker or exhausted its memory");
    let verdict = state.strikes.strike(model.id, version, call.caller.id, Instant::now());
    let Verdict::Quarantine { callers, strikes, successes } = verdict else { return };
    let reason = format!(
        "calls by {callers} callers crashed their worker or ran out of memory {strikes} times within {} s, against \
         {successes} successful calls (the last: {})",
        state.config.quarantine_window_ms / 1000,
        match failure {
            Failure::OutOfMemory(_) => "out of memory".to_owned(),
            other => other.to_string(),
        }
    );
    let quarantined = state.store.quarantine_version(model.id, version, &reason, store::now_ms()).await;
    state.known_models.forget_version(model.id, version);
    match quarantined {
        Ok(_) => tracing::warn!(model = %label, %reason, "version quarantined"),
        Err(error) => tracing::error!(model = %label, %error, "quarantining a version failed"),
    }
}

fn run_failure_error(state: &AppState, version: &Version, failure: Failure) -> ApiError {
    match failure {
        Failure::Failed(message) => ApiError::invalid_input(message),
        Failure::OutputTooLarge(message) => ApiError::output_too_large(message),
        Failure::OutOfMemory(_) => ApiError::model_out_of_memory(format!(
            "the model needs more memory on these inputs than a worker may use \
             (worker_memory_bytes_max = {} bytes); nothing was charged",
            state.config.worker_memory_bytes_max
        )),
        Failure::TimedOut => ApiError::inference_timeout(format!(
            "the inference ran past the limit inference_timeout_ms = {}",
            state.config.inference_timeout_ms
        )),
        Failure::Crashed(cause) => {
            ApiError::model_crashed(format!("the worker running the model died ({cause}); nothing was charged"))
        }
        Failure::ModelUnreadable(message) if message.starts_with(store::REMOTE_STORE_FAILED) => {
            ApiError::remote_store_failed(message)
        }
        Failure::ModelUnreadable(message) => {
            // Uploaded through another node whose model files this node does
            // not see, or removed behind the server's back: the operator's
            // problem, and nothing the caller did.
            tracing::error!(blob = %version.blob_sha256, %message, "a stored model's file cannot be read");
            ApiError::unavailable(
                format!(
                    "this node cannot read the model's file ({message}); nodes of one market must share their \
                     model files (blob_dir or blob_url); nothing was charged"
                ),
                1,
            )
        }
        Failure::ModelNoLongerLoads(message) => {
            // It loaded when it was uploaded; failing now means limits were
            // lowered since or the blob is damaged: the operator's problem.
            ApiError::internal(format!("stored model {} cannot run: {message}", version.blob_sha256))
        }
        Failure::Unavailable(message) => {
            tracing::error!(%message, "no worker for a call");
            ApiError::unavailable("no model worker is available; try again shortly", 1)
        }
    }
}

fn input_error(error: InputError) -> ApiError {
    match error {
        InputError::TooManyElements { .. } | InputError::ShapeTooLarge { .. } => {
            ApiError::payload_too_large(error.to_string())
        }
        other => ApiError::invalid_input(other.to_string()),
    }
}
