//! x402's HTTP side, for every route a payment on the chain pays (a call,
//! a top-up): the `PAYMENT-SIGNATURE` read (400 when it is no payment), the
//! terms written into `PAYMENT-REQUIRED` on a 402, and the headers a browser
//! may read.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use chain::x402::PaymentPayload;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

pub const PAYMENT_SIGNATURE: &str = "payment-signature";
pub const PAYMENT_REQUIRED: &str = "payment-required";
pub const PAYMENT_RESPONSE: &str = "payment-response";

/// The request's payment, if it brought one.
pub fn payment(headers: &HeaderMap) -> ApiResult<Option<PaymentPayload>> {
    let Some(value) = headers.get(PAYMENT_SIGNATURE) else { return Ok(None) };
    let text = value.to_str().map_err(|_| ApiError::bad_request("PAYMENT-SIGNATURE is not text"))?;
    let payment =
        chain::x402::decode_header(text).map_err(|e| ApiError::bad_request(format!("PAYMENT-SIGNATURE: {e}")))?;
    Ok(Some(payment))
}

/// `PAYMENT-REQUIRED` for `amount` minor units at `path` (as the request's
/// `Host` names the server), with the refusal's reason if any. `None` when
/// the market has no chain, or the amount cannot be paid in its token.
pub fn terms(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    amount: u64,
    description: String,
    error: Option<String>,
) -> Option<HeaderValue> {
    let chain = state.chain.as_ref()?;
    let amount = chain.units().to_token(amount).ok()?;
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let terms = chain::x402::PaymentRequired {
        x402_version: chain::x402::X402_VERSION,
        error,
        resource: chain::x402::Resource {
            url: format!("http://{host}{path}"),
            description,
            mime_type: "application/json".into(),
        },
        accepts: vec![chain.requirements(amount)],
    };
    HeaderValue::from_str(&chain::x402::encode_header(&terms)).ok()
}

/// `response` with x402's headers: the terms on a 402 (`terms`, with the
/// refusal's reason), the settlement on a success, and the two readable by
/// a page's script.
pub fn with_headers(
    mut response: Response,
    terms: impl FnOnce(Option<String>) -> Option<HeaderValue>,
    settlement: Option<&chain::x402::SettlementResponse>,
) -> Response {
    if response.status() == axum::http::StatusCode::PAYMENT_REQUIRED {
        let reason = response.extensions().get::<PaymentRefusal>().map(|r| r.0.clone());
        if let Some(value) = terms(reason) {
            response.headers_mut().insert(PAYMENT_REQUIRED, value);
        }
    }
    if let Some(value) = settlement.and_then(|s| HeaderValue::from_str(&chain::x402::encode_header(s)).ok()) {
        response.headers_mut().insert(PAYMENT_RESPONSE, value);
    }
    response
        .headers_mut()
        .insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("PAYMENT-REQUIRED, PAYMENT-RESPONSE"));
    response
}

/// Why a payment was refused, carried on a 402 answer to its terms.
#[derive(Debug, Clone)]
pub struct PaymentRefusal(pub String);

/// An error's answer; a refused payment's reason goes with it.
pub fn error_response(error: ApiError) -> Response {
    use axum::response::IntoResponse;
    let reason = (error.code == "payment_invalid").then(|| error.message.clone());
    let mut response = error.into_response();
    if let Some(reason) = reason {
        response.extensions_mut().insert(PaymentRefusal(reason));
    }
    response
}
