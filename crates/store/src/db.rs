//! The registry's queries (accounts, keys, models, versions, blobs) and the
//! schema migrations, on either database (`backend.rs`).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use domain::{
    AccountName, Amount, ApiKey, Description, License, ModelName, Sha256, Tags, Task, TensorSpec, Visibility,
};
use sqlx::Connection;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::backend::{Columns, Pool, contains_pattern, on_pool};
use crate::{StoreError, now_ms, signature};

/// Schema migrations, applied in order at start, each in one transaction.
/// Append only: a migration that has shipped is never edited.
const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/sqlite/0001_registry.sql")),
    (2, include_str!("migrations/sqlite/0002_ledger.sql")),
    (3, include_str!("migrations/sqlite/0003_log.sql")),
    (4, include_str!("migrations/sqlite/0004_usage.sql")),
    (5, include_str!("migrations/sqlite/0005_nodes.sql")),
    (6, include_str!("migrations/sqlite/0006_isolation.sql")),
    (7, include_str!("migrations/sqlite/0007_dashboard.sql")),
    (8, include_str!("migrations/sqlite/0008_writer_epoch.sql")),
    (9, include_str!("migrations/sqlite/0009_lifecycle.sql")),
    (10, include_str!("migrations/sqlite/0010_market_secrets.sql")),
    (11, include_str!("migrations/sqlite/0011_grants.sql")),
    (12, include_str!("migrations/sqlite/0012_usage_index.sql")),
    (13, include_str!("migrations/sqlite/0013_version_engine.sql")),
    (14, include_str!("migrations/sqlite/0014_chain_payments.sql")),
    (15, include_str!("migrations/sqlite/0015_chain_payouts.sql")),
    (16, include_str!("migrations/sqlite/0016_chain_anchors.sql")),
];

/// PostgreSQL's migrations: its first is SQLite's first ten at once.
const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/postgres/0001_market.sql")),
    (2, include_str!("migrations/postgres/0002_grants.sql")),
    (3, include_str!("migrations/postgres/0003_usage_index.sql")),
    (4, include_str!("migrations/postgres/0004_version_engine.sql")),
    (5, include_str!("migrations/postgres/0005_chain_payments.sql")),
    (6, include_str!("migrations/postgres/0006_chain_payouts.sql")),
    (7, include_str!("migrations/postgres/0007_chain_anchors.sql")),
];

/// The key of the advisory lock that nodes starting together on one
/// PostgreSQL database take while migrating, so one of them migrates.
const MIGRATION_LOCK: i64 = 0x7669_7472_696e_6501;

/// The key of the advisory lock the node that signs checkpoints holds.
const SIGNER_LOCK: i64 = 0x7669_7472_696e_6502;

/// Connections in the pool. SQLite allows one writer at a time anyway; more
/// connections only serve concurrent reads.
const POOL_CONNECTIONS_MAX: u32 = 8;

/// Connections to PostgreSQL per node: each is a server process there.
const POSTGRES_CONNECTIONS_MAX: u32 = 16;

/// The database of one data directory.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: Pool,
    /// Whether ledger batches also update `usage_rollups` (events are always written).
    pub(crate) rollups: bool,
    /// The one writer's lock and memory (`writer.rs`).
    pub(crate) writer: crate::writer::Writer,
    /// The log's upper levels, once read (`log.rs`).
    pub(crate) upper: crate::log::UpperNodes,
    /// On PostgreSQL, this store's own connection that holds (or tries for)
    /// the checkpoint signer's lock ([`Store::holds_signer_lease`]).
    signer: Arc<tokio::sync::Mutex<Signer>>,
    /// On PostgreSQL, the connection that holds this node's presence lock
    /// (`presence.rs`).
    pub(crate) presence: Arc<tokio::sync::Mutex<crate::presence::Presence>>,
}

#[derive(Debug, Default)]
struct Signer {
    connection: Option<sqlx::PgConnection>,
    leader: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: i64,
    pub name: AccountName,
    pub is_operator: bool,
    pub kind: AccountKind,
    pub created_at_ms: i64,
}

/// What an account is for. Only people's accounts (`User`, `Operator`) have
/// API keys; the others are the ledger's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    User,
    Operator,
    /// The outside world: deposits come from it, completed payouts go to it.
    Issuer,
    Treasury,
    /// Holds tokens of requested, not yet resolved payouts.
    Payouts,
    /// A serving node, paid its share of each inference it serves.
    Node,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::User => "user",
            AccountKind::Operator => "operator",
            AccountKind::Issuer => "issuer",
            AccountKind::Treasury => "treasury",
            AccountKind::Payouts => "payouts",
            AccountKind::Node => "node",
        }
    }
}

impl FromStr for AccountKind {
    type Err = ();

