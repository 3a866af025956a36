//! Persistence: the database (SQLite, embedded, the default; or PostgreSQL,
//! see `backend.rs`) and the content-addressed blob folder.
//!
//! The rest of the server sees plain records ([`Account`], [`Model`],
//! [`Version`]) and typed errors; SQL stays in this crate. This crate knows
//! nothing about HTTP.

mod backend;
mod blobs;
mod chain_anchors;
mod chain_payments;
mod chain_payouts;
mod db;
mod log;
mod migrate;
mod money;
pub mod postgres;
mod presence;
mod sequencer;
mod signature;
mod usage;
mod writer;

pub use blobs::{BlobStore, BlobStoreError, BlobWriter, FinishedBlob, RemoteStoreFailed, TestBucket};
pub use chain_anchors::Anchor;
pub use chain_payments::{ChainPayment, PaymentKey, PaymentState, ProvenAddress};
pub use chain_payouts::{AutoPayout, ChainPayout, ChainPayoutRequest, ChainPayoutState, PayoutTransaction};
pub use db::{
    Account, AccountKind, Cursor, ModelFilter, ModelPatch, ModelRecord, ModelSort, NewModel, NewVersion, Quarantine,
    QuarantinedVersion, QuotaExceeded, Store, Takedown, Version, Yank,
};
pub use log::{LogEntry, StoredCheckpoint};
pub use money::{
    BatchItem, BatchOutcome, ChainDeposits, Charge, GrantRequest, IdempotencyAnswer, IdempotencyStart, ItemError,
    LedgerTotals, PayoutChange, PayoutRecord, PayoutState, TransferRecord,
};
pub use presence::{RECALL_CHANNEL, Recall, Recalls};
pub use sequencer::{BATCH_SIZE_BUCKETS, Batching, Coming, Reply, Sequencer, SequencerError, SequencerStats};
pub use usage::{DAY_MS, Dimension, GRANULARITIES, HOUR_MS, MINUTE_MS, ModelLabel, Rollup, RollupQuery, UsageEvent};
pub use writer::WalSync;

/// What went wrong in the store. `Conflict` and `NotFound` are answers; the
/// other cases are faults the server logs and reports as internal errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("file system error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0:?} is not a database name: lowercase letters, digits and underscores")]
    DatabaseName(String),
}

/// Now, in Unix milliseconds, the store's unit of time.
pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}
