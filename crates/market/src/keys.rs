//! The market's keys, kept in the data directory (or, on a shared market,
//! in its database): the log's signing key, this node's receipt key and the
//! key of the callers' pseudonyms; and how a call names its model and its
//! tensors in the log.

use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use domain::{AccountName, Visibility};
use store::Store;
use tlog::NoteKey;

use crate::error::CallError;

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

/// Why a key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("{path} is not 64 hex digits")]
    NotHex { path: String },
    #[error("no random source: {0}")]
    NoRandom(getrandom::Error),
    #[error("cannot read the market's {name}: {source}")]
    Store { name: String, source: store::StoreError },
    #[error("the key {name}: {message}")]
    Unusable { name: String, message: String },
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
    ) -> Result<LogKeys, KeyError> {
        let market_seed = async |name: &str| -> Result<[u8; 32], KeyError> {
            if store.is_postgres() {
                let fresh = random_seed()?;
                store.market_seed(name, fresh).await.map_err(|source| KeyError::Store { name: name.to_owned(), source })
            } else {
                seed(data_dir, name)
            }
        };
        let log = NoteKey::from_seed(origin, &market_seed(LOG_KEY_FILE).await?)
            .map_err(|e| KeyError::Unusable { name: origin.to_owned(), message: e.to_string() })?;
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
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<(NoteKey, ReceiptKey), KeyError> {
        let unusable = |message: String| KeyError::Unusable { name: name.to_owned(), message };
        let node = NoteKey::from_seed(name, seed).map_err(|e| unusable(e.to_string()))?;
        let receipts = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|e| unusable(e.to_string()))?;
        if receipts.public_key().as_ref() != node.verifier().public_key().as_slice() {
            return Err(unusable("it gives two public keys".into()));
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
pub fn read_seed(data_dir: &Path, file: &str) -> Result<Option<[u8; 32]>, KeyError> {
    if !data_dir.join(file).exists() {
        return Ok(None);
    }
    seed(data_dir, file).map(Some)
}

fn random_seed() -> Result<[u8; 32], KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(KeyError::NoRandom)?;
    Ok(seed)
}

/// A 32-byte seed kept in `file` of `data_dir` (64 hex digits), created at
/// random (mode 0600) the first time.
pub fn seed(data_dir: &Path, file: &str) -> Result<[u8; 32], KeyError> {
    let path = data_dir.join(file);
    let shown = || path.display().to_string();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mut seed = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| KeyError::NotHex { path: shown() })?;
            Ok(seed)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let seed = random_seed()?;
            write_secret(&path, &hex::encode(seed)).map_err(|source| KeyError::Write { path: shown(), source })?;
            Ok(seed)
        }
        Err(source) => Err(KeyError::Read { path: shown(), source }),
    }
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
) -> Result<domain::Sha256, CallError> {
    let parts: Vec<(&str, &'static str, Vec<u64>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, tensor)| {
            let mut bytes = vec![];
            tensor.write_le(&mut bytes);
            (name, tensor.dtype().as_str(), tensor.shape.iter().map(|&d| d as u64).collect(), bytes)
        })
        .collect();
    let views = parts.iter().map(|(name, dtype, shape, data_le)| tlog::TensorBytes { name, dtype, shape, data_le });
    tlog::tensors_sha256(views).map_err(CallError::internal)
}

/// Writes a file only its owner can read (mode 0600 on Unix), fsynced: for
/// keys, the server's and the CLI's.
pub fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    file.write_all(secret.as_bytes())?;
    if !secret.ends_with('\n') {
        file.write_all(b"\n")?;
    }
    file.sync_all()
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
