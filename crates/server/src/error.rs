//! The one error type of the HTTP API. Every non-2xx response is
//! `{"error": {"code", "message"}}` with a stable snake_case code. Internal
//! faults are logged with their cause and answered with a generic message.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use market::CallError;
use serde::Serialize;
use store::StoreError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for 429 and 503 answers.
    pub retry_after_s: Option<u64>,
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, for programs: `not_found`, `invalid_input`, …
    #[schema(example = "not_found")]
    pub code: &'static str,
    /// For people; may change between versions.
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after_s: None }
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }
    pub fn payload_too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }
    pub fn invalid_model(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_model", message)
    }
    pub fn invalid_input(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", message)
    }
    /// A request that is well-formed but whose values are wrong (422).
    pub fn invalid_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }
    /// A request that could not be read at all (400).
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
    /// A request body that ended before its length, or whose connection
    /// broke on the way (400 `upload_interrupted`): sending it again may
    /// work; a resumable upload keeps what arrived.
    pub fn upload_interrupted(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "upload_interrupted", message)
    }
    /// An amount that would take a running total past what the ledger holds.
    pub fn amount_too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "amount_too_large", message)
    }
    /// A payout to an address the account has not proven it holds (422).
    pub fn address_not_proven(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "address_not_proven", message)
    }
    /// A priced call without a key or a payment: x402's terms go with it
    /// (`PAYMENT-REQUIRED`, added by the inference route).
    pub fn payment_required(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYMENT_REQUIRED, "payment_required", message)
    }
    /// An x402 payment that is refused: nothing ran, or nothing was paid.
    pub fn payment_invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYMENT_REQUIRED, "payment_invalid", message)
    }
    pub fn insufficient_balance(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYMENT_REQUIRED, "insufficient_balance", message)
    }
    pub fn inference_timeout(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::GATEWAY_TIMEOUT, "inference_timeout", message)
    }
    /// The call (these inputs, this model) needs more memory than a worker may have.
    pub fn model_out_of_memory(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "model_out_of_memory", message)
    }
    /// The worker running the call died (a signal, a forbidden system call).
    pub fn model_crashed(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_GATEWAY, "model_crashed", message)
    }
    /// The model's answer is larger than `output_elements_max`.
    pub fn output_too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "output_too_large", message)
    }
    /// A deleted or taken-down model, or a yanked version: it was here and
    /// will not answer again (until restored or un-yanked).
    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::GONE, "gone", message)
    }
    /// An upload past its owner's storage quota.
    pub fn storage_quota_exceeded(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "storage_quota_exceeded", message)
    }
    /// The version is out of service until the operator lifts its quarantine.
    pub fn model_quarantined(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "model_quarantined", message)
    }
    /// Too many calls from one key, at once or per minute.
    pub fn rate_limited(message: impl Into<String>, retry_after_s: u64) -> ApiError {
        ApiError {
            retry_after_s: Some(retry_after_s),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }
    pub fn unavailable(message: impl Into<String>, retry_after_s: u64) -> ApiError {
        ApiError {
            retry_after_s: Some(retry_after_s),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    /// Logs `cause` and answers 500 without revealing it.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(%cause, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; the server has logged it")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code, message: self.message } };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_s {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The paid call's errors, each to its status and stable code.
impl From<CallError> for ApiError {
    fn from(error: CallError) -> ApiError {
        let code = error.code();
        match error {
            CallError::NotFound(message) => ApiError::not_found(message),
            CallError::Gone(message) => ApiError::gone(message),
            CallError::Quarantined(message) => ApiError::model_quarantined(message),
            CallError::InvalidInput(message) => ApiError::invalid_input(message),
            CallError::InvalidRequest(message) => ApiError::invalid_request(message),
            CallError::TooLarge(message) => ApiError::payload_too_large(message),
            CallError::InsufficientBalance(message) => ApiError::insufficient_balance(message),
            CallError::PaymentInvalid { reason, message } => ApiError::payment_invalid(format!("{message} ({reason})")),
            CallError::MalformedPayment(message) => ApiError::bad_request(message),
            CallError::Conflict(message) => ApiError::conflict(message),
            CallError::AmountTooLarge(message) => ApiError::amount_too_large(message),
            CallError::OutOfMemory(message) => ApiError::model_out_of_memory(message),
            CallError::OutputTooLarge(message) => ApiError::output_too_large(message),
            CallError::TimedOut(message) => ApiError::inference_timeout(message),
            CallError::Crashed(message) => ApiError::model_crashed(message),
            CallError::Unavailable { message, retry_after_s } => ApiError::unavailable(message, retry_after_s),
            // Logged where it happened.
            error @ CallError::RemoteStoreFailed => ApiError::unavailable(error.to_string(), 5),
            error @ CallError::ShuttingDown => ApiError::unavailable(error.to_string(), 1),
            error @ CallError::Internal => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, code, error.to_string()),
        }
    }
}

/// The store's errors, as the market maps them.
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        CallError::from(error).into()
    }
}

impl From<store::SequencerError> for ApiError {
    fn from(error: store::SequencerError) -> ApiError {
        CallError::from(error).into()
    }
}

impl From<std::io::Error> for ApiError {
    fn from(error: std::io::Error) -> ApiError {
        if store::RemoteStoreFailed::caused(&error) {
            // An upload put there, or a file fetched from there: the
            // store's outage, not the request's fault (logged, 503).
            return CallError::remote_store_failed(error).into();
        }
        ApiError::internal(error)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
