//! Usage measures as pure functions over plain numbers.
//!
//! - [`LatencyHistogram`]: fixed log-spaced buckets, mergeable; percentiles
//!   within its stated error.
//! - [`CallerSketch`]: distinct callers, exact up to [`SKETCH_EXACT_MAX`],
//!   HyperLogLog beyond; mergeable.
//! - [`concentration`]: each item's share of the market, top-k share, HHI,
//!   Gini, the Lorenz curve.
//! - [`growth`]: the trending score.
//! - [`Window`]: the 24h/7d/30d windows, their bucket ranges, and which
//!   window a bucket falls in.
//!
//! This crate knows nothing about SQL or HTTP.

mod histogram;
mod market;
mod sketch;
mod window;

pub use histogram::{LATENCY_BUCKETS, LatencyHistogram};
pub use market::{Concentration, TRENDING_CALLS_MIN, concentration, growth, median};
pub use sketch::{CallerSketch, SKETCH_EXACT_MAX};
pub use window::{DAY_MS, HOUR_MS, MINUTE_MS, Window};
