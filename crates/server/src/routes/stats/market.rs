//! `GET /v1/stats/market`: demand over a window and how concentrated it is;
//! `GET /v1/stats/market/series`: the same over time, bucket by bucket.

use std::collections::{BTreeMap, HashSet};

use analytics::{Window, concentration};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use store::{Dimension, Rollup};
use utoipa::{IntoParams, ToSchema};

use super::{key_names, public_rollups, require_rollups, total, window_or_all};
use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiQuery;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MarketQuery {
    /// 24h, 7d (default), 30d or all.
    pub window: Option<String>,
    /// model (default), creator, task, app or node.
    pub by: Option<String>,
}

/// A window's headline figures, over public models.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct MarketTotals {
    pub calls: u64,
    /// Minor units paid.
    pub revenue: String,
    /// Calls that failed (their callers paid nothing).
    pub errors: u64,
    /// Models with at least one call.
    pub active_models: usize,
    /// Creators with at least one model called.
    pub active_creators: usize,
    /// Distinct callers: exact up to 4096, estimated (HyperLogLog) beyond.
    pub unique_callers: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MarketItem {
    /// The model (`owner/name`), creator, task, app or node.
    pub key: String,
    pub calls: u64,
    pub revenue: String,
    /// Fraction of all calls in the window.
    pub share: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MarketModel {
    pub model: String,
    pub calls: u64,
    pub revenue: String,
    pub share: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MarketView {
    pub window: String,
    pub by: String,
    pub calls: u64,
    /// Minor units paid in the window.
    pub revenue: String,
    /// Items with at least one call.
    pub active: usize,
    /// Models with at least one call, whatever `by` is.
    pub active_models: usize,
    /// Creators with at least one model called.
    pub active_creators: usize,
    /// Distinct callers: exact up to 4096, estimated (HyperLogLog) beyond.
    pub unique_callers: u64,
    /// The same figures for the window just before, to compare with.
    pub previous: MarketTotals,
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
    let window = window_or_all(&state, query.window.as_deref(), Window::WEEK).await?;
    let dimension = dimension(query.by.as_deref())?;
    let now = store::now_ms();
    let (current, previous) = market_totals(&state, window, now).await?;
    let (from_ms, to_ms) = window.range(0, now);
    let rollups = public_rollups(&state, dimension, window.bucket_ms, (from_ms, to_ms), false).await?;
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
        window: window.name.to_owned(),
        by: dimension.as_str().to_owned(),
        calls: items.iter().map(|i| i.calls).sum(),
        revenue: items.iter().map(|i| i.revenue.parse::<u128>().unwrap_or(0)).sum::<u128>().to_string(),
        active: items.len(),
        active_models: current.active_models,
        active_creators: current.active_creators,
        unique_callers: current.unique_callers,
        previous,
        gini: measures.gini,
        hhi: measures.hhi,
        top10_share: measures.top10_share,
        lorenz: measures.lorenz.iter().map(|&(x, y)| [x, y]).collect(),
        items,
        models,
    }))
}

fn dimension(by: Option<&str>) -> ApiResult<Dimension> {
    Dimension::parse(by.unwrap_or("model"))
        .ok_or_else(|| ApiError::bad_request("by is model, creator, task, app or node"))
}

/// The headline figures of `window` and of the window before it.
async fn market_totals(state: &AppState, window: Window, now_ms: i64) -> ApiResult<(MarketTotals, MarketTotals)> {
    let (from_ms, to_ms) = window.range(1, now_ms);
    let rollups = public_rollups(state, Dimension::Model, window.bucket_ms, (from_ms, to_ms), true).await?;
    let labels = state.store.model_labels().await?;
    #[derive(Default)]
    struct Sums {
        usage: Rollup,
        models: HashSet<i64>,
        creators: HashSet<String>,
    }
    let mut sums = [Sums::default(), Sums::default()];
    for (key, buckets) in &rollups {
        let Some((id, label)) = key.parse::<i64>().ok().and_then(|id| Some((id, labels.get(&id)?))) else { continue };
        if !label.public {
            continue;
        }
        for (&t, rollup) in buckets {
            let Some(sums) = sums.get_mut(window.age(t, to_ms) as usize) else { continue };
            sums.usage.merge(rollup);
            if rollup.calls > 0 {
                sums.models.insert(id);
                sums.creators.insert(label.owner.clone());
            }
        }
    }
    let [current, previous] = sums.map(|s| MarketTotals {
        calls: s.usage.calls,
        revenue: s.usage.revenue.to_string(),
        errors: s.usage.errors,
        active_models: s.models.len(),
        active_creators: s.creators.len(),
        unique_callers: s.usage.callers.estimate(),
    });
    Ok((current, previous))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MarketSeriesQuery {
    /// 24h (hour buckets), 7d (default), 30d or all (day buckets).
    pub window: Option<String>,
    /// model (default), creator, task, app or node.
    pub by: Option<String>,
    /// Items given their own series, largest first (default 10, at most 100);
    /// the rest are summed into `other`.
    pub top: Option<u32>,
}

/// One item's figures, bucket by bucket, aligned with `buckets`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MarketSeriesItem {
    /// The model (`owner/name`), creator, task, app or node; `other` for the
    /// rest, `total` for all.
    pub key: String,
    pub calls: Vec<u64>,
    /// Minor units paid.
    pub revenue: Vec<String>,
}

