//! The one writer's memory between its transactions. A paid call's batch
//! used to read back what the previous batch had just written: the log's
//! right edge (a lookup per level), the last transfer id, every usage
//! rollup row it adds to, and the balances of the accounts it charges. The
//! writer keeps those instead, and trusts them
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
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use sqlx::Sqlite;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{Mutex, OwnedMutexGuard};

use ledger::{AccountId, AccountState};

use crate::backend::{OwnTx, Pool, SqliteTx, Tx, Writes};
use crate::usage::{Rollup, RollupKey};
use crate::{Store, StoreError};

/// Rollup rows remembered at most; past this (after dropping rows of past
/// buckets) the writer forgets them all and reads again as needed.
pub(crate) const ROLLUP_ROWS_MAX: usize = 8_192;

/// Accounts remembered at most; past this the writer forgets them all and
/// reads again as needed.
pub(crate) const ACCOUNTS_REMEMBERED_MAX: usize = 65_536;

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
    /// Accounts' names and balances as stored, of the accounts batches
    /// loaded (only writing transactions change balances, and names never
    /// change).
    pub(crate) accounts: HashMap<AccountId, (String, AccountState)>,
}

/// The writer's lock and memory (one per [`Store`], shared by its clones),
/// and on SQLite its own connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct Writer {
    memory: Arc<Mutex<WriterMemory>>,
    sqlite: Option<SqliteWriter>,
}

/// On SQLite, a pool of one connection that only the writer uses. A
/// connection's page cache is valid only until another connection commits;
/// taken from the shared pool, the writer mostly got one that had sat idle
/// while it committed on others, and read every page it touched again (a
/// `pread` each). Its own connection keeps its pages warm between batches,
/// in a larger cache ([`WRITER_CACHE_KIB`]), with its statement journals in
/// memory, and copies the WAL into the database only as a last resort
/// ([`WRITER_AUTOCHECKPOINT_PAGES`]): checkpoints run beside it, on another
/// connection ([`Checkpoints`]).
///
/// Its commits reach the WAL without waiting for the disk
/// (`synchronous=NORMAL` on this connection only): [`WalSync`] then makes
/// every commit so far durable with one fsync of the WAL, so the sequencer
/// writes its next batch while the last one's fsync runs, and nobody hears
/// of a batch before its fsync returned.
///
/// Its transactions are its own ([`OwnTx`]), and its connection stays out
/// of the pool between them (`idle`).
#[derive(Debug, Clone)]
struct SqliteWriter {
    own: SqlitePool,
    idle: Arc<std::sync::Mutex<Option<PoolConnection<Sqlite>>>>,
    checkpoints: Arc<Checkpoints>,
    wal: WalSync,
}

/// Begins a transaction on the writer's own connection ([`OwnTx`]), bumps
/// the epoch, and returns both.
async fn begin_own(sqlite: &SqliteWriter) -> Result<(OwnTx, i64), StoreError> {
    const BEGIN: &str = "BEGIN IMMEDIATE; UPDATE writer_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch";
    let idle = sqlite.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
    let connection = match idle {
        Some(connection) => connection,
        None => sqlite.own.acquire().await?,
    };
    let mut tx = OwnTx::new(connection, sqlite.idle.clone());
    let epoch: i64 = sqlx::query_scalar(BEGIN).fetch_one(&mut *tx).await?;
    Ok((tx, epoch))
}

/// What makes the writer's commits durable: on SQLite an fsync of the
/// database's WAL (which holds every commit not yet copied into the
/// database, which a checkpoint syncs before it copies); on PostgreSQL
/// nothing, its commits are durable when they return.
#[derive(Debug, Clone, Default)]
pub struct WalSync(Option<Arc<PathBuf>>);

