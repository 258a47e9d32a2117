//! `--metrics-bind`: the Prometheus text on a separate, internal address, without a token.

use std::net::SocketAddr;

use anyhow::Context as _;

/// Serves `GET /metrics` (only) on `address`, without authentication: for a scraper on an
/// internal network. Binding errors stop the start-up.
pub async fn serve_metrics(
    address: SocketAddr,
    state: crate::state::AppState,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address} (--metrics-bind)"))?;
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(crate::http::metrics))
        .with_state(state);
    tracing::info!(address = %address, "metrics at http://{address}/metrics (no token)");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(())
}
