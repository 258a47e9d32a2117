//! The mutation root: recording messages here; the messaging state's resolvers in
//! [`state`].

mod state;

use async_graphql::{Context, ID, Object, Result};
use service::{DatabaseConnection, Principal};

use super::error::ServiceResultExt;
use super::types::node::Conversation;
use super::types::record::{RecordMessageInput, RecordMessagePayload};
use super::types::state::{RecordDeliveryStatusInput, RecordDeliveryStatusPayload};
use crate::config::AppConfig;

/// Writes.
#[derive(Default)]
pub struct MutationRoot;

/// Writes.
#[Object(name = "Mutation")]
impl MutationRoot {
    /// Records one message and attaches it, atomically, to the one conversation of its
    /// channel and participants (created on first use). Idempotent by
    /// (channel, providerMessageId). Needs `messages:write`: an OUTBOUND message must be sent
    /// from one of your inboxes, an INBOUND one addressed to one of them (`admin`: any).
    async fn record_message(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The message.")] input: RecordMessageInput,
    ) -> Result<RecordMessagePayload> {
        let db = ctx.data::<DatabaseConnection>()?;
        let config = ctx.data::<AppConfig>()?;
        let principal = ctx.data::<Principal>()?;
        let headers = input.headers();
        let input = input.into();
        principal
            .authorize_write(&input, config.settings.default_region)
            .gql(ctx)?;
        tracing::info!(sub = %principal.sub, "recordMessage");
        service::record::record_message_with(db, &config.settings, input, headers)
            .await
            .gql(ctx)
            .map(Into::into)
    }

    /// Records a delivery status event for a provider message id (`admin`), as the status
    /// webhooks do. The message may be recorded later: the status waits for it.
    async fn record_delivery_status(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The event.")] input: RecordDeliveryStatusInput,
    ) -> Result<RecordDeliveryStatusPayload> {
        state::record_delivery_status(ctx, input).await
    }

    /// Archives the conversation for one inbox; a new inbound message to that inbox
    /// unarchives it. Returns the conversation.
    async fn archive_conversation(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The conversation's id.")] conversation_id: ID,
        #[graphql(
            desc = "A participant you act for; may be left out when you act for exactly one participant (never in development mode)."
        )]
        inbox: Option<String>,
    ) -> Result<Conversation> {
        state::set_archived(ctx, &conversation_id, inbox, true).await
    }

    /// Unarchives the conversation for one inbox. Returns the conversation.
    async fn unarchive_conversation(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The conversation's id.")] conversation_id: ID,
        #[graphql(
            desc = "A participant you act for; may be left out when you act for exactly one participant (never in development mode)."
        )]
        inbox: Option<String>,
    ) -> Result<Conversation> {
        state::set_archived(ctx, &conversation_id, inbox, false).await
    }

    /// Marks the conversation read for one inbox, up to a message sequence (the latest when
    /// omitted). The horizon only moves forward here: marking up to an earlier sequence
    /// changes nothing. Returns the conversation.
    async fn mark_conversation_read(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The conversation's id.")] conversation_id: ID,
        #[graphql(
            desc = "A participant you act for; may be left out when you act for exactly one participant (never in development mode)."
        )]
        inbox: Option<String>,
        #[graphql(
            desc = "Every message up to this sequence counts as read (0 to the conversation's `lastSequence`); the latest when omitted."
        )]
        up_to_sequence: Option<i32>,
    ) -> Result<Conversation> {
        let mark = service::state::Mark::ReadUpTo(up_to_sequence.map(i64::from));
        state::mark(ctx, &conversation_id, inbox, mark).await
    }

    /// Marks the conversation unread for one inbox from a message sequence on: the horizon
    /// moves back to just before it (never forward). Returns the conversation.
    async fn mark_conversation_unread(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The conversation's id.")] conversation_id: ID,
        #[graphql(
            desc = "A participant you act for; may be left out when you act for exactly one participant (never in development mode)."
        )]
        inbox: Option<String>,
        #[graphql(
            desc = "The first message sequence to count as unread (1 to the conversation's `lastSequence`)."
        )]
        from_sequence: i32,
    ) -> Result<Conversation> {
        let mark = service::state::Mark::UnreadFrom(i64::from(from_sequence));
        state::mark(ctx, &conversation_id, inbox, mark).await
    }
}