impl WalSync {
    /// Makes every commit so far durable (blocking: one fsync).
    pub fn sync(&self) -> std::io::Result<()> {
        let Some(wal) = &self.0 else { return Ok(()) };
        match std::fs::File::open(&**wal) {
            // The file is synced as a whole, through any descriptor of it.
            Ok(file) => file.sync_data(),
            // No WAL: every commit is in the database file, synced.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// [`WalSync::sync`] on a blocking thread, for async callers.
    async fn sync_blocking(self) -> Result<(), StoreError> {
        Ok(tokio::task::spawn_blocking(move || self.sync()).await.map_err(std::io::Error::other)??)
    }
}

/// The writer's SQLite page cache, in KiB (SQLite's default is 2,000).
pub(crate) const WRITER_CACHE_KIB: u32 = 65_536;

/// Prepared statements the writer's connection keeps. A batch's rows go in
/// multi-row statements whose text depends on how many rows each has: a
/// dozen kinds of row times every batch size up to a statement's rows.
/// With sqlx's default of 100 they evicted each other, and a batch spent
/// as long preparing its statements as running them.
pub(crate) const WRITER_STATEMENTS_CACHED: usize = 1_024;

/// WAL pages past which the writer's own commit copies the WAL into the
/// database (SQLite's default is 1,000). Checkpoints beside the writer keep
/// up with it, but cannot let the WAL start over from its beginning while
/// the writer keeps committing; the writer's own checkpoint at this size,
/// with little left to copy, does.
pub(crate) const WRITER_AUTOCHECKPOINT_PAGES: u32 = 8_000;

/// The least time between checkpoints beside the writer.
pub(crate) const CHECKPOINT_INTERVAL_MS: i64 = 250;

/// Checkpoints beside the writer: after a commit, at most one at a time and
/// one per [`CHECKPOINT_INTERVAL_MS`], on a connection of the shared pool
/// (its own thread), so that copying the WAL into the database and syncing
/// it is not part of any batch.
#[derive(Debug, Default)]
struct Checkpoints {
    running: AtomicBool,
    last_ms: AtomicI64,
}

impl Writer {
    /// The writer of a store on the SQLite database that `options` open.
    pub(crate) async fn sqlite(options: &SqliteConnectOptions) -> Result<Writer, StoreError> {
        // Statement journals (the undo of one statement, kept while a
        // multi-row statement runs) in memory: as temporary files, every
        // batch created one and wrote a page to it for each page it changed.
        let options = options
            .clone()
            .pragma("cache_size", format!("-{WRITER_CACHE_KIB}"))
            .pragma("temp_store", "MEMORY")
            .pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES.to_string())
            .synchronous(SqliteSynchronous::Normal)
            .statement_cache_capacity(WRITER_STATEMENTS_CACHED);
        let mut wal = options.get_filename().as_os_str().to_owned();
        wal.push("-wal");
        let own = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        let wal = WalSync(Some(Arc::new(wal.into())));
        Ok(Writer {
            memory: Default::default(),
            sqlite: Some(SqliteWriter { own, idle: Default::default(), checkpoints: Default::default(), wal }),
        })
    }

    pub(crate) async fn close(&self) {
        if let Some(sqlite) = &self.sqlite {
            let idle = sqlite.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
            drop(idle);
            sqlite.own.close().await;
        }
    }
}

impl Checkpoints {
    /// Starts a checkpoint on `pool` unless one is running or one started
    /// less than [`CHECKPOINT_INTERVAL_MS`] ago. A passive checkpoint waits
    /// for nobody: it copies what no reader still needs, and a failed one
    /// is only a later one's work.
    fn after_commit(self: &Arc<Checkpoints>, pool: &SqlitePool) {
        let now = crate::now_ms();
        if now - self.last_ms.load(Ordering::Relaxed) < CHECKPOINT_INTERVAL_MS
            || self.running.swap(true, Ordering::AcqRel)
        {
            return;
        }
        self.last_ms.store(now, Ordering::Relaxed);
        let (checkpoints, pool) = (self.clone(), pool.clone());
        tokio::spawn(async move {
            if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
                tracing::debug!(%error, "a checkpoint beside the writer failed");
            }
            checkpoints.running.store(false, Ordering::Release);
        });
    }
}

/// A writing transaction with the writer's memory: [`WriteTx::commit`] makes
/// both durable and current; dropping it rolls back and forgets.
pub(crate) struct WriteTx {
    pub(crate) tx: Tx,
    pub(crate) memory: WriterMemory,
    epoch: i64,
    guard: OwnedMutexGuard<WriterMemory>,
    /// On SQLite, where to checkpoint after the commit.
    checkpoint: Option<(SqlitePool, Arc<Checkpoints>)>,
    wal: WalSync,
}

impl Store {
    /// What makes this store's writer's commits durable.
    pub fn wal_sync(&self) -> WalSync {
        self.writer.sqlite.as_ref().map(|sqlite| sqlite.wal.clone()).unwrap_or_default()
    }

