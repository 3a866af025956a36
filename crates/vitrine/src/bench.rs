//! `vitrine bench`: the paid-inference path measured end to end on this
//! machine. Starts a server on a fresh data directory, then compares in one
//! run: the raw model (tract alone, no HTTP), free and paid calls over HTTP,
//! paid calls through the server's router in this process (no sockets), the
//! latency at half the paid rate, and a realistic model (milliseconds per
//! call) against the same model run raw on every thread, and on one worker
//! against one raw thread. Ratios between these
//! are what to compare across machines; absolute figures vary with the
//! machine. `--figures FILE` writes every figure as JSON; `--cores 1,2,4` runs the whole
//! comparison again pinned to that many cores (`taskset`), one child process
//! each, and tabulates how it scales.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::client::Client;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    pub(crate) clients: usize,
    /// Seconds each HTTP phase runs.
    #[arg(long, default_value_t = 5)]
    pub(crate) seconds: u64,
    /// Where the server keeps its data [default: a fresh temporary folder, removed after].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Also write every figure to this file, as JSON.
    #[arg(long, value_name = "FILE")]
    figures: Option<PathBuf>,
    /// Run the comparison pinned to each of these core counts (e.g. `1,2,4,8`),
    /// each in a child process under `taskset`, and tabulate the scaling.
    #[arg(long, value_delimiter = ',')]
    cores: Vec<usize>,
    /// Also measure a peer serving the tiny model (or `--model`) at
    /// Vitrine's inference route (`bench/python-peer/compare` starts one),
    /// with the same clients and body as the paid calls.
    #[arg(long, value_name = "URL")]
    peer: Option<String>,
    /// Layer widths of the realistic model (an MLP generated from a seed; the
    /// default takes about a millisecond per call, bound by memory bandwidth).
    #[arg(long, value_delimiter = ',', default_value = "64,2048,2048,2048,10")]
    realistic_widths: Vec<usize>,
    /// Instead: paid calls spread over this many nodes sharing one
    /// PostgreSQL database, for each count (e.g. `1,2,3`); needs --postgres.
    #[arg(long, value_delimiter = ',', requires = "postgres")]
    pub(crate) nodes: Vec<usize>,
    /// A PostgreSQL server where the bench creates (and then drops) a
    /// database per node count, e.g. postgres://postgres@127.0.0.1:5432/test.
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// Instead: measure the log alone, appending this many leaves, then
    /// timing proofs at that size.
    #[arg(long)]
    log_leaves: Option<u64>,
    /// Instead: record this many usage events over 30 days, then time the
    /// market query and a model's 30-day series.
    #[arg(long)]
    usage_events: Option<u64>,
    /// Instead: push this many paid calls' writes straight to the ledger's
    /// writer from `--clients` tasks (no HTTP, no model), and report its CPU
    /// per call: the ceiling of paid calls/s whatever the cores.
    #[arg(long)]
    ledger_calls: Option<u64>,
    /// Instead: paid calls of this ONNX model over HTTP, each with `--body`
    /// (and with `--peer`, the same calls to the peer): a real model against
    /// a peer serving it (`bench/real-models` runs it on production models).
    #[arg(long, value_name = "FILE", requires = "body")]
    model: Option<PathBuf>,
    /// The body of each call of `--model`: the API's JSON inputs.
    #[arg(long, value_name = "FILE", requires = "model")]
    body: Option<PathBuf>,
}

/// A model the bench calls, with one call's input.
pub(crate) struct BenchModel {
    name: String,
    bytes: Vec<u8>,
    /// Elements of the one input `x`, shape `[1, width]`.
    width: usize,
    /// The body of each call.
    call: Value,
}

impl BenchModel {
    /// A tiny model: where the cost around the model shows most.
    pub(crate) fn tiny() -> BenchModel {
        let width = 4;
        BenchModel {
            name: "linear 4-1".into(),
            bytes: include_bytes!("../../../fixtures/models/linear.onnx").to_vec(),
            width,
            call: f32_call(width),
        }
    }

    /// An MLP of `widths`, generated: milliseconds per call at the default.
    fn realistic(widths: &[usize]) -> anyhow::Result<BenchModel> {
        if widths.len() < 2 || widths.contains(&0) {
            bail!("--realistic-widths needs two or more widths above 0");
        }
        let name = format!("MLP {}", widths.iter().map(usize::to_string).collect::<Vec<_>>().join("-"));
        let model = runtime::synthetic::mlp(widths, 1);
        Ok(BenchModel { name, bytes: model.bytes, width: widths[0], call: f32_call(widths[0]) })
    }

