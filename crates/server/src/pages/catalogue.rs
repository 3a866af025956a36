//! The catalogue, a model's page and a creator's page.

use axum::extract::{Path, State};
use dashboard::chart::{Chart, Kind, Series, sparkline};
use dashboard::format::{count, milliseconds, percent};
use dashboard::layout::{self, Section, headline, window_picker};
use dashboard::{Markup, markdown};
use domain::Task;
use maud::html;
use serde::Deserialize;

use super::{PageResult, Query, WINDOWS, WindowQuery, bucket_label, model_link, percent_or_dash, render, token, when};
use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiQuery, MaybeCaller};
use crate::routes::{models, stats};
use crate::wire::{DimView, ListModelsQuery, TensorSpecView};

#[derive(Debug, Default, Deserialize)]
pub(super) struct CatalogueQuery {
    q: Option<String>,
    task: Option<String>,
    sort: Option<String>,
    window: Option<String>,
    page_token: Option<String>,
}

const SORTS: [(&str, &str); 5] =
    [("popular", "Popular"), ("trending", "Trending"), ("revenue", "Revenue"), ("recent", "New"), ("price", "Price")];
/// The catalogue ranks over these (a usage sort needs whole windows).
const CATALOGUE_WINDOWS: [&str; 3] = ["24h", "7d", "30d"];
const CARDS_PER_PAGE: u32 = 24;

pub(super) async fn catalogue(State(state): State<AppState>, Query(query): Query<CatalogueQuery>) -> PageResult {
    render(&state, catalogue_page(&state, query)).await
}

/// A model's usage per bucket over `window`.
async fn model_series(state: &AppState, owner: &str, name: &str, window: &str) -> ApiResult<stats::SeriesView> {
    let (from, bucket, _) = super::series_buckets(state, window).await?;
    let query = stats::SeriesQuery { from: Some(from), to: None, bucket: Some(bucket.to_owned()) };
    let path = Path((owner.to_owned(), name.to_owned()));
    Ok(stats::model_series(State(state.clone()), MaybeCaller(None), path, ApiQuery(query)).await?.0)
}

