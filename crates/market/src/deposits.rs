//! Deposits by plain transfer, with a `chain`: every `Transfer` of the
//! token from an address an account proved it holds to the market's
//! address is credited to that account once its block is final, exactly
//! once per (network, transaction, log index): the deposit's ledger id is
//! that triple, so reading a block twice (a restart, two nodes) credits
//! nothing twice; and a range's credits are written in one transaction
//! with the cursor moved past the range, only if the cursor still stands
//! where the range began. A transfer reorganised away before it was final
//! was never read. Transfers that are x402 settlements (`transferWithAuthorization`)
//! are their call's or top-up's, never a deposit.

use std::collections::HashMap;

use chain::deposits::BLOCKS_PER_QUERY;
use chain::x402::lower;
use domain::Amount;
use ledger::{Command, Transfer, TransferKind};
use store::{BatchItem, ChainDeposits};

use crate::{CallError, Market};

impl Market {
    /// Reads the final blocks past the deposits' cursor and credits what
    /// came from proven addresses; the cursor moves past each range read.
    /// A market reads from the final block when it first looks: transfers
    /// before that are not deposits (prove an address, then send). How
    /// many deposits were credited.
    pub async fn credit_deposits(&self) -> Result<usize, CallError> {
        let Some(chain) = &self.chain else { return Ok(0) };
        let unavailable = |e: chain::ChainError| {
            tracing::warn!(error = %e, "reading deposits failed; retried shortly");
            CallError::unavailable("the chain's node does not answer", 5)
        };
        let (network, token) = (chain.network(), lower(chain.token().address));
        let final_block = chain.final_block().await.map_err(unavailable)?;
        let Some(cursor) = self.store.chain_cursor(network, &token).await? else {
            self.store.advance_chain_cursor(network, &token, final_block).await?;
            return Ok(0);
        };
        if final_block <= cursor {
            return Ok(0);
        }
        // Read once a range holds a transfer to the market, not every round.
        let mut proven: Option<HashMap<String, i64>> = None;
        let mut credited = 0;
        let mut from = cursor + 1;
        while from <= final_block {
            let to = final_block.min(from + BLOCKS_PER_QUERY - 1);
            let mut credits = vec![];
            for incoming in chain.incoming(from, to).await.map_err(unavailable)? {
                let proven = match &mut proven {
                    Some(proven) => proven,
                    None => proven.insert(
                        self.store
                            .proven_addresses(network, None)
                            .await?
                            .into_iter()
                            .map(|proof| (proof.address, proof.account_id))
                            .collect(),
                    ),
                };
                let Some(&account) = proven.get(&lower(incoming.from)) else { continue };
                if incoming.by_authorization {
                    continue;
                }
                let (amount, rest) = chain.units().to_ledger(incoming.value).map_err(CallError::internal)?;
                if amount == 0 {
                    continue;
                }
                let transaction = format!("{:#x}", incoming.transaction);
                let mut reference = format!("transfer {transaction} #{}", incoming.log_index);
                if rest > chain::U256::ZERO {
                    // Less than a minor unit stays with the market, said so.
                    reference.push_str(&format!(" ({rest} token units below a minor unit kept in the reserves)"));
                }
                let transfer = Transfer {
                    debit: self.system.issuer,
                    credit: account,
                    amount: Amount::from_minor_units(amount).map_err(CallError::internal)?,
                    kind: TransferKind::Deposit,
                    reference,
                };
                let id = format!("chain:{network}:{transaction}:{}", incoming.log_index);
                credits.push(Command::Once { id, transfer });
            }
            // The range's credits and the cursor past it, in one transaction.
            let range =
                ChainDeposits { credits, network: network.to_owned(), token: token.clone(), from: from - 1, to };
            match self.sequencer.submit(BatchItem::Deposits(range)).await? {
                Ok(outcome) => {
                    for transfer in &outcome.transfers {
                        tracing::info!(account = %transfer.credit_account, amount = %transfer.amount, reference = %transfer.reference, "a deposit by transfer was credited");
                    }
                    credited += outcome.transfers.len();
                }
                // Another node read these blocks first: it credited them.
                Err(store::ItemError::CursorMoved) => return Ok(credited),
                Err(other) => return Err(other.into()),
            }
            from = to + 1;
        }
        Ok(credited)
    }
}
