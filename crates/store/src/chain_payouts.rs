//! Payouts sent on the chain (`chain_payouts`, `chain_payout_transactions`):
//! a durable state machine beside each payout's ledger row. Requested with
//! its payout (one batch item); signed by one node, which stores the nonce
//! and raw transaction before sending it; sent; mined; final, when the
//! payout's ledger resolution (a batch item) marks it so. A stored
//! transaction is sent again as it is after a restart, never signed anew
//! with another nonce; a fee bump reuses the nonce and is stored too.
//! Automatic payouts (`chain_auto_payouts`): a creator's threshold and
//! address.

use std::collections::HashMap;

use crate::backend::{Columns, Tx, on_pool, on_tx};
use crate::{Store, StoreError, now_ms};

/// Where an on-chain payout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainPayoutState {
    /// Waiting to be signed.
    Requested,
    /// Its nonce and raw transaction stored; maybe not yet sent.
    Signed,
    /// Sent, not yet mined.
    Broadcast,
    /// In a block, not yet final.
    Mined,
    /// Final: paid, its tokens out of the ledger.
    Final,
    /// Reverted, or refused before it was signed: its tokens went back.
    Failed,
}

impl ChainPayoutState {
    pub const ALL: [ChainPayoutState; 6] = [
        ChainPayoutState::Requested,
        ChainPayoutState::Signed,
        ChainPayoutState::Broadcast,
        ChainPayoutState::Mined,
        ChainPayoutState::Final,
        ChainPayoutState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChainPayoutState::Requested => "requested",
            ChainPayoutState::Signed => "signed",
            ChainPayoutState::Broadcast => "broadcast",
            ChainPayoutState::Mined => "mined",
            ChainPayoutState::Final => "final",
            ChainPayoutState::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Result<ChainPayoutState, StoreError> {
        ChainPayoutState::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| StoreError::Corrupt(format!("chain payout state {text:?}")))
    }
}

/// Where a payout goes on the chain, as requested with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainPayoutRequest {
    /// CAIP-2.
    pub network: String,
    /// A proven address of the payout's account, lowercase hex.
    pub address: String,
    /// The payout's amount in token units, in decimal.
    pub token_amount: String,
}

/// One signed transaction of a payout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutTransaction {
    /// `0x` and 64 hex digits.
    pub hash: String,
    /// The signed transaction, `0x` and hex: what is sent (again).
    pub raw: String,
    /// Its max fee per gas, wei in decimal: a bump pays more.
    pub max_fee: String,
    pub created_at_ms: i64,
}

/// An on-chain payout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainPayout {
    pub payout_id: i64,
    pub network: String,
    pub address: String,
    pub token_amount: String,
    pub state: ChainPayoutState,
    /// The node that signed it.
    pub node: Option<String>,
    pub nonce: Option<u64>,
    /// The mined transaction, or before that the latest sent.
    pub tx_hash: Option<String>,
    pub block: Option<u64>,
    pub updated_at_ms: i64,
    /// Every transaction signed for it, oldest first.
    pub transactions: Vec<PayoutTransaction>,
}

/// A creator's automatic payouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoPayout {
    pub account_id: i64,
    pub network: String,
    pub address: String,
    /// Minor units: the balance at which all of it is paid out.
    pub threshold: u64,
    pub updated_at_ms: i64,
}

/// The table's columns, in the order [`read`] reads them.
macro_rules! columns {
    () => {
        "payout_id, network, address, token_amount, state, node, nonce, tx_hash, block, updated_at"
    };
}

/// Stores a payout's signed transaction in the database transaction `tx`
/// (of either database): once per hash.
macro_rules! insert_transaction {
    ($tx:ident, $payout_id:expr, $transaction:expr) => {
        sqlx::query(
            "INSERT INTO chain_payout_transactions (payout_id, hash, raw, max_fee, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (payout_id, hash) DO NOTHING",
        )
        .bind($payout_id)
        .bind(&$transaction.hash)
        .bind(&$transaction.raw)
        .bind(&$transaction.max_fee)
        .bind($transaction.created_at_ms)
        .execute(&mut *$tx)
        .await?
    };
}

