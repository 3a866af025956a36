//! The market (the home page) and opportunities per task.

use axum::extract::State;
use dashboard::Markup;
use dashboard::chart::{Chart, Kind, Series, lorenz, sparkline};
use dashboard::format::{Token, change, change_cell, count, percent};
use dashboard::layout::{self, Section, headline, window_picker};
use maud::html;

use super::{PageResult, Query, WINDOWS, WindowQuery, bucket_label, model_link, render, token};
use crate::AppState;
use crate::error::ApiResult;
use crate::extract::ApiQuery;
use crate::routes::stats::{
    self, MarketItem, MarketQuery, MarketSeriesItem, MarketSeriesQuery, MarketSeriesView, TasksQuery, TrendingQuery,
};

/// The market page's query: its window, and whose share of demand the share
/// chart stacks.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct MarketPageQuery {
    window: Option<String>,
    share: Option<String>,
}

/// What the share chart can stack.
const SHARE_BY: [&str; 4] = ["model", "creator", "task", "app"];

/// Items given their own layer in the share chart; the rest are "other".
const SHARE_TOP: u32 = 8;

pub(super) async fn market(State(state): State<AppState>, Query(query): Query<MarketPageQuery>) -> PageResult {
    let window = query.window.unwrap_or_else(|| "7d".to_owned());
    let share = query.share.unwrap_or_else(|| "model".to_owned());
    render(&state, market_page(&state, window, share)).await
}

async fn market_of(state: &AppState, window: &str, by: &str) -> ApiResult<stats::MarketView> {
    let query = MarketQuery { window: Some(window.to_owned()), by: Some(by.to_owned()) };
    Ok(stats::market(State(state.clone()), ApiQuery(query)).await?.0)
}

async fn series_of(state: &AppState, window: &str, by: &str, top: u32) -> ApiResult<MarketSeriesView> {
    let query = MarketSeriesQuery { window: Some(window.to_owned()), by: Some(by.to_owned()), top: Some(top) };
    Ok(stats::market_series(State(state.clone()), ApiQuery(query)).await?.0)
}

/// Models on the leaderboard.
const LEADERBOARD_ROWS: u32 = 20;

