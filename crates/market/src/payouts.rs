//! Payouts. A request moves its amount from the creator to the payouts
//! account; on a market without a chain the operator completes or rejects
//! it by hand. With a chain it is paid to a proven address of the creator
//! by a token transfer, through a durable state machine (`store::ChainPayout`):
//! requested → signed (nonce and raw transaction stored before it is sent)
//! → broadcast → mined → final, when its ledger resolution moves the tokens
//! out. The node that signed a payout follows it: it sends the stored
//! transaction again when the chain's node forgot it (a restart, a dropped
//! pool), never signing anew with another nonce; it bumps the fee (the same
//! nonce) when it waits longer than `payout_fee_bump_ms`; it puts a mined
//! transaction reorganised away back to broadcast. A transfer that reverted
//! gives the tokens back to the creator. Only a nonce spent by another
//! transaction (so that none of the payout's can ever be mined) lets it be
//! signed anew.
//!
//! Automatic payouts: a creator's threshold and proven address; a balance
//! that reaches the threshold is paid out whole, one payout at a time.

use std::str::FromStr;

use chain::payouts::{PayoutError, Sent};
use chain::{B256, Chain, U256};
use domain::Amount;
use ledger::{Command, Transfer, TransferKind};
use store::{BatchItem, ChainPayout, ChainPayoutRequest, ChainPayoutState, PayoutChange, PayoutRecord, PayoutState};
use store::{ItemError, PayoutTransaction};

use crate::{CallError, Market};

/// What one round of on-chain payouts did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PayoutRound {
    pub signed: usize,
    pub bumped: usize,
    pub finished: usize,
    pub failed: usize,
}

impl Market {
    /// Records a payout request (its tokens move to the payouts account),
    /// to `chain` if given: then it is paid on the chain.
    pub async fn request_payout(
        &self,
        account_id: i64,
        amount: Amount,
        chain: Option<ChainPayoutRequest>,
    ) -> Result<PayoutRecord, CallError> {
        let reference = match &chain {
            Some(chain) => format!("payout requested to {}", chain.address),
            None => "payout requested".into(),
        };
        let transfer = Transfer {
            debit: account_id,
            credit: self.system.payouts,
            amount,
            kind: TransferKind::PayoutRequest,
            reference,
        };
        let item = BatchItem::Ledger {
            command: Command::Transfer(transfer),
            payout: Some(PayoutChange::Request { account_id, amount, chain }),
        };
        let outcome = self.sequencer.submit(item).await??;
        outcome.payout.ok_or_else(|| CallError::internal("a payout request recorded no payout"))
    }

    /// Resolves a requested payout: completed (its tokens leave the ledger)
    /// or rejected (they go back to its creator). `onchain`: the resolution
    /// of a payout paid on the chain, by its transaction; an operator's
    /// (`false`) may only reject such a payout before it is signed.
    pub async fn resolve_payout(
        &self,
        payout: &PayoutRecord,
        to: PayoutState,
        reference: String,
        onchain: bool,
    ) -> Result<Result<PayoutRecord, ItemError>, CallError> {
        let (credit, kind) = match to {
            PayoutState::Completed => (self.system.issuer, TransferKind::PayoutComplete),
            _ => (payout.account_id, TransferKind::PayoutReject),
        };
        let payout_id = payout.id;
        let transfer = Transfer {
            debit: self.system.payouts,
            credit,
            amount: payout.amount,
            kind,
            reference: format!("payout {payout_id}: {reference}"),
        };
        let item = BatchItem::Ledger {
            command: Command::Transfer(transfer),
            payout: Some(PayoutChange::Resolve { payout_id, to, reference, onchain }),
        };
        Ok(match self.sequencer.submit(item).await? {
            Ok(outcome) => {
                Ok(outcome.payout.ok_or_else(|| CallError::internal("a payout resolution recorded no payout"))?)
            }
            Err(error) => Err(error),
        })
    }

    /// One round of on-chain payouts: automatic payouts due are requested,
    /// requested ones signed and sent, this node's followed to final.
    /// `bump_after_ms`: how long a transaction may wait unmined before its
    /// fee is raised.
    pub async fn send_payouts(&self, bump_after_ms: i64) -> Result<PayoutRound, CallError> {
        let Some(chain) = &self.chain else { return Ok(PayoutRound::default()) };
        self.request_automatic_payouts(chain).await?;
        let node = self.log_keys.node.name();
        let payouts = self.store.unfinished_chain_payouts(chain.network()).await?;
        let mine = |p: &ChainPayout| p.node.as_deref() == Some(node);
        // The nonces of transactions stored here stay taken, even where the
        // chain's node forgot them (a restart of either).
        let held = payouts.iter().filter(|p| mine(p)).filter_map(|p| p.nonce).max();
        if let Some(nonce) = held {
            chain.hold_nonces_below(nonce + 1).await.map_err(unavailable)?;
        }
        let mut round = PayoutRound::default();
        for payout in &payouts {
            let done = match payout.state {
                ChainPayoutState::Requested => self.sign_payout(chain, payout, &mut round).await,
                ChainPayoutState::Signed | ChainPayoutState::Broadcast if mine(payout) => {
                    self.follow_payout(chain, payout, bump_after_ms, &mut round).await
                }
                ChainPayoutState::Mined if mine(payout) => self.finish_payout(chain, payout, &mut round).await,
                _ => Ok(()),
            };
            if let Err(error) = done {
                tracing::warn!(payout = payout.payout_id, %error, "an on-chain payout waits; retried shortly");
            }
        }
        Ok(round)
    }