    fn from_str(text: &str) -> Result<AccountKind, ()> {
        [
            AccountKind::User,
            AccountKind::Operator,
            AccountKind::Issuer,
            AccountKind::Treasury,
            AccountKind::Payouts,
            AccountKind::Node,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
        .ok_or(())
    }
}

/// A model repository as stored, with its owner's name and latest version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRecord {
    pub id: i64,
    pub owner_id: i64,
    pub owner: AccountName,
    pub name: ModelName,
    pub description: Description,
    pub task: Task,
    pub license: License,
    pub tags: Tags,
    pub visibility: Visibility,
    pub price_per_inference: Amount,
    /// The newest version that is not yanked; `None` until the first
    /// version is uploaded, or while every version is yanked.
    pub latest_version: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// Shown in listings and search; an unlisted model is still reachable by name.
    pub listed: bool,
    /// When its owner deleted it: it answers 410 from then on.
    pub deleted_at_ms: Option<i64>,
    /// Set while the operator has taken it down.
    pub takedown: Option<Takedown>,
}

/// Why and since when the operator took a model down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Takedown {
    pub reason: String,
    pub since_ms: i64,
}

/// Why and since when the owner yanked a version (the reason may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Yank {
    pub reason: String,
    pub since_ms: i64,
}

/// An upload refused because its owner's models would store more than
/// their quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaExceeded {
    /// Bytes the owner's models store now.
    pub used_bytes: u64,
    /// Bytes the upload would add.
    pub adding_bytes: u64,
    pub max_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct NewModel {
    pub name: ModelName,
    pub description: Description,
    pub task: Task,
    pub license: License,
    pub tags: Tags,
    pub visibility: Visibility,
    pub price_per_inference: Amount,
}

/// A change to a model; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ModelPatch {
    pub description: Option<Description>,
    pub task: Option<Task>,
    pub license: Option<License>,
    pub tags: Option<Tags>,
    pub visibility: Option<Visibility>,
    pub price_per_inference: Option<Amount>,
    pub listed: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub version: i64,
    pub blob_sha256: Sha256,
    pub size_bytes: u64,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub created_at_ms: i64,
    /// Set while the version is out of service; its calls are refused.
    pub quarantine: Option<Quarantine>,
    /// Set while its owner has yanked it; its calls are refused (410).
    pub yank: Option<Yank>,
    /// The engine that validated it (`runtime::Engine::as_str`).
    pub engine: String,
}

/// A version to record: its file, and its signature as the engine that
/// validated it read it.
#[derive(Debug, Clone, Copy)]
pub struct NewVersion<'a> {
    pub blob_sha256: &'a Sha256,
    pub size_bytes: u64,
    pub inputs: &'a [TensorSpec],
    pub outputs: &'a [TensorSpec],
    /// `runtime::Engine::as_str`.
    pub engine: &'a str,
}

/// Why and since when a version is quarantined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantine {
    pub reason: String,
    pub since_ms: i64,
}

/// A quarantined version, for the operator's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedVersion {
    pub owner: String,
    pub model: String,
    pub version: i64,
    pub quarantine: Quarantine,
}

/// Which models a listing returns. Private models are included only for
/// their owner (`viewer_id`).
#[derive(Debug, Clone, Default)]
pub struct ModelFilter {
    /// Case-insensitive substring of the name, description or tags.
    pub query: Option<String>,
    pub task: Option<Task>,
    pub owner: Option<AccountName>,
    pub viewer_id: Option<i64>,
}

/// The order of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModelSort {
    /// Newest first.
    #[default]
    Recent,
    /// By model name, then owner's account id.
    Name,
}

/// Where a listing page starts: just after this model (keyset pagination, so
/// pages stay correct while models are added).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    Recent { id: i64 },
    Name { name: String, id: i64 },
}

impl Cursor {
    /// An opaque page token: a letter for the order, then the position.
    pub fn encode(&self) -> String {
        match self {
            Cursor::Recent { id } => format!("r{id}"),
            Cursor::Name { name, id } => format!("n{id}.{name}"),
        }
    }

    pub fn decode(token: &str, sort: ModelSort) -> Option<Cursor> {
        match (sort, token.split_at_checked(1)?) {
            (ModelSort::Recent, ("r", id)) => Some(Cursor::Recent { id: id.parse().ok()? }),
            (ModelSort::Name, ("n", rest)) => {
                let (id, name) = rest.split_once('.')?;
                Some(Cursor::Name { name: name.to_owned(), id: id.parse().ok()? })
            }
            _ => None,
        }
    }
}

const MODEL_COLUMNS: &str = "m.id, m.owner_id, a.name AS owner, m.name, m.description, m.task, m.license, m.tags, \
     m.visibility, m.price_per_inference, m.created_at, m.updated_at, m.listed, m.deleted_at, \
     m.takedown_at, m.takedown_reason, \
     (SELECT MAX(version) FROM model_versions v WHERE v.model_id = m.id AND v.yanked_at IS NULL) AS latest_version";

const VERSION_COLUMNS: &str = "v.version, v.blob_sha256, b.size_bytes, v.signature, v.created_at, v.quarantined_at, \
     v.quarantine_reason, v.yanked_at, v.yank_reason, v.engine";

