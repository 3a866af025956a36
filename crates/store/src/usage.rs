//! Usage events and their rollups. Events are written by `apply_batch`, in
//! the transaction of the call's charge; with rollups on, the batch's events
//! are aggregated in memory and merged into `usage_rollups` in the same
//! transaction, so every read is a range scan over a few hundred rows.

use std::collections::{BTreeMap, HashMap};

use analytics::{CallerSketch, LatencyHistogram};
use sqlx::QueryBuilder;

use crate::backend::{Columns, Piece, Pool, Tx, Writes, on_pool, on_tx, table_row};
use crate::{Store, StoreError};

pub use analytics::{DAY_MS, HOUR_MS, MINUTE_MS};
/// Bucket widths kept in `usage_rollups`.
pub const GRANULARITIES: [i64; 3] = [MINUTE_MS, HOUR_MS, DAY_MS];

/// What is measured along, and each event's key on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    Model,
    Creator,
    Task,
    App,
    Node,
}

impl Dimension {
    pub const ALL: [Dimension; 5] =
        [Dimension::Model, Dimension::Creator, Dimension::Task, Dimension::App, Dimension::Node];

    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Model => "model",
            Dimension::Creator => "creator",
            Dimension::Task => "task",
            Dimension::App => "app",
            Dimension::Node => "node",
        }
    }

    pub fn parse(text: &str) -> Option<Dimension> {
        Dimension::ALL.into_iter().find(|d| d.as_str() == text)
    }
}

/// One inference call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEvent {
    pub created_at_ms: i64,
    pub model_id: i64,
    pub version: i64,
    pub owner_id: i64,
    pub task: String,
    pub public: bool,
    /// The caller's pseudonym (as in the log).
    pub caller: [u8; 32],
    pub app: String,
    pub node: String,
    pub price: u64,
    pub creator_share: u64,
    pub latency_us: u64,
    /// CPU time the model used (in its worker), user and system; 0 for a
    /// call refused before it ran.
    pub cpu_us: u64,
    /// "ok" or an error code.
    pub status: String,
}

/// What a batch's events that share every rollup key have in common.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct EventGroup<'a> {
    model_id: i64,
    owner_id: i64,
    task: &'a str,
    app: &'a str,
    node: &'a str,
    public: bool,
    /// The start of the event's minute.
    minute: i64,
}

impl EventGroup<'_> {
    fn key(&self, dimension: Dimension) -> String {
        match dimension {
            Dimension::Model => self.model_id.to_string(),
            Dimension::Creator => self.owner_id.to_string(),
            Dimension::Task => self.task.to_owned(),
            Dimension::App => self.app.to_owned(),
            Dimension::Node => self.node.to_owned(),
        }
    }
}

/// A rollup row's measures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollup {
    pub calls: u64,
    pub errors: u64,
    pub revenue: u64,
    pub creator_revenue: u64,
    pub latency: LatencyHistogram,
    pub callers: CallerSketch,
}

impl Rollup {
    fn add(&mut self, event: &UsageEvent) {
        self.calls += 1;
        if event.status == "ok" {
            self.revenue = self.revenue.saturating_add(event.price);
            self.creator_revenue = self.creator_revenue.saturating_add(event.creator_share);
            self.latency.record(event.latency_us);
        } else {
            self.errors += 1;
        }
        self.callers.insert(u64::from_be_bytes(event.caller[..8].try_into().expect("8 bytes")));
    }

    pub fn merge(&mut self, other: &Rollup) {
        // Each account's totals are bounded, but a sum over many accounts
        // (a node's revenue) is not: it stops at the top instead of wrapping.
        self.calls = self.calls.saturating_add(other.calls);
        self.errors = self.errors.saturating_add(other.errors);
        self.revenue = self.revenue.saturating_add(other.revenue);
        self.creator_revenue = self.creator_revenue.saturating_add(other.creator_revenue);
        self.latency.merge(&other.latency);
        self.callers.merge(&other.callers);
    }
}

/// Which row of `usage_rollups` a rollup is: its primary key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RollupKey {
    pub(crate) dimension: Dimension,
    /// The model, creator, task, app or node (as the dimension says).
    pub(crate) key: String,
    /// The bucket's width, in milliseconds.
    pub(crate) granularity: i64,
    pub(crate) public: bool,
    /// The bucket's start, Unix milliseconds.
    pub(crate) bucket: i64,
}

