//! `vitrine bench`: the paid-inference path measured end to end on this
//! machine. Starts a server on a fresh data directory, then compares in one
//! run: the raw model (tract alone, no HTTP), free calls over HTTP, and paid
//! calls over HTTP (holds, posts, group commit). Ratios between these are
//! what to compare across machines; absolute figures vary with the machine.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::client::Client;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds each HTTP phase runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Where the server keeps its data [default: a fresh temporary folder, removed after].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Instead: measure the log alone, appending this many leaves, then
    /// timing proofs at that size.
    #[arg(long)]
    log_leaves: Option<u64>,
    /// Instead: record this many usage events over 30 days, then time the
    /// market query and a model's 30-day series.
    #[arg(long)]
    usage_events: Option<u64>,
}

/// A model the bench calls, with one call's input.
struct BenchModel {
    name: &'static str,
    bytes: &'static [u8],
    /// Elements of the one input `x`, shape `[1, width]`.
    width: usize,
}

/// A tiny model: where the cost around the model shows most.
const TINY: BenchModel =
    BenchModel { name: "linear 4-1", bytes: include_bytes!("../../../fixtures/models/linear.onnx"), width: 4 };
/// A realistic small classifier (MNIST-sized MLP, 400 KB of weights).
const REALISTIC: BenchModel =
    BenchModel { name: "MLP 784-128-10", bytes: include_bytes!("../../../fixtures/models/mnist_mlp.onnx"), width: 784 };

impl BenchModel {
    fn input(&self) -> Vec<f32> {
        (0..self.width).map(|i| (i % 10) as f32 / 10.0).collect()
    }

    fn call(&self) -> Value {
        json!({"inputs": {"x": {"dtype": "f32", "shape": [1, self.width], "data": self.input()}}})
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let temporary = args.data_dir.is_none();
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("vitrine-bench-{}-{}", std::process::id(), store_now())));
    if let Some(events) = args.usage_events {
        let result = usage_bench(&data_dir, events).await;
        if temporary {
            let _ = std::fs::remove_dir_all(&data_dir);
        }
        return result;
    }
    if let Some(leaves) = args.log_leaves {
        let result = log_bench(&data_dir, leaves).await;
        if temporary {
            let _ = std::fs::remove_dir_all(&data_dir);
        }
        return result;
    }
    let result = compare(&args, &data_dir).await;
    if temporary {
        let _ = std::fs::remove_dir_all(&data_dir);
        let _ = std::fs::remove_dir_all(data_dir.with_extension("no-rollups"));
    }
    result
}

/// The whole comparison: the raw model, free and paid calls, then paid calls
/// again on a second fresh server without usage rollups, then the cost of
/// isolation: paid calls with models in worker processes (the default)
/// against models in the server's process, for a tiny and a realistic model.
async fn compare(args: &BenchArgs, data_dir: &std::path::Path) -> anyhow::Result<()> {
    let paid =
        with_server(data_dir, &[], |url, key| async move { measure(args, &url, &key, &TINY, true).await }).await?;
    let unrolled = with_server(
        &data_dir.with_extension("no-rollups"),
        &[("analytics_rollups", false.into())],
        |url, key| async move { measure(args, &url, &key, &TINY, false).await },
    )
    .await?;
    println!("paid calls without usage rollups: {unrolled:.0} calls/s; with / without = {:.2}", paid / unrolled);
    for model in [&TINY, &REALISTIC] {
        let mut rates = Vec::new();
        for isolation in ["process", "none"] {
            let directory = data_dir.with_extension(format!("isolation-{isolation}"));
            let settings = [("isolation", isolation.into())];
            let rate =
                with_server(
                    &directory,
                    &settings,
                    |url, key| async move { measure(args, &url, &key, model, false).await },
                )
                .await;
            let _ = std::fs::remove_dir_all(&directory);
            rates.push(rate?);
        }
        println!(
            "isolation, {}: paid calls {:.0}/s in worker processes, {:.0}/s in the server's process; isolated / in-process = {:.2}",
            model.name,
            rates[0],
            rates[1],
            rates[0] / rates[1]
        );
    }
    Ok(())
}

