//! My account: the page is a frame; the visitor's key, kept in the tab's
//! session storage, fetches the panel (`/account/panel`, an HTML fragment
//! of the API's figures for that key) and runs the verify panel in the
//! browser.

use axum::extract::State;
use dashboard::Markup;
use dashboard::chart::{Chart, Kind, Series};
use dashboard::format::Token;
use dashboard::layout::{self, Section, headline, window_picker};
use maud::html;
use serde_json::Value;

use super::{Html, Query, WINDOWS, WindowQuery, bucket_label, token, when};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, Caller, MaybeCaller};
use crate::routes::{accounts, money, stats};
use crate::wire::{PageQuery as ListPage, PayoutQuery};

pub(super) async fn account(State(state): State<AppState>) -> Html {
    let token = token(&state);
    let body = html! {
        h1 { "My account" }
        form #key-form {
            label { "API key " input type="password" name="key" autocomplete="off" required; }
            button type="submit" { "Open" }
            button type="button" #forget { "Forget the key" }
        }
        p.small { "The key stays in this tab's session storage; it is sent only to this server's API, in the Authorization header, and is gone when the tab closes." }
        div #account-panel aria-live="polite" {}
        section #verify aria-labelledby="verify-title" {
            h2 id="verify-title" { "Verify" }
            p { "Checks, in this browser with its own cryptography (WebCrypto): the latest checkpoint's Ed25519 signature by the log's key, then for each of your recent receipts its leaf hash, the serving node's signature, and its inclusion proof up to the checkpoint's root (SHA-256, RFC 9162). Compare the log key it names with one you trust; " code { "vitrine audit" } " pins it." }
            button type="button" #verify-run disabled { "Verify my recent receipts" }
            div #verify-result role="status" aria-live="polite" {}
        }
    };
    Html(layout::page("My account", Section::Account, &token, body))
}

/// Receipts the verify panel checks at most.
const RECENT_TRANSFERS: u32 = 20;

/// The panel for the key in the `Authorization` header: balance, earnings
/// by model and by app, transfers and payouts. An error is a fragment too.
pub(super) async fn panel(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Query(query): Query<WindowQuery>,
) -> (axum::http::StatusCode, Html) {
    let result = match caller {
        Ok(caller) => panel_for(&state, caller, query.window.unwrap_or_else(|| "30d".to_owned())).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(markup) => (axum::http::StatusCode::OK, Html(markup)),
        Err(error) => (error.status, Html(layout::notice(&error.message))),
    }
}