async fn catalogue_page(state: &AppState, query: CatalogueQuery) -> ApiResult<Markup> {
    let token = token(state);
    let sort = query.sort.clone().unwrap_or_else(|| "popular".to_owned());
    let window = query.window.clone().unwrap_or_else(|| "7d".to_owned());
    let usage_sort = ["popular", "trending", "revenue"].contains(&sort.as_str());
    let list = ListModelsQuery {
        q: query.q.clone().filter(|q| !q.is_empty()),
        task: query.task.clone().filter(|t| !t.is_empty()),
        owner: None,
        sort: Some(sort.clone()),
        window: usage_sort.then(|| window.clone()),
        limit: Some(CARDS_PER_PAGE),
        page_token: query.page_token.clone(),
    };
    let page = models::list_models(State(state.clone()), MaybeCaller(None), ApiQuery(list)).await?.0;
    let mut cards = vec![];
    for model in &page.items {
        let series = model_series(state, &model.owner, &model.name, &window).await?;
        let path = Path((model.owner.clone(), model.name.clone()));
        let versions = models::list_versions(State(state.clone()), MaybeCaller(None), path).await?.0;
        let latest = versions.items.into_iter().max_by_key(|v| v.version);
        cards.push((model, series, latest));
    }
    let href = |window: &str| {
        let mut href = format!("/catalogue?sort={sort}&window={window}");
        // The next page asks for what this one shows: the mended query, if it was.
        if let Some(q) = page.corrected_query.as_deref().or(query.q.as_deref()).filter(|q| !q.is_empty()) {
            href.push_str(&format!("&q={}", url_escape(q)));
        }
        if let Some(task) = query.task.as_deref().filter(|t| !t.is_empty()) {
            href.push_str(&format!("&task={task}"));
        }
        href
    };
    let next = page.next_page_token.as_ref().map(|t| format!("{}&page_token={}", href(&window), url_escape(t)));
    let body = html! {
        div.heading {
            h1 { "Catalogue" }
            (window_picker(&window, &CATALOGUE_WINDOWS, href))
        }
        form.filters method="get" action="/catalogue" role="search" {
            label { "Search " input type="search" name="q" value=[query.q.as_deref()] placeholder="name, task, description or tag"; }
            label { "Task "
                select name="task" {
                    option value="" { "any" }
                    @for task in Task::ALL { option value=(task.as_str()) selected[query.task.as_deref() == Some(task.as_str())] { (task.as_str()) } }
                }
            }
            label { "Sort by "
                select name="sort" {
                    @for (value, label) in SORTS { option value=(value) selected[sort == value] { (label) } }
                }
            }
            input type="hidden" name="window" value=(window);
            button type="submit" { "Show" }
        }
        @if let (Some(mended), Some(asked)) = (&page.corrected_query, &query.q) {
            p.notice #corrected role="status" { "Nothing matched “" (asked) "”; showing models for “" strong { (mended) } "”." }
        }
        @if cards.is_empty() {
            (layout::notice("No public model matches."))
        }
        ul.cards {
            @for (model, series, latest) in &cards {
                @let full = format!("{}/{}", model.owner, model.name);
                li.card data-model=(full) {
                    h2 { (model_link(&full)) }
                    p.meta { (model.task) " · by " a href=(format!("/creators/{}", model.owner)) { (model.owner) } }
                    p.description { (first_line(&model.description)) }
                    dl.facts {
                        div { dt { "Price" } dd data-value=(model.price_per_inference) { (price_per_call(&token, &model.price_per_inference)) } }
                        div { dt { "Calls, " (layout::window_name(&window)) } dd data-value=(series.total.calls) { (count(series.total.calls)) } }
                    }
                    @if let Some(version) = latest {
                        div.card-signature { span.small { "in " } (signature(&version.inputs)) span.small { "out " } (signature(&version.outputs)) }
                    }
                    (sparkline(&series.series.iter().map(|p| p.calls).collect::<Vec<_>>(), &format!("calls of {full} per {}", series.bucket)))
                }
            }
        }
        @if let Some(next) = next { p.more { a href=(next) rel="next" { "More models" } } }
    };
    Ok(layout::page("Catalogue", Section::Catalogue, &token, body))
}

/// The first line of a Markdown description, as plain text for a card.
fn first_line(description: &str) -> String {
    let line = description.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    let plain = line.trim_start_matches('#').trim();
    if plain.chars().count() > 140 {
        format!("{}…", plain.chars().take(139).collect::<String>())
    } else {
        plain.to_owned()
    }
}

/// Escapes text for a query string.
fn url_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(super) async fn model(
    State(state): State<AppState>,
    Path((owner, name)): Path<(String, String)>,
    Query(query): Query<WindowQuery>,
) -> PageResult {
    let window = query.window.unwrap_or_else(|| "7d".to_owned());
    render(&state, model_page(&state, owner, name, window)).await
}

