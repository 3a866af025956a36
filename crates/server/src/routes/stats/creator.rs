//! `GET /v1/stats/creators/{name}`: a creator's public models, their demand,
//! and the creator's share of the market over time.

use analytics::Window;
use axum::Json;
use axum::extract::{Path, State};
use domain::AccountName;
use serde::{Deserialize, Serialize};
use store::Dimension;
use utoipa::{IntoParams, ToSchema};

use super::{public_rollups, require_rollups, total, window_or_all};
use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiQuery;
use crate::wire::timestamp;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CreatorQuery {
    /// 24h, 7d, 30d (default) or all.
    pub window: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatorModel {
    /// `owner/name`.
    pub model: String,
    pub task: String,
    /// Minor units.
    pub price_per_inference: String,
    pub calls: u64,
    /// Minor units paid for its calls.
    pub revenue: String,
    /// Fraction of the creator's calls.
    pub share: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatorPoint {
    pub t: String,
    pub calls: u64,
    pub revenue: String,
    /// Every public model's calls in the bucket.
    pub market_calls: u64,
    /// `calls / market_calls`; 0 for an empty bucket.
    pub share: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatorView {
    pub creator: String,
    pub window: String,
    /// hour or day.
    pub bucket: String,
    pub calls: u64,
    pub revenue: String,
    /// The creator's fraction of all calls in the window.
    pub share: f64,
    /// Public models, most called first.
    pub models: Vec<CreatorModel>,
    pub series: Vec<CreatorPoint>,
}

/// A creator's public models and demand, and their share of the market.
#[utoipa::path(get, path = "/v1/stats/creators/{name}", tag = "stats",
    params(("name" = String, Path), CreatorQuery),
    responses((status = 200, body = CreatorView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn creator(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiQuery(query): ApiQuery<CreatorQuery>,
) -> ApiResult<Json<CreatorView>> {
    require_rollups(&state)?;
    let not_found = || ApiError::not_found(format!("no creator named '{name}'"));
    let account_name = name.parse::<AccountName>().map_err(|_| not_found())?;
    let account = state.store.account_by_name(&account_name).await?.ok_or_else(not_found)?;
    let window = window_or_all(&state, query.window.as_deref(), Window::MONTH).await?;
    let (from_ms, to_ms) = window.range(0, store::now_ms());
    // Every creator's buckets: the market's total per bucket, and this one's.
    let creators = public_rollups(&state, Dimension::Creator, window.bucket_ms, (from_ms, to_ms), false).await?;
    let own = creators.get(&account.id.to_string()).cloned().unwrap_or_default();
    let series: Vec<CreatorPoint> = (0..window.buckets)
        .map(|i| {
            let t = from_ms + i * window.bucket_ms;
            let market_calls: u64 = creators.values().filter_map(|b| b.get(&t)).map(|r| r.calls).sum();
            let (calls, revenue) = own.get(&t).map_or((0, 0), |r| (r.calls, r.revenue));
            CreatorPoint {
                t: timestamp(t),
                calls,
                revenue: revenue.to_string(),
                market_calls,
                share: if market_calls == 0 { 0.0 } else { calls as f64 / market_calls as f64 },
            }
        })
        .collect();
    let sum = total(&own);
    let market_calls: u64 = series.iter().map(|p| p.market_calls).sum();

    let models_usage = public_rollups(&state, Dimension::Model, window.bucket_ms, (from_ms, to_ms), false).await?;
    let mut models: Vec<CreatorModel> = state
        .store
        .model_labels()
        .await?
        .into_iter()
        .filter(|(_, label)| label.public && label.owner == account.name.as_str())
        .map(|(id, label)| {
            let usage = models_usage.get(&id.to_string()).map(total).unwrap_or_default();
            CreatorModel {
                model: format!("{}/{}", label.owner, label.name),
                task: label.task,
                price_per_inference: label.price.to_string(),
                calls: usage.calls,
                revenue: usage.revenue.to_string(),
                share: if sum.calls == 0 { 0.0 } else { usage.calls as f64 / sum.calls as f64 },
            }
        })
        .collect();
    models.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.model.cmp(&b.model)));
    Ok(Json(CreatorView {
        creator: account.name.to_string(),
        window: window.name.to_owned(),
        bucket: if window.bucket_ms == store::HOUR_MS { "hour" } else { "day" }.to_owned(),
        calls: sum.calls,
        revenue: sum.revenue.to_string(),
        share: if market_calls == 0 { 0.0 } else { sum.calls as f64 / market_calls as f64 },
        models,
        series,
    }))
}
