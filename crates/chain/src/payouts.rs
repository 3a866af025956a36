//! Payouts: token transfers from the market's address to a creator's
//! proven address, signed with the market's key and its nonce counter
//! (shared with x402 settlements). A payout's transaction is stored (by the
//! caller's `store`) before it is sent, so that a restart sends the very
//! same transaction again; a fee bump signs the same nonce with higher fees.

use std::future::Future;

use alloy::consensus::{Transaction, TxEnvelope};
use alloy::eips::eip2718::{Decodable2718, Encodable2718};
use alloy::network::TransactionBuilder;
pub use alloy::primitives::Bytes;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolCall;

use crate::Chain;

alloy::sol! {
    interface Erc20Transfer {
        function transfer(address to, uint256 amount) external returns (bool);
    }
}

/// A fee bump raises both fees by at least this many percent: nodes refuse
/// a replacement that pays less than 10 % more.
const BUMP_PERCENT: u128 = 25;

/// Gas for a transfer when the node cannot estimate it (a bump, the state
/// moved): well above an ERC-20 transfer's.
const TRANSFER_GAS_FALLBACK: u64 = 100_000;

/// A payout's signed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTransfer {
    pub nonce: u64,
    pub hash: B256,
    /// The EIP-2718 encoding: what is sent, and sent again.
    pub raw: Bytes,
    /// Wei per gas.
    pub max_fee: u128,
}

#[derive(Debug, thiserror::Error)]
pub enum PayoutError {
    /// The node says the transfer would fail (the market lacks the tokens):
    /// nothing was signed.
    #[error("the payout would revert: {0}")]
    WouldRevert(String),
    /// The node did not answer, or refused: nothing was stored.
    #[error("the payout was not signed: {0}")]
    NotSigned(String),
}

/// What the node made of a transaction sent (again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Taken, or known already.
    Pending,
    /// Its nonce is spent (by it, mined, or by another transaction).
    NonceSpent,
    /// Refused for another reason (no ether for gas, fees too low).
    Refused(String),
}

impl Chain {
    fn transfer_request(&self, to: Address, amount: U256) -> TransactionRequest {
        let call = Erc20Transfer::transferCall { to, amount };
        TransactionRequest::default()
            .with_from(self.address())
            .with_to(self.token.address)
            .with_input(Bytes::from(call.abi_encode()))
    }

    /// Signs a transfer of `amount` token units to `to` with the market's
    /// next nonce and hands it to `store`, which stores it durably (and
    /// says false when the payout is no longer to be paid: then the nonce
    /// stays free); then sends it. `Ok(None)`: `store` declined. Sending
    /// can fail once it is stored: the stored transaction is sent again
    /// later ([`Chain::send_again`]), so its nonce stays taken.
    pub async fn send_payout<F, Fut>(
        &self,
        to: Address,
        amount: U256,
        store: F,
    ) -> Result<Option<(SignedTransfer, Sent)>, PayoutError>
    where
        F: FnOnce(SignedTransfer) -> Fut,
        Fut: Future<Output = Result<bool, String>>,
    {
        let not_signed = |e: String| PayoutError::NotSigned(e);
        let request = self.priced(self.transfer_request(to, amount)).await.map_err(|unpriced| match unpriced {
            crate::Unpriced::WouldRevert(message) => PayoutError::WouldRevert(message),
            crate::Unpriced::Unavailable(message) => not_signed(message),
        })?;
        let mut nonce = self.nonce.lock().await;
        let next = self.next_nonce(&mut nonce).await.map_err(not_signed)?;
        let request = request.with_nonce(next);
        let signed = self.sign(request).await.map_err(not_signed)?;
        if !store(signed.clone()).await.map_err(not_signed)? {
            return Ok(None);
        }
        *nonce = Some(next + 1);
        drop(nonce);
        let sent = self.send_again(&signed.raw).await;
        Ok(Some((signed, sent)))
    }

