//! Relay Cursor Connections: edges with cursors, `nodes`, `pageInfo` and a lazily counted
//! `totalCount` (counted only when asked for).

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Object, Result, SimpleObject};
use service::query::{self, ConversationFilter, MessageFilter, Page};
use service::{DatabaseConnection, conversation, message};

use std::sync::Arc;

use super::{Conversation, Message};
use crate::AppConfig;
use crate::graphql::loaders::ThreadCountLoader;
use crate::graphql::prefetch::Prefetched;
use crate::graphql::{ServiceResultExt, gql_err};

/// Where a page stands in its list (Relay Cursor Connections spec).
#[derive(SimpleObject, Debug, Clone)]
pub struct PageInfo {
    /// More items follow this page. Exact when paging forward (`first`); when paging
    /// backward it is true when `before` was given.
    pub has_next_page: bool,
    /// More items precede this page. Exact when paging backward (`last`); when paging
    /// forward it is true when `after` was given.
    pub has_previous_page: bool,
    /// The cursor of the first item, to page backward from (`before`).
    pub start_cursor: Option<String>,
    /// The cursor of the last item, to page forward from (`after`).
    pub end_cursor: Option<String>,
}

fn page_info<T>(page: &Page<T>, cursor: impl Fn(&T) -> String) -> PageInfo {
    PageInfo {
        has_next_page: page.has_next_page,
        has_previous_page: page.has_previous_page,
        start_cursor: page.items.first().map(&cursor),
        end_cursor: page.items.last().map(&cursor),
    }
}

/// A conversation with its cursor.
#[derive(SimpleObject)]
pub struct ConversationEdge {
    /// Opaque position of this conversation in the list; pass it as `after` or `before`.
    pub cursor: String,
    /// The conversation.
    pub node: Conversation,
}

/// A page of conversations, most recent activity first.
pub struct ConversationConnection {
    pub(crate) page: Page<conversation::Model>,
    pub(crate) prefetched: Option<Arc<Prefetched>>,
    pub(crate) filter: ConversationFilter,
}

/// A page of conversations, most recent activity first.
#[Object]
impl ConversationConnection {
    /// The conversations of this page, each with its cursor.
    async fn edges(&self) -> Vec<ConversationEdge> {
        self.page
            .items
            .iter()
            .map(|c| ConversationEdge {
                cursor: query::conversation_cursor(c),
                node: Conversation(c.clone(), self.prefetched.clone()),
            })
            .collect()
    }

    /// The conversations of this page (the edges' nodes, without cursors).
    async fn nodes(&self) -> Vec<Conversation> {
        self.page
            .items
            .iter()
            .map(|c| Conversation(c.clone(), self.prefetched.clone()))
            .collect()
    }

    /// Where this page stands in the list.
    async fn page_info(&self) -> PageInfo {
        page_info(&self.page, query::conversation_cursor)
    }

    /// How many conversations match the filter, across all pages.
    async fn total_count(&self, ctx: &Context<'_>) -> Result<u64> {
        let db = ctx.data::<DatabaseConnection>()?;
        let config = ctx.data::<AppConfig>()?;
        query::count_conversations(db, config.settings.default_region, &self.filter)
            .await
            .gql(ctx)
    }
}

/// A message with its cursor.
#[derive(SimpleObject)]
pub struct MessageEdge {
    /// Opaque position of this message in the list; pass it as `after` or `before`.
    pub cursor: String,
    /// The message.
    pub node: Message,
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
}

/// A page of messages, oldest first.
#[Object]
impl MessageConnection {
    /// The messages of this page, each with its cursor.
    async fn edges(&self) -> Vec<MessageEdge> {
        self.page
            .items
            .iter()
            .map(|m| MessageEdge {
                cursor: query::message_cursor(m),
                node: Message(m.clone(), self.parent.clone()),
            })
            .collect()
    }

    /// The messages of this page (the edges' nodes, without cursors).
    async fn nodes(&self) -> Vec<Message> {
        self.page
            .items
            .iter()
            .map(|m| Message(m.clone(), self.parent.clone()))
            .collect()
    }

    /// Where this page stands in the list.
    async fn page_info(&self) -> PageInfo {
        page_info(&self.page, query::message_cursor)
    }

    /// How many messages the list holds under its filter, across all pages.
    async fn total_count(&self, ctx: &Context<'_>) -> Result<u64> {
        match &self.total {
            MessageTotal::Thread {
                message_count,
                filter,
                ..
            } if filter.is_empty() => Ok(*message_count as u64),
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
                Ok(n.unwrap_or(0))
            }
            MessageTotal::Unassigned => {
                let db = ctx.data::<DatabaseConnection>()?;
                query::count_unassigned(db).await.gql(ctx)
            }
        }
    }
}
