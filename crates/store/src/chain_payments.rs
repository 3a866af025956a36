//! x402 payments (`chain_payments`): each authorization (network, payer,
//! nonce) claimed once, before the model runs; its settlement's hash stored
//! before the settlement is sent; credited in the same transaction as its
//! call's charge ([`crate::Charge::payment`]). What a crash leaves half-way
//! is found again by [`Store::unfinished_chain_payments`].

use crate::backend::{Columns, on_pool, on_tx};
use crate::{Store, StoreError};

/// A payment's identity: one authorization of one payer on one network.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PaymentKey {
    /// CAIP-2.
    pub network: String,
    /// The payer's address, lowercase hex.
    pub payer: String,
    /// The authorization's nonce, lowercase hex.
    pub nonce: String,
}

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentState {
    /// Verified; its call is running.
    Claimed,
    /// Its settlement is signed, its hash stored, maybe sent.
    Settling,
    /// Settled and split in the ledger.
    Credited,
    /// Never settled: its call failed, or it was abandoned unsent.
    Void,
}

impl PaymentState {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentState::Claimed => "claimed",
            PaymentState::Settling => "settling",
            PaymentState::Credited => "credited",
            PaymentState::Void => "void",
        }
    }

    fn parse(text: &str) -> Result<PaymentState, StoreError> {
        [PaymentState::Claimed, PaymentState::Settling, PaymentState::Credited, PaymentState::Void]
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| StoreError::Corrupt(format!("chain payment state {text:?}")))
    }
}

/// A claimed payment, with who its call pays: its split is fixed when it
/// is claimed, so that a payment credited after a restart is split as its
/// call would have been.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainPayment {
    pub key: PaymentKey,
    /// Ledger minor units.
    pub amount: u64,
    /// The authorization's `validBefore`, Unix seconds.
    pub valid_before: i64,
    pub state: PaymentState,
    /// The node whose call claimed it, and which settles it.
    pub node: String,
    /// A call's model (0 for a top-up).
    pub model_id: i64,
    /// A top-up's account: the balance it funds (`None` for a call).
    pub account_id: Option<i64>,
    pub version: i64,
    pub creator_id: i64,
    /// Minor units; they add up to `amount`.
    pub shares: [u64; 3],
    /// The settlement's hash, once signed.
    pub tx_hash: Option<String>,
    /// The call's log index, once credited.
    pub log_index: Option<i64>,
    pub created_at_ms: i64,
}

/// The table's columns, in the order [`read`] reads them.
macro_rules! columns {
    () => {
        "network, payer, nonce, amount, valid_before, state, node, model_id, account_id, version, creator_id, \
         creator_share, node_share, treasury_share, tx_hash, log_index, created_at"
    };
}

fn read(row: &impl Columns) -> Result<ChainPayment, StoreError> {
    let state: String = row.at(5)?;
    let units = |index: usize| -> Result<u64, StoreError> {
        let value: i64 = row.at(index)?;
        u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("a chain payment's amount is {value}")))
    };
    Ok(ChainPayment {
        key: PaymentKey { network: row.at(0)?, payer: row.at(1)?, nonce: row.at(2)? },
        amount: units(3)?,
        valid_before: row.at(4)?,
        state: PaymentState::parse(&state)?,
        node: row.at(6)?,
        model_id: row.at(7)?,
        account_id: row.at(8)?,
        version: row.at(9)?,
        creator_id: row.at(10)?,
        shares: [units(11)?, units(12)?, units(13)?],
        tx_hash: row.at(14)?,
        log_index: row.at(15)?,
        created_at_ms: row.at(16)?,
    })
}

impl Store {
    /// Marks a settled top-up credited (its deposit, a `Command::Once` by the
    /// payment's id, is what pays once).
    pub async fn chain_payment_credited(&self, key: &PaymentKey) -> Result<bool, StoreError> {
        self.move_chain_payment(key, PaymentState::Settling, PaymentState::Credited, None).await
    }

