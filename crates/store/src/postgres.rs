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

/// The PostgreSQL server tests use: `VITRINE_TEST_POSTGRES`, or the one this
/// project's machines start.
pub const TEST_SERVER_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database of its own for one test, on the test server; dropped by
/// [`TestDatabase::drop`].
#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    server: String,
    name: String,
}

impl TestDatabase {
    /// Creates a fresh database named after `test` on the test server.
    /// `None` when that server is not reachable, so a test runs on SQLite
    /// alone (or is skipped); under `CI` an unreachable server panics, since
    /// CI runs every test on PostgreSQL.
    pub async fn create(test: &str) -> Option<TestDatabase> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let server = std::env::var("VITRINE_TEST_POSTGRES").unwrap_or_else(|_| TEST_SERVER_DEFAULT.to_owned());
        if let Err(error) = PgConnection::connect(&server).await {
            if std::env::var_os("CI").is_some() {
                panic!("CI runs the tests on PostgreSQL too, and {server} is not reachable: {error}");
            }
            eprintln!("PostgreSQL at {server} is not reachable ({error}): {test} runs without it");
            return None;
        }
        let name = format!("vitrine_{test}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        drop_database(&server, &name).await.expect("drop a stale test database");
        let url = create_database(&server, &name).await.expect("create a test database");
        Some(TestDatabase { url, server, name })
    }

    pub async fn drop(self) {
        drop_database(&self.server, &self.name).await.expect("drop the test database");
    }
}
