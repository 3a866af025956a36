//! `GET /v1/stats/market`: demand over a window and how concentrated it is.

use analytics::{Window, concentration};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use store::{Dimension, RollupQuery};
use utoipa::{IntoParams, ToSchema};

use super::{key_names, require_rollups, total, window};
use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiQuery;

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
    let window = window(query.window.as_deref(), Window::WEEK)?;
    let by = query.by.as_deref().unwrap_or("model");
    let dimension =
        Dimension::parse(by).ok_or_else(|| ApiError::bad_request("by is model, creator, task, app or node"))?;
    let (from_ms, to_ms) = window.range(0, store::now_ms());
    let rollups = state
        .store
        .rollups(&RollupQuery {
            dimension,
            granularity: window.bucket_ms,
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
        window: window.name.to_owned(),
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