/// Runs `work` against a fresh in-process server on `data_dir`, with
/// `VITRINE_*` settings applied (so a run can vary one, e.g.
/// `VITRINE_LEDGER_BATCH_MAX=1`) and then `settings`.
async fn with_server<F, Fut>(
    data_dir: &std::path::Path,
    settings: &[(&str, toml::Value)],
    work: F,
) -> anyhow::Result<f64>
where
    F: FnOnce(String, String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<f64>>,
{
    let mut flags = toml::Table::new();
    flags.insert("data_dir".into(), data_dir.display().to_string().into());
    flags.insert("listen".into(), "127.0.0.1:0".into());
    // The bench's clients are one key from one address, by design.
    for limit in ["calls_per_key_concurrent_max", "calls_per_key_per_minute_max", "signups_per_address_per_hour"] {
        flags.insert(limit.into(), 0.into());
    }
    for (key, value) in settings {
        flags.insert((*key).into(), value.clone());
    }
    let config = server::Config::load(None, std::env::vars(), flags)?;
    let (state, operator_key) = server::open_state(config).await.context("cannot start the server")?;
    let operator_key = operator_key.context("the bench needs a fresh data directory")?;
    let running = server::RunningServer::start(state).await?;
    let result = work(running.url.clone(), operator_key.expose().to_owned()).await;
    running.stop().await?;
    result
}

/// Sets up a creator, a caller and two copies of `model` (free and paid),
/// then measures; returns the paid calls per second. With `full`, also the
/// raw model and free calls.
async fn measure(
    args: &BenchArgs,
    url: &str,
    operator_key: &str,
    model: &BenchModel,
    full: bool,
) -> anyhow::Result<f64> {
    let anonymous = Client::new(url.to_owned(), None)?;
    let signup = |name: &'static str| {
        let anonymous = anonymous.clone();
        async move {
            let created = anonymous
                .send_json(anonymous.request(reqwest::Method::POST, "/v1/accounts").json(&json!({"name": name})))
                .await?;
            anyhow::Ok(Client::new(url.to_owned(), created["api_key"].as_str().map(str::to_owned))?)
        }
    };
    let creator = signup("creator").await?;
    let caller = signup("caller").await?;
    let operator = Client::new(url.to_owned(), Some(operator_key.to_owned()))?;
    for (name, price) in [("free", "0"), ("paid", "1000")] {
        let body = json!({"name": name, "task": "regression", "price_per_inference": price});
        creator.send_json(creator.request(reqwest::Method::POST, "/v1/models").json(&body)).await?;
        let path = format!("/v1/models/creator/{name}/versions");
        let upload = creator
            .request(reqwest::Method::POST, &path)
            .header("content-type", "application/octet-stream")
            .body(model.bytes);
        creator.send_json(upload).await?;
    }
    let deposit = json!({"account": "caller", "amount": "1000000000000000", "reference": "bench"});
    operator.send_json(operator.request(reqwest::Method::POST, "/v1/admin/deposits").json(&deposit)).await?;

    let call = model.call();
    let phase = |name| http_phase(&caller, name, &call, args.clients, Duration::from_secs(args.seconds));
    if !full {
        return Ok(phase("paid").await?.per_second);
    }
    let raw = raw_model_calls_per_second(model, Duration::from_secs(args.seconds))?;
    println!("raw model (tract, one thread, no HTTP): {raw:.0} calls/s");
    let free = phase("free").await?;
    println!("free calls over HTTP ({} clients):      {}", args.clients, free.describe());
    let before = ledger_items(&operator).await?;
    let paid = phase("paid").await?;
    let after = ledger_items(&operator).await?;
    println!("paid calls over HTTP ({} clients):      {}", args.clients, paid.describe());
    println!(
        "ratios: paid / free = {:.2}, free / raw = {:.3}",
        paid.per_second / free.per_second,
        free.per_second / raw
    );
    let batches = after.0 - before.0;
    let items = after.1 - before.1;
    println!(
        "ledger: {items} commands in {batches} group commits (mean batch {:.1}, largest {}); {:.0} commits/s",
        items as f64 / batches.max(1) as f64,
        after.2,
        batches as f64 / args.seconds as f64
    );
    println!("batch sizes (upper bound: batches): {}", after.3);
    Ok(paid.per_second)
}

