//! The transparency log's persistence: leaves, complete-subtree hashes and
//! signed checkpoints. Appending happens inside a ledger batch
//! (`money::apply_batch`), in the same transaction as the charge; this
//! module reads, and computes roots and proofs from the stored hashes with
//! the `tlog` crate.

use std::collections::HashMap;

use sqlx::QueryBuilder;
use tlog::Hash;
use tlog::merkle::{Frontier, NodeRecorder};

use crate::backend::{Columns, Piece, Tx, Writes, on_pool, on_tx, table_row};
use crate::{Store, StoreError, now_ms};

/// The lowest level of the log's nodes kept in memory once read. A node at
/// level 8 covers 256 leaves: a million leaves keep about 8 thousand hashes
/// (256 KiB) there, and a proof reads at most 8 nodes from the database.
pub(crate) const UPPER_LEVEL: u32 = 8;

/// The log's nodes from [`UPPER_LEVEL`] up, per level from the first: what
/// has been read of them (a prefix, as nodes are only ever appended).
pub(crate) type UpperNodes = std::sync::Arc<std::sync::RwLock<Vec<Vec<Hash>>>>;

/// A stored leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub index: u64,
    pub leaf: Vec<u8>,
    pub signature: Vec<u8>,
}

/// A checkpoint the server signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub root: Hash,
    pub note: String,
}

impl Store {
    /// Leaves in the log.
    pub async fn tree_size(&self) -> Result<u64, StoreError> {
        let size: i64 = on_pool!(&self.pool, pool => {
            sqlx::query_scalar("SELECT COALESCE(MAX(idx) + 1, 0) FROM log_leaves").fetch_one(pool).await?
        });
        Ok(size as u64)
    }

    /// Leaves `[start, end)`.
    pub async fn log_entries(&self, start: u64, end: u64) -> Result<Vec<LogEntry>, StoreError> {
        on_pool!(&self.pool, pool => {
            let rows =
                sqlx::query("SELECT idx, leaf, signature FROM log_leaves WHERE idx >= $1 AND idx < $2 ORDER BY idx")
                    .bind(start as i64)
                    .bind(end as i64)
                    .fetch_all(pool)
                    .await?;
            rows.iter()
                .map(|row| {
                    Ok(LogEntry {
                        index: row.get::<i64>("idx")? as u64,
                        leaf: row.get("leaf")?,
                        signature: row.get("signature")?,
                    })
                })
                .collect()
        })
    }

