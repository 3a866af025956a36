//! A paid call's receipt (API.md's receipt): every field comes from the
//! call's log leaf and its signature, so a receipt can be rebuilt at any
//! time, and a replayed answer carries the same one.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tlog::ReceiptLeaf;

use crate::error::CallError;

/// A receipt as the API shows it. Its fields are in alphabetical order, the
/// order its JSON has always had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Receipt {
    /// The app the call named (`X-App`), or "".
    pub app: String,
    /// The SHA-256 of the version's model file.
    pub blob_sha256: String,
    /// The caller's pseudonym (`GET /v1/account/pseudonym`).
    pub caller: String,
    pub created_at: String,
    /// Minor units, as text.
    pub creator_share: String,
    /// The error code of a failed call; `null` for one that succeeded.
    pub error: Option<String>,
    /// The proof that the leaf is in the log, on `GET /v1/receipts/{index}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inclusion: Option<Inclusion>,
    pub input_sha256: String,
    /// The leaf, base64.
    pub leaf: String,
    pub leaf_format: u8,
    /// Hex.
    pub leaf_hash: String,
    pub log_index: u64,
    pub model: String,
    pub node: String,
    pub node_share: String,
    pub output_sha256: String,
    pub price: String,
    /// A call paid on the chain (x402): its settlement's transaction. Its
    /// `caller` is then the payer, CAIP-10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement: Option<String>,
    /// The node's Ed25519 signature of the leaf, base64.
    pub signature: String,
    pub task: String,
    pub treasury_share: String,
    pub version: u32,
}

/// A leaf's inclusion proof in the tree of `size` leaves (hex hashes;
/// fields in alphabetical order, as the receipt's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Inclusion {
    pub hashes: Vec<String>,
    pub size: u64,
}

impl Receipt {
    /// The receipt of leaf `index`.
    pub fn of_leaf(index: u64, leaf: &[u8], signature: &[u8]) -> Result<Receipt, CallError> {
        let decoded =
            ReceiptLeaf::decode(leaf).map_err(|e| CallError::internal(format!("leaf {index} does not decode: {e}")))?;
        Ok(Receipt {
            app: decoded.app,
            blob_sha256: decoded.blob_sha256.to_hex(),
            caller: if decoded.payer.is_empty() { decoded.caller.to_hex() } else { decoded.payer },
            created_at: timestamp(decoded.created_at_ms),
            creator_share: decoded.creator_share.to_string(),
            error: (!decoded.error.is_empty()).then_some(decoded.error),
            inclusion: None,
            input_sha256: decoded.input_sha256.to_hex(),
            leaf: BASE64.encode(leaf),
            leaf_format: decoded.format,
            leaf_hash: hex::encode(tlog::leaf_hash(leaf)),
            log_index: index,
            model: decoded.model,
            node: decoded.node,
            node_share: decoded.node_share.to_string(),
            output_sha256: decoded.output_sha256.to_hex(),
            price: decoded.price.to_string(),
            settlement: (!decoded.settlement.is_empty()).then_some(decoded.settlement),
            signature: BASE64.encode(signature),
            task: decoded.task,
            treasury_share: decoded.treasury_share.to_string(),
            version: decoded.version,
        })
    }
}

/// Unix milliseconds as RFC 3339 (UTC), as every time in the API.
pub fn timestamp(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}
