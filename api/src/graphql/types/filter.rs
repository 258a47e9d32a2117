//! The filters of the connection fields: which conversations, which messages of a thread.

use async_graphql::InputObject;
use chrono::{DateTime, Utc};
use service::query::{ConversationFilter as SvcFilter, MessageFilter as SvcMessageFilter};

use super::enums::{Channel, Direction, MessageKind};

/// Which conversations to list.
#[derive(InputObject, Debug, Clone, Default)]
pub struct ConversationFilter {
    /// Only this channel.
    pub channel: Option<Channel>,
    /// Only conversations with this participant, in any accepted spelling.
    pub participant: Option<String>,
    /// Only conversations whose last activity is at or after this time.
    pub active_since: Option<DateTime<Utc>>,
    /// Only conversations whose last activity is before this time.
    pub active_before: Option<DateTime<Utc>>,
    /// The inbox whose state `archived` and `unread` read: one you act for, in any accepted
    /// spelling; may be left out when you act for exactly one inbox (never in development
    /// mode). With either filter, only that inbox's conversations match.
    pub inbox: Option<String>,
    /// Only conversations archived (true) or not archived (false) for the inbox.
    pub archived: Option<bool>,
    /// Only conversations with (true) or without (false) unread messages for the inbox.
    pub unread: Option<bool>,
    /// Only conversations with a participant whose address starts with this: digits of a
    /// phone number in any spelling (`+1 555 01`, `(804) 55`), or the start of an email
    /// address (`bob@`, `bob@exa`) or of its domain (`@example`); `bob` finds either.
    pub participant_prefix: Option<String>,
}

impl From<ConversationFilter> for SvcFilter {
    fn from(f: ConversationFilter) -> Self {
        SvcFilter {
            channel: f.channel.map(Into::into),
            participant: f.participant,
            // The instants messages are stored at (leap seconds normalized), so that both
            // engines compare the same values.
            active_since: f.active_since.map(service::record::to_micros),
            active_before: f.active_before.map(service::record::to_micros),
            // Resolved against the principal by the resolver
            // (`service::state::resolve_filter_inbox`).
            inbox: None,
            archived: f.archived,
            unread: f.unread,
            participant_prefix: f.participant_prefix,
        }
    }
}

/// Which messages of a thread to list.
#[derive(InputObject, Debug, Clone, Copy, Default)]
pub struct MessageFilter {
    /// Only messages in this direction.
    pub direction: Option<Direction>,
    /// Only messages of this kind.
    pub kind: Option<MessageKind>,
}

impl From<MessageFilter> for SvcMessageFilter {
    fn from(f: MessageFilter) -> Self {
        SvcMessageFilter {
            direction: f.direction.map(Into::into),
            kind: f.kind.map(Into::into),
        }
    }
}
