//! `vitrine bench nodes --postgres URL --counts 1,2,3`: paid calls spread over
//! several nodes sharing one PostgreSQL database, against one node on the
//! embedded SQLite in the same run. Each node count gets a fresh database
//! (created on the server of URL, dropped after) and a fresh set of nodes
//! in this process, each with its own data directory, all with one blob
//! folder; the clients go to the nodes in turn.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::http::{BenchModel, BenchServer, Pace, Setup, http_phase, ledger_items};
use super::{Common, PhaseFigures};
use crate::client::Client;

/// Paid calls on one node on SQLite, then on each count of nodes on PostgreSQL.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct NodesFigures {
    pub(crate) cores: usize,
    pub(crate) clients: usize,
    pub(crate) sqlite: MarketFigures,
    pub(crate) postgres: Vec<MarketFigures>,
}

/// Paid calls spread over a market's nodes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct MarketFigures {
    pub(crate) nodes: usize,
    pub(crate) paid: PhaseFigures,
    pub(crate) mean_batch: f64,
    /// PostgreSQL transactions per paid call (on PostgreSQL).
    pub(crate) transactions_per_call: Option<f64>,
    /// Paid calls/s over those of one node on SQLite (on PostgreSQL).
    pub(crate) over_sqlite: Option<f64>,
}

pub(crate) async fn run(
    args: &Common,
    postgres: &str,
    counts: &[usize],
    scratch: &Path,
) -> anyhow::Result<NodesFigures> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{cores} cores available, {} clients, {} s per phase, the tiny model, paid", args.clients, args.seconds);
    let sqlite = market(args, None, 1, &scratch.join("sqlite")).await?;
    let mut figures = NodesFigures { cores, clients: args.clients, sqlite, postgres: vec![] };
    for &nodes in counts {
        let name = format!("vitrine_bench_{}_{nodes}", std::process::id());
        store::postgres::drop_database(postgres, &name).await?;
        let url = store::postgres::create_database(postgres, &name)
            .await
            .with_context(|| format!("cannot create a database on {postgres}"))?;
        let label = format!("postgres_{nodes}");
        let result = market(args, Some(&url), nodes, &scratch.join(&label)).await;
        store::postgres::drop_database(postgres, &name).await?;
        let mut market = result?;
        let over = market.paid.per_second / figures.sqlite.paid.per_second;
        market.over_sqlite = Some(over);
        println!("  {nodes} node(s) on PostgreSQL / one node on SQLite = {over:.2}");
        figures.postgres.push(market);
    }
    Ok(figures)
}

/// Starts `nodes` nodes on `database_url` (SQLite in the data directory
/// when `None`), sets up a paid model and a caller, and measures paid calls
/// spread over the nodes.
async fn market(args: &Common, database_url: Option<&str>, nodes: usize, dir: &Path) -> anyhow::Result<MarketFigures> {
    let mut running = vec![];
    let mut operator_key = None;
    let mut first_router = None;
    let mut first_market = None;
    let mut workers = None;
    for node in 0..nodes {
        let mut flags = toml::Table::new();
        flags.insert("data_dir".into(), dir.join(format!("node-{node}")).display().to_string().into());
        flags.insert("blob_dir".into(), dir.join("blobs").display().to_string().into());
        flags.insert("listen".into(), "127.0.0.1:0".into());
        flags.insert("node_id".into(), format!("n{node}").into());
        if let Some(url) = database_url {
            flags.insert("database_url".into(), url.into());
        }
        // The bench's clients are one key from one address, by design.
        for limit in ["calls_per_key_concurrent_max", "calls_per_key_per_minute_max", "signups_per_address_per_hour"] {
            flags.insert(limit.into(), 0.into());
        }
        let config = server::Config::load(None, std::env::vars(), flags)?;
        workers.get_or_insert(config.inference_threads());
        let (state, key) = server::open_state(config).await.context("cannot start a node")?;
        if let Some(key) = key {
            operator_key = Some(key.expose().to_owned());
        }
        first_router.get_or_insert_with(|| server::router(state.clone()));
        first_market.get_or_insert_with(|| state.market.clone());
        running.push(server::RunningServer::start(state).await?);
    }
    let urls: Vec<String> = running.iter().map(|node| node.url.clone()).collect();
    let first = BenchServer {
        url: urls[0].clone(),
        workers: workers.context("a node")?,
        operator_key: operator_key.context("the bench needs a fresh database")?,
        router: first_router.context("a node")?,
        market: first_market.context("a node")?,
    };
    let setup = Setup::new(&first, &BenchModel::tiny()).await?;
    let callers = urls
        .iter()
        .map(|url| Client::new(url.clone(), Some(setup.caller_key.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    let operators = urls
        .iter()
        .map(|url| Client::new(url.clone(), Some(first.operator_key.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    let probe = match database_url {
        Some(url) => Some(store::Store::open_postgres(url).await?),
        None => None,
    };
    let committed = async || -> anyhow::Result<Option<i64>> {
        match &probe {
            // The server's statistics lag by up to a second.
            Some(store) => {
                tokio::time::sleep(Duration::from_millis(1_200)).await;
                Ok(store.transactions_committed().await?)
            }
            None => Ok(None),
        }
    };
    let batches = async || -> anyhow::Result<(u64, u64)> {
        let mut totals = (0, 0);
        for operator in &operators {
            let (batches, items, _, _) = ledger_items(operator).await?;
            totals = (totals.0 + batches, totals.1 + items);
        }
        Ok(totals)
    };
    let (before, committed_before) = (batches().await?, committed().await?);
    let pace = Pace { clients: args.clients, duration: Duration::from_secs(args.seconds), per_second: None };
    let paid = http_phase(&callers, "paid", &setup.call, pace).await?;
    let (after, committed_after) = (batches().await?, committed().await?);
    let (batches, items) = (after.0 - before.0, after.1 - before.1);
    let mut figures = MarketFigures {
        nodes,
        paid: paid.figures(),
        mean_batch: items as f64 / batches.max(1) as f64,
        transactions_per_call: None,
        over_sqlite: None,
    };
    let database = if database_url.is_some() { "PostgreSQL" } else { "SQLite" };
    println!(
        "{nodes} node(s) on {database}: {}; {items} ledger commands in {batches} batches (mean {:.1})",
        paid.describe(),
        items as f64 / batches.max(1) as f64
    );
    if let (Some(before), Some(after)) = (committed_before, committed_after) {
        // Every batch is one transaction; reads outside one count one each.
        let per_call = (after - before) as f64 / paid.calls.max(1) as f64;
        figures.transactions_per_call = Some(per_call);
        println!("  PostgreSQL transactions per paid call: {per_call:.3}");
    }
    if let Some(probe) = probe {
        probe.close().await;
    }
    for node in running {
        node.stop().await?;
    }
    Ok(figures)
}