    /// Makes every commit so far durable (see [`WalSync`]).
    pub async fn sync_writes(&self) -> Result<(), StoreError> {
        self.wal_sync().sync_blocking().await
    }

    /// Begins a writing transaction and claims the next epoch. On SQLite
    /// `BEGIN IMMEDIATE` takes the database's write lock now, not at the
    /// first write; on PostgreSQL the epoch's row lock is the write lock:
    /// writers on every node sharing the database take turns on it, so the
    /// log's order, transfer ids and rollups are decided one batch at a time.
    pub(crate) async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        const BUMP: &str = "UPDATE writer_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch";
        let mut guard = self.writer.memory.clone().lock_owned().await;
        let mut checkpoint = None;
        let (tx, epoch) = match &self.pool {
            Pool::Sqlite(shared) => match &self.writer.sqlite {
                Some(sqlite) => {
                    checkpoint = Some((shared.clone(), sqlite.checkpoints.clone()));
                    let (tx, epoch) = begin_own(sqlite).await?;
                    (Tx::Sqlite(SqliteTx::Own(tx)), epoch)
                }
                None => {
                    let mut tx = shared.begin_with("BEGIN IMMEDIATE").await?;
                    let epoch: i64 = sqlx::query_scalar(BUMP).fetch_one(&mut *tx).await?;
                    (Tx::Sqlite(SqliteTx::Sqlx(tx)), epoch)
                }
            },
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let epoch: i64 = sqlx::query_scalar(BUMP).fetch_one(&mut *tx).await?;
                (Tx::Postgres(tx), epoch)
            }
        };
        let remembered = std::mem::take(&mut *guard);
        let memory = if remembered.epoch == Some(epoch - 1) { remembered } else { WriterMemory::default() };
        Ok(WriteTx { tx, memory, epoch, guard, checkpoint, wal: self.wal_sync() })
    }
}

impl WriteTx {
    /// Commits, and returns once the commit is durable.
    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        self.commit_with(Writes::default()).await
    }

    /// [`WriteTx::commit`], writing `writes` first ([`WriteTx::commit_unsynced_with`]).
    pub(crate) async fn commit_with(self, writes: Writes) -> Result<(), StoreError> {
        self.commit_unsynced_with(writes).await?.sync_blocking().await
    }

    /// Writes `writes` and commits (in one round trip on the writer's own
    /// SQLite connection): visible to every connection at once, durable once
    /// the returned [`WalSync`] syncs (nobody may be told of it before).
    pub(crate) async fn commit_unsynced_with(self, writes: Writes) -> Result<WalSync, StoreError> {
        let WriteTx { tx, mut memory, epoch, mut guard, checkpoint, wal } = self;
        writes.commit(tx).await?;
        if let Some((pool, checkpoints)) = checkpoint {
            checkpoints.after_commit(&pool);
        }
        memory.epoch = Some(epoch);
        memory.forget_past_buckets(crate::now_ms());
        *guard = memory;
        Ok(wal)
    }
}

impl WriterMemory {
    /// Remembers the state of `accounts` as this transaction leaves them.
    pub(crate) fn remember_accounts(
        &mut self,
        accounts: &HashMap<AccountId, AccountState>,
        names: &HashMap<AccountId, String>,
    ) {
        if self.accounts.len() + accounts.len() > ACCOUNTS_REMEMBERED_MAX {
            self.accounts.clear();
        }
        for (id, state) in accounts {
            if let Some(name) = names.get(id) {
                self.accounts.insert(*id, (name.clone(), *state));
            }
        }
    }