    /// Claims a payment before its call runs: false if its authorization
    /// was claimed before (by any call, on any node), whatever became of it.
    pub async fn claim_chain_payment(&self, payment: &ChainPayment) -> Result<bool, StoreError> {
        let inserted = on_pool!(&self.pool, pool => {
            sqlx::query(concat!(
                "INSERT INTO chain_payments (",
                columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
                 ON CONFLICT (network, payer, nonce) DO NOTHING"
            ))
            .bind(&payment.key.network)
            .bind(&payment.key.payer)
            .bind(&payment.key.nonce)
            .bind(payment.amount as i64)
            .bind(payment.valid_before)
            .bind(payment.state.as_str())
            .bind(&payment.node)
            .bind(payment.model_id)
            .bind(payment.account_id)
            .bind(payment.version)
            .bind(payment.creator_id)
            .bind(payment.shares[0] as i64)
            .bind(payment.shares[1] as i64)
            .bind(payment.shares[2] as i64)
            .bind(&payment.tx_hash)
            .bind(payment.log_index)
            .bind(payment.created_at_ms)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(inserted == 1)
    }

    /// Marks a claimed payment settling, with its settlement's hash, before
    /// it is sent (`None`: an outside facilitator sends it, and its hash is
    /// known once it answers: [`Store::chain_payment_transaction`]).
    pub async fn chain_payment_settling(&self, key: &PaymentKey, tx_hash: Option<&str>) -> Result<bool, StoreError> {
        self.move_chain_payment(key, PaymentState::Claimed, PaymentState::Settling, tx_hash).await
    }

    /// Records the settlement's hash of a payment an outside facilitator
    /// settled (once: a hash stored is kept).
    pub async fn chain_payment_transaction(&self, key: &PaymentKey, tx_hash: &str) -> Result<bool, StoreError> {
        let stored = on_pool!(&self.pool, pool => {
            sqlx::query(
                "UPDATE chain_payments SET tx_hash = $1 \
                 WHERE network = $2 AND payer = $3 AND nonce = $4 AND tx_hash IS NULL",
            )
            .bind(tx_hash)
            .bind(&key.network)
            .bind(&key.payer)
            .bind(&key.nonce)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(stored == 1)
    }

    /// Voids a payment that was never settled (`from`: where it stands).
    pub async fn void_chain_payment(&self, key: &PaymentKey, from: PaymentState) -> Result<bool, StoreError> {
        self.move_chain_payment(key, from, PaymentState::Void, None).await
    }

    async fn move_chain_payment(
        &self,
        key: &PaymentKey,
        from: PaymentState,
        to: PaymentState,
        tx_hash: Option<&str>,
    ) -> Result<bool, StoreError> {
        let moved = on_pool!(&self.pool, pool => {
            sqlx::query(
                "UPDATE chain_payments SET state = $1, tx_hash = COALESCE($2, tx_hash) \
                 WHERE network = $3 AND payer = $4 AND nonce = $5 AND state = $6",
            )
            .bind(to.as_str())
            .bind(tx_hash)
            .bind(&key.network)
            .bind(&key.payer)
            .bind(&key.nonce)
            .bind(from.as_str())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(moved == 1)
    }

    /// The payment of an authorization, if it was claimed.
    pub async fn chain_payment(&self, key: &PaymentKey) -> Result<Option<ChainPayment>, StoreError> {
        let row = on_pool!(&self.pool, pool => {
            sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM chain_payments WHERE network = $1 AND payer = $2 AND nonce = $3"
            ))
            .bind(&key.network)
            .bind(&key.payer)
            .bind(&key.nonce)
            .fetch_optional(pool)
            .await?
            .map(|row| read(&row))
        });
        row.transpose()
    }

    /// `node`'s payments that are claimed or settling: after a crash, what
    /// it must settle, credit or void.
    pub async fn unfinished_chain_payments(&self, node: &str) -> Result<Vec<ChainPayment>, StoreError> {
        let rows = on_pool!(&self.pool, pool => {
            sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM chain_payments WHERE node = $1 AND state IN ('claimed', 'settling') ORDER BY created_at"
            ))
            .bind(node)
            .fetch_all(pool)
            .await?
            .iter()
            .map(read)
            .collect::<Vec<_>>()
        });
        rows.into_iter().collect()
    }
}

/// An address an account proved it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenAddress {
    pub network: String,
    /// Lowercase hex.
    pub address: String,
    pub account_id: i64,
    pub proven_at_ms: i64,
}

impl Store {
    /// Records that `account_id` holds `address` on `network`. The address's
    /// proof as it stands: this one, or an earlier one (of this account, or
    /// of another, which keeps it).
    pub async fn prove_address(
        &self,
        network: &str,
        address: &str,
        account_id: i64,
        now_ms: i64,
    ) -> Result<ProvenAddress, StoreError> {
        let (account_id, proven_at_ms): (i64, i64) = on_pool!(&self.pool, pool => {
            sqlx::query(
                "INSERT INTO chain_addresses (network, address, account_id, proven_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (network, address) DO NOTHING",
            )
            .bind(network)
            .bind(address)
            .bind(account_id)
            .bind(now_ms)
            .execute(pool)
            .await?;
            let row = sqlx::query(
                "SELECT account_id, proven_at FROM chain_addresses WHERE network = $1 AND address = $2",
            )
            .bind(network)
            .bind(address)
            .fetch_one(pool)
            .await?;
            (row.at(0)?, row.at(1)?)
        });
        Ok(ProvenAddress { network: network.to_owned(), address: address.to_owned(), account_id, proven_at_ms })
    }

