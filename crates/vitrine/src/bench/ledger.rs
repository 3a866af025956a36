//! `vitrine bench ledger --calls N`: the one writer alone. Paid calls'
//! writes (three transfers, a signed receipt leaf, a usage event and its
//! rollups) go straight to the sequencer from `--clients` tasks, with no
//! HTTP and no model, so that what is measured is what every paid call
//! waits for in turn, whatever the cores: the writer's CPU per call (its own
//! thread and its SQLite connection's), and the calls per second it
//! sustains, the ceiling of paid throughput on a machine of any size.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use domain::{AccountName, Amount, ApiKey};
use ledger::{ChargeParties, Command, Shares, Transfer, TransferKind};
use serde::{Deserialize, Serialize};
use store::{AccountKind, BatchItem, Charge, Sequencer, Store, UsageEvent};

/// Distinct receipt leaves the clients take turns with (signing is not the
/// writer's work: they are signed before the clock starts).
const LEAVES: usize = 512;

/// The names of the threads that do the writer's work: the sequencer, the
/// SQLite connections' workers (only the writer's is busy here), and the
/// syncer (its fsyncs run beside the sequencer's next batch).
const WRITER_THREADS: [&str; 3] = ["vitrine-sequenc", "sqlx-sqlite-wor", "vitrine-syncer"];