fn read(row: &impl Columns) -> Result<ChainPayout, StoreError> {
    let state: String = row.at(4)?;
    let unsigned = |value: Option<i64>| value.map(|v| v.max(0) as u64);
    Ok(ChainPayout {
        payout_id: row.at(0)?,
        network: row.at(1)?,
        address: row.at(2)?,
        token_amount: row.at(3)?,
        state: ChainPayoutState::parse(&state)?,
        node: row.at(5)?,
        nonce: unsigned(row.at(6)?),
        tx_hash: row.at(7)?,
        block: unsigned(row.at(8)?),
        updated_at_ms: row.at(9)?,
        transactions: vec![],
    })
}

impl Store {
    /// One payout's chain record, with its transactions; `None` for a
    /// payout resolved by hand.
    pub async fn chain_payout(&self, payout_id: i64) -> Result<Option<ChainPayout>, StoreError> {
        let row = on_pool!(&self.pool, pool => {
            sqlx::query(concat!("SELECT ", columns!(), " FROM chain_payouts WHERE payout_id = $1"))
                .bind(payout_id)
                .fetch_optional(pool)
                .await?
                .as_ref()
                .map(read)
                .transpose()?
        });
        let mut payouts: Vec<ChainPayout> = row.into_iter().collect();
        self.attach_transactions(&mut payouts).await?;
        Ok(payouts.pop())
    }

