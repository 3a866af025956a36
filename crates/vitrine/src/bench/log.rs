//! `vitrine bench log`: the log alone, in a fresh store: appends, then
//! roots and proofs at that size.

use std::time::{Duration, Instant};

use super::receipt_leaf;

/// Appends `count` realistic receipt leaves straight into a fresh store in
/// transactions of 1000 (a busy group commit), then times roots and proofs.
pub(crate) async fn run(data_dir: &std::path::Path, count: u64) -> anyhow::Result<()> {
    const BATCH: u64 = 1000;
    std::fs::create_dir_all(data_dir)?;
    let store = store::Store::open(&data_dir.join(server::DATABASE_FILE)).await?;
    // Signed as the server signs receipts.
    let (_, key) = server::log::ReceiptKey::from_seed("node-bench", &[7; 32]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    let mut signing = Duration::ZERO;
    let mut appended = 0;
    while appended < count {
        let n = BATCH.min(count - appended);
        let sign_started = Instant::now();
        let leaves: Vec<(Vec<u8>, Vec<u8>)> = (appended..appended + n)
            .map(|i| {
                let leaf = receipt_leaf(
                    i,
                    format!("creator-{}/model-{}", i % 50, i % 100),
                    domain::Sha256::digest(&(i % 100).to_be_bytes()),
                    domain::Sha256::digest(&(i % 1000).to_be_bytes()),
                )
                .encode()
                .expect("bench leaves encode");
                let signature = key.sign(&leaf);
                (leaf, signature)
            })
            .collect();
        signing += sign_started.elapsed();
        store.append_leaves(&leaves).await?;
        appended += n;
    }
    let elapsed = started.elapsed();
    println!(
        "appended {count} leaves in {:.1} s: {:.0} appends/s ({:.0} appends/s excluding leaf encoding and signing)",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64(),
        count as f64 / (elapsed - signing).as_secs_f64()
    );
    let size = store.tree_size().await?;
    let time = |label: &str, runs: u32, elapsed: Duration| {
        println!("{label}: {:.2} ms mean over {runs}", elapsed.as_secs_f64() * 1e3 / runs as f64);
    };
    // The first read of the tree loads its upper levels into memory (once
    // per process); every later proof reads at most 8 nodes from the file.
    let started = Instant::now();
    store.log_root(size).await?;
    time("root, first (loads the upper levels)", 1, started.elapsed());
    let started = Instant::now();
    store.log_root(size).await?;
    time("root", 1, started.elapsed());
    let runs = 1000u32;
    let started = Instant::now();
    for r in 0..runs as u64 {
        let index = (r * 7919 * 131) % size;
        let proof = store.inclusion_proof(index, size).await?;
        anyhow::ensure!(!proof.is_empty() || size == 1);
    }
    time(&format!("inclusion proof at {size} leaves"), runs, started.elapsed());
    let started = Instant::now();
    for r in 0..runs as u64 {
        let from = 1 + (r * 104_729) % (size - 1).max(1);
        store.consistency_proof(from, size).await?;
    }
    time(&format!("consistency proof at {size} leaves"), runs, started.elapsed());
    let bytes = std::fs::metadata(data_dir.join(server::DATABASE_FILE))?.len()
        + std::fs::metadata(data_dir.join(format!("{}-wal", server::DATABASE_FILE))).map(|m| m.len()).unwrap_or(0);
    println!("database: {:.0} MiB ({:.0} bytes per leaf)", bytes as f64 / 1048576.0, bytes as f64 / count as f64);
    store.close().await;
    Ok(())
}
