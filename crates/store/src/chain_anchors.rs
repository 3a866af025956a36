//! The log's checkpoints anchored on the chain (`chain_anchors`): claimed
//! by size before the anchor is sent (one node anchors each), completed
//! with its transaction once mined.

use crate::backend::{Columns, on_pool};
use crate::{Store, StoreError};

/// One anchored checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub network: String,
    pub size: u64,
    pub root: [u8; 32],
    /// `None` while it is being sent (or if its node stopped before).
    pub tx_hash: Option<String>,
    pub block: Option<u64>,
    pub created_at_ms: i64,
}

fn read(network: &str, row: &impl Columns) -> Result<Anchor, StoreError> {
    let size: i64 = row.at(0)?;
    let root: Vec<u8> = row.at(1)?;
    let block: Option<i64> = row.at(3)?;
    Ok(Anchor {
        network: network.to_owned(),
        size: size.max(0) as u64,
        root: root.try_into().map_err(|_| StoreError::Corrupt("an anchor's root is not 32 bytes".into()))?,
        tx_hash: row.at(2)?,
        block: block.map(|b| b.max(0) as u64),
        created_at_ms: row.at(4)?,
    })
}

impl Store {
    /// Claims the anchoring of the checkpoint of `size` leaves: false if
    /// that size was claimed before (by any node).
    pub async fn claim_anchor(
        &self,
        network: &str,
        size: u64,
        root: &[u8; 32],
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let inserted = on_pool!(&self.pool, pool => {
            sqlx::query(
                "INSERT INTO chain_anchors (network, size, root, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (network, size) DO NOTHING",
            )
            .bind(network)
            .bind(size as i64)
            .bind(root.as_slice())
            .bind(now_ms)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(inserted == 1)
    }

    /// Records a claimed anchor's mined transaction.
    pub async fn anchor_mined(&self, network: &str, size: u64, tx_hash: &str, block: u64) -> Result<(), StoreError> {
        on_pool!(&self.pool, pool => {
            sqlx::query("UPDATE chain_anchors SET tx_hash = $1, block = $2 WHERE network = $3 AND size = $4")
                .bind(tx_hash)
                .bind(block as i64)
                .bind(network)
                .bind(size as i64)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Anchors on `network`, largest first, at most `limit`.
    pub async fn anchors(&self, network: &str, limit: u32) -> Result<Vec<Anchor>, StoreError> {
        on_pool!(&self.pool, pool => {
            sqlx::query(
                "SELECT size, root, tx_hash, block, created_at FROM chain_anchors \
                 WHERE network = $1 ORDER BY size DESC LIMIT $2",
            )
            .bind(network)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| read(network, row))
            .collect()
        })
    }
}
