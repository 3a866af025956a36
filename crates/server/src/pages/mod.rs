//! The web dashboard: HTML pages over the same figures as the API.
//!
//! Every page handler gets its figures by calling the API's own handlers
//! (`routes::stats::market`, `routes::models::list_models`, …) with the
//! query a browser would send, so a page can show nothing the API does not,
//! and a number on a page is the number of the route its "Numbers" table
//! links to. The pieces (frame, charts, formats, Markdown) are the
//! `dashboard` crate's; this module only fetches and composes.
//!
//! Pages are public and anonymous. What needs a key (my account, the try-it
//! form) is done by the page's script, with a key the visitor types into
//! the page and that stays in the tab's session storage: the script calls
//! the API, or asks for an HTML fragment (`/account/panel`) with the key in
//! the `Authorization` header.

mod account;
mod catalogue;
mod log;
mod market;

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dashboard::Markup;
use dashboard::format::Token;
use dashboard::layout::{self, Section};
use maud::html;
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// The dashboard's routes (not in the OpenAPI document: they are pages).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(market::market))
        .route("/opportunities", get(market::opportunities))
        .route("/catalogue", get(catalogue::catalogue))
        .route("/models/{owner}/{name}", get(catalogue::model))
        .route("/creators/{name}", get(catalogue::creator))
        .route("/account", get(account::account))
        .route("/account/panel", get(account::panel))
        .route("/log", get(log::log))
        .route("/assets/{file}", get(asset))
}

/// The query most pages take.
#[derive(Debug, Default, Deserialize)]
struct WindowQuery {
    window: Option<String>,
}

/// The windows a page offers.
const WINDOWS: [&str; 4] = ["24h", "7d", "30d", "all"];

/// An HTML page or fragment, with the headers every page is served with.
struct Html(Markup);

impl IntoResponse for Html {
    fn into_response(self) -> Response {
        let mut response = self.0.into_string().into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(layout::CONTENT_SECURITY_POLICY));
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        // Figures change with every call: always ask again.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }
}

/// A page that could not be made: the API's error, as a page with its status.
struct PageError {
    error: ApiError,
    token: Token,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.error.status;
        let title = match status {
            StatusCode::NOT_FOUND => "Not found",
            // A deleted model, or one the operator took down: the message says which.
            StatusCode::GONE => "No longer here",
            _ => "Something went wrong",
        };
        let body = html! {
            h1 { (title) }
            (layout::notice(&self.error.message))
            p { a href="/" { "Back to the market" } }
        };
        (status, Html(layout::page(title, Section::Elsewhere, &self.token, body))).into_response()
    }
}

type PageResult = Result<Html, PageError>;

fn token(state: &AppState) -> Token {
    Token { symbol: state.config.token_symbol.clone(), decimals: state.config.token_decimals }
}

/// Runs `make`, turning its error into an error page.
async fn render(state: &AppState, make: impl std::future::Future<Output = ApiResult<Markup>>) -> PageResult {
    make.await.map(Html).map_err(|error| PageError { error, token: token(state) })
}

/// A bucket's start as an axis label: `26 Nov` for days, `14:00` for hours.
fn bucket_label(t: &str, bucket: &str) -> String {
    let Ok(time) = OffsetDateTime::parse(t, &Rfc3339) else { return t.to_owned() };
    if bucket == "hour" {
        format!("{:02}:00", time.hour())
    } else {
        format!("{} {}", time.day(), &time.month().to_string()[..3])
    }
}

/// An RFC 3339 time as people read it, in UTC.
fn when(t: &str) -> String {
    let Ok(time) = OffsetDateTime::parse(t, &Rfc3339) else { return t.to_owned() };
    format!(
        "{} {} {} {:02}:{:02} UTC",
        time.day(),
        &time.month().to_string()[..3],
        time.year(),
        time.hour(),
        time.minute()
    )
}

/// The series range of a page's window for the routes that take `from` and
/// `bucket`: the first bucket's start (RFC 3339), the bucket's name, and
/// every bucket's start.
async fn series_buckets(state: &AppState, window: &str) -> ApiResult<(String, &'static str, Vec<String>)> {
    let resolved = crate::routes::stats::window_or_all(state, Some(window), analytics::Window::WEEK).await?;
    let (from_ms, _) = resolved.range(0, store::now_ms());
    let bucket = if resolved.bucket_ms == store::HOUR_MS { "hour" } else { "day" };
    let starts = (0..resolved.buckets).map(|i| crate::wire::timestamp(from_ms + i * resolved.bucket_ms)).collect();
    Ok((crate::wire::timestamp(from_ms), bucket, starts))
}

fn percent_or_dash(value: Option<f64>) -> String {
    value.map_or("–".to_owned(), dashboard::format::percent)
}

/// A model's page, linked by its `owner/name`; a narrow column breaks the
/// name after the slash, never inside a word.
fn model_link(model: &str) -> Markup {
    let (owner, name) = model.split_once('/').unwrap_or(("", model));
    html! { a.model-name href=(format!("/models/{model}")) { @if !owner.is_empty() { (owner) "/" wbr; } (name) } }
}

async fn asset(Path(file): Path<String>) -> Response {
    match dashboard::assets::find(&format!("/assets/{file}")) {
        Some(asset) => (
            [
                (header::CONTENT_TYPE, asset.content_type),
                // The name carries the content's hash: it never changes.
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            asset.bytes,
        )
            .into_response(),
        None => ApiError::not_found("no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_labelled_by_day_or_hour() {
        assert_eq!(bucket_label("2026-11-26T00:00:00Z", "day"), "26 Nov");
        assert_eq!(bucket_label("2026-11-26T14:00:00Z", "hour"), "14:00");
        assert_eq!(bucket_label("garbage", "day"), "garbage");
        assert_eq!(when("2026-11-26T14:05:00Z"), "26 Nov 2026 14:05 UTC");
    }
}