    /// A model file and the JSON body each call sends.
    fn from_files(model: &std::path::Path, body: &std::path::Path) -> anyhow::Result<BenchModel> {
        let bytes = std::fs::read(model).with_context(|| format!("cannot read {}", model.display()))?;
        let text = std::fs::read(body).with_context(|| format!("cannot read {}", body.display()))?;
        let call: Value = serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", body.display()))?;
        if !call["inputs"].is_object() {
            bail!("{} is not a call's body: it has no \"inputs\" object", body.display());
        }
        let name = model.file_name().map_or_else(|| model.display().to_string(), |n| n.to_string_lossy().into_owned());
        Ok(BenchModel { name, bytes, width: 0, call })
    }

    fn input(&self) -> Vec<f32> {
        f32_input(self.width)
    }
}

fn f32_input(width: usize) -> Vec<f32> {
    (0..width).map(|i| (i % 10) as f32 / 10.0).collect()
}

/// The body of a call with one input `x` of shape `[1, width]`.
fn f32_call(width: usize) -> Value {
    json!({"inputs": {"x": {"dtype": "f32", "shape": [1, width], "data": f32_input(width)}}})
}

/// Every figure of a run, by dotted name, for `--figures` and `--cores`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Report(Arc<Mutex<serde_json::Map<String, Value>>>);

impl Report {
    pub(crate) fn set(&self, name: &str, value: impl Into<Value>) {
        self.0.lock().expect("the report is never poisoned").insert(name.into(), value.into());
    }

    pub(crate) fn phase(&self, name: &str, phase: &Phase) {
        self.set(&format!("{name}.per_second"), phase.per_second);
        self.set(&format!("{name}.p50_ms"), phase.p50_ms);
        self.set(&format!("{name}.p99_ms"), phase.p99_ms);
    }

    fn value(&self) -> Value {
        Value::Object(self.0.lock().expect("never poisoned").clone())
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let temporary = args.data_dir.is_none();
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("vitrine-bench-{}-{}", std::process::id(), store_now())));
    // The benches of one part alone: a store of their own, removed after
    // unless it was asked for.
    let report = Report::default();
    let folders: Vec<PathBuf> = ["", "no-rollups", "isolation-process", "isolation-none", "realistic", "realistic-one"]
        .iter()
        .map(|suffix| if suffix.is_empty() { data_dir.clone() } else { data_dir.with_extension(suffix) })
        .collect();
    if temporary {
        folders.iter().for_each(|folder| crate::remove_at_a_quiet_end(folder.clone()));
    }
    let alone = if let Some(events) = args.usage_events {
        Some(usage_bench(&data_dir, events).await)
    } else if let Some(leaves) = args.log_leaves {
        Some(log_bench(&data_dir, leaves).await)
    } else if let Some(calls) = args.ledger_calls {
        Some(crate::bench_writer::run(&data_dir, calls, args.clients, &report).await)
    } else {
        None
    };
    if let Some(result) = alone {
        if temporary {
            let _ = std::fs::remove_dir_all(&data_dir);
        }
        result?;
        return write_figures(&args, &report);
    }
    if let Some(postgres) = &args.postgres {
        let result = crate::bench_nodes::run(&args, postgres, &data_dir, &report).await;
        let _ = std::fs::remove_dir_all(&data_dir);
        result?;
        return write_figures(&args, &report);
    }
    let result = if let (Some(model), Some(body)) = (&args.model, &args.body) {
        match BenchModel::from_files(model, body) {
            Ok(model) => model_against_peer(&args, &data_dir, &model, &report).await,
            Err(e) => Err(e),
        }
    } else if args.cores.is_empty() {
        compare(&args, &data_dir, &report).await
    } else {
        scaling(&args, &report)
    };
    if temporary {
        for folder in &folders {
            let _ = std::fs::remove_dir_all(folder);
        }
    }
    result?;
    write_figures(&args, &report)
}