table_row! {
    struct UsageEventRow in "usage_events" {
        created_at: i64,
        model_id: i64,
        version: i64,
        owner_id: i64,
        task: String,
        public: i64,
        caller: Vec<u8>,
        app: String,
        node: String,
        price: i64,
        creator_share: i64,
        latency_us: i64,
        cpu_us: i64,
        status: String,
        log_index: Option<i64>,
    }
}

table_row! {
    struct RollupRow in "usage_rollups" {
        dimension: &'static str,
        key: String,
        granularity: i64,
        public: i64,
        bucket: i64,
        calls: i64,
        errors: i64,
        revenue: i64,
        creator_revenue: i64,
        latency: Vec<u8>,
        callers: Vec<u8>,
    }
}

/// Inserts the events, and (with `rollups`) merges them into their rollups:
/// the rows the writer remembers (`remembered`, kept current here) are not
/// read again; the others are read in one statement per chunk.
pub(crate) async fn record(
    tx: &mut Tx,
    events: &[(UsageEvent, Option<u64>)],
    rollups: bool,
    remembered: &mut HashMap<RollupKey, Rollup>,
    writes: &mut Writes,
) -> Result<(), StoreError> {
    writes.push(Piece::insert(events.iter().map(|(event, log_index)| UsageEventRow {
        created_at: event.created_at_ms,
        model_id: event.model_id,
        version: event.version,
        owner_id: event.owner_id,
        task: event.task.clone(),
        public: i64::from(event.public),
        caller: event.caller.to_vec(),
        app: event.app.clone(),
        node: event.node.clone(),
        price: event.price as i64,
        creator_share: event.creator_share as i64,
        latency_us: event.latency_us as i64,
        cpu_us: event.cpu_us as i64,
        status: event.status.clone(),
        log_index: log_index.map(|i| i as i64),
    })));
    if !rollups || events.is_empty() {
        return Ok(());
    }
    // The batch's events by what they share (a batch's calls are mostly of
    // a few models in one minute), each group then merged into its rollup
    // row along every dimension and granularity: an event is added once,
    // not once per row, and keys are made per group, not per event.
    let mut groups: HashMap<EventGroup<'_>, Rollup> = HashMap::new();
    for (event, _) in events {
        let group = EventGroup {
            model_id: event.model_id,
            owner_id: event.owner_id,
            task: &event.task,
            app: &event.app,
            node: &event.node,
            public: event.public,
            minute: event.created_at_ms.div_euclid(MINUTE_MS) * MINUTE_MS,
        };
        groups.entry(group).or_default().add(event);
    }
    let mut batch: HashMap<RollupKey, Rollup> = HashMap::new();
    for (group, rollup) in &groups {
        for dimension in Dimension::ALL {
            for granularity in GRANULARITIES {
                // Every granularity is a whole number of minutes.
                let bucket = group.minute.div_euclid(granularity) * granularity;
                let key = RollupKey { dimension, key: group.key(dimension), granularity, public: group.public, bucket };
                batch.entry(key).or_default().merge(rollup);
            }
        }
    }
    let unknown: Vec<&RollupKey> = batch.keys().filter(|key| !remembered.contains_key(*key)).collect();
    let mut stored = read_rollups(tx, &unknown).await?;
    let mut rows: Vec<(RollupKey, Rollup)> = Vec::with_capacity(batch.len());
    for (key, added) in batch {
        let mut row = remembered.remove(&key).or_else(|| stored.remove(&key)).unwrap_or_default();
        row.merge(&added);
        rows.push((key, row));
    }
    // An upsert updates a row in place; its key and so its index entry stay
    // (a REPLACE would delete and insert both).
    let stored_rows = rows.iter().map(|(key, rollup)| RollupRow {
        dimension: key.dimension.as_str(),
        key: key.key.clone(),
        granularity: key.granularity,
        public: i64::from(key.public),
        bucket: key.bucket,
        calls: rollup.calls as i64,
        errors: rollup.errors as i64,
        revenue: rollup.revenue as i64,
        creator_revenue: rollup.creator_revenue as i64,
        latency: rollup.latency.to_bytes(),
        callers: rollup.callers.to_bytes(),
    });
    writes.push(Piece::upsert(&["dimension", "granularity", "public", "bucket", "key"], stored_rows));
    remembered.extend(rows);
    Ok(())
}

