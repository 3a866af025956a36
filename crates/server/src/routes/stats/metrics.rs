//! `GET /metrics`: Prometheus text.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::ApiResult;

/// Prometheus text format: this process's counters and the store's sizes.
#[utoipa::path(get, path = "/metrics", tag = "stats", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    let (accounts, models, versions, blobs) = state.store.counts().await?;
    let workers = state.market.executor.metrics();
    let stats = &state.market.sequencer.stats;
    let totals = state.store.ledger_totals().await?;
    let mut text = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, value: String| {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
    };
    gauge("vitrine_accounts", "Accounts, the ledger's own included.", "gauge", accounts.to_string());
    gauge("vitrine_models", "Model repositories.", "gauge", models.to_string());
    gauge("vitrine_model_versions", "Model versions.", "gauge", versions.to_string());
    gauge("vitrine_blobs", "Distinct model files.", "gauge", blobs.to_string());
    gauge(
        "vitrine_log_leaves",
        "Receipts in the transparency log.",
        "gauge",
        state.store.tree_size().await?.to_string(),
    );
    gauge(
        "vitrine_usage_events",
        "Inference calls recorded.",
        "gauge",
        state.store.usage_event_count().await?.to_string(),
    );
    gauge(
        "vitrine_tokens_circulating",
        "Minor units held by accounts (deposits minus payouts).",
        "gauge",
        totals.balances.to_string(),
    );
    gauge(
        "vitrine_tokens_held",
        "Minor units in ledger holds (grants of serving nodes).",
        "gauge",
        totals.held.to_string(),
    );
    gauge(
        "vitrine_model_runs_total",
        "Calls that reached a model in this process (a call refused for its price never does).",
        "counter",
        state.market.model_runs.load(Ordering::Relaxed).to_string(),
    );
    gauge(
        "vitrine_unsent_answer_bytes",
        "Bytes of answers built and not yet read by their clients (unsent_answer_bytes_max).",
        "gauge",
        state.unsent_answers.total().to_string(),
    );
    let (grants, granted) = state.market.reservations.grants();
    gauge(
        "vitrine_grants",
        "Grants this node holds on callers' balances (shared markets).",
        "gauge",
        grants.to_string(),
    );
    gauge("vitrine_grant_tokens", "Minor units left in this node's grants.", "gauge", granted.to_string());
    gauge(
        "vitrine_nodes_alive",
        "Serving nodes alive on this market, as last counted (grants take a share of a balance by it).",
        "gauge",
        state.market.reservations.live_nodes().to_string(),
    );
    gauge("vitrine_workers", "Model worker processes alive.", "gauge", workers.workers_live.to_string());
    gauge("vitrine_workers_max", "Model worker slots (inference_threads).", "gauge", workers.workers_max.to_string());
    gauge("vitrine_worker_starts_total", "Model workers started.", "counter", workers.workers_started.to_string());
    gauge(
        "vitrine_worker_timeouts_total",
        "Workers stopped at a call's deadline.",
        "counter",
        workers.worker_timeouts.to_string(),
    );
    gauge(
        "vitrine_worker_out_of_memory_total",
        "Calls that exhausted worker_memory_bytes_max (their worker aborted, or refused the allocation).",
        "counter",
        workers.worker_out_of_memory.to_string(),
    );
    gauge(
        "vitrine_worker_crashes_total",
        "Workers that died otherwise.",
        "counter",
        workers.worker_crashes.to_string(),
    );
    gauge(
        "vitrine_worker_requests_pipelined_total",
        "Calls written to a busy worker behind the call it was running, to start the moment it answers.",
        "counter",
        workers.worker_requests_pipelined.to_string(),
    );
    gauge(
        "vitrine_batches_total",
        "Batches of two or more of one caller's calls run as one (batch_calls_max).",
        "counter",
        state.market.batcher.batches.load(Ordering::Relaxed).to_string(),
    );
    gauge(
        "vitrine_batched_calls_total",
        "Calls answered from such a batch.",
        "counter",
        state.market.batcher.batched_calls.load(Ordering::Relaxed).to_string(),
    );
    gauge(
        "vitrine_calls_waiting",
        "Calls waiting for a worker now; a free worker goes to the caller holding the fewest.",
        "gauge",
        workers.calls_waiting.to_string(),
    );
    gauge(
        "vitrine_upload_workers",
        "Upload validation workers alive (each validates one upload, then goes).",
        "gauge",
        workers.upload_workers_live.to_string(),
    );
    gauge(
        "vitrine_upload_workers_max",
        "Upload validation worker slots (upload_workers).",
        "gauge",
        workers.upload_workers_max.to_string(),
    );
    gauge(
        "vitrine_ledger_batches_total",
        "Ledger batches committed by this process.",
        "counter",
        stats.batches.load(Ordering::Relaxed).to_string(),
    );
    gauge(
        "vitrine_ledger_commands_total",
        "Ledger commands committed by this process.",
        "counter",
        stats.items.load(Ordering::Relaxed).to_string(),
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}
