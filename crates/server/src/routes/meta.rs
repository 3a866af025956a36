//! Health and the API's own description.

use axum::Json;

use crate::wire::Health;

/// Answers while the server is up.
#[utoipa::path(get, path = "/v1/health", tag = "meta", responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok", version: env!("CARGO_PKG_VERSION") })
}