/// The stored rollup rows of `keys` (rows not stored yet are absent).
async fn read_rollups(tx: &mut Tx, keys: &[&RollupKey]) -> Result<HashMap<RollupKey, Rollup>, StoreError> {
    let mut stored = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(crate::backend::ROWS_PER_STATEMENT) {
        on_tx!(&mut *tx, tx => {
            let mut select = QueryBuilder::new(
                "SELECT dimension, key, granularity, public, bucket, calls, errors, revenue, creator_revenue, latency, \
                 callers FROM usage_rollups WHERE (dimension, granularity, public, bucket, key) IN (",
            );
            select.push_values(chunk, |mut row, key| {
                row.push_bind(key.dimension.as_str())
                    .push_bind(key.granularity)
                    .push_bind(i64::from(key.public))
                    .push_bind(key.bucket)
                    .push_bind(key.key.clone());
            });
            select.push(")");
            for row in select.build().fetch_all(&mut **tx).await? {
                let dimension: String = row.get("dimension")?;
                let dimension = Dimension::parse(&dimension)
                    .ok_or_else(|| StoreError::Corrupt(format!("a usage rollup has the dimension '{dimension}'")))?;
                let key = RollupKey {
                    dimension,
                    key: row.get("key")?,
                    granularity: row.get("granularity")?,
                    public: row.get::<i64>("public")? != 0,
                    bucket: row.get("bucket")?,
                };
                stored.insert(key, rollup_from_row(&row)?);
            }
        });
    }
    Ok(stored)
}

fn rollup_from_row(row: &impl Columns) -> Result<Rollup, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("a usage rollup has a bad {what}"));
    let count = |column: &str| -> Result<u64, StoreError> { Ok(row.get::<i64>(column)? as u64) };
    Ok(Rollup {
        calls: count("calls")?,
        errors: count("errors")?,
        revenue: count("revenue")?,
        creator_revenue: count("creator_revenue")?,
        latency: LatencyHistogram::from_bytes(&row.get::<Vec<u8>>("latency")?).ok_or_else(|| corrupt("histogram"))?,
        callers: CallerSketch::from_bytes(&row.get::<Vec<u8>>("callers")?).ok_or_else(|| corrupt("sketch"))?,
    })
}

/// Which rollup rows a query reads.
#[derive(Debug, Clone)]
pub struct RollupQuery {
    pub dimension: Dimension,
    pub granularity: i64,
    /// Bucket starts in `[from_ms, to_ms)`.
    pub from_ms: i64,
    pub to_ms: i64,
    /// Only these keys, if given.
    pub keys: Option<Vec<String>>,
    /// Private calls too (the owner's own views).
    pub include_private: bool,
    /// Decode latency histograms and caller sketches (percentiles, distinct
    /// callers); without, only the counts are read.
    pub detail: bool,
}

impl Store {
    /// Rollups by key and bucket start, public and (if asked) private merged.
    pub async fn rollups(&self, query: &RollupQuery) -> Result<BTreeMap<String, BTreeMap<i64, Rollup>>, StoreError> {
        // Static statements, so each can use its index: the range of buckets
        // over all keys (the primary key), or one key's buckets (by_key).
        // Without `detail` the sketches and histograms stay undecoded.
        // (SQLite's blob literal and index hint; PostgreSQL's bytea literal,
        // and its planner needs no hint.)
        let (empty, by_key) = match self.pool {
            Pool::Sqlite(_) => ("x''", "INDEXED BY usage_rollups_by_key"),
            Pool::Postgres(_) => ("'\\x'::bytea", ""),
        };
        let columns = if query.detail {
            "key, bucket, calls, errors, revenue, creator_revenue, latency, callers".to_owned()
        } else {
            format!("key, bucket, calls, errors, revenue, creator_revenue, {empty} AS latency, {empty} AS callers")
        };
        let visibility = if query.include_private { "public IN (0, 1)" } else { "public = 1" };
        let single = query.keys.as_ref().filter(|keys| keys.len() == 1).map(|keys| keys[0].clone());
        let sql = match &single {
            Some(_) => format!(
                "SELECT {columns} FROM usage_rollups {by_key} \
                 WHERE dimension = $1 AND granularity = $2 AND bucket >= $3 AND bucket < $4 AND {visibility} \
                 AND key = $5"
            ),
            None => format!(
                "SELECT {columns} FROM usage_rollups \
                 WHERE dimension = $1 AND granularity = $2 AND {visibility} AND bucket >= $3 AND bucket < $4"
            ),
        };
        let mut out: BTreeMap<String, BTreeMap<i64, Rollup>> = BTreeMap::new();
        on_pool!(&self.pool, pool => {
            let mut statement = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(query.dimension.as_str())
                .bind(query.granularity)
                .bind(query.from_ms)
                .bind(query.to_ms);
            if let Some(key) = &single {
                statement = statement.bind(key.clone());
            }
            for row in &statement.fetch_all(pool).await? {
                let key: String = row.get("key")?;
                if query.keys.as_ref().is_some_and(|keys| !keys.contains(&key)) {
                    continue;
                }
                let bucket: i64 = row.get("bucket")?;
                out.entry(key).or_default().entry(bucket).or_default().merge(&rollup_from_row(row)?);
            }
        });
        Ok(out)
    }