    /// Keeps the rollup rows of each granularity's current and previous
    /// bucket (late events of a batch still land there), and no more than
    /// [`ROLLUP_ROWS_MAX`].
    fn forget_past_buckets(&mut self, now_ms: i64) {
        if self.rollups.len() <= ROLLUP_ROWS_MAX / 4 {
            return;
        }
        self.rollups.retain(|key, _| key.bucket >= now_ms - 2 * key.granularity);
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

    fn shared(store: &Store) -> &sqlx::SqlitePool {
        match &store.pool {
            crate::backend::Pool::Sqlite(pool) => pool,
            crate::backend::Pool::Postgres(_) => unreachable!("opened on SQLite"),
        }
    }

    async fn epoch(store: &Store) -> i64 {
        sqlx::query_scalar("SELECT epoch FROM writer_epoch").fetch_one(shared(store)).await.expect("the epoch")
    }

    /// The writer's own transactions (`OwnTx`) end as sqlx's did: a write
    /// dropped before its commit, or whose writes fail, leaves nothing, and
    /// its write lock is freed at once (not at the writer's next batch);
    /// the writer then goes on, cold, on the same connection.
    #[tokio::test]
    async fn dropped_and_failed_writes_roll_back_and_free_the_lock() {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let store = Store::open(&folder.path().join("vitrine.sqlite")).await.expect("open");
        store.append_leaves(&[(b"first".to_vec(), vec![0; 64])]).await.expect("append");
        let committed = epoch(&store).await;

        let mut write = store.begin_write().await.expect("a write");
        assert_eq!(write.epoch, committed + 1);
        let crate::backend::Tx::Sqlite(tx) = &mut write.tx else { unreachable!("opened on SQLite") };
        sqlx::query("UPDATE writer_epoch SET epoch = 1000").execute(&mut **tx).await.expect("a write");
        drop(write);
        // Another connection takes the write lock as soon as the rollback
        // ran (with the lock held, it would wait, then fail: database is locked).
        let mut other = shared(&store).begin_with("BEGIN IMMEDIATE").await.expect("the write lock, freed");
        sqlx::query("UPDATE writer_epoch SET epoch = epoch").execute(&mut *other).await.expect("a write");
        other.commit().await.expect("commit");
        assert_eq!(epoch(&store).await, committed, "nothing of the dropped write is left");

        let mut writes = crate::backend::Writes::default();
        writes.push(crate::backend::Piece {
            head: "INSERT INTO writer_epoch (id, epoch) ".into(),
            rows: vec![vec![1.into(), 7.into()]],
            tail: "".into(),
        });
        let write = store.begin_write().await.expect("a write");
        let error = write.commit_unsynced_with(writes).await.expect_err("a row that is there already");
        assert!(error.to_string().contains("UNIQUE"), "{error}");
        let other = shared(&store).begin_with("BEGIN IMMEDIATE").await.expect("the write lock, freed");
        other.rollback().await.expect("rollback");
        assert_eq!(epoch(&store).await, committed, "nothing of the failed write is left");

        store.append_leaves(&[(b"second".to_vec(), vec![0; 64])]).await.expect("append after both");
        assert_eq!(epoch(&store).await, committed + 1);
        assert_eq!(store.tree_size().await.expect("size"), 2);
        let mut tree = tlog::MemoryTree::new();
        tree.append(tlog::leaf_hash(b"first"));
        tree.append(tlog::leaf_hash(b"second"));
        assert_eq!(store.log_root(2).await.expect("root"), tree.root());
    }

    /// Checkpoints run beside the writer, not in its commits: batches far
    /// below SQLite's autocheckpoint size (1,000 pages, which the writer's
    /// own connection raises) still reach the database file, copied there
    /// from the WAL by another connection soon after they commit.
    #[tokio::test]
    async fn checkpoints_copy_the_wal_beside_the_writer() {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let path = folder.path().join("vitrine.sqlite");
        let store = Store::open(&path).await.expect("open");
        let before = std::fs::metadata(&path).expect("the database file").len();
        // About 60 pages of leaves, in batches spread over several checkpoint intervals.
        for round in 0..6 {
            let leaves: Vec<(Vec<u8>, Vec<u8>)> =
                (0..100).map(|i| (format!("leaf {round}.{i} {}", "x".repeat(300)).into_bytes(), vec![7; 64])).collect();
            store.append_leaves(&leaves).await.expect("append");
            tokio::time::sleep(std::time::Duration::from_millis(super::CHECKPOINT_INTERVAL_MS as u64 / 2)).await;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let grown = loop {
            let size = std::fs::metadata(&path).expect("the database file").len();
            if size >= before + 100 * 1024 || std::time::Instant::now() > deadline {
                break size;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert!(grown >= before + 100 * 1024, "the database file stayed at {grown} bytes (from {before})");
        assert_eq!(store.tree_size().await.expect("size"), 600);
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
            .fetch_all(shared(&stores[0]))
            .await
            .expect("ids");
        assert_eq!(ids, (1..=12).collect::<Vec<i64>>());
    }
}
