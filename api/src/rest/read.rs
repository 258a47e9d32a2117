//! The two read endpoints: keyset pages of conversations and of one conversation's
//! messages, with GraphQL's ids, cursors and field values.

use std::collections::HashMap;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use service::cursor::CursorKind;
use service::query::{self, Page, Window};
use service::{Error, Principal, conversation, message, normalize};

use super::error::RestError;
use super::extract::page_request;
use crate::graphql::ids::{NodeType, decode_id, encode_id};
use crate::state::AppState;

/// A page of items with the Relay page info, cursors as GraphQL issues them.
#[derive(Debug, Serialize)]
pub(super) struct PageBody<T> {
    items: Vec<T>,
    page_info: PageInfo,
}

#[derive(Debug, Serialize)]
pub(super) struct PageInfo {
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
pub(super) struct ConversationItem {
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
pub(super) struct MessageItem {
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

pub(super) fn gid(ty: NodeType, id: i64) -> String {
    encode_id(ty, id).0
}

/// Timestamps spelled as the GraphQL `DateTime` scalar spells them.
fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

pub(super) async fn conversations(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<PageBody<ConversationItem>>, RestError> {
    principal
        .require_read()
        .map_err(|e| RestError::service(&e, &headers))?;
    let settings = &state.config.settings;
    let window = Window::new(
        CursorKind::Conversation,
        &page_request(params)?,
        &settings.limits,
    )
    .map_err(|e| RestError::service(&e, &headers))?;
    let page = query::list_conversations(
        &state.db,
        &principal.viewer(),
        settings.default_region,
        &Default::default(),
        &window,
    )
    .await
    .map_err(|e| RestError::service_on(e, &state.db, &headers))?;
    Ok(Json(PageBody::new(
        page,
        query::conversation_cursor,
        ConversationItem::from,
    )))
}

pub(super) async fn conversation_messages(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<PageBody<MessageItem>>, RestError> {
    principal
        .require_read()
        .map_err(|e| RestError::service(&e, &headers))?;
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
    // The conversation and its page in one statement; an invisible conversation answers
    // 404 exactly like an unknown one.
    let (_, page) = query::find_conversation_with_thread(
        &state.db,
        &principal.viewer(),
        conversation_id,
        &Default::default(),
        &window,
    )
    .await
    .map_err(|e| RestError::service_on(e, &state.db, &headers))?
    .ok_or_else(not_found)?;
    Ok(Json(PageBody::new(
        page,
        query::message_cursor,
        MessageItem::from,
    )))
}
