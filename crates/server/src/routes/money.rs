//! Money routes: transfer history, deposits, the development faucet, payouts,
//! and the operator's view of the ledger. Every movement goes through the
//! sequencer, so it is durable before it is answered.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use domain::{AccountName, Amount};
use ledger::{Command, Transfer, TransferKind};
use store::{BatchItem, ItemError, PayoutState};

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, Caller, Operator};
use crate::wire::{
    AccountView, AmountRequest, AutomaticPayouts, AutomaticPayoutsView, DepositRequest, FeeSplitView, LedgerView,
    PageQuery, PayoutList, PayoutQuery, PayoutRequest, PayoutView, ResolvePayoutRequest, SequencerView, TransferPage,
    TransferView,
};
use store::BATCH_SIZE_BUCKETS;

/// References are free text from outside; bounded like every such field.
const REFERENCE_CHARS_MAX: usize = 256;

fn positive_amount(text: &str) -> ApiResult<Amount> {
    let amount = Amount::parse_minor_units(text).map_err(|e| ApiError::invalid_request(format!("amount: {e}")))?;
    if amount == Amount::ZERO {
        return Err(ApiError::invalid_request("amount must be positive"));
    }
    Ok(amount)
}

fn reference(text: &str, required: bool) -> ApiResult<String> {
    let text = text.trim();
    if (required && text.is_empty()) || text.chars().count() > REFERENCE_CHARS_MAX || text.chars().any(char::is_control)
    {
        return Err(ApiError::invalid_request(format!(
            "reference must be {}1 to {REFERENCE_CHARS_MAX} printable characters",
            if required { "" } else { "0 or " }
        )));
    }
    Ok(text.to_owned())
}

/// Maps a ledger refusal to the API's codes.
pub(crate) fn item_error(error: ItemError) -> ApiError {
    market::CallError::from(error).into()
}

/// The caller's transfers, newest first.
#[utoipa::path(get, path = "/v1/account/transfers", tag = "money",
    security(("api_key" = [])),
    params(PageQuery),
    responses((status = 200, body = TransferPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_transfers(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<TransferPage>> {
    let limit = query.limit.unwrap_or(state.config.page_size_default);
    if limit == 0 || limit > state.config.page_size_max {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and page_size_max = {}",
            state.config.page_size_max
        )));
    }
    let before = match query.page_token.as_deref() {
        None => None,
        Some(token) => Some(
            token
                .strip_prefix('t')
                .and_then(|id| id.parse::<i64>().ok())
                .ok_or_else(|| ApiError::bad_request("page_token is not valid"))?,
        ),
    };
    let (transfers, next) = state.store.transfers_for(caller.id, before, limit).await?;
    Ok(Json(TransferPage {
        items: transfers.iter().map(TransferView::from).collect(),
        next_page_token: next.map(|id| format!("t{id}")),
    }))
}

/// Credits an account with tokens paid for outside (operator only). A retry
/// with the same reference returns the first deposit and moves nothing.
#[utoipa::path(post, path = "/v1/admin/deposits", tag = "money",
    security(("api_key" = [])),
    request_body = DepositRequest,
    responses(
        (status = 201, body = TransferView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, description = "no such account", body = ErrorBody),
        (status = 409, description = "the reference was used for another deposit", body = ErrorBody),
        (status = 422, description = "an invalid amount or reference, or an amount that would take a running total past the ledger's limit (amount_too_large)", body = ErrorBody),
    ))]
pub async fn deposit(
    State(state): State<AppState>,
    _operator: Operator,
    ApiJson(request): ApiJson<DepositRequest>,
) -> ApiResult<(StatusCode, Json<TransferView>)> {
    let amount = positive_amount(&request.amount)?;
    let reference = reference(&request.reference, true)?;
    let account = user_account(&state, &request.account).await?;
    // The reference identifies the deposit: a retry finds it instead of paying twice.
    let id = format!("deposit:{reference}");
    let transfer =
        Transfer { debit: state.market.system.issuer, credit: account, amount, kind: TransferKind::Deposit, reference };
    let outcome =
        state.market.sequencer.submit(BatchItem::command(Command::Once { id, transfer })).await?.map_err(item_error)?;
    let record = outcome.transfers.first().ok_or_else(|| ApiError::internal("a deposit recorded no transfer"))?;
    Ok((StatusCode::CREATED, Json(TransferView::from(record))))
}