fn write_figures(args: &BenchArgs, report: &Report) -> anyhow::Result<()> {
    if let Some(path) = &args.figures {
        let text = serde_json::to_string_pretty(&report.value())?;
        std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The whole comparison: the tiny model raw, free, paid and paid without
/// HTTP, then at half the paid rate; paid calls without usage rollups; the
/// cost of isolation (models in worker processes, the default, against
/// models in the server's process); and the realistic model paid over HTTP
/// against the same model raw on as many threads as this process may use.
async fn compare(args: &BenchArgs, data_dir: &std::path::Path, report: &Report) -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    report.set("cores", threads as u64);
    report.set("clients", args.clients as u64);
    println!("{threads} cores available, {} clients, {} s per phase", args.clients, args.seconds);
    let (tiny, realistic) = (BenchModel::tiny(), BenchModel::realistic(&args.realistic_widths)?);
    let (tiny, realistic) = (&tiny, &realistic);
    let paid = with_server(data_dir, &[], |server| async move {
        let setup = Setup::new(&server, tiny).await?;
        full_comparison(args, &server, &setup, tiny, report).await
    })
    .await?;
    let unrolled =
        with_server(&data_dir.with_extension("no-rollups"), &[("analytics_rollups", false.into())], |s| async move {
            let setup = Setup::new(&s, tiny).await?;
            Ok(setup.phase(args, "paid").await?.per_second)
        })
        .await?;
    report.set("tiny.paid_without_rollups.per_second", unrolled);
    println!("paid calls without usage rollups: {unrolled:.0} calls/s; with / without = {:.2}", paid / unrolled);
    for (label, model) in [("tiny", tiny), ("realistic", realistic)] {
        let mut rates = Vec::new();
        for isolation in ["process", "none"] {
            let directory = data_dir.with_extension(format!("isolation-{isolation}"));
            let settings = [("isolation", isolation.into())];
            let rate = with_server(&directory, &settings, |server| async move {
                let setup = Setup::new(&server, model).await?;
                Ok(setup.phase(args, "paid").await?.per_second)
            })
            .await;
            let _ = std::fs::remove_dir_all(&directory);
            rates.push(rate?);
        }
        report.set(&format!("{label}.isolated_over_in_process"), rates[0] / rates[1]);
        println!(
            "isolation, {}: paid calls {:.0}/s in worker processes, {:.0}/s in the server's process; isolated / in-process = {:.2}",
            model.name,
            rates[0],
            rates[1],
            rates[0] / rates[1]
        );
    }
    // The realistic model: what a buyer of inference pays around the model.
    // Raw just before and just after the paid phase, against their mean: on
    // a shared host this memory-bound model's raw rate can move by half
    // between runs minutes apart (the last-level cache is the host's).
    let single = raw_calls_per_second(realistic, 1, Duration::from_secs(args.seconds.min(3)))?;
    let raw_before = raw_calls_per_second(realistic, threads, Duration::from_secs(args.seconds))?;
    let (paid, uses) = with_server(&data_dir.with_extension("realistic"), &[], |server| async move {
        let setup = Setup::new(&server, realistic).await?;
        workers_busy(&server, setup.phase(args, "paid")).await
    })
    .await?;
    let raw_after = raw_calls_per_second(realistic, threads, Duration::from_secs(args.seconds))?;
    let raw = (raw_before + raw_after) / 2.0;
    report.set("realistic.model", realistic.name.clone());
    report.set("realistic.ms_per_call", 1e3 / single);
    report.set("realistic.raw_threads", threads as u64);
    report.set("realistic.raw_before.per_second", raw_before);
    report.set("realistic.raw_after.per_second", raw_after);
    report.set("realistic.raw.per_second", raw);
    report.phase("realistic.paid", &paid);
    report.set("realistic.paid.workers_busy", uses.busy);
    report.set("realistic.paid.pipelined", uses.pipelined);
    report.set("realistic.paid.process_cpu_us_per_call", uses.process_cpu_us_per_call);
    report.set("realistic.paid_over_raw", paid.per_second / raw);
    println!(
        "realistic model, {} ({:.2} ms per call on one thread): raw on {threads} threads {raw:.0} calls/s (before the paid \
         phase {raw_before:.0}, after it {raw_after:.0}); paid over HTTP {} \
         (its workers busy {:.0}% of the time, {:.0}% of calls pipelined; this process {:.0} µs of CPU per call); \
         paid / raw = {:.2}",
        realistic.name,
        1e3 / single,
        paid.describe(),
        uses.busy * 100.0,
        uses.pipelined * 100.0,
        uses.process_cpu_us_per_call,
        paid.per_second / raw
    );
    // One worker against one raw thread: what the paid path costs around the
    // model when the server has cores of its own (with a worker per core, as
    // above, the server's threads and the model's share them).
    let settings = [("inference_threads", 1.into())];
    let (one, uses) = with_server(&data_dir.with_extension("realistic-one"), &settings, |server| async move {
        let setup = Setup::new(&server, realistic).await?;
        workers_busy(&server, setup.phase(args, "paid")).await
    })
    .await?;
    report.phase("realistic.one_worker.paid", &one);
    report.set("realistic.one_worker.paid.workers_busy", uses.busy);
    report.set("realistic.one_worker.paid.pipelined", uses.pipelined);
    report.set("realistic.one_worker.paid.process_cpu_us_per_call", uses.process_cpu_us_per_call);
    report.set("realistic.one_worker.paid_over_raw", one.per_second / single);
    println!(
        "realistic model on one worker: paid over HTTP {} (the worker busy {:.0}% of the time, {:.0}% of calls \
         pipelined; this process {:.0} µs of CPU per call); paid / raw on one thread ({single:.0} calls/s) = {:.2}",
        one.describe(),
        uses.busy * 100.0,
        uses.pipelined * 100.0,
        uses.process_cpu_us_per_call,
        one.per_second / single
    );
    Ok(())
}

/// What a phase asked of the server's model workers, and of this process.
struct WorkerUse {
    /// The workers' CPU time over theirs and the phase's wall time (the rest
    /// is time a worker waited for its next request, or for a core).
    busy: f64,
    /// The share of calls written to a busy worker behind the call it ran.
    pipelined: f64,
    /// CPU time of this process (the server and the bench's clients, not
    /// the workers) per call, in microseconds: what they take from the
    /// workers' cores when they share them.
    process_cpu_us_per_call: f64,
}

/// `phase`, and what it asked of the workers and of this process.
async fn workers_busy(
    server: &BenchServer,
    phase: impl std::future::Future<Output = anyhow::Result<Phase>>,
) -> anyhow::Result<(Phase, WorkerUse)> {
    let before = crate::bench_writer::children_cpu_ms()?;
    let pipelined_before = pipelined_calls(&server.url).await?;
    let meter = crate::bench_writer::CpuMeter::start()?;
    let started = Instant::now();
    let phase = phase.await?;
    let wall_ms = started.elapsed().as_secs_f64() * 1e3;
    let process_ms = meter.used()?.process_ms;
    let used_ms: u64 = crate::bench_writer::children_cpu_ms()?
        .into_iter()
        .map(|(pid, ms)| ms.saturating_sub(before.get(&pid).copied().unwrap_or(0)))
        .sum();
    let pipelined = pipelined_calls(&server.url).await?.saturating_sub(pipelined_before);
    let calls = phase.calls.max(1) as f64;
    let uses = WorkerUse {
        busy: used_ms as f64 / (wall_ms * server.workers.max(1) as f64),
        pipelined: pipelined as f64 / calls,
        process_cpu_us_per_call: process_ms as f64 * 1e3 / calls,
    };
    Ok((phase, uses))
}

/// The server's count of calls written to a busy worker ahead of their turn.
async fn pipelined_calls(url: &str) -> anyhow::Result<u64> {
    const NAME: &str = "vitrine_worker_requests_pipelined_total ";
    let text = reqwest::get(format!("{url}/metrics")).await?.error_for_status()?.text().await?;
    let line = text.lines().find_map(|line| line.strip_prefix(NAME)).context("no pipelining count in /metrics")?;
    Ok(line.trim().parse()?)
}

/// A running server for one phase: its URL, operator key and router.
pub(crate) struct BenchServer {
    pub(crate) url: String,
    /// Its model workers at most (`inference_threads`, resolved).
    pub(crate) workers: usize,
    pub(crate) operator_key: String,
    pub(crate) router: axum::Router,
}

/// Runs `work` against a fresh in-process server on `data_dir`, with
/// `VITRINE_*` settings applied (so a run can vary one, e.g.
/// `VITRINE_LEDGER_BATCH_MAX=1`) and then `settings`.
async fn with_server<T, F, Fut>(
    data_dir: &std::path::Path,
    settings: &[(&str, toml::Value)],
    work: F,
) -> anyhow::Result<T>
where
    F: FnOnce(BenchServer) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
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
    let workers = config.inference_threads();
    let (state, operator_key) = server::open_state(config).await.context("cannot start the server")?;
    let operator_key = operator_key.context("the bench needs a fresh data directory")?;
    let router = server::router(state.clone());
    let running = server::RunningServer::start(state).await?;
    let url = running.url.clone();
    let server = BenchServer { url, workers, operator_key: operator_key.expose().to_owned(), router };
    let result = work(server).await;
    running.stop().await?;
    result
}

