//! The EVM chain a market is paid and pays on, when its operator configures
//! one (the `chain` setting): the token (an ERC-20 with EIP-3009), the
//! market's own key and address, what is final (`confirmations`), and the
//! market's balance of the token at a final block (its reserves). Without a
//! `chain` the market works as it always has.
//!
//! Amounts cross between the ledger's minor units and the token's units by
//! one exact rule ([`units`]).

pub mod anchors;
pub mod deposits;
pub mod facilitator;
pub mod payouts;
pub mod test_token;
pub mod units;
pub mod x402;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use alloy::consensus::TxEnvelope;
use alloy::network::{Ethereum, EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use serde::{Deserialize, Serialize};

pub use alloy::primitives::{Address, B256, U256};
pub use alloy::signers::local::PrivateKeySigner;
pub use units::{Units, UnitsError};

alloy::sol! {
    /// What the market reads of its token.
    #[sol(rpc)]
    interface Erc20 {
        function name() external view returns (string);
        function version() external view returns (string);
        function decimals() external view returns (uint8);
        function balanceOf(address owner) external view returns (uint256);
    }
}

/// The `chain` setting: `{rpc_url, network, token, key_file, confirmations}`
/// (and `facilitator_url`, for x402's verify and settle elsewhere).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The node's JSON-RPC endpoint.
    pub rpc_url: String,
    /// CAIP-2: `eip155:<chain id>`, checked against the node's chain id.
    pub network: String,
    /// The token's contract address.
    pub token: String,
    /// The market's hot key: `0x` and 64 hex digits, in a file only its
    /// owner may read (mode 0600). Never in settings, logs or answers.
    pub key_file: PathBuf,
    /// Blocks on top of a transaction's block before it counts as final.
    pub confirmations: u64,
    /// An x402 facilitator to verify and settle payments through (its
    /// `/verify` and `/settle`), instead of the market itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facilitator_url: Option<String>,
    /// x402's `maxTimeoutSeconds` (at least 60): how long a payment may
    /// take to be settled, and how long the market waits for a settlement
    /// to be mined.
    #[serde(default = "default_max_timeout_seconds")]
    pub max_timeout_seconds: u64,
    /// How long a payout's transaction may wait unmined before it is sent
    /// again with higher fees (the same nonce).
    #[serde(default = "default_fee_bump_seconds")]
    pub fee_bump_seconds: u64,
    /// How often the log's latest checkpoint is anchored on the chain (a
    /// transaction from the market's address to itself carrying the
    /// checkpoint's origin, size and root); 0: never.
    #[serde(default = "default_anchor_interval_seconds")]
    pub anchor_interval_seconds: u64,
}

fn default_anchor_interval_seconds() -> u64 {
    3600
}

fn default_fee_bump_seconds() -> u64 {
    120
}

fn default_max_timeout_seconds() -> u64 {
    x402::MAX_TIMEOUT_SECONDS_MIN
}

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("chain.network must be eip155:<chain id>, not {0:?}")]
    Network(String),
    #[error("chain.token is not an address: {0:?}")]
    TokenAddress(String),
    #[error("chain.rpc_url {url:?}: {message}")]
    Rpc { url: String, message: String },
    #[error("the node at chain.rpc_url is chain {found}, not {expected} (chain.network)")]
    WrongChain { expected: u64, found: u64 },
    #[error("chain.token {token} does not answer as an ERC-20 with a version (EIP-712): {message}")]
    NotAToken { token: String, message: String },
    #[error("chain.key_file {path}: {message}")]
    Key { path: String, message: String },
    #[error("chain.facilitator_url {url:?}: {message}")]
    Facilitator { url: String, message: String },
    #[error(transparent)]
    Units(#[from] UnitsError),
}

/// Why a transaction of the market's could not be priced.
pub(crate) enum Unpriced {
    /// The node says it would fail now.
    WouldRevert(String),
    /// The node did not answer, or not as asked.
    Unavailable(String),
}

/// The token as the market reads it from its contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Token {
    pub address: Address,
    /// Its name and version: its EIP-712 domain, which x402 payments sign.
    pub name: String,
    pub version: String,
    pub decimals: u8,
}

