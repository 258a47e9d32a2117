//! The `/graphql` handlers, per [GraphQL over HTTP]: reading a request (POST with a JSON
//! body, batches, GET with a query string), negotiating the response's media type, running
//! the request through the pre-parse guards, the cost probe and the schema, and giving every
//! error a code and the status the spec asks for.
//!
//! The HTTP-level steps are separate functions so other layers (authentication) can slot in
//! between them: [`negotiate`] (Accept), [`require_json_body`] (Content-Type, checked before
//! the body is read), [`read_params`] (the JSON body's shape), [`respond`] (status and body).
//!
//! [GraphQL over HTTP]: https://graphql.github.io/graphql-over-http/draft/

use std::time::Instant;

use async_graphql::{ErrorExtensionValues, Request, Response, ServerError};
use axum::Extension;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;

use super::operation::{check_nesting, check_tokens, is_introspection_only, is_mutation};
use crate::error::code;
use crate::graphql::{cost, shape};
use crate::request_id::{RequestId, request_id};
use crate::state::AppState;
use service::Principal;

/// The two media types a GraphQL response is sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    /// `application/graphql-response+json`: request errors (parse, validation, variable
    /// coercion, limits) answer 400 and carry no `data`.
    GraphqlResponse,
    /// `application/json`, for clients that ask for it (and those that send no `Accept`):
    /// request errors answer 200, as the spec asks for this legacy type.
    Json,
}

impl MediaType {
    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            MediaType::GraphqlResponse => "application/graphql-response+json; charset=utf-8",
            MediaType::Json => "application/json; charset=utf-8",
        })
    }
}

/// Picks the response media type from `Accept`: the acceptable one with the highest
/// quality, `application/graphql-response+json` on a tie; `application/json` when `Accept`
/// is absent or only has wildcards (`*/*`, `application/*`). `None` when the client accepts
/// neither (answered 406).
pub fn negotiate(headers: &HeaderMap) -> Option<MediaType> {
    let values: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if values.is_empty() {
        return Some(MediaType::Json);
    }
    let (mut gql, mut json, mut wildcard) = (None::<f32>, None::<f32>, None::<f32>);
    for range in values.iter().flat_map(|v| v.split(',')) {
        let mut parts = range.split(';');
        let mime = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let slot = match mime.as_str() {
            "application/graphql-response+json" => &mut gql,
            "application/json" => &mut json,
            "*/*" | "application/*" => &mut wildcard,
            _ => continue,
        };
        *slot = Some(slot.map_or(q, |old| old.max(q)));
    }
    let gql = gql.unwrap_or(0.0);
    let json = json.or(wildcard).unwrap_or(0.0);
    if gql <= 0.0 && json <= 0.0 {
        None
    } else if gql >= json {
        Some(MediaType::GraphqlResponse)
    } else {
        Some(MediaType::Json)
    }
}

/// A request refused before GraphQL execution: the status, a code and a message.
#[derive(Debug)]
pub struct Rejection {
    /// The HTTP status (the same whatever the negotiated media type).
    pub status: StatusCode,
    /// `extensions.code`.
    pub code: &'static str,
    /// What went wrong and what to do.
    pub message: String,
}

impl Rejection {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Rejection {
            status,
            code,
            message: message.into(),
        }
    }

    /// The response, in `media`, without `data`.
    pub fn into_response(self, media: MediaType) -> axum::response::Response {
        let body = serde_json::json!({
            "errors": [{ "message": self.message, "extensions": { "code": self.code } }]
        });
        let mut response = (self.status, body.to_string()).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, media.content_type());
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
        }
        response
    }
}

fn not_acceptable() -> axum::response::Response {
    Rejection::new(
        StatusCode::NOT_ACCEPTABLE,
        code::NOT_ACCEPTABLE,
        "this endpoint answers application/graphql-response+json or application/json; \
         send an Accept header that allows one of them",
    )
    .into_response(MediaType::Json)
}

