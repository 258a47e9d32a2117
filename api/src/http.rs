//! The axum router: `/graphql` (POST, GET for read-only queries, GraphiQL in a browser),
//! `/healthz`, `/readyz` and `/metrics`, behind a request-id and a body-size limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_graphql::parser::types::OperationType;
use async_graphql::{
    BatchRequest, BatchResponse, ErrorExtensionValues, ParseRequestError, Request, Response,
    ServerError,
};
use async_graphql_axum::{GraphQLBatchRequest, GraphQLResponse};
use axum::Router;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use service::DatabaseConnection;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId as HttpRequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use crate::error::code;
use crate::graphql::{RequestId, cost};
use crate::{AppConfig, AppSchema, build_schema, observability};

/// Shared state of the router.
#[derive(Clone)]
pub struct AppState {
    /// The GraphQL schema.
    pub schema: AppSchema,
    /// The same schema with the probe that validates and prices an operation first.
    pub probe_schema: AppSchema,
    /// The same schema with the deeper limit that introspection-only operations get.
    pub introspection_schema: AppSchema,
    /// The database.
    pub db: DatabaseConnection,
    /// The configuration.
    pub config: AppConfig,
    /// The Prometheus registry `/metrics` renders.
    pub metrics: PrometheusHandle,
}

impl AppState {
    /// State over `db` with `config`.
    pub fn new(db: DatabaseConnection, config: AppConfig) -> Self {
        AppState {
            schema: build_schema(db.clone(), config),
            probe_schema: crate::graphql::schema::build_probe_schema(db.clone(), config),
            introspection_schema: crate::graphql::schema::build_introspection_schema(
                db.clone(),
                config,
            ),
            db,
            config,
            metrics: observability::metrics_handle(),
        }
    }
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_request_bytes;
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/graphql/assets/{name}", get(crate::graphiql::asset))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::rest::routes())
        .with_state(state)
        // The async-graphql extractor reads the raw body stream, so axum's default limit
        // does not apply to it: the tower-http layer caps every body before parsing.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(axum::middleware::from_fn_with_state(
            max_body,
            crate::rest::json_payload_too_large,
        ))
        // Failures are logged where they are classified (UNAVAILABLE, INTERNAL), with the
        // request id; a second, generic line per 5xx would only be noise during an outage.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(NextRequestId::default()))
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

/// Request ids: a per-process random-ish prefix plus a counter; cheap and unique enough to
/// find one request in the logs.
#[derive(Clone, Default)]
struct NextRequestId(Arc<AtomicU64>);

impl MakeRequestId for NextRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<HttpRequestId> {
        static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        let prefix = PREFIX.get_or_init(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            t.subsec_nanos() ^ std::process::id().rotate_left(16)
        });
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{prefix:08x}-{n:x}"))
            .ok()
            .map(HttpRequestId::new)
    }
}

/// The request id the request-id layer put on the request (`-` when there is none).
pub(crate) fn request_id(headers: &HeaderMap) -> &str {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
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

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    record_pool_gauges(&state.db);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn graphql_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: GraphQLBatchRequest<BodyRejection>,
) -> axum::response::Response {
    let rid = request_id(&headers);
    let batch = request.into_inner();
    let max_batch = state.config.graphql.max_batch;
    let response = match batch {
        BatchRequest::Single(req) => BatchResponse::Single(execute(&state, req, rid, false).await),
        BatchRequest::Batch(reqs) if reqs.len() > max_batch => {
            let err = rejected(
                code::QUERY_TOO_COMPLEX,
                format!(
                    "a batch may hold at most {max_batch} operations (got {}); send fewer per request",
                    reqs.len()
                ),
            );
            return (StatusCode::BAD_REQUEST, GraphQLResponse::from(err)).into_response();
        }
        BatchRequest::Batch(reqs) => {
            let mut out = Vec::with_capacity(reqs.len());
            for req in reqs {
                out.push(execute(&state, req, rid, false).await);
            }
            BatchResponse::Batch(out)
        }
    };
    GraphQLResponse::from(response).into_response()
}

