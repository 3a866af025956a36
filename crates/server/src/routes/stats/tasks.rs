//! `GET /v1/stats/tasks`: demand against supply per task.

use std::collections::HashMap;

use analytics::{Window, growth, median};
use axum::Json;
use axum::extract::State;
use domain::Task;
use serde::{Deserialize, Serialize};
use store::Dimension;
use utoipa::{IntoParams, ToSchema};

use super::{public_rollups, require_rollups, window_or_all};
use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiQuery;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TasksQuery {
    /// 24h, 7d, 30d (default) or all.
    pub window: Option<String>,
    /// calls (default) or opportunity: most calls per model first, where a
    /// new model would find the most demand per competitor.
    pub sort: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskItem {
    pub task: String,
    pub calls: u64,
    /// Calls in the window just before.
    pub previous_calls: u64,
    /// (calls − previous_calls) / previous_calls: this window against the
    /// one before. `null` below 10 calls, and when the window before had no
    /// calls (nothing to compare with: a client shows "new").
    pub growth: Option<f64>,
    /// Calls that failed: demand the task's models did not meet.
    pub errors: u64,
    /// errors / calls; 0 without calls.
    pub error_rate: f64,
    pub revenue: String,
    pub unique_callers: u64,
    /// Public models of this task with at least one version.
    pub models: u64,
    /// Their median price, minor units; `null` without models.
    pub median_price: Option<f64>,
    pub calls_per_model: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
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
    let window = window_or_all(&state, query.window.as_deref(), Window::MONTH).await?;
    let by_opportunity = match query.sort.as_deref() {
        None | Some("calls") => false,
        Some("opportunity") => true,
        Some(other) => return Err(ApiError::bad_request(format!("sort is calls or opportunity, not '{other}'"))),
    };
    let (from_ms, to_ms) = window.range(1, store::now_ms());
    let rollups = public_rollups(&state, Dimension::Task, window.bucket_ms, (from_ms, to_ms), true).await?;
    let mut prices: HashMap<String, Vec<u64>> = HashMap::new();
    for model in state.store.model_labels().await?.into_values().filter(|m| m.public && m.has_version) {
        prices.entry(model.task).or_default().push(model.price);
    }
    let mut items: Vec<TaskItem> = Task::ALL
        .iter()
        .map(|task| {
            // Window 0 is the one asked for, 1 the one before.
            let mut sums = [store::Rollup::default(), store::Rollup::default()];
            for (&t, rollup) in rollups.get(task.as_str()).into_iter().flatten() {
                if let Some(sum) = sums.get_mut(window.age(t, to_ms) as usize) {
                    sum.merge(rollup);
                }
            }
            let [sum, previous] = sums;
            let task_prices = prices.get(task.as_str()).cloned().unwrap_or_default();
            let models = task_prices.len() as u64;
            TaskItem {
                task: task.as_str().to_owned(),
                calls: sum.calls,
                previous_calls: previous.calls,
                growth: (previous.calls > 0).then(|| growth(sum.calls, &[previous.calls])).flatten(),
                errors: sum.errors,
                error_rate: if sum.calls == 0 { 0.0 } else { sum.errors as f64 / sum.calls as f64 },
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
