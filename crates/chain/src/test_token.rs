//! The tests' token (`fixtures/chain/TestToken.sol`, compiled by
//! `fixtures/chain/build` into `TestToken.json`): deployed on a private
//! chain (`scripts/anvil`) by a funded key, minted by anyone.

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolValue;

use crate::ChainError;

alloy::sol! {
    #[sol(rpc)]
    interface Mintable {
        function mint(address to, uint256 amount) external;
        function transfer(address to, uint256 amount) external returns (bool);
    }
}

/// The compiled contract: its ABI and creation bytecode.
const ARTIFACT: &str = include_str!("../../../fixtures/chain/TestToken.json");

/// A fresh key funded with ether on anvil (`anvil_setBalance`): each test
/// pays with its own, so that tests running at once never race for one
/// account's nonces.
pub async fn funded_key(rpc_url: &str) -> Result<String, ChainError> {
    let signer = PrivateKeySigner::random();
    fund(rpc_url, signer.address()).await?;
    Ok(format!("0x{}", alloy::primitives::hex::encode(signer.to_bytes())))
}

/// Gives `address` 100 ether on anvil (`anvil_setBalance`): gas for its
/// transactions (a market's settlements, say).
pub async fn fund(rpc_url: &str, address: Address) -> Result<(), ChainError> {
    let rpc = |message: String| ChainError::Rpc { url: rpc_url.to_owned(), message };
    let url = rpc_url.parse().map_err(|e| rpc(format!("not a URL: {e}")))?;
    let provider = ProviderBuilder::new().connect_http(url);
    let ether = U256::from(100u8) * U256::from(10u8).pow(U256::from(18u8));
    let _: serde_json::Value =
        provider.raw_request("anvil_setBalance".into(), (address, ether)).await.map_err(|e| rpc(e.to_string()))?;
    Ok(())
}

/// Deploys a token of `name` (its symbol too), EIP-712 `version` and
/// `decimals` on the chain at `rpc_url`, paid by `funded_key`; its address.
pub async fn deploy(
    rpc_url: &str,
    funded_key: &str,
    name: &str,
    version: &str,
    decimals: u8,
) -> Result<Address, ChainError> {
    let rpc = |message: String| ChainError::Rpc { url: rpc_url.to_owned(), message };
    #[derive(serde::Deserialize)]
    struct Artifact {
        bytecode: Bytes,
    }
    let artifact: Artifact = serde_json::from_str(ARTIFACT).map_err(|e| rpc(format!("TestToken.json: {e}")))?;
    let provider = funded(rpc_url, funded_key)?;
    // A uint8 is encoded as any uint: one word.
    let arguments = (name.to_owned(), name.to_owned(), version.to_owned(), U256::from(decimals)).abi_encode_params();
    let code = [artifact.bytecode.as_ref(), arguments.as_slice()].concat();
    let deploy = TransactionRequest::default().with_deploy_code(code);
    let pending = provider.send_transaction(deploy).await.map_err(|e| rpc(e.to_string()))?;
    let receipt = pending.get_receipt().await.map_err(|e| rpc(e.to_string()))?;
    receipt.contract_address.ok_or_else(|| rpc("the deployment created no contract".into()))
}

/// Mints `amount` token units of `token` to `to`, paid by `funded_key`; the
/// block the mint is in.
pub async fn mint(
    rpc_url: &str,
    funded_key: &str,
    token: Address,
    to: Address,
    amount: U256,
) -> Result<u64, ChainError> {
    let rpc = |message: String| ChainError::Rpc { url: rpc_url.to_owned(), message };
    let provider = funded(rpc_url, funded_key)?;
    let pending = Mintable::new(token, &provider).mint(to, amount).send().await.map_err(|e| rpc(e.to_string()))?;
    let receipt = pending.get_receipt().await.map_err(|e| rpc(e.to_string()))?;
    receipt.block_number.ok_or_else(|| rpc("the mint is in no block".into()))
}

/// Sends `amount` token units of `token` from `key`'s address (which must
/// hold ether for gas) to `to`; the block the transfer is in, and the gas
/// it used.
pub async fn transfer(
    rpc_url: &str,
    key: &str,
    token: Address,
    to: Address,
    amount: U256,
) -> Result<(u64, u64), ChainError> {
    let rpc = |message: String| ChainError::Rpc { url: rpc_url.to_owned(), message };
    let provider = funded(rpc_url, key)?;
    let pending = Mintable::new(token, &provider).transfer(to, amount).send().await.map_err(|e| rpc(e.to_string()))?;
    let receipt = pending.get_receipt().await.map_err(|e| rpc(e.to_string()))?;
    if !receipt.status() {
        return Err(rpc("the transfer reverted".into()));
    }
    let block = receipt.block_number.ok_or_else(|| rpc("the transfer is in no block".into()))?;
    Ok((block, receipt.gas_used))
}

