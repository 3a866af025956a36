//! Running a model: the paid-inference path (charging arrives with the ledger).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use runtime::{InputError, LoadedModel, RunError, Signature, Tensor};
use store::{ModelRecord, Version};

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, Caller};
use crate::routes::models::visible_model;
use crate::wire::{InferRequest, InferResponse, TensorOut};

/// Runs the model's latest version.
#[utoipa::path(post, path = "/v1/models/{owner}/{name}/infer", tag = "inference",
    security(("api_key" = [])),
    params(("owner" = String, Path), ("name" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "retries with the same key are charged once"),
        ("X-App" = Option<String>, Header, description = "the calling application, for attribution")),
    request_body = InferRequest,
    responses(
        (status = 200, body = InferResponse),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 413, description = "more elements than tensor_elements_max", body = ErrorBody),
        (status = 422, description = "inputs that do not fit the model", body = ErrorBody),
        (status = 504, description = "ran past inference_timeout_ms", body = ErrorBody),
    ))]
pub async fn infer_latest(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, name)): Path<(String, String)>,
    ApiJson(request): ApiJson<InferRequest>,
) -> ApiResult<Json<InferResponse>> {
    let started = Instant::now();
    let model = visible_model(&state, &owner, &name, Some(&caller)).await?;
    let Some(latest) = model.latest_version else {
        return Err(ApiError::not_found(format!("model '{owner}/{name}' has no versions yet")));
    };
    infer(&state, &model, latest, request, started).await
}

/// Runs one version of the model.
#[utoipa::path(post, path = "/v1/models/{owner}/{name}/versions/{version}/infer", tag = "inference",
    security(("api_key" = [])),
    params(("owner" = String, Path), ("name" = String, Path), ("version" = i64, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "retries with the same key are charged once"),
        ("X-App" = Option<String>, Header, description = "the calling application, for attribution")),
    request_body = InferRequest,
    responses(
        (status = 200, body = InferResponse),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 504, body = ErrorBody),
    ))]
pub async fn infer_version(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, name, version)): Path<(String, String, String)>,
    ApiJson(request): ApiJson<InferRequest>,
) -> ApiResult<Json<InferResponse>> {
    let started = Instant::now();
    let model = visible_model(&state, &owner, &name, Some(&caller)).await?;
    let version = version.parse::<i64>().map_err(|_| ApiError::not_found(format!("version '{version}' not found")))?;
    infer(&state, &model, version, request, started).await
}

async fn infer(
    state: &AppState,
    model: &ModelRecord,
    version: i64,
    request: InferRequest,
    started: Instant,
) -> ApiResult<Json<InferResponse>> {
    let version: Version = state
        .store
        .version(model.id, version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("'{}/{}' has no version {version}", model.owner, model.name)))?;
    let inputs = request
        .inputs
        .into_iter()
        .map(|(name, tensor)| tensor.into_tensor(&name).map(|t| (name, t)))
        .collect::<ApiResult<BTreeMap<String, Tensor>>>()?;
    let signature = Signature { inputs: version.inputs.clone(), outputs: version.outputs.clone() };
    let inputs = signature.check_inputs(inputs, state.config.tensor_elements_max).map_err(input_error)?;

    let outputs = run_within_deadline(state, &version, inputs, started).await?;
    let outputs = outputs.into_iter().map(|(name, tensor)| (name, TensorOut::from(tensor))).collect();
    Ok(Json(InferResponse {
        outputs,
        version: version.version,
        price: "0".into(),
        latency_ms: (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
        receipt: None,
    }))
}

/// Runs on the blocking pool within `inference_timeout_ms` of `started`,
/// waiting for a slot included. Past the deadline the caller gets 504 at
/// once; the computation itself cannot be interrupted, so it finishes in the
/// background still holding its slot, which keeps runaway models from
/// multiplying.
async fn run_within_deadline(
    state: &AppState,
    version: &Version,
    inputs: Vec<Tensor>,
    started: Instant,
) -> ApiResult<Vec<(String, Tensor)>> {
    let timeout = Duration::from_millis(state.config.inference_timeout_ms);
    let deadline = tokio::time::Instant::from_std(started + timeout);
    let work = async {
        let model = loaded_model(state, version).await?;
        state.run_blocking(move || model.run(inputs)).await?.map_err(run_error)
    };
    match tokio::time::timeout_at(deadline, work).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::inference_timeout(format!(
            "the inference ran past the limit inference_timeout_ms = {}",
            state.config.inference_timeout_ms
        ))),
    }
}

/// The compiled model from the cache, or loaded from its blob on a miss.
async fn loaded_model(state: &AppState, version: &Version) -> ApiResult<Arc<LoadedModel>> {
    if let Some(model) = state.models.get(&version.blob_sha256) {
        return Ok(model);
    }
    let bytes = state.blobs.read(&version.blob_sha256).await?;
    let limits = state.model_limits.clone();
    let loaded = state
        .run_blocking(move || runtime::load_model(&bytes, &limits))
        .await?
        // It loaded when it was uploaded; failing now means limits were
        // lowered since or the blob is damaged: the operator's problem.
        .map_err(|e| ApiError::internal(format!("stored model {} no longer loads: {e}", version.blob_sha256)))?;
    let loaded = Arc::new(loaded);
    state.models.insert(version.blob_sha256, loaded.clone());
    Ok(loaded)
}

fn input_error(error: InputError) -> ApiError {
    match error {
        InputError::TooManyElements { .. } => ApiError::payload_too_large(error.to_string()),
        other => ApiError::invalid_input(other.to_string()),
    }
}

fn run_error(error: RunError) -> ApiError {
    match error {
        RunError::Input(input) => input_error(input),
        RunError::Failed(_) => ApiError::invalid_input(error.to_string()),
        // tract asserts some input properties (such as Gather indices in
        // range) by panicking; the panic is caught, and the inputs are what
        // triggered it.
        RunError::Panicked(message) => {
            tracing::warn!(%message, "the runtime panicked on a call's inputs");
            ApiError::invalid_input(format!("the model could not run on these inputs (the runtime failed: {message})"))
        }
    }
}
