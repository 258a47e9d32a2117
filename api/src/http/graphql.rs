//! The `/graphql` handlers: reading a request (POST, batches, GET), running it through the
//! pre-parse guards, the cost probe and the schema, and giving every error a code.

use std::time::Instant;

use async_graphql::{
    BatchRequest, BatchResponse, ErrorExtensionValues, ParseRequestError, Request, Response,
    ServerError,
};
use async_graphql_axum::{GraphQLBatchRequest, GraphQLResponse};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

use super::operation::{check_nesting, is_introspection_only, is_mutation};
use crate::error::code;
use crate::graphql::{cost, shape};
use crate::request_id::{RequestId, request_id};
use crate::state::AppState;

pub(super) async fn graphql_post(
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
    let status = match &response {
        BatchResponse::Single(r) if failed_overloaded(r) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    (status, GraphQLResponse::from(response)).into_response()
}

/// Whether `response` has no data because the server was overloaded: answered with 503 (and
/// `Retry-After`, set by `execute`) so that HTTP clients and proxies back off too.
fn failed_overloaded(response: &Response) -> bool {
    response.data == async_graphql::Value::Null
        && response
            .errors
            .iter()
            .any(|e| error_code(e) == Some(code::OVERLOADED))
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

pub(super) async fn graphql_get(
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
    } else if failed_overloaded(&response) {
        StatusCode::SERVICE_UNAVAILABLE
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
        // Kept for null propagation, which reads the document again when a field failed.
        let (query, operation_name) = (request.query.clone(), request.operation_name.clone());
        let mut response = if is_introspection_only(&request) {
            let schema = &state.introspection_schema;
            cost::priced(schema, schema.execute(request)).await
        } else {
            cost::run(&state.probe_schema, &state.schema, request, |doc, req| {
                shape::check_int_ranges(doc, req.operation_name.as_deref(), &req.variables)
            })
            .await
        };
        shape::propagate_nulls(&query, operation_name.as_deref(), &mut response);
        for err in &mut response.errors {
            classify(err);
        }
        if response
            .errors
            .iter()
            .any(|e| error_code(e) == Some(code::OVERLOADED))
        {
            response.http_headers.insert(
                axum::http::header::RETRY_AFTER,
                crate::error::RETRY_AFTER_SECONDS.into(),
            );
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
