//! The one writer's memory between its transactions. A paid call's batch
//! used to read back what the previous batch had just written: the log's
//! right edge (a lookup per level), the last transfer id, and every usage
//! rollup row it adds to. The writer keeps those instead, and trusts them
//! only while nobody else wrote in between: every writing transaction bumps
//! `writer_epoch` first thing, under the write lock (SQLite's, or on
//! PostgreSQL that row's own lock), and a writer that finds anything but
//! its own last epoch plus one starts cold (several processes or in-process
//! nodes may share one SQLite file, as the demo's do; several nodes one
//! PostgreSQL database).
//!
//! What a transaction changes is kept in the transaction's own copy and
//! becomes the writer's only when the commit succeeded; a failed or dropped
//! transaction leaves the writer cold.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::backend::{Pool, Tx};
use crate::usage::{Rollup, RollupKey};
use crate::{Store, StoreError};

/// Rollup rows remembered at most; past this (after dropping rows of past
/// buckets) the writer forgets them all and reads again as needed.
pub(crate) const ROLLUP_ROWS_MAX: usize = 8_192;

/// What the writer remembers, as of the end of its commit of `epoch`.
#[derive(Debug, Default)]
pub(crate) struct WriterMemory {
    epoch: Option<i64>,
    /// The log's right edge.
    pub(crate) frontier: Option<tlog::Frontier>,
    /// The id the next transfer takes.
    pub(crate) next_transfer_id: Option<i64>,
    /// Rollup rows as stored, by key: of the buckets being written to.
    pub(crate) rollups: HashMap<RollupKey, Rollup>,
}

/// The writer's lock and memory (one per [`Store`], shared by its clones).
#[derive(Debug, Clone, Default)]
pub(crate) struct Writer(Arc<Mutex<WriterMemory>>);

/// A writing transaction with the writer's memory: [`WriteTx::commit`] makes
/// both durable and current; dropping it rolls back and forgets.
pub(crate) struct WriteTx {
    pub(crate) tx: Tx,
    pub(crate) memory: WriterMemory,
    epoch: i64,
    guard: OwnedMutexGuard<WriterMemory>,
}

impl Store {
    /// Begins a writing transaction and claims the next epoch. On SQLite
    /// `BEGIN IMMEDIATE` takes the database's write lock now, not at the
    /// first write; on PostgreSQL the epoch's row lock is the write lock:
    /// writers on every node sharing the database take turns on it, so the
    /// log's order, transfer ids and rollups are decided one batch at a time.
    pub(crate) async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        const BUMP: &str = "UPDATE writer_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch";
        let mut guard = self.writer.0.clone().lock_owned().await;
        let (tx, epoch) = match &self.pool {
            Pool::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let epoch: i64 = sqlx::query_scalar(BUMP).fetch_one(&mut *tx).await?;
                (Tx::Sqlite(tx), epoch)
            }
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let epoch: i64 = sqlx::query_scalar(BUMP).fetch_one(&mut *tx).await?;
                (Tx::Postgres(tx), epoch)
            }
        };
        let remembered = std::mem::take(&mut *guard);
        let memory = if remembered.epoch == Some(epoch - 1) { remembered } else { WriterMemory::default() };
        Ok(WriteTx { tx, memory, epoch, guard })
    }
}

impl WriteTx {
    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        let WriteTx { tx, mut memory, epoch, mut guard } = self;
        tx.commit().await?;
        memory.epoch = Some(epoch);
        memory.forget_past_buckets(crate::now_ms());
        *guard = memory;
        Ok(())
    }
}