    /// A creator's earnings per app and bucket, from the events (rollups are
    /// not kept per creator and app).
    pub async fn earnings_by_app(
        &self,
        owner_id: i64,
        from_ms: i64,
        to_ms: i64,
        granularity: i64,
    ) -> Result<BTreeMap<String, BTreeMap<i64, (u64, u64)>>, StoreError> {
        let rows: Vec<(String, i64, i64, i64)> = on_pool!(&self.pool, pool => {
            sqlx::query_as(
                "SELECT app, (created_at / $1) * $1 AS bucket, COUNT(*) AS calls, \
                   CAST(SUM(creator_share) AS BIGINT) AS earned FROM usage_events \
                 WHERE owner_id = $2 AND created_at >= $3 AND created_at < $4 AND status = 'ok' AND creator_share > 0 \
                 GROUP BY app, bucket",
            )
            .bind(granularity)
            .bind(owner_id)
            .bind(from_ms)
            .bind(to_ms)
            .fetch_all(pool)
            .await?
        });
        let mut out: BTreeMap<String, BTreeMap<i64, (u64, u64)>> = BTreeMap::new();
        for (app, bucket, calls, earned) in rows {
            out.entry(app).or_default().insert(bucket, (calls as u64, earned as u64));
        }
        Ok(out)
    }

    /// The start of the first day with any usage, public or private; `None`
    /// before the first call.
    pub async fn first_usage_day_ms(&self) -> Result<Option<i64>, StoreError> {
        Ok(on_pool!(&self.pool, pool => {
            sqlx::query_scalar("SELECT MIN(bucket) FROM usage_rollups WHERE dimension = 'model' AND granularity = $1")
                .bind(DAY_MS)
                .fetch_one(pool)
                .await?
        }))
    }

    /// One model's calls, errors and revenue per app over `[from, to)`, from
    /// the events (rollups are not kept per model and app).
    pub async fn model_usage_by_app(
        &self,
        model_id: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<BTreeMap<String, (u64, u64, u64)>, StoreError> {
        let by_model = match self.pool {
            Pool::Sqlite(_) => "INDEXED BY usage_events_by_model",
            Pool::Postgres(_) => "",
        };
        let sql = format!(
            "SELECT app, COUNT(*) AS calls, CAST(SUM(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END) AS BIGINT) AS errors, \
               CAST(SUM(CASE WHEN status = 'ok' THEN price ELSE 0 END) AS BIGINT) AS revenue \
             FROM usage_events {by_model} \
             WHERE model_id = $1 AND created_at >= $2 AND created_at < $3 GROUP BY app"
        );
        let rows: Vec<(String, i64, i64, i64)> = on_pool!(&self.pool, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(model_id).bind(from_ms).bind(to_ms).fetch_all(pool).await?
        });
        Ok(rows
            .into_iter()
            .map(|(app, calls, errors, revenue)| (app, (calls as u64, errors as u64, revenue as u64)))
            .collect())
    }

    /// Records usage events with no ledger command, in one transaction: for
    /// benchmarks and imports (calls record theirs through `apply_batch`).
    pub async fn record_usage(&self, events: &[UsageEvent]) -> Result<(), StoreError> {
        let mut write = self.begin_write().await?;
        let events: Vec<(UsageEvent, Option<u64>)> = events.iter().map(|e| (e.clone(), None)).collect();
        let mut writes = Writes::default();
        record(&mut write.tx, &events, self.rollups, &mut write.memory.rollups, &mut writes).await?;
        write.commit_with(writes).await?;
        Ok(())
    }

