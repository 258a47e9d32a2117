//! `Query.searchMessages`: full-text search over the messages the caller sees.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::{Context, Result};
use service::cursor::CursorKind;
use service::query::{self, SearchFilter};
use service::{DatabaseConnection, Viewer};

use crate::config::AppConfig;
use crate::graphql::error::ServiceResultExt;
use crate::graphql::ids::{NodeType, decode_id};
use crate::graphql::paging::page_window;
use crate::graphql::types::search::{MessageSearchFilter, SearchMessageConnection};

/// How long one search statement may run on PostgreSQL before it is cut off with
/// `QUERY_TOO_COMPLEX`.
pub const SEARCH_TIMEOUT: Duration = Duration::from_secs(2);

/// Resolves `searchMessages` (arguments as in the schema).
pub(crate) async fn search_messages(
    ctx: &Context<'_>,
    query: String,
    filter: Option<MessageSearchFilter>,
    first: Option<i32>,
    after: Option<String>,
    last: Option<i32>,
    before: Option<String>,
) -> Result<SearchMessageConnection> {
    let db = ctx.data::<DatabaseConnection>()?;
    let config = ctx.data::<AppConfig>()?;
    let viewer = ctx.data::<Viewer>()?;
    let parsed = service::search::parse_query(&query).gql(ctx)?;
    let window = page_window(ctx, CursorKind::SearchResult, first, after, last, before)?;
    let filter = filter.unwrap_or_default();
    let conversation_id = match &filter.conversation_id {
        Some(id) => Some(decode_id(NodeType::Conversation, id).ok_or_else(|| {
            crate::error::bad_input(
                "filter.conversationId",
                "not a conversation id this server issued",
            )
        })?),
        None => None,
    };
    let svc = SearchFilter {
        channel: filter.channel.map(Into::into),
        conversation_id,
        participant: filter.participant,
        direction: filter.direction.map(Into::into),
        // The instants messages are stored at (leap seconds normalized).
        sent_after: filter.sent_after.map(service::record::to_micros),
        sent_before: filter.sent_before.map(service::record::to_micros),
    };
    let page = query::search_messages(
        db,
        viewer,
        config.settings.default_region,
        &parsed,
        &svc,
        &window,
        SEARCH_TIMEOUT,
    )
    .await
    .gql(ctx)?;
    Ok(SearchMessageConnection {
        page,
        query: Arc::new(parsed),
    })
}
