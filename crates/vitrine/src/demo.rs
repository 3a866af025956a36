//! `vitrine demo` and `vitrine serve --demo`: a living market in a fresh data
//! directory. Three nodes (in this process, sharing the directory) serve;
//! creators publish about a hundred small real ONNX models across the tasks;
//! callers with Zipf-distributed demand call them through several apps for
//! several weeks of back-dated traffic. Accounts, models and deposits go
//! through the HTTP API; every call goes through the market's paid call
//! (`market::Market::call`: reservations, charges, receipts, usage, the
//! model run in a worker) on one of the nodes, back-dated; no total is
//! written directly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use clap::Args;
use domain::Task;
use market::Market;
use reqwest::Method;
use runtime::synthetic::{Seeded, model_for_task};
use runtime::{Tensor, TensorData};
use serde_json::json;
use store::ModelRecord;

use crate::client::Client;

#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// The data directory to fill (it must hold no models yet).
    #[arg(long, default_value = "vitrine-data")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub size: DemoSize,
}

/// How big a market to make.
#[derive(Debug, Args, Clone)]
pub struct DemoSize {
    /// Creators; each publishes 2 to 5 models.
    #[arg(long, default_value_t = 30)]
    pub creators: usize,
    #[arg(long, default_value_t = 200)]
    pub callers: usize,
    /// Days of back-dated traffic, ending now.
    #[arg(long, default_value_t = 21)]
    pub days: u32,
    /// Inference calls in all.
    #[arg(long, default_value_t = 20_000)]
    pub calls: u64,
}

const NODES: [&str; 3] = ["eu-1", "us-1", "ap-1"];
const APPS: [&str; 5] = ["webshop", "mobile-app", "research-lab", "support-bot", "bi-dashboard"];
/// Calls in flight at once.
const CONCURRENCY: usize = 16;

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    crate::serve::init_logging(server::config::LogFormat::Text);
    let mut flags = toml::Table::new();
    flags.insert("data_dir".into(), args.data_dir.display().to_string().into());
    let config = server::Config::load(None, std::env::vars(), flags)?;
    let filled = populate(&config, &args.size).await?;
    if !filled {
        println!("{} already holds a market; nothing was added", args.data_dir.display());
    }
    Ok(())
}

/// Fills the configured data directory if it holds no models; returns
/// whether it did. The demo's nodes take every setting from `config` but
/// their address, node id and development mode, and no limits on the demo's
/// own few keys and one address.
pub async fn populate(config: &server::Config, size: &DemoSize) -> anyhow::Result<bool> {
    let data_dir = config.data_dir.clone();
    // Hundreds of sign-ups, uploads and three nodes' starts are not news:
    // warnings only until the market is filled.
    crate::serve::quiet_logs(true);
    let filled = populate_quietly(config, size, &data_dir).await;
    crate::serve::quiet_logs(false);
    filled
}