pub(crate) async fn run(data_dir: &Path, calls: u64, clients: usize) -> anyhow::Result<LedgerWriterFigures> {
    if calls == 0 || clients == 0 {
        bail!("--ledger-calls and --clients must be above 0");
    }
    std::fs::create_dir_all(data_dir)?;
    let store = Store::open(&data_dir.join(server::DATABASE_FILE)).await?;
    let issuer = store.ensure_system_account(&AccountName::issuer(), AccountKind::Issuer).await?;
    let treasury = store.ensure_system_account(&AccountName::treasury(), AccountKind::Treasury).await?;
    let mut named = vec![];
    for name in ["bench-caller", "bench-creator", "bench-node"] {
        let name: AccountName = name.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        named.push(store.create_account(&name, false, &ApiKey::generate()).await?);
    }
    let (caller, creator, node) = (named[0].id, named[1].id, named[2].id);
    let model = store
        .create_model(
            &named[1],
            &store::NewModel {
                name: "writer-bench".parse().map_err(|e| anyhow::anyhow!("{e}"))?,
                description: domain::Description::default(),
                task: domain::Task::Regression,
                license: domain::License::default(),
                tags: domain::Tags::default(),
                visibility: domain::Visibility::Public,
                price_per_inference: Amount::from_minor_units(1000)?,
            },
        )
        .await?;
    let deposit = Transfer {
        debit: issuer.id,
        credit: caller,
        amount: Amount::from_minor_units(1000 * (calls + 1))?,
        kind: TransferKind::Deposit,
        reference: "writer bench".into(),
    };
    let done = store.apply_batch(&[BatchItem::command(Command::Transfer(deposit))]).await?;
    done[0].as_ref().map_err(|e| anyhow::anyhow!("the bench's deposit: {e}"))?;

    // Signed as the server signs receipts.
    let (_, key) = server::log::ReceiptKey::from_seed("node-bench", &[7; 32]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let shares = Shares {
        creator: Amount::from_minor_units(800)?,
        node: Amount::from_minor_units(150)?,
        treasury: Amount::from_minor_units(50)?,
    };
    let parties = ChargeParties { caller, creator, node, treasury: treasury.id };
    let leaves: Vec<(Vec<u8>, Vec<u8>)> = (0..LEAVES as u64)
        .map(|i| {
            let leaf = super::receipt_leaf(
                i,
                "bench-creator/writer-bench".into(),
                domain::Sha256::digest(b"writer bench"),
                domain::Sha256::digest(&caller.to_be_bytes()),
            )
            .encode()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let signature = key.sign(&leaf);
            Ok((leaf, signature))
        })
        .collect::<anyhow::Result<_>>()?;
    let leaves = Arc::new(leaves);

    let sequencer = Sequencer::start(store.clone(), server::Config::default().batching(), |_, _| {});
    let meter = CpuMeter::start()?;
    let started = Instant::now();
    let mut tasks = vec![];
    for client in 0..clients as u64 {
        let (sequencer, leaves) = (sequencer.clone(), leaves.clone());
        let share = calls / clients as u64 + u64::from(client < calls % clients as u64);
        tasks.push(tokio::spawn(async move {
            for n in 0..share {
                let (leaf, signature) = leaves[((client * 7919 + n) % LEAVES as u64) as usize].clone();
                let item = BatchItem::Charge(Charge {
                    transfers: ledger::charge_transfers(parties, shares, &format!("bench call {client}.{n}")),
                    model_id: model.id,
                    leaf,
                    signature,
                    usage: UsageEvent {
                        created_at_ms: store_now_ms(),
                        model_id: model.id,
                        version: 1,
                        owner_id: creator,
                        task: "regression".into(),
                        public: true,
                        caller: [client as u8; 32],
                        app: "bench".into(),
                        node: "node-bench".into(),
                        price: 1000,
                        creator_share: 800,
                        latency_us: 100 + n % 400,
                        cpu_us: 50,
                        status: "ok".into(),
                    },
                    answer: None,
                    at_ms: None,
                    grant: None,
                    release: None,
                    payment: None,
                });
                match sequencer.submit(item).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => bail!("a bench charge was refused: {error}"),
                    Err(error) => bail!("{error}"),
                }
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await.context("a bench client")??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let used = meter.used()?;
    let (process_ms, writer_ms, serial_ms) = (used.process_ms, used.writer_ms, used.serial_ms);
    let stats = &sequencer.stats;
    let batches = stats.batches.load(std::sync::atomic::Ordering::Relaxed);
    let per_second = calls as f64 / elapsed;
    let writer_us = writer_ms as f64 * 1e3 / calls as f64;
    let serial_us = serial_ms as f64 * 1e3 / calls as f64;
    println!(
        "the writer alone ({clients} clients, {calls} paid calls' writes, no HTTP, no model): {per_second:.0} calls/s \
         in {batches} group commits (mean batch {:.1})",
        calls as f64 / batches.max(1) as f64
    );
    println!(
        "writer CPU per call: {serial_us:.1} µs one batch after another (the sequencer and its connection), \
         {writer_us:.1} µs with checkpoints beside it (the process {:.1} µs): a ceiling of {:.0} paid calls/s \
         whatever the cores",
        process_ms as f64 * 1e3 / calls as f64,
        1e6 / serial_us.max(f64::MIN_POSITIVE)
    );
    drop(sequencer);
    store.close().await;
    Ok(LedgerWriterFigures {
        calls,
        clients,
        per_second,
        mean_batch: calls as f64 / batches.max(1) as f64,
        serial_cpu_us_per_call: serial_us,
        cpu_us_per_call: writer_us,
        process_cpu_us_per_call: process_ms as f64 * 1e3 / calls as f64,
    })
}

/// The writer alone: what it sustains, and its CPU per call.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LedgerWriterFigures {
    pub(crate) calls: u64,
    pub(crate) clients: usize,
    pub(crate) per_second: f64,
    pub(crate) mean_batch: f64,
    /// The sequencer's and its connection's CPU, one batch after another.
    pub(crate) serial_cpu_us_per_call: f64,
    /// With the checkpoints beside it.
    pub(crate) cpu_us_per_call: f64,
    pub(crate) process_cpu_us_per_call: f64,
}

/// CPU time used since [`CpuMeter::start`]: the process's, and its
/// writer's (the sequencer and SQLite's threads).
pub(crate) struct CpuMeter {
    threads: HashMap<u64, (String, u64)>,
    process_ms: u64,
}

/// What a [`CpuMeter`] measured, in milliseconds.
pub(crate) struct CpuUsed {
    pub(crate) process_ms: u64,
    /// The sequencer, its syncer and every SQLite thread (checkpoints
    /// beside it too).
    pub(crate) writer_ms: u64,
    /// What runs one batch after another: the sequencer and its
    /// connection's thread (the busiest SQLite thread).
    pub(crate) serial_ms: u64,
}

impl CpuMeter {
    pub(crate) fn start() -> anyhow::Result<CpuMeter> {
        Ok(CpuMeter { threads: thread_cpu_ms()?, process_ms: process_cpu_ms()? })
    }

    pub(crate) fn used(&self) -> anyhow::Result<CpuUsed> {
        let after = thread_cpu_ms()?;
        let used = |prefix: &str| -> Vec<u64> {
            after
                .iter()
                .filter(|(_, (name, _))| name.starts_with(prefix))
                .map(|(tid, (_, ms))| ms.saturating_sub(self.threads.get(tid).map(|(_, b)| *b).unwrap_or(0)))
                .collect()
        };
        Ok(CpuUsed {
            process_ms: process_cpu_ms()?.saturating_sub(self.process_ms),
            writer_ms: WRITER_THREADS.iter().flat_map(|prefix| used(prefix)).sum(),
            serial_ms: used(WRITER_THREADS[0]).iter().sum::<u64>()
                + used(WRITER_THREADS[1]).into_iter().max().unwrap_or(0),
        })
    }
}

fn store_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// CPU time (user and system) of each of this process's threads by id,
/// with its name, in milliseconds (Linux's `/proc`).
fn thread_cpu_ms() -> anyhow::Result<HashMap<u64, (String, u64)>> {
    let mut threads = HashMap::new();
    for entry in std::fs::read_dir("/proc/self/task").context("per-thread CPU times need Linux's /proc")? {
        let path = entry?.path();
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else { continue };
        let Some((tid, name, ms)) = parse_stat(&stat) else { continue };
        threads.insert(tid, (name, ms));
    }
    Ok(threads)
}

/// CPU time (user and system) of each live child process of this one by
/// process id, in milliseconds: the server's model workers, in the bench.
pub(crate) fn children_cpu_ms() -> anyhow::Result<HashMap<u64, u64>> {
    let me = std::process::id().to_string();
    let mut children = HashMap::new();
    for entry in std::fs::read_dir("/proc").context("CPU times need Linux's /proc")? {
        let path = entry?.path();
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else { continue };
        // The parent's id is the field after the state, after the name.
        let parent = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if parent != Some(me.as_str()) {
            continue;
        }
        if let Some((pid, _, ms)) = parse_stat(&stat) {
            children.insert(pid, ms);
        }
    }
    Ok(children)
}

fn process_cpu_ms() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("CPU times need Linux's /proc")?;
    parse_stat(&stat).map(|(_, _, ms)| ms).context("an unreadable /proc/self/stat")
}

/// (id, name, user + system milliseconds) from a `stat` line: the name is
/// in parentheses and may hold spaces; utime and stime are the 14th and
/// 15th fields, in clock ticks (100 per second on Linux).
fn parse_stat(stat: &str) -> Option<(u64, String, u64)> {
    let (id, rest) = stat.split_once(" (")?;
    let (name, rest) = rest.rsplit_once(") ")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((id.parse().ok()?, name.to_owned(), ticks * 10))
}

#[cfg(test)]
mod tests {
    #[test]
    fn stat_lines_parse_with_spaces_in_names() {
        let line = "4242 (sqlx (worker) 1) S 1 2 3 4 5 6 7 8 9 10 250 31 0 0 20 0 1 0";
        assert_eq!(super::parse_stat(line), Some((4242, "sqlx (worker) 1".into(), 2810)));
    }
}
