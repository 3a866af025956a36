//! Take-downs: the operator takes a model down with a reason (its calls,
//! page and files answer 410 to everyone; its owner and the operator still
//! see it, with the reason) and restores it. Its history stays.

use axum::Json;
use axum::extract::{Path, State};

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, Operator};
use crate::routes::quarantine::{any_model, check_reason};
use crate::wire::{ModelView, TakedownRequest};

/// Takes a model down with a reason (operator only). Taking it down again
/// replaces the reason.
#[utoipa::path(post, path = "/v1/admin/models/{owner}/{name}/takedown", tag = "models",
    security(("api_key" = [])),
    params(("owner" = String, Path), ("name" = String, Path)),
    request_body = TakedownRequest,
    responses(
        (status = 200, body = ModelView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 410, description = "deleted by its owner", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
pub async fn take_down(
    State(state): State<AppState>,
    Operator(operator): Operator,
    Path((owner, name)): Path<(String, String)>,
    ApiJson(request): ApiJson<TakedownRequest>,
) -> ApiResult<Json<ModelView>> {
    let reason = check_reason(&request.reason, false)?;
    let model = any_model(&state, &owner, &name).await?;
    if model.deleted_at_ms.is_some() {
        return Err(ApiError::gone(format!("'{owner}/{name}' was deleted by its owner")));
    }
    state.store.set_takedown(model.id, Some(reason)).await?;
    state.market.known_models.forget_model(&model.owner, &model.name);
    tracing::warn!(model = %format!("{owner}/{name}"), %reason, "model taken down by the operator");
    view(&state, &owner, &name, &operator).await
}

/// Restores a model taken down (operator only).
#[utoipa::path(delete, path = "/v1/admin/models/{owner}/{name}/takedown", tag = "models",
    security(("api_key" = [])),
    params(("owner" = String, Path), ("name" = String, Path)),
    responses(
        (status = 200, body = ModelView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, description = "no such model, or it is not taken down", body = ErrorBody),
    ))]
pub async fn restore(
    State(state): State<AppState>,
    Operator(operator): Operator,
    Path((owner, name)): Path<(String, String)>,
) -> ApiResult<Json<ModelView>> {
    let model = any_model(&state, &owner, &name).await?;
    if model.takedown.is_none() || model.deleted_at_ms.is_some() {
        return Err(ApiError::not_found(format!("'{owner}/{name}' is not taken down")));
    }
    state.store.set_takedown(model.id, None).await?;
    state.market.known_models.forget_model(&model.owner, &model.name);
    tracing::info!(model = %format!("{owner}/{name}"), "model restored by the operator");
    view(&state, &owner, &name, &operator).await
}

async fn view(state: &AppState, owner: &str, name: &str, operator: &store::Account) -> ApiResult<Json<ModelView>> {
    let model = any_model(state, owner, name).await?;
    Ok(Json(ModelView::for_viewer(&model, Some(operator), &state.market.log_keys)))
}