async fn market_page(state: &AppState, window: String, share: String) -> ApiResult<Markup> {
    let token = token(state);
    if !SHARE_BY.contains(&share.as_str()) {
        return Err(crate::error::ApiError::bad_request(format!(
            "share is model, creator, task or app, not '{share}'"
        )));
    }
    let view = market_of(state, &window, "model").await?;
    let by_task = series_of(state, &window, "task", 10).await?;
    let by_model = series_of(state, &window, "model", LEADERBOARD_ROWS).await?;
    let apps = market_of(state, &window, "app").await?;
    let nodes = market_of(state, &window, "node").await?;
    let trending_window = if window == "24h" { "24h" } else { "7d" };
    let trending =
        stats::trending(State(state.clone()), ApiQuery(TrendingQuery { window: Some(trending_window.to_owned()) }))
            .await?
            .0;
    let labels: Vec<String> = by_task.buckets.iter().map(|t| bucket_label(t, &by_task.bucket)).collect();
    let bucket_unit = if by_task.bucket == "hour" { "hour (UTC)" } else { "day (UTC)" };
    let compare = window != "all";
    let changed = |current: f64, previous: f64| compare.then(|| change(current, previous));
    let revenue = |minor: &str| token.approximate(minor);

    let demand =
        Chart {
            id: "demand-by-task".into(),
            title: "Calls over time, by task".into(),
            x_label: bucket_unit.into(),
            y_label: "calls".into(),
            x: labels.clone(),
            // Each task in its own colour whatever the window shows; the rest in "other"'s grey.
            series: by_task
                .series
                .iter()
                .map(|s| Series::new(s.key.clone(), s.calls.iter().map(|&c| c as f64)).coloured(task_colour(&s.key)))
                .chain((by_task.other.calls.iter().any(|&c| c > 0)).then(|| {
                    Series::new("other", by_task.other.calls.iter().map(|&c| c as f64)).coloured(OTHER_COLOUR)
                }))
                .collect(),
            kind: Kind::StackedBars,
            format: |v| count(v as u64),
            y_max: None,
            download: Some((format!("/v1/stats/market/series?window={window}&by=task"), "JSON".into())),
            partial_last: true,
            categories: false,
        };
    let concentration = Chart {
        id: "concentration-over-time".into(),
        title: "Concentration over time, across models".into(),
        x_label: bucket_unit.into(),
        y_label: "index (0 to 1)".into(),
        x: labels,
        // A bucket without calls has no concentration: a gap, not a zero.
        series: [
            ("Gini", by_model.concentration.iter().map(|c| c.gini).collect::<Vec<_>>()),
            ("top-10 share", by_model.concentration.iter().map(|c| c.top10_share).collect()),
            ("HHI", by_model.concentration.iter().map(|c| c.hhi).collect()),
        ]
        .into_iter()
        .map(|(name, values)| Series {
            name: name.to_owned(),
            values: values.into_iter().zip(&by_model.total.calls).map(|(v, &calls)| (calls > 0).then_some(v)).collect(),
            colour: None,
        })
        .collect(),
        kind: Kind::Lines,
        format: |v| format!("{v:.3}"),
        y_max: Some(1.0),
        download: Some((format!("/v1/stats/market/series?window={window}&by=model"), "JSON".into())),
        partial_last: true,
        categories: false,
    };
    let shares = share_chart(state, &window, &share).await?;
    let growth = growth_by_model(state, &window).await?;
    let sparklines: std::collections::HashMap<&str, &Vec<u64>> =
        by_model.series.iter().map(|s| (s.key.as_str(), &s.calls)).collect();

    let body = html! {
        div.heading {
            h1 { "The market" }
            (window_picker(&window, &WINDOWS, |w| format!("/?window={w}")))
        }
        p.lede { "Where demand goes: every call to every public model, in the last " (layout::window_name(&window)) "."
            @if compare { " Each change compares with the " (layout::window_name(&window)) " before; the current " (if window == "24h" { "hour" } else { "day" }) " counts only so far." } }
        section aria-labelledby="headline-title" data-live-market=(window) {
            h2.visually-hidden id="headline-title" { "Headline" }
            dl.headline {
                (headline("Calls", &count(view.calls), changed(view.calls as f64, view.previous.calls as f64), Some("calls")))
                (headline("Revenue", &token.amount(&view.revenue), changed(revenue(&view.revenue), revenue(&view.previous.revenue)), Some("revenue")))
                (headline("Active models", &count(view.active_models as u64), changed(view.active_models as f64, view.previous.active_models as f64), Some("active_models")))
                (headline("Creators", &count(view.active_creators as u64), changed(view.active_creators as f64, view.previous.active_creators as f64), Some("active_creators")))
                (headline("Callers", &count(view.unique_callers), changed(view.unique_callers as f64, view.previous.unique_callers as f64), Some("unique_callers")))
            }
            p.live role="status" aria-live="polite" data-live="status" {}
        }
        section aria-labelledby="share-title" {
            h2 id="share-title" { "Where demand goes" }
            p.small { "Each " (share) "'s share of all calls, " (layout::window_name(&window)) " at a glance: the top " (SHARE_TOP) " by calls, the rest as \"other\"." }
            nav.windows aria-label="Share of" {
                @for by in SHARE_BY {
                    a href=(format!("/?window={window}&share={by}#share-title")) aria-current=[(by == share).then_some("true")] { "by " (by) }
                }
            }
            (shares.render())
        }
        section { (demand.render()) }
        section aria-labelledby="leaderboard-title" {
            h2 id="leaderboard-title" { "Leaderboard" }
            p.small { "The most called public models in " (layout::window_name(&window)) ", by calls." }
            div.table-wrap {
                table #leaderboard.leaderboard {
                    thead { tr {
                        th.rank scope="col" title="Rank by calls" { "#" }
                        th scope="col" title="owner/name: its page" { "Model" }
                        th.num scope="col" title="Its calls as a share of all calls in the window" { "Share" }
                        th.num scope="col" title="Paid and free calls in the window" { "Calls" }
                        th.num scope="col" title=(format!("What callers paid for it in the window, in {}", token.symbol)) { "Revenue" }
                        th.num.change-col scope="col" title="Calls in this window against the window before" { "Change" }
                        th.spark-col scope="col" title="Calls per bucket over the window; the last point is the running one" { "Calls over time" }
                    } }
                    tbody {
                        @for (rank, item) in view.items.iter().take(LEADERBOARD_ROWS as usize).enumerate() {
                            tr data-model=(item.key) {
                                td.rank { (rank + 1) }
                                td.model { (model_link(&item.key)) }
                                td.num data-value=(item.share) { (percent(item.share)) }
                                td.num data-value=(item.calls) { (count(item.calls)) }
                                td.num data-value=(item.revenue) { (token.amount(&item.revenue)) }
                                td.num.change-col { @match growth.get(&item.key) { Some((calls, previous)) => (change_cell(*calls as f64, *previous as f64)), None => "–" } }
                                td.spark-col { @if let Some(calls) = sparklines.get(item.key.as_str()) { (sparkline(calls, &format!("calls of {} per {}", item.key, by_model.bucket))) } }
                            }
                        }
                    }
                }
            }
            p.more { a href=(format!("/v1/stats/market?window={window}")) { "All models as JSON" } " · " a href="/catalogue?sort=popular" { "the catalogue" } }
        }
        section.pair aria-labelledby="concentration-title" {
            h2 id="concentration-title" { "How concentrated demand is" }
            p.small { "Whether a few models take most calls or many share them, in " (layout::window_name(&window)) "." }
            dl.headline.small {
                (layout::measure("Gini", &format!("{:.3}", view.gini), "How unequal calls are between models: 0 = every model gets the same, 1 = one model takes all."))
                (layout::measure("HHI", &format!("{:.3}", view.hhi), &format!("The sum of squared shares: 1/N when N models share equally ({}), 1 = one model takes all.", hhi_even(view.active))))
                (layout::measure("Top-10 share", &percent(view.top10_share), "Of all calls went to the 10 most called models."))
            }
            div.charts {
                (lorenz("lorenz", &view.lorenz.iter().map(|p| (p[0], p[1])).collect::<Vec<_>>(), "models"))
                (concentration.render())
            }
        }
        section aria-labelledby="trending-title" {
            h2 id="trending-title" { "Trending (" (layout::window_name(trending_window)) ")" }
            p.small { "Models whose calls rose most against their usual calls (the mean of the three windows before), with at least " (trending.calls_min) " calls in the window. A model with no calls before counts as having had one." }
            @if trending.items.is_empty() {
                (layout::notice(&format!("No model has the {} calls it takes to trend in this window.", trending.calls_min)))
            } @else {
                div.table-wrap {
                    table #trending {
                        thead { tr {
                            th scope="col" title="owner/name" { "Model" }
                            th.num scope="col" title="Calls in this window" { "Calls" }
                            th.num.phone-hide scope="col" title="Calls in the window just before this one" { "Window before" }
                            th.num scope="col" title="This window against the window before" { "Change" }
                            th.num.phone-hide scope="col" title="The mean of the calls of the three windows before this one" { "Usual calls" }
                            th.num scope="col" title="This window against the usual calls: what the list is ranked by" { "Against usual" }
                        } }
                        tbody {
                            @for item in trending.items.iter().take(10) {
                                tr {
                                    td { (model_link(&item.model)) }
                                    td.num data-value=(item.calls) { (count(item.calls)) }
                                    td.num.phone-hide data-value=(item.previous_calls) { (count(item.previous_calls)) }
                                    td.num { (change_cell(item.calls as f64, item.previous_calls as f64)) }
                                    td.num.phone-hide data-value=(item.baseline_calls) { (format!("{:.1}", item.baseline_calls)) }
                                    td.num data-value=(item.growth) { (change_cell(item.calls as f64, item.baseline_calls.max(1.0))) }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.pair {
            (share_table("apps", "Apps", "App", &apps.items, &token, &format!("/v1/stats/market?window={window}&by=app")))
            (share_table("nodes", "Nodes", "Node", &nodes.items, &token, &format!("/v1/stats/market?window={window}&by=node")))
        }
    };
    Ok(layout::page("Market", Section::Market, &token, body))
}

/// Each item's share of all calls over time, stacked to 100 %.
async fn share_chart(state: &AppState, window: &str, by: &str) -> ApiResult<Chart> {
    let view = series_of(state, window, by, SHARE_TOP).await?;
    let share = |calls: &[u64]| -> Vec<Option<f64>> {
        calls.iter().zip(&view.total.calls).map(|(&c, &total)| (total > 0).then(|| c as f64 / total as f64)).collect()
    };
    let layer = |item: &MarketSeriesItem, index: usize| {
        let colour = if by == "task" { task_colour(&item.key) } else { index };
        let name = if item.key.is_empty() { "untagged".to_owned() } else { item.key.clone() };
        Series { name, values: share(&item.calls), colour: Some(colour) }
    };
    let mut series: Vec<Series> = view.series.iter().enumerate().map(|(i, item)| layer(item, i)).collect();
    if view.other.calls.iter().any(|&c| c > 0) {
        series.push(Series { name: "other".into(), values: share(&view.other.calls), colour: Some(OTHER_COLOUR) });
    }
    Ok(Chart {
        id: "share-of-demand".into(),
        title: format!("Share of calls by {by}"),
        x_label: if view.bucket == "hour" { "hour (UTC)" } else { "day (UTC)" }.into(),
        y_label: "share of all calls".into(),
        x: view.buckets.iter().map(|t| bucket_label(t, &view.bucket)).collect(),
        series,
        kind: Kind::StackedBars,
        format: percent,
        y_max: Some(1.0),
        download: Some((format!("/v1/stats/market/series?window={window}&by={by}&top={SHARE_TOP}"), "JSON".into())),
        partial_last: true,
        categories: false,
    })
}

/// HHI when `n` models share equally, as a hint of its scale.
fn hhi_even(n: usize) -> String {
    if n == 0 { "no models called yet".to_owned() } else { format!("{n} models now: {:.3}", 1.0 / n as f64) }
}

/// A task's colour in every chart: its place in the list of tasks.
fn task_colour(task: &str) -> usize {
    domain::Task::ALL.iter().position(|t| t.as_str() == task).unwrap_or(OTHER_COLOUR)
}

/// The colour of "other" (the palette's grey).
const OTHER_COLOUR: usize = 8;

/// Each public model's calls in `window` and in the window before, by
/// `owner/name`: the leaderboard's change.
async fn growth_by_model(state: &AppState, window: &str) -> ApiResult<std::collections::HashMap<String, (u64, u64)>> {
    if window == "all" {
        return Ok(Default::default());
    }
    let labels = state.store.model_labels().await?;
    let usage = stats::usage_by_model(state, Some(window)).await?;
    Ok(usage
        .into_iter()
        .filter_map(|(id, usage)| {
            let label = labels.get(&id).filter(|l| l.public)?;
            Some((format!("{}/{}", label.owner, label.name), (usage.calls, usage.previous_calls)))
        })
        .collect())
}

fn share_table(id: &str, title: &str, column: &str, items: &[MarketItem], token: &Token, json: &str) -> Markup {
    html! {
        div {
            h2 id=(format!("{id}-title")) { (title) }
            div.table-wrap {
                table id=(id) aria-labelledby=(format!("{id}-title")) {
                    thead { tr { th scope="col" title=(format!("The {}", column.to_lowercase())) { (column) } th.num scope="col" title="Calls in the window" { "Calls" } th.num scope="col" title="Its share of all calls in the window" { "Share" } th.num scope="col" title="What its calls paid in the window" { "Revenue" } } }
                    tbody {
                        @for item in items {
                            tr {
                                td { @if item.key.is_empty() { em { "untagged" } } @else { (item.key) } }
                                td.num data-value=(item.calls) { (count(item.calls)) }
                                td.num data-value=(item.share) { (percent(item.share)) }
                                td.num data-value=(item.revenue) { (token.amount(&item.revenue)) }
                            }
                        }
                    }
                }
            }
            p.more { a href=(json) { "JSON" } }
        }
    }
}

pub(super) async fn opportunities(State(state): State<AppState>, Query(query): Query<WindowQuery>) -> PageResult {
    let window = query.window.unwrap_or_else(|| "30d".to_owned());
    render(&state, opportunities_page(&state, window)).await
}

async fn opportunities_page(state: &AppState, window: String) -> ApiResult<Markup> {
    let token = token(state);
    let query = TasksQuery { window: Some(window.clone()), sort: Some("opportunity".to_owned()) };
    let tasks = stats::tasks(State(state.clone()), ApiQuery(query)).await?.0;
    let chart = Chart {
        id: "calls-per-model".into(),
        title: "Demand per model, by task".into(),
        x_label: "task".into(),
        y_label: "calls per public model".into(),
        x: tasks.items.iter().map(|t| t.task.clone()).collect(),
        series: vec![Series::new("calls per model", tasks.items.iter().map(|t| t.calls_per_model))],
        kind: Kind::StackedBars,
        format: |v| format!("{v:.1}"),
        y_max: None,
        download: Some((format!("/v1/stats/tasks?window={window}&sort=opportunity"), "JSON".into())),
        partial_last: false,
        categories: true,
    };
    let body = html! {
        div.heading {
            h1 { "Opportunities" }
            (window_picker(&window, &WINDOWS, |w| format!("/opportunities?window={w}")))
        }
        p.lede { "Demand against supply for each task, most calls per model first: where many calls meet few models, a new model finds users. Failed calls are calls that got an error, whether the model failed or the caller's input was refused." }
        section { (chart.render()) }
        section aria-labelledby="tasks-title" {
            h2 id="tasks-title" { "Tasks, most calls per model first" }
            div.table-wrap {
                table #tasks {
                    thead { tr {
                        th scope="col" title="What the models do" { "Task" }
                        th.num scope="col" title="Calls to the task's public models in the window" { "Calls" }
                        th.num scope="col" title="Calls in this window against the window before" { "Change" }
                        th.num scope="col" title="Public models of the task with a version to call" { "Models" }
                        th.num scope="col" title="Calls divided by models: the demand each model meets; what the list is ranked by" { "Calls per model" }
                        th.num scope="col" title="The middle price per call of the task's models" { "Median price per call" }
                        th.num scope="col" title="Calls that got an error (the model failed, or the input was refused), and their share" { "Failed calls" }
                        th.num scope="col" title="Distinct callers (estimated past a few thousand)" { "Callers" }
                        th.num scope="col" title=(format!("What callers paid in the window, in {}", token.symbol)) { "Revenue" }
                    } }
                    tbody {
                        @for task in &tasks.items {
                            tr data-task=(task.task) {
                                th scope="row" { a href=(format!("/catalogue?task={}", task.task)) { (task.task) } }
                                td.num data-value=(task.calls) { (count(task.calls)) }
                                td.num { (change_cell(task.calls as f64, task.previous_calls as f64)) }
                                td.num data-value=(task.models) { (count(task.models)) }
                                td.num data-value=(task.calls_per_model) { (format!("{:.1}", task.calls_per_model)) }
                                td.num { @match task.median_price { Some(p) => (super::catalogue::price_per_call(&token, &format!("{}", p.round() as u128)).trim_end_matches(" per call")), None => "–" } }
                                td.num data-value=(task.errors) { (count(task.errors)) " (" (percent(task.error_rate)) ")" }
                                td.num data-value=(task.unique_callers) { (count(task.unique_callers)) }
                                td.num data-value=(task.revenue) { (token.amount(&task.revenue)) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page("Opportunities", Section::Opportunities, &token, body))
}