    /// The same transaction as `previous` (its nonce, recipient, amount and
    /// gas) with both fees raised by a quarter, or to what the node asks now
    /// if that is more: a fee bump, for a payout that waits too long.
    pub async fn bump(&self, previous: &Bytes) -> Result<SignedTransfer, String> {
        let envelope =
            TxEnvelope::decode_2718(&mut previous.as_ref()).map_err(|e| format!("not a transaction: {e}"))?;
        let raise = bumped;
        let fees = self.provider.estimate_eip1559_fees().await.map_err(|e| e.to_string())?;
        let max_fee = raise(envelope.max_fee_per_gas()).max(fees.max_fee_per_gas);
        let priority = raise(envelope.max_priority_fee_per_gas().unwrap_or_default())
            .max(fees.max_priority_fee_per_gas)
            .min(max_fee);
        let to = envelope.to().ok_or("the transaction creates a contract")?;
        let gas = match envelope.gas_limit() {
            0 => TRANSFER_GAS_FALLBACK,
            gas => gas,
        };
        let request = TransactionRequest::default()
            .with_from(self.address())
            .with_to(to)
            .with_input(envelope.input().clone())
            .with_chain_id(self.chain_id)
            .with_nonce(envelope.nonce())
            .with_gas_limit(gas)
            .with_max_fee_per_gas(max_fee)
            .with_max_priority_fee_per_gas(priority);
        self.sign(request).await
    }

    async fn sign(&self, request: TransactionRequest) -> Result<SignedTransfer, String> {
        let nonce = request.nonce.ok_or("no nonce")?;
        let max_fee = request.max_fee_per_gas.unwrap_or_default();
        let envelope = self.sign_request(request).await?;
        Ok(SignedTransfer { nonce, hash: *envelope.tx_hash(), raw: Bytes::from(envelope.encoded_2718()), max_fee })
    }

    /// Sends a stored transaction (again). A node that knows it already, or
    /// whose count is past its nonce, says so: both are fine.
    pub async fn send_again(&self, raw: &Bytes) -> Sent {
        match self.provider.send_raw_transaction(raw).await {
            Ok(_) => Sent::Pending,
            Err(alloy::transports::RpcError::ErrorResp(response)) => {
                let message = response.message.to_lowercase();
                if message.contains("already known") || message.contains("known transaction") {
                    Sent::Pending
                } else if message.contains("nonce too low") || message.contains("nonce has already been used") {
                    Sent::NonceSpent
                } else {
                    Sent::Refused(response.message.to_string())
                }
            }
            Err(other) => Sent::Refused(other.to_string()),
        }
    }

    /// Whether the node holds `transaction` (pending or mined).
    pub async fn knows(&self, transaction: B256) -> Result<bool, String> {
        let found = self.provider.get_transaction_by_hash(transaction).await.map_err(|e| e.to_string())?;
        Ok(found.is_some())
    }

    /// Whether a mined transaction of the market's spent `nonce`.
    pub async fn nonce_spent(&self, nonce: u64) -> Result<bool, String> {
        let mined = self.provider.get_transaction_count(self.address()).latest().await.map_err(|e| e.to_string())?;
        Ok(mined > nonce)
    }

    /// Makes the market's next nonce at least `next`: a stored transaction
    /// (a payout signed before a restart) holds its nonce even where the
    /// node has forgotten it.
    pub async fn hold_nonces_below(&self, next: u64) -> Result<(), String> {
        let mut nonce = self.nonce.lock().await;
        let current = self.next_nonce(&mut nonce).await?;
        *nonce = Some(current.max(next));
        Ok(())
    }
}

/// A fee raised for a replacement.
fn bumped(fee: u128) -> u128 {
    fee.saturating_add(fee / 100 * BUMP_PERCENT + fee % 100 * BUMP_PERCENT / 100).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bump_raises_every_fee_past_what_nodes_ask_of_a_replacement() {
        for fee in [0u128, 1, 7, 99, 1_000_000_000, 123_456_789_012, u128::MAX / 2, u128::MAX] {
            let raised = bumped(fee);
            // Nodes want at least 10 % more; never less than asked, never an overflow.
            assert!(raised >= fee, "{fee}");
            assert!(fee == u128::MAX || raised > fee + fee / 10, "{fee} → {raised}");
        }
    }
}