async fn model_page(state: &AppState, owner: String, name: String, window: String) -> ApiResult<Markup> {
    let token = token(state);
    let path = || Path((owner.clone(), name.clone()));
    let model = models::get_model(State(state.clone()), MaybeCaller(None), path()).await?.0;
    let versions = models::list_versions(State(state.clone()), MaybeCaller(None), path()).await?.0;
    let series = model_series(state, &owner, &name, &window).await?;
    let demand_query = stats::DemandQuery { window: Some(window.clone()) };
    let demand = stats::model_demand(State(state.clone()), MaybeCaller(None), path(), ApiQuery(demand_query)).await?.0;
    let full = format!("{owner}/{name}");
    let x: Vec<String> = series.series.iter().map(|p| bucket_label(&p.t, &series.bucket)).collect();
    let x_label = if series.bucket == "hour" { "hour (UTC)" } else { "day (UTC)" };
    let json = format!(
        "/v1/stats/models/{full}?bucket={}&from={}",
        series.bucket,
        series.series.first().map_or("", |p| p.t.as_str())
    );
    let chart =
        |id: &str, title: &str, y_label: &str, series: Vec<Series>, kind: Kind, format: fn(f64) -> String| Chart {
            id: id.into(),
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            x: x.clone(),
            series,
            kind,
            format,
            y_max: None,
            download: Some((json.clone(), "JSON".into())),
            partial_last: true,
            categories: false,
        };
    let points = &series.series;
    // The lines start at the model's first call in the window.
    let first_call = points.iter().position(|p| p.calls > 0).unwrap_or(points.len());
    let calls = chart(
        "calls",
        "Calls and failed calls",
        "calls",
        vec![
            Series::new("calls", points.iter().map(|p| p.calls as f64)).starting_at(first_call),
            Series::new("failed", points.iter().map(|p| p.errors as f64)).starting_at(first_call),
        ],
        Kind::Lines,
        |v| count(v as u64),
    );
    let revenue = chart(
        "revenue",
        "Revenue",
        &format!("{} earned", token.symbol),
        vec![Series::new("revenue", points.iter().map(|p| token.approximate(&p.revenue)))],
        Kind::StackedBars,
        |v| format!("{v:.4}"),
    );
    let latency = chart(
        "latency",
        "Latency of successful calls",
        "milliseconds",
        vec![
            Series { name: "p50".into(), values: points.iter().map(|p| p.latency_ms_p50).collect(), colour: None },
            Series { name: "p95".into(), values: points.iter().map(|p| p.latency_ms_p95).collect(), colour: None },
            Series { name: "p99".into(), values: points.iter().map(|p| p.latency_ms_p99).collect(), colour: None },
        ],
        Kind::Lines,
        milliseconds,
    );
    let callers = chart(
        "callers",
        "Distinct callers",
        "callers",
        vec![Series::new("callers", points.iter().map(|p| p.unique_callers as f64)).starting_at(first_call)],
        Kind::Lines,
        |v| count(v as u64),
    );
    let latest = versions.items.iter().max_by_key(|v| v.version);
    let total = &series.total;
    // A free model that earned nothing in the window: no revenue to show.
    let free = model.price_per_inference == "0" && total.revenue == "0";
    let body = html! {
        div.heading {
            h1 { (full) }
            (window_picker(&window, &WINDOWS, |w| format!("/models/{full}?window={w}")))
        }
        p.meta {
            (model.task) " · by " a href=(format!("/creators/{owner}")) { (owner) } " · licence " (model.license)
            @for tag in &model.tags { " " span.tag { (tag) } }
        }
        // Eight figures for a paid model, six for a free one: whole rows either way.
        dl class=(if free { "headline cols-3" } else { "headline cols-4" }) {
            (headline("Price per call", &price_per_call(&token, &model.price_per_inference), None, None))
            (headline("Calls", &count(total.calls), None, Some("calls")))
            @if !free { (headline("Revenue", &token.amount(&total.revenue), None, None)) }
            (headline("Failed calls", &count(total.errors), None, None))
            (headline("Distinct callers", &count(total.unique_callers), None, None))
            (headline("Latency p50 / p95 / p99", &[total.latency_ms_p50, total.latency_ms_p95, total.latency_ms_p99].iter().map(|l| l.map_or("–".to_owned(), milliseconds)).collect::<Vec<_>>().join(" / "), None, None))
            @if free {
                (headline(&format!("Place among {} models", model.task), &match (demand.task_rank, demand.task_share) {
                    (Some(rank), Some(share)) => format!("#{rank}, {} of calls", percent(share)),
                    _ => "–".to_owned(),
                }, None, None))
            } @else {
                (headline(&format!("Share of {} demand", model.task), &percent_or_dash(demand.task_share), None, None))
                (headline("Rank in its task", &demand.task_rank.map_or("–".to_owned(), |r| format!("#{r}")), None, None))
            }
        }
        @if let Some(version) = latest {
            section.pair aria-labelledby="use-title" {
                h2 id="use-title" { "Use it" }
                div {
                    h3 { "Inputs" } (signature(&version.inputs))
                    h3 { "Outputs" } (signature(&version.outputs))
                    p.small { "Version " (version.version) "; dimensions with a name take any size." }
                }
                (snippets(&full, version, &model.price_per_inference, &token))
            }
        }
        section.card-text aria-label="Model card" { (markdown::card(&model.description)) }
        section.charts {
            (calls.render())
            @if !free { (revenue.render()) }
            (latency.render())
            (callers.render())
        }
        section aria-labelledby="apps-title" {
            h2 id="apps-title" { "Top apps" }
            @if demand.apps.is_empty() { (layout::notice("No calls in this window.")) } @else {
                div.table-wrap {
                    table #apps {
                        thead { tr { th scope="col" title="The X-App tag the calls carried" { "App" } th.num scope="col" title="Calls from the app in the window" { "Calls" } th.num scope="col" title="Its share of the model's calls" { "Share" } th.num scope="col" title="Calls that got an error" { "Failed" } th.num scope="col" title="What the app's callers paid" { "Revenue" } } }
                        tbody {
                            @for app in &demand.apps {
                                tr {
                                    td { @if app.app.is_empty() { em { "untagged" } } @else { (app.app) } }
                                    td.num data-value=(app.calls) { (count(app.calls)) }
                                    td.num data-value=(app.share) { (percent(app.share)) }
                                    td.num data-value=(app.errors) { (count(app.errors)) }
                                    td.num data-value=(app.revenue) { (token.amount(&app.revenue)) }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="versions-title" {
            h2 id="versions-title" { "Versions" }
            div.table-wrap {
                table #versions {
                    thead { tr { th scope="col" title="Versions are numbered from 1; a call runs the latest unless it names one" { "Version" } th scope="col" title="Its input tensors: name: dtype[dimensions]" { "Inputs" } th scope="col" title="Its output tensors" { "Outputs" } th.num scope="col" title="The ONNX file's size in bytes" { "Size" } th scope="col" title="When it was uploaded (UTC)" { "Uploaded" } th scope="col" title="The file itself, named by its SHA-256" { "File" } } }
                    tbody {
                        @for version in versions.items.iter().rev() {
                            tr {
                                td { (version.version) @if version.quarantine.is_some() { " " span.tag.warn { "quarantined" } } }
                                td { (signature(&version.inputs)) }
                                td { (signature(&version.outputs)) }
                                td.num { (count(version.size_bytes)) " B" }
                                td { (when(&version.created_at)) }
                                td { a.hash href=(format!("/v1/blobs/{}", version.blob_sha256)) title=(version.blob_sha256) { (version.blob_sha256[..12]) "…" } }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(version) = latest { (try_it(&full, version, &model.price_per_inference, &token)) }
    };
    Ok(layout::page(&full, Section::Elsewhere, &token, body))
}

/// A price per call as people read it: "Free", or "0.002 OPG per call".
pub(super) fn price_per_call(token: &dashboard::format::Token, minor: &str) -> String {
    if minor == "0" { "Free".to_owned() } else { format!("{} per call", token.amount(minor)) }
}

/// How to call the model from the CLI, curl and Python, with inputs of the
/// right shape.
fn snippets(model: &str, version: &crate::wire::VersionView, price: &str, token: &dashboard::format::Token) -> Markup {
    let free = price == "0";
    let cli_inputs: Vec<String> =
        version.inputs.iter().map(|spec| format!("--input '{}={}'", spec.name, nested_zeros(spec))).collect();
    let curl_inputs: Vec<String> =
        version.inputs.iter().map(|spec| format!("\"{}\": {}", spec.name, example_input(spec))).collect();
    let python_inputs: Vec<String> = version
        .inputs
        .iter()
        .map(|spec| {
            format!(
                "{}=np.zeros(({}), dtype=\"{}\")",
                spec.name,
                example_shape(spec).iter().map(|d| format!("{d},")).collect::<String>(),
                spec.dtype.parse::<domain::Dtype>().map_or(spec.dtype.as_str(), |d| d.numpy_name())
            )
        })
        .collect();
    html! {
        div.snippets {
            h3 { "Command line" }
            pre { code { "vitrine infer " (model) " " (cli_inputs.join(" ")) } }
            h3 { "curl" }
            pre { code { "curl -X POST \"$VITRINE_URL/v1/models/" (model) "/infer\" -H \"authorization: Bearer $VITRINE_KEY\" \\\n  -H 'content-type: application/json' \\\n  -d '{\"inputs\": {" (curl_inputs.join(", ")) "}}'" } }
            h3 { "Python" }
            pre { code { "import numpy as np, vitrine\nclient = vitrine.Client(url, key=key)\nresult = client.infer(\"" (model) "\", " (python_inputs.join(", ")) ")\nprint(result.outputs)" } }
            p.small {
                "Set " code { "VITRINE_URL" } " to this market's address and " code { "VITRINE_KEY" } " to your API key. "
                @if free { "Free: calls cost nothing." } @else { "Each call costs " (token.amount(price)) " from your balance and returns a signed receipt." }
            }
        }
    }
}

/// The tensor shape an example uses: named dimensions as 1.
fn example_shape(spec: &TensorSpecView) -> Vec<u64> {
    spec.shape
        .iter()
        .map(|d| match d {
            DimView::Fixed(n) => *n,
            DimView::Symbol(_) => 1,
        })
        .collect()
}

/// Zeros nested to the spec's shape, as the CLI's `--input name=[[…]]` takes
/// them (a large input as `@file.json`).
fn nested_zeros(spec: &TensorSpecView) -> String {
    let shape = example_shape(spec);
    if shape.iter().product::<u64>() > 64 {
        return "@input.json".to_owned();
    }
    shape.iter().rev().fold("0".to_owned(), |inner, &n| format!("[{}]", vec![inner; n as usize].join(",")))
}

/// Tensors as `name: dtype[dims]`.
fn signature(specs: &[TensorSpecView]) -> Markup {
    html! {
        ul.signature {
            @for spec in specs { li { code { (spec.name) ": " (spec.dtype) "[" (dims(&spec.shape)) "]" } } }
        }
    }
}

fn dims(shape: &[DimView]) -> String {
    shape
        .iter()
        .map(|d| match d {
            DimView::Fixed(n) => n.to_string(),
            DimView::Symbol(s) => s.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// An example input of the right shape (named dimensions as 1) as the API
/// takes it: zeros, or no numbers where there are too many to paste.
fn example_input(spec: &TensorSpecView) -> String {
    let shape = example_shape(spec);
    let shape_text = shape.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    format!("{{\"dtype\": \"{}\", \"shape\": [{shape_text}], \"data\": [{}]}}", spec.dtype, example_values(spec))
}

/// Zeros for every element of the example shape, comma-separated; none past
/// 64 elements (the visitor pastes theirs).
fn example_values(spec: &TensorSpecView) -> String {
    let elements: u64 = example_shape(spec).iter().product();
    if elements <= 64 {
        vec![if spec.dtype == "bool" { "false" } else { "0" }; elements as usize].join(", ")
    } else {
        String::new()
    }
}

/// What the numbers box takes, in words.
fn value_hint(spec: &TensorSpecView) -> String {
    let kind = match spec.dtype.as_str() {
        "bool" => "true or false values",
        d if d.starts_with('f') || d == "bf16" => "numbers",
        _ => "whole numbers",
    };
    format!("Its {kind}, row by row, separated by commas or spaces (brackets are ignored)")
}

/// A shape as JSON for the page's script: sizes, and names for the named dimensions.
fn shape_json(shape: &[DimView]) -> String {
    serde_json::to_string(
        &shape
            .iter()
            .map(|d| match d {
                DimView::Fixed(n) => serde_json::json!(n),
                DimView::Symbol(s) => serde_json::json!(s),
            })
            .collect::<Vec<_>>(),
    )
    .unwrap_or_else(|_| "[]".to_owned())
}

/// The form the page's script runs a call from, with the visitor's key.
fn try_it(model: &str, version: &crate::wire::VersionView, price: &str, token: &dashboard::format::Token) -> Markup {
    html! {
        section.try-it aria-labelledby="try-title" {
            h2 id="try-title" { "Try it" }
            p { "Runs version " (version.version) " with your API key; "
                @if price == "0" { "the model is " strong { "free" } "." } @else { "a call costs " strong { (token.amount(price)) } ", paid from your balance." }
                " The key stays in this tab." }
            form #try-it data-model=(model) data-version=(version.version) {
                label { "API key " input type="password" name="key" autocomplete="off" required; }
                label { "App tag (optional) " input type="text" name="app" maxlength="64"; }
                // Each input from the model's signature: a size for each named
                // dimension, and its numbers; the page's script builds the tensor.
                @for spec in &version.inputs {
                    fieldset.tensor data-input=(spec.name) data-dtype=(spec.dtype) data-shape=(shape_json(&spec.shape)) {
                        legend { code { (spec.name) } " · " (spec.dtype) "[" (dims(&spec.shape)) "]" }
                        @for (axis, dim) in spec.shape.iter().enumerate() {
                            @if let DimView::Symbol(symbol) = dim {
                                label.dim { "Size of " code { (symbol) } input type="number" name=(format!("dim:{}:{axis}", spec.name)) value="1" min="1" step="1" required; }
                            }
                        }
                        label.values {
                            (value_hint(spec))
                            textarea name=(format!("values:{}", spec.name)) rows="3" spellcheck="false" { (example_values(spec)) }
                        }
                    }
                }
                button type="submit" { "Run" }
            }
            div #try-result role="status" aria-live="polite" {}
        }
    }
}

pub(super) async fn creator(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<WindowQuery>,
) -> PageResult {
    let window = query.window.unwrap_or_else(|| "30d".to_owned());
    render(&state, creator_page(&state, name, window)).await
}

async fn creator_page(state: &AppState, name: String, window: String) -> ApiResult<Markup> {
    let token = token(state);
    let query = stats::CreatorQuery { window: Some(window.clone()) };
    let view = stats::creator(State(state.clone()), Path(name.clone()), ApiQuery(query)).await?.0;
    let x: Vec<String> = view.series.iter().map(|p| bucket_label(&p.t, &view.bucket)).collect();
    let x_label = if view.bucket == "hour" { "hour (UTC)" } else { "day (UTC)" };
    let json = format!("/v1/stats/creators/{name}?window={window}");
    let share = Chart {
        id: "creator-share".into(),
        title: "Share of all calls in the market".into(),
        x_label: x_label.into(),
        y_label: "share of calls".into(),
        x: x.clone(),
        series: vec![Series::new("share", view.series.iter().map(|p| p.share)).from_first()],
        kind: Kind::Lines,
        format: percent,
        y_max: None,
        download: Some((json.clone(), "JSON".into())),
        partial_last: true,
        categories: false,
    };
    // The creator's calls by model: each of its models in the market's
    // series (the 100 most called), the rest of its calls as "other models".
    let market = stats::market_series(
        State(state.clone()),
        ApiQuery(stats::MarketSeriesQuery {
            window: Some(window.clone()),
            by: Some("model".to_owned()),
            top: Some(100),
        }),
    )
    .await?
    .0;
    let prefix = format!("{name}/");
    let mut layers: Vec<(String, Vec<u64>)> = market
        .series
        .iter()
        .filter(|s| s.key.starts_with(&prefix))
        .map(|s| (s.key[prefix.len()..].to_owned(), s.calls.clone()))
        .collect();
    let totals: Vec<u64> = view.series.iter().map(|p| p.calls).collect();
    if market.buckets.len() != totals.len() {
        layers.clear();
    }
    let rest: Vec<u64> =
        (0..totals.len()).map(|i| totals[i].saturating_sub(layers.iter().map(|(_, c)| c[i]).sum())).collect();
    if rest.iter().any(|&c| c > 0) {
        layers.push(("other models".to_owned(), rest));
    }
    let colour = |i: usize, name: &str| if name == "other models" { 8 } else { i };
    let calls = Chart {
        id: "creator-calls".into(),
        title: "Calls by model".into(),
        x_label: x_label.into(),
        y_label: "calls".into(),
        x: x.clone(),
        series: layers
            .iter()
            .enumerate()
            .map(|(i, (model, c))| Series::new(model.clone(), c.iter().map(|&v| v as f64)).coloured(colour(i, model)))
            .collect(),
        kind: Kind::StackedBars,
        format: |v| count(v as u64),
        y_max: None,
        download: Some((format!("/v1/stats/market/series?window={window}&by=model&top=100"), "JSON".into())),
        partial_last: true,
        categories: false,
    };
    let model_shares = Chart {
        id: "creator-model-share".into(),
        title: "Share of the creator's calls, by model".into(),
        x_label: x_label.into(),
        y_label: "share of its calls".into(),
        x,
        series: layers
            .iter()
            .enumerate()
            .map(|(i, (model, c))| Series {
                name: model.clone(),
                values: c.iter().zip(&totals).map(|(&v, &t)| (t > 0).then(|| v as f64 / t as f64)).collect(),
                colour: Some(colour(i, model)),
            })
            .collect(),
        kind: Kind::StackedBars,
        format: percent,
        y_max: Some(1.0),
        download: Some((json, "JSON".into())),
        partial_last: true,
        categories: false,
    };
    let body = html! {
        div.heading {
            h1 { (view.creator) }
            (window_picker(&window, &WINDOWS, |w| format!("/creators/{name}?window={w}")))
        }
        dl.headline {
            (headline("Calls", &count(view.calls), None, None))
            (headline("Revenue", &token.amount(&view.revenue), None, None))
            (headline("Share of the market", &percent(view.share), None, None))
            (headline("Public models", &count(view.models.len() as u64), None, None))
        }
        section.charts { (calls.render()) (model_shares.render()) (share.render()) }
        section aria-labelledby="models-title" {
            h2 id="models-title" { "Models" }
            div.table-wrap {
                table #creator-models {
                    thead { tr { th scope="col" title="owner/name: its page" { "Model" } th scope="col" title="What the model does" { "Task" } th.num scope="col" title="What a caller pays per call" { "Price per call" } th.num scope="col" title="Calls in the window" { "Calls" } th.num scope="col" title="Its share of all the creator's calls in the window" { "Share of the creator's calls" } th.num scope="col" title="What callers paid for it in the window" { "Revenue" } } }
                    tbody {
                        @for model in &view.models {
                            tr {
                                td { (model_link(&model.model)) }
                                td { (model.task) }
                                td.num data-value=(model.price_per_inference) { (if model.price_per_inference == "0" { "Free".to_owned() } else { token.amount(&model.price_per_inference) }) }
                                td.num data-value=(model.calls) { (count(model.calls)) }
                                td.num data-value=(model.share) { (percent(model.share)) }
                                td.num data-value=(model.revenue) { (token.amount(&model.revenue)) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(&view.creator, Section::Elsewhere, &token, body))
}
