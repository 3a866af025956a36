//! `vitrine demo` and `vitrine serve --demo`: a living market in a fresh data
//! directory. Three nodes (in this process, sharing the directory) serve;
//! creators publish about a hundred small real ONNX models across the tasks;
//! callers with Zipf-distributed demand call them through several apps for
//! several weeks of back-dated traffic. Every call goes through the real
//! path (holds, charges, receipts, usage), with its time set by the
//! development header `X-Vitrine-Time`; no total is written directly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use clap::Args;
use domain::Task;
use reqwest::Method;
use runtime::synthetic::{Seeded, model_for_task};
use serde_json::{Value, json};

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
/// their address, node id and development mode (for back-dating).
pub async fn populate(config: &server::Config, size: &DemoSize) -> anyhow::Result<bool> {
    let data_dir = config.data_dir.clone();
    let mut nodes = vec![];
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
        nodes.push(server::RunningServer::start(state).await?);
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let result = fill(&data_dir, &urls, size).await;
    for node in nodes {
        node.stop().await?;
    }
    result
}

async fn fill(data_dir: &Path, urls: &[String], size: &DemoSize) -> anyhow::Result<bool> {
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

    // Creators and their models.
    let mut models: Vec<(String, runtime::synthetic::SyntheticModel)> = vec![];
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
                models.push((format!("studio-{c:02}/{name}"), synthetic));
            }
        }
    }

    // Callers, each with a main app and tokens.
    let mut callers = vec![];
    for i in 0..size.callers {
        let name = format!("caller-{i:03}");
        let caller = signup(&anonymous, &name).await?;
        let deposit = json!({"account": name, "amount": "100000000000000", "reference": format!("demo-{name}")});
        operator.send_json(operator.request(Method::POST, "/v1/admin/deposits").json(&deposit)).await?;
        callers.push((caller.key().unwrap_or_default().to_owned(), APPS[rng.range(0, APPS.len())]));
    }

    // Zipf demand over models (weight 1 / rank^1.1), a few rising in the
    // last two days so something trends.
    let weights: Vec<f64> = (1..=models.len()).map(|rank| 1.0 / (rank as f64).powf(1.1)).collect();
    let rising: Vec<usize> = (0..3).map(|_| rng.range(models.len() / 3, models.len())).collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let span_ms = size.days as i64 * 86_400_000;
    let mut plan = Vec::with_capacity(size.calls as usize);
    for _ in 0..size.calls {
        // More traffic recently: time drawn with density rising over the span.
        let at = now - 1 - (span_ms as f64 * (1.0 - rng.unit().sqrt())) as i64;
        let recent = now - at < 2 * 86_400_000;
        let mut weighted: Vec<f64> = weights.clone();
        if recent {
            for &r in &rising {
                weighted[r] *= 40.0;
            }
        }
        let model = pick(&mut rng, &weighted);
        let (key, app) = &callers[rng.range(0, callers.len())];
        plan.push((model, key.clone(), *app, at));
    }
    plan.sort_by_key(|p| p.3);

    let plan = Arc::new(plan);
    let models = Arc::new(models);
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = vec![];
    for w in 0..CONCURRENCY {
        let (plan, models, next, failed) = (plan.clone(), models.clone(), next.clone(), failed.clone());
        let url = urls[w % urls.len()].clone();
        workers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut inputs = Seeded::new(w as u64);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some((model, key, app, at)) = plan.get(i) else { break };
                let (name, synthetic) = &models[*model];
                let body = call_body(synthetic, &mut inputs);
                let response = http
                    .post(format!("{url}/v1/models/{name}/infer"))
                    .bearer_auth(key)
                    .header("X-App", *app)
                    .header("X-Vitrine-Time", at.to_string())
                    .json(&body)
                    .send()
                    .await;
                if !response.is_ok_and(|r| r.status().is_success()) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for worker in workers {
        worker.await?;
    }
    println!(
        "demo market: {} creators, {} public models, {} callers, {} calls over {} days through {} nodes ({} failed) in {:.1} s",
        size.creators,
        models.len(),
        size.callers,
        size.calls,
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

fn call_body(model: &runtime::synthetic::SyntheticModel, rng: &mut Seeded) -> Value {
    let data: Value = match model.vocabulary {
        Some(v) => json!((0..model.width).map(|_| rng.range(0, v) as i64).collect::<Vec<_>>()),
        None => json!((0..model.width).map(|_| rng.unit() as f32).collect::<Vec<_>>()),
    };
    json!({"inputs": {model.input.clone(): {"dtype": model.dtype, "shape": [1, model.width], "data": data}}})
}