/// A creator with two copies of a model (free and paid), and a caller with
/// a balance.
pub(crate) struct Setup {
    pub(crate) caller: Client,
    pub(crate) caller_key: String,
    pub(crate) operator: Client,
    pub(crate) call: Value,
}

impl Setup {
    pub(crate) async fn new(server: &BenchServer, model: &BenchModel) -> anyhow::Result<Setup> {
        let url = server.url.clone();
        let anonymous = Client::new(url.clone(), None)?;
        let signup = |name: &'static str| {
            let anonymous = anonymous.clone();
            async move {
                let body = json!({"name": name});
                let created: server::wire::CreatedAccount =
                    anonymous.send_as(anonymous.request(reqwest::Method::POST, "/v1/accounts").json(&body)).await?;
                anyhow::Ok(created.api_key)
            }
        };
        let creator = Client::new(url.clone(), Some(signup("creator").await?))?;
        let caller_key = signup("caller").await?;
        let caller = Client::new(url.clone(), Some(caller_key.clone()))?;
        let operator = Client::new(url, Some(server.operator_key.clone()))?;
        for (name, price) in [("free", "0"), ("paid", "1000")] {
            let body = json!({"name": name, "task": "regression", "price_per_inference": price});
            creator.send_json(creator.request(reqwest::Method::POST, "/v1/models").json(&body)).await?;
            let path = format!("/v1/models/creator/{name}/versions");
            let upload = creator
                .request(reqwest::Method::POST, &path)
                .header("content-type", "application/octet-stream")
                .body(model.bytes.clone());
            creator.send_json(upload).await?;
        }
        let deposit = json!({"account": "caller", "amount": "1000000000000000", "reference": "bench"});
        operator.send_json(operator.request(reqwest::Method::POST, "/v1/admin/deposits").json(&deposit)).await?;
        Ok(Setup { caller, caller_key, operator, call: model.call.clone() })
    }

    /// Calls `model` ("free" or "paid") over HTTP from every client, back to back.
    async fn phase(&self, args: &BenchArgs, model: &str) -> anyhow::Result<Phase> {
        let pace = Pace { clients: args.clients, duration: Duration::from_secs(args.seconds), per_second: None };
        http_phase(std::slice::from_ref(&self.caller), model, &self.call, pace).await
    }
}

