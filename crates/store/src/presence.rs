//! Which serving nodes are alive on a market several nodes share, and the
//! recall of grants between them (PostgreSQL; one node owns a SQLite market).
//!
//! A node is alive while it holds its presence lock: a session advisory
//! lock keyed by its name, on a connection of its own. When the node dies,
//! its connection closes and the lock goes with it, at once: no lease to
//! wait out. Any node then sees the dead node's grants (holds it placed on
//! callers' balances) as nobody's and voids them, so a caller's money is
//! never stranded with a node that cannot spend it.
//!
//! A node that cannot take a grant for a caller whose money other nodes
//! hold asks them to give back what they hold idle: a `NOTIFY` on
//! [`RECALL_CHANNEL`] naming the account, which every node `LISTEN`s for.

use sqlx::{Connection, Executor};

use crate::backend::Pool;
use crate::{Store, StoreError};

/// The first key of every presence lock (the second is the node's).
const PRESENCE_CLASS: i32 = 0x7669;

/// The channel recalls of grants are announced on.
pub const RECALL_CHANNEL: &str = "vitrine_grant_recall";

/// This store's presence connection, once announced.
#[derive(Debug, Default)]
pub(crate) struct Presence {
    connection: Option<sqlx::PgConnection>,
    node: Option<String>,
}

/// A recall another node asked for: give back idle grants on `account`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recall {
    pub account: ledger::AccountId,
    /// The node that asked (which need not answer itself).
    pub node: String,
}

/// Recalls, as other nodes announce them ([`Store::listen_for_recalls`]).
pub struct Recalls(sqlx::postgres::PgListener);

impl std::fmt::Debug for Recalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recalls")
    }
}

impl Recalls {
    /// The next recall; an error once the store closes (or the database is
    /// unreachable: the listener reconnects on the next call).
    pub async fn next(&mut self) -> Result<Recall, StoreError> {
        loop {
            let notification = self.0.recv().await?;
            if let Some(recall) = parse_recall(notification.payload()) {
                return Ok(recall);
            }
        }
    }
}

impl Store {
    /// Marks `node` alive on this market (PostgreSQL) for as long as this
    /// store is open. `Conflict` if a node of that name is alive already:
    /// two nodes of one name would take each other's grants for their own.
    /// A node killed a moment ago may still hold its lock while the database
    /// notices: tried for a few seconds.
    pub async fn announce_node(&self, node: &str) -> Result<(), StoreError> {
        let Pool::Postgres(pool) = &self.pool else { return Ok(()) };
        let mut presence = self.presence.lock().await;
        let mut connection = sqlx::PgConnection::connect_with(&pool.connect_options()).await?;
        for attempt in 0.. {
            let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
                .bind(PRESENCE_CLASS)
                .bind(node_key(node))
                .fetch_one(&mut connection)
                .await?;
            if taken {
                break;
            }
            if attempt == 20 {
                return Err(StoreError::Conflict(format!("a node named {node:?} alive on this market")));
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        *presence = Presence { connection: Some(connection), node: Some(node.to_owned()) };
        Ok(())
    }

    /// Keeps this node's presence: if its connection was lost, connects and
    /// takes the lock again. True when it had to (meanwhile other nodes may
    /// have voided this node's grants; its charges then fall back to the
    /// callers' free balances, which the ledger checks as always).
    pub async fn keep_presence(&self) -> Result<bool, StoreError> {
        let node = {
            let mut presence = self.presence.lock().await;
            let Some(node) = presence.node.clone() else { return Ok(false) };
            if let Some(connection) = presence.connection.as_mut()
                && connection.ping().await.is_ok()
            {
                return Ok(false);
            }
            presence.connection = None;
            node
        };
        self.announce_node(&node).await?;
        Ok(true)
    }

    /// How many nodes are alive on this market: those holding a presence
    /// lock on PostgreSQL (at least this one), 1 on SQLite.
    pub async fn live_nodes(&self) -> Result<u64, StoreError> {
        let Pool::Postgres(pool) = &self.pool else { return Ok(1) };
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND granted \
             AND classid::bigint = $1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .bind(i64::from(PRESENCE_CLASS))
        .fetch_one(pool)
        .await?;
        Ok(count.max(1) as u64)
    }

    /// The grants of nodes that are not alive: holds placed by a node that
    /// holds no presence lock (PostgreSQL; none on SQLite, where a node's
    /// start releases every hold).
    pub async fn grants_of_departed_nodes(&self) -> Result<Vec<ledger::HoldId>, StoreError> {
        let Pool::Postgres(pool) = &self.pool else { return Ok(vec![]) };
        let alive: Vec<i64> = sqlx::query_scalar(
            "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND granted \
             AND classid::bigint = $1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .bind(i64::from(PRESENCE_CLASS))
        .fetch_all(pool)
        .await?;
        let holds: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, node FROM holds WHERE node IS NOT NULL").fetch_all(pool).await?;
        Ok(holds
            .into_iter()
            .filter(|(_, node)| !alive.contains(&i64::from(node_key(node))))
            .map(|(id, _)| id)
            .collect())
    }

    /// Asks every other node to give back the grants it holds idle on
    /// `account` (PostgreSQL; nothing to ask on SQLite).
    pub async fn recall_grants(&self, account: ledger::AccountId, node: &str) -> Result<(), StoreError> {
        let Pool::Postgres(pool) = &self.pool else { return Ok(()) };
        pool.execute(sqlx::query("SELECT pg_notify($1, $2)").bind(RECALL_CHANNEL).bind(format!("{account} {node}")))
            .await?;
        Ok(())
    }

    /// The recalls other nodes announce from now on (PostgreSQL; `None` on
    /// SQLite).
    pub async fn listen_for_recalls(&self) -> Result<Option<Recalls>, StoreError> {
        let Pool::Postgres(pool) = &self.pool else { return Ok(None) };
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen(RECALL_CHANNEL).await?;
        Ok(Some(Recalls(listener)))
    }

    /// Ends this node's presence (at its stop): others see it gone at once.
    pub(crate) async fn leave(&self) {
        if let Some(connection) = self.presence.lock().await.connection.take() {
            let _ = connection.close().await;
        }
    }
}

/// A node's presence key: its name hashed (FNV-1a) to 31 bits. Two names
/// that share a key cannot both be alive; the second is refused at start,
/// as if it had the first one's name.
fn node_key(node: &str) -> i32 {
    let hash = node.bytes().fold(0x811c_9dc5u32, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193));
    (hash & 0x7fff_ffff) as i32
}

fn parse_recall(payload: &str) -> Option<Recall> {
    let (account, node) = payload.split_once(' ')?;
    Some(Recall { account: account.parse().ok()?, node: node.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recalls_read_back_as_written_and_odd_payloads_are_ignored() {
        assert_eq!(parse_recall("42 node-a"), Some(Recall { account: 42, node: "node-a".into() }));
        assert_eq!(parse_recall("42"), None);
        assert_eq!(parse_recall("x node-a"), None);
    }

    #[test]
    fn node_keys_are_stable_and_positive() {
        // Nodes of different builds must agree on each other's keys.
        assert_eq!(node_key("a"), 0xe40c_292c_u32 as i32 & 0x7fff_ffff);
        for name in ["a", "b", "node-17", ""] {
            assert!(node_key(name) >= 0);
        }
        assert_ne!(node_key("a"), node_key("b"));
    }
}
