//! The inference routes: a call's request read from HTTP (its headers, its
//! body, JSON or binary) into a [`market::CallRequest`], and its answer
//! written back in the format asked for. The paid call itself is the
//! market's ([`market::Market::call`]).

use std::collections::BTreeMap;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chain::x402::PaymentPayload;
use domain::Sha256;
use market::{Answer, CallRequest, IdempotencyKey, InferResponse, Inputs};
use store::{Account, ModelRecord};

use crate::AppState;
use crate::answers::AnswerFor;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{InferBody, MaybeCaller};
use crate::routes::models::callable_model;
use crate::wire::{InferRequest, TensorIn};
use crate::x402;

/// Idempotency keys are the client's; bounded like every such field.
const IDEMPOTENCY_KEY_CHARS_MAX: usize = 255;
/// `X-App` tags likewise.
const APP_TAG_CHARS_MAX: usize = 64;

/// Runs the model's latest version.
#[utoipa::path(post, path = "/v1/models/{owner}/{name}/infer", tag = "inference",
    security(("api_key" = [])),
    params(("owner" = String, Path), ("name" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "retries with the same key are charged once"),
        ("X-App" = Option<String>, Header, description = "the calling application, for attribution"),
        ("PAYMENT-SIGNATURE" = Option<String>, Header, description = "an x402 v2 payment (base64 JSON), without an API key, on a market with a chain")),
    request_body(content(
        (InferRequest = "application/json"),
        (Vec<u8> = "application/octet-stream"),
    ), description = "the inputs: JSON, or with Content-Type: application/octet-stream a safetensors file of them"),
    responses(
        (status = 200, content(
            (InferResponse = "application/json"),
            (Vec<u8> = "application/octet-stream"),
        ), description = "the outputs; with Accept: application/octet-stream, a safetensors file of them whose __metadata__ holds model, version, price, latency_ms and receipt (JSON)"),
        (status = 400, description = "a PAYMENT-SIGNATURE that is not an x402 payment", body = ErrorBody),
        (status = 401, description = "no API key (and, on a market without a chain, no other way to pay; a free model always wants a key)", body = ErrorBody),
        (status = 402, description = "the balance cannot cover the price (insufficient_balance); without a key on a market with a chain, the x402 terms in the PAYMENT-REQUIRED header (payment_required), or a payment refused (payment_invalid)", body = ErrorBody),
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
    MaybeCaller(caller): MaybeCaller,
    Path((owner, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: InferBody,
) -> Response {
    let started = Instant::now();
    let paying = match Paying::of(&state, caller, &headers) {
        Ok(paying) => paying,
        Err(error) => return error.into_response(),
    };
    let answered = async {
        let model = callable_model(&state, &owner, &name, paying.account()).await?;
        let Some(latest) = model.latest_version else {
            if state.store.versions(model.id).await?.is_empty() {
                return Err(ApiError::not_found(format!("model '{owner}/{name}' has no versions yet")));
            }
            return Err(ApiError::gone(format!("every version of '{owner}/{name}' is yanked by its owner")));
        };
        Ok((infer(&state, &paying, &model, latest, &headers, body, started).await, model))
    };
    paying.answer(&state, &headers, answered.await, || format!("/v1/models/{owner}/{name}/infer"))
}

/// Runs one version of the model.
#[utoipa::path(post, path = "/v1/models/{owner}/{name}/versions/{version}/infer", tag = "inference",
    security(("api_key" = [])),
    params(("owner" = String, Path), ("name" = String, Path), ("version" = i64, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "retries with the same key are charged once"),
        ("X-App" = Option<String>, Header, description = "the calling application, for attribution"),
        ("PAYMENT-SIGNATURE" = Option<String>, Header, description = "an x402 v2 payment (base64 JSON), without an API key, on a market with a chain")),
    request_body(content(
        (InferRequest = "application/json"),
        (Vec<u8> = "application/octet-stream"),
    ), description = "the inputs: JSON, or with Content-Type: application/octet-stream a safetensors file of them"),
    responses(
        (status = 200, content(
            (InferResponse = "application/json"),
            (Vec<u8> = "application/octet-stream"),
        ), description = "the outputs; with Accept: application/octet-stream, a safetensors file of them whose __metadata__ holds model, version, price, latency_ms and receipt (JSON)"),
        (status = 400, body = ErrorBody),
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
    MaybeCaller(caller): MaybeCaller,
    Path((owner, name, version)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: InferBody,
) -> Response {
    let started = Instant::now();
    let paying = match Paying::of(&state, caller, &headers) {
        Ok(paying) => paying,
        Err(error) => return error.into_response(),
    };
    let answered = async {
        let model = callable_model(&state, &owner, &name, paying.account()).await?;
        let version =
            version.parse::<i64>().map_err(|_| ApiError::not_found(format!("version '{version}' not found")))?;
        Ok((infer(&state, &paying, &model, version, &headers, body, started).await, model))
    };
    let path = || format!("/v1/models/{owner}/{name}/versions/{version}/infer");
    paying.answer(&state, &headers, answered.await, path)
}

/// Who pays a call: an account by its key, or (on a market with a chain,
/// without a key) a payer with x402, whose `PAYMENT-SIGNATURE` the market
/// verifies and settles. Without either, a priced call is answered 402 with
/// the terms (`PAYMENT-REQUIRED`).
enum Paying {
    Account(Account),
    /// The market's issuer stands as the caller; the payment, if one came.
    Chain {
        issuer: Account,
        payment: Option<Box<PaymentPayload>>,
        limit_id: i64,
    },
}

impl Paying {
    fn of(state: &AppState, caller: Option<Account>, headers: &HeaderMap) -> ApiResult<Paying> {
        if let Some(account) = caller {
            return Ok(Paying::Account(account));
        }
        if state.chain.is_none() {
            return Err(ApiError::unauthorized("this route needs an API key: 'Authorization: Bearer <key>'"));
        }
        let payment = x402::payment(headers)?.map(Box::new);
        // Each payer's calls are limited as one key's are: by the address it
        // pays from (a negative id, never an account's).
        let payer = payment.as_ref().map_or("", |p| p.payload.authorization.from.as_str()).to_ascii_lowercase();
        let digest = Sha256::digest(payer.as_bytes());
        let limit_id = -(i64::from_be_bytes(digest.as_bytes()[..8].try_into().unwrap_or_default()) & i64::MAX) - 1;
        Ok(Paying::Chain { issuer: state.issuer.as_ref().clone(), payment, limit_id })
    }

    /// The account the call runs as.
    fn account(&self) -> &Account {
        match self {
            Paying::Account(account) | Paying::Chain { issuer: account, .. } => account,
        }
    }

    /// The id its calls are limited and counted by.
    fn limit_id(&self) -> i64 {
        match self {
            Paying::Account(account) => account.id,
            Paying::Chain { limit_id, .. } => *limit_id,
        }
    }

    /// The answer, with x402's headers when paid (or to be paid) on the
    /// chain: `PAYMENT-REQUIRED` with the terms on a 402.
    fn answer(
        &self,
        state: &AppState,
        headers: &HeaderMap,
        answered: ApiResult<(ApiResult<Response>, ModelRecord)>,
        path: impl FnOnce() -> String,
    ) -> Response {
        let (result, model) = match answered {
            Ok(answered) => answered,
            Err(error) => return error.into_response(),
        };
        let response = result.unwrap_or_else(x402::error_response);
        let Paying::Chain { .. } = self else { return response };
        let terms = |error| {
            let description = format!("one call of {}/{}", model.owner, model.name);
            x402::terms(state, headers, &path(), model.price_per_inference.minor_units(), description, error)
        };
        // The settlement's header is on the answer already (`infer`).
        x402::with_headers(response, terms, None)
    }
}

/// Reads the call from HTTP, has the market run it, and answers in the
/// format asked for. The answer counts against its caller's unsent answers
/// until it is read (`answers.rs`).
async fn infer(
    state: &AppState,
    paying: &Paying,
    model: &ModelRecord,
    version: i64,
    headers: &HeaderMap,
    body: InferBody,
    started: Instant,
) -> ApiResult<Response> {
    let (caller, limit_id) = (paying.account(), paying.limit_id());
    let payment = match paying {
        Paying::Account(_) => None,
        Paying::Chain { payment: None, .. } if model.price_per_inference.minor_units() == 0 => {
            return Err(ApiError::unauthorized(
                "this model is free to call with an API key: 'Authorization: Bearer <key>'",
            ));
        }
        Paying::Chain { payment: None, .. } => {
            return Err(ApiError::payment_required(format!(
                "a call of '{}/{}' costs {} minor units: send an API key, or pay with x402 (the terms are in the \
                 PAYMENT-REQUIRED header; retry with PAYMENT-SIGNATURE)",
                model.owner,
                model.name,
                model.price_per_inference.minor_units()
            )));
        }
        Paying::Chain { payment: Some(payment), .. } => Some(payment.as_ref().clone()),
    };
    // Held until the call is answered, whichever way.
    let _permit = state.start_call(limit_id)?;
    // A caller whose clients leave answers unread starts nothing more.
    state.unsent_answers.admit_caller(limit_id)?;
    let key = idempotency_key(headers)?;
    let app = app_tag(headers)?;
    let at_ms = dev_time(state, headers)?;
    let idempotency = match key {
        Some(key) => Some(IdempotencyKey { fingerprint: idempotency_fingerprint(model, version, &app, &body)?, key }),
        None => None,
    };
    let inputs = match body {
        InferBody::Json(request) => Inputs::Unread(Box::new(move || {
            request.inputs.into_iter().map(|(name, tensor)| tensor.into_tensor(&name).map(|t| (name, t))).collect()
        })),
        InferBody::Binary(inputs) => Inputs::Read(inputs),
    };
    let request = CallRequest { caller, model, version, app, at_ms, started, idempotency, inputs, payment };
    let answer = state.market.call(request).await?;
    let settlement = answer.settlement.as_ref().map(chain::x402::encode_header);
    let mut response = render(AnswerFormat::accepted(headers), answer)?;
    if let Some(settlement) = settlement.and_then(|s| HeaderValue::from_str(&s).ok()) {
        response.headers_mut().insert(x402::PAYMENT_RESPONSE, settlement);
    }
    Ok(AnswerFor::mark(limit_id, response))
}

/// Where a call's leaf is in the log (free calls have no receipt to say it).
pub const LOG_INDEX_HEADER: &str = "x-vitrine-log-index";

/// The call's answer in the format asked for: JSON, or the outputs' bytes
/// with the rest as metadata (a replay's outputs read back from their
/// JSON); the call's log index in a header.
fn render(format: AnswerFormat, answer: Answer) -> ApiResult<Response> {
    let Answer { response, tensors, log_index, settlement: _ } = answer;
    let mut rendered = match format {
        AnswerFormat::Json => {
            let body = serde_json::to_string(&response).map_err(ApiError::internal)?;
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        AnswerFormat::Binary => {
            let tensors = match tensors {
                Some(tensors) => tensors,
                None => serde_json::from_str::<BTreeMap<String, TensorIn>>(response.outputs.get())
                    .map_err(ApiError::internal)?
                    .into_iter()
                    .map(|(name, tensor)| tensor.into_tensor(&name).map(|t| (name, t)))
                    .collect::<Result<_, _>>()?,
            };
            let metadata = binary_metadata(&response)?;
            let parts = tensors.iter().map(|(name, t)| (name.as_str(), t.shape.as_slice(), &t.data));
            let body = crate::tensor_body::encode(parts, &metadata);
            (StatusCode::OK, [(header::CONTENT_TYPE, crate::tensor_body::MEDIA_TYPE)], body).into_response()
        }
    };
    if let Some(index) = log_index {
        rendered.headers_mut().insert(LOG_INDEX_HEADER, index.into());
    }
    Ok(rendered)
}

/// What a binary answer carries beside its outputs, as strings.
fn binary_metadata(response: &InferResponse) -> ApiResult<BTreeMap<&'static str, String>> {
    let mut metadata = BTreeMap::from([
        ("model", response.model.clone()),
        ("version", response.version.to_string()),
        ("price", response.price.clone()),
        ("latency_ms", response.latency_ms.to_string()),
    ]);
    if let Some(receipt) = &response.receipt {
        metadata.insert("receipt", serde_json::to_string(receipt).map_err(ApiError::internal)?);
    }
    Ok(metadata)
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

/// What an Idempotency-Key stands for: the model, the version the call
/// resolved to, the app tag, and the inputs in a canonical JSON form (inputs
/// by name, each tensor's fields in one order, its data re-serialised), so
/// the same request sent with other key order or whitespace is the same; a
/// binary body stands for its tensors (name, dtype, shape, the digest of
/// their bytes), whatever the order of its header.
fn idempotency_fingerprint(model: &ModelRecord, version: i64, app: &str, body: &InferBody) -> ApiResult<Sha256> {
    let mut canonical = format!("{}/{}@{version}\napp={app}\n", model.owner, model.name);
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