/// `--model`: its paid calls over HTTP, and the peer's calls of the same
/// body with the same clients, one after the other.
async fn model_against_peer(
    args: &BenchArgs,
    data_dir: &std::path::Path,
    model: &BenchModel,
    report: &Report,
) -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{threads} cores available, {} clients, {} s per phase; {}", args.clients, args.seconds, model.name);
    report.set("cores", threads as u64);
    report.set("clients", args.clients as u64);
    report.set("model.name", model.name.clone());
    let (paid, latency_ms) = with_server(data_dir, &[], |server| async move {
        let setup = Setup::new(&server, model).await?;
        // Warm the workers (each loads the model at its first call).
        for _ in 0..server.workers * 2 {
            setup
                .caller
                .send_json(
                    setup.caller.request(reqwest::Method::POST, "/v1/models/creator/paid/infer").json(&setup.call),
                )
                .await?;
        }
        let answer: market::InferResponse = setup
            .caller
            .send_as(setup.caller.request(reqwest::Method::POST, "/v1/models/creator/paid/infer").json(&setup.call))
            .await?;
        let latency_ms = answer.latency_ms;
        anyhow::Ok((setup.phase(args, "paid").await?, latency_ms))
    })
    .await?;
    report.phase("model.paid", &paid);
    report.set("model.latency_ms", latency_ms);
    println!(
        "paid calls over HTTP ({} clients): {} (one call alone: latency_ms {latency_ms:.2})",
        args.clients,
        paid.describe()
    );
    if let Some(url) = &args.peer {
        let peer = Client::new(url.trim_end_matches('/').to_owned(), None)?;
        let pace = Pace { clients: args.clients, duration: Duration::from_secs(args.seconds), per_second: None };
        let peer = http_phase(&[peer], "peer", &model.call, pace).await?;
        report.phase("model.peer", &peer);
        report.set("model.paid_over_peer", paid.per_second / peer.per_second);
        println!("the peer at {url} ({} clients): {}", args.clients, peer.describe());
        println!("paid / peer = {:.2}", paid.per_second / peer.per_second);
    }
    Ok(())
}

