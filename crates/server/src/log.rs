//! The transparency log on the server side: its keys (kept in the data
//! directory), checkpoint signing that never contradicts an earlier
//! checkpoint, receipts, and the leaf of a paid call.

use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use domain::{AccountName, Visibility};
use serde_json::{Value, json};
use store::{Store, StoredCheckpoint};
use tlog::{Checkpoint, NoteKey, ReceiptLeaf};

use crate::error::ApiError;
use crate::wire::timestamp;

/// The log's signing key, the node's receipt key and the pseudonym key.
#[derive(Debug, Clone)]
pub struct LogKeys {
    /// Signs checkpoints; named after `log_origin`.
    pub log: NoteKey,
    /// This node's receipt key; named after the node's account.
    pub node: NoteKey,
    /// The same key, signing each paid call's receipt
    /// ([`LogKeys::sign_receipt`]).
    receipts: ReceiptKey,
    /// Keys the callers' pseudonyms (HMAC); never leaves the server.
    pub pseudonym: [u8; 32],
}

pub const LOG_KEY_FILE: &str = "log.key";
pub const PSEUDONYM_KEY_FILE: &str = "pseudonym.key";

impl LogKeys {
    /// Reads the seeds, creating each at first start: this node's receipt
    /// key from `<node account>.key` in the data directory (random, hex,
    /// mode 0600; several nodes may share a directory); the market's log and
    /// pseudonym keys from `log.key` and `pseudonym.key` there on SQLite, or
    /// from the database on PostgreSQL, where nodes with directories of
    /// their own must all sign and key alike.
    pub async fn load_or_create(
        store: &Store,
        data_dir: &Path,
        origin: &str,
        node: &AccountName,
    ) -> Result<LogKeys, String> {
        let market_seed = async |name: &str| -> Result<[u8; 32], String> {
            if store.is_postgres() {
                let fresh = random_seed()?;
                store.market_seed(name, fresh).await.map_err(|e| format!("cannot read the market's {name}: {e}"))
            } else {
                seed(data_dir, name)
            }
        };
        let log = NoteKey::from_seed(origin, &market_seed(LOG_KEY_FILE).await?).map_err(|e| e.to_string())?;
        let node_seed = seed(data_dir, &format!("{node}.key"))?;
        let (node, receipts) = ReceiptKey::from_seed(node.as_str(), &node_seed)?;
        Ok(LogKeys { log, node, receipts, pseudonym: market_seed(PSEUDONYM_KEY_FILE).await? })
    }

    /// Signs a receipt's leaf with this node's key ([`ReceiptKey::sign`]).
    pub fn sign_receipt(&self, leaf: &[u8]) -> Vec<u8> {
        self.receipts.sign(leaf)
    }
}

/// A node's key as it signs receipts.
#[derive(Debug, Clone)]
pub struct ReceiptKey(Arc<Ed25519KeyPair>);

impl ReceiptKey {
    /// The node's key as a note key (its name, verifier and checkpoints'
    /// format) and as a receipt key, from one seed; the two must agree on
    /// the public key.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<(NoteKey, ReceiptKey), String> {
        let node = NoteKey::from_seed(name, seed).map_err(|e| e.to_string())?;
        let receipts = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|e| format!("the node's key: {e}"))?;
        if receipts.public_key().as_ref() != node.verifier().public_key().as_slice() {
            return Err("the node's key gives two public keys".into());
        }
        Ok((node, ReceiptKey(Arc::new(receipts))))
    }

    /// Signs a receipt's leaf: a bare Ed25519 signature, the same bytes as
    /// the note key's `sign(leaf)` (Ed25519 signatures are deterministic),
    /// computed by AWS-LC. ed25519-dalek's portable arithmetic, which `tlog`
    /// keeps for everything else, took about 6% of a paid call's CPU in the
    /// server.
    pub fn sign(&self, leaf: &[u8]) -> Vec<u8> {
        self.0.sign(leaf).as_ref().to_vec()
    }
}

/// A seed file of the data directory, if it is there.
pub fn read_seed(data_dir: &Path, file: &str) -> Result<Option<[u8; 32]>, String> {
    if !data_dir.join(file).exists() {
        return Ok(None);
    }
    seed(data_dir, file).map(Some)
}

fn random_seed() -> Result<[u8; 32], String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no random source: {e}"))?;
    Ok(seed)
}

/// A 32-byte seed kept in `file` of `data_dir` (64 hex digits), created at
/// random (mode 0600) the first time.
pub fn seed(data_dir: &Path, file: &str) -> Result<[u8; 32], String> {
    let path = data_dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mut seed = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut seed)
                .map_err(|_| format!("{} is not 64 hex digits", path.display()))?;
            Ok(seed)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let seed = random_seed()?;
            crate::write_secret(&path, &hex::encode(seed))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(seed)
        }
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}

