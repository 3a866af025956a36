//! What can go wrong with a paid call, typed: the HTTP layer maps each kind
//! to its status and stable code (`server::error`), and a failed call's
//! log leaf records the same code ([`CallError::code`]).

use std::sync::OnceLock;

use ledger::LedgerError;
use store::{ItemError, SequencerError, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No such model or version (or none the caller may see).
    #[error("{0}")]
    NotFound(String),
    /// The model was deleted or taken down, or the version is yanked.
    #[error("{0}")]
    Gone(String),
    /// The version is out of service until the operator lifts its quarantine.
    #[error("{0}")]
    Quarantined(String),
    /// Inputs that do not fit the model, or that the model refused.
    #[error("{0}")]
    InvalidInput(String),
    /// An Idempotency-Key reused for another request.
    #[error("{0}")]
    InvalidRequest(String),
    /// Inputs with more elements than `tensor_elements_max`.
    #[error("{0}")]
    TooLarge(String),
    /// The caller's balance cannot cover the price.
    #[error("{0}")]
    InsufficientBalance(String),
    /// An x402 payment that is refused (`reason`: x402's `errorReason`):
    /// nothing ran, or nothing was paid.
    #[error("{message}")]
    PaymentInvalid { reason: &'static str, message: String },
    /// A `PAYMENT-SIGNATURE` that is not an x402 payment at all (400).
    #[error("{0}")]
    MalformedPayment(String),
    /// A call with the Idempotency-Key is running, or was answered without
    /// its answer being kept.
    #[error("{0}")]
    Conflict(String),
    /// An amount past what the ledger's totals can hold.
    #[error("{0}")]
    AmountTooLarge(String),
    /// The call needs more memory than a worker may use.
    #[error("{0}")]
    OutOfMemory(String),
    /// The model's answer is larger than `output_elements_max`.
    #[error("{0}")]
    OutputTooLarge(String),
    /// Ran past `inference_timeout_ms`.
    #[error("{0}")]
    TimedOut(String),
    /// The worker running the call died.
    #[error("{0}")]
    Crashed(String),
    /// This node cannot serve the call now: worth a retry after
    /// `retry_after_s`.
    #[error("{message}")]
    Unavailable { message: String, retry_after_s: u64 },
    /// The remote store of model files failed (logged where it happened).
    #[error("the store of model files does not answer; try again shortly")]
    RemoteStoreFailed,
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A fault of the server, logged with its cause when it was made
    /// ([`CallError::internal`]); nobody else sees the cause.
    #[error("internal error; the server has logged it")]
    Internal,
}

impl CallError {
    /// Logs `cause` and gives the error that does not reveal it.
    pub fn internal(cause: impl std::fmt::Display) -> CallError {
        tracing::error!(%cause, "internal error");
        CallError::Internal
    }

    /// The remote store of model files failed (a file fetched from there:
    /// [`store::RemoteStoreFailed`]): its outage, not the call's fault;
    /// logged, and worth a retry.
    pub fn remote_store_failed(message: impl std::fmt::Display) -> CallError {
        tracing::error!(%message, "the remote store of model files failed");
        CallError::RemoteStoreFailed
    }

    pub fn unavailable(message: impl Into<String>, retry_after_s: u64) -> CallError {
        CallError::Unavailable { message: message.into(), retry_after_s }
    }

    /// The stable code of the API's error answer, which a failed call's
    /// log leaf and usage event record too.
    pub fn code(&self) -> &'static str {
        match self {
            CallError::NotFound(_) => "not_found",
            CallError::Gone(_) => "gone",
            CallError::Quarantined(_) => "model_quarantined",
            CallError::InvalidInput(_) => "invalid_input",
            CallError::InvalidRequest(_) => "invalid_request",
            CallError::TooLarge(_) => "payload_too_large",
            CallError::InsufficientBalance(_) => "insufficient_balance",
            CallError::PaymentInvalid { .. } => "payment_invalid",
            CallError::MalformedPayment(_) => "invalid_request",
            CallError::Conflict(_) => "conflict",
            CallError::AmountTooLarge(_) => "amount_too_large",
            CallError::OutOfMemory(_) => "model_out_of_memory",
            CallError::OutputTooLarge(_) => "output_too_large",
            CallError::TimedOut(_) => "inference_timeout",
            CallError::Crashed(_) => "model_crashed",
            CallError::Unavailable { .. } | CallError::RemoteStoreFailed | CallError::ShuttingDown => "unavailable",
            CallError::Internal => "internal",
        }
    }

    /// Whether the call named nothing callable: such a call is not a call
    /// of the model, and leaves no record.
    pub fn names_nothing_callable(&self) -> bool {
        matches!(self, CallError::NotFound(_) | CallError::Gone(_))
    }

    /// What the caller's balance lacks, in the words every refusal uses,
    /// in the market's token ([`name_token`]).
    pub fn insufficient(available: i128, needed: u64) -> CallError {
        CallError::InsufficientBalance(format!(
            "the balance available is {}, {} are needed",
            tokens(available.max(0) as u128),
            tokens(needed as u128)
        ))
    }
}

impl From<StoreError> for CallError {
    fn from(error: StoreError) -> CallError {
        match error {
            StoreError::Conflict(what) => CallError::Conflict(format!("{what} already exists")),
            StoreError::NotFound(what) => CallError::NotFound(format!("{what} not found")),
            other => CallError::internal(other),
        }
    }
}

impl From<SequencerError> for CallError {
    fn from(error: SequencerError) -> CallError {
        match error {
            SequencerError::Stopped => CallError::ShuttingDown,
            batch => CallError::internal(batch),
        }
    }
}

/// The market's token (symbol, decimals) for the amounts in messages people
/// read; one per process, named by the server that opens the market.
static TOKEN: OnceLock<(String, u32)> = OnceLock::new();

/// Names the token messages speak in (the first name given stays: a process
/// serves one market).
pub fn name_token(symbol: &str, decimals: u32) {
    let _ = TOKEN.set((symbol.to_owned(), decimals));
}

/// `minor` minor units as people read them: `0.002 OPG`; in minor units,
/// said so, where no token was named.
pub fn tokens(minor: u128) -> String {
    match (TOKEN.get(), u64::try_from(minor).ok().and_then(|m| domain::Amount::from_minor_units(m).ok())) {
        (Some((symbol, decimals)), Some(amount)) => format!("{} {symbol}", amount.to_decimal_string(*decimals)),
        _ => format!("{minor} minor units"),
    }
}

/// A ledger batch's refusal of one item.
impl From<ItemError> for CallError {
    fn from(error: ItemError) -> CallError {
        match error {
            ItemError::Ledger(LedgerError::InsufficientBalance { available, needed, .. }) => {
                CallError::insufficient(available, needed)
            }
            ItemError::Ledger(LedgerError::IdReused(_))
            | ItemError::PayoutNotRequested(_)
            | ItemError::AlreadyAnswered
            | ItemError::PaymentNotSettling
            | ItemError::CursorMoved => CallError::Conflict(error.to_string()),
            // A deposit, price or payout too large for some account's totals:
            // refused, so that the ledger never holds a number it cannot store.
            ItemError::Ledger(LedgerError::Overflow) => CallError::AmountTooLarge(error.to_string()),
            ItemError::Ledger(other) => CallError::internal(other),
        }
    }
}
