//! The four write endpoints: a provider's or the legacy contract's payload read into a
//! [`NewMessage`], recorded, and answered with the message's and conversation's ids.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use service::headers::EmailHeaders;
use service::record::{NewMessage, Recorded};
use service::{Channel, Direction, Error, Kind, Principal};

use super::error::{RestError, method_not_allowed};
use super::extract::JsonObject;
use super::read::gid;
use crate::graphql::ids::NodeType;
use crate::state::AppState;

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
            "messageId" => "message_id".to_owned(),
            "inReplyTo" => "in_reply_to".to_owned(),
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

    /// Takes the email threading headers out of an email payload (`subject`, `message_id`,
    /// `in_reply_to`, and `references` as a list of ids or one whitespace-separated
    /// string, as the header is written); other channels' payloads carry none.
    fn headers(self, p: &mut Map<String, Value>) -> Result<EmailHeaders, RestError> {
        if self.channel != Channel::Email {
            return Ok(EmailHeaders::default());
        }
        let references = match p.remove("references") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            Some(Value::Array(items)) => strings("references", items)?,
            Some(_) => {
                return Err(RestError::invalid(
                    "references",
                    "references must be a list of message ids or one string of them",
                ));
            }
        };
        Ok(EmailHeaders {
            subject: optional_string(p, "subject")?,
            message_id: optional_string(p, "message_id")?,
            in_reply_to: optional_string(p, "in_reply_to")?,
            references,
        })
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
    principal: &Principal,
    headers: &HeaderMap,
    ingress: Ingress,
    JsonObject(mut payload): JsonObject,
) -> Result<Response, RestError> {
    let headers_given = ingress.headers(&mut payload)?;
    let input = ingress.new_message(payload)?;
    if let Err(e) = principal.authorize_write(&input, state.config.settings.default_region) {
        return Err(RestError::service(&e, headers));
    }
    tracing::info!(sub = %principal.sub, "recording a message");
    match service::record::record_message_with(
        &state.db,
        &state.config.settings,
        input,
        headers_given,
    )
    .await
    {
        Ok(recorded) => Ok(recorded_response(recorded)),
        Err(Error::InvalidInput { field, reason }) => Err(ingress.invalid(&field, &reason)),
        Err(e) => Err(RestError::service_on(e, &state.db, headers)),
    }
}

/// The POST route that records messages arriving on `channel` in `direction`.
pub(super) fn ingress(channel: Channel, direction: Direction) -> MethodRouter<AppState> {
    let ingress = Ingress { channel, direction };
    post(
        move |State(state): State<AppState>,
              Extension(principal): Extension<Principal>,
              headers: HeaderMap,
              payload: JsonObject| async move {
            record(&state, &principal, &headers, ingress, payload).await
        },
    )
    .fallback(method_not_allowed)
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
}