/// The bytes an owner's models store: each distinct file of a model that is
/// not deleted, once (uploading one file twice takes no more room).
const STORAGE_USED: &str = "SELECT CAST(COALESCE(SUM(b.size_bytes), 0) AS BIGINT) FROM blobs b WHERE b.sha256 IN \
     (SELECT v.blob_sha256 FROM model_versions v JOIN models m ON m.id = v.model_id \
      WHERE m.owner_id = $1 AND m.deleted_at IS NULL)";

impl Store {
    /// Opens (creating if needed) the database at `path` in WAL mode with
    /// full fsync, and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed transaction survives power loss, which the
            // ledger's "durable before the response" promise relies on.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Writers queue for SQLite's one write lock; several nodes
            // sharing a file under load can wait seconds for their turn.
            .busy_timeout(Duration::from_secs(30));
        // No ping before each use: a SQLite connection is a file handle in this
        // process, and the ping was a round trip to its thread per query.
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_CONNECTIONS_MAX)
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        Store::with_pool(Pool::Sqlite(pool)).await
    }

    /// Connects to the PostgreSQL database at `url`
    /// (`postgres://user@host:port/database`) and applies pending
    /// migrations. Several nodes may open one database at once: one of them
    /// migrates while the others wait.
    pub async fn open_postgres(url: &str) -> Result<Store, StoreError> {
        let pool = PgPoolOptions::new().max_connections(POSTGRES_CONNECTIONS_MAX).connect(url).await?;
        Store::with_pool(Pool::Postgres(pool)).await
    }

    /// Another store on the same database, with connections and a writer
    /// memory of its own: what another node sharing the database has.
    pub async fn reopen(&self) -> Result<Store, StoreError> {
        let pool = match &self.pool {
            Pool::Sqlite(pool) => Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(POOL_CONNECTIONS_MAX)
                    .test_before_acquire(false)
                    .connect_with((*pool.connect_options()).clone())
                    .await?,
            ),
            Pool::Postgres(pool) => Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(POSTGRES_CONNECTIONS_MAX)
                    .connect_with((*pool.connect_options()).clone())
                    .await?,
            ),
        };
        Ok(Store { rollups: self.rollups, ..Store::with_pool(pool).await? })
    }

    async fn with_pool(pool: Pool) -> Result<Store, StoreError> {
        let writer = match &pool {
            Pool::Sqlite(sqlite) => crate::writer::Writer::sqlite(&sqlite.connect_options()).await?,
            Pool::Postgres(_) => Default::default(),
        };
        let store = Store {
            pool,
            rollups: true,
            writer,
            upper: Default::default(),
            signer: Default::default(),
            presence: Default::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Whether the store is on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let migrations = match self.pool {
            Pool::Sqlite(_) => SQLITE_MIGRATIONS,
            Pool::Postgres(_) => POSTGRES_MIGRATIONS,
        };
        on_pool!(&self.pool, pool => {
            sqlx::raw_sql(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
            )
            .execute(pool)
            .await?;
            for &(version, sql) in migrations {
                let mut tx = pool.begin().await?;
                if self.is_postgres() {
                    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await?;
                }
                let applied: Option<i64> =
                    sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                        .bind(version)
                        .fetch_optional(&mut *tx)
                        .await?;
                if applied.is_some() {
                    continue;
                }
                tracing::info!(version, "applying schema migration");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                    .bind(version)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
        });
        Ok(())
    }

    /// Turns rollup maintenance on or off (it is on by default).
    pub fn with_rollups(mut self, rollups: bool) -> Store {
        self.rollups = rollups;
        self
    }

    /// Whether [`Store::close`] was called: background tasks stop then.
    pub fn is_closed(&self) -> bool {
        self.pool.is_closed()
    }

    /// Closes every connection; on PostgreSQL a signer's lease ends with it,
    /// so another node signs from its next checkpoint on.
    pub async fn close(&self) {
        if let Some(connection) = self.signer.lock().await.connection.take() {
            let _ = connection.close().await;
        }
        self.leave().await;
        self.writer.close().await;
        self.pool.close().await;
    }

    /// Whether this store may sign the log's checkpoints now. On SQLite,
    /// always: nodes sharing a file share its one writer, and signing the
    /// same size twice gives the same note. On PostgreSQL, while it holds a
    /// session advisory lock on a connection of its own: one node at a time
    /// signs, and when that node dies its connection closes, the lock goes
    /// with it and the next node to ask takes over.
    pub async fn holds_signer_lease(&self) -> Result<bool, StoreError> {
        let Pool::Postgres(pool) = &self.pool else { return Ok(true) };
        let mut signer = self.signer.lock().await;
        if let Some(connection) = signer.connection.as_mut()
            && connection.ping().await.is_err()
        {
            // A lost connection lost its lock too.
            *signer = Signer::default();
        }
        if signer.connection.is_none() {
            signer.connection = Some(sqlx::PgConnection::connect_with(&pool.connect_options()).await?);
        }
        if !signer.leader {
            let connection = signer.connection.as_mut().expect("connected above");
            signer.leader = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(SIGNER_LOCK)
                .fetch_one(&mut *connection)
                .await?;
        }
        Ok(signer.leader)
    }

    /// A seed the whole market shares, by name: the one stored, or `fresh`
    /// if none is (several nodes starting at once all get the first one
    /// written).
    pub async fn market_seed(&self, name: &str, fresh: [u8; 32]) -> Result<[u8; 32], StoreError> {
        let stored: Vec<u8> = on_pool!(&self.pool, pool => {
            sqlx::query(
                "INSERT INTO market_secrets (name, seed, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(fresh.as_slice())
            .bind(now_ms())
            .execute(pool)
            .await?;
            sqlx::query_scalar("SELECT seed FROM market_secrets WHERE name = $1").bind(name).fetch_one(pool).await?
        });
        stored.try_into().map_err(|_| StoreError::Corrupt(format!("the market's seed {name:?} is not 32 bytes")))
    }

    // --- accounts and keys ---

    /// Creates an account with its first API key. `Conflict` if the name is taken.
    pub async fn create_account(
        &self,
        name: &AccountName,
        is_operator: bool,
        key: &ApiKey,
    ) -> Result<Account, StoreError> {
        let now = now_ms();
        let kind = if is_operator { AccountKind::Operator } else { AccountKind::User };
        let id: i64 = on_pool!(&self.pool, pool => {
            let mut tx = pool.begin().await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO accounts (name, is_operator, kind, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(name.as_str())
            .bind(i64::from(is_operator))
            .bind(kind.as_str())
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| conflict_or(e, format!("account '{name}'")))?;
            sqlx::query("INSERT INTO api_keys (key_id, account_id, key_hash, created_at) VALUES ($1, $2, $3, $4)")
                .bind(key.key_id())
                .bind(id)
                .bind(key.hash().to_hex())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            id
        });
        Ok(Account { id, name: name.clone(), is_operator, kind, created_at_ms: now })
    }

    /// The account a key belongs to, if the key is real. The hash comparison
    /// is constant-time ([`ApiKey::matches`]).
    pub async fn account_for_key(&self, key: &ApiKey) -> Result<Option<Account>, StoreError> {
        on_pool!(&self.pool, pool => {
            let row = sqlx::query(
                "SELECT a.id, a.name, a.is_operator, a.kind, a.created_at, k.key_hash \
                 FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE k.key_id = $1",
            )
            .bind(key.key_id())
            .fetch_optional(pool)
            .await?;
            let Some(row) = row else { return Ok(None) };
            let stored: Sha256 = parse_column(&row, "key_hash")?;
            if !key.matches(&stored) {
                return Ok(None);
            }
            Ok(Some(account_from_row(&row)?))
        })
    }

    pub async fn account_by_name(&self, name: &AccountName) -> Result<Option<Account>, StoreError> {
        on_pool!(&self.pool, pool => {
            let row = sqlx::query("SELECT id, name, is_operator, kind, created_at FROM accounts WHERE name = $1")
                .bind(name.as_str())
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(account_from_row).transpose()
        })
    }

    // --- models ---

    /// Creates a model repository. `Conflict` if the owner has one of that name.
    pub async fn create_model(&self, owner: &Account, model: &NewModel) -> Result<ModelRecord, StoreError> {
        let now = now_ms();
        on_pool!(&self.pool, pool => {
            sqlx::query(
                "INSERT INTO models (owner_id, name, description, task, license, tags, visibility, price_per_inference, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(owner.id)
            .bind(model.name.as_str())
            .bind(model.description.as_str())
            .bind(model.task.as_str())
            .bind(model.license.as_str())
            .bind(model.tags.as_slice().join(","))
            .bind(model.visibility.as_str())
            .bind(amount_column(model.price_per_inference))
            .bind(now)
            .bind(now)
            .execute(pool)
            .await
            .map_err(|e| conflict_or(e, format!("model '{}/{}'", owner.name, model.name)))?;
        });
        self.model(&owner.name, &model.name)
            .await?
            .ok_or_else(|| StoreError::Corrupt("model vanished after insert".into()))
    }

    /// A model by its full name, whatever its visibility: callers decide who may see it.
    pub async fn model(&self, owner: &AccountName, name: &ModelName) -> Result<Option<ModelRecord>, StoreError> {
        let sql = const_format_model_query("WHERE a.name = $1 AND m.name = $2");
        on_pool!(&self.pool, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(owner.as_str())
                .bind(name.as_str())
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(model_from_row).transpose()
        })
    }

    /// A model by its id, whatever its state.
    pub async fn model_by_id(&self, model_id: i64) -> Result<ModelRecord, StoreError> {
        let sql = const_format_model_query("WHERE m.id = $1");
        on_pool!(&self.pool, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(model_id).fetch_optional(pool).await?;
            row.as_ref().map(model_from_row).transpose()?.ok_or_else(|| StoreError::NotFound(format!("model {model_id}")))
        })
    }

    pub async fn update_model(&self, model_id: i64, patch: &ModelPatch) -> Result<(), StoreError> {
        on_pool!(&self.pool, pool => {
            sqlx::query(
                "UPDATE models SET \
                   description = COALESCE($1, description), task = COALESCE($2, task), license = COALESCE($3, license), \
                   tags = COALESCE($4, tags), visibility = COALESCE($5, visibility), \
                   price_per_inference = COALESCE($6, price_per_inference), listed = COALESCE($7, listed), \
                   updated_at = $8 \
                 WHERE id = $9",
            )
            .bind(patch.description.as_ref().map(Description::as_str))
            .bind(patch.task.map(Task::as_str))
            .bind(patch.license.as_ref().map(License::as_str))
            .bind(patch.tags.as_ref().map(|t| t.as_slice().join(",")))
            .bind(patch.visibility.map(Visibility::as_str))
            .bind(patch.price_per_inference.map(amount_column))
            .bind(patch.listed.map(i64::from))
            .bind(now_ms())
            .bind(model_id)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Dates a model and its versions back to `at_ms`, as if uploaded then:
    /// for the demo's market, whose calls are back-dated too (a call never
    /// precedes its model's upload).
    pub async fn backdate_model(&self, model_id: i64, at_ms: i64) -> Result<(), StoreError> {
        on_pool!(&self.pool, pool => {
            sqlx::query("UPDATE models SET created_at = $1, updated_at = $1 WHERE id = $2")
                .bind(at_ms)
                .bind(model_id)
                .execute(pool)
                .await?;
            sqlx::query("UPDATE model_versions SET created_at = $1 WHERE model_id = $2")
                .bind(at_ms)
                .bind(model_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// One page of models matching `filter`, and the cursor of the next page.
    pub async fn list_models(
        &self,
        filter: &ModelFilter,
        sort: ModelSort,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<(Vec<ModelRecord>, Option<Cursor>), StoreError> {
        // One static statement per order; the filters are all bound
        // parameters that switch themselves off when NULL.
        // Deleted models are in no listing, unlisted and taken-down ones
        // only in their owner's.
        const FILTERS: &str = "WHERE m.deleted_at IS NULL \
             AND ((m.visibility = 'public' AND m.listed = 1 AND m.takedown_at IS NULL) OR m.owner_id = $1) \
             AND ($2 IS NULL OR m.task = $2) \
             AND ($3 IS NULL OR a.name = $3) \
             AND ($4 IS NULL OR lower(m.name || ' ' || m.task || ' ' || m.description || ' ' || m.tags) LIKE lower($4) ESCAPE '\\')";
        let sql = match sort {
            ModelSort::Recent => const_format_model_query(&format!(
                "{FILTERS} AND ($5 IS NULL OR m.id < $5) ORDER BY m.id DESC LIMIT $6"
            )),
            ModelSort::Name => const_format_model_query(&format!(
                "{FILTERS} AND ($5 IS NULL OR (m.name, m.id) > ($6, $5)) ORDER BY m.name, m.id LIMIT $7"
            )),
        };
        let task = filter.task.map(Task::as_str);
        let owner = filter.owner.as_ref().map(AccountName::as_str);
        let pattern = filter.query.as_deref().map(contains_pattern);
        // One extra row says whether there is a next page.
        let rows_max = limit as i64 + 1;
        let mut models = on_pool!(&self.pool, pool => {
            let statement = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(filter.viewer_id.unwrap_or(-1))
                .bind(task)
                .bind(owner)
                .bind(pattern.as_deref());
            let statement = match (sort, after) {
                (ModelSort::Recent, Some(Cursor::Recent { id })) => statement.bind(Some(*id)).bind(rows_max),
                (ModelSort::Name, Some(Cursor::Name { name, id })) => {
                    statement.bind(Some(*id)).bind(name.clone()).bind(rows_max)
                }
                (ModelSort::Recent, _) => statement.bind(None::<i64>).bind(rows_max),
                (ModelSort::Name, _) => statement.bind(None::<i64>).bind(None::<String>).bind(rows_max),
            };
            let rows = statement.fetch_all(pool).await?;
            rows.iter().map(model_from_row).collect::<Result<Vec<_>, _>>()?
        });
        let next = if models.len() > limit as usize {
            models.truncate(limit as usize);
            models.last().map(|last| match sort {
                ModelSort::Recent => Cursor::Recent { id: last.id },
                ModelSort::Name => Cursor::Name { name: last.name.as_str().to_owned(), id: last.id },
            })
        } else {
            None
        };
        Ok((models, next))
    }

    // --- versions and blobs ---

    /// Records a blob (once per digest) and adds it as the model's next
    /// version, in one transaction. The version number is computed inside the
    /// insert, so concurrent uploads get distinct numbers. With a quota, the
    /// owner's stored bytes are counted in the same transaction, so two
    /// uploads at once cannot both slip under it.
    pub async fn add_version(
        &self,
        model_id: i64,
        new: &NewVersion<'_>,
        quota_bytes: Option<u64>,
    ) -> Result<Result<Version, QuotaExceeded>, StoreError> {
        let NewVersion { blob_sha256, size_bytes, inputs, outputs, engine } = *new;
        let now = now_ms();
        let postgres = self.is_postgres();
        let version: i64 = on_pool!(&self.pool, pool => {
            let mut tx = pool.begin().await?;
            // A write first: on SQLite the transaction holds the database's
            // write lock from here, so nothing changes the count below until
            // it commits; on PostgreSQL it holds the model's row, which
            // orders uploads of one model.
            let owner_id: i64 =
                sqlx::query_scalar("UPDATE models SET updated_at = $1 WHERE id = $2 RETURNING owner_id")
                    .bind(now)
                    .bind(model_id)
                    .fetch_one(&mut *tx)
                    .await?;
            if let Some(max_bytes) = quota_bytes {
                if postgres {
                    // Uploads to the owner's other models, on any node,
                    // wait here until this one commits.
                    sqlx::query("SELECT id FROM accounts WHERE id = $1 FOR UPDATE")
                        .bind(owner_id)
                        .execute(&mut *tx)
                        .await?;
                }
                let used: i64 = sqlx::query_scalar(STORAGE_USED).bind(owner_id).fetch_one(&mut *tx).await?;
                let stored_already: Option<i64> = sqlx::query_scalar(
                    "SELECT CAST(1 AS BIGINT) FROM model_versions v JOIN models m ON m.id = v.model_id \
                     WHERE v.blob_sha256 = $1 AND m.owner_id = $2 AND m.deleted_at IS NULL LIMIT 1",
                )
                .bind(blob_sha256.to_hex())
                .bind(owner_id)
                .fetch_optional(&mut *tx)
                .await?;
                let adding_bytes = if stored_already.is_some() { 0 } else { size_bytes };
                let used_bytes = used as u64;
                if used_bytes.saturating_add(adding_bytes) > max_bytes {
                    return Ok(Err(QuotaExceeded { used_bytes, adding_bytes, max_bytes }));
                }
            }
            sqlx::query(
                "INSERT INTO blobs (sha256, size_bytes, created_at) VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING",
            )
            .bind(blob_sha256.to_hex())
            .bind(size_bytes as i64)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let version: i64 = sqlx::query_scalar(
                "INSERT INTO model_versions (model_id, version, blob_sha256, signature, created_at, engine) \
                 SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4, $5 FROM model_versions WHERE model_id = $1 \
                 RETURNING version",
            )
            .bind(model_id)
            .bind(blob_sha256.to_hex())
            .bind(signature::encode(inputs, outputs))
            .bind(now)
            .bind(engine)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            version
        });
        Ok(Ok(Version {
            version,
            blob_sha256: *blob_sha256,
            size_bytes,
            inputs: inputs.to_vec(),
            outputs: outputs.to_vec(),
            created_at_ms: now,
            quarantine: None,
            yank: None,
            engine: engine.to_owned(),
        }))
    }

    /// The bytes the account's models store (see [`STORAGE_USED`]).
    pub async fn storage_used(&self, owner_id: i64) -> Result<u64, StoreError> {
        let used: i64 =
            on_pool!(&self.pool, pool => sqlx::query_scalar(STORAGE_USED).bind(owner_id).fetch_one(pool).await?);
        Ok(used as u64)
    }

    /// All versions of a model, oldest first.
    pub async fn versions(&self, model_id: i64) -> Result<Vec<Version>, StoreError> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions v JOIN blobs b ON b.sha256 = v.blob_sha256 \
             WHERE v.model_id = $1 ORDER BY v.version"
        );
        on_pool!(&self.pool, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(model_id).fetch_all(pool).await?;
            rows.iter().map(version_from_row).collect()
        })
    }

    pub async fn version(&self, model_id: i64, version: i64) -> Result<Option<Version>, StoreError> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions v JOIN blobs b ON b.sha256 = v.blob_sha256 \
             WHERE v.model_id = $1 AND v.version = $2"
        );
        on_pool!(&self.pool, pool => {
            let row =
                sqlx::query(sqlx::AssertSqlSafe(sql)).bind(model_id).bind(version).fetch_optional(pool).await?;
            row.as_ref().map(version_from_row).transpose()
        })
    }

    /// Yanks a version (`Some(reason)`) or puts it back (`None`). Returns
    /// false if the version does not exist. Yanking again keeps the first
    /// time and takes the new reason.
    pub async fn set_yank(&self, model_id: i64, version: i64, yank: Option<&str>) -> Result<bool, StoreError> {
        let since = yank.map(|_| now_ms());
        let found: Option<i64> = on_pool!(&self.pool, pool => {
            sqlx::query_scalar(
                "UPDATE model_versions SET yanked_at = CASE WHEN $1 IS NULL THEN NULL ELSE COALESCE(yanked_at, $1) END, \
                 yank_reason = $2 WHERE model_id = $3 AND version = $4 RETURNING version",
            )
            .bind(since)
            .bind(yank)
            .bind(model_id)
            .bind(version)
            .fetch_optional(pool)
            .await?
        });
        Ok(found.is_some())
    }

    /// Deletes a model: marks it (rows stay for history, receipts and
    /// usage) and returns the files its versions used; those no other model
    /// uses ([`Store::blob_in_use`]) may be removed from the blob folder.
    pub async fn delete_model(&self, model_id: i64) -> Result<Vec<Sha256>, StoreError> {
        let now = now_ms();
        let used: Vec<String> = on_pool!(&self.pool, pool => {
            sqlx::query("UPDATE models SET deleted_at = COALESCE(deleted_at, $1), updated_at = $1 WHERE id = $2")
                .bind(now)
                .bind(model_id)
                .execute(pool)
                .await?;
            sqlx::query_scalar("SELECT DISTINCT blob_sha256 FROM model_versions WHERE model_id = $1")
                .bind(model_id)
                .fetch_all(pool)
                .await?
        });
        used.iter().map(|hex| hex.parse().map_err(|_| StoreError::Corrupt(format!("blob digest {hex:?}")))).collect()
    }

    /// Whether a version of a model that is not deleted uses the file.
    pub async fn blob_in_use(&self, sha256: &Sha256) -> Result<bool, StoreError> {
        let found: Option<i64> = on_pool!(&self.pool, pool => {
            sqlx::query_scalar(
                "SELECT CAST(1 AS BIGINT) FROM model_versions v JOIN models m ON m.id = v.model_id \
                 WHERE v.blob_sha256 = $1 AND m.deleted_at IS NULL LIMIT 1",
            )
            .bind(sha256.to_hex())
            .fetch_optional(pool)
            .await?
        });
        Ok(found.is_some())
    }

    /// Takes a model down (`Some(reason)`) or restores it (`None`). A model
    /// taken down again keeps its first time and takes the new reason.
    pub async fn set_takedown(&self, model_id: i64, takedown: Option<&str>) -> Result<(), StoreError> {
        let now = now_ms();
        let since = takedown.map(|_| now);
        on_pool!(&self.pool, pool => {
            sqlx::query(
                "UPDATE models SET takedown_at = CASE WHEN $1 IS NULL THEN NULL ELSE COALESCE(takedown_at, $1) END, \
                 takedown_reason = $2, updated_at = $3 WHERE id = $4",
            )
            .bind(since)
            .bind(takedown)
            .bind(now)
            .bind(model_id)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Takes a version out of service with a reason. Returns false if it
    /// does not exist; a version already quarantined keeps its first reason.
    pub async fn quarantine_version(
        &self,
        model_id: i64,
        version: i64,
        reason: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let found: Option<i64> = on_pool!(&self.pool, pool => {
            sqlx::query_scalar(
                "UPDATE model_versions SET quarantined_at = COALESCE(quarantined_at, $1), \
                 quarantine_reason = COALESCE(quarantine_reason, $2) WHERE model_id = $3 AND version = $4 \
                 RETURNING version",
            )
            .bind(now_ms)
            .bind(reason)
            .bind(model_id)
            .bind(version)
            .fetch_optional(pool)
            .await?
        });
        Ok(found.is_some())
    }

    /// Puts a quarantined version back in service. Returns false if it was
    /// not quarantined (or does not exist).
    pub async fn lift_quarantine(&self, model_id: i64, version: i64) -> Result<bool, StoreError> {
        let lifted = on_pool!(&self.pool, pool => {
            sqlx::query(
                "UPDATE model_versions SET quarantined_at = NULL, quarantine_reason = NULL \
                 WHERE model_id = $1 AND version = $2 AND quarantined_at IS NOT NULL",
            )
            .bind(model_id)
            .bind(version)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(lifted == 1)
    }

    /// Every quarantined version, most recent first.
    pub async fn quarantined_versions(&self) -> Result<Vec<QuarantinedVersion>, StoreError> {
        on_pool!(&self.pool, pool => {
            let rows = sqlx::query(
                "SELECT a.name AS owner, m.name AS model, v.version, v.quarantined_at, v.quarantine_reason \
                 FROM model_versions v JOIN models m ON m.id = v.model_id JOIN accounts a ON a.id = m.owner_id \
                 WHERE v.quarantined_at IS NOT NULL ORDER BY v.quarantined_at DESC, m.id, v.version",
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(QuarantinedVersion {
                        owner: row.get("owner")?,
                        model: row.get("model")?,
                        version: row.get("version")?,
                        quarantine: quarantine_from_row(row)?
                            .ok_or_else(|| StoreError::Corrupt("a quarantine without its time".into()))?,
                    })
                })
                .collect()
        })
    }

    /// Whether `viewer` may download a blob: some version of a model they can
    /// see uses it. Blobs of private models stay private.
    pub async fn blob_visible(&self, sha256: &Sha256, viewer_id: Option<i64>) -> Result<bool, StoreError> {
        let visible: Option<i64> = on_pool!(&self.pool, pool => {
            sqlx::query_scalar(
                "SELECT CAST(1 AS BIGINT) FROM model_versions v JOIN models m ON m.id = v.model_id \
                 WHERE v.blob_sha256 = $1 AND m.deleted_at IS NULL \
                   AND ((m.visibility = 'public' AND m.takedown_at IS NULL) OR m.owner_id = $2) LIMIT 1",
            )
            .bind(sha256.to_hex())
            .bind(viewer_id.unwrap_or(-1))
            .fetch_optional(pool)
            .await?
        });
        Ok(visible.is_some())
    }

    /// Counts of stored rows, for tests and metrics: (accounts, models, versions, blobs).
    pub async fn counts(&self) -> Result<(i64, i64, i64, i64), StoreError> {
        on_pool!(&self.pool, pool => {
            let row = sqlx::query(
                "SELECT (SELECT COUNT(*) FROM accounts), (SELECT COUNT(*) FROM models), \
                        (SELECT COUNT(*) FROM model_versions), (SELECT COUNT(*) FROM blobs)",
            )
            .fetch_one(pool)
            .await?;
            Ok((row.at(0)?, row.at(1)?, row.at(2)?, row.at(3)?))
        })
    }
}

fn const_format_model_query(tail: &str) -> String {
    format!("SELECT {MODEL_COLUMNS} FROM models m JOIN accounts a ON a.id = m.owner_id {tail}")
}

fn conflict_or(error: sqlx::Error, what: String) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
        _ => StoreError::Database(error),
    }
}

/// Amounts are at most `i64::MAX` by construction, so this never wraps.
fn amount_column(amount: Amount) -> i64 {
    amount.minor_units() as i64
}

/// Reads a text column through a domain parser; a failure means the stored
/// data is corrupt (every value was parsed before it was written).
pub(crate) fn parse_column<T: FromStr>(row: &impl Columns, column: &str) -> Result<T, StoreError> {
    let text: String = row.get(column)?;
    text.parse().map_err(|_| StoreError::Corrupt(format!("column {column} holds {text:?}")))
}

pub(crate) fn account_from_row(row: &impl Columns) -> Result<Account, StoreError> {
    Ok(Account {
        id: row.get("id")?,
        name: parse_column(row, "name")?,
        is_operator: row.get::<i64>("is_operator")? != 0,
        kind: parse_column(row, "kind")?,
        created_at_ms: row.get("created_at")?,
    })
}

fn model_from_row(row: &impl Columns) -> Result<ModelRecord, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("model row has a bad {what}"));
    let tags: String = row.get("tags")?;
    let tags: Vec<&str> = if tags.is_empty() { vec![] } else { tags.split(',').collect() };
    let price: i64 = row.get("price_per_inference")?;
    Ok(ModelRecord {
        id: row.get("id")?,
        owner_id: row.get("owner_id")?,
        owner: parse_column(row, "owner")?,
        name: parse_column(row, "name")?,
        description: Description::parse(&row.get::<String>("description")?).map_err(|_| corrupt("description"))?,
        task: parse_column(row, "task")?,
        license: License::parse(&row.get::<String>("license")?).map_err(|_| corrupt("license"))?,
        tags: Tags::parse(&tags).map_err(|_| corrupt("tags"))?,
        visibility: parse_column(row, "visibility")?,
        price_per_inference: Amount::from_minor_units(u64::try_from(price).map_err(|_| corrupt("price"))?)
            .map_err(|_| corrupt("price"))?,
        latest_version: row.get("latest_version")?,
        created_at_ms: row.get("created_at")?,
        updated_at_ms: row.get("updated_at")?,
        listed: row.get::<i64>("listed")? != 0,
        deleted_at_ms: row.get("deleted_at")?,
        takedown: row
            .get::<Option<i64>>("takedown_at")?
            .map(|since_ms| Ok::<_, StoreError>(Takedown { reason: row.get("takedown_reason")?, since_ms }))
            .transpose()?,
    })
}

fn version_from_row(row: &impl Columns) -> Result<Version, StoreError> {
    let (inputs, outputs) = signature::decode(&row.get::<String>("signature")?)?;
    let size: i64 = row.get("size_bytes")?;
    Ok(Version {
        version: row.get("version")?,
        blob_sha256: parse_column(row, "blob_sha256")?,
        size_bytes: size as u64,
        inputs,
        outputs,
        created_at_ms: row.get("created_at")?,
        quarantine: quarantine_from_row(row)?,
        yank: row
            .get::<Option<i64>>("yanked_at")?
            .map(|since_ms| {
                Ok::<_, StoreError>(Yank {
                    reason: row.get::<Option<String>>("yank_reason")?.unwrap_or_default(),
                    since_ms,
                })
            })
            .transpose()?,
        engine: row.get("engine")?,
    })
}

fn quarantine_from_row(row: &impl Columns) -> Result<Option<Quarantine>, StoreError> {
    let since_ms: Option<i64> = row.get("quarantined_at")?;
    let reason: Option<String> = row.get("quarantine_reason")?;
    Ok(since_ms.map(|since_ms| Quarantine { reason: reason.unwrap_or_default(), since_ms }))
}
