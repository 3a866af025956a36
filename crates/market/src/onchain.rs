//! Calls paid on the chain with x402, by callers without an account: the
//! payment verified against the model's price, its authorization claimed
//! once (durably, before the model runs), settled only if the call
//! succeeded, and credited in the call's own ledger batch: the settled
//! tokens are the market's on the chain, so the split comes from the
//! issuer, as a deposit's would.
//!
//! A payment's row (`store::ChainPayment`) goes claimed → settling (its
//! transaction's hash stored before it is sent) → credited; or → void when
//! nothing was settled. What a crash leaves half-way [`Market::recover_payments`]
//! finishes: a settlement that landed is credited, one that cannot land any
//! more is voided, nothing twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chain::x402::{
    PaymentError, PaymentPayload, PaymentRequirements, SettleError, Settled, SettlementResponse, Verified,
};
use chain::{B256, Chain};
use domain::{Amount, Sha256};
use ledger::{ChargeParties, Shares};
use store::{BatchItem, ChainPayment, Charge, PaymentKey, PaymentState, Store};
use tlog::ReceiptLeaf;

use crate::{CallError, Market};

/// What a payment on the chain pays for.
pub(crate) enum Purpose {
    /// A call of `model_id`'s `version`, split so.
    Call { model_id: i64, version: i64, parties: ChargeParties, shares: Shares },
    /// `account_id`'s prepaid balance.
    TopUp { account_id: i64 },
}

/// A top-up paid with x402: its settlement, and its deposit once final
/// (`None` when it was not final within the settlement's wait: the
/// recovery credits it once it is).
#[derive(Debug)]
pub struct TopUp {
    pub transfer: Option<store::TransferRecord>,
    pub settlement: SettlementResponse,
}

/// The payment of a call paid on the chain, once verified and claimed.
pub(crate) struct Claim {
    store: Store,
    chain: Arc<Chain>,
    pub(crate) key: PaymentKey,
    pub(crate) verified: Verified,
    /// The payment and the terms it paid: what an outside facilitator settles.
    payment: PaymentPayload,
    terms: PaymentRequirements,
    /// CAIP-10.
    pub(crate) payer: String,
    /// Set once a settlement was signed: from then on, the row is the
    /// recovery's if the call goes no further.
    signed: AtomicBool,
}

impl Drop for Claim {
    /// A claim whose call failed or was dropped before its settlement was
    /// signed settles nothing: voided, so that its row is not left claimed.
    fn drop(&mut self) {
        if self.signed.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (store, key) = (self.store.clone(), self.key.clone());
        runtime.spawn(async move {
            if let Err(error) = store.void_chain_payment(&key, PaymentState::Claimed).await {
                tracing::warn!(%error, payer = %key.payer, "voiding an unsettled payment failed; the recovery will");
            }
        });
    }
}

impl From<PaymentError> for CallError {
    fn from(error: PaymentError) -> CallError {
        match error {
            PaymentError::Malformed(message) => CallError::MalformedPayment(format!("PAYMENT-SIGNATURE: {message}")),
            PaymentError::Refused { reason, message } => CallError::PaymentInvalid { reason, message },
            PaymentError::Unavailable(message) => {
                tracing::warn!(%message, "the chain's node did not answer a payment's verification");
                CallError::unavailable("the chain's node does not answer; nothing ran and nothing was paid", 2)
            }
        }
    }
}

impl Market {
    /// The chain, for a call that brought a payment.
    fn chain(&self) -> Result<&Arc<Chain>, CallError> {
        self.chain.as_ref().ok_or_else(|| {
            CallError::InvalidRequest("this market takes no payments on a chain: send an API key".into())
        })
    }