/// Gives the caller test tokens; only on a development server (`serve --dev`).
#[utoipa::path(post, path = "/v1/dev/faucet", tag = "money",
    security(("api_key" = [])),
    request_body = AmountRequest,
    responses(
        (status = 201, body = TransferView),
        (status = 401, body = ErrorBody),
        (status = 404, description = "not a development server", body = ErrorBody),
        (status = 422, description = "above faucet_amount_max", body = ErrorBody),
    ))]
pub async fn faucet(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(request): ApiJson<AmountRequest>,
) -> ApiResult<(StatusCode, Json<TransferView>)> {
    if !state.config.dev {
        return Err(ApiError::not_found("the faucet exists only on development servers (serve --dev)"));
    }
    let amount = positive_amount(&request.amount)?;
    if amount.minor_units() > state.config.faucet_amount_max {
        return Err(ApiError::invalid_request(format!(
            "at most faucet_amount_max = {} per call",
            state.config.faucet_amount_max
        )));
    }
    let transfer = Transfer {
        debit: state.market.system.issuer,
        credit: caller.id,
        amount,
        kind: TransferKind::Faucet,
        reference: "faucet".into(),
    };
    let outcome =
        state.market.sequencer.submit(BatchItem::command(Command::Transfer(transfer))).await?.map_err(item_error)?;
    let record = outcome.transfers.first().ok_or_else(|| ApiError::internal("the faucet recorded no transfer"))?;
    Ok((StatusCode::CREATED, Json(TransferView::from(record))))
}

/// Asks to be paid out: the amount moves from the caller to pending payouts.
/// Without a chain the operator completes or rejects it; with one, `address`
/// (one of the caller's proven addresses) is paid by a token transfer, and
/// the payout completes itself once that transfer is final.
#[utoipa::path(post, path = "/v1/payouts", tag = "money",
    security(("api_key" = [])),
    request_body = PayoutRequest,
    responses(
        (status = 201, body = PayoutView),
        (status = 401, body = ErrorBody),
        (status = 402, body = ErrorBody),
        (status = 422, description = "an invalid amount, no address on a market with a chain (or one on a market without), or an address the caller has not proven (address_not_proven)", body = ErrorBody),
    ))]
pub async fn request_payout(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(request): ApiJson<PayoutRequest>,
) -> ApiResult<(StatusCode, Json<PayoutView>)> {
    let amount = positive_amount(&request.amount)?;
    let chain = match (&state.chain, request.address.as_deref().map(str::trim)) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(ApiError::invalid_request(
                "this market has no chain: its operator pays payouts out by hand; leave out address",
            ));
        }
        (Some(_), None) => {
            return Err(ApiError::invalid_request(
                "this market pays out on its chain: name one of your proven addresses (POST /v1/account/addresses)",
            ));
        }
        (Some(chain), Some(address)) => Some(payout_destination(&state, chain, caller.id, address, amount).await?),
    };
    let payout = state.market.request_payout(caller.id, amount, chain).await?;
    let chain = state.store.chain_payout(payout.id).await?;
    Ok((StatusCode::CREATED, Json(PayoutView::of(&payout, chain.as_ref()))))
}

