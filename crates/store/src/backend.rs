//! The two databases behind one [`Store`](crate::Store): SQLite (embedded,
//! the default) and PostgreSQL (several nodes sharing one market).
//!
//! One SQL text serves both wherever the dialects agree, which is most of
//! the time: parameters are written `$1`, `$2`, … (sqlx's SQLite driver
//! reads them as positions too), every integer column is a 64-bit integer
//! on both, flags are 0 or 1 on both, and sums are cast to `BIGINT`
//! (PostgreSQL's `SUM` of integers is `NUMERIC`). Where they differ (how a
//! writer takes the write lock, index hints), the code matches on
//! [`Pool`] and says why.
//!
//! [`on_pool!`] runs one block of query code against whichever pool the
//! store has: the block is compiled once per database, so sqlx's types
//! stay concrete. [`Columns`] reads a row of either database.

use std::borrow::Cow;

use sqlx::Arguments;
use sqlx::postgres::PgRow;
use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqliteRow};
use sqlx::{Decode, Encode, Executor, FromRow, PgPool, Postgres, Row, Sqlite, SqlitePool, Transaction, Type};

use std::sync::Arc;

use sqlx::pool::PoolConnection;

/// Rows a statement inserts at most: well under SQLite's limit of bound
/// variables per statement (32 766) for every table written in batches.
pub(crate) const ROWS_PER_STATEMENT: usize = 500;

/// A store's connections.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Pool {
    pub(crate) fn is_closed(&self) -> bool {
        on_pool!(self, pool => pool.is_closed())
    }

    pub(crate) async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

/// A transaction on either database.
#[derive(Debug)]
pub(crate) enum Tx {
    Sqlite(SqliteTx),
    Postgres(Transaction<'static, Postgres>),
}

/// A transaction on SQLite: sqlx's, or the writer's own ([`OwnTx`]).
#[derive(Debug)]
pub(crate) enum SqliteTx {
    Sqlx(Transaction<'static, Sqlite>),
    Own(OwnTx),
}

impl std::ops::Deref for SqliteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        match self {
            SqliteTx::Sqlx(tx) => tx,
            SqliteTx::Own(tx) => tx,
        }
    }
}

impl std::ops::DerefMut for SqliteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match self {
            SqliteTx::Sqlx(tx) => tx,
            SqliteTx::Own(tx) => tx,
        }
    }
}

/// Runs `$body` with `$tx` bound to the transaction of either database (use
/// it as `&mut **$tx`).
macro_rules! on_tx {
    ($store_tx:expr, $tx:ident => $body:expr) => {
        match $store_tx {
            $crate::backend::Tx::Sqlite($tx) => $body,
            $crate::backend::Tx::Postgres($tx) => $body,
        }
    };
}
pub(crate) use on_tx;

/// A value both databases take as a parameter.
pub(crate) trait Param:
    for<'q> Encode<'q, Sqlite> + Type<Sqlite> + for<'q> Encode<'q, Postgres> + Type<Postgres> + Clone + Send + 'static
{
}

impl<T> Param for T where
    T: for<'q> Encode<'q, Sqlite>
        + Type<Sqlite>
        + for<'q> Encode<'q, Postgres>
        + Type<Postgres>
        + Clone
        + Send
        + 'static
{
}

/// A row type both databases read (tuples of [`Column`]s).
pub(crate) trait Record: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin {}

impl<T> Record for T where T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin {}

/// The rows of `select` (ending in `IN `) for `values`, a statement per
/// [`ROWS_PER_STATEMENT`] values.
pub(crate) async fn select_in<O: Record, T: Param>(
    tx: &mut Tx,
    select: &str,
    values: &[T],
) -> Result<Vec<O>, sqlx::Error> {
    let mut rows = vec![];
    for chunk in values.chunks(ROWS_PER_STATEMENT) {
        on_tx!(tx, tx => {
            let mut query = sqlx::QueryBuilder::new(select);
            query.push("(");
            let mut list = query.separated(", ");
            for value in chunk {
                list.push_bind(value.clone());
            }
            query.push(")");
            rows.extend(query.build_query_as::<O>().fetch_all(&mut **tx).await?);
        });
    }
    Ok(rows)
}

