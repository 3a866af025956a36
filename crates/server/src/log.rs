//! The transparency log on the server side: checkpoint signing that never
//! contradicts an earlier checkpoint. The keys and the receipts are the
//! market's (`market::keys`, `market::receipt`).

use store::{Store, StoredCheckpoint};
use tlog::Checkpoint;

pub use market::keys::{LOG_KEY_FILE, LogKeys, PSEUDONYM_KEY_FILE, ReceiptKey, read_seed, seed};

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