/// Where a payout of `amount` to `address` goes: a proven address of the
/// account's, and the amount in token units.
async fn payout_destination(
    state: &AppState,
    chain: &chain::Chain,
    account_id: i64,
    address: &str,
    amount: Amount,
) -> ApiResult<store::ChainPayoutRequest> {
    let parsed: chain::Address =
        address.parse().map_err(|_| ApiError::invalid_request(format!("address {address:?} is not an address")))?;
    let address = chain::x402::lower(parsed);
    let proven = state.store.proven_addresses(chain.network(), Some(account_id)).await?;
    if !proven.iter().any(|proof| proof.address == address) {
        return Err(ApiError::address_not_proven(format!(
            "{address} is not one of your proven addresses on {}: prove it first (GET /v1/account/addresses/challenge, \
             then POST /v1/account/addresses)",
            chain.network()
        )));
    }
    let token_amount = chain
        .units()
        .to_token(amount.minor_units())
        .map_err(|e| ApiError::invalid_request(format!("amount: {e}")))?
        .to_string();
    Ok(store::ChainPayoutRequest { network: chain.network().to_owned(), address, token_amount })
}

/// The payouts' views (`account_id`'s, or everyone's), with their chain
/// records where they have one, read at once.
async fn payout_views(
    state: &AppState,
    account_id: Option<i64>,
    payouts: &[store::PayoutRecord],
) -> ApiResult<Vec<PayoutView>> {
    let ids = payouts.iter().map(|p| p.id);
    let mut chain = match (state.chain.is_some(), ids.clone().min(), ids.max()) {
        (true, Some(from), Some(to)) => state.store.chain_payouts_between(account_id, from, to).await?,
        _ => Default::default(),
    };
    Ok(payouts.iter().map(|p| PayoutView::of(p, chain.remove(&p.id).as_ref())).collect())
}