/// Only `application/json` bodies are executed (any `charset` other than UTF-8 is refused).
/// Anything else, including no content type, `text/plain` and forms (which a cross-site
/// page can send without a CORS preflight), is refused with 415 before the body is read.
pub fn require_json_body(headers: &HeaderMap) -> Result<(), Rejection> {
    let refuse = |what: &str| {
        Err(Rejection::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::UNSUPPORTED_MEDIA_TYPE,
            format!("{what}; send the GraphQL request as JSON with content-type: application/json"),
        ))
    };
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return refuse("the request has no content-type");
    };
    let Ok(value) = value.to_str() else {
        return refuse("the content-type is not readable");
    };
    let mut parts = value.split(';');
    let mime = parts.next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return refuse(&format!("content-type {mime:?} is not accepted"));
    }
    for param in parts {
        if let Some((name, val)) = param.split_once('=')
            && name.trim().eq_ignore_ascii_case("charset")
            && !val.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        {
            return refuse(&format!("charset {} is not accepted", val.trim()));
        }
    }
    Ok(())
}

/// What a POST body holds: one operation or a batch.
pub enum Params {
    /// `{ "query": ... }`.
    Single(Box<Request>),
    /// `[{ "query": ... }, ...]`.
    Batch(Vec<Request>),
}

/// Reads the JSON body's shape: `query` a string (required), `operationName` a string or
/// null, `variables` and `extensions` maps or null. Each violation is a 400 `BAD_REQUEST`
/// naming the parameter.
pub fn read_params(body: &[u8]) -> Result<Params, Rejection> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        let what = if body.iter().all(u8::is_ascii_whitespace) {
            "the request body is empty".to_owned()
        } else {
            format!("the request body is not JSON ({e})")
        };
        Rejection::new(
            StatusCode::BAD_REQUEST,
            code::BAD_REQUEST,
            format!("{what}; send {{\"query\": \"...\"}}"),
        )
    })?;
    match value {
        serde_json::Value::Array(items) => {
            if items.is_empty() {
                return Err(bad_request(
                    "the batch is empty; send at least one operation",
                ));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    one_request(item).map_err(|mut r| {
                        r.message = format!("operation {i} of the batch: {}", r.message);
                        r
                    })
                })
                .collect::<Result<_, _>>()
                .map(Params::Batch)
        }
        other => one_request(other).map(|r| Params::Single(Box::new(r))),
    }
}

fn bad_request(message: impl Into<String>) -> Rejection {
    Rejection::new(StatusCode::BAD_REQUEST, code::BAD_REQUEST, message)
}

fn one_request(value: serde_json::Value) -> Result<Request, Rejection> {
    let serde_json::Value::Object(mut map) = value else {
        return Err(bad_request(
            "the request body must be a JSON object {\"query\": \"...\"}",
        ));
    };
    // `documentId` (a persisted document's id) travels in `extensions` from here on.
    let document_id = match map.remove("documentId") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(id)) => Some(id),
        Some(_) => return Err(bad_request("the `documentId` parameter must be a string")),
    };
    let persisted = document_id.is_some()
        || map
            .get("extensions")
            .and_then(|e| e.get("persistedQuery"))
            .is_some();
    match map.get("query") {
        Some(serde_json::Value::String(_)) => {}
        None | Some(serde_json::Value::Null) if persisted => {
            map.remove("query");
        }
        None | Some(serde_json::Value::Null) => {
            return Err(bad_request(
                "the request has no `query` parameter; send {\"query\": \"...\"}",
            ));
        }
        Some(_) => return Err(bad_request("the `query` parameter must be a string")),
    }
    for (name, object) in [
        ("operationName", false),
        ("variables", true),
        ("extensions", true),
    ] {
        match map.get(name) {
            None | Some(serde_json::Value::Null) => {
                map.remove(name);
            }
            Some(serde_json::Value::String(_)) if !object => {}
            Some(serde_json::Value::Object(_)) if object => {}
            Some(_) => {
                return Err(bad_request(format!(
                    "the `{name}` parameter must be {} or null",
                    if object { "a map" } else { "a string" }
                )));
            }
        }
    }
    let mut request: Request = serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| bad_request(format!("the request does not read as GraphQL: {e}")))?;
    if let Some(id) = document_id {
        request
            .extensions
            .insert("documentId".to_owned(), async_graphql::Value::String(id));
    }
    Ok(request)
}