/// A market's connection to its chain.
#[derive(Debug, Clone)]
pub struct Chain {
    provider: DynProvider,
    chain_id: u64,
    network: String,
    token: Token,
    /// Kept out of `Debug` output.
    signer: HiddenSigner,
    confirmations: u64,
    units: Units,
    /// The market's next transaction nonce, once read from the node; the
    /// lock orders the market's own transactions.
    nonce: Arc<tokio::sync::Mutex<Option<u64>>>,
    /// x402's `maxTimeoutSeconds`: how long a payment may take.
    max_timeout_seconds: u64,
    /// How long a settlement waits for its receipt before its fate is
    /// called unknown (and left to the recovery).
    settle_timeout: Duration,
    /// How long a payout's transaction waits unmined before a fee bump.
    fee_bump_after: Duration,
    /// x402 payments verified and settled through an outside facilitator
    /// (`chain.facilitator_url`), when set.
    facilitator: Option<facilitator::Facilitator>,
    /// How often the log's checkpoint is anchored; `None`: never.
    anchor_interval: Option<Duration>,
}

#[derive(Clone)]
struct HiddenSigner(PrivateKeySigner);

impl std::fmt::Debug for HiddenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HiddenSigner({})", self.0.address())
    }
}

/// The market's token balance at a final block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    pub block: u64,
    /// Token units.
    pub amount: U256,
}

impl Chain {
    /// Connects as `settings` say and checks them: the node's chain is the
    /// network's, the token answers as an ERC-20 with an EIP-712 version,
    /// and the key file holds a key only its owner can read.
    /// `ledger_decimals`: the ledger's minor units per token.
    pub async fn connect(settings: &Settings, ledger_decimals: u32) -> Result<Chain, ChainError> {
        let expected = settings
            .network
            .strip_prefix("eip155:")
            .and_then(|id| id.parse::<u64>().ok())
            .ok_or_else(|| ChainError::Network(settings.network.clone()))?;
        let settle_timeout = Duration::from_secs(settings.max_timeout_seconds.max(x402::MAX_TIMEOUT_SECONDS_MIN));
        let facilitator = match &settings.facilitator_url {
            Some(url) => Some(
                facilitator::Facilitator::new(url, settle_timeout)
                    .map_err(|message| ChainError::Facilitator { url: url.clone(), message })?,
            ),
            None => None,
        };
        let token: Address = settings.token.parse().map_err(|_| ChainError::TokenAddress(settings.token.clone()))?;
        let signer = read_key(&settings.key_file)?;
        let rpc = |message: String| ChainError::Rpc { url: settings.rpc_url.clone(), message };
        let url = settings.rpc_url.parse().map_err(|e| rpc(format!("not a URL: {e}")))?;
        let provider = ProviderBuilder::new().connect_http(url).erased();
        let found = provider.get_chain_id().await.map_err(|e| rpc(e.to_string()))?;
        if found != expected {
            return Err(ChainError::WrongChain { expected, found });
        }
        let contract = Erc20::new(token, &provider);
        let not_a_token =
            |e: alloy::contract::Error| ChainError::NotAToken { token: settings.token.clone(), message: e.to_string() };
        let name = contract.name().call().await.map_err(not_a_token)?;
        let version = contract.version().call().await.map_err(not_a_token)?;
        let decimals = contract.decimals().call().await.map_err(not_a_token)?;
        let units = Units { ledger_decimals, token_decimals: u32::from(decimals) };
        Ok(Chain {
            provider,
            chain_id: found,
            network: settings.network.clone(),
            token: Token { address: token, name, version, decimals },
            signer: HiddenSigner(signer),
            confirmations: settings.confirmations,
            units,
            nonce: Arc::default(),
            max_timeout_seconds: x402::MAX_TIMEOUT_SECONDS_MIN.max(settings.max_timeout_seconds),
            settle_timeout,
            facilitator,
            anchor_interval: (settings.anchor_interval_seconds > 0)
                .then(|| Duration::from_secs(settings.anchor_interval_seconds)),
            fee_bump_after: Duration::from_secs(settings.fee_bump_seconds.max(1)),
        })
    }

    pub fn network(&self) -> &str {
        &self.network
    }

    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    pub fn token(&self) -> &Token {
        &self.token
    }

    /// The market's address (its key's), where it is paid.
    pub fn address(&self) -> Address {
        self.signer.0.address()
    }

    pub fn units(&self) -> Units {
        self.units
    }

    /// How long a settlement waits to be mined before its fate is unknown.
    pub fn settle_timeout(&self) -> Duration {
        self.settle_timeout
    }

    /// How often the log's checkpoint is anchored on the chain, if it is.
    pub fn anchor_interval(&self) -> Option<Duration> {
        self.anchor_interval
    }

    /// How long a payout's transaction waits unmined before a fee bump.
    pub fn fee_bump_after(&self) -> Duration {
        self.fee_bump_after
    }