    /// Verifies `payment` against `charged` and claims its authorization
    /// for what it pays: a call, with its split (`shares` to `parties`,
    /// fixed now), or a top-up.
    pub(crate) async fn claim_payment(
        &self,
        payment: &PaymentPayload,
        charged: Amount,
        purpose: Purpose,
    ) -> Result<Claim, CallError> {
        let chain = self.chain()?;
        let amount = chain.units().to_token(charged.minor_units()).map_err(|e| CallError::PaymentInvalid {
            reason: "invalid_exact_evm_payload_authorization_value",
            message: format!("the price cannot be paid in this token: {e}"),
        })?;
        let terms = chain.requirements(amount);
        let verified = chain.verify(payment, &terms).await?;
        let payer = verified.payer_caip10(chain.network());
        let key = PaymentKey {
            network: chain.network().to_owned(),
            payer: chain::x402::lower(verified.payer),
            nonce: format!("{:#x}", verified.nonce),
        };
        let (model_id, account_id, version, creator_id, shares) = match purpose {
            Purpose::Call { model_id, version, parties, shares } => (
                model_id,
                None,
                version,
                parties.creator,
                [shares.creator.minor_units(), shares.node.minor_units(), shares.treasury.minor_units()],
            ),
            Purpose::TopUp { account_id } => (0, Some(account_id), 0, account_id, [charged.minor_units(), 0, 0]),
        };
        let row = ChainPayment {
            key: key.clone(),
            amount: charged.minor_units(),
            valid_before: i64::try_from(verified.valid_before_s()).unwrap_or(i64::MAX),
            state: PaymentState::Claimed,
            node: self.log_keys.node.name().to_owned(),
            model_id,
            account_id,
            version,
            creator_id,
            shares,
            tx_hash: None,
            log_index: None,
            created_at_ms: store::now_ms(),
        };
        if !self.store.claim_chain_payment(&row).await? {
            return Err(CallError::PaymentInvalid {
                reason: "invalid_exact_evm_payload_authorization_nonce_used",
                message: "this authorization was presented before (its nonce is claimed); sign a new one".into(),
            });
        }
        Ok(Claim {
            store: self.store.clone(),
            chain: chain.clone(),
            key,
            verified,
            payment: payment.clone(),
            terms,
            payer,
            signed: AtomicBool::new(false),
        })
    }

    /// Settles a claimed payment once its call succeeded. A settlement that
    /// reverted or could not be sent moved nothing (voided, 402 or 503); one
    /// whose fate is unknown is left to the recovery, which credits it if
    /// it lands.
    pub(crate) async fn settle(&self, claim: &Claim) -> Result<Settled, CallError> {
        let before_sending = |transaction: Option<B256>| async move {
            claim.signed.store(true, Ordering::Relaxed);
            let hash = transaction.map(|transaction| format!("{transaction:#x}"));
            let stored = self.store.chain_payment_settling(&claim.key, hash.as_deref()).await;
            match stored {
                Ok(true) => Ok(()),
                Ok(false) => Err("the payment is no longer claimed".to_owned()),
                Err(error) => Err(error.to_string()),
            }
        };
        match claim.chain.settle(&claim.verified, &claim.payment, &claim.terms, before_sending).await {
            Ok(_) if self.crash_after_settlement => {
                tracing::error!("VITRINE_CRASH_AFTER_SETTLEMENT: aborting between a settlement and its ledger write");
                std::process::abort()
            }
            Ok(settled) => {
                if settled.by_facilitator {
                    // Known only now: kept for the recovery and the audit.
                    let hash = format!("{:#x}", settled.transaction);
                    if let Err(error) = self.store.chain_payment_transaction(&claim.key, &hash).await {
                        tracing::warn!(%error, "storing a facilitator's settlement hash failed");
                    }
                }
                Ok(settled)
            }
            Err(SettleError::WouldRevert(message)) => {
                self.void(claim, PaymentState::Claimed).await;
                Err(CallError::PaymentInvalid {
                    reason: "invalid_exact_evm_payload_simulation_failed",
                    message: format!("the payment no longer settles ({message}); nothing was paid"),
                })
            }
            Err(SettleError::NotSent(message)) => {
                self.void(claim, PaymentState::Settling).await;
                self.void(claim, PaymentState::Claimed).await;
                tracing::warn!(%message, "a settlement could not be sent");
                Err(CallError::unavailable("the chain's node does not take the settlement; nothing was paid", 2))
            }
            Err(SettleError::Reverted { transaction }) => {
                self.void(claim, PaymentState::Settling).await;
                Err(CallError::PaymentInvalid {
                    reason: "invalid_exact_evm_payload_simulation_failed",
                    message: format!(
                        "the settlement {transaction:#x} reverted: the payer's tokens moved away, or the \
                         authorization was used elsewhere; nothing was paid"
                    ),
                })
            }
            Err(SettleError::Unknown { transaction, message }) => {
                let transaction = transaction.map(|t| format!("{t:#x} ")).unwrap_or_default();
                tracing::warn!(%message, %transaction, "a settlement's fate is unknown");
                Err(CallError::unavailable(
                    format!(
                        "the settlement {transaction}was sent but not seen mined; it is credited if it lands, \
                         and the payment cannot be used again"
                    ),
                    5,
                ))
            }
        }
    }

    async fn void(&self, claim: &Claim, from: PaymentState) {
        claim.signed.store(true, Ordering::Relaxed);
        if let Err(error) = self.store.void_chain_payment(&claim.key, from).await {
            tracing::warn!(%error, "voiding a payment failed; the recovery will");
        }
    }

    /// `PAYMENT-RESPONSE` of a settled payment.
    pub(crate) fn settlement_response(&self, claim: &Claim, settled: &Settled) -> SettlementResponse {
        SettlementResponse {
            success: true,
            error_reason: None,
            transaction: format!("{:#x}", settled.transaction),
            network: claim.key.network.clone(),
            payer: claim.key.payer.clone(),
        }
    }