    async fn sign_payout(&self, chain: &Chain, payout: &ChainPayout, round: &mut PayoutRound) -> Result<(), CallError> {
        let (to, amount) = destination(payout)?;
        let node = self.log_keys.node.name();
        let store = |signed: chain::payouts::SignedTransfer| async move {
            let transaction = stored(&signed);
            self.store
                .sign_chain_payout(payout.payout_id, node, signed.nonce, &transaction)
                .await
                .map_err(|e| e.to_string())
        };
        match chain.send_payout(to, amount, store).await {
            Ok(None) => Ok(()),
            Ok(Some((signed, sent))) => {
                round.signed += 1;
                tracing::info!(payout = payout.payout_id, transaction = %signed.hash, nonce = signed.nonce, to = %payout.address, "a payout was signed and sent");
                self.after_sending(payout.payout_id, ChainPayoutState::Signed, signed.hash, sent).await
            }
            Err(PayoutError::WouldRevert(message)) => Err(CallError::unavailable(
                format!("the market's address cannot pay it now (its reserves?): {message}"),
                5,
            )),
            Err(PayoutError::NotSigned(message)) => Err(unavailable(message)),
        }
    }

    /// What a send (again) said: taken → broadcast.
    async fn after_sending(
        &self,
        payout_id: i64,
        from: ChainPayoutState,
        hash: B256,
        sent: Sent,
    ) -> Result<(), CallError> {
        match sent {
            Sent::Pending => {
                if from == ChainPayoutState::Signed {
                    self.store.move_chain_payout(payout_id, from, ChainPayoutState::Broadcast, None).await?;
                }
                Ok(())
            }
            // Mined already, or spent by another: the next round reads which.
            Sent::NonceSpent => Ok(()),
            Sent::Refused(message) => Err(unavailable(format!("the chain's node refused {hash:#x}: {message}"))),
        }
    }

    /// A signed or sent payout: mined yet? Else sent again if the node
    /// forgot it, its fee bumped if it waited too long, or signed anew if
    /// its nonce went to another transaction.
    async fn follow_payout(
        &self,
        chain: &Chain,
        payout: &ChainPayout,
        bump_after_ms: i64,
        round: &mut PayoutRound,
    ) -> Result<(), CallError> {
        let id = payout.payout_id;
        if let Some((hash, block)) = self.mined_transaction(chain, payout).await? {
            self.store.move_chain_payout(id, payout.state, ChainPayoutState::Mined, Some((&hash, block))).await?;
            tracing::info!(payout = id, transaction = %hash, block, "a payout was mined");
            return Ok(());
        }
        let Some(latest) = payout.transactions.last() else {
            return Err(CallError::internal(format!("payout {id} is signed but holds no transaction")));
        };
        let nonce =
            payout.nonce.ok_or_else(|| CallError::internal(format!("payout {id} is signed without a nonce")))?;
        if chain.nonce_spent(nonce).await.map_err(unavailable)? {
            // Mined between the two reads, or spent by another transaction.
            if self.mined_transaction(chain, payout).await?.is_none() {
                tracing::warn!(payout = id, nonce, "another transaction spent a payout's nonce; it is signed anew");
                self.store.move_chain_payout(id, payout.state, ChainPayoutState::Requested, None).await?;
            }
            return Ok(());
        }
        // Sent again first where the node forgot it; bumped only once the
        // node holds it and it has waited too long.
        let hash = parse_hash(&latest.hash)?;
        if payout.state == ChainPayoutState::Signed || !chain.knows(hash).await.map_err(unavailable)? {
            let sent = chain.send_again(&parse_raw(&latest.raw)?).await;
            if sent == Sent::Pending {
                tracing::info!(payout = id, transaction = %hash, nonce, "a stored payout transaction was sent again");
            }
            return self.after_sending(id, payout.state, hash, sent).await;
        }
        if store::now_ms() - latest.created_at_ms >= bump_after_ms {
            let bumped = chain.bump(&parse_raw(&latest.raw)?).await.map_err(unavailable)?;
            let node = self.log_keys.node.name();
            if !self.store.bump_chain_payout(id, node, &stored(&bumped)).await? {
                return Ok(());
            }
            round.bumped += 1;
            tracing::info!(payout = id, transaction = %bumped.hash, nonce, max_fee = bumped.max_fee, "a payout's fee was bumped");
            let sent = chain.send_again(&bumped.raw).await;
            return self.after_sending(id, payout.state, bumped.hash, sent).await;
        }
        Ok(())
    }

