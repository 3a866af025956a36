//! `GET /v1/stats/models/{owner}/{name}`: a model's usage over time.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use store::{Dimension, Rollup, RollupQuery};
use utoipa::{IntoParams, ToSchema};

use super::{granularity, require_rollups, series_range, total};
use crate::AppState;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiQuery, MaybeCaller};
use crate::routes::models::visible_model;
use crate::wire::timestamp;

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

#[derive(Debug, Serialize, Deserialize, ToSchema)]
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

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SeriesView {
    pub model: String,
    pub bucket: String,
    pub series: Vec<SeriesPoint>,
    pub total: SeriesPoint,
}

/// A model's usage over time, one point per bucket (empty buckets included).
#[utoipa::path(get, path = "/v1/stats/models/{owner}/{name}", tag = "stats",
    params(("owner" = String, Path), ("name" = String, Path), SeriesQuery),
    responses((status = 200, body = SeriesView), (status = 400, body = ErrorBody), (status = 401, description = "A key was sent and is not valid", body = ErrorBody), (status = 404, body = ErrorBody), (status = 410, description = "the model was deleted or taken down", body = ErrorBody), (status = 503, body = ErrorBody)))]
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
