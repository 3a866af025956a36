//! The market on its chain: proof of reserves, top-ups paid with x402, and
//! the addresses whose transfers are deposits.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, Caller};
use crate::wire::{
    AddressList, AddressView, AmountRequest, AnchorList, AnchorView, ChallengeView, ProveAddressRequest, ReservesView,
    TopUpView, TransferView,
};
use crate::x402;

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
    // A payout mined by that block has left the balance, and leaves the
    // ledger once final: owed no more. Read last, so that one turning final
    // meanwhile is counted in the liabilities rather than missed twice.
    let mut paid = 0u128;
    for payout in state.store.unfinished_chain_payouts(chain.network()).await? {
        if payout.state == store::ChainPayoutState::Mined && payout.block.is_some_and(|b| b <= balance.block) {
            let amount = payout.token_amount.parse::<chain::U256>().map_err(ApiError::internal)?;
            paid += u128::from(chain.units().to_ledger(amount).map_err(ApiError::internal)?.0);
        }
    }
    let liabilities = u128::try_from(totals.balances.max(0)).unwrap_or(0).saturating_sub(paid);
    Ok(Json(ReservesView {
        network: chain.network().to_owned(),
        token: chain.token().address.to_string(),
        address: chain.address().to_string(),
        block: balance.block,
        onchain_balance: onchain.to_string(),
        liabilities: liabilities.to_string(),
    }))
}

/// Funds the caller's prepaid balance with x402: without `PAYMENT-SIGNATURE`,
/// 402 with the terms for `amount` (`PAYMENT-REQUIRED`); with a payment of
/// them, settled on the chain and credited once its block is final (the
/// answer waits for that up to the settlement's wait, `max_timeout_seconds`;
/// past it, `transfer` is `null` and the server credits it once final).
/// Calls paid from the balance then cost no gas each.
#[utoipa::path(post, path = "/v1/account/topup", tag = "money",
    security(("api_key" = [])),
    params(("PAYMENT-SIGNATURE" = Option<String>, Header, description = "an x402 v2 payment of the terms (base64 JSON)")),
    request_body = AmountRequest,
    responses(
        (status = 200, body = TopUpView, description = "settled (PAYMENT-RESPONSE), and credited once final"),
        (status = 400, description = "a PAYMENT-SIGNATURE that is not an x402 payment", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 402, description = "the terms (payment_required, PAYMENT-REQUIRED), or a payment refused (payment_invalid)", body = ErrorBody),
        (status = 404, description = "this market has no chain", body = ErrorBody),
        (status = 422, description = "an amount that is not positive, or not a whole number of the token's units", body = ErrorBody),
        (status = 503, description = "the chain's node does not answer", body = ErrorBody),
    ))]
pub async fn top_up(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    ApiJson(request): ApiJson<AmountRequest>,
) -> Response {
    let amount = match top_up_amount(&state, &request.amount) {
        Ok(amount) => amount,
        Err(error) => return error.into_response(),
    };
    let answered = async {
        let payment = x402::payment(&headers)?.ok_or_else(|| {
            ApiError::payment_required(format!(
                "a top-up of {} minor units is paid with x402: the terms are in the PAYMENT-REQUIRED header; retry \
                 with PAYMENT-SIGNATURE",
                amount.minor_units()
            ))
        })?;
        let top_up = state.market.top_up(caller.id, amount, &payment).await?;
        let view = TopUpView {
            transfer: top_up.transfer.as_ref().map(TransferView::from),
            transaction: top_up.settlement.transaction.clone(),
        };
        ApiResult::Ok((Json(view).into_response(), top_up.settlement))
    };
    let (response, settlement) = match answered.await {
        Ok((response, settlement)) => (response, Some(settlement)),
        Err(error) => (x402::error_response(error), None),
    };
    let terms = |error| {
        let description = format!("a top-up of {}'s balance", caller.name);
        x402::terms(&state, &headers, "/v1/account/topup", amount.minor_units(), description, error)
    };
    x402::with_headers(response, terms, settlement.as_ref())
}

/// A top-up's amount: positive, and a whole number of the token's units.
fn top_up_amount(state: &AppState, text: &str) -> ApiResult<domain::Amount> {
    let Some(chain) = &state.chain else {
        return Err(ApiError::not_found("this market has no chain: its operator deposits to balances"));
    };
    let amount =
        domain::Amount::parse_minor_units(text).map_err(|e| ApiError::invalid_request(format!("amount: {e}")))?;
    if amount == domain::Amount::ZERO {
        return Err(ApiError::invalid_request("amount must be positive"));
    }
    chain.units().to_token(amount.minor_units()).map_err(|e| ApiError::invalid_request(format!("amount: {e}")))?;
    Ok(amount)
}

fn chain_of(state: &AppState) -> ApiResult<&std::sync::Arc<chain::Chain>> {
    state
        .chain
        .as_ref()
        .ok_or_else(|| ApiError::not_found("this market has no chain: its operator deposits to balances"))
}

