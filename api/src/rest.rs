//! REST ingress: provider webhooks and the legacy messaging REST contract, as thin
//! adapters over the same service calls as GraphQL.
//!
//! Writes: `POST /api/messages/{sms,email}` (outbound) and `POST /api/webhooks/{sms,email}`
//! (inbound) map their payload to a [`NewMessage`] and call
//! [`service::record::record_message`]. Reads: `GET /api/conversations` and
//! `GET /api/conversations/{id}/messages` are keyset pages with the GraphQL ids and
//! cursors. Errors are `{code, message, field?}` through the one [`ClientError`] mapping.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use service::cursor::CursorKind;
use service::query::{self, MessageScope, Page, PageRequest, Window};
use service::record::{NewMessage, Recorded};
use service::{Channel, Direction, Error, Kind, conversation, message, normalize};

use crate::AppState;
use crate::error::{ClientError, code};
use crate::graphql::ids::{NodeType, decode_id, encode_id};
use crate::http::request_id;

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

/// An error answer: the status and `{code, message, field?}` of a [`ClientError`].
#[derive(Debug)]
struct RestError(ClientError);

impl RestError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        RestError(ClientError {
            code,
            message: message.into(),
            field: None,
            status: status.as_u16(),
        })
    }

    /// A `BAD_USER_INPUT` naming `field`, through the same mapping as service errors.
    fn invalid(field: &str, reason: impl Into<String>) -> Self {
        RestError(ClientError::from_service(
            &Error::invalid(field, reason),
            None,
        ))
    }

    fn service(err: &Error, headers: &HeaderMap) -> Self {
        RestError(ClientError::from_service(err, Some(request_id(headers))))
    }
}

/// The wire shape of an error.
#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            code: self.0.code,
            message: &self.0.message,
            field: self.0.field.as_deref(),
        };
        (status, Json(body)).into_response()
    }
}

async fn method_not_allowed() -> RestError {
    RestError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        code::METHOD_NOT_ALLOWED,
        "this endpoint does not take that method: messages are POSTed, pages are read with GET",
    )
}

async fn not_found() -> RestError {
    RestError::new(
        StatusCode::NOT_FOUND,
        code::NOT_FOUND,
        "no such endpoint; see the README's REST ingress section",
    )
}

/// A request body that is one JSON object, checked in the order a client fixes it: the
/// content type (415), the size (413), then the syntax (400).
struct JsonObject(Map<String, Value>);

impl FromRequest<AppState> for JsonObject {
    type Rejection = RestError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, RestError> {
        if !is_json(req.headers()) {
            return Err(RestError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON, with content-type: application/json",
            ));
        }
        let limit = state.config.max_request_bytes;
        // The router's body-limit layer ends the stream at the limit; axum reports that
        // as a 413 rejection, anything else as a body that could not be read.
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large(limit)
            } else {
                RestError::new(
                    StatusCode::BAD_REQUEST,
                    code::BAD_USER_INPUT,
                    "the request body could not be read",
                )
            }
        })?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(map)) => Ok(JsonObject(map)),
            Ok(_) => Err(RestError::new(
                StatusCode::BAD_REQUEST,
                code::BAD_USER_INPUT,
                "the body must be a JSON object",
            )),
            Err(e) => Err(RestError::new(
                StatusCode::BAD_REQUEST,
                code::BAD_USER_INPUT,
                format!("the body is not valid JSON: {e}"),
            )),
        }
    }
}

fn too_large(limit: usize) -> RestError {
    RestError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        code::PAYLOAD_TOO_LARGE,
        format!("the request body is over the limit of {limit} bytes"),
    )
}

/// Middleware for the router, outside its body-limit layer, with the limit as state. That
/// layer refuses a body whose `content-length` is over the limit before any handler runs,
/// with a plain-text 413; on `/api/` paths this gives that answer the REST error shape.
pub async fn json_payload_too_large(
    State(limit): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let rest = request.uri().path().starts_with("/api/");
    let response = next.run(request).await;
    if rest && response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json(response.headers()) {
        return too_large(limit).into_response();
    }
    response
}

/// `application/json` or `application/<anything>+json`, parameters allowed.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// Which of the four write endpoints a payload came to.
#[derive(Debug, Clone, Copy)]
struct Ingress {
    channel: Channel,
    direction: Direction,
}

