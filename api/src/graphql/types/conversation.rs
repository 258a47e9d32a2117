//! The `Conversation` type's fields, and a page of conversations (`ConversationConnection`).

use std::sync::Arc;

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, ID, Object, Result};
use chrono::{DateTime, Utc};
use service::cursor::CursorKind;
use service::query::{self, ConversationFilter, MessageFilter as SvcMessageFilter, Page};
use service::{DatabaseConnection, Viewer, conversation, normalize, snippet};

use super::enums::Channel;
use super::filter::MessageFilter;
use super::message::{MessageConnection, MessageTotal};
use super::node::{Conversation, Message};
use super::page_info::{PageInfo, page_info};
use super::plain::{ConversationEdges, ConversationNodes};
use super::snippet::snippet_length;
use super::state::{self, ViewerStateOutput};
use crate::config::AppConfig;
use crate::graphql::error::{ServiceResultExt, gql_err};
use crate::graphql::ids::{NodeType, encode_id};
use crate::graphql::loaders::{MessageLoader, ThreadPageKey, ThreadPageLoader};
use crate::graphql::paging::page_window;
use crate::graphql::prefetch::Prefetched;
use crate::graphql::state_loaders::SubjectLoader;

/// A conversation: one channel and one set of participants, with all their messages.
#[Object]
impl Conversation {
    /// Global id, usable with `node(id:)`.
    pub(crate) async fn id(&self) -> ID {
        encode_id(NodeType::Conversation, self.0.id)
    }

    /// The channel every message of this conversation travels on.
    async fn channel(&self) -> Channel {
        self.0.channel.into()
    }

    /// The normalized participant addresses, sorted.
    async fn participants(&self) -> Vec<String> {
        normalize::split_participants_key(&self.0.participants_key)
    }

    /// A stable hash of channel and participants: safe to log and to share (it does not
    /// reveal the addresses), and the same forever for the same participants.
    async fn key(&self) -> String {
        let channel = self.0.channel;
        normalize::conversation_key(channel, &self.0.participants_key)
    }

    /// Exactly how many messages the conversation holds.
    async fn message_count(&self) -> i64 {
        self.0.message_count
    }

    /// The `sequence` of the conversation's most recently received message (0 before the
    /// first): the position to resume `messageRecorded` from.
    async fn last_sequence(&self) -> i64 {
        self.0.last_sequence
    }

    /// When its earliest message was sent.
    async fn first_message_at(&self) -> DateTime<Utc> {
        self.0.first_message_at
    }

    /// When its latest message was sent: the conversation's last activity.
    async fn last_message_at(&self) -> DateTime<Utc> {
        self.0.last_message_at
    }

    /// When the conversation was created in parley.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// A preview of the latest message: text only, whitespace collapsed, cut at a
    /// user-perceived character boundary with `…`.
    async fn snippet(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "At most this many user-perceived characters (1..=4096); the server's snippet length when omitted or larger."
        )]
        length: Option<i32>,
    ) -> Result<String> {
        let (length, asked) = snippet_length(ctx, length)?;
        if !asked {
            return Ok(self.0.snippet.clone());
        }
        Ok(snippet::snippet(&self.0.snippet, false, length))
    }

    /// The latest message by (sentAt, id).
    async fn last_message(&self, ctx: &Context<'_>) -> Result<Option<Message>> {
        let Some(id) = self.0.last_message_id else {
            return Ok(None);
        };
        if let Some(m) = self.1.as_ref().and_then(|p| p.last_messages.get(&id)) {
            return Ok(Some(Message(m.clone(), Some(self.0.clone()))));
        }
        let viewer = ctx.data::<Viewer>()?.clone();
        let loader = ctx.data::<DataLoader<MessageLoader>>()?;
        let m = loader
            .load_one((viewer, id))
            .await
            .map_err(|e| gql_err(ctx, &e))?;
        Ok(m.map(|m| Message(m, Some(self.0.clone()))))
    }

    /// The conversation's messages, oldest first. A chat view asks for `last: 20` and
    /// pages back with `before`.
    async fn messages(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "Page forward: at most this many messages after `after` (1 to the server's max page size, 100 by default)."
        )]
        first: Option<i32>,
        #[graphql(desc = "Cursor to continue after (from `pageInfo.endCursor`).")] after: Option<
            String,
        >,
        #[graphql(
            desc = "Page backward: at most this many messages before `before` (1 to the server's max page size, 100 by default)."
        )]
        last: Option<i32>,
        #[graphql(desc = "Cursor to continue before (from `pageInfo.startCursor`).")]
        before: Option<String>,
        #[graphql(desc = "Only messages that match.")] filter: Option<MessageFilter>,
    ) -> Result<MessageConnection> {
        let window = page_window(ctx, CursorKind::Message, first, after, last, before)?;
        let filter: SvcMessageFilter = filter.unwrap_or_default().into();
        let key = ThreadPageKey {
            conversation_id: self.0.id,
            filter,
            window,
        };
        let prefetched = self.1.as_ref().and_then(|p| p.thread_page(&key));
        let page = match prefetched {
            Some(page) => page,
            None => ctx
                .data::<DataLoader<ThreadPageLoader>>()?
                .load_one(key)
                .await
                .map_err(|e| gql_err(ctx, &e))?
                .unwrap_or(service::query::Page {
                    items: Vec::new(),
                    has_next_page: false,
                    has_previous_page: false,
                }),
        };
        Ok(MessageConnection {
            page,
            parent: Some(self.0.clone()),
            total: MessageTotal::Thread {
                conversation_id: self.0.id,
                message_count: self.0.message_count,
                filter,
            },
            count: Default::default(),
        })
    }

    /// For email: the subject of the first message that has one, without `Re:`/`Fwd:`
    /// markers; null otherwise.
    async fn subject(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        if self.0.channel != service::Channel::Email {
            return Ok(None);
        }
        ctx.data::<DataLoader<SubjectLoader>>()?
            .load_one(self.0.id)
            .await
            .map_err(|e| gql_err(ctx, &e))
    }

    /// One inbox's view of the conversation: read horizon, unread count, archived. The
    /// inbox must be a participant you act for (`admin`: any participant); leave it out
    /// when you act for exactly one participant.
    async fn viewer_state(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A participant address you act for, in any accepted spelling.")]
        inbox: Option<String>,
    ) -> Result<ViewerStateOutput> {
        state::viewer_state(ctx, &self.0, self.1.as_deref(), inbox.as_deref())
            .await
            .map(ViewerStateOutput)
    }

    /// How many messages after the inbox's read horizon it did not send itself: exact,
    /// and O(1) per conversation.
    async fn unread_count(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A participant address you act for, in any accepted spelling.")]
        inbox: String,
    ) -> Result<i64> {
        Ok(
            state::viewer_state(ctx, &self.0, self.1.as_deref(), Some(&inbox))
                .await?
                .unread_count,
        )
    }
}