pub(super) async fn graphql_post(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> axum::response::Response {
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    if let Err(rejection) = require_json_body(&headers) {
        return rejection.into_response(media);
    }
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return body_error(&e).into_response(media),
    };
    let params = match read_params(&bytes) {
        Ok(p) => p,
        Err(rejection) => return rejection.into_response(media),
    };
    let rid = request_id(&headers);
    let max_batch = state.config.graphql.max_batch;
    match params {
        Params::Single(req) => {
            let outcome = execute(&state, &principal, *req, rid, false, None).await;
            respond(media, &[outcome], false)
        }
        Params::Batch(reqs) if reqs.len() > max_batch => Rejection::new(
            StatusCode::BAD_REQUEST,
            code::QUERY_TOO_COMPLEX,
            format!(
                "a batch may hold at most {max_batch} operations (got {}); send fewer per request",
                reqs.len()
            ),
        )
        .into_response(media),
        Params::Batch(reqs) => {
            // The operations of a batch share one budget: each may spend what the ones
            // before it left.
            let mut left = state.config.graphql.max_complexity as u64;
            let mut out = Vec::with_capacity(reqs.len());
            for req in reqs {
                let outcome = execute(&state, &principal, req, rid, false, Some(left)).await;
                left = left.saturating_sub(outcome.spent);
                out.push(outcome);
            }
            respond(media, &out, true)
        }
    }
}

/// Why the body could not be read: 413 `PAYLOAD_TOO_LARGE` when it outgrew the limit
/// while streaming (a body announced with a too-large Content-Length is refused earlier
/// by the limit layer), 400 otherwise.
fn body_error(err: &axum::Error) -> Rejection {
    // The limit layer's error reaches us only as text.
    if err.to_string().contains("length limit exceeded") {
        Rejection::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            code::PAYLOAD_TOO_LARGE,
            "the request body is over the server's limit; send less (PARLEY_MAX_REQUEST_BYTES)",
        )
    } else {
        bad_request(format!("the request body could not be read: {err}"))
    }
}

pub(super) async fn graphql_get(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> axum::response::Response {
    let raw = raw.unwrap_or_default();
    if raw.is_empty() {
        return crate::graphiql::page().into_response();
    }
    // The auth guard puts a principal on every request that carries a query.
    let Some(Extension(principal)) = principal else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    let request = match async_graphql::http::parse_query_string(&raw) {
        Ok(r) => r,
        Err(e) => {
            return bad_request(format!("bad GET request: {e}")).into_response(media);
        }
    };
    let mut request = request;
    // A persisted document's id, as in a POST body (`documentId=sha256:...`).
    if let Some(id) = raw
        .split('&')
        .find_map(|pair| pair.strip_prefix("documentId="))
    {
        let id = id.replace("%3A", ":").replace("%3a", ":");
        request
            .extensions
            .insert("documentId".to_owned(), async_graphql::Value::String(id));
    }
    if request.query.is_empty()
        && !request.extensions.contains_key("persistedQuery")
        && !request.extensions.contains_key("documentId")
    {
        return bad_request("the request has no `query` parameter; send ?query=...")
            .into_response(media);
    }
    let rid = request_id(&headers);
    let outcome = execute(&state, &principal, request, rid, true, None).await;
    respond(media, &[outcome], false)
}

/// One operation's response, and the status it asks for.
struct Outcome {
    response: Response,
    /// Set when the operation did not reach execution (parse, validation, variable
    /// coercion, limits): the response has no `data` and, in
    /// `application/graphql-response+json`, answers 400.
    request_error: bool,
    /// A status that overrides the media type's rule (405 for a mutation over GET).
    status: Option<StatusCode>,
    /// The price the operation spent (0 when it did not run).
    spent: u64,
}

/// The HTTP response for `outcomes` (one, or a batch when `batch`), in `media`.
fn respond(media: MediaType, outcomes: &[Outcome], batch: bool) -> axum::response::Response {
    // Serialized straight to bytes: no intermediate JSON tree, and fields keep the order
    // the query selected them in.
    let (status, body) = if batch {
        (
            StatusCode::OK,
            serde_json::to_vec(&outcomes.iter().map(AnswerBody).collect::<Vec<_>>()),
        )
    } else {
        let o = &outcomes[0];
        let status = o.status.unwrap_or(if failed_overloaded(&o.response) {
            StatusCode::SERVICE_UNAVAILABLE
        } else if o.request_error {
            match media {
                MediaType::GraphqlResponse => StatusCode::BAD_REQUEST,
                MediaType::Json => StatusCode::OK,
            }
        } else {
            StatusCode::OK
        });
        (status, serde_json::to_vec(&AnswerBody(o)))
    };
    let body = body.unwrap_or_else(|_| b"null".to_vec());
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, media.content_type());
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    if outcomes.iter().any(|o| overloaded(&o.response)) {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(crate::error::RETRY_AFTER_SECONDS),
        );
    }
    response
}