/// The gas a mined transaction used.
pub async fn gas_used(rpc_url: &str, transaction: alloy::primitives::B256) -> Result<u64, ChainError> {
    let rpc = |message: String| ChainError::Rpc { url: rpc_url.to_owned(), message };
    let url = rpc_url.parse().map_err(|e| rpc(format!("not a URL: {e}")))?;
    let provider = ProviderBuilder::new().connect_http(url);
    let receipt = provider.get_transaction_receipt(transaction).await.map_err(|e| rpc(e.to_string()))?;
    Ok(receipt.ok_or_else(|| rpc(format!("{transaction} is not mined")))?.gas_used)
}

/// `owner`'s balance of `token` now (at the newest block).
pub async fn balance(rpc_url: &str, token: Address, owner: Address) -> Result<U256, ChainError> {
    let rpc = |message: String| ChainError::Rpc { url: rpc_url.to_owned(), message };
    let url = rpc_url.parse().map_err(|e| rpc(format!("not a URL: {e}")))?;
    let provider = ProviderBuilder::new().connect_http(url);
    crate::Erc20::new(token, &provider).balanceOf(owner).call().await.map_err(|e| rpc(e.to_string()))
}

fn funded(rpc_url: &str, key: &str) -> Result<impl Provider, ChainError> {
    let rpc = |message: String| ChainError::Rpc { url: rpc_url.to_owned(), message };
    let signer: PrivateKeySigner = key.parse().map_err(|_| rpc("the funded key is not a key".into()))?;
    let url = rpc_url.parse().map_err(|e| rpc(format!("not a URL: {e}")))?;
    Ok(ProviderBuilder::new().wallet(EthereumWallet::from(signer)).connect_http(url))
}

/// Mines `blocks` empty blocks on anvil (`anvil_mine`): what makes the
/// transactions before them final in a test.
pub async fn mine(rpc_url: &str, blocks: u64) -> Result<(), ChainError> {
    let rpc = |message: String| ChainError::Rpc { url: rpc_url.to_owned(), message };
    let url = rpc_url.parse().map_err(|e| rpc(format!("not a URL: {e}")))?;
    let provider = ProviderBuilder::new().connect_http(url);
    let _: serde_json::Value =
        provider.raw_request("anvil_mine".into(), (U256::from(blocks),)).await.map_err(|e| rpc(e.to_string()))?;
    Ok(())
}

/// Replaces the newest `depth` blocks with empty ones (`anvil_reorg`): the
/// transactions in them are gone, as in a reorganisation.
pub async fn reorg(rpc_url: &str, depth: u64) -> Result<(), ChainError> {
    let rpc = |message: String| ChainError::Rpc { url: rpc_url.to_owned(), message };
    let url = rpc_url.parse().map_err(|e| rpc(format!("not a URL: {e}")))?;
    let provider = ProviderBuilder::new().connect_http(url);
    let none: Vec<serde_json::Value> = vec![];
    let _: serde_json::Value =
        provider.raw_request("anvil_reorg".into(), (depth, none)).await.map_err(|e| rpc(e.to_string()))?;
    Ok(())
}

/// Writes a fresh random key to `path` as the `key_file` setting wants it
/// (`0x` and 64 hex digits, mode 0600); its address.
pub fn new_key_file(path: &std::path::Path) -> std::io::Result<Address> {
    use std::os::unix::fs::PermissionsExt;
    let signer = PrivateKeySigner::random();
    std::fs::write(path, format!("0x{}\n", alloy::primitives::hex::encode(signer.to_bytes())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(signer.address())
}

/// Forgets every transaction waiting to be mined (`anvil_dropAllTransactions`):
/// a broadcast lost, as when a node restarts with an empty pool.
pub async fn drop_pending(rpc_url: &str) -> Result<(), ChainError> {
    let rpc = |message: String| ChainError::Rpc { url: rpc_url.to_owned(), message };
    let url = rpc_url.parse().map_err(|e| rpc(format!("not a URL: {e}")))?;
    let provider = ProviderBuilder::new().connect_http(url);
    let _: serde_json::Value =
        provider.raw_request("anvil_dropAllTransactions".into(), ()).await.map_err(|e| rpc(e.to_string()))?;
    Ok(())
}

/// A transaction the node holds (pending or mined): its nonce and, once
/// mined, its block; `None` if the node does not know it.
pub async fn transaction(
    rpc_url: &str,
    hash: alloy::primitives::B256,
) -> Result<Option<(u64, Option<u64>)>, ChainError> {
    use alloy::consensus::Transaction as _;
    let rpc = |message: String| ChainError::Rpc { url: rpc_url.to_owned(), message };
    let url = rpc_url.parse().map_err(|e| rpc(format!("not a URL: {e}")))?;
    let provider = ProviderBuilder::new().connect_http(url);
    let found = provider.get_transaction_by_hash(hash).await.map_err(|e| rpc(e.to_string()))?;
    Ok(found.map(|t| (t.nonce(), t.block_number)))
}
