//! Search pages: the messages a parsed query matches, newest first, restricted by the
//! viewer's visibility and a filter, in keyset pages on `(sent_at, id)`.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Expr, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, Order,
    QueryFilter, QuerySelect, QueryTrait, RuntimeErr, Select, TransactionTrait,
};

use super::{ListOrder, Page, Window, keyset_page};
use crate::access::Viewer;
use crate::error::{Error, Result};
use crate::normalize::{self, Region};
use crate::search::SearchQuery;
use crate::types::{Channel, Direction};
use crate::{conversation_participant, message, message_text};

use message::Column;

/// Which messages a search looks through (every field optional; all given must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchFilter {
    /// Only this channel.
    pub channel: Option<Channel>,
    /// Only this conversation.
    pub conversation_id: Option<i64>,
    /// Only conversations with this participant (any accepted spelling).
    pub participant: Option<String>,
    /// Only this direction.
    pub direction: Option<Direction>,
    /// Only messages sent at or after this time.
    pub sent_after: Option<DateTime<Utc>>,
    /// Only messages sent before this time.
    pub sent_before: Option<DateTime<Utc>>,
}

/// The statement of a page of search results: messages of conversations `viewer` sees
/// (unassigned messages are never results) whose indexed text matches `query` (PostgreSQL:
/// the `tsv` GIN index of `message_texts`; SQLite: the `messages_fts` FTS5 table), under
/// `filter`, newest first by `(sent_at, id)` with the window's cursor bounds, one row past
/// the page. [`search_messages`] runs exactly this (on PostgreSQL, for a word matching
/// fewer than [`FEW_MATCHES`] messages, with their ids in place of the index subquery).
pub fn search_page(
    backend: DbBackend,
    viewer: &Viewer,
    region: Region,
    query: &SearchQuery,
    filter: &SearchFilter,
    window: &Window,
) -> Result<Select<message::Entity>> {
    search_page_among(backend, viewer, region, query, filter, window, None)
}

/// On PostgreSQL, a query matching at most this many messages is answered from their ids
/// (see [`search_messages`]).
pub const FEW_MATCHES: u64 = 2_000;

/// [`search_page`], or with `ids` the page among those messages (all that match).
fn search_page_among(
    backend: DbBackend,
    viewer: &Viewer,
    region: Region,
    query: &SearchQuery,
    filter: &SearchFilter,
    window: &Window,
    ids: Option<&[i64]>,
) -> Result<Select<message::Entity>> {
    let matching = match backend {
        DbBackend::Postgres => Query::select()
            .column(message_text::Column::MessageId)
            .from(message_text::Entity)
            .and_where(Expr::cust_with_values(
                "tsv @@ to_tsquery('simple', $1)",
                [query.tsquery()],
            ))
            .to_owned(),
        _ => Query::select()
            .expr(Expr::cust("rowid"))
            .from(Alias::new("messages_fts"))
            .and_where(Expr::cust_with_values(
                "messages_fts MATCH ?",
                [query.fts5()],
            ))
            .to_owned(),
    };
    let select = message::Entity::find().filter(Column::ConversationId.is_not_null());
    let mut select = match ids {
        Some(ids) => select.filter(Column::Id.is_in(ids.iter().copied())),
        None => select.filter(Column::Id.in_subquery(matching)),
    };
    if let Some(rule) = viewer.visible(Column::ConversationId) {
        select = select.filter(rule);
    }
    if let Some(channel) = filter.channel {
        select = select.filter(Column::Channel.eq(channel));
    }
    if let Some(id) = filter.conversation_id {
        select = select.filter(Column::ConversationId.eq(id));
    }
    if let Some(raw) = &filter.participant {
        let channel = filter.channel.unwrap_or(if raw.contains('@') {
            Channel::Email
        } else {
            Channel::Sms
        });
        let address = normalize::normalize_address(channel, raw, region)
            .map_err(|e| Error::invalid("filter.participant", e.to_string()))?;
        let with_participant = Query::select()
            .column(conversation_participant::Column::ConversationId)
            .from(conversation_participant::Entity)
            .and_where(conversation_participant::Column::Address.eq(address))
            .to_owned();
        select = select.filter(Column::ConversationId.in_subquery(with_participant));
    }
    if let Some(direction) = filter.direction {
        select = select.filter(Column::Direction.eq(direction));
    }
    if let Some(after) = filter.sent_after {
        select = select.filter(Column::SentAt.gte(after));
    }
    if let Some(before) = filter.sent_before {
        select = select.filter(Column::SentAt.lt(before));
    }
    Ok(keyset_page(
        select,
        (Column::SentAt, Column::Id),
        ListOrder::Descending,
        window,
    ))
}