    /// Which of the payout's transactions is mined, and in which block.
    async fn mined_transaction(&self, chain: &Chain, payout: &ChainPayout) -> Result<Option<(String, u64)>, CallError> {
        for transaction in &payout.transactions {
            let outcome = chain.transaction_outcome(parse_hash(&transaction.hash)?).await.map_err(unavailable)?;
            if let Some((_, block)) = outcome {
                return Ok(Some((transaction.hash.clone(), block)));
            }
        }
        Ok(None)
    }

    /// A mined payout: final once `confirmations` blocks are on top (then
    /// its tokens leave the ledger, or, reverted, go back to its creator);
    /// reorganised away: broadcast again.
    async fn finish_payout(
        &self,
        chain: &Chain,
        payout: &ChainPayout,
        round: &mut PayoutRound,
    ) -> Result<(), CallError> {
        let id = payout.payout_id;
        let hash = payout
            .tx_hash
            .clone()
            .ok_or_else(|| CallError::internal(format!("payout {id} mined without a transaction")))?;
        let Some((succeeded, block)) = chain.transaction_outcome(parse_hash(&hash)?).await.map_err(unavailable)? else {
            tracing::warn!(payout = id, transaction = %hash, "a mined payout was reorganised away; sent again");
            self.store.move_chain_payout(id, ChainPayoutState::Mined, ChainPayoutState::Broadcast, None).await?;
            return Ok(());
        };
        if payout.block != Some(block) {
            // Mined again in another block after a reorganisation.
            self.store
                .move_chain_payout(id, ChainPayoutState::Mined, ChainPayoutState::Mined, Some((&hash, block)))
                .await?;
        }
        let final_block = chain.final_block().await.map_err(|e| unavailable(e.to_string()))?;
        if block > final_block {
            return Ok(());
        }
        let Some(record) = self.store.payout(id).await? else {
            return Err(CallError::internal(format!("payout {id} has a chain record and no payout")));
        };
        let (to, reference) = match succeeded {
            true => (PayoutState::Completed, format!("transaction {hash} (block {block}, final)")),
            false => (PayoutState::Rejected, format!("transaction {hash} reverted (block {block}); tokens returned")),
        };
        match self.resolve_payout(&record, to, reference, true).await? {
            Ok(_) if succeeded => {
                round.finished += 1;
                tracing::info!(payout = id, transaction = %hash, block, amount = %record.amount, "a payout is final");
            }
            Ok(_) => {
                round.failed += 1;
                tracing::warn!(payout = id, transaction = %hash, "a payout's transaction reverted; its tokens went back");
            }
            // Resolved by another round meanwhile.
            Err(ItemError::PayoutNotRequested(_)) => {}
            Err(error) => return Err(error.into()),
        }
        Ok(())
    }

    /// Requests the payouts automatic payouts call for: each account whose
    /// available balance reached its threshold, with no payout on the way.
    async fn request_automatic_payouts(&self, chain: &Chain) -> Result<(), CallError> {
        let automatic = self.store.auto_payouts(chain.network(), None).await?;
        if automatic.is_empty() {
            return Ok(());
        }
        let waiting = self.store.payouts(None, Some(PayoutState::Requested)).await?;
        for auto in automatic {
            if waiting.iter().any(|p| p.account_id == auto.account_id) {
                continue;
            }
            let (state, _) = self.store.balances(auto.account_id).await?;
            let available = u64::try_from(state.available()).unwrap_or(0);
            if available < auto.threshold {
                continue;
            }
            let amount = Amount::from_minor_units(available).map_err(CallError::internal)?;
            let token_amount = chain.units().to_token(available).map_err(CallError::internal)?.to_string();
            let request =
                ChainPayoutRequest { network: auto.network.clone(), address: auto.address.clone(), token_amount };
            match self.request_payout(auto.account_id, amount, Some(request)).await {
                Ok(payout) => {
                    tracing::info!(payout = payout.id, account = auto.account_id, %amount, "an automatic payout was requested")
                }
                // Spent meanwhile: the next round looks again.
                Err(CallError::InsufficientBalance(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

fn unavailable(message: impl std::fmt::Display) -> CallError {
    CallError::unavailable(format!("the chain's node: {message}"), 5)
}

fn stored(signed: &chain::payouts::SignedTransfer) -> PayoutTransaction {
    PayoutTransaction {
        hash: format!("{:#x}", signed.hash),
        raw: format!("{}", signed.raw),
        max_fee: signed.max_fee.to_string(),
        created_at_ms: store::now_ms(),
    }
}

fn destination(payout: &ChainPayout) -> Result<(chain::Address, U256), CallError> {
    let to = payout.address.parse().map_err(|_| CallError::internal(format!("payout address {:?}", payout.address)))?;
    let amount = U256::from_str(&payout.token_amount)
        .map_err(|_| CallError::internal(format!("payout token amount {:?}", payout.token_amount)))?;
    Ok((to, amount))
}

fn parse_hash(hash: &str) -> Result<B256, CallError> {
    hash.parse().map_err(|_| CallError::internal(format!("a stored transaction hash {hash:?}")))
}

fn parse_raw(raw: &str) -> Result<chain::payouts::Bytes, CallError> {
    raw.parse().map_err(|_| CallError::internal("a stored raw transaction is not hex"))
}