/// How concentrated demand was within one bucket.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConcentrationPoint {
    pub t: String,
    pub calls: u64,
    /// Items with at least one call in the bucket.
    pub active: usize,
    pub gini: f64,
    pub hhi: f64,
    pub top10_share: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MarketSeriesView {
    pub window: String,
    pub by: String,
    /// hour or day.
    pub bucket: String,
    /// Each bucket's start, oldest first.
    pub buckets: Vec<String>,
    /// The `top` items by calls in the window, largest first.
    pub series: Vec<MarketSeriesItem>,
    /// Every other item, summed.
    pub other: MarketSeriesItem,
    /// Everything, summed.
    pub total: MarketSeriesItem,
    /// Concentration of each bucket's demand over the items.
    pub concentration: Vec<ConcentrationPoint>,
}

/// Series given their own line at most.
const MARKET_SERIES_TOP_MAX: u32 = 100;

/// Demand over time, per item (stacked by task, say), and how concentrated
/// it was in each bucket.
#[utoipa::path(get, path = "/v1/stats/market/series", tag = "stats",
    params(MarketSeriesQuery),
    responses((status = 200, body = MarketSeriesView), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn market_series(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<MarketSeriesQuery>,
) -> ApiResult<Json<MarketSeriesView>> {
    require_rollups(&state)?;
    let window = window_or_all(&state, query.window.as_deref(), Window::WEEK).await?;
    let dimension = dimension(query.by.as_deref())?;
    let top = query.top.unwrap_or(10);
    if top > MARKET_SERIES_TOP_MAX {
        return Err(ApiError::bad_request(format!("top is at most {MARKET_SERIES_TOP_MAX}")));
    }
    let (from_ms, to_ms) = window.range(0, store::now_ms());
    let rollups = public_rollups(&state, dimension, window.bucket_ms, (from_ms, to_ms), false).await?;
    let names = key_names(&state, dimension).await?;
    let starts: Vec<i64> = (0..window.buckets).map(|i| from_ms + i * window.bucket_ms).collect();
    let aligned = |buckets: &BTreeMap<i64, Rollup>| -> Vec<(u64, u64)> {
        starts.iter().map(|t| buckets.get(t).map_or((0, 0), |r| (r.calls, r.revenue))).collect()
    };
    // Items with a name and a call, largest first.
    let mut items: Vec<(String, Vec<(u64, u64)>)> = rollups
        .iter()
        .filter_map(|(key, buckets)| {
            let name = names.name(key)?;
            (total(buckets).calls > 0).then(|| (name, aligned(buckets)))
        })
        .collect();
    let calls_of = |points: &[(u64, u64)]| points.iter().map(|p| p.0).sum::<u64>();
    items.sort_by(|a, b| calls_of(&b.1).cmp(&calls_of(&a.1)).then_with(|| a.0.cmp(&b.0)));
    let sum = |key: &str, rows: &[(String, Vec<(u64, u64)>)]| {
        let mut points = vec![(0u64, 0u64); starts.len()];
        for (_, row) in rows {
            for (sum, point) in points.iter_mut().zip(row) {
                *sum = (sum.0.saturating_add(point.0), sum.1.saturating_add(point.1));
            }
        }
        series_item(key, &points)
    };
    let concentration = starts
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let calls: Vec<u64> = items.iter().map(|(_, points)| points[i].0).filter(|&c| c > 0).collect();
            let measures = concentration(&calls);
            ConcentrationPoint {
                t: crate::wire::timestamp(t),
                calls: calls.iter().sum(),
                active: calls.len(),
                gini: measures.gini,
                hhi: measures.hhi,
                top10_share: measures.top10_share,
            }
        })
        .collect();
    let split = items.len().min(top as usize);
    Ok(Json(MarketSeriesView {
        window: window.name.to_owned(),
        by: dimension.as_str().to_owned(),
        bucket: if window.bucket_ms == store::HOUR_MS { "hour" } else { "day" }.to_owned(),
        buckets: starts.iter().map(|&t| crate::wire::timestamp(t)).collect(),
        series: items[..split].iter().map(|(key, points)| series_item(key, points)).collect(),
        other: sum("other", &items[split..]),
        total: sum("total", &items),
        concentration,
    }))
}

fn series_item(key: &str, points: &[(u64, u64)]) -> MarketSeriesItem {
    MarketSeriesItem {
        key: key.to_owned(),
        calls: points.iter().map(|p| p.0).collect(),
        revenue: points.iter().map(|p| p.1.to_string()).collect(),
    }
}
