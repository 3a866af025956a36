//! `GET /v1/stats/models/{owner}/{name}/demand`: where one model's demand
//! comes from (apps) and what share of its task's demand it holds.

use analytics::Window;
use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use store::Dimension;
use utoipa::{IntoParams, ToSchema};

use super::{public_rollups, require_rollups, total, window_or_all};
use crate::AppState;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiQuery, MaybeCaller};
use crate::routes::models::visible_model;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DemandQuery {
    /// 24h, 7d (default), 30d or all.
    pub window: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AppDemand {
    /// The caller's `X-App` tag; empty for untagged calls.
    pub app: String,
    pub calls: u64,
    pub errors: u64,
    /// Minor units paid.
    pub revenue: String,
    /// Fraction of the model's calls.
    pub share: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelDemandView {
    pub model: String,
    pub window: String,
    pub task: String,
    pub calls: u64,
    pub errors: u64,
    pub revenue: String,
    /// Every public model of the task: calls in the window.
    pub task_calls: u64,
    /// The model's fraction of its task's calls; `null` for a private model
    /// (its calls are not in the public figures).
    pub task_share: Option<f64>,
    /// 1 for the task's most called public model; `null` without calls, or
    /// for a private model.
    pub task_rank: Option<usize>,
    /// Most calls first.
    pub apps: Vec<AppDemand>,
}

/// One model's demand by app, and its share of its task's demand.
#[utoipa::path(get, path = "/v1/stats/models/{owner}/{name}/demand", tag = "stats",
    params(("owner" = String, Path), ("name" = String, Path), DemandQuery),
    responses((status = 200, body = ModelDemandView), (status = 400, body = ErrorBody), (status = 401, description = "A key was sent and is not valid", body = ErrorBody), (status = 404, body = ErrorBody), (status = 410, description = "the model was deleted or taken down", body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn model_demand(
    State(state): State<AppState>,
    MaybeCaller(viewer): MaybeCaller,
    Path((owner, name)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<DemandQuery>,
) -> ApiResult<Json<ModelDemandView>> {
    require_rollups(&state)?;
    let model = visible_model(&state, &owner, &name, viewer.as_ref()).await?;
    let window = window_or_all(&state, query.window.as_deref(), Window::WEEK).await?;
    let (from_ms, to_ms) = window.range(0, store::now_ms());
    let by_app = state.store.model_usage_by_app(model.id, from_ms, to_ms).await?;
    let calls: u64 = by_app.values().map(|a| a.0).sum();
    let errors: u64 = by_app.values().map(|a| a.1).sum();
    let revenue: u64 = by_app.values().fold(0u64, |sum, a| sum.saturating_add(a.2));
    let mut apps: Vec<AppDemand> = by_app
        .into_iter()
        .map(|(app, (app_calls, app_errors, app_revenue))| AppDemand {
            app,
            calls: app_calls,
            errors: app_errors,
            revenue: app_revenue.to_string(),
            share: if calls == 0 { 0.0 } else { app_calls as f64 / calls as f64 },
        })
        .collect();
    apps.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.app.cmp(&b.app)));

    // The task's public models, by calls in the window.
    let task = model.task.as_str();
    let labels = state.store.model_labels().await?;
    let usage = public_rollups(&state, Dimension::Model, window.bucket_ms, (from_ms, to_ms), false).await?;
    let mut task_models: Vec<(i64, u64)> = usage
        .iter()
        .filter_map(|(key, buckets)| {
            let id = key.parse::<i64>().ok()?;
            let label = labels.get(&id)?;
            (label.public && label.task == task).then(|| (id, total(buckets).calls))
        })
        .filter(|&(_, c)| c > 0)
        .collect();
    task_models.sort_by_key(|&(id, calls)| (std::cmp::Reverse(calls), id));
    let task_calls: u64 = task_models.iter().map(|m| m.1).sum();
    let public = labels.get(&model.id).is_some_and(|l| l.public);
    let own_calls = task_models.iter().find(|m| m.0 == model.id).map_or(0, |m| m.1);
    Ok(Json(ModelDemandView {
        model: format!("{}/{}", model.owner, model.name),
        window: window.name.to_owned(),
        task: task.to_owned(),
        calls,
        errors,
        revenue: revenue.to_string(),
        task_calls,
        task_share: public.then(|| if task_calls == 0 { 0.0 } else { own_calls as f64 / task_calls as f64 }),
        task_rank: if public { task_models.iter().position(|m| m.0 == model.id).map(|p| p + 1) } else { None },
        apps,
    }))
}
