//! One module per area of the API; each handler documents its route for the
//! OpenAPI document with `#[utoipa::path]`.

pub mod accounts;
pub mod chain;
pub mod inference;
pub mod log;
pub mod meta;
pub mod models;
pub mod money;
pub mod quarantine;
pub mod stats;
pub mod takedown;
pub mod tiles;
pub mod uploads;
