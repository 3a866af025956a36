//! Deposits by plain transfer: an account proves an address it holds (an
//! EIP-191 signature of a text naming the account and the market), and
//! every `Transfer` of the token from a proven address to the market's
//! address is credited to it once final. This module reads the chain; the
//! market keeps the proofs and credits (`market::deposits`).

use alloy::primitives::{Address, B256, Signature, U256};
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;

use crate::{Chain, ChainError};

alloy::sol! {
    event Transfer(address indexed from, address indexed to, uint256 value);
    event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce);
}

/// Blocks read per `eth_getLogs`: nodes refuse wide ranges.
pub const BLOCKS_PER_QUERY: u64 = 2_000;

/// The text an account signs (`personal_sign`) to prove it holds an
/// address: it names the market (its log's origin), the network and the
/// account, so a signature proves nothing anywhere else.
pub fn challenge(origin: &str, network: &str, account: &str) -> String {
    format!(
        "Vitrine market {origin} on {network}: I, account {account}, hold this address. Transfers of the market's \
         token from it to the market's address credit my balance."
    )
}

/// The address whose key signed `message` with EIP-191 (`personal_sign`):
/// `signature` is 65 bytes, hex.
pub fn signer_of(message: &str, signature: &str) -> Result<Address, String> {
    let bytes = alloy::primitives::hex::decode(signature).map_err(|_| "the signature is not hex".to_owned())?;
    let signature = Signature::from_raw(&bytes).map_err(|_| "the signature is not 65 bytes of ECDSA".to_owned())?;
    signature.recover_address_from_msg(message).map_err(|e| format!("no signer recovers from it: {e}"))
}

/// Signs `message` as `personal_sign` does: for tests and the CLI.
pub fn sign_message(key: &alloy::signers::local::PrivateKeySigner, message: &str) -> Result<String, String> {
    use alloy::signers::SignerSync;
    let signature = key.sign_message_sync(message.as_bytes()).map_err(|e| e.to_string())?;
    Ok(format!("0x{}", alloy::primitives::hex::encode(signature.as_bytes())))
}

/// One transfer of the token to the market.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub transaction: B256,
    pub log_index: u64,
    pub block: u64,
    pub from: Address,
    /// Token units.
    pub value: U256,
    /// Sent by `transferWithAuthorization` (an x402 payment, which its
    /// call or top-up credits, never a deposit).
    pub by_authorization: bool,
}

impl Chain {
    /// Transfers of the token to the market's address in blocks
    /// `from..=to`, oldest first.
    pub async fn incoming(&self, from: u64, to: u64) -> Result<Vec<Incoming>, ChainError> {
        let base = Filter::new().address(self.token.address).from_block(from).to_block(to);
        let transfers = base
            .clone()
            .event_signature(Transfer::SIGNATURE_HASH)
            .topic2(B256::left_padding_from(self.address().as_slice()));
        let logs = self.provider.get_logs(&transfers).await.map_err(|e| self.rpc_error(e))?;
        let authorizations = base.event_signature(AuthorizationUsed::SIGNATURE_HASH);
        let by_authorization: std::collections::HashSet<B256> = self
            .provider
            .get_logs(&authorizations)
            .await
            .map_err(|e| self.rpc_error(e))?
            .iter()
            .filter_map(|log| log.transaction_hash)
            .collect();
        let mut incoming = Vec::with_capacity(logs.len());
        for log in logs {
            let (Some(transaction), Some(log_index), Some(block)) =
                (log.transaction_hash, log.log_index, log.block_number)
            else {
                continue;
            };
            let Ok(event) = Transfer::decode_log_data(log.data()) else { continue };
            incoming.push(Incoming {
                transaction,
                log_index,
                block,
                from: event.from,
                value: event.value,
                by_authorization: by_authorization.contains(&transaction),
            });
        }
        incoming.sort_by_key(|i| (i.block, i.log_index));
        Ok(incoming)
    }
}