/// The caller's payouts, newest first.
#[utoipa::path(get, path = "/v1/payouts", tag = "money",
    security(("api_key" = [])),
    params(PayoutQuery),
    responses((status = 200, body = PayoutList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_payouts(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(query): ApiQuery<PayoutQuery>,
) -> ApiResult<Json<PayoutList>> {
    let payouts = state.store.payouts(Some(caller.id), payout_state(query.state.as_deref())?).await?;
    Ok(Json(PayoutList { items: payout_views(&state, Some(caller.id), &payouts).await? }))
}

/// Everyone's payouts (operator only), newest first.
#[utoipa::path(get, path = "/v1/admin/payouts", tag = "money",
    security(("api_key" = [])),
    params(PayoutQuery),
    responses((status = 200, body = PayoutList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_all_payouts(
    State(state): State<AppState>,
    _operator: Operator,
    ApiQuery(query): ApiQuery<PayoutQuery>,
) -> ApiResult<Json<PayoutList>> {
    let payouts = state.store.payouts(None, payout_state(query.state.as_deref())?).await?;
    Ok(Json(PayoutList { items: payout_views(&state, None, &payouts).await? }))
}

/// Marks a payout paid (operator only): its tokens leave the ledger. A
/// payout on the chain completes itself once its transaction is final.
#[utoipa::path(post, path = "/v1/admin/payouts/{id}/complete", tag = "money",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "the payout's id")),
    request_body = ResolvePayoutRequest,
    responses(
        (status = 200, body = PayoutView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "already resolved, or paid on the chain", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
pub async fn complete_payout(
    State(state): State<AppState>,
    _operator: Operator,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<ResolvePayoutRequest>,
) -> ApiResult<Json<PayoutView>> {
    resolve_payout(&state, &id, PayoutState::Completed, &request.reference).await
}

/// Refuses a payout (operator only): its tokens go back to the creator. A
/// payout on the chain can be refused only before it is signed.
#[utoipa::path(post, path = "/v1/admin/payouts/{id}/reject", tag = "money",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "the payout's id")),
    request_body = ResolvePayoutRequest,
    responses(
        (status = 200, body = PayoutView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "already resolved, or on the chain and signed", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
pub async fn reject_payout(
    State(state): State<AppState>,
    _operator: Operator,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<ResolvePayoutRequest>,
) -> ApiResult<Json<PayoutView>> {
    resolve_payout(&state, &id, PayoutState::Rejected, &request.reference).await
}

async fn resolve_payout(state: &AppState, id: &str, to: PayoutState, text: &str) -> ApiResult<Json<PayoutView>> {
    let not_found = || ApiError::not_found(format!("payout {id} not found"));
    let payout_id: i64 = id.parse().map_err(|_| not_found())?;
    let payout = state.store.payout(payout_id).await?.ok_or_else(not_found)?;
    let reference = reference(text, to == PayoutState::Completed)?;
    if let Some(chain) = state.store.chain_payout(payout_id).await? {
        let refused = match to {
            PayoutState::Completed => Some("it completes itself once its transaction is final"),
            _ if chain.state != store::ChainPayoutState::Requested => {
                Some("it is signed already, and completes or fails by its transaction")
            }
            _ => None,
        };
        if let Some(why) = refused {
            return Err(ApiError::conflict(format!(
                "payout {payout_id} is paid on the chain ({}): {why}",
                chain.state.as_str()
            )));
        }
    }
    let resolved = state.market.resolve_payout(&payout, to, reference, false).await?.map_err(item_error)?;
    let chain = state.store.chain_payout(payout_id).await?;
    Ok(Json(PayoutView::of(&resolved, chain.as_ref())))
}

/// The caller's automatic payouts, if set.
#[utoipa::path(get, path = "/v1/payouts/automatic", tag = "money",
    security(("api_key" = [])),
    responses(
        (status = 200, body = AutomaticPayoutsView, description = "the address and threshold, or both null when none are set"),
        (status = 401, body = ErrorBody),
        (status = 404, description = "this market has no chain", body = ErrorBody),
    ))]
pub async fn automatic_payouts(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> ApiResult<Json<AutomaticPayoutsView>> {
    let chain = chain_of(&state)?;
    let set = state.store.auto_payouts(chain.network(), Some(caller.id)).await?;
    Ok(Json(set.into_iter().next().map(auto_view).unwrap_or_default()))
}

fn auto_view(auto: store::AutoPayout) -> AutomaticPayoutsView {
    AutomaticPayoutsView { address: Some(auto.address), threshold: Some(auto.threshold.to_string()) }
}

/// Sets the caller's automatic payouts: whenever its available balance
/// reaches `threshold`, all of it is paid out to `address` (a proven
/// address), one payout at a time.
#[utoipa::path(put, path = "/v1/payouts/automatic", tag = "money",
    security(("api_key" = [])),
    request_body = AutomaticPayouts,
    responses(
        (status = 200, body = AutomaticPayoutsView),
        (status = 401, body = ErrorBody),
        (status = 404, description = "this market has no chain", body = ErrorBody),
        (status = 422, description = "an invalid threshold, or an address the caller has not proven (address_not_proven)", body = ErrorBody),
    ))]
pub async fn set_automatic_payouts(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(request): ApiJson<AutomaticPayouts>,
) -> ApiResult<Json<AutomaticPayoutsView>> {
    let chain = chain_of(&state)?;
    let threshold = positive_amount(&request.threshold)
        .map_err(|_| ApiError::invalid_request("threshold must be a positive whole number of minor units"))?;
    let destination = payout_destination(&state, chain, caller.id, request.address.trim(), threshold).await?;
    let auto = store::AutoPayout {
        account_id: caller.id,
        network: destination.network,
        address: destination.address,
        threshold: threshold.minor_units(),
        updated_at_ms: store::now_ms(),
    };
    state.store.set_auto_payout(caller.id, Some(&auto)).await?;
    Ok(Json(auto_view(auto)))
}

/// Stops the caller's automatic payouts.
#[utoipa::path(delete, path = "/v1/payouts/automatic", tag = "money",
    security(("api_key" = [])),
    responses(
        (status = 204, description = "stopped (or never set)"),
        (status = 401, body = ErrorBody),
        (status = 404, description = "this market has no chain", body = ErrorBody),
    ))]
pub async fn stop_automatic_payouts(State(state): State<AppState>, Caller(caller): Caller) -> ApiResult<StatusCode> {
    chain_of(&state)?;
    state.store.set_auto_payout(caller.id, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn chain_of(state: &AppState) -> ApiResult<&std::sync::Arc<chain::Chain>> {
    state
        .chain
        .as_ref()
        .ok_or_else(|| ApiError::not_found("this market has no chain: its operator pays payouts out by hand"))
}

/// The ledger's totals and the sequencer's batch sizes (operator only).
#[utoipa::path(get, path = "/v1/admin/ledger", tag = "money",
    security(("api_key" = [])),
    responses((status = 200, body = LedgerView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn ledger_view(State(state): State<AppState>, _operator: Operator) -> ApiResult<Json<LedgerView>> {
    let totals = state.store.ledger_totals().await?;
    let stats = &state.market.sequencer.stats;
    let batch_sizes = BATCH_SIZE_BUCKETS
        .iter()
        .zip(&stats.batch_sizes)
        .map(|(&bound, count)| ((bound != u64::MAX).then_some(bound), count.load(Ordering::Relaxed)))
        .collect();
    Ok(Json(LedgerView {
        debits_total: totals.debits.to_string(),
        credits_total: totals.credits.to_string(),
        circulating: totals.balances.to_string(),
        deposited_total: totals.deposited.to_string(),
        paid_out_total: totals.paid_out.to_string(),
        held_total: totals.held.to_string(),
        token_symbol: state.config.token_symbol.clone(),
        token_decimals: state.config.token_decimals,
        fee_split_bps: FeeSplitView {
            creator: state.market.fee_split.creator_bps(),
            node: state.market.fee_split.node_bps(),
            treasury: state.market.fee_split.treasury_bps(),
        },
        sequencer: SequencerView {
            batches: stats.batches.load(Ordering::Relaxed),
            items: stats.items.load(Ordering::Relaxed),
            largest_batch: stats.largest_batch.load(Ordering::Relaxed),
            batch_sizes,
        },
    }))
}

/// Any account's balances by name, the ledger's own included (operator only).
#[utoipa::path(get, path = "/v1/admin/accounts/{name}", tag = "money",
    security(("api_key" = [])),
    params(("name" = String, Path)),
    responses((status = 200, body = AccountView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn account_view(
    State(state): State<AppState>,
    _operator: Operator,
    Path(name): Path<String>,
) -> ApiResult<Json<AccountView>> {
    let not_found = || ApiError::not_found(format!("account '{name}' not found"));
    let account_name: AccountName = name.parse().map_err(|_| not_found())?;
    let account = state.store.account_by_name(&account_name).await?.ok_or_else(not_found)?;
    let (totals, earned) = state.store.balances(account.id).await?;
    let storage = (state.store.storage_used(account.id).await?, state.storage_quota());
    Ok(Json(AccountView::new(&account, &totals, state.market.reservations.reserved(account.id), earned, storage)))
}

fn payout_state(text: Option<&str>) -> ApiResult<Option<PayoutState>> {
    text.map(|s| {
        s.parse::<PayoutState>().map_err(|_| ApiError::bad_request("state is requested, completed or rejected"))
    })
    .transpose()
}

/// A person's account by name (deposits go only to people, not to the ledger's own accounts).
async fn user_account(state: &AppState, name: &str) -> ApiResult<i64> {
    let not_found = || ApiError::not_found(format!("account '{name}' not found"));
    let name: AccountName = name.parse().map_err(|_| not_found())?;
    let account = state.store.account_by_name(&name).await?.ok_or_else(not_found)?;
    if !matches!(account.kind, store::AccountKind::User | store::AccountKind::Operator) {
        return Err(ApiError::invalid_request(format!("'{name}' is one of the ledger's own accounts")));
    }
    Ok(account.id)
}
