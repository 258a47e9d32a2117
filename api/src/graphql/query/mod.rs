//! The query root.

use std::sync::Arc;

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, ID, Object, Result};
use service::cursor::CursorKind;
use service::query::{self, ConversationFilter as SvcFilter, MessageScope};
use service::{DatabaseConnection, Principal, Viewer};

use super::error::{ServiceResultExt, gql_err};
use super::ids::{NodeType, decode_any, decode_id};
use super::loaders::{ConversationLoader, MessageLoader};
use super::paging::page_window;
use super::prefetch::{conversation_page, prefetch_one, wanted_thread};
use super::types::conversation::ConversationConnection;
use super::types::enums::Channel;
use super::types::filter::ConversationFilter;
use super::types::message::{MessageConnection, MessageTotal};
use super::types::node::{Conversation, Message, Node};
use super::types::normalized::NormalizedAddresses;
use super::types::search::{MessageSearchFilter, SearchMessageConnection};
use crate::config::AppConfig;

mod search;

/// Reads.
#[derive(Default)]
pub struct QueryRoot;

async fn load_conversation(ctx: &Context<'_>, id: i64) -> Result<Option<Conversation>> {
    let viewer = ctx.data::<Viewer>()?.clone();
    let loader = ctx.data::<DataLoader<ConversationLoader>>()?;
    let c = loader
        .load_one((viewer, id))
        .await
        .map_err(|e| gql_err(ctx, &e))?;
    Ok(c.map(Conversation::new))
}

async fn load_message(ctx: &Context<'_>, id: i64) -> Result<Option<Message>> {
    let viewer = ctx.data::<Viewer>()?.clone();
    let loader = ctx.data::<DataLoader<MessageLoader>>()?;
    let m = loader
        .load_one((viewer, id))
        .await
        .map_err(|e| gql_err(ctx, &e))?;
    Ok(m.map(|m| Message(m, None)))
}

async fn load_node(ctx: &Context<'_>, id: &str) -> Result<Option<Node>> {
    Ok(match decode_any(id) {
        Some((NodeType::Conversation, n)) => {
            load_conversation(ctx, n).await?.map(Node::Conversation)
        }
        Some((NodeType::Message, n)) => load_message(ctx, n).await?.map(Node::Message),
        None => None,
    })
}

