//! The comparison (`vitrine bench` without a mode): the tiny model raw,
//! free, paid, paid without HTTP and at half the paid rate; paid calls
//! without usage rollups; the cost of isolation; and a realistic model paid
//! over HTTP against the same model raw. `--cores` runs it again pinned to
//! each core count and tabulates the scaling.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::http::{
    BenchModel, BenchServer, Pace, Setup, WorkerUse, http_phase, ledger_items, market_phase, raw_calls_per_second,
    router_phase, with_server, workers_busy,
};
use super::{Common, PhaseFigures};
use crate::client::Client;

/// The comparison's own options.
#[derive(Debug, Clone, Args)]
pub(crate) struct CompareArgs {
    /// Run the comparison pinned to each of these core counts (e.g. `1,2,4,8`),
    /// each in a child process under `taskset`, and tabulate the scaling.
    #[arg(long, value_delimiter = ',')]
    pub(crate) cores: Vec<usize>,
    /// Also measure a peer serving the tiny model at Vitrine's inference
    /// route (`bench/python-peer/compare` starts one), with the same
    /// clients and body as the paid calls.
    #[arg(long, value_name = "URL")]
    pub(crate) peer: Option<String>,
    /// Layer widths of the realistic model (an MLP generated from a seed; the
    /// default takes about a millisecond per call, bound by memory bandwidth).
    #[arg(long, value_delimiter = ',', default_value = "64,2048,2048,2048,10")]
    pub(crate) realistic_widths: Vec<usize>,
}

/// Every figure of a comparison.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct CompareFigures {
    /// Cores this process may use.
    pub(crate) cores: usize,
    pub(crate) clients: usize,
    pub(crate) tiny: TinyFigures,
    pub(crate) ledger: LedgerFigures,
    pub(crate) realistic: RealisticFigures,
}

/// The tiny model: where the cost around the model shows most.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct TinyFigures {
    /// tract alone, one thread, no HTTP.
    pub(crate) raw_one_thread_per_second: f64,
    pub(crate) free: PhaseFigures,
    pub(crate) paid: PhaseFigures,
    /// CPU of this process (server and clients; not the workers) per paid call.
    pub(crate) paid_process_cpu_us_per_call: f64,
    /// Of which the ledger's writer's.
    pub(crate) paid_writer_cpu_us_per_call: f64,
    pub(crate) paid_over_free: f64,
    /// With `--peer`.
    pub(crate) peer: Option<PhaseFigures>,
    pub(crate) paid_over_peer: Option<f64>,
    /// Through the router in this process: no sockets, no HTTP parsing.
    pub(crate) paid_without_http: PhaseFigures,
    pub(crate) paid_over_paid_without_http: f64,
    /// Handed to `market::Market::call`: the paid call alone, no HTTP,
    /// JSON or router.
    pub(crate) paid_market_only: PhaseFigures,
    pub(crate) paid_over_paid_market_only: f64,
    /// Offered at half the paid rate: the latency where a server should run.
    pub(crate) paid_at_half_rate: PhaseFigures,
    pub(crate) paid_without_rollups_per_second: f64,
    /// Paid calls/s in worker processes over those in the server's process.
    pub(crate) isolated_over_in_process: f64,
}

/// The ledger's group commits during the tiny model's paid phase.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct LedgerFigures {
    pub(crate) group_commits_per_second: f64,
    pub(crate) mean_batch: f64,
}

/// The realistic model: what a buyer of inference pays around the model.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct RealisticFigures {
    pub(crate) model: String,
    /// On one thread, raw.
    pub(crate) ms_per_call: f64,
    pub(crate) raw_threads: usize,
    pub(crate) raw_before_per_second: f64,
    pub(crate) raw_after_per_second: f64,
    /// The mean of before and after.
    pub(crate) raw_per_second: f64,
    pub(crate) paid: PhaseFigures,
    pub(crate) paid_use: WorkerUse,
    pub(crate) paid_over_raw: f64,
    /// One worker against one raw thread.
    pub(crate) one_worker_paid: PhaseFigures,
    pub(crate) one_worker_use: WorkerUse,
    pub(crate) one_worker_paid_over_raw: f64,
    pub(crate) isolated_over_in_process: f64,
}

/// `--cores`: a comparison per core count.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ScalingFigures {
    /// Tiny paid calls/s on the most cores over those on the fewest.
    pub(crate) tiny_paid_speedup: Option<f64>,
    pub(crate) tiny_paid_fraction_of_linear: Option<f64>,
    pub(crate) runs: Vec<ScalingRun>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ScalingRun {
    pub(crate) cores: usize,
    pub(crate) figures: CompareFigures,
}