    /// The newest block that is final: `confirmations` below the head.
    pub async fn final_block(&self) -> Result<u64, ChainError> {
        let head = self.provider.get_block_number().await.map_err(|e| self.rpc_error(e))?;
        Ok(head.saturating_sub(self.confirmations))
    }

    /// The market's balance of the token at the newest final block.
    pub async fn reserves(&self) -> Result<Balance, ChainError> {
        let block = self.final_block().await?;
        let amount = balance_at(&self.provider, self.token.address, self.address(), block)
            .await
            .map_err(|e| self.rpc_error(format!("balanceOf at block {block}: {e}")))?;
        Ok(Balance { block, amount })
    }

    /// `request` from the market, with its chain, its gas (the node's
    /// estimate and a fifth more: the state may move before it is mined)
    /// and the fees the node asks now.
    pub(crate) async fn priced(&self, request: TransactionRequest) -> Result<TransactionRequest, Unpriced> {
        let gas = match self.provider.estimate_gas(request.clone()).await {
            Ok(gas) => gas,
            Err(alloy::transports::RpcError::ErrorResp(response)) => {
                return Err(Unpriced::WouldRevert(response.message.to_string()));
            }
            Err(other) => return Err(Unpriced::Unavailable(other.to_string())),
        };
        let fees = self.provider.estimate_eip1559_fees().await.map_err(|e| Unpriced::Unavailable(e.to_string()))?;
        Ok(request
            .with_chain_id(self.chain_id)
            .with_gas_limit(gas + gas / 5)
            .with_max_fee_per_gas(fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas))
    }

    /// The market's next nonce: the counter's, or the node's count of its
    /// transactions (pending included) the first time. The caller holds the
    /// counter's lock until its transaction is sent (or stored).
    pub(crate) async fn next_nonce(&self, counter: &mut Option<u64>) -> Result<u64, String> {
        match *counter {
            Some(next) => Ok(next),
            None => self.provider.get_transaction_count(self.address()).pending().await.map_err(|e| e.to_string()),
        }
    }

    /// Signs a complete request with the market's key.
    pub(crate) async fn sign_request(&self, request: TransactionRequest) -> Result<TxEnvelope, String> {
        let wallet = EthereumWallet::from(self.signer.0.clone());
        <TransactionRequest as NetworkTransactionBuilder<Ethereum>>::build(request, &wallet)
            .await
            .map_err(|e| e.to_string())
    }

    fn rpc_error(&self, error: impl std::fmt::Display) -> ChainError {
        ChainError::Rpc { url: "chain.rpc_url".into(), message: error.to_string() }
    }
}

/// `owner`'s balance of `token` at `block`, and the token's decimals, read
/// from the node at `rpc_url` (an auditor's own node, say).
pub async fn balance_of(rpc_url: &str, token: &str, owner: &str, block: u64) -> Result<(U256, u8), ChainError> {
    let rpc = |message: String| ChainError::Rpc { url: rpc_url.to_owned(), message };
    let url = rpc_url.parse().map_err(|e| rpc(format!("not a URL: {e}")))?;
    let provider = ProviderBuilder::new().connect_http(url).erased();
    let token: Address = token.parse().map_err(|_| ChainError::TokenAddress(token.to_owned()))?;
    let owner: Address = owner.parse().map_err(|_| rpc(format!("{owner:?} is not an address")))?;
    let balance = balance_at(&provider, token, owner, block).await.map_err(|e| rpc(e.to_string()))?;
    let decimals = Erc20::new(token, &provider).decimals().call().await.map_err(|e| rpc(e.to_string()))?;
    Ok((balance, decimals))
}

async fn balance_at(
    provider: &DynProvider,
    token: Address,
    owner: Address,
    block: u64,
) -> Result<U256, alloy::contract::Error> {
    Erc20::new(token, provider).balanceOf(owner).block(block.into()).call().await
}

/// Reads a key file (the market's, or a wallet's for `vitrine topup`): `0x`
/// and 64 hex digits, the file readable by its owner alone.
pub fn read_key(path: &Path) -> Result<PrivateKeySigner, ChainError> {
    let error = |message: String| ChainError::Key { path: path.display().to_string(), message };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(|e| error(e.to_string()))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(error(format!("others may read it (mode {:o}); chmod 600 it", mode & 0o777)));
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let hex = text.trim().strip_prefix("0x").ok_or_else(|| error("it does not start with 0x".into()))?;
    if hex.len() != 64 {
        return Err(error(format!("it holds {} hex digits, not 64", hex.len())));
    }
    // The key itself never goes into a message.
    hex.parse::<PrivateKeySigner>().map_err(|_| error("it is not a valid secp256k1 key".into()))
}