    /// The root of the first `size` leaves, from stored hashes.
    pub async fn log_root(&self, size: u64) -> Result<Hash, StoreError> {
        let nodes = self.fetch_for(|source| tlog::root(source, size).map(|_| ())).await?;
        tlog::root(&nodes, size).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    pub async fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, StoreError> {
        let nodes = self.fetch_for(|source| tlog::inclusion_proof(source, index, size).map(|_| ())).await?;
        tlog::inclusion_proof(&nodes, index, size).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    pub async fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, StoreError> {
        let nodes = self.fetch_for(|source| tlog::consistency_proof(source, from, to).map(|_| ())).await?;
        tlog::consistency_proof(&nodes, from, to).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// Runs `plan` against a recorder to learn which nodes it reads (they do
    /// not depend on the hashes), then gets exactly those: nodes from
    /// [`UPPER_LEVEL`] up from memory (read once, nodes never change), the
    /// few below in one statement.
    async fn fetch_for(
        &self,
        plan: impl Fn(&NodeRecorder) -> Result<(), std::convert::Infallible>,
    ) -> Result<HashMap<(u32, u64), Hash>, StoreError> {
        let recorder = NodeRecorder::default();
        let _ = plan(&recorder);
        let mut wanted = recorder.wanted.into_inner();
        wanted.sort_unstable();
        wanted.dedup();
        let (upper, lower): (Vec<_>, Vec<_>) = wanted.into_iter().partition(|(level, _)| *level >= UPPER_LEVEL);
        let mut nodes = HashMap::with_capacity(upper.len() + lower.len());
        self.upper_nodes(&upper, &mut nodes).await?;
        for chunk in lower.chunks(crate::backend::ROWS_PER_STATEMENT) {
            on_pool!(&self.pool, pool => {
                let mut select = QueryBuilder::new("SELECT level, idx, hash FROM log_nodes WHERE ");
                for (n, (level, index)) in chunk.iter().enumerate() {
                    select.push(if n == 0 { "(level = " } else { " OR (level = " });
                    select.push_bind(*level as i64).push(" AND idx = ").push_bind(*index as i64).push(")");
                }
                for row in select.build().fetch_all(pool).await? {
                    let key = (row.get::<i64>("level")? as u32, row.get::<i64>("idx")? as u64);
                    nodes.insert(key, to_hash(&row.get::<Vec<u8>>("hash")?)?);
                }
            });
        }
        if let Some((level, index)) = lower.iter().find(|key| !nodes.contains_key(key)) {
            return Err(StoreError::Corrupt(format!("log node ({level}, {index}) is missing")));
        }
        Ok(nodes)
    }

    /// Nodes at [`UPPER_LEVEL`] and above, from memory; a level is read on
    /// from where memory ends when a node past it is wanted.
    async fn upper_nodes(
        &self,
        wanted: &[(u32, u64)],
        nodes: &mut HashMap<(u32, u64), Hash>,
    ) -> Result<(), StoreError> {
        for &(level, index) in wanted {
            let slot = (level - UPPER_LEVEL) as usize;
            let known = {
                let upper = self.upper.read().expect("the log's upper levels are never poisoned");
                upper.get(slot).and_then(|hashes| hashes.get(index as usize).copied())
            };
            let hash = match known {
                Some(hash) => hash,
                None => {
                    let from = self.upper.read().expect("never poisoned").get(slot).map_or(0, Vec::len);
                    let rows: Vec<(i64, Vec<u8>)> = on_pool!(&self.pool, pool => {
                        sqlx::query_as("SELECT idx, hash FROM log_nodes WHERE level = $1 AND idx >= $2 ORDER BY idx")
                            .bind(level as i64)
                            .bind(from as i64)
                            .fetch_all(pool)
                            .await?
                    });
                    let mut upper = self.upper.write().expect("never poisoned");
                    if upper.len() <= slot {
                        upper.resize_with(slot + 1, Vec::new);
                    }
                    let hashes = &mut upper[slot];
                    for (index, hash) in rows {
                        // Only the next node extends the prefix (another
                        // reader may have extended it meanwhile).
                        if index as usize == hashes.len() {
                            hashes.push(to_hash(&hash)?);
                        }
                    }
                    hashes
                        .get(index as usize)
                        .copied()
                        .ok_or_else(|| StoreError::Corrupt(format!("log node ({level}, {index}) is missing")))?
                }
            };
            nodes.insert((level, index), hash);
        }
        Ok(())
    }

    /// Appends leaves without any ledger command, in one transaction: for
    /// benchmarks and tools (paid calls append through `apply_batch`).
    /// Returns the index of the first.
    pub async fn append_leaves(&self, leaves: &[(Vec<u8>, Vec<u8>)]) -> Result<u64, StoreError> {
        let mut write = self.begin_write().await?;
        let mut frontier = match write.memory.frontier.take() {
            Some(frontier) => frontier,
            None => load_frontier(&mut write.tx).await?,
        };
        let first = frontier.size();
        let now = now_ms();
        let mut rows = LogRows::default();
        for (leaf, signature) in leaves {
            rows.append(&mut frontier, leaf, signature, now);
        }
        let mut writes = Writes::default();
        rows.pieces(&mut writes);
        write.memory.frontier = Some(frontier);
        write.commit_with(writes).await?;
        Ok(first)
    }

    /// The hashes of the complete subtrees at `level` with indices
    /// `[start, start + count)`, in order: a tile's contents. `Corrupt` if
    /// one is missing (ask only for what the tree has completed).
    pub async fn level_hashes(&self, level: u32, start: u64, count: u64) -> Result<Vec<Hash>, StoreError> {
        let end = start.checked_add(count).ok_or_else(|| StoreError::Corrupt("a tile past 2^64".into()))?;
        let rows: Vec<(i64, Vec<u8>)> = on_pool!(&self.pool, pool => {
            sqlx::query_as("SELECT idx, hash FROM log_nodes WHERE level = $1 AND idx >= $2 AND idx < $3 ORDER BY idx")
                .bind(level as i64)
                .bind(start as i64)
                .bind(end as i64)
                .fetch_all(pool)
                .await?
        });
        if rows.len() as u64 != count
            || rows.iter().zip(start..).any(|((index, _), expected)| *index as u64 != expected)
        {
            return Err(StoreError::Corrupt(format!("log nodes of level {level} from {start} are missing")));
        }
        rows.iter().map(|(_, hash)| to_hash(hash)).collect()
    }

    pub async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        Ok(self.checkpoints(None, 1).await?.into_iter().next().map(|(checkpoint, _)| checkpoint))
    }

    /// Checkpoints smaller than `before` (all, if `None`), largest first, at
    /// most `limit`, each with when it was signed (ms).
    pub async fn checkpoints(
        &self,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<(StoredCheckpoint, i64)>, StoreError> {
        let before = before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64);
        let rows: Vec<(i64, Vec<u8>, String, i64)> = on_pool!(&self.pool, pool => {
            sqlx::query_as(
                "SELECT size, root, note, created_at FROM log_checkpoints WHERE size < $1 ORDER BY size DESC LIMIT $2",
            )
            .bind(before)
            .bind(limit as i64)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(size, root, note, created_at)| {
                Ok((StoredCheckpoint { size: size as u64, root: to_hash(&root)?, note }, created_at))
            })
            .collect()
    }

    pub async fn insert_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), StoreError> {
        // Nodes sharing the log may sign the same size at once: the same
        // stored tree gives the same root and (Ed25519 is deterministic) the
        // same note, so the second insert has nothing to add.
        on_pool!(&self.pool, pool => {
            sqlx::query(
                "INSERT INTO log_checkpoints (size, root, note, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (size) DO NOTHING",
            )
            .bind(checkpoint.size as i64)
            .bind(checkpoint.root.as_slice())
            .bind(&checkpoint.note)
            .bind(now_ms())
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}

impl Store {
    /// Registers a node's receipt key. A name keeps its first key: a
    /// different key under a known name is refused (`Conflict`), since the
    /// leaves it signed would no longer verify.
    pub async fn register_node(&self, name: &str, public_key: &[u8; 32]) -> Result<(), StoreError> {
        let stored: Vec<u8> = on_pool!(&self.pool, pool => {
            sqlx::query(
                "INSERT INTO nodes (name, public_key, registered_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(public_key.as_slice())
            .bind(now_ms())
            .execute(pool)
            .await?;
            sqlx::query_scalar("SELECT public_key FROM nodes WHERE name = $1").bind(name).fetch_one(pool).await?
        });
        if stored != public_key {
            return Err(StoreError::Conflict(format!("node '{name}' with another key")));
        }
        Ok(())
    }

    /// Every node's receipt key, by name.
    pub async fn node_keys(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(on_pool!(&self.pool, pool => {
            sqlx::query_as("SELECT name, public_key FROM nodes ORDER BY name").fetch_all(pool).await?
        }))
    }
}

/// The log's right edge, read inside a batch's transaction.
pub(crate) async fn load_frontier(tx: &mut Tx) -> Result<Frontier, StoreError> {
    let size: i64 = on_tx!(&mut *tx, tx => {
        sqlx::query_scalar("SELECT COALESCE(MAX(idx) + 1, 0) FROM log_leaves").fetch_one(&mut **tx).await?
    });
    // The edge's nodes (one per set bit of the size) in one statement: a
    // writer that starts cold (after another node's batch) reads them all.
    let positions = Frontier::positions(size as u64);
    let mut found: HashMap<(i64, i64), Vec<u8>> = HashMap::with_capacity(positions.len());
    if !positions.is_empty() {
        let rows: Vec<(i64, i64, Vec<u8>)> = on_tx!(&mut *tx, tx => {
            let mut select = QueryBuilder::new("SELECT level, idx, hash FROM log_nodes WHERE ");
            for (n, (level, index)) in positions.iter().enumerate() {
                select.push(if n == 0 { "(level = " } else { " OR (level = " });
                select.push_bind(*level as i64).push(" AND idx = ").push_bind(*index as i64).push(")");
            }
            select.build_query_as().fetch_all(&mut **tx).await?
        });
        found.extend(rows.into_iter().map(|(level, index, hash)| ((level, index), hash)));
    }
    let mut hashes = Vec::with_capacity(positions.len());
    for (level, index) in positions {
        let hash = found
            .get(&(level as i64, index as i64))
            .ok_or_else(|| StoreError::Corrupt(format!("log node ({level}, {index}) is missing")))?;
        hashes.push(to_hash(hash)?);
    }
    Frontier::new(size as u64, hashes).ok_or_else(|| StoreError::Corrupt("the log's frontier is incomplete".into()))
}

/// The leaves a batch appends and the subtree hashes they complete, kept
/// until the batch's end and then written a statement per table: most of a
/// batch's cost was one statement per row.
#[derive(Debug, Default)]
pub(crate) struct LogRows {
    leaves: Vec<LeafRow>,
    nodes: Vec<NodeRow>,
}

table_row! {
    struct LeafRow in "log_leaves" { idx: i64, leaf: Vec<u8>, signature: Vec<u8>, created_at: i64 }
}

table_row! {
    /// A complete subtree's hash, written once.
    struct NodeRow in "log_nodes" { level: i64, idx: i64, hash: Vec<u8> }
}

impl LogRows {
    /// Appends a leaf to `frontier` and keeps its rows; returns its index.
    pub(crate) fn append(&mut self, frontier: &mut Frontier, leaf: &[u8], signature: &[u8], now: i64) -> u64 {
        let index = frontier.size();
        self.leaves.push(LeafRow {
            idx: index as i64,
            leaf: leaf.to_vec(),
            signature: signature.to_vec(),
            created_at: now,
        });
        for (level, node_index, hash) in frontier.append(tlog::leaf_hash(leaf)) {
            self.nodes.push(NodeRow { level: level as i64, idx: node_index as i64, hash: hash.to_vec() });
        }
        index
    }

    /// Adds the rows to the batch's writes.
    pub(crate) fn pieces(self, writes: &mut Writes) {
        writes.push(Piece::insert(self.leaves));
        writes.push(Piece::insert(self.nodes));
    }
}

fn to_hash(bytes: &[u8]) -> Result<Hash, StoreError> {
    bytes.try_into().map_err(|_| StoreError::Corrupt("a stored hash is not 32 bytes".into()))
}