/// Reads.
#[Object(name = "Query")]
impl QueryRoot {
    /// Conversations, most recent activity first (ties: newer id first), as a Relay
    /// connection with keyset cursors.
    async fn conversations(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "Page forward: at most this many conversations after `after` (1 to the server's max page size, 100 by default)."
        )]
        first: Option<i32>,
        #[graphql(desc = "Cursor to continue after (from `pageInfo.endCursor`).")] after: Option<
            String,
        >,
        #[graphql(
            desc = "Page backward: at most this many conversations before `before` (1 to the server's max page size, 100 by default)."
        )]
        last: Option<i32>,
        #[graphql(desc = "Cursor to continue before (from `pageInfo.startCursor`).")]
        before: Option<String>,
        #[graphql(desc = "Only conversations that match.")] filter: Option<ConversationFilter>,
    ) -> Result<ConversationConnection> {
        let db = ctx.data::<DatabaseConnection>()?;
        let config = ctx.data::<AppConfig>()?;
        let window = page_window(ctx, CursorKind::Conversation, first, after, last, before)?;
        let filter = filter.unwrap_or_default();
        let inbox = filter.inbox.clone();
        let mut filter: SvcFilter = filter.into();
        service::state::resolve_filter_inbox(
            ctx.data::<Principal>()?,
            &mut filter,
            inbox.as_deref(),
            config.settings.default_region,
        )
        .gql(ctx)?;
        let viewer = ctx.data::<Viewer>()?;
        let (page, prefetched) = conversation_page(
            ctx,
            db,
            viewer,
            config.settings.default_region,
            &filter,
            &window,
        )
        .await?;
        Ok(ConversationConnection {
            page,
            filter,
            prefetched,
            count: Default::default(),
        })
    }

    /// Messages whose text matches `query`, newest first (ties: newer id first), among
    /// the conversations visible to you, as a Relay connection with keyset cursors. The
    /// query language: words (all must match), `"exact phrase"`, `-excluded`, `OR`
    /// between alternatives, and prefixes `refu*`; accents and case are ignored.
    #[allow(clippy::too_many_arguments)]
    async fn search_messages(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "What to search for (at most 256 characters and 16 words); see the field's description."
        )]
        query: String,
        #[graphql(desc = "Only messages that also match this.")] filter: Option<
            MessageSearchFilter,
        >,
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
    ) -> Result<SearchMessageConnection> {
        search::search_messages(ctx, query, filter, first, after, last, before).await
    }

    /// A conversation by global id; null when there is none or it is not visible to you.
    async fn conversation(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Its global id.")] id: ID,
    ) -> Result<Option<Conversation>> {
        let Some(n) = decode_id(NodeType::Conversation, &id) else {
            return Ok(None);
        };
        // Directly, not through the loader (a lone root field has no siblings to batch
        // with), with its last message or thread page loaded ahead: one after the other, on
        // one connection (each connection given back to the pool costs a round trip).
        let db = query::OneConnection::warm(
            ctx.data::<DatabaseConnection>()?,
            ctx.data::<Arc<query::Warm>>()?,
        );
        // A selection of one thread page reads it with the conversation, in one statement.
        let viewer = ctx.data::<Viewer>()?;
        let found = match wanted_thread(ctx, &[ctx.look_ahead()]) {
            Some((filter, window)) => {
                query::find_conversation_with_thread(&db, viewer, n, &filter, &window)
                    .await
                    .gql(ctx)?
                    .map(|(model, page)| (model, Some(page)))
            }
            None => query::find_conversation(&db, viewer, n)
                .await
                .gql(ctx)?
                .map(|model| (model, None)),
        };
        let Some((model, page)) = found else {
            return Ok(None);
        };
        let prefetched = prefetch_one(ctx, &db, &model, page).await?;
        Ok(Some(Conversation(model, prefetched)))
    }

    /// A message by global id; null when there is none or it is not visible to you.
    async fn message(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Its global id.")] id: ID,
    ) -> Result<Option<Message>> {
        match decode_id(NodeType::Message, &id) {
            Some(n) => load_message(ctx, n).await,
            None => Ok(None),
        }
    }

    /// Any object by global id; null when there is none or it is not visible to you.
    async fn node(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A global id.")] id: ID,
    ) -> Result<Option<Node>> {
        load_node(ctx, &id).await
    }

    /// Objects by global ids, in the order given; null for each id that names none (or none
    /// visible to you).
    async fn nodes(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Global ids (at most the server's max page size, 100 by default).")]
        ids: Vec<ID>,
    ) -> Result<Vec<Option<Node>>> {
        let max = ctx.data::<AppConfig>()?.settings.limits.max_page_size as usize;
        if ids.len() > max {
            return Err(crate::error::bad_input(
                "ids",
                format!("at most {max} ids at once (got {})", ids.len()),
            ));
        }
        futures::future::try_join_all(ids.iter().map(|id| load_node(ctx, id))).await
    }

    /// The conversation these participants share on `channel`, in any spelling and order;
    /// null when they have none yet (or it is not visible to you).
    async fn conversation_by_participants(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The channel.")] channel: Channel,
        #[graphql(desc = "All participant addresses (sender and recipients).")] participants: Vec<
            String,
        >,
    ) -> Result<Option<Conversation>> {
        let db = ctx.data::<DatabaseConnection>()?;
        let config = ctx.data::<AppConfig>()?;
        let limits = &config.settings.limits;
        if participants.len() > limits.max_recipients + 1 {
            return Err(crate::error::bad_input(
                "participants",
                format!("at most {} participants", limits.max_recipients + 1),
            ));
        }
        query::find_conversation_by_participants(
            db,
            ctx.data::<Viewer>()?,
            config.settings.default_region,
            channel.into(),
            &participants,
        )
        .await
        .gql(ctx)
        .map(|c| c.map(Conversation::new))
    }

    /// What parley makes of these addresses on `channel`: each normalized form or the
    /// reason it is rejected, and the conversation key they map to. Writes nothing.
    async fn normalize_addresses(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The channel whose rules apply.")] channel: Channel,
        #[graphql(desc = "Addresses in any spelling.")] addresses: Vec<String>,
    ) -> Result<NormalizedAddresses> {
        let config = ctx.data::<AppConfig>()?;
        let limits = &config.settings.limits;
        if addresses.len() > limits.max_recipients + 1 {
            return Err(crate::error::bad_input(
                "addresses",
                format!("at most {} addresses", limits.max_recipients + 1),
            ));
        }
        Ok(NormalizedAddresses::new(
            channel,
            addresses,
            config.settings.default_region,
        ))
    }

    /// Messages attached to no conversation (inbound messages whose addresses did not
    /// normalize, and legacy rows awaiting `parley backfill`), oldest first. Needs the
    /// `admin` scope.
    async fn unassigned_messages(
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
    ) -> Result<MessageConnection> {
        ctx.data::<Principal>()?
            .require_admin("unassignedMessages")
            .gql(ctx)?;
        let db = ctx.data::<DatabaseConnection>()?;
        let viewer = ctx.data::<Viewer>()?;
        let window = page_window(ctx, CursorKind::Message, first, after, last, before)?;
        let page = query::list_messages(
            db,
            viewer,
            MessageScope::Unassigned,
            &Default::default(),
            &window,
        )
        .await
        .gql(ctx)?;
        Ok(MessageConnection {
            page,
            parent: None,
            total: MessageTotal::Unassigned,
            count: Default::default(),
        })
    }
}
