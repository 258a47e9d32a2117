//! Messaging state types (SPEC section 14): delivery status, its history and the admin
//! input that reports one; an inbox's view of a conversation; and the resolvers' shared
//! lookups for `Message` and `Conversation`.

use std::borrow::Cow;

use async_graphql::dataloader::DataLoader;
use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{Field, Selection};
use async_graphql::registry::Registry;
use async_graphql::{
    Context, ContextSelectionSet, Enum, InputObject, OutputType, Positioned, Result, ServerResult,
    SimpleObject, Value,
};
use chrono::{DateTime, Utc};
use service::delivery::{self, StatusEvent, delivery_event, delivery_status};
use service::headers::message_header;
use service::query::InboxState;
use service::{Direction, Principal, conversation, message};

use super::enums::Channel;
use super::node::Message;
use crate::config::AppConfig;
use crate::graphql::error::gql_err;
use crate::graphql::prefetch::Prefetched;
use crate::graphql::state_loaders::{
    DeliveryHistoryLoader, DeliveryStatusLoader, HeadersLoader, StateLoader,
};

/// Where an outbound message stands with its provider. Statuses move forward only
/// (QUEUED < SENT < DELIVERED < READ); FAILED and UNDELIVERED override those and are final.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Accepted by the provider, not yet sent (also the status of an outbound message no
    /// event has been reported for).
    Queued,
    /// Handed to the carrier or the receiving mail server.
    Sent,
    /// Delivered to the handset or mailbox.
    Delivered,
    /// Read by the recipient, where the channel reports it.
    Read,
    /// The provider could not send it (final).
    Failed,
    /// The carrier could not deliver it (final).
    Undelivered,
}

impl From<delivery_status::DeliveryStatus> for DeliveryStatus {
    fn from(s: delivery_status::DeliveryStatus) -> Self {
        use delivery_status::DeliveryStatus as S;
        match s {
            S::Queued => DeliveryStatus::Queued,
            S::Sent => DeliveryStatus::Sent,
            S::Delivered => DeliveryStatus::Delivered,
            S::Read => DeliveryStatus::Read,
            S::Failed => DeliveryStatus::Failed,
            S::Undelivered => DeliveryStatus::Undelivered,
        }
    }
}

/// One status event, as the provider (or an admin) reported it.
#[derive(SimpleObject, Debug, Clone)]
pub struct DeliveryStatusEvent {
    /// The status reported.
    pub status: DeliveryStatus,
    /// When it happened, per the reporter.
    pub at: DateTime<Utc>,
    /// The provider's error code, if any.
    pub error_code: Option<String>,
    /// The provider's error message, if any.
    pub error_message: Option<String>,
}

impl From<delivery_event::Model> for DeliveryStatusEvent {
    fn from(e: delivery_event::Model) -> Self {
        DeliveryStatusEvent {
            status: e.status.into(),
            at: e.occurred_at,
            error_code: e.error_code,
            error_message: e.error_message,
        }
    }
}

/// A delivery status event to record (admin).
#[derive(InputObject, Debug, Clone)]
pub struct RecordDeliveryStatusInput {
    /// The channel of the provider.
    pub channel: Channel,
    /// The provider's id for the message (the message may be recorded later: the status
    /// waits for it).
    pub provider_message_id: String,
    /// The status, in any letter case (`delivered`, `DELIVERED`).
    pub status: String,
    /// When it happened; the time of recording when omitted. With the status it identifies
    /// the event: recording the same pair again changes nothing.
    pub at: Option<DateTime<Utc>>,
    /// The provider's error code.
    pub error_code: Option<String>,
    /// The provider's error message.
    pub error_message: Option<String>,
}

impl RecordDeliveryStatusInput {
    /// The service's event; an unknown status is `BAD_USER_INPUT` naming `status`.
    pub fn event(self) -> service::Result<StatusEvent> {
        Ok(StatusEvent {
            channel: self.channel.into(),
            status: delivery::parse_status("status", &self.status)?,
            provider_message_id: self.provider_message_id,
            at: self.at,
            error_code: self.error_code,
            error_message: self.error_message,
        })
    }
}

/// What `recordDeliveryStatus` did.
#[derive(SimpleObject, Debug, Clone)]
pub struct RecordDeliveryStatusPayload {
    /// The status of the provider message id after the event.
    pub status: DeliveryStatus,
    /// When that status was reached.
    pub status_at: DateTime<Utc>,
    /// The message, when it is recorded already (null otherwise: the status applies to it
    /// as soon as it is).
    pub message: Option<Message>,
    /// Whether the same event (status and time) had been recorded before: nothing changed.
    pub duplicate: bool,
}

impl From<delivery::StatusRecorded> for RecordDeliveryStatusPayload {
    fn from(r: delivery::StatusRecorded) -> Self {
        RecordDeliveryStatusPayload {
            status: r.status.status.into(),
            status_at: r.status.status_at,
            message: r.message.map(|m| Message(m, None)),
            duplicate: r.duplicate,
        }
    }
}

/// The delivery state of a message: `None` for inbound messages; QUEUED at its recording
/// time for an outbound message no event was reported for.
pub(crate) async fn delivery_of(
    ctx: &Context<'_>,
    m: &message::Model,
) -> Result<
    Option<(
        DeliveryStatus,
        DateTime<Utc>,
        Option<String>,
        Option<String>,
    )>,
> {
    if m.direction == Direction::Inbound {
        return Ok(None);
    }
    let queued = Some((DeliveryStatus::Queued, m.recorded_at, None, None));
    let Some(pid) = &m.provider_message_id else {
        return Ok(queued);
    };
    let found = ctx
        .data::<DataLoader<DeliveryStatusLoader>>()?
        .load_one((m.channel, pid.clone()))
        .await
        .map_err(|e| gql_err(ctx, &e))?;
    Ok(match found {
        Some(s) => Some((s.status.into(), s.status_at, s.error_code, s.error_message)),
        None => queued,
    })
}