impl Ingress {
    /// The payload field that carries the provider's message id (inbound only).
    fn provider_id_field(self) -> Option<&'static str> {
        match (self.direction, self.channel) {
            (Direction::Outbound, _) => None,
            (Direction::Inbound, Channel::Sms) => Some("messaging_provider_id"),
            (Direction::Inbound, Channel::Email) => Some("xillio_id"),
        }
    }

    /// The payload field name for a field the service names (its names are GraphQL's).
    fn payload_field(self, field: &str) -> String {
        match field {
            "kind" => "type".to_owned(),
            "sentAt" => "timestamp".to_owned(),
            "providerMessageId" => self.provider_id_field().unwrap_or(field).to_owned(),
            other => other.to_owned(),
        }
    }

    /// A `BAD_USER_INPUT` for an invalid field as the service names it, in the payload's
    /// terms: the field renamed, and the reason too where it starts with the field's name
    /// (the service words its reasons that way).
    fn invalid(self, field: &str, reason: &str) -> RestError {
        let named = self.payload_field(field);
        let reason = match reason.strip_prefix(field) {
            Some(rest) if named != field => format!("{named}{rest}"),
            _ => reason.to_owned(),
        };
        RestError::invalid(&named, reason)
    }

    /// Reads the payload into a [`NewMessage`]; unknown fields are ignored.
    fn new_message(self, mut p: Map<String, Value>) -> Result<NewMessage, RestError> {
        let from = required_string(&mut p, "from")?;
        let to = match p.remove("to") {
            None | Some(Value::Null) => return Err(RestError::invalid("to", "to is required")),
            Some(Value::String(s)) => vec![s],
            Some(Value::Array(items)) => strings("to", items)?,
            Some(_) => {
                return Err(RestError::invalid(
                    "to",
                    "to must be an address or a list of addresses",
                ));
            }
        };
        let kind = match self.channel {
            Channel::Email => Kind::Email,
            Channel::Sms => {
                let ty = required_string(&mut p, "type")?;
                match ty.to_ascii_lowercase().as_str() {
                    "sms" => Kind::Sms,
                    "mms" => Kind::Mms,
                    _ => {
                        return Err(RestError::invalid(
                            "type",
                            "type must be \"sms\" or \"mms\"",
                        ));
                    }
                }
            }
        };
        let body = required_string(&mut p, "body")?;
        let attachments = match p.remove("attachments") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => strings("attachments", items)?,
            Some(_) => {
                return Err(RestError::invalid(
                    "attachments",
                    "attachments must be a list of URLs or null",
                ));
            }
        };
        let sent_at = optional_string(&mut p, "timestamp")?
            .map(|t| {
                DateTime::parse_from_rfc3339(t.trim())
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        RestError::invalid(
                            "timestamp",
                            "timestamp must be an RFC 3339 date-time such as 2024-11-01T14:00:00Z",
                        )
                    })
            })
            .transpose()?;
        let provider_message_id = match self.provider_id_field() {
            Some(field) => optional_string(&mut p, field)?,
            None => None,
        };
        Ok(NewMessage {
            channel: self.channel,
            kind: Some(kind),
            direction: self.direction,
            from,
            to,
            body,
            attachments,
            provider_message_id,
            sent_at,
        })
    }
}

fn required_string(p: &mut Map<String, Value>, field: &str) -> Result<String, RestError> {
    match p.remove(field) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(RestError::invalid(field, format!("{field} is required"))),
        Some(_) => Err(RestError::invalid(
            field,
            format!("{field} must be a string"),
        )),
    }
}

fn optional_string(p: &mut Map<String, Value>, field: &str) -> Result<Option<String>, RestError> {
    match p.remove(field) {
        Some(Value::String(s)) => Ok(Some(s)),
        None | Some(Value::Null) => Ok(None),
        Some(_) => Err(RestError::invalid(
            field,
            format!("{field} must be a string or null"),
        )),
    }
}

fn strings(field: &str, items: Vec<Value>) -> Result<Vec<String>, RestError> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(s),
            _ => Err(RestError::invalid(
                &format!("{field}[{i}]"),
                "must be a string",
            )),
        })
        .collect()
}

/// The answer to a write.
#[derive(Debug, Serialize)]
struct RecordedBody {
    message_id: String,
    conversation_id: Option<String>,
    conversation_created: bool,
    duplicate: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    assignment_error: Option<String>,
}

/// 200 when the message sits in its conversation; 202 when it was stored unassigned (an
/// inbound message whose addresses do not normalize), so the provider stops retrying.
fn recorded_response(r: Recorded) -> Response {
    let body = RecordedBody {
        message_id: gid(NodeType::Message, r.message.id),
        conversation_id: r
            .conversation
            .as_ref()
            .map(|c| gid(NodeType::Conversation, c.id)),
        conversation_created: r.conversation_created,
        duplicate: r.duplicate,
        assignment_error: r
            .conversation
            .is_none()
            .then_some(r.message.assignment_error)
            .flatten(),
    };
    let status = if r.conversation.is_some() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    (status, Json(body)).into_response()
}

