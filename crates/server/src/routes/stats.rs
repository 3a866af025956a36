//! Usage made visible: the market's demand distribution, a model's series,
//! trending models, demand and supply per task, a creator's earnings, and
//! Prometheus metrics. Everything reads `usage_rollups`; private models count
//! only in their owner's views.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use analytics::{concentration, growth, median};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use domain::Task;
use serde::{Deserialize, Serialize};
use store::{DAY_MS, Dimension, HOUR_MS, Rollup, RollupQuery};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiQuery, Caller, MaybeCaller};
use crate::routes::models::visible_model;
use crate::wire::timestamp;

/// Previous windows a trending score compares against.
const TRENDING_PREVIOUS_WINDOWS: i64 = 3;

/// A window: its bucket width and how many buckets, the current one included.
fn window(text: Option<&str>, default: &str) -> ApiResult<(&'static str, i64, i64)> {
    match text.unwrap_or(default) {
        "24h" => Ok(("24h", HOUR_MS, 24)),
        "7d" => Ok(("7d", DAY_MS, 7)),
        "30d" => Ok(("30d", DAY_MS, 30)),
        other => Err(ApiError::bad_request(format!("window is 24h, 7d or 30d, not '{other}'"))),
    }
}

/// Bucket starts `[from, to)` of the `count` buckets ending with the current one.
fn window_range(granularity: i64, count: i64, now_ms: i64) -> (i64, i64) {
    let current = now_ms.div_euclid(granularity) * granularity;
    (current - (count - 1) * granularity, current + granularity)
}

fn require_rollups(state: &AppState) -> ApiResult<()> {
    if !state.config.analytics_rollups {
        return Err(ApiError::unavailable("usage rollups are off on this server (analytics_rollups = false)", 3600));
    }
    Ok(())
}

