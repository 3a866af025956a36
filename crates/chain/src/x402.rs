//! x402 v2 (x402-foundation/x402 `specs/`): the terms a priced resource
//! answers 402 with, the payment a client retries with, and the market's
//! own verification and settlement of the `exact` scheme on EVM with
//! EIP-3009 (`transferWithAuthorization`).
//!
//! Header values are standard, padded base64 of JSON ([`encode_header`],
//! [`decode_header`]). A payment must match the terms exactly: amount equal
//! to the price, `payTo`, `asset`, `network`, and the terms' `extra` a
//! subset of `accepted.extra`.

use std::time::{SystemTime, UNIX_EPOCH};

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, Bytes, Signature, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::{SolCall, SolStruct, eip712_domain};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Chain;

/// The version of x402 spoken here.
pub const X402_VERSION: u32 = 2;
/// The shortest `maxTimeoutSeconds` offered, as the specification asks.
pub const MAX_TIMEOUT_SECONDS_MIN: u64 = 60;
/// How far back a settlement sent by a facilitator is looked for.
pub const AUTHORIZATION_LOOKBACK_BLOCKS: u64 = 10_000;
/// An authorization must stay valid this long past its verification, for
/// the call to run and the settlement to be mined.
const VALID_BEFORE_MARGIN_S: u64 = 6;

/// The token's EIP-3009 side, as the market calls it (the generated
/// `transferWithAuthorization` takes EIP-3009's nine parameters).
#[allow(clippy::too_many_arguments)]
mod contracts {
    alloy::sol! {
        /// EIP-3009's signed message.
        struct TransferWithAuthorization {
            address from;
            address to;
            uint256 value;
            uint256 validAfter;
            uint256 validBefore;
            bytes32 nonce;
        }

        #[sol(rpc)]
        interface Erc3009 {
            function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
            function transferWithAuthorization(
                address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce,
                uint8 v, bytes32 r, bytes32 s
            ) external;
        }
    }
}
use contracts::{Erc3009, TransferWithAuthorization};

/// `PAYMENT-REQUIRED`: what the resource costs and how it may be paid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequired {
    pub x402_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub resource: Resource,
    pub accepts: Vec<PaymentRequirements>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    pub url: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub mime_type: String,
}

/// One way to pay: here always `exact` on the market's network and token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    pub scheme: String,
    pub network: String,
    /// Token units, as text.
    pub amount: String,
    pub asset: String,
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    #[serde(default)]
    pub extra: Map<String, Value>,
}

/// `PAYMENT-SIGNATURE`: the client's payment for the terms it accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayload {
    pub x402_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Resource>,
    pub accepted: PaymentRequirements,
    pub payload: ExactPayload,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Value>,
}

/// The `exact` scheme's EIP-3009 payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExactPayload {
    /// 65 bytes, hex.
    pub signature: String,
    pub authorization: Authorization,
}

/// EIP-3009's `transferWithAuthorization` parameters, as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Authorization {
    pub from: String,
    pub to: String,
    pub value: String,
    pub valid_after: String,
    pub valid_before: String,
    /// 32 bytes, hex.
    pub nonce: String,
}

/// `PAYMENT-RESPONSE`: how the payment was settled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettlementResponse {
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    /// The settlement's transaction hash ("" when it failed).
    pub transaction: String,
    pub network: String,
    /// The payer's bare address.
    pub payer: String,
}

/// A header value: standard, padded base64 of the JSON.
pub fn encode_header<T: Serialize>(value: &T) -> String {
    // Serialising these plain structs cannot fail.
    BASE64.encode(serde_json::to_vec(value).unwrap_or_default())
}

