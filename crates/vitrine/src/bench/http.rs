//! What the bench's modes share: the models they call, a server started in
//! this process, a creator and a caller set up on it, HTTP phases and their
//! latencies, and the CPU a phase asked of the workers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Common, PhaseFigures};
use crate::client::Client;

/// A model the bench calls, with one call's input.
pub(crate) struct BenchModel {
    pub(crate) name: String,
    bytes: Vec<u8>,
    /// Elements of the one input `x`, shape `[1, width]`.
    width: usize,
    /// The body of each call.
    pub(crate) call: Value,
}

impl BenchModel {
    /// A tiny model: where the cost around the model shows most.
    pub(crate) fn tiny() -> BenchModel {
        let width = 4;
        BenchModel {
            name: "linear 4-1".into(),
            bytes: include_bytes!("../../../../fixtures/models/linear.onnx").to_vec(),
            width,
            call: f32_call(width),
        }
    }

    /// An MLP of `widths`, generated: milliseconds per call at the default.
    pub(crate) fn realistic(widths: &[usize]) -> anyhow::Result<BenchModel> {
        if widths.len() < 2 || widths.contains(&0) {
            bail!("--realistic-widths needs two or more widths above 0");
        }
        let name = format!("MLP {}", widths.iter().map(usize::to_string).collect::<Vec<_>>().join("-"));
        let model = runtime::synthetic::mlp(widths, 1);
        Ok(BenchModel { name, bytes: model.bytes, width: widths[0], call: f32_call(widths[0]) })
    }

    /// A model file and the JSON body each call sends.
    pub(crate) fn from_files(model: &std::path::Path, body: &std::path::Path) -> anyhow::Result<BenchModel> {
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

/// A running server for one phase: its URL, operator key and router.
pub(crate) struct BenchServer {
    pub(crate) url: String,
    /// Its model workers at most (`inference_threads`, resolved).
    pub(crate) workers: usize,
    pub(crate) operator_key: String,
    pub(crate) router: axum::Router,
    /// The paid call itself, for calls made without HTTP at all.
    pub(crate) market: Arc<market::Market>,
}

/// Runs `work` against a fresh in-process server on `data_dir`, with
/// `VITRINE_*` settings applied (so a run can vary one, e.g.
/// `VITRINE_LEDGER_BATCH_MAX=1`) and then `settings`.
pub(crate) async fn with_server<T, F, Fut>(
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
    let market = state.market.clone();
    let running = server::RunningServer::start(state).await?;
    let url = running.url.clone();
    let server = BenchServer { url, workers, operator_key: operator_key.expose().to_owned(), router, market };
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
    pub(crate) async fn phase(&self, common: &Common, model: &str) -> anyhow::Result<Phase> {
        let pace = Pace { clients: common.clients, duration: Duration::from_secs(common.seconds), per_second: None };
        http_phase(std::slice::from_ref(&self.caller), model, &self.call, pace).await
    }
}

/// What a phase asked of the server's model workers, and of this process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct WorkerUse {
    /// The workers' CPU time over theirs and the phase's wall time (the rest
    /// is time a worker waited for its next request, or for a core).
    pub(crate) busy: f64,
    /// The share of calls written to a busy worker behind the call it ran.
    pub(crate) pipelined: f64,
    /// CPU time of this process (the server and the bench's clients, not
    /// the workers) per call, in microseconds: what they take from the
    /// workers' cores when they share them.
    pub(crate) process_cpu_us_per_call: f64,
}

/// `phase`, and what it asked of the workers and of this process.
pub(crate) async fn workers_busy(
    server: &BenchServer,
    phase: impl std::future::Future<Output = anyhow::Result<Phase>>,
) -> anyhow::Result<(Phase, WorkerUse)> {
    let before = super::ledger::children_cpu_ms()?;
    let pipelined_before = pipelined_calls(&server.url).await?;
    let meter = super::ledger::CpuMeter::start()?;
    let started = Instant::now();
    let phase = phase.await?;
    let wall_ms = started.elapsed().as_secs_f64() * 1e3;
    let process_ms = meter.used()?.process_ms;
    let used_ms: u64 = super::ledger::children_cpu_ms()?
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

pub(crate) struct Phase {
    pub(crate) calls: u64,
    pub(crate) per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Phase {
    pub(crate) fn figures(&self) -> PhaseFigures {
        PhaseFigures { per_second: self.per_second, p50_ms: self.p50_ms, p99_ms: self.p99_ms }
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "{:.0} calls/s ({} calls, p50 {:.2} ms, p99 {:.2} ms)",
            self.per_second, self.calls, self.p50_ms, self.p99_ms
        )
    }

    pub(crate) fn from_latencies(mut latencies: Vec<f64>, elapsed: f64) -> anyhow::Result<Phase> {
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
pub(crate) async fn router_phase(
    server: &BenchServer,
    setup: &Setup,
    tasks: usize,
    duration: Duration,
) -> anyhow::Result<Phase> {
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

/// Paid calls handed to the market (`market::Market::call`) in this
/// process: the paid call itself, without HTTP, JSON or the router.
pub(crate) async fn market_phase(
    server: &BenchServer,
    setup: &Setup,
    model: &BenchModel,
    tasks: usize,
    duration: Duration,
) -> anyhow::Result<Phase> {
    let market = &server.market;
    let key = domain::ApiKey::parse(&setup.caller_key)?;
    let caller = market.known_keys.account(&market.store, &key).await?.context("the bench's caller")?;
    let (owner, name) = ("creator".parse::<domain::AccountName>()?, "paid".parse::<domain::ModelName>()?);
    let paid = market.known_models.model(&market.store, &owner, &name).await?.context("the bench's paid model")?;
    let version = paid.latest_version.context("the paid model has a version")?;
    let input = runtime::Tensor { shape: vec![1, model.width], data: runtime::TensorData::F32(model.input()) };
    let inputs = std::collections::BTreeMap::from([("x".to_owned(), input)]);
    let started = Instant::now();
    let deadline = started + duration;
    let calls = (0..tasks).map(|_| async {
        let mut latencies = vec![];
        while Instant::now() < deadline {
            let sent = Instant::now();
            let request = market::CallRequest {
                caller: &caller,
                model: &paid,
                version,
                app: String::new(),
                at_ms: None,
                started: sent,
                idempotency: None,
                inputs: market::Inputs::Read(inputs.clone()),
                payment: None,
            };
            market.call(request).await.map_err(|e| anyhow::anyhow!("a paid call failed: {e}"))?;
            latencies.push(sent.elapsed().as_secs_f64() * 1e3);
        }
        anyhow::Ok(latencies)
    });
    let mut latencies = vec![];
    for done in futures_util::future::join_all(calls).await {
        latencies.extend(done?);
    }
    Phase::from_latencies(latencies, started.elapsed().as_secs_f64())
}

/// The model run by tract alone on `threads` threads, each with its own
/// copy, back to back: calls per second, all threads together.
pub(crate) fn raw_calls_per_second(model: &BenchModel, threads: usize, duration: Duration) -> anyhow::Result<f64> {
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
        payer: String::new(),
        settlement: String::new(),
    }
}