/// One value of a row to write, whatever its column's type.
#[derive(Debug, Clone)]
pub(crate) enum Cell {
    Int(Option<i64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

impl From<i64> for Cell {
    fn from(value: i64) -> Cell {
        Cell::Int(Some(value))
    }
}

impl From<Option<i64>> for Cell {
    fn from(value: Option<i64>) -> Cell {
        Cell::Int(value)
    }
}

impl From<String> for Cell {
    fn from(value: String) -> Cell {
        Cell::Text(Some(value))
    }
}

impl From<&str> for Cell {
    fn from(value: &str) -> Cell {
        Cell::Text(Some(value.to_owned()))
    }
}

impl From<Option<String>> for Cell {
    fn from(value: Option<String>) -> Cell {
        Cell::Text(value)
    }
}

impl From<Vec<u8>> for Cell {
    fn from(value: Vec<u8>) -> Cell {
        Cell::Bytes(Some(value))
    }
}

/// Rows for one multi-row statement: `head`, then `VALUES (…), (…)`, then
/// `tail` (an `ON CONFLICT` clause, or the end of an `UPDATE … FROM (`).
#[derive(Debug)]
pub(crate) struct Piece {
    pub(crate) head: Cow<'static, str>,
    pub(crate) rows: Vec<Vec<Cell>>,
    pub(crate) tail: Cow<'static, str>,
}

/// A row of a table written in bulk: a struct whose fields are the
/// table's columns ([`table_row!`] writes both from one list), so a column
/// is named once and its value never matched by position by hand.
pub(crate) trait TableRow {
    const TABLE: &'static str;
    const COLUMNS: &'static [&'static str];
    fn into_cells(self) -> Vec<Cell>;
}

/// Declares a [`TableRow`]: `struct Name in "table" { column: Type, … }`,
/// each type one a [`Cell`] is made from.
macro_rules! table_row {
    ($(#[$meta:meta])* struct $name:ident in $table:literal { $($(#[$field_meta:meta])* $column:ident: $ty:ty),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug)]
        pub(crate) struct $name {
            $($(#[$field_meta])* pub(crate) $column: $ty),+
        }

        impl $crate::backend::TableRow for $name {
            const TABLE: &'static str = $table;
            const COLUMNS: &'static [&'static str] = &[$(stringify!($column)),+];
            fn into_cells(self) -> Vec<$crate::backend::Cell> {
                vec![$(self.$column.into()),+]
            }
        }
    };
}
pub(crate) use table_row;

impl Piece {
    /// `INSERT INTO table (columns) VALUES …`.
    pub(crate) fn insert<R: TableRow>(rows: impl IntoIterator<Item = R>) -> Piece {
        Piece {
            head: format!("INSERT INTO {} ({}) ", R::TABLE, R::COLUMNS.join(", ")).into(),
            rows: rows.into_iter().map(R::into_cells).collect(),
            tail: "".into(),
        }
    }

    /// An insert whose rows replace those of the same `key` columns: every
    /// other column takes the new row's value (an update in place, so the
    /// row's index entries stay).
    pub(crate) fn upsert<R: TableRow>(key: &[&str], rows: impl IntoIterator<Item = R>) -> Piece {
        let set: Vec<String> =
            R::COLUMNS.iter().filter(|c| !key.contains(c)).map(|c| format!("{c} = excluded.{c}")).collect();
        Piece {
            tail: format!(" ON CONFLICT ({}) DO UPDATE SET {}", key.join(", "), set.join(", ")).into(),
            ..Piece::insert(rows)
        }
    }

    /// Updates rows found by their first column (the key) to the values of
    /// the others: `UPDATE table SET b = v.column2, … FROM (VALUES …) AS v
    /// WHERE table.a = v.column1` (a `VALUES` list's columns have no other
    /// names on SQLite).
    pub(crate) fn update<R: TableRow>(rows: impl IntoIterator<Item = R>) -> Piece {
        let (key, columns) = R::COLUMNS.split_first().expect("a row has a key column");
        let set: Vec<String> = columns.iter().enumerate().map(|(n, c)| format!("{c} = v.column{}", n + 2)).collect();
        Piece {
            head: format!("UPDATE {} SET {} FROM (", R::TABLE, set.join(", ")).into(),
            rows: rows.into_iter().map(R::into_cells).collect(),
            tail: format!(") AS v WHERE {}.{key} = v.column1", R::TABLE).into(),
        }
    }
}

/// Bound values one PostgreSQL statement carries at most here (its protocol
/// allows 65,535).
const POSTGRES_BINDS_MAX: usize = 60_000;

/// The writes a batch keeps for its end, written in one round trip on
/// either database. On SQLite each piece is a statement per
/// [`ROWS_PER_STATEMENT`] rows, all of them sent as one query
/// (sqlx runs its statements one after the other, binding each its share of
/// the values): a round trip to the connection's thread wakes two threads,
/// and on a virtual machine that costs more than a small batch's rows. On
/// PostgreSQL all of them are one statement of data-modifying `WITH`
/// clauses (each statement would wait on the server), unless that would
/// bind too many values.
#[derive(Debug, Default)]
pub(crate) struct Writes(Vec<Piece>);

/// Rows of one SQLite query that the connection keeps prepared for the next
/// batch of the same shape: small batches repeat their shapes, large ones
/// rarely do, and a prepared statement of many rows holds memory.
const SQLITE_CACHED_ROWS_MAX: usize = 256;

impl Writes {
    pub(crate) fn push(&mut self, piece: Piece) {
        if !piece.rows.is_empty() {
            self.0.push(piece);
        }
    }

    /// Writes these rows in `tx`, and commits it: on the writer's own SQLite
    /// connection in one round trip, its `COMMIT` the query's last statement.
    pub(crate) async fn commit(self, tx: Tx) -> Result<(), sqlx::Error> {
        match tx {
            Tx::Sqlite(SqliteTx::Own(own)) => own.commit(self.sqlite_statements()?).await,
            Tx::Sqlite(SqliteTx::Sqlx(mut tx)) => {
                if let Some(statements) = self.sqlite_statements()? {
                    statements.execute(&mut tx).await?;
                }
                tx.commit().await
            }
            Tx::Postgres(mut tx) => {
                self.flush_postgres(&mut tx).await?;
                tx.commit().await
            }
        }
    }

    pub(crate) async fn flush(self, tx: &mut Tx) -> Result<(), sqlx::Error> {
        match tx {
            Tx::Sqlite(tx) => match self.sqlite_statements()? {
                Some(statements) => statements.execute(tx).await,
                None => Ok(()),
            },
            Tx::Postgres(tx) => self.flush_postgres(tx).await,
        }
    }

    /// The rows as one SQLite query, `None` without rows.
    fn sqlite_statements(self) -> Result<Option<SqliteStatements>, sqlx::Error> {
        let rows: usize = self.0.iter().map(|piece| piece.rows.len()).sum();
        if rows == 0 {
            return Ok(None);
        }
        let mut statements = SqliteStatements { cached: rows <= SQLITE_CACHED_ROWS_MAX, ..Default::default() };
        for Piece { head, rows, tail } in self.0 {
            for chunk in statement_chunks(rows) {
                statements.push(&head, chunk, &tail)?;
            }
        }
        Ok(Some(statements))
    }

    async fn flush_postgres(self, tx: &mut Transaction<'static, Postgres>) -> Result<(), sqlx::Error> {
        let binds: usize = self.0.iter().map(|piece| piece.rows.iter().map(Vec::len).sum::<usize>()).sum();
        if binds <= POSTGRES_BINDS_MAX && self.0.len() > 1 {
            let mut query = sqlx::QueryBuilder::new("WITH ");
            for (n, piece) in self.0.into_iter().enumerate() {
                query.push(if n == 0 { "" } else { ", " }).push(format!("w{n} AS ("));
                push_piece(&mut query, piece);
                query.push(")");
            }
            query.push(" SELECT 1");
            query.build().execute(&mut **tx).await?;
            return Ok(());
        }
        for Piece { head, rows, tail } in self.0 {
            for chunk in statement_chunks(rows) {
                let mut query = sqlx::QueryBuilder::new("");
                push_piece(&mut query, Piece { head: head.clone(), rows: chunk, tail: tail.clone() });
                query.build().execute(&mut **tx).await?;
            }
        }
        Ok(())
    }
}

/// A piece's rows, a statement's worth ([`ROWS_PER_STATEMENT`])
/// at a time, moved rather than copied (most pieces are one statement).
fn statement_chunks(mut rows: Vec<Vec<Cell>>) -> impl Iterator<Item = Vec<Vec<Cell>>> {
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let rest = rows.split_off(rows.len().min(ROWS_PER_STATEMENT));
        Some(std::mem::replace(&mut rows, rest))
    })
}

/// SQLite statements of pieces' rows, as one query: their text written
/// here (`?` for each value, which SQLite numbers in order within each
/// statement, and sqlx binds statement after statement), their values bound
/// in that order. The query builder wrote each value's separator through
/// the formatting machinery, about a twentieth of the writer's work.
///
/// The connection keeps a query prepared for the next one of the same
/// text, and the text depends on every piece's count of rows: batches of
/// like size still differed in some count (accounts, rollup rows, tree
/// nodes), and preparing them took about a tenth of the server's
/// instructions per paid call (`bench/callgrind/paid-calls`). So a cached
/// query's pieces are padded to a power of two of rows with rows of NULLs
/// (bound, like every value), which `WHERE column1 IS NOT NULL` drops:
/// batches of like size share a text. A piece whose own first column is
/// ever NULL is not padded.
#[derive(Default)]
pub(crate) struct SqliteStatements {
    pub(crate) sql: String,
    pub(crate) arguments: SqliteArguments,
    /// Kept prepared by the connection, and so padded.
    pub(crate) cached: bool,
}

impl SqliteStatements {
    fn push(&mut self, head: &str, rows: Vec<Vec<Cell>>, tail: &str) -> Result<(), sqlx::Error> {
        let values: usize = rows.iter().map(Vec::len).sum();
        let columns = rows.first().map_or(0, Vec::len);
        let padded = self.cached && columns > 0 && rows.iter().all(|row| !row[0].is_null());
        let padding = if padded { rows.len().next_power_of_two() - rows.len() } else { 0 };
        let sql = &mut self.sql;
        sql.reserve(head.len() + tail.len() + 60 + 3 * values + 4 * rows.len() + padding * (2 + 6 * columns));
        if !sql.is_empty() {
            sql.push_str("; ");
        }
        sql.push_str(head);
        sql.push_str(if padded { "SELECT * FROM (VALUES " } else { "VALUES " });
        for (n, row) in rows.into_iter().enumerate() {
            sql.push_str(if n == 0 { "(" } else { ", (" });
            for (m, cell) in row.into_iter().enumerate() {
                sql.push_str(if m == 0 { "?" } else { ", ?" });
                match cell {
                    Cell::Int(value) => self.arguments.add(value),
                    Cell::Text(value) => self.arguments.add(value),
                    Cell::Bytes(value) => self.arguments.add(value),
                }
                .map_err(sqlx::Error::Encode)?;
            }
            sql.push(')');
        }
        if padded {
            // Placeholders bound to NULL, not NULL in the text: a batch of
            // five rows and one of eight are then the same text.
            for _ in 0..padding {
                sql.push_str(", (?");
                sql.push_str(&", ?".repeat(columns - 1));
                sql.push(')');
                for _ in 0..columns {
                    self.arguments.add(None::<i64>).map_err(sqlx::Error::Encode)?;
                }
            }
            sql.push_str(") WHERE column1 IS NOT NULL");
        }
        sql.push_str(tail);
        Ok(())
    }

