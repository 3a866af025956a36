//! The paid call, apart from HTTP: a model version resolved, its price
//! reserved from the caller's balance (in memory, or from this node's grant
//! on a shared market), the model run in a worker, the price split and
//! charged with the signed receipt leaf and the usage event in one ledger
//! batch, and the answer kept for its Idempotency-Key. A crash counts
//! towards the version's quarantine; a failed or abandoned call is logged
//! with its error code and charged nothing.
//!
//! [`Market::call`] is the entry; it answers an [`Answer`] or a typed
//! [`CallError`], which the HTTP layer (`server`) maps to its status and
//! code. On-chain money plugs in here: a call paid with x402 (`onchain.rs`).

mod anchors;
pub mod answer;
pub mod batch;
mod buckets;
mod call;
pub mod claims;
mod deposits;
pub mod error;
pub mod keys;
pub mod known_keys;
pub mod known_models;
mod onchain;
pub mod payouts;
pub mod quarantine;
pub mod receipt;
pub mod reserve;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use sandbox::Executor;
use store::{BlobStore, Sequencer, Store};

pub use answer::{Answer, InferResponse, TensorOut};
pub use buckets::Buckets;
pub use call::{CLIENT_CLOSED, CallRequest, IdempotencyKey, Inputs};
pub use error::CallError;
pub use onchain::TopUp;
pub use receipt::{Receipt, timestamp};

/// The limits a call keeps (each a setting of the server's, named so).
#[derive(Debug, Clone)]
pub struct Limits {
    /// `inference_timeout_ms`: from the call's start, waiting for a worker
    /// included.
    pub inference_timeout_ms: u64,
    /// `tensor_elements_max`: elements of any one input.
    pub tensor_elements_max: u64,
    /// `worker_memory_bytes_max`, named in the refusal of a call that needs more.
    pub worker_memory_bytes_max: u64,
    /// `quarantine_window_ms`, named in a quarantine's reason.
    pub quarantine_window_ms: u64,
    /// `idempotency_window_ms`: how long a key's answer is kept.
    pub idempotency_window_ms: u64,
    /// `idempotency_answer_bytes_max`: the largest answer kept for replays.
    pub idempotency_answer_bytes_max: u64,
    /// `idempotency_answer_bytes_per_key`: bytes of answers kept per key and window.
    pub idempotency_answer_bytes_per_key: u64,
}

/// Account ids of the ledger's own accounts, created at start.
#[derive(Debug, Clone, Copy)]
pub struct SystemAccounts {
    pub issuer: i64,
    pub treasury: i64,
    pub payouts: i64,
    /// This node's account, paid the node share of what it serves.
    pub node: i64,
}

/// What paid calls share on a node.
#[derive(Debug)]
pub struct Market {
    pub store: Store,
    pub blobs: BlobStore,
    /// Where models are validated and run: worker processes (or, with
    /// `isolation = "none"`, this process).
    pub executor: Arc<Executor>,
    /// One caller's concurrent calls of a model, run as one batch
    /// (`batch_calls_max`).
    pub batcher: batch::Batcher,
    /// Recent crashes per version, towards quarantine.
    pub strikes: quarantine::Strikes,
    /// Calls that reached a model in this process (`vitrine_model_runs_total`).
    pub model_runs: AtomicU64,
    /// The one writer of the ledger.
    pub sequencer: Sequencer,
    /// Prices of paid calls in flight, reserved before their models run.
    pub reservations: Arc<reserve::Reservations>,
    /// API keys already seen, and their accounts.
    pub known_keys: known_keys::KnownKeys,
    /// Models and versions calls read recently.
    pub known_models: known_models::KnownModels,
    /// Idempotency-Keys of calls running on this node.
    pub idempotency_claims: claims::IdempotencyClaims,
    /// Bytes of answers kept for Idempotency-Key replays, per account
    /// (`idempotency_answer_bytes_per_key`).
    pub idempotency_bytes: Buckets<i64>,
    pub fee_split: ledger::FeeSplit,
    /// The ledger's own accounts.
    pub system: SystemAccounts,
    pub log_keys: Arc<keys::LogKeys>,
    pub limits: Limits,
    /// The chain the market is paid on, when it has one (`chain` setting):
    /// x402 payments are verified and settled there.
    pub chain: Option<Arc<chain::Chain>>,
    /// Tests' crash injection (`VITRINE_CRASH_AFTER_SETTLEMENT`): the process
    /// aborts once a settlement is mined, before its call's ledger write,
    /// as a crash there would leave it.
    pub crash_after_settlement: bool,
}