struct Phase {
    calls: u64,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Phase {
    fn describe(&self) -> String {
        format!(
            "{:.0} calls/s ({} calls, p50 {:.2} ms, p99 {:.2} ms)",
            self.per_second, self.calls, self.p50_ms, self.p99_ms
        )
    }
}

async fn http_phase(
    caller: &Client,
    model: &str,
    call: &Value,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Phase> {
    let body = Arc::new(call.clone());
    let path = Arc::new(format!("/v1/models/creator/{model}/infer"));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = vec![];
    for _ in 0..clients {
        let (caller, body, path) = (caller.clone(), body.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = vec![];
            while Instant::now() < deadline {
                let sent = Instant::now();
                caller.send_json(caller.request(reqwest::Method::POST, &path).json(&*body)).await?;
                latencies.push(sent.elapsed().as_secs_f64() * 1e3);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = vec![];
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    if latencies.is_empty() {
        bail!("no call finished");
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Ok(Phase {
        calls: latencies.len() as u64,
        per_second: latencies.len() as f64 / elapsed,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    })
}

fn raw_model_calls_per_second(model: &BenchModel, duration: Duration) -> anyhow::Result<f64> {
    let limits = runtime::ModelLimits { nodes_max: 10_000, initializer_bytes_max: 1 << 30 };
    let input = runtime::Tensor { shape: vec![1, model.width], data: runtime::TensorData::F32(model.input()) };
    let model = runtime::load_model(model.bytes, &limits)?;
    let started = Instant::now();
    let mut calls = 0u64;
    while started.elapsed() < duration {
        model.run(vec![input.clone()], u64::MAX)?;
        calls += 1;
    }
    Ok(calls as f64 / started.elapsed().as_secs_f64())
}

/// (batches, items, largest batch, histogram text) from the operator's ledger view.
async fn ledger_items(operator: &Client) -> anyhow::Result<(u64, u64, u64, String)> {
    let view: Value = operator.send_json(operator.request(reqwest::Method::GET, "/v1/admin/ledger")).await?;
    let sequencer = &view["sequencer"];
    let histogram: Vec<String> = sequencer["batch_sizes"]
        .as_array()
        .map(|buckets| {
            buckets
                .iter()
                .filter(|b| b[1].as_u64() != Some(0))
                .map(|b| format!("≤{}: {}", b[0].as_u64().map(|n| n.to_string()).unwrap_or("∞".into()), b[1]))
                .collect()
        })
        .unwrap_or_default();
    Ok((
        sequencer["batches"].as_u64().unwrap_or(0),
        sequencer["items"].as_u64().unwrap_or(0),
        sequencer["largest_batch"].as_u64().unwrap_or(0),
        histogram.join(", "),
    ))
}

/// Appends `count` realistic receipt leaves straight into a fresh store in
/// transactions of 1000 (a busy group commit), then times roots and proofs.
async fn log_bench(data_dir: &std::path::Path, count: u64) -> anyhow::Result<()> {
    const BATCH: u64 = 1000;
    std::fs::create_dir_all(data_dir)?;
    let store = store::Store::open(&data_dir.join(server::DATABASE_FILE)).await?;
    let key = tlog::NoteKey::from_seed("node-bench", &[7; 32]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    let mut signing = Duration::ZERO;
    let mut appended = 0;
    while appended < count {
        let n = BATCH.min(count - appended);
        let sign_started = Instant::now();
        let leaves: Vec<(Vec<u8>, Vec<u8>)> = (appended..appended + n)
            .map(|i| {
                let leaf = tlog::ReceiptLeaf {
                    created_at_ms: i as i64,
                    model: format!("creator-{}/model-{}", i % 50, i % 100),
                    version: 1,
                    blob_sha256: domain::Sha256::digest(&(i % 100).to_be_bytes()),
                    caller: domain::Sha256::digest(&(i % 1000).to_be_bytes()),
                    app: "bench".into(),
                    node: "node-bench".into(),
                    price: 1000,
                    creator_share: 800,
                    node_share: 150,
                    treasury_share: 50,
                    input_sha256: domain::Sha256::digest(&i.to_be_bytes()),
                    output_sha256: domain::Sha256::digest(&i.to_le_bytes()),
                    idempotency_key_sha256: None,
                }
                .encode()
                .expect("bench leaves encode");
                let signature = key.sign(&leaf).to_vec();
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

/// Fills a fresh market with `count` usage events over the last 30 days
/// (100 models, Zipf demand), through the same rollup code as live calls,
/// then times the stats routes over HTTP.
async fn usage_bench(data_dir: &std::path::Path, count: u64) -> anyhow::Result<()> {
    const MODELS: usize = 100;
    const BATCH: u64 = 100_000;
    let mut flags = toml::Table::new();
    flags.insert("data_dir".into(), data_dir.display().to_string().into());
    flags.insert("listen".into(), "127.0.0.1:0".into());
    // The bench's clients are one key from one address, by design.
    for limit in ["calls_per_key_concurrent_max", "calls_per_key_per_minute_max", "signups_per_address_per_hour"] {
        flags.insert(limit.into(), 0.into());
    }
    let config = server::Config::load(None, std::iter::empty(), flags)?;
    let (state, _) = server::open_state(config).await?;
    let store = state.store.clone();
    let mut models = vec![];
    for creator in 0..20 {
        let name: domain::AccountName = format!("creator-{creator:02}").parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        let account = store.create_account(&name, false, &domain::ApiKey::generate()).await?;
        for m in 0..MODELS / 20 {
            let task = domain::Task::ALL[(creator + m) % domain::Task::ALL.len()];
            let new = store::NewModel {
                name: format!("model-{m}").parse().map_err(|e| anyhow::anyhow!("{e}"))?,
                description: domain::Description::default(),
                task,
                license: domain::License::default(),
                tags: domain::Tags::default(),
                visibility: domain::Visibility::Public,
                price_per_inference: domain::Amount::from_minor_units(1000)?,
            };
            let record = store.create_model(&account, &new).await?;
            models.push((record.id, account.id, task));
        }
    }
    let weights: Vec<f64> = (1..=models.len()).map(|rank| 1.0 / (rank as f64).powf(1.1)).collect();
    let total_weight: f64 = weights.iter().sum();
    let cumulative: Vec<f64> = weights
        .iter()
        .scan(0.0, |acc, w| {
            *acc += w / total_weight;
            Some(*acc)
        })
        .collect();
    let mut rng = runtime::synthetic::Seeded::new(7);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let span = 30 * 86_400_000i64;
    let started = Instant::now();
    let mut written = 0;
    while written < count {
        let n = BATCH.min(count - written);
        // Events arrive in time order, as they would.
        let events: Vec<store::UsageEvent> = (written..written + n)
            .map(|i| {
                let u = rng.unit();
                let (model_id, owner_id, task) = models[cumulative.partition_point(|&c| c < u).min(models.len() - 1)];
                let caller = (rng.next_u64() % 5000).to_be_bytes();
                let mut pseudonym = [0u8; 32];
                pseudonym[..8].copy_from_slice(&domain::Sha256::digest(&caller).as_bytes()[..8]);
                store::UsageEvent {
                    created_at_ms: now - span + (span as f64 * i as f64 / count as f64) as i64,
                    model_id,
                    version: 1,
                    owner_id,
                    task: task.as_str().to_owned(),
                    public: true,
                    caller: pseudonym,
                    app: ["webshop", "mobile", "lab"][(i % 3) as usize].to_owned(),
                    node: "node-local".into(),
                    price: 1000,
                    creator_share: 800,
                    latency_us: 200 + rng.next_u64() % 5000,
                    cpu_us: 100 + rng.next_u64() % 4000,
                    status: "ok".into(),
                }
            })
            .collect();
        store.record_usage(&events).await?;
        written += n;
    }
    let elapsed = started.elapsed();
    println!(
        "recorded {count} usage events with rollups in {:.1} s ({:.0} events/s)",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );

    let running = server::RunningServer::start(state).await?;
    let url = running.url.clone();
    let http = reqwest::Client::new();
    // The busiest model: rank 1 of the Zipf demand.
    let top_name = "creator-00/model-0";
    for (label, path) in [
        ("market, 24h", "/v1/stats/market?window=24h".to_owned()),
        ("market, 30d", "/v1/stats/market?window=30d".to_owned()),
        ("market by creator, 30d", "/v1/stats/market?window=30d&by=creator".to_owned()),
        ("tasks, 30d", "/v1/stats/tasks".to_owned()),
        ("trending, 7d", "/v1/stats/trending?window=7d".to_owned()),
        (
            "busiest model's 30-day series",
            format!("/v1/stats/models/{top_name}?bucket=day&from={}", thirty_days_ago()?),
        ),
        (
            "busiest model's 7-day hourly series",
            format!("/v1/stats/models/{top_name}?bucket=hour&from={}", days_ago(7)?),
        ),
    ] {
        let mut times = vec![];
        for _ in 0..10 {
            let sent = Instant::now();
            let response = http.get(format!("{url}{path}")).send().await?;
            anyhow::ensure!(response.status().is_success(), "{path}: {}", response.status());
            response.bytes().await?;
            times.push(sent.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        println!("{label}: median {:.1} ms, max {:.1} ms (10 requests over HTTP)", times[5], times[9]);
    }
    running.stop().await?;
    let bytes = std::fs::metadata(data_dir.join(server::DATABASE_FILE))?.len();
    println!("database: {:.0} MiB", bytes as f64 / 1048576.0);
    Ok(())
}

fn days_ago(days: i64) -> anyhow::Result<String> {
    let t = time::OffsetDateTime::now_utc() - time::Duration::days(days);
    Ok(t.format(&time::format_description::well_known::Rfc3339)?)
}

fn thirty_days_ago() -> anyhow::Result<String> {
    days_ago(29)
}

fn store_now() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}
