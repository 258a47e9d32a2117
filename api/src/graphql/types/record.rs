//! `recordMessage`'s input and payload.

use async_graphql::{InputObject, SimpleObject};
use chrono::{DateTime, Utc};
use service::headers::EmailHeaders;
use service::record::{NewMessage, Recorded};

use super::enums::{Channel, Direction, MessageKind};
use super::node::{Conversation, ConversationEdge, Message, MessageEdge};

/// A message to record. Addresses may be spelled any accepted way; they are normalized.
#[derive(InputObject, Debug, Clone)]
pub struct RecordMessageInput {
    /// The channel: EMAIL or SMS (SMS covers SMS and MMS).
    pub channel: Channel,
    /// SMS, MMS or EMAIL; defaults to the channel's own (SMS or EMAIL).
    pub kind: Option<MessageKind>,
    /// INBOUND (from a provider) or OUTBOUND (sent by us). Inbound messages whose
    /// addresses do not normalize are still stored, unassigned; outbound ones are rejected.
    pub direction: Direction,
    /// The sender address.
    pub from: String,
    /// The recipient addresses (at least one; 50 at most by default).
    pub to: Vec<String>,
    /// The body: plain text, or HTML for email (1 MiB at most by default).
    pub body: String,
    /// Attachment URLs, http(s) (10 at most by default).
    pub attachments: Option<Vec<String>>,
    /// The provider's message id: recording the same id twice on a channel stores the
    /// message once and answers `duplicate: true` with the original.
    pub provider_message_id: Option<String>,
    /// When the message was sent; the time of recording when omitted.
    pub sent_at: Option<DateTime<Utc>>,
    /// EMAIL only: the `Subject` header (998 bytes at most, no line breaks).
    pub subject: Option<String>,
    /// EMAIL only: the `Message-ID` header, one angle-bracketed `<left@right>`.
    pub message_id: Option<String>,
    /// EMAIL only: the `In-Reply-To` header, one angle-bracketed `<left@right>`.
    pub in_reply_to: Option<String>,
    /// EMAIL only: the `References` header's ids, oldest first (100 at most). Headers are
    /// stored and exposed; they never choose the conversation.
    pub references: Option<Vec<String>>,
}

impl RecordMessageInput {
    /// The email threading headers given with the message.
    pub fn headers(&self) -> EmailHeaders {
        EmailHeaders {
            subject: self.subject.clone(),
            message_id: self.message_id.clone(),
            in_reply_to: self.in_reply_to.clone(),
            references: self.references.clone().unwrap_or_default(),
        }
    }
}

impl From<RecordMessageInput> for NewMessage {
    fn from(i: RecordMessageInput) -> Self {
        NewMessage {
            channel: i.channel.into(),
            kind: i.kind.map(Into::into),
            direction: i.direction.into(),
            from: i.from,
            to: i.to,
            body: i.body,
            attachments: i.attachments.unwrap_or_default(),
            provider_message_id: i.provider_message_id,
            sent_at: i.sent_at,
        }
    }
}

/// What `recordMessage` stored.
#[derive(SimpleObject, Debug, Clone)]
pub struct RecordMessagePayload {
    /// The stored message (the original one when `duplicate`).
    pub message: Message,
    /// Its conversation after the write; null when the message is unassigned (see
    /// `message.assignmentError`).
    pub conversation: Option<Conversation>,
    /// Whether this call created the conversation.
    pub conversation_created: bool,
    /// Whether this provider id was already recorded: nothing new was stored.
    pub duplicate: bool,
    /// The message as an edge of its conversation's `messages`, for clients that insert it
    /// into a cached thread (Relay's `@appendEdge`); null when the message is unassigned.
    pub message_edge: Option<MessageEdge>,
    /// The conversation as an edge of `conversations`, for clients that move it to the top
    /// of a cached list (Relay's `@prependEdge`); null when the message is unassigned.
    pub conversation_edge: Option<ConversationEdge>,
}

impl From<Recorded> for RecordMessagePayload {
    fn from(r: Recorded) -> Self {
        let message_edge = r.conversation.as_ref().map(|c| MessageEdge {
            cursor: service::query::message_cursor(&r.message),
            node: Message(r.message.clone(), Some(c.clone())),
        });
        let conversation_edge = r.conversation.as_ref().map(|c| ConversationEdge {
            cursor: service::query::conversation_cursor(c),
            node: Conversation::new(c.clone()),
        });
        RecordMessagePayload {
            message_edge,
            conversation_edge,
            message: Message(r.message, r.conversation.clone()),
            conversation: r.conversation.map(Conversation::new),
            conversation_created: r.conversation_created,
            duplicate: r.duplicate,
        }
    }
}
