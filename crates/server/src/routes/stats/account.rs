//! An account's own series: `GET /v1/account/earnings` and
//! `GET /v1/account/spending`, as JSON or CSV.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use store::{Dimension, RollupQuery};
use utoipa::{IntoParams, ToSchema};

use super::{granularity, require_rollups, series_range};
use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiQuery, Caller};
use crate::wire::timestamp;

/// The query of an account's own series (earnings, spending).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AccountSeriesQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    /// hour or day (default).
    pub bucket: Option<String>,
    /// model (default) or app.
    pub group_by: Option<String>,
    /// json (default) or csv.
    pub format: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EarningsPoint {
    pub t: String,
    /// The model (`owner/name`) or app.
    pub group: String,
    /// Calls that paid the creator.
    pub calls: u64,
    /// Minor units earned.
    pub earned: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EarningsView {
    pub group_by: String,
    pub bucket: String,
    /// Non-empty buckets, oldest first.
    pub series: Vec<EarningsPoint>,
    pub total: String,
}

/// An account series query, checked: buckets, range, grouping, format.
struct AccountSeries {
    bucket_name: &'static str,
    width: i64,
    from_ms: i64,
    to_ms: i64,
    group_by: &'static str,
    csv: bool,
}

fn account_series(state: &AppState, query: &AccountSeriesQuery) -> ApiResult<AccountSeries> {
    let (bucket_name, width) = granularity(query.bucket.as_deref())?;
    let (from_ms, to_ms) = series_range(state, query.from.as_deref(), query.to.as_deref(), width)?;
    let csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => return Err(ApiError::bad_request(format!("format is json or csv, not '{other}'"))),
    };
    let group_by = match query.group_by.as_deref() {
        None | Some("model") => "model",
        Some("app") => "app",
        Some(other) => return Err(ApiError::bad_request(format!("group_by is model or app, not '{other}'"))),
    };
    Ok(AccountSeries { bucket_name, width, from_ms, to_ms, group_by, csv })
}

/// Rows as CSV under `header`; each row's second cell (the group) quoted as needed.
fn csv_response(header_line: &str, rows: impl Iterator<Item = Vec<String>>) -> Response {
    let mut text = format!("{header_line}\n");
    for mut row in rows {
        row[1] = csv_field(&row[1]);
        text.push_str(&row.join(","));
        text.push('\n');
    }
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], text).into_response()
}

/// What the caller earned as a creator, by model or by app; CSV with `format=csv`.
#[utoipa::path(get, path = "/v1/account/earnings", tag = "stats",
    security(("api_key" = [])),
    params(AccountSeriesQuery),
    responses(
        (status = 200, body = EarningsView, description = "JSON, or CSV (t,group,calls,earned; earned in minor units) with format=csv"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn earnings(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(query): ApiQuery<AccountSeriesQuery>,
) -> ApiResult<Response> {
    require_rollups(&state)?;
    let AccountSeries { bucket_name, width, from_ms, to_ms, group_by, csv } = account_series(&state, &query)?;
    let mut series = vec![];
    match group_by {
        "model" => {
            let labels = state.store.model_labels().await?;
            let mine: HashMap<String, String> = labels
                .iter()
                .filter(|(_, m)| m.owner == caller.name.as_str())
                .map(|(id, m)| (id.to_string(), format!("{}/{}", m.owner, m.name)))
                .collect();
            let rollups = state
                .store
                .rollups(&RollupQuery {
                    dimension: Dimension::Model,
                    granularity: width,
                    from_ms,
                    to_ms,
                    keys: Some(mine.keys().cloned().collect()),
                    include_private: true,
                    detail: false,
                })
                .await?;
            for (key, buckets) in rollups {
                for (t, rollup) in buckets {
                    if rollup.creator_revenue > 0 {
                        series.push((t, mine[&key].clone(), rollup.calls - rollup.errors, rollup.creator_revenue));
                    }
                }
            }
        }
        _ => {
            for (app, buckets) in state.store.earnings_by_app(caller.id, from_ms, to_ms, width).await? {
                for (t, (calls, earned)) in buckets {
                    series.push((t, app.clone(), calls, earned));
                }
            }
        }
    }
    series.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let total: u128 = series.iter().map(|p| p.3 as u128).sum();
    if csv {
        let rows = series
            .iter()
            .map(|(t, group, calls, earned)| vec![timestamp(*t), group.clone(), calls.to_string(), earned.to_string()]);
        return Ok(csv_response("t,group,calls,earned", rows));
    }
    let series = series
        .into_iter()
        .map(|(t, group, calls, earned)| EarningsPoint { t: timestamp(t), group, calls, earned: earned.to_string() })
        .collect();
    Ok(Json(EarningsView {
        group_by: group_by.to_owned(),
        bucket: bucket_name.to_owned(),
        series,
        total: total.to_string(),
    })
    .into_response())
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SpendingPoint {
    pub t: String,
    /// The model (`owner/name`, as in the log) or app.
    pub group: String,
    pub calls: u64,
    pub errors: u64,
    /// Minor units paid.
    pub spent: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SpendingView {
    pub group_by: String,
    pub bucket: String,
    pub series: Vec<SpendingPoint>,
    pub total: String,
}

/// What the caller spent on inference, by model or app: calls, failed calls
/// (which cost nothing) and tokens paid, per bucket; CSV with `format=csv`.
#[utoipa::path(get, path = "/v1/account/spending", tag = "stats",
    security(("api_key" = [])),
    params(AccountSeriesQuery),
    responses(
        (status = 200, body = SpendingView, description = "JSON, or CSV (t,group,calls,failed,spent; spent in minor units) with format=csv"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
    ))]
pub async fn spending(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(query): ApiQuery<AccountSeriesQuery>,
) -> ApiResult<Response> {
    let AccountSeries { bucket_name, width, from_ms, to_ms, group_by, csv } = account_series(&state, &query)?;
    let by_app = group_by == "app";
    let pseudonym = tlog::caller_pseudonym(&tlog::caller_secret(&state.market.log_keys.pseudonym, caller.id));
    let groups = state.store.spending(pseudonym.as_bytes(), by_app, from_ms, to_ms, width).await?;
    let mut series = vec![];
    for (group, buckets) in groups {
        for (t, (calls, errors, spent)) in buckets {
            series.push((t, group.clone(), calls, errors, spent));
        }
    }
    series.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let total: u128 = series.iter().map(|p| p.4 as u128).sum();
    if csv {
        let rows = series.iter().map(|(t, group, calls, errors, spent)| {
            vec![timestamp(*t), group.clone(), calls.to_string(), errors.to_string(), spent.to_string()]
        });
        return Ok(csv_response("t,group,calls,failed,spent", rows));
    }
    let series = series
        .into_iter()
        .map(|(t, group, calls, errors, spent)| SpendingPoint {
            t: timestamp(t),
            group,
            calls,
            errors,
            spent: spent.to_string(),
        })
        .collect();
    Ok(Json(SpendingView {
        group_by: group_by.to_owned(),
        bucket: bucket_name.to_owned(),
        series,
        total: total.to_string(),
    })
    .into_response())
}

/// Quotes a CSV field when it needs it (RFC 4180).
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_owned() }
}