/// The tiny model's full comparison on one server; returns its paid rate.
async fn full_comparison(
    args: &BenchArgs,
    server: &BenchServer,
    setup: &Setup,
    model: &BenchModel,
    report: &Report,
) -> anyhow::Result<f64> {
    let duration = Duration::from_secs(args.seconds);
    let raw = raw_calls_per_second(model, 1, duration)?;
    report.set("tiny.raw_one_thread.per_second", raw);
    println!("raw model (tract, one thread, no HTTP): {raw:.0} calls/s");
    let free = setup.phase(args, "free").await?;
    report.phase("tiny.free", &free);
    println!("free calls over HTTP ({} clients):      {}", args.clients, free.describe());
    let before = ledger_items(&setup.operator).await?;
    let meter = crate::bench_writer::CpuMeter::start()?;
    let paid = setup.phase(args, "paid").await?;
    let used = meter.used()?;
    let after = ledger_items(&setup.operator).await?;
    report.phase("tiny.paid", &paid);
    println!("paid calls over HTTP ({} clients):      {}", args.clients, paid.describe());
    // Per call, whatever share of the machine the host left this run.
    let per_call = |ms: u64| ms as f64 * 1e3 / paid.calls.max(1) as f64;
    report.set("tiny.paid.process_cpu_us_per_call", per_call(used.process_ms));
    report.set("tiny.paid.writer_cpu_us_per_call", per_call(used.writer_ms));
    println!(
        "CPU per paid call: {:.1} µs in this process (server and clients; worker processes apart), {:.1} µs of it \
         the writer's",
        per_call(used.process_ms),
        per_call(used.writer_ms)
    );
    report.set("tiny.paid_over_free", paid.per_second / free.per_second);
    println!(
        "ratios: paid / free = {:.2}, free / raw = {:.3}",
        paid.per_second / free.per_second,
        free.per_second / raw
    );
    let batches = after.0 - before.0;
    let items = after.1 - before.1;
    report.set("ledger.group_commits_per_second", batches as f64 / args.seconds as f64);
    report.set("ledger.mean_batch", items as f64 / batches.max(1) as f64);
    println!(
        "ledger: {items} commands in {batches} group commits (mean batch {:.1}, largest {}); {:.0} commits/s",
        items as f64 / batches.max(1) as f64,
        after.2,
        batches as f64 / args.seconds as f64
    );
    println!("batch sizes (upper bound: batches): {}", after.3);
    if let Some(url) = &args.peer {
        let peer = Client::new(url.trim_end_matches('/').to_owned(), None)?;
        let pace = Pace { clients: args.clients, duration, per_second: None };
        let peer = http_phase(&[peer], "peer", &setup.call, pace).await?;
        report.phase("tiny.peer", &peer);
        report.set("tiny.paid_over_peer", paid.per_second / peer.per_second);
        println!("the peer at {url} ({} clients):  {}", args.clients, peer.describe());
        println!("paid / peer = {:.2}", paid.per_second / peer.per_second);
    }
    let direct = router_phase(server, setup, args.clients, duration).await?;
    report.phase("tiny.paid_without_http", &direct);
    report.set("tiny.paid_over_paid_without_http", paid.per_second / direct.per_second);
    println!(
        "paid calls through the router, no sockets ({} tasks): {}; over HTTP / without = {:.2}",
        args.clients,
        direct.describe(),
        paid.per_second / direct.per_second
    );
    // Latency where a server should run: at half the rate it can take.
    let pace = Pace { clients: args.clients, duration, per_second: Some(paid.per_second / 2.0) };
    let half = http_phase(std::slice::from_ref(&setup.caller), "paid", &setup.call, pace).await?;
    report.phase("tiny.paid_at_half_rate", &half);
    println!("paid calls at half that rate ({:.0}/s offered): {}", paid.per_second / 2.0, half.describe());
    Ok(paid.per_second)
}

