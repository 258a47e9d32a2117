//! Search results: `SearchMessageConnection`, its edges with highlights, and the filter of
//! `searchMessages`.

use std::sync::Arc;

use async_graphql::{ID, InputObject, Object};
use chrono::{DateTime, Utc};
use service::message;
use service::query::{self, Page};
use service::search::SearchQuery;

use super::enums::{Channel, Direction};
use super::node::Message;
use super::page_info::{PageInfo, page_info};

/// Which messages `searchMessages` looks through; every field given must hold.
#[derive(InputObject, Debug, Clone, Default)]
pub struct MessageSearchFilter {
    /// Only messages on this channel.
    pub channel: Option<Channel>,
    /// Only messages of this conversation (its global id).
    pub conversation_id: Option<ID>,
    /// Only messages of conversations with this participant, in any accepted spelling.
    pub participant: Option<String>,
    /// Only messages in this direction.
    pub direction: Option<Direction>,
    /// Only messages sent at or after this time.
    pub sent_after: Option<DateTime<Utc>>,
    /// Only messages sent before this time.
    pub sent_before: Option<DateTime<Utc>>,
}

/// A matching message with its cursor and the fragment that matched.
pub struct SearchMessageEdge {
    model: message::Model,
    query: Arc<SearchQuery>,
}

/// A matching message with its cursor and the fragment that matched.
#[Object]
impl SearchMessageEdge {
    /// Opaque position of this message in the results; pass it as `after` or `before`.
    async fn cursor(&self) -> String {
        query::search_cursor(&self.model)
    }

    /// The message.
    async fn node(&self) -> Message {
        Message(self.model.clone(), None)
    }

    /// A fragment of the message's text around its first match, HTML-escaped, with each
    /// matched word wrapped in `<mark>`..`</mark>` and `…` where text was left out: safe
    /// to insert as HTML.
    async fn highlight(&self) -> String {
        self.query.highlight(self.model.channel, &self.model.body)
    }
}

/// A page of search results, newest first.
pub struct SearchMessageConnection {
    pub(crate) page: Page<message::Model>,
    pub(crate) query: Arc<SearchQuery>,
}

/// A page of search results, newest first.
#[Object]
impl SearchMessageConnection {
    /// The matching messages of this page, each with its cursor and highlight.
    async fn edges(&self) -> Vec<SearchMessageEdge> {
        self.page
            .items
            .iter()
            .map(|m| SearchMessageEdge {
                model: m.clone(),
                query: self.query.clone(),
            })
            .collect()
    }

    /// The matching messages of this page (the edges' nodes).
    async fn nodes(&self) -> Vec<Message> {
        self.page
            .items
            .iter()
            .map(|m| Message(m.clone(), None))
            .collect()
    }

    /// Where this page stands in the results.
    async fn page_info(&self) -> PageInfo {
        page_info(&self.page, query::search_cursor)
    }
}
