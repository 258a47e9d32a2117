//! The middleware in front of every route: what each path needs (nothing, GraphiQL being
//! on, a webhook signature, a bearer token), the principal it puts on the request, and the
//! refusals (`UNAUTHENTICATED`, `FORBIDDEN`, `RATE_LIMITED`) in the endpoint's error shape.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use service::{Channel, Principal};

use super::jwt::AuthError;
use super::webhook::{SIGNATURE_HEADER, SignatureError};
use crate::error::code;
use crate::state::AppState;

/// How a refusal is shaped: a GraphQL error body on `/graphql`, the REST shape elsewhere.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Graphql,
    Rest,
}

/// A refusal: 401 `UNAUTHENTICATED`, 403 `FORBIDDEN`, 404, or 429 `RATE_LIMITED`.
pub struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    shape: Shape,
    retry_after: Option<u64>,
}

impl Refusal {
    fn unauthenticated(shape: Shape, message: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::UNAUTHORIZED,
            code: code::UNAUTHENTICATED,
            message: message.into(),
            shape,
            retry_after: None,
        }
    }

    fn forbidden(shape: Shape, message: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::FORBIDDEN,
            code: code::FORBIDDEN,
            message: message.into(),
            shape,
            retry_after: None,
        }
    }

    fn rate_limited(shape: Shape, wait: Duration) -> Refusal {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Refusal {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: code::RATE_LIMITED,
            message: format!("too many requests; retry in {seconds} s"),
            shape,
            retry_after: Some(seconds.max(1)),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = match self.shape {
            Shape::Graphql => json!({
                "errors": [{ "message": self.message, "extensions": { "code": self.code } }]
            }),
            Shape::Rest => json!({ "code": self.code, "message": self.message }),
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        if let Some(s) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}

/// Counts a refusal in `parley_auth_failures_total{reason}`.
pub(crate) fn count_failure(reason: &'static str) {
    metrics::counter!("parley_auth_failures_total", "reason" => reason).increment(1);
}

/// What a path needs.
enum Gate {
    /// Nothing (health, readiness, CORS preflight).
    Open,
    /// GraphiQL's page and assets: served only when enabled.
    GraphiQl,
    /// A provider webhook: its signature.
    Webhook(Channel),
    /// A bearer token; `admin` for the metrics.
    Bearer { shape: Shape, admin: bool },
}

fn gate(request: &Request) -> Gate {
    let path = request.uri().path();
    if request.method() == axum::http::Method::OPTIONS {
        return Gate::Open;
    }
    match path {
        "/healthz" | "/readyz" => Gate::Open,
        // Subscriptions authenticate in `connection_init` (browsers cannot set headers on
        // a WebSocket): see `crate::http::ws`.
        "/graphql/ws" => Gate::Open,
        "/metrics" => Gate::Bearer {
            shape: Shape::Rest,
            admin: true,
        },
        "/api/webhooks/sms" | "/api/webhooks/sms/status" => Gate::Webhook(Channel::Sms),
        "/api/webhooks/email" | "/api/webhooks/email/status" => Gate::Webhook(Channel::Email),
        "/graphql"
            if request.method() == axum::http::Method::GET
                && request.uri().query().is_none_or(str::is_empty) =>
        {
            Gate::GraphiQl
        }
        "/graphql" => Gate::Bearer {
            shape: Shape::Graphql,
            admin: false,
        },
        p if p.starts_with("/graphql/assets/") => Gate::GraphiQl,
        _ => Gate::Bearer {
            shape: Shape::Rest,
            admin: false,
        },
    }
}

/// The client's IP, as the socket saw it (a proxy in front should be configured to
/// rate-limit on its own).
fn client_ip(request: &Request) -> Option<std::net::IpAddr> {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The middleware in front of every route: puts the request's [`Principal`] in its
/// extensions (the development principal when authentication is off), or refuses it.
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let security = &state.security;
    let ip = client_ip(&request);
    match gate(&request) {
        Gate::Open => {}
        Gate::GraphiQl => {
            if !security.graphiql {
                return (
                    StatusCode::NOT_FOUND,
                    "GraphiQL is off while authentication is on (--graphiql turns it on)",
                )
                    .into_response();
            }
        }
        Gate::Webhook(channel) => {
            if let Err(wait) = security.limits.check_ip(ip) {
                count_failure("rate_limited");
                return Refusal::rate_limited(Shape::Rest, wait).into_response();
            }
            let principal = Principal::provider(match channel {
                Channel::Sms => "webhook:sms",
                Channel::Email => "webhook:email",
            });
            if security.webhooks.of(channel).is_empty() && !security.auth_enabled() {
                request.extensions_mut().insert(principal);
                return next.run(request).await;
            }
            let (parts, body) = request.into_parts();
            // The body limit layer outside this one caps what is read here.
            let bytes = match axum::body::to_bytes(body, usize::MAX).await {
                Ok(b) => b,
                Err(_) => {
                    return Refusal {
                        status: StatusCode::PAYLOAD_TOO_LARGE,
                        code: code::PAYLOAD_TOO_LARGE,
                        message: "the request body is over the server's limit".into(),
                        shape: Shape::Rest,
                        retry_after: None,
                    }
                    .into_response();
                }
            };
            let signature = parts
                .headers
                .get(SIGNATURE_HEADER)
                .and_then(|v| v.to_str().ok());
            let now = chrono::Utc::now().timestamp();
            if let Err(e) = security.webhooks.verify(channel, signature, &bytes, now) {
                count_failure(e.reason());
                tracing::warn!(reason = e.reason(), "webhook delivery refused");
                let refusal = Refusal::unauthenticated(Shape::Rest, e.to_string());
                let mut response = refusal.into_response();
                if e == SignatureError::NotConfigured {
                    response.headers_mut().remove(header::WWW_AUTHENTICATE);
                }
                return response;
            }
            let mut request = Request::from_parts(parts, Body::from(bytes));
            request.extensions_mut().insert(principal);
            return next.run(request).await;
        }
        Gate::Bearer { shape, admin } => {
            let principal = match &security.authenticator {
                None => Principal::development(),
                Some(auth) => match bearer(&request).and_then(|t| auth.verify(t)) {
                    Ok(p) => p,
                    Err(e) => {
                        count_failure(e.reason());
                        if let Err(wait) = security.limits.check_failed_auth(ip) {
                            return Refusal::rate_limited(shape, wait).into_response();
                        }
                        return Refusal::unauthenticated(shape, e.to_string()).into_response();
                    }
                },
            };
            if admin && !principal.scopes.admin {
                count_failure("forbidden");
                return Refusal::forbidden(shape, "the metrics need the `admin` scope")
                    .into_response();
            }
            if security.auth_enabled()
                && let Err(wait) = security.limits.check_principal(&principal.sub)
            {
                count_failure("rate_limited");
                return Refusal::rate_limited(shape, wait).into_response();
            }
            request.extensions_mut().insert(principal);
        }
    }
    next.run(request).await
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(request: &Request) -> Result<&str, AuthError> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(token.trim())
}