/// The text to sign (`personal_sign`) to prove an address: it names the
/// market, its network and the account, so it proves nothing elsewhere.
#[utoipa::path(get, path = "/v1/account/addresses/challenge", tag = "money",
    security(("api_key" = [])),
    responses(
        (status = 200, body = ChallengeView),
        (status = 401, body = ErrorBody),
        (status = 404, description = "this market has no chain", body = ErrorBody),
    ))]
pub async fn address_challenge(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> ApiResult<Json<ChallengeView>> {
    let chain = chain_of(&state)?;
    let message = chain::deposits::challenge(&state.config.log_origin, chain.network(), caller.name.as_str());
    Ok(Json(ChallengeView { message }))
}

/// Proves the caller holds an address: the challenge's EIP-191 signature by
/// its key. From then on, transfers of the token from it to the market's
/// address are credited to the caller once final. An address belongs to
/// the first account that proves it.
#[utoipa::path(post, path = "/v1/account/addresses", tag = "money",
    security(("api_key" = [])),
    request_body = ProveAddressRequest,
    responses(
        (status = 201, body = AddressView),
        (status = 401, body = ErrorBody),
        (status = 404, description = "this market has no chain", body = ErrorBody),
        (status = 409, description = "another account proved this address", body = ErrorBody),
        (status = 422, description = "not an address, or the signature is not its key's signature of the challenge", body = ErrorBody),
    ))]
pub async fn prove_address(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(request): ApiJson<ProveAddressRequest>,
) -> ApiResult<(StatusCode, Json<AddressView>)> {
    let chain = chain_of(&state)?;
    let address: chain::Address = request
        .address
        .trim()
        .parse()
        .map_err(|_| ApiError::invalid_request(format!("address {:?} is not an address", request.address)))?;
    let message = chain::deposits::challenge(&state.config.log_origin, chain.network(), caller.name.as_str());
    let signer = chain::deposits::signer_of(&message, request.signature.trim())
        .map_err(|e| ApiError::invalid_request(format!("signature: {e}")))?;
    if signer != address {
        return Err(ApiError::invalid_request(format!(
            "the signature is {}'s, not {}'s: sign GET /v1/account/addresses/challenge's message with the address's key",
            chain::x402::lower(signer),
            chain::x402::lower(address)
        )));
    }
    let address = chain::x402::lower(address);
    let proof = state.store.prove_address(chain.network(), &address, caller.id, store::now_ms()).await?;
    if proof.account_id != caller.id {
        return Err(ApiError::conflict(format!("{address} was proven by another account")));
    }
    Ok((StatusCode::CREATED, Json(address_view(proof))))
}

/// The addresses the caller proved.
#[utoipa::path(get, path = "/v1/account/addresses", tag = "money",
    security(("api_key" = [])),
    responses(
        (status = 200, body = AddressList),
        (status = 401, body = ErrorBody),
        (status = 404, description = "this market has no chain", body = ErrorBody),
    ))]
pub async fn list_addresses(State(state): State<AppState>, Caller(caller): Caller) -> ApiResult<Json<AddressList>> {
    let chain = chain_of(&state)?;
    let proofs = state.store.proven_addresses(chain.network(), Some(caller.id)).await?;
    Ok(Json(AddressList { items: proofs.into_iter().map(address_view).collect() }))
}

fn address_view(proof: store::ProvenAddress) -> AddressView {
    AddressView {
        network: proof.network,
        address: proof.address,
        proven_at: crate::wire::timestamp(proof.proven_at_ms),
    }
}

/// Anchors shown at most.
const ANCHORS_MAX: u32 = 1000;

/// The log's checkpoints anchored on the chain, largest first (the newest
/// thousand): check them on a node of your own with `vitrine audit
/// --anchors --rpc-url`.
#[utoipa::path(get, path = "/v1/log/anchors", tag = "log",
    responses(
        (status = 200, body = AnchorList),
        (status = 404, description = "this market has no chain (the chain setting)", body = ErrorBody),
    ))]
pub async fn anchors(State(state): State<AppState>) -> ApiResult<Json<AnchorList>> {
    let chain = chain_of(&state)?;
    let anchors = state.store.anchors(chain.network(), ANCHORS_MAX).await?;
    let base64 = |root: &[u8; 32]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, root);
    let items = anchors
        .into_iter()
        .filter_map(|anchor| {
            // A claim whose transaction was never mined is no anchor.
            Some(AnchorView {
                size: anchor.size,
                root: base64(&anchor.root),
                transaction: anchor.tx_hash?,
                block: anchor.block?,
                anchored_at: crate::wire::timestamp(anchor.created_at_ms),
            })
        })
        .collect();
    Ok(Json(AnchorList { network: chain.network().to_owned(), address: chain::x402::lower(chain.address()), items }))
}