/// Why a GraphQL request body could not be read, as a GraphQL-shaped JSON error: 413
/// `PAYLOAD_TOO_LARGE` when the body outgrew the limit while streaming (a body announced
/// with a too-large Content-Length is refused earlier by the limit layer), 400 otherwise.
pub struct BodyRejection(ParseRequestError);

impl From<ParseRequestError> for BodyRejection {
    fn from(err: ParseRequestError) -> Self {
        BodyRejection(err)
    }
}

impl IntoResponse for BodyRejection {
    fn into_response(self) -> axum::response::Response {
        let too_large = match &self.0 {
            ParseRequestError::PayloadTooLarge => true,
            // The body stream's length-limit error reaches us only as text.
            ParseRequestError::Io(e) => e.to_string().contains("length limit exceeded"),
            _ => false,
        };
        let (status, err) = if too_large {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                rejected(
                    code::PAYLOAD_TOO_LARGE,
                    "the request body is over the server's limit; send less (PARLEY_MAX_REQUEST_BYTES)",
                ),
            )
        } else {
            (
                StatusCode::BAD_REQUEST,
                rejected(
                    code::GRAPHQL_PARSE_FAILED,
                    format!(
                        "the request is not a GraphQL request: {}; send JSON {{\"query\": ...}}",
                        self.0
                    ),
                ),
            )
        };
        (status, GraphQLResponse::from(err)).into_response()
    }
}

async fn graphql_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> axum::response::Response {
    let raw = raw.unwrap_or_default();
    if raw.is_empty() {
        return crate::graphiql::page().into_response();
    }
    let rid = request_id(&headers);
    let request = match async_graphql::http::parse_query_string(&raw) {
        Ok(r) => r,
        Err(e) => {
            let err = rejected(code::GRAPHQL_PARSE_FAILED, format!("bad GET request: {e}"));
            return (StatusCode::BAD_REQUEST, GraphQLResponse::from(err)).into_response();
        }
    };
    let response = execute(&state, request, rid, true).await;
    let status = if response
        .errors
        .iter()
        .any(|e| error_code(e) == Some(code::METHOD_NOT_ALLOWED))
    {
        StatusCode::METHOD_NOT_ALLOWED
    } else {
        StatusCode::OK
    };
    (status, GraphQLResponse::from(response)).into_response()
}

