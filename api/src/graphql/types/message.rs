//! The `Message` type's fields, and a page of messages (`MessageConnection`).

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, ID, Object, Result};
use chrono::{DateTime, Utc};
use service::query::{self, MessageFilter, Page};
use service::{DatabaseConnection, Viewer, conversation, message, snippet};

use super::enums::{Channel, Direction, MessageKind};
use super::node::{Conversation, Message};
use super::page_info::{PageInfo, page_info};
use super::plain::{MessageEdges, MessageNodes};
use super::snippet::snippet_length;
use super::state::{self, DeliveryStatus, DeliveryStatusEvent};
use crate::config::AppConfig;
use crate::graphql::error::{ServiceResultExt, gql_err};
use crate::graphql::ids::{NodeType, encode_id};
use crate::graphql::loaders::{ConversationLoader, MessageLoader, ThreadCountLoader};
use crate::graphql::state_loaders::RfcIdLoader;

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
        let viewer = ctx.data::<Viewer>()?.clone();
        let loader = ctx.data::<DataLoader<ConversationLoader>>()?;
        let c = loader
            .load_one((viewer, id))
            .await
            .map_err(|e| gql_err(ctx, &e))?;
        Ok(c.map(Conversation::new))
    }

    /// Its place in its conversation: 1, 2, 3, .. in the order the conversation received
    /// its messages (gap-free; a message committed later never gets a lower number). Resume
    /// `messageRecorded` after the last one you saw with `afterSequence`. 0 while the message
    /// is unassigned.
    async fn sequence(&self) -> i64 {
        self.0.sequence.unwrap_or(0)
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

    /// Where an outbound message stands with its provider (QUEUED until a status is
    /// reported); null for inbound messages.
    async fn status(&self, ctx: &Context<'_>) -> Result<Option<DeliveryStatus>> {
        Ok(state::delivery_of(ctx, &self.0).await?.map(|d| d.0))
    }

    /// When the current status was reached (the recording time while QUEUED without a
    /// report); null for inbound messages.
    async fn status_at(&self, ctx: &Context<'_>) -> Result<Option<DateTime<Utc>>> {
        Ok(state::delivery_of(ctx, &self.0).await?.map(|d| d.1))
    }

    /// The provider's error code of the current status, if any.
    async fn error_code(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        Ok(state::delivery_of(ctx, &self.0).await?.and_then(|d| d.2))
    }

    /// The provider's error message of the current status, if any.
    async fn error_message(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        Ok(state::delivery_of(ctx, &self.0).await?.and_then(|d| d.3))
    }

    /// Every status event reported for this message, in arrival order (late, lower-rank
    /// events included: they do not move the status).
    async fn status_history(&self, ctx: &Context<'_>) -> Result<Vec<DeliveryStatusEvent>> {
        state::history_of(ctx, &self.0).await
    }

    /// The email's `Subject`, as recorded.
    async fn subject(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        Ok(state::headers_of(ctx, &self.0)
            .await?
            .and_then(|h| h.subject))
    }

    /// The email's `Message-ID`, angle brackets included.
    async fn message_id(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        Ok(state::headers_of(ctx, &self.0)
            .await?
            .and_then(|h| h.rfc_message_id))
    }

    /// The email's `In-Reply-To`: the Message-ID it answers.
    async fn in_reply_to(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        Ok(state::headers_of(ctx, &self.0)
            .await?
            .and_then(|h| h.in_reply_to))
    }

    /// The email's `References`: the thread's Message-IDs, oldest first.
    async fn references(&self, ctx: &Context<'_>) -> Result<Vec<String>> {
        Ok(state::headers_of(ctx, &self.0)
            .await?
            .map(|h| strings(&h.references))
            .unwrap_or_default())
    }

    /// The message this one replies to (by `In-Reply-To`), when it is stored in the same
    /// conversation; null otherwise.
    async fn in_reply_to_message(&self, ctx: &Context<'_>) -> Result<Option<Message>> {
        let Some(conversation_id) = self.0.conversation_id else {
            return Ok(None);
        };
        let Some(rfc) = state::headers_of(ctx, &self.0)
            .await?
            .and_then(|h| h.in_reply_to)
        else {
            return Ok(None);
        };
        let Some(id) = ctx
            .data::<DataLoader<RfcIdLoader>>()?
            .load_one((conversation_id, rfc))
            .await
            .map_err(|e| gql_err(ctx, &e))?
        else {
            return Ok(None);
        };
        let viewer = ctx.data::<Viewer>()?.clone();
        let m = ctx
            .data::<DataLoader<MessageLoader>>()?
            .load_one((viewer, id))
            .await
            .map_err(|e| gql_err(ctx, &e))?;
        Ok(m.map(|m| Message(m, self.1.clone())))
    }
}

