//! Vitrine's integration tests: the real binary, a fresh data directory per
//! server, HTTP or the CLI as a user would. One test binary for the crate.

mod accounts;
mod authorization;
mod binary;
mod chain;
mod cli;
mod dashboard;
mod inference;
mod isolation;
mod ledger;
mod lifecycle;
mod log;
mod models;
mod multinode;
mod openapi;
mod payouts;
mod restart;
mod stats;
mod support;
mod tiles;
mod uploads;
mod witness;
mod x402;