pub(crate) struct Phase {
    pub(crate) calls: u64,
    pub(crate) per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Phase {
    pub(crate) fn describe(&self) -> String {
        format!(
            "{:.0} calls/s ({} calls, p50 {:.2} ms, p99 {:.2} ms)",
            self.per_second, self.calls, self.p50_ms, self.p99_ms
        )
    }

    fn from_latencies(mut latencies: Vec<f64>, elapsed: f64) -> anyhow::Result<Phase> {
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
}

/// How a phase sends: `clients` at once for `duration`, back to back, or
/// together at `per_second` (each client on its own schedule, so a slow
/// answer does not lower the rate offered: latency is measured from when
/// the call was due).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    pub(crate) clients: usize,
    pub(crate) duration: Duration,
    pub(crate) per_second: Option<f64>,
}

/// Client `i` sends through `callers[i % callers.len()]` (one per node).
pub(crate) async fn http_phase(callers: &[Client], model: &str, call: &Value, pace: Pace) -> anyhow::Result<Phase> {
    let body = Arc::new(call.clone());
    let path = Arc::new(format!("/v1/models/creator/{model}/infer"));
    let started = Instant::now();
    let deadline = started + pace.duration;
    let interval = pace.per_second.map(|rate| Duration::from_secs_f64(pace.clients as f64 / rate.max(1e-3)));
    let mut tasks = vec![];
    for client in 0..pace.clients {
        let (caller, body, path) = (callers[client % callers.len()].clone(), body.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = vec![];
            // Paced clients start spread over one interval.
            let mut due = started + interval.map_or(Duration::ZERO, |i| i.mul_f64(client as f64 / pace.clients as f64));
            while due < deadline {
                if interval.is_some() {
                    tokio::time::sleep_until(due.into()).await;
                }
                let sent = if interval.is_some() { due } else { Instant::now() };
                caller.send_json(caller.request(reqwest::Method::POST, &path).json(&*body)).await?;
                latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                due = match interval {
                    Some(interval) => due + interval,
                    None => Instant::now(),
                };
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = vec![];
    for task in tasks {
        latencies.extend(task.await??);
    }
    Phase::from_latencies(latencies, started.elapsed().as_secs_f64())
}

/// Paid calls handed to the server's router in this process: everything a
/// call costs but the sockets and HTTP parsing.
async fn router_phase(server: &BenchServer, setup: &Setup, tasks: usize, duration: Duration) -> anyhow::Result<Phase> {
    use tower::ServiceExt;
    let body = axum::body::Bytes::from(serde_json::to_vec(&setup.call)?);
    let authorization = format!("Bearer {}", setup.caller_key);
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    let started = Instant::now();
    let deadline = started + duration;
    let mut handles = vec![];
    for _ in 0..tasks {
        let (router, body, authorization) = (server.router.clone(), body.clone(), authorization.clone());
        handles.push(tokio::spawn(async move {
            let mut latencies = vec![];
            while Instant::now() < deadline {
                let mut request = axum::http::Request::post("/v1/models/creator/paid/infer")
                    .header("authorization", &authorization)
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(body.clone()))?;
                request.extensions_mut().insert(axum::extract::ConnectInfo(address));
                let sent = Instant::now();
                let response = router.clone().oneshot(request).await?;
                let status = response.status();
                let answer = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
                if !status.is_success() {
                    bail!("a paid call answered {status}: {}", String::from_utf8_lossy(&answer));
                }
                latencies.push(sent.elapsed().as_secs_f64() * 1e3);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = vec![];
    for handle in handles {
        latencies.extend(handle.await??);
    }
    Phase::from_latencies(latencies, started.elapsed().as_secs_f64())
}

/// The model run by tract alone on `threads` threads, each with its own
/// copy, back to back: calls per second, all threads together.
fn raw_calls_per_second(model: &BenchModel, threads: usize, duration: Duration) -> anyhow::Result<f64> {
    let limits = runtime::ModelLimits::TRUSTED;
    let input = runtime::Tensor { shape: vec![1, model.width], data: runtime::TensorData::F32(model.input()) };
    let loaded = (0..threads).map(|_| runtime::load_model(&model.bytes, &limits)).collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    let calls: u64 = std::thread::scope(|scope| {
        let workers: Vec<_> = loaded
            .iter()
            .map(|model| {
                let input = input.clone();
                scope.spawn(move || {
                    let mut calls = 0u64;
                    while started.elapsed() < duration {
                        model.run(vec![input.clone()], u64::MAX)?;
                        calls += 1;
                    }
                    anyhow::Ok(calls)
                })
            })
            .collect();
        let mut calls = 0;
        for worker in workers {
            calls += worker.join().map_err(|_| anyhow::anyhow!("a raw thread panicked"))??;
        }
        anyhow::Ok(calls)
    })?;
    Ok(calls as f64 / started.elapsed().as_secs_f64())
}

/// `--cores`: the comparison again in a child process per core count,
/// pinned with `taskset` to the first that many cores, then a table.
fn scaling(args: &BenchArgs, report: &Report) -> anyhow::Result<()> {
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let exe = std::env::current_exe()?;
    let mut rows = vec![];
    for &cores in &args.cores {
        if cores == 0 || cores > available {
            println!("{cores} cores: skipped ({available} available)");
            continue;
        }
        let json = std::env::temp_dir().join(format!("vitrine-bench-{}-{cores}.json", std::process::id()));
        let widths = args.realistic_widths.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        println!("— {cores} cores —");
        let status = std::process::Command::new("taskset")
            .arg("-c")
            .arg(format!("0-{}", cores - 1))
            .arg(&exe)
            .args(["bench", "--clients", &args.clients.to_string(), "--seconds", &args.seconds.to_string()])
            .args(["--realistic-widths", &widths, "--figures"])
            .arg(&json)
            .status()
            .context("cannot run taskset (util-linux)")?;
        if !status.success() {
            bail!("the bench on {cores} cores failed: {status}");
        }
        let figures: Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
        let _ = std::fs::remove_file(&json);
        rows.push((cores, figures));
    }
    println!(
        "\ncores  tiny free/s  tiny paid/s  paid/free  p99 at half (ms)  realistic raw/s  realistic paid/s  paid/raw  \
         one worker paid/raw"
    );
    let figure = |figures: &Value, name: &str| figures[name].as_f64().unwrap_or(f64::NAN);
    for (cores, figures) in &rows {
        println!(
            "{cores:>5}  {:>11.0}  {:>11.0}  {:>9.2}  {:>16.2}  {:>15.0}  {:>16.0}  {:>8.2}  {:>19.2}",
            figure(figures, "tiny.free.per_second"),
            figure(figures, "tiny.paid.per_second"),
            figure(figures, "tiny.paid_over_free"),
            figure(figures, "tiny.paid_at_half_rate.p99_ms"),
            figure(figures, "realistic.raw.per_second"),
            figure(figures, "realistic.paid.per_second"),
            figure(figures, "realistic.paid_over_raw"),
            figure(figures, "realistic.one_worker.paid_over_raw"),
        );
    }
    if let [(first_cores, first), .., (last_cores, last)] = rows.as_slice() {
        let speedup = figure(last, "tiny.paid.per_second") / figure(first, "tiny.paid.per_second");
        let ideal = *last_cores as f64 / *first_cores as f64;
        report.set("scaling.tiny_paid_speedup", speedup);
        report.set("scaling.tiny_paid_fraction_of_linear", speedup / ideal);
        println!(
            "tiny paid, {first_cores} → {last_cores} cores: ×{speedup:.2} (linear would be ×{ideal:.0}; {:.2} of linear)",
            speedup / ideal
        );
    }
    report.set(
        "scaling.runs",
        Value::Array(rows.into_iter().map(|(cores, f)| json!({"cores": cores, "figures": f})).collect()),
    );
    Ok(())
}

/// (batches, items, largest batch, histogram text) from the operator's ledger view.
pub(crate) async fn ledger_items(operator: &Client) -> anyhow::Result<(u64, u64, u64, String)> {
    let view: server::wire::LedgerView =
        operator.send_as(operator.request(reqwest::Method::GET, "/v1/admin/ledger")).await?;
    let sequencer = view.sequencer;
    let histogram: Vec<String> = sequencer
        .batch_sizes
        .iter()
        .filter(|(_, count)| *count != 0)
        .map(|(bound, count)| format!("≤{}: {count}", bound.map(|n| n.to_string()).unwrap_or("∞".into())))
        .collect();
    Ok((sequencer.batches, sequencer.items, sequencer.largest_batch, histogram.join(", ")))
}

/// The `i`th of a bench's receipt leaves: a paid call of `model` (its file
/// `blob`) by `caller`, with inputs and outputs of its own.
pub(crate) fn receipt_leaf(i: u64, model: String, blob: domain::Sha256, caller: domain::Sha256) -> tlog::ReceiptLeaf {
    tlog::ReceiptLeaf {
        format: tlog::leaf::LEAF_FORMAT_VERSION,
        created_at_ms: i as i64,
        model,
        version: 1,
        blob_sha256: blob,
        caller,
        app: "bench".into(),
        node: "node-bench".into(),
        task: "regression".into(),
        price: 1000,
        creator_share: 800,
        node_share: 150,
        treasury_share: 50,
        input_sha256: domain::Sha256::digest(&i.to_be_bytes()),
        output_sha256: domain::Sha256::digest(&i.to_le_bytes()),
        idempotency_key_sha256: None,
        error: String::new(),
    }
}

/// Appends `count` realistic receipt leaves straight into a fresh store in
/// transactions of 1000 (a busy group commit), then times roots and proofs.
async fn log_bench(data_dir: &std::path::Path, count: u64) -> anyhow::Result<()> {
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
