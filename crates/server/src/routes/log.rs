//! The transparency log's public routes: checkpoint, keys, entries, proofs,
//! receipts; and the caller's own pseudonym.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use market::receipt::{Inclusion, Receipt};

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiQuery, Caller};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LogKeyView {
    /// The key name, which is also the checkpoints' origin line.
    pub name: String,
    /// Base64 of the 32-byte Ed25519 public key.
    pub public_key: String,
    /// The C2SP verifier key: `<name>+<key ID hex>+<base64(0x01 || key)>`.
    pub vkey: String,
    /// Receipt keys of the serving nodes, by node name (base64 Ed25519).
    pub node_keys: BTreeMap<String, String>,
    /// The witnesses this market submits its checkpoints to (C2SP
    /// tlog-witness): their verifier keys, whose cosignatures the
    /// checkpoint carries when they gave one.
    pub witnesses: Vec<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EntriesQuery {
    pub start: u64,
    /// Exclusive.
    pub end: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LogEntryView {
    pub index: u64,
    /// Base64 of the canonical leaf bytes.
    pub leaf: String,
    pub leaf_hash: String,
    /// Base64 of the serving node's Ed25519 signature of the leaf.
    pub signature: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LogEntries {
    pub items: Vec<LogEntryView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InclusionQuery {
    pub index: u64,
    pub size: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InclusionProof {
    pub index: u64,
    pub size: u64,
    /// Lowercase hex, leaf to root (RFC 9162 §2.1.3).
    pub hashes: Vec<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    pub from: u64,
    pub to: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    /// Lowercase hex (RFC 9162 §2.1.4).
    pub hashes: Vec<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CheckpointsQuery {
    /// Only checkpoints of fewer leaves than this (the next page).
    pub before: Option<u64>,
    /// At most this many (default 20, at most page_size_max).
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CheckpointView {
    /// Leaves in the tree.
    pub size: u64,
    /// The tree's root hash, base64 (as in the note).
    pub root: String,
    pub created_at: String,
    /// The signed note, as `GET /v1/log/checkpoint` serves it.
    pub note: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CheckpointList {
    /// Largest first.
    pub items: Vec<CheckpointView>,
    /// `before` for the next page; `null` on the last.
    pub next_before: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PseudonymView {
    /// How the caller appears in the log (hex).
    pub pseudonym: String,
    /// Proves the pseudonym is the caller's: `SHA-256("vitrine-caller-v1" || secret) = pseudonym`.
    pub secret: String,
}

fn hex_list(hashes: Vec<tlog::Hash>) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

/// The latest signed checkpoint, as a C2SP signed note.
#[utoipa::path(get, path = "/v1/log/checkpoint", tag = "log",
    responses((status = 200, content_type = "text/plain", body = String), (status = 503, body = ErrorBody)))]
pub async fn checkpoint(State(state): State<AppState>) -> ApiResult<Response> {
    let latest = state.store.latest_checkpoint().await?.ok_or_else(|| ApiError::unavailable("no checkpoint yet", 1))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], latest.note).into_response())
}

/// The checkpoints signed so far, largest first: the log's history, each
/// consistent with every earlier one (`/v1/log/proof/consistency` proves it).
#[utoipa::path(get, path = "/v1/log/checkpoints", tag = "log",
    params(CheckpointsQuery),
    responses((status = 200, body = CheckpointList), (status = 400, body = ErrorBody)))]
pub async fn checkpoints(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<CheckpointsQuery>,
) -> ApiResult<Json<CheckpointList>> {
    let limit = query.limit.unwrap_or(20);
    if limit == 0 || limit > state.config.page_size_max {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and page_size_max = {}",
            state.config.page_size_max
        )));
    }
    let rows = state.store.checkpoints(query.before, limit).await?;
    let next_before = (rows.len() == limit as usize).then(|| rows.last().map(|(c, _)| c.size)).flatten();
    let items = rows
        .into_iter()
        .map(|(c, at)| CheckpointView {
            size: c.size,
            root: BASE64.encode(c.root),
            created_at: crate::wire::timestamp(at),
            note: c.note,
        })
        .collect();
    Ok(Json(CheckpointList { items, next_before }))
}

/// The log's public key, and the nodes' receipt keys.
#[utoipa::path(get, path = "/v1/log/key", tag = "log", responses((status = 200, body = LogKeyView)))]
pub async fn key(State(state): State<AppState>) -> ApiResult<Json<LogKeyView>> {
    let verifier = state.market.log_keys.log.verifier();
    let node_keys = state.store.node_keys().await?.into_iter().map(|(name, key)| (name, BASE64.encode(key))).collect();
    Ok(Json(LogKeyView {
        name: verifier.name.clone(),
        public_key: BASE64.encode(verifier.public_key()),
        vkey: verifier.vkey(),
        node_keys,
        witnesses: state.config.witnesses.iter().map(|w| w.vkey.clone()).collect(),
    }))
}