/// A page of the messages `viewer` sees that match `query` under `filter`, newest first
/// (ties: higher id first). On PostgreSQL the statement runs with `timeout` as its
/// `statement_timeout`; a search it cuts off is [`Error::TooComplex`] naming `query`.
pub async fn search_messages(
    db: &DatabaseConnection,
    viewer: &Viewer,
    region: Region,
    query: &SearchQuery,
    filter: &SearchFilter,
    window: &Window,
    timeout: Duration,
) -> Result<Page<message::Model>> {
    let backend = db.get_database_backend();
    let rows = if backend == DbBackend::Postgres {
        // SET LOCAL bounds these statements only, and ends with the transaction.
        let txn = db.begin().await?;
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128);
        txn.execute_unprepared(&format!("SET LOCAL statement_timeout = {ms}"))
            .await?;
        // PostgreSQL's planner prices the newest-first walk of `messages_sent_at_id`
        // (checking each message's words) too cheaply for a rare word: at 1,000 matches in
        // 1,000,000 messages it walked 40,000 rows (180 ms) instead of reading the GIN
        // index. So the index is asked first for up to FEW_MATCHES ids: when that is all of
        // them, the page is read from those ids (primary-key lookups); otherwise the word
        // is common, and the walk finds a page of matches within a few hundred rows.
        let few: Vec<i64> = message_text::Entity::find()
            .select_only()
            .column(message_text::Column::MessageId)
            .filter(Expr::cust_with_values(
                "tsv @@ to_tsquery('simple', $1)",
                [query.tsquery()],
            ))
            .limit(FEW_MATCHES)
            .into_tuple()
            .all(&txn)
            .await
            .map_err(too_complex)?;
        let rows = if few.len() < FEW_MATCHES as usize {
            page_among(&txn, viewer, region, query, filter, window, &few).await?
        } else {
            search_page(backend, viewer, region, query, filter, window)?
                .all(&txn)
                .await
                .map_err(too_complex)?
        };
        txn.commit().await?;
        rows
    } else {
        search_page(backend, viewer, region, query, filter, window)?
            .all(db)
            .await?
    };
    Ok(Page::from_probe(rows, window))
}

/// The page among the messages `ids` (every match of a rare word), in the page statement's
/// order, one row past the page. The positions of those that pass the filter, visibility
/// and cursor bounds are read without ORDER BY/LIMIT (primary-key lookups: with them, the
/// planner again walked `messages_sent_at_id`, testing each row against the id list) and
/// ordered here; then only the page's rows are read whole.
async fn page_among(
    txn: &impl ConnectionTrait,
    viewer: &Viewer,
    region: Region,
    query: &SearchQuery,
    filter: &SearchFilter,
    window: &Window,
    ids: &[i64],
) -> Result<Vec<message::Model>> {
    let mut positions = search_page_among(
        DbBackend::Postgres,
        viewer,
        region,
        query,
        filter,
        window,
        Some(ids),
    )?;
    QueryTrait::query(&mut positions)
        .clear_order_by()
        .reset_limit();
    let mut positions: Vec<(DateTime<Utc>, i64)> = positions
        .select_only()
        .columns([Column::SentAt, Column::Id])
        .into_tuple()
        .all(txn)
        .await
        .map_err(too_complex)?;
    positions.sort_unstable();
    if ListOrder::Descending.sql_order(window) == Order::Desc {
        positions.reverse();
    }
    positions.truncate(window.size as usize + 1);
    let chosen: Vec<i64> = positions.iter().map(|(_, id)| *id).collect();
    let mut rows: HashMap<i64, message::Model> = message::Entity::find()
        .filter(Column::Id.is_in(chosen.iter().copied()))
        .all(txn)
        .await
        .map_err(too_complex)?
        .into_iter()
        .map(|m| (m.id, m))
        .collect();
    Ok(chosen.iter().filter_map(|id| rows.remove(id)).collect())
}

/// A statement cut off by `statement_timeout` (SQLSTATE 57014) as [`Error::TooComplex`];
/// any other error as usual.
fn too_complex(err: DbErr) -> Error {
    let cancelled = match &err {
        DbErr::Query(RuntimeErr::SqlxError(e)) | DbErr::Exec(RuntimeErr::SqlxError(e)) => {
            match e.as_ref() {
                sea_orm::sqlx::Error::Database(d) => d.code().is_some_and(|c| c == "57014"),
                _ => false,
            }
        }
        _ => false,
    };
    if cancelled {
        Error::TooComplex {
            field: "query".into(),
            reason: "the search took too long; use rarer or more words, or fewer prefixes".into(),
        }
    } else {
        err.into()
    }
}
