//! Moving a market from one database to another (`vitrine migrate`: a
//! single node's SQLite to PostgreSQL): every row of every table, ids
//! included, read from one snapshot of the source and written in one
//! transaction of the target, so the target has all of it or none.

use futures_util::TryStreamExt;

use crate::backend::{Cell, Columns, Piece, Pool, SqliteTx, Tx, Writes, on_tx};
use crate::{Store, StoreError};

/// How a column is read and written.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Int,
    Text,
    Bytes,
}

use Kind::{Bytes, Int, Text};

/// Every table, parents before children, with its columns. A table added
/// to the schema must be added here; `every_table_is_copied` checks it.
const TABLES: &[(&str, &[(&str, Kind)])] = &[
    (
        "accounts",
        &[
            ("id", Int),
            ("name", Text),
            ("is_operator", Int),
            ("created_at", Int),
            ("kind", Text),
            ("debits_posted", Int),
            ("credits_posted", Int),
            ("debits_pending", Int),
        ],
    ),
    ("api_keys", &[("key_id", Text), ("account_id", Int), ("key_hash", Text), ("created_at", Int)]),
    ("blobs", &[("sha256", Text), ("size_bytes", Int), ("created_at", Int)]),
    (
        "models",
        &[
            ("id", Int),
            ("owner_id", Int),
            ("name", Text),
            ("description", Text),
            ("task", Text),
            ("license", Text),
            ("tags", Text),
            ("visibility", Text),
            ("price_per_inference", Int),
            ("created_at", Int),
            ("updated_at", Int),
            ("listed", Int),
            ("deleted_at", Int),
            ("takedown_at", Int),
            ("takedown_reason", Text),
        ],
    ),
    (
        "model_versions",
        &[
            ("model_id", Int),
            ("version", Int),
            ("blob_sha256", Text),
            ("signature", Text),
            ("created_at", Int),
            ("quarantined_at", Int),
            ("quarantine_reason", Text),
            ("yanked_at", Int),
            ("yank_reason", Text),
            ("engine", Text),
        ],
    ),
    (
        "holds",
        &[("id", Int), ("account_id", Int), ("amount", Int), ("expires_at", Int), ("created_at", Int), ("node", Text)],
    ),
    (
        "transfers",
        &[
            ("id", Int),
            ("debit_account_id", Int),
            ("credit_account_id", Int),
            ("amount", Int),
            ("kind", Text),
            ("reference", Text),
            ("model_id", Int),
            ("external_id", Text),
            ("created_at", Int),
            ("log_index", Int),
        ],
    ),
    (
        "payouts",
        &[
            ("id", Int),
            ("account_id", Int),
            ("amount", Int),
            ("state", Text),
            ("reference", Text),
            ("created_at", Int),
            ("resolved_at", Int),
        ],
    ),
    (
        "idempotency_keys",
        &[
            ("account_id", Int),
            ("key", Text),
            ("request_sha256", Text),
            ("response", Text),
            ("created_at", Int),
            ("log_index", Int),
        ],
    ),
    ("log_leaves", &[("idx", Int), ("leaf", Bytes), ("signature", Bytes), ("created_at", Int)]),
    ("log_nodes", &[("level", Int), ("idx", Int), ("hash", Bytes)]),
    ("log_checkpoints", &[("size", Int), ("root", Bytes), ("note", Text), ("created_at", Int)]),
    (
        "usage_events",
        &[
            ("id", Int),
            ("created_at", Int),
            ("model_id", Int),
            ("version", Int),
            ("owner_id", Int),
            ("task", Text),
            ("public", Int),
            ("caller", Bytes),
            ("app", Text),
            ("node", Text),
            ("price", Int),
            ("creator_share", Int),
            ("latency_us", Int),
            ("status", Text),
            ("log_index", Int),
            ("cpu_us", Int),
        ],
    ),
    (
        "usage_rollups",
        &[
            ("dimension", Text),
            ("key", Text),
            ("granularity", Int),
            ("public", Int),
            ("bucket", Int),
            ("calls", Int),
            ("errors", Int),
            ("revenue", Int),
            ("creator_revenue", Int),
            ("latency", Bytes),
            ("callers", Bytes),
        ],
    ),
    ("nodes", &[("name", Text), ("public_key", Bytes), ("registered_at", Int)]),
    ("market_secrets", &[("name", Text), ("seed", Bytes), ("created_at", Int)]),
    (
        "chain_payments",
        &[
            ("network", Text),
            ("payer", Text),
            ("nonce", Text),
            ("amount", Int),
            ("valid_before", Int),
            ("state", Text),
            ("node", Text),
            ("model_id", Int),
            ("account_id", Int),
            ("version", Int),
            ("creator_id", Int),
            ("creator_share", Int),
            ("node_share", Int),
            ("treasury_share", Int),
            ("tx_hash", Text),
            ("log_index", Int),
            ("created_at", Int),
        ],
    ),
    ("chain_addresses", &[("network", Text), ("address", Text), ("account_id", Int), ("proven_at", Int)]),
    ("chain_cursors", &[("network", Text), ("token", Text), ("block", Int)]),
    (
        "chain_payouts",
        &[
            ("payout_id", Int),
            ("network", Text),
            ("address", Text),
            ("token_amount", Text),
            ("state", Text),
            ("node", Text),
            ("nonce", Int),
            ("tx_hash", Text),
            ("block", Int),
            ("updated_at", Int),
        ],
    ),
    (
        "chain_payout_transactions",
        &[("payout_id", Int), ("hash", Text), ("raw", Text), ("max_fee", Text), ("created_at", Int)],
    ),
    (
        "chain_anchors",
        &[("network", Text), ("size", Int), ("root", Bytes), ("tx_hash", Text), ("block", Int), ("created_at", Int)],
    ),
    (
        "chain_auto_payouts",
        &[("account_id", Int), ("network", Text), ("address", Text), ("threshold", Int), ("updated_at", Int)],
    ),
];

