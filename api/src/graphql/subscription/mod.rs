//! The subscription root: live messages and conversations (SPEC section 13), served over
//! WebSocket at `/graphql/ws` (see `crate::http::ws`). The feeds, their resume rule and
//! their bounds are the service's (`service::live`); this maps them to GraphQL.

use std::sync::Arc;

use async_graphql::{Context, ErrorExtensions, ID, InputObject, Object, Result, Subscription};
use futures::{Stream, StreamExt};
use service::live::{
    self, ConversationFeed, ConversationItem, FeedFilter, FeedItem, MessageFeed, Position,
};
use service::{DatabaseConnection, Viewer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ServiceResultExt;
use super::ids::{NodeType, decode_id};
use super::types::enums::Channel;
use super::types::node::{Conversation, Message};
use crate::config::AppConfig;
use crate::error::{ClientError, bad_input};

/// `extensions.code` of a subscription ended because its subscriber fell too far behind:
/// resubscribe (with `afterSequence` = `extensions.lastSequence` to miss nothing).
pub const SUBSCRIPTION_LAGGED: &str = "SUBSCRIPTION_LAGGED";
/// `extensions.code` of a subscription refused because its connection already runs
/// `--max-subscriptions-per-connection`.
pub const TOO_MANY_SUBSCRIPTIONS: &str = "TOO_MANY_SUBSCRIPTIONS";

/// The subscriptions one WebSocket connection may run at once: each running subscription
/// holds a permit until it ends. Put in the connection's data by the WebSocket route.
#[derive(Clone)]
pub struct SubscriptionSlots(pub Arc<Semaphore>);

impl SubscriptionSlots {
    /// Room for `n` subscriptions.
    pub fn new(n: usize) -> Self {
        SubscriptionSlots(Arc::new(Semaphore::new(n)))
    }
}

/// Takes a slot of the connection (none to take outside a WebSocket connection).
fn take_slot(ctx: &Context<'_>) -> Result<Option<OwnedSemaphorePermit>> {
    let Some(slots) = ctx.data_opt::<SubscriptionSlots>() else {
        return Ok(None);
    };
    let limit = ctx
        .data::<AppConfig>()
        .map(|c| c.live.max_subscriptions)
        .unwrap_or_default();
    match slots.0.clone().try_acquire_owned() {
        Ok(permit) => Ok(Some(permit)),
        Err(_) => Err(async_graphql::Error::new(format!(
            "this connection already runs {limit} subscriptions, the most one may \
             (--max-subscriptions-per-connection); complete one first or open another connection"
        ))
        .extend_with(|_, e| e.set("code", TOO_MANY_SUBSCRIPTIONS))),
    }
}

/// Which messages `messageRecorded` delivers. Every field narrows it; none: every message
/// you may see.
#[derive(InputObject, Debug, Clone, Default)]
pub struct MessageRecordedFilter {
    /// Only the messages of this conversation (needed to resume with `afterSequence`).
    pub conversation_id: Option<ID>,
    /// Only this channel.
    pub channel: Option<Channel>,
    /// Only conversations with this participant, in any accepted spelling.
    pub participant: Option<String>,
}

/// Which conversations `conversationUpdated` delivers. Every field narrows it; none: every
/// conversation you may see.
#[derive(InputObject, Debug, Clone, Default)]
pub struct ConversationUpdatedFilter {
    /// Only this channel.
    pub channel: Option<Channel>,
    /// Only conversations with this participant, in any accepted spelling.
    pub participant: Option<String>,
}

/// The service's feed filter, with the global conversation id decoded.
fn feed_filter(
    conversation_id: Option<&ID>,
    channel: Option<Channel>,
    participant: Option<String>,
) -> Result<FeedFilter> {
    let conversation_id = match conversation_id {
        Some(id) => Some(decode_id(NodeType::Conversation, id).ok_or_else(|| {
            bad_input(
                "filter.conversationId",
                "not a conversation id this server issued",
            )
        })?),
        None => None,
    };
    Ok(FeedFilter {
        conversation_id,
        channel: channel.map(Into::into),
        participant,
    })
}

/// A message delivered by `messageFeed`, with the cursor to resume after it.
pub struct MessageEvent {
    message: Message,
    position: Position,
}

/// A message delivered by `messageFeed`, with the cursor to resume after it.
#[Object]
impl MessageEvent {
    /// The message.
    async fn message(&self) -> &Message {
        &self.message
    }

    /// Where the feed stands once you have this message (and every one before it): pass
    /// it as `messageFeed(after:)` to resume with exactly the messages you have not
    /// received. Opaque; valid on this server's database.
    async fn cursor(&self) -> String {
        self.position.encode()
    }
}

/// A conversation delivered by `conversationFeed`, with the cursor to resume after it.
pub struct ConversationEvent {
    conversation: Conversation,
    position: Position,
}

/// A conversation delivered by `conversationFeed`, as it is after a change, with the
/// cursor to resume after it.
#[Object]
impl ConversationEvent {
    /// The conversation.
    async fn conversation(&self) -> &Conversation {
        &self.conversation
    }

    /// Where the feed stands once you have this conversation (and every one before it):
    /// pass it as `conversationFeed(after:)` to resume with exactly the conversations that
    /// changed since. Opaque; valid on this server's database.
    async fn cursor(&self) -> String {
        self.position.encode()
    }
}

/// The `SUBSCRIPTION_LAGGED` error that ends a feed whose subscriber fell behind.
fn lagged(last_sequence: Option<i64>) -> async_graphql::Error {
    lagged_with(last_sequence, None)
}

/// [`lagged`], for `messageFeed`: with the cursor to resume from.
fn lagged_with(last_sequence: Option<i64>, cursor: Option<String>) -> async_graphql::Error {
    let resume = match (last_sequence, &cursor) {
        (_, Some(_)) => "; resubscribe with after: extensions.cursor to receive the rest".into(),
        (Some(n), None) => format!("; resubscribe with afterSequence: {n} to receive the rest"),
        (None, None) => {
            "; resubscribe (per conversation with afterSequence, or with messageFeed and its \
             cursors, to miss nothing)"
                .into()
        }
    };
    async_graphql::Error::new(format!(
        "this subscription fell too far behind the messages being recorded and was ended{resume}"
    ))
    .extend_with(|_, e| {
        e.set("code", SUBSCRIPTION_LAGGED);
        if let Some(n) = last_sequence {
            e.set("lastSequence", n);
        }
        if let Some(c) = &cursor {
            e.set("cursor", c.as_str());
        }
    })
}

/// Live updates.
#[derive(Default)]
pub struct SubscriptionRoot;

/// Live updates, over WebSocket at `/graphql/ws` (graphql-transport-ws; the legacy
/// graphql-ws subprotocol too).
#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// Messages as they are recorded, in each conversation in `sequence` order, from every
    /// server process. Only messages of conversations you may see. With
    /// `filter.conversationId` and `afterSequence`, the stored messages after that sequence
    /// come first, then the live ones, with no gap and no duplicate: resume with the
    /// `sequence` of the last message you received. A subscriber that falls too far behind
    /// is ended with `SUBSCRIPTION_LAGGED` (and `extensions.lastSequence`).
    async fn message_recorded(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Which messages.")] filter: Option<MessageRecordedFilter>,
        #[graphql(
            desc = "Resume after this `sequence` of `filter.conversationId` (0: from its first message); omitted: only new messages."
        )]
        after_sequence: Option<i64>,
    ) -> Result<impl Stream<Item = Result<Message>> + use<>> {
        let slot = take_slot(ctx)?;
        let db = ctx.data::<DatabaseConnection>()?;
        let config = ctx.data::<AppConfig>()?;
        let viewer = ctx.data::<Viewer>()?.clone();
        let filter = filter.unwrap_or_default();
        let filter = feed_filter(
            filter.conversation_id.as_ref(),
            filter.channel,
            filter.participant,
        )?;
        let feed = MessageFeed::open(
            db,
            viewer,
            config.settings.default_region,
            &filter,
            after_sequence,
            config.live.options(),
        )
        .await
        .gql(ctx)?;
        Ok(feed.into_stream().map(move |item| {
            // The slot is given back when the subscription ends.
            let _slot = &slot;
            match item {
                Ok(FeedItem::Message(c, _)) => {
                    let live::Committed {
                        message,
                        conversation,
                        ..
                    } = c.as_ref().clone();
                    Ok(Message(message, Some(conversation)))
                }
                Ok(FeedItem::Lagged { last_sequence, .. }) => Err(lagged(last_sequence)),
                Err(e) => Err(ClientError::from_service(&e, None).into_graphql()),
            }
        }))
    }

    /// Messages as they are recorded, as `messageRecorded` delivers them, each with a
    /// `cursor`: resubscribe with `after` set to the last cursor you received and the
    /// messages you missed come first, then the live ones, with no gap and no duplicate,
    /// over any number of conversations. A cursor names what was delivered, not a
    /// number: a message whose transaction began first but commits last is never skipped.
    /// A cursor more than 100,000 messages behind is refused (`BAD_USER_INPUT`): subscribe
    /// without it and reload. A subscriber that falls too far behind is ended with
    /// `SUBSCRIPTION_LAGGED` and `extensions.cursor`.
    async fn message_feed(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Which messages.")] filter: Option<MessageRecordedFilter>,
        #[graphql(
            desc = "Resume after this `cursor` of a message this feed delivered (with the same filter); omitted: only new messages."
        )]
        after: Option<String>,
    ) -> Result<impl Stream<Item = Result<MessageEvent>> + use<>> {
        let slot = take_slot(ctx)?;
        let db = ctx.data::<DatabaseConnection>()?;
        let config = ctx.data::<AppConfig>()?;
        let viewer = ctx.data::<Viewer>()?.clone();
        let filter = filter.unwrap_or_default();
        let filter = feed_filter(
            filter.conversation_id.as_ref(),
            filter.channel,
            filter.participant,
        )?;
        let feed = MessageFeed::open_tracked(
            db,
            viewer,
            config.settings.default_region,
            &filter,
            after.as_deref(),
            config.live.options(),
        )
        .await
        .gql(ctx)?;
        Ok(feed.into_stream().map(move |item| {
            let _slot = &slot;
            match item {
                Ok(FeedItem::Message(c, position)) => {
                    let live::Committed {
                        message,
                        conversation,
                        ..
                    } = c.as_ref().clone();
                    // A feed opened with `open_tracked` gives every message its position.
                    let position = position.ok_or_else(|| {
                        async_graphql::Error::new(
                            "internal error: a feed message without its position",
                        )
                    })?;
                    Ok(MessageEvent {
                        message: Message(message, Some(conversation)),
                        position,
                    })
                }
                Ok(FeedItem::Lagged { cursor, .. }) => {
                    Err(lagged_with(None, cursor.map(|c| c.encode())))
                }
                Err(e) => Err(ClientError::from_service(&e, None).into_graphql()),
            }
        }))
    }

    /// Conversations as they change (a message recorded: count, last message, snippet),
    /// as they are after the change, from every server process. Only conversations you may
    /// see. A subscriber that falls too far behind is ended with `SUBSCRIPTION_LAGGED`:
    /// resubscribe and reload the list.
    async fn conversation_updated(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Which conversations.")] filter: Option<ConversationUpdatedFilter>,
    ) -> Result<impl Stream<Item = Result<Conversation>> + use<>> {
        let slot = take_slot(ctx)?;
        let db = ctx.data::<DatabaseConnection>()?;
        let config = ctx.data::<AppConfig>()?;
        let viewer = ctx.data::<Viewer>()?.clone();
        let filter = filter.unwrap_or_default();
        let filter = feed_filter(None, filter.channel, filter.participant)?;
        let feed = ConversationFeed::open(
            db,
            viewer,
            config.settings.default_region,
            &filter,
            config.live.options(),
        )
        .await
        .gql(ctx)?;
        Ok(feed.into_stream().map(move |item| {
            let _slot = &slot;
            match item {
                Ok(ConversationItem::Conversation(c, _)) => {
                    Ok(Conversation::new(c.as_ref().clone()))
                }
                Ok(ConversationItem::Lagged { .. }) => Err(lagged(None)),
                Err(e) => Err(ClientError::from_service(&e, None).into_graphql()),
            }
        }))
    }

    /// Conversations as they change, as `conversationUpdated` delivers them, each with a
    /// `cursor`: resubscribe with `after` set to the last cursor you received and every
    /// conversation that changed since comes first, once, as it is now (by id), then the
    /// live changes, with no gap: no change is missed, however the writers' commits
    /// interleave (a message whose transaction began first but commits last included). A
    /// change is a recorded message (read state, archiving and delivery status are not
    /// announced yet). A change that a conversation already delivered shows is not
    /// delivered again. A cursor more than 100,000 messages behind is refused
    /// (`BAD_USER_INPUT`): subscribe without it and reload the list. A subscriber that
    /// falls too far behind is ended with `SUBSCRIPTION_LAGGED` and `extensions.cursor`.
    async fn conversation_feed(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Which conversations.")] filter: Option<ConversationUpdatedFilter>,
        #[graphql(
            desc = "Resume after this `cursor` of a conversation this feed delivered (with the same filter); omitted: only new changes."
        )]
        after: Option<String>,
    ) -> Result<impl Stream<Item = Result<ConversationEvent>> + use<>> {
        let slot = take_slot(ctx)?;
        let db = ctx.data::<DatabaseConnection>()?;
        let config = ctx.data::<AppConfig>()?;
        let viewer = ctx.data::<Viewer>()?.clone();
        let filter = filter.unwrap_or_default();
        let filter = feed_filter(None, filter.channel, filter.participant)?;
        let feed = ConversationFeed::open_tracked(
            db,
            viewer,
            config.settings.default_region,
            &filter,
            after.as_deref(),
            config.live.options(),
        )
        .await
        .gql(ctx)?;
        Ok(feed.into_stream().map(move |item| {
            let _slot = &slot;
            match item {
                Ok(ConversationItem::Conversation(c, position)) => {
                    // A feed opened with `open_tracked` gives every conversation its position.
                    let position = position.ok_or_else(|| {
                        async_graphql::Error::new(
                            "internal error: a feed conversation without its position",
                        )
                    })?;
                    Ok(ConversationEvent {
                        conversation: Conversation::new(c.as_ref().clone()),
                        position,
                    })
                }
                Ok(ConversationItem::Lagged { cursor }) => {
                    Err(lagged_with(None, cursor.map(|c| c.encode())))
                }
                Err(e) => Err(ClientError::from_service(&e, None).into_graphql()),
            }
        }))
    }
}
