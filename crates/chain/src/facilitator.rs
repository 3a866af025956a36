//! An outside x402 facilitator (`chain.facilitator_url`): the market still
//! checks a payment against its own terms (without the chain), then asks
//! the facilitator's `POST /verify` whether it pays, and has it settled by
//! `POST /settle` (the facilitator sends the transfer and answers once it
//! is mined). Both take `{x402Version, paymentPayload, paymentRequirements}`
//! as x402 v2 says.

use std::time::Duration;

use alloy::primitives::B256;
use serde::{Deserialize, Serialize};

use crate::x402::{PaymentError, PaymentPayload, PaymentRequirements, X402_VERSION};

/// How long a verification may take.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// x402's reasons a facilitator may give, as the market reports them; any
/// other is reported as `unexpected_verify_error` or `unexpected_settle_error`,
/// its text in the message.
const REASONS: &[&str] = &[
    "insufficient_funds",
    "invalid_exact_evm_payload_authorization_valid_after",
    "invalid_exact_evm_payload_authorization_valid_before",
    "invalid_exact_evm_payload_authorization_value",
    "invalid_exact_evm_payload_authorization_value_mismatch",
    "invalid_exact_evm_payload_authorization_from_address_kyt",
    "invalid_exact_evm_payload_authorization_to_address_kyt",
    "invalid_exact_evm_payload_authorization_nonce_used",
    "invalid_exact_evm_payload_signature",
    "invalid_exact_evm_payload_recipient_mismatch",
    "invalid_exact_evm_payload_simulation_failed",
    "invalid_network",
    "invalid_payload",
    "invalid_payment_requirements",
    "invalid_scheme",
    "invalid_payment",
    "payment_expired",
    "unsupported_scheme",
    "invalid_x402_version",
    "invalid_transaction_state",
    "settle_exact_svm_block_height_exceeded",
];

/// A facilitator's endpoint.
#[derive(Debug, Clone)]
pub struct Facilitator {
    url: String,
    http: reqwest::Client,
    settle_timeout: Duration,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    x402_version: u32,
    payment_payload: &'a PaymentPayload,
    payment_requirements: &'a PaymentRequirements,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerifyResponse {
    is_valid: bool,
    #[serde(default)]
    invalid_reason: Option<String>,
    #[serde(default)]
    invalid_message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SettleResponse {
    success: bool,
    #[serde(default)]
    error_reason: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
    #[serde(default)]
    transaction: Option<String>,
}

/// Why a facilitator did not settle a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotSettled {
    /// It says no, and sent nothing (`transaction` none) or a transaction
    /// that failed.
    Refused { reason: &'static str, message: String, transaction: Option<B256> },
    /// It did not answer, or not as x402 says: whether it sent anything is
    /// not known.
    Unknown(String),
}

impl Facilitator {
    /// `url` (http or https; its `/verify` and `/settle` are asked);
    /// settlements may take `settle_timeout`.
    pub fn new(url: &str, settle_timeout: Duration) -> Result<Facilitator, String> {
        let parsed: reqwest::Url = url.parse().map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err("not an http(s) URL".into());
        }
        let http = reqwest::Client::builder().build().map_err(|e| e.to_string())?;
        Ok(Facilitator { url: url.trim_end_matches('/').to_owned(), http, settle_timeout })
    }

    async fn ask<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        payment: &PaymentPayload,
        terms: &PaymentRequirements,
        timeout: Duration,
    ) -> Result<T, String> {
        let body = Request { x402_version: X402_VERSION, payment_payload: payment, payment_requirements: terms };
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .timeout(timeout)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("{}{path}: {e}", self.url))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| format!("{}{path}: {e}", self.url))?;
        // A refusal may come with a 4xx status and x402's body: read it.
        serde_json::from_slice(&bytes).map_err(|_| {
            format!("{}{path} answered {status}: {}", self.url, String::from_utf8_lossy(&bytes[..bytes.len().min(200)]))
        })
    }

    /// Whether the facilitator takes `payment` for `terms`.
    pub async fn verify(&self, payment: &PaymentPayload, terms: &PaymentRequirements) -> Result<(), PaymentError> {
        let answer: VerifyResponse =
            self.ask("/verify", payment, terms, VERIFY_TIMEOUT).await.map_err(PaymentError::Unavailable)?;
        if answer.is_valid {
            return Ok(());
        }
        let said = answer.invalid_reason.unwrap_or_default();
        let reason = known(&said).unwrap_or("unexpected_verify_error");
        let detail = answer.invalid_message.map(|m| format!(": {m}")).unwrap_or_default();
        Err(PaymentError::Refused { reason, message: format!("the facilitator refused the payment ({said}{detail})") })
    }

    /// Has the facilitator settle `payment`: the transaction it mined.
    pub async fn settle(&self, payment: &PaymentPayload, terms: &PaymentRequirements) -> Result<B256, NotSettled> {
        let answer: SettleResponse =
            self.ask("/settle", payment, terms, self.settle_timeout).await.map_err(NotSettled::Unknown)?;
        let transaction = answer.transaction.as_deref().filter(|t| !t.is_empty()).map(|t| t.parse::<B256>());
        match (answer.success, transaction) {
            (true, Some(Ok(transaction))) => Ok(transaction),
            (true, _) => Err(NotSettled::Unknown(format!("{}/settle said success without a transaction", self.url))),
            (false, transaction) => {
                let said = answer.error_reason.unwrap_or_default();
                let detail = answer.error_message.map(|m| format!(": {m}")).unwrap_or_default();
                Err(NotSettled::Refused {
                    reason: known(&said).unwrap_or("unexpected_settle_error"),
                    message: format!("the facilitator did not settle the payment ({said}{detail})"),
                    transaction: transaction.and_then(Result::ok),
                })
            }
        }
    }
}

fn known(reason: &str) -> Option<&'static str> {
    REASONS.iter().copied().find(|known| *known == reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_are_facilitators() {
        assert!(Facilitator::new("http://127.0.0.1:4021/", Duration::from_secs(60)).is_ok());
        assert_eq!(
            Facilitator::new("https://x402.org/facilitator/", Duration::from_secs(1)).unwrap().url,
            "https://x402.org/facilitator"
        );
        assert!(Facilitator::new("ftp://example.com", Duration::from_secs(1)).is_err());
        assert!(Facilitator::new("not a url", Duration::from_secs(1)).is_err());
    }

    #[test]
    fn reasons_are_x402s_or_unexpected() {
        assert_eq!(known("insufficient_funds"), Some("insufficient_funds"));
        assert_eq!(known("something else"), None);
    }
}