    pub(crate) async fn execute(self, connection: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        let SqliteStatements { sql, arguments, cached } = self;
        sqlx::query_with(sqlx::AssertSqlSafe(sql), arguments).persistent(cached).execute(connection).await?;
        Ok(())
    }
}

impl Cell {
    fn is_null(&self) -> bool {
        matches!(self, Cell::Int(None) | Cell::Text(None) | Cell::Bytes(None))
    }
}

fn push_piece<DB>(query: &mut sqlx::QueryBuilder<DB>, piece: Piece)
where
    DB: sqlx::Database,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<Vec<u8>>: Encode<'t, DB> + Type<DB>,
{
    query.push(&piece.head);
    query.push_values(piece.rows, |mut values, cells| {
        for cell in cells {
            match cell {
                Cell::Int(value) => values.push_bind(value),
                Cell::Text(value) => values.push_bind(value),
                Cell::Bytes(value) => values.push_bind(value),
            };
        }
    });
    query.push(&piece.tail);
}

/// Runs `$body` with `$pool` bound to the store's SQLite or PostgreSQL pool.
macro_rules! on_pool {
    ($store_pool:expr, $pool:ident => $body:expr) => {
        match $store_pool {
            $crate::backend::Pool::Sqlite($pool) => $body,
            $crate::backend::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// A value both databases decode: the column types the store uses
/// (integers, text, bytes, and their `Option`s).
pub(crate) trait Column:
    for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

impl<T> Column for T where T: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres> {}

/// A row of either database, read by column name or position.
pub(crate) trait Columns {
    fn get<T: Column>(&self, column: &str) -> Result<T, sqlx::Error>;
    fn at<T: Column>(&self, index: usize) -> Result<T, sqlx::Error>;
}

impl Columns for SqliteRow {
    fn get<T: Column>(&self, column: &str) -> Result<T, sqlx::Error> {
        self.try_get(column)
    }

    fn at<T: Column>(&self, index: usize) -> Result<T, sqlx::Error> {
        self.try_get(index)
    }
}

impl Columns for PgRow {
    fn get<T: Column>(&self, column: &str) -> Result<T, sqlx::Error> {
        self.try_get(column)
    }

    fn at<T: Column>(&self, index: usize) -> Result<T, sqlx::Error> {
        self.try_get(index)
    }
}

/// A text filter as a `LIKE` pattern that matches it as a plain substring
/// (with `ESCAPE '\'`): the same on both databases, unlike SQLite's `instr`
/// and PostgreSQL's `strpos`.
pub(crate) fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// A transaction on the writer's own SQLite connection, begun and ended by
/// this code rather than by sqlx's `Transaction`, so that its `BEGIN` goes
/// in one query with the epoch's bump and its `COMMIT` in one with the
/// batch's writes ([`Writes::commit`]): two round trips to the connection's
/// thread where sqlx's took four, each of which woke two threads. Between
/// transactions the connection waits in [`SqliteWriter`]'s `idle`, not in
/// the pool, which pings a connection on its every return.
///
/// Dropped before its commit returned, it rolls back on a task of its own
/// (and then returns the connection to the pool, where the next transaction
/// takes it once the rollback is done): the write lock is not held until the
/// writer's next batch.
#[derive(Debug)]
pub(crate) struct OwnTx {
    /// Taken only by `drop`.
    connection: Option<PoolConnection<Sqlite>>,
    committed: bool,
    idle: Arc<std::sync::Mutex<Option<PoolConnection<Sqlite>>>>,
}

impl OwnTx {
    /// The transaction begun (by its first query) on `connection`, which
    /// goes back to `idle` once it commits.
    pub(crate) fn new(
        connection: PoolConnection<Sqlite>,
        idle: Arc<std::sync::Mutex<Option<PoolConnection<Sqlite>>>>,
    ) -> OwnTx {
        OwnTx { connection: Some(connection), committed: false, idle }
    }

    /// Runs `statements` (if any) and commits, in one round trip.
    pub(crate) async fn commit(mut self, statements: Option<SqliteStatements>) -> Result<(), sqlx::Error> {
        match statements {
            Some(mut statements) => {
                statements.sql.push_str("; COMMIT");
                statements.execute(&mut self).await?;
            }
            None => {
                sqlx::query("COMMIT").execute(&mut *self).await?;
            }
        }
        self.committed = true;
        Ok(())
    }
}

impl std::ops::Deref for OwnTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.connection.as_ref().expect("an OwnTx holds its connection until dropped")
    }
}

impl std::ops::DerefMut for OwnTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.connection.as_mut().expect("an OwnTx holds its connection until dropped")
    }
}

