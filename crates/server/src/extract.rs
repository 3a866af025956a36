//! Request extractors whose refusals are [`ApiError`]s: JSON bodies, query
//! strings, and the caller's identity from `Authorization: Bearer <key>`.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use domain::ApiKey;
use serde::de::DeserializeOwned;
use store::Account;

use crate::AppState;
use crate::error::ApiError;

/// A JSON body; malformed JSON is 400, a body of the wrong shape 422, an
/// oversized one 413 (`request_body_bytes_max`).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<ApiJson<T>, ApiError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let detail = rejection.body_text();
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::payload_too_large("the request body is larger than the limit request_body_bytes_max")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::bad_request("send the body as JSON with Content-Type: application/json")
        }
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::invalid_request(detail),
        _ => ApiError::bad_request(detail),
    }
}

/// An inference request's body: JSON (`InferRequest`), or with
/// `Content-Type: application/octet-stream` the binary tensor body
/// (`tensor_body.rs`). Both are bounded by `request_body_bytes_max` (413).
#[derive(Debug)]
pub enum InferBody {
    Json(crate::wire::InferRequest),
    /// The inputs read from the binary body.
    Binary(std::collections::BTreeMap<String, runtime::Tensor>),
}

impl<S: Send + Sync> FromRequest<S> for InferBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<InferBody, ApiError> {
        let binary = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes() == crate::tensor_body::MEDIA_TYPE.as_bytes());
        if !binary {
            let ApiJson(request) = ApiJson::from_request(request, state).await?;
            return Ok(InferBody::Json(request));
        }
        let bytes = axum::body::Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large("the request body is larger than the limit request_body_bytes_max")
            } else {
                ApiError::bad_request(rejection.body_text())
            }
        })?;
        let inputs = crate::tensor_body::decode(&bytes)?;
        Ok(InferBody::Binary(inputs))
    }
}

/// A query string; one that does not parse is 400.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<ApiQuery<T>, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::bad_request(query_message(rejection))),
        }
    }
}

fn query_message(rejection: QueryRejection) -> String {
    rejection.body_text()
}

/// The caller, identified by a valid API key (401 otherwise).
#[derive(Debug, Clone)]
pub struct Caller(pub Account);

/// The caller if a key is given, `None` if no key is: for public reads whose
/// answer depends on who asks (private models). A key that is given but
/// invalid is still refused, never silently ignored.
#[derive(Debug, Clone)]
pub struct MaybeCaller(pub Option<Account>);

impl FromRequestParts<AppState> for MaybeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<MaybeCaller, ApiError> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else { return Ok(MaybeCaller(None)) };
        // An address that sent too many wrong keys waits before trying more.
        let address = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
        let failed_auth = &state.address_limits.failed_auth;
        if let Some(address) = address {
            failed_auth.check(address, Instant::now()).map_err(too_many_failures)?;
        }
        let found = match header.to_str().ok().and_then(|text| text.strip_prefix("Bearer ")) {
            None => Err(ApiError::unauthorized("send the API key as 'Authorization: Bearer <key>'")),
            Some(token) => match ApiKey::parse(token.trim()) {
                Err(e) => Err(ApiError::unauthorized(format!("the API key is not valid: {e}"))),
                Ok(key) => state
                    .market
                    .known_keys
                    .account(&state.store, &key)
                    .await?
                    .ok_or_else(|| ApiError::unauthorized("the API key is not valid")),
            },
        };
        match found {
            Ok(account) => Ok(MaybeCaller(Some(account))),
            Err(refusal) => {
                if let Some(address) = address {
                    failed_auth.take(address, Instant::now()).map_err(too_many_failures)?;
                }
                Err(refusal)
            }
        }
    }
}

fn too_many_failures(retry_after_s: u64) -> ApiError {
    ApiError::rate_limited(
        "too many requests with a wrong API key from this address (failed_auth_per_address_per_minute)",
        retry_after_s,
    )
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        match MaybeCaller::from_request_parts(parts, state).await? {
            MaybeCaller(Some(account)) => Ok(Caller(account)),
            MaybeCaller(None) => {
                Err(ApiError::unauthorized("this route needs an API key: 'Authorization: Bearer <key>'"))
            }
        }
    }
}

/// The operator (401 without a key, 403 with another account's key).
#[derive(Debug, Clone)]
pub struct Operator(pub Account);

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Operator, ApiError> {
        let Caller(account) = Caller::from_request_parts(parts, state).await?;
        if !account.is_operator {
            return Err(ApiError::forbidden("this route needs the operator's key"));
        }
        Ok(Operator(account))
    }
}