/// What `totalCount` of a message list counts.
pub(crate) enum MessageTotal {
    /// One thread; `message_count` is exact, so it answers an unfiltered count.
    Thread {
        conversation_id: i64,
        message_count: i64,
        filter: MessageFilter,
    },
    /// Messages attached to no conversation.
    Unassigned,
}

/// A page of messages, oldest first.
pub struct MessageConnection {
    pub(crate) page: Page<message::Model>,
    /// The conversation of every message on the page, when it is one thread.
    pub(crate) parent: Option<conversation::Model>,
    pub(crate) total: MessageTotal,
    /// The count, once `totalCount` or `totalCountIsExact` asked for it (one count for both).
    pub(crate) count: tokio::sync::OnceCell<query::Count>,
}

impl MessageConnection {
    /// How many messages the list holds, counted once per connection.
    async fn count(&self, ctx: &Context<'_>) -> Result<query::Count> {
        self.count
            .get_or_try_init(|| async {
                match &self.total {
                    MessageTotal::Thread {
                        message_count,
                        filter,
                        ..
                    } if filter.is_empty() => Ok(query::Count::exact(*message_count as u64)),
                    MessageTotal::Thread {
                        conversation_id,
                        filter,
                        ..
                    } => {
                        let loader = ctx.data::<DataLoader<ThreadCountLoader>>()?;
                        let n = loader
                            .load_one((*conversation_id, *filter))
                            .await
                            .map_err(|e| gql_err(ctx, &e))?;
                        Ok(n.unwrap_or(query::Count::exact(0)))
                    }
                    MessageTotal::Unassigned => {
                        let db = ctx.data::<DatabaseConnection>()?;
                        let limit = ctx.data::<AppConfig>()?.settings.limits.max_count_rows;
                        query::count_unassigned_up_to(db, limit).await.gql(ctx)
                    }
                }
            })
            .await
            .copied()
    }
}

/// A page of messages, oldest first.
#[Object]
impl MessageConnection {
    /// The messages of this page, each with its cursor.
    async fn edges(&self) -> MessageEdges<'_> {
        MessageEdges {
            items: &self.page.items,
            parent: &self.parent,
        }
    }

    /// The messages of this page (the edges' nodes, without cursors).
    async fn nodes(&self) -> MessageNodes<'_> {
        MessageNodes {
            items: &self.page.items,
            parent: &self.parent,
        }
    }

    /// Where this page stands in the list.
    async fn page_info(&self) -> PageInfo {
        page_info(&self.page, query::message_cursor)
    }

    /// How many messages the list holds under its filter, across all pages. A thread
    /// without a filter is exact at any size (its conversation's `messageCount`), priced
    /// as any field. A thread with a filter, and `unassignedMessages`, count the matching
    /// rows, at most the server's `--max-count-rows` (10,000 by default): when more match,
    /// this is that limit, a lower bound, and `totalCountIsExact` is false. Such a count
    /// adds the limit / 10 (1,000 by default) to the operation's price, once per connection.
    async fn total_count(&self, ctx: &Context<'_>) -> Result<u64> {
        Ok(self.count(ctx).await?.n)
    }

    /// Whether `totalCount` is exact: true for a thread without a filter, or when counting
    /// found at most `--max-count-rows` matching rows; false when counting stopped at that
    /// limit (then at least `totalCount` messages match). Shares its count with
    /// `totalCount`: asking for both counts (and is priced) once.
    async fn total_count_is_exact(&self, ctx: &Context<'_>) -> Result<bool> {
        Ok(self.count(ctx).await?.exact)
    }
}
