//! The middleware in front of every route: what each path needs (nothing, GraphiQL being
//! on, a webhook signature, a bearer token), the principal it puts on the request, and the
//! refusals (`UNAUTHENTICATED`, `FORBIDDEN`, `RATE_LIMITED`) in the endpoint's error shape.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use service::{Channel, Principal};
use tower::{Layer, Service, ServiceExt as _};

use super::Security;
use super::jwt::AuthError;
use super::webhook::{SIGNATURE_HEADER, SignatureError};
use crate::error::code;
use crate::middleware::Answer;

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

/// The middleware in front of every route, as a layer (see [`Guard`]).
#[derive(Clone)]
pub struct GuardLayer {
    security: Arc<Security>,
}

/// The guard of `security`.
pub fn layer(security: Arc<Security>) -> GuardLayer {
    GuardLayer { security }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            security: self.security.clone(),
        }
    }
}

/// The middleware in front of every route: puts the request's [`Principal`] in its
/// extensions (the development principal when authentication is off), or refuses it.
/// Only a webhook whose signature must be checked awaits (its body) before the inner
/// service is called.
#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    security: Arc<Security>,
}

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Answer<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match judge(&self.security, request) {
            Verdict::Pass(request) => Answer::Inner {
                future: self.inner.call(request),
            },
            Verdict::Refuse(response) => Answer::ready(response),
            Verdict::Verify(request, channel) => {
                let security = self.security.clone();
                let inner = self.inner.clone();
                Answer::boxed(async move {
                    match verify_webhook(&security, request, channel).await {
                        Ok(request) => {
                            let Ok(response) = inner.oneshot(request).await;
                            response
                        }
                        Err(refusal) => refusal,
                    }
                })
            }
        }
    }
}

/// What the guard decides before anything is awaited.
enum Verdict {
    /// On to the route, with its principal.
    Pass(Request),
    /// Refused.
    Refuse(Response),
    /// A webhook whose body's signature decides.
    Verify(Request, Channel),
}

/// The guard's decision on `request`, for all but a signed webhook's body.
fn judge(security: &Security, mut request: Request) -> Verdict {
    let ip = client_ip(&request);
    match gate(&request) {
        Gate::Open => {}
        Gate::GraphiQl => {
            if !security.graphiql {
                return Verdict::Refuse(
                    (
                        StatusCode::NOT_FOUND,
                        "GraphiQL is off while authentication is on (--graphiql turns it on)",
                    )
                        .into_response(),
                );
            }
        }
        Gate::Webhook(channel) => {
            if let Err(wait) = security.limits.check_ip(ip) {
                count_failure("rate_limited");
                return Verdict::Refuse(Refusal::rate_limited(Shape::Rest, wait).into_response());
            }
            if security.webhooks.of(channel).is_empty() && !security.auth_enabled() {
                request.extensions_mut().insert(webhook_principal(channel));
                return Verdict::Pass(request);
            }
            return Verdict::Verify(request, channel);
        }
        Gate::Bearer { shape, admin } => {
            let principal = match &security.authenticator {
                None => Principal::development(),
                Some(auth) => match bearer(&request).and_then(|t| auth.verify(t)) {
                    Ok(p) => p,
                    Err(e) => {
                        count_failure(e.reason());
                        if let Err(wait) = security.limits.check_failed_auth(ip) {
                            return Verdict::Refuse(
                                Refusal::rate_limited(shape, wait).into_response(),
                            );
                        }
                        return Verdict::Refuse(
                            Refusal::unauthenticated(shape, e.to_string()).into_response(),
                        );
                    }
                },
            };
            if admin && !principal.scopes.admin {
                count_failure("forbidden");
                return Verdict::Refuse(
                    Refusal::forbidden(shape, "the metrics need the `admin` scope").into_response(),
                );
            }
            if security.auth_enabled()
                && let Err(wait) = security.limits.check_principal(&principal.sub)
            {
                count_failure("rate_limited");
                return Verdict::Refuse(Refusal::rate_limited(shape, wait).into_response());
            }
            request.extensions_mut().insert(principal);
        }
    }
    Verdict::Pass(request)
}

/// The principal of a provider's webhook on `channel`.
fn webhook_principal(channel: Channel) -> Principal {
    Principal::provider(match channel {
        Channel::Sms => "webhook:sms",
        Channel::Email => "webhook:email",
    })
}

/// Reads a webhook's body and checks its signature: the request (body restored, principal
/// set), or the refusal.
async fn verify_webhook(
    security: &Security,
    request: Request,
    channel: Channel,
) -> Result<Request, Response> {
    let (parts, body) = request.into_parts();
    // The body limit layer outside this one caps what is read here.
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(_) => {
            return Err(Refusal {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: code::PAYLOAD_TOO_LARGE,
                message: "the request body is over the server's limit".into(),
                shape: Shape::Rest,
                retry_after: None,
            }
            .into_response());
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
        return Err(response);
    }
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(webhook_principal(channel));
    Ok(request)
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