/// Runs one operation with the pre-parse guards, codes every error, and counts it.
async fn execute(state: &AppState, request: Request, rid: &str, via_get: bool) -> Response {
    let started = Instant::now();
    let operation = request
        .operation_name
        .as_deref()
        .map(|n| n.chars().take(64).collect::<String>())
        .unwrap_or_else(|| "anonymous".to_owned());
    let limits = &state.config.graphql;
    let response = if let Err(depth) = check_nesting(&request.query, limits.max_nesting) {
        rejected(
            code::QUERY_TOO_COMPLEX,
            format!(
                "the query nests brackets or braces {depth} deep; at most {} is allowed",
                limits.max_nesting
            ),
        )
    } else if via_get && is_mutation(&request) {
        rejected(
            code::METHOD_NOT_ALLOWED,
            "mutations are only accepted over POST",
        )
    } else {
        let request = request.data(RequestId(rid.to_owned()));
        let mut response = if is_introspection_only(&request) {
            state.introspection_schema.execute(request).await
        } else {
            match cost::prepare(&state.probe_schema, request).await {
                Ok((request, cost)) => cost::with_cost(state.schema.execute(request).await, cost),
                Err(rejected) => rejected,
            }
        };
        for err in &mut response.errors {
            classify(err);
        }
        response
    };
    let outcome = if response.errors.is_empty() {
        "ok"
    } else {
        "error"
    };
    metrics::counter!("parley_graphql_requests_total", "operation" => operation, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("parley_graphql_request_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    response
}

fn rejected(code: &'static str, message: impl Into<String>) -> Response {
    let mut err = ServerError::new(message, None);
    let mut ext = ErrorExtensionValues::default();
    ext.set("code", code);
    err.extensions = Some(ext);
    Response::from_errors(vec![err])
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

fn error_code(err: &ServerError) -> Option<&str> {
    match err.extensions.as_ref()?.get("code")? {
        async_graphql::Value::String(s) => Some(s.as_str()),
        async_graphql::Value::Enum(s) => Some(s.as_str()),
        _ => None,
    }
}

/// Gives every error async-graphql raises itself (parse, validation, limits) a code.
fn classify(err: &mut ServerError) {
    if error_code(err).is_some() {
        return;
    }
    let m = err.message.as_str();
    let code = if m.starts_with("Query is too complex")
        || m.starts_with("Query is nested too deep")
        || m.starts_with("The number of directives")
        || m.starts_with("The recursion depth")
    {
        code::QUERY_TOO_COMPLEX
    } else if m.starts_with(" -->")
        || m.contains("expected ") && err.path.is_empty() && m.contains("-->")
    {
        code::GRAPHQL_PARSE_FAILED
    } else if m.starts_with("Invalid value for argument")
        || m.starts_with("Failed to parse")
        || m.contains("Invalid value for")
    {
        code::BAD_USER_INPUT
    } else if err.path.is_empty() {
        code::GRAPHQL_VALIDATION_FAILED
    } else {
        code::INTERNAL
    };
    let mut ext = err.extensions.take().unwrap_or_default();
    ext.set("code", code);
    err.extensions = Some(ext);
}

/// Whether the operation selects only `__schema`, `__type` and `__typename` at its root.
fn is_introspection_only(request: &Request) -> bool {
    use async_graphql::parser::types::{DocumentOperations, Selection};
    if !request.query.contains("__schema") && !request.query.contains("__type") {
        return false;
    }
    let Ok(doc) = async_graphql::parser::parse_query(&request.query) else {
        return false;
    };
    let op = match (&doc.operations, request.operation_name.as_deref()) {
        (DocumentOperations::Single(op), _) => op,
        (DocumentOperations::Multiple(ops), Some(name)) => match ops.get(name) {
            Some(op) => op,
            None => return false,
        },
        // A single named operation is stored as `Multiple` too.
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => match ops.values().next() {
            Some(op) => op,
            None => return false,
        },
        (DocumentOperations::Multiple(_), None) => return false,
    };
    op.node.ty == OperationType::Query
        && op
            .node
            .selection_set
            .node
            .items
            .iter()
            .all(|s| match &s.node {
                Selection::Field(f) => matches!(
                    f.node.name.node.as_str(),
                    "__schema" | "__type" | "__typename"
                ),
                _ => false,
            })
}

fn is_mutation(request: &Request) -> bool {
    let Ok(doc) = async_graphql::parser::parse_query(&request.query) else {
        return false;
    };
    let selected = request.operation_name.as_deref();
    doc.operations.iter().any(|(name, op)| {
        op.node.ty == OperationType::Mutation
            && (selected.is_none() || name.map(|n| n.as_str()) == selected)
    })
}

/// The deepest nesting of `[`, `{` and `(` in a query, outside strings and comments.
/// async-graphql's parser recurses once per level, and a few thousand levels overflow its
/// stack and abort the process before any of its own limits apply; so this is checked on
/// the raw text first, in one linear pass that cannot itself overflow.
pub fn check_nesting(query: &str, max: usize) -> Result<(), usize> {
    let bytes = query.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    i += if bytes[i] == b'\\' && bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'[' | b'{' | b'(' => {
                depth += 1;
                if depth > max {
                    return Err(depth);
                }
            }
            b']' | b'}' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_nesting;

    #[test]
    fn nesting_is_measured_outside_strings_and_comments() {
        assert_eq!(check_nesting("{ a { b } }", 2), Ok(()));
        assert_eq!(check_nesting("{ a { b { c } } }", 2), Err(3));
        assert_eq!(check_nesting(r#"{ a(x: "[[[[[[") }"#, 2), Ok(()));
        assert_eq!(check_nesting("{ a # [[[[[[\n }", 1), Ok(()));
        assert_eq!(
            check_nesting(r#"{ a(x: """ [[[[ \""" [[[ """) }"#, 2),
            Ok(())
        );
        assert_eq!(check_nesting(&"[".repeat(2000), 32), Err(33));
    }
}
