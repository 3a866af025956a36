//! Quarantine: versions taken out of service, automatically after repeated
//! crashes (see `quarantine.rs`) or by the operator; the operator lists them
//! and lifts them. Their owners see the quarantine on the version.

use axum::Json;
use axum::extract::{Path, State};
use store::ModelRecord;

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, Operator};
use crate::wire::{QuarantineList, QuarantineRequest, QuarantinedVersionView, VersionView};

/// A reason is free text from the operator; bounded like every such field.
const REASON_CHARS_MAX: usize = 500;

/// Every quarantined version, most recent first (operator only).
#[utoipa::path(get, path = "/v1/admin/quarantines", tag = "models",
    security(("api_key" = [])),
    responses(
        (status = 200, body = QuarantineList),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
    ))]
pub async fn list_quarantines(State(state): State<AppState>, _operator: Operator) -> ApiResult<Json<QuarantineList>> {
    let items = state
        .store
        .quarantined_versions()
        .await?
        .into_iter()
        .map(|q| QuarantinedVersionView {
            model: format!("{}/{}", q.owner, q.model),
            version: q.version,
            reason: q.quarantine.reason,
            since: crate::wire::timestamp(q.quarantine.since_ms),
        })
        .collect();
    Ok(Json(QuarantineList { items }))
}

/// Takes a version out of service with a reason (operator only); its calls
/// answer 503 `model_quarantined` until lifted.
#[utoipa::path(post, path = "/v1/models/{owner}/{name}/versions/{version}/quarantine", tag = "models",
    security(("api_key" = [])),
    params(("owner" = String, Path), ("name" = String, Path), ("version" = i64, Path)),
    request_body = QuarantineRequest,
    responses(
        (status = 200, body = VersionView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
pub async fn quarantine_version(
    State(state): State<AppState>,
    _operator: Operator,
    Path((owner, name, version)): Path<(String, String, String)>,
    ApiJson(request): ApiJson<QuarantineRequest>,
) -> ApiResult<Json<VersionView>> {
    let reason = check_reason(&request.reason, false)?;
    let (model, version) = model_version(&state, &owner, &name, &version).await?;
    state.store.quarantine_version(model.id, version, reason, store::now_ms()).await?;
    state.market.known_models.forget_version(model.id, version);
    tracing::warn!(model = %format!("{owner}/{name}@{version}"), %reason, "version quarantined by the operator");
    version_view(&state, &model, version).await
}

/// Puts a quarantined version back in service (operator only).
#[utoipa::path(delete, path = "/v1/models/{owner}/{name}/versions/{version}/quarantine", tag = "models",
    security(("api_key" = [])),
    params(("owner" = String, Path), ("name" = String, Path), ("version" = i64, Path)),
    responses(
        (status = 200, body = VersionView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, description = "no such version, or it is not quarantined", body = ErrorBody),
    ))]
pub async fn lift_quarantine(
    State(state): State<AppState>,
    _operator: Operator,
    Path((owner, name, version)): Path<(String, String, String)>,
) -> ApiResult<Json<VersionView>> {
    let (model, version) = model_version(&state, &owner, &name, &version).await?;
    if !state.store.lift_quarantine(model.id, version).await? {
        return Err(ApiError::not_found(format!("version {version} of '{owner}/{name}' is not quarantined")));
    }
    state.market.known_models.forget_version(model.id, version);
    state.market.strikes.forgive(model.id, version);
    tracing::info!(model = %format!("{owner}/{name}@{version}"), "quarantine lifted");
    version_view(&state, &model, version).await
}

/// A reason for people: trimmed, printable, at most `REASON_CHARS_MAX`
/// characters; empty only where `may_be_empty`.
pub(crate) fn check_reason(reason: &str, may_be_empty: bool) -> ApiResult<&str> {
    let reason = reason.trim();
    let fits = (may_be_empty || !reason.is_empty()) && reason.chars().count() <= REASON_CHARS_MAX;
    if !fits || reason.chars().any(char::is_control) {
        let least = if may_be_empty { 0 } else { 1 };
        return Err(ApiError::invalid_request(format!(
            "reason must be {least} to {REASON_CHARS_MAX} printable characters"
        )));
    }
    Ok(reason)
}

pub(crate) async fn any_model(state: &AppState, owner: &str, name: &str) -> ApiResult<ModelRecord> {
    // The operator sees every model, private ones included.
    match state.store.model(&parse(owner)?, &parse(name)?).await? {
        Some(model) => Ok(model),
        None => Err(ApiError::not_found(format!("model '{owner}/{name}' not found"))),
    }
}

async fn model_version(state: &AppState, owner: &str, name: &str, version: &str) -> ApiResult<(ModelRecord, i64)> {
    let model = any_model(state, owner, name).await?;
    let version = version.parse::<i64>().map_err(|_| ApiError::not_found(format!("version '{version}' not found")))?;
    Ok((model, version))
}

fn parse<T: std::str::FromStr>(text: &str) -> ApiResult<T> {
    text.parse().map_err(|_| ApiError::not_found(format!("'{text}' not found")))
}

async fn version_view(state: &AppState, model: &ModelRecord, version: i64) -> ApiResult<Json<VersionView>> {
    let found = state.store.version(model.id, version).await?;
    let found = found
        .ok_or_else(|| ApiError::not_found(format!("'{}/{}' has no version {version}", model.owner, model.name)))?;
    Ok(Json(VersionView::from(&found)))
}