async fn panel_for(state: &AppState, caller: Caller, window: String) -> ApiResult<Markup> {
    let token = token(state);
    let account = caller.0.clone();
    let caller = || Caller(account.clone());
    // The balance is read between two readings of the same recent transfers,
    // so that it is the balance right after the newest of them, and the
    // balance after each can be counted back from it exactly.
    let list = || {
        money::list_transfers(
            State(state.clone()),
            caller(),
            ApiQuery(ListPage { limit: Some(RECENT_TRANSFERS), page_token: None }),
        )
    };
    let newest = |page: &crate::wire::TransferPage| page.items.first().map(|t| t.id);
    let mut transfers = list().await?.0;
    let mut view = accounts::get_account(State(state.clone()), caller()).await?.0;
    let mut settled = false;
    for _ in 0..3 {
        let again = list().await?.0;
        settled = newest(&again) == newest(&transfers);
        transfers = again;
        if settled {
            break;
        }
        view = accounts::get_account(State(state.clone()), caller()).await?.0;
    }
    let balances_after =
        settled.then(|| balances_after(&view.balance, &transfers.items, account.name.as_str())).flatten();
    let payouts = money::list_payouts(State(state.clone()), caller(), ApiQuery(PayoutQuery { state: None })).await?.0;
    let (from, bucket, starts) = super::series_buckets(state, &window).await?;
    let mut earnings = vec![];
    let mut spending = vec![];
    let mut spent_nothing = true;
    for group_by in ["model", "app"] {
        let query = || stats::AccountSeriesQuery {
            from: Some(from.clone()),
            to: None,
            bucket: Some(bucket.to_owned()),
            group_by: Some(group_by.to_owned()),
            format: None,
        };
        let earned = json_of(stats::earnings(State(state.clone()), caller(), ApiQuery(query())).await?).await?;
        let spent = json_of(stats::spending(State(state.clone()), caller(), ApiQuery(query())).await?).await?;
        let range = format!("group_by={group_by}&bucket={bucket}&from={from}&format=csv");
        earnings.push(money_chart(
            Flow::Earned,
            group_by,
            &earned,
            &starts,
            bucket,
            &token,
            format!("/v1/account/earnings?{range}"),
        ));
        spent_nothing &= spent["total"].as_str().is_none_or(|t| t == "0");
        spending.push(money_chart(
            Flow::Spent,
            group_by,
            &spent,
            &starts,
            bucket,
            &token,
            format!("/v1/account/spending?{range}"),
        ));
    }
    // The caller's own models, private ones too, with their prices.
    let own = crate::wire::ListModelsQuery {
        q: None,
        task: None,
        owner: Some(account.name.to_string()),
        sort: Some("recent".to_owned()),
        window: None,
        // One page, as large as the market allows.
        limit: Some(state.config.page_size_max),
        page_token: None,
    };
    let own =
        crate::routes::models::list_models(State(state.clone()), MaybeCaller(Some(account.clone())), ApiQuery(own))
            .await?
            .0;
    let creator = !own.items.is_empty() || view.earned_total != "0";
    let symbol = &token.symbol;
    let onchain = state.chain.is_some();
    let wallet = match &state.chain {
        Some(chain) => Some(wallet_section(state, chain, account.id, &token).await?),
        None => None,
    };
    Ok(html! {
        div.heading {
            h2 { (view.name) }
            (window_picker(&window, &WINDOWS, |w| format!("/account?window={w}")))
        }
        dl.headline {
            (headline("Balance", &token.amount(&view.balance), None, Some("balance")))
            (headline("Held by calls running", &token.amount(&view.held), None, None))
            @if creator { (headline("Earned in all", &token.amount(&view.earned_total), None, None)) }
        }
        section aria-labelledby="spending-title" {
            h2 id="spending-title" { "What you spent on calls" }
            @if spent_nothing {
                (layout::notice(&format!("No paid call in {}: calls you pay for show here, by model and by app.", layout::window_name(&window))))
            } @else {
                p.small { "Paid calls, by model and by app (the X-App tag your calls carry). Failed calls cost nothing." }
                div.charts { @for chart in &spending { (chart) } }
            }
        }
        @if creator {
            section aria-labelledby="earnings-title" {
                h2 id="earnings-title" { "What your models earned" }
                div.charts { @for chart in &earnings { (chart) } }
            }
            section aria-labelledby="own-models-title" {
                h2 id="own-models-title" { "Your models" }
                @if own.items.is_empty() { (layout::notice("You have no model yet: vitrine model create, then vitrine push.")) } @else {
                    div.table-wrap {
                        table #own-models {
                            thead { tr {
                                th scope="col" title="owner/name: its page" { "Model" } th scope="col" title="What the model does" { "Task" } th scope="col" title="public: anyone may find and call it; private: only you" { "Visibility" }
                                th.num scope="col" title="What a caller pays per call" { "Price per call" } th.num scope="col" title="The version a call runs unless it names another" { "Latest version" }
                            } }
                            tbody {
                                @for m in &own.items {
                                    tr {
                                        td { (super::model_link(&format!("{}/{}", m.owner, m.name))) }
                                        td { (m.task) }
                                        td { (m.visibility) }
                                        td.num data-value=(m.price_per_inference) { (super::catalogue::price_per_call(&token, &m.price_per_inference)) }
                                        td.num { (m.latest_version.map_or("none yet".to_owned(), |v| v.to_string())) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="transfers-title" {
            h2 id="transfers-title" { "Recent transfers" }
            p.more { a href="/v1/account/transfers" data-download="transfers.json" { "Download as JSON" } }
            div.table-wrap {
                table #transfers {
                    thead { tr { th scope="col" title="When the ledger recorded it (UTC)" { "When" } th scope="col" title="What the transfer was for" { "Kind" } th scope="col" title="The account debited" { "From" } th scope="col" title="The account credited" { "To" } th.num scope="col" title="The amount moved" { "Amount (" (symbol) ")" } th scope="col" title="What the transfer refers to: a model and version, a payout, a deposit's reference" { "Reference" } th scope="col" title="The log leaf of the call it paid for: check it on the log page" { "Receipt" }
                        @if balances_after.is_some() { th.num scope="col" title="Your balance right after the transfer" { "Balance after (" (symbol) ")" } } } }
                    tbody {
                        @for (i, t) in transfers.items.iter().enumerate() {
                            tr {
                                td { (when(&t.created_at)) }
                                td { (t.kind) }
                                td { (t.debit_account) }
                                td { (t.credit_account) }
                                td.num data-value=(t.amount) { (token.number(&t.amount)) }
                                td { (t.reference) }
                                td { @if let Some(index) = t.log_index { a href=(format!("/log?receipt={index}")) data-log-index=(index) { "#" (index) } } }
                                @if let Some(after) = balances_after.as_ref().and_then(|b| b.get(i)) {
                                    td.num.balance-after data-value=(after) { (token.number(&after.to_string())) }
                                }
                            }
                        }
                    }
                }
            }
        }
        // Payouts are a creator's: a caller who never earned sees none.
        @if creator || !payouts.items.is_empty() {
        section aria-labelledby="payouts-title" {
            h2 id="payouts-title" { "Payouts" }
            @if payouts.items.is_empty() { (layout::notice("No payout requested yet.")) } @else {
                div.table-wrap {
                    table #payouts {
                        thead { tr {
                            th scope="col" title="When it was asked for (UTC)" { "Requested" } th.num scope="col" title="The amount to pay out" { "Amount (" (symbol) ")" } th scope="col" title="requested, then completed or rejected" { "State" }
                            @if onchain { th scope="col" title="The proven address paid" { "To" } th scope="col" title="The token transfer that pays it (fee bumps reuse its nonce)" { "Transaction" } }
                            th scope="col" title="What the operator or the chain recorded when it was resolved" { "Reference" } th scope="col" title="When it completed or was rejected (UTC)" { "Resolved" }
                        } }
                        tbody {
                            @for p in &payouts.items {
                                tr {
                                    td { (when(&p.created_at)) }
                                    td.num data-value=(p.amount) { (token.number(&p.amount)) }
                                    td data-state=(p.state) { (p.state) }
                                    @if onchain {
                                        td { code.short title=[p.address.as_deref()] { (short_hex(p.address.as_deref())) } }
                                        td { code.short title=[p.transaction.as_deref()] data-transaction=[p.transaction.as_deref()] { (short_hex(p.transaction.as_deref())) } }
                                    }
                                    td.reference { (p.reference) }
                                    td { (p.resolved_at.as_deref().map(when).unwrap_or_default()) }
                                }
                            }
                        }
                    }
                }
            }
        }
        }
        @if let Some(wallet) = wallet { (wallet) }
    })
}

/// On a market with a chain: how to pay and be paid with a wallet, the
/// caller's proven addresses and automatic payouts.
async fn wallet_section(state: &AppState, chain: &chain::Chain, account_id: i64, token: &Token) -> ApiResult<Markup> {
    let network = chain.network();
    let addresses = state.store.proven_addresses(network, Some(account_id)).await?;
    let automatic = state.store.auto_payouts(network, Some(account_id)).await?;
    let market = chain::x402::lower(chain.address());
    Ok(html! {
        section #wallet aria-labelledby="wallet-title" {
            h2 id="wallet-title" { "Paying and getting paid with a wallet" }
            p { "This market takes and pays " (token.symbol) " on " code { (network) } " (token " code { (chain::x402::lower(chain.token().address)) } "). Its address, where it is paid and holds its reserves: " code #market-address { (market) } "." }
            ul {
                li { strong { "Top up your balance" } " with x402 from a wallet: " code { "vitrine topup 5 --wallet-key-file wallet.key" } "; credited once final. Calls paid from your balance then cost no gas." }
                li { strong { "Or send " (token.symbol) " from a proven address" } " to the market's address: each transfer is credited once final. Prove an address with " code { "vitrine address prove --wallet-key-file wallet.key" } "." }
                li { strong { "Without an account" } ", any x402 client pays each call from its wallet: a call without a key answers 402 with the terms." }
                li { strong { "Get paid" } " to a proven address: " code { "vitrine payout request 5 --address 0x…" } ", or automatically with " code { "vitrine payout auto --address 0x… --threshold 10" } ". A payout completes once its transfer is final." }
            }
            h3 { "Your proven addresses" }
            @if addresses.is_empty() { (layout::notice("No address proven yet.")) } @else {
                ul #addresses { @for a in &addresses { li { code { (a.address) } } } }
            }
            p #automatic-payouts {
                @match automatic.first() {
                    Some(auto) => { "Automatic payouts: all of your balance to " code { (auto.address) } " whenever it reaches " (token.amount(&auto.threshold.to_string())) "." }
                    None => { "No automatic payouts." }
                }
            }
        }
    })
}

/// An address or hash as its first and last hex digits (the whole in its
/// title); empty for none.
fn short_hex(text: Option<&str>) -> String {
    match text {
        Some(text) if text.len() > 14 => format!("{}…{}", &text[..8], &text[text.len() - 6..]),
        Some(text) => text.to_owned(),
        None => String::new(),
    }
}

/// The account's balance right after each of its transfers (newest first),
/// counted back from `balance` (the balance after the newest): what a
/// transfer credited the account was not there before it, what it debited
/// was. `None` if the balance or an amount is not a number, or the count
/// would go below zero (the list is not the account's latest).
fn balances_after(balance: &str, transfers: &[crate::wire::TransferView], account: &str) -> Option<Vec<i128>> {
    let mut running: i128 = balance.parse().ok()?;
    let mut after = Vec::with_capacity(transfers.len());
    for t in transfers {
        after.push(running);
        let amount: i128 = t.amount.parse().ok()?;
        if t.credit_account == account {
            running -= amount;
        }
        if t.debit_account == account {
            running += amount;
        }
        if running < 0 {
            return None;
        }
    }
    Some(after)
}

/// Which way a chart's tokens went.
#[derive(Debug, Clone, Copy)]
enum Flow {
    /// Earned by the caller's models (the API's `earned`).
    Earned,
    /// Spent by the caller on calls (the API's `spent`).
    Spent,
}

/// A handler's JSON answer as a value (the account series answer CSV too,
/// so they return a response).
async fn json_of(response: axum::response::Response) -> ApiResult<Value> {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.map_err(ApiError::internal)?;
    serde_json::from_slice(&bytes).map_err(ApiError::internal)
}

/// Tokens earned or spent per bucket, one layer per model (or app), from
/// the API's points (which list only non-empty buckets).
fn money_chart(
    flow: Flow,
    group_by: &str,
    view: &Value,
    starts: &[String],
    bucket: &str,
    token: &Token,
    csv: String,
) -> Markup {
    let (field, verb) = match flow {
        Flow::Earned => ("earned", "Earnings"),
        Flow::Spent => ("spent", "Spending"),
    };
    let mut groups: Vec<String> = vec![];
    let mut values: Vec<Vec<u128>> = vec![];
    for point in view["series"].as_array().into_iter().flatten() {
        let group = point["group"].as_str().unwrap_or_default().to_owned();
        let Some(i) = starts.iter().position(|t| Some(t.as_str()) == point["t"].as_str()) else { continue };
        let g = match groups.iter().position(|g| *g == group) {
            Some(g) => g,
            None => {
                groups.push(group);
                values.push(vec![0; starts.len()]);
                groups.len() - 1
            }
        };
        values[g][i] += point[field].as_str().and_then(|e| e.parse::<u128>().ok()).unwrap_or(0);
    }
    let id = format!("{}-by-{group_by}", verb.to_lowercase());
    let chart = Chart {
        id: id.clone(),
        title: format!("{verb} by {group_by}"),
        x_label: if bucket == "hour" { "hour (UTC)" } else { "day (UTC)" }.into(),
        y_label: format!("{} {field}", token.symbol),
        x: starts.iter().map(|t| bucket_label(t, bucket)).collect(),
        series: groups
            .iter()
            .zip(&values)
            .map(|(g, v)| {
                Series::new(
                    if g.is_empty() { "untagged" } else { g },
                    v.iter().map(|m| token.approximate(&m.to_string())),
                )
            })
            .collect(),
        kind: Kind::StackedBars,
        format: |v| format!("{v:.4}"),
        y_max: None,
        download: None,
        partial_last: true,
        categories: false,
    };
    let total = view["total"].as_str().unwrap_or("0");
    html! {
        div class=(verb.to_lowercase()) {
            (chart.render())
            p.more {
                "Total " (field) " " strong data-value=(total) { (token.amount(total)) }
                " · " a href=(csv) data-download=(format!("{id}.csv")) { "Download CSV" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::TransferView;

    fn transfer(debit: &str, credit: &str, amount: u64) -> TransferView {
        TransferView {
            id: 0,
            kind: "k".into(),
            amount: amount.to_string(),
            debit_account: debit.into(),
            credit_account: credit.into(),
            reference: String::new(),
            log_index: None,
            created_at: String::new(),
        }
    }

    #[test]
    fn balances_are_counted_back_from_the_newest() {
        // Newest first: paid 30 to a creator, earned 5, deposited 100.
        let list = [transfer("me", "creator", 30), transfer("caller", "me", 5), transfer("issuer", "me", 100)];
        assert_eq!(balances_after("75", &list, "me"), Some(vec![75, 105, 100]));
        // A list that is not the account's latest cannot be counted back.
        assert_eq!(balances_after("10", &list, "me"), None);
        assert_eq!(balances_after("x", &list, "me"), None);
    }
}
