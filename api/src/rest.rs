//! REST ingress: provider webhooks and the legacy messaging REST contract, as thin
//! adapters over the same service calls as GraphQL.

use axum::Router;

use crate::AppState;

/// The REST routes (`/api/...`).
pub fn routes() -> Router<AppState> {
    Router::new()
}
