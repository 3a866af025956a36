//! The market (the home page) and opportunities per task.

use axum::extract::State;
use dashboard::Markup;
use dashboard::chart::{Chart, Kind, Series, lorenz, sparkline};
use dashboard::format::{Token, change, count, percent};
use dashboard::layout::{self, Section, headline, window_picker};
use maud::html;

use super::{PageResult, Query, WINDOWS, WindowQuery, bucket_label, model_link, percent_or_dash, render, token};
use crate::AppState;
use crate::error::ApiResult;
use crate::extract::ApiQuery;
use crate::routes::stats::{
    self, MarketItem, MarketQuery, MarketSeriesQuery, MarketSeriesView, TasksQuery, TrendingQuery,
};

pub(super) async fn market(State(state): State<AppState>, Query(query): Query<WindowQuery>) -> PageResult {
    let window = query.window.unwrap_or_else(|| "7d".to_owned());
    render(&state, market_page(&state, window)).await
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

async fn market_page(state: &AppState, window: String) -> ApiResult<Markup> {
    let token = token(state);
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

    let demand = Chart {
        id: "demand-by-task".into(),
        title: "Calls over time, by task".into(),
        x_label: bucket_unit.into(),
        y_label: "calls".into(),
        x: labels.clone(),
        series: by_task
            .series
            .iter()
            .chain(std::iter::once(&by_task.other).filter(|o| o.calls.iter().any(|&c| c > 0)))
            .map(|s| Series::new(s.key.clone(), s.calls.iter().map(|&c| c as f64)))
            .collect(),
        kind: Kind::StackedBars,
        format: |v| count(v as u64),
        y_max: None,
        download: Some((format!("/v1/stats/market/series?window={window}&by=task"), "JSON".into())),
    };
    let concentration = Chart {
        id: "concentration-over-time".into(),
        title: "Concentration over time, across models".into(),
        x_label: bucket_unit.into(),
        y_label: "index (0 to 1)".into(),
        x: labels,
        series: vec![
            Series::new("Gini", by_model.concentration.iter().map(|c| c.gini)),
            Series::new("top-10 share", by_model.concentration.iter().map(|c| c.top10_share)),
            Series::new("HHI", by_model.concentration.iter().map(|c| c.hhi)),
        ],
        kind: Kind::Lines,
        format: |v| format!("{v:.3}"),
        y_max: Some(1.0),
        download: Some((format!("/v1/stats/market/series?window={window}&by=model"), "JSON".into())),
    };
    let growth = growth_by_model(state, &window).await?;
    let sparklines: std::collections::HashMap<&str, &Vec<u64>> =
        by_model.series.iter().map(|s| (s.key.as_str(), &s.calls)).collect();

    let body = html! {
        div.heading {
            h1 { "The market" }
            (window_picker(&window, &WINDOWS, |w| format!("/?window={w}")))
        }
        p.lede { "Where demand goes: every call to every public model, in the last " (layout::window_name(&window)) "." }
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
        section { (demand.render()) }
        section aria-labelledby="leaderboard-title" {
            h2 id="leaderboard-title" { "Leaderboard" }
            div.table-wrap {
                table #leaderboard {
                    thead { tr {
                        th scope="col" { "#" } th scope="col" { "Model" } th.num scope="col" { "Share" }
                        th.num scope="col" { "Calls" } th.num scope="col" { "Revenue" } th.num scope="col" { "Growth" }
                        th scope="col" { "Calls over time" }
                    } }
                    tbody {
                        @for (rank, item) in view.items.iter().take(LEADERBOARD_ROWS as usize).enumerate() {
                            tr data-model=(item.key) {
                                td { (rank + 1) }
                                td { (model_link(&item.key)) }
                                td.num data-value=(item.share) { (percent(item.share)) }
                                td.num data-value=(item.calls) { (count(item.calls)) }
                                td.num data-value=(item.revenue) { (token.amount(&item.revenue)) }
                                td.num { (percent_or_dash(growth.get(&item.key).copied().flatten())) }
                                td { @if let Some(calls) = sparklines.get(item.key.as_str()) { (sparkline(calls, &format!("calls of {} per {}", item.key, by_model.bucket))) } }
                            }
                        }
                    }
                }
            }
            p.more { a href=(format!("/v1/stats/market?window={window}")) { "All models as JSON" } " · " a href="/catalogue?sort=popular" { "the catalogue" } }
        }
        section.pair aria-labelledby="concentration-title" {
            h2 id="concentration-title" { "How concentrated demand is" }
            dl.headline.small {
                (headline("Gini", &format!("{:.3}", view.gini), None, None))
                (headline("HHI", &format!("{:.3}", view.hhi), None, None))
                (headline("Top-10 share", &percent(view.top10_share), None, None))
            }
            div.charts {
                (lorenz("lorenz", &view.lorenz.iter().map(|p| (p[0], p[1])).collect::<Vec<_>>(), "models"))
                (concentration.render())
            }
        }
        section aria-labelledby="trending-title" {
            h2 id="trending-title" { "Trending (" (layout::window_name(trending_window)) ")" }
            @if trending.items.is_empty() {
                (layout::notice(&format!("No model has the {} calls it takes to trend in this window.", trending.calls_min)))
            } @else {
                div.table-wrap {
                    table #trending {
                        thead { tr { th scope="col" { "Model" } th.num scope="col" { "Calls" } th.num scope="col" { "Window before" } th.num scope="col" { "Baseline (mean of 3 before)" } th.num scope="col" { "Growth" } } }
                        tbody {
                            @for item in trending.items.iter().take(10) {
                                tr {
                                    td { (model_link(&item.model)) }
                                    td.num data-value=(item.calls) { (count(item.calls)) }
                                    td.num data-value=(item.previous_calls) { (count(item.previous_calls)) }
                                    td.num data-value=(item.baseline_calls) { (format!("{:.1}", item.baseline_calls)) }
                                    td.num data-value=(item.growth) { (percent(item.growth)) }
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

/// Each model's growth over `window` against the windows before it (as
/// trending computes it), by `owner/name`; `None` below the volume it takes.
async fn growth_by_model(state: &AppState, window: &str) -> ApiResult<std::collections::HashMap<String, Option<f64>>> {
    if window == "all" {
        return Ok(Default::default());
    }
    let labels = state.store.model_labels().await?;
    let usage = stats::usage_by_model(state, Some(window)).await?;
    Ok(usage
        .into_iter()
        .filter_map(|(id, usage)| {
            let label = labels.get(&id).filter(|l| l.public)?;
            Some((format!("{}/{}", label.owner, label.name), usage.growth))
        })
        .collect())
}

fn share_table(id: &str, title: &str, column: &str, items: &[MarketItem], token: &Token, json: &str) -> Markup {
    html! {
        div {
            h2 id=(format!("{id}-title")) { (title) }
            div.table-wrap {
                table id=(id) aria-labelledby=(format!("{id}-title")) {
                    thead { tr { th scope="col" { (column) } th.num scope="col" { "Calls" } th.num scope="col" { "Share" } th.num scope="col" { "Revenue" } } }
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
    };
    let body = html! {
        div.heading {
            h1 { "Opportunities" }
            (window_picker(&window, &WINDOWS, |w| format!("/opportunities?window={w}")))
        }
        p.lede { "Demand against supply for each task: where many calls meet few models, a new model finds users. Failing calls are demand the task's models did not meet." }
        section { (chart.render()) }
        section aria-labelledby="tasks-title" {
            h2 id="tasks-title" { "Tasks, most calls per model first" }
            div.table-wrap {
                table #tasks {
                    thead { tr {
                        th scope="col" { "Task" } th.num scope="col" { "Calls" } th.num scope="col" { "Growth" }
                        th.num scope="col" { "Models" } th.num scope="col" { "Calls per model" } th.num scope="col" { "Median price" }
                        th.num scope="col" { "Failing calls" } th.num scope="col" { "Callers" } th.num scope="col" { "Revenue" }
                    } }
                    tbody {
                        @for task in &tasks.items {
                            tr data-task=(task.task) {
                                th scope="row" { a href=(format!("/catalogue?task={}", task.task)) { (task.task) } }
                                td.num data-value=(task.calls) { (count(task.calls)) }
                                td.num { (percent_or_dash(task.growth)) }
                                td.num data-value=(task.models) { (count(task.models)) }
                                td.num data-value=(task.calls_per_model) { (format!("{:.1}", task.calls_per_model)) }
                                td.num { @match task.median_price { Some(p) => (token.amount(&format!("{}", p.round() as u128))), None => "–" } }
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
