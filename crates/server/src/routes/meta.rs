//! Health and the API's own description.

use axum::Json;
use axum::extract::State;

use crate::AppState;
use crate::wire::{EngineView, Health, TokenView};

/// Answers while the server is up.
#[utoipa::path(get, path = "/v1/health", tag = "meta", responses((status = 200, body = Health)))]
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    let token = TokenView { symbol: state.config.token_symbol.clone(), decimals: state.config.token_decimals };
    let engine = EngineView {
        name: state.market.executor.engine().as_str().to_owned(),
        version: state.market.executor.engine_version(),
    };
    Json(Health { status: "ok".to_owned(), version: env!("CARGO_PKG_VERSION").to_owned(), token, engine })
}
