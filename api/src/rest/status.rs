//! The delivery status webhooks: `POST /api/webhooks/{sms,email}/status`, signed like the
//! message webhooks, with `{messaging_provider_id | xillio_id, status, timestamp?,
//! error_code?, error_message?}`.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use service::delivery::{self, StatusEvent};
use service::{Channel, Error, Principal};

use super::error::{RestError, method_not_allowed};
use super::extract::JsonObject;
use super::read::gid;
use crate::graphql::ids::NodeType;
use crate::state::AppState;

/// The payload field of the provider's message id on `channel`.
fn id_field(channel: Channel) -> &'static str {
    match channel {
        Channel::Sms => "messaging_provider_id",
        Channel::Email => "xillio_id",
    }
}

/// A string field, or (for codes, which some providers send as numbers) a number.
fn text(
    p: &mut Map<String, Value>,
    field: &str,
    numbers: bool,
) -> Result<Option<String>, RestError> {
    match p.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) if numbers => Ok(Some(n.to_string())),
        Some(_) => Err(RestError::invalid(
            field,
            format!("{field} must be a string or null"),
        )),
    }
}

/// Reads a status payload; unknown fields are ignored.
fn event(channel: Channel, mut p: Map<String, Value>) -> Result<StatusEvent, RestError> {
    let id_field = id_field(channel);
    let provider_message_id = text(&mut p, id_field, false)?
        .ok_or_else(|| RestError::invalid(id_field, format!("{id_field} is required")))?;
    let status = text(&mut p, "status", false)?
        .ok_or_else(|| RestError::invalid("status", "status is required"))?;
    let status = delivery::parse_status("status", &status).map_err(|e| match e {
        Error::InvalidInput { field, reason } => RestError::invalid(&field, reason),
        other => RestError::invalid("status", other.to_string()),
    })?;
    let at = text(&mut p, "timestamp", false)?
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
    Ok(StatusEvent {
        channel,
        provider_message_id,
        status,
        at,
        error_code: text(&mut p, "error_code", true)?,
        error_message: text(&mut p, "error_message", false)?,
    })
}

/// The payload name of a field the service names.
fn payload_field(channel: Channel, field: &str) -> &str {
    match field {
        "providerMessageId" => id_field(channel),
        "at" => "timestamp",
        "errorCode" => "error_code",
        "errorMessage" => "error_message",
        other => other,
    }
}

/// The answer: the provider message id's status after the event, and the message when it
/// is recorded already.
#[derive(Debug, Serialize)]
struct StatusBody {
    message_id: Option<String>,
    status: &'static str,
    status_at: DateTime<Utc>,
    duplicate: bool,
}

async fn record(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    channel: Channel,
    JsonObject(payload): JsonObject,
) -> Result<Response, RestError> {
    let event = event(channel, payload)?;
    tracing::info!(sub = %principal.sub, status = %event.status, "recording a delivery status");
    match delivery::record_delivery_status(&state.db, event).await {
        Ok(r) => Ok(Json(StatusBody {
            message_id: r.message.map(|m| gid(NodeType::Message, m.id)),
            status: r.status.status.as_str(),
            status_at: r.status.status_at,
            duplicate: r.duplicate,
        })
        .into_response()),
        Err(Error::InvalidInput { field, reason }) => {
            Err(RestError::invalid(payload_field(channel, &field), reason))
        }
        Err(e) => Err(RestError::service_on(e, &state.db, headers)),
    }
}

/// The POST route of `channel`'s status callbacks.
pub(super) fn status_webhook(channel: Channel) -> MethodRouter<AppState> {
    post(
        move |State(state): State<AppState>,
              Extension(principal): Extension<Principal>,
              headers: HeaderMap,
              payload: JsonObject| async move {
            record(&state, &principal, &headers, channel, payload).await
        },
    )
    .fallback(method_not_allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(v: Value) -> Option<String> {
        match v {
            Value::Object(m) => event(Channel::Sms, m).err().and_then(|e| e.0.field),
            _ => unreachable!("test payloads are objects"),
        }
    }

    #[test]
    fn status_payloads_name_their_bad_field() {
        let ok = serde_json::json!({"messaging_provider_id": "m-1", "status": "Delivered", "error_code": 30007});
        assert_eq!(field_of(ok.clone()), None);
        let mut bad = ok.clone();
        bad["status"] = "bounced".into();
        assert_eq!(field_of(bad).as_deref(), Some("status"));
        let mut bad = ok.clone();
        bad["timestamp"] = "soon".into();
        assert_eq!(field_of(bad).as_deref(), Some("timestamp"));
        assert_eq!(
            field_of(serde_json::json!({"status": "sent"})).as_deref(),
            Some("messaging_provider_id")
        );
    }
}