/// A page of conversations, most recent activity first.
pub struct ConversationConnection {
    pub(crate) page: Page<conversation::Model>,
    pub(crate) prefetched: Option<Arc<Prefetched>>,
    pub(crate) filter: ConversationFilter,
    /// The count, once `totalCount` or `totalCountIsExact` asked for it (one count for both).
    pub(crate) count: tokio::sync::OnceCell<query::Count>,
}

impl ConversationConnection {
    /// How many conversations match, counted once per connection.
    async fn count(&self, ctx: &Context<'_>) -> Result<query::Count> {
        self.count
            .get_or_try_init(|| async {
                let db = ctx.data::<DatabaseConnection>()?;
                let config = ctx.data::<AppConfig>()?;
                let viewer = ctx.data::<Viewer>()?;
                query::count_conversations(
                    db,
                    viewer,
                    config.settings.default_region,
                    &self.filter,
                    config.settings.limits.max_count_rows,
                )
                .await
                .gql(ctx)
            })
            .await
            .copied()
    }
}

/// A page of conversations, most recent activity first.
#[Object]
impl ConversationConnection {
    /// The conversations of this page, each with its cursor.
    async fn edges(&self) -> ConversationEdges<'_> {
        ConversationEdges {
            items: &self.page.items,
            prefetched: &self.prefetched,
        }
    }

    /// The conversations of this page (the edges' nodes, without cursors).
    async fn nodes(&self) -> ConversationNodes<'_> {
        ConversationNodes {
            items: &self.page.items,
            prefetched: &self.prefetched,
        }
    }

    /// Where this page stands in the list.
    async fn page_info(&self) -> PageInfo {
        page_info(&self.page, query::conversation_cursor)
    }

    /// How many conversations match the filter, across all pages. With no filter, a
    /// `channel` or a `participant` filter alone, and for a principal acting for one inbox,
    /// it is read from counters kept with every write: exact at any size, in constant time,
    /// priced as any field. Other filters count the matching rows, at most the server's
    /// `--max-count-rows` (10,000 by default): when more match, this is that limit, a lower
    /// bound, and `totalCountIsExact` is false. Such a count adds the limit / 10 (1,000 by
    /// default) to the operation's price, once per connection.
    async fn total_count(&self, ctx: &Context<'_>) -> Result<u64> {
        Ok(self.count(ctx).await?.n)
    }

    /// Whether `totalCount` is exact: true when it was read from counters, or when counting
    /// found at most `--max-count-rows` matching rows; false when counting stopped at that
    /// limit (then at least `totalCount` conversations match). Shares its count with
    /// `totalCount`: asking for both counts (and is priced) once.
    async fn total_count_is_exact(&self, ctx: &Context<'_>) -> Result<bool> {
        Ok(self.count(ctx).await?.exact)
    }
}