/// Reads a header value written by [`encode_header`] (or by a client).
pub fn decode_header<T: for<'de> Deserialize<'de>>(value: &str) -> Result<T, PaymentError> {
    let bytes = BASE64
        .decode(value.trim())
        .map_err(|e| PaymentError::Malformed(format!("the header is not standard base64: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| PaymentError::Malformed(format!("the header's JSON does not fit: {e}")))
}

/// Why a payment is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// Not a payment at all (400).
    #[error("{0}")]
    Malformed(String),
    /// A payment that is refused (402 `payment_invalid`): `reason` is x402's
    /// `errorReason`.
    #[error("{message}")]
    Refused { reason: &'static str, message: String },
    /// The chain did not answer (503): nothing ran and nothing moved.
    #[error("the chain's node did not answer: {0}")]
    Unavailable(String),
}

impl PaymentError {
    fn refused(reason: &'static str, message: impl Into<String>) -> PaymentError {
        PaymentError::Refused { reason, message: message.into() }
    }
}

/// A payment that passed every check: what settling it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub payer: Address,
    pub value: U256,
    pub valid_after: U256,
    pub valid_before: U256,
    pub nonce: B256,
    pub signature: Signature,
}

impl Verified {
    /// The payer as CAIP-10: `eip155:<chain id>:0x…`.
    pub fn payer_caip10(&self, network: &str) -> String {
        format!("{network}:{}", lower(self.payer))
    }

    /// `validBefore` in Unix seconds (saturated).
    pub fn valid_before_s(&self) -> u64 {
        u64::try_from(self.valid_before).unwrap_or(u64::MAX)
    }
}

/// A settled payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub transaction: B256,
    pub block: u64,
    /// Settled by the outside facilitator: its hash was not known (nor
    /// stored) before it was sent.
    pub by_facilitator: bool,
}

/// Why a settlement did not happen. `Reverted` and `NotSent` moved
/// nothing; `Unknown` may have: the transaction was sent and its fate is
/// not known yet (its hash was handed to `before_sending`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    /// The node says the transfer would fail now (tokens moved away, the
    /// authorization used): nothing was signed.
    #[error("the settlement would revert: {0}")]
    WouldRevert(String),
    #[error("the settlement was not sent: {0}")]
    NotSent(String),
    #[error(
        "the settlement {transaction} reverted: the payer's authorization no longer pays (tokens moved away, or the authorization was used)"
    )]
    Reverted { transaction: B256 },
    /// Sent (by the market, `transaction`; or maybe by the facilitator,
    /// whose transaction may not be known) and its receipt not seen.
    #[error("the settlement was sent but its receipt was not seen: {message}")]
    Unknown { transaction: Option<B256>, message: String },
}

