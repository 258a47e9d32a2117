//! The axum router: `/graphql` (POST, GET for read-only queries, GraphiQL in a browser),
//! `/graphql/ws` (subscriptions over WebSocket, see [`ws`]), `/healthz`, `/readyz` and
//! `/metrics`, the REST routes (see [`crate::rest`]), behind a request-id and a body-size
//! limit.

mod graphql;
pub mod limits;
mod operation;
pub mod persisted;
pub mod serve;
pub mod ws;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use service::DatabaseConnection;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use self::graphql::{MediaType, Params, Rejection, negotiate, read_params, require_json_body};
pub use self::operation::{check_nesting, check_tokens};

use crate::middleware::FinishLayer;
use crate::request_id::{NextRequestId, request_id};
use crate::state::AppState;

/// The whole HTTP surface.
///
/// The middleware wraps the routes once, as one service ([`wrap`]), not each route with
/// `Router::layer`: that boxes every layer around every route, and axum clones the boxed
/// route (each layer a boxed clone) and boxes each layer's future on every request.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_request_bytes;
    let security = state.security.clone();
    let routes = Router::new()
        .route(
            "/graphql",
            get(graphql::graphql_get).post(graphql::graphql_post),
        )
        .route("/graphql/ws", get(ws::graphql_ws))
        .route("/graphql/assets/{name}", get(crate::graphiql::asset))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::rest::routes())
        .with_state(state);
    // Outermost first. The `map_*` steps give each layer the request and response bodies
    // it takes (`Router::layer` converts them around every layer).
    let stack = ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(NextRequestId::default()))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(crate::auth::cors(&security.cors_origins))
        .map_response(IntoResponse::into_response)
        // Failures are logged where they are classified (UNAVAILABLE, INTERNAL), with the
        // request id; a second, generic line per 5xx would only be noise during an outage.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_failure(()),
        )
        .layer(FinishLayer(limits::GraphqlPayloadTooLarge(max_body)))
        .layer(FinishLayer(crate::rest::JsonPayloadTooLarge(max_body)))
        .map_response(IntoResponse::into_response)
        // The async-graphql extractor reads the raw body stream, so axum's default limit
        // does not apply to it: the tower-http layer caps every body before parsing.
        .layer(RequestBodyLimitLayer::new(max_body))
        .map_request(|request: axum::extract::Request<_>| request.map(axum::body::Body::new))
        .layer(DefaultBodyLimit::disable())
        .layer(crate::auth::guard::layer(security))
        .service(routes);
    wrap(stack)
}

/// `service` (the routes behind their middleware) as a [`Router`] that sends it every
/// request.
fn wrap<S>(service: S) -> Router
where
    S: tower::Service<axum::extract::Request, Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: IntoResponse + 'static,
    S::Future: Send + 'static,
{
    Router::new().fallback_service(service)
}

/// Every request runs in an `info` span that carries its request id, so each event logged
/// while serving it (a recorded message, an UNAVAILABLE, an INTERNAL) names the request.
/// Only the path is kept: a GET query string can carry GraphQL variables, and so addresses.
fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    tracing::info_span!(
        "request",
        request_id = %request_id(request.headers()),
        method = %request.method(),
        path = request.uri().path(),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match tokio::time::timeout(Duration::from_secs(2), service::db::ping(&state.db)).await {
        Ok(Ok(())) => (StatusCode::OK, "ready"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
    }
}

/// `GET /metrics`: the Prometheus text (also served by `--metrics-bind`'s listener).
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    record_pool_gauges(&state.db);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// Pool gauges, sampled when `/metrics` is scraped.
fn record_pool_gauges(db: &DatabaseConnection) {
    let (size, idle) = match db.get_database_backend() {
        service::DbBackend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            (pool.size(), pool.num_idle())
        }
        _ => {
            let pool = db.get_sqlite_connection_pool();
            (pool.size(), pool.num_idle())
        }
    };
    metrics::gauge!("parley_db_pool_connections").set(f64::from(size));
    metrics::gauge!("parley_db_pool_idle_connections").set(idle as f64);
}