    /// Funds `account_id`'s prepaid balance with `amount` paid by x402:
    /// verified and claimed, settled, then credited once its block is final
    /// (the deposit's id is the payment's, so it is credited once whoever
    /// credits it: this call, or the recovery after a stop).
    pub async fn top_up(&self, account_id: i64, amount: Amount, payment: &PaymentPayload) -> Result<TopUp, CallError> {
        let claim = self.claim_payment(payment, amount, Purpose::TopUp { account_id }).await?;
        let settled = self.settle(&claim).await?;
        let settlement = self.settlement_response(&claim, &settled);
        let chain = self.chain()?;
        let deadline = tokio::time::Instant::now() + chain.settle_timeout();
        loop {
            let final_block = chain.final_block().await.map_err(|e| {
                tracing::warn!(error = %e, "reading the final block failed; the recovery credits the top-up");
                CallError::unavailable("the chain's node does not answer; the top-up is credited once final", 5)
            })?;
            if final_block >= settled.block {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(TopUp { transfer: None, settlement });
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        let transfer =
            self.credit_top_up(&claim.key, account_id, amount.minor_units(), &settlement.transaction).await?;
        Ok(TopUp { transfer: Some(transfer), settlement })
    }

    /// Deposits a final top-up: from the issuer (the tokens arrived on the
    /// chain), once per payment whoever asks.
    async fn credit_top_up(
        &self,
        key: &PaymentKey,
        account_id: i64,
        amount: u64,
        transaction: &str,
    ) -> Result<store::TransferRecord, CallError> {
        let transfer = ledger::Transfer {
            debit: self.system.issuer,
            credit: account_id,
            amount: Amount::from_minor_units(amount).map_err(CallError::internal)?,
            kind: ledger::TransferKind::Deposit,
            reference: format!("x402 top-up {transaction}"),
        };
        let id = format!("x402:{}:{}:{}", key.network, key.payer, key.nonce);
        let command = ledger::Command::Once { id, transfer };
        let outcome = self.sequencer.submit(BatchItem::command(command)).await??;
        self.store.chain_payment_credited(key).await?;
        outcome.transfers.into_iter().next().ok_or_else(|| CallError::internal("a top-up recorded no transfer"))
    }

    /// Finishes what a crash (or a settlement whose fate was unknown) left of
    /// this node's payments older than `older_than_ms`: a claim never
    /// signed is voided; a settlement that landed (or an authorization used
    /// by anyone: its tokens reached the market) is credited, once; one that
    /// reverted, or whose authorization expired unused, is voided; one still
    /// pending waits for the next round. How many were credited and voided.
    pub async fn recover_payments(&self, older_than_ms: i64) -> Result<(usize, usize), CallError> {
        let Some(chain) = &self.chain else { return Ok((0, 0)) };
        let now = store::now_ms();
        let (mut credited, mut voided) = (0, 0);
        for payment in self.store.unfinished_chain_payments(self.log_keys.node.name()).await? {
            if now - payment.created_at_ms < older_than_ms {
                continue;
            }
            let outcome = self.payment_outcome(chain, &payment).await;
            match outcome {
                Ok(Some(true)) => {
                    let mut payment = payment;
                    if payment.tx_hash.is_none() {
                        // Settled by a facilitator that never answered: its
                        // transaction is the one that used the authorization.
                        payment.tx_hash = settlement_of(chain, &payment).await;
                    }
                    match payment.account_id {
                        Some(account) => {
                            let transaction = payment.tx_hash.clone().unwrap_or_default();
                            self.credit_top_up(&payment.key, account, payment.amount, &transaction).await?;
                        }
                        None => self.credit_recovered(&payment).await?,
                    }
                    credited += 1;
                }
                Ok(Some(false)) => {
                    if self.store.void_chain_payment(&payment.key, payment.state).await? {
                        voided += 1;
                    }
                }
                Ok(None) => {}
                Err(message) => tracing::warn!(%message, payer = %payment.key.payer, "a payment's recovery waits"),
            }
        }
        Ok((credited, voided))
    }

    /// Whether a payment left half-way was paid (`Some(true)`), can never be
    /// (`Some(false)`), or may still be (`None`).
    async fn payment_outcome(&self, chain: &Chain, payment: &ChainPayment) -> Result<Option<bool>, String> {
        let nonce: B256 = payment.key.nonce.parse().map_err(|_| format!("nonce {:?}", payment.key.nonce))?;
        let payer = payment.key.payer.parse().map_err(|_| format!("payer {:?}", payment.key.payer))?;
        if let Some(hash) = &payment.tx_hash {
            let transaction: B256 = hash.parse().map_err(|_| format!("transaction {hash:?}"))?;
            if let Some((succeeded, block)) = chain.transaction_outcome(transaction).await? {
                // A top-up is credited only once final: a reorganisation may
                // still take it away before.
                if succeeded
                    && payment.account_id.is_some()
                    && chain.final_block().await.map_err(|e| e.to_string())? < block
                {
                    return Ok(None);
                }
                return Ok(Some(succeeded || chain.authorization_used(payer, nonce).await?));
            }
        }
        if chain.authorization_used(payer, nonce).await? {
            // Used by another transaction than ours (anyone may send it): the
            // tokens still went to the market. (A top-up's is credited at once:
            // which block holds it is not known here.)
            return Ok(Some(payment.state == PaymentState::Settling));
        }
        let expired = store::now_ms() / 1000 > payment.valid_before;
        Ok((payment.state == PaymentState::Claimed || expired).then_some(false))
    }

    /// Credits a settled payment whose call's charge was never written: its
    /// split from the issuer, with a leaf of its own (its inputs and outputs
    /// unknown: zeros), in one batch that refuses a payment credited before.
    async fn credit_recovered(&self, payment: &ChainPayment) -> Result<(), CallError> {
        let model = self.store.model_by_id(payment.model_id).await?;
        let version = self.known_models.version(&self.store, payment.model_id, payment.version).await?;
        let [creator, node, treasury] = payment.shares.map(Amount::from_minor_units);
        let shares = Shares {
            creator: creator.map_err(CallError::internal)?,
            node: node.map_err(CallError::internal)?,
            treasury: treasury.map_err(CallError::internal)?,
        };
        let parties = ChargeParties {
            caller: self.system.issuer,
            creator: payment.creator_id,
            node: self.system.node,
            treasury: self.system.treasury,
        };
        let reference = format!("{}/{}@{}", model.owner, model.name, payment.version);
        let transfers = ledger::charge_transfers(parties, shares, &reference);
        let payer = format!("{}:{}", payment.key.network, payment.key.payer);
        let zeros = Sha256::from_bytes([0; 32]);
        let usage = store::UsageEvent {
            created_at_ms: store::now_ms(),
            model_id: model.id,
            version: payment.version,
            owner_id: model.owner_id,
            task: model.task.as_str().to_owned(),
            public: model.visibility == domain::Visibility::Public,
            caller: *Sha256::digest(payer.as_bytes()).as_bytes(),
            app: String::new(),
            node: self.log_keys.node.name().to_owned(),
            price: payment.amount,
            creator_share: payment.shares[0],
            latency_us: 0,
            cpu_us: 0,
            status: "ok".into(),
        };
        let leaf = ReceiptLeaf {
            format: tlog::leaf::LEAF_FORMAT_PAID_ON_CHAIN,
            created_at_ms: usage.created_at_ms,
            model: crate::keys::log_model_label(&self.log_keys, &model.owner, model.name.as_str(), model.visibility),
            version: u32::try_from(payment.version).map_err(CallError::internal)?,
            blob_sha256: version.map_or(zeros, |v| v.blob_sha256),
            caller: Sha256::digest(payer.as_bytes()),
            app: String::new(),
            node: self.log_keys.node.name().to_owned(),
            task: usage.task.clone(),
            price: payment.amount,
            creator_share: payment.shares[0],
            node_share: payment.shares[1],
            treasury_share: payment.shares[2],
            input_sha256: zeros,
            output_sha256: zeros,
            idempotency_key_sha256: None,
            error: String::new(),
            payer,
            settlement: payment.tx_hash.clone().unwrap_or_default(),
        };
        let leaf = leaf.encode().map_err(CallError::internal)?;
        let signature = self.log_keys.sign_receipt(&leaf);
        let item = BatchItem::Charge(Charge {
            transfers,
            model_id: model.id,
            leaf,
            signature,
            usage,
            answer: None,
            at_ms: None,
            grant: None,
            release: None,
            payment: Some(payment.key.clone()),
        });
        self.sequencer.submit(item).await??;
        tracing::info!(payer = %payment.key.payer, amount = payment.amount, "a settled payment was credited after a restart");
        Ok(())
    }
}

/// The transaction that used a payment's authorization, if found.
async fn settlement_of(chain: &Chain, payment: &ChainPayment) -> Option<String> {
    let payer = payment.key.payer.parse().ok()?;
    let nonce = payment.key.nonce.parse().ok()?;
    match chain.authorization_transaction(payer, nonce).await {
        Ok(found) => found.map(|transaction| format!("{transaction:#x}")),
        Err(message) => {
            tracing::warn!(%message, payer = %payment.key.payer, "the settlement of a recovered payment was not found");
            None
        }
    }
}
