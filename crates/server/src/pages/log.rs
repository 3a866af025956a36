//! The log: the latest checkpoint and its history, an entry browser, and a
//! receipt's inclusion proof.

use axum::extract::State;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use dashboard::Markup;
use dashboard::format::count;
use dashboard::layout::{self, Section};
use market::Receipt;
use maud::html;
use serde::Deserialize;

use super::{PageResult, Query, model_link, render, token, when};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::routes::log as routes;

#[derive(Debug, Default, Deserialize)]
pub(super) struct LogQuery {
    /// The first entry shown.
    start: Option<u64>,
    /// A receipt's log index, to show with its proof.
    receipt: Option<String>,
}

/// Entries on one page of the browser.
const ENTRIES_PER_PAGE: u64 = 20;

pub(super) async fn log(State(state): State<AppState>, Query(query): Query<LogQuery>) -> PageResult {
    render(&state, log_page(&state, query)).await
}

async fn log_page(state: &AppState, query: LogQuery) -> ApiResult<Markup> {
    let token = token(state);
    let key = routes::key(State(state.clone())).await?.0;
    let history = routes::checkpoints(
        State(state.clone()),
        ApiQuery(routes::CheckpointsQuery { before: None, limit: Some(ENTRIES_PER_PAGE as u32) }),
    )
    .await?
    .0;
    let latest = history.items.first();
    let size = state.store.tree_size().await?;
    let start = query.start.unwrap_or(size.saturating_sub(ENTRIES_PER_PAGE)).min(size.saturating_sub(1));
    let end = (start + ENTRIES_PER_PAGE).min(size);
    let entries = if start < end {
        let query = routes::EntriesQuery { start, end };
        routes::entries(State(state.clone()), ApiQuery(query)).await?.0.items
    } else {
        vec![]
    };
    let mut rows = vec![];
    for entry in entries.iter().rev() {
        let leaf = BASE64.decode(&entry.leaf).map_err(ApiError::internal)?;
        let signature = BASE64.decode(&entry.signature).map_err(ApiError::internal)?;
        rows.push(Receipt::of_leaf(entry.index, &leaf, &signature)?);
    }
    // The configured witnesses, and when each cosigned the latest checkpoint.
    let witnesses: Vec<(String, Option<String>)> = state
        .config
        .witnesses
        .iter()
        .filter_map(|witness| tlog::CosignatureVerifier::from_vkey(&witness.vkey).ok())
        .map(|witness| {
            let at = latest.and_then(|c| witness.verify(&c.note).ok()).map(|seconds| {
                crate::wire::timestamp(i64::try_from(seconds).unwrap_or(i64::MAX / 1000).saturating_mul(1000))
            });
            (witness.name, at.map(|t| when(&t)))
        })
        .collect();
    let receipt = match query.receipt.as_deref().filter(|r| !r.is_empty()) {
        None => None,
        Some(index) => Some(match routes::receipt(State(state.clone()), axum::extract::Path(index.to_owned())).await {
            Ok(receipt) => Ok(receipt.0),
            Err(error) => Err(error.message),
        }),
    };
    let reserves = reserves_section(state, &token).await;
    let body = html! {
        h1 { "The log" }
        p.lede { "Every call, paid, free or failed, is a leaf of an append-only Merkle tree (RFC 6962); a paid call's leaf is its receipt. Each checkpoint signs the tree's size and root, and witnesses cosign it only if it extends every checkpoint they saw before; anyone can check a receipt's inclusion, and recompute the market's figures from the leaves (vitrine audit --market)." }
        section aria-labelledby="checkpoint-title" {
            h2 id="checkpoint-title" { "Latest checkpoint" }
            @match latest {
                Some(checkpoint) => {
                    dl.headline {
                        (layout::headline("Leaves", &count(checkpoint.size), None, None))
                        (layout::headline("Signed", &when(&checkpoint.created_at), None, None))
                    }
                    pre #checkpoint-note { (checkpoint.note) }
                    @if !witnesses.is_empty() {
                        h3 { "Witnesses" }
                        ul #witnesses {
                            @for (name, cosigned) in &witnesses {
                                li { code { (name) } ": " @match cosigned {
                                    Some(at) => { "cosigned this checkpoint at " (at) }
                                    None => { "no cosignature on this checkpoint (it did not answer, or refused)" }
                                } }
                            }
                        }
                    }
                }
                None => (layout::notice("No checkpoint signed yet.")),
            }
            p.small { "Log key " code #log-vkey { (key.vkey) } " · " a href="/v1/log/checkpoint" { "checkpoint" } " · " a href="/v1/log/key" { "keys" } }
        }
        @if let Some(reserves) = reserves { (reserves) }
        section aria-labelledby="history-title" {
            h2 id="history-title" { "History" }
            div.table-wrap {
                table #checkpoints {
                    thead { tr { th.num scope="col" title="How many receipts the checkpoint covers" { "Leaves" } th scope="col" title="The Merkle tree's root it signs" { "Root" } th scope="col" title="When it was signed (UTC)" { "Signed" } th scope="col" title="That the log only grew between the two: nothing before was changed or removed" { "Proof it extends the one before" } } }
                    tbody {
                        @for (i, checkpoint) in history.items.iter().enumerate() {
                            tr {
                                td.num { (count(checkpoint.size)) }
                                td { code.hash { (checkpoint.root) } }
                                td { (when(&checkpoint.created_at)) }
                                td { @if let Some(before) = history.items.get(i + 1).filter(|b| b.size > 0) {
                                    a href=(format!("/v1/log/proof/consistency?from={}&to={}", before.size, checkpoint.size)) { "from " (count(before.size)) }
                                } }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="lookup-title" {
            h2 id="lookup-title" { "Find a receipt" }
            form.filters method="get" action="/log" {
                label { "Log index " input type="number" name="receipt" min="0" value=[query.receipt.as_deref()] required; }
                button type="submit" { "Show its proof" }
            }
            @match &receipt {
                None => {}
                Some(Err(message)) => (layout::notice(message)),
                Some(Ok(receipt)) => (receipt_view(receipt, &token)),
            }
        }
        section aria-labelledby="entries-title" {
            h2 id="entries-title" { "Entries " (count(start)) "–" (count(end.saturating_sub(1))) " of " (count(size)) }
            div.table-wrap {
                table #entries {
                    thead { tr { th.num scope="col" title="The receipt's place in the log" { "Index" } th scope="col" title="The model and version called" { "Model" } th scope="col" title="The X-App tag the call carried" { "App" } th scope="col" title="The node that served and signed it" { "Node" } th.num scope="col" title="What the caller paid" { "Price (" (token.symbol) ")" } th scope="col" title="ok, or the error the call got" { "Outcome" } th scope="col" title="When the call was made (UTC)" { "When" } } }
                    tbody {
                        @for row in &rows {
                            tr {
                                td.num { a href=(format!("/log?receipt={}", row.log_index)) { (row.log_index) } }
                                td { (model_cell(&row.model)) }
                                td { (row.app) }
                                td { (row.node) }
                                td.num data-value=(row.price) { (token.number(&row.price)) }
                                td { (outcome(row)) }
                                td { (when(&row.created_at)) }
                            }
                        }
                    }
                }
            }
            nav.pages aria-label="Entries" {
                @if end < size { a href=(format!("/log?start={}", end)) { "Newer" } }
                @if start > 0 { " " a href=(format!("/log?start={}", start.saturating_sub(ENTRIES_PER_PAGE))) { "Older" } }
            }
        }
    };
    Ok(layout::page("Log", Section::Log, &token, body))
}

/// A model in the log: public ones link to their page; private ones are a
/// keyed label (`owner/~…`) that names nothing.
fn model_cell(model: &str) -> Markup {
    if model.contains("/~") {
        html! { code { (model) } }
    } else {
        model_link(model)
    }
}

/// What a leaf says of its call: paid, free, or the failure's error code.
fn outcome(receipt: &Receipt) -> String {
    match &receipt.error {
        Some(code) => format!("failed: {code}"),
        None if receipt.price == "0" => "free".to_owned(),
        None => "paid".to_owned(),
    }
}

fn receipt_view(receipt: &Receipt, token: &dashboard::format::Token) -> Markup {
    let (size, hashes) = receipt.inclusion.as_ref().map_or((0, &[][..]), |i| (i.size, i.hashes.as_slice()));
    html! {
        div #receipt {
            dl.facts {
                div { dt { "Log index" } dd { (receipt.log_index) } }
                div { dt { "Model" } dd { (model_cell(&receipt.model)) " version " (receipt.version) } }
                div { dt { "Price" } dd { (token.amount(&receipt.price)) " (creator " (token.number(&receipt.creator_share)) ", node " (token.number(&receipt.node_share)) ", treasury " (token.number(&receipt.treasury_share)) ")" } }
                div { dt { "Outcome" } dd { (outcome(receipt)) } }
                div { dt { "Task, app, node" } dd { (receipt.task) ", " (receipt.app) ", " (receipt.node) } }
                div { dt { "When" } dd { (when(&receipt.created_at)) } }
                div { dt { "Leaf hash" } dd { code.hash { (receipt.leaf_hash) } } }
                div { dt { "Input, output SHA-256" } dd { code.hash { (receipt.input_sha256) } " " code.hash { (receipt.output_sha256) } } }
            }
            h3 { "Inclusion proof in the tree of " (size) " leaves" }
            ol.proof {
                @for hash in hashes { li { code.hash { (hash) } } }
            }
            p.more { a href=(format!("/v1/receipts/{}", receipt.log_index)) { "The receipt as JSON" } }
        }
    }
}

/// How long the page waits for the chain's node before it says so.
const RESERVES_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// On a market with a chain: its token balance at a final block against
/// what its ledger owes (`GET /v1/chain/reserves`), and how to check it
/// yourself.
async fn reserves_section(state: &AppState, token: &dashboard::format::Token) -> Option<Markup> {
    let chain = state.chain.as_ref()?;
    let read = tokio::time::timeout(RESERVES_WAIT, crate::routes::chain::reserves(State(state.clone()))).await;
    let figures = match read {
        Ok(Ok(view)) => Ok(view.0),
        Ok(Err(error)) => Err(error.message),
        Err(_) => Err(format!("the chain's node did not answer within {} s", RESERVES_WAIT.as_secs())),
    };
    Some(html! {
        section #reserves aria-labelledby="reserves-title" {
            h2 id="reserves-title" { "Reserves" }
            p { "What the market holds on " code { (chain.network()) } " at its address " code { (chain::x402::lower(chain.address())) } ", against everything its ledger owes (every balance, pending payouts included), at the newest final block." }
            @match &figures {
                Ok(view) => {
                    @let onchain: u128 = view.onchain_balance.parse().unwrap_or(0);
                    @let owed: u128 = view.liabilities.parse().unwrap_or(0);
                    dl.headline {
                        (layout::headline("Held on the chain", &token.amount(&view.onchain_balance), None, None))
                        (layout::headline("Owed by the ledger", &token.amount(&view.liabilities), None, None))
                        (layout::headline("At block", &count(view.block), None, None))
                    }
                    p #reserves-verdict data-covered=(onchain >= owed) {
                        @if onchain >= owed {
                            "The reserves cover what the market owes, with " (token.amount(&(onchain - owed).to_string())) " to spare."
                        } @else {
                            "The reserves fall short of what the market owes by " (token.amount(&(owed - onchain).to_string())) "."
                        }
                    }
                }
                Err(message) => (layout::notice(message)),
            }
            p.small { "Check it against your own node: " code { "vitrine audit --reserves --rpc-url YOUR_NODE" } " · " a href="/v1/chain/reserves" { "reserves as JSON" } }
        }
    })
}
