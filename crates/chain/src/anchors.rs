//! Anchors: the log's checkpoint written on the chain now and then, as a
//! transaction from the market's address to itself whose data is
//! `vitrine-anchor/1\n` and the checkpoint's body (origin, size and base64
//! root, a line each, as C2SP's checkpoint format writes them). Anyone can
//! then check, on a node of their own, that the log they are shown extends
//! what the market committed to on the chain at that block.

use alloy::consensus::Transaction as _;
use alloy::network::{TransactionBuilder, TransactionResponse};
use alloy::primitives::{Address, B256, Bytes};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::{Chain, ChainError};

/// What an anchor's data starts with (its format's version).
pub const ANCHOR_PREFIX: &str = "vitrine-anchor/1\n";

/// An anchor's transaction data for the checkpoint of `size` leaves and
/// `root` of the log named `origin`.
pub fn anchor_data(origin: &str, size: u64, root: &[u8; 32]) -> Vec<u8> {
    format!("{ANCHOR_PREFIX}{origin}\n{size}\n{}\n", BASE64.encode(root)).into_bytes()
}

/// A transaction as an auditor's own node shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenTransaction {
    pub from: Address,
    pub to: Option<Address>,
    pub input: Bytes,
    /// `None` while not mined.
    pub block: Option<u64>,
}

impl Chain {
    /// Sends an anchor (`data`, from [`anchor_data`]) from the market's
    /// address to itself and waits for it to be mined: its transaction and
    /// block.
    pub async fn send_anchor(&self, data: Vec<u8>) -> Result<(B256, u64), String> {
        let request = TransactionRequest::default()
            .with_from(self.address())
            .with_to(self.address())
            .with_input(Bytes::from(data));
        let request = self.priced(request).await.map_err(|unpriced| match unpriced {
            crate::Unpriced::WouldRevert(message) | crate::Unpriced::Unavailable(message) => message,
        })?;
        let mut nonce = self.nonce.lock().await;
        let next = self.next_nonce(&mut nonce).await?;
        let envelope = self.sign_request(request.with_nonce(next)).await?;
        let transaction = *envelope.tx_hash();
        match self.provider.send_tx_envelope(envelope).await {
            Ok(_) => *nonce = Some(next + 1),
            Err(error) => {
                *nonce = None;
                return Err(error.to_string());
            }
        }
        drop(nonce);
        let (succeeded, block) = self.receipt(transaction).await.map_err(|e| e.to_string())?;
        if !succeeded {
            return Err(format!("the anchor {transaction:#x} failed"));
        }
        Ok((transaction, block))
    }
}

/// `hash` as the node at `rpc_url` (an auditor's own) shows it; `None` if
/// it does not know it.
pub async fn transaction_at(rpc_url: &str, hash: B256) -> Result<Option<SeenTransaction>, ChainError> {
    let rpc = |message: String| ChainError::Rpc { url: rpc_url.to_owned(), message };
    let url = rpc_url.parse().map_err(|e| rpc(format!("not a URL: {e}")))?;
    let provider = ProviderBuilder::new().connect_http(url);
    let found = provider.get_transaction_by_hash(hash).await.map_err(|e| rpc(e.to_string()))?;
    Ok(found.map(|t| SeenTransaction { from: t.from(), to: t.to(), input: t.input().clone(), block: t.block_number }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anchor_carries_the_checkpoint_body_after_its_prefix() {
        let data = anchor_data("vitrine.local/log", 42, &[7; 32]);
        let text = String::from_utf8(data).unwrap();
        assert_eq!(text, "vitrine-anchor/1\nvitrine.local/log\n42\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n");
        assert_ne!(anchor_data("vitrine.local/log", 43, &[7; 32]), text.into_bytes());
    }
}