/// Lowercase hex of an address, as the market writes addresses.
pub fn lower(address: Address) -> String {
    format!("{address:#x}")
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Chain {
    /// The terms for `amount` token units at `url`.
    pub fn requirements(&self, amount: U256) -> PaymentRequirements {
        let mut extra = Map::new();
        extra.insert("name".into(), Value::String(self.token.name.clone()));
        extra.insert("version".into(), Value::String(self.token.version.clone()));
        PaymentRequirements {
            scheme: "exact".into(),
            network: self.network.clone(),
            amount: amount.to_string(),
            asset: lower(self.token.address),
            pay_to: lower(self.address()),
            max_timeout_seconds: self.max_timeout_seconds,
            extra,
        }
    }

    /// Checks `payment` against `terms` as x402's `exact` scheme says: the
    /// terms match exactly, the authorization pays them to the market within
    /// its time window, its signature is the payer's, the payer holds the
    /// amount, its nonce is unused, and the transfer would succeed now.
    pub async fn verify(
        &self,
        payment: &PaymentPayload,
        terms: &PaymentRequirements,
    ) -> Result<Verified, PaymentError> {
        let verified = check_terms(payment, terms, self.chain_id, &self.token, now_s())?;
        if let Some(facilitator) = &self.facilitator {
            facilitator.verify(payment, terms).await?;
            return Ok(verified);
        }
        let token = Erc3009::new(self.token.address, &self.provider);
        let unavailable = |e: alloy::contract::Error| PaymentError::Unavailable(e.to_string());
        let balance = crate::Erc20::new(self.token.address, &self.provider)
            .balanceOf(verified.payer)
            .call()
            .await
            .map_err(unavailable)?;
        if balance < verified.value {
            return Err(PaymentError::refused(
                "insufficient_funds",
                format!("the payer holds {balance} token units, {} are needed", verified.value),
            ));
        }
        if token.authorizationState(verified.payer, verified.nonce).call().await.map_err(unavailable)? {
            return Err(PaymentError::refused(
                "invalid_exact_evm_payload_authorization_nonce_used",
                "this authorization's nonce was used already",
            ));
        }
        let simulated = self.provider.call(self.settlement_request(&verified)).await;
        if let Err(error) = simulated {
            return match error {
                alloy::transports::RpcError::ErrorResp(response) => Err(PaymentError::refused(
                    "invalid_exact_evm_payload_simulation_failed",
                    format!("the transfer would fail: {}", response.message),
                )),
                other => Err(PaymentError::Unavailable(other.to_string())),
            };
        }
        Ok(verified)
    }

    fn settlement_request(&self, verified: &Verified) -> TransactionRequest {
        let call = Erc3009::transferWithAuthorizationCall {
            from: verified.payer,
            to: self.address(),
            value: verified.value,
            validAfter: verified.valid_after,
            validBefore: verified.valid_before,
            nonce: verified.nonce,
            v: 27 + u8::from(verified.signature.v()),
            r: verified.signature.r().into(),
            s: verified.signature.s().into(),
        };
        TransactionRequest::default()
            .with_from(self.address())
            .with_to(self.token.address)
            .with_input(Bytes::from(call.abi_encode()))
    }

    /// Settles a verified payment (`payment` of `terms`): signs the transfer
    /// with the market's key, hands its hash to `before_sending` (which
    /// stores it durably, so that a restart finds it), sends it and waits
    /// for its receipt. Through a facilitator, `before_sending` is handed
    /// no hash (the facilitator signs and sends it) and the facilitator's
    /// `/settle` answers once it is mined.
    pub async fn settle<F, Fut>(
        &self,
        verified: &Verified,
        payment: &PaymentPayload,
        terms: &PaymentRequirements,
        before_sending: F,
    ) -> Result<Settled, SettleError>
    where
        F: FnOnce(Option<B256>) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let not_sent = |e: String| SettleError::NotSent(e);
        if let Some(facilitator) = &self.facilitator {
            before_sending(None).await.map_err(not_sent)?;
            let transaction = match facilitator.settle(payment, terms).await {
                Ok(transaction) => transaction,
                Err(crate::facilitator::NotSettled::Refused { transaction: Some(transaction), .. }) => {
                    return Err(SettleError::Reverted { transaction });
                }
                Err(crate::facilitator::NotSettled::Refused { message, .. }) => return Err(not_sent(message)),
                Err(crate::facilitator::NotSettled::Unknown(message)) => {
                    return Err(SettleError::Unknown { transaction: None, message });
                }
            };
            let (succeeded, block) = self.receipt(transaction).await?;
            if !succeeded {
                return Err(SettleError::Reverted { transaction });
            }
            return Ok(Settled { transaction, block, by_facilitator: true });
        }
        let request = self.priced(self.settlement_request(verified)).await.map_err(|unpriced| match unpriced {
            crate::Unpriced::WouldRevert(message) => SettleError::WouldRevert(message),
            crate::Unpriced::Unavailable(message) => not_sent(message),
        })?;
        let mut nonce = self.nonce.lock().await;
        let next = self.next_nonce(&mut nonce).await.map_err(not_sent)?;
        let envelope = self.sign_request(request.with_nonce(next)).await.map_err(not_sent)?;
        let transaction = *envelope.tx_hash();
        before_sending(Some(transaction)).await.map_err(not_sent)?;
        let sent = self.provider.send_tx_envelope(envelope).await;
        match sent {
            Ok(_) => *nonce = Some(next + 1),
            Err(error) => {
                // The node's count is read again for the next one.
                *nonce = None;
                return Err(match error {
                    // The node refused it (no ether for gas, say): never sent.
                    alloy::transports::RpcError::ErrorResp(response) => {
                        SettleError::NotSent(format!("the node refused {transaction:#x}: {}", response.message))
                    }
                    other => SettleError::Unknown { transaction: Some(transaction), message: other.to_string() },
                });
            }
        }
        drop(nonce);
        let (succeeded, block) = self.receipt(transaction).await?;
        if !succeeded {
            return Err(SettleError::Reverted { transaction });
        }
        Ok(Settled { transaction, block, by_facilitator: false })
    }

    /// Waits for `transaction`'s receipt (up to the settlement's wait): its
    /// success and block. Asked at once and then at growing intervals (to a
    /// quarter second): a node that mines at once answers within
    /// milliseconds, where a fixed poll would wait its whole interval.
    pub(crate) async fn receipt(&self, transaction: B256) -> Result<(bool, u64), SettleError> {
        let deadline = tokio::time::Instant::now() + self.settle_timeout;
        let mut wait = std::time::Duration::from_millis(5);
        loop {
            let asked = self.provider.get_transaction_receipt(transaction).await;
            match asked {
                Ok(Some(receipt)) => return Ok((receipt.status(), receipt.block_number.unwrap_or_default())),
                Ok(None) => {}
                Err(error) if tokio::time::Instant::now() >= deadline => {
                    return Err(SettleError::Unknown { transaction: Some(transaction), message: error.to_string() });
                }
                Err(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                let message = format!("{transaction:#x} not mined within {} s", self.settle_timeout.as_secs());
                return Err(SettleError::Unknown { transaction: Some(transaction), message });
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(std::time::Duration::from_millis(250));
        }
    }

    /// The transaction that used `payer`'s authorization `nonce`
    /// (`AuthorizationUsed`), looked for in the newest
    /// [`AUTHORIZATION_LOOKBACK_BLOCKS`] blocks: a settlement a facilitator
    /// sent, whose hash the market never learnt.
    pub async fn authorization_transaction(&self, payer: Address, nonce: B256) -> Result<Option<B256>, String> {
        use alloy::rpc::types::Filter;
        use alloy::sol_types::SolEvent;
        let head = self.provider.get_block_number().await.map_err(|e| e.to_string())?;
        let filter = Filter::new()
            .address(self.token.address)
            .from_block(head.saturating_sub(AUTHORIZATION_LOOKBACK_BLOCKS))
            .to_block(head)
            .event_signature(crate::deposits::AuthorizationUsed::SIGNATURE_HASH)
            .topic1(B256::left_padding_from(payer.as_slice()))
            .topic2(nonce);
        let logs = self.provider.get_logs(&filter).await.map_err(|e| e.to_string())?;
        Ok(logs.first().and_then(|log| log.transaction_hash))
    }

    /// Whether `transaction` is mined, and whether it succeeded; `None`
    /// while it is not (or not known to the node).
    pub async fn transaction_outcome(&self, transaction: B256) -> Result<Option<(bool, u64)>, String> {
        let receipt = self.provider.get_transaction_receipt(transaction).await.map_err(|e| e.to_string())?;
        Ok(receipt.map(|r| (r.status(), r.block_number.unwrap_or_default())))
    }

    /// Whether `payer`'s authorization `nonce` was used on the chain.
    pub async fn authorization_used(&self, payer: Address, nonce: B256) -> Result<bool, String> {
        Erc3009::new(self.token.address, &self.provider)
            .authorizationState(payer, nonce)
            .call()
            .await
            .map_err(|e| e.to_string())
    }
}

/// The checks that need no chain: the terms match, the authorization pays
/// them to `payTo` within its window (at `now` Unix seconds), and its
/// signature recovers to its `from`.
pub fn check_terms(
    payment: &PaymentPayload,
    terms: &PaymentRequirements,
    chain_id: u64,
    token: &crate::Token,
    now: u64,
) -> Result<Verified, PaymentError> {
    let refused = PaymentError::refused;
    if payment.x402_version != X402_VERSION {
        return Err(refused("invalid_x402_version", format!("x402Version {} is not 2", payment.x402_version)));
    }
    let accepted = &payment.accepted;
    if accepted.scheme != terms.scheme || accepted.network != terms.network {
        return Err(refused(
            "invalid_scheme",
            format!(
                "the payment is {} on {}; this market takes {} on {}",
                accepted.scheme, accepted.network, terms.scheme, terms.network
            ),
        ));
    }
    let address = |text: &str, what: &str| {
        text.parse::<Address>().map_err(|_| PaymentError::Malformed(format!("{what} {text:?} is not an address")))
    };
    if address(&accepted.asset, "accepted.asset")? != token.address {
        return Err(refused("invalid_exact_evm_asset_mismatch", format!("the payment's asset is not {}", terms.asset)));
    }
    let pay_to = address(&terms.pay_to, "payTo")?;
    if address(&accepted.pay_to, "accepted.payTo")? != pay_to {
        return Err(refused("invalid_exact_evm_payload_recipient_mismatch", format!("payTo must be {}", terms.pay_to)));
    }
    if accepted.amount != terms.amount {
        return Err(refused(
            "invalid_exact_evm_payload_authorization_value",
            format!("the accepted amount is {}; the price is {} token units", accepted.amount, terms.amount),
        ));
    }
    if let Some((key, _)) = terms.extra.iter().find(|(k, v)| accepted.extra.get(*k) != Some(*v)) {
        return Err(refused("invalid_exact_evm_extra", format!("accepted.extra.{key} differs from the terms'")));
    }
    let authorization = &payment.payload.authorization;
    let number = |text: &str, what: &str| {
        text.parse::<U256>()
            .map_err(|_| PaymentError::Malformed(format!("authorization.{what} {text:?} is not a number")))
    };
    let from = address(&authorization.from, "authorization.from")?;
    if address(&authorization.to, "authorization.to")? != pay_to {
        return Err(refused(
            "invalid_exact_evm_payload_recipient_mismatch",
            format!("the authorization pays {}, not the market's {}", authorization.to, terms.pay_to),
        ));
    }
    let value = number(&authorization.value, "value")?;
    if value.to_string() != terms.amount {
        return Err(refused(
            "invalid_exact_evm_payload_authorization_value",
            format!("the authorization pays {value} token units; the price is {}", terms.amount),
        ));
    }
    let valid_after = number(&authorization.valid_after, "validAfter")?;
    let valid_before = number(&authorization.valid_before, "validBefore")?;
    if valid_after > U256::from(now) {
        return Err(refused(
            "invalid_exact_evm_payload_authorization_valid_after",
            format!("the authorization is valid only after {valid_after} (now {now})"),
        ));
    }
    if valid_before <= U256::from(now + VALID_BEFORE_MARGIN_S) {
        return Err(refused(
            "invalid_exact_evm_payload_authorization_valid_before",
            format!("the authorization expires at {valid_before}, too soon to settle (now {now})"),
        ));
    }
    let nonce = authorization.nonce.parse::<B256>().map_err(|_| {
        PaymentError::Malformed(format!("authorization.nonce {:?} is not 32 bytes of hex", authorization.nonce))
    })?;
    let bytes = alloy::primitives::hex::decode(&payment.payload.signature)
        .map_err(|_| PaymentError::Malformed("payload.signature is not hex".into()))?;
    let signature = Signature::from_raw(&bytes).map_err(|_| {
        refused("invalid_exact_evm_payload_signature", "payload.signature is not a 65-byte ECDSA signature".to_owned())
    })?;
    let message = TransferWithAuthorization {
        from,
        to: pay_to,
        value,
        validAfter: valid_after,
        validBefore: valid_before,
        nonce,
    };
    let signer = signature.recover_address_from_prehash(&signing_hash(&message, chain_id, token));
    if signer.ok() != Some(from) {
        return Err(refused(
            "invalid_exact_evm_payload_signature",
            format!("the signature is not {from}'s signature of this authorization"),
        ));
    }
    Ok(Verified { payer: from, value, valid_after, valid_before, nonce, signature })
}

/// What an EIP-3009 authorization's signature signs: the message's EIP-712
/// hash in the token's domain (its name, version, chain and address).
fn signing_hash(message: &TransferWithAuthorization, chain_id: u64, token: &crate::Token) -> B256 {
    let domain = eip712_domain! {
        name: token.name.clone(),
        version: token.version.clone(),
        chain_id: chain_id,
        verifying_contract: token.address,
    };
    message.eip712_signing_hash(&domain)
}

/// Signs a payment for `terms` as an x402 client does: an EIP-3009
/// authorization from `key`'s address, valid from now for
/// `maxTimeoutSeconds`, with a random nonce. For tests and the CLI.
pub fn sign_payment(
    key: &alloy::signers::local::PrivateKeySigner,
    terms: &PaymentRequirements,
    chain_id: u64,
    token: &crate::Token,
    valid_after: u64,
    valid_before: u64,
) -> Result<PaymentPayload, PaymentError> {
    use alloy::signers::SignerSync;
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|e| PaymentError::Malformed(format!("no randomness for a nonce: {e}")))?;
    let nonce = B256::from(nonce);
    let pay_to: Address = terms
        .pay_to
        .parse()
        .map_err(|_| PaymentError::Malformed(format!("payTo {:?} is not an address", terms.pay_to)))?;
    let value: U256 = terms
        .amount
        .parse()
        .map_err(|_| PaymentError::Malformed(format!("amount {:?} is not a number", terms.amount)))?;
    let message = TransferWithAuthorization {
        from: key.address(),
        to: pay_to,
        value,
        validAfter: U256::from(valid_after),
        validBefore: U256::from(valid_before),
        nonce,
    };
    let signature = key
        .sign_hash_sync(&signing_hash(&message, chain_id, token))
        .map_err(|e| PaymentError::Malformed(format!("signing failed: {e}")))?;
    Ok(PaymentPayload {
        x402_version: X402_VERSION,
        resource: None,
        accepted: terms.clone(),
        payload: ExactPayload {
            signature: format!("0x{}", alloy::primitives::hex::encode(signature.as_bytes())),
            authorization: Authorization {
                from: lower(key.address()),
                to: terms.pay_to.clone(),
                value: terms.amount.clone(),
                valid_after: valid_after.to_string(),
                valid_before: valid_before.to_string(),
                nonce: format!("{nonce:#x}"),
            },
        },
        extensions: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::local::PrivateKeySigner;

    const NOW: u64 = 1_800_000_000;

    fn token() -> crate::Token {
        crate::Token {
            address: Address::repeat_byte(1),
            name: "OpenGradient".into(),
            version: "2".into(),
            decimals: 18,
        }
    }

    fn terms() -> PaymentRequirements {
        let mut extra = Map::new();
        extra.insert("name".into(), "OpenGradient".into());
        extra.insert("version".into(), "2".into());
        PaymentRequirements {
            scheme: "exact".into(),
            network: "eip155:31337".into(),
            amount: "2000000000000000".into(),
            asset: lower(Address::repeat_byte(1)),
            pay_to: lower(Address::repeat_byte(2)),
            max_timeout_seconds: 60,
            extra,
        }
    }

    fn paid(key: &PrivateKeySigner, terms: &PaymentRequirements) -> PaymentPayload {
        sign_payment(key, terms, 31337, &token(), NOW - 600, NOW + 60).unwrap()
    }

    fn reason(result: Result<Verified, PaymentError>) -> &'static str {
        match result {
            Err(PaymentError::Refused { reason, .. }) => reason,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_payment_of_the_terms_verifies_and_names_its_payer() {
        let key = PrivateKeySigner::random();
        let payment = paid(&key, &terms());
        // Through its header, as a client sends it.
        let payment: PaymentPayload = decode_header(&encode_header(&payment)).unwrap();
        let verified = check_terms(&payment, &terms(), 31337, &token(), NOW).unwrap();
        assert_eq!(verified.payer, key.address());
        assert_eq!(verified.value, U256::from(2_000_000_000_000_000u64));
        assert_eq!(verified.payer_caip10("eip155:31337"), format!("eip155:31337:{}", lower(key.address())));
    }

    #[test]
    fn every_mismatch_is_refused_with_its_reason() {
        let key = PrivateKeySigner::random();
        let terms = terms();
        let check = |payment: &PaymentPayload| check_terms(payment, &terms, 31337, &token(), NOW);

        let mut forged = paid(&PrivateKeySigner::random(), &terms);
        forged.payload.authorization.from = lower(key.address());
        assert_eq!(reason(check(&forged)), "invalid_exact_evm_payload_signature");
        // Signed for another chain: the domain differs, so does the signer.
        let other_chain = sign_payment(&key, &terms, 8453, &token(), NOW - 600, NOW + 60).unwrap();
        assert_eq!(reason(check(&other_chain)), "invalid_exact_evm_payload_signature");
        let elsewhere = PaymentRequirements { pay_to: lower(Address::repeat_byte(3)), ..terms.clone() };
        assert_eq!(reason(check(&paid(&key, &elsewhere))), "invalid_exact_evm_payload_recipient_mismatch");
        let cheaper = PaymentRequirements { amount: "1999999999999999".into(), ..terms.clone() };
        assert_eq!(reason(check(&paid(&key, &cheaper))), "invalid_exact_evm_payload_authorization_value");
        let mut under = paid(&key, &cheaper);
        under.accepted = terms.clone();
        assert_eq!(reason(check(&under)), "invalid_exact_evm_payload_authorization_value");
        let expired = sign_payment(&key, &terms, 31337, &token(), NOW - 600, NOW + 3).unwrap();
        assert_eq!(reason(check(&expired)), "invalid_exact_evm_payload_authorization_valid_before");
        let early = sign_payment(&key, &terms, 31337, &token(), NOW + 10, NOW + 600).unwrap();
        assert_eq!(reason(check(&early)), "invalid_exact_evm_payload_authorization_valid_after");
        let other_asset = PaymentRequirements { asset: lower(Address::repeat_byte(9)), ..terms.clone() };
        assert_eq!(reason(check(&paid(&key, &other_asset))), "invalid_exact_evm_asset_mismatch");
        let other_network = PaymentRequirements { network: "eip155:8453".into(), ..terms.clone() };
        assert_eq!(reason(check(&paid(&key, &other_network))), "invalid_scheme");
        let mut no_extra = paid(&key, &terms);
        no_extra.accepted.extra.remove("version");
        assert_eq!(reason(check(&no_extra)), "invalid_exact_evm_extra");
        let mut version_one = paid(&key, &terms);
        version_one.x402_version = 1;
        assert_eq!(reason(check(&version_one)), "invalid_x402_version");
        let mut short = paid(&key, &terms);
        short.payload.signature = "0x1234".into();
        assert_eq!(reason(check(&short)), "invalid_exact_evm_payload_signature");
        let mut garbage = paid(&key, &terms);
        garbage.payload.authorization.nonce = "not hex".into();
        assert!(matches!(check(&garbage), Err(PaymentError::Malformed(_))));
        assert!(matches!(decode_header::<PaymentPayload>("not base64!"), Err(PaymentError::Malformed(_))));
    }
}
