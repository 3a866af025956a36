//! PostgreSQL server administration for tools that need a database of their
//! own (the multi-node bench): create one beside the URL's, drop it after.

use sqlx::{Connection, PgConnection};

use crate::StoreError;

/// Creates the database `name` on the server of `server_url` (connected as
/// that URL says) and returns the URL of the new database. `name` must be
/// lowercase letters, digits and underscores.
pub async fn create_database(server_url: &str, name: &str) -> Result<String, StoreError> {
    check_name(name)?;
    let mut admin = PgConnection::connect(server_url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await?;
    admin.close().await?;
    let base = server_url.split('?').next().unwrap_or(server_url);
    let base = base.rsplit_once('/').map_or(base, |(base, _)| base);
    Ok(format!("{base}/{name}"))
}

/// Drops the database `name` on the server of `server_url`, closing its
/// connections first.
pub async fn drop_database(server_url: &str, name: &str) -> Result<(), StoreError> {
    check_name(name)?;
    let mut admin = PgConnection::connect(server_url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    Ok(())
}

fn check_name(name: &str) -> Result<(), StoreError> {
    let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain { Ok(()) } else { Err(StoreError::DatabaseName(name.to_owned())) }
}

impl crate::Store {
    /// Transactions committed in this store's PostgreSQL database so far
    /// (the server's statistics, which lag by up to a second); `None` on
    /// SQLite.
    pub async fn transactions_committed(&self) -> Result<Option<i64>, StoreError> {
        let crate::backend::Pool::Postgres(pool) = &self.pool else { return Ok(None) };
        let committed: i64 = sqlx::query_scalar(
            "SELECT CAST(xact_commit AS BIGINT) FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(pool)
        .await?;
        Ok(Some(committed))
    }
}