/// The whole comparison: the tiny model raw, free, paid and paid without
/// HTTP, then at half the paid rate; paid calls without usage rollups; the
/// cost of isolation (models in worker processes, the default, against
/// models in the server's process); and the realistic model paid over HTTP
/// against the same model raw on as many threads as this process may use.
pub(crate) async fn compare(
    args: &Common,
    compare: &CompareArgs,
    data_dir: &std::path::Path,
) -> anyhow::Result<CompareFigures> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{threads} cores available, {} clients, {} s per phase", args.clients, args.seconds);
    let (tiny, realistic) = (BenchModel::tiny(), BenchModel::realistic(&compare.realistic_widths)?);
    let (tiny, realistic) = (&tiny, &realistic);
    let mut figures = with_server(data_dir, &[], |server| async move {
        let setup = Setup::new(&server, tiny).await?;
        full_comparison(args, compare.peer.as_deref(), &server, &setup, tiny).await
    })
    .await?;
    figures.cores = threads;
    figures.clients = args.clients;
    let paid = figures.tiny.paid.per_second;
    let unrolled =
        with_server(&data_dir.with_extension("no-rollups"), &[("analytics_rollups", false.into())], |s| async move {
            let setup = Setup::new(&s, tiny).await?;
            Ok(setup.phase(args, "paid").await?.per_second)
        })
        .await?;
    figures.tiny.paid_without_rollups_per_second = unrolled;
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
        match label {
            "tiny" => figures.tiny.isolated_over_in_process = rates[0] / rates[1],
            _ => figures.realistic.isolated_over_in_process = rates[0] / rates[1],
        }
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
    let real = &mut figures.realistic;
    real.model = realistic.name.clone();
    real.ms_per_call = 1e3 / single;
    real.raw_threads = threads;
    real.raw_before_per_second = raw_before;
    real.raw_after_per_second = raw_after;
    real.raw_per_second = raw;
    real.paid = paid.figures();
    real.paid_use = uses.clone();
    real.paid_over_raw = paid.per_second / raw;
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
    figures.realistic.one_worker_paid = one.figures();
    figures.realistic.one_worker_use = uses.clone();
    figures.realistic.one_worker_paid_over_raw = one.per_second / single;
    println!(
        "realistic model on one worker: paid over HTTP {} (the worker busy {:.0}% of the time, {:.0}% of calls \
         pipelined; this process {:.0} µs of CPU per call); paid / raw on one thread ({single:.0} calls/s) = {:.2}",
        one.describe(),
        uses.busy * 100.0,
        uses.pipelined * 100.0,
        uses.process_cpu_us_per_call,
        one.per_second / single
    );
    Ok(figures)
}

