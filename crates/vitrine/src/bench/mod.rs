//! `vitrine bench`: the paid-inference path measured on this machine, on a
//! fresh data directory. Without a mode, the comparison (`compare.rs`): the
//! raw model (no HTTP), free and paid calls over HTTP, paid calls through
//! the server's router in this process (no sockets), the latency at half
//! the paid rate, and a realistic model against the same model run raw;
//! ratios between these are what to compare across machines. The modes
//! measure one part alone: `model` (a model file against a peer), `nodes`
//! (several nodes on PostgreSQL), `ledger` (the ledger's writer), `log`
//! (the log), `usage` (the stats over many usage events) and `x402` (calls
//! paid on a chain against calls paid with a key).
//!
//! `--figures FILE` writes a run's figures as JSON: each mode's own typed
//! figures (`CompareFigures`, `ModelFigures`, …).

mod compare;
mod http;
pub(crate) mod ledger;
mod log;
mod model;
mod nodes;
mod usage;
mod x402;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

pub(crate) use http::receipt_leaf;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    mode: Option<BenchMode>,
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    compare: compare::CompareArgs,
}

/// What every mode takes.
#[derive(Debug, Clone, Args)]
pub(crate) struct Common {
    /// Concurrent clients.
    #[arg(long, default_value_t = 32, global = true)]
    pub(crate) clients: usize,
    /// Seconds each HTTP phase runs.
    #[arg(long, default_value_t = 5, global = true)]
    pub(crate) seconds: u64,
    /// Where the server keeps its data [default: a fresh temporary folder, removed after].
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Also write the run's figures to this file, as JSON.
    #[arg(long, value_name = "FILE", global = true)]
    figures: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum BenchMode {
    /// Paid calls of an ONNX model over HTTP, each with the body of --body
    /// (and with --peer, the same calls to the peer): a real model against
    /// a peer serving it (`bench/real-models` runs it on production models).
    Model {
        /// The model file.
        file: PathBuf,
        /// The body of each call: the API's JSON inputs.
        #[arg(long, value_name = "FILE")]
        body: PathBuf,
        /// A peer serving the model at Vitrine's inference route.
        #[arg(long, value_name = "URL")]
        peer: Option<String>,
    },
    /// Paid calls spread over several nodes sharing one PostgreSQL database,
    /// for each node count, against one node on SQLite.
    Nodes {
        /// A PostgreSQL server where the bench creates (and then drops) a
        /// database per node count, e.g. postgres://postgres@127.0.0.1:5432/test.
        #[arg(long, value_name = "URL")]
        postgres: String,
        /// Node counts.
        #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
        counts: Vec<usize>,
    },
    /// Paid calls' writes straight to the ledger's writer from --clients
    /// tasks (no HTTP, no model), and its CPU per call: the ceiling of paid
    /// calls/s whatever the cores.
    Ledger {
        /// Paid calls to write.
        #[arg(long, default_value_t = 200_000)]
        calls: u64,
    },
    /// The log alone: appends this many leaves, then times proofs at that size.
    Log {
        /// Leaves to append.
        #[arg(long, default_value_t = 1_000_000)]
        leaves: u64,
    },
    /// Records this many usage events over 30 days, then times the market
    /// query and a model's 30-day series.
    Usage {
        /// Usage events to record.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
    },
    /// Calls paid per call with x402 (each settled on the chain) against
    /// calls paid from a prepaid balance with a key, in one run, on a
    /// private chain (anvil: scripts/anvil), and one settlement's gas.
    X402 {
        /// The anvil node, e.g. http://127.0.0.1:58545 (scripts/anvil prints it).
        #[arg(long, value_name = "URL")]
        rpc_url: String,
    },
}

/// One HTTP phase's figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct PhaseFigures {
    pub(crate) per_second: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let BenchArgs { mode, common, compare } = args;
    let temporary = common.data_dir.is_none();
    let data_dir = common
        .data_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("vitrine-bench-{}-{}", std::process::id(), now_ms())));
    // Each server of a run has a folder of its own beside `data_dir`, removed
    // after unless it was asked for.
    let folders: Vec<PathBuf> = ["", "no-rollups", "isolation-process", "isolation-none", "realistic", "realistic-one"]
        .iter()
        .map(|suffix| if suffix.is_empty() { data_dir.clone() } else { data_dir.with_extension(suffix) })
        .collect();
    if temporary {
        folders.iter().for_each(|folder| crate::remove_at_a_quiet_end(folder.clone()));
    }
    let figures = match mode {
        None if compare.cores.is_empty() => {
            compare::compare(&common, &compare, &data_dir).await.and_then(|f| to_json(&f))
        }
        None => compare::scaling(&common, &compare).and_then(|f| to_json(&f)),
        Some(BenchMode::Model { file, body, peer }) => {
            model::against_peer(&common, &data_dir, &file, &body, peer.as_deref()).await.and_then(|f| to_json(&f))
        }
        Some(BenchMode::Nodes { postgres, counts }) => {
            nodes::run(&common, &postgres, &counts, &data_dir).await.and_then(|f| to_json(&f))
        }
        Some(BenchMode::Ledger { calls }) => {
            ledger::run(&data_dir, calls, common.clients).await.and_then(|f| to_json(&f))
        }
        Some(BenchMode::Log { leaves }) => log::run(&data_dir, leaves).await.map(|()| None),
        Some(BenchMode::X402 { rpc_url }) => x402::run(&common, &rpc_url, &data_dir).await.and_then(|f| to_json(&f)),
        Some(BenchMode::Usage { events }) => usage::run(&data_dir, events).await.map(|()| None),
    };
    if temporary {
        for folder in &folders {
            let _ = std::fs::remove_dir_all(folder);
        }
    }
    write_figures(common.figures.as_deref(), figures?.as_deref())
}

/// A mode's figures as the JSON `--figures` writes, fields in their order.
fn to_json(figures: &impl Serialize) -> anyhow::Result<Option<String>> {
    Ok(Some(serde_json::to_string_pretty(figures)?))
}

/// Writes `--figures` (modes without figures write none).
fn write_figures(path: Option<&Path>, figures: Option<&str>) -> anyhow::Result<()> {
    if let (Some(path), Some(figures)) = (path, figures) {
        std::fs::write(path, format!("{figures}\n")).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Milliseconds since the Unix epoch, for names no earlier run used.
fn now_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
}
