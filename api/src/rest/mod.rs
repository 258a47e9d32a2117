//! REST ingress: provider webhooks and the legacy messaging REST contract, as thin
//! adapters over the same service calls as GraphQL.
//!
//! Writes (`ingress.rs`): `POST /api/messages/{sms,email}` (outbound) and
//! `POST /api/webhooks/{sms,email}` (inbound) map their payload to a
//! [`service::record::NewMessage`] and call [`service::record::record_message`]. Reads
//! (`read.rs`): `GET /api/conversations` and `GET /api/conversations/{id}/messages` are keyset
//! pages with the GraphQL ids and cursors. Request bodies and query strings are read in
//! `extract.rs`. Errors (`error.rs`) are `{code, message, field?}` through the one
//! [`crate::error::ClientError`] mapping.

mod error;
mod extract;
mod ingress;
mod read;
mod status;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use service::{Channel, Direction};

use self::error::{method_not_allowed, not_found, too_large};
use self::extract::is_json;
use self::ingress::ingress;
use self::read::{conversation_messages, conversations};
use self::status::status_webhook;
use crate::middleware::{Finish, Finisher};
use crate::state::AppState;

/// The REST routes (`/api/...`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/messages/sms",
            ingress(Channel::Sms, Direction::Outbound),
        )
        .route(
            "/api/messages/email",
            ingress(Channel::Email, Direction::Outbound),
        )
        .route(
            "/api/webhooks/sms",
            ingress(Channel::Sms, Direction::Inbound),
        )
        .route(
            "/api/webhooks/email",
            ingress(Channel::Email, Direction::Inbound),
        )
        .route("/api/webhooks/sms/status", status_webhook(Channel::Sms))
        .route("/api/webhooks/email/status", status_webhook(Channel::Email))
        .route(
            "/api/conversations",
            get(conversations).fallback(method_not_allowed),
        )
        .route(
            "/api/conversations/{id}/messages",
            get(conversation_messages).fallback(method_not_allowed),
        )
        .route("/api/{*path}", any(not_found))
}

/// Middleware for the router, outside its body-limit layer; the limit is its value. That
/// layer refuses a body whose `content-length` is over the limit before any handler runs,
/// with a plain-text 413; on `/api/` paths this gives that answer the REST error shape.
#[derive(Debug, Clone, Copy)]
pub struct JsonPayloadTooLarge(pub usize);

impl Finisher for JsonPayloadTooLarge {
    type Finish = Option<JsonPayloadTooLarge>;

    fn start(&self, request: &Request) -> Self::Finish {
        request.uri().path().starts_with("/api/").then_some(*self)
    }
}

impl Finish for JsonPayloadTooLarge {
    fn finish(self, response: Response) -> Response {
        if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json(response.headers()) {
            return too_large(self.0).into_response();
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use axum::http::header;
    use axum::routing::post;
    use serde_json::Value;

    use super::*;
    use crate::middleware::FinishLayer;

    #[tokio::test]
    async fn the_limit_layers_own_413_gets_the_rest_shape_on_api_paths() {
        use axum::body::Body;
        use tower::ServiceExt;
        let app = Router::new()
            .route("/api/x", post(|| async { "ok" }))
            .route("/graphql", post(|| async { "ok" }))
            .layer(tower_http::limit::RequestBodyLimitLayer::new(8))
            .layer(FinishLayer(JsonPayloadTooLarge(8)));
        let send = |path: &str| {
            let request = axum::http::Request::post(path)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, 9)
                .body(Body::from("123456789"))
                .unwrap();
            app.clone().oneshot(request)
        };
        let response = send("/api/x").await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(is_json(response.headers()));
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "code": "PAYLOAD_TOO_LARGE",
                "message": "the request body is over the limit of 8 bytes",
            })
        );
        let response = send("/graphql").await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(!is_json(response.headers()));
    }
}