/// Tables whose ids PostgreSQL generates: their sequences continue after
/// the copied rows.
const GENERATED_IDS: &[&str] = &["accounts", "models", "payouts", "usage_events"];

/// Rows written per statement.
const ROWS_PER_INSERT: usize = 200;

fn read(row: &impl Columns, index: usize, kind: Kind) -> Result<Cell, sqlx::Error> {
    Ok(match kind {
        Int => Cell::Int(row.at(index)?),
        Text => Cell::Text(row.at(index)?),
        Bytes => Cell::Bytes(row.at(index)?),
    })
}

impl Store {
    /// Copies every row of this store into `target`, which must hold no
    /// market yet (its schema only); returns the rows copied per table.
    pub async fn copy_market_to(&self, target: &Store) -> Result<Vec<(&'static str, u64)>, StoreError> {
        if target.counts().await?.0 > 0 {
            return Err(StoreError::Conflict("a market in the target database".into()));
        }
        let mut source = self.begin_read().await?;
        let mut write = target.begin_write().await?;
        let mut copied = Vec::with_capacity(TABLES.len());
        for &(table, columns) in TABLES {
            let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
            let select = format!("SELECT {} FROM {table}", names.join(", "));
            let insert = format!("INSERT INTO {table} ({}) ", names.join(", "));
            let mut pending: Vec<Vec<Cell>> = Vec::with_capacity(ROWS_PER_INSERT);
            let mut count = 0u64;
            on_tx!(&mut source, source => {
                let mut rows = sqlx::query(sqlx::AssertSqlSafe(select)).fetch(&mut **source);
                while let Some(row) = rows.try_next().await? {
                    let cells = columns
                        .iter()
                        .enumerate()
                        .map(|(index, (_, kind))| read(&row, index, *kind))
                        .collect::<Result<Vec<_>, _>>()?;
                    pending.push(cells);
                    count += 1;
                    if pending.len() == ROWS_PER_INSERT {
                        insert_rows(&mut write.tx, &insert, std::mem::take(&mut pending)).await?;
                    }
                }
            });
            insert_rows(&mut write.tx, &insert, pending).await?;
            copied.push((table, count));
        }
        if let Tx::Postgres(tx) = &mut write.tx {
            for table in GENERATED_IDS {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                     COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
                )))
                .execute(&mut **tx)
                .await?;
            }
        }
        write.commit().await?;
        drop(source);
        Ok(copied)
    }

    /// A transaction that only reads: one snapshot of the whole database.
    async fn begin_read(&self) -> Result<Tx, StoreError> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => Tx::Sqlite(SqliteTx::Sqlx(pool.begin().await?)),
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
                Tx::Postgres(tx)
            }
        })
    }
}

async fn insert_rows(tx: &mut Tx, insert: &str, rows: Vec<Vec<Cell>>) -> Result<(), StoreError> {
    let mut writes = Writes::default();
    writes.push(Piece { head: insert.to_owned().into(), rows, tail: "".into() });
    Ok(writes.flush(tx).await?)
}

#[cfg(test)]
mod tests {
    use super::TABLES;

    /// Every table of the SQLite schema (but the migrations' own) is in
    /// [`TABLES`], with every column.
    #[tokio::test]
    async fn every_table_is_copied() {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let store = crate::Store::open(&folder.path().join("vitrine.sqlite")).await.expect("open");
        let crate::backend::Pool::Sqlite(pool) = &store.pool else { unreachable!("opened on SQLite") };
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT IN ('schema_migrations', 'writer_epoch') AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .fetch_all(pool)
        .await
        .expect("tables");
        let mut listed: Vec<String> = TABLES.iter().map(|(table, _)| table.to_string()).collect();
        listed.sort();
        assert_eq!(tables, listed);
        for (table, columns) in TABLES {
            let mut stored: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT name FROM pragma_table_info('{table}') ORDER BY name"
            )))
            .fetch_all(pool)
            .await
            .expect("columns");
            let mut named: Vec<String> = columns.iter().map(|(name, _)| name.to_string()).collect();
            stored.sort();
            named.sort();
            assert_eq!(stored, named, "{table}");
        }
    }
}