impl Drop for OwnTx {
    fn drop(&mut self) {
        let Some(mut connection) = self.connection.take() else { return };
        if self.committed {
            *self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(connection);
            return;
        }
        // An error here is that nothing was begun (or SQLite already rolled
        // back); a broken connection fails the pool's test on its return.
        let rollback = async move {
            if let Err(error) = connection.execute("ROLLBACK").await {
                tracing::debug!(%error, "rolling back the writer's dropped transaction");
            }
        };
        // On the runtime it was dropped on (like every sqlx connection, it
        // lives in async code), as sqlx's `Transaction` starts its rollback.
        tokio::spawn(rollback);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, name: Option<&str>, bytes: Option<Vec<u8>>) -> Vec<Cell> {
        vec![id.into(), name.map(str::to_owned).into(), Cell::Bytes(bytes)]
    }

    /// Padded pieces write exactly their rows (inserts, an upsert, an
    /// update from a derived table), and a piece whose first column is
    /// NULL somewhere is written unpadded, NULL included; batches whose
    /// pieces round to the same powers of two share one query text.
    #[tokio::test]
    async fn padded_pieces_write_exactly_their_rows_and_share_texts() {
        let pool = SqlitePool::connect("sqlite::memory:").await.expect("an in-memory database");
        sqlx::raw_sql(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, bytes BLOB);
             CREATE TABLE n (a INTEGER, b TEXT);",
        )
        .execute(&pool)
        .await
        .expect("tables");
        let mut expected = std::collections::BTreeMap::new();
        for count in 1..=9i64 {
            let rows: Vec<Vec<Cell>> =
                (0..count).map(|i| row(count * 100 + i, Some("new"), (i % 2 == 0).then(|| vec![i as u8; 3]))).collect();
            for r in 0..count {
                expected.insert(count * 100 + r, ("new".to_owned(), (r % 2 == 0).then(|| vec![r as u8; 3])));
            }
            let mut writes = Writes::default();
            writes.push(Piece { head: "INSERT INTO t (id, name, bytes) ".into(), rows, tail: "".into() });
            // An upsert of the first row, and an update of the last.
            writes.push(Piece {
                head: "INSERT INTO t (id, name, bytes) ".into(),
                rows: vec![row(count * 100, Some("upserted"), None)],
                tail: " ON CONFLICT (id) DO UPDATE SET name = excluded.name, bytes = excluded.bytes".into(),
            });
            expected.insert(count * 100, ("upserted".to_owned(), None));
            writes.push(Piece {
                head: "UPDATE t SET name = v.column2 FROM (".into(),
                rows: vec![vec![(count * 100 + count - 1).into(), "updated".into()]],
                tail: ") AS v WHERE t.id = v.column1".into(),
            });
            let last = count * 100 + count - 1;
            expected.insert(last, ("updated".to_owned(), expected[&last].1.clone()));
            // A first column that is NULL in one row.
            writes.push(Piece {
                head: "INSERT INTO n (a, b) ".into(),
                rows: vec![vec![Cell::Int(None), "null".into()], vec![count.into(), "some".into()]],
                tail: "".into(),
            });
            let tx = Tx::Sqlite(SqliteTx::Sqlx(pool.begin().await.expect("a transaction")));
            writes.commit(tx).await.expect("the writes, committed");
        }
        let stored: Vec<(i64, String, Option<Vec<u8>>)> =
            sqlx::query_as("SELECT id, name, bytes FROM t ORDER BY id").fetch_all(&pool).await.expect("rows");
        let stored: std::collections::BTreeMap<_, _> = stored.into_iter().map(|(id, n, b)| (id, (n, b))).collect();
        assert_eq!(stored, expected);
        let nulls: i64 =
            sqlx::query_scalar("SELECT count(*) FROM n WHERE a IS NULL").fetch_one(&pool).await.expect("count");
        assert_eq!(nulls, 9, "a piece with a NULL first column keeps that row");

        let text = |count: usize| {
            let mut statements = SqliteStatements { cached: true, ..Default::default() };
            let rows = (0..count as i64).map(|i| row(i, Some("x"), None)).collect();
            statements.push("INSERT INTO t (id, name, bytes) ", rows, "").expect("the text");
            statements.sql
        };
        assert_eq!(text(5), text(8));
        assert_ne!(text(4), text(5));
        assert_eq!(
            text(1),
            "INSERT INTO t (id, name, bytes) SELECT * FROM (VALUES (?, ?, ?)) WHERE column1 IS NOT NULL"
        );
    }

    #[test]
    fn a_filter_matches_as_a_plain_substring() {
        assert_eq!(contains_pattern("abc"), "%abc%");
        assert_eq!(contains_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