async fn populate_quietly(config: &server::Config, size: &DemoSize, data_dir: &Path) -> anyhow::Result<bool> {
    let (mut nodes, mut markets) = (vec![], vec![]);
    for node in NODES {
        // The demo's own traffic all comes from one address and few keys.
        let config = server::Config {
            listen: "127.0.0.1:0".into(),
            node_id: node.into(),
            dev: true,
            signups_per_address_per_hour: 0,
            calls_per_key_per_minute_max: 0,
            calls_per_key_concurrent_max: 0,
            ..config.clone()
        };
        // One at a time: the first creates the schema and the operator.
        let (state, _) = server::open_state(config).await.context("cannot start a demo node")?;
        markets.push(state.market.clone());
        nodes.push(server::RunningServer::start(state).await?);
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let result = fill(data_dir, &urls, &markets, size).await;
    for node in nodes {
        node.stop().await?;
    }
    result
}

async fn fill(data_dir: &Path, urls: &[String], markets: &[Arc<Market>], size: &DemoSize) -> anyhow::Result<bool> {
    let anonymous = Client::new(urls[0].clone(), None)?;
    let existing: server::wire::ModelPage =
        anonymous.send_as(anonymous.request(Method::GET, "/v1/models?limit=1")).await?;
    if !existing.items.is_empty() {
        return Ok(false);
    }
    let operator_key = std::fs::read_to_string(data_dir.join(server::OPERATOR_KEY_FILE))?.trim().to_owned();
    let operator = Client::new(urls[0].clone(), Some(operator_key))?;
    let mut rng = Seeded::new(20261125);
    let started = std::time::Instant::now();
    // One line that moves on a terminal (nothing on a pipe: the summary says it all).
    let progress =
        indicatif::ProgressBar::with_draw_target(Some(size.creators as u64), indicatif::ProgressDrawTarget::stderr());
    progress.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg:<28} [{bar:30}] {pos}/{len} ({elapsed})")?
            .progress_chars("=> "),
    );
    progress.set_message("creators and their models");

    // Creators and their models.
    let mut models: Vec<(ModelRecord, runtime::synthetic::SyntheticModel)> = vec![];
    for c in 0..size.creators {
        let creator = signup(&anonymous, &format!("studio-{c:02}")).await?;
        for m in 0..rng.range(2, 6) {
            let task = Task::ALL[rng.range(0, Task::ALL.len())];
            let name = format!("{}-{m}", task.as_str());
            let price = if rng.unit() < 0.3 { 0 } else { 100_000 * rng.range(1, 100) as u64 };
            let visibility = if rng.unit() < 0.05 { "private" } else { "public" };
            let body = json!({
                "name": name, "task": task.as_str(), "license": "apache-2.0", "tags": ["demo"],
                "description": format!("A small {} model from studio {c:02}.", task.as_str()),
                "price_per_inference": price.to_string(), "visibility": visibility,
            });
            creator.send_json(creator.request(Method::POST, "/v1/models").json(&body)).await?;
            let synthetic = model_for_task(task, rng.next_u64());
            let path = format!("/v1/models/studio-{c:02}/{name}/versions");
            let upload = creator
                .request(Method::POST, &path)
                .header("content-type", "application/octet-stream")
                .body(synthetic.bytes.clone());
            creator.send_json(upload).await?;
            if visibility == "public" {
                let (owner, name) = (format!("studio-{c:02}").parse()?, name.parse()?);
                let market = &markets[0];
                let record = market.known_models.model(&market.store, &owner, &name).await?;
                models.push((record.context("a model just created")?, synthetic));
            }
        }
        progress.inc(1);
    }

    // Callers, each with a main app and tokens.
    progress.set_message("callers and their deposits");
    progress.set_length(size.callers as u64);
    progress.set_position(0);
    let mut callers = vec![];
    for i in 0..size.callers {
        let name = format!("caller-{i:03}");
        let caller = signup(&anonymous, &name).await?;
        let deposit = json!({"account": name, "amount": "100000000000000", "reference": format!("demo-{name}")});
        operator.send_json(operator.request(Method::POST, "/v1/admin/deposits").json(&deposit)).await?;
        let key = domain::ApiKey::parse(caller.key().unwrap_or_default())?;
        let market = &markets[0];
        let account = market.known_keys.account(&market.store, &key).await?.context("a caller just signed up")?;
        callers.push((account, APPS[rng.range(0, APPS.len())]));
        progress.inc(1);
    }

    // Zipf demand over models (weight 1 / rank^1.1), a few rising in the
    // last two days so something trends.
    let weights: Vec<f64> = (1..=models.len()).map(|rank| 1.0 / (rank as f64).powf(1.1)).collect();
    let rising: Vec<usize> = (0..3).map(|_| rng.range(models.len() / 3, models.len())).collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let span_ms = size.days as i64 * 86_400_000;
    // Each model is uploaded before its first call: the most called ones
    // before the span, the others on some day within it, the rising ones
    // in its last week; its record and versions are back-dated to then.
    let born: Vec<i64> = (0..models.len())
        .map(|m| {
            let start = now - span_ms - 86_400_000;
            if rising.contains(&m) {
                now - (7 * 86_400_000).min(span_ms) + (rng.unit() * 3.0 * 86_400_000.0) as i64
            } else if m <= models.len() / 5 {
                start
            } else {
                start + (rng.unit() * 0.8 * span_ms as f64) as i64
            }
        })
        .collect();
    for ((record, _), &at) in models.iter().zip(&born) {
        markets[0].store.backdate_model(record.id, at).await?;
    }
    let mut plan = Vec::with_capacity(size.calls as usize);
    for _ in 0..size.calls {
        // More traffic recently: time drawn with density rising over the span.
        let at = now - 1 - (span_ms as f64 * (1.0 - rng.unit().sqrt())) as i64;
        let recent = now - at < 2 * 86_400_000;
        // Only the models uploaded by then can be called.
        let mut weighted: Vec<f64> = weights.iter().zip(&born).map(|(&w, &b)| if b < at { w } else { 0.0 }).collect();
        if recent {
            for &r in &rising {
                weighted[r] *= 40.0;
            }
        }
        if weighted.iter().all(|&w| w == 0.0) {
            continue;
        }
        let model = pick(&mut rng, &weighted);
        plan.push((model, rng.range(0, callers.len()), at));
    }
    plan.sort_by_key(|p| p.2);

    progress.set_message("back-dated calls");
    progress.set_length(plan.len() as u64);
    progress.set_position(0);
    let planned = plan.len();
    let (plan, models, callers) = (Arc::new(plan), Arc::new(models), Arc::new(callers));
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = vec![];
    for w in 0..CONCURRENCY {
        let (plan, models, callers) = (plan.clone(), models.clone(), callers.clone());
        let (next, failed, progress) = (next.clone(), failed.clone(), progress.clone());
        let market = markets[w % markets.len()].clone();
        workers.push(tokio::spawn(async move {
            let mut inputs = Seeded::new(w as u64);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(&(model, caller, at)) = plan.get(i) else { break };
                let ((record, synthetic), (account, app)) = (&models[model], &callers[caller]);
                let Some(version) = record.latest_version else { break };
                let request = market::CallRequest {
                    caller: account,
                    model: record,
                    version,
                    app: (*app).to_owned(),
                    at_ms: Some(at),
                    started: std::time::Instant::now(),
                    idempotency: None,
                    inputs: market::Inputs::Read(call_inputs(synthetic, &mut inputs)),
                    payment: None,
                };
                if market.call(request).await.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                progress.inc(1);
            }
        }));
    }
    for worker in workers {
        worker.await?;
    }
    progress.finish_and_clear();
    println!(
        "demo market: {} creators, {} public models, {} callers, {} calls over {} days through {} nodes ({} failed) in {:.1} s",
        size.creators,
        models.len(),
        size.callers,
        planned,
        size.days,
        urls.len(),
        failed.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    Ok(true)
}

async fn signup(anonymous: &Client, name: &str) -> anyhow::Result<Client> {
    let created: server::wire::CreatedAccount =
        anonymous.send_as(anonymous.request(Method::POST, "/v1/accounts").json(&json!({"name": name}))).await?;
    Client::new(anonymous.base().to_owned(), Some(created.api_key))
}

fn pick(rng: &mut Seeded, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut target = rng.unit() * total;
    for (i, w) in weights.iter().enumerate() {
        if target < *w {
            return i;
        }
        target -= w;
    }
    weights.len() - 1
}

/// One call's input: token ids below the model's vocabulary, or floats.
fn call_inputs(model: &runtime::synthetic::SyntheticModel, rng: &mut Seeded) -> BTreeMap<String, Tensor> {
    let data = match model.vocabulary {
        Some(v) => TensorData::I64((0..model.width).map(|_| rng.range(0, v) as i64).collect()),
        None => TensorData::F32((0..model.width).map(|_| rng.unit() as f32).collect()),
    };
    BTreeMap::from([(model.input.clone(), Tensor { shape: vec![1, model.width], data })])
}