async fn record(
    state: &AppState,
    headers: &HeaderMap,
    ingress: Ingress,
    JsonObject(payload): JsonObject,
) -> Result<Response, RestError> {
    let input = ingress.new_message(payload)?;
    match service::record::record_message(&state.db, &state.config.settings, input).await {
        Ok(recorded) => Ok(recorded_response(recorded)),
        Err(Error::InvalidInput { field, reason }) => Err(ingress.invalid(&field, &reason)),
        Err(e) => Err(RestError::service(&e, headers)),
    }
}

/// The POST route that records messages arriving on `channel` in `direction`.
fn ingress(channel: Channel, direction: Direction) -> MethodRouter<AppState> {
    let ingress = Ingress { channel, direction };
    post(
        move |State(state): State<AppState>, headers: HeaderMap, payload: JsonObject| async move {
            record(&state, &headers, ingress, payload).await
        },
    )
    .fallback(method_not_allowed)
}

/// `?first=&after=&last=&before=`; empty values count as absent, other parameters are
/// ignored.
fn page_request(
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<PageRequest, RestError> {
    let Query(params) =
        params.map_err(|_| RestError::invalid("query", "the query string does not parse"))?;
    let text = |name: &str| params.get(name).filter(|v| !v.is_empty()).cloned();
    let number = |name: &str| {
        text(name)
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| RestError::invalid(name, format!("{name} must be a whole number")))
            })
            .transpose()
    };
    Ok(PageRequest {
        first: number("first")?,
        after: text("after"),
        last: number("last")?,
        before: text("before"),
    })
}

/// A page of items with the Relay page info, cursors as GraphQL issues them.
#[derive(Debug, Serialize)]
struct PageBody<T> {
    items: Vec<T>,
    page_info: PageInfo,
}

#[derive(Debug, Serialize)]
struct PageInfo {
    has_next_page: bool,
    has_previous_page: bool,
    start_cursor: Option<String>,
    end_cursor: Option<String>,
}

impl<T> PageBody<T> {
    fn new<M>(page: Page<M>, cursor: impl Fn(&M) -> String, item: impl Fn(M) -> T) -> Self {
        let page_info = PageInfo {
            has_next_page: page.has_next_page,
            has_previous_page: page.has_previous_page,
            start_cursor: page.items.first().map(&cursor),
            end_cursor: page.items.last().map(&cursor),
        };
        PageBody {
            items: page.items.into_iter().map(item).collect(),
            page_info,
        }
    }
}

/// A conversation as REST shows it (the fields of GraphQL's `Conversation`).
#[derive(Debug, Serialize)]
struct ConversationItem {
    id: String,
    channel: &'static str,
    participants: Vec<String>,
    key: String,
    message_count: i64,
    first_message_at: String,
    last_message_at: String,
    snippet: String,
    last_message_id: Option<String>,
}

impl From<conversation::Model> for ConversationItem {
    fn from(c: conversation::Model) -> Self {
        ConversationItem {
            id: gid(NodeType::Conversation, c.id),
            participants: normalize::split_participants_key(&c.participants_key),
            key: normalize::conversation_key(c.channel, &c.participants_key),
            channel: c.channel.as_str(),
            message_count: c.message_count,
            first_message_at: time(c.first_message_at),
            last_message_at: time(c.last_message_at),
            snippet: c.snippet,
            last_message_id: c.last_message_id.map(|id| gid(NodeType::Message, id)),
        }
    }
}

/// A message as REST shows it (the fields of GraphQL's `Message`).
#[derive(Debug, Serialize)]
struct MessageItem {
    id: String,
    conversation_id: Option<String>,
    channel: &'static str,
    kind: &'static str,
    direction: &'static str,
    from: String,
    to: Value,
    body: String,
    attachments: Value,
    provider_message_id: Option<String>,
    sent_at: String,
    recorded_at: String,
    assignment_error: Option<String>,
}

impl From<message::Model> for MessageItem {
    fn from(m: message::Model) -> Self {
        MessageItem {
            id: gid(NodeType::Message, m.id),
            conversation_id: m.conversation_id.map(|id| gid(NodeType::Conversation, id)),
            channel: m.channel.as_str(),
            kind: m.kind.as_str(),
            direction: m.direction.as_str(),
            // Normalized when they could be, as given otherwise (as in GraphQL).
            from: m.from_address.unwrap_or(m.from_raw),
            to: m.to_addresses.unwrap_or(m.to_raw),
            body: m.body,
            attachments: m.attachments,
            provider_message_id: m.provider_message_id,
            sent_at: time(m.sent_at),
            recorded_at: time(m.recorded_at),
            assignment_error: m.assignment_error,
        }
    }
}

fn gid(ty: NodeType, id: i64) -> String {
    encode_id(ty, id).0
}

/// Timestamps spelled as the GraphQL `DateTime` scalar spells them.
fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

