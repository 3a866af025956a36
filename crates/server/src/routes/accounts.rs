//! Sign-up and the caller's own account.

use axum::Json;
use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use domain::{AccountName, ApiKey};

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, Caller};
use crate::wire::{AccountSummary, AccountView, CreateAccountRequest, CreatedAccount};

/// Creates an account and returns its API key, shown only this once.
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts",
    request_body = CreateAccountRequest,
    responses(
        (status = 201, body = CreatedAccount),
        (status = 409, description = "the name is taken", body = ErrorBody),
        (status = 422, description = "the name is not valid", body = ErrorBody),
        (status = 429, description = "too many sign-ups from this address (rate_limited, with Retry-After)", body = ErrorBody),
    ))]
pub async fn create_account(
    State(state): State<AppState>,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    ApiJson(request): ApiJson<CreateAccountRequest>,
) -> ApiResult<(StatusCode, Json<CreatedAccount>)> {
    state.address_limits.signups.take(address.ip(), Instant::now()).map_err(|retry_after_s| {
        ApiError::rate_limited(
            "too many accounts created from this address (signups_per_address_per_hour)",
            retry_after_s,
        )
    })?;
    let name = AccountName::parse_new(&request.name).map_err(|e| ApiError::invalid_request(e.to_string()))?;
    let key = ApiKey::generate();
    let account = state.store.create_account(&name, false, &key).await?;
    tracing::info!(account = %account.name, "account created");
    let body = CreatedAccount {
        account: AccountSummary { id: account.id, name: account.name.to_string() },
        api_key: key.expose().to_owned(),
    };
    Ok((StatusCode::CREATED, Json(body)))
}

/// The caller's account.
#[utoipa::path(get, path = "/v1/account", tag = "accounts",
    security(("api_key" = [])),
    responses((status = 200, body = AccountView), (status = 401, body = ErrorBody)))]
pub async fn get_account(State(state): State<AppState>, Caller(account): Caller) -> ApiResult<Json<AccountView>> {
    let (totals, earned) = state.store.balances(account.id).await?;
    let storage = (state.store.storage_used(account.id).await?, state.storage_quota());
    Ok(Json(AccountView::new(&account, &totals, state.market.reservations.reserved(account.id), earned, storage)))
}
