//! Messaging state types (SPEC section 14): delivery status, its history and the admin
//! input that reports one; an inbox's view of a conversation; and the resolvers' shared
//! lookups for `Message` and `Conversation`.

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Enum, InputObject, Result, SimpleObject};
use chrono::{DateTime, Utc};
use service::delivery::{self, StatusEvent, delivery_event, delivery_status};
use service::headers::message_header;
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

/// The state of `conversation` for `inbox` (as the caller gave it, or `None` for "my one
/// inbox"), checked against the principal (see `service::state::resolve_inbox`).
pub(crate) async fn viewer_state(
    ctx: &Context<'_>,
    conversation: &conversation::Model,
    prefetched: Option<&Prefetched>,
    inbox: Option<&str>,
) -> Result<ViewerState> {
    let principal = ctx.data::<Principal>()?;
    let config = ctx.data::<AppConfig>()?;
    let inbox = service::state::resolve_inbox(
        principal,
        conversation,
        inbox,
        config.settings.default_region,
        "inbox",
    )
    .map_err(|e| gql_err(ctx, &e))?;
    let key = (conversation.id, inbox.clone());
    let row = match prefetched.and_then(|p| p.states.as_ref()) {
        Some((inboxes, rows)) if inboxes.contains(&inbox) => rows.get(&key).cloned(),
        _ => ctx
            .data::<DataLoader<StateLoader>>()?
            .load_one(key)
            .await
            .map_err(|e| gql_err(ctx, &e))?,
    };
    let (read_up_to, sent_after, archived) = row
        .map(|r| (r.read_up_to, r.sent_after, r.archived))
        .unwrap_or((0, 0, false));
    Ok(ViewerState {
        unread_count: service::state::unread_count(conversation, read_up_to, sent_after),
        inbox,
        read_up_to,
        archived,
    })
}