    /// A caller's spending per model (`owner/name`) or app and bucket, from
    /// the events: (calls, errors, spent).
    pub async fn spending(
        &self,
        caller: &[u8; 32],
        by_app: bool,
        from_ms: i64,
        to_ms: i64,
        granularity: i64,
    ) -> Result<BTreeMap<String, BTreeMap<i64, (u64, u64, u64)>>, StoreError> {
        const MEASURES: &str = "(e.created_at / $1) * $1 AS bucket, COUNT(*) AS calls, \
               CAST(SUM(CASE WHEN e.status <> 'ok' THEN 1 ELSE 0 END) AS BIGINT) AS errors, \
               CAST(SUM(e.price) AS BIGINT) AS spent";
        let sql = if by_app {
            format!(
                "SELECT e.app AS grp, {MEASURES} FROM usage_events e \
                 WHERE e.caller = $2 AND e.created_at >= $3 AND e.created_at < $4 GROUP BY grp, bucket"
            )
        } else {
            format!(
                "SELECT a.name || '/' || m.name AS grp, {MEASURES} \
                 FROM usage_events e JOIN models m ON m.id = e.model_id JOIN accounts a ON a.id = e.owner_id \
                 WHERE e.caller = $2 AND e.created_at >= $3 AND e.created_at < $4 GROUP BY grp, bucket"
            )
        };
        let rows: Vec<(String, i64, i64, i64, i64)> = on_pool!(&self.pool, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(granularity)
                .bind(caller.as_slice())
                .bind(from_ms)
                .bind(to_ms)
                .fetch_all(pool)
                .await?
        });
        let mut out: BTreeMap<String, BTreeMap<i64, (u64, u64, u64)>> = BTreeMap::new();
        for (group, bucket, calls, errors, spent) in rows {
            out.entry(group).or_default().insert(bucket, (calls as u64, errors as u64, spent as u64));
        }
        Ok(out)
    }

    /// Events stored (for tests and metrics).
    pub async fn usage_event_count(&self) -> Result<u64, StoreError> {
        let count: i64 = on_pool!(&self.pool, pool => sqlx::query_scalar("SELECT COUNT(*) FROM usage_events").fetch_one(pool).await?);
        Ok(count as u64)
    }
}

/// A model as the stats routes name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLabel {
    pub owner: String,
    pub name: String,
    pub public: bool,
    pub task: String,
    pub price: u64,
    pub has_version: bool,
}

impl Store {
    /// Every model's name, visibility, task and price, by id.
    pub async fn model_labels(&self) -> Result<HashMap<i64, ModelLabel>, StoreError> {
        type Label = (i64, String, String, String, String, i64, i64);
        let rows: Vec<Label> = on_pool!(&self.pool, pool => {
            sqlx::query_as(
                "SELECT m.id, a.name, m.name, m.visibility, m.task, m.price_per_inference, \
                   CASE WHEN EXISTS (SELECT 1 FROM model_versions v WHERE v.model_id = m.id) THEN CAST(1 AS BIGINT) ELSE 0 END \
                 FROM models m JOIN accounts a ON a.id = m.owner_id",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(id, owner, name, visibility, task, price, has_version)| {
                let public = visibility == "public";
                (id, ModelLabel { owner, name, public, task, price: price as u64, has_version: has_version != 0 })
            })
            .collect())
    }

    /// The owner and name of every model a listing shows (public, listed,
    /// neither deleted nor taken down): the words a search may be mended
    /// to, and no others.
    pub async fn listed_model_names(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(on_pool!(&self.pool, pool => {
            sqlx::query_as(
                "SELECT a.name, m.name FROM models m JOIN accounts a ON a.id = m.owner_id \
                 WHERE m.deleted_at IS NULL AND m.visibility = 'public' AND m.listed = 1 AND m.takedown_at IS NULL",
            )
            .fetch_all(pool)
            .await?
        }))
    }

    /// Account names by id.
    pub async fn account_names(&self) -> Result<HashMap<i64, String>, StoreError> {
        Ok(on_pool!(&self.pool, pool => sqlx::query_as("SELECT id, name FROM accounts").fetch_all(pool).await?)
            .into_iter()
            .collect())
    }
}