    /// The addresses proven on `network`: by `account_id`, or everyone's.
    pub async fn proven_addresses(
        &self,
        network: &str,
        account_id: Option<i64>,
    ) -> Result<Vec<ProvenAddress>, StoreError> {
        // -1 stands for every account (no account has it).
        let rows = on_pool!(&self.pool, pool => {
            sqlx::query(
                "SELECT address, account_id, proven_at FROM chain_addresses \
                 WHERE network = $1 AND ($2 = -1 OR account_id = $2) ORDER BY proven_at, address",
            )
            .bind(network)
            .bind(account_id.unwrap_or(-1))
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| -> Result<ProvenAddress, StoreError> {
                Ok(ProvenAddress {
                    network: network.to_owned(),
                    address: row.at(0)?,
                    account_id: row.at(1)?,
                    proven_at_ms: row.at(2)?,
                })
            })
            .collect::<Vec<_>>()
        });
        rows.into_iter().collect()
    }

    /// The last block whose deposits of `token` on `network` are read.
    pub async fn chain_cursor(&self, network: &str, token: &str) -> Result<Option<u64>, StoreError> {
        let block: Option<i64> = on_pool!(&self.pool, pool => {
            sqlx::query_scalar("SELECT block FROM chain_cursors WHERE network = $1 AND token = $2")
                .bind(network)
                .bind(token)
                .fetch_optional(pool)
                .await?
        });
        Ok(block.map(|b| b.max(0) as u64))
    }

    /// Sets the cursor where it starts, at `block`, if it has none; moves
    /// it forward to `block` (never back) otherwise. A range's deposits move
    /// it with their credits ([`crate::BatchItem::Deposits`]).
    pub async fn advance_chain_cursor(&self, network: &str, token: &str, block: u64) -> Result<(), StoreError> {
        on_pool!(&self.pool, pool => {
            sqlx::query(
                "INSERT INTO chain_cursors (network, token, block) VALUES ($1, $2, $3) \
                 ON CONFLICT (network, token) DO UPDATE SET block = EXCLUDED.block \
                 WHERE chain_cursors.block < EXCLUDED.block",
            )
            .bind(network)
            .bind(token)
            .bind(block as i64)
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}

/// Within a batch: whether `key` is settling (and so may be credited).
pub(crate) async fn is_settling(tx: &mut crate::backend::Tx, key: &PaymentKey) -> Result<bool, StoreError> {
    let state: Option<String> = on_tx!(tx, tx => {
        sqlx::query_scalar("SELECT state FROM chain_payments WHERE network = $1 AND payer = $2 AND nonce = $3")
            .bind(&key.network)
            .bind(&key.payer)
            .bind(&key.nonce)
            .fetch_optional(&mut **tx)
            .await?
    });
    Ok(state.as_deref() == Some(PaymentState::Settling.as_str()))
}

/// Within a batch: marks `key` credited by the call at `log_index`.
pub(crate) async fn credit(
    tx: &mut crate::backend::Tx,
    key: &PaymentKey,
    log_index: Option<i64>,
) -> Result<(), StoreError> {
    on_tx!(tx, tx => {
        sqlx::query(
            "UPDATE chain_payments SET state = 'credited', log_index = $1 \
             WHERE network = $2 AND payer = $3 AND nonce = $4 AND state = 'settling'",
        )
        .bind(log_index)
        .bind(&key.network)
        .bind(&key.payer)
        .bind(&key.nonce)
        .execute(&mut **tx)
        .await?;
    });
    Ok(())
}

/// Within a batch: moves the deposits' cursor from where `deposits` began
/// to its end; false if it no longer stands there.
pub(crate) async fn move_cursor(
    tx: &mut crate::backend::Tx,
    deposits: &crate::ChainDeposits,
) -> Result<bool, StoreError> {
    let moved = on_tx!(tx, tx => {
        sqlx::query("UPDATE chain_cursors SET block = $1 WHERE network = $2 AND token = $3 AND block = $4")
            .bind(deposits.to as i64)
            .bind(&deposits.network)
            .bind(&deposits.token)
            .bind(deposits.from as i64)
            .execute(&mut **tx)
            .await?
            .rows_affected()
    });
    Ok(moved == 1)
}