/// Leaves `[start, end)`, at most `log_entries_page_max` of them.
#[utoipa::path(get, path = "/v1/log/entries", tag = "log",
    params(EntriesQuery),
    responses((status = 200, body = LogEntries), (status = 400, body = ErrorBody)))]
pub async fn entries(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<EntriesQuery>,
) -> ApiResult<Json<LogEntries>> {
    let size = state.store.tree_size().await?;
    let page_max = state.config.log_entries_page_max;
    if query.start >= query.end || query.end > size || query.end - query.start > page_max {
        return Err(ApiError::bad_request(format!(
            "need start < end <= {size} (the tree size) and end - start <= log_entries_page_max = {page_max}"
        )));
    }
    let items = state
        .store
        .log_entries(query.start, query.end)
        .await?
        .into_iter()
        .map(|e| LogEntryView {
            index: e.index,
            leaf_hash: hex::encode(tlog::leaf_hash(&e.leaf)),
            leaf: BASE64.encode(&e.leaf),
            signature: BASE64.encode(&e.signature),
        })
        .collect();
    Ok(Json(LogEntries { items }))
}

/// The audit path of leaf `index` in the tree of `size` leaves.
#[utoipa::path(get, path = "/v1/log/proof/inclusion", tag = "log",
    params(InclusionQuery),
    responses((status = 200, body = InclusionProof), (status = 400, body = ErrorBody)))]
pub async fn inclusion(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<InclusionQuery>,
) -> ApiResult<Json<InclusionProof>> {
    let tree = state.store.tree_size().await?;
    if query.index >= query.size || query.size > tree {
        return Err(ApiError::bad_request(format!("need index < size <= {tree} (the tree size)")));
    }
    let hashes = state.store.inclusion_proof(query.index, query.size).await?;
    Ok(Json(InclusionProof { index: query.index, size: query.size, hashes: hex_list(hashes) }))
}

/// The proof that the tree of `from` leaves is a prefix of the tree of `to`.
#[utoipa::path(get, path = "/v1/log/proof/consistency", tag = "log",
    params(ConsistencyQuery),
    responses((status = 200, body = ConsistencyProof), (status = 400, body = ErrorBody)))]
pub async fn consistency(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ConsistencyQuery>,
) -> ApiResult<Json<ConsistencyProof>> {
    let tree = state.store.tree_size().await?;
    if query.from > query.to || query.to > tree {
        return Err(ApiError::bad_request(format!("need from <= to <= {tree} (the tree size)")));
    }
    let hashes = state.store.consistency_proof(query.from, query.to).await?;
    Ok(Json(ConsistencyProof { from: query.from, to: query.to, hashes: hex_list(hashes) }))
}

/// A receipt by log index, with its inclusion proof against the latest
/// checkpoint (signed now if the leaf is newer than the last one).
#[utoipa::path(get, path = "/v1/receipts/{index}", tag = "log",
    params(("index" = u64, Path)),
    responses((status = 200, body = Receipt), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn receipt(State(state): State<AppState>, Path(index): Path<String>) -> ApiResult<Json<Receipt>> {
    let not_found = || ApiError::not_found(format!("no receipt at log index {index}"));
    let index: u64 = index.parse().map_err(|_| not_found())?;
    let entry = state.store.log_entries(index, index + 1).await?.pop().ok_or_else(not_found)?;
    // A leaf newer than the last checkpoint is covered by the next one, at
    // most checkpoint_interval_ms away: wait for it rather than sign more
    // often than that.
    let interval = std::time::Duration::from_millis(state.config.checkpoint_interval_ms);
    let deadline = tokio::time::Instant::now() + interval * 3;
    let size = loop {
        match state.store.latest_checkpoint().await? {
            Some(checkpoint) if checkpoint.size > index => break checkpoint.size,
            _ if tokio::time::Instant::now() >= deadline => {
                return Err(ApiError::unavailable("the checkpoint covering this receipt is not signed yet", 1));
            }
            _ => tokio::time::sleep(interval / 10).await,
        }
    };
    let hashes = state.store.inclusion_proof(index, size).await?;
    let mut receipt = Receipt::of_leaf(index, &entry.leaf, &entry.signature)?;
    receipt.inclusion = Some(Inclusion { size, hashes: hex_list(hashes) });
    Ok(Json(receipt))
}

/// The caller's pseudonym in the log and the secret that proves it.
#[utoipa::path(get, path = "/v1/account/pseudonym", tag = "log",
    security(("api_key" = [])),
    responses((status = 200, body = PseudonymView), (status = 401, body = ErrorBody)))]
pub async fn pseudonym(State(state): State<AppState>, Caller(caller): Caller) -> (StatusCode, Json<PseudonymView>) {
    let secret = tlog::caller_secret(&state.market.log_keys.pseudonym, caller.id);
    let pseudonym = tlog::caller_pseudonym(&secret);
    (StatusCode::OK, Json(PseudonymView { pseudonym: pseudonym.to_hex(), secret: hex::encode(secret) }))
}
