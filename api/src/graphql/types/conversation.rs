//! The `Conversation` type.

use std::sync::Arc;

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, ID, InputObject, Object, Result};
use chrono::{DateTime, Utc};
use service::cursor::CursorKind;
use service::query::MessageFilter as SvcMessageFilter;
use service::{conversation, normalize, snippet};

use super::connection::{MessageConnection, MessageTotal};
use super::{Channel, Direction, Message, MessageKind};
use crate::AppConfig;
use crate::graphql::gql_err;
use crate::graphql::ids::{NodeType, encode_id};
use crate::graphql::loaders::{MessageLoader, ThreadPageKey, ThreadPageLoader};
use crate::graphql::prefetch::Prefetched;
use crate::graphql::query::page_window;

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

/// The snippet length a `length` argument asks for, validated (1..=4096), or the default.
pub(crate) fn snippet_length(ctx: &Context<'_>, length: Option<i32>) -> Result<(usize, bool)> {
    let configured = ctx.data::<AppConfig>()?.settings.snippet_length;
    match length {
        None => Ok((configured, false)),
        Some(n) if (1..=snippet::MAX_SNIPPET_LENGTH as i32).contains(&n) => Ok((n as usize, true)),
        Some(n) => Err(crate::error::bad_input(
            "length",
            format!(
                "length must be between 1 and {} (got {n})",
                snippet::MAX_SNIPPET_LENGTH
            ),
        )),
    }
}

/// Page-size complexity: a connection costs its children once per item it may return.
pub(crate) fn page_complexity(first: Option<i32>, last: Option<i32>, child: usize) -> usize {
    let n = first.or(last).unwrap_or(20).clamp(1, 100) as usize;
    n.saturating_mul(child).saturating_add(1)
}

/// A conversation: one channel and one set of participants, with all their messages.
#[derive(Debug, Clone)]
pub struct Conversation(
    pub conversation::Model,
    /// What the page this conversation came on already loaded for all its conversations.
    pub Option<Arc<Prefetched>>,
);

impl Conversation {
    /// A conversation with nothing prefetched.
    pub fn new(model: conversation::Model) -> Self {
        Conversation(model, None)
    }
}

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
        let loader = ctx.data::<DataLoader<MessageLoader>>()?;
        let m = loader.load_one(id).await.map_err(|e| gql_err(ctx, &e))?;
        Ok(m.map(|m| Message(m, Some(self.0.clone()))))
    }

    /// The conversation's messages, oldest first. A chat view asks for `last: 20` and
    /// pages back with `before`.
    #[graphql(complexity = "page_complexity(first, last, child_complexity)")]
    async fn messages(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page forward: at most this many messages (1..=100) after `after`.")]
        first: Option<i32>,
        #[graphql(desc = "Cursor to continue after (from `pageInfo.endCursor`).")] after: Option<
            String,
        >,
        #[graphql(desc = "Page backward: at most this many messages (1..=100) before `before`.")]
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
        })
    }
}
