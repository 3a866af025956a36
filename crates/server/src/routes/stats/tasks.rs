//! `GET /v1/stats/tasks`: demand against supply per task.

use std::collections::HashMap;

use analytics::{Window, median};
use axum::Json;
use axum::extract::State;
use domain::Task;
use serde::{Deserialize, Serialize};
use store::{Dimension, RollupQuery};
use utoipa::{IntoParams, ToSchema};

use super::{require_rollups, total, window};
use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiQuery;

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
    let window = window(query.window.as_deref(), Window::MONTH)?;
    let by_opportunity = match query.sort.as_deref() {
        None | Some("calls") => false,
        Some("opportunity") => true,
        Some(other) => return Err(ApiError::bad_request(format!("sort is calls or opportunity, not '{other}'"))),
    };
    let (from_ms, to_ms) = window.range(0, store::now_ms());
    let rollups = state
        .store
        .rollups(&RollupQuery {
            dimension: Dimension::Task,
            granularity: window.bucket_ms,
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
    Ok(Json(TasksView { window: window.name.to_owned(), items }))
}