async fn conversations(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<PageBody<ConversationItem>>, RestError> {
    let settings = &state.config.settings;
    let window = Window::new(
        CursorKind::Conversation,
        &page_request(params)?,
        &settings.limits,
    )
    .map_err(|e| RestError::service(&e, &headers))?;
    let page = query::list_conversations(
        &state.db,
        settings.default_region,
        &Default::default(),
        &window,
    )
    .await
    .map_err(|e| RestError::service(&e, &headers))?;
    Ok(Json(PageBody::new(
        page,
        query::conversation_cursor,
        ConversationItem::from,
    )))
}

async fn conversation_messages(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<PageBody<MessageItem>>, RestError> {
    let id = id.map(|Path(id)| id).unwrap_or_default();
    let not_found = || {
        RestError::service(
            &Error::NotFound {
                what: "conversation",
                id: id.chars().take(64).collect(),
            },
            &headers,
        )
    };
    let conversation_id = decode_id(NodeType::Conversation, &id).ok_or_else(not_found)?;
    let window = Window::new(
        CursorKind::Message,
        &page_request(params)?,
        &state.config.settings.limits,
    )
    .map_err(|e| RestError::service(&e, &headers))?;
    query::find_conversation(&state.db, conversation_id)
        .await
        .map_err(|e| RestError::service(&e, &headers))?
        .ok_or_else(not_found)?;
    let page = query::list_messages(
        &state.db,
        MessageScope::Conversation(conversation_id),
        &Default::default(),
        &window,
    )
    .await
    .map_err(|e| RestError::service(&e, &headers))?;
    Ok(Json(PageBody::new(
        page,
        query::message_cursor,
        MessageItem::from,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMS_IN: Ingress = Ingress {
        channel: Channel::Sms,
        direction: Direction::Inbound,
    };

    fn payload(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test payloads are objects"),
        }
    }

    fn field_of(v: Value) -> Option<String> {
        SMS_IN.new_message(payload(v)).err().and_then(|e| e.0.field)
    }

    #[test]
    fn sms_payload_maps_to_a_new_message() {
        let m = SMS_IN
            .new_message(payload(serde_json::json!({
                "from": "+18045551234", "to": "+12016661234", "type": "MMS", "body": "hi",
                "attachments": ["https://x.example/a.png"], "timestamp": "2024-11-01T14:00:00Z",
                "messaging_provider_id": "message-1", "unknown": 1
            })))
            .unwrap();
        assert_eq!(m.kind, Some(Kind::Mms));
        assert_eq!(m.to, vec!["+12016661234"]);
        assert_eq!(m.provider_message_id.as_deref(), Some("message-1"));
        assert_eq!(
            m.sent_at.map(|t| t.to_rfc3339()).as_deref(),
            Some("2024-11-01T14:00:00+00:00")
        );
    }

    #[test]
    fn structural_errors_name_the_payload_field() {
        let ok = serde_json::json!({"from": "a", "to": ["b"], "type": "sms", "body": ""});
        let with = |k: &str, v: Value| {
            let mut p = ok.clone();
            p[k] = v;
            p
        };
        let without = |k: &str| {
            let mut p = ok.clone();
            p.as_object_mut().unwrap().remove(k);
            p
        };
        assert_eq!(field_of(without("body")).as_deref(), Some("body"));
        assert_eq!(
            field_of(with("type", "fax".into())).as_deref(),
            Some("type")
        );
        assert_eq!(
            field_of(with("to", serde_json::json!(["b", 3]))).as_deref(),
            Some("to[1]")
        );
        assert_eq!(
            field_of(with("timestamp", "yesterday".into())).as_deref(),
            Some("timestamp")
        );
        assert_eq!(
            field_of(with("messaging_provider_id", 7.into())).as_deref(),
            Some("messaging_provider_id")
        );
        assert_eq!(field_of(ok), None);
    }

    #[tokio::test]
    async fn the_limit_layers_own_413_gets_the_rest_shape_on_api_paths() {
        use axum::body::Body;
        use tower::ServiceExt;
        let app = Router::new()
            .route("/api/x", post(|| async { "ok" }))
            .route("/graphql", post(|| async { "ok" }))
            .layer(tower_http::limit::RequestBodyLimitLayer::new(8))
            .layer(axum::middleware::from_fn_with_state(
                8,
                json_payload_too_large,
            ));
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

    #[test]
    fn json_content_types_are_recognized() {
        let headers = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            h
        };
        assert!(is_json(&headers("application/json")));
        assert!(is_json(&headers("Application/JSON; charset=utf-8")));
        assert!(is_json(&headers("application/vnd.provider+json")));
        assert!(!is_json(&headers("text/plain")));
        assert!(!is_json(&headers("application/x-www-form-urlencoded")));
        assert!(!is_json(&HeaderMap::new()));
    }
}
