//! Usage made visible: the market's demand distribution (`market.rs`), a
//! model's series (`series.rs`), trending models (`trending.rs`), demand and
//! supply per task (`tasks.rs`), a creator's demand (`creator.rs`), a model's
//! demand by app and task share (`demand.rs`), an account's earnings and spending
//! (`account.rs`), and Prometheus metrics (`metrics.rs`). Everything reads
//! `usage_rollups`; private models count only in their owner's views. What
//! they share (windows, bucket ranges, key names) is here; the window maths
//! itself is `analytics::Window`.

mod account;
mod creator;
mod demand;
mod market;
mod metrics;
mod series;
mod tasks;
mod trending;

pub use account::*;
pub use creator::*;
pub use demand::*;
pub use market::*;
pub use metrics::*;
pub use series::*;
pub use tasks::*;
pub use trending::*;

use std::collections::{BTreeMap, HashMap};

use analytics::Window;
use store::{DAY_MS, Dimension, HOUR_MS, Rollup, RollupQuery};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// A window named by a query (`24h`, `7d`, `30d`), or `default`.
fn window(text: Option<&str>, default: Window) -> ApiResult<Window> {
    match text {
        None => Ok(default),
        Some(name) => {
            Window::parse(name).ok_or_else(|| ApiError::bad_request(format!("window is 24h, 7d or 30d, not '{name}'")))
        }
    }
}

/// A window named by a query (`24h`, `7d`, `30d` or `all`: every day since
/// the market's first call), or `default`.
pub(crate) async fn window_or_all(state: &AppState, text: Option<&str>, default: Window) -> ApiResult<Window> {
    if text != Some("all") {
        return window(text, default).map_err(|_| {
            ApiError::bad_request(format!("window is 24h, 7d, 30d or all, not '{}'", text.unwrap_or("")))
        });
    }
    let now = store::now_ms();
    let first = state.store.first_usage_day_ms().await?.unwrap_or(now);
    let all = Window::since(first, now);
    if all.buckets as u64 > state.config.stats_series_points_max {
        return Err(ApiError::bad_request(format!(
            "the market has {} days of usage, more than stats_series_points_max = {}; ask for a shorter window",
            all.buckets, state.config.stats_series_points_max
        )));
    }
    Ok(all)
}

fn require_rollups(state: &AppState) -> ApiResult<()> {
    if !state.config.analytics_rollups {
        return Err(ApiError::unavailable("usage rollups are off on this server (analytics_rollups = false)", 3600));
    }
    Ok(())
}

/// Every key's public rollups of `dimension` in buckets of `bucket_ms` over
/// `[from_ms, to_ms)`; `detail` decodes latencies and caller sketches too.
async fn public_rollups(
    state: &AppState,
    dimension: Dimension,
    bucket_ms: i64,
    (from_ms, to_ms): (i64, i64),
    detail: bool,
) -> ApiResult<BTreeMap<String, BTreeMap<i64, Rollup>>> {
    let query =
        RollupQuery { dimension, granularity: bucket_ms, from_ms, to_ms, keys: None, include_private: false, detail };
    Ok(state.store.rollups(&query).await?)
}

fn total(buckets: &BTreeMap<i64, Rollup>) -> Rollup {
    let mut sum = Rollup::default();
    buckets.values().for_each(|r| sum.merge(r));
    sum
}

/// How a dimension's keys are shown.
enum KeyNames {
    /// Tasks, apps and nodes are their own names.
    Themselves,
    /// Model and account ids, named; `None` for keys that must not be shown
    /// (models now private, or gone).
    Looked(HashMap<String, Option<String>>),
}

impl KeyNames {
    fn name(&self, key: &str) -> Option<String> {
        match self {
            KeyNames::Themselves => Some(key.to_owned()),
            KeyNames::Looked(names) => names.get(key).cloned().flatten(),
        }
    }
}

async fn key_names(state: &AppState, dimension: Dimension) -> ApiResult<KeyNames> {
    Ok(match dimension {
        Dimension::Model => KeyNames::Looked(
            state
                .store
                .model_labels()
                .await?
                .into_iter()
                .map(|(id, m)| (id.to_string(), m.public.then(|| format!("{}/{}", m.owner, m.name))))
                .collect(),
        ),
        Dimension::Creator => KeyNames::Looked(
            state.store.account_names().await?.into_iter().map(|(id, name)| (id.to_string(), Some(name))).collect(),
        ),
        Dimension::Task | Dimension::App | Dimension::Node => KeyNames::Themselves,
    })
}

fn parse_time(text: &str, what: &str) -> ApiResult<i64> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| ApiError::bad_request(format!("{what} is an RFC 3339 time, such as 2026-11-25T00:00:00Z")))
}

fn granularity(text: Option<&str>) -> ApiResult<(&'static str, i64)> {
    match text.unwrap_or("day") {
        "hour" => Ok(("hour", HOUR_MS)),
        "day" => Ok(("day", DAY_MS)),
        other => Err(ApiError::bad_request(format!("bucket is hour or day, not '{other}'"))),
    }
}

/// `[from, to)` aligned to buckets, checked against `stats_series_points_max`.
fn series_range(state: &AppState, from: Option<&str>, to: Option<&str>, width: i64) -> ApiResult<(i64, i64)> {
    let to_ms = match to {
        Some(text) => parse_time(text, "to")?,
        None => store::now_ms(),
    };
    // The last bucket is the one holding `to`; by default 7 days or 24 hours of buckets end there.
    let last = (to_ms - 1).div_euclid(width) * width;
    let from_ms = match from {
        Some(text) => parse_time(text, "from")?.div_euclid(width) * width,
        None => last - (if width == DAY_MS { 6 } else { 23 }) * width,
    };
    let to_ms = last + width;
    if from_ms >= to_ms {
        return Err(ApiError::bad_request("from must be before to"));
    }
    let points = (to_ms - from_ms) / width;
    if points as u64 > state.config.stats_series_points_max {
        return Err(ApiError::bad_request(format!(
            "{points} points asked, more than stats_series_points_max = {}",
            state.config.stats_series_points_max
        )));
    }
    Ok((from_ms, to_ms))
}
