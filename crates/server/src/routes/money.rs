//! Money routes: transfer history, deposits, the development faucet, payouts,
//! and the operator's view of the ledger. Every movement goes through the
//! sequencer, so it is durable before it is answered.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use domain::{AccountName, Amount};
use ledger::{Command, Transfer, TransferKind};
use store::{BatchItem, ItemError, PayoutChange, PayoutState};

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, Caller, Operator};
use crate::wire::{
    AccountView, AmountRequest, DepositRequest, FeeSplitView, LedgerView, PageQuery, PayoutList, PayoutQuery,
    PayoutView, ResolvePayoutRequest, SequencerView, TransferPage, TransferView,
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

/// Asks to be paid out: the amount moves from the caller to pending payouts
/// until the operator completes or rejects it.
#[utoipa::path(post, path = "/v1/payouts", tag = "money",
    security(("api_key" = [])),
    request_body = AmountRequest,
    responses(
        (status = 201, body = PayoutView),
        (status = 401, body = ErrorBody),
        (status = 402, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
pub async fn request_payout(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(request): ApiJson<AmountRequest>,
) -> ApiResult<(StatusCode, Json<PayoutView>)> {
    let amount = positive_amount(&request.amount)?;
    let transfer = Transfer {
        debit: caller.id,
        credit: state.market.system.payouts,
        amount,
        kind: TransferKind::PayoutRequest,
        reference: "payout requested".into(),
    };
    let item = BatchItem::Ledger {
        command: Command::Transfer(transfer),
        payout: Some(PayoutChange::Request { account_id: caller.id, amount }),
    };
    let outcome = state.market.sequencer.submit(item).await?.map_err(item_error)?;
    let payout = outcome.payout.ok_or_else(|| ApiError::internal("a payout request recorded no payout"))?;
    Ok((StatusCode::CREATED, Json(PayoutView::from(&payout))))
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
    Ok(Json(PayoutList { items: payouts.iter().map(PayoutView::from).collect() }))
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
    Ok(Json(PayoutList { items: payouts.iter().map(PayoutView::from).collect() }))
}

/// Marks a payout paid (operator only): its tokens leave the ledger.
#[utoipa::path(post, path = "/v1/admin/payouts/{id}/complete", tag = "money",
    security(("api_key" = [])),
    params(("id" = i64, Path)),
    request_body = ResolvePayoutRequest,
    responses(
        (status = 200, body = PayoutView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "already resolved", body = ErrorBody),
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

/// Refuses a payout (operator only): its tokens go back to the creator.
#[utoipa::path(post, path = "/v1/admin/payouts/{id}/reject", tag = "money",
    security(("api_key" = [])),
    params(("id" = i64, Path)),
    request_body = ResolvePayoutRequest,
    responses(
        (status = 200, body = PayoutView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "already resolved", body = ErrorBody),
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
    let (credit, kind) = match to {
        PayoutState::Completed => (state.market.system.issuer, TransferKind::PayoutComplete),
        _ => (payout.account_id, TransferKind::PayoutReject),
    };
    let transfer = Transfer {
        debit: state.market.system.payouts,
        credit,
        amount: payout.amount,
        kind,
        reference: format!("payout {payout_id}: {reference}"),
    };
    let item = BatchItem::Ledger {
        command: Command::Transfer(transfer),
        payout: Some(PayoutChange::Resolve { payout_id, to, reference }),
    };
    let outcome = state.market.sequencer.submit(item).await?.map_err(item_error)?;
    let payout = outcome.payout.ok_or_else(|| ApiError::internal("a payout resolution recorded no payout"))?;
    Ok(Json(PayoutView::from(&payout)))
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
