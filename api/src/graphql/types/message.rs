//! The `Message` type.

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, ID, Object, Result};
use chrono::{DateTime, Utc};
use service::{conversation, message, snippet};

use super::conversation::snippet_length;
use super::{Channel, Conversation, Direction, MessageKind};
use crate::graphql::gql_err;
use crate::graphql::ids::{NodeType, encode_id};
use crate::graphql::loaders::ConversationLoader;

/// One message, inbound or outbound, with its conversation when the caller already has it
/// (a thread page, a conversation's last message), so `conversation` costs nothing then.
#[derive(Debug, Clone)]
pub struct Message(pub message::Model, pub Option<conversation::Model>);

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// One message, inbound or outbound.
#[Object]
impl Message {
    /// Global id, usable with `node(id:)`.
    pub(crate) async fn id(&self) -> ID {
        encode_id(NodeType::Message, self.0.id)
    }

    /// The conversation it belongs to; null while unassigned (see `assignmentError`).
    async fn conversation(&self, ctx: &Context<'_>) -> Result<Option<Conversation>> {
        let Some(id) = self.0.conversation_id else {
            return Ok(None);
        };
        if let Some(parent) = self.1.as_ref().filter(|c| c.id == id) {
            return Ok(Some(Conversation::new(parent.clone())));
        }
        let loader = ctx.data::<DataLoader<ConversationLoader>>()?;
        let c = loader.load_one(id).await.map_err(|e| gql_err(ctx, &e))?;
        Ok(c.map(Conversation::new))
    }

    /// The channel it travelled on.
    async fn channel(&self) -> Channel {
        self.0.channel.into()
    }

    /// SMS, MMS or EMAIL.
    async fn kind(&self) -> MessageKind {
        self.0.kind.into()
    }

    /// Inbound or outbound.
    async fn direction(&self) -> Direction {
        self.0.direction.into()
    }

    /// The sender, normalized (as given when it could not be normalized).
    async fn from(&self) -> &str {
        self.0.from_address.as_deref().unwrap_or(&self.0.from_raw)
    }

    /// The recipients, normalized (as given when they could not be normalized).
    async fn to(&self) -> Vec<String> {
        strings(self.0.to_addresses.as_ref().unwrap_or(&self.0.to_raw))
    }

    /// The sender exactly as the caller or provider gave it.
    async fn from_raw(&self) -> &str {
        &self.0.from_raw
    }

    /// The recipients exactly as the caller or provider gave them.
    async fn to_raw(&self) -> Vec<String> {
        strings(&self.0.to_raw)
    }

    /// The body as given: plain text, or HTML for some emails.
    async fn body(&self) -> &str {
        &self.0.body
    }

    /// Attachment URLs.
    async fn attachments(&self) -> Vec<String> {
        strings(&self.0.attachments)
    }

    /// The provider's id for this message (the idempotency key), if any.
    async fn provider_message_id(&self) -> Option<&str> {
        self.0.provider_message_id.as_deref()
    }

    /// When the message was sent (its own timestamp; receipt time when none was given).
    async fn sent_at(&self) -> DateTime<Utc> {
        self.0.sent_at
    }

    /// When parley stored it.
    async fn recorded_at(&self) -> DateTime<Utc> {
        self.0.recorded_at
    }

    /// A text preview of the body: HTML reduced to text, whitespace collapsed, cut at a
    /// user-perceived character boundary with `…`.
    async fn snippet(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "At most this many user-perceived characters (1..=4096); the server's snippet length when omitted."
        )]
        length: Option<i32>,
    ) -> Result<String> {
        let (length, _) = snippet_length(ctx, length)?;
        Ok(snippet::message_snippet(
            self.0.channel,
            &self.0.body,
            length,
        ))
    }

    /// Why the message is not attached to a conversation (its addresses did not
    /// normalize); null when it is attached.
    async fn assignment_error(&self) -> Option<&str> {
        self.0.assignment_error.as_deref()
    }
}
