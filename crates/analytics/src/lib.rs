//! Usage measures as pure functions over plain numbers.
//!
//! - [`LatencyHistogram`]: fixed log-spaced buckets, mergeable; percentiles
//!   within its stated error.
//! - [`CallerSketch`]: distinct callers, exact up to [`SKETCH_EXACT_MAX`],
//!   HyperLogLog beyond; mergeable.
//! - [`concentration`]: each item's share of the market, top-k share, HHI,
//!   Gini, the Lorenz curve.
//! - [`Change`]: the one growth figure people are shown, this window
//!   against the window before ("+12.5%", "new", "×12").
//! - [`growth`]: the trending score, a ranking.
//! - [`Window`]: the 24h/7d/30d windows, their bucket ranges, and which
//!   window a bucket falls in.
//!
//! This crate knows nothing about SQL or HTTP.

mod change;
mod histogram;
mod market;
mod sketch;
mod window;

pub use change::{Change, TIMES_PAST};
pub use histogram::{LATENCY_BUCKETS, LatencyHistogram};
pub use market::{Concentration, TRENDING_CALLS_MIN, concentration, growth, median};
pub use sketch::{CallerSketch, SKETCH_EXACT_MAX};
pub use window::{DAY_MS, HOUR_MS, MINUTE_MS, Window};
