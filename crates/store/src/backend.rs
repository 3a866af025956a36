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

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Decode, Encode, FromRow, PgPool, Postgres, Row, Sqlite, SqlitePool, Transaction, Type};

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
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Tx {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
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
/// [`crate::log::ROWS_PER_STATEMENT`] values.
pub(crate) async fn select_in<O: Record, T: Param>(
    tx: &mut Tx,
    select: &str,
    values: &[T],
) -> Result<Vec<O>, sqlx::Error> {
    let mut rows = vec![];
    for chunk in values.chunks(crate::log::ROWS_PER_STATEMENT) {
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

#[cfg(test)]
mod tests {
    use super::contains_pattern;

    #[test]
    fn a_filter_matches_as_a_plain_substring() {
        assert_eq!(contains_pattern("abc"), "%abc%");
        assert_eq!(contains_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