/// The tiny model's full comparison on one server; returns its paid rate.
async fn full_comparison(
    args: &Common,
    peer: Option<&str>,
    server: &BenchServer,
    setup: &Setup,
    model: &BenchModel,
) -> anyhow::Result<CompareFigures> {
    let mut figures = CompareFigures::default();
    let tiny = &mut figures.tiny;
    let duration = Duration::from_secs(args.seconds);
    let raw = raw_calls_per_second(model, 1, duration)?;
    tiny.raw_one_thread_per_second = raw;
    println!("raw model (tract, one thread, no HTTP): {raw:.0} calls/s");
    let free = setup.phase(args, "free").await?;
    tiny.free = free.figures();
    println!("free calls over HTTP ({} clients):      {}", args.clients, free.describe());
    let before = ledger_items(&setup.operator).await?;
    let meter = super::ledger::CpuMeter::start()?;
    let paid = setup.phase(args, "paid").await?;
    let used = meter.used()?;
    let after = ledger_items(&setup.operator).await?;
    tiny.paid = paid.figures();
    println!("paid calls over HTTP ({} clients):      {}", args.clients, paid.describe());
    // Per call, whatever share of the machine the host left this run.
    let per_call = |ms: u64| ms as f64 * 1e3 / paid.calls.max(1) as f64;
    tiny.paid_process_cpu_us_per_call = per_call(used.process_ms);
    tiny.paid_writer_cpu_us_per_call = per_call(used.writer_ms);
    println!(
        "CPU per paid call: {:.1} µs in this process (server and clients; worker processes apart), {:.1} µs of it \
         the writer's",
        per_call(used.process_ms),
        per_call(used.writer_ms)
    );
    tiny.paid_over_free = paid.per_second / free.per_second;
    println!(
        "ratios: paid / free = {:.2}, free / raw = {:.3}",
        paid.per_second / free.per_second,
        free.per_second / raw
    );
    let batches = after.0 - before.0;
    let items = after.1 - before.1;
    figures.ledger = LedgerFigures {
        group_commits_per_second: batches as f64 / args.seconds as f64,
        mean_batch: items as f64 / batches.max(1) as f64,
    };
    let tiny = &mut figures.tiny;
    println!(
        "ledger: {items} commands in {batches} group commits (mean batch {:.1}, largest {}); {:.0} commits/s",
        items as f64 / batches.max(1) as f64,
        after.2,
        batches as f64 / args.seconds as f64
    );
    println!("batch sizes (upper bound: batches): {}", after.3);
    if let Some(url) = peer {
        let peer = Client::new(url.trim_end_matches('/').to_owned(), None)?;
        let pace = Pace { clients: args.clients, duration, per_second: None };
        let peer = http_phase(&[peer], "peer", &setup.call, pace).await?;
        tiny.peer = Some(peer.figures());
        tiny.paid_over_peer = Some(paid.per_second / peer.per_second);
        println!("the peer at {url} ({} clients):  {}", args.clients, peer.describe());
        println!("paid / peer = {:.2}", paid.per_second / peer.per_second);
    }
    let direct = router_phase(server, setup, args.clients, duration).await?;
    tiny.paid_without_http = direct.figures();
    tiny.paid_over_paid_without_http = paid.per_second / direct.per_second;
    println!(
        "paid calls through the router, no sockets ({} tasks): {}; over HTTP / without = {:.2}",
        args.clients,
        direct.describe(),
        paid.per_second / direct.per_second
    );
    let alone = market_phase(server, setup, model, args.clients, duration).await?;
    tiny.paid_market_only = alone.figures();
    tiny.paid_over_paid_market_only = paid.per_second / alone.per_second;
    println!(
        "paid calls handed to the market, no HTTP at all ({} tasks): {}; over HTTP / market alone = {:.2}",
        args.clients,
        alone.describe(),
        paid.per_second / alone.per_second
    );
    // Latency where a server should run: at half the rate it can take.
    let pace = Pace { clients: args.clients, duration, per_second: Some(paid.per_second / 2.0) };
    let half = http_phase(std::slice::from_ref(&setup.caller), "paid", &setup.call, pace).await?;
    tiny.paid_at_half_rate = half.figures();
    println!("paid calls at half that rate ({:.0}/s offered): {}", paid.per_second / 2.0, half.describe());
    Ok(figures)
}

/// `--cores`: the comparison again in a child process per core count,
/// pinned with `taskset` to the first that many cores, then a table.
pub(crate) fn scaling(args: &Common, compare: &CompareArgs) -> anyhow::Result<ScalingFigures> {
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let exe = std::env::current_exe()?;
    let mut rows = vec![];
    for &cores in &compare.cores {
        if cores == 0 || cores > available {
            println!("{cores} cores: skipped ({available} available)");
            continue;
        }
        let json = std::env::temp_dir().join(format!("vitrine-bench-{}-{cores}.json", std::process::id()));
        let widths = compare.realistic_widths.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
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
        let figures: CompareFigures = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
        let _ = std::fs::remove_file(&json);
        rows.push(ScalingRun { cores, figures });
    }
    println!(
        "\ncores  tiny free/s  tiny paid/s  paid/free  p99 at half (ms)  realistic raw/s  realistic paid/s  paid/raw  \
         one worker paid/raw"
    );
    for ScalingRun { cores, figures: f } in &rows {
        println!(
            "{cores:>5}  {:>11.0}  {:>11.0}  {:>9.2}  {:>16.2}  {:>15.0}  {:>16.0}  {:>8.2}  {:>19.2}",
            f.tiny.free.per_second,
            f.tiny.paid.per_second,
            f.tiny.paid_over_free,
            f.tiny.paid_at_half_rate.p99_ms,
            f.realistic.raw_per_second,
            f.realistic.paid.per_second,
            f.realistic.paid_over_raw,
            f.realistic.one_worker_paid_over_raw,
        );
    }
    let mut scaling = ScalingFigures { tiny_paid_speedup: None, tiny_paid_fraction_of_linear: None, runs: vec![] };
    if let [first, .., last] = rows.as_slice() {
        let speedup = last.figures.tiny.paid.per_second / first.figures.tiny.paid.per_second;
        let ideal = last.cores as f64 / first.cores as f64;
        scaling.tiny_paid_speedup = Some(speedup);
        scaling.tiny_paid_fraction_of_linear = Some(speedup / ideal);
        println!(
            "tiny paid, {} → {} cores: ×{speedup:.2} (linear would be ×{ideal:.0}; {:.2} of linear)",
            first.cores,
            last.cores,
            speedup / ideal
        );
    }
    scaling.runs = rows;
    Ok(scaling)
}
