//! The market on its chain: proof of reserves.

use axum::Json;
use axum::extract::State;

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::wire::ReservesView;

/// The market's token balance on its chain at the newest final block,
/// against what its ledger owes (every balance but the issuer's, pending
/// payouts included): anyone can check that the market can pay everyone.
#[utoipa::path(get, path = "/v1/chain/reserves", tag = "money",
    responses(
        (status = 200, body = ReservesView),
        (status = 404, description = "this market has no chain (the chain setting)", body = ErrorBody),
        (status = 503, description = "the chain's node does not answer", body = ErrorBody),
    ))]
pub async fn reserves(State(state): State<AppState>) -> ApiResult<Json<ReservesView>> {
    let Some(chain) = &state.chain else {
        return Err(ApiError::not_found("this market has no chain: its money moves in its ledger alone"));
    };
    let balance = chain.reserves().await.map_err(|e| {
        tracing::warn!(error = %e, "cannot read the market's reserves");
        ApiError::unavailable("the chain's node does not answer; try again shortly", 5)
    })?;
    // Read after the balance: a deposit credited meanwhile only makes the
    // liabilities look larger, never the reserves.
    let totals = state.store.ledger_totals().await?;
    let (onchain, _rest) = chain.units().to_ledger(balance.amount).map_err(ApiError::internal)?;
    Ok(Json(ReservesView {
        network: chain.network().to_owned(),
        token: chain.token().address.to_string(),
        address: chain.address().to_string(),
        block: balance.block,
        onchain_balance: onchain.to_string(),
        liabilities: totals.balances.max(0).to_string(),
    }))
}