/// One operation's answer as the body holds it: its response, without `data` when it is a
/// request error.
struct AnswerBody<'a>(&'a Outcome);

impl serde::Serialize for AnswerBody<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let response = &self.0.response;
        if !self.0.request_error {
            return response.serialize(serializer);
        }
        let mut map = serializer.serialize_map(None)?;
        if !response.extensions.is_empty() {
            map.serialize_entry("extensions", &response.extensions)?;
        }
        if !response.errors.is_empty() {
            map.serialize_entry("errors", &response.errors)?;
        }
        map.end()
    }
}

/// Whether an error of `response` says the server was overloaded (`Retry-After` then tells
/// the client when to try again).
fn overloaded(response: &Response) -> bool {
    response
        .errors
        .iter()
        .any(|e| error_code(e) == Some(code::OVERLOADED))
}

/// Whether `response` has no data because the server was overloaded: answered with 503 (and
/// `Retry-After`) so that HTTP clients and proxies back off too.
fn failed_overloaded(response: &Response) -> bool {
    response.data == async_graphql::Value::Null && overloaded(response)
}

/// The status of a response refused for access: 403 when an error is `FORBIDDEN`.
fn access_status(response: &Response) -> Option<StatusCode> {
    response
        .errors
        .iter()
        .any(|e| error_code(e) == Some(code::FORBIDDEN))
        .then_some(StatusCode::FORBIDDEN)
}

/// The refusal of an operation whose scope the principal lacks: a mutation needs
/// `messages:write`, anything else `conversations:read` (`admin` has both).
fn missing_scope(principal: &Principal, request: &Request) -> Option<Response> {
    let scopes = principal.scopes;
    if scopes.admin || scopes.read && scopes.write {
        return None;
    }
    // A mutation names its keyword, so a query without the word is not one: the common
    // read skips the extra parse.
    let mutation = request.query.contains("mutation") && is_mutation(request);
    let (allowed, needed) = if mutation {
        (scopes.write || scopes.admin, service::access::scope::WRITE)
    } else {
        (scopes.read || scopes.admin, service::access::scope::READ)
    };
    (!allowed).then(|| {
        rejected(
            code::FORBIDDEN,
            format!("this operation needs the `{needed}` scope"),
        )
    })
}