    /// The payouts on `network` not yet final nor failed, oldest first.
    pub async fn unfinished_chain_payouts(&self, network: &str) -> Result<Vec<ChainPayout>, StoreError> {
        let mut payouts = on_pool!(&self.pool, pool => {
            sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM chain_payouts WHERE network = $1 \
                 AND state IN ('requested', 'signed', 'broadcast', 'mined') ORDER BY payout_id"
            ))
            .bind(network)
            .fetch_all(pool)
            .await?
            .iter()
            .map(read)
            .collect::<Result<Vec<_>, _>>()?
        });
        self.attach_transactions(&mut payouts).await?;
        Ok(payouts)
    }

    /// The chain records of payouts `from_id..=to_id` (one account's, or
    /// everyone's), by payout: what a page of payouts shows, in two queries.
    pub async fn chain_payouts_between(
        &self,
        account_id: Option<i64>,
        from_id: i64,
        to_id: i64,
    ) -> Result<HashMap<i64, ChainPayout>, StoreError> {
        // -1 stands for every account (no account has it).
        let mut payouts = on_pool!(&self.pool, pool => {
            sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM chain_payouts c WHERE payout_id BETWEEN $1 AND $2 AND ($3 = -1 OR EXISTS \
                 (SELECT 1 FROM payouts p WHERE p.id = c.payout_id AND p.account_id = $3)) ORDER BY payout_id"
            ))
            .bind(from_id)
            .bind(to_id)
            .bind(account_id.unwrap_or(-1))
            .fetch_all(pool)
            .await?
            .iter()
            .map(read)
            .collect::<Result<Vec<_>, _>>()?
        });
        self.attach_transactions(&mut payouts).await?;
        Ok(payouts.into_iter().map(|p| (p.payout_id, p)).collect())
    }

    /// Reads the transactions of `payouts` (sorted by id) in one query.
    async fn attach_transactions(&self, payouts: &mut [ChainPayout]) -> Result<(), StoreError> {
        let (Some(first), Some(last)) = (payouts.first(), payouts.last()) else { return Ok(()) };
        let (from_id, to_id) = (first.payout_id, last.payout_id);
        let rows: Vec<(i64, PayoutTransaction)> = on_pool!(&self.pool, pool => {
            sqlx::query(
                "SELECT payout_id, hash, raw, max_fee, created_at FROM chain_payout_transactions \
                 WHERE payout_id BETWEEN $1 AND $2 ORDER BY payout_id, created_at, hash",
            )
            .bind(from_id)
            .bind(to_id)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| -> Result<(i64, PayoutTransaction), StoreError> {
                let transaction =
                    PayoutTransaction { hash: row.at(1)?, raw: row.at(2)?, max_fee: row.at(3)?, created_at_ms: row.at(4)? };
                Ok((row.at(0)?, transaction))
            })
            .collect::<Result<_, _>>()?
        });
        let mut by_payout: HashMap<i64, Vec<PayoutTransaction>> = HashMap::new();
        for (payout_id, transaction) in rows {
            by_payout.entry(payout_id).or_default().push(transaction);
        }
        for payout in payouts {
            payout.transactions = by_payout.remove(&payout.payout_id).unwrap_or_default();
        }
        Ok(())
    }

    /// Claims a requested payout for `node` with its first transaction
    /// (nonce `nonce`), stored before it is sent: false if it is not
    /// requested any more (another node signed it, or it was rejected).
    pub async fn sign_chain_payout(
        &self,
        payout_id: i64,
        node: &str,
        nonce: u64,
        transaction: &PayoutTransaction,
    ) -> Result<bool, StoreError> {
        on_pool!(&self.pool, pool => {
            let mut tx = pool.begin().await?;
            let claimed = sqlx::query(
                "UPDATE chain_payouts SET state = 'signed', node = $1, nonce = $2, tx_hash = $3, updated_at = $4 \
                 WHERE payout_id = $5 AND state = 'requested' \
                 AND EXISTS (SELECT 1 FROM payouts WHERE id = $5 AND state = 'requested')",
            )
            .bind(node)
            .bind(nonce as i64)
            .bind(&transaction.hash)
            .bind(now_ms())
            .bind(payout_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !claimed {
                return Ok(false);
            }
            insert_transaction!(tx, payout_id, transaction);
            tx.commit().await?;
        });
        Ok(true)
    }

    /// Stores a fee bump of a payout `node` signed (the same nonce), before
    /// it is sent: false if the payout is not waiting to be mined.
    pub async fn bump_chain_payout(
        &self,
        payout_id: i64,
        node: &str,
        transaction: &PayoutTransaction,
    ) -> Result<bool, StoreError> {
        on_pool!(&self.pool, pool => {
            let mut tx = pool.begin().await?;
            let pending = sqlx::query(
                "UPDATE chain_payouts SET tx_hash = $1, updated_at = $2 \
                 WHERE payout_id = $3 AND node = $4 AND state IN ('signed', 'broadcast')",
            )
            .bind(&transaction.hash)
            .bind(now_ms())
            .bind(payout_id)
            .bind(node)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !pending {
                return Ok(false);
            }
            insert_transaction!(tx, payout_id, transaction);
            tx.commit().await?;
        });
        Ok(true)
    }

    /// Moves a payout from `from` to `to` (`Mined` with its transaction and
    /// block; `Broadcast` again after a reorg; `Requested` again, its nonce
    /// forgotten, when that nonce was spent by another transaction): false
    /// if it did not stand at `from`.
    pub async fn move_chain_payout(
        &self,
        payout_id: i64,
        from: ChainPayoutState,
        to: ChainPayoutState,
        mined: Option<(&str, u64)>,
    ) -> Result<bool, StoreError> {
        let forget = to == ChainPayoutState::Requested;
        let moved = on_pool!(&self.pool, pool => {
            sqlx::query(
                "UPDATE chain_payouts SET state = $1, updated_at = $2, \
                 tx_hash = COALESCE($3, tx_hash), block = $4, \
                 node = CASE WHEN $5 THEN NULL ELSE node END, nonce = CASE WHEN $5 THEN NULL ELSE nonce END \
                 WHERE payout_id = $6 AND state = $7",
            )
            .bind(to.as_str())
            .bind(now_ms())
            .bind(mined.map(|(hash, _)| hash))
            .bind(mined.map(|(_, block)| block as i64))
            .bind(forget)
            .bind(payout_id)
            .bind(from.as_str())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(moved == 1)
    }

    /// Sets (or, with `None`, removes) an account's automatic payouts.
    pub async fn set_auto_payout(&self, account_id: i64, auto: Option<&AutoPayout>) -> Result<(), StoreError> {
        on_pool!(&self.pool, pool => {
            match auto {
                None => {
                    sqlx::query("DELETE FROM chain_auto_payouts WHERE account_id = $1")
                        .bind(account_id)
                        .execute(pool)
                        .await?;
                }
                Some(auto) => {
                    sqlx::query(
                        "INSERT INTO chain_auto_payouts (account_id, network, address, threshold, updated_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id) DO UPDATE SET \
                         network = EXCLUDED.network, address = EXCLUDED.address, \
                         threshold = EXCLUDED.threshold, updated_at = EXCLUDED.updated_at",
                    )
                    .bind(account_id)
                    .bind(&auto.network)
                    .bind(&auto.address)
                    .bind(auto.threshold as i64)
                    .bind(auto.updated_at_ms)
                    .execute(pool)
                    .await?;
                }
            }
        });
        Ok(())
    }

    /// Automatic payouts on `network`: one account's, or everyone's.
    pub async fn auto_payouts(&self, network: &str, account_id: Option<i64>) -> Result<Vec<AutoPayout>, StoreError> {
        on_pool!(&self.pool, pool => {
            sqlx::query(
                "SELECT account_id, network, address, threshold, updated_at FROM chain_auto_payouts \
                 WHERE network = $1 AND ($2 = -1 OR account_id = $2) ORDER BY account_id",
            )
            .bind(network)
            .bind(account_id.unwrap_or(-1))
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| -> Result<AutoPayout, StoreError> {
                let threshold: i64 = row.at(3)?;
                Ok(AutoPayout {
                    account_id: row.at(0)?,
                    network: row.at(1)?,
                    address: row.at(2)?,
                    threshold: threshold.max(0) as u64,
                    updated_at_ms: row.at(4)?,
                })
            })
            .collect()
        })
    }
}

/// Within a batch: records where a requested payout goes on the chain.
pub(crate) async fn request(
    tx: &mut Tx,
    payout_id: i64,
    request: &ChainPayoutRequest,
    now: i64,
) -> Result<(), StoreError> {
    on_tx!(tx, tx => {
        sqlx::query(
            "INSERT INTO chain_payouts (payout_id, network, address, token_amount, state, updated_at) \
             VALUES ($1, $2, $3, $4, 'requested', $5)",
        )
        .bind(payout_id)
        .bind(&request.network)
        .bind(&request.address)
        .bind(&request.token_amount)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    });
    Ok(())
}

/// Within a batch, before a payout is resolved: `Ok(None)` for a payout
/// resolved by hand (no chain record); else moves its chain record as the
/// resolution says and gives the state it left, or `Err(())` when the
/// resolution may not happen (then nothing moved). `onchain`: resolved by
/// its transaction, once final (completed: `mined` → `final`; reverted:
/// `mined` → `failed`); else by the operator, who may only reject a payout
/// not yet signed (`requested` → `failed`).
pub(crate) async fn resolve(
    tx: &mut Tx,
    payout_id: i64,
    completed: bool,
    onchain: bool,
    now: i64,
) -> Result<Result<Option<ChainPayoutState>, ()>, StoreError> {
    let current: Option<String> = on_tx!(&mut *tx, tx => {
        sqlx::query_scalar("SELECT state FROM chain_payouts WHERE payout_id = $1")
            .bind(payout_id)
            .fetch_optional(&mut **tx)
            .await?
    });
    let Some(current) = current else { return Ok(if onchain { Err(()) } else { Ok(None) }) };
    let current = ChainPayoutState::parse(&current)?;
    let allowed = match onchain {
        true => current == ChainPayoutState::Mined,
        false => !completed && current == ChainPayoutState::Requested,
    };
    let to = if completed { ChainPayoutState::Final } else { ChainPayoutState::Failed };
    if !allowed || !set_state(tx, payout_id, current, to, now).await? {
        return Ok(Err(()));
    }
    Ok(Ok(Some(current)))
}

/// Within a batch: moves a chain record from `from` to `to`; false if it
/// did not stand at `from` (another node moved it meanwhile).
pub(crate) async fn set_state(
    tx: &mut Tx,
    payout_id: i64,
    from: ChainPayoutState,
    to: ChainPayoutState,
    now: i64,
) -> Result<bool, StoreError> {
    let moved = on_tx!(tx, tx => {
        sqlx::query("UPDATE chain_payouts SET state = $1, updated_at = $2 WHERE payout_id = $3 AND state = $4")
            .bind(to.as_str())
            .bind(now)
            .bind(payout_id)
            .bind(from.as_str())
            .execute(&mut **tx)
            .await?
            .rows_affected()
    });
    Ok(moved == 1)
}