/// Signs a checkpoint of the current tree if it grew since the last one (or
/// if there is none yet). Before signing, the new tree is proven consistent
/// with the last signed checkpoint from the stored hashes: if the stored log
/// was changed, nothing is signed and an error is returned. The checkpoint
/// is submitted to the configured witnesses first, and stored (so served)
/// with the cosignatures they gave.
pub async fn sign_checkpoint_if_grown(
    store: &Store,
    keys: &LogKeys,
    witnesses: &crate::witness::Witnesses,
) -> Result<Option<u64>, String> {
    let size = store.tree_size().await.map_err(|e| e.to_string())?;
    // Leaves are visible once committed and durable once the writer's
    // fsync follows: never sign (and publish) one that a power loss could
    // still take back.
    store.sync_writes().await.map_err(|e| e.to_string())?;
    let last = store.latest_checkpoint().await.map_err(|e| e.to_string())?;
    if last.as_ref().is_some_and(|last| last.size >= size) {
        return Ok(None);
    }
    let root = store.log_root(size).await.map_err(|e| e.to_string())?;
    if let Some(last) = &last {
        let proof = store.consistency_proof(last.size, size).await.map_err(|e| e.to_string())?;
        if !tlog::verify_consistency(last.size, size, &last.root, &root, &proof) {
            return Err(format!(
                "the stored log of {size} leaves is not consistent with the checkpoint signed at {}: refusing to sign",
                last.size
            ));
        }
    }
    let checkpoint = Checkpoint { origin: keys.log.name().to_owned(), size, root };
    let note = keys.log.sign_note(&checkpoint.body());
    // Witnessed before it is published: the cosignatures go with it.
    let note = if witnesses.is_empty() { note } else { witnesses.cosign(store, note, size).await };
    store.insert_checkpoint(&StoredCheckpoint { size, root, note }).await.map_err(|e| e.to_string())?;
    Ok(Some(size))
}

/// How a model is named in the public log: `owner/name`, except that a
/// private model's name is replaced by `~` and the first 16 hex digits of its
/// SHA-256, so the log does not reveal it (its owner can map it back).
pub fn log_model_label(keys: &LogKeys, owner: &AccountName, name: &str, visibility: Visibility) -> String {
    match visibility {
        Visibility::Public => format!("{owner}/{name}"),
        Visibility::Private => tlog::private_model_label(&keys.pseudonym, owner.as_str(), name),
    }
}

/// The digest of named tensors that format 2 leaves record
/// ([`tlog::tensors_sha256`]): the same for a JSON and a binary call.
pub fn tensors_sha256<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a runtime::Tensor)>,
) -> Result<domain::Sha256, ApiError> {
    let parts: Vec<(&str, &'static str, Vec<u64>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, tensor)| {
            let mut bytes = vec![];
            tensor.write_le(&mut bytes);
            (name, tensor.dtype().as_str(), tensor.shape.iter().map(|&d| d as u64).collect(), bytes)
        })
        .collect();
    let views = parts.iter().map(|(name, dtype, shape, data_le)| tlog::TensorBytes { name, dtype, shape, data_le });
    tlog::tensors_sha256(views).map_err(ApiError::internal)
}

/// The receipt of leaf `index` as JSON (API.md's receipt): every field comes
/// from the leaf itself, so a receipt can be rebuilt at any time.
pub fn receipt_json(index: u64, leaf: &[u8], signature: &[u8]) -> Result<Value, ApiError> {
    let decoded =
        ReceiptLeaf::decode(leaf).map_err(|e| ApiError::internal(format!("leaf {index} does not decode: {e}")))?;
    Ok(json!({
        "log_index": index,
        "leaf_hash": hex::encode(tlog::leaf_hash(leaf)),
        "model": decoded.model,
        "version": decoded.version,
        "blob_sha256": decoded.blob_sha256.to_hex(),
        "caller": decoded.caller.to_hex(),
        "app": decoded.app,
        "node": decoded.node,
        "price": decoded.price.to_string(),
        "creator_share": decoded.creator_share.to_string(),
        "node_share": decoded.node_share.to_string(),
        "treasury_share": decoded.treasury_share.to_string(),
        "input_sha256": decoded.input_sha256.to_hex(),
        "output_sha256": decoded.output_sha256.to_hex(),
        "created_at": timestamp(decoded.created_at_ms),
        "leaf_format": decoded.format,
        "task": decoded.task,
        "error": (!decoded.error.is_empty()).then_some(decoded.error),
        "signature": BASE64.encode(signature),
        "leaf": BASE64.encode(leaf),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Receipts signed by AWS-LC are the signatures ed25519-dalek (`tlog`,
    /// and every verifier of receipts) computes and accepts: byte for byte,
    /// for every length of leaf around SHA-512's block, from several seeds.
    #[test]
    fn receipts_signed_by_aws_lc_are_the_note_keys_signatures() {
        for seed_byte in [0u8, 1, 0x5a, 0xff] {
            let seed = [seed_byte; 32];
            let (node, receipts) = ReceiptKey::from_seed("node-a", &seed).expect("the node's keys");
            let keys = LogKeys { log: node.clone(), node: node.clone(), receipts, pseudonym: [0; 32] };
            for length in [0usize, 1, 63, 64, 111, 112, 127, 128, 129, 500, 4096] {
                let leaf: Vec<u8> = (0..length).map(|i| (i as u8).wrapping_mul(seed_byte | 1)).collect();
                let signature = keys.sign_receipt(&leaf);
                assert_eq!(signature, node.sign(&leaf).to_vec(), "seed {seed_byte}, {length} bytes");
                assert!(node.verifier().verify(&leaf, &signature));
            }
        }
    }
}