/// The delivery events of a message, in arrival order (none for inbound messages).
pub(crate) async fn history_of(
    ctx: &Context<'_>,
    m: &message::Model,
) -> Result<Vec<DeliveryStatusEvent>> {
    let (Direction::Outbound, Some(pid)) = (m.direction, &m.provider_message_id) else {
        return Ok(Vec::new());
    };
    let found = ctx
        .data::<DataLoader<DeliveryHistoryLoader>>()?
        .load_one((m.channel, pid.clone()))
        .await
        .map_err(|e| gql_err(ctx, &e))?;
    Ok(found
        .unwrap_or_default()
        .into_iter()
        .map(Into::into)
        .collect())
}

/// The email headers of a message, if it was recorded with any.
pub(crate) async fn headers_of(
    ctx: &Context<'_>,
    m: &message::Model,
) -> Result<Option<message_header::Model>> {
    if m.channel != service::Channel::Email {
        return Ok(None);
    }
    ctx.data::<DataLoader<HeadersLoader>>()?
        .load_one(m.id)
        .await
        .map_err(|e| gql_err(ctx, &e))
}

/// One inbox's view of a conversation.
#[derive(SimpleObject, Debug, Clone)]
pub struct ViewerState {
    /// The inbox (a normalized participant address).
    pub inbox: String,
    /// The read horizon: every message with a sequence up to this one is read (0: none).
    pub read_up_to: i64,
    /// How many messages after the horizon the inbox did not send itself.
    pub unread_count: i64,
    /// Whether the inbox archived the conversation (a new inbound message unarchives it).
    pub archived: bool,
}

impl ViewerState {
    pub(crate) fn new(
        conversation: &conversation::Model,
        inbox: String,
        state: InboxState,
    ) -> Self {
        ViewerState {
            unread_count: service::state::unread_count(
                conversation,
                state.read_up_to,
                state.sent_after,
            ),
            inbox,
            read_up_to: state.read_up_to,
            archived: state.archived,
        }
    }
}

/// `Conversation.viewerState`'s value: the GraphQL type `ViewerState`, resolved without a
/// future per field when the selection is plain fields (no fragment, no directive), as a
/// page of 50 asks it 50 times; any other selection resolves through the derived object.
/// Its scalar fields cannot fail, so both give the same answer.
pub struct ViewerStateOutput(pub ViewerState);

impl ViewerStateOutput {
    /// The object for a selection of plain fields; `None` for any other selection.
    fn plain(&self, ctx: &ContextSelectionSet<'_>) -> Option<Value> {
        let items = &ctx.item.node.items;
        let mut map = IndexMap::with_capacity(items.len());
        for item in items {
            let Selection::Field(field) = &item.node else {
                return None;
            };
            if !field.node.directives.is_empty() {
                return None;
            }
            let value = match field.node.name.node.as_str() {
                "inbox" => Value::String(self.0.inbox.clone()),
                "readUpTo" => Value::from(self.0.read_up_to),
                "unreadCount" => Value::from(self.0.unread_count),
                "archived" => Value::Boolean(self.0.archived),
                "__typename" => Value::String(Self::type_name().into_owned()),
                _ => return None,
            };
            // A response key selected twice names the same field (validation): the first
            // value stands, as in async-graphql's own merge.
            map.entry(field.node.response_key().node.clone())
                .or_insert(value);
        }
        Some(if map.is_empty() {
            Value::Null
        } else {
            Value::Object(map)
        })
    }
}

impl OutputType for ViewerStateOutput {
    fn type_name() -> Cow<'static, str> {
        <ViewerState as OutputType>::type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        <ViewerState as OutputType>::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        match self.plain(ctx) {
            Some(value) => Ok(value),
            None => OutputType::resolve(&self.0, ctx, field).await,
        }
    }
}

/// The state of `conversation` for `inbox` (as the caller gave it, or `None` for "my one
/// inbox"), checked against the principal (see `service::state::resolve_inbox`).
pub(crate) async fn viewer_state(
    ctx: &Context<'_>,
    conversation: &conversation::Model,
    prefetched: Option<&Prefetched>,
    inbox: Option<&str>,
) -> Result<ViewerState> {
    let principal = ctx.data::<Principal>()?;
    let states = prefetched.and_then(|p| p.states.as_ref());
    // The page normalized this argument once for all its conversations: check it against
    // this one and read the row the page loaded.
    if let (Some(states), Some(raw)) = (states, inbox)
        && let Some(address) = states.argument(raw, conversation.channel)
        && let Some(state) = states.get(conversation.id, address)
    {
        service::state::check_inbox(principal, conversation, address, "inbox")
            .map_err(|e| gql_err(ctx, &e))?;
        return Ok(ViewerState::new(conversation, address.to_owned(), state));
    }
    let config = ctx.data::<AppConfig>()?;
    let inbox = service::state::resolve_inbox(
        principal,
        conversation,
        inbox,
        config.settings.default_region,
        "inbox",
    )
    .map_err(|e| gql_err(ctx, &e))?;
    let state = match states.and_then(|s| s.get(conversation.id, &inbox)) {
        Some(state) => state,
        None => ctx
            .data::<DataLoader<StateLoader>>()?
            .load_one((conversation.id, inbox.clone()))
            .await
            .map_err(|e| gql_err(ctx, &e))?
            .map(|r| InboxState {
                read_up_to: r.read_up_to,
                sent_after: r.sent_after,
                archived: r.archived,
            })
            .unwrap_or_default(),
    };
    Ok(ViewerState::new(conversation, inbox, state))
}
