//! `GET /v1/stats/trending`, and the per-model usage behind it that also
//! sorts the catalogue.

use std::collections::HashMap;

use analytics::{Window, growth};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use store::Dimension;
use utoipa::{IntoParams, ToSchema};

use super::{key_names, public_rollups, require_rollups, window};
use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiQuery;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TrendingQuery {
    /// 24h (default) or 7d.
    pub window: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TrendingItem {
    pub model: String,
    /// Calls in the current window.
    pub calls: u64,
    /// Calls in the window just before.
    pub previous_calls: u64,
    /// Mean calls of the 3 windows before: the baseline `growth` compares against.
    pub baseline_calls: f64,
    /// (calls − baseline_calls) / max(baseline_calls, 1).
    pub growth: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TrendingView {
    pub window: String,
    /// Calls a model needs in the current window to be listed.
    pub calls_min: u64,
    pub items: Vec<TrendingItem>,
}

/// Previous windows a trending score compares against.
const TRENDING_PREVIOUS_WINDOWS: i64 = 3;

/// Models whose demand grows fastest against the preceding windows.
#[utoipa::path(get, path = "/v1/stats/trending", tag = "stats",
    params(TrendingQuery),
    responses((status = 200, body = TrendingView), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn trending(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<TrendingQuery>,
) -> ApiResult<Json<TrendingView>> {
    require_rollups(&state)?;
    let window = window(query.window.as_deref(), Window::DAY)?;
    if window == Window::MONTH {
        return Err(ApiError::bad_request("trending windows are 24h or 7d"));
    }
    let names = key_names(&state, Dimension::Model).await?;
    let mut items = vec![];
    for (id, usage) in usage_by_model(&state, Some(window.name)).await? {
        let (Some(name), Some(growth)) = (names.name(&id.to_string()), usage.growth) else { continue };
        items.push(TrendingItem {
            model: name,
            calls: usage.calls,
            previous_calls: usage.previous_calls,
            baseline_calls: usage.baseline_calls,
            growth,
        });
    }
    items.sort_by(|a, b| b.growth.total_cmp(&a.growth).then_with(|| b.calls.cmp(&a.calls)));
    Ok(Json(TrendingView { window: window.name.to_owned(), calls_min: analytics::TRENDING_CALLS_MIN, items }))
}

/// A model's public usage in a window and the windows before it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ModelUsage {
    pub calls: u64,
    /// Calls in the window just before.
    pub previous_calls: u64,
    /// Mean calls of the 3 windows before: what `growth` compares against.
    pub baseline_calls: f64,
    pub revenue: u64,
    /// Against the mean of the 3 windows before; `None` below the minimum volume.
    pub growth: Option<f64>,
}

/// Every model's [`ModelUsage`] over a window, by model id: for trending and
/// for sorting the catalogue by usage.
pub(crate) async fn usage_by_model(state: &AppState, window_name: Option<&str>) -> ApiResult<HashMap<i64, ModelUsage>> {
    require_rollups(state)?;
    let window = window(window_name, Window::WEEK)?;
    let (from_ms, to_ms) = window.range(TRENDING_PREVIOUS_WINDOWS, store::now_ms());
    let mut usage = HashMap::new();
    for (key, buckets) in public_rollups(state, Dimension::Model, window.bucket_ms, (from_ms, to_ms), false).await? {
        let Ok(id) = key.parse::<i64>() else { continue };
        // Window 0 is the current one; 1..=3 precede it.
        let calls = window.calls_per_window(
            buckets.iter().map(|(&t, rollup)| (t, rollup.calls)),
            TRENDING_PREVIOUS_WINDOWS,
            to_ms,
        );
        let revenue = buckets.iter().filter(|&(&t, _)| window.age(t, to_ms) == 0).map(|(_, r)| r.revenue).sum();
        let previous = &calls[1..];
        usage.insert(
            id,
            ModelUsage {
                calls: calls[0],
                previous_calls: calls[1],
                baseline_calls: previous.iter().sum::<u64>() as f64 / previous.len() as f64,
                revenue,
                growth: growth(calls[0], previous),
            },
        );
    }
    Ok(usage)
}