fn total(buckets: &BTreeMap<i64, Rollup>) -> Rollup {
    let mut sum = Rollup::default();
    buckets.values().for_each(|r| sum.merge(r));
    sum
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MarketQuery {
    /// 24h, 7d (default) or 30d.
    pub window: Option<String>,
    /// model (default), creator, task, app or node.
    pub by: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MarketItem {
    /// The model (`owner/name`), creator, task, app or node.
    pub key: String,
    pub calls: u64,
    pub revenue: String,
    /// Fraction of all calls in the window.
    pub share: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MarketModel {
    pub model: String,
    pub calls: u64,
    pub revenue: String,
    pub share: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MarketView {
    pub window: String,
    pub by: String,
    pub calls: u64,
    /// Minor units paid in the window.
    pub revenue: String,
    /// Items with at least one call.
    pub active: usize,
    /// The same, for `by=model` (the API's name).
    pub active_models: usize,
    pub gini: f64,
    pub hhi: f64,
    pub top10_share: f64,
    /// Lorenz curve points `[fraction of items, fraction of calls]`.
    pub lorenz: Vec<[f64; 2]>,
    /// By calls, largest first.
    pub items: Vec<MarketItem>,
    /// `items` for `by=model`, keyed `model`; empty for other dimensions.
    pub models: Vec<MarketModel>,
}

/// Demand over a window: calls and revenue per item, each item's share, and
/// how concentrated demand is (top-10 share, HHI, Gini, Lorenz curve).
#[utoipa::path(get, path = "/v1/stats/market", tag = "stats",
    params(MarketQuery),
    responses((status = 200, body = MarketView), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn market(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<MarketQuery>,
) -> ApiResult<Json<MarketView>> {
    require_rollups(&state)?;
    let (window_name, granularity, count) = window(query.window.as_deref(), "7d")?;
    let by = query.by.as_deref().unwrap_or("model");
    let dimension =
        Dimension::parse(by).ok_or_else(|| ApiError::bad_request("by is model, creator, task, app or node"))?;
    let (from_ms, to_ms) = window_range(granularity, count, store::now_ms());
    let rollups = state
        .store
        .rollups(&RollupQuery {
            dimension,
            granularity,
            from_ms,
            to_ms,
            keys: None,
            include_private: false,
            detail: false,
        })
        .await?;
    let names = key_names(&state, dimension).await?;
    let mut items: Vec<(String, u64, u64)> = rollups
        .iter()
        .filter_map(|(key, buckets)| {
            let name = names.name(key)?;
            let sum = total(buckets);
            (sum.calls > 0).then_some((name, sum.calls, sum.revenue))
        })
        .collect();
    items.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let measures = concentration(&items.iter().map(|i| i.1).collect::<Vec<_>>());
    let items: Vec<MarketItem> = items
        .iter()
        .zip(&measures.shares)
        .map(|((key, calls, revenue), share)| MarketItem {
            key: key.clone(),
            calls: *calls,
            revenue: revenue.to_string(),
            share: *share,
        })
        .collect();
    let models = if dimension == Dimension::Model {
        items
            .iter()
            .map(|i| MarketModel { model: i.key.clone(), calls: i.calls, revenue: i.revenue.clone(), share: i.share })
            .collect()
    } else {
        vec![]
    };
    Ok(Json(MarketView {
        window: window_name.to_owned(),
        by: dimension.as_str().to_owned(),
        calls: items.iter().map(|i| i.calls).sum(),
        revenue: items.iter().map(|i| i.revenue.parse::<u128>().unwrap_or(0)).sum::<u128>().to_string(),
        active: items.len(),
        active_models: if dimension == Dimension::Model { items.len() } else { 0 },
        gini: measures.gini,
        hhi: measures.hhi,
        top10_share: measures.top10_share,
        lorenz: measures.lorenz.iter().map(|&(x, y)| [x, y]).collect(),
        items,
        models,
    }))
}

/// How a dimension's keys are shown.
enum KeyNames {
    /// Tasks, apps and nodes are their own names.
    Themselves,
    /// Model and account ids, named; `None` for keys that must not be shown
    /// (models now private, or gone).
    Looked(HashMap<String, Option<String>>),
}

impl KeyNames {
    fn name(&self, key: &str) -> Option<String> {
        match self {
            KeyNames::Themselves => Some(key.to_owned()),
            KeyNames::Looked(names) => names.get(key).cloned().flatten(),
        }
    }
}

async fn key_names(state: &AppState, dimension: Dimension) -> ApiResult<KeyNames> {
    Ok(match dimension {
        Dimension::Model => KeyNames::Looked(
            state
                .store
                .model_labels()
                .await?
                .into_iter()
                .map(|(id, m)| (id.to_string(), m.public.then(|| format!("{}/{}", m.owner, m.name))))
                .collect(),
        ),
        Dimension::Creator => KeyNames::Looked(
            state.store.account_names().await?.into_iter().map(|(id, name)| (id.to_string(), Some(name))).collect(),
        ),
        Dimension::Task | Dimension::App | Dimension::Node => KeyNames::Themselves,
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// RFC 3339; default: the 7 day (or 24 hour) buckets ending with the one holding `to`.
    pub from: Option<String>,
    /// RFC 3339; default: now.
    pub to: Option<String>,
    /// hour or day (default).
    pub bucket: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesPoint {
    /// The bucket's start.
    pub t: String,
    pub calls: u64,
    pub revenue: String,
    pub errors: u64,
    pub unique_callers: u64,
    /// Successful calls' latency; `null` without any.
    pub latency_ms_p50: Option<f64>,
    pub latency_ms_p95: Option<f64>,
    pub latency_ms_p99: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesView {
    pub model: String,
    pub bucket: String,
    pub series: Vec<SeriesPoint>,
    pub total: SeriesPoint,
}

fn parse_time(text: &str, what: &str) -> ApiResult<i64> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| ApiError::bad_request(format!("{what} is an RFC 3339 time, such as 2026-11-25T00:00:00Z")))
}

fn granularity(text: Option<&str>) -> ApiResult<(&'static str, i64)> {
    match text.unwrap_or("day") {
        "hour" => Ok(("hour", HOUR_MS)),
        "day" => Ok(("day", DAY_MS)),
        other => Err(ApiError::bad_request(format!("bucket is hour or day, not '{other}'"))),
    }
}

/// `[from, to)` aligned to buckets, checked against `stats_series_points_max`.
fn series_range(state: &AppState, from: Option<&str>, to: Option<&str>, width: i64) -> ApiResult<(i64, i64)> {
    let to_ms = match to {
        Some(text) => parse_time(text, "to")?,
        None => store::now_ms(),
    };
    // The last bucket is the one holding `to`; by default 7 days or 24 hours of buckets end there.
    let last = (to_ms - 1).div_euclid(width) * width;
    let from_ms = match from {
        Some(text) => parse_time(text, "from")?.div_euclid(width) * width,
        None => last - (if width == DAY_MS { 6 } else { 23 }) * width,
    };
    let to_ms = last + width;
    if from_ms >= to_ms {
        return Err(ApiError::bad_request("from must be before to"));
    }
    let points = (to_ms - from_ms) / width;
    if points as u64 > state.config.stats_series_points_max {
        return Err(ApiError::bad_request(format!(
            "{points} points asked, more than stats_series_points_max = {}",
            state.config.stats_series_points_max
        )));
    }
    Ok((from_ms, to_ms))
}

fn point(t: i64, rollup: &Rollup) -> SeriesPoint {
    SeriesPoint {
        t: timestamp(t),
        calls: rollup.calls,
        revenue: rollup.revenue.to_string(),
        errors: rollup.errors,
        unique_callers: rollup.callers.estimate(),
        latency_ms_p50: rollup.latency.quantile_ms(0.5),
        latency_ms_p95: rollup.latency.quantile_ms(0.95),
        latency_ms_p99: rollup.latency.quantile_ms(0.99),
    }
}

/// A model's usage over time, one point per bucket (empty buckets included).
#[utoipa::path(get, path = "/v1/stats/models/{owner}/{name}", tag = "stats",
    params(("owner" = String, Path), ("name" = String, Path), SeriesQuery),
    responses((status = 200, body = SeriesView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn model_series(
    State(state): State<AppState>,
    MaybeCaller(viewer): MaybeCaller,
    Path((owner, name)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<SeriesQuery>,
) -> ApiResult<Json<SeriesView>> {
    require_rollups(&state)?;
    let model = visible_model(&state, &owner, &name, viewer.as_ref()).await?;
    let (bucket_name, width) = granularity(query.bucket.as_deref())?;
    let (from_ms, to_ms) = series_range(&state, query.from.as_deref(), query.to.as_deref(), width)?;
    let include_private = viewer.is_some_and(|v| v.id == model.owner_id);
    let key = model.id.to_string();
    let rollups = state
        .store
        .rollups(&RollupQuery {
            dimension: Dimension::Model,
            granularity: width,
            from_ms,
            to_ms,
            keys: Some(vec![key.clone()]),
            include_private,
            detail: true,
        })
        .await?;
    let buckets = rollups.get(&key).cloned().unwrap_or_default();
    let empty = Rollup::default();
    let series = (0..(to_ms - from_ms) / width)
        .map(|i| {
            let t = from_ms + i * width;
            point(t, buckets.get(&t).unwrap_or(&empty))
        })
        .collect();
    Ok(Json(SeriesView {
        model: format!("{}/{}", model.owner, model.name),
        bucket: bucket_name.to_owned(),
        series,
        total: point(from_ms, &total(&buckets)),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TrendingQuery {
    /// 24h (default) or 7d.
    pub window: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrendingItem {
    pub model: String,
    /// Calls in the current window.
    pub calls: u64,
    /// Calls in the window just before.
    pub previous_calls: u64,
    /// (calls − mean of the 3 previous windows) / max(that mean, 1).
    pub growth: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrendingView {
    pub window: String,
    /// Calls a model needs in the current window to be listed.
    pub calls_min: u64,
    pub items: Vec<TrendingItem>,
}

/// Models whose demand grows fastest against the preceding windows.
#[utoipa::path(get, path = "/v1/stats/trending", tag = "stats",
    params(TrendingQuery),
    responses((status = 200, body = TrendingView), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn trending(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<TrendingQuery>,
) -> ApiResult<Json<TrendingView>> {
    require_rollups(&state)?;
    let (window_name, _, _) = window(query.window.as_deref(), "24h")?;
    if window_name == "30d" {
        return Err(ApiError::bad_request("trending windows are 24h or 7d"));
    }
    let names = key_names(&state, Dimension::Model).await?;
    let mut items = vec![];
    for (id, usage) in usage_by_model(&state, Some(window_name)).await? {
        let (Some(name), Some(growth)) = (names.name(&id.to_string()), usage.growth) else { continue };
        items.push(TrendingItem { model: name, calls: usage.calls, previous_calls: usage.previous_calls, growth });
    }
    items.sort_by(|a, b| b.growth.total_cmp(&a.growth).then_with(|| b.calls.cmp(&a.calls)));
    Ok(Json(TrendingView { window: window_name.to_owned(), calls_min: analytics::TRENDING_CALLS_MIN, items }))
}

/// A model's public usage in a window and the windows before it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ModelUsage {
    pub calls: u64,
    /// Calls in the window just before.
    pub previous_calls: u64,
    pub revenue: u64,
    /// Against the mean of the 3 windows before; `None` below the minimum volume.
    pub growth: Option<f64>,
}

/// Every model's [`ModelUsage`] over a window, by model id: for trending and
/// for sorting the catalogue by usage.
pub(crate) async fn usage_by_model(state: &AppState, window_name: Option<&str>) -> ApiResult<HashMap<i64, ModelUsage>> {
    require_rollups(state)?;
    let (_, width, count) = window(window_name, "7d")?;
    let (from_ms, to_ms) = window_range(width, count * (TRENDING_PREVIOUS_WINDOWS + 1), store::now_ms());
    let query = RollupQuery {
        dimension: Dimension::Model,
        granularity: width,
        from_ms,
        to_ms,
        keys: None,
        include_private: false,
        detail: false,
    };
    let window_ms = width * count;
    let mut usage = HashMap::new();
    for (key, buckets) in state.store.rollups(&query).await? {
        let Ok(id) = key.parse::<i64>() else { continue };
        // Window 0 is the current one; 1..=3 precede it.
        let mut calls = [0u64; (TRENDING_PREVIOUS_WINDOWS + 1) as usize];
        let mut revenue = 0;
        for (t, rollup) in &buckets {
            let age = ((to_ms - 1 - t) / window_ms) as usize;
            if age < calls.len() {
                calls[age] += rollup.calls;
            }
            if age == 0 {
                revenue += rollup.revenue;
            }
        }
        let growth = growth(calls[0], &calls[1..]);
        usage.insert(id, ModelUsage { calls: calls[0], previous_calls: calls[1], revenue, growth });
    }
    Ok(usage)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TasksQuery {
    /// 24h, 7d or 30d (default).
    pub window: Option<String>,
    /// calls (default) or opportunity: most calls per model first, where a
    /// new model would find the most demand per competitor.
    pub sort: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskItem {
    pub task: String,
    pub calls: u64,
    pub revenue: String,
    pub unique_callers: u64,
    /// Public models of this task with at least one version.
    pub models: u64,
    /// Their median price, minor units; `null` without models.
    pub median_price: Option<f64>,
    pub calls_per_model: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TasksView {
    pub window: String,
    pub items: Vec<TaskItem>,
}

/// Demand against supply per task.
#[utoipa::path(get, path = "/v1/stats/tasks", tag = "stats",
    params(TasksQuery),
    responses((status = 200, body = TasksView), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn tasks(State(state): State<AppState>, ApiQuery(query): ApiQuery<TasksQuery>) -> ApiResult<Json<TasksView>> {
    require_rollups(&state)?;
    let (window_name, width, count) = window(query.window.as_deref(), "30d")?;
    let by_opportunity = match query.sort.as_deref() {
        None | Some("calls") => false,
        Some("opportunity") => true,
        Some(other) => return Err(ApiError::bad_request(format!("sort is calls or opportunity, not '{other}'"))),
    };
    let (from_ms, to_ms) = window_range(width, count, store::now_ms());
    let rollups = state
        .store
        .rollups(&RollupQuery {
            dimension: Dimension::Task,
            granularity: width,
            from_ms,
            to_ms,
            keys: None,
            include_private: false,
            detail: true,
        })
        .await?;
    let mut prices: HashMap<String, Vec<u64>> = HashMap::new();
    for model in state.store.model_labels().await?.into_values().filter(|m| m.public && m.has_version) {
        prices.entry(model.task).or_default().push(model.price);
    }
    let mut items: Vec<TaskItem> = Task::ALL
        .iter()
        .map(|task| {
            let sum = rollups.get(task.as_str()).map(total).unwrap_or_default();
            let task_prices = prices.get(task.as_str()).cloned().unwrap_or_default();
            let models = task_prices.len() as u64;
            TaskItem {
                task: task.as_str().to_owned(),
                calls: sum.calls,
                revenue: sum.revenue.to_string(),
                unique_callers: sum.callers.estimate(),
                models,
                median_price: median(&task_prices),
                calls_per_model: sum.calls as f64 / models.max(1) as f64,
            }
        })
        .collect();
    if by_opportunity {
        items.sort_by(|a, b| b.calls_per_model.total_cmp(&a.calls_per_model).then_with(|| b.calls.cmp(&a.calls)));
    } else {
        items.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.task.cmp(&b.task)));
    }
    Ok(Json(TasksView { window: window_name.to_owned(), items }))
}

/// The query of an account's own series (earnings, spending).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AccountSeriesQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    /// hour or day (default).
    pub bucket: Option<String>,
    /// model (default) or app.
    pub group_by: Option<String>,
    /// json (default) or csv.
    pub format: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EarningsPoint {
    pub t: String,
    /// The model (`owner/name`) or app.
    pub group: String,
    /// Calls that paid the creator.
    pub calls: u64,
    /// Minor units earned.
    pub earned: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EarningsView {
    pub group_by: String,
    pub bucket: String,
    /// Non-empty buckets, oldest first.
    pub series: Vec<EarningsPoint>,
    pub total: String,
}

/// An account series query, checked: buckets, range, grouping, format.
struct AccountSeries {
    bucket_name: &'static str,
    width: i64,
    from_ms: i64,
    to_ms: i64,
    group_by: &'static str,
    csv: bool,
}

fn account_series(state: &AppState, query: &AccountSeriesQuery) -> ApiResult<AccountSeries> {
    let (bucket_name, width) = granularity(query.bucket.as_deref())?;
    let (from_ms, to_ms) = series_range(state, query.from.as_deref(), query.to.as_deref(), width)?;
    let csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => return Err(ApiError::bad_request(format!("format is json or csv, not '{other}'"))),
    };
    let group_by = match query.group_by.as_deref() {
        None | Some("model") => "model",
        Some("app") => "app",
        Some(other) => return Err(ApiError::bad_request(format!("group_by is model or app, not '{other}'"))),
    };
    Ok(AccountSeries { bucket_name, width, from_ms, to_ms, group_by, csv })
}

/// Rows as CSV under `header`; each row's second cell (the group) quoted as needed.
fn csv_response(header_line: &str, rows: impl Iterator<Item = Vec<String>>) -> Response {
    let mut text = format!("{header_line}\n");
    for mut row in rows {
        row[1] = csv_field(&row[1]);
        text.push_str(&row.join(","));
        text.push('\n');
    }
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], text).into_response()
}

/// What the caller earned as a creator, by model or by app; CSV with `format=csv`.
#[utoipa::path(get, path = "/v1/account/earnings", tag = "stats",
    security(("api_key" = [])),
    params(AccountSeriesQuery),
    responses(
        (status = 200, body = EarningsView, description = "JSON, or CSV (t,group,calls,earned) with format=csv"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn earnings(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(query): ApiQuery<AccountSeriesQuery>,
) -> ApiResult<Response> {
    require_rollups(&state)?;
    let AccountSeries { bucket_name, width, from_ms, to_ms, group_by, csv } = account_series(&state, &query)?;
    let mut series = vec![];
    match group_by {
        "model" => {
            let labels = state.store.model_labels().await?;
            let mine: HashMap<String, String> = labels
                .iter()
                .filter(|(_, m)| m.owner == caller.name.as_str())
                .map(|(id, m)| (id.to_string(), format!("{}/{}", m.owner, m.name)))
                .collect();
            let rollups = state
                .store
                .rollups(&RollupQuery {
                    dimension: Dimension::Model,
                    granularity: width,
                    from_ms,
                    to_ms,
                    keys: Some(mine.keys().cloned().collect()),
                    include_private: true,
                    detail: false,
                })
                .await?;
            for (key, buckets) in rollups {
                for (t, rollup) in buckets {
                    if rollup.creator_revenue > 0 {
                        series.push((t, mine[&key].clone(), rollup.calls - rollup.errors, rollup.creator_revenue));
                    }
                }
            }
        }
        _ => {
            for (app, buckets) in state.store.earnings_by_app(caller.id, from_ms, to_ms, width).await? {
                for (t, (calls, earned)) in buckets {
                    series.push((t, app.clone(), calls, earned));
                }
            }
        }
    }
    series.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let total: u128 = series.iter().map(|p| p.3 as u128).sum();
    if csv {
        let rows = series
            .iter()
            .map(|(t, group, calls, earned)| vec![timestamp(*t), group.clone(), calls.to_string(), earned.to_string()]);
        return Ok(csv_response("t,group,calls,earned", rows));
    }
    let series = series
        .into_iter()
        .map(|(t, group, calls, earned)| EarningsPoint { t: timestamp(t), group, calls, earned: earned.to_string() })
        .collect();
    Ok(Json(EarningsView {
        group_by: group_by.to_owned(),
        bucket: bucket_name.to_owned(),
        series,
        total: total.to_string(),
    })
    .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SpendingPoint {
    pub t: String,
    /// The model (`owner/name`, as in the log) or app.
    pub group: String,
    pub calls: u64,
    pub errors: u64,
    /// Minor units paid.
    pub spent: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SpendingView {
    pub group_by: String,
    pub bucket: String,
    pub series: Vec<SpendingPoint>,
    pub total: String,
}

/// What the caller spent on inference, by model or app: calls, failed calls
/// (which cost nothing) and tokens paid, per bucket; CSV with `format=csv`.
#[utoipa::path(get, path = "/v1/account/spending", tag = "stats",
    security(("api_key" = [])),
    params(AccountSeriesQuery),
    responses(
        (status = 200, body = SpendingView, description = "JSON, or CSV (t,group,calls,failed,spent) with format=csv"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
    ))]
pub async fn spending(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(query): ApiQuery<AccountSeriesQuery>,
) -> ApiResult<Response> {
    let AccountSeries { bucket_name, width, from_ms, to_ms, group_by, csv } = account_series(&state, &query)?;
    let by_app = group_by == "app";
    let pseudonym = tlog::caller_pseudonym(&tlog::caller_secret(&state.log_keys.pseudonym, caller.id));
    let groups = state.store.spending(pseudonym.as_bytes(), by_app, from_ms, to_ms, width).await?;
    let mut series = vec![];
    for (group, buckets) in groups {
        for (t, (calls, errors, spent)) in buckets {
            series.push((t, group.clone(), calls, errors, spent));
        }
    }
    series.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let total: u128 = series.iter().map(|p| p.4 as u128).sum();
    if csv {
        let rows = series.iter().map(|(t, group, calls, errors, spent)| {
            vec![timestamp(*t), group.clone(), calls.to_string(), errors.to_string(), spent.to_string()]
        });
        return Ok(csv_response("t,group,calls,failed,spent", rows));
    }
    let series = series
        .into_iter()
        .map(|(t, group, calls, errors, spent)| SpendingPoint {
            t: timestamp(t),
            group,
            calls,
            errors,
            spent: spent.to_string(),
        })
        .collect();
    Ok(Json(SpendingView {
        group_by: group_by.to_owned(),
        bucket: bucket_name.to_owned(),
        series,
        total: total.to_string(),
    })
    .into_response())
}

/// Quotes a CSV field when it needs it (RFC 4180).
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_owned() }
}

/// Prometheus text format: this process's counters and the store's sizes.
#[utoipa::path(get, path = "/metrics", tag = "stats", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    let (accounts, models, versions, blobs) = state.store.counts().await?;
    let workers = state.executor.metrics();
    let stats = &state.sequencer.stats;
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
    gauge("vitrine_tokens_held", "Minor units reserved by running calls.", "gauge", totals.held.to_string());
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