/// Runs one operation with the pre-parse guards, codes every error, and counts it.
/// `budget` is the cost the operation may spend (`--max-complexity` when `None`).
async fn execute(
    state: &AppState,
    principal: &Principal,
    mut request: Request,
    rid: &str,
    via_get: bool,
    budget: Option<u64>,
) -> Outcome {
    let started = Instant::now();
    let register = match state.persisted.resolve(&mut request) {
        Ok(register) => register,
        Err(refusal) => {
            return Outcome {
                response: rejected(refusal.code, refusal.message),
                request_error: true,
                status: refusal.status,
                spent: 0,
            };
        }
    };
    let operation = request
        .operation_name
        .as_deref()
        .map(|n| n.chars().take(64).collect::<String>())
        .unwrap_or_else(|| "anonymous".to_owned());
    let outcome = match guard(state, &request) {
        Err(response) => Outcome {
            response: *response,
            request_error: true,
            status: None,
            spent: 0,
        },
        Ok(()) if via_get && is_mutation(&request) => Outcome {
            response: rejected(
                code::METHOD_NOT_ALLOWED,
                "mutations are only accepted over POST",
            ),
            request_error: true,
            status: Some(StatusCode::METHOD_NOT_ALLOWED),
            spent: 0,
        },
        Ok(()) => match missing_scope(principal, &request) {
            Some(refused) => Outcome {
                response: refused,
                request_error: true,
                status: Some(StatusCode::FORBIDDEN),
                spent: 0,
            },
            None => run(state, principal, request, register, rid, budget).await,
        },
    };
    let outcome_label = if outcome.response.errors.is_empty() {
        "ok"
    } else {
        "error"
    };
    metrics::counter!("parley_graphql_requests_total", "operation" => operation, "outcome" => outcome_label)
        .increment(1);
    metrics::histogram!("parley_graphql_request_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    outcome
}

/// Runs an operation that passed the checks: with the principal and request id in its
/// data, priced and checked by the probe, nulls propagated and every error coded.
async fn run(
    state: &AppState,
    principal: &Principal,
    request: Request,
    register: Option<String>,
    rid: &str,
    budget: Option<u64>,
) -> Outcome {
    if let Some(hash) = register {
        state.persisted.remember(hash, &request.query);
    }
    let request = request
        .data(RequestId(rid.to_owned()))
        .data(principal.viewer())
        .data(principal.clone());
    let shape = shape::parley(|| state.schema.sdl());
    // Kept for null propagation, which reads the document again when a field failed.
    let (query, operation_name) = (request.query.clone(), request.operation_name.clone());
    let (mut response, spent) = if is_introspection_only(&request) {
        let schema = &state.introspection_schema;
        (schema.execute(request).await, 0)
    } else {
        cost::run(
            &state.probe_schema,
            &state.schema,
            request,
            budget,
            |doc, req| {
                shape::check_int_ranges(shape, doc, req.operation_name.as_deref(), &req.variables)
            },
        )
        .await
    };
    shape::propagate_nulls(shape, &query, operation_name.as_deref(), &mut response);
    for err in &mut response.errors {
        classify(err);
    }
    let request_error = is_request_error(&response);
    Outcome {
        status: access_status(&response),
        response,
        request_error,
        spent,
    }
}

/// The cheap checks on the query text, before anything parses it: its size, its token
/// count and how deeply it nests. Each is one linear pass that stops at its limit, so a
/// refused document costs microseconds, never a parse.
pub(crate) fn guard(state: &AppState, request: &Request) -> Result<(), Box<Response>> {
    let limits = &state.config.graphql;
    let query = &request.query;
    if query.len() > limits.max_query_bytes {
        return Err(Box::new(rejected(
            code::QUERY_TOO_COMPLEX,
            format!(
                "the query text is {} bytes; at most {} are allowed (PARLEY_MAX_QUERY_BYTES); \
                 send a smaller document or a persisted one",
                query.len(),
                limits.max_query_bytes
            ),
        )));
    }
    if let Err(tokens) = check_tokens(query, limits.max_query_tokens) {
        return Err(Box::new(rejected(
            code::QUERY_TOO_COMPLEX,
            format!(
                "the query text has more than {} tokens (stopped counting at {tokens}); \
                 send a smaller document (PARLEY_MAX_QUERY_TOKENS)",
                limits.max_query_tokens
            ),
        )));
    }
    if let Err(depth) = check_nesting(query, limits.max_nesting) {
        return Err(Box::new(rejected(
            code::QUERY_TOO_COMPLEX,
            format!(
                "the query nests brackets or braces {depth} deep; at most {} is allowed",
                limits.max_nesting
            ),
        )));
    }
    Ok(())
}

/// Whether `response` reports a request error (one raised before execution): async-graphql
/// answers those with no data and errors without a path, while a field error always has a
/// path (even when it nulls the whole `data`).
fn is_request_error(response: &Response) -> bool {
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
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
pub(crate) fn classify(err: &mut ServerError) {
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

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, header};

    use super::{MediaType, negotiate, require_json_body};

    fn accept(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn the_response_type_follows_accept() {
        use MediaType::*;
        assert_eq!(negotiate(&HeaderMap::new()), Some(Json));
        for (value, expected) in [
            ("application/graphql-response+json", Some(GraphqlResponse)),
            ("application/json", Some(Json)),
            ("*/*", Some(Json)),
            ("application/*", Some(Json)),
            (
                "application/graphql-response+json, application/json;q=0.9",
                Some(GraphqlResponse),
            ),
            (
                "application/graphql-response+json;q=0.5, application/json",
                Some(Json),
            ),
            (
                "application/json, application/graphql-response+json",
                Some(GraphqlResponse),
            ),
            ("text/html, */*;q=0.8", Some(Json)),
            ("text/html", None),
            ("application/json;q=0", None),
        ] {
            assert_eq!(negotiate(&accept(value)), expected, "{value}");
        }
    }

    #[test]
    fn only_json_bodies_are_read() {
        let with = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            require_json_body(&h).is_ok()
        };
        assert!(require_json_body(&HeaderMap::new()).is_err());
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=UTF-8"));
        assert!(!with("application/json; charset=latin1"));
        assert!(!with("text/plain"));
        assert!(!with("text/plain;charset=UTF-8"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!with("multipart/form-data; boundary=x"));
        assert!(!with("application/graphql"));
    }
}