impl WriterMemory {
    /// Keeps the rollup rows of each granularity's current and previous
    /// bucket (late events of a batch still land there), and no more than
    /// [`ROLLUP_ROWS_MAX`].
    fn forget_past_buckets(&mut self, now_ms: i64) {
        if self.rollups.len() <= ROLLUP_ROWS_MAX / 4 {
            return;
        }
        self.rollups.retain(|(_, _, granularity, _, bucket), _| *bucket >= now_ms - 2 * granularity);
        if self.rollups.len() > ROLLUP_ROWS_MAX {
            self.rollups.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use domain::{AccountName, Amount, ApiKey, Description, License, Tags, Task, Visibility};
    use ledger::{Command, Transfer, TransferKind};

    use crate::{AccountKind, BatchItem, Dimension, NewModel, RollupQuery, Store, UsageEvent};

    fn event(at_ms: i64, model_id: i64, owner_id: i64) -> UsageEvent {
        UsageEvent {
            created_at_ms: at_ms,
            model_id,
            version: 1,
            owner_id,
            task: "regression".into(),
            public: true,
            caller: [model_id as u8; 32],
            app: "test".into(),
            node: "node-a".into(),
            price: 10,
            creator_share: 8,
            latency_us: 100,
            cpu_us: 50,
            status: "ok".into(),
        }
    }

    /// Two stores on one file (two processes, or the demo's in-process
    /// nodes) writing in turns: each must notice the other's writes and not
    /// trust what it remembers. Without the epoch, the log forks (a leaf
    /// index taken twice fails, or a stale frontier gives a wrong root),
    /// transfer ids collide and rollups lose the other's counts.
    #[tokio::test]
    async fn writers_sharing_a_file_never_trust_a_stale_memory() {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let path = folder.path().join("vitrine.sqlite");
        let stores = [Store::open(&path).await.expect("open"), Store::open(&path).await.expect("open again")];
        let issuer =
            stores[0].ensure_system_account(&AccountName::issuer(), AccountKind::Issuer).await.expect("issuer");
        let treasury =
            stores[0].ensure_system_account(&AccountName::treasury(), AccountKind::Treasury).await.expect("treasury");
        let owner = stores[0]
            .create_account(&AccountName::parse_new("owner").expect("a name"), false, &ApiKey::generate())
            .await
            .expect("an owner");
        let mut models = vec![];
        for name in ["first", "second"] {
            let model = NewModel {
                name: name.parse().expect("a model name"),
                description: Description::parse("").expect("a description"),
                task: Task::Regression,
                license: License::parse("MIT").expect("a license"),
                tags: Tags::parse::<&str>(&[]).expect("no tags"),
                visibility: Visibility::Public,
                price_per_inference: Amount::ZERO,
            };
            models.push(stores[0].create_model(&owner, &model).await.expect("a model").id);
        }
        let mut tree = tlog::MemoryTree::new();
        let at = crate::now_ms();
        for round in 0..12u64 {
            // Twice in a row on one store (its memory is current), then the other.
            let store = &stores[(round / 2 % 2) as usize];
            let leaves: Vec<(Vec<u8>, Vec<u8>)> =
                (0..3).map(|i| (format!("leaf {round}.{i}").into_bytes(), vec![0; 64])).collect();
            leaves.iter().for_each(|(leaf, _)| tree.append(tlog::leaf_hash(leaf)));
            store.append_leaves(&leaves).await.expect("append");
            store.record_usage(&[event(at, models[0], owner.id), event(at, models[1], owner.id)]).await.expect("usage");
            let deposit = Transfer {
                debit: issuer.id,
                credit: treasury.id,
                amount: Amount::from_minor_units(1).expect("an amount"),
                kind: TransferKind::Deposit,
                reference: format!("round {round}"),
            };
            let outcomes = store.apply_batch(&[BatchItem::command(Command::Transfer(deposit))]).await.expect("batch");
            assert!(outcomes[0].is_ok(), "{outcomes:?}");
        }
        for store in &stores {
            assert_eq!(store.tree_size().await.expect("size"), tree.size());
            assert_eq!(store.log_root(tree.size()).await.expect("root"), tree.root());
            let query = RollupQuery {
                dimension: Dimension::Model,
                granularity: crate::MINUTE_MS,
                from_ms: 0,
                to_ms: i64::MAX,
                keys: None,
                include_private: true,
                detail: false,
            };
            let rollups = store.rollups(&query).await.expect("rollups");
            let calls: u64 = rollups.values().flat_map(|buckets| buckets.values()).map(|r| r.calls).sum();
            assert_eq!(calls, 24, "every event of both writers is in the rollups");
        }
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM transfers ORDER BY id")
            .fetch_all(match &stores[0].pool {
                crate::backend::Pool::Sqlite(pool) => pool,
                crate::backend::Pool::Postgres(_) => unreachable!("opened on SQLite"),
            })
            .await
            .expect("ids");
        assert_eq!(ids, (1..=12).collect::<Vec<i64>>());
    }
}
