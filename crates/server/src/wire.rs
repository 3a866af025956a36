//! The JSON bodies of the API (`shared/API.md`), and their conversions from
//! domain and store types. Domain types stay free of `Serialize`; this module
//! is where they meet the wire.

use std::collections::BTreeMap;

use domain::{Dim, TensorSpec};
use market::CallError;
use market::answer::JsonFloat;
use runtime::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use store::{Account, ModelRecord, Quarantine, Version};
use utoipa::ToSchema;

pub use market::timestamp;

/// The usage views of the stats routes.
pub mod stats {
    pub use crate::routes::stats::*;
}

/// The log's views: its keys, entries, proofs and checkpoints.
pub mod log {
    pub use crate::routes::log::{
        CheckpointList, CheckpointView, ConsistencyProof, InclusionProof, LogEntries, LogEntryView, LogKeyView,
        PseudonymView,
    };
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountRequest {
    /// 2 to 32 lowercase letters, digits and dashes, starting with a letter.
    #[schema(example = "alice")]
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AccountSummary {
    pub id: i64,
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedAccount {
    pub account: AccountSummary,
    /// Shown only in this response; the server keeps only a hash.
    pub api_key: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AccountView {
    pub id: i64,
    pub name: String,
    /// Minor units: credits minus debits. What can be spent is `balance - held`.
    #[schema(example = "1000000000")]
    pub balance: String,
    /// Minor units reserved by calls still running.
    pub held: String,
    /// Minor units earned as a creator, over all time.
    pub earned_total: String,
    pub created_at: String,
    /// Bytes this account's models store (each distinct file of a model
    /// that is not deleted, once).
    pub storage_bytes: u64,
    /// The most they may store (`account_storage_bytes_max`); `null`: no limit.
    pub storage_bytes_max: Option<u64>,
}

impl AccountView {
    /// `reserved`: what calls in flight reserved in memory, on top of the
    /// ledger's own holds.
    pub fn new(
        account: &Account,
        totals: &ledger::AccountState,
        reserved: u64,
        earned_total: u64,
        storage: (u64, Option<u64>),
    ) -> AccountView {
        AccountView {
            id: account.id,
            name: account.name.to_string(),
            balance: totals.balance().to_string(),
            held: (totals.debits_pending as u128 + reserved as u128).to_string(),
            earned_total: earned_total.to_string(),
            created_at: timestamp(account.created_at_ms),
            storage_bytes: storage.0,
            storage_bytes_max: storage.1,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TransferView {
    pub id: i64,
    /// deposit, faucet, inference_creator, inference_node, inference_treasury,
    /// payout_request, payout_complete or payout_reject.
    pub kind: String,
    /// Minor units.
    pub amount: String,
    pub debit_account: String,
    pub credit_account: String,
    pub reference: String,
    /// The log leaf (receipt) of the inference this transfer paid for.
    pub log_index: Option<u64>,
    pub created_at: String,
}

impl From<&store::TransferRecord> for TransferView {
    fn from(t: &store::TransferRecord) -> TransferView {
        TransferView {
            id: t.id,
            kind: t.kind.as_str().to_owned(),
            amount: t.amount.to_string(),
            debit_account: t.debit_account.clone(),
            credit_account: t.credit_account.clone(),
            reference: t.reference.clone(),
            log_index: t.log_index,
            created_at: timestamp(t.created_at_ms),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TransferPage {
    pub items: Vec<TransferView>,
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    pub limit: Option<u32>,
    pub page_token: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DepositRequest {
    /// The account name to credit.
    pub account: String,
    /// Minor units.
    #[schema(example = "1000000000")]
    pub amount: String,
    /// The outside reference (a payment id): a deposit retried with the same
    /// reference is found, not repeated.
    pub reference: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmountRequest {
    /// Minor units.
    #[schema(example = "1000000000")]
    pub amount: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolvePayoutRequest {
    /// The outside reference of the payment (complete), or the reason (reject).
    pub reference: String,
}

/// A payout request: an amount and, on a market with a chain, where to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayoutRequest {
    /// Minor units.
    #[schema(example = "1000000000")]
    pub amount: String,
    /// On a market with a chain: one of the caller's proven addresses
    /// (`POST /v1/account/addresses`), paid by a token transfer.
    #[serde(default)]
    pub address: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PayoutView {
    pub id: i64,
    pub account: String,
    pub amount: String,
    /// By hand: requested, completed or rejected. On the chain: requested,
    /// signed, broadcast, mined, final or failed.
    pub state: String,
    pub reference: String,
    pub created_at: String,
    pub resolved_at: Option<String>,
    /// On the chain: the proven address paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// On the chain: the transaction mined (or, before, the latest sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<String>,
    /// On the chain: every transaction signed for it (fee bumps reuse the
    /// nonce), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transactions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<u64>,
    /// On the chain: the block it was mined in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<u64>,
}

impl PayoutView {
    pub fn of(p: &store::PayoutRecord, chain: Option<&store::ChainPayout>) -> PayoutView {
        PayoutView {
            id: p.id,
            account: p.account.to_string(),
            amount: p.amount.to_string(),
            state: chain.map_or(p.state.as_str(), |c| c.state.as_str()).to_owned(),
            reference: p.reference.clone(),
            created_at: timestamp(p.created_at_ms),
            resolved_at: p.resolved_at_ms.map(timestamp),
            address: chain.map(|c| c.address.clone()),
            transaction: chain.and_then(|c| c.tx_hash.clone()),
            transactions: chain.map(|c| c.transactions.iter().map(|t| t.hash.clone()).collect()).unwrap_or_default(),
            nonce: chain.and_then(|c| c.nonce),
            block: chain.and_then(|c| c.block),
        }
    }
}

/// A creator's automatic payouts, on a market with a chain: both fields, or
/// (none set) neither.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct AutomaticPayoutsView {
    pub address: Option<String>,
    /// Minor units.
    pub threshold: Option<String>,
}

/// Sets a creator's automatic payouts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutomaticPayouts {
    /// One of the caller's proven addresses.
    pub address: String,
    /// Minor units: once the available balance reaches it, all of it is
    /// paid out to `address`.
    #[schema(example = "10000000000")]
    pub threshold: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PayoutList {
    pub items: Vec<PayoutView>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PayoutQuery {
    /// requested, completed or rejected (the ledger's view: a payout on the
    /// chain is requested until final, then completed).
    pub state: Option<String>,
}

/// The whole ledger at a glance, for the operator.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LedgerView {
    /// Sums over all accounts; always equal.
    pub debits_total: String,
    pub credits_total: String,
    /// Tokens in circulation: the sum of every balance but the issuer's.
    pub circulating: String,
    /// Every token that entered ever: deposits, faucet grants and calls
    /// paid on the chain (x402).
    pub deposited_total: String,
    /// All completed payouts ever.
    pub paid_out_total: String,
    /// Tokens reserved by calls still running.
    pub held_total: String,
    pub token_symbol: String,
    pub token_decimals: u32,
    pub fee_split_bps: FeeSplitView,
    pub sequencer: SequencerView,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FeeSplitView {
    pub creator: u32,
    pub node: u32,
    pub treasury: u32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SequencerView {
    pub batches: u64,
    pub items: u64,
    pub largest_batch: u64,
    /// Batches by size: `[upper bound, count]`, the last bound unbounded (null).
    pub batch_sizes: Vec<(Option<u64>, u64)>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateModelRequest {
    #[schema(example = "linear")]
    pub name: String,
    /// Markdown, at most 64 KiB.
    #[serde(default)]
    pub description: String,
    /// One of: classification, regression, embedding, forecasting, detection,
    /// segmentation, generation, other.
    #[schema(example = "regression")]
    pub task: String,
    #[serde(default)]
    pub license: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// `public` (the default) or `private`.
    #[serde(default)]
    pub visibility: Option<String>,
    /// Minor units, as a string; "0" (the default) makes the model free.
    #[serde(default)]
    #[schema(example = "2500000")]
    pub price_per_inference: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateModelRequest {
    pub description: Option<String>,
    pub task: Option<String>,
    pub license: Option<String>,
    pub tags: Option<Vec<String>>,
    pub visibility: Option<String>,
    pub price_per_inference: Option<String>,
    /// `false` hides the model from listings and search; it stays callable
    /// by its name.
    pub listed: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelView {
    pub owner: String,
    pub name: String,
    pub description: String,
    pub task: String,
    pub license: String,
    pub tags: Vec<String>,
    pub visibility: String,
    /// Minor units.
    pub price_per_inference: String,
    /// `null` until a version is uploaded.
    pub latest_version: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
    /// How a private model is named in the public log (`owner/~…`), shown to
    /// its owner only; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_label: Option<String>,
    /// Shown in listings and search (an unlisted model is reachable by name).
    pub listed: bool,
    /// Set while the operator has taken the model down (its calls answer
    /// 410); only its owner and the operator still see the model then.
    pub takedown: Option<ReasonView>,
}

/// Why, and since when.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReasonView {
    pub reason: String,
    pub since: String,
}

impl ModelView {
    /// The model as `viewer` sees it: its owner also sees its log label.
    pub fn for_viewer(model: &ModelRecord, viewer: Option<&Account>, keys: &crate::log::LogKeys) -> ModelView {
        let own_private =
            model.visibility == domain::Visibility::Private && viewer.is_some_and(|v| v.id == model.owner_id);
        ModelView {
            log_label: own_private
                .then(|| market::keys::log_model_label(keys, &model.owner, model.name.as_str(), model.visibility)),
            ..ModelView::from(model)
        }
    }
}

impl From<&ModelRecord> for ModelView {
    fn from(model: &ModelRecord) -> ModelView {
        ModelView {
            owner: model.owner.to_string(),
            name: model.name.to_string(),
            description: model.description.as_str().to_owned(),
            task: model.task.to_string(),
            license: model.license.as_str().to_owned(),
            tags: model.tags.as_slice().to_vec(),
            visibility: model.visibility.as_str().to_owned(),
            price_per_inference: model.price_per_inference.to_string(),
            latest_version: model.latest_version,
            created_at: timestamp(model.created_at_ms),
            updated_at: timestamp(model.updated_at_ms),
            log_label: None,
            listed: model.listed,
            takedown: model
                .takedown
                .as_ref()
                .map(|t| ReasonView { reason: t.reason.clone(), since: timestamp(t.since_ms) }),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelPage {
    pub items: Vec<ModelView>,
    /// Pass as `page_token` for the next page; `null` on the last page.
    pub next_page_token: Option<String>,
    /// When `q` matched nothing as written, the nearest query that did (a
    /// typo mended: "segmentaion" is "segmentation"), whose models these
    /// are; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrected_query: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListModelsQuery {
    /// Case-insensitive text to find in the name, description or tags.
    pub q: Option<String>,
    pub task: Option<String>,
    pub owner: Option<String>,
    /// `recent` (default), `name`, `price` (cheapest first), or by usage
    /// over `window`: `popular` (calls), `revenue`, `trending` (growth).
    pub sort: Option<String>,
    /// For the usage sorts: 24h, 7d (default) or 30d.
    pub window: Option<String>,
    pub limit: Option<u32>,
    pub page_token: Option<String>,
}

/// One dimension: a size, or a symbol chosen per call (such as `"N"`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum DimView {
    Fixed(u64),
    Symbol(String),
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TensorSpecView {
    pub name: String,
    #[schema(example = "f32")]
    pub dtype: String,
    pub shape: Vec<DimView>,
}

impl From<&TensorSpec> for TensorSpecView {
    fn from(spec: &TensorSpec) -> TensorSpecView {
        let shape = spec
            .shape
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => DimView::Fixed(*n),
                Dim::Symbol(s) => DimView::Symbol(s.clone()),
            })
            .collect();
        TensorSpecView { name: spec.name.clone(), dtype: spec.dtype.to_string(), shape }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VersionView {
    pub version: i64,
    pub blob_sha256: String,
    pub size_bytes: u64,
    pub inputs: Vec<TensorSpecView>,
    pub outputs: Vec<TensorSpecView>,
    pub created_at: String,
    /// Set while the version is out of service (its calls answer 503
    /// `model_quarantined`) until the operator lifts it.
    pub quarantine: Option<QuarantineView>,
    /// Set while its owner has yanked it: its calls answer 410 `gone` and
    /// the model's latest version skips it.
    pub yank: Option<ReasonView>,
    /// The engine that validated it: `tract` or `onnxruntime`.
    pub engine: String,
}

impl From<&Version> for VersionView {
    fn from(version: &Version) -> VersionView {
        VersionView {
            version: version.version,
            blob_sha256: version.blob_sha256.to_hex(),
            size_bytes: version.size_bytes,
            inputs: version.inputs.iter().map(Into::into).collect(),
            outputs: version.outputs.iter().map(Into::into).collect(),
            created_at: timestamp(version.created_at_ms),
            quarantine: version.quarantine.as_ref().map(QuarantineView::from),
            yank: version.yank.as_ref().map(|y| ReasonView { reason: y.reason.clone(), since: timestamp(y.since_ms) }),
            engine: version.engine.clone(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QuarantineView {
    pub reason: String,
    pub since: String,
}

impl From<&Quarantine> for QuarantineView {
    fn from(quarantine: &Quarantine) -> QuarantineView {
        QuarantineView { reason: quarantine.reason.clone(), since: timestamp(quarantine.since_ms) }
    }
}

/// A quarantined version, in the operator's list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QuarantinedVersionView {
    /// `owner/name`.
    pub model: String,
    pub version: i64,
    pub reason: String,
    pub since: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QuarantineList {
    pub items: Vec<QuarantinedVersionView>,
}

/// The operator's reason for taking a version out of service.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuarantineRequest {
    pub reason: String,
}

/// A model just deleted.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeletedModelView {
    /// `owner/name`.
    pub model: String,
    pub deleted_at: String,
    /// Bytes the owner's models store now.
    pub storage_bytes: u64,
}

/// The operator's reason for taking a model down.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TakedownRequest {
    pub reason: String,
}

/// Yanks a version (`"yanked": true`, with an optional reason its callers
/// see) or puts it back.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct YankRequest {
    pub yanked: bool,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VersionList {
    pub items: Vec<VersionView>,
}

/// A tensor as JSON: `data` is flat and row-major, and its length is the
/// product of `shape`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TensorIn {
    #[schema(example = "f32")]
    pub dtype: String,
    #[schema(example = json!([1, 4]))]
    pub shape: Vec<usize>,
    /// Numbers (or booleans for `bool`); for the floats (`f32`, `f64`, `f16`,
    /// `bf16`), the strings `"NaN"`, `"Infinity"` and `"-Infinity"` stand for
    /// the non-finite values. A number is rounded to the nearest value of
    /// the dtype.
    #[schema(value_type = Vec<serde_json::Value>, example = json!([0.1, 0.2, 0.3, 0.4]))]
    pub data: Box<RawValue>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InferRequest {
    /// Keyed by input name.
    pub inputs: BTreeMap<String, TensorIn>,
}

impl TensorIn {
    /// Reads `data` as the declared dtype: integers must be integers in range,
    /// booleans booleans. Shape checks come later, against the model.
    pub fn into_tensor(self, name: &str) -> Result<Tensor, CallError> {
        let dtype: domain::Dtype = self
            .dtype
            .parse()
            .map_err(|e: domain::DtypeError| CallError::InvalidInput(format!("input '{name}': {e}")))?;
        let text = self.data.get();
        let bad = |e: serde_json::Error| {
            CallError::InvalidInput(format!("input '{name}': data is not a flat array of {dtype} values ({e})"))
        };
        let data = match dtype {
            domain::Dtype::F32 => {
                let values: Vec<JsonFloat> = serde_json::from_str(text).map_err(bad)?;
                TensorData::F32(values.into_iter().map(|v| v.0 as f32).collect())
            }
            domain::Dtype::F64 => {
                let values: Vec<JsonFloat> = serde_json::from_str(text).map_err(bad)?;
                TensorData::F64(values.into_iter().map(|v| v.0).collect())
            }
            domain::Dtype::I8 => TensorData::I8(serde_json::from_str(text).map_err(bad)?),
            domain::Dtype::I16 => TensorData::I16(serde_json::from_str(text).map_err(bad)?),
            domain::Dtype::I32 => TensorData::I32(serde_json::from_str(text).map_err(bad)?),
            domain::Dtype::I64 => TensorData::I64(serde_json::from_str(text).map_err(bad)?),
            domain::Dtype::U8 => TensorData::U8(serde_json::from_str(text).map_err(bad)?),
            domain::Dtype::U16 => TensorData::U16(serde_json::from_str(text).map_err(bad)?),
            domain::Dtype::U32 => TensorData::U32(serde_json::from_str(text).map_err(bad)?),
            domain::Dtype::U64 => TensorData::U64(serde_json::from_str(text).map_err(bad)?),
            domain::Dtype::Bool => TensorData::Bool(serde_json::from_str(text).map_err(bad)?),
            domain::Dtype::F16 => {
                let values: Vec<JsonFloat> = serde_json::from_str(text).map_err(bad)?;
                TensorData::F16(values.into_iter().map(|v| half::f16::from_f64(v.0)).collect())
            }
            domain::Dtype::Bf16 => {
                let values: Vec<JsonFloat> = serde_json::from_str(text).map_err(bad)?;
                TensorData::Bf16(values.into_iter().map(|v| half::bf16::from_f64(v.0)).collect())
            }
        };
        Ok(Tensor { shape: self.shape, data })
    }
}

/// The market's reserves on its chain against its ledger's liabilities
/// The text an account signs to prove it holds an address
/// (`GET /v1/account/addresses/challenge`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChallengeView {
    /// Sign it with EIP-191 (`personal_sign`).
    pub message: String,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProveAddressRequest {
    /// Hex, lowercase or checksummed.
    pub address: String,
    /// The challenge's EIP-191 signature by the address's key: 65 bytes, hex.
    pub signature: String,
}

/// An address the account proved it holds: transfers of the token from it
/// to the market's address are credited to the account once final.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AddressView {
    pub network: String,
    /// Lowercase hex.
    pub address: String,
    pub proven_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AddressList {
    pub items: Vec<AddressView>,
}

/// A top-up paid with x402 (`POST /v1/account/topup`): the settlement's
/// transaction, and the deposit once the settlement is final (`null` while
/// it is not: it is credited once final, by the server).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TopUpView {
    pub transfer: Option<TransferView>,
    pub transaction: String,
}

/// (`GET /v1/chain/reserves`). Amounts in ledger minor units; the on-chain
/// balance rounded down to one.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReservesView {
    /// CAIP-2, e.g. `eip155:8453`.
    pub network: String,
    /// The token's contract address.
    pub token: String,
    /// The market's own address, which holds its reserves.
    pub address: String,
    /// The block the balance was read at: the newest final one.
    pub block: u64,
    pub onchain_balance: String,
    /// Every balance in the ledger but the issuer's (pending payouts included).
    pub liabilities: String,
}

/// The log's checkpoints anchored on the chain (`GET /v1/log/anchors`),
/// largest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AnchorList {
    /// CAIP-2.
    pub network: String,
    /// The market's address: each anchor is a transaction from it to itself.
    pub address: String,
    pub items: Vec<AnchorView>,
}

/// One anchored checkpoint: its transaction's data is `vitrine-anchor/1\n`
/// then the checkpoint's origin, size and base64 root, a line each.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AnchorView {
    pub size: u64,
    /// Base64, as in the checkpoint.
    pub root: String,
    pub transaction: String,
    pub block: u64,
    pub anchored_at: String,
}

/// An upload session: where to send the next piece from.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UploadView {
    pub id: String,
    /// Bytes the server has, from the file's start: the next piece starts here.
    pub offset: u64,
    pub size_bytes: u64,
    /// When the session goes unless a piece arrives first (RFC 3339).
    pub expires_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
    pub version: String,
    /// The market's token: clients show amounts (minor units on the wire)
    /// in tokens with its symbol.
    pub token: TokenView,
    /// What runs the models here.
    pub engine: EngineView,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EngineView {
    /// `tract` or `onnxruntime`.
    #[schema(example = "onnxruntime")]
    pub name: String,
    /// Its release, where known.
    #[schema(example = "1.32.0")]
    pub version: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    #[schema(example = "OPG")]
    pub symbol: String,
    /// Amounts are integers of 10^-decimals tokens.
    pub decimals: u32,
}
